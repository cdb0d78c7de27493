"""The one place that knows how to write the engine's canonical stream with PyAV.

Canonical means: an I-frame exactly every ``gop`` frames and a P-frame everywhere else, no B-frames,
no scene-cut I-frames, one reference frame (each P-frame predicts from the frame before it), yuv420p.
That is the structure the published TEAM-Net/CoViAR numbers assume (MPEG-4 Part 2, GOP 12, no B-frames),
made explicit instead of left to encoder defaults: FFmpeg's mpeg4 encoder and libx264 both insert
scene-cut I-frames unless told not to, which yields GOPs of length 1 or 6 on real footage.

How each codec is told (checked on PyAV 18.1 with its bundled FFmpeg 8.1):

- ``mpeg4``: ``gop_size = gop``, ``max_b_frames = 0`` and the private option ``sc_threshold=1000000000``
  (the mpegvideo encoders turn any P-frame whose scene-change score exceeds ``sc_threshold``, default 0,
  into an I-frame). Fixed quantiser: ``flags +qscale`` with ``qmin = qmax = quality``. PyAV cannot set
  ``AVFrame.quality``, and with ``+qscale`` the encoder takes lambda from the frame, so ``global_quality``
  alone does nothing and the quantiser ends up clipped to ``qmin``; ``qmin = qmax`` pins it.
  The ffmpeg CLI does set the frame's quality from ``-q:v``, but mpegvideo_enc.c clips the
  quantiser to ``[qmin, qmax]`` with a default ``qmin = 2``, so the published recipe's ``-q:v 1``
  encodes at quantiser 2: hence the default ``quality = 2`` (read from FFmpeg's source; there is
  no ffmpeg binary here to compare files with).
- ``h264`` (libx264): ``x264-params`` ``keyint=gop:min-keyint=gop:scenecut=0:bframes=0:ref=1:
  open-gop=0:weightp=0`` and ``crf=quality``. ``weightp=0`` because x264's weighted prediction can add a
  duplicated, re-weighted reference frame, i.e. a second reference; ``log-level=none`` silences x264.

Encoders run single-threaded by default: the mpeg4 encoder's output depends on its thread count
(slices), so ``threads=1`` makes files byte-identical on any machine, and ``gpudecode prepare``
parallelises over files instead.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Literal

import av
import numpy as np

Codec = Literal["mpeg4", "h264"]
Container = Literal["mp4", "avi"]

CODECS: tuple[str, ...] = ("mpeg4", "h264")
CONTAINERS: tuple[str, ...] = ("mp4", "avi")
DEFAULT_QUALITY: dict[str, int] = {"mpeg4": 2, "h264": 18}
# Any scene-change score stays below this, so the mpeg4 encoder never inserts an I-frame on its own.
_NO_SCENECUT = "1000000000"
# mpeg4 stores the frame rate with a 16-bit denominator; 1001 keeps NTSC rates (30000/1001) exact.
_MAX_FPS_DENOMINATOR = 1001

PICT_TYPE_LETTERS = {0: "?", 1: "I", 2: "P", 3: "B"}


def _as_rate(fps: float | Fraction | int) -> Fraction:
    rate = Fraction(fps).limit_denominator(_MAX_FPS_DENOMINATOR)
    if rate <= 0:
        raise ValueError(f"fps must be positive, got {fps!r}")
    return rate


def _check_args(codec: str, container: str, width: int, height: int, gop: int, quality: int) -> None:
    if codec not in CODECS:
        raise ValueError(f"codec must be one of {CODECS}, got {codec!r}")
    if container not in CONTAINERS:
        raise ValueError(f"container must be one of {CONTAINERS}, got {container!r}")
    if container == "avi" and codec != "mpeg4":
        raise ValueError(f"the avi container is only supported for codec 'mpeg4', got {codec!r}")
    if width < 2 or height < 2 or width % 2 or height % 2:
        # yuv420p stores chroma at half resolution: odd sizes lose a column/row or are rejected
        # (libx264 refuses them). `gpudecode prepare` rounds odd sources down to even.
        raise ValueError(f"width and height must be even and >= 2 for yuv420p, got {width}x{height}")
    if gop < 1:
        raise ValueError(f"gop must be >= 1, got {gop}")
    if codec == "mpeg4" and not 1 <= quality <= 31:
        raise ValueError(f"mpeg4 quality is a quantiser in 1..31 (lower is better), got {quality}")
    if codec == "h264" and not 0 <= quality <= 51:
        raise ValueError(f"h264 quality is a CRF in 0..51 (lower is better), got {quality}")


def _configure(stream: av.video.stream.VideoStream, codec: str, gop: int, quality: int, threads: int) -> None:
    ctx = stream.codec_context
    ctx.gop_size = gop
    ctx.max_b_frames = 0
    ctx.thread_count = threads
    if codec == "mpeg4":
        ctx.qscale = True  # AV_CODEC_FLAG_QSCALE: fixed quantiser, no rate control
        ctx.global_quality = quality
        ctx.qmin = quality
        ctx.qmax = quality
        ctx.options = {"sc_threshold": _NO_SCENECUT}
    else:
        params = (
            f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:ref=1:open-gop=0:weightp=0"
            ":log-level=none"
        )
        ctx.options = {"crf": str(quality), "x264-params": params}


class CanonicalWriter:
    """Writes RGB frames as a canonical stream: I-frame every ``gop`` frames, P-frames between.

    Feed ``(H, W, 3)`` uint8 RGB arrays or ``av.VideoFrame`` objects (any pixel format; resized to the
    writer's size if they differ; a frame already in yuv420p at that size gets its ``pts`` and
    ``pict_type`` overwritten) with :meth:`write`, then :meth:`close` (or use it as a context
    manager). Frames get consecutive timestamps at ``fps``: the output is constant-rate by design,
    since the engine indexes frames, not times.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        codec: Codec = "mpeg4",
        width: int,
        height: int,
        fps: float | Fraction = 25,
        gop: int = 12,
        quality: int | None = None,
        container: Container | None = None,
        threads: int = 1,
    ):
        self.path = Path(path)
        if container is None:
            container = self.path.suffix.lower().lstrip(".")  # type: ignore[assignment]
            if container not in CONTAINERS:
                raise ValueError(
                    f"cannot infer the container from {self.path.name!r}: use a .mp4 or .avi name "
                    f"or pass container= one of {CONTAINERS}"
                )
        self.codec = codec
        self.width = int(width)
        self.height = int(height)
        self.gop = int(gop)
        self.quality = DEFAULT_QUALITY.get(codec, 0) if quality is None else int(quality)
        self.rate = _as_rate(fps)
        _check_args(codec, container, self.width, self.height, self.gop, self.quality)
        self.frames_written = 0
        self._container = av.open(os.fspath(self.path), "w", format=container)
        try:
            encoder = "libx264" if codec == "h264" else "mpeg4"
            self._stream = self._container.add_stream(encoder, rate=self.rate)
            self._stream.width = self.width
            self._stream.height = self.height
            self._stream.pix_fmt = "yuv420p"
            self._stream.codec_context.time_base = 1 / self.rate
            _configure(self._stream, codec, self.gop, self.quality, threads)
        except BaseException:
            self._container.close()
            raise

    def write(self, frame: np.ndarray | av.VideoFrame) -> None:
        """Encode one frame; the writer decides I or P from the frame index alone."""
        if self._container is None:  # its stream was freed with the container
            raise ValueError(f"{self.path}: the writer is closed")
        if isinstance(frame, np.ndarray):
            if frame.dtype != np.uint8 or frame.shape != (self.height, self.width, 3):
                raise ValueError(
                    f"expected an RGB uint8 array of shape {(self.height, self.width, 3)}, "
                    f"got {frame.dtype} {frame.shape}"
                )
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        elif not isinstance(frame, av.VideoFrame):
            raise TypeError(f"expected a numpy array or av.VideoFrame, got {type(frame).__name__}")
        if frame.width != self.width or frame.height != self.height or frame.format.name != "yuv420p":
            frame = frame.reformat(width=self.width, height=self.height, format="yuv420p")
        frame.pts = self.frames_written
        frame.time_base = self._stream.codec_context.time_base
        # A decoded frame carries its source picture type, and FFmpeg encoders honour a forced "I";
        # clear it so the GOP structure comes from the writer alone.
        frame.pict_type = av.video.frame.PictureType.NONE
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (writes the mp4 index)."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def abort(self) -> None:
        """Close the file without flushing (after an error); the caller deletes it. Idempotent."""
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> CanonicalWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


#: Open a :class:`CanonicalWriter` (the function-style name used across the project).
open_canonical_writer = CanonicalWriter


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    *,
    codec: Codec = "mpeg4",
    fps: float | Fraction = 25,
    gop: int = 12,
    quality: int | None = None,
    container: Container | None = None,
) -> Path:
    """Encode a ``(T, H, W, 3)`` uint8 RGB clip canonically in one call (tests, synthetic data)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {frames.shape}")
    with open_canonical_writer(
        path,
        codec=codec,
        width=frames.shape[2],
        height=frames.shape[1],
        fps=fps,
        gop=gop,
        quality=quality,
        container=container,
    ) as writer:
        for frame in frames:
            writer.write(frame)
    return Path(path)


def read_pict_types(path: str | os.PathLike) -> str:
    """Decode a file and return its picture types as letters, e.g. ``"IPPPPPPPPPPPIPP"``."""
    with av.open(os.fspath(path)) as container:
        return "".join(PICT_TYPE_LETTERS.get(int(f.pict_type), "?") for f in container.decode(video=0))


def canonical_pict_types(num_frames: int, gop: int) -> str:
    """The picture types a canonical stream of ``num_frames`` frames must have."""
    return "".join("I" if i % gop == 0 else "P" for i in range(num_frames))


def is_canonical(path: str | os.PathLike, gop: int) -> bool:
    """True if every frame at a multiple of ``gop`` is an I-frame and every other one a P-frame."""
    types = read_pict_types(path)
    return len(types) > 0 and types == canonical_pict_types(len(types), gop)
