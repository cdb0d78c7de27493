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

// RGB of pixel (x, y) given the chroma terms of its 4:2:0 sample (see gd_chroma in common.cuh).
GD_HD void gd_luma_rgb(const gd_u8* __restrict__ y_plane, int y_stride, int x, int y,
                       const gd_yuv_coeffs& k, const gd_chroma& ch, gd_u8* rgb) {
    const int c = k.scale * (y_plane[y * y_stride + x] - k.offset) + 128;
    rgb[0] = (gd_u8)gd_clamp255((c + ch.r) >> 8);
    rgb[1] = (gd_u8)gd_clamp255((c + ch.g) >> 8);
    rgb[2] = (gd_u8)gd_clamp255((c + ch.b) >> 8);
}

// Length of the run of pixels that starts at x0 (< width): GD_TILE, or what is left of the row.
GD_HD int gd_run_length(int x0, int width) {
    return GD_TILE == 1 ? 1 : (width - x0 < GD_TILE ? width - x0 : GD_TILE);
}

// The chroma terms (gd_chroma_terms) of each of the n pixels x0 .. x0+n-1 of a row, computed once
// per 4:2:0 sample (n <= GD_TILE; x0 is even whenever n > 1, so sample j covers pixels 2j and 2j+1
// of the run). The arrays have room for n + 1.
GD_HD void gd_chroma_run(const gd_u8* __restrict__ u_row, const gd_u8* __restrict__ v_row, int step, int x0, int n,
                         const gd_yuv_coeffs& k, int* __restrict__ r, int* __restrict__ g, int* __restrict__ b) {
    const gd_u8* __restrict__ u = u_row + (x0 >> 1) * step;
    const gd_u8* __restrict__ v = v_row + (x0 >> 1) * step;
    for (int j = 0; 2 * j < n; ++j) {
        const gd_chroma ch = gd_chroma_terms(u[j * step], v[j * step], k);
        r[2 * j] = r[2 * j + 1] = ch.r;
        g[2 * j] = g[2 * j + 1] = ch.g;
        b[2 * j] = b[2 * j + 1] = ch.b;
    }
}

// RGB of the n pixels x0 .. x0+n-1 of row y, written to rgb[0 .. 3n).
GD_HD void gd_rgb_run(const gd_u8* __restrict__ y_plane, int y_stride, const gd_u8* __restrict__ u_row,
                      const gd_u8* __restrict__ v_row, int uv_step, int x0, int y, int n, const gd_yuv_coeffs& k,
                      gd_u8* __restrict__ rgb) {
    int cr[GD_TILE + 1], cg[GD_TILE + 1], cb[GD_TILE + 1];
    if (uv_step == 1)  // planar chroma: unit-stride loads the host compiler vectorises
        gd_chroma_run(u_row, v_row, 1, x0, n, k, cr, cg, cb);
    else
        gd_chroma_run(u_row, v_row, uv_step, x0, n, k, cr, cg, cb);
    for (int i = 0; i < n; ++i) {
        const gd_chroma ch = {cr[i], cg[i], cb[i]};
        gd_luma_rgb(y_plane, y_stride, x0 + i, y, k, ch, rgb + 3 * i);
    }
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
            gd_rgb_run(y_plane, y_stride, u_row, v_row, uv_step, x0, y, gd_run_length(x0, width), k,
                       rgb + 3 * (y * width + x0));
        }
    }
}

// Residual of the n pixels of a run whose sources s[0 .. n) are known: F_k (f, RGB) minus the I-frame
// at each source. The I-frame pixels are fetched into the line buffer g first, in groups of 8 (the
// engine's MV cell): a group whose sources are 8 consecutive pixels of one row (common: any block
// that moved as one) is one contiguous copy; elsewhere each pixel is fetched on its own. The
// subtraction is then one unit-stride loop over the run.
GD_HD void gd_residual_run(const gd_i32* __restrict__ s, const gd_u8* __restrict__ f,
                           const gd_u8* __restrict__ iframe_rgb, int width, int height, int n,
                           gd_i16* __restrict__ res) {
    const int group = GD_TILE < 8 ? GD_TILE : 8;
    gd_u8 g[3 * GD_TILE + 1];
    for (int i0 = 0; i0 < n; i0 += group) {
        const int m = n - i0 < group ? n - i0 : group;
        bool contiguous = true;
        for (int i = 1; i < m; ++i) contiguous &= s[i0 + i] == s[i0] + i;
        if (contiguous) {
            const gd_u8* __restrict__ block = iframe_rgb + 3 * (gd_unpack_y(s[i0]) * width + gd_unpack_x(s[i0]));
            for (int j = 0; j < 3 * m; ++j) g[3 * i0 + j] = block[j];
            continue;
        }
        for (int i = i0; i < i0 + m; ++i) {
            const int q = gd_unpack_y(s[i]) * width + gd_unpack_x(s[i]);
#if GD_TILE > 1
            // Host: one unaligned 4-byte load and store per pixel; the 4th byte is the next pixel's
            // (overwritten by it, or the slack byte of g). Not at the frame's last pixel: no 4th byte.
            if (q + 1 < width * height) {
                unsigned int word;
                __builtin_memcpy(&word, iframe_rgb + 3 * q, 4);
                __builtin_memcpy(g + 3 * i, &word, 4);
                continue;
            }
#endif
            g[3 * i] = iframe_rgb[3 * q];
            g[3 * i + 1] = iframe_rgb[3 * q + 1];
            g[3 * i + 2] = iframe_rgb[3 * q + 2];
        }
    }
    for (int j = 0; j < 3 * n; ++j) res[j] = (gd_i16)(f[j] - g[j]);
}

// One run of gather_mv_residual: pixels x0 .. x0+n-1 of row y (see the kernel below).
GD_HD void gd_gather_run(const gd_i32* __restrict__ src, const gd_u8* __restrict__ iframe_rgb,
                         const gd_u8* __restrict__ y_plane, int y_stride, const gd_u8* __restrict__ u_row,
                         const gd_u8* __restrict__ v_row, int uv_step, int x0, int y, int n, int width,
                         int height, const gd_yuv_coeffs& k, gd_i16* __restrict__ mv_out, gd_i16* __restrict__ residual_out) {
    const int p0 = y * width + x0;
    gd_i32 identity[GD_TILE];  // NULL src: position 0, S = identity
    const gd_i32* __restrict__ s = identity;  // S_k of the run
    if (src) s = src + p0;
    else for (int i = 0; i < n; ++i) identity[i] = gd_pack(x0 + i, y);
    gd_i16* __restrict__ mv = mv_out + 2 * p0;
    for (int i = 0; i < n; ++i) {
        mv[2 * i] = (gd_i16)(x0 + i - gd_unpack_x(s[i]));
        mv[2 * i + 1] = (gd_i16)(y - gd_unpack_y(s[i]));
    }
    if (!residual_out) return;  // MV only: no colour conversion, no I-frame read
    gd_u8 f[3 * GD_TILE];       // F_k of the run, in RGB
    gd_rgb_run(y_plane, y_stride, u_row, v_row, uv_step, x0, y, n, k, f);
    gd_residual_run(s, f, iframe_rgb, width, height, n, residual_out + 3 * p0);
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
        for (int x0 = (blockIdx.x * blockDim.x + threadIdx.x) * GD_TILE; x0 < width; x0 += blockDim.x * gridDim.x * GD_TILE) {
            gd_gather_run(src, iframe_rgb, y_plane, y_stride, u_row, v_row, uv_step, x0, y, gd_run_length(x0, width),
                          width, height, k, mv_out, residual_out);
        }
    }
}
