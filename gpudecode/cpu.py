"""The CPU backend: PyAV decodes, the host build of the CUDA kernels does the per-pixel work.

For each sampled GOP the chain is walked once: the I-frame is converted to RGB, every P-frame's
MV records are rasterised into a cell grid and folded into the source map S (DESIGN §1), and at
each position a segment asked for, the accumulated MV and the residual are gathered from S, the
I-frame and that P-frame's YUV planes.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

from gpudecode._av import yuv420_planes
from gpudecode._host import host_kernels
from gpudecode.errors import PREPARE_REMEDY, UnsupportedVideoError
from gpudecode.gopreader import GopReader
from gpudecode.index import GopIndex
from gpudecode.kernels import CELL_SHIFT
from gpudecode.kernels.reference import grid_shape
from gpudecode.sample import MODALITIES, Sample, check_modalities

_NO_MVS = np.zeros(0, np.dtype({"names": ["source"], "formats": ["<i4"], "itemsize": 40}))


def motion_vectors(frame) -> np.ndarray:
    """The frame's FFmpeg MV records (a structured array of AVMotionVector), empty when it has none."""
    sd = frame.side_data.get("MOTION_VECTORS")
    return sd.to_ndarray() if sd is not None else _NO_MVS


class CpuBackend:
    """Decode with PyAV on this process's core(s); run the kernels' host build."""

    name = "cpu"

    def __init__(self, *, threads: int = 1):
        self.threads = threads
        self.kernels = host_kernels()
        #: cumulative seconds per stage (demux, decode, mv_parse, kernels, total) and clips decoded
        self.stats: dict[str, float] = defaultdict(float)

    def decode(self, index: GopIndex, picks: Sequence[tuple[int, int]], *,
               modalities: Iterable[str] = MODALITIES) -> Sample:
        """Decode the picks ``[(gop, pos), ...]`` of one indexed video into a Sample."""
        mods = check_modalities(modalities)
        index.check_readable()
        t, h, w = len(picks), index.height, index.width
        want_i, want_mv, want_res = (m in mods for m in MODALITIES)
        iframe = np.empty((t, h, w, 3), np.uint8) if want_i else None
        mv = np.empty((t, h, w, 2), np.int16) if want_mv else None
        residual = np.empty((t, h, w, 3), np.int16) if want_res else None
        chain = want_mv or want_res  # the P-frame chain is needed only for MV and residual

        by_gop: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        for seg, (gop, pos) in enumerate(picks):
            if not (0 <= gop < index.num_gops and 0 <= pos < index.gop_lengths[gop]):
                raise ValueError(f"{index.path}: pick (gop={gop}, pos={pos}) is outside the video's "
                                 f"{index.num_gops} GOPs of lengths {index.gop_lengths[:8]}...")
            by_gop[gop][pos if chain else 0].append(seg)

        k = self.kernels
        grid_h, grid_w = grid_shape(w, h, CELL_SHIFT)
        grid = np.empty((grid_h, grid_w, 2), np.int16)
        dense = np.empty((h, w, 2), np.int16)  # cell_shift 0: for blocks off the cell grid
        src_a, src_b = np.empty((h, w), np.int32), np.empty((h, w), np.int32)
        rgb = np.empty((h, w, 3), np.uint8)
        clock, t_start = time.perf_counter, time.perf_counter()
        t_mv = t_kernels = 0.0
        with GopReader(index, export_mvs=chain, threads=self.threads) as reader:
            for gop in sorted(by_gop):
                at = by_gop[gop]
                src = None  # S_0 = identity
                for pos, frame in reader.frames(gop, max(at) if chain else 0):
                    if frame.width != w or frame.height != h:
                        raise UnsupportedVideoError(index.path, f"frame size changes mid-stream ({w}x{h} -> "
                                                    f"{frame.width}x{frame.height})", PREPARE_REMEDY)
                    matrix = index.colour_matrix
                    t0 = clock()
                    if pos == 0:
                        if want_i or want_res:
                            k.yuv420_to_rgb(*yuv420_planes(frame), matrix, rgb)
                    else:
                        mvs = motion_vectors(frame)
                        t1 = clock()
                        t_mv += t1 - t0
                        t0 = t1
                        grid.fill(0)
                        shift, cells = CELL_SHIFT, grid
                        if k.rasterize_mv(mvs, grid, CELL_SHIFT):
                            dense.fill(0)
                            k.rasterize_mv(mvs, dense, 0)
                            shift, cells = 0, dense
                        dst = src_b if src is src_a else src_a
                        k.accumulate_step(src, dst, cells, shift)
                        src = dst
                    segs = at.get(pos)
                    if not segs:
                        t_kernels += clock() - t0
                        continue
                    first = segs[0]
                    if chain:
                        planes = yuv420_planes(frame) if want_res else (None, None, None)
                        out_mv = mv[first] if want_mv else np.empty((h, w, 2), np.int16)
                        k.gather_mv_residual(src, rgb if want_res else None, *planes, matrix, out_mv,
                                             residual[first] if want_res else None)
                    for seg in segs[1:]:  # segments that drew the same (gop, pos)
                        if want_mv:
                            mv[seg] = mv[first]
                        if want_res:
                            residual[seg] = residual[first]
                    t_kernels += clock() - t0
                if want_i:  # rgb still holds this GOP's I-frame
                    for segs in at.values():
                        for seg in segs:
                            iframe[seg] = rgb
        stats = self.stats
        stats["demux"] += reader.stats["demux"]
        stats["decode"] += reader.stats["decode"]
        stats["frames"] += reader.stats["frames"]
        stats["mv_parse"] += t_mv
        stats["kernels"] += t_kernels
        stats["total"] += clock() - t_start
        stats["clips"] += 1
        gops = np.array([g for g, _ in picks], np.int64)
        positions = np.array([p for _, p in picks], np.int64)
        return Sample(index.path, gops, positions, iframe, mv, residual, backend=self.name)
