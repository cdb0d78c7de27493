// The batched engine's kernels: a whole batch of clips in a fixed number of launches.
//
// The GPU stage (gpudecode/stage.py) packs a batch into two tables of 64-bit integers, with every
// buffer given by its absolute address, so that no launch depends on the number of clips,
// segments or P-frames:
//
//   frame table, one row per P-frame of the batch (GD_FRAME_FIELDS columns):
//     rec_start, rec_end   its MV records, [rec_start, rec_end) of the batch's record list
//     grid, grid_w, grid_h its zeroed int16 (dx, dy) cell grid and the grid's size in cells
//     cell_shift           3, or 0 when a block of the frame is off the 8-pixel grid (then a cell is a pixel)
//   segment table, one row per output segment, n * T + t (GD_SEG_FIELDS columns):
//     width, height, matrix, uv_step   the clip's size, YUV matrix, chroma step (1 I420, 2 NV12)
//     chain_first, chain_len           frame-table rows of P-frames 1..k of the segment's GOP
//     i_y, i_u, i_v, i_ystride, i_uvstride   the I-frame's planes (0 when not needed)
//     p_y, p_u, p_v, p_ystride, p_uvstride   the sampled frame's planes (= the I-frame at position 0)
//
// batch_rasterize_mv: one element per MV record of the batch (its frame by binary search).
// batch_trace_gather: one element per (segment, pixel); traces the pixel back through its chain.
//   Unrolling DESIGN §1's forward recurrence S_t(p) = S_{t-1}(g_t(p)), g_t(p) = p - m_t(p) where
//   m_t(p) != 0 and p - m_t(p) is inside the frame, else p, with S_0 = identity, gives
//   S_k = g_1 o g_2 o ... o g_k, i.e. S_k(p) = q_k with q_0 = p and q_{t+1} = g_{k-t}(q_t):
//   each step reads frame k-t's grid at the current position q_t, never a dense source map.
//   (Induction on k: S_k(p) = S_{k-1}(g_k(p)), and S_{k-1} applied to q_1 = g_k(p) is the same
//   unrolled trace over frames k-1..1.) The accumulated MV is p - q_k and the residual
//   F_k(p) - I(q_k), with I(q_k) converted from the I-frame's planes at q_k: no RGB I-frame,
//   no source map and no MV field is ever written between launches.
// batch_iframe_rgb: one element per (segment, pixel): the I-frame of the segment's GOP in RGB.
//
// Outputs are batch-shaped (S, out_h, out_w, C) with S = N * T; a clip smaller than the batch's
// largest frame fills its top-left corner and the rest of its rows and columns are written 0.
#include "common.cuh"

typedef long long gd_i64;

#define GD_FRAME_FIELDS 6
#define GD_SEG_FIELDS 16

template <typename T> GD_HD T* gd_addr(gd_i64 a) { return (T*)(unsigned long long)a; }

extern "C" __global__ void batch_zero(gd_i32* __restrict__ buf, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += blockDim.x * gridDim.x) buf[i] = 0;
}

extern "C" __global__ void batch_rasterize_mv(const gd_motion_vector* __restrict__ mvs, int num_mvs,
                                              const gd_i64* __restrict__ frames, int num_frames) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < num_mvs; i += blockDim.x * gridDim.x) {
        // The frame holding record i: the last row whose rec_start <= i (rows with no records
        // share the next row's start, so the last such row is the one that holds i).
        int lo = 0, hi = num_frames - 1;
        while (lo < hi) {
            const int mid = (lo + hi + 1) >> 1;
            if (frames[mid * GD_FRAME_FIELDS] <= i) lo = mid; else hi = mid - 1;
        }
        const gd_i64* f = frames + lo * GD_FRAME_FIELDS;
        const gd_motion_vector m = mvs[i];
        if (m.source >= 0) continue;  // only references into the past (P-frames)
        const int grid_w = (int)f[3], grid_h = (int)f[4], cell_shift = (int)f[5];
        const int x0 = m.dst_x - m.w / 2, y0 = m.dst_y - m.h / 2;
        if (((x0 | y0 | m.w | m.h) & ((1 << cell_shift) - 1)) != 0) continue;  // the CPU stage chose shift 0 then
        const gd_i16 dx = (gd_i16)(m.dst_x - m.src_x), dy = (gd_i16)(m.dst_y - m.src_y);
        const int cx0 = x0 >> cell_shift, cy0 = y0 >> cell_shift;
        const int cx1 = cx0 + (m.w >> cell_shift), cy1 = cy0 + (m.h >> cell_shift);
        gd_i16* grid = gd_addr<gd_i16>(f[2]);
        for (int cy = cy0 < 0 ? 0 : cy0; cy < cy1 && cy < grid_h; ++cy)
            for (int cx = cx0 < 0 ? 0 : cx0; cx < cx1 && cx < grid_w; ++cx) {
                grid[2 * (cy * grid_w + cx)] = dx;
                grid[2 * (cy * grid_w + cx) + 1] = dy;
            }
    }
}

// RGB of pixel (x, y) of a 4:2:0 frame given by its planes.
GD_HD void gd_pixel_rgb(const gd_u8* y_plane, int y_stride, const gd_u8* u_plane, const gd_u8* v_plane,
                        int uv_stride, int uv_step, int x, int y, const gd_yuv_coeffs& k, gd_u8* rgb) {
    const int uv = (y >> 1) * uv_stride + (x >> 1) * uv_step;
    gd_pixel_from_terms(y_plane[y * y_stride + x], k, gd_chroma_terms(u_plane[uv], v_plane[uv], k), rgb);
}

extern "C" __global__ void batch_trace_gather(const gd_i64* __restrict__ segs, int num_segments,
                                              const gd_i64* __restrict__ frames, int out_h, int out_w,
                                              gd_i16* __restrict__ mv_out, gd_i16* __restrict__ residual_out) {
    const int rows = num_segments * out_h;
    for (int r = blockIdx.y * blockDim.y + threadIdx.y; r < rows; r += blockDim.y * gridDim.y) {
        const int seg = r / out_h, y = r - seg * out_h;
        const gd_i64* s = segs + seg * GD_SEG_FIELDS;
        const int width = (int)s[0], height = (int)s[1], uv_step = (int)s[3];
        const int first = (int)s[4], k = (int)s[5];
        const gd_yuv_coeffs coeffs = gd_yuv_matrix((int)s[2]);
        const gd_i64 row = (gd_i64)r * out_w;
        for (int x = blockIdx.x * blockDim.x + threadIdx.x; x < out_w; x += blockDim.x * gridDim.x) {
            const gd_i64 p = row + x;
            if (x >= width || y >= height) {  // padding of a clip smaller than the batch's frames
                if (mv_out) { mv_out[2 * p] = 0; mv_out[2 * p + 1] = 0; }
                if (residual_out) { residual_out[3 * p] = 0; residual_out[3 * p + 1] = 0; residual_out[3 * p + 2] = 0; }
                continue;
            }
            int qx = x, qy = y;
            for (int t = k - 1; t >= 0; --t) {  // frames k, k-1, ..., 1 of the chain
                const gd_i64* fr = frames + (gd_i64)(first + t) * GD_FRAME_FIELDS;
                const int shift = (int)fr[5];
                const gd_i16* m = gd_addr<const gd_i16>(fr[2]) + 2 * ((qy >> shift) * (int)fr[3] + (qx >> shift));
                const int mx = m[0], my = m[1];
                const int sx = qx - mx, sy = qy - my;
                if ((mx | my) != 0 && (unsigned)sx < (unsigned)width && (unsigned)sy < (unsigned)height) { qx = sx; qy = sy; }
            }
            if (mv_out) {
                mv_out[2 * p] = (gd_i16)(x - qx);
                mv_out[2 * p + 1] = (gd_i16)(y - qy);
            }
            if (residual_out) {
                gd_u8 f[3], i[3];
                gd_pixel_rgb(gd_addr<const gd_u8>(s[11]), (int)s[14], gd_addr<const gd_u8>(s[12]), gd_addr<const gd_u8>(s[13]),
                             (int)s[15], uv_step, x, y, coeffs, f);
                gd_pixel_rgb(gd_addr<const gd_u8>(s[6]), (int)s[9], gd_addr<const gd_u8>(s[7]), gd_addr<const gd_u8>(s[8]),
                             (int)s[10], uv_step, qx, qy, coeffs, i);
                residual_out[3 * p] = (gd_i16)(f[0] - i[0]);
                residual_out[3 * p + 1] = (gd_i16)(f[1] - i[1]);
                residual_out[3 * p + 2] = (gd_i16)(f[2] - i[2]);
            }
        }
    }
}

extern "C" __global__ void batch_iframe_rgb(const gd_i64* __restrict__ segs, int num_segments, int out_h, int out_w,
                                            gd_u8* __restrict__ rgb_out) {
    const int rows = num_segments * out_h;
    for (int r = blockIdx.y * blockDim.y + threadIdx.y; r < rows; r += blockDim.y * gridDim.y) {
        const int seg = r / out_h, y = r - seg * out_h;
        const gd_i64* s = segs + seg * GD_SEG_FIELDS;
        const int width = (int)s[0], height = (int)s[1], uv_step = (int)s[3];
        const gd_yuv_coeffs coeffs = gd_yuv_matrix((int)s[2]);
        const gd_u8* y_plane = gd_addr<const gd_u8>(s[6]);
        const gd_u8* u_plane = gd_addr<const gd_u8>(s[7]);
        const gd_u8* v_plane = gd_addr<const gd_u8>(s[8]);
        const int y_stride = (int)s[9], uv_stride = (int)s[10];
        gd_u8* out_row = rgb_out + 3 * (gd_i64)r * out_w;
        for (int x = blockIdx.x * blockDim.x + threadIdx.x; x < out_w; x += blockDim.x * gridDim.x) {
            gd_u8* o = out_row + 3 * x;
            if (x >= width || y >= height) { o[0] = 0; o[1] = 0; o[2] = 0; continue; }
            gd_pixel_rgb(y_plane, y_stride, u_plane, v_plane, uv_stride, uv_step, x, y, coeffs, o);
        }
    }
}
