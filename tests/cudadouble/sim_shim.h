// The CUDA double's shim (tests only): compiles kernels/*.cu for the CPU as real per-thread code.
//
// Unlike kernels/host/shim.h (one thread walking each grid-stride loop, GD_TILE pixels per element),
// here GD_TILE stays 1 (common.cuh's GPU value) and the launch geometry is mutable: the generated
// launcher sets blockIdx/threadIdx for every (block, thread) of the launch, in a shuffled order, and
// calls the kernel once per thread, as a GPU would (the kernels use no shared memory or barriers).
#pragma once
#define __host__
#define __device__
#define __global__
#define __forceinline__ inline
#define __noinline__
struct gd_dim3 { unsigned int x, y, z; };
static gd_dim3 threadIdx, blockIdx, blockDim, gridDim;
