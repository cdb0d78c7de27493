"""Builds the host (CPU) build of the CUDA kernels as shared libraries inside the package.

Everything else lives in pyproject.toml. The extensions are optional: without a C++ compiler the
package still installs, and gpudecode._host compiles the same sources on first use instead.
One library per instruction set (gpudecode/_host.py's ISAS, same modules and flags): the
baseline of the architecture, which runs everywhere, and on x86-64 an AVX2 build that the loader
picks at run time when the CPU has AVX2. Never -march=native: a wheel runs on other machines.
"""

import hashlib
import platform
from pathlib import Path

from setuptools import Extension, setup

# Must list the same files, in the same order, as gpudecode/_host.py's _SOURCE_FILES.
KERNEL_FILES = ("common.cuh", "mv.cu", "accumulate.cu", "gather.cu", "batch.cu", "host/shim.h", "host/hostkernels.cpp",
                "host/hostkernels_avx2.cpp")
DIGEST = hashlib.sha256(b"".join((Path("kernels") / f).read_bytes() for f in KERNEL_FILES)).hexdigest()[:16]
# gpudecode/_host.py's BASE_FLAGS. -fno-wrapv overrides the -fwrapv in Python's own CFLAGS, which
# setuptools passes first: with wrapping int arithmetic GCC cannot prove the kernels' row indexing
# affine and leaves their loops scalar (measured: YUV->RGB 3.5x slower).
BASE_FLAGS = ["-O3", "-fno-wrapv"]
ISAS = {"_hostkernels": ("hostkernels.cpp", [])}  # module -> source, extra flags (gpudecode/_host.py's ISAS)
if platform.machine().lower() in ("x86_64", "amd64"):
    ISAS["_hostkernels_avx2"] = ("hostkernels_avx2.cpp", ["-mavx2", "-mfma", "-mbmi", "-mbmi2"])


def host_extension(module: str, source: str, flags: list) -> Extension:
    return Extension(
        f"gpudecode.{module}",
        sources=[f"kernels/host/{source}"],
        depends=[f"kernels/{f}" for f in KERNEL_FILES],
        define_macros=[("GD_PYTHON_MODULE", module), ("GD_SOURCES_DIGEST", f'"{DIGEST}"')],
        extra_compile_args=[*BASE_FLAGS, *flags],
        optional=True,
    )


setup(ext_modules=[host_extension(module, source, flags) for module, (source, flags) in ISAS.items()])
