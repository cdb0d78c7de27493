"""A strict asynchronous stand-in for the part of CuPy the project uses (tests only).

As strict as CUDA, in the ways that matter to stream-ordered code:

- every copy and kernel is queued on its stream and runs only when something forces it (an event's or a
  stream's ``synchronize``, ``get``/``asnumpy``, the end of a test), in one of several legal orders:
  ``late`` (copies as late as their dependents allow), ``early`` (copies at once, kernels late) or
  ``random:SEED``; events and ``wait_event`` are the only ordering between streams;
- a happens-before race detector over device (and pinned) byte ranges: every access carries the vector
  clock of its operation; two accesses to the same bytes, one a write, neither ordered before the
  other, are a race, whatever order they happened to run in;
- CuPy's stream-ordered device pool (a block freed after work on stream A is handed at once to new work
  on A; a larger free block is split), fresh memory poisoned (0xA5); CuPy's pinned pool (sizes rounded
  to a power of two, a freed block handed out again at once); handing out a pinned block counts as a
  host write of it;
- events belong to the device current when they are created; recording one on another device's
  stream fails as CUDA does (cudaErrorInvalidResourceHandle); two devices exist;
- kernels: arguments checked against the signatures parsed from the sources (count, ``np.int32`` for
  ``int``, a 64-bit integer for pointers and ``size_t``), grid and block limits, pointer arguments
  inside live allocations, table-derived buffers inside mapped memory; then every (block, thread) is
  run once in a shuffled order (``sim.py``).
"""

from __future__ import annotations

import ctypes
import itertools
import threading
from typing import Any

import numpy as np

from tests.cudadouble import footprints, sim

POISON = 0xA5
_ALIGN = 512
_lock = threading.RLock()


class CUDARuntimeError(RuntimeError):
    def __init__(self, status: str, msg: str = ""):
        self.status = status
        super().__init__(f"{status}: {msg}" if msg else status)


class DoubleUsageError(TypeError):
    """A call a real GPU would reject or misread (wrong kernel arguments, a bad launch, a dead pointer)."""


def _join(*clocks: dict) -> dict:
    out: dict = {}
    for c in clocks:
        for k, v in c.items():
            if out.get(k, 0) < v:
                out[k] = v
    return out


def _leq(a: dict, b: dict) -> bool:
    return all(b.get(k, 0) >= v for k, v in a.items())


class Arena:
    """One piece of fake device (or pinned) memory, really host memory so the kernels can run on it."""

    _ids = itertools.count()

    def __init__(self, size: int, where: str):
        self.raw = np.empty(size + _ALIGN, np.uint8)
        off = -self.raw.ctypes.data % _ALIGN
        self.buf = self.raw[off:off + size]
        self.buf[:] = POISON
        self.addr = self.buf.ctypes.data
        self.size = size
        self.where = where  # "device0", "device1", "pinned"
        self.name = f"{where} arena {next(self._ids)}"
        self.history: list = []  # (lo, hi, kind, clock, op id, desc)
        self.alive = True  # False once a direct pinned allocation is freed (cudaFreeHost: unmapped)

    def view(self, addr: int, nbytes: int) -> np.ndarray:
        return self.buf[addr - self.addr:addr - self.addr + nbytes]


class Block:
    def __init__(self, arena: Arena, addr: int, size: int, key):
        self.arena, self.addr, self.size, self.key = arena, addr, size, key
        self.live = False


class Op:
    _ids = itertools.count(1)

    def __init__(self, stream, kind: str, desc: str, run, deps, clock):
        self.id = next(self._ids)
        self.stream, self.kind, self.desc, self.run = stream, kind, desc, run
        self.deps = [d for d in deps if d is not None and not d.done]
        self.clock = clock
        self.prev = stream.last if stream.last is not None and not stream.last.done else None
        self.done = False


class World:
    """Everything the double knows: devices, streams, queued work, pools, accesses, reports."""

    def __init__(self, order: str = "late", num_devices: int = 2):
        if order not in ("late", "early") and not order.startswith("random:"):
            raise ValueError(f"order must be 'late', 'early' or 'random:SEED', got {order!r}")
        self.order = order
        self.rng = np.random.default_rng(int(order.split(":")[1]) if order.startswith("random:") else 0)
        self.num_devices = num_devices
        self.pending: list[Op] = []
        self.host_clock: dict = {}
        self.reports: list[str] = []
        self._seen: set = set()
        self.arenas: list[Arena] = []
        self.graveyard: list[Arena] = []
        self.free_blocks: dict = {}  # (device, stream id) -> [Block]
        self.pinned_free: dict = {}  # rounded size -> [Block]
        self.streams: dict[int, Any] = {}
        self.local = threading.local()
        self.null = {}
        self.launches = 0

    # -- reports --------------------------------------------------------------------------------------
    def report(self, msg: str) -> None:
        if msg not in self._seen:
            self._seen.add(msg)
            self.reports.append(msg)

    def take_reports(self) -> list[str]:
        out, self.reports = self.reports, []
        self._seen.clear()
        return out

    # -- current device and stream --------------------------------------------------------------------
    @property
    def device(self) -> int:
        return getattr(self.local, "device", 0)

    @device.setter
    def device(self, d: int) -> None:
        self.local.device = d

    def current_stream(self):
        stacks = getattr(self.local, "streams", None)
        if stacks is None:
            stacks = self.local.streams = {}
        stack = stacks.get(self.device)
        return stack[-1] if stack else self.null_stream(self.device)

    def push_stream(self, s) -> None:
        self.local.__dict__.setdefault("streams", {}).setdefault(s.device, []).append(s)

    def pop_stream(self, s) -> None:
        self.local.streams[s.device].pop()

    def null_stream(self, device: int):
        from tests.cudadouble.api import Stream

        if device not in self.null:
            self.null[device] = Stream._make(self, device, ptr=0, blocking=True, name=f"null{device}")
        return self.null[device]

    # -- memory ---------------------------------------------------------------------------------------
    def find(self, addr: int, nbytes: int = 1) -> Arena | None:
        for a in self.arenas:
            if a.addr <= addr and addr + nbytes <= a.addr + a.size:
                return a
        return None

    def live_block(self, addr: int, nbytes: int = 1) -> Block | None:
        a = self.find(addr, nbytes)
        if a is None:
            return None
        for b in a.blocks:
            if b.live and b.addr <= addr and addr + nbytes <= b.addr + b.size:
                return b
        return None

    def malloc(self, nbytes: int, stream) -> Block:
        size = max(_ALIGN, -(-nbytes // _ALIGN) * _ALIGN)
        key = (stream.device, stream.id)
        free = self.free_blocks.setdefault(key, [])
        fits = [b for b in free if b.size >= size]
        if fits:
            b = min(fits, key=lambda b: (b.size, b.addr))
            free.remove(b)
            if b.size - size >= _ALIGN:  # split: the rest stays free for the same stream
                rest = Block(b.arena, b.addr + size, b.size - size, key)
                b.arena.blocks.append(rest)
                free.append(rest)
                b.size = size
        else:
            arena = Arena(size, f"device{stream.device}")
            arena.blocks = []
            self.arenas.append(arena)
            b = Block(arena, arena.addr, size, key)
            arena.blocks.append(b)
        b.live = True
        return b

    def free(self, b: Block) -> None:
        with _lock:
            b.live = False
            self.free_blocks.setdefault(b.key, []).append(b)

    def pinned_malloc(self, nbytes: int) -> Block:
        size = max(_ALIGN, -(-nbytes // _ALIGN) * _ALIGN)
        size = 1 << (size - 1).bit_length()  # CuPy's PinnedMemoryPool: internal.clp2
        free = self.pinned_free.setdefault(size, [])
        if free:
            b = free.pop()
        else:
            arena = Arena(size, "pinned")
            arena.blocks = []
            self.arenas.append(arena)
            b = Block(arena, arena.addr, size, "pinned")
            arena.blocks.append(b)
        b.live = True
        # The new owner writes it from the host at once: an access like any other for the detector.
        self.host_clock = _join(self.host_clock, {"host": self.host_clock.get("host", 0) + 1})
        self.access(b.addr, b.size, "w", dict(self.host_clock), 0, "the host packing a pinned block just handed out")
        return b

    def pinned_direct(self, nbytes: int) -> Block:
        """``cudaHostAlloc`` of exactly ``nbytes`` (CuPy's ``PinnedMemory``), outside the pool."""
        arena = Arena(max(1, nbytes), "pinned")
        arena.blocks = [Block(arena, arena.addr, arena.size, "direct")]
        arena.blocks[0].live = True
        self.arenas.append(arena)
        return arena.blocks[0]

    def pinned_unmap(self, b: Block) -> None:
        with _lock:
            b.live = False
            b.arena.alive = False
            self.arenas.remove(b.arena)
            self.graveyard.append(b.arena)  # the bytes stay valid for the process: a stale copy reads garbage

    def pinned_free_block(self, b: Block) -> None:
        with _lock:
            b.live = False
            self.pinned_free.setdefault(b.size, []).append(b)

    # -- the race detector -----------------------------------------------------------------------------
    def access(self, addr: int, nbytes: int, kind: str, clock: dict, op_id: int, desc: str) -> None:
        if nbytes <= 0:
            return
        arena = self.find(addr, nbytes)
        if arena is None:
            raise DoubleUsageError(f"{desc}: [{addr:#x}, +{nbytes}) is not inside one allocation")
        lo, hi = addr, addr + nbytes
        keep = []
        for h in arena.history:
            hlo, hhi, hkind, hclock, hop, hdesc = h
            if hhi > lo and hlo < hi and hop != op_id and "w" in (kind, hkind) and not _leq(hclock, clock):
                self.report(f"race on {arena.name}: {hdesc} ({'write' if hkind == 'w' else 'read'}) and {desc} "
                            f"({'write' if kind == 'w' else 'read'}) are not ordered by any event")
            # an access ordered before a write that covers it cannot race with anything the write does not
            if not (kind == "w" and lo <= hlo and hhi <= hi and _leq(hclock, clock)):
                keep.append(h)
        keep.append((lo, hi, kind, clock, op_id, desc))
        arena.history = keep

    # -- queues ---------------------------------------------------------------------------------------
    def enqueue(self, stream, kind: str, desc: str, run, deps=()) -> Op:
        with _lock:
            deps = list(deps)
            if stream.blocking:  # legacy default-stream semantics between blocking streams
                if stream.ptr == 0:
                    deps += [s.last for s in self.streams.values() if s.blocking and s is not stream and s.device == stream.device]
                else:
                    deps.append(self.null_stream(stream.device).last)
            clock = _join(stream.clock, self.host_clock, *(d.clock for d in deps if d is not None))
            clock[stream.id] = clock.get(stream.id, 0) + 1
            op = Op(stream, kind, f"{desc} on stream {stream.name}", run, deps, clock)
            stream.clock = clock
            stream.last = op
            self.pending.append(op)
            self._after_enqueue()
            return op

    def _ready(self, op: Op) -> bool:
        return not op.done and (op.prev is None or op.prev.done) and all(d.done for d in op.deps)

    def _execute(self, op: Op) -> None:
        self.pending.remove(op)
        op.done = True
        run, op.run, op.prev, op.deps = op.run, None, None, []
        if run is not None:
            run(op)

    def _pick(self, ready: list[Op]) -> Op:
        if self.order == "late":
            return next((o for o in ready if o.kind != "copy"), ready[0])
        if self.order == "early":
            return next((o for o in ready if o.kind == "copy"), ready[0])
        return ready[int(self.rng.integers(len(ready)))]

    def _after_enqueue(self) -> None:
        if self.order == "early":
            while True:
                ready = [o for o in self.pending if o.kind == "copy" and self._ready(o)]
                if not ready:
                    return
                self._execute(ready[0])
        elif self.order.startswith("random:"):
            for _ in range(int(self.rng.integers(0, 3))):
                ready = [o for o in self.pending if self._ready(o)]
                if not ready:
                    return
                self._execute(ready[int(self.rng.integers(len(ready)))])

    def force(self, target: Op | None) -> None:
        """Run ``target`` and what it depends on, in this world's order."""
        with _lock:
            while target is not None and not target.done:
                anc, stack = [], [target]
                seen = set()
                while stack:
                    o = stack.pop()
                    if o is None or o.done or o.id in seen:
                        continue
                    seen.add(o.id)
                    anc.append(o)
                    stack.append(o.prev)
                    stack.extend(o.deps)
                ready = sorted((o for o in anc if self._ready(o)), key=lambda o: o.id)
                self._execute(self._pick(ready))
            if target is not None:
                self.host_clock = _join(self.host_clock, target.clock)

    def drain(self) -> None:
        with _lock:
            while self.pending:
                ready = [o for o in self.pending if self._ready(o)]
                op = self._pick(ready)
                self._execute(op)
                self.host_clock = _join(self.host_clock, op.clock)

    # -- operations -----------------------------------------------------------------------------------
    def copy(self, stream, dst: int, src: int, nbytes: int, what: str) -> Op:
        """A copy between any two addresses the double knows (device or pinned), or from pageable host memory."""
        if self.live_block(dst, nbytes) is None:
            raise DoubleUsageError(f"{what}: destination [{dst:#x}, +{nbytes}) is not inside a live allocation")
        src_arena = self.find(src, nbytes)
        snapshot = None
        if src_arena is None:  # pageable host memory: CUDA stages it before the call returns
            snapshot = np.ctypeslib.as_array((ctypes.c_uint8 * nbytes).from_address(src)).copy()

        def run(op):
            if snapshot is None and not src_arena.alive:
                self.report(f"use after free: {op.desc} reads pinned memory freed before the copy ran")
                return
            if snapshot is None:
                self.access(src, nbytes, "r", op.clock, op.id, op.desc)
            self.access(dst, nbytes, "w", op.clock, op.id, op.desc)
            ctypes.memmove(dst, src if snapshot is None else snapshot.ctypes.data, nbytes)

        return self.enqueue(stream, "copy", what, run)

    def kernel(self, stream, module: sim.SimModule, name: str, grid, block, args) -> Op:
        params = module.signatures.get(name)
        if params is None:
            raise DoubleUsageError(f"no kernel {name!r} in the module")
        if stream.device != self.device:
            raise CUDARuntimeError("cudaErrorInvalidResourceHandle",
                                   f"kernel {name} launched on a stream of device {stream.device} while device "
                                   f"{self.device} is current")
        grid, block = _dims(grid, "grid"), _dims(block, "block")
        if not (block[0] <= 1024 and block[1] <= 1024 and block[2] <= 64 and block[0] * block[1] * block[2] <= 1024):
            raise DoubleUsageError(f"{name}: block {block} is over CUDA's limits (1024 threads, z <= 64)")
        if not (grid[0] < 2**31 and grid[1] <= 65535 and grid[2] <= 65535):
            raise DoubleUsageError(f"{name}: grid {grid} is over CUDA's limits (y and z <= 65535)")
        if len(args) != len(params):
            raise DoubleUsageError(f"kernel {name} takes {len(params)} arguments, got {len(args)}")
        values = []
        for p, a in zip(params, args):
            kind = p.kind
            if kind == "int" and not isinstance(a, np.int32):
                raise DoubleUsageError(f"{name}: parameter {p.ctype} {p.name} needs np.int32, got {type(a).__name__}")
            if kind == "u32" and not isinstance(a, np.uint32):
                raise DoubleUsageError(f"{name}: parameter {p.ctype} {p.name} needs np.uint32, got {type(a).__name__}")
            if kind in ("ptr", "size"):
                if hasattr(a, "data") and hasattr(a, "_world"):  # a CuPy array passes its pointer
                    a = np.uint64(a.data.ptr)
                if not isinstance(a, (np.uint64, np.int64)):
                    raise DoubleUsageError(f"{name}: parameter {p.ctype} {p.name} needs a 64-bit NumPy integer, "
                                           f"got {type(a).__name__}")
            v = int(a) & 0xFFFFFFFFFFFFFFFF if kind in ("ptr", "size") else int(a)
            if kind == "ptr" and v and self.live_block(v) is None:
                raise DoubleUsageError(f"{name}: pointer {p.name}={v:#x} is not inside a live allocation")
            values.append(v)
        self.launches += 1
        seed = int(self.rng.integers(2**32))

        def read(addr: int, count: int) -> np.ndarray:
            arena = self.find(addr, 8 * count)
            if arena is None:
                raise footprints.BadTable(f"a table at {addr:#x} (+{8 * count} bytes) is not in device memory")
            return arena.view(addr, 8 * count).view(np.int64)

        def run(op):
            try:
                reads, writes = footprints.footprint(name, values, read)
                for addr, n in reads + writes:
                    if self.find(addr, n) is None:
                        raise footprints.BadTable(f"[{addr:#x}, +{n}) is not inside device memory")
            except footprints.BadTable as e:
                self.report(f"illegal address: {op.desc} not run: {e}")
                return
            for addr, n in reads:
                self.access(addr, n, "r", op.clock, op.id, op.desc)
            for addr, n in writes:
                self.access(addr, n, "w", op.clock, op.id, op.desc)
            module.run(name, np.array(values, np.uint64), grid, block, np.random.default_rng(seed))

        return self.enqueue(stream, "kernel", f"kernel {name}", run)


def _dims(d, what: str) -> tuple[int, int, int]:
    d = tuple(int(x) for x in (d if isinstance(d, (tuple, list)) else (d,)))
    if not 1 <= len(d) <= 3 or min(d) < 1:
        raise DoubleUsageError(f"{what} {d} must be 1 to 3 positive sizes")
    return (*d, 1, 1)[:3]
