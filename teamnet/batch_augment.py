"""The reference augmentation for a whole batch at once, in PyTorch, on whatever device the batch lives.

:func:`augment_batch` applies, clip by clip, exactly :func:`teamnet.augment.reference_transform` (crop ->
bilinear resize -> flip -> MV scale/sign -> normalise) to batch-shaped engine outputs ``(N, T, H, W, C)``,
but with a number of kernel launches that does not grow with N: clips whose crop windows have the same
size are cut out with one gather and resized with one ``F.interpolate`` call; flip, MV scale and
normalisation are single elementwise passes over the batch. A multi-scale crop has at most 10 window
sizes per frame size (TSN's scale pairs), so a training batch costs at most ~10 resizes per modality.

It is the GPU path's augmentation (:mod:`teamnet.gpu_loader`): the batch comes from the GPU stage already
on the device, so it is augmented there without a host round trip. On the CPU it gives the reference
numbers bit for bit (the same ops on the same values; tests/test_gpu_loader.py checks it), which makes
:func:`reference_transform` its oracle on every device.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from teamnet.augment import NORMALISE, CropWindow

#: Channels of each modality (the engine's layout, channels last).
CHANNELS = {"iframe": 3, "mv": 2, "residual": 3}


def normalised_zero(name: str, size: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """What a blank clip (a bad video's placeholder) becomes: ``(size, size, C)``, normalise(0)."""
    return NORMALISE[name](torch.zeros(1, 1, CHANNELS[name], device=device)).expand(size, size, CHANNELS[name])


def mv_scales(windows: Sequence[CropWindow], size: int, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """(N, 2) float32 per-clip MV factors ``[±size / width, size / height]`` (x negated when flipped).

    Computed as the reference computes them (float32 of the quotient, then the sign), so the products
    are the same bits.
    """
    scale = torch.tensor([[size / w.width, size / w.height] for w in windows], dtype=torch.float32)
    sign = torch.tensor([[-1.0 if w.flip else 1.0, 1.0] for w in windows], dtype=torch.float32)
    return (scale * sign).to(device)


def augment_batch(frames: Mapping[str, torch.Tensor], windows: Sequence[CropWindow], size: int, *,
                  antialias: bool = True) -> dict[str, torch.Tensor]:
    """``{modality: (N, T, H, W, C)}`` engine outputs (any integer or float dtype, any device) and one
    window per clip -> ``{modality: (N, T, size, size, C)}`` float32, contiguous, on the same device.

    Each window must lie inside its clip; H and W may be larger (a batch padded to its largest clip).
    """
    if not frames:
        raise ValueError("augment_batch needs at least one modality")
    first = next(iter(frames.values()))
    n, t = first.shape[:2]
    if len(windows) != n:
        raise ValueError(f"{len(windows)} crop windows for a batch of {n} clips")
    device = first.device
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, w in enumerate(windows):
        groups[(w.height, w.width)].append(i)
    flips = torch.tensor([w.flip for w in windows], dtype=torch.bool)
    any_flip = bool(flips.any())
    flips = flips.to(device).view(n, 1, 1, 1, 1)
    out = {}
    for name, x in frames.items():
        if x.ndim != 5 or x.shape[:2] != (n, t) or x.shape[4] != CHANNELS[name]:
            raise ValueError(f"{name} must be shaped (N={n}, T={t}, H, W, {CHANNELS[name]}), got {tuple(x.shape)}")
        c = CHANNELS[name]
        y = torch.empty((n, t, size, size, c), dtype=torch.float32, device=device)
        for (h, w), clips in groups.items():
            for i in clips:
                win = windows[i]
                if win.x < 0 or win.y < 0 or win.y + h > x.shape[2] or win.x + w > x.shape[3]:
                    raise ValueError(f"window {win} is outside the {name} frames of shape {tuple(x.shape[2:])}")
            # One gather for the group, then one resize over all its (clip, segment) frames. The input is
            # channels-last (N*T, C, h, w), the layout the reference hands F.interpolate too.
            crops = torch.stack([x[i, :, windows[i].y:windows[i].y + h, windows[i].x:windows[i].x + w] for i in clips])
            crops = crops.float().reshape(len(clips) * t, h, w, c).permute(0, 3, 1, 2)
            resized = F.interpolate(crops, size=(size, size), mode="bilinear", align_corners=False,
                                    antialias=antialias).permute(0, 2, 3, 1)
            resized = resized.reshape(len(clips), t, size, size, c)
            if len(clips) == n:
                y = resized.contiguous()
            else:
                y[torch.tensor(clips, device=device)] = resized
        if any_flip:
            y = torch.where(flips, y.flip(3), y)
        if name == "mv":
            y = y * mv_scales(windows, size, device=device).view(n, 1, 1, 1, 2)
        out[name] = NORMALISE[name](y).contiguous()
    return out


__all__ = ["CHANNELS", "augment_batch", "mv_scales", "normalised_zero"]
