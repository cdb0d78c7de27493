// Host shim: compiles the CUDA kernels in ../*.cu as ordinary C++ for the CPU.
//
// The qualifiers vanish, and the launch geometry is one block of one thread, so each kernel's
// grid-stride loop (start = blockIdx*blockDim + threadIdx, step = blockDim*gridDim) becomes a
// plain loop over every element, in order. The kernel bodies are not copied or rewritten.
//
// SIMD: the library is built once per instruction set (baseline x86-64, and AVX2; see
// gpudecode/_host.py and setup.py) from these same sources, and the loader picks the build the CPU
// supports. What makes the loops vectorise is GD_TILE: each element of the per-row loops is a run of
// GD_TILE pixels with a compile-time length, instead of the GPU's single pixel.
#pragma once
#ifndef GD_TILE
#define GD_TILE 64
#endif
#define __host__
#define __device__
#define __global__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))

struct gd_dim3 { unsigned int x, y, z; };
static const gd_dim3 threadIdx = {0, 0, 0};
static const gd_dim3 blockIdx = {0, 0, 0};
static const gd_dim3 blockDim = {1, 1, 1};
static const gd_dim3 gridDim = {1, 1, 1};
