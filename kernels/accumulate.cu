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

#if GD_TILE > 1
// Host: one grid row of 8-pixel cells at a time (in chunks of GD_ACC_CHUNK cells). A cell whose source
// run lies inside the frame for all its rows (the common case) is a copy of 8 values of S_{t-1} at a
// fixed offset, or for S_0 the packed positions plus a fixed offset: these are listed once per grid
// row, and each of its rows is then a tight loop of 32-byte copies (or one vector pass for S_0)
// without bounds tests. The other cells (at the frame's sides, or whose source row leaves the frame)
// and a partial last cell take gd_accumulate_run, as on the GPU.
#define GD_ACC_CHUNK 256

// S_{t-1}: out[x .. x+8) = in[x + offset .. x + offset + 8) for each listed cell x.
__noinline__ void gd_copy_cells(const gd_i32* __restrict__ in, gd_i32* __restrict__ out, const int* __restrict__ cell_x,
                                const int* __restrict__ cell_from, int cells) {
    for (int c = 0; c < cells; ++c) __builtin_memcpy(out + cell_x[c], in + cell_from[c], 8 * sizeof(gd_i32));
}

__noinline__ void gd_accumulate_grid_row(const gd_i32* __restrict__ src_prev, gd_i32* __restrict__ src_next,
                                         const gd_i16* __restrict__ grid_row, int grid_w, int y0, int y1,
                                         int width, int height) {
    int cell_x[GD_ACC_CHUNK], cell_from[GD_ACC_CHUNK], slow[GD_ACC_CHUNK];  // fast cells: x, x + offset; other cells
    int pixel_offset[8 * GD_ACC_CHUNK];  // S_0: per pixel, its cell's offset (0 where the cell is not fast)
    const int full = width >> 3;  // whole 8-pixel cells
    for (int c0 = 0; c0 < grid_w; c0 += GD_ACC_CHUNK) {
        const int c1 = c0 + GD_ACC_CHUNK < grid_w ? c0 + GD_ACC_CHUNK : grid_w;
        int fast_cells = 0, slow_cells = 0;
        for (int cx = c0; cx < c1; ++cx) {
            const int mx = grid_row[2 * cx], my = grid_row[2 * cx + 1], x0 = cx << 3;
            const bool fast = cx < full && x0 - mx >= 0 && x0 + 8 - mx <= width && y0 - my >= 0 && y1 - my <= height;
            if (src_prev) {
                if (fast) {
                    cell_x[fast_cells] = x0;
                    cell_from[fast_cells++] = x0 - my * width - mx;
                }
            } else if (cx < full) {
                for (int j = 0; j < 8; ++j) pixel_offset[8 * (cx - c0) + j] = fast ? -my * 65536 - mx : 0;
            }
            if (!fast) slow[slow_cells++] = cx;
        }
        const int f1 = c1 < full ? c1 : full;  // [c0, f1): whole cells
        for (int y = y0; y < y1; ++y) {
            gd_i32* __restrict__ out = src_next + y * width;
            if (src_prev)
                gd_copy_cells(src_prev + y * width, out, cell_x, cell_from, fast_cells);
            else  // S_0: gd_pack(x - mx, y - my) = gd_pack(x, y) + offset, as x - mx >= 0 and y - my >= 0
                for (int x = 8 * c0; x < 8 * f1; ++x) out[x] = gd_pack(x, y) + pixel_offset[x - 8 * c0];
            for (int c = 0; c < slow_cells; ++c) {
                const int cx = slow[c], x0 = cx << 3;
                gd_accumulate_run(src_prev, src_next, grid_row[2 * cx], grid_row[2 * cx + 1], x0,
                                  x0 + 8 < width ? x0 + 8 : width, y, width, height);
            }
        }
    }
}
#endif

extern "C" __global__ void accumulate_step(const gd_i32* __restrict__ src_prev, gd_i32* __restrict__ src_next,
                                           const gd_i16* __restrict__ grid, int grid_w, int cell_shift,
                                           int width, int height) {
    const int cell = 1 << cell_shift;
#if GD_TILE > 1
    if (cell == 8) {  // the engine's usual cells
        for (int y0 = 0; y0 < height; y0 += 8)
            gd_accumulate_grid_row(src_prev, src_next, grid + 2 * (y0 >> 3) * grid_w, grid_w, y0,
                                   y0 + 8 < height ? y0 + 8 : height, width, height);
        return;
    }
#endif
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
