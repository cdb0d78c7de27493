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

// Host-only data movement for the kernels' host runs (used under #if GD_TILE > 1; the arithmetic stays
// in the .cu sources). R, G and B line buffers of n pixels -> packed RGB (3n bytes). With AVX2, 32
// pixels take 9 byte shuffles (the compiler's own vectorisation of the stride-3 stores needs about
// twice as many instructions); elsewhere, and for the rest of the run, the plain loop.
#if defined(__AVX2__)
#include <immintrin.h>
#endif
static inline __attribute__((always_inline)) void gd_host_interleave_rgb(const unsigned char* __restrict__ r,
                                                                         const unsigned char* __restrict__ g,
                                                                         const unsigned char* __restrict__ b, int n,
                                                                         unsigned char* __restrict__ rgb) {
    int i = 0;
#if defined(__AVX2__)
    // Output byte o (of 48 per 16 pixels) is channel o % 3 of pixel o / 3: in chunk t (bytes 16t ..
    // 16t+15) channel c's mask picks pixel o / 3 where o % 3 == c, else zero (0x80). Each 128-bit lane
    // does 16 pixels (vpshufb stays in its lane); the lanes are regrouped for three 32-byte stores.
#define GD_M(t, c, k) (char)(((16 * (t) + (k)) % 3 == (c)) ? (16 * (t) + (k)) / 3 : 0x80)
#define GD_MASK(t, c) _mm256_setr_epi8(GD_M(t, c, 0), GD_M(t, c, 1), GD_M(t, c, 2), GD_M(t, c, 3), GD_M(t, c, 4), \
    GD_M(t, c, 5), GD_M(t, c, 6), GD_M(t, c, 7), GD_M(t, c, 8), GD_M(t, c, 9), GD_M(t, c, 10), GD_M(t, c, 11),        \
    GD_M(t, c, 12), GD_M(t, c, 13), GD_M(t, c, 14), GD_M(t, c, 15), GD_M(t, c, 0), GD_M(t, c, 1), GD_M(t, c, 2),       \
    GD_M(t, c, 3), GD_M(t, c, 4), GD_M(t, c, 5), GD_M(t, c, 6), GD_M(t, c, 7), GD_M(t, c, 8), GD_M(t, c, 9),          \
    GD_M(t, c, 10), GD_M(t, c, 11), GD_M(t, c, 12), GD_M(t, c, 13), GD_M(t, c, 14), GD_M(t, c, 15))
    if (n >= 32) {
        const __m256i r0 = GD_MASK(0, 0), g0 = GD_MASK(0, 1), b0 = GD_MASK(0, 2);
        const __m256i r1 = GD_MASK(1, 0), g1 = GD_MASK(1, 1), b1 = GD_MASK(1, 2);
        const __m256i r2 = GD_MASK(2, 0), g2 = GD_MASK(2, 1), b2 = GD_MASK(2, 2);
        for (; i + 32 <= n; i += 32) {
            const __m256i vr = _mm256_loadu_si256((const __m256i*)(r + i));
            const __m256i vg = _mm256_loadu_si256((const __m256i*)(g + i));
            const __m256i vb = _mm256_loadu_si256((const __m256i*)(b + i));
            const __m256i c0 = _mm256_or_si256(_mm256_or_si256(_mm256_shuffle_epi8(vr, r0), _mm256_shuffle_epi8(vg, g0)),
                                               _mm256_shuffle_epi8(vb, b0));
            const __m256i c1 = _mm256_or_si256(_mm256_or_si256(_mm256_shuffle_epi8(vr, r1), _mm256_shuffle_epi8(vg, g1)),
                                               _mm256_shuffle_epi8(vb, b1));
            const __m256i c2 = _mm256_or_si256(_mm256_or_si256(_mm256_shuffle_epi8(vr, r2), _mm256_shuffle_epi8(vg, g2)),
                                               _mm256_shuffle_epi8(vb, b2));
            // c_t = [chunk t of pixels i..i+15 | chunk t of pixels i+16..i+31]
            _mm256_storeu_si256((__m256i*)(rgb + 3 * i), _mm256_permute2x128_si256(c0, c1, 0x20));
            _mm256_storeu_si256((__m256i*)(rgb + 3 * i + 32), _mm256_permute2x128_si256(c2, c0, 0x30));
            _mm256_storeu_si256((__m256i*)(rgb + 3 * i + 64), _mm256_permute2x128_si256(c1, c2, 0x31));
        }
    }
#undef GD_MASK
#undef GD_M
#endif
    for (; i < n; ++i) {
        rgb[3 * i] = r[i];
        rgb[3 * i + 1] = g[i];
        rgb[3 * i + 2] = b[i];
    }
}
