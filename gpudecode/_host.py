"""The host build of the kernels: the CUDA sources compiled for the CPU, called through ctypes.

This is the one place that loads native code for the CPU backend. The library is the extension
built at install time (``gpudecode._hostkernels``); in a source checkout without it, the same
sources are compiled on first use with the system C++ compiler into a per-user cache.

SIMD without building for one machine: the library exists once per instruction set (``ISAS``:
the architecture's baseline, and AVX2 on x86-64), all from the same sources, and the loader picks
the best one the CPU runs. ``GPUDECODE_HOST_ISA=baseline`` forces the baseline build (the tests
use it to check that build too).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np

from gpudecode.errors import BackendUnavailableError
from gpudecode.kernels import CUDA_SOURCES, KERNEL_DIR

_P = ctypes.c_void_p
_I = ctypes.c_int
_SIGNATURES = {
    # name: argtypes, in the order of the kernel's parameters
    "rasterize_mv": [_P, _I, _I, _I, _I, _P, _P],
    "accumulate_step": [_P, _P, _P, _I, _I, _I, _I],
    "yuv420_to_rgb": [_P, _I, _P, _P, _I, _I, _I, _I, _I, _P],
    "gather_mv_residual": [_P, _P, _P, _I, _P, _P, _I, _I, _I, _I, _I, _P, _P],
    # the batched engine (kernels/batch.cu), launched by name through gpudecode.executor
    "batch_zero": [_P, _I],
    "batch_rasterize_mv": [_P, _I, _P, _I],
    "batch_trace_gather": [_P, _I, _P, _I, _I, _P, _P],
    "batch_iframe_rgb": [_P, _I, _I, _I, _P],
}
#: Host-only glue in hostkernels.cpp (not kernels): name -> (argtypes, restype).
_HOST_SIGNATURES = {
    "gd_host_p_frame": ([_P, _I, _P, _I, _I, _I, _P, _P, _P, _I, _I], _I),
    "gd_host_pack_i420": ([_P, _I, _P, _P, _I, _I, _I, _P], None),
    "gd_host_append_mvs": ([_P, _I, _P, _I], _I),
    "gd_host_expand_mvs": ([_P, _P, _I, _P, _P, _I], _I),
}
_SOURCE_FILES = ("common.cuh", *CUDA_SOURCES, "host/shim.h", "host/hostkernels.cpp", "host/hostkernels_avx2.cpp")

#: Flags of every build (setup.py passes the same; -fno-wrapv matters there, see its comment).
BASE_FLAGS = ("-O3", "-fno-wrapv")
_X86_64 = platform.machine().lower() in ("x86_64", "amd64")
#: Instruction set -> (source in kernels/host, extra compiler flags, installed module), slowest first.
#: setup.py builds the same modules with the same flags.
ISAS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "baseline": ("hostkernels.cpp", (), "gpudecode._hostkernels"),
    **({"avx2": ("hostkernels_avx2.cpp", ("-mavx2", "-mfma", "-mbmi", "-mbmi2"), "gpudecode._hostkernels_avx2")}
       if _X86_64 else {}),
}
ISA_ENV = "GPUDECODE_HOST_ISA"


def _ptr(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


def build_host_library(output: str | os.PathLike, *, compiler: str | None = None, isa: str = "baseline",
                       flags: tuple[str, ...] | None = None) -> Path:
    """Compile ``kernels/*.cu`` for the CPU through ``host/shim.h`` into a shared library for ``isa``."""
    if isa not in ISAS:
        raise ValueError(f"isa must be one of {sorted(ISAS)} on this machine, got {isa!r}")
    source, isa_flags, _ = ISAS[isa]
    cxx = compiler or os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        raise BackendUnavailableError(None, "no C++ compiler found to build the host kernels",
                                      "install g++ or reinstall gpudecode with a compiler present")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    cmd = [cxx, *(BASE_FLAGS if flags is None else flags), *isa_flags, "-shared", "-fPIC",
           f'-DGD_SOURCES_DIGEST="{sources_digest()}"', "-x", "c++", str(KERNEL_DIR / "host" / source), "-o", str(tmp)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BackendUnavailableError(None, f"compiling the host kernels failed: {' '.join(cmd)}\n{proc.stderr}")
    os.replace(tmp, output)
    return output


def sources_digest() -> str:
    """Digest of the kernel sources; setup.py bakes the same value into the library it builds."""
    h = hashlib.sha256()
    for name in _SOURCE_FILES:
        h.update((KERNEL_DIR / name).read_bytes())
    return h.hexdigest()[:16]


def library_digest(path: str | os.PathLike) -> str | None:
    """The digest a built host library reports, or None when it has none (or cannot be loaded)."""
    try:
        fn = ctypes.CDLL(str(path)).gd_sources_digest
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_char_p
    return fn().decode()


def _library_path(isa: str) -> Path:
    digest = sources_digest()
    source, isa_flags, module = ISAS[isa]
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.origin and library_digest(spec.origin) == digest:
        return Path(spec.origin)
    # No installed build, or one built from other sources (an editable install whose kernels were
    # edited since): calling it with the current signatures would crash, so build the current ones.
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gpudecode"
    build = hashlib.sha256(" ".join((digest, source, *BASE_FLAGS, *isa_flags)).encode()).hexdigest()[:16]
    path = cache / f"hostkernels-{isa}-{build}.so"
    if not path.exists():
        build_host_library(path, isa=isa)
    return path


def supported_isas() -> list[str]:
    """The instruction sets of ``ISAS`` this CPU runs, slowest first (asks the baseline build)."""
    supported = ["baseline"]
    if "avx2" in ISAS:
        has_avx2 = ctypes.CDLL(str(_library_path("baseline"))).gd_cpu_has_avx2
        has_avx2.restype = ctypes.c_int
        if has_avx2():
            supported.append("avx2")
    return supported


def select_isa() -> str:
    """The build to load: the fastest the CPU runs, or the one ``GPUDECODE_HOST_ISA`` names."""
    wanted = os.environ.get(ISA_ENV, "").strip().lower() or "auto"
    if wanted != "auto" and wanted not in ISAS:
        raise ValueError(f"{ISA_ENV} must be 'auto' or one of {sorted(ISAS)} on this machine, got {wanted!r}")
    supported = supported_isas()
    if wanted == "auto":
        return supported[-1]
    if wanted not in supported:
        raise BackendUnavailableError(None, f"{ISA_ENV}={wanted} asks for instructions this CPU does not have",
                                      f"unset {ISA_ENV} or set it to one of {supported}")
    return wanted


class HostKernels:
    """Typed wrappers over one loaded host library. Outputs are preallocated by the caller."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            lib = ctypes.CDLL(str(self.path))
        except OSError as e:
            raise BackendUnavailableError(self.path, f"cannot load the host kernels: {e}",
                                          "reinstall gpudecode or delete the cached library") from e
        #: the instruction set the library was built for (None: a library from before builds had one)
        self.isa = None
        if hasattr(lib, "gd_host_isa"):
            lib.gd_host_isa.restype = ctypes.c_char_p
            self.isa = lib.gd_host_isa().decode()
        for name, argtypes in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, None
            setattr(self, f"_{name}", fn)
        for name, (argtypes, restype) in _HOST_SIGNATURES.items():
            try:
                fn = getattr(lib, name)
            except AttributeError:  # a library from before the glue existed (benchmarks time old builds)
                continue
            fn.argtypes, fn.restype = argtypes, restype
        #: the kernels at pointer level (ints for arrays, in the kernels' parameter order), for hot
        #: loops that keep their buffers and so can skip the ~1 us a NumPy pointer lookup costs
        self.raw = lib
        self._flag = np.zeros(1, np.int32)
        self.flag_ptr = self._flag.ctypes.data

    def misaligned(self) -> bool:
        """Whether the last raw ``rasterize_mv`` call met a block off its cell grid (reset by reading)."""
        hit = bool(self._flag[0])
        self._flag[0] = 0
        return hit

    def rasterize_mv(self, mvs: np.ndarray, grid: np.ndarray, cell_shift: int) -> bool:
        """Write MV records into a zeroed (grid_h, grid_w, 2) int16 grid; True if a block was misaligned."""
        assert mvs.dtype.itemsize == 40 and mvs.flags.c_contiguous and grid.dtype == np.int16
        self._flag[0] = 0
        self._rasterize_mv(_ptr(mvs), len(mvs), grid.shape[1], grid.shape[0], cell_shift, _ptr(grid), _ptr(self._flag))
        return bool(self._flag[0])

    def p_frame(self, mvs: np.ndarray, grid: np.ndarray, dense: np.ndarray, src_prev: np.ndarray | None,
                src_next: np.ndarray, cell_shift: int) -> int:
        """One P-frame in one call: rasterise ``mvs`` into ``grid`` (into ``dense``, 1-pixel cells, when a
        block is off the grid; both are zeroed first), then one accumulation step. Returns the cell shift used."""
        assert mvs.dtype.itemsize == 40 and mvs.flags.c_contiguous and grid.dtype == dense.dtype == np.int16
        height, width = src_next.shape
        assert dense.shape == (height, width, 2)
        return self.raw.gd_host_p_frame(_ptr(mvs), len(mvs), _ptr(grid), grid.shape[1], grid.shape[0], cell_shift,
                                        _ptr(dense), _ptr(src_prev), _ptr(src_next), width, height)

    def accumulate_step(self, src_prev: np.ndarray | None, src_next: np.ndarray, grid: np.ndarray,
                        cell_shift: int) -> None:
        height, width = src_next.shape
        self._accumulate_step(_ptr(src_prev), _ptr(src_next), _ptr(grid), grid.shape[1], cell_shift, width, height)

    def yuv420_to_rgb(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: int, out: np.ndarray) -> None:
        """4:2:0 planes -> (H, W, 3) uint8 RGB. Rows may be padded; U and V may be NV12 views (uv[:, 0::2])."""
        height, width = out.shape[:2]
        self._yuv420_to_rgb(_ptr(y), y.strides[0], _ptr(u), _ptr(v), u.strides[0], u.strides[1], width, height, matrix,
                           _ptr(out))

    def gather_mv_residual(self, src: np.ndarray | None, iframe_rgb: np.ndarray | None, y: np.ndarray | None,
                           u: np.ndarray | None, v: np.ndarray | None, matrix: int, mv_out: np.ndarray,
                           residual_out: np.ndarray | None) -> None:
        """MV (and, unless ``residual_out`` is None, the residual) at the position ``src`` describes."""
        height, width = mv_out.shape[:2]
        if residual_out is not None and any(a is None for a in (iframe_rgb, y, u, v)):
            raise ValueError("the residual needs the I-frame and the frame's Y, U, V planes")
        self._gather_mv_residual(_ptr(src), _ptr(iframe_rgb), _ptr(y), 0 if y is None else y.strides[0], _ptr(u),
                                 _ptr(v), 0 if u is None else u.strides[0], 1 if u is None else u.strides[1], width, height, matrix,
                                 _ptr(mv_out),
                                 _ptr(residual_out))


_lock = threading.Lock()
_loaded: HostKernels | None = None


def host_kernels() -> HostKernels:
    """The process-wide host kernels, loaded (or compiled) on first use.

    ``GPUDECODE_HOST_KERNELS=/path/lib.so`` loads that library instead of choosing one.
    """
    global _loaded
    with _lock:
        if _loaded is None:
            override = os.environ.get("GPUDECODE_HOST_KERNELS")
            _loaded = HostKernels(override if override else _library_path(select_isa()))
        return _loaded


__all__ = ["ISAS", "HostKernels", "build_host_library", "host_kernels", "library_digest", "select_isa",
           "sources_digest", "supported_isas"]
