"""The reference augmentation: one window and flip per clip, MV scaling and negation, normalisation."""

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
