"""One error path for the command-line entry points (``gpudecode``, ``teamnet-train``, ``teamnet-predict``).

A user's mistake (an option out of range, a config key that does not exist, a video or checkpoint that
cannot be read, a GPU that is not there) is an *expected* error: one line on stderr that says what and
why, a hint when there is one, and a non-zero exit status (2 when the command line or the configuration
is wrong). Anything else is a bug and keeps its traceback. Ctrl-C ends with status 130 and no traceback:
the worker processes a command forks ignore SIGINT and leave the decision to the main process, which may
defer it to a safe point (:meth:`Interrupts.deferred`; the trainer saves a checkpoint there).
A native crash (SIGSEGV in FFmpeg or a kernel) prints the Python stack (:mod:`faulthandler`).
"""

from __future__ import annotations

import contextlib
import faulthandler
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Callable, Iterator, Sequence

from gpudecode.errors import GpudecodeError

FAILURE = 1  # the command ran into an expected problem (data, backend, checkpoint)
USAGE = 2  # the command line or the configuration is wrong
INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C

_MAX_LINES = 8  # an expected error's message is cut after this many lines
_PACKAGES = (str(Path(__file__).resolve().parents[1] / "gpudecode"), str(Path(__file__).resolve().parents[1] / "teamnet"))


class UsageError(Exception):
    """The command line or the configuration is wrong: exit status 2. ``hint`` says what to do."""

    exit_code = USAGE

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class Interrupted(Exception):
    """Ctrl-C was honoured at a safe point; the message says what was saved. Exit status 130."""

    exit_code = INTERRUPTED


def exit_code(error: BaseException) -> int:
    """2 for usage errors and inputs named on the command line that do not exist, else the error's own or 1."""
    code = getattr(error, "exit_code", None)
    if isinstance(code, int):
        return code
    if isinstance(error, (FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return USAGE
    return FAILURE


def format_error(prog: str, error: BaseException) -> str:
    """``prog: error: message`` (at most a few lines) and ``prog: hint: ...`` when the error has one."""
    if isinstance(error, OSError) and not isinstance(error, GpudecodeError) and error.strerror and error.filename:
        message = f"{error.filename}: {error.strerror}"
    else:
        message = str(error) or type(error).__name__
    lines = message.splitlines() or [type(error).__name__]
    if len(lines) > _MAX_LINES:
        lines = lines[: _MAX_LINES - 1] + [f"... ({len(lines) - _MAX_LINES + 1} more lines)"]
    head = f"{prog}: " if isinstance(error, Interrupted) else f"{prog}: error: "
    out = [head + lines[0], *lines[1:]]
    hint = getattr(error, "hint", None)
    if hint:
        out.append(f"{prog}: hint: {hint}")
    return "\n".join(out)


def enable_faulthandler() -> None:
    """Print the Python stack of every thread on a native crash (SIGSEGV, SIGABRT, ...)."""
    if faulthandler.is_enabled():
        return
    try:
        faulthandler.enable()
    except (AttributeError, ValueError, OSError):  # stderr without a file descriptor (captured)
        pass


class Interrupts:
    """SIGINT for a command-line process.

    In the process that installed it, Ctrl-C raises KeyboardInterrupt, except inside :meth:`deferred`,
    where the first Ctrl-C only sets :attr:`requested` (the caller stops at its next safe point) and a
    second one raises. Processes forked from it (DALI's and PyTorch's loader workers, process pools)
    inherit the handler and ignore SIGINT: the terminal sends it to the whole process group, and a
    worker's KeyboardInterrupt would only print one more traceback. Spawned workers do not inherit a
    Python handler; start them inside :meth:`ignored` (an ignored SIGINT survives ``exec``).
    """

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.requested = False
        self._deferring = 0
        self._notice = ""

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self.pid:
            return  # a forked worker: the main process decides
        if self._deferring and not self.requested:
            self.requested = True
            if self._notice:
                print(f"\n{self._notice} (Ctrl-C again to stop at once)", file=sys.stderr, flush=True)
            return
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interrupts]:
        """Handle SIGINT as described while the block runs (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self.pid = os.getpid()
        self.requested = False
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    @contextlib.contextmanager
    def deferred(self, notice: str = "") -> Iterator[Interrupts]:
        """Inside: the first Ctrl-C sets :attr:`requested` (and prints ``notice``) instead of raising."""
        self._deferring += 1
        self._notice = notice
        try:
            yield self
        finally:
            self._deferring -= 1

    @staticmethod
    @contextlib.contextmanager
    def ignored() -> Iterator[None]:
        """SIGINT ignored while the block runs: processes started here (fork or spawn) ignore it for good."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


#: The process-wide instance the entry points install.
interrupts = Interrupts()


def _compact_warning(prog: str):
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        # Our own warnings are messages to the user: one line, no source excerpt.
        if str(filename).startswith(_PACKAGES):
            print(f"{prog}: warning: {message}", file=file or sys.stderr, flush=True)
        else:
            default(message, category, filename, lineno, file, line)

    return show


def run_main(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None, *, prog: str,
             expected: tuple[type[BaseException], ...] = ()) -> int:
    """Run a command's ``main(argv)``; expected errors become one line on stderr and an exit status.

    Always expected: :class:`~gpudecode.errors.GpudecodeError`, :class:`UsageError`,
    :class:`Interrupted`, :class:`FileNotFoundError`; ``expected`` adds the command's own.
    """
    enable_faulthandler()
    known = (GpudecodeError, UsageError, Interrupted, FileNotFoundError, *expected)
    with interrupts.installed(), warnings.catch_warnings():
        warnings.showwarning = _compact_warning(prog)
        try:
            return main(argv)
        except KeyboardInterrupt:
            print(f"\n{prog}: interrupted", file=sys.stderr, flush=True)
            return INTERRUPTED
        except known as e:
            print(format_error(prog, e), file=sys.stderr, flush=True)
            return exit_code(e)


__all__ = ["FAILURE", "INTERRUPTED", "Interrupted", "Interrupts", "USAGE", "UsageError", "exit_code",
           "format_error", "interrupts", "run_main"]
