"""Where the GPU stage's kernels run: a minimal executor interface and its host implementation.

The GPU stage (``gpudecode.stage``) does all of its orchestration (buffer sizes, offsets, pointer
arithmetic, argument tuples, launch order, output assembly) against this interface:

- ``host_buffer(nbytes)``: a host staging buffer (pinned on a device);
- ``empty(shape, dtype, on=None)`` and ``pointer(array)``: device arrays (from the pool of stream ``on``,
  default the compute stream) and their addresses;
- ``copy_in(dst_ptr, src, nbytes, after=event)``: an asynchronous host-to-device copy, on the copy
  stream after ``event``; returns an event the compute stream can ``wait`` for;
- ``launch(name, grid, block, args)``: a kernel of ``kernels/*.cu`` by name, on the compute stream,
  with NumPy scalars as arguments (``np.uint64`` for addresses, ``np.int32`` for ints);
- ``mark(on=None)`` (an event after the work queued so far on ``on``, default the compute stream),
  ``wait(event)`` (the compute stream waits, device-side), ``host_wait(event)``;
- ``to_host(array)``: copy a result back (tests and benchmarks only).

Two implementations: ``gpudecode._cuda.CupyExecutor`` on a device, and :class:`HostExecutor`, which
runs the host build of the very same kernels over NumPy buffers, ignoring grid and block (every
kernel is a grid-stride loop, so one "thread" covers every element). With the host executor CI
executes the whole GPU stage; only CuPy's own calls are left unexecuted without a GPU. It is a test
instrument, not a backend.
"""

from __future__ import annotations

import ctypes
from typing import Any, Protocol, Sequence

import numpy as np

from gpudecode._host import HostKernels, host_kernels


class Executor(Protocol):
    name: str
    #: kernel names launched so far (the stage's launch count per batch is asserted in the tests)
    launches: list

    def host_buffer(self, nbytes: int) -> np.ndarray: ...
    def empty(self, shape: Sequence[int], dtype, *, on: Any = None) -> Any: ...
    def pointer(self, array) -> int: ...
    def copy_in(self, dst_ptr: int, src: np.ndarray, nbytes: int, *, after: Any = None) -> Any: ...
    def launch(self, name: str, grid: tuple, block: tuple, args: tuple) -> None: ...
    def mark(self, *, on: Any = None) -> Any: ...
    def wait(self, event: Any) -> None: ...
    def host_wait(self, event: Any) -> None: ...
    def to_host(self, array) -> np.ndarray: ...


class HostExecutor:
    """The executor interface over NumPy buffers and the host build of the kernels.

    Everything runs at once and in order, so events are ``None`` and waits do nothing.
    """

    name = "host"

    def __init__(self, kernels: HostKernels | None = None):
        self.kernels = kernels or host_kernels()
        self.launches: list[str] = []

    def host_buffer(self, nbytes: int) -> np.ndarray:
        return np.empty(nbytes, np.uint8)

    def empty(self, shape: Sequence[int], dtype, *, on: Any = None) -> np.ndarray:
        # Poisoned, unlike fresh pages from the OS (zero): an element a kernel forgets to write shows.
        out = np.empty(shape, dtype)
        out.view(np.uint8).reshape(-1)[:] = 0xA5
        return out

    def pointer(self, array: np.ndarray) -> int:
        return array.ctypes.data

    def copy_in(self, dst_ptr: int, src: np.ndarray, nbytes: int, *, after: Any = None) -> None:
        if nbytes > src.nbytes:
            raise ValueError(f"copy of {nbytes} bytes from a {src.nbytes}-byte buffer")
        ctypes.memmove(dst_ptr, src.ctypes.data, nbytes)

    def launch(self, name: str, grid: tuple, block: tuple, args: tuple) -> None:
        fn = getattr(self.kernels, f"_{name}")
        if len(args) != len(fn.argtypes):
            raise TypeError(f"kernel {name} takes {len(fn.argtypes)} arguments, got {len(args)}")
        self.launches.append(name)
        fn(*(int(a) for a in args))  # grid and block ignored: one thread walks each grid-stride loop

    def mark(self, *, on: Any = None) -> None:
        return None

    def wait(self, event: Any) -> None:
        pass

    def host_wait(self, event: Any) -> None:
        pass

    def to_host(self, array: np.ndarray) -> np.ndarray:
        return array


__all__ = ["Executor", "HostExecutor"]
