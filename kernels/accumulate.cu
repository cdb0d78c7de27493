// One step of the MV accumulation along a GOP's P-frame chain (DESIGN §1):
//   S_t(p) = S_{t-1}(p - m_t(p))  where m_t(p) != 0 and p - m_t(p) lies in the frame,
//   S_t(p) = S_{t-1}(p)           elsewhere,   with S_0(p) = p.
// S is stored packed, (y << 16) | x (see common.cuh). src_prev == NULL stands for S_0, so the
// first P-frame needs no identity map. The step reads S_{t-1} at other pixels, so it cannot run
// in place: callers ping-pong two buffers.
//
// One element is a run of 2^cell_shift pixels of one row inside one MV cell: they share one MV,
// so their sources are contiguous too and the run is a plain copy (the per-pixel bounds test is
// only needed where the run's source crosses the frame edge).
#include "common.cuh"

// A run whose source crosses the left or right frame edge: each pixel tests its own source. Rare
// (only cells at the frame's sides), so kept out of line: the common copy stays small and branch-free.
__host__ __device__ __noinline__ void gd_accumulate_edge(const gd_i32* __restrict__ src_prev, gd_i32* __restrict__ out,
                                                         int mx, int sy, int x0, int x1, int y, int width) {
    for (int x = x0; x < x1; ++x) {
        const int sx = x - mx;
        const bool inside = (unsigned)sx < (unsigned)width;
        const int qx = inside ? sx : x, qy = inside ? sy : y;
        out[x] = src_prev ? src_prev[qy * width + qx] : gd_pack(qx, qy);
    }
}

GD_HD void gd_accumulate_run(const gd_i32* __restrict__ src_prev, gd_i32* __restrict__ src_next,
                             int mx, int my, int x0, int x1, int y, int width, int height) {
    gd_i32* __restrict__ out = src_next + y * width;
    // No motion, or the source row is outside the frame: every pixel keeps S_{t-1}(p), which is the
    // same as a move by (0, 0); one code path for both keeps the host's loop free of branches.
    if ((unsigned)(y - my) >= (unsigned)height) mx = my = 0;
    const int sy = y - my;
    if (x0 - mx < 0 || x1 - mx > width) {
        gd_accumulate_edge(src_prev, out, mx, sy, x0, x1, y, width);
        return;
    }
    if (src_prev) {  // the whole run's source is inside: a copy
        const gd_i32* __restrict__ in = src_prev + sy * width - mx;
        for (int x = x0; x < x1; ++x) out[x] = in[x];
    } else {
        for (int x = x0; x < x1; ++x) out[x] = gd_pack(x - mx, sy);
    }
}

extern "C" __global__ void accumulate_step(const gd_i32* __restrict__ src_prev, gd_i32* __restrict__ src_next,
                                           const gd_i16* __restrict__ grid, int grid_w, int cell_shift,
                                           int width, int height) {
    const int cell = 1 << cell_shift;
    for (int y = blockIdx.y * blockDim.y + threadIdx.y; y < height; y += blockDim.y * gridDim.y) {
        const gd_i16* grid_row = grid + 2 * (y >> cell_shift) * grid_w;
        for (int cx = blockIdx.x * blockDim.x + threadIdx.x; cx < grid_w; cx += blockDim.x * gridDim.x) {
            const int x0 = cx << cell_shift;
            const int mx = grid_row[2 * cx], my = grid_row[2 * cx + 1];
            if (cell == 8 && x0 + 8 <= width)  // the engine's usual cell, whole: a copy of constant length
                gd_accumulate_run(src_prev, src_next, mx, my, x0, x0 + 8, y, width, height);
            else
                gd_accumulate_run(src_prev, src_next, mx, my, x0, x0 + cell < width ? x0 + cell : width, y, width, height);
        }
    }
}
