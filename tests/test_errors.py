"""Bad and unusual inputs: each yields a sample or a typed error naming the file, never a crash or hang.

The inputs come from tests/media.py (regenerate with `python tests/media.py OUT_DIR`).
"""

from __future__ import annotations

import numpy as np
import pytest

from gpudecode import (
    BFramesError,
    CorruptVideoError,
    GpudecodeError,
    NoMotionVectorsError,
    NoVideoStreamError,
    UnsupportedVideoError,
    VideoNotFoundError,
    VideoSampler,
    index_video,
)
from tests import media

OK = "sample"
# What each input must give: a sample, a specific typed error, or (damaged files, where FFmpeg may
# conceal or reject depending on where the damage falls) either a sample or some typed error.
EXPECTED = {
    "canonical_mpeg4": OK, "canonical_h264": OK, "canonical_mpeg4_avi": OK, "few_gops": OK,
    "short_last_gop": OK, "one_frame": OK, "unaligned_size": OK, "hd": OK, "odd_size": OK, "vfr": OK,
    "single_frame_gop": OK, "scenecut": OK,
    "bframes_h264": BFramesError, "bframes_mpeg4": OK,  # B-frames skipped, the P chain is exact (tests/test_bframes.py)
    "hevc": NoMotionVectorsError, "vp9": NoMotionVectorsError,
    "missing": VideoNotFoundError, "empty": CorruptVideoError, "text": CorruptVideoError,
    "audio_only": NoVideoStreamError,
    "truncated_mp4": (OK, GpudecodeError), "truncated_avi": (OK, GpudecodeError),
    "truncated_at_packet": (OK, GpudecodeError), "flipped_bytes": (OK, GpudecodeError),
    "flipped_bytes_avi": (OK, GpudecodeError),
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    made = media.make_all(tmp_path_factory.mktemp("media"))
    assert set(made) == set(EXPECTED), "tests/media.py and this table must list the same inputs"
    return made


def outcome(path, mode):
    try:
        return VideoSampler(num_segments=8, cache=False)(path, mode=mode, rng=0)
    except GpudecodeError as e:
        return e


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["train", "test"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_input_gives_a_sample_or_a_typed_error(inputs, name, mode):
    path = inputs[name]
    result = outcome(path, mode)
    expected = EXPECTED[name]
    allowed = expected if isinstance(expected, tuple) else (expected,)
    if isinstance(result, GpudecodeError):
        assert any(a is not OK and isinstance(result, a) for a in allowed), f"{name}: unexpected {result!r}"
        assert path.name in str(result), f"the message must name the file: {result}"
        if isinstance(result, UnsupportedVideoError):
            assert "gpudecode prepare" in str(result), f"an unreadable stream must say how to fix it: {result}"
    else:
        assert OK in allowed, f"{name}: expected {expected}, got a sample"
        t = result.num_segments
        assert result.iframe.shape[0] == result.mv.shape[0] == result.residual.shape[0] == t == 8
        assert result.iframe.dtype == np.uint8 and result.mv.dtype == np.int16 and result.residual.dtype == np.int16


def test_b_frame_error_gives_the_count_and_the_remedy(inputs):
    with pytest.raises(BFramesError, match=r"has B-frames \(\d+ of \d+ frames\).*gpudecode prepare"):
        index_video(inputs["bframes_h264"], cache=False).check_readable()


def test_one_frame_video_gives_zero_motion(inputs):
    sample = outcome(inputs["one_frame"], "train")
    assert np.all(sample.positions == 0) and not sample.mv.any() and not sample.residual.any()


def test_variable_frame_rate_is_detected_and_noted(inputs):
    ix = index_video(inputs["vfr"], cache=False)
    assert ix.variable_frame_rate and any("variable frame rate" in w for w in ix.warnings())
    assert not index_video(inputs["canonical_h264"], cache=False).variable_frame_rate


def test_scene_cut_gops_are_read_from_the_stream(inputs):
    """Irregular GOPs (scene-cut I-frames) come from picture types, not from a GOP size of 12."""
    ix = index_video(inputs["scenecut"], cache=False)
    assert len(set(ix.gop_lengths)) > 1 or ix.gop_lengths[0] != 12
    assert sum(ix.gop_lengths) == ix.num_frames - ix.leading_frames
