"""The CPU stage of the batched GPU engine and its output, the clip packet.

The CPU stage runs where the CPU backend runs (a loader worker per core): it opens the clip once,
decodes exactly the frames the picks need with MV export, and ships what only the CPU can produce:
FFmpeg's raw 40-byte MV records of every needed P-frame and, for ``pixels="upload"``, the YUV planes
of the frames whose pixels the sample uses (for ``pixels="nvdec"``, their frame numbers: NVDEC
decodes them again on the GPU, so this pass skips the loop filter). Nothing per pixel is computed
here; the planes are only copied out of the decoder's buffers into the packet.

A packet is a handful of flat NumPy arrays and scalars, so it pickles (or moves through shared
memory) cheaply, and its size varies with the clip. The GPU stage (``gpudecode.stage``) turns a
batch of packets into a batch of samples.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence

import numpy as np

from gpudecode._av import motion_vector_buffer, yuv420_addresses
from gpudecode._host import host_kernels
from gpudecode.buffers import BufferPool
from gpudecode.errors import SidecarError, SidecarWarning
from gpudecode.gopreader import GopReader
from gpudecode.index import GopIndex
from gpudecode.kernels import CELL_SHIFT
from gpudecode.sample import MODALITIES, check_modalities
from gpudecode.sampling import group_picks
from gpudecode.sidecar import ClipMvs, SidecarReader, chain_count

Pixels = Literal["upload", "nvdec"]
#: Where the MV records come from: the decoder (FFmpeg's export, every needed frame decoded) or the
#: video's sidecar (gpudecode.sidecar), falling back to the decoder when the sidecar cannot be used.
MvSource = Literal["decode", "sidecar"]

#: Bytes of one FFmpeg AVMotionVector record as PyAV exports it (kernels/common.cuh).
MV_RECORD_BYTES = 40


def i420_layout(width: int, height: int) -> tuple[int, int, int]:
    """(Y bytes, bytes of U and of V, chroma row length) of a tightly packed 4:2:0 frame."""
    cw, ch = (width + 1) // 2, (height + 1) // 2
    return width * height, cw * ch, cw


@dataclass
class ClipPacket:
    """What the CPU stage hands the GPU stage for one clip (T segments).

    - ``gops``, ``positions``: (T,) the picks; ``chain_len``: (T,) P-frames to trace back through
      (the position, or 0 when neither MV nor residual is wanted);
    - ``mv_records``: (R * 40,) uint8, the MV records of the clip's P-frames in decode order, and
      ``mv_offsets``: (F + 1,) the record range of each; ``cell_shifts``: (F,) the grid cell shift of
      each; ``chain_first``: (T,) the P-frame row of position 1 of the segment's GOP;
    - ``frame_keys``: (K, 2) the (gop, pos) of the frames whose pixels are needed; ``iframe_slot`` and
      ``frame_slot``: (T,) the rows of the segment's I-frame and sampled frame (-1: not needed);
    - ``yuv``: (K * frame_bytes,) uint8 tightly packed I420 planes (``pixels="upload"``, else empty);
      ``frame_indices``: (K,) the frames' numbers in the stream (what NVDEC is asked for).
    """

    path: str
    width: int
    height: int
    colour_matrix: int
    modalities: tuple[str, ...]
    pixels: str
    gops: np.ndarray
    positions: np.ndarray
    chain_len: np.ndarray
    mv_records: np.ndarray
    mv_offsets: np.ndarray
    cell_shifts: np.ndarray
    chain_first: np.ndarray
    frame_keys: np.ndarray
    iframe_slot: np.ndarray
    frame_slot: np.ndarray
    yuv: np.ndarray
    frame_indices: np.ndarray
    #: the CPU stage's seconds for this clip (demux, decode, mv_parse, copy, total)
    stats: dict = field(default_factory=dict, repr=False)
    #: where the MV records came from ("decode" or "sidecar"), and why the sidecar was not used
    #: when one was asked for ("" when it was, or was not asked for)
    mvs: str = "decode"
    sidecar_error: str = ""

    def __post_init__(self) -> None:
        t, f, k = len(self.gops), len(self.cell_shifts), len(self.frame_keys)
        for name, n in (("positions", t), ("chain_len", t), ("chain_first", t), ("iframe_slot", t), ("frame_slot", t),
                        ("mv_offsets", f + 1), ("frame_indices", k)):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{self.path}: packet field {name} has {len(getattr(self, name))} rows, expected {n}")
        if len(self.mv_records) != MV_RECORD_BYTES * int(self.mv_offsets[-1]):
            raise ValueError(f"{self.path}: packet holds {len(self.mv_records)} bytes of MV records, expected "
                             f"{MV_RECORD_BYTES} x {int(self.mv_offsets[-1])}")
        if self.pixels == "upload" and len(self.yuv) != k * self.frame_bytes:
            raise ValueError(f"{self.path}: packet holds {len(self.yuv)} bytes of YUV planes, expected {k} x {self.frame_bytes}")

    @property
    def num_segments(self) -> int:
        return len(self.gops)

    @property
    def frame_bytes(self) -> int:
        y, uv, _ = i420_layout(self.width, self.height)
        return y + 2 * uv

    @property
    def nbytes(self) -> int:
        """What the GPU stage copies to the device for this clip (MV records and planes)."""
        return int(self.mv_records.nbytes + self.yuv.nbytes)

    def planes(self, slot: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(Y, U, V) 2-D views of the packed frame ``slot`` (``pixels="upload"``)."""
        y_bytes, uv_bytes, cw = i420_layout(self.width, self.height)
        base = slot * self.frame_bytes
        buf = self.yuv
        return (buf[base:base + y_bytes].reshape(self.height, self.width),
                buf[base + y_bytes:base + y_bytes + uv_bytes].reshape(-1, cw),
                buf[base + y_bytes + uv_bytes:base + y_bytes + 2 * uv_bytes].reshape(-1, cw))

    def records(self, frame: int) -> np.ndarray:
        """The raw records (uint8, 40 per MV) of P-frame row ``frame``."""
        a, b = int(self.mv_offsets[frame]), int(self.mv_offsets[frame + 1])
        return self.mv_records[MV_RECORD_BYTES * a:MV_RECORD_BYTES * b]


class CpuStage:
    """Decode-only half of the batched engine: ``stage(index, picks) -> ClipPacket``.

    One per loader worker (it keeps per-stage timings in ``stats``); ``pixels`` must match the GPU
    stage the packets are meant for. ``mvs="sidecar"`` reads the MV records from the video's sidecar
    (``sidecar_dir``: its cache folder, see gpudecode.sidecar); with ``pixels="nvdec"`` as well, no
    decoder is opened on the CPU at all. A clip whose sidecar cannot be used (missing, stale, damaged)
    decodes its MVs instead; the packet says so (``packet.mvs``, ``packet.sidecar_error``), and each
    such sidecar is in ``sidecar_errors`` once with the reason (a warning names it, except when it is
    only missing).
    """

    def __init__(self, *, pixels: Pixels = "upload", threads: int = 1, mvs: MvSource = "decode",
                 sidecar_dir: str | None = None):
        if pixels not in ("upload", "nvdec"):
            raise ValueError(f"pixels must be 'upload' or 'nvdec', got {pixels!r}")
        if mvs not in ("decode", "sidecar"):
            raise ValueError(f"mvs must be 'decode' or 'sidecar', got {mvs!r}")
        self.pixels = pixels
        self.threads = threads
        self.mvs = mvs
        self.sidecars = SidecarReader(sidecar_dir) if mvs == "sidecar" else None
        #: sidecar path -> why it was not used (each once)
        self.sidecar_errors: dict[str, str] = {}
        #: cumulative seconds per stage and clips done
        self.stats: dict[str, float] = defaultdict(float)
        #: the packets' host memory (planes, MV records), reused once the caller drops a packet
        #: (gpudecode.buffers): two buffers a packet, two packets in flight
        self.pool = BufferPool(max_buffers=4)
        self.kernels = host_kernels()
        self._records_capacity = 1 << 20  # bytes; grows to the largest clip seen

    def _grown(self, records: np.ndarray, used: int, needed: int) -> np.ndarray:
        """A larger records buffer holding the ``used`` bytes of ``records``."""
        self._records_capacity = max(2 * records.nbytes, needed)
        bigger = self.pool.take(self._records_capacity)
        bigger[:used] = records[:used]
        return bigger

    def __call__(self, index: GopIndex, picks: Sequence[tuple[int, int]], *,
                 modalities: Iterable[str] = MODALITIES) -> ClipPacket:
        mods = check_modalities(modalities)
        index.check_readable()
        want_i, want_mv, want_res = (m in mods for m in MODALITIES)
        chain = want_mv or want_res
        p_positions = index.p_positions  # None unless B-frames are skipped (MPEG-4 Part 2)
        by_gop = group_picks(picks, index.gop_lengths, path=index.path, chain=chain, positions=p_positions)
        h, w = index.height, index.width
        upload = self.pixels == "upload"

        # Which frames' pixels the sample reads: every sampled GOP's I-frame (for the I-frame, and as
        # the residual's reference), and each sampled P-frame when the residual is wanted.
        keys: list[tuple[int, int]] = []
        for gop, at in by_gop.items():
            if want_i or want_res:
                keys.append((gop, 0))
            if want_res:
                keys.extend((gop, pos) for pos in sorted(at) if pos > 0)
        slot_of = {key: i for i, key in enumerate(keys)}
        y_bytes, uv_bytes, cw = i420_layout(w, h)
        frame_bytes = y_bytes + 2 * uv_bytes
        yuv = self.pool.take(len(keys) * frame_bytes if upload else 0)
        side, side_error, t_side = None, "", 0.0
        if chain and self.sidecars is not None:
            side, side_error, t_side = self._from_sidecar(index, by_gop, p_positions)
        if side is None:
            # The MV records are appended to one buffer as they are read; it grows (rarely) by doubling.
            records = self.pool.take(self._records_capacity)
        else:
            records = side.records
        used = 0

        # Addresses (ints) go to C: no NumPy view per frame (see gpudecode.cpu).
        pack, append = self.kernels.raw.gd_host_pack_i420, self.kernels.raw.gd_host_append_mvs
        yuv_ptr, records_ptr = yuv.ctypes.data, records.ctypes.data
        counts, shifts, first_of_gop = [0], [], {}
        clock = time.perf_counter
        t_start = clock() - t_side
        t_mv = t_copy = 0.0
        reader_stats = {"demux": 0.0, "decode": 0.0, "frames": 0}
        # From a sidecar, the decoder is needed only for uploaded pixels, and only up to the deepest frame
        # whose pixels are used; with pixels="nvdec" it is never opened.
        decode = side is None or (upload and bool(keys))
        with GopReader(index, export_mvs=chain and side is None, threads=self.threads,
                       fast=not upload) if decode else contextlib.nullcontext() as reader:
            for gop, at in by_gop.items() if decode else ():
                first_of_gop[gop] = len(counts) - 1
                last = max(at) if chain else 0
                if side is not None:
                    last = max((pos for g, pos in keys if g == gop), default=-1)
                    if last < 0:
                        continue
                for pos, frame in reader.frames(gop, last):
                    t0 = clock()
                    if pos > 0 and side is None:
                        address, count, owner = motion_vector_buffer(frame)
                        nbytes = count * MV_RECORD_BYTES
                        if used + nbytes > records.nbytes:
                            records = self._grown(records, used, used + nbytes)
                            records_ptr = records.ctypes.data
                        # a copy (the frame is released now) and the frame's grid cell shift
                        shifts.append(append(address or None, count, records_ptr + used, CELL_SHIFT))
                        used += nbytes
                        counts.append(count)
                    t1 = clock()
                    t_mv += t1 - t0
                    slot = slot_of.get((gop, pos))
                    if upload and slot is not None:
                        (y, ys, u, v, uvs), owner = yuv420_addresses(frame)
                        pack(y, ys, u, v, uvs, w, h, yuv_ptr + slot * frame_bytes)
                    t_copy += clock() - t1
            if decode:
                reader_stats = reader.stats
        t0 = clock()
        if side is None:
            mv_records = records[:used]
            mv_offsets = np.cumsum(counts, dtype=np.int64)
            cell_shifts = np.array(shifts, np.int32)  # twin: reference_batch.grid_cell_shifts
        else:
            mv_records, mv_offsets, cell_shifts, first_of_gop = side.records, side.offsets, side.cell_shifts, side.first_row
        t_mv += clock() - t0
        t = len(picks)
        gops = np.array([g for g, _ in picks], np.int64)
        positions = np.array([p for _, p in picks], np.int64)
        if not chain:
            chain_len = np.zeros(t, np.int64)
        elif p_positions is None:
            chain_len = positions.copy()
        else:  # B-frames are not in the chain: count the GOP's P-frames up to the position
            chain_len = np.array([sum(1 for q in p_positions[g] if q <= p) for g, p in picks], np.int64)
        iframe_slot = np.array([slot_of.get((g, 0), -1) for g in gops], np.int32)
        frame_slot = np.array([slot_of.get((g, p), -1) if want_res else -1 for g, p in picks], np.int32)
        stats = {"demux": reader_stats["demux"], "decode": reader_stats["decode"], "frames": reader_stats["frames"],
                 "sidecar": t_side, "mv_parse": t_mv, "copy": t_copy, "total": clock() - t_start}
        for key, value in stats.items():
            self.stats[key] += value
        self.stats["clips"] += 1
        return ClipPacket(
            path=index.path, width=w, height=h, colour_matrix=index.colour_matrix, modalities=mods, pixels=self.pixels,
            gops=gops, positions=positions, chain_len=chain_len,
            mv_records=mv_records, mv_offsets=mv_offsets, cell_shifts=cell_shifts,
            chain_first=np.array([first_of_gop[g] if chain else 0 for g in gops], np.int32),
            frame_keys=np.array(keys, np.int32).reshape(-1, 2), iframe_slot=iframe_slot, frame_slot=frame_slot,
            yuv=yuv, frame_indices=np.array([index.gop_starts[g] + p for g, p in keys], np.int64), stats=stats,
            mvs="decode" if side is None else "sidecar", sidecar_error=side_error)

    def _from_sidecar(self, index: GopIndex, by_gop: dict, p_positions) -> tuple[ClipMvs | None, str, float]:
        """The clip's MV records from its sidecar, or (None, why not) to decode them; and the seconds spent."""
        t0 = time.perf_counter()
        wanted = [(gop, chain_count(index, gop, max(at))) for gop, at in by_gop.items()]
        try:
            side = self.sidecars.read(index, wanted, alloc=self.pool.take)
        except SidecarError as e:
            self.stats["sidecar_fallbacks"] += 1
            if e.path not in self.sidecar_errors:
                self.sidecar_errors[e.path] = str(e)
                if e.kind != "missing":
                    warnings.warn(f"{e}; decoding this video's MVs instead", SidecarWarning, stacklevel=3)
            return None, str(e), time.perf_counter() - t0
        return side, "", time.perf_counter() - t0


__all__ = ["ClipPacket", "CpuStage", "MV_RECORD_BYTES", "MvSource", "Pixels", "i420_layout"]
