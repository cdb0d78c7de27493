// The AVX2 build of the host kernels: the same sources as hostkernels.cpp, compiled with
// -mavx2 -mfma -mbmi -mbmi2 (gpudecode/_host.py, setup.py). Loaded only on CPUs that have them.
#define GD_HOST_ISA "avx2"
#include "hostkernels.cpp"
