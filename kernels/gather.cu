// From the decoded planes and the accumulated source map to the sample's pixels:
//   yuv420_to_rgb:       the I-frame in RGB (colour conversion on the device that holds the planes);
//   gather_mv_residual:  accumulated_mv(p) = p - S_k(p) and residual(p) = F_k(p) - I(S_k(p)),
//                        with F_k converted from its YUV planes on the fly (fused: F_k in RGB is
//                        never written out). residual_out == NULL computes the MV alone.
// Chroma is upsampled by nearest neighbour (a 4:2:0 sample covers 2x2 pixels). The chroma planes
// are read with a step: 1 for planar I420 (PyAV's yuv420p), 2 for NV12 (NVDEC), where
// v_plane = u_plane + 1.
//
// One element of the x loops is a run of GD_TILE pixels (common.cuh): one pixel per thread on the
// GPU, a fixed-length run on the host. A run first computes the chroma terms of its 4:2:0 samples
// into small line buffers, one entry per pixel, so that every later access is unit-stride in x and
// the per-pixel arithmetic (gd_luma_rgb) vectorises on the host; on the GPU the buffers are registers.
#include "common.cuh"

#ifndef GD_PREFETCH_ROWS
#define GD_PREFETCH_ROWS 4
#endif

// The runs of pixels that make up the element at x0 (< width) of a row: [x0, x0 + GD_TILE), or what is
// left of the row. On the host a short last run is done as a whole run that ends where the row does
// (its first pixels are computed and written again, with the same values: every output pixel is a
// function of the inputs alone) and, for an odd width, the last pixel on its own, so that only runs
// of compile-time length are vectorised. Runs start at even x whenever they are longer than 1.
struct gd_runs { int x0[2], n[2], count; };

GD_HD gd_runs gd_row_runs(int x0, int width) {
    gd_runs r;
    r.count = 1;
    r.x0[0] = x0;
    r.n[0] = GD_TILE == 1 ? 1 : (width - x0 < GD_TILE ? width - x0 : GD_TILE);
    const int n = r.n[0], even = n & ~1;
    if (GD_TILE > 1 && n < GD_TILE && even > 0 && x0 + even >= GD_TILE) {
        r.x0[0] = x0 + even - GD_TILE;
        r.n[0] = GD_TILE;
        if (n & 1) {
            r.x0[1] = x0 + n - 1;
            r.n[1] = 1;
            r.count = 2;
        }
    }
    return r;
}

// RGB of the n pixels x0 .. x0+n-1 of row y (n <= GD_TILE; x0 is even whenever n > 1), written to
// rgb[0 .. 3n). Host: one loop over the run's 4:2:0 samples computes the chroma terms of a sample
// and the two pixels it covers, each channel into its own line buffer (16-bit lanes, see
// common.cuh); a second loop interleaves them. On the GPU (n == 1) the buffers are registers.
GD_HD void gd_rgb_run_n(const gd_u8* __restrict__ luma, const gd_u8* __restrict__ u, const gd_u8* __restrict__ v,
                        int step, int n, const gd_yuv_coeffs& k, gd_u8* __restrict__ rgb) {
    gd_u8 r[GD_TILE], g[GD_TILE], b[GD_TILE];
    for (int j = 0; j < n >> 1; ++j) {
        const gd_chroma ch = gd_chroma_terms(u[j * step], v[j * step], k);
        for (int q = 0; q < 2; ++q) {
            const int i = 2 * j + q;
            const gd_i16 l = gd_luma_term(luma[i], k);
            r[i] = gd_channel(luma[i], l, ch.r);
            g[i] = gd_channel(luma[i], l, ch.g);
            b[i] = gd_channel(luma[i], l, ch.b);
        }
    }
    if (n & 1) {  // a run of one pixel (GPU), or the odd last pixel of a row: half a sample
        const int i = n - 1;
        const gd_chroma ch = gd_chroma_terms(u[(i >> 1) * step], v[(i >> 1) * step], k);
        const gd_i16 l = gd_luma_term(luma[i], k);
        r[i] = gd_channel(luma[i], l, ch.r);
        g[i] = gd_channel(luma[i], l, ch.g);
        b[i] = gd_channel(luma[i], l, ch.b);
    }
#if GD_TILE > 1
    gd_host_interleave_rgb(r, g, b, n, rgb);  // host/shim.h: the same loop, with byte shuffles where the CPU has them
#else
    for (int i = 0; i < n; ++i) {
        rgb[3 * i] = r[i];
        rgb[3 * i + 1] = g[i];
        rgb[3 * i + 2] = b[i];
    }
#endif
}

GD_HD void gd_rgb_run(const gd_u8* __restrict__ y_plane, int y_stride, const gd_u8* __restrict__ u_row,
                      const gd_u8* __restrict__ v_row, int uv_step, int x0, int y, int n, const gd_yuv_coeffs& k,
                      gd_u8* __restrict__ rgb) {
    const gd_u8* __restrict__ luma = y_plane + y * y_stride + x0;
    const gd_u8* __restrict__ u = u_row + (x0 >> 1) * uv_step;
    const gd_u8* __restrict__ v = v_row + (x0 >> 1) * uv_step;
    if (n == GD_TILE && uv_step == 1)  // host: compile-time length and step, vectorised without runtime checks
        gd_rgb_run_n(luma, u, v, 1, GD_TILE, k, rgb);
    else
        gd_rgb_run_n(luma, u, v, uv_step, n, k, rgb);
}

extern "C" __global__ void yuv420_to_rgb(const gd_u8* __restrict__ y_plane, int y_stride,
                                         const gd_u8* __restrict__ u_plane, const gd_u8* __restrict__ v_plane,
                                         int uv_stride, int uv_step, int width, int height, int matrix,
                                         gd_u8* __restrict__ rgb) {
    const gd_yuv_coeffs k = gd_yuv_matrix(matrix);
    for (int y = blockIdx.y * blockDim.y + threadIdx.y; y < height; y += blockDim.y * gridDim.y) {
        const gd_u8* __restrict__ u_row = u_plane + (y >> 1) * uv_stride;
        const gd_u8* __restrict__ v_row = v_plane + (y >> 1) * uv_stride;
        for (int x0 = (blockIdx.x * blockDim.x + threadIdx.x) * GD_TILE; x0 < width; x0 += blockDim.x * gridDim.x * GD_TILE) {
            const gd_runs runs = gd_row_runs(x0, width);
            for (int r = 0; r < runs.count; ++r)
                gd_rgb_run(y_plane, y_stride, u_row, v_row, uv_step, runs.x0[r], y, runs.n[r], k,
                           rgb + 3 * (y * width + runs.x0[r]));
        }
    }
}

// Residual of the n pixels of a run whose sources s[0 .. n) are known: F_k (f, RGB) minus the I-frame
// at each source. A run whose sources are n consecutive pixels of one row (common: a still background,
// or any area that moved as one) subtracts the I-frame's pixels where they lie. Elsewhere the I-frame
// pixels are fetched into the line buffer g first, in groups of 8 (the engine's MV cell): a group
// with consecutive sources is one contiguous copy, other pixels are fetched one by one. The
// subtraction is one unit-stride loop over the run either way. (On the GPU a run is one pixel.)
GD_HD void gd_residual_run(const gd_i32* __restrict__ s, const gd_u8* __restrict__ f,
                           const gd_u8* __restrict__ iframe_rgb, int width, int height, int n,
                           gd_i16* __restrict__ res) {
    int off = 0;  // 0 iff every s[i] == s[0] + i (an OR reduction: vectorises, where a && chain would not)
    for (int i = 0; i < n; ++i) off |= s[i] ^ (s[0] + i);
    if (off == 0) {
        const gd_u8* __restrict__ run = iframe_rgb + 3 * (gd_unpack_y(s[0]) * width + gd_unpack_x(s[0]));
        for (int j = 0; j < 3 * n; ++j) res[j] = (gd_i16)(f[j] - run[j]);
        return;
    }
    int at[GD_TILE];  // where each source pixel lies in the I-frame (byte offset; one vector pass)
    for (int i = 0; i < n; ++i) at[i] = 3 * (gd_unpack_y(s[i]) * width + gd_unpack_x(s[i]));
    const int group = GD_TILE < 8 ? GD_TILE : 8;
    gd_u8 g[3 * GD_TILE + 1];
    for (int i0 = 0; i0 < n; i0 += group) {
        const int m = n - i0 < group ? n - i0 : group;
        bool contiguous;
#if GD_TILE > 1 && defined(__GNUC__) && defined(__AVX2__)
        if (m == 8) {  // host with AVX2: the group as one 8-lane vector (compilers do not vectorise this
                       // reduction themselves; with SSE2 only the scalar loop is faster)
            typedef int gd_v8i __attribute__((vector_size(32)));
            typedef unsigned long long gd_v4u __attribute__((vector_size(32)));
            const gd_v8i iota = {0, 1, 2, 3, 4, 5, 6, 7};
            gd_v8i v;
            __builtin_memcpy(&v, s + i0, sizeof(v));
            const gd_v4u d = (gd_v4u)(v - iota - s[i0]);
            contiguous = (d[0] | d[1] | d[2] | d[3]) == 0;
        } else
#endif
        {
            int group_off = 0;
            for (int i = 0; i < m; ++i) group_off |= s[i0 + i] ^ (s[i0] + i);
            contiguous = group_off == 0;
        }
        if (contiguous) {
            const gd_u8* __restrict__ block = iframe_rgb + at[i0];
            if (m == group)
                for (int j = 0; j < 3 * group; ++j) g[3 * i0 + j] = block[j];
            else
                for (int j = 0; j < 3 * m; ++j) g[3 * i0 + j] = block[j];
            continue;
        }
        for (int i = i0; i < i0 + m; ++i) {
#if GD_TILE > 1
            // Host: one unaligned 4-byte load and store per pixel; the 4th byte is the next pixel's
            // (overwritten by it, or the slack byte of g). Not at the frame's last pixel: no 4th byte.
            if (at[i] != 3 * (width * height - 1)) {
                unsigned int word;
                __builtin_memcpy(&word, iframe_rgb + at[i], 4);
                __builtin_memcpy(g + 3 * i, &word, 4);
                continue;
            }
#endif
            g[3 * i] = iframe_rgb[at[i]];
            g[3 * i + 1] = iframe_rgb[at[i] + 1];
            g[3 * i + 2] = iframe_rgb[at[i] + 2];
        }
    }
    for (int j = 0; j < 3 * n; ++j) res[j] = (gd_i16)(f[j] - g[j]);
}

// accumulated_mv of the n pixels x0 .. x0+n-1 of row y whose sources are s[0 .. n).
GD_HD void gd_mv_run(const gd_i32* __restrict__ s, int x0, int y, int n, gd_i16* __restrict__ mv) {
#if GD_TILE > 1 && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    // Host: each pixel's (x, y) pair as one 32-bit word (x in the low half: the int16 pair's layout on a
    // little-endian CPU), so the loop has no interleaving stores.
    for (int i = 0; i < n; ++i) {
        const unsigned int word = ((unsigned int)(y - gd_unpack_y(s[i])) << 16) | ((x0 + i - gd_unpack_x(s[i])) & 0xFFFF);
        __builtin_memcpy(mv + 2 * i, &word, 4);
    }
#else
    for (int i = 0; i < n; ++i) {
        mv[2 * i] = (gd_i16)(x0 + i - gd_unpack_x(s[i]));
        mv[2 * i + 1] = (gd_i16)(y - gd_unpack_y(s[i]));
    }
#endif
}

// One run of gather_mv_residual: pixels x0 .. x0+n-1 of row y (see the kernel below).
GD_HD void gd_gather_run_n(const gd_i32* __restrict__ src, const gd_u8* __restrict__ iframe_rgb,
                           const gd_u8* __restrict__ y_plane, int y_stride, const gd_u8* __restrict__ u_row,
                           const gd_u8* __restrict__ v_row, int uv_step, int x0, int y, int n, int width,
                           int height, const gd_yuv_coeffs& k, gd_i16* __restrict__ mv_out,
                           gd_i16* __restrict__ residual_out) {
    const int p0 = y * width + x0;
    gd_i32 identity[GD_TILE];  // NULL src: position 0, S = identity
    const gd_i32* __restrict__ s = identity;  // S_k of the run
    if (src) s = src + p0;
    else for (int i = 0; i < n; ++i) identity[i] = gd_pack(x0 + i, y);
    gd_mv_run(s, x0, y, n, mv_out + 2 * p0);
    if (!residual_out) return;  // MV only: no colour conversion, no I-frame read
    gd_u8 f[3 * GD_TILE];       // F_k of the run, in RGB
    gd_rgb_run(y_plane, y_stride, u_row, v_row, uv_step, x0, y, n, k, f);
    gd_residual_run(s, f, iframe_rgb, width, height, n, residual_out + 3 * p0);
}

GD_HD void gd_gather_run(const gd_i32* __restrict__ src, const gd_u8* __restrict__ iframe_rgb,
                         const gd_u8* __restrict__ y_plane, int y_stride, const gd_u8* __restrict__ u_row,
                         const gd_u8* __restrict__ v_row, int uv_step, int x0, int y, int n, int width,
                         int height, const gd_yuv_coeffs& k, gd_i16* __restrict__ mv_out,
                         gd_i16* __restrict__ residual_out) {
    if (n == GD_TILE)  // host: compile-time length, vectorised without runtime checks
        gd_gather_run_n(src, iframe_rgb, y_plane, y_stride, u_row, v_row, uv_step, x0, y, GD_TILE, width, height, k,
                        mv_out, residual_out);
    else
        gd_gather_run_n(src, iframe_rgb, y_plane, y_stride, u_row, v_row, uv_step, x0, y, n, width, height, k,
                        mv_out, residual_out);
}

extern "C" __global__ void gather_mv_residual(const gd_i32* __restrict__ src, const gd_u8* __restrict__ iframe_rgb,
                                              const gd_u8* __restrict__ y_plane, int y_stride,
                                              const gd_u8* __restrict__ u_plane, const gd_u8* __restrict__ v_plane,
                                              int uv_stride, int uv_step, int width, int height, int matrix,
                                              gd_i16* __restrict__ mv_out, gd_i16* __restrict__ residual_out) {
    const gd_yuv_coeffs k = gd_yuv_matrix(matrix);
    for (int y = blockIdx.y * blockDim.y + threadIdx.y; y < height; y += blockDim.y * gridDim.y) {
        const gd_u8* __restrict__ u_row = u_plane + (y >> 1) * uv_stride;
        const gd_u8* __restrict__ v_row = v_plane + (y >> 1) * uv_stride;
#if GD_TILE > 1
        if (src && !residual_out) {  // host, MV only: the row is one run (nothing to convert or fetch)
            gd_mv_run(src + y * width, 0, y, width, mv_out + 2 * y * width);
            continue;
        }
        // The I-frame was converted at the GOP's start and the P-frames decoded since have pushed it out
        // of the caches; sources lie near their pixels, so ask for the I-frame's row a few rows ahead
        // (in the CPU engine on real mpeg4 clips: about 9% less kernel time per clip).
        if (residual_out && y + GD_PREFETCH_ROWS < height)
            for (int b = 0; b < 3 * width; b += 64) __builtin_prefetch(iframe_rgb + 3 * (y + GD_PREFETCH_ROWS) * width + b);
#endif
        for (int x0 = (blockIdx.x * blockDim.x + threadIdx.x) * GD_TILE; x0 < width; x0 += blockDim.x * gridDim.x * GD_TILE) {
            const gd_runs runs = gd_row_runs(x0, width);
            for (int r = 0; r < runs.count; ++r)
                gd_gather_run(src, iframe_rgb, y_plane, y_stride, u_row, v_row, uv_step, runs.x0[r], y, runs.n[r],
                              width, height, k, mv_out, residual_out);
        }
    }
}
