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

// YUV -> RGB in 8.8 fixed point, so that host, GPU and the NumPy twin agree bit for bit:
//   channel = clamp255((scale * (Y - offset) + 128 + ch) >> 8)
// with ch the chroma term of the channel (cr_r * e for R, -cb_g * d - cr_g * e for G, cb_b * d for B;
// d = U - 128, e = V - 128). The kernels compute this same integer in 16-bit pieces, so that the host
// vectorises it 16 lanes at a time (SSE2 has no 32-bit multiply at all):
// - per pixel: with C = ch + 128 - scale * offset and ky = scale - 256 (42 or 0),
//     scale * (Y - offset) + 128 + ch = 256 * (Y + (C >> 8)) + ky * Y + (C & 255),
//   and the first term is a multiple of 256, so (floor division, exact for every input)
//     (scale * (Y - offset) + 128 + ch) >> 8 = Y + hi + ((ky * Y + lo) >> 8),  hi = C >> 8, lo = C & 255,
//   where 0 <= ky * Y + lo <= 42 * 255 + 255 and |hi| < 300: every value fits an int16;
// - per chroma sample: each 8.8 coefficient is split as 256 * a + b with -128 <= b < 128; then
//   C = 256 * A + B with A the sum of the a-terms and B = (b-terms) + 128 - scale * offset, and
//   hi = A + (B >> 8), lo = B & 255. B fits an int16 for the four matrices below: |b_d| + |b_e| <= 175
//   for G, |b| <= 109 for R and B, |128 - scale * offset| <= 4640, so |B| <= 175 * 128 + 4640 < 2^15.
// tests/test_kernels_host.py checks every (Y, U, V) of every matrix against the twin's formula.
// matrix: 0 = BT.601 limited range (SD, FFmpeg's default), 1 = BT.709 limited (HD),
//         2 = BT.601 full range (yuvj), 3 = BT.709 full range.
struct gd_yuv_coeffs {
    int ky, bias;                  // scale - 256, 128 - scale * offset
    int r_a, r_b;                  // cr_r = 256 * r_a + r_b (times e)
    int g_da, g_db, g_ea, g_eb;    // -cb_g (times d) and -cr_g (times e), split the same way
    int b_a, b_b;                  // cb_b (times d)
};

// The split of a coefficient: the a (c = 256 * a + b, -128 <= b < 128); b = c - 256 * a.
GD_HD int gd_coef_a(int c) { return (c + 128) >> 8; }

GD_HD gd_yuv_coeffs gd_yuv_matrix(int matrix) {
    int scale, offset, cr_r, cb_g, cr_g, cb_b;  // the 8.8 fixed-point matrix (the twin's numbers)
    if (matrix == 0)      { scale = 298; offset = 16; cr_r = 409; cb_g = 100; cr_g = 208; cb_b = 516; }
    else if (matrix == 1) { scale = 298; offset = 16; cr_r = 459; cb_g = 55;  cr_g = 136; cb_b = 541; }
    else if (matrix == 2) { scale = 256; offset = 0;  cr_r = 359; cb_g = 88;  cr_g = 183; cb_b = 454; }
    else                  { scale = 256; offset = 0;  cr_r = 403; cb_g = 48;  cr_g = 120; cb_b = 475; }
    gd_yuv_coeffs k;
    k.ky = scale - 256;
    k.bias = 128 - scale * offset;
    k.r_a = gd_coef_a(cr_r);   k.r_b = cr_r - 256 * k.r_a;
    k.g_da = gd_coef_a(-cb_g); k.g_db = -cb_g - 256 * k.g_da;
    k.g_ea = gd_coef_a(-cr_g); k.g_eb = -cr_g - 256 * k.g_ea;
    k.b_a = gd_coef_a(cb_b);   k.b_b = cb_b - 256 * k.b_a;
    return k;
}

// The chroma part of one channel: hi = C >> 8, lo = C & 255 (see above).
struct gd_chroma_part { gd_i16 hi, lo; };
// The chroma parts of R, G and B, shared by the 2x2 pixels of a 4:2:0 sample.
struct gd_chroma { gd_chroma_part r, g, b; };

// C = 256 * whole + part, with part an int16: (C >> 8, C & 255).
GD_HD gd_chroma_part gd_split(int whole, int part) {
    const gd_i16 b = (gd_i16)part;
    gd_chroma_part p;
    p.hi = (gd_i16)(whole + (b >> 8));
    p.lo = (gd_i16)(b & 255);
    return p;
}

GD_HD gd_chroma gd_chroma_terms(int u, int v, const gd_yuv_coeffs& k) {
    const int d = u - 128, e = v - 128;
    gd_chroma ch;
    ch.r = gd_split(k.r_a * e, k.r_b * e + k.bias);
    ch.g = gd_split(k.g_da * d + k.g_ea * e, k.g_db * d + k.g_eb * e + k.bias);
    ch.b = gd_split(k.b_a * d, k.b_b * d + k.bias);
    return ch;
}

// The luma part shared by a pixel's three channels: ky * Y (< 2^14).
GD_HD gd_i16 gd_luma_term(int y, const gd_yuv_coeffs& k) { return (gd_i16)(k.ky * y); }

// One channel of one pixel: Y + hi + ((ky * Y + lo) >> 8), clamped to 0..255 (see above).
GD_HD gd_u8 gd_channel(int y, gd_i16 luma, const gd_chroma_part& c) {
    const gd_i16 v = (gd_i16)(y + c.hi + (gd_i16)((gd_i16)(luma + c.lo) >> 8));
    return (gd_u8)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

// RGB of a pixel of luma y whose 4:2:0 sample has the chroma terms ch.
GD_HD void gd_pixel_from_terms(int y, const gd_yuv_coeffs& k, const gd_chroma& ch, gd_u8* rgb) {
    const gd_i16 luma = gd_luma_term(y, k);
    rgb[0] = gd_channel(y, luma, ch.r);
    rgb[1] = gd_channel(y, luma, ch.g);
    rgb[2] = gd_channel(y, luma, ch.b);
}

#endif  // GD_COMMON_CUH
