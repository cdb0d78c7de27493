// From the decoded planes and the accumulated source map to the sample's pixels:
//   yuv420_to_rgb:       the I-frame in RGB (colour conversion on the device that holds the planes);
//   gather_mv_residual:  accumulated_mv(p) = p - S_k(p) and residual(p) = F_k(p) - I(S_k(p)),
//                        with F_k converted from its YUV planes on the fly (fused: F_k in RGB is
//                        never written out). residual_out == NULL computes the MV alone.
// Chroma is upsampled by nearest neighbour (a 4:2:0 sample covers 2x2 pixels). The chroma planes
// are read with a step: 1 for planar I420 (PyAV's yuv420p), 2 for NV12 (NVDEC), where
// v_plane = u_plane + 1. One element is one pixel, written so that the host build's inner loop
// over x vectorises.
#include "common.cuh"

// RGB of pixel (x, y) given the chroma terms of its 4:2:0 sample (see gd_chroma in common.cuh).
GD_HD void gd_luma_rgb(const gd_u8* __restrict__ y_plane, int y_stride, int x, int y,
                       const gd_yuv_coeffs& k, const gd_chroma& ch, gd_u8* rgb) {
    const int c = k.scale * (y_plane[y * y_stride + x] - k.offset) + 128;
    rgb[0] = (gd_u8)gd_clamp255((c + ch.r) >> 8);
    rgb[1] = (gd_u8)gd_clamp255((c + ch.g) >> 8);
    rgb[2] = (gd_u8)gd_clamp255((c + ch.b) >> 8);
}

extern "C" __global__ void yuv420_to_rgb(const gd_u8* __restrict__ y_plane, int y_stride,
                                         const gd_u8* __restrict__ u_plane, const gd_u8* __restrict__ v_plane,
                                         int uv_stride, int uv_step, int width, int height, int matrix,
                                         gd_u8* __restrict__ rgb) {
    const gd_yuv_coeffs k = gd_yuv_matrix(matrix);
    for (int y = blockIdx.y * blockDim.y + threadIdx.y; y < height; y += blockDim.y * gridDim.y) {
        const gd_u8* __restrict__ u_row = u_plane + (y >> 1) * uv_stride;
        const gd_u8* __restrict__ v_row = v_plane + (y >> 1) * uv_stride;
        for (int x = blockIdx.x * blockDim.x + threadIdx.x; x < width; x += blockDim.x * gridDim.x) {
            const gd_chroma ch = gd_chroma_terms(u_row[(x >> 1) * uv_step], v_row[(x >> 1) * uv_step], k);
            gd_luma_rgb(y_plane, y_stride, x, y, k, ch, rgb + 3 * (y * width + x));
        }
    }
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
        for (int x = blockIdx.x * blockDim.x + threadIdx.x; x < width; x += blockDim.x * gridDim.x) {
            const int p = y * width + x;
            const gd_i32 s = src ? src[p] : gd_pack(x, y);  // NULL: position 0, S = identity
            const int sx = gd_unpack_x(s), sy = gd_unpack_y(s);
            mv_out[2 * p] = (gd_i16)(x - sx);
            mv_out[2 * p + 1] = (gd_i16)(y - sy);
            if (!residual_out) continue;  // MV only: no colour conversion, no I-frame read
            gd_u8 f[3];
            gd_luma_rgb(y_plane, y_stride, x, y, k, gd_chroma_terms(u_row[(x >> 1) * uv_step], v_row[(x >> 1) * uv_step], k), f);
            const gd_u8* i = iframe_rgb + 3 * (sy * width + sx);
            residual_out[3 * p] = (gd_i16)(f[0] - i[0]);
            residual_out[3 * p + 1] = (gd_i16)(f[1] - i[1]);
            residual_out[3 * p + 2] = (gd_i16)(f[2] - i[2]);
        }
    }
}
