"""Builds the host (CPU) build of the CUDA kernels as a shared library inside the package.

Everything else lives in pyproject.toml. The extension is optional: without a C++ compiler the
package still installs, and gpudecode._host compiles the same sources on first use instead.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "gpudecode._hostkernels",
            sources=["kernels/host/hostkernels.cpp"],
            depends=["kernels/common.cuh", "kernels/mv.cu", "kernels/accumulate.cu",
                     "kernels/gather.cu", "kernels/host/shim.h"],
            define_macros=[("GD_PYTHON_MODULE", None)],
            extra_compile_args=["-O3", "-fno-strict-aliasing", "-x", "c++"],
            optional=True,
        )
    ]
)
