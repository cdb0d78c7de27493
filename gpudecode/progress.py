"""Progress bars that read well in a terminal and in a log file.

tqdm redraws its bar with ``\\r``: in a terminal that is one line updating in place, in a log file
(stderr redirected, CI, ``nohup``) every redraw lands on the same physical line, and a 320-clip
dataset's bar becomes one line of thousands of characters. :func:`tqdm` is a drop-in for
``tqdm.tqdm``: on a terminal it is tqdm itself; otherwise the same bar is written as a few plain,
newline-terminated lines (about every tenth of the way, at most every ``LOG_INTERVAL`` seconds, and
the final state).
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

#: In a log file: the least time between two progress lines of one bar (seconds).
LOG_INTERVAL = 5.0


class _Lines:
    """A file for tqdm that turns each ``\\r``-redraw into one newline-terminated line."""

    def __init__(self, out: TextIO):
        self.out = out

    def write(self, text: str) -> int:
        for part in text.replace("\n", "\r").split("\r"):
            line = part.rstrip()
            if line:  # a redraw's padding, a cleared bar (leave=False) or a bare newline: nothing to log
                self.out.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.out.flush()


def _is_terminal(out: Any) -> bool:
    try:
        return bool(out.isatty())
    except Exception:  # closed, or a file-like object without isatty
        return False


def _log_bar_class():
    from tqdm import tqdm as _tqdm

    class LogBar(_tqdm):
        """tqdm whose postfix and description changes wait for the next progress line (every step's
        ``set_postfix(loss=...)`` would otherwise print a line per step)."""

        def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
            super().set_postfix(ordered_dict, refresh=False, **kwargs)

        def set_description(self, desc=None, refresh=True):
            super().set_description(desc, refresh=False)

    return LogBar


def tqdm(*args: Any, **kwargs: Any):
    """``tqdm.tqdm(*args, **kwargs)`` on a terminal; plain progress lines when its file is not one."""
    out = kwargs.get("file") or sys.stderr
    if _is_terminal(out) or "ipykernel" in sys.modules:  # a terminal, or a notebook's widget (tqdm.auto)
        from tqdm.auto import tqdm as _tqdm

        return _tqdm(*args, **kwargs)
    total = kwargs.get("total")
    if total is None and args and hasattr(args[0], "__len__"):
        total = len(args[0])
    kwargs.update(file=_Lines(out), ascii=True, ncols=100, dynamic_ncols=False,
                  mininterval=max(float(kwargs.get("mininterval", 0.1)), LOG_INTERVAL),
                  miniters=max(1, int(total) // 10) if total else None)
    return _log_bar_class()(*args, **kwargs)


__all__ = ["LOG_INTERVAL", "tqdm"]
