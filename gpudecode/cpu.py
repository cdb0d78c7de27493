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
from gpudecode.buffers import BufferPool
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
        """The S buffer that is not ``ptr`` (0, i.e. S_0 = identity, is neither: then buffer a)."""
        return self.src_b_ptr if ptr == self.src_a_ptr else self.src_a_ptr


class CpuBackend:
    """Decode with PyAV on this process's core(s); run the kernels' host build."""

    name = "cpu"

    def __init__(self, *, threads: int = 1, pool: BufferPool | None = None):
        self.threads = threads
        self.kernels = host_kernels()
        #: where samples' arrays come from: memory of samples the caller has dropped is reused
        #: (``BufferPool(0)`` allocates afresh for every clip)
        self.pool = BufferPool() if pool is None else pool
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
        iframe, mv, residual = self.pool.arrays([((t, h, w, 3), np.uint8) if want_i else None,
                                                 ((t, h, w, 2), np.int16) if want_mv else None,
                                                 ((t, h, w, 3), np.int16) if want_res else None])
        chain = want_mv or want_res  # the P-frame chain is needed only for MV and residual

        by_gop = group_picks(picks, index.gop_lengths, path=index.path, chain=chain, positions=index.p_positions)

        k = self.kernels
        p_frame = k.raw.gd_host_p_frame
        ws = self._workspace(h, w)
        clock, t_start = time.perf_counter, time.perf_counter()
        t_mv = t_kernels = 0.0
        matrix = index.colour_matrix
        with GopReader(index, export_mvs=chain, threads=self.threads) as reader:
            for gop in sorted(by_gop):
                at = by_gop[gop]
                # The I-frame goes straight into the first segment that shows it (else into scratch);
                # the residual reads it from there, other segments copy it after the GOP.
                i_first = min(seg for segs in at.values() for seg in segs)
                rgb = iframe[i_first] if want_i else ws.rgb
                src, src_ptr = None, 0  # S_0 = identity (NULL)
                for pos, frame in reader.frames(gop, max(at) if chain else 0):
                    t0 = clock()
                    if pos == 0:
                        if want_i or want_res:
                            k.yuv420_to_rgb(*yuv420_planes(frame), matrix, rgb)
                    else:
                        mvs = motion_vectors(frame)
                        t1 = clock()
                        t_mv += t1 - t0
                        t0 = t1
                        # Rasterise into 8-pixel cells (1-pixel cells if a block is off that grid) and
                        # fold into S: one call (ctypes calls cost microseconds, ~40 P-frames a clip).
                        # S starts at identity (NULL) at the chain's first P-frame, wherever B-frames put it.
                        prev_ptr, src_ptr = src_ptr, ws.other_ptr(src_ptr)
                        src = ws.src_a if src_ptr == ws.src_a_ptr else ws.src_b
                        p_frame(mvs.ctypes.data, len(mvs), ws.grid_ptr, ws.grid_w, ws.grid_h, CELL_SHIFT, ws.dense_ptr,
                                prev_ptr or None, src_ptr, w, h)
                    segs = at.get(pos)
                    if segs and chain:
                        first = segs[0]
                        planes = yuv420_planes(frame) if want_res else (None, None, None)
                        k.gather_mv_residual(src, rgb if want_res else None, *planes, matrix,
                                             mv[first] if want_mv else ws.mv, residual[first] if want_res else None)
                        for seg in segs[1:]:  # segments that drew the same (gop, pos)
                            if want_mv:
                                mv[seg] = mv[first]
                            if want_res:
                                residual[seg] = residual[first]
                    t_kernels += clock() - t0
                if want_i:
                    for segs in at.values():
                        for seg in segs:
                            if seg != i_first:
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
