"""Class activation maps of the streams over the sampled frames (the paper's Figures 2 and 4).

A CAM (Zhou et al. 2016) is the classifier weights of one class applied to every cell of a stream's last
feature map: where that stream's features speak for the class. One column per segment; the rows are the
I-frame, the accumulated MVs the MV stream saw (colour wheel), and then each stream's CAM drawn over the
I-frame in grey, cell by cell (a 64 px crop gives a ResNet 2x2 cells: the squares are the map's real
resolution, not smoothed into gradients it does not have), with one colour bar and a caption that says
which class, which stream and what the numbers mean. Each stream's map is scaled to [0, 1] over the clip
on its own (segments of one stream stay comparable; streams have different scales); the number above each
map is its raw mean, that segment's share of the stream's logit for the class.
"""

from __future__ import annotations

import os
import textwrap
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


def normalise_cams(cams: torch.Tensor) -> np.ndarray:
    """(T, h, w) CAMs -> the same cells in [0, 1], over the whole clip (segments stay comparable)."""
    c = cams.float()
    lo, hi = float(c.min()), float(c.max())
    return ((c - lo) / max(hi - lo, 1e-8)).cpu().numpy()


def _grey(rgb: np.ndarray) -> np.ndarray:
    """A light grey version of an RGB image: the heat colours stay readable on top of it."""
    y = np.asarray(rgb, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return 64 + 0.75 * y  # [64, 255]: no black for the dark end of the colour map to vanish into


def draw_cams(frames: Mapping[str, np.ndarray], cams: Mapping[str, torch.Tensor], path: str | os.PathLike, *,
              title: str | None = None, class_name: str | None = None) -> Path:
    """Save the figure: ``frames[m]`` is what stream ``m`` saw, (T, S, S, C) in pixels (uint8 RGB I-frames,
    MVs in pixels, residuals), ``cams[m]`` its (T, h, w) activation map for class ``class_name``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colormaps

    from gpudecode.visualize import colour_wheel, mv_to_rgb

    names = [m for m in ("iframe", "mv", "residual") if m in cams]
    t, h, w = cams[names[0]].shape
    base = "iframe" if "iframe" in frames else names[0]
    background = _grey(_to_rgb(base, np.asarray(frames[base])))
    size = background.shape[1:3]
    inputs = [("iframe", "I-frame")] if "iframe" in frames else []
    if "mv" in frames:
        inputs.append(("mv", "MVs (MV stream input)"))
    rows = len(inputs) + len(names)
    cell = 1.9
    fig, axes = plt.subplots(rows, t, figsize=(cell * t + 1.6, cell * rows + 1.9), squeeze=False,
                             layout="constrained")
    cmap = colormaps["inferno"]
    for r, (m, label) in enumerate(inputs):
        img = np.clip(frames[m], 0, 255).astype(np.uint8) if m == "iframe" else mv_to_rgb(frames[m])
        for c in range(t):
            axes[r][c].imshow(img[c])
            if r == 0:
                axes[r][c].set_title(f"segment {c + 1}", fontsize=9)
        axes[r][0].set_ylabel(label, fontsize=8)
    shown = None
    for k, m in enumerate(names):
        r = len(inputs) + k
        heat = normalise_cams(cams[m])
        raw = cams[m].float().mean(dim=(1, 2)).tolist()
        for c in range(t):
            ax = axes[r][c]
            ax.imshow(background[c], cmap="gray", vmin=0, vmax=255)
            # cells drawn as squares (nearest): the map's real resolution
            shown = ax.imshow(heat[c], cmap=cmap, vmin=0, vmax=1, alpha=0.6, interpolation="nearest",
                              extent=(-0.5, size[1] - 0.5, size[0] - 0.5, -0.5))
            ax.set_title(f"mean {raw[c]:+.2f}", fontsize=7, pad=2)
            if r == 0:
                ax.set_title(f"segment {c + 1}\nmean {raw[c]:+.2f}", fontsize=8, pad=2)
        axes[r][0].set_ylabel(f"{_TITLES[m]} stream CAM", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if shown is not None:
        bar = fig.colorbar(shown, ax=axes[len(inputs):, :].ravel().tolist(), fraction=0.04, pad=0.02, shrink=0.8)
        bar.set_label("CAM, per stream: 0 = its lowest cell over the clip, 1 = its highest", fontsize=7)
        bar.ax.tick_params(labelsize=7)
    if "mv" in frames:  # the MV colour legend, beside the MV row
        wheel = axes[len(inputs) - 1][-1].inset_axes((1.05, 0.2, 0.5, 0.6))
        wheel.imshow(colour_wheel())
        wheel.set_axis_off()
        wheel.set_title("direction", fontsize=7)
    what = f"class '{class_name}'" if class_name else "the predicted class"
    caption = (f"Class activation maps (Zhou et al. 2016) of {what}: for each stream, that class's classifier "
               f"weights applied to every cell of the stream's last feature map ({h}x{w} cells, one per "
               f"{size[0] // h}x{size[1] // w} px of the {size[1]}x{size[0]} crop the network saw), drawn over the "
               "I-frame in grey; bright = the stream's features there speak for the class. Each stream is scaled "
               "over the clip on its own: segments of one stream compare, streams do not. 'mean' is the raw "
               "map's mean, the segment's share of the stream's logit for the class (the streams' logits, "
               "averaged over segments, are summed).")
    fig.text(0.01, 0.0, textwrap.fill(caption, int((cell * t + 1.6) * 72 / 4.3)), fontsize=6.5, va="top",
             ha="left")
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return path


__all__ = ["draw_cams", "normalise_cams", "upsample_cams"]
