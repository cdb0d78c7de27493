"""The canonical writer: exact GOP structure (also on scene cuts), options, determinism, fidelity."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from tests import media
from gpudecode.synth import render_translation
from gpudecode.encode import (
    CanonicalWriter,
    canonical_pict_types,
    is_canonical,
    open_canonical_writer,
    read_pict_types,
    write_video,
)


def scene_cut_frames(num_frames: int = 30, size=(64, 48), cut_every: int = 3, seed: int = 0) -> np.ndarray:
    """Fresh random noise every ``cut_every`` frames (a hard cut), shifted by 2 px in between."""
    rng = np.random.default_rng(seed)
    width, height = size
    frames, base = [], None
    for i in range(num_frames):
        if i % cut_every == 0:
            base = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        frames.append(np.roll(base, 2 * (i % cut_every), axis=1))
    return np.stack(frames)


@pytest.mark.parametrize("codec", ["mpeg4", "h264"])
@pytest.mark.parametrize("gop", [12, 5, 1])
def test_gop_structure_is_exact_on_scene_cuts(tmp_path, codec, gop):
    path = write_video(tmp_path / f"{codec}.mp4", scene_cut_frames(), codec=codec, gop=gop)
    assert read_pict_types(path) == canonical_pict_types(30, gop)


def test_mpeg4_avi_container(tmp_path):
    path = write_video(tmp_path / "clip.avi", scene_cut_frames(), codec="mpeg4", gop=12)
    with av.open(str(path)) as container:
        assert container.format.name == "avi"
    assert read_pict_types(path) == canonical_pict_types(30, 12)


def test_default_mpeg4_encoder_inserts_scene_cut_iframes(tmp_path):
    # The pitfall the writer exists for (DESIGN.md §1): without sc_threshold, FFmpeg's mpeg4 encoder
    # starts a new GOP at every hard cut, so "frame // 12" no longer finds the GOP.
    types = read_pict_types(media.scenecut_video(tmp_path))
    assert types != canonical_pict_types(len(types), 12)
    assert types.count("I") > len(types) // 12 + 1


def test_forced_iframes_of_decoded_frames_are_ignored(tmp_path):
    # A decoded frame keeps its pict_type and FFmpeg encoders honour a forced "I": re-encoding
    # a stream with a 1-frame GOP must still come out canonical.
    source = media.single_frame_gop_video(tmp_path)
    assert read_pict_types(source) == "IPPPPPPPPPPPIIPPPPPPPPPPPIPPPP"
    out = tmp_path / "out.mp4"
    with av.open(str(source)) as container, open_canonical_writer(
        out, codec="mpeg4", width=64, height=48, gop=12
    ) as writer:
        for frame in container.decode(video=0):
            writer.write(frame)
    assert read_pict_types(out) == canonical_pict_types(30, 12)


def test_writer_resizes_video_frames(tmp_path):
    source = media.synthetic_video(tmp_path / "src.mp4", size=(64, 48), num_frames=5)
    out = tmp_path / "small.mp4"
    with av.open(str(source)) as container, CanonicalWriter(out, width=32, height=24, gop=4) as writer:
        for frame in container.decode(video=0):
            writer.write(frame)
        assert writer.frames_written == 5
    with av.open(str(out)) as container:
        frames = list(container.decode(video=0))
    assert [(f.width, f.height) for f in frames] == [(32, 24)] * 5
    assert read_pict_types(out) == "IPPPI"


@pytest.mark.parametrize("codec", ["mpeg4", "h264"])
def test_output_is_deterministic(tmp_path, codec):
    frames = render_translation((64, 48), 14, 2, 1, seed=3)
    a = write_video(tmp_path / "a.mp4", frames, codec=codec).read_bytes()
    b = write_video(tmp_path / "b.mp4", frames, codec=codec).read_bytes()
    assert a == b


@pytest.mark.parametrize("codec", ["mpeg4", "h264"])
def test_round_trip_fidelity_and_frame_count(tmp_path, codec):
    frames = render_translation((64, 48), 14, 2, 1, seed=1)
    path = write_video(tmp_path / "clip.mp4", frames, codec=codec)
    with av.open(str(path)) as container:
        decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert decoded.shape == frames.shape
    mse = np.mean((decoded.astype(np.float64) - frames) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30  # the YUV 4:2:0 round trip alone costs a few dB


def test_quality_is_the_quantiser(tmp_path):
    # PyAV cannot set AVFrame.quality, so global_quality alone would leave mpeg4 at qmin = 2;
    # the writer pins qmin = qmax = quality.
    frames = render_translation((64, 48), 12, 2, 1)
    sizes = {
        q: write_video(tmp_path / f"q{q}.mp4", frames, codec="mpeg4", quality=q).stat().st_size for q in (1, 2, 10)
    }
    assert sizes[1] > sizes[2] > sizes[10]
    crf = {
        q: write_video(tmp_path / f"crf{q}.mp4", frames, codec="h264", quality=q).stat().st_size for q in (10, 35)
    }
    assert crf[10] > crf[35]


def test_fractional_frame_rate(tmp_path):
    path = write_video(tmp_path / "ntsc.mp4", render_translation((32, 32), 6), fps=Fraction(30000, 1001))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == Fraction(30000, 1001)
        pts = [f.pts for f in container.decode(stream)]
    steps = np.diff(pts)
    assert len(set(steps.tolist())) == 1  # constant frame rate


def test_is_canonical(tmp_path):
    assert is_canonical(media.synthetic_video(tmp_path / "ok.mp4", gop=12), 12)
    assert not is_canonical(media.synthetic_video(tmp_path / "gop6.mp4", gop=6), 12)
    assert not is_canonical(media.bframes_video(tmp_path, "h264"), 12)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"codec": "mpeg4", "width": 65, "height": 48}, "even"),
        ({"codec": "h264", "width": 64, "height": 47}, "even"),
        ({"codec": "vp9", "width": 64, "height": 48}, "codec must be one of"),
        ({"codec": "mpeg4", "width": 64, "height": 48, "gop": 0}, "gop"),
        ({"codec": "mpeg4", "width": 64, "height": 48, "quality": 0}, "1..31"),
        ({"codec": "h264", "width": 64, "height": 48, "quality": 60}, "0..51"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        open_canonical_writer(tmp_path / "x.mp4", **kwargs)


def test_container_rules(tmp_path):
    with pytest.raises(ValueError, match="avi"):
        open_canonical_writer(tmp_path / "x.avi", codec="h264", width=64, height=48)
    with pytest.raises(ValueError, match="container"):
        open_canonical_writer(tmp_path / "x.mkv", codec="mpeg4", width=64, height=48)
    # An explicit container lets a temporary name without a video extension work.
    with open_canonical_writer(tmp_path / "x.part", codec="h264", width=32, height=32, container="mp4") as w:
        w.write(np.zeros((32, 32, 3), np.uint8))
    assert read_pict_types(tmp_path / "x.part") == "I"


def test_bad_frames(tmp_path):
    with open_canonical_writer(tmp_path / "x.mp4", width=32, height=32) as writer:
        with pytest.raises(ValueError, match="shape"):
            writer.write(np.zeros((32, 30, 3), np.uint8))
        with pytest.raises(ValueError, match="uint8"):
            writer.write(np.zeros((32, 32, 3), np.float32))
        with pytest.raises(TypeError, match="numpy array or av.VideoFrame"):
            writer.write([[0]])
        writer.write(np.zeros((32, 32, 3), np.uint8))
    assert read_pict_types(tmp_path / "x.mp4") == "I"
