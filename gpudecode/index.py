"""The GOP index of a video, read from the stream itself and cached on disk.

A GOP starts at every I-frame the decoder reports (picture type, never a fixed GOP size): the
published loader's ``gop = frame // 12`` breaks on any other encoding and on scene-cut I-frames.
Frames are counted as the decoder outputs them, not as packets (HMDB AVIs carry one extra
packet). Indexing decodes the whole file once, so it is cached per file (keyed by path, size and
modification time) in one SQLite file, and built in parallel for a dataset.
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import av
import numpy as np

from gpudecode._av import (B_SKIPPABLE_CODECS, MV_CODECS, PICT_B, PICT_I, PICT_P, PICT_S, colour_matrix,
                            display_matrix, display_orientation, open_video)
from gpudecode.errors import (
    BFramesError,
    CorruptVideoError,
    DecodeError,
    GpudecodeError,
    NoMotionVectorsError,
    UnsupportedVideoError,
    PREPARE_REMEDY,
)
from gpudecode.workers import crash_if_testing

#: Bumped whenever GopIndex's fields or their meaning change; older cache entries are ignored.
INDEX_VERSION = 3
#: GOPs longer than this are readable but accumulate MVs over long chains; `inspect` suggests prepare.
LONG_GOP = 60


@dataclass(frozen=True)
class GopIndex:
    """What the engine needs to know about a video before decoding any of it.

    ``gop_starts[g]`` is the decoded-frame index of GOP g's I-frame and ``gop_lengths[g]`` the
    number of frames in the GOP (the I-frame and the frames up to the next I-frame).
    ``gop_pts[g]`` is the I-frame's presentation timestamp in the stream's time base, the seek
    target; ``seekable`` is False when timestamps are missing or not increasing, in which case
    the engine decodes sequentially from the start.
    """

    path: str
    codec: str
    width: int
    height: int
    fps: float
    num_frames: int
    gop_starts: tuple[int, ...]
    gop_lengths: tuple[int, ...]
    gop_pts: tuple[int, ...]
    num_i: int
    num_p: int
    num_b: int
    variable_frame_rate: bool
    seekable: bool
    pix_fmt: str
    colour_matrix: int
    file_size: int = 0
    file_mtime_ns: int = 0
    leading_frames: int = 0  # frames before the first I-frame (not part of any GOP)
    rotation: int = 0  # display rotation, counter-clockwise degrees (phone footage); samples keep coded orientation
    mirrored: bool = False  # the display matrix also flips the picture
    stream_index: int = 0  # the container stream read (the first video stream that is not cover art)
    video_streams: int = 1  # video streams in the container, cover art included
    num_s: int = 0  # MPEG-4 S-VOPs (global motion compensation)
    #: display-order picture types ("IBBPBBP..."), kept only when the video has B- or S-frames: the
    #: P-frame positions of each GOP are then not simply 1..length-1
    frame_types: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def num_gops(self) -> int:
        return len(self.gop_starts)

    @property
    def has_b_frames(self) -> bool:
        return self.num_b > 0

    @property
    def has_motion_vectors(self) -> bool:
        return self.codec in MV_CODECS

    @property
    def skips_b_frames(self) -> bool:
        """B-frames present and skippable: the P-frame chain is exact without them (MPEG-4 Part 2)."""
        return self.has_b_frames and self.codec in B_SKIPPABLE_CODECS

    @functools.cached_property  # asked per clip by sampling and both engines; not a field, so not in the JSON
    def p_positions(self) -> tuple[tuple[int, ...], ...] | None:
        """Per GOP, the positions of its P-frames (what sampling may pick besides the I-frame).

        None when every frame after a GOP's I-frame is a P-frame (positions 1..length-1).
        """
        if not self.frame_types:
            return None
        return tuple(tuple(k for k in range(1, n) if self.frame_types[s + k] == "P")
                     for s, n in zip(self.gop_starts, self.gop_lengths))

    @property
    def max_gop_length(self) -> int:
        return max(self.gop_lengths) if self.gop_lengths else 0

    def problems(self) -> list[UnsupportedVideoError]:
        """Every reason the engine cannot read this video as is (empty when it can)."""
        out: list[UnsupportedVideoError] = []
        if not self.has_motion_vectors:
            out.append(NoMotionVectorsError(self.path, f"codec {self.codec} exports no motion vectors in FFmpeg",
                                            "re-encode it with `gpudecode prepare --codec mpeg4` (or h264)"))
        if self.has_b_frames and not self.skips_b_frames:
            out.append(BFramesError(self.path, f"has B-frames ({self.num_b} of {self.num_frames} frames), which {self.codec} "
                                               "may use as references: the P-frame chain is not exact", PREPARE_REMEDY))
        if self.num_s:
            out.append(UnsupportedVideoError(self.path, f"has S-VOPs ({self.num_s} frames of global motion compensation), "
                                                        "whose exported MVs (one average per macroblock) do not describe the warp exactly",
                                                        PREPARE_REMEDY))
        if not self.gop_starts:
            out.append(UnsupportedVideoError(self.path, "has no I-frame", PREPARE_REMEDY))
        return out

    def check_readable(self) -> None:
        """Raise the first problem, so a dataset can skip and report the video."""
        problems = self.problems()
        if problems:
            raise problems[0]

    def warnings(self) -> list[str]:
        """Readable, but worth knowing (shown by ``gpudecode inspect``)."""
        out = []
        if self.skips_b_frames:
            out.append(f"readable as is (B-frames skipped): {self.num_b} B-frames are never sampled; MVs accumulate "
                       "along the GOP's P-frames back to its I-frame")
        if self.max_gop_length > LONG_GOP:
            out.append(f"long GOPs (up to {self.max_gop_length} frames): MVs accumulate over long P-frame chains; "
                       "`gpudecode prepare` re-encodes with GOP 12")
        if self.variable_frame_rate:
            out.append("variable frame rate: segments are spread over frames, not seconds")
        if self.leading_frames:
            out.append(f"{self.leading_frames} frames before the first I-frame are never sampled")
        if not self.seekable:
            out.append("timestamps missing or not increasing: GOPs are reached by decoding from the start (slower)")
        if self.rotation or self.mirrored:
            how = f"rotated {self.rotation} degrees" + (" and mirrored" if self.mirrored else "")
            out.append(f"display matrix: players show it {how}; samples come out in coded orientation "
                       "(`gpudecode prepare` bakes the rotation in)")
        if self.video_streams > 1:
            out.append(f"{self.video_streams} video streams: reading stream #{self.stream_index}, the others are ignored")
        return out

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "GopIndex":
        d = json.loads(text)
        for k in ("gop_starts", "gop_lengths", "gop_pts"):
            d[k] = tuple(d[k])
        return cls(**d)


_TYPE_LETTERS = {PICT_I: "I", PICT_P: "P", PICT_B: "B", PICT_S: "S"}


def _is_vfr(pts: np.ndarray) -> bool:
    """Frame durations that differ by more than timestamp rounding (10% of the median, at least one tick)."""
    if len(pts) < 3:
        return False
    d = np.diff(pts)
    med = float(np.median(d))
    return bool(np.any(np.abs(d - med) > max(1.0, 0.1 * med)))


def build_index(path: str | os.PathLike, *, export_mvs: bool = False,
                on_frame: Callable[[av.VideoFrame], None] | None = None) -> GopIndex:
    """Decode ``path`` once (pixels discarded) and read its GOP table. Raises typed errors.

    ``on_frame`` sees every decoded frame (with its MVs when ``export_mvs``): the MV sidecar writer
    (``gpudecode.sidecar``) takes the index and the MVs from the same decoding pass.
    """
    crash_if_testing(path)  # test-only hook (GPUDECODE_TEST_CRASH_ON); a no-op otherwise
    path = Path(path)
    st = path.stat() if path.exists() else None
    # The loop filter does not change picture types; skipping it makes indexing ~13% cheaper.
    container, stream = open_video(path, export_mvs=export_mvs, options={"skip_loop_filter": "all"})
    types: list[int] = []
    pts: list[int | None] = []
    # Everything read from the stream is copied out while the container is open: after close() the
    # stream and codec context point into freed memory (av_guess_frame_rate crashed at random here).
    ctx = stream.codec_context
    codec, width, height = ctx.name, ctx.width, ctx.height
    matrix, pix_fmt = 0, ctx.pix_fmt or "?"
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    stream_index, video_streams = stream.index, len(container.streams.video)
    rotation, mirrored = 0, False
    del ctx
    try:
        with container:
            frames = container.decode(stream)
            try:
                for frame in frames:
                    if not types:
                        matrix, pix_fmt = colour_matrix(frame), frame.format.name
                        rotation, mirrored = display_orientation(display_matrix(frame))
                    types.append(int(frame.pict_type))
                    pts.append(frame.pts)
                    if on_frame is not None:
                        on_frame(frame)
            finally:
                frames.close()  # inside `with`: PyAV's generators free their packet only when closed
    except av.FFmpegError as e:
        raise DecodeError(path, f"decoding failed after {len(types)} frames ({e.strerror or e})",
                          "the file is damaged; re-download it or drop it") from e
    if not types:
        raise CorruptVideoError(path, "the video stream decodes to no frames (truncated or damaged)")
    t = np.asarray(types)
    starts = np.flatnonzero(t == PICT_I)
    lengths = np.diff(np.append(starts, len(t)))
    seekable = all(p is not None for p in pts) and bool(np.all(np.diff(np.asarray(pts, dtype=np.int64)) > 0)) \
        if all(p is not None for p in pts) else False
    return GopIndex(
        path=str(path), codec=codec, width=width, height=height, fps=fps, num_frames=len(t),
        gop_starts=tuple(int(s) for s in starts), gop_lengths=tuple(int(n) for n in lengths),
        gop_pts=tuple(int(pts[s]) if pts[s] is not None else -1 for s in starts),
        num_i=int((t == PICT_I).sum()), num_p=int((t == PICT_P).sum()), num_b=int((t == PICT_B).sum()),
        num_s=int((t == PICT_S).sum()),
        frame_types="".join(_TYPE_LETTERS.get(int(v), "?") for v in t) if np.any((t == PICT_B) | (t == PICT_S)) else "",
        variable_frame_rate=seekable and _is_vfr(np.asarray(pts, dtype=np.int64)), seekable=seekable,
        pix_fmt=pix_fmt, colour_matrix=matrix,
        file_size=st.st_size if st else 0, file_mtime_ns=st.st_mtime_ns if st else 0,
        leading_frames=int(starts[0]) if len(starts) else len(t),
        rotation=rotation, mirrored=mirrored, stream_index=stream_index, video_streams=video_streams,
    )


def default_cache_path() -> Path:
    root = os.environ.get("GPUDECODE_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gpudecode"
    return Path(root) / "index.sqlite"


class IndexCache:
    """GOP indexes (and indexing failures) keyed by absolute path, valid while size and mtime match.

    Failures are cached too, so a bad file in a 200k-video dataset is tried once, not every epoch.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS gop_index (path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER,"
                       " version INTEGER, index_json TEXT, error_type TEXT, error_args TEXT)")

    def _db(self) -> sqlite3.Connection:
        # One connection per thread and process (sqlite connections must not cross a fork).
        key = (os.getpid(), threading.get_ident())
        if getattr(self._local, "key", None) != key:
            self._local.db = sqlite3.connect(self.path, timeout=60)
            self._local.key = key
        return self._local.db

    def get(self, path: str | os.PathLike) -> GopIndex | GpudecodeError | None:
        p = Path(path).resolve()
        try:
            st = p.stat()
        except OSError:
            return None
        row = self._db().execute("SELECT size, mtime_ns, version, index_json, error_type, error_args FROM gop_index "
                                 "WHERE path = ?", (str(p),)).fetchone()
        if row is None or row[0] != st.st_size or row[1] != st.st_mtime_ns or row[2] != INDEX_VERSION:
            return None
        if row[3] is not None:
            return GopIndex.from_json(row[3])
        return _error_from_row(row[4], row[5])

    def put(self, path: str | os.PathLike, result: GopIndex | GpudecodeError) -> None:
        p = Path(path).resolve()
        try:
            st = p.stat()
        except OSError:
            return  # a missing file is not worth remembering
        if isinstance(result, GopIndex):
            values = (result.to_json(), None, None)
        else:
            values = (None, type(result).__name__, json.dumps([result.path, result.reason, result.remedy]))
        with self._db() as db:
            db.execute("INSERT OR REPLACE INTO gop_index VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (str(p), st.st_size, st.st_mtime_ns, INDEX_VERSION, *values))


def _error_from_row(type_name: str, args_json: str) -> GpudecodeError:
    from gpudecode import errors

    cls = getattr(errors, type_name, None)
    if not (isinstance(cls, type) and issubclass(cls, GpudecodeError)):
        cls = GpudecodeError
    return cls(*json.loads(args_json))


def resolve_cache(cache: "IndexCache | str | os.PathLike | bool | None") -> IndexCache | None:
    """True: the default cache; False/None: no cache; a path: a cache there; an IndexCache: itself."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return IndexCache()
    if isinstance(cache, IndexCache):
        return cache
    return IndexCache(cache)


def index_video(path: str | os.PathLike, *, cache: IndexCache | str | os.PathLike | bool | None = True) -> GopIndex:
    """The GOP index of one video, from the cache when it is fresh. Raises typed errors (also cached)."""
    store = resolve_cache(cache)
    hit = store.get(path) if store is not None else None
    if isinstance(hit, GopIndex):
        return hit
    if isinstance(hit, GpudecodeError):
        raise hit
    try:
        result = build_index(path)
    except GpudecodeError as e:
        if store is not None:
            store.put(path, e)
        raise
    if store is not None:
        store.put(path, result)
    return result


def _index_worker(path: str) -> GopIndex | GpudecodeError:
    try:
        return build_index(path)
    except GpudecodeError as e:
        return e
    except Exception as e:  # an FFmpeg/PyAV failure we did not anticipate still names the file
        return CorruptVideoError(path, f"indexing failed: {type(e).__name__}: {e}")


def index_videos(paths: Iterable[str | os.PathLike], *, workers: int | None = None,
                 cache: IndexCache | str | os.PathLike | bool | None = True,
                 progress: bool = True, timeout: float | None = None) -> dict[str, GopIndex | GpudecodeError]:
    """Index many videos in worker processes (one per core) with a progress bar.

    Returns, for every path as given, its GopIndex or the typed error that stopped it; nothing is
    raised for a bad video, so a dataset can report them all at once. A file that kills its worker
    (a decoder crash: "crashed the decoder (SIGSEGV)") or keeps it busy past ``timeout`` seconds
    costs that file only: it gets a :class:`CorruptVideoError`, cached like any other failure.
    """
    from gpudecode.progress import tqdm  # plain lines when stderr is a log file

    from gpudecode.workers import WorkerDied, run_isolated

    paths = [str(p) for p in paths]
    store = resolve_cache(cache)
    results: dict[str, GopIndex | GpudecodeError] = {}
    todo: list[str] = []
    for p in paths:
        hit = store.get(p) if store is not None else None
        if hit is None:
            todo.append(p)
        else:
            results[p] = hit
    todo = list(dict.fromkeys(todo))  # a path listed twice is indexed once
    workers = workers or os.cpu_count() or 1
    with tqdm(total=len(todo), desc="indexing GOPs", unit="video", disable=not progress or not todo) as bar:
        for p, result, error in run_isolated(_index_worker, todo, workers=workers, timeout=timeout):
            if isinstance(error, WorkerDied):
                result = CorruptVideoError(p, error.reason, "the file is damaged or hostile; re-download it or drop it")
            elif error is not None:  # _index_worker returns every error; this is a bug, not a bad file
                raise error
            results[p] = result
            if store is not None:
                store.put(p, result)  # as each finishes: an interrupted run keeps what it did
            bar.update()
    return {p: results[p] for p in paths}


__all__ = ["GopIndex", "IndexCache", "build_index", "index_video", "index_videos", "resolve_cache", "INDEX_VERSION", "LONG_GOP"]
