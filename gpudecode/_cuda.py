"""The one place that loads CuPy and compiles the CUDA kernels (lazily, on first use).

Importing gpudecode never needs a GPU: CuPy is imported here only when the GPU backend is asked
for, and every way that can fail (CuPy missing, no driver, no device, NVRTC failing) becomes one
BackendUnavailableError that lists the likely causes and the underlying exception. The sources are
the same ``kernels/*.cu`` the host build compiles; CuPy caches the compiled module on disk.

Stream ordering (tests/cudadouble runs all of this on a strict asynchronous CuPy double in CI):
every event is created and recorded inside ``with cp.cuda.Device(self.device)`` (an event belongs to
the device current at its creation; recording it on another device's stream fails); a pinned staging
buffer stays alive until the copy out of it has completed, whoever drops it (``_hold``).
"""

from __future__ import annotations

import hashlib
import threading

import numpy as np

from gpudecode.errors import GPU_INSTALL_REMEDY, BackendUnavailableError
from gpudecode.kernels import CUDA_SOURCES, KERNEL_DIR, KERNEL_NAMES

_REMEDY = GPU_INSTALL_REMEDY
_BLOCK_2D = (32, 8, 1)
#: NVRTC options for the kernels' module (tests compile the same string with cuda.bindings.nvrtc).
NVRTC_OPTIONS = ("--std=c++14", f"-I{KERNEL_DIR}")


def sources_digest(kernel_dir=None) -> str:
    """Digest of every file the module includes (the .cu sources and common.cuh)."""
    kernel_dir = KERNEL_DIR if kernel_dir is None else kernel_dir
    h = hashlib.sha256()
    for name in ("common.cuh", *CUDA_SOURCES):
        h.update((kernel_dir / name).read_bytes())
    return h.hexdigest()[:16]


def module_source(kernel_dir=None) -> str:
    """The one translation unit NVRTC compiles: every kernels/*.cu, included in CUDA_SOURCES order.

    CuPy's compile cache is keyed by this string and the options, not by the included files, so the
    string carries the sources' digest: an edited kernel is recompiled, never loaded stale (issue 18).
    """
    return "\n".join([f"// gpudecode kernels, sources digest {sources_digest(kernel_dir)}",
                      *(f'#include "{name}"' for name in CUDA_SOURCES)])


def import_cupy():
    """CuPy with a usable device, or BackendUnavailableError explaining why not."""
    try:
        import cupy
    except Exception as e:  # ImportError, or a broken CUDA install raising something else
        raise BackendUnavailableError(None, f"CuPy cannot be imported ({type(e).__name__}: {e})", _REMEDY) from e
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver: CUDARuntimeError
        raise BackendUnavailableError(None, f"no usable CUDA driver ({type(e).__name__}: {e})", _REMEDY) from e
    if count < 1:
        raise BackendUnavailableError(None, "CUDA reports no GPU on this machine", _REMEDY)
    return cupy


def _as_ptr(a) -> np.uint64:
    """A device pointer as a kernel argument; None is NULL (the kernels treat NULL specially)."""
    if a is None:
        return np.uint64(0)
    if isinstance(a, (int, np.integer)):
        return np.uint64(a)
    return np.uint64(a.data.ptr)


def _grid_2d(width: int, height: int) -> tuple[int, int, int]:
    return ((width + _BLOCK_2D[0] - 1) // _BLOCK_2D[0], (height + _BLOCK_2D[1] - 1) // _BLOCK_2D[1], 1)


class CudaKernels:
    """The kernels compiled with NVRTC through CuPy; arguments are CuPy arrays or raw pointers."""

    def __init__(self, device: int = 0):
        cp = import_cupy()
        self.cp = cp
        self.device = device
        try:
            with cp.cuda.Device(device):
                self.module = cp.RawModule(code=module_source(), options=NVRTC_OPTIONS)
                self._fn = {name: self.module.get_function(name) for name in KERNEL_NAMES}
        except Exception as e:
            raise BackendUnavailableError(None, f"compiling the CUDA kernels failed ({type(e).__name__}: {e})",
                                          "check that the CuPy package matches the installed CUDA driver") from e

    def rasterize_mv(self, mvs_ptr, num_mvs: int, grid, cell_shift: int, flag) -> None:
        """Write ``num_mvs`` AVMotionVector records at ``mvs_ptr`` into a zeroed int16 grid; flag |= misaligned."""
        if num_mvs == 0:
            return
        threads = 128
        self._fn["rasterize_mv"](((num_mvs + threads - 1) // threads,), (threads,),
                                 (_as_ptr(mvs_ptr), np.int32(num_mvs), np.int32(grid.shape[1]), np.int32(grid.shape[0]),
                                  np.int32(cell_shift), _as_ptr(grid), _as_ptr(flag)))

    def accumulate_step(self, src_prev, src_next, grid, cell_shift: int) -> None:
        height, width = src_next.shape
        self._fn["accumulate_step"](_grid_2d(grid.shape[1], height), _BLOCK_2D,
                                    (_as_ptr(src_prev), _as_ptr(src_next), _as_ptr(grid), np.int32(grid.shape[1]),
                                     np.int32(cell_shift), np.int32(width), np.int32(height)))

    def yuv420_to_rgb(self, y, u_ptr, v_ptr, uv_stride: int, uv_step: int, matrix: int, out) -> None:
        height, width = out.shape[:2]
        self._fn["yuv420_to_rgb"](_grid_2d(width, height), _BLOCK_2D,
                                  (_as_ptr(y), np.int32(y.strides[0]), _as_ptr(u_ptr), _as_ptr(v_ptr), np.int32(uv_stride),
                                   np.int32(uv_step), np.int32(width), np.int32(height), np.int32(matrix), _as_ptr(out)))

    def gather_mv_residual(self, src, iframe_rgb, y, u_ptr, v_ptr, uv_stride: int, uv_step: int, matrix: int,
                           mv_out, residual_out) -> None:
        height, width = mv_out.shape[:2]
        self._fn["gather_mv_residual"](_grid_2d(width, height), _BLOCK_2D,
                                       (_as_ptr(src), _as_ptr(iframe_rgb), _as_ptr(y), np.int32(0 if y is None else y.strides[0]),
                                        _as_ptr(u_ptr), _as_ptr(v_ptr), np.int32(uv_stride), np.int32(uv_step),
                                        np.int32(width), np.int32(height), np.int32(matrix), _as_ptr(mv_out),
                                        _as_ptr(residual_out)))


#: Host objects (pinned staging buffers) that a queued copy still reads, with the event after that copy.
#: Module-wide, not per executor: ``read_sample`` drops its executor as soon as it returns (issue 18).
_in_flight: list = []
_in_flight_lock = threading.Lock()


def _hold(event, obj) -> None:
    """Keep ``obj`` alive until ``event`` has completed (checked, and released, on later calls)."""
    with _in_flight_lock:
        _in_flight[:] = [(e, o) for e, o in _in_flight if not e.done]
        if obj is not None:
            _in_flight.append((event, obj))


def stream_from_torch(cp, torch_stream, device: int):
    """A CuPy view of a torch CUDA stream: ``Stream.from_external`` (CuPy 14: the CUDA stream protocol,
    which torch streams implement), ``ExternalStream`` before it (deprecated in CuPy 14)."""
    with cp.cuda.Device(device):
        if hasattr(cp.cuda.Stream, "from_external"):
            return cp.cuda.Stream.from_external(torch_stream)
        return cp.cuda.ExternalStream(torch_stream.cuda_stream, device)


class CupyExecutor:
    """The executor interface (gpudecode.executor) on a CUDA device, through CuPy.

    Two non-blocking streams: copies on ``copy_stream``, kernels on ``compute_stream``, ordered by
    events, so a batch's host-to-device copy overlaps the previous batch's kernels. Host staging
    buffers are pinned (page-locked), which is what makes ``memcpyAsync`` asynchronous.
    """

    name = "cupy"

    def __init__(self, device: int = 0):
        cp = import_cupy()
        self.cp = cp
        self.device = device
        self.kernels = cuda_kernels(device)
        with cp.cuda.Device(device):
            self.copy_stream = cp.cuda.Stream(non_blocking=True)
            self.compute_stream = cp.cuda.Stream(non_blocking=True)
        self.device_name = cp.cuda.runtime.getDeviceProperties(device)["name"].decode()
        self.launches: list[str] = []
        #: benchmarks set this: events then carry timing, and the last copy's start and end are kept
        self.timed = False
        self.last_copy: tuple = (None, None)

    def host_buffer(self, nbytes: int) -> np.ndarray:
        """Pinned memory of exactly ``nbytes`` (rounded to 64 KiB), allocated for this buffer alone.

        Not from CuPy's pinned pool: the pool rounds every request up to a power of two (a 2.7 GB staging
        buffer, 64 clips x 8 segments at 1080p, would pin 4 GiB) and hands a freed block to the next
        caller at once, while a copy out of it may still be queued. Staging buffers are few and long-lived
        (they grow by 1.5x when a batch needs more), so an allocation of their own costs nothing per batch.
        """
        size = max(1, -(-int(nbytes) // (64 << 10)) * (64 << 10))
        _hold(None, None)  # release the buffers whose copies have completed
        with self.cp.cuda.Device(self.device):
            mem = self.cp.cuda.PinnedMemory(size)
        return np.frombuffer(self.cp.cuda.PinnedMemoryPointer(mem, 0), np.uint8, size)  # keeps the block alive

    def empty(self, shape, dtype, *, on=None):
        """Device memory from the pool of stream ``on`` (default: the compute stream), stream-ordered there."""
        with self.cp.cuda.Device(self.device), (self.compute_stream if on is None else on):
            return self.cp.empty(shape, dtype)

    def pointer(self, array) -> int:
        return int(array.data.ptr)

    def _event(self, stream):
        with self.cp.cuda.Device(self.device):  # the event belongs to the current device: this one
            event = self.cp.cuda.Event(disable_timing=not self.timed)
            event.record(stream)
        return event

    def copy_in(self, dst_ptr: int, src: np.ndarray, nbytes: int, *, after=None):
        rt = self.cp.cuda.runtime
        with self.cp.cuda.Device(self.device):
            if after is not None:
                self.copy_stream.wait_event(after)
            started = self._event(self.copy_stream) if self.timed else None
            rt.memcpyAsync(int(dst_ptr), src.ctypes.data, int(nbytes), rt.memcpyHostToDevice, self.copy_stream.ptr)
            done = self._event(self.copy_stream)
        _hold(done, src)  # the copy reads ``src`` when it runs, not now
        self.last_copy = (started, done)
        return done

    def launch(self, name: str, grid: tuple, block: tuple, args: tuple) -> None:
        self.launches.append(name)
        with self.cp.cuda.Device(self.device), self.compute_stream:
            self.kernels._fn[name](grid, block, args)

    def mark(self, *, on=None):
        """An event after the work queued so far on ``on`` (default: the compute stream)."""
        return self._event(self.compute_stream if on is None else on)

    def wait(self, event) -> None:
        if event is not None:
            with self.cp.cuda.Device(self.device):
                self.compute_stream.wait_event(event)

    def host_wait(self, event) -> None:
        if event is not None:
            with self.cp.cuda.Device(self.device):
                event.synchronize()

    def to_host(self, array) -> np.ndarray:
        with self.cp.cuda.Device(self.device):
            self.compute_stream.synchronize()
            return self.cp.asnumpy(array)


_lock = threading.Lock()
_loaded: dict[int, CudaKernels] = {}


def cuda_kernels(device: int = 0) -> CudaKernels:
    """The process-wide compiled kernels for ``device`` (compiled on first use)."""
    with _lock:
        if device not in _loaded:
            _loaded[device] = CudaKernels(device)
        return _loaded[device]
