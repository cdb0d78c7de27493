"""Opening videos with PyAV, with typed errors: the one place that talks to FFmpeg's demuxer."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

from gpudecode.errors import CorruptVideoError, NoVideoStreamError, VideoNotFoundError

#: Codecs whose FFmpeg decoders export motion vectors (``flags2=+export_mvs``) and that the
#: engine is tested on. HEVC, VP8/9 and AV1 export none.
MV_CODECS = frozenset({"mpeg4", "h264", "mpeg1video", "mpeg2video", "h263"})

# AVPictureType values as PyAV returns them from frame.pict_type.
PICT_I, PICT_P, PICT_B = 1, 2, 3

# AVColorSpace values that mean BT.709, and AVColorRange JPEG (full range).
_BT709 = 1
_RANGE_FULL = 2


def open_video(path: str | os.PathLike, *, export_mvs: bool = False, threads: int = 1,
               options: dict[str, str] | None = None) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open ``path`` and its first video stream, or raise a typed error that names the file."""
    path = Path(path)
    if not path.exists():
        raise VideoNotFoundError(path, "no such file")
    if not path.is_file():
        raise VideoNotFoundError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise CorruptVideoError(path, "the file is empty")
    try:
        # Metadata in the wild is not always UTF-8 (seen in real HMDB-51 clips): never fail on it.
        container = av.open(str(path), metadata_errors="replace")
    except av.error.PermissionError as e:
        raise VideoNotFoundError(path, "permission denied") from e
    except av.FFmpegError as e:
        raise CorruptVideoError(path, f"FFmpeg cannot read it as a media file ({e.strerror or e})") from e
    if not container.streams.video:
        kinds = ", ".join(s.type for s in container.streams) or "none"
        name = container.format.name
        container.close()
        raise NoVideoStreamError(path, f"the file has no video stream (FFmpeg reads it as {name!r}, streams: {kinds})")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if ctx is None:  # PyAV gives no codec context when FFmpeg has no decoder for the stream (found by fuzzing)
        name = container.format.name
        container.close()
        raise CorruptVideoError(path, f"FFmpeg has no decoder for its video stream (unknown or missing codec in the "
                                      f"{name!r} header)", "the file is damaged, or re-encode it with `gpudecode prepare`")
    opts = dict(options or {})
    if export_mvs:
        opts["flags2"] = "+export_mvs"
    if opts:
        ctx.options = opts
    ctx.thread_count = threads
    return container, stream


def colour_matrix(frame: av.VideoFrame) -> int:
    """The kernels' YUV matrix id for a frame: 0/1 BT.601/BT.709 limited, 2/3 full range.

    Untagged video is treated as BT.601, as FFmpeg's own RGB conversion does.
    """
    full = frame.format.name.startswith("yuvj") or frame.color_range == _RANGE_FULL
    return (2 if full else 0) + (1 if frame.colorspace == _BT709 else 0)


def yuv420_planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero-copy (rows, line_size) views of a 4:2:0 frame's Y, U and V planes.

    Other layouts (4:2:2, 4:4:4, high bit depth) are converted to yuv420p first.
    """
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        frame = frame.reformat(format="yuv420p")
    return tuple(np.frombuffer(p, np.uint8).reshape(p.height, p.line_size) for p in frame.planes[:3])  # type: ignore[return-value]
