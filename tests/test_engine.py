"""The CPU engine: one-pass decode + kernels equals a frame-by-frame NumPy reference, and the
accumulated MV and residual mean what DESIGN §1 says on videos with known motion."""

from __future__ import annotations

import numpy as np
import pytest

from gpudecode import VideoSampler, index_video, sample_gops
from gpudecode._av import colour_matrix, motion_vectors, open_video, yuv420_planes
from gpudecode.cpu import CpuBackend
from gpudecode.encode import write_video
from gpudecode.kernels import reference as ref


def textured_translation(width, height, num_frames, dx, dy, seed=0) -> np.ndarray:
    """A smooth random texture moving by exactly (dx, dy) pixels per frame."""
    rng = np.random.default_rng(seed)
    pad = num_frames * max(abs(dx), abs(dy)) + 8
    big_h, big_w = height + 2 * pad, width + 2 * pad
    coarse = rng.integers(0, 256, (big_h // 4 + 2, big_w // 4 + 2, 3)).astype(np.float32)
    tex = np.kron(coarse, np.ones((4, 4, 1)))[:big_h, :big_w]
    tex = (tex + np.roll(tex, 2, 0) + np.roll(tex, 2, 1) + np.roll(tex, (2, 2), (0, 1))) / 4
    frames = [tex[pad - k * dy: pad - k * dy + height, pad - k * dx: pad - k * dx + width] for k in range(num_frames)]
    return np.stack(frames).astype(np.uint8)


def reference_sample(path, picks, modalities=("iframe", "mv", "residual")):
    """Decode every frame sequentially and apply the NumPy twins: the engine's semantics, slowly."""
    index = index_video(path, cache=False)
    frames = []
    container, stream = open_video(path, export_mvs=True)
    with container:
        for frame in container.decode(stream):
            frames.append((yuv420_planes(frame), motion_vectors(frame).copy(), colour_matrix(frame)))
    out = {m: [] for m in modalities}
    for gop, pos in picks:
        start = index.gop_starts[gop]
        planes, _, m = frames[start]
        iframe = ref.yuv420_to_rgb(*planes, index.width, index.height, m)
        src = None
        for k in range(1, pos + 1):
            grid, misaligned = ref.rasterize_mv(frames[start + k][1], index.width, index.height, 3)
            assert not misaligned
            src = ref.accumulate_step(src, grid, 3, index.width, index.height)
        planes, _, m = frames[start + pos]
        mv, residual = ref.gather_mv_residual(src, iframe, *planes, index.width, index.height, m)
        for name, value in (("iframe", iframe), ("mv", mv), ("residual", residual)):
            if name in out:
                out[name].append(value)
    return {k: np.stack(v) for k, v in out.items()}


@pytest.fixture(scope="module", params=["mpeg4", "h264"])
def translation_video(request, tmp_path_factory):
    dx, dy = 3, -2
    frames = textured_translation(192, 144, 30, dx, dy)
    path = write_video(tmp_path_factory.mktemp(request.param) / "translate.mp4", frames, codec=request.param, gop=12)
    return path, dx, dy, request.param


def test_accumulated_mv_is_k_times_the_motion(translation_video):
    """At P-frame position k of a pure translation, the interior's accumulated MV is k·(dx, dy)."""
    path, dx, dy, codec = translation_video
    picks = [(0, k) for k in range(1, 12)] + [(1, 5), (2, 0)]
    sample = VideoSampler(num_segments=len(picks), cache=False)(path, picks=picks)
    h, w = sample.mv.shape[1:3]
    for seg, (_, k) in enumerate(picks):
        margin = 16 + k * max(abs(dx), abs(dy))
        interior = sample.mv[seg, margin:h - margin, margin:w - margin].reshape(-1, 2)
        exact = np.all(interior == (k * dx, k * dy), axis=1).mean()
        assert exact >= 0.95, f"{codec}: position {k}: only {exact:.1%} of interior pixels have MV {k}*({dx},{dy})"
    assert np.all(sample.mv[-1] == 0) and np.all(sample.residual[-1] == 0)  # pos 0: the I-frame itself


def test_iframe_plus_residual_reconstructs_the_frame(translation_video):
    """I(S_k(p)) + residual(p) equals the decoded frame k at every pixel."""
    path, *_ = translation_video
    picks = [(0, 7), (1, 3), (2, 5)]
    sample = VideoSampler(num_segments=3, cache=False)(path, picks=picks)
    index = index_video(path, cache=False)
    container, stream = open_video(path)
    with container:
        decoded = [ref.yuv420_to_rgb(*yuv420_planes(f), f.width, f.height, colour_matrix(f)) for f in container.decode(stream)]
    h, w = sample.iframe.shape[1:3]
    ys, xs = np.mgrid[0:h, 0:w]
    for seg, (gop, pos) in enumerate(picks):
        sx, sy = xs - sample.mv[seg, ..., 0], ys - sample.mv[seg, ..., 1]
        rebuilt = sample.iframe[seg][sy, sx].astype(np.int16) + sample.residual[seg]
        np.testing.assert_array_equal(rebuilt, decoded[index.gop_starts[gop] + pos])


@pytest.mark.parametrize("mode", ["train", "test"])
def test_engine_equals_frame_by_frame_reference(translation_video, mode):
    path, *_ = translation_video
    index = index_video(path, cache=False)
    picks = sample_gops(index.gop_lengths, 8, mode=mode, rng=3)
    sample = CpuBackend().decode(index, picks)
    want = reference_sample(path, picks)
    for m in ("iframe", "mv", "residual"):
        np.testing.assert_array_equal(getattr(sample, m), want[m], err_msg=m)


@pytest.mark.parametrize("name", ["v_SoccerJuggling_g23_c01.avi", "v_GGSY1Qvo990.mp4"])
def test_engine_on_real_clips_equals_reference(real_dir, name):
    path = real_dir / name
    index = index_video(path, cache=False)
    picks = sample_gops(index.gop_lengths, 4, mode="train", rng=11)
    sample = CpuBackend().decode(index, picks)
    want = reference_sample(path, picks)
    for m in ("iframe", "mv", "residual"):
        np.testing.assert_array_equal(getattr(sample, m), want[m], err_msg=m)


def test_modality_subsets_agree_with_the_full_sample(translation_video):
    path, *_ = translation_video
    index = index_video(path, cache=False)
    picks = [(0, 4), (0, 4), (1, 11), (2, 2)]
    full = CpuBackend().decode(index, picks)
    for mods in (("iframe",), ("mv",), ("residual",), ("iframe", "residual")):
        part = CpuBackend().decode(index, picks, modalities=mods)
        assert part.modalities == mods
        for m in mods:
            np.testing.assert_array_equal(getattr(part, m), getattr(full, m))


def test_gops_are_decoded_in_any_pick_order(translation_video):
    """Picks need not be sorted; segments keep their order in the output."""
    path, *_ = translation_video
    index = index_video(path, cache=False)
    picks = [(2, 3), (0, 9), (1, 1), (0, 2)]
    sample = CpuBackend().decode(index, picks)
    want = reference_sample(path, picks)
    np.testing.assert_array_equal(sample.mv, want["mv"])
    assert sample.gops.tolist() == [2, 0, 1, 0] and sample.positions.tolist() == [3, 9, 1, 2]


def test_bad_picks_are_rejected(translation_video):
    path, *_ = translation_video
    index = index_video(path, cache=False)
    with pytest.raises(ValueError, match="outside"):
        CpuBackend().decode(index, [(0, 12)])
    with pytest.raises(ValueError, match="outside"):
        CpuBackend().decode(index, [(3, 0)])
    with pytest.raises(ValueError, match="modalities"):
        CpuBackend().decode(index, [(0, 1)], modalities=("flow",))


def test_one_open_per_clip(translation_video, monkeypatch):
    """The published loader opens a file 24 times for an 8-segment clip; the engine once."""
    import gpudecode.gopreader as gr

    opened = []
    real_open = gr.open_video
    monkeypatch.setattr(gr, "open_video", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    path, *_ = translation_video
    VideoSampler(num_segments=8, cache=False)(path, mode="train", rng=0)
    assert len(opened) == 1


def test_a_file_changed_after_indexing_is_a_typed_error(tmp_path):
    """Decoding with a stale index (the file was replaced) names the file instead of returning garbage."""
    from gpudecode import DecodeError, UnsupportedVideoError

    path = tmp_path / "v.mp4"
    write_video(path, textured_translation(64, 48, 30, 1, 0), gop=12)
    stale = index_video(path, cache=False)
    write_video(path, textured_translation(64, 48, 13, 1, 0), gop=12)  # now only 2 GOPs
    with pytest.raises(DecodeError, match="v.mp4.*(ended|changed)"):
        CpuBackend().decode(stale, [(2, 3)])
    write_video(path, textured_translation(32, 48, 30, 1, 0), gop=12)  # same GOPs, another size
    with pytest.raises(UnsupportedVideoError, match="v.mp4: frame size"):
        CpuBackend().decode(stale, [(0, 3)])
