"""What each kernel of kernels/*.cu reads and writes, as device byte ranges, for the race detector.

Computed when the launch executes (the tables it reads are in device memory by then), from the
arguments and the batch tables (kernels/batch.cu describes their columns). A table whose values do
not describe buffers that exist is reported as an illegal address instead of being run.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

FRAME_FIELDS, SEG_FIELDS = 6, 16
Range = tuple[int, int]  # (address, bytes)
Reader = Callable[[int, int], np.ndarray]  # (address, count) -> int64 values


class BadTable(Exception):
    """A batch table describes buffers that cannot be what the stage meant (corrupted or unwritten)."""


def _plane(y, ystride, width, height) -> Range:
    return (y, (height - 1) * ystride + width) if width > 0 and height > 0 else (y, 0)


def _chroma(u, uvstride, uv_step, width, height) -> Range:
    cw, ch = (width + 1) // 2, (height + 1) // 2
    return (u, (ch - 1) * uvstride + (cw - 1) * uv_step + 1) if cw > 0 and ch > 0 else (u, 0)


def _planes(row, width, height, uv_step) -> list[Range]:
    y, u, v, ys, uvs = (int(x) for x in row)
    if 0 in (y, u, v):
        raise BadTable(f"a needed plane has address 0 ({y:#x}, {u:#x}, {v:#x})")
    if ys < width or uvs < ((width + 1) // 2 - 1) * uv_step + 1:
        raise BadTable(f"plane strides {ys}, {uvs} below the width {width}")
    return [_plane(y, ys, width, height), _chroma(u, uvs, uv_step, width, height), _chroma(v, uvs, uv_step, width, height)]


def _segments(read: Reader, segs: int, n: int) -> np.ndarray:
    t = read(segs, n * SEG_FIELDS).reshape(n, SEG_FIELDS)
    for s in t:
        w, h, matrix, uv_step = (int(x) for x in s[:4])
        if not (0 < w <= 32767 and 0 < h <= 32767 and 0 <= matrix <= 3 and uv_step in (1, 2)):
            raise BadTable(f"segment row {s[:6].tolist()}: not a clip's size, matrix and chroma step")
    return t


def _frame_rows(read: Reader, frames: int, first: int, k: int, width: int, height: int) -> tuple[list[Range], np.ndarray]:
    if k == 0:
        return [], np.zeros((0, FRAME_FIELDS), np.int64)
    if first < 0 or k < 0:
        raise BadTable(f"chain rows [{first}, {first + k}) are negative")
    rows = read(frames + first * FRAME_FIELDS * 8, k * FRAME_FIELDS).reshape(k, FRAME_FIELDS)
    out = [(frames + first * FRAME_FIELDS * 8, k * FRAME_FIELDS * 8)]
    for f in rows:
        grid, gw, gh, shift = (int(x) for x in f[2:6])
        if shift not in (0, 3) or gw < (width + (1 << shift) - 1) >> shift or gh < (height + (1 << shift) - 1) >> shift:
            raise BadTable(f"frame row {f.tolist()}: its grid does not cover a {width}x{height} frame")
        out.append((grid, 4 * gw * gh))
    return out, rows


def footprint(name: str, a: list[int], read: Reader) -> tuple[list[Range], list[Range]]:
    """(reads, writes) of one launch of kernel ``name`` with argument values ``a``."""
    reads: list[Range] = []
    writes: list[Range] = []
    if name == "rasterize_mv":
        mvs, num, gw, gh, _shift, grid, flag = a
        reads.append((mvs, 40 * num))
        writes += [(grid, 4 * gw * gh), (flag, 4)]
    elif name == "accumulate_step":
        prev, nxt, grid, gw, shift, w, h = a
        if prev:
            reads.append((prev, 4 * w * h))
        reads.append((grid, 4 * gw * ((h + (1 << shift) - 1) >> shift)))
        writes.append((nxt, 4 * w * h))
    elif name == "yuv420_to_rgb":
        y, ys, u, v, uvs, step, w, h, _m, out = a
        reads += [_plane(y, ys, w, h), _chroma(u, uvs, step, w, h), _chroma(v, uvs, step, w, h)]
        writes.append((out, 3 * w * h))
    elif name == "gather_mv_residual":
        src, rgb, y, ys, u, v, uvs, step, w, h, _m, mv, res = a
        if src:
            reads.append((src, 4 * w * h))
        if res:
            reads += [(rgb, 3 * w * h), _plane(y, ys, w, h), _chroma(u, uvs, step, w, h), _chroma(v, uvs, step, w, h)]
            writes.append((res, 6 * w * h))
        writes.append((mv, 4 * w * h))
    elif name == "batch_zero":
        buf, n = a
        writes.append((buf, 4 * n))
    elif name == "batch_rasterize_mv":
        mvs, num, frames, num_frames = a
        reads += [(mvs, 40 * num), (frames, 8 * FRAME_FIELDS * num_frames)]
        table = read(frames, num_frames * FRAME_FIELDS).reshape(num_frames, FRAME_FIELDS) if num_frames else []
        prev_end = 0
        for f in table:
            start, end, grid, gw, gh, shift = (int(x) for x in f)
            if not (prev_end <= start <= end <= num) or shift not in (0, 3) or not (0 < gw <= 32767 and 0 < gh <= 32767):
                raise BadTable(f"frame row {f.tolist()}: record ranges not a partition of {num} records, or no grid")
            prev_end = end
            if end > start:
                writes.append((grid, 4 * gw * gh))
    elif name == "batch_trace_gather":
        segs, n, frames, out_h, out_w, mv, res = a
        reads.append((segs, 8 * SEG_FIELDS * n))
        for s in _segments(read, segs, n):
            w, h, uv_step, first, k = int(s[0]), int(s[1]), int(s[3]), int(s[4]), int(s[5])
            if w > out_w or h > out_h:
                raise BadTable(f"a {w}x{h} clip in a {out_w}x{out_h} batch")
            ranges, _ = _frame_rows(read, frames, first, k, w, h)
            reads += ranges
            if res:
                reads += _planes(s[6:11], w, h, uv_step) + _planes(s[11:16], w, h, uv_step)
        if mv:
            writes.append((mv, 4 * n * out_h * out_w))
        if res:
            writes.append((res, 6 * n * out_h * out_w))
    elif name == "batch_iframe_rgb":
        segs, n, out_h, out_w, out = a
        reads.append((segs, 8 * SEG_FIELDS * n))
        for s in _segments(read, segs, n):
            w, h = int(s[0]), int(s[1])
            if w > out_w or h > out_h:
                raise BadTable(f"a {w}x{h} clip in a {out_w}x{out_h} batch")
            reads += _planes(s[6:11], w, h, int(s[3]))
        writes.append((out, 3 * n * out_h * out_w))
    else:
        raise KeyError(f"the CUDA double has no footprint for kernel {name!r}: add one to tests/cudadouble/footprints.py")
    return [r for r in reads if r[1] > 0], [w for w in writes if w[1] > 0]
