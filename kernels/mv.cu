// MV rasterisation: FFmpeg's per-block vector list -> a grid of cells holding one MV each.
//
// Codecs partition a frame into blocks whose corners lie on a grid of 2^cell_shift pixels
// (MPEG-4 Part 2: 16x16 and 8x8; H.264 as exported by FFmpeg: 16x16 down to 8x8). Writing each
// block into that cell grid instead of a dense per-pixel field keeps the output tiny (1/16 of the
// pixels for 4-pixel cells); the accumulation kernel reads the cell under each pixel. A block that
// does not sit on the grid sets *misaligned and the caller retries with cell_shift = 0, where a
// cell is a pixel and the grid is the dense field.
#include "common.cuh"

extern "C" __global__ void rasterize_mv(const gd_motion_vector* mvs, int num_mvs,
                                        int grid_w, int grid_h, int cell_shift,
                                        gd_i16* grid, gd_i32* misaligned) {
    const int cell_mask = (1 << cell_shift) - 1;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < num_mvs; i += blockDim.x * gridDim.x) {
        const gd_motion_vector m = mvs[i];
        if (m.source >= 0) continue;  // only references into the past (P-frames)
        const int x0 = m.dst_x - m.w / 2, y0 = m.dst_y - m.h / 2;
        if (((x0 | y0 | m.w | m.h) & cell_mask) != 0) { *misaligned = 1; continue; }
        // Displacement in integer pixels, dst - src, as the published loader uses it.
        const gd_i16 dx = (gd_i16)(m.dst_x - m.src_x), dy = (gd_i16)(m.dst_y - m.src_y);
        const int cx0 = x0 >> cell_shift, cy0 = y0 >> cell_shift;
        const int cx1 = cx0 + (m.w >> cell_shift), cy1 = cy0 + (m.h >> cell_shift);
        if (cx0 >= 0 && cy0 >= 0 && cx1 <= grid_w && cy1 <= grid_h && cx1 - cx0 <= 2 && cy1 - cy0 <= 2) {
            // The common block (1x1 to 2x2 cells, inside the frame), without loops: its four corner
            // cells, some of them the same cell (written twice with the same MV).
            const int a = 2 * (cy0 * grid_w + cx0), b = 2 * (cy0 * grid_w + cx1 - 1);
            const int c = 2 * ((cy1 - 1) * grid_w + cx0), d = 2 * ((cy1 - 1) * grid_w + cx1 - 1);
            grid[a] = dx; grid[a + 1] = dy;
            grid[b] = dx; grid[b + 1] = dy;
            grid[c] = dx; grid[c + 1] = dy;
            grid[d] = dx; grid[d + 1] = dy;
            continue;
        }
        for (int cy = cy0 < 0 ? 0 : cy0; cy < cy1 && cy < grid_h; ++cy)
            for (int cx = cx0 < 0 ? 0 : cx0; cx < cx1 && cx < grid_w; ++cx) {
                gd_i16* g = grid + 2 * (cy * grid_w + cx);
                g[0] = dx;
                g[1] = dy;
            }
    }
}
