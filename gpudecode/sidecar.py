"""MV sidecars: a video's P-frame motion vectors, exported once and stored beside it (``clip.mp4.mvs``).

With MVs from FFmpeg, every clip the GPU path samples costs the CPU a decode of every frame it needs
(DESIGN §4). A sidecar pays that export once per video (``gpudecode mvs``, or ``gpudecode prepare``
as it re-encodes); in training a clip's MVs are then a few kilobytes read from a file and the pixels
are NVDEC's job.

Where: beside the video (``clip.mp4`` -> ``clip.mp4.mvs``), or, for a read-only dataset, under a
cache folder (``cache_dir=`` / ``--cache-dir`` / ``$GPUDECODE_MVS_DIR``) that mirrors the video's
absolute path (``/data/ucf/a.avi`` -> ``CACHE/data/ucf/a.avi.mvs``). One place per video: with a
cache folder set, only that place is read or written. One file per video, written under a temporary
name and renamed into place, so a reader (any node of a cluster, on shared storage) sees either the
old complete file or the new one, never a half-written one; nothing is ever updated in place.

What (what the kernels read of FFmpeg's 40-byte AVMotionVector and nothing else): per record the
block's top-left corner ``x0 = dst_x - w/2``, ``y0``, its size ``w``, ``h`` and the displacement
``dx = dst_x - src_x``, ``dy``, for the records that reference the past (``source < 0``; the only
ones rasterised). ``flags``, ``motion_x/y`` and ``motion_scale`` are not stored; a frame's cell
shift is derived again on read by the kernels' own rule. Expanded on read into the 40-byte layout
(``source = -1``, unread fields 0), so the kernels take sidecar and decoder records alike.

Layout, version 1, little-endian::

    header   magic "GDMVS\\0\\r\\n", u32 version, meta_len, meta_crc32, num_gops, table_crc32, reserved
    meta     JSON: the video's identity (size, mtime_ns, blake2b of its first and last 64 KiB), codec, size
    table    num_gops rows of (u64 offset, u32 nbytes, raw_nbytes, crc32, start, length, p_frames)
    GOPs     one zlib stream (level 1) per GOP: u32 records per P-frame, then the records, 10 bytes each:
             w, h (u8), x0, y0 (int16, difference from the GOP's record before), dx, dy (int16)

Records in frame order, so the first k P-frames of a GOP are a prefix of its stream: a sample inflates
only up to the deepest position it needs.

A sample reads the header and only its GOPs; each GOP's CRC is checked before it is used. Anything
that does not match (another video, another version of the format, a truncated or damaged file)
raises a :class:`~gpudecode.errors.SidecarError` that names the file and says why; the caller then
decodes that clip's MVs instead: a sidecar never yields wrong MVs.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from gpudecode._av import MV_DTYPE, PICT_P
from gpudecode._host import host_kernels
from gpudecode.errors import (
    CorruptSidecarError,
    GpudecodeError,
    MissingSidecarError,
    SidecarError,
    SidecarVersionError,
    StaleSidecarError,
    TruncatedSidecarError,
)
from gpudecode.index import GopIndex
from gpudecode.kernels import CELL_SHIFT

MAGIC = b"GDMVS\x00\r\n"  # \r\n: a file mangled by a text-mode copy fails here, not later
VERSION = 1
SUFFIX = ".mvs"
CACHE_ENV = "GPUDECODE_MVS_DIR"
#: bytes of the video's head and of its tail that its identity hashes
HEAD_TAIL_BYTES = 1 << 16
_HEADER = struct.Struct("<8s6I")
_GOP_ROW = np.dtype([("offset", "<u8"), ("nbytes", "<u4"), ("raw_nbytes", "<u4"), ("crc", "<u4"), ("start", "<u4"),
                     ("length", "<u4"), ("p_frames", "<u4")])
assert _GOP_ROW.itemsize == 32
#: a stored record, packed (kernels/host/hostkernels.cpp, gd_host_expand_mvs, reads the same layout)
_STORED = np.dtype([("w", "u1"), ("h", "u1"), ("x0", "<i2"), ("y0", "<i2"), ("dx", "<i2"), ("dy", "<i2")])
_RECORD_BYTES = _STORED.itemsize
assert _RECORD_BYTES == 10
#: most records FFmpeg exports per 16x16 macroblock and frame (H.264 8x8 partitions, both directions: 8);
#: a GOP claiming more is damaged, and this bounds what a hostile file can make the reader inflate
_MAX_RECORDS_PER_MB = 16
_MAX_META = 1 << 16
_HEADERS_KEPT, _VIDEOS_KEPT = 4096, 1 << 16  # per reader (one per loader worker)
REMEDY = "rewrite it with `gpudecode mvs`; until then the clip's MVs are decoded"


@dataclass(frozen=True)
class VideoIdentity:
    """What ties a sidecar to one version of a video: a changed video never meets old MVs."""

    size: int
    mtime_ns: int
    head_tail: str  # blake2b-128 hex of the size, the first and the last HEAD_TAIL_BYTES bytes

    def to_json(self) -> dict:
        return {"size": self.size, "mtime_ns": self.mtime_ns, "head_tail": self.head_tail}


def video_identity(path: str | os.PathLike, st: os.stat_result | None = None) -> VideoIdentity:
    st = os.stat(path) if st is None else st
    h = hashlib.blake2b(st.st_size.to_bytes(8, "little"), digest_size=16)
    with open(path, "rb") as f:
        h.update(f.read(HEAD_TAIL_BYTES))
        if st.st_size > HEAD_TAIL_BYTES:
            f.seek(max(HEAD_TAIL_BYTES, st.st_size - HEAD_TAIL_BYTES))
            h.update(f.read(HEAD_TAIL_BYTES))
    return VideoIdentity(st.st_size, st.st_mtime_ns, h.hexdigest())


def cache_dir_from_env() -> Path | None:
    value = os.environ.get(CACHE_ENV, "").strip()
    return Path(value) if value else None


def sidecar_path(video: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where ``video``'s sidecar lives: beside it, or (``cache_dir``, else ``$GPUDECODE_MVS_DIR``) under that
    folder at the video's absolute path."""
    cache = Path(cache_dir) if cache_dir is not None else cache_dir_from_env()
    video = Path(video)
    if cache is None:
        return video.with_name(video.name + SUFFIX)
    absolute = Path(os.path.abspath(video))
    return cache / absolute.relative_to(absolute.anchor).with_name(absolute.name + SUFFIX)


def _chain_frames(index: GopIndex, gop: int) -> list[int]:
    """Frame numbers of GOP ``gop``'s P-frame chain (what the engines walk), in order."""
    start = index.gop_starts[gop]
    positions = index.p_positions
    return [start + k for k in (positions[gop] if positions is not None else range(1, index.gop_lengths[gop]))]


def _max_records(index_w: int, index_h: int) -> int:
    return _MAX_RECORDS_PER_MB * ((index_w + 15) // 16) * ((index_h + 15) // 16)


# -- writing -------------------------------------------------------------------------------------------------
def _columns(records: np.ndarray) -> tuple[np.ndarray, ...]:
    """(w, h, x0, y0, dx, dy) of FFmpeg records; int16 wrap-around everywhere, so that every transform is
    a bijection on int16 and the round trip is exact for any record."""
    w, h = records["w"], records["h"]
    dst_x, dst_y = records["dst_x"].astype(np.int32), records["dst_y"].astype(np.int32)
    x0 = (dst_x - w.astype(np.int32) // 2).astype(np.int16)
    y0 = (dst_y - h.astype(np.int32) // 2).astype(np.int16)
    dx = (dst_x - records["src_x"]).astype(np.int16)
    dy = (dst_y - records["src_y"]).astype(np.int16)
    return w, h, x0, y0, dx, dy


def encode_sidecar(identity: VideoIdentity, index: GopIndex, records: dict[int, bytes | np.ndarray], *,
                   level: int = 1) -> bytes:
    """The sidecar's bytes: ``records`` maps each chain P-frame's number to its FFmpeg records (the raw
    side data, or an array of ``MV_DTYPE``).

    zlib level 1: measured on 340x256 clips, level 6 makes files 15-20% smaller and costs 5x the time
    (for h264 more than a third of the decoding pass that exports the MVs).
    """
    limit = _max_records(index.width, index.height)
    chains = [_chain_frames(index, g) for g in range(index.num_gops)]
    order = [f for chain in chains for f in chain]
    per_frame = [records.get(f, b"") for f in order]
    per_frame = [r.tobytes() if isinstance(r, np.ndarray) else bytes(r) for r in per_frame]
    sizes = [len(r) // MV_DTYPE.itemsize for r in per_frame]
    for f, n in zip(order, sizes):
        if n > limit:
            raise CorruptSidecarError(index.path, f"frame {f} exports {n} MV records, more than the "
                                                  f"{limit} a {index.width}x{index.height} frame can have")
    # All of the video's records at once (a NumPy pass per GOP, or concatenating structured arrays,
    # costs more than the compression).
    every = np.frombuffer(b"".join(per_frame), MV_DTYPE)
    frame_of = np.repeat(np.arange(len(order)), sizes)
    past = every["source"] < 0  # the only records the kernels rasterise (P-frames have no others)
    if not past.all():
        every, frame_of = every[past], frame_of[past]
    counts = np.bincount(frame_of, minlength=len(order)).astype("<u4")
    w, h, x0, y0, dx, dy = _columns(every)
    # x0 and y0 as differences from the record before (within the GOP: each GOP is read on its own).
    frame_starts = np.zeros(len(order) + 1, np.int64)
    np.cumsum(counts, out=frame_starts[1:])
    gop_frames = np.zeros(index.num_gops + 1, np.int64)
    np.cumsum([len(c) for c in chains], out=gop_frames[1:])
    gop_records = frame_starts[gop_frames]
    stored = np.empty(len(every), _STORED)
    stored["w"], stored["h"], stored["dx"], stored["dy"] = w, h, dx, dy
    stored["x0"], stored["y0"] = np.diff(x0, prepend=np.int16(0)), np.diff(y0, prepend=np.int16(0))
    firsts = gop_records[:-1][gop_records[:-1] < gop_records[1:]]
    stored["x0"][firsts], stored["y0"][firsts] = x0[firsts], y0[firsts]
    blobs, rows = [], np.zeros(index.num_gops, _GOP_ROW)
    for g in range(index.num_gops):
        a, b = gop_records[g], gop_records[g + 1]
        raw = counts[gop_frames[g]:gop_frames[g + 1]].tobytes() + stored[a:b].tobytes()
        blob = zlib.compress(raw, level)
        rows[g] = (0, len(blob), len(raw), zlib.crc32(blob), index.gop_starts[g], index.gop_lengths[g], len(chains[g]))
        blobs.append(blob)
    meta = json.dumps({"format": "gpudecode MV sidecar", "video": identity.to_json(), "name": Path(index.path).name,
                       "codec": index.codec, "width": index.width, "height": index.height,
                       "num_frames": index.num_frames}, sort_keys=True).encode()
    offset = _HEADER.size + len(meta) + rows.nbytes
    for g, blob in enumerate(blobs):
        rows[g]["offset"] = offset
        offset += len(blob)
    table = rows.tobytes()
    header = _HEADER.pack(MAGIC, VERSION, len(meta), zlib.crc32(meta), index.num_gops, zlib.crc32(table), 0)
    return b"".join((header, meta, table, *blobs))


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename (atomic on
    POSIX and NFS): readers see the old file or the new one. The temporary name is unique per host
    and process, so writers on several nodes never share one. No fsync (it cost ~5 ms a file, a third
    of the encoding): a sidecar that a power cut leaves short or empty fails the reader's checks like
    any damaged one, and ``gpudecode mvs`` rewrites it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class SidecarWritten:
    """What :func:`write_sidecar` did: the sidecar's path and size, the video's size, and the GOP index
    built in the same pass (callers put it in the index cache)."""

    path: str
    nbytes: int
    video_bytes: int
    index: GopIndex


def write_sidecar(video: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                  level: int = 1) -> SidecarWritten:
    """Decode ``video`` once with MV export, build its GOP index and write its sidecar. Raises typed errors:
    the video's own (it cannot be indexed, or the engine cannot read it as is) and, when it changed while
    being read, a :class:`~gpudecode.errors.GpudecodeError`."""
    from av.sidedata.sidedata import SideDataContainer

    from gpudecode.index import build_index

    video = Path(video)
    st = video.stat() if video.exists() else None
    before = video_identity(video, st) if st is not None and video.is_file() else None
    records: dict[int, bytes] = {}
    count = [0]

    def on_frame(frame) -> None:
        if int(frame.pict_type) == PICT_P:
            # Read without frame.side_data (a reference cycle, see gpudecode._av.motion_vectors).
            sd = SideDataContainer(frame).get("MOTION_VECTORS")
            if sd is not None:
                records[count[0]] = bytes(sd)
        count[0] += 1

    index = build_index(video, export_mvs=True, on_frame=on_frame)  # typed errors for bad videos
    index.check_readable()
    after = video_identity(video)
    if before != after:
        raise GpudecodeError(video, "the video changed while its MVs were exported", "run `gpudecode mvs` again")
    data = encode_sidecar(after, index, records, level=level)
    path = sidecar_path(video, cache_dir)
    try:
        atomic_write(path, data)
    except OSError as e:
        raise GpudecodeError(path, f"cannot write the MV sidecar: {e.strerror or e}",
                             f"make the folder writable or pass a cache folder (--cache-dir, ${CACHE_ENV})") from e
    return SidecarWritten(str(path), len(data), after.size, index)


# -- reading -------------------------------------------------------------------------------------------------
@dataclass
class ClipMvs:
    """A clip's MV records from a sidecar, in the CPU stage's layout: ``records`` (R * 40,) uint8 FFmpeg
    records of every chain P-frame asked for, in the order asked; ``offsets`` (F + 1,) each frame's record
    range; ``cell_shifts`` (F,); ``first_row``: per GOP asked, its first frame row."""

    records: np.ndarray
    offsets: np.ndarray
    cell_shifts: np.ndarray
    first_row: dict[int, int]


@dataclass(frozen=True)
class _Header:
    key: tuple  # (st_dev, st_ino, st_size, st_mtime_ns) of the sidecar this was read from
    meta: dict
    table: np.ndarray


class SidecarReader:
    """Reads clips' MVs from sidecars, checking each against the video and its GOP index.

    Keeps, per process, the parsed header of each sidecar and each video's verified identity (keyed by
    file identity and modification time, so a rewritten file is read afresh), and the sidecars found
    bad (not retried until they change; each is in ``errors`` once, with its reason).
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None):
        self.cache_dir = cache_dir
        self._headers: dict[str, _Header] = {}
        self._videos: dict[tuple, str] = {}
        self._bad: dict[tuple, SidecarError] = {}
        self._lock = threading.Lock()
        self._kernels = host_kernels()

    def _remember(self, cache: dict, key, value, limit: int) -> None:
        """Bounded caches: a worker that sees 200k videos keeps the most recent few thousand."""
        with self._lock:
            cache[key] = value
            while len(cache) > limit:
                cache.pop(next(iter(cache)))

    def path(self, video: str | os.PathLike) -> Path:
        return sidecar_path(video, self.cache_dir)

    def _header(self, path: Path, fd: int, key: tuple) -> _Header:
        cached = self._headers.get(str(path))
        if cached is not None and cached.key == key:
            return cached
        size = key[2]
        head = os.pread(fd, _HEADER.size, 0)
        if len(head) < _HEADER.size:
            if not MAGIC.startswith(head[:len(MAGIC)]):
                raise CorruptSidecarError(path, "not an MV sidecar (bad magic bytes)", REMEDY)
            raise TruncatedSidecarError(path, f"truncated: {size} bytes, shorter than the {_HEADER.size}-byte header",
                                        REMEDY)
        magic, version, meta_len, meta_crc, num_gops, table_crc, _ = _HEADER.unpack(head)
        if magic != MAGIC:
            raise CorruptSidecarError(path, "not an MV sidecar (bad magic bytes)", REMEDY)
        if version != VERSION:
            raise SidecarVersionError(path, f"written by format version {version}; this gpudecode reads version "
                                            f"{VERSION}", REMEDY)
        if meta_len > _MAX_META:
            raise CorruptSidecarError(path, f"header claims {meta_len} bytes of metadata (at most {_MAX_META})", REMEDY)
        table_at = _HEADER.size + meta_len
        table_end = table_at + num_gops * _GOP_ROW.itemsize
        if table_end > size:
            raise TruncatedSidecarError(path, f"truncated: {size} bytes, its GOP table ends at byte {table_end}", REMEDY)
        body = os.pread(fd, table_end - _HEADER.size, _HEADER.size)
        if len(body) != table_end - _HEADER.size:
            raise TruncatedSidecarError(path, "truncated while being read", REMEDY)
        meta_bytes, table_bytes = body[:meta_len], body[meta_len:]
        if zlib.crc32(meta_bytes) != meta_crc:
            raise CorruptSidecarError(path, "its metadata fails its checksum", REMEDY)
        if zlib.crc32(table_bytes) != table_crc:
            raise CorruptSidecarError(path, "its GOP table fails its checksum", REMEDY)
        try:
            meta = json.loads(meta_bytes)
            video = meta["video"]
            identity = (int(video["size"]), int(video["mtime_ns"]), str(video["head_tail"]))
            shape = (str(meta["codec"]), int(meta["width"]), int(meta["height"]))
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptSidecarError(path, f"its metadata cannot be read ({type(e).__name__}: {e})", REMEDY) from None
        meta = {"identity": identity, "shape": shape}
        table = np.frombuffer(table_bytes, _GOP_ROW)
        ends = table["offset"] + table["nbytes"]
        if num_gops and (np.any(table["offset"] < table_end) or np.any(ends > size)):
            g = int(np.argmax((table["offset"] < table_end) | (ends > size)))
            if int(ends[g]) > size:
                raise TruncatedSidecarError(path, f"truncated: {size} bytes, GOP {g} ends at byte {int(ends[g])}", REMEDY)
            raise CorruptSidecarError(path, f"GOP {g}'s offset points into the header", REMEDY)
        header = _Header(key, meta, table)
        self._remember(self._headers, str(path), header, _HEADERS_KEPT)
        return header

    def _check_video(self, path: Path, header: _Header, index: GopIndex) -> None:
        """The sidecar describes this version of the video and the GOPs its index lists."""
        size, mtime_ns, head_tail = header.meta["identity"]
        try:
            st = os.stat(index.path)
        except OSError as e:
            raise StaleSidecarError(path, f"its video cannot be read ({e.strerror or e})", REMEDY) from None
        if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
            raise StaleSidecarError(path, f"stale: written for a video of {size} bytes modified at {mtime_ns} ns, the "
                                          f"video now has {st.st_size} bytes, modified at {st.st_mtime_ns} ns", REMEDY)
        vkey = (index.path, st.st_size, st.st_mtime_ns, st.st_ino)
        known = self._videos.get(vkey)
        if known is None:
            known = video_identity(index.path, st).head_tail
            self._remember(self._videos, vkey, known, _VIDEOS_KEPT)
        if known != head_tail:
            raise StaleSidecarError(path, "stale: the video's content differs from the one it was written for "
                                          "(same size and time, other bytes)", REMEDY)
        if header.meta["shape"] != (index.codec, index.width, index.height):
            raise StaleSidecarError(path, f"stale: written for {header.meta['shape']}, the video's index says "
                                          f"{(index.codec, index.width, index.height)}", REMEDY)
        table = header.table
        if len(table) != index.num_gops or not (np.array_equal(table["start"], index.gop_starts)
                                                and np.array_equal(table["length"], index.gop_lengths)):
            raise StaleSidecarError(path, f"stale: its {len(table)} GOPs are not the {index.num_gops} GOPs of the video's "
                                          "index", REMEDY)

    def current(self, video: str | os.PathLike) -> SidecarError | None:
        """Why ``video``'s sidecar is not up to date (missing, stale, unreadable header), or None when its
        header is sound and it was written for this version of the video: ``gpudecode mvs`` skips it."""
        path = self.path(video)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError:
            return MissingSidecarError(path, "no MV sidecar", "write it with `gpudecode mvs`")
        try:
            st = os.fstat(fd)
            header = self._header(path, fd, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
            size, mtime_ns, head_tail = header.meta["identity"]
            vst = os.stat(video)
            if (vst.st_size, vst.st_mtime_ns) != (size, mtime_ns) or video_identity(video, vst).head_tail != head_tail:
                return StaleSidecarError(path, "stale: written for another version of the video", REMEDY)
            return None
        except SidecarError as e:
            return e
        except OSError as e:
            return MissingSidecarError(path, f"cannot read it ({e.strerror or e})", REMEDY)
        finally:
            os.close(fd)

    def check(self, video: str | os.PathLike, index: GopIndex, *, gops: bool = False) -> Path:
        """Raise the :class:`SidecarError` that stops ``video``'s sidecar from being used, else return its
        path; ``gops``: also inflate and check every GOP (``gpudecode inspect``)."""
        n = [len(_chain_frames(index, g)) for g in range(index.num_gops)] if gops else []
        self.read(index, list(enumerate(n)), video=video)
        return self.path(video)

    def read(self, index: GopIndex, wanted: Iterable[tuple[int, int]], *, video: str | os.PathLike | None = None,
             alloc: Callable[[int], np.ndarray] | None = None) -> ClipMvs:
        """The MV records of the first ``n`` chain P-frames of each ``(gop, n)`` in ``wanted``, expanded into
        FFmpeg's 40-byte layout in a buffer from ``alloc(nbytes)`` (default: a new array)."""
        path = self.path(index.path if video is None else video)
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            raise MissingSidecarError(path, "no MV sidecar", "write it with `gpudecode mvs`") from None
        except OSError as e:
            raise MissingSidecarError(path, f"cannot open the MV sidecar ({e.strerror or e})", REMEDY) from None
        try:
            st = os.fstat(fd)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            bad = self._bad.get(key)
            if bad is not None:
                raise bad
            try:
                header = self._header(path, fd, key)
                self._check_video(path, header, index)
                return self._read_gops(path, fd, header, index, list(wanted), alloc)
            except SidecarError as e:
                self._remember(self._bad, key, e, _VIDEOS_KEPT)
                raise
        finally:
            os.close(fd)

    def _read_gops(self, path: Path, fd: int, header: _Header, index: GopIndex, wanted: list[tuple[int, int]],
                   alloc: Callable[[int], np.ndarray] | None) -> ClipMvs:
        table = header.table
        limit = _max_records(index.width, index.height)
        parts = []
        for gop, n in wanted:
            row = table[gop]
            p_frames = int(row["p_frames"])
            expected = len(_chain_frames(index, gop))
            if p_frames != expected:
                raise StaleSidecarError(path, f"stale: GOP {gop} holds {p_frames} P-frames, the video's index "
                                              f"{expected}", REMEDY)
            if not 0 <= n <= p_frames:
                raise ValueError(f"{path}: GOP {gop} has {p_frames} chain P-frames, asked for {n}")
            raw_nbytes, nbytes = int(row["raw_nbytes"]), int(row["nbytes"])
            records = (raw_nbytes - 4 * p_frames) // _RECORD_BYTES
            if raw_nbytes < 4 * p_frames or (raw_nbytes - 4 * p_frames) % _RECORD_BYTES or records > limit * p_frames:
                raise CorruptSidecarError(path, f"GOP {gop} claims {raw_nbytes} bytes of MV records, not a valid size "
                                                f"for {p_frames} P-frames", REMEDY)
            blob = os.pread(fd, nbytes, int(row["offset"]))
            if len(blob) != nbytes:
                raise TruncatedSidecarError(path, f"truncated while GOP {gop} was read", REMEDY)
            if zlib.crc32(blob) != int(row["crc"]):
                raise CorruptSidecarError(path, f"GOP {gop} fails its checksum", REMEDY)
            # Inflate the counts, then only the records of the first n P-frames (a prefix of the stream).
            try:
                z = zlib.decompressobj()
                head = z.decompress(blob, 4 * p_frames)
                if len(head) != 4 * p_frames:
                    raise zlib.error("the stream ends inside its record counts")
                counts = np.frombuffer(head, "<u4")
                if int(counts.sum(dtype=np.int64)) != records:
                    raise zlib.error("its record counts do not add up to its size")
                need = _RECORD_BYTES * int(counts[:n].sum(dtype=np.int64))
                body = z.decompress(z.unconsumed_tail, need) if need else b""
                if len(body) != need:
                    raise zlib.error("the stream ends inside its records")
            except zlib.error as e:
                raise CorruptSidecarError(path, f"GOP {gop} cannot be inflated ({e})", REMEDY) from None
            parts.append((gop, n, counts, body))
        return self._expand(parts, alloc)

    def _expand(self, parts, alloc) -> ClipMvs:
        """The GOPs' stored records -> FFmpeg's 40-byte records, per-frame offsets and cell shifts (in C:
        in NumPy this cost more than reading and inflating)."""
        total = sum(len(body) for *_, body in parts) // _RECORD_BYTES
        nbytes = total * MV_DTYPE.itemsize
        out = alloc(nbytes) if alloc is not None else np.empty(nbytes, np.uint8)
        frames = sum(n for _, n, _, _ in parts)
        offsets = np.zeros(frames + 1, np.int64)
        shifts = np.zeros(frames, np.int32)
        expand = self._kernels.raw.gd_host_expand_mvs
        out_ptr, shifts_ptr = out.ctypes.data, shifts.ctypes.data
        first_row, row, at = {}, 0, 0
        for gop, n, counts, body in parts:
            first_row[gop] = row
            if n:
                done = expand(body, counts.ctypes.data, n, out_ptr + at * MV_DTYPE.itemsize, shifts_ptr + 4 * row,
                              CELL_SHIFT)
                assert done == len(body) // _RECORD_BYTES
                np.cumsum(counts[:n], out=offsets[row + 1:row + 1 + n])
                offsets[row + 1:row + 1 + n] += at
                at += done
            row += n
        return ClipMvs(out[:nbytes], offsets, shifts, first_row)


def chain_count(index: GopIndex, gop: int, last: int) -> int:
    """How many chain P-frames of GOP ``gop`` lie at positions 1..``last``."""
    positions = index.p_positions
    return last if positions is None else sum(1 for q in positions[gop] if q <= last)


__all__ = ["CACHE_ENV", "ClipMvs", "MAGIC", "SUFFIX", "SidecarReader", "SidecarWritten", "VERSION", "VideoIdentity",
           "chain_count", "encode_sidecar", "sidecar_path", "video_identity", "write_sidecar"]
