// Shared definitions for the engine's kernels.
//
// Every kernel is written as a grid-stride loop around plain per-element code, so the very same
// source runs on the GPU (CuPy RawModule / NVRTC) and on the CPU (host/shim.h sets the launch
// geometry to one block of one thread, which turns each grid-stride loop into an ordinary loop).
// Only built-in C types are used: NVRTC has no <stdint.h> by default.
#pragma once
#ifndef GD_COMMON_CUH
#define GD_COMMON_CUH

#ifndef GD_HD
#define GD_HD __host__ __device__ __forceinline__
#endif

// Pixels per element of the per-row loops. On the GPU an element is one pixel (one thread each);
// the host shim makes it a short run of pixels with a compile-time length, which the C++ compiler
// turns into straight-line SIMD code. Must be 1 or even (a run then starts on a 4:2:0 chroma sample).
#ifndef GD_TILE
#define GD_TILE 1
#endif
static_assert(GD_TILE == 1 || GD_TILE % 2 == 0, "GD_TILE must be 1 or even");

typedef unsigned char gd_u8;
typedef short gd_i16;
typedef unsigned short gd_u16;
typedef int gd_i32;
typedef unsigned long long gd_u64;

// FFmpeg's AVMotionVector (libavutil/motion_vector.h), exported by the decoder as frame side data
// with `flags2=+export_mvs`. PyAV hands it over as a 40-byte aligned record; the kernels read the
// list as is, so no per-frame repacking happens on the host.
struct gd_motion_vector {
    gd_i32 source;        // <0: reference in the past (P), >0: in the future (B)
    gd_u8 w, h;           // block size in pixels
    gd_i16 src_x, src_y;  // where the block comes from in the reference frame (integer pixels)
    gd_i16 dst_x, dst_y;  // centre of the block in the current frame
    gd_u64 flags;
    gd_i32 motion_x, motion_y;
    gd_u16 motion_scale;
};

// Source positions are packed as (y << 16) | x: one 32-bit load per pixel and no division to
// recover the coordinates. Frames are limited to 32767 pixels on a side.
GD_HD gd_i32 gd_pack(int x, int y) { return (y << 16) | x; }
GD_HD int gd_unpack_x(gd_i32 s) { return s & 0xFFFF; }
GD_HD int gd_unpack_y(gd_i32 s) { return s >> 16; }

GD_HD int gd_clamp255(int v) { return v < 0 ? 0 : (v > 255 ? 255 : v); }

// YUV -> RGB in 8.8 fixed point, so that host, GPU and the NumPy twin agree bit for bit.
// matrix: 0 = BT.601 limited range (SD, FFmpeg's default), 1 = BT.709 limited (HD),
//         2 = BT.601 full range (yuvj), 3 = BT.709 full range.
struct gd_yuv_coeffs { int scale, offset, cr_r, cb_g, cr_g, cb_b; };

GD_HD gd_yuv_coeffs gd_yuv_matrix(int matrix) {
    gd_yuv_coeffs k;
    if (matrix == 0)      { k.scale = 298; k.offset = 16; k.cr_r = 409; k.cb_g = 100; k.cr_g = 208; k.cb_b = 516; }
    else if (matrix == 1) { k.scale = 298; k.offset = 16; k.cr_r = 459; k.cb_g = 55;  k.cr_g = 136; k.cb_b = 541; }
    else if (matrix == 2) { k.scale = 256; k.offset = 0;  k.cr_r = 359; k.cb_g = 88;  k.cr_g = 183; k.cb_b = 454; }
    else                  { k.scale = 256; k.offset = 0;  k.cr_r = 403; k.cb_g = 48;  k.cr_g = 120; k.cb_b = 475; }
    return k;
}

// The chroma contributions to R, G and B (plus rounding), shared by the 2x2 pixels of a 4:2:0 sample.
struct gd_chroma { int r, g, b; };

GD_HD gd_chroma gd_chroma_terms(int u, int v, const gd_yuv_coeffs& k) {
    const int d = u - 128, e = v - 128;
    gd_chroma ch;
    ch.r = k.cr_r * e;
    ch.g = -k.cb_g * d - k.cr_g * e;
    ch.b = k.cb_b * d;
    return ch;
}

#endif  // GD_COMMON_CUH
