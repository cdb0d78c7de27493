"""Opening videos with PyAV, with typed errors: the one place that talks to FFmpeg's demuxer."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np

from av.sidedata.sidedata import SideDataContainer

from gpudecode.errors import CorruptVideoError, NoVideoStreamError, VideoNotFoundError

#: Codecs whose FFmpeg decoders export motion vectors (``flags2=+export_mvs``) and that the
#: engine is tested on. HEVC, VP8/9 and AV1 export none.
MV_CODECS = frozenset({"mpeg4", "h264", "mpeg1video", "mpeg2video", "h263"})

# AVPictureType values as PyAV returns them from frame.pict_type.
PICT_I, PICT_P, PICT_B, PICT_S = 1, 2, 3, 4  # S: MPEG-4 S-VOP (global motion compensation)

#: Codecs in which a P-frame always predicts from the previous I- or P-frame and B-frames are never
#: references, so the P-frame chain of a GOP is exact with B-frames skipped (MPEG-4 Part 2: DivX,
#: XviD). H.264/HEVC B-frames can be references and their MV records do not say which frame a
#: block uses: not exact, those need `gpudecode prepare`.
B_SKIPPABLE_CODECS = frozenset({"mpeg4"})

#: FFmpeg's AVMotionVector as PyAV's ``MotionVectors.to_ndarray`` lays it out (40 bytes, aligned); built
#: once here because ``to_ndarray`` rebuilds it on every call (~8 us per P-frame).
MV_DTYPE = np.dtype([("source", "<i4"), ("w", "u1"), ("h", "u1"), ("src_x", "<i2"), ("src_y", "<i2"),
                     ("dst_x", "<i2"), ("dst_y", "<i2"), ("flags", "<u8"), ("motion_x", "<i4"),
                     ("motion_y", "<i4"), ("motion_scale", "<u2")], align=True)
assert MV_DTYPE.itemsize == 40
_NO_MVS = np.zeros(0, MV_DTYPE)

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
    stream = pick_video_stream(container.streams.video)
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


def pick_video_stream(streams) -> av.video.stream.VideoStream:
    """The video stream the engine reads: the first that is not a cover picture or a thumbnail track.

    MP4/MOV files from phones and editors may carry a still image (disposition ``attached_pic``)
    as video stream 0; reading it would give one frame of cover art instead of the video.
    """
    still = av.stream.Disposition.attached_pic | av.stream.Disposition.timed_thumbnails | av.stream.Disposition.still_image
    for stream in streams:
        if not stream.disposition & still:
            return stream
    return streams[0]


def motion_vectors(frame: av.VideoFrame) -> np.ndarray:
    """The frame's FFmpeg MV records (a structured array of AVMotionVector), empty when it has none.

    ``frame.side_data`` caches a container on the frame that points back at the frame: a reference
    cycle that keeps every decoded frame (and its pixel buffers) alive until a full garbage
    collection, ~100 KB per clip that piles up in every loader worker. A container built here is
    referenced by nothing but this call, so the frame is freed as soon as the caller drops it. The
    returned array is a view of the side data (it keeps the frame alive only while it lives).
    """
    sd = SideDataContainer(frame).get("MOTION_VECTORS")
    return np.frombuffer(sd, MV_DTYPE) if sd is not None else _NO_MVS


def motion_vector_buffer(frame: av.VideoFrame) -> tuple[int, int, object]:
    """``(address, count, owner)`` of the frame's MV records, for passing them to C without NumPy.

    The engine's hot loop: a NumPy view and its ``.ctypes.data`` cost ~4 us per P-frame, the side
    data's own address 0.1 us. The records stay valid while ``owner`` (or the frame) lives; (0, 0, None)
    when the frame has none.
    """
    sd = SideDataContainer(frame).get("MOTION_VECTORS")
    if sd is None:
        return 0, 0, None
    return sd.buffer_ptr, sd.buffer_size // MV_DTYPE.itemsize, sd


def display_matrix(frame: av.VideoFrame) -> np.ndarray | None:
    """The frame's display matrix (3x3, FFmpeg's 16.16/2.30 fixed point as float), or None.

    Read without ``frame.side_data`` for the reason given in :func:`motion_vectors`.
    """
    sd = SideDataContainer(frame).get("DISPLAYMATRIX")
    if sd is None or sd.buffer_size < 36:
        return None
    m = np.frombuffer(bytes(sd), "<i4", count=9).astype(np.float64).reshape(3, 3)
    m[:, :2] /= 1 << 16
    m[:, 2] /= 1 << 30
    return m


def display_orientation(matrix: np.ndarray | None) -> tuple[int, bool]:
    """``(rotation, mirrored)`` of a display matrix: counter-clockwise degrees and a flip.

    ``rotation`` is what ``VideoFrame.rotation`` reports (FFmpeg's ``av_display_rotation_get``),
    rounded to the nearest degree; ``mirrored`` is True when the matrix also flips the picture.
    """
    if matrix is None:
        return 0, False
    a, b, c, d = matrix[0, 0], matrix[0, 1], matrix[1, 0], matrix[1, 1]
    scale0, scale1 = float(np.hypot(a, c)), float(np.hypot(b, d))
    if scale0 == 0 or scale1 == 0:
        return 0, False
    rotation = int(round(-np.degrees(np.arctan2(b / scale1, a / scale0)))) % 360
    return (rotation - 360 if rotation > 180 else rotation), bool(a * d - b * c < 0)


def colour_matrix(frame: av.VideoFrame) -> int:
    """The kernels' YUV matrix id for a frame: 0/1 BT.601/BT.709 limited, 2/3 full range.

    Untagged video is treated as BT.601, as FFmpeg's own RGB conversion does.
    """
    full = frame.format.name.startswith("yuvj") or frame.color_range == _RANGE_FULL
    return (2 if full else 0) + (1 if frame.colorspace == _BT709 else 0)


def _as_yuv420(frame: av.VideoFrame) -> av.VideoFrame:
    """The frame itself if it is 8-bit 4:2:0, else its yuv420p conversion (4:2:2, 4:4:4, high bit depth)."""
    return frame if frame.format.name in ("yuv420p", "yuvj420p") else frame.reformat(format="yuv420p")


def yuv420_planes(frame: av.VideoFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero-copy (rows, line_size) views of a 4:2:0 frame's Y, U and V planes.

    Other layouts (4:2:2, 4:4:4, high bit depth) are converted to yuv420p first.
    """
    frame = _as_yuv420(frame)
    return tuple(np.frombuffer(p, np.uint8).reshape(p.height, p.line_size) for p in frame.planes[:3])  # type: ignore[return-value]


def yuv420_addresses(frame: av.VideoFrame) -> tuple[tuple[int, int, int, int, int], av.VideoFrame]:
    """``((y, y_stride, u, v, uv_stride), owner)``: the addresses of a 4:2:0 frame's planes, for C.

    What :func:`yuv420_planes` gives without building three NumPy views (~3 us each in the engine's
    hot loop). The planes stay valid while ``owner`` lives (the frame, or its yuv420p conversion).
    """
    frame = _as_yuv420(frame)
    y, u, v = frame.planes[:3]
    if u.line_size != v.line_size:  # FFmpeg pads both chroma planes alike; the kernels take one stride
        raise ValueError(f"chroma planes with different strides ({u.line_size}, {v.line_size})")
    return (y.buffer_ptr, y.line_size, u.buffer_ptr, v.buffer_ptr, u.line_size), frame
