// The host build of the engine's kernels: the CUDA sources themselves, compiled for the CPU.
// Loaded through ctypes (gpudecode/_host.py); the empty module init only makes the shared
// library a valid Python extension so that setuptools can build and ship it.
//
// The library is built once per instruction set: this file as is for the baseline of the
// architecture (runs on every CPU of it), hostkernels_avx2.cpp for x86-64 CPUs with AVX2. The
// loader asks the baseline build which ones the CPU supports and loads the best.
#include <string.h>

#include "shim.h"
#include "../mv.cu"
#include "../accumulate.cu"
#include "../gather.cu"
#include "../batch.cu"

// Host glue for the CPU backend (gpudecode/cpu.py), not a kernel: one P-frame folded into S with one
// call from Python instead of four (each ctypes call costs microseconds, and a clip has ~40
// P-frames). The kernels run in the GPU backend's order: zero the cell grid, rasterise the MVs
// into it; if a block is off that grid, zero the dense grid and rasterise into 1-pixel cells
// instead; then one accumulation step. Returns the cell shift used.
extern "C" int gd_host_p_frame(const gd_motion_vector* mvs, int num_mvs, gd_i16* grid, int grid_w, int grid_h,
                               int cell_shift, gd_i16* dense, const gd_i32* src_prev, gd_i32* src_next, int width,
                               int height) {
    memset(grid, 0, sizeof(gd_i16) * 2 * (size_t)grid_w * grid_h);
    gd_i32 misaligned = 0;
    rasterize_mv(mvs, num_mvs, grid_w, grid_h, cell_shift, grid, &misaligned);
    if (misaligned) {
        memset(dense, 0, sizeof(gd_i16) * 2 * (size_t)width * height);
        rasterize_mv(mvs, num_mvs, width, height, 0, dense, &misaligned);
        grid = dense;
        grid_w = width;
        cell_shift = 0;
    }
    accumulate_step(src_prev, src_next, grid, grid_w, cell_shift, width, height);
    return cell_shift;
}

// Which sources this library was built from (see gpudecode/_host.py): a library built from older
// sources is never called with newer signatures.
#ifndef GD_SOURCES_DIGEST
#define GD_SOURCES_DIGEST "unknown"
#endif
extern "C" const char* gd_sources_digest(void) { return GD_SOURCES_DIGEST; }

// The instruction set this library was compiled for.
#ifndef GD_HOST_ISA
#define GD_HOST_ISA "baseline"
#endif
extern "C" const char* gd_host_isa(void) { return GD_HOST_ISA; }

// Whether this CPU (and its OS, which must save the wide registers) runs the AVX2 build. Only ever
// called in the baseline build, which is safe to load anywhere.
extern "C" int gd_cpu_has_avx2(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
           __builtin_cpu_supports("bmi2");
#else
    return 0;
#endif
}

#ifdef GD_PYTHON_MODULE  // the module's name: _hostkernels, _hostkernels_avx2
#include <Python.h>
#define GD_CAT_(a, b) a##b
#define GD_CAT(a, b) GD_CAT_(a, b)
#define GD_STR_(a) #a
#define GD_STR(a) GD_STR_(a)
static struct PyModuleDef gd_module = {PyModuleDef_HEAD_INIT, GD_STR(GD_PYTHON_MODULE),
                                       "Host build of the gpudecode kernels (use via ctypes).", -1};
extern "C" PyMODINIT_FUNC GD_CAT(PyInit_, GD_PYTHON_MODULE)(void) { return PyModule_Create(&gd_module); }
#endif
