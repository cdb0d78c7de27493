"""NumPy twins of the CUDA kernels: the readable statement of what each kernel computes.

Each function mirrors one ``extern "C" __global__`` kernel of the same name (same inputs, same
integer arithmetic), and the tests require the compiled kernels to agree with these bit for bit.
They are not used on the hot path.
"""

from __future__ import annotations

import numpy as np

#: Matrices understood by the kernels (see common.cuh): (luma scale, luma offset, Cr->R, Cb->G,
#: Cr->G, Cb->B), all in 8.8 fixed point.
YUV_MATRICES = {
    0: (298, 16, 409, 100, 208, 516),  # BT.601, limited range
    1: (298, 16, 459, 55, 136, 541),  # BT.709, limited range
    2: (256, 0, 359, 88, 183, 454),  # BT.601, full range
    3: (256, 0, 403, 48, 120, 475),  # BT.709, full range
}


def grid_shape(width: int, height: int, cell_shift: int) -> tuple[int, int]:
    """(grid_h, grid_w): cells of side 2**cell_shift that cover a width x height frame."""
    cell = 1 << cell_shift
    return (height + cell - 1) // cell, (width + cell - 1) // cell


def rasterize_mv(mvs: np.ndarray, width: int, height: int, cell_shift: int) -> tuple[np.ndarray, bool]:
    """FFmpeg motion-vector records -> (grid_h, grid_w, 2) int16 cell grid of (dx, dy) = dst - src.

    Only vectors into the past (``source < 0``) are written; cells no block covers stay 0.
    Returns the grid and whether some block did not sit on the cell grid (the caller then
    retries with ``cell_shift=0``).
    """
    grid_h, grid_w = grid_shape(width, height, cell_shift)
    grid = np.zeros((grid_h, grid_w, 2), np.int16)
    cell_mask = (1 << cell_shift) - 1
    misaligned = False
    for m in mvs:
        if m["source"] >= 0:
            continue
        w, h = int(m["w"]), int(m["h"])
        x0, y0 = int(m["dst_x"]) - w // 2, int(m["dst_y"]) - h // 2
        if (x0 | y0 | w | h) & cell_mask:
            misaligned = True
            continue
        cx0, cy0 = x0 >> cell_shift, y0 >> cell_shift
        cx1, cy1 = cx0 + (w >> cell_shift), cy0 + (h >> cell_shift)
        grid[max(cy0, 0):cy1, max(cx0, 0):cx1] = (
            np.int16(int(m["dst_x"]) - int(m["src_x"])),
            np.int16(int(m["dst_y"]) - int(m["src_y"])),
        )
    return grid, misaligned


def identity_source(width: int, height: int) -> np.ndarray:
    """S_0: every pixel comes from itself, packed as (y << 16) | x."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.int32)
    return (ys << 16) | xs


def accumulate_step(src_prev: np.ndarray | None, grid: np.ndarray, cell_shift: int,
                    width: int, height: int) -> np.ndarray:
    """S_t(p) = S_{t-1}(p - m_t(p)) where m_t(p) != 0 and p - m_t(p) is in the frame, else S_{t-1}(p)."""
    if src_prev is None:
        src_prev = identity_source(width, height)
    ys, xs = np.mgrid[0:height, 0:width]
    m = grid[ys >> cell_shift, xs >> cell_shift].astype(np.int32)
    sx, sy = xs - m[..., 0], ys - m[..., 1]
    moved = ((m[..., 0] != 0) | (m[..., 1] != 0)) & (sx >= 0) & (sx < width) & (sy >= 0) & (sy < height)
    return np.where(moved, src_prev[np.where(moved, sy, ys), np.where(moved, sx, xs)], src_prev).astype(np.int32)


def yuv_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, matrix: int) -> np.ndarray:
    """Per-pixel YUV -> RGB uint8 in 8.8 fixed point (inputs already at full resolution)."""
    scale, offset, cr_r, cb_g, cr_g, cb_b = YUV_MATRICES[matrix]
    c = scale * (y.astype(np.int32) - offset)
    d, e = u.astype(np.int32) - 128, v.astype(np.int32) - 128
    rgb = np.stack([c + cr_r * e + 128, c - cb_g * d - cr_g * e + 128, c + cb_b * d + 128], axis=-1) >> 8
    return np.clip(rgb, 0, 255).astype(np.uint8)


def yuv420_to_rgb(y_plane: np.ndarray, u_plane: np.ndarray, v_plane: np.ndarray, width: int,
                  height: int, matrix: int) -> np.ndarray:
    """4:2:0 planes (rows may be padded) -> (height, width, 3) uint8 RGB, chroma by nearest neighbour."""
    ys, xs = np.mgrid[0:height, 0:width]
    return yuv_to_rgb(y_plane[ys, xs], u_plane[ys >> 1, xs >> 1], v_plane[ys >> 1, xs >> 1], matrix)


def gather_mv_residual(src: np.ndarray | None, iframe_rgb: np.ndarray, y_plane: np.ndarray,
                       u_plane: np.ndarray, v_plane: np.ndarray, width: int, height: int,
                       matrix: int) -> tuple[np.ndarray, np.ndarray]:
    """accumulated_mv(p) = p - S_k(p) (int16, x then y); residual(p) = F_k(p) - I(S_k(p)) (int16)."""
    if src is None:
        src = identity_source(width, height)
    ys, xs = np.mgrid[0:height, 0:width]
    sx, sy = src & 0xFFFF, src >> 16
    mv = np.stack([xs - sx, ys - sy], axis=-1).astype(np.int16)
    frame = yuv420_to_rgb(y_plane, u_plane, v_plane, width, height, matrix)
    residual = frame.astype(np.int16) - iframe_rgb[sy, sx].astype(np.int16)
    return mv, residual
