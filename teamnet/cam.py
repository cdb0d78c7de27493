"""Class activation maps of the three streams over the sampled frames (the paper's Figures 2 and 4).

One row per stream (I-frame, MV, residual), one column per segment; each panel shows what the stream saw
(the I-frame, the MV field on a colour wheel, the residual around grey) with the CAM of the predicted class
laid over it (Zhou et al. 2016: the classifier weights of that class applied to the last feature map).
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
              title: str | None = None, alpha: float = 0.45) -> Path:
    """Save the figure: ``frames[m]`` is what stream ``m`` saw, (T, H, W, C) in pixels (uint8 RGB I-frames,
    MVs in pixels, residuals), ``cams[m]`` its (T, h, w) activation map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in ("iframe", "mv", "residual") if m in cams]
    t = cams[names[0]].shape[0]
    fig, axes = plt.subplots(len(names), t, figsize=(2.0 * t + 0.6, 2.1 * len(names) + 0.4), squeeze=False)
    for r, m in enumerate(names):
        img = _to_rgb(m, np.asarray(frames[m]))
        heat = upsample_cams(cams[m], img.shape[1:3])
        for c in range(t):
            ax = axes[r][c]
            ax.imshow(img[c])
            ax.imshow(heat[c], cmap="jet", alpha=alpha, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(_TITLES[m])
            if r == 0:
                ax.set_title(f"segment {c + 1}", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["draw_cams", "upsample_cams"]
