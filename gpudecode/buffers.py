"""Host memory for the samples the CPU engine returns, recycled once nothing references it.

A clip's outputs are megabytes (8 segments at 340x256: 9 MB of I-frame, MV and residual). A fresh
``np.empty`` of that size is fresh pages from the kernel, and the kernels' first write to each
4 KiB page faults and zero-fills it: measured in the engine, that cost 1.3 ms of a 14.7 ms mpeg4
clip, as much as the residual gathers themselves (issue 11). Loaders drop each sample as soon as it
is copied on (into DALI's buffers, a batch, the device), so the memory of the previous sample is
free again by the time the next one is decoded; the pool hands it out again instead.

Reuse is decided by reference count, so it is safe whatever the caller does with a sample: every
NumPy view of a pooled buffer (NumPy collapses ``base`` to the owner), every ``torch.from_numpy``
tensor and every exported buffer holds a reference to it, and a buffer is handed out again only
when the pool's own references are the only ones left. A caller that keeps its samples simply gets
fresh memory, as without a pool.
"""

from __future__ import annotations

import math
import sys
import threading
from typing import Sequence

import numpy as np

#: Each part of a multi-array allocation starts on a 64-byte boundary (a cache line; AVX-512 width).
ALIGN = 64


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def _aligned_view(buf: np.ndarray, nbytes: int) -> np.ndarray:
    start = -buf.ctypes.data % ALIGN
    return buf[start:start + nbytes]


class BufferPool:
    """A few host buffers reused across clips (see the module docstring).

    ``max_buffers`` bounds what the pool keeps: a loader needs one buffer per sample in flight (the
    one being decoded and the one being copied on). Beyond that, allocations are plain ``np.empty``.
    A buffer is reused for any request of at most its size and at least 4/5 of it, so a dataset of
    several frame sizes does not pin one buffer per size.
    """

    def __init__(self, max_buffers: int = 2):
        if max_buffers < 0:
            raise ValueError(f"max_buffers must be >= 0, got {max_buffers}")
        self.max_buffers = max_buffers
        self._buffers: list[np.ndarray] = []
        self._lock = threading.Lock()
        #: requests served from the pool, and fresh allocations (a buffer still in use, or none fits)
        self.reused = 0
        self.allocated = 0
        # What the reference count of a buffer that nothing outside the pool holds reads from
        # _refcount: measured, not assumed, since it depends on the interpreter (3.14 borrows
        # references on the stack where 3.11 takes them).
        self._buffers.append(np.empty(0, np.uint8))
        self._idle_refs = self._refcount(0)
        self._buffers.clear()

    def _refcount(self, i: int) -> int:
        return sys.getrefcount(self._buffers[i])

    def take(self, nbytes: int) -> np.ndarray:
        """A writable uint8 array of ``nbytes`` bytes, 64-byte aligned, contents undefined (like ``np.empty``)."""
        if nbytes < 0:
            raise ValueError(f"nbytes must be >= 0, got {nbytes}")
        with self._lock:
            best = -1
            for i in range(len(self._buffers)):
                size = self._buffers[i].nbytes - ALIGN  # room left whatever the base's alignment
                if nbytes <= size and 4 * size <= 5 * nbytes and self._refcount(i) <= self._idle_refs:
                    if best < 0 or size < self._buffers[best].nbytes - ALIGN:
                        best = i
            if best >= 0:
                self.reused += 1
                buf = self._buffers.pop(best)
                self._buffers.append(buf)  # most recently used last: eviction takes the front
                return _aligned_view(buf, nbytes)
            self.allocated += 1
            buf = np.empty(nbytes + ALIGN, np.uint8)
            if len(self._buffers) >= self.max_buffers:
                idle = [i for i in range(len(self._buffers)) if self._refcount(i) <= self._idle_refs]
                if not idle:
                    return _aligned_view(buf, nbytes)  # every pooled buffer is in use: this one is the caller's
                del self._buffers[idle[0]]
            if self.max_buffers:
                self._buffers.append(buf)
            return _aligned_view(buf, nbytes)

    def arrays(self, specs: Sequence[tuple[tuple[int, ...], np.dtype | type] | None]) -> list[np.ndarray | None]:
        """Uninitialised arrays of the given ``(shape, dtype)`` (None stays None), in one pooled buffer.

        One buffer for all of a sample's arrays: they are used and dropped together.
        """
        sizes = [0 if s is None else _aligned(math.prod(s[0]) * np.dtype(s[1]).itemsize) for s in specs]
        buf = self.take(sum(sizes))
        out: list[np.ndarray | None] = []
        offset = 0
        for spec, size in zip(specs, sizes):
            if spec is None:
                out.append(None)
                continue
            shape, dtype = spec
            n = math.prod(shape)
            out.append(buf[offset:offset + n * np.dtype(dtype).itemsize].view(dtype).reshape(shape))
            offset += size
        return out

    @property
    def pooled_bytes(self) -> int:
        """Bytes the pool keeps, in use or not."""
        with self._lock:
            return sum(b.nbytes for b in self._buffers)


__all__ = ["ALIGN", "BufferPool"]
