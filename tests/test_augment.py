"""The reference augmentation: one window and flip per clip, MV scaling and negation, normalisation; and the
published input conventions (``preprocess="published"``) checked against DESIGN's description."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from teamnet.augment import (
    CROP_SCALES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MV_OFFSET,
    CropWindow,
    centre_square,
    draw_windows,
    eval_views,
    multiscale_crop,
    normalise_iframe,
    normalise_mv,
    normalise_residual,
    reference_transform,
)


def test_multiscale_crop_windows():
    rng = np.random.default_rng(0)
    h, w = 240, 320
    sizes = {int(240 * s) for s in CROP_SCALES}
    flips = []
    for _ in range(400):
        win = multiscale_crop(h, w, rng)
        assert win.width in sizes and win.height in sizes
        assert 0 <= win.x <= w - win.width and 0 <= win.y <= h - win.height
        # a corner or the centre
        assert win.x in (0, w - win.width, (w - win.width) // 2)
        assert win.y in (0, h - win.height, (h - win.height) // 2)
        flips.append(win.flip)
    assert 0.4 < np.mean(flips) < 0.6
    assert not any(multiscale_crop(h, w, rng, flip=False).flip for _ in range(50))
    a = [multiscale_crop(h, w, np.random.default_rng(7)) for _ in range(3)]
    assert a[0] == a[1] == a[2]  # the clip's generator decides everything


def test_centre_square():
    assert centre_square(240, 320) == CropWindow(40, 0, 240, 240)
    assert centre_square(300, 100) == CropWindow(0, 100, 100, 100)


def test_normalisation_constants():
    mean_colour = torch.tensor(IMAGENET_MEAN) * 255
    assert torch.allclose(normalise_iframe(mean_colour), torch.zeros(3), atol=1e-6)
    assert torch.allclose(normalise_iframe(torch.full((3,), 255.0)), (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD))
    # MV: clip to +-20 px, mv*127.5/20 + 128, /255 - 0.5  (about mv/40)
    mv = torch.tensor([0.0, 10.0, -20.0, 100.0, -100.0])
    expected = torch.tensor([MV_OFFSET, 10 / 40 + MV_OFFSET, -0.5 + MV_OFFSET, 0.5 + MV_OFFSET, -0.5 + MV_OFFSET])
    assert torch.allclose(normalise_mv(mv), expected, atol=1e-6)
    # residual: +128, clip [0, 255], /255 - 0.5, / ImageNet std
    r = torch.tensor([[0.0, 0.0, 0.0], [200.0, -200.0, 127.0]])
    std = torch.tensor(IMAGENET_STD)
    want = torch.stack([(128 / 255 - 0.5) / std, torch.tensor([0.5, -0.5, 0.5]) / std])
    assert torch.allclose(normalise_residual(r), want, atol=1e-6)


def _ramp(t, h, w):
    """Frames whose pixel value is its x coordinate: shows where the crop came from and any mirror."""
    x = np.broadcast_to(np.arange(w, dtype=np.float32)[None, None, :, None], (t, h, w, 1))
    return np.ascontiguousarray(x)


@pytest.mark.parametrize("flip", [False, True])
def test_reference_transform_aligns_modalities_and_scales_mvs(flip):
    t, h, w = 2, 60, 80
    ramp = _ramp(t, h, w)
    iframe = np.repeat(ramp, 3, axis=3).astype(np.uint8)
    residual = np.repeat(ramp, 3, axis=3).astype(np.int16) - 40
    mv = np.zeros((t, h, w, 2), np.int16)
    mv[..., 0], mv[..., 1] = 3, -2
    win = CropWindow(10, 5, 40, 50, flip)
    out = reference_transform(win, 20, iframe=iframe, mv=mv, residual=residual, antialias=False)
    assert {k: tuple(v.shape) for k, v in out.items()} == {"iframe": (t, 20, 20, 3), "mv": (t, 20, 20, 2),
                                                           "residual": (t, 20, 20, 3)}
    # the same pixels in I-frame and residual: undo the normalisations and compare
    i_px = out["iframe"][..., 0] * IMAGENET_STD[0] * 255 + IMAGENET_MEAN[0] * 255
    r_px = (out["residual"][..., 0] * IMAGENET_STD[0] + 0.5) * 255 - 128 + 40
    assert torch.allclose(i_px, r_px, atol=1e-3)
    # the window's x range, mirrored when flipped
    row = i_px[0, 0]
    assert 10 <= float(row.min()) and float(row.max()) <= 49
    assert (row[0] > row[-1]) == flip
    # MVs stretch with the resize (x: 20/40, y: 20/50) and x flips sign with the image
    sx, sy = 20 / 40, 20 / 50
    want = normalise_mv(torch.tensor([(-3 if flip else 3) * sx, -2 * sy]))
    assert torch.allclose(out["mv"], want.expand_as(out["mv"]), atol=1e-6)


def test_reference_transform_rejects_windows_outside():
    with pytest.raises(ValueError, match="outside"):
        reference_transform(CropWindow(50, 0, 40, 40), 16, iframe=np.zeros((1, 40, 60, 3), np.uint8))


def test_eval_views_flip_negates_mv_x():
    rng = np.random.default_rng(1)
    mv = rng.integers(-30, 30, (2, 24, 24, 2)).astype(np.float32)
    iframe = rng.integers(0, 255, (2, 24, 24, 3)).astype(np.uint8)
    norm = reference_transform(centre_square(24, 24), 24, iframe=iframe, mv=mv)
    batch = {m: x.permute(0, 3, 1, 2)[None] for m, x in norm.items()}
    views = eval_views(batch, 16, 10)
    assert len(views) == 10 and all(v["mv"].shape == (1, 2, 2, 16, 16) for v in views)
    assert len(eval_views(batch, 16, 1)) == 1 and len(eval_views(batch, 16, 5)) == 5
    # view 9 = flipped centre crop = normalising the mirrored raw field with negated x
    flipped = reference_transform(CropWindow(0, 0, 24, 24, True), 24, iframe=iframe, mv=mv)
    want = flipped["mv"].permute(0, 3, 1, 2)[None][..., 4:20, 4:20]
    assert torch.allclose(views[9]["mv"], want, atol=1e-6)
    with pytest.raises(ValueError):
        eval_views(batch, 16, 3)


# -- preprocess="published": the inputs published weights were trained on (DESIGN §2, §3) ------------------
# The expected values are written out in NumPy from DESIGN's description, not with teamnet.augment:
#   I-frame   RGB, /255, ImageNet mean and std (as ours)
#   MV        mv*127.5/20 truncated toward zero to an integer, +128, clipped to [0, 255] as uint8, BEFORE any resize and
#             not rescaled with it; a flip mirrors the field and negates x (code c -> 256 - c); /255 - 0.5
#   residual  BGR channel order; +128, clip [0, 255], /255 - 0.5, / ImageNet std (by channel position)
def _published_mv_code(mv: np.ndarray) -> np.ndarray:
    v = mv.astype(np.float64) * 127.5 / 20
    truncated = np.fix(v)  # toward zero, as the official code's astype(np.int32)
    return np.clip(truncated + 128, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("flip", [False, True])
def test_published_arithmetic_for_every_modality(flip):
    rng = np.random.default_rng(3)
    t, h, w, size = 2, 30, 40, 20
    iframe = rng.integers(0, 256, (t, h, w, 3)).astype(np.uint8)
    mv = rng.integers(-40, 41, (t, h, w, 2)).astype(np.int16)
    mv[0, 3, 5:14, 0] = [4, -4, 12, -12, 1, -1, 21, -21, 0]  # ties, +-1 px, saturation, zero
    residual = rng.integers(-300, 300, (t, h, w, 3)).astype(np.int16)
    win = CropWindow(5, 3, size, size, flip)  # window = output size: no resize, every pixel checkable
    got = reference_transform(win, size, iframe=iframe, mv=mv, residual=residual, antialias=False,
                              preprocess="published")

    def crop(a):
        a = a[:, 3:3 + size, 5:5 + size]
        return a[:, :, ::-1] if flip else a

    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    want_i = (crop(iframe) / 255.0 - mean) / std
    code = crop(_published_mv_code(mv)).astype(np.float64)
    if flip:
        code[..., 0] = 256 - code[..., 0]
    want_mv = code / 255 - 0.5
    bgr = crop(residual)[..., ::-1].astype(np.float64)
    want_r = (np.clip(bgr + 128, 0, 255) / 255 - 0.5) / std
    for name, want in (("iframe", want_i), ("mv", want_mv), ("residual", want_r)):
        np.testing.assert_allclose(got[name].numpy(), want, atol=2e-6, err_msg=name)
    # spot values of the MV code: 4 px -> 25.5 -> 25 -> 153, -4 -> 103, 1 -> 6.375 -> 134, -1 -> 122, +-21 saturate
    codes = _published_mv_code(np.array([4, -4, 12, -12, 1, -1, 21, -21, 0]))
    assert codes.tolist() == [153, 103, 204, 52, 134, 122, 255, 0, 128]
    # the residual's channels really are reversed (and the I-frame's are not): ours differs here
    ours = reference_transform(win, size, iframe=iframe, residual=residual, antialias=False)
    assert torch.equal(ours["iframe"], got["iframe"]) and not torch.allclose(ours["residual"], got["residual"])


def test_published_mv_is_quantised_before_the_resize_and_not_rescaled():
    t, h, w = 1, 50, 40
    mv = np.zeros((t, h, w, 2), np.int16)
    mv[..., 0] = np.where(np.arange(w) % 2, 3, 0)  # columns alternate 0 and 3 px
    mv[..., 1] = -2
    win = CropWindow(0, 0, w, h)
    got = reference_transform(win, 20, mv=mv, antialias=False, preprocess="published")["mv"]
    # halving the width averages column pairs: codes 128 and 147 (3 px -> 19.125 -> 19) give 137.5;
    # quantising after the resize would give round(1.5 * 6.375) + 128 = 138
    np.testing.assert_allclose(got[..., 0].numpy(), 137.5 / 255 - 0.5, atol=1e-6)
    # y: -2 px -> -12.75 -> -12 (toward zero) -> 116 whatever the resize (ours would scale it by 20/50 first)
    np.testing.assert_allclose(got[..., 1].numpy(), 116 / 255 - 0.5, atol=1e-6)


def test_draw_windows_shared_for_ours_and_per_modality_for_published():
    mods = ("iframe", "mv", "residual")
    ours = draw_windows("train", 240, 320, np.random.default_rng(4), mods)
    assert set(ours) == set(mods) and len(set(ours.values())) == 1
    assert ours["mv"] == multiscale_crop(240, 320, np.random.default_rng(4))  # the same draws as before
    rng, again = np.random.default_rng(4), np.random.default_rng(4)
    distinct = 0
    for _ in range(20):
        pub = draw_windows("train", 240, 320, rng, mods, preprocess="published")
        assert [pub[m] for m in mods] == [multiscale_crop(240, 320, again) for _ in mods]  # one draw each, in order
        distinct += len(set(pub.values())) > 1
    assert distinct > 10
    test = draw_windows("test", 240, 320, None, mods, preprocess="published")
    assert set(test.values()) == {centre_square(240, 320)}
    with pytest.raises(ValueError, match=r"preprocess must be one of \['ours', 'published'\], got 'bgr'"):
        draw_windows("train", 240, 320, rng, mods, preprocess="bgr")
    with pytest.raises(ValueError, match="preprocess must be one of"):
        reference_transform(centre_square(24, 24), 24, mv=np.zeros((1, 24, 24, 2)), preprocess="coviar")


def test_published_test_view_flip_matches_the_flipped_window():
    rng = np.random.default_rng(2)
    mv = rng.integers(-30, 30, (2, 24, 24, 2)).astype(np.int16)
    residual = rng.integers(-200, 200, (2, 24, 24, 3)).astype(np.int16)
    norm = reference_transform(centre_square(24, 24), 24, mv=mv, residual=residual, preprocess="published")
    views = eval_views({m: x.permute(0, 3, 1, 2)[None] for m, x in norm.items()}, 24, 2)
    flipped = reference_transform(CropWindow(0, 0, 24, 24, True), 24, mv=mv, residual=residual,
                                  preprocess="published")
    for m in ("mv", "residual"):
        torch.testing.assert_close(views[1][m], flipped[m].permute(0, 3, 1, 2)[None], atol=1e-6, rtol=0)
