"""The CuPy names the project calls, over a :class:`tests.cudadouble.core.World` (tests only)."""

from __future__ import annotations

import ctypes
import itertools
import types
import warnings
from typing import Any

import numpy as np

from tests.cudadouble import core, sim
from tests.cudadouble.core import CUDARuntimeError, DoubleUsageError, _join

W: core.World | None = None  # the installed world (one at a time)


def world() -> core.World:
    if W is None:
        raise RuntimeError("the CUDA double is not installed")
    return W


# -- devices, streams, events ------------------------------------------------------------------------------
class Device:
    def __init__(self, device: int | None = None):
        self.id = world().device if device is None else int(device)
        if not 0 <= self.id < world().num_devices:
            raise CUDARuntimeError("cudaErrorInvalidDevice", f"device {self.id}")
        self._prev: list = []

    def __enter__(self):
        self._prev.append(world().device)
        world().device = self.id
        return self

    def __exit__(self, *exc):
        world().device = self._prev.pop()

    def use(self):
        world().device = self.id

    def synchronize(self):
        w = world()
        for op in list(w.pending):
            if op.stream.device == self.id:
                w.force(op)

    @property
    def compute_capability(self) -> str:
        return "90"


_stream_ids = itertools.count(1)


class Stream:
    """A queue of the double's operations (``non_blocking`` streams do not wait for the null stream)."""

    def __init__(self, null: bool = False, non_blocking: bool = False, ptr: int | None = None):
        w = world()
        self._init(w, w.device, ptr=next(_stream_ids) * 4096 if ptr is None else ptr, blocking=not non_blocking,
                   name=f"s{len(w.streams) + 1}")

    @classmethod
    def _make(cls, w, device, *, ptr, blocking, name):
        s = cls.__new__(cls)
        s._init(w, device, ptr=ptr, blocking=blocking, name=name)
        return s

    def _init(self, w, device, *, ptr, blocking, name):
        self.device = device
        self.device_id = device
        self.ptr = ptr
        self.blocking = blocking
        self.name = f"{name}@dev{device}"
        self.id = f"stream{ptr}"
        self.clock: dict = {}
        self.last = None
        w.streams[ptr] = self

    def __enter__(self):
        world().push_stream(self)
        return self

    def __exit__(self, *exc):
        world().pop_stream(self)

    def __cuda_stream__(self):
        return (0, self.ptr)

    def wait_event(self, event) -> None:
        w = world()
        if event.op is None and not event.clock:
            return
        with core._lock:
            self.clock = _join(self.clock, event.clock)
            w.enqueue(self, "wait", "wait for an event", None, deps=[event.op])

    def record(self, event=None):
        event = Event() if event is None else event
        event.record(self)
        return event

    def synchronize(self) -> None:
        world().force(self.last)
        world().host_clock = _join(world().host_clock, self.clock)

    def launch_host_func(self, callback, arg) -> None:
        held = [callback, arg]  # released when the function has run, as CuPy's closure is

        def run(op):
            cb, a = held
            held.clear()
            cb(a)

        world().enqueue(self, "host_fn", "a host function", run)

    @classmethod
    def from_external(cls, obj):
        version, ptr = obj.__cuda_stream__()
        return external(ptr)

    @property
    def done(self) -> bool:
        return self.last is None or self.last.done


class _NullDescriptor:
    def __get__(self, obj, owner):
        return world().null_stream(world().device)


Stream.null = _NullDescriptor()


def external(ptr: int, device_id: int = -1) -> Stream:
    w = world()
    if ptr == 0:
        return w.null_stream(w.device)
    if ptr not in w.streams:
        raise CUDARuntimeError("cudaErrorInvalidResourceHandle", f"no stream {ptr:#x}")
    s = w.streams[ptr]
    if device_id not in (-1, s.device):
        raise CUDARuntimeError("cudaErrorInvalidResourceHandle", f"stream {ptr:#x} is on device {s.device}")
    return s


def ExternalStream(ptr: int, device_id: int = -1) -> Stream:
    warnings.warn("ExternalStream is deprecated. Use Stream.from_external() instead (CuPy 14)", DeprecationWarning,
                  stacklevel=2)
    return external(ptr, device_id)


def get_current_stream(device_id: int | None = None) -> Stream:
    return world().current_stream()


class Event:
    def __init__(self, block: bool = False, disable_timing: bool = False, interprocess: bool = False):
        self.device = world().device  # CUDA: an event belongs to the device current at its creation
        self.op = None
        self.clock: dict = {}
        self.timing = not disable_timing

    def record(self, stream: Stream | None = None) -> None:
        w = world()
        stream = w.current_stream() if stream is None else stream
        if stream.device != self.device:
            raise CUDARuntimeError("cudaErrorInvalidResourceHandle",
                                   f"cudaEventRecord: an event of device {self.device} on a stream of device {stream.device}")
        self.op = w.enqueue(stream, "marker", "an event", None)
        self.clock = dict(self.op.clock)

    def synchronize(self) -> None:
        world().force(self.op)
        world().host_clock = _join(world().host_clock, self.clock)

    @property
    def done(self) -> bool:
        return self.op is None or self.op.done

    def query(self) -> bool:
        return self.done


def get_elapsed_time(start: Event, end: Event) -> float:
    if not (start.timing and end.timing):
        raise CUDARuntimeError("cudaErrorInvalidResourceHandle", "an event created with disable_timing=True")
    if not (start.done and end.done):
        raise CUDARuntimeError("cudaErrorNotReady")
    return 0.001 * max(0, end.op.id - start.op.id) if end.op and start.op else 0.0


# -- memory ------------------------------------------------------------------------------------------------
class Memory:
    """A live device allocation; returned to its stream's pool when the last array using it is gone."""

    def __init__(self, block):
        self.block = block
        self.ptr = block.addr
        self.size = block.size
        self.device_id = int(block.arena.where[len("device"):])
        self._w = W

    def __del__(self):
        if W is self._w and self.block.live:
            W.free(self.block)


class MemoryPointer:
    def __init__(self, mem: Memory, offset: int = 0):
        self.mem = mem
        self.ptr = mem.ptr + offset

    def __int__(self):
        return self.ptr


def _malloc(nbytes: int) -> Memory:
    w = world()
    with core._lock:
        return Memory(w.malloc(nbytes, w.current_stream()))


class ndarray:
    """A device array of the double: shape, dtype, strides and a pointer into a pooled block."""

    def __init__(self, shape, dtype=np.float64, memptr: MemoryPointer | None = None, strides=None):
        shape = (int(shape),) if np.isscalar(shape) else tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.shape = shape
        size = int(np.prod(shape, dtype=np.int64))
        if memptr is None:
            memptr = MemoryPointer(_malloc(max(1, size * self.dtype.itemsize)))
        self.data = memptr
        self.strides = tuple(strides) if strides is not None else _c_strides(shape, self.dtype.itemsize)
        self._world = world()

    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: int(np.prod(self.shape, dtype=np.int64)))
    nbytes = property(lambda self: self.size * self.dtype.itemsize)
    itemsize = property(lambda self: self.dtype.itemsize)
    device = property(lambda self: Device(self.data.mem.device_id))

    def __len__(self):
        return self.shape[0]

    def _host(self) -> np.ndarray:
        return self._raw()()

    def _raw(self):
        """A maker of this array's host view that holds the bytes, not the array: queued work must not keep an
        array's memory from going back to the pool (on a GPU it does not)."""
        arena, shape, dtype, offset, strides = (self.data.mem.block.arena, self.shape, self.dtype,
                                                self.data.ptr - self.data.mem.block.arena.addr, self.strides)
        return lambda: np.ndarray(shape, dtype, buffer=arena.buf, offset=offset, strides=strides)

    def span(self) -> tuple[int, int]:
        """(address, bytes) covering every element."""
        if self.size == 0:
            return self.data.ptr, 0
        lo = sum(min(0, (n - 1) * s) for n, s in zip(self.shape, self.strides))
        hi = sum(max(0, (n - 1) * s) for n, s in zip(self.shape, self.strides)) + self.itemsize
        return self.data.ptr + lo, hi - lo

    def __getitem__(self, key) -> "ndarray":
        view = self._host()[key]
        if not isinstance(view, np.ndarray) or view.ndim == 0:
            raise DoubleUsageError("the CUDA double has no device scalars: index to a sub-array")
        base = self._host()
        offset = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
        return ndarray(view.shape, self.dtype, MemoryPointer(self.data.mem, self.data.ptr - self.data.mem.ptr + offset),
                       view.strides)

    def get(self, stream: Stream | None = None) -> np.ndarray:
        """Device to host on ``stream`` (the current one by default), then wait for that copy, as CuPy does."""
        w = world()
        if stream is None:
            with Device(self.data.mem.device_id):  # CuPy: the array's device and its current stream
                stream = w.current_stream()
        addr, nbytes = self.span()
        out: list = []
        host = self._raw()

        def run(op):
            w.access(addr, nbytes, "r", op.clock, op.id, op.desc)
            out.append(np.array(host()))

        op = w.enqueue(stream, "d2h", f"copy to host of {self.shape} {self.dtype}", run)
        w.force(op)
        return out[0]

    def copy(self) -> "ndarray":
        """A C-contiguous copy on the current stream (a device-side operation, like CuPy's)."""
        w = world()
        out = ndarray(self.shape, self.dtype)
        src, dst = self._raw(), out._raw()
        saddr, sn = self.span()
        daddr, dn = out.span()

        def run(op):
            w.access(saddr, sn, "r", op.clock, op.id, op.desc)
            w.access(daddr, dn, "w", op.clock, op.id, op.desc)
            dst()[...] = src()

        w.enqueue(w.current_stream(), "kernel", "copy kernel", run)
        return out

    def fill(self, value) -> None:
        w = world()
        addr, n = self.span()
        host = self._raw()

        def run(op):
            w.access(addr, n, "w", op.clock, op.id, op.desc)
            host()[...] = value

        w.enqueue(w.current_stream(), "kernel", "fill kernel", run)

    def __repr__(self):
        return f"cudadouble.ndarray(shape={self.shape}, dtype={self.dtype})"


def _c_strides(shape, itemsize):
    strides, acc = [], itemsize
    for n in reversed(shape):
        strides.append(acc)
        acc *= max(1, n)
    return tuple(reversed(strides))


def empty(shape, dtype=np.float64) -> ndarray:
    return ndarray(shape, dtype)


def zeros(shape, dtype=np.float64) -> ndarray:
    a = ndarray(shape, dtype)
    a.fill(0)
    return a


def asarray(a, dtype=None) -> ndarray:
    if isinstance(a, ndarray):
        return a
    host = np.ascontiguousarray(a, dtype=dtype)
    out = ndarray(host.shape, host.dtype)
    w = world()
    w.copy(w.current_stream(), out.data.ptr, host.ctypes.data, host.nbytes, "asarray copy to the device")
    return out


def asnumpy(a, stream=None) -> np.ndarray:
    return a.get(stream) if isinstance(a, ndarray) else np.asarray(a)


def from_dlpack(obj) -> ndarray:
    arr = getattr(obj, "_double_array", None)
    if arr is None:
        raise DoubleUsageError(f"the CUDA double cannot import {type(obj).__name__} through DLPack")
    return arr


# -- pinned memory ------------------------------------------------------------------------------------------
_pinned_types: dict = {}


def alloc_pinned_memory(nbytes: int):
    """CuPy's default pinned allocator (its PinnedMemoryPool): a buffer of the rounded size; freed to the
    pool when the last NumPy view of it is gone, and handed out again at once."""
    w = world()
    with core._lock:
        block = w.pinned_malloc(nbytes)
    cls = _pinned_types.get(block.size)
    if cls is None:
        def __del__(self):
            if W is self._w and self._block.live:
                W.pinned_free_block(self._block)

        cls = _pinned_types[block.size] = type(f"PinnedMemoryPointer{block.size}", (ctypes.Array,),
                                               {"_type_": ctypes.c_uint8, "_length_": block.size, "__del__": __del__})
    p = cls.from_address(block.addr)
    p._block = block
    p._w = w
    p._arena = block.arena  # keeps the memory mapped
    p.ptr = block.addr
    p.size = lambda: block.size
    return p


class PinnedMemory:
    """``cudaHostAlloc`` of exactly ``size`` bytes; unmapped (``cudaFreeHost``) when the last reference goes."""

    def __init__(self, size: int, flags: int = 0):
        self._w = world()
        with core._lock:
            self._block = self._w.pinned_direct(int(size))
        self.ptr, self.size = self._block.addr, int(size)

    def __del__(self):
        if W is self._w and self._block.live:
            W.pinned_unmap(self._block)


def PinnedMemoryPointer(mem: PinnedMemory, offset: int):
    n = mem.size - int(offset)
    cls = _pinned_types.get(("direct", n))
    if cls is None:
        cls = _pinned_types[("direct", n)] = type(f"PinnedMemoryPointer{n}", (ctypes.Array,),
                                                  {"_type_": ctypes.c_uint8, "_length_": n})
    p = cls.from_address(mem.ptr + int(offset))
    p.mem = mem  # keeps the allocation alive as long as any view of it
    p.ptr = mem.ptr + int(offset)
    return p


# -- runtime ------------------------------------------------------------------------------------------------
def _runtime() -> types.ModuleType:
    rt = types.ModuleType("cupy.cuda.runtime")
    rt.CUDARuntimeError = CUDARuntimeError
    rt.memcpyHostToDevice, rt.memcpyDeviceToHost, rt.memcpyDeviceToDevice = 1, 2, 3
    rt.getDeviceCount = lambda: world().num_devices
    rt.getDevice = lambda: world().device
    rt.driverGetVersion = lambda: 13000
    rt.runtimeGetVersion = lambda: 13000
    rt.getDeviceProperties = lambda d: {"name": f"CUDA double {d} (strict asynchronous stand-in)".encode(),
                                        "totalGlobalMem": 1 << 36, "multiProcessorCount": 2, "major": 9, "minor": 0}

    def memcpyAsync(dst, src, nbytes, kind, stream_ptr):
        s = external(int(stream_ptr))
        return world().copy(s, int(dst), int(src), int(nbytes), f"memcpyAsync of {nbytes} bytes (kind {kind})")

    rt.memcpyAsync = memcpyAsync
    return rt


class RawKernel:
    def __init__(self, module: "RawModule", name: str):
        self.module, self.name = module, name

    def __call__(self, grid, block, args, *, shared_mem: int = 0):
        w = world()
        w.kernel(w.current_stream(), self.module.sim, self.name, grid, block, tuple(args))


class RawModule:
    """NVRTC's compile, for the double: the code string and its ``-I`` folders as they are now, cached by
    (code, options) like CuPy's on-disk cache."""

    def __init__(self, code: str | None = None, *, options=(), **kw):
        if code is None:
            raise DoubleUsageError("the CUDA double compiles source code only (code=...)")
        self.sim = sim.compile_module(code, options)

    def get_function(self, name: str) -> RawKernel:
        if name not in self.sim.signatures:
            raise CUDARuntimeError("CUDA_ERROR_NOT_FOUND", f"named symbol not found: {name}")
        return RawKernel(self, name)


def make_cupy() -> types.ModuleType:
    """The ``cupy`` module of the double (with ``cupy.cuda`` and ``cupy.cuda.runtime``)."""
    cp = types.ModuleType("cupy")
    cp.__cuda_double__ = True
    cuda = types.ModuleType("cupy.cuda")
    cuda.runtime = _runtime()
    for name, value in dict(Device=Device, Stream=Stream, ExternalStream=ExternalStream, Event=Event,
                            get_current_stream=get_current_stream, get_elapsed_time=get_elapsed_time,
                            alloc_pinned_memory=alloc_pinned_memory, PinnedMemory=PinnedMemory,
                            PinnedMemoryPointer=PinnedMemoryPointer, Memory=Memory, MemoryPointer=MemoryPointer).items():
        setattr(cuda, name, value)
    cp.cuda = cuda
    for name, value in dict(ndarray=ndarray, empty=empty, zeros=zeros, asarray=asarray, asnumpy=asnumpy,
                            from_dlpack=from_dlpack, RawModule=RawModule, RawKernel=RawKernel).items():
        setattr(cp, name, value)
    for t in ("uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float16", "float32", "float64"):
        setattr(cp, t, getattr(np, t))
    return cp


__all__ = ["make_cupy", "world", "Any"]
