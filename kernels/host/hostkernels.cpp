// The host build of the engine's kernels: the CUDA sources themselves, compiled for the CPU.
// Loaded through ctypes (gpudecode/_host.py); the empty module init only makes the shared
// library a valid Python extension so that setuptools can build and ship it.
#include "shim.h"
#include "../mv.cu"
#include "../accumulate.cu"
#include "../gather.cu"
#include "../batch.cu"

// Which sources this library was built from (see gpudecode/_host.py): a library built from older
// sources is never called with newer signatures.
#ifndef GD_SOURCES_DIGEST
#define GD_SOURCES_DIGEST "unknown"
#endif
extern "C" const char* gd_sources_digest(void) { return GD_SOURCES_DIGEST; }

#ifdef GD_PYTHON_MODULE
#include <Python.h>
static struct PyModuleDef gd_module = {PyModuleDef_HEAD_INIT, "_hostkernels",
                                       "Host build of the gpudecode kernels (use via ctypes).", -1};
extern "C" PyMODINIT_FUNC PyInit__hostkernels(void) { return PyModule_Create(&gd_module); }
#endif
