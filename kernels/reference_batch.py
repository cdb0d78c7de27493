"""NumPy twins of the batched kernels (``batch.cu``): what each computes, without the tables.

The kernels read a batch through tables of absolute addresses; the twins take the same content as
Python objects: per P-frame its MV records and cell shift, per segment a :class:`SegmentPlan`.
The tests require the host build of ``batch.cu``, driven by the GPU stage's orchestration, to
agree with these bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from gpudecode.kernels import CELL_SHIFT
from gpudecode.kernels.reference import grid_shape, rasterize_mv, yuv_to_rgb


def grid_cell_shifts(records: np.ndarray, offsets: np.ndarray, cell_shift: int = CELL_SHIFT) -> np.ndarray:
    """Per P-frame: ``cell_shift`` if every past-referencing block sits on its grid, else 0 (1-pixel cells).

    The twin of the CPU stage's per-frame decision (``gd_host_append_mvs``, host glue), which is
    rasterize_mv's off-grid test made before the batch so that the GPU stage never reads a result back
    mid-batch. ``records`` are raw 40-byte AVMotionVector records (uint8) and ``offsets`` the (F + 1,)
    record range of each frame; one vectorised pass over them all.
    """
    n = len(offsets) - 1
    raw = records.reshape(-1, 40)
    if len(raw) == 0:
        return np.full(n, cell_shift, np.int32)
    i16 = raw.view("<i2")  # fields at even offsets: dst_x at byte 10, dst_y at 12
    w, h = raw[:, 4].astype(np.int32), raw[:, 5].astype(np.int32)
    x0, y0 = i16[:, 5] - (w >> 1), i16[:, 6] - (h >> 1)
    bad = (((x0 | y0 | w | h) & ((1 << cell_shift) - 1)) != 0) & (raw[:, 3] >= 128)  # source < 0: top byte's sign
    bad_before = np.concatenate([[0], np.cumsum(bad, dtype=np.int64)])
    return np.where(bad_before[offsets[1:]] > bad_before[offsets[:-1]], 0, cell_shift).astype(np.int32)


def cell_shift_for(mvs: np.ndarray, cell_shift: int = CELL_SHIFT) -> int:
    """:func:`grid_cell_shifts` of one frame's records (a structured array as ``motion_vectors`` returns it)."""
    return int(grid_cell_shifts(mvs.view(np.uint8).reshape(-1), np.array([0, len(mvs)]), cell_shift)[0])


def batch_rasterize_mv(frames: Sequence[tuple[np.ndarray, int, int, int]]) -> list[np.ndarray]:
    """Per P-frame ``(mvs, width, height, cell_shift)`` -> its (grid_h, grid_w, 2) int16 cell grid."""
    return [rasterize_mv(mvs, width, height, shift)[0] for mvs, width, height, shift in frames]


def trace_source(grids: Sequence[np.ndarray], shifts: Sequence[int], width: int, height: int) -> np.ndarray:
    """S_k as packed (y << 16) | x, by tracing each pixel back from frame k to frame 1.

    ``grids[t - 1]`` is frame t's grid. q_0 = p; q_{t+1} = q_t - m_{k-t}(q_t) where that MV is
    non-zero and the source is inside the frame, else q_t; S_k(p) = q_k (proof in batch.cu).
    """
    qy, qx = np.mgrid[0:height, 0:width].astype(np.int32)
    for grid, shift in zip(reversed(grids), reversed(shifts)):
        m = grid[qy >> shift, qx >> shift].astype(np.int32)
        sx, sy = qx - m[..., 0], qy - m[..., 1]
        ok = ((m[..., 0] != 0) | (m[..., 1] != 0)) & (sx >= 0) & (sx < width) & (sy >= 0) & (sy < height)
        qx, qy = np.where(ok, sx, qx), np.where(ok, sy, qy)
    return (qy << 16) | qx


def _rgb_at(planes, xs: np.ndarray, ys: np.ndarray, matrix: int) -> np.ndarray:
    y, u, v = planes
    return yuv_to_rgb(y[ys, xs], u[ys >> 1, xs >> 1], v[ys >> 1, xs >> 1], matrix)


@dataclass
class SegmentPlan:
    """One output segment: its clip's size and matrix, its chain's grids and the planes it reads.

    Planes are (Y, U, V) 2-D uint8 arrays (U and V may be strided views into NV12's UV plane).
    """

    width: int
    height: int
    matrix: int
    grids: list  # frames 1..k of the segment's GOP, (grid_h, grid_w, 2) int16
    shifts: list
    iframe: tuple | None  # (Y, U, V) of the GOP's I-frame
    frame: tuple | None  # (Y, U, V) of the sampled frame (the I-frame itself at position 0)


def batch_trace_gather(segments: Sequence[SegmentPlan], out_h: int, out_w: int, *, mv: bool = True,
                       residual: bool = True) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(S, out_h, out_w, 2) accumulated MV p - S_k(p) and (S, out_h, out_w, 3) residual F_k(p) - I(S_k(p)), zero-padded."""
    n = len(segments)
    mv_out = np.zeros((n, out_h, out_w, 2), np.int16) if mv else None
    res_out = np.zeros((n, out_h, out_w, 3), np.int16) if residual else None
    for i, s in enumerate(segments):
        src = trace_source(s.grids, s.shifts, s.width, s.height)
        sx, sy = src & 0xFFFF, src >> 16
        ys, xs = np.mgrid[0:s.height, 0:s.width]
        if mv:
            mv_out[i, :s.height, :s.width] = np.stack([xs - sx, ys - sy], axis=-1)
        if residual:
            f = _rgb_at(s.frame, xs, ys, s.matrix).astype(np.int16)
            res_out[i, :s.height, :s.width] = f - _rgb_at(s.iframe, sx, sy, s.matrix).astype(np.int16)
    return mv_out, res_out


def batch_iframe_rgb(segments: Sequence[SegmentPlan], out_h: int, out_w: int) -> np.ndarray:
    """(S, out_h, out_w, 3) uint8: each segment's I-frame in RGB, zero-padded."""
    out = np.zeros((len(segments), out_h, out_w, 3), np.uint8)
    for i, s in enumerate(segments):
        ys, xs = np.mgrid[0:s.height, 0:s.width]
        out[i, :s.height, :s.width] = _rgb_at(s.iframe, xs, ys, s.matrix)
    return out


__all__ = ["SegmentPlan", "batch_iframe_rgb", "batch_rasterize_mv", "batch_trace_gather", "cell_shift_for",
           "grid_cell_shifts", "grid_shape", "trace_source"]
