"""Typed errors of the trainer and the predictor: what a user can fix, said in one line.

The command-line entry points print these as one line and a hint (``gpudecode._cli_errors``); a library
user catches them by type. :class:`ConfigError` is also a ``ValueError`` and a ``TypeError`` (what
the config checks raised before), :class:`DataError` and :class:`CheckpointError` are ``ValueError``\\ s.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from typing import Iterator

from gpudecode._cli_errors import UsageError


class TeamnetError(Exception):
    """Base of the trainer's expected errors; ``hint`` says what to do. Exit status 1."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class ConfigError(UsageError, ValueError, TypeError):
    """A setting is unknown, of the wrong type, out of range, or does not fit the machine. Exit status 2."""


class RunDirError(UsageError):
    """``out_dir`` holds a run that this configuration must not resume or overwrite. Exit status 2."""


class DataError(TeamnetError, ValueError):
    """The dataset's lists or videos cannot make a training run (empty split, labels out of range, ...)."""


class CheckpointError(TeamnetError, ValueError):
    """A file is not a checkpoint this code reads, or does not fit the model."""


def _reason(error: BaseException) -> str:
    if isinstance(error, IsADirectoryError):
        return "it is a folder"
    if isinstance(error, EOFError):
        return "the file is empty or cut short"
    if isinstance(error, KeyError) and error.args and isinstance(error.args[0], str):
        return f"it has no {error.args[0]!r} entry"
    if isinstance(error, (KeyError, IndexError, pickle.UnpicklingError)) and "weights_only" not in str(error):
        return "not a file written by torch.save"
    if isinstance(error, RuntimeError) and ("zip" in str(error) or "central directory" in str(error)):
        return "truncated or damaged: not a complete torch.save archive"
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}".rstrip(": ")


@contextlib.contextmanager
def checkpoint_errors(path: str | os.PathLike, what: str = "a TEAM-Net checkpoint") -> Iterator[None]:
    """Turn what ``torch.load`` and our loaders raise for a bad file into one :class:`CheckpointError`
    that names the file and the reason (a missing file stays a FileNotFoundError: exit status 2)."""
    from teamnet.checkpoint import CheckpointMismatchError

    try:
        yield
    except FileNotFoundError as e:
        raise FileNotFoundError(e.errno, "no such checkpoint", os.fspath(path)) from None
    except CheckpointMismatchError as e:
        r = e.report
        counts = ", ".join(f"{len(v)} {k}" for k, v in
                           (("missing", r.missing), ("unexpected", r.unexpected), ("mismatched", r.mismatched)) if v)
        raise CheckpointError(f"{os.fspath(path)} does not fit the model ({counts} keys)",
                              "was it written for another model or number of classes?") from e
    except Exception as e:  # torch.load raises whatever its unpickler meets in a file that is not its own
        reason = _reason(e) if not isinstance(e, ValueError) else str(e).removeprefix(f"{os.fspath(path)}: ")
        raise CheckpointError(f"{os.fspath(path)} is not {what} ({reason})") from e


__all__ = ["CheckpointError", "ConfigError", "DataError", "RunDirError", "TeamnetError", "checkpoint_errors"]
