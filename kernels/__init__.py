"""CUDA C kernels of the engine and their NumPy twins (installed as ``gpudecode.kernels``).

The ``.cu`` files are the single source of the hot loops: CuPy compiles them for the GPU
(``gpudecode._cuda``) and the system C++ compiler builds them for the CPU through ``host/shim.h``
(``gpudecode._host``). ``reference.py`` holds a readable NumPy twin of every kernel; the tests
require bit-exact agreement between the host build and the twins.
"""

from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent
#: The CUDA sources, in the order the host build includes them.
CUDA_SOURCES = ("mv.cu", "accumulate.cu", "gather.cu", "batch.cu")
#: Kernels exported by the sources (``extern "C" __global__``).
KERNEL_NAMES = ("rasterize_mv", "accumulate_step", "yuv420_to_rgb", "gather_mv_residual",
                "batch_zero", "batch_rasterize_mv", "batch_trace_gather", "batch_iframe_rgb")
#: Side of a cell of the MV grid for the first rasterisation attempt (2**CELL_SHIFT pixels; blocks off that grid fall back to 1-pixel cells).
CELL_SHIFT = 3

__all__ = ["KERNEL_DIR", "CUDA_SOURCES", "KERNEL_NAMES", "CELL_SHIFT"]
