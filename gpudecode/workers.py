"""Worker processes that are allowed to die: one bad file costs that file, never the run.

FFmpeg is native code, and a damaged or hostile file may still crash it. ``concurrent.futures``
cannot say which job killed a worker (the pool breaks and every pending future fails with
``BrokenProcessPool``), so :func:`run_isolated` keeps its own workers: each one runs one job at a
time, the parent knows which job every worker holds, and when a worker dies (a signal, an exit, a
job past ``timeout``) that job gets a :class:`WorkerDied` error, a fresh worker takes its place and
the run goes on.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from multiprocessing import get_all_start_methods, get_context
from multiprocessing.connection import Connection, wait
from typing import Any

#: Test-only: a process about to read a file whose path contains this string kills itself with SIGSEGV.
#: It stands in for a decoder crash so that the containment above can be tested; never set it otherwise.
TEST_CRASH_ENV = "GPUDECODE_TEST_CRASH_ON"
#: Test-only: a folder where the crashing process writes the :mod:`faulthandler` dump a native crash
#: prints (one ``crash-<pid>.txt`` each), so that a test reads it instead of it reaching the terminal.
TEST_CRASH_DUMPS_ENV = "GPUDECODE_TEST_CRASH_DUMPS"
_dump_file = None  # kept open: faulthandler writes to it while the process dies


def crash_if_testing(path: str | os.PathLike) -> None:
    """Test-only hook (see :data:`TEST_CRASH_ENV`); one environment lookup when unset."""
    global _dump_file
    needle = os.environ.get(TEST_CRASH_ENV)
    if needle and needle in os.fspath(path):
        dumps = os.environ.get(TEST_CRASH_DUMPS_ENV)
        if dumps:
            _dump_file = open(os.path.join(dumps, f"crash-{os.getpid()}.txt"), "w")
            # disable first: enable() on an enabled handler only changes its file, and a torch
            # DataLoader worker has put its own SIGSEGV handler over the one inherited from the parent
            faulthandler.disable()
            faulthandler.enable(file=_dump_file)
        os.kill(os.getpid(), signal.SIGSEGV)


class WorkerDied(RuntimeError):
    """The worker process running a job died (killed by a signal, exited, or killed past its timeout)."""

    def __init__(self, exitcode: int | None, timeout: float | None = None):
        self.exitcode = exitcode
        self.timeout = timeout
        if timeout is not None:
            reason = f"hung: killed after {timeout:g} s"
        elif exitcode is not None and exitcode < 0:
            reason = f"crashed the decoder ({signal_name(-exitcode)})"
        else:
            reason = f"the worker process exited (code {exitcode}) while reading it"
        #: what happened, in the words an error about the file uses
        self.reason = reason
        super().__init__(reason)

    def __reduce__(self):
        return (type(self), (self.exitcode, self.timeout))


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _serve(fn: Callable[[Any], Any], conn: Connection) -> None:
    """A worker's loop: receive ``(key, job)``, send ``(key, ok, result or exception)``; ``None`` ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        key, job = message
        try:
            reply = (key, True, fn(job))
        except Exception as e:  # noqa: BLE001 (sent back to the parent, which decides)
            reply = (key, False, e)
        try:
            conn.send(reply)
        except Exception as e:  # an unpicklable result or exception: still report the job
            conn.send((key, False, RuntimeError(f"{type(e).__name__} sending the result back: {e}\n"
                                                f"{traceback.format_exc(limit=3)}")))


class _Worker:
    def __init__(self, context, fn: Callable[[Any], Any]):
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(target=_serve, args=(fn, child), daemon=True)
        self.process.start()
        child.close()
        self.key: int | None = None  # the job it holds
        self.started = 0.0

    def give(self, key: int, job: Any) -> None:
        self.key, self.started = key, time.monotonic()
        self.conn.send((key, job))

    def stop(self, kill: bool = False) -> None:
        if kill:
            self.process.kill()
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.process.join(None if kill else 5)
        if self.process.exitcode is None:
            self.process.kill()
            self.process.join()
        self.conn.close()


def run_isolated(fn: Callable[[Any], Any], jobs: Sequence[Any], *, workers: int,
                 timeout: float | None = None) -> Iterator[tuple[Any, Any, BaseException | None]]:
    """Run ``fn(job)`` for every job in ``workers`` worker processes; yield ``(job, result, error)``.

    Results come in completion order. ``error`` is the exception ``fn`` raised (sent back from the
    worker), or :class:`WorkerDied` when the worker died or ran past ``timeout`` seconds on this job;
    either way the other jobs go on. ``fn`` must be picklable where processes are spawned; where
    the platform allows they are forked (the workers run NumPy and PyAV only), so nothing but jobs
    and results crosses between processes.
    """
    jobs = list(jobs)
    if not jobs:
        return
    context = get_context("fork") if "fork" in get_all_start_methods() else get_context("spawn")
    pending = list(range(len(jobs)))[::-1]  # popped from the end: jobs start in order
    pool: list[_Worker] = []
    try:
        for _ in range(max(1, min(workers, len(jobs)))):
            pool.append(_Worker(context, fn))
        for w in pool:
            w.give(pending[-1], jobs[pending.pop()])
        while any(w.key is not None for w in pool):
            busy = [w for w in pool if w.key is not None]
            wait_for = None
            if timeout is not None:
                wait_for = max(0.0, min(w.started for w in busy) + timeout - time.monotonic())
            ready = set(wait([*(w.conn for w in busy), *(w.process.sentinel for w in busy)], wait_for))
            now = time.monotonic()
            for i, w in enumerate(pool):
                if w.key is None:
                    continue
                key, outcome, replace = w.key, None, False
                if w.conn in ready:
                    try:
                        got, ok, value = w.conn.recv()
                    except (EOFError, OSError):  # it died; the sentinel says how
                        w.process.join()
                        outcome, replace = (None, WorkerDied(w.process.exitcode)), True
                    else:
                        assert got == key, (got, key)
                        outcome = (value, None) if ok else (None, value)
                elif w.process.sentinel in ready:
                    w.process.join()
                    outcome, replace = (None, WorkerDied(w.process.exitcode)), True
                elif timeout is not None and now - w.started > timeout:
                    w.stop(kill=True)
                    outcome, replace = (None, WorkerDied(None, timeout)), True
                if outcome is None:
                    continue
                w.key = None
                if replace:
                    w.conn.close()
                    if pending:
                        pool[i] = w = _Worker(context, fn)
                if pending and w.process.is_alive():
                    w.give(pending[-1], jobs[pending.pop()])
                yield (jobs[key], *outcome)
    finally:
        # Normal end: every worker is idle and exits. Ctrl-C or an abandoned generator: kill them now.
        done = all(w.key is None for w in pool)
        for w in pool:
            if w.process.exitcode is None:
                w.stop(kill=not done)


__all__ = ["TEST_CRASH_DUMPS_ENV", "TEST_CRASH_ENV", "WorkerDied", "crash_if_testing", "run_isolated", "signal_name"]
