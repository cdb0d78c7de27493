"""Class activation maps of the three streams over the sampled frames (the paper's Figures 2 and 4).

Two rows per stream (I-frame, MV, residual), one column per segment: what the stream saw (the I-frame,
the MV field on its colour wheel, the residual around grey) with the CAM's half-maximum contour drawn on it,
and below it the CAM of the predicted class alone (Zhou et al. 2016: the classifier weights of that class
applied to the last feature map) with a colour bar. A colour overlay would mix the CAM's colours with the MV
wheel's hue code, so the map gets its own row. Each stream's CAM is normalised over the clip on its own
(segments of one stream stay comparable; streams have different scales).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

_TITLES = {"iframe": "I-frame", "mv": "motion vectors", "residual": "residual"}


def _to_rgb(name: str, a: np.ndarray) -> np.ndarray:
    from gpudecode.visualize import mv_to_rgb, residual_to_rgb

    if name == "iframe":
        return np.clip(a, 0, 255).astype(np.uint8)
    if name == "mv":
        return mv_to_rgb(a)
    return residual_to_rgb(a)


def upsample_cams(cams: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(T, h, w) CAMs -> (T, H, W) in [0, 1], normalised over the whole clip (segments stay comparable)."""
    up = F.interpolate(cams.float()[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    lo, hi = float(up.min()), float(up.max())
    return ((up - lo) / max(hi - lo, 1e-8)).cpu().numpy()


def draw_cams(frames: Mapping[str, np.ndarray], cams: Mapping[str, torch.Tensor], path: str | os.PathLike, *,
              title: str | None = None, contour: float = 0.5) -> Path:
    """Save the figure: ``frames[m]`` is what stream ``m`` saw, (T, H, W, C) in pixels (uint8 RGB I-frames,
    MVs in pixels, residuals), ``cams[m]`` its (T, h, w) activation map. ``contour``: the CAM level outlined
    on the input (a fraction of the stream's maximum over the clip)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in ("iframe", "mv", "residual") if m in cams]
    t = cams[names[0]].shape[0]
    fig, axes = plt.subplots(2 * len(names), t, figsize=(2.0 * t + 1.2, 3.9 * len(names) + 0.4), squeeze=False,
                             layout="constrained")
    for r, m in enumerate(names):
        img = _to_rgb(m, np.asarray(frames[m]))
        heat = upsample_cams(cams[m], img.shape[1:3])
        line = "black" if m == "mv" else "white"  # the MV wheel is white where nothing moves
        for c in range(t):
            top, bottom = axes[2 * r][c], axes[2 * r + 1][c]
            top.imshow(img[c])
            if heat[c].max() > contour > heat[c].min():
                top.contour(heat[c], levels=[contour], colors=line, linewidths=1.2)
            shown = bottom.imshow(heat[c], cmap="inferno", vmin=0, vmax=1)
            for ax in (top, bottom):
                ax.set_xticks([])
                ax.set_yticks([])
            if c == 0:
                top.set_ylabel(_TITLES[m])
                bottom.set_ylabel(f"{_TITLES[m]} CAM")
            if r == 0:
                top.set_title(f"segment {c + 1}", fontsize=9)
        bar = fig.colorbar(shown, ax=[*axes[2 * r], *axes[2 * r + 1]], fraction=0.03, pad=0.01, shrink=0.5,
                           anchor=(0.0, 0.0))
        bar.set_label("CAM / max over clip", fontsize=7)
        bar.ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["draw_cams", "upsample_cams"]
