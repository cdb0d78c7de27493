"""Test inputs, made on the fly: canonical clips and the bad or unusual files users bring.

Not a test module: every function writes one small file (well under a second to make) and returns
its path. Canonical clips go through :mod:`gpudecode.encode`; everything non-canonical (B-frames,
scene cuts, forced I-frames, VFR, odd sizes, HEVC/VP9) is written with PyAV's encoders directly.
Content is :func:`gpudecode.synth.render_translation`, so the true motion is known: the picture moves
by ``(dx, dy)`` pixels per frame (default ``(2, 1)``).

Regenerate everything into a folder with ``python tests/media.py OUT_DIR``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

if __package__ in (None, ""):  # run as a script: make `gpudecode` importable from the repo
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpudecode.encode import write_video
from gpudecode.synth import render_translation

Size = tuple[int, int]  # (width, height)


def _frames(size: Size, num_frames: int, dx: int = 2, dy: int = 1, seed: int = 0) -> np.ndarray:
    width, height = size
    if width % 2 or height % 2:  # render_translation needs even sizes; crop to the odd one
        frames = render_translation((width + width % 2, height + height % 2), num_frames, dx, dy, seed)
        return np.ascontiguousarray(frames[:, :height, :width])
    return render_translation(size, num_frames, dx, dy, seed)


def _encode_raw(
    path: Path,
    frames: np.ndarray,
    encoder: str,
    *,
    container: str | None = None,
    options: dict[str, str] | None = None,
    gop: int = 12,
    max_b_frames: int = 0,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    forced_iframes: Sequence[int] = (),
    fps: int = 25,
) -> Path:
    """Encode with PyAV as told, no canonical guarantees (that is the point)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    forced = set(forced_iframes)
    with av.open(os.fspath(path), "w", format=container) as out:
        stream = out.add_stream(encoder, rate=fps)
        stream.width = frames.shape[2]
        stream.height = frames.shape[1]
        stream.pix_fmt = "yuv420p"
        ctx = stream.codec_context
        ctx.gop_size = gop
        ctx.max_b_frames = max_b_frames
        ctx.thread_count = 1
        if time_base is not None:
            ctx.time_base = time_base
            stream.time_base = time_base
        ctx.options = dict(options or {})
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i if pts is None else int(pts[i])
            if time_base is not None:
                frame.time_base = time_base
            if i in forced:
                frame.pict_type = av.video.frame.PictureType.I
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


# --------------------------------------------------------------------------------------------------
# Canonical clips


def synthetic_video(
    path: str | os.PathLike,
    codec: str = "mpeg4",
    size: Size = (64, 48),
    num_frames: int = 30,
    gop: int = 12,
    *,
    fps: int = 25,
    dx: int = 2,
    dy: int = 1,
    seed: int = 0,
) -> Path:
    """A canonical clip (I every ``gop``, P elsewhere) of content moving by ``(dx, dy)`` per frame."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, _frames(size, num_frames, dx, dy, seed), codec=codec, fps=fps, gop=gop)


def few_gops_video(directory: Path, num_gops: int = 3, gop: int = 12, codec: str = "mpeg4") -> Path:
    """Fewer GOPs (3) than the usual 8 TSN segments."""
    return synthetic_video(Path(directory) / f"few_gops_{codec}.mp4", codec, num_frames=num_gops * gop, gop=gop)


def short_last_gop_video(directory: Path, gop: int = 12, last: int = 5, codec: str = "mpeg4") -> Path:
    """Two full GOPs and a last GOP of only ``last`` frames."""
    return synthetic_video(Path(directory) / f"short_last_gop_{codec}.mp4", codec, num_frames=2 * gop + last, gop=gop)


def one_frame_video(directory: Path, codec: str = "mpeg4") -> Path:
    """A single I-frame and nothing else."""
    return synthetic_video(Path(directory) / f"one_frame_{codec}.mp4", codec, num_frames=1)


def unaligned_size_video(directory: Path, size: Size = (322, 242), codec: str = "h264") -> Path:
    """Even but not a multiple of 16 (partial macroblocks at the right and bottom edges)."""
    return synthetic_video(Path(directory) / f"size_{size[0]}x{size[1]}_{codec}.mp4", codec, size=size, num_frames=14)


def hd_video(directory: Path, num_frames: int = 4, codec: str = "mpeg4") -> Path:
    """A short 1920x1080 clip (GOP 2, so it still has two GOPs)."""
    return synthetic_video(Path(directory) / f"hd_{codec}.mp4", codec, size=(1920, 1080), num_frames=num_frames, gop=2)


# --------------------------------------------------------------------------------------------------
# Readable but not canonical


def odd_size_video(directory: Path, size: Size = (161, 121)) -> Path:
    """Odd width and height (mpeg4 accepts them; libx264 does not)."""
    return _encode_raw(
        Path(directory) / f"odd_{size[0]}x{size[1]}.mp4", _frames(size, 14), "mpeg4",
        options={"sc_threshold": "1000000000"},
    )


def bframes_video(directory: Path, codec: str = "h264", num_frames: int = 24) -> Path:
    """B-frames (libx264 ``bframes=3``, or mpeg4 ``max_b_frames=2``)."""
    frames = _frames((64, 48), num_frames)
    if codec == "h264":
        return _encode_raw(
            Path(directory) / "bframes_h264.mp4", frames, "libx264", max_b_frames=3,
            options={"x264-params": "bframes=3:b-adapt=0:scenecut=0:log-level=none"},
        )
    return _encode_raw(
        Path(directory) / "bframes_mpeg4.avi", frames, "mpeg4", container="avi", max_b_frames=2,
        options={"sc_threshold": "1000000000"},
    )


def vfr_video(directory: Path, codec: str = "h264", num_frames: int = 24, seed: int = 0) -> Path:
    """Variable frame rate: frames 10-40 ms apart (millisecond time base), no B-frames."""
    rng = np.random.default_rng(seed)
    pts = np.cumsum(rng.integers(10, 41, size=num_frames)) - 10
    encoder, options = (
        ("libx264", {"x264-params": "bframes=0:scenecut=0:log-level=none"})
        if codec == "h264"
        else ("mpeg4", {"sc_threshold": "1000000000"})
    )
    return _encode_raw(
        Path(directory) / f"vfr_{codec}.mp4", _frames((64, 48), num_frames), encoder,
        options=options, pts=pts.tolist(), time_base=Fraction(1, 1000),
    )


def forced_iframes_video(
    path: str | os.PathLike, iframes: Sequence[int] = (0, 12, 13, 25), num_frames: int = 30
) -> Path:
    """mpeg4 with I-frames exactly at ``iframes`` (GOPs of irregular length, here 12, 1, 12, 5)."""
    return _encode_raw(
        Path(path), _frames((64, 48), num_frames), "mpeg4", gop=10_000,
        options={"sc_threshold": "1000000000"}, forced_iframes=iframes,
    )


def single_frame_gop_video(directory: Path) -> Path:
    """A GOP made of one I-frame (at 12) followed by an I-frame (at 13), like a scene cut."""
    return forced_iframes_video(Path(directory) / "single_frame_gop.mp4")


def scenecut_video(directory: Path, num_frames: int = 36, cut_every: int = 5, seed: int = 0) -> Path:
    """mpeg4 with FFmpeg's default scene-cut detection on content with a hard cut every 5 frames:
    I-frames land on the cuts too (the published loader's GOP = 12 assumption breaks here)."""
    rng = np.random.default_rng(seed)
    clips = [_frames((64, 48), cut_every, seed=int(rng.integers(1 << 30))) for _ in range(0, num_frames, cut_every)]
    frames = np.concatenate(clips)[:num_frames]
    return _encode_raw(Path(directory) / "scenecut_mpeg4.mp4", frames, "mpeg4", gop=12)


def hevc_video(directory: Path, num_frames: int = 12) -> Path:
    """HEVC (libx265): FFmpeg exports no motion vectors for it."""
    return _encode_raw(
        Path(directory) / "hevc.mp4", _frames((64, 48), num_frames), "libx265",
        options={"x265-params": "log-level=none"},
    )


def vp9_video(directory: Path, num_frames: int = 12) -> Path:
    """VP9 (libvpx) in WebM: FFmpeg exports no motion vectors for it."""
    return _encode_raw(
        Path(directory) / "vp9.webm", _frames((64, 48), num_frames), "libvpx-vp9", container="webm",
        options={"deadline": "realtime", "cpu-used": "8"},
    )


# --------------------------------------------------------------------------------------------------
# Not readable as video


def missing_path(directory: Path) -> Path:
    """A path that does not exist."""
    return Path(directory) / "does_not_exist.mp4"


def empty_file(directory: Path, name: str = "empty.mp4") -> Path:
    path = Path(directory) / name
    path.write_bytes(b"")
    return path


def text_file(directory: Path, name: str = "not_a_video.mp4") -> Path:
    """Plain text with a video extension."""
    path = Path(directory) / name
    path.write_text("this is not a video\n" * 20)
    return path


def audio_only(directory: Path, name: str = "audio_only.mp4", seconds: float = 0.5) -> Path:
    """AAC audio in an MP4 container, no video stream."""
    path = Path(directory) / name
    rate = 16000
    with av.open(os.fspath(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate)
        stream.layout = "mono"
        size = stream.codec_context.frame_size or 1024
        rng = np.random.default_rng(0)
        for i in range(int(seconds * rate / size) + 1):
            frame = av.AudioFrame.from_ndarray(
                (0.1 * rng.standard_normal((1, size))).astype(np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate = rate
            frame.pts = i * size
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def truncated(directory: Path, container: str = "mp4") -> Path:
    """The first half of a valid canonical mpeg4 file (mp4: the index at the end is lost;
    avi: the tail frames and index are lost but the head still decodes)."""
    source = synthetic_video(Path(directory) / f".whole_for_truncated.{container}", "mpeg4", num_frames=36)
    data = source.read_bytes()
    source.unlink()
    path = Path(directory) / f"truncated.{container}"
    path.write_bytes(data[: len(data) // 2])
    return path


def truncated_at_packet(directory: Path, packet: int = 18) -> Path:
    """A canonical mpeg4 AVI cut exactly where packet ``packet`` starts: every remaining frame
    decodes cleanly, only the header's frame count (36) betrays the truncation."""
    source = synthetic_video(Path(directory) / ".whole_for_truncated_at_packet.avi", "mpeg4", num_frames=36)
    with av.open(os.fspath(source)) as container:
        positions = [p.pos for p in container.demux(video=0) if p.size]
    data = source.read_bytes()
    source.unlink()
    path = Path(directory) / "truncated_at_packet.avi"
    path.write_bytes(data[: positions[packet]])
    return path


def flipped_bytes(directory: Path, container: str = "mp4", count: int = 200) -> Path:
    """A valid canonical mpeg4 file with ``count`` bytes inverted in the middle of its data."""
    source = synthetic_video(Path(directory) / f".whole_for_flipped.{container}", "mpeg4", num_frames=36)
    data = bytearray(source.read_bytes())
    source.unlink()
    middle = len(data) // 2
    data[middle : middle + count] = bytes(b ^ 0xFF for b in data[middle : middle + count])
    path = Path(directory) / f"flipped_bytes.{container}"
    path.write_bytes(bytes(data))
    return path


def make_all(directory: str | os.PathLike) -> dict[str, Path]:
    """Every kind of input above, in one folder; name -> path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    return {
        "canonical_mpeg4": synthetic_video(d / "canonical_mpeg4.mp4", "mpeg4"),
        "canonical_h264": synthetic_video(d / "canonical_h264.mp4", "h264"),
        "canonical_mpeg4_avi": synthetic_video(d / "canonical_mpeg4.avi", "mpeg4"),
        "few_gops": few_gops_video(d),
        "short_last_gop": short_last_gop_video(d),
        "one_frame": one_frame_video(d),
        "unaligned_size": unaligned_size_video(d),
        "hd": hd_video(d),
        "odd_size": odd_size_video(d),
        "bframes_h264": bframes_video(d, "h264"),
        "bframes_mpeg4": bframes_video(d, "mpeg4"),
        "vfr": vfr_video(d),
        "single_frame_gop": single_frame_gop_video(d),
        "scenecut": scenecut_video(d),
        "hevc": hevc_video(d),
        "vp9": vp9_video(d),
        "missing": missing_path(d),
        "empty": empty_file(d),
        "text": text_file(d),
        "audio_only": audio_only(d),
        "truncated_mp4": truncated(d, "mp4"),
        "truncated_avi": truncated(d, "avi"),
        "truncated_at_packet": truncated_at_packet(d),
        "flipped_bytes": flipped_bytes(d, "mp4"),
        "flipped_bytes_avi": flipped_bytes(d, "avi"),
    }


if __name__ == "__main__":
    for name, path in make_all(sys.argv[1] if len(sys.argv) > 1 else "media_out").items():
        print(f"{name:20s} {path}")
