// Host shim: compiles the CUDA kernels in ../*.cu as ordinary C++ for the CPU.
//
// The qualifiers vanish, and the launch geometry is one block of one thread, so each kernel's
// grid-stride loop (start = blockIdx*blockDim + threadIdx, step = blockDim*gridDim) becomes a
// plain loop over every element, in order. The kernel bodies are not copied or rewritten.
#pragma once
// Each kernel is built twice, for AVX2 and for baseline x86-64, and the loader picks the one the
// CPU supports (GCC function multi-versioning): SIMD speed without building for one machine.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(GD_NO_TARGET_CLONES)
#define GD_HOST_TARGETS __attribute__((target_clones("avx2", "default")))
#else
#define GD_HOST_TARGETS
#endif
#define __host__
#define __device__
#define __global__ GD_HOST_TARGETS
#define __forceinline__ inline __attribute__((always_inline))

struct gd_dim3 { unsigned int x, y, z; };
static const gd_dim3 threadIdx = {0, 0, 0};
static const gd_dim3 blockIdx = {0, 0, 0};
static const gd_dim3 blockDim = {1, 1, 1};
static const gd_dim3 gridDim = {1, 1, 1};
