"""MPEG-4 Part 2 with B-frames, read as is: B-frames are never references there, so the CoViAR
recurrence over a GOP's P-frames (B-frames skipped) is exact. H.264 B-frames stay refused."""

from __future__ import annotations

import os

import av
import numpy as np
import pytest

from gpudecode import VideoSampler, index_video
from gpudecode._av import PICT_B, PICT_P, colour_matrix, motion_vectors, open_video, yuv420_planes
from gpudecode.encode import _configure
from gpudecode.errors import BFramesError
from gpudecode.kernels import reference as ref
from gpudecode.sampling import group_picks, sample_gops

from .test_engine import textured_translation

DX, DY = 3, -2


def encode_mpeg4(path, frames, *, b_frames: int, gop: int = 12, quantiser: int = 2, flags: str | None = None):
    """PyAV's mpeg4 encoder at a fixed quantiser with ``b_frames`` B-frames between references."""
    with av.open(os.fspath(path), "w") as out:
        s = out.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        _configure(s, "mpeg4", gop, quantiser, 1)
        s.codec_context.max_b_frames = b_frames
        if flags:
            s.codec_context.options = {**s.codec_context.options, "flags": flags}
        for image in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        for packet in s.encode(None):
            out.mux(packet)
    return path


def p_chain_reference(path, picks):
    """Every frame decoded in display order; per pick, the recurrence over the GOP's P-frames only,
    with the NumPy twins (written from DESIGN §1, B-frames skipped): the engine's semantics, slowly."""
    index = index_video(path, cache=False)
    frames = []
    container, stream = open_video(path, export_mvs=True)
    with container:
        for frame in container.decode(stream):
            frames.append((int(frame.pict_type), yuv420_planes(frame), motion_vectors(frame).copy(), colour_matrix(frame)))
    w, h = index.width, index.height
    out = {"iframe": [], "mv": [], "residual": []}
    for gop, pos in picks:
        start = index.gop_starts[gop]
        _, planes, _, m = frames[start]
        iframe = ref.yuv420_to_rgb(*planes, w, h, m)
        src = None
        for k in range(1, pos + 1):
            kind, _, mvs, _ = frames[start + k]
            if kind == PICT_B:
                continue
            assert kind == PICT_P
            grid, misaligned = ref.rasterize_mv(mvs, w, h, 3)
            if misaligned:
                grid, _ = ref.rasterize_mv(mvs, w, h, 0)
            src = ref.accumulate_step(src, grid, 3 if not misaligned else 0, w, h)
        kind, planes, _, m = frames[start + pos]
        assert pos == 0 or kind == PICT_P
        mv, residual = ref.gather_mv_residual(src, iframe, *planes, w, h, m)
        for name, value in (("iframe", iframe), ("mv", mv), ("residual", residual)):
            out[name].append(value)
    return {k: np.stack(v) for k, v in out.items()}


@pytest.fixture(scope="module")
def translation():
    return textured_translation(192, 144, 30, DX, DY)


@pytest.fixture(scope="module", params=["avi", "mp4", "mp4-qpel"])
def bframes_video(request, translation, tmp_path_factory):
    ext, _, qpel = request.param.partition("-")
    path = tmp_path_factory.mktemp("bframes") / f"b2.{ext}"
    return encode_mpeg4(path, translation, b_frames=2, flags="+qpel" if qpel else None)


def test_index_reads_mpeg4_with_b_frames_as_is(bframes_video):
    ix = index_video(bframes_video, cache=False)
    assert ix.num_b > 0 and ix.skips_b_frames and ix.problems() == []
    assert ix.frame_types.startswith("IBBPBBPBBPBBI")
    assert ix.p_positions[0] == (3, 6, 9)
    assert any("readable as is (B-frames skipped)" in w for w in ix.warnings())


def test_accumulated_mv_is_k_times_the_motion_along_the_p_chain(bframes_video):
    """At P position k of a pure translation, the accumulated MV is k·(dx, dy): B-frames skipped,
    each P-frame's MVs reach back to the previous P (three frames), the chain to the I-frame."""
    ix = index_video(bframes_video, cache=False)
    # The first GOP: later ones are the encoder's choice, not the engine's (at the end of the stream it
    # flushes its B-frame queue into a not-coded VOP; with qpel, its motion search codes ~20% of the
    # second GOP's blocks intra). Exactness on every GOP is test_engine_equals_the_p_chain_reference.
    picks = [(0, k) for k in ix.p_positions[0]]
    sample = VideoSampler(num_segments=len(picks), cache=False)(bframes_video, picks=picks)
    h, w = sample.mv.shape[1:3]
    for seg, (_, k) in enumerate(picks):
        margin = 16 + k * max(abs(DX), abs(DY))
        interior = sample.mv[seg, margin:h - margin, margin:w - margin].reshape(-1, 2)
        assert np.all(interior == (k * DX, k * DY), axis=1).mean() >= 0.95, f"position {k}"


def test_engine_equals_the_p_chain_reference(bframes_video):
    ix = index_video(bframes_video, cache=False)
    picks = [(0, 9), (1, 3), (0, 3), (2, 0)]
    sample = VideoSampler(num_segments=len(picks), cache=False)(bframes_video, picks=picks)
    want = p_chain_reference(bframes_video, picks)
    for name in ("iframe", "mv", "residual"):
        np.testing.assert_array_equal(getattr(sample, name), want[name], err_msg=name)
    assert ix.p_positions is not None


def test_sampling_never_picks_a_b_frame(bframes_video):
    ix = index_video(bframes_video, cache=False)
    allowed = ix.p_positions
    rng = np.random.default_rng(0)
    for _ in range(50):
        for gop, pos in sample_gops(ix.gop_lengths, 8, mode="train", rng=rng, positions=allowed):
            assert pos in allowed[gop] or (pos == 0 and not allowed[gop])
    test = sample_gops(ix.gop_lengths, 3, mode="test", positions=allowed)
    assert test == [(0, 6), (1, 6), (2, 3)]  # the P closest to the middle of each GOP (lengths 12, 12, 6)
    with pytest.raises(ValueError, match="not a P-frame"):
        group_picks([(0, 1)], ix.gop_lengths, positions=allowed)


def test_same_source_with_and_without_b_frames(translation, tmp_path):
    """One source, one quantiser, encoded with and without B-frames: the I-frames are identical (intra
    coding does not depend on the GOP's other frames), and at the positions that are P-frames in both,
    both accumulate to the true motion. The residuals are not comparable (different references)."""
    with_b = encode_mpeg4(tmp_path / "b2.mp4", translation, b_frames=2)
    without = encode_mpeg4(tmp_path / "b0.mp4", translation, b_frames=0)
    picks = [(0, 3), (0, 6), (0, 9), (1, 3)]
    a = VideoSampler(num_segments=4, cache=False)(with_b, picks=picks)
    b = VideoSampler(num_segments=4, cache=False)(without, picks=picks)
    np.testing.assert_array_equal(a.iframe, b.iframe)
    h, w = a.mv.shape[1:3]
    for seg, (_, k) in enumerate(picks):
        m = 16 + 3 * k
        truth = np.all(a.mv[seg, m:h - m, m:w - m] == (k * DX, k * DY), axis=-1) & \
            np.all(b.mv[seg, m:h - m, m:w - m] == (k * DX, k * DY), axis=-1)
        assert truth.mean() >= 0.95


def test_h264_b_frames_are_still_refused(tmp_path):
    from .media import bframes_video

    path = bframes_video(tmp_path, codec="h264")
    ix = index_video(path, cache=False)
    assert not ix.skips_b_frames
    with pytest.raises(BFramesError, match="prepare"):
        ix.check_readable()


def test_fixture_avis_with_b_frames_read_as_is(real_dir):
    """HMDB-51/DivX AVIs (packed B-frames, timestamps out of order) read without `prepare`, equal to
    the P-chain reference, and never on a B-frame."""
    names = ["TrumanShow_wave_f_nm_np1_fr_med_26.avi", "tests_data_test.avi"]
    for name in names:
        path = real_dir / name
        ix = index_video(path, cache=False)
        assert ix.num_b > 0 and ix.problems() == [], name
        sampler = VideoSampler(num_segments=3, cache=False)
        for mode, rng in (("train", 1), ("test", None)):
            picks = sampler.picks(ix, mode=mode, rng=rng)
            assert all(pos == 0 or ix.frame_types[ix.gop_starts[g] + pos] == "P" for g, pos in picks)
            sample = sampler(path, picks=picks)
            want = p_chain_reference(path, picks)
            for m in ("iframe", "mv", "residual"):
                np.testing.assert_array_equal(getattr(sample, m), want[m], err_msg=f"{name} {mode} {m}")
