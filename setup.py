"""Builds the host (CPU) build of the CUDA kernels as a shared library inside the package.

Everything else lives in pyproject.toml. The extension is optional: without a C++ compiler the
package still installs, and gpudecode._host compiles the same sources on first use instead.
"""

import hashlib
from pathlib import Path

from setuptools import Extension, setup

# Must list the same files, in the same order, as gpudecode/_host.py's _SOURCE_FILES.
KERNEL_FILES = ("common.cuh", "mv.cu", "accumulate.cu", "gather.cu", "host/shim.h", "host/hostkernels.cpp")
DIGEST = hashlib.sha256(b"".join((Path("kernels") / f).read_bytes() for f in KERNEL_FILES)).hexdigest()[:16]

setup(
    ext_modules=[
        Extension(
            "gpudecode._hostkernels",
            sources=["kernels/host/hostkernels.cpp"],
            depends=["kernels/common.cuh", "kernels/mv.cu", "kernels/accumulate.cu",
                     "kernels/gather.cu", "kernels/host/shim.h"],
            define_macros=[("GD_PYTHON_MODULE", None), ("GD_SOURCES_DIGEST", f'"{DIGEST}"')],
            extra_compile_args=["-O3", "-fno-strict-aliasing", "-x", "c++"],
            optional=True,
        )
    ]
)
