// The host build of the engine's kernels: the CUDA sources themselves, compiled for the CPU.
// Loaded through ctypes (gpudecode/_host.py); the empty module init only makes the shared
// library a valid Python extension so that setuptools can build and ship it.
//
// The library is built once per instruction set: this file as is for the baseline of the
// architecture (runs on every CPU of it), hostkernels_avx2.cpp for x86-64 CPUs with AVX2. The
// loader asks the baseline build which ones the CPU supports and loads the best.
#include "shim.h"
#include "../mv.cu"
#include "../accumulate.cu"
#include "../gather.cu"

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
