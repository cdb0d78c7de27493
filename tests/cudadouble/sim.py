"""The CUDA double's kernels: signatures parsed from the sources, a per-thread CPU build, footprints.

``RawModule(code, options)`` is compiled here like NVRTC would: the code string with its ``-I``
folders, at the moment of compiling, into a shared library (``sim_shim.h``: GD_TILE=1, mutable
``threadIdx``/``blockIdx``). Compiled modules are cached by the code string and options only, as
CuPy's cache is (so an edited ``#include``d file is missed unless the code string changes).
Every launch runs each (block, thread) of its grid once, in a shuffled order.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHIM = Path(__file__).resolve().parent / "sim_shim.h"
_KERNEL_RE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)', re.S)


@dataclass(frozen=True)
class Param:
    ctype: str  # the C type without qualifiers that do not change the ABI
    name: str

    @property
    def kind(self) -> str:
        """'ptr' (64-bit address), 'int' (32-bit), 'u32', 'size' (64-bit size_t / long long)."""
        t = self.ctype
        if "*" in t:
            return "ptr"
        if t in ("int", "gd_i32"):
            return "int"
        if t in ("unsigned", "unsigned int"):
            return "u32"
        if t in ("size_t", "long long", "unsigned long long", "gd_i64", "gd_u64"):
            return "size"
        raise TypeError(f"the CUDA double does not know the kernel parameter type {t!r}")


def parse_signatures(text: str) -> dict[str, list[Param]]:
    """``extern "C" __global__`` kernels of a CUDA source -> their parameters, in order."""
    out = {}
    for name, params in _KERNEL_RE.findall(text):
        ps = []
        for p in params.split(","):
            p = " ".join(p.replace("__restrict__", " ").split())
            m = re.match(r"(.*?)(\w+)$", p)
            ctype = m.group(1).replace("const ", "").replace(" *", "*").strip()
            ps.append(Param(ctype, m.group(2)))
        out[name] = ps
    return out


def _include_dirs(options) -> list[str]:
    return [o[2:] for o in options if o.startswith("-I")]


def expand_includes(code: str, dirs: list[str]) -> str:
    """The code string with its ``#include "x"`` files read from ``dirs`` (once each, recursively)."""
    seen: set = set()

    def expand(text: str) -> str:
        def sub(m):
            for d in dirs:
                p = Path(d) / m.group(1)
                if p.exists():
                    if p in seen:
                        return ""
                    seen.add(p)
                    return expand(p.read_text())
            return m.group(0)  # the compiler will complain
        return re.sub(r'#include\s+"([^"]+)"', sub, text)

    return expand(code)


def _launcher(name: str, params: list[Param]) -> str:
    casts = []
    for i, p in enumerate(params):
        kind = p.kind
        if kind == "ptr":
            casts.append(f"({p.ctype})(a[{i}])")
        elif kind == "int":
            casts.append(f"(int)(long long)a[{i}]")
        elif kind == "u32":
            casts.append(f"(unsigned)a[{i}]")
        else:
            casts.append(f"({p.ctype})a[{i}]")
    return f"""
extern "C" void gdsim_{name}(const unsigned long long* a, const unsigned* g, const unsigned* b,
                             const unsigned* order, long long n) {{
    gridDim.x = g[0]; gridDim.y = g[1]; gridDim.z = g[2];
    blockDim.x = b[0]; blockDim.y = b[1]; blockDim.z = b[2];
    const unsigned long long tpb = (unsigned long long)b[0] * b[1] * b[2];
    for (long long k = 0; k < n; ++k) {{
        const unsigned long long id = order[k], blk = id / tpb, th = id % tpb;
        threadIdx.x = th % b[0]; threadIdx.y = (th / b[0]) % b[1]; threadIdx.z = th / ((unsigned long long)b[0] * b[1]);
        blockIdx.x = blk % g[0]; blockIdx.y = (blk / g[0]) % g[1]; blockIdx.z = blk / ((unsigned long long)g[0] * g[1]);
        {name}({", ".join(casts)});
    }}
}}
"""


class SimModule:
    """One compiled module: its kernels' signatures and per-thread launchers."""

    def __init__(self, lib_path: Path, signatures: dict[str, list[Param]]):
        self.lib = ctypes.CDLL(str(lib_path))
        self.signatures = signatures
        self.fns = {}
        for name in signatures:
            fn = getattr(self.lib, f"gdsim_{name}")
            fn.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_longlong]
            fn.restype = None
            self.fns[name] = fn

    def run(self, name: str, args: np.ndarray, grid, block, rng: np.random.Generator) -> None:
        g = np.array(grid, np.uint32)
        b = np.array(block, np.uint32)
        n = int(np.prod(g, dtype=np.int64) * np.prod(b, dtype=np.int64))
        if n > 1 << 27:
            raise RuntimeError(f"the CUDA double runs every thread: {n} threads is too many for a test")
        order = rng.permutation(n).astype(np.uint32)
        self.fns[name](args.ctypes.data, g.ctypes.data, b.ctypes.data, order.ctypes.data, n)


_lock = threading.Lock()
_modules: dict[str, SimModule] = {}
#: how many modules were really compiled (the stale-cache regression test reads it)
compiled = [0]


_dir: list = []


def cache_dir() -> Path:
    """One temporary folder per process (the in-process dict is the cache; the folder only holds the builds)."""
    if not _dir:
        _dir.append(Path(tempfile.mkdtemp(prefix="gpudecode-cudadouble-")))
    return _dir[0]


def compile_module(code: str, options) -> SimModule:
    """CuPy's RawModule compile, for the double: cached by (code, options) only, like CuPy's."""
    options = tuple(options)
    key = hashlib.sha256(repr((code, options, SHIM.read_bytes())).encode()).hexdigest()[:20]
    with _lock:
        if key in _modules:
            return _modules[key]
        dirs = _include_dirs(options)
        signatures = parse_signatures(expand_includes(code, dirs))
        lib = cache_dir() / f"sim-{key}-{os.getpid()}.so"
        src = lib.with_suffix(".cpp")
        src.write_text(f'#include "{SHIM}"\n{code}\n' + "".join(_launcher(n, p) for n, p in signatures.items()))
        cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
        cmd = [cxx, "-O1", "-std=c++14", "-shared", "-fPIC", *(f"-I{d}" for d in dirs), "-x", "c++", str(src),
               "-o", str(lib)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"the CUDA double could not compile the module: {' '.join(cmd)}\n{proc.stderr}")
        compiled[0] += 1
        _modules[key] = mod = SimModule(lib, signatures)
        return mod
