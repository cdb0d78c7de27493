"""Pictures of samples: MVs on a colour wheel, residuals around grey, next to the I-frames."""

from __future__ import annotations

import os
import textwrap
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


def residual_scale(residual: np.ndarray) -> float:
    """The symmetric contrast stretch of :func:`residual_to_rgb`: the 99th percentile of ``|residual|``.

    A fixed gain fits no video: synthetic clips' residuals reach ±130 levels at the 99th percentile
    (a gain of 2 saturated most of them), a real UCF-101 clip's ±48.
    """
    a = np.abs(np.asarray(residual, np.float32))
    return max(float(np.percentile(a, 99)), 1.0) if a.size else 1.0


def residual_to_rgb(residual: np.ndarray, scale: float | None = None) -> np.ndarray:
    """(..., 3) int16 residual -> uint8 RGB, each channel around mid-grey: -scale is 0, +scale is 255.

    ``scale`` (levels) defaults to :func:`residual_scale`; larger values are clipped.
    """
    scale = residual_scale(residual) if scale is None else max(float(scale), 1e-6)
    return np.clip(128 + 127 * np.asarray(residual, np.float32) / scale, 0, 255).round().astype(np.uint8)


def mv_scale(mv: np.ndarray) -> float:
    """Full colour in :func:`mv_to_rgb`'s pictures: the 99th percentile of the MV length (pixels)."""
    mv = np.asarray(mv, np.float32)
    return max(float(np.percentile(np.hypot(mv[..., 0], mv[..., 1]), 99)), 1.0) if mv.size else 1.0


def colour_wheel(size: int = 64) -> np.ndarray:
    """The legend of :func:`mv_to_rgb`: each point shows the colour of content moving that way."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    mv = np.stack([xs, ys], axis=-1)
    wheel = mv_to_rgb(mv, max_magnitude=size / 2)
    wheel[np.hypot(xs, ys) > size / 2] = 255
    return wheel


def distinct_gop_segments(gops) -> list[int]:
    """The first segment of each sampled GOP: segments that share a GOP (a video with fewer GOPs than
    segments) would draw the same I-frame twice."""
    seen: set[int] = set()
    keep = []
    for s, g in enumerate(int(g) for g in gops):
        if g not in seen:
            seen.add(g)
            keep.append(s)
    return keep


def save_sample_figure(sample, path: str | os.PathLike, *, title: str | None = None,
                       note: str | None = None) -> Path:
    """One column per sampled GOP: I-frame, accumulated MV (colour wheel), residual; a caption under
    them says what each row shows and at which scale. Saved as PNG.

    Segments sharing a GOP are drawn once (the first of them); ``note`` (default: how many were
    dropped) goes under the title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [m for m in ("iframe", "mv", "residual") if getattr(sample, m) is not None]
    keep = distinct_gop_segments(sample.gops)
    if note is None and len(keep) < sample.num_segments:
        note = (f"{sample.num_segments} segments share {len(keep)} GOPs: showing {len(keep)} segments, "
                "one per GOP")
    arrays = {}
    for m in rows:
        a = getattr(sample, m)
        arrays[m] = np.asarray(a.get() if hasattr(a, "get") else a)[keep]
    t = len(keep)
    h, w = next(iter(arrays.values())).shape[1:3]
    mv_full = mv_scale(arrays["mv"]) if "mv" in arrays else None
    res_full = residual_scale(arrays["residual"]) if "residual" in arrays else None
    caption = []
    if "iframe" in arrays:
        caption.append("I-frame: the sampled GOP's I-frame.")
    if mv_full is not None:
        caption.append(f"MV: accumulated from P-frame P back to the I-frame; hue = direction the content "
                       f"moved (wheel, right), saturation = length, full at {mv_full:.0f} px (99th "
                       "percentile); white = no motion.")
    if res_full is not None:
        caption.append(f"Residual: F_P - I(source), R, G, B each around grey (= 0): black = -{res_full:.0f}, "
                       f"white = +{res_full:.0f} levels (99th percentile of |residual|), beyond clipped.")
    cell = 2.2  # inches per image on its longer side
    legend_w = 0.8 if "mv" in arrays or "residual" in arrays else 0.0  # room right of the rows for legends
    width = max(t * (cell * w / max(h, w) + 0.12) + 0.5 + legend_w, 6.0)
    height = len(rows) * (cell * h / max(h, w) + 0.25) + 1.5
    fig, axes = plt.subplots(len(rows), t, squeeze=False, figsize=(width, height))
    for r, m in enumerate(rows):
        for s in range(t):
            ax = axes[r][s]
            a = arrays[m][s]
            img = a if m == "iframe" else (mv_to_rgb(a, mv_full) if m == "mv" else residual_to_rgb(a, res_full))
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                seg = keep[s]
                ax.set_title(f"GOP {int(sample.gops[seg])}, P {int(sample.positions[seg])}", fontsize=8)
            if s == 0:
                ax.set_ylabel({"iframe": "I-frame", "mv": f"MV (full colour {mv_full:.0f} px)" if mv_full else "MV",
                               "residual": f"residual (±{res_full:.0f})" if res_full else "residual"}[m], fontsize=8)
    fig.tight_layout(rect=(0, 0.6 / height, 1 - legend_w / width, 1 - 0.6 / height), h_pad=0.3, w_pad=0.3)
    top = axes[0][-1].get_position()
    fig.suptitle((title or os.path.basename(sample.path)) + (f"\n{note}" if note else ""), fontsize=9,
                 y=top.y1 + 0.35 / height, va="bottom")
    bottom = axes[-1][0].get_position()
    fig.text(bottom.x0, bottom.y0 - 0.08 / height, "\n".join(textwrap.fill(c, int((width - 0.6) * 72 / 4.6))
                                                       for c in caption), fontsize=7, va="top", ha="left")
    if "mv" in arrays:  # the MV colour legend, right of the MV row
        row = axes[rows.index("mv")][-1].get_position()
        side_w, side_h = 0.6 / width, 0.6 / height
        inset = fig.add_axes((row.x1 + 0.1 / width, (row.y0 + row.y1) / 2 - side_h / 2, side_w, side_h))
        inset.imshow(colour_wheel())
        inset.set_xticks([])
        inset.set_yticks([])
        for spine in inset.spines.values():
            spine.set_visible(False)
        inset.set_title("direction", fontsize=7)
    if "residual" in arrays:  # the residual's grey scale, right of its row
        row = axes[rows.index("residual")][-1].get_position()
        bar = fig.add_axes((row.x1 + 0.25 / width, row.y0 + 0.1 * (row.y1 - row.y0), 0.15 / width,
                            0.8 * (row.y1 - row.y0)))
        bar.imshow(np.linspace(255, 0, 64)[:, None].repeat(4, 1), cmap="gray", vmin=0, vmax=255, aspect="auto",
                   extent=(0, 1, -res_full, res_full))
        bar.set_xticks([])
        bar.set_yticks([-res_full, 0, res_full], [f"-{res_full:.0f}", "0", f"+{res_full:.0f}"], fontsize=7)
        bar.yaxis.tick_right()
        bar.set_title("levels", fontsize=7)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return path
