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

from gpudecode._av import motion_vectors, yuv420_planes
from gpudecode._host import host_kernels
from gpudecode.gopreader import GopReader
from gpudecode.index import GopIndex
from gpudecode.kernels import CELL_SHIFT
from gpudecode.kernels.reference import grid_shape
from gpudecode.sample import MODALITIES, Sample, check_modalities
from gpudecode.sampling import group_picks


class _Workspace:
    """Scratch buffers for one frame size, kept across clips, with their addresses looked up once."""

    def __init__(self, h: int, w: int):
        self.shape = (h, w)
        self.grid_h, self.grid_w = grid_shape(w, h, CELL_SHIFT)
        self.grid = np.empty((self.grid_h, self.grid_w, 2), np.int16)
        self.dense = np.empty((h, w, 2), np.int16)  # 1-pixel cells, for blocks off the cell grid
        self.src_a, self.src_b = np.empty((h, w), np.int32), np.empty((h, w), np.int32)  # S, ping-pong
        self.rgb = np.empty((h, w, 3), np.uint8)  # the current GOP's I-frame
        self.mv = np.empty((h, w, 2), np.int16)  # MV scratch when only the residual is wanted
        self.grid_ptr, self.dense_ptr = self.grid.ctypes.data, self.dense.ctypes.data
        self.src_a_ptr, self.src_b_ptr = self.src_a.ctypes.data, self.src_b.ctypes.data

    def other_ptr(self, ptr: int) -> int:
        return self.src_b_ptr if ptr == self.src_a_ptr else self.src_a_ptr


class CpuBackend:
    """Decode with PyAV on this process's core(s); run the kernels' host build."""

    name = "cpu"

    def __init__(self, *, threads: int = 1):
        self.threads = threads
        self.kernels = host_kernels()
        #: cumulative seconds per stage (demux, decode, mv_parse, kernels, total) and clips decoded
        self.stats: dict[str, float] = defaultdict(float)
        self._ws: _Workspace | None = None

    def _workspace(self, h: int, w: int) -> "_Workspace":
        if self._ws is None or self._ws.shape != (h, w):
            self._ws = _Workspace(h, w)
        return self._ws

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

        by_gop = group_picks(picks, index.gop_lengths, path=index.path, chain=chain, positions=index.p_positions)

        k, raw = self.kernels, self.kernels.raw
        ws = self._workspace(h, w)
        clock, t_start = time.perf_counter, time.perf_counter()
        t_mv = t_kernels = 0.0
        matrix = index.colour_matrix
        with GopReader(index, export_mvs=chain, threads=self.threads) as reader:
            for gop in sorted(by_gop):
                at = by_gop[gop]
                src, src_ptr = None, None  # S_0 = identity
                for pos, frame in reader.frames(gop, max(at) if chain else 0):
                    t0 = clock()
                    if pos == 0:
                        if want_i or want_res:
                            k.yuv420_to_rgb(*yuv420_planes(frame), matrix, ws.rgb)
                    else:
                        mvs = motion_vectors(frame)
                        t1 = clock()
                        t_mv += t1 - t0
                        t0 = t1
                        # Rasterise into 8-pixel cells; a block off that grid means 1-pixel cells.
                        ws.grid.fill(0)
                        grid, grid_w, shift = ws.grid_ptr, ws.grid_w, CELL_SHIFT
                        raw.rasterize_mv(mvs.ctypes.data, len(mvs), grid_w, ws.grid_h, shift, grid, k.flag_ptr)
                        if k.misaligned():
                            ws.dense.fill(0)
                            grid, grid_w, shift = ws.dense_ptr, w, 0
                            raw.rasterize_mv(mvs.ctypes.data, len(mvs), w, h, 0, grid, k.flag_ptr)
                        first_step = src is None  # the chain's first P-frame (position 1, or later after B-frames)
                        src, src_ptr = (ws.src_b, ws.src_b_ptr) if src is ws.src_a else (ws.src_a, ws.src_a_ptr)
                        raw.accumulate_step(None if first_step else ws.other_ptr(src_ptr), src_ptr, grid, grid_w, shift, w, h)
                    segs = at.get(pos)
                    if segs and chain:
                        first = segs[0]
                        planes = yuv420_planes(frame) if want_res else (None, None, None)
                        k.gather_mv_residual(src, ws.rgb if want_res else None, *planes, matrix,
                                             mv[first] if want_mv else ws.mv, residual[first] if want_res else None)
                        for seg in segs[1:]:  # segments that drew the same (gop, pos)
                            if want_mv:
                                mv[seg] = mv[first]
                            if want_res:
                                residual[seg] = residual[first]
                    t_kernels += clock() - t0
                if want_i:  # ws.rgb still holds this GOP's I-frame
                    for segs in at.values():
                        for seg in segs:
                            iframe[seg] = ws.rgb
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
