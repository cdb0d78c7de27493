"""Normalisation constants and the reference (NumPy/PyTorch) augmentation of a compressed-domain clip.

Two input conventions (``preprocess``), README "Using published weights":

- ``"ours"`` (the default, the correct one for training): described first, below.
- ``"published"``: what the published TEAM-Net (and CoViAR) weights were trained on (DESIGN §3), so that
  they reach their published accuracy; see :func:`reference_transform` for the exact arithmetic.

``"ours"``: one crop window and one flip are drawn per clip (:func:`draw_window`) and applied identically
to the I-frames, MVs and residuals of all segments; the published code drew them separately per modality,
so its three streams saw misaligned pixels (DESIGN §2). Geometry, in this order:

1. crop the window (multi-scale corner crop in training, the centred square in testing);
2. resize it to ``size`` x ``size`` (bilinear, antialiased when shrinking);
3. flip horizontally when drawn;
4. MVs only: scale x by ``size / window width`` and y by ``size / window height`` (the vectors are
   lengths in pixels, so they stretch with the image; the published code does not), and negate x when
   flipped;
5. normalise (DESIGN §2): I-frame with ImageNet mean/std; MV clipped to +-20 px and mapped as the
   published ``mv * 127.5 / 20 + 128``, then ``/ 255 - 0.5``; residual ``+ 128``, clipped to [0, 255],
   ``/ 255 - 0.5``, divided by the ImageNet std.

:func:`reference_transform` is the specification the DALI pipeline (:mod:`teamnet.dali_loader`) is tested
against, and the augmentation of the **fallback loader** used when DALI is not installed. Test-time views
(centre, corners, flips) are cut from the normalised test clips by :func:`eval_views`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: ImageNet statistics of torchvision's models, RGB, for pixel values in [0, 1].
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: MVs are clipped to +-MV_BOUND pixels (after scaling with the resize).
MV_BOUND: float = 20.0
#: What a zero MV becomes: the published mapping to [0, 255] puts 0 at 128, then ``/ 255 - 0.5``.
MV_OFFSET: float = 128.0 / 255.0 - 0.5
#: Multi-scale crop sizes relative to the shorter side (TSN's GroupMultiScaleCrop).
CROP_SCALES: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)
#: Test views :func:`eval_views` can cut.
EVAL_CROPS: tuple[int, ...] = (1, 2, 5, 10)
#: Input conventions: ours, or those the published weights were trained on (module docstring).
Preprocess = Literal["ours", "published"]
PREPROCESS: tuple[str, ...] = ("ours", "published")
#: Published MV code: ``mv * MV_STEP`` truncated toward zero, ``+ 128``, clipped to [0, 255] (DESIGN §2: ``mv*127.5/20 + 128``).
MV_STEP: float = 127.5 / MV_BOUND


def check_preprocess(preprocess: str) -> str:
    """``preprocess`` if it is one of :data:`PREPROCESS`, else a ValueError naming the allowed values."""
    if preprocess not in PREPROCESS:
        raise ValueError(f"preprocess must be one of {list(PREPROCESS)}, got {preprocess!r}")
    return preprocess


@dataclass(frozen=True)
class CropWindow:
    """A crop window in source pixels and whether to flip: what one clip's augmentation is."""

    x: int
    y: int
    width: int
    height: int
    flip: bool = False

    def as_array(self) -> np.ndarray:
        """``[x, y, width, height]`` float32, the DALI pipeline's crop input."""
        return np.array([self.x, self.y, self.width, self.height], np.float32)


def multiscale_crop(height: int, width: int, rng: np.random.Generator, *, scales: Sequence[float] = CROP_SCALES,
                    max_distort: int = 1, flip: bool = True) -> CropWindow:
    """TSN's multi-scale corner crop: height and width each a scale of the shorter side (at most
    ``max_distort`` scale steps apart), placed at a corner or the centre; a flip with p = 0.5."""
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be positive, got {height}x{width}")
    base = min(height, width)
    sizes = [max(1, int(base * s)) for s in scales]
    pairs = [(ch, cw) for i, ch in enumerate(sizes) for j, cw in enumerate(sizes) if abs(i - j) <= max_distort]
    crop_h, crop_w = pairs[int(rng.integers(len(pairs)))]
    dx, dy = width - crop_w, height - crop_h
    corners = [(0, 0), (dx, 0), (0, dy), (dx, dy), (dx // 2, dy // 2)]
    x, y = corners[int(rng.integers(len(corners)))]
    do_flip = bool(rng.random() < 0.5) if flip else False
    return CropWindow(int(x), int(y), int(crop_w), int(crop_h), do_flip)


def centre_square(height: int, width: int) -> CropWindow:
    """The largest centred square: testing resizes it to ``scale_size`` (the shorter side -> 256)."""
    side = min(height, width)
    return CropWindow((width - side) // 2, (height - side) // 2, side, side, False)


def draw_window(mode: Literal["train", "test"], height: int, width: int, rng: np.random.Generator | None, *,
                scales: Sequence[float] = CROP_SCALES, flip: bool = True) -> CropWindow:
    """Training: :func:`multiscale_crop`; testing: :func:`centre_square` (``rng`` unused)."""
    if mode == "train":
        if rng is None:
            raise ValueError("training crops need an rng")
        return multiscale_crop(height, width, rng, scales=scales, flip=flip)
    if mode == "test":
        return centre_square(height, width)
    raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")


def draw_windows(mode: Literal["train", "test"], height: int, width: int, rng: np.random.Generator | None,
                 modalities: Sequence[str], *, preprocess: Preprocess = "ours", scales: Sequence[float] = CROP_SCALES,
                 flip: bool = True) -> dict[str, CropWindow]:
    """One window per modality: ``"ours"`` draws one and shares it (a single :func:`draw_window`, the same
    draws as before the setting existed); ``"published"`` training draws one per modality, in the order of
    ``modalities``, as the published code did. Testing is the centre square for every modality either way."""
    check_preprocess(preprocess)
    if preprocess == "ours" or mode == "test":
        window = draw_window(mode, height, width, rng, scales=scales, flip=flip)
        return {m: window for m in modalities}
    return {m: draw_window(mode, height, width, rng, scales=scales, flip=flip) for m in modalities}


# -- normalisation (torch, channels last: (..., C)) -------------------------------------------------------
def normalise_iframe(x: torch.Tensor) -> torch.Tensor:
    mean = x.new_tensor(IMAGENET_MEAN) * 255.0
    std = x.new_tensor(IMAGENET_STD) * 255.0
    return (x - mean) / std


def normalise_mv(mv: torch.Tensor) -> torch.Tensor:
    return (mv.clamp(-MV_BOUND, MV_BOUND) * (127.5 / MV_BOUND) + 128.0) / 255.0 - 0.5


def normalise_residual(r: torch.Tensor) -> torch.Tensor:
    std = r.new_tensor(IMAGENET_STD)
    return ((r + 128.0).clamp(0.0, 255.0) / 255.0 - 0.5) / std


NORMALISE = {"iframe": normalise_iframe, "mv": normalise_mv, "residual": normalise_residual}


def quantise_mv(mv: torch.Tensor) -> torch.Tensor:
    """``"published"``: the MV code the published models read, made before any resizing (DESIGN §2, §3).

    ``mv * 127.5 / 20`` truncated toward zero (the official dataset code's ``astype(np.int32)``; so the
    code of ``-mv`` is ``256 -`` the code of ``mv``), ``+ 128``, clipped to [0, 255]: an MV of 0 is 128 and
    anything beyond about +-20 px saturates. Float values, integer-valued.
    """
    return (torch.trunc(mv * MV_STEP) + 128.0).clamp(0.0, 255.0)


def _as_float_tensor(a) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.float()
    return torch.from_numpy(np.ascontiguousarray(a)).float()


def reference_transform(window: CropWindow | Mapping[str, CropWindow], size: int, *, iframe=None, mv=None,
                        residual=None, antialias: bool = True,
                        preprocess: Preprocess = "ours") -> dict[str, torch.Tensor]:
    """Apply ``window`` to each given modality ((T, H, W, C) arrays) -> {modality: (T, size, size, C) float32}.

    ``window``: one window for all modalities, or one per modality (:func:`draw_windows`). The
    reference implementation: the DALI pipeline must give the same numbers (exactly without
    antialiasing; DALI's and PyTorch's antialiasing filters differ slightly).

    ``preprocess="published"`` (DESIGN §2 and §3, read as follows):

    - I-frame: as ours (RGB, ImageNet mean and std).
    - MV: :func:`quantise_mv` on the cropped source pixels, before resizing; the codes are then resized
      and flipped like an image and **not** rescaled with the resize; on flip x is still negated, about
      the zero code: ``x -> 256 - x`` (DESIGN §2 lists the negation as part of the published flip and names
      only the per-modality draws and the missing rescale as where the published code departs); then
      ``/ 255 - 0.5``.
    - Residual: channels in BGR order (the published loader built residuals from BGR frames and turned
      only the I-frame to RGB); then ours: ``+ 128``, clip to [0, 255], ``/ 255 - 0.5``, divided by the
      ImageNet std in the order of the channels as they arrive, so B by 0.229 and R by 0.225.
    - Crop and flip: whatever ``window`` holds per modality (``draw_windows`` draws them apart in training).
    """
    published = check_preprocess(preprocess) == "published"
    out = {}
    for name, a in (("iframe", iframe), ("mv", mv), ("residual", residual)):
        if a is None:
            continue
        win = window[name] if isinstance(window, Mapping) else window
        x = _as_float_tensor(a)[:, win.y:win.y + win.height, win.x:win.x + win.width]
        if x.shape[1] != win.height or x.shape[2] != win.width:
            raise ValueError(f"window {win} is outside the {name} frames of shape {tuple(a.shape)}")
        if published and name == "mv":
            x = quantise_mv(x)
        x = F.interpolate(x.permute(0, 3, 1, 2), size=(size, size), mode="bilinear", align_corners=False,
                          antialias=antialias).permute(0, 2, 3, 1)
        if win.flip:
            x = x.flip(2)
        if published:
            if name == "mv":
                sign = x.new_tensor([-1.0 if win.flip else 1.0, 1.0])
                out[name] = (((x - 128.0) * sign + 128.0) / 255.0 - 0.5).contiguous()
                continue
            if name == "residual":
                x = x.flip(3)  # RGB -> BGR
        elif name == "mv":
            scale = x.new_tensor([size / win.width, size / win.height])
            if win.flip:
                scale = scale * x.new_tensor([-1.0, 1.0])
            x = x * scale
        out[name] = NORMALISE[name](x).contiguous()
    return out


# -- test views -------------------------------------------------------------------------------------------
def flip_normalised(name: str, x: torch.Tensor, channel_dim: int = 2) -> torch.Tensor:
    """Horizontal flip of a normalised ``(N, T, C, H, W)`` batch; MV x is negated around :data:`MV_OFFSET`
    (for ``"published"`` inputs that is the code flip ``x -> 256 - x`` of :func:`reference_transform`)."""
    x = x.flip(-1)
    if name == "mv":
        x = x.clone()
        x.select(channel_dim, 0).mul_(-1).add_(2 * MV_OFFSET)
    return x


def eval_views(inputs: Mapping[str, torch.Tensor], crop_size: int, num_crops: int = 1) -> list[dict[str, torch.Tensor]]:
    """Cut ``num_crops`` views from normalised test clips ``{modality: (N, T, C, S, S)}``.

    1: the centre; 2: the centre and its flip; 5: four corners and the centre; 10: those and their flips
    (TSN's 10-crop). The model's logits over the views are averaged. Flipped views suit only datasets
    whose labels do not depend on left/right.
    """
    if num_crops not in EVAL_CROPS:
        raise ValueError(f"num_crops must be one of {EVAL_CROPS}, got {num_crops}")
    first = next(iter(inputs.values()))
    h, w = first.shape[-2:]
    if crop_size > min(h, w):
        raise ValueError(f"crop_size {crop_size} is larger than the test frames {h}x{w}")
    dy, dx = h - crop_size, w - crop_size
    centre = [(dy // 2, dx // 2)]
    boxes = centre if num_crops in (1, 2) else [(0, 0), (0, dx), (dy, 0), (dy, dx)] + centre
    views = [{m: x[..., y:y + crop_size, x0:x0 + crop_size] for m, x in inputs.items()} for y, x0 in boxes]
    if num_crops in (2, 10):
        views += [{m: flip_normalised(m, x) for m, x in v.items()} for v in views]
    return views


__all__ = [
    "CROP_SCALES",
    "CropWindow",
    "MV_STEP",
    "PREPROCESS",
    "Preprocess",
    "check_preprocess",
    "draw_windows",
    "quantise_mv",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MV_BOUND",
    "MV_OFFSET",
    "NORMALISE",
    "EVAL_CROPS",
    "centre_square",
    "draw_window",
    "flip_normalised",
    "multiscale_crop",
    "normalise_iframe",
    "normalise_mv",
    "normalise_residual",
    "reference_transform",
    "eval_views",
]
