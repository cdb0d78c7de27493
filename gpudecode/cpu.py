"""The CPU backend: PyAV decodes, the host build of the CUDA kernels does the per-pixel work.

For each sampled GOP the chain is walked once: the I-frame is converted to RGB, every P-frame's
MV records are rasterised into a cell grid and folded into the source map S (DESIGN §1), and at
each position a segment asked for, the accumulated MV and the residual are gathered from S, the
I-frame and that P-frame's YUV planes.
"""

from __future__ import annotations

import time
import warnings
from collections import defaultdict
from typing import Iterable, Sequence

import numpy as np

from gpudecode._av import motion_vector_buffer, yuv420_addresses
from gpudecode._host import host_kernels
from gpudecode.buffers import BufferPool
from gpudecode.errors import SidecarError, SidecarWarning
from gpudecode.gopreader import GopReader
from gpudecode.index import GopIndex
from gpudecode.kernels import CELL_SHIFT
from gpudecode.kernels.reference import grid_shape
from gpudecode.sample import MODALITIES, Sample, check_modalities
from gpudecode.sampling import group_picks
from gpudecode.sidecar import ClipMvs, SidecarReader, chain_count


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
        self.rgb_ptr, self.mv_ptr = self.rgb.ctypes.data, self.mv.ctypes.data
        self.src_a_ptr, self.src_b_ptr = self.src_a.ctypes.data, self.src_b.ctypes.data

    def other_ptr(self, ptr: int) -> int:
        """The S buffer that is not ``ptr`` (0, i.e. S_0 = identity, is neither: then buffer a)."""
        return self.src_b_ptr if ptr == self.src_a_ptr else self.src_a_ptr


class CpuBackend:
    """Decode with PyAV on this process's core(s); run the kernels' host build.

    ``mvs="sidecar"``: the P-frames' MV records come from the video's sidecar (gpudecode.sidecar) and
    the decoder runs without MV export; a clip whose sidecar cannot be used decodes its MVs as before
    (``sidecar_errors`` says which and why, each once; ``stats["sidecar_fallbacks"]`` counts clips).
    """

    name = "cpu"

    def __init__(self, *, threads: int = 1, pool: BufferPool | None = None, mvs: str = "decode",
                 sidecar_dir: str | None = None):
        if mvs not in ("decode", "sidecar"):
            raise ValueError(f"mvs must be 'decode' or 'sidecar', got {mvs!r}")
        self.threads = threads
        self.mvs = mvs
        self.sidecars = SidecarReader(sidecar_dir) if mvs == "sidecar" else None
        #: sidecar path -> why it was not used (each once)
        self.sidecar_errors: dict[str, str] = {}
        self._side_buffer = np.empty(0, np.uint8)
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
        p_frame, to_rgb, gather = k.raw.gd_host_p_frame, k._yuv420_to_rgb, k._gather_mv_residual
        ws = self._workspace(h, w)
        # The loop passes addresses (ints) to C: NumPy's ``.ctypes.data`` costs ~1.5 us a call, a PyAV
        # plane's or side data's own address 0.1 us, and a clip makes ~100 such calls.
        i_ptr = iframe.ctypes.data if want_i else 0
        mv_ptr = mv.ctypes.data if want_mv else ws.mv_ptr
        res_ptr = residual.ctypes.data if want_res else 0
        i_step, mv_step, res_step = h * w * 3, (h * w * 4 if want_mv else 0), h * w * 6
        clock, t_start = time.perf_counter, time.perf_counter()
        t_mv = t_kernels = 0.0
        matrix = index.colour_matrix
        side = self._from_sidecar(index, by_gop) if chain and self.sidecars is not None else None
        side_ptr = side.records.ctypes.data if side is not None else 0
        t_mv += clock() - t_start
        with GopReader(index, export_mvs=chain and side is None, threads=self.threads) as reader:
            for gop in sorted(by_gop):
                at = by_gop[gop]
                row = side.first_row[gop] if side is not None else 0
                # The I-frame goes straight into the first segment that shows it (else into scratch);
                # the residual reads it from there, other segments copy it after the GOP.
                i_first = min(seg for segs in at.values() for seg in segs)
                rgb_ptr = i_ptr + i_first * i_step if want_i else ws.rgb_ptr
                src_ptr = 0  # S_0 = identity (NULL)
                for pos, frame in reader.frames(gop, max(at) if chain else 0):
                    t0 = clock()
                    if pos == 0:
                        if want_i or want_res:
                            (y, ys, u, v, uvs), owner = yuv420_addresses(frame)
                            to_rgb(y, ys, u, v, uvs, 1, w, h, matrix, rgb_ptr)
                    else:
                        if side is None:
                            records, count, owner = motion_vector_buffer(frame)
                        else:  # the row-th chain P-frame of the GOP: the reader yields the chain in order
                            a, count = side.offsets[row], side.offsets[row + 1] - side.offsets[row]
                            records, row = side_ptr + 40 * int(a), row + 1
                            count = int(count)
                        t1 = clock()
                        t_mv += t1 - t0
                        t0 = t1
                        # Rasterise into 8-pixel cells (1-pixel cells if a block is off that grid) and
                        # fold into S: one call (ctypes calls cost microseconds, ~40 P-frames a clip).
                        # S starts at identity (NULL) at the chain's first P-frame, wherever B-frames put it.
                        prev_ptr, src_ptr = src_ptr, ws.other_ptr(src_ptr)
                        p_frame(records or None, count, ws.grid_ptr, ws.grid_w, ws.grid_h, CELL_SHIFT, ws.dense_ptr,
                                prev_ptr or None, src_ptr, w, h)
                    segs = at.get(pos)
                    if segs and chain:
                        first = segs[0]
                        if want_res:
                            (y, ys, u, v, uvs), owner = yuv420_addresses(frame)
                        else:  # MV only: no pixels read
                            y, ys, u, v, uvs = None, 0, None, None, 0
                        gather(src_ptr or None, rgb_ptr if want_res else None, y, ys, u, v, uvs, 1, w, h, matrix,
                               mv_ptr + first * mv_step, res_ptr + first * res_step if want_res else None)
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
                                iframe[seg] = iframe[i_first]
        stats = self.stats
        stats["demux"] += reader.stats["demux"]
        stats["decode"] += reader.stats["decode"]
        stats["frames"] += reader.stats["frames"]
        stats["mv_parse"] += t_mv
        stats["sidecar_clips"] += side is not None
        stats["kernels"] += t_kernels
        stats["total"] += clock() - t_start
        stats["clips"] += 1
        gops = np.array([g for g, _ in picks], np.int64)
        positions = np.array([p for _, p in picks], np.int64)
        return Sample(index.path, gops, positions, iframe, mv, residual, backend=self.name)

    def _alloc_side(self, nbytes: int) -> np.ndarray:
        if self._side_buffer.nbytes < nbytes:  # grows to the largest clip seen; records live for one decode
            self._side_buffer = np.empty(max(nbytes, 2 * self._side_buffer.nbytes), np.uint8)
        return self._side_buffer

    def _from_sidecar(self, index: GopIndex, by_gop: dict) -> ClipMvs | None:
        """The clip's MV records from its sidecar, or None (the reason kept once) to decode them."""
        wanted = [(gop, chain_count(index, gop, max(at))) for gop, at in sorted(by_gop.items())]
        try:
            return self.sidecars.read(index, wanted, alloc=self._alloc_side)
        except SidecarError as e:
            self.stats["sidecar_fallbacks"] += 1
            if e.path not in self.sidecar_errors:
                self.sidecar_errors[e.path] = str(e)
                if e.kind != "missing":
                    warnings.warn(f"{e}; decoding this video's MVs instead", SidecarWarning, stacklevel=4)
            return None
