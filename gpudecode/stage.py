"""The GPU stage of the batched engine: a batch of clip packets -> batch-shaped samples.

Per batch, whatever its number of clips N and segments T:

1. host: one pass packs both tables (kernels/batch.cu describes them), the MV records and the YUV
   planes into one staging buffer (pinned on a device), with every address already the device
   address it will have;
2. one asynchronous copy to the device, on the copy stream; staging and device buffers are double
   buffered, so the next batch's copy overlaps this batch's kernels;
3. at most four launches on the compute stream: zero the MV cell grids, rasterise every MV record
   of the batch, trace every (segment, pixel) back through its chain and gather MV and residual,
   convert every segment's I-frame. The trace form (proved in batch.cu) was chosen over one launch
   per chain step: that needs a launch per step and a source map per segment in flight (4 bytes a
   pixel, twice: 3.8 GB for 64 x 8 segments at 1280x720), the trace only the MV cell grids. Their
   speeds on a GPU are not compared (no GPU yet).

Nothing waits for the device inside a batch: the host waits only before it reuses a staging buffer,
for the copy out of it made two batches earlier. Outputs are (N, T, H, W, C) with H and W the
largest frame of the batch; a smaller clip fills the top-left corner, the rest is 0, and
``SampleBatch.sizes`` holds each clip's own (height, width).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from gpudecode.executor import Executor
from gpudecode.packet import MV_RECORD_BYTES, ClipPacket, Pixels, i420_layout
from gpudecode.sample import MODALITIES, Sample

#: Columns of the kernels' tables (kernels/batch.cu: GD_FRAME_FIELDS, GD_SEG_FIELDS).
FRAME_FIELDS, SEG_FIELDS = 6, 16
_ALIGN = 256
_BLOCK_1D, _BLOCK_2D = (256, 1, 1), (32, 8, 1)
_MAX_GRID = 65535


def _align(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def _grid_1d(n: int) -> tuple[int, int, int]:
    return (max(1, min((n + _BLOCK_1D[0] - 1) // _BLOCK_1D[0], _MAX_GRID)), 1, 1)


def _grid_2d(width: int, rows: int) -> tuple[int, int, int]:
    return (max(1, (width + _BLOCK_2D[0] - 1) // _BLOCK_2D[0]), max(1, min((rows + _BLOCK_2D[1] - 1) // _BLOCK_2D[1], _MAX_GRID)), 1)


class Nv12Source(Protocol):
    """Decoded frames in device memory for ``pixels="nvdec"``: one (y_ptr, y_stride, uv_ptr, uv_stride,
    keepalive) per frame index, in the order asked (the GPU stage holds ``keepalive`` for the batch)."""

    def nv12(self, path: str, indices: Sequence[int]) -> list[tuple[int, int, int, int, Any]]: ...


@dataclass
class SampleBatch:
    """N clips of T segments each, batch-shaped: ``iframe`` (N, T, H, W, 3) uint8, ``mv`` (N, T, H, W, 2)
    int16, ``residual`` (N, T, H, W, 3) int16 (None when not asked for), on the executor's device.

    ``ready`` is the event after the batch's kernels (None on the host): a consumer on another stream
    waits for it instead of synchronising the device.
    """

    paths: list
    gops: np.ndarray
    positions: np.ndarray
    sizes: np.ndarray  # (N, 2): each clip's (height, width)
    iframe: Any = None
    mv: Any = None
    residual: Any = None
    backend: str = "gpu"
    ready: Any = None
    _keep: list = field(default_factory=list, repr=False)  # NVDEC frames the kernels read

    def __len__(self) -> int:
        return len(self.paths)

    def sample(self, i: int) -> Sample:
        """Clip ``i`` as a Sample (views into the batch, cropped to the clip's own size)."""
        h, w = (int(v) for v in self.sizes[i])
        crop = lambda a: None if a is None else a[i, :, :h, :w]  # noqa: E731
        return Sample(self.paths[i], self.gops[i], self.positions[i], crop(self.iframe), crop(self.mv),
                      crop(self.residual), backend=self.backend)


class _Slot:
    """One half of the double buffer: a staging buffer, its device twin, and the events guarding them."""

    def __init__(self):
        self.host = self.device = None
        self.nbytes = 0
        self.copied = None  # the copy out of ``host`` (host waits for it before rewriting ``host``)
        self.consumed = None  # the kernels that read ``device`` (the next copy into it waits for them)


class GpuStage:
    """``stage(packets) -> SampleBatch``: the kernels of a whole batch in a fixed number of launches.

    ``executor`` is ``gpudecode._cuda.CupyExecutor`` on a GPU or ``gpudecode.executor.HostExecutor``
    (CI); ``nvdec`` supplies the frames' pixels when ``pixels="nvdec"``.
    """

    def __init__(self, executor: Executor, *, pixels: Pixels = "upload", nvdec: Nv12Source | None = None,
                 backend: str = "gpu"):
        if pixels not in ("upload", "nvdec"):
            raise ValueError(f"pixels must be 'upload' or 'nvdec', got {pixels!r}")
        if pixels == "nvdec" and nvdec is None:
            raise ValueError("pixels='nvdec' needs an NVDEC frame source")
        self.executor = executor
        self.pixels = pixels
        self.nvdec = nvdec
        self.backend = backend
        self._slots = [_Slot(), _Slot()]
        self._turn = 0
        self._grid = None
        self._grid_cells = 0
        #: cumulative host seconds (nvdec, pack, launch), batches and clips
        self.stats: dict[str, float] = defaultdict(float)

    def _slot(self, nbytes: int) -> _Slot:
        slot = self._slots[self._turn]
        self._turn ^= 1
        ex = self.executor
        ex.host_wait(slot.copied)  # the copy from two batches ago; long done in a steady state
        if slot.nbytes < nbytes:
            size = max(nbytes, slot.nbytes * 3 // 2, 1 << 20)
            slot.host = ex.host_buffer(size)
            slot.device = ex.empty((len(slot.host),), np.uint8)
            slot.nbytes = len(slot.host)
            # The new device buffer comes from the compute stream's pool, which may hand out at once memory
            # that work queued on that stream still uses (usually the previous batch's outputs). The copy
            # stream writes it, so it must wait for that work: everything queued on the compute stream so far
            # (issue 18: without this the copy overwrote the previous batch's outputs and tables mid-kernel).
            slot.consumed = ex.mark()
        return slot

    def _grid_buffer(self, cells: int) -> int:
        if self._grid is None or self._grid_cells < cells:
            self._grid_cells = max(cells, self._grid_cells * 3 // 2, 1 << 14)
            self._grid = self.executor.empty((self._grid_cells, 2), np.int16)  # stream-ordered: batches take turns
        return self.executor.pointer(self._grid)

    def __call__(self, packets: Sequence[ClipPacket], *, consumer: Any = None) -> SampleBatch:
        """The batch's kernels, queued; outputs on the compute stream's pool, or on ``consumer``'s.

        ``consumer`` is the stream that will read the outputs (an executor stream object; None on the
        host): the outputs are then allocated from its pool, so that when the caller drops them the pool
        reuses the memory in that stream's order, after the caller's reads (issue 18), and the kernels
        wait for the consumer's work queued before the allocation.
        """
        if not packets:
            raise ValueError("a batch needs at least one packet")
        first = packets[0]
        for p in packets:
            if p.num_segments != first.num_segments or p.modalities != first.modalities:
                raise ValueError(f"{p.path}: all packets of a batch need the same segments and modalities "
                                 f"({p.num_segments}, {p.modalities} vs {first.num_segments}, {first.modalities})")
            if p.pixels != self.pixels:
                raise ValueError(f"{p.path}: packet made for pixels={p.pixels!r}, this GPU stage takes {self.pixels!r}")
        ex, clock = self.executor, time.perf_counter
        t0 = clock()
        n, t = len(packets), first.num_segments
        want_i, want_mv, want_res = (m in first.modalities for m in MODALITIES)
        chain = want_mv or want_res
        heights = np.array([p.height for p in packets], np.int64)
        widths = np.array([p.width for p in packets], np.int64)
        out_h, out_w = int(heights.max()), int(widths.max())

        # Per P-frame: its clip, record range and cell grid.
        frame_counts = np.array([len(p.cell_shifts) for p in packets], np.int64)
        frame_base = np.concatenate([[0], np.cumsum(frame_counts)])
        num_frames = int(frame_base[-1])
        rec_counts = np.array([int(p.mv_offsets[-1]) for p in packets], np.int64)
        rec_base = np.concatenate([[0], np.cumsum(rec_counts)])
        num_recs = int(rec_base[-1])
        shifts = np.concatenate([p.cell_shifts for p in packets]).astype(np.int64) if num_frames else np.zeros(0, np.int64)
        clip_of_frame = np.repeat(np.arange(n), frame_counts)
        cell = np.int64(1) << shifts
        grid_h = (heights[clip_of_frame] + cell - 1) >> shifts
        grid_w = (widths[clip_of_frame] + cell - 1) >> shifts
        cells = grid_h * grid_w
        cell_base = np.concatenate([[0], np.cumsum(cells)])
        num_cells = int(cell_base[-1])
        if num_cells >= 2**31 or n * t * out_h >= 2**31:
            raise ValueError(f"a batch of {n} clips with {num_frames} P-frames needs {num_cells} MV grid cells: "
                             "more than the kernels' 32-bit counts allow; use smaller batches")

        yuv_sizes = np.array([p.yuv.nbytes for p in packets], np.int64)
        yuv_base = np.concatenate([[0], np.cumsum(yuv_sizes)])
        seg_off = 0
        frame_off = _align(n * t * SEG_FIELDS * 8)
        rec_off = frame_off + _align(num_frames * FRAME_FIELDS * 8)
        yuv_off = rec_off + _align(num_recs * MV_RECORD_BYTES)
        total = yuv_off + int(yuv_base[-1])

        slot = self._slot(total)
        host, dev = slot.host, ex.pointer(slot.device)
        grid_ptr = self._grid_buffer(num_cells)

        # The frame table.
        frames = host[frame_off:frame_off + num_frames * FRAME_FIELDS * 8].view(np.int64).reshape(num_frames, FRAME_FIELDS)
        if num_frames:
            frames[:, 0] = np.concatenate([p.mv_offsets[:-1] + rec_base[i] for i, p in enumerate(packets)])
            frames[:, 1] = np.concatenate([p.mv_offsets[1:] + rec_base[i] for i, p in enumerate(packets)])
            frames[:, 2] = grid_ptr + 4 * cell_base[:-1]
            frames[:, 3], frames[:, 4], frames[:, 5] = grid_w, grid_h, shifts

        # The MV records and planes, packed behind the tables.
        for i, p in enumerate(packets):
            if rec_counts[i]:
                a = rec_off + MV_RECORD_BYTES * int(rec_base[i])
                host[a:a + p.mv_records.nbytes] = p.mv_records
            if yuv_sizes[i]:
                host[yuv_off + yuv_base[i]:yuv_off + yuv_base[i + 1]] = p.yuv

        # The segment table.
        keep: list = []
        t_nvdec = 0.0
        segs = host[seg_off:seg_off + n * t * SEG_FIELDS * 8].view(np.int64).reshape(n, t, SEG_FIELDS)
        for i, p in enumerate(packets):
            s = segs[i]
            s[:, 0], s[:, 1], s[:, 2] = p.width, p.height, p.colour_matrix
            s[:, 4] = frame_base[i] + p.chain_first
            s[:, 5] = p.chain_len
            t1 = clock()
            planes = self._planes(p, dev + yuv_off + int(yuv_base[i]), keep)  # (K, 5): y, u, v, y_stride, uv_stride
            if self.pixels == "nvdec":
                t_nvdec += clock() - t1
            s[:, 3] = 1 if self.pixels == "upload" else 2
            for cols, slots in ((slice(6, 11), p.iframe_slot), (slice(11, 16), p.frame_slot)):
                s[:, cols] = np.where(slots[:, None] >= 0, planes[np.maximum(slots, 0)] if len(planes) else 0, 0)

        slot.copied = ex.copy_in(dev, host, total, after=slot.consumed)
        ex.wait(slot.copied)
        t2 = clock()
        on = {} if consumer is None else {"on": consumer}
        iframe = ex.empty((n, t, out_h, out_w, 3), np.uint8, **on) if want_i else None
        mv = ex.empty((n, t, out_h, out_w, 2), np.int16, **on) if want_mv else None
        residual = ex.empty((n, t, out_h, out_w, 3), np.int16, **on) if want_res else None
        if consumer is not None:
            ex.wait(ex.mark(on=consumer))  # memory from the consumer's pool is safe after its queued work
        ptr = lambda a: np.uint64(0 if a is None else ex.pointer(a))  # noqa: E731
        i32, u64 = np.int32, np.uint64
        rows = n * t * out_h
        if chain:
            ex.launch("batch_zero", _grid_1d(num_cells), _BLOCK_1D, (u64(grid_ptr), i32(num_cells)))
            ex.launch("batch_rasterize_mv", _grid_1d(num_recs), _BLOCK_1D,
                      (u64(dev + rec_off), i32(num_recs), u64(dev + frame_off), i32(num_frames)))
            ex.launch("batch_trace_gather", _grid_2d(out_w, rows), _BLOCK_2D,
                      (u64(dev + seg_off), i32(n * t), u64(dev + frame_off), i32(out_h), i32(out_w), ptr(mv), ptr(residual)))
        if want_i:
            ex.launch("batch_iframe_rgb", _grid_2d(out_w, rows), _BLOCK_2D,
                      (u64(dev + seg_off), i32(n * t), i32(out_h), i32(out_w), ptr(iframe)))
        slot.consumed = ex.mark()
        stats = self.stats
        stats["nvdec"] += t_nvdec
        stats["pack"] += t2 - t0 - t_nvdec
        stats["launch"] += clock() - t2
        stats["batches"] += 1
        stats["clips"] += n
        return SampleBatch([p.path for p in packets], np.stack([p.gops for p in packets]),
                           np.stack([p.positions for p in packets]), np.stack([heights, widths], axis=1),
                           iframe, mv, residual, backend=self.backend, ready=slot.consumed, _keep=keep)

    def _planes(self, p: ClipPacket, yuv_addr: int, keep: list) -> np.ndarray:
        """(K, 5) int64: the device address of each needed frame's Y, U, V planes and the row strides."""
        k = len(p.frame_keys)
        out = np.zeros((k, 5), np.int64)
        if k == 0:
            return out
        if self.pixels == "upload":
            y_bytes, uv_bytes, cw = i420_layout(p.width, p.height)
            out[:, 0] = yuv_addr + np.arange(k, dtype=np.int64) * p.frame_bytes
            out[:, 1] = out[:, 0] + y_bytes
            out[:, 2] = out[:, 1] + uv_bytes
            out[:, 3], out[:, 4] = p.width, cw
            return out
        for row, (y_ptr, y_stride, uv_ptr, uv_stride, alive) in enumerate(self.nvdec.nv12(p.path, p.frame_indices.tolist())):
            out[row] = (y_ptr, uv_ptr, uv_ptr + 1, y_stride, uv_stride)  # NV12: V follows U in each pair
            keep.append(alive)
        return out


__all__ = ["FRAME_FIELDS", "GpuStage", "Nv12Source", "SEG_FIELDS", "SampleBatch"]
