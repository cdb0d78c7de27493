"""Pictures of samples: MVs on a colour wheel, residuals around grey, next to the I-frames."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def mv_to_rgb(mv: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """(..., 2) MVs in pixels -> uint8 RGB: hue is the direction, saturation the length.

    White means no motion; ``max_magnitude`` (default: the 99th percentile) maps to full colour.
    """
    from matplotlib.colors import hsv_to_rgb

    mv = np.asarray(mv, np.float32)
    mag = np.hypot(mv[..., 0], mv[..., 1])
    scale = max_magnitude or max(float(np.percentile(mag, 99)), 1e-6)
    hue = (np.arctan2(mv[..., 1], mv[..., 0]) / (2 * np.pi)) % 1.0  # mv = p - S(p): where the content moved
    hsv = np.stack([hue, np.clip(mag / scale, 0, 1), np.ones_like(mag)], axis=-1)
    return (hsv_to_rgb(hsv) * 255).round().astype(np.uint8)


def residual_to_rgb(residual: np.ndarray, gain: float = 2.0) -> np.ndarray:
    """(..., 3) int16 residual -> uint8 RGB around mid-grey, amplified by ``gain`` to be visible."""
    return np.clip(128 + gain * np.asarray(residual, np.float32), 0, 255).astype(np.uint8)


def colour_wheel(size: int = 64) -> np.ndarray:
    """The legend of :func:`mv_to_rgb`: each point shows the colour of content moving that way."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    mv = np.stack([xs, ys], axis=-1)
    wheel = mv_to_rgb(mv, max_magnitude=size / 2)
    wheel[np.hypot(xs, ys) > size / 2] = 255
    return wheel


def save_sample_figure(sample, path: str | os.PathLike, *, title: str | None = None) -> Path:
    """One column per segment: I-frame, accumulated MV (colour wheel), residual. Saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [m for m in ("iframe", "mv", "residual") if getattr(sample, m) is not None]
    t = sample.num_segments
    arrays = {m: np.asarray(getattr(sample, m).get() if hasattr(getattr(sample, m), "get") else getattr(sample, m))
              for m in rows}
    h, w = next(iter(arrays.values())).shape[1:3]
    cell = 2.2  # inches per image on its longer side
    fig, axes = plt.subplots(len(rows), t, squeeze=False,
                             figsize=(t * cell * w / max(h, w) + 0.6, len(rows) * cell * h / max(h, w) + 0.8))
    max_mag = float(np.percentile(np.hypot(*np.moveaxis(arrays["mv"], -1, 0)), 99)) if "mv" in arrays else None
    for r, m in enumerate(rows):
        for s in range(t):
            ax = axes[r][s]
            a = arrays[m][s]
            img = a if m == "iframe" else (mv_to_rgb(a, max_mag or 1.0) if m == "mv" else residual_to_rgb(a))
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"GOP {int(sample.gops[s])}, P {int(sample.positions[s])}", fontsize=8)
            if s == 0:
                ax.set_ylabel({"iframe": "I-frame", "mv": "MV", "residual": "residual"}[m])
    fig.suptitle(title or os.path.basename(sample.path), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    if "mv" in arrays:  # the MV colour legend, top right
        side = 0.55 / fig.get_figwidth()
        inset = fig.add_axes((1 - side - 0.005, 1 - side * fig.get_figwidth() / fig.get_figheight() - 0.005,
                              side, side * fig.get_figwidth() / fig.get_figheight()))
        inset.imshow(colour_wheel())
        inset.axis("off")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
