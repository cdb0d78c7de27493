"""The engine's output for one clip: per segment an I-frame, an accumulated MV and a residual."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: The three modalities of a compressed-domain sample, in the order TEAM-Net takes them.
MODALITIES = ("iframe", "mv", "residual")


def check_modalities(modalities) -> tuple[str, ...]:
    mods = tuple(modalities)
    bad = [m for m in mods if m not in MODALITIES]
    if bad or not mods:
        raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {mods}")
    return tuple(m for m in MODALITIES if m in mods)


@dataclass
class Sample:
    """One clip as TEAM-Net consumes it, before augmentation.

    Arrays are NumPy (CPU backend) or CuPy (GPU backend), T = number of segments, at the video's
    own resolution:

    - ``iframe``: (T, H, W, 3) uint8, RGB, the decoded I-frame of the segment's GOP;
    - ``mv``: (T, H, W, 2) int16, pixels, x then y: the accumulated motion p - S_k(p) from the
      sampled P-frame back to the I-frame (DESIGN §1), so ``frame_k(p) ≈ iframe(p - mv(p))``;
    - ``residual``: (T, H, W, 3) int16 in [-255, 255], RGB: frame_k(p) - iframe(p - mv(p)),
      so that the I-frame and the residual reconstruct frame k exactly;
    - ``gops`` and ``positions``: (T,) the sampled GOP and the P-frame's distance from its I-frame.

    A modality that was not asked for is ``None``.
    """

    path: str
    gops: np.ndarray
    positions: np.ndarray
    iframe: Any = None
    mv: Any = None
    residual: Any = None
    backend: str = "cpu"

    def __post_init__(self) -> None:
        t = len(self.gops)
        if len(self.positions) != t:
            raise ValueError(f"gops and positions differ in length: {len(self.gops)} vs {len(self.positions)}")
        for name, channels in (("iframe", 3), ("mv", 2), ("residual", 3)):
            a = getattr(self, name)
            if a is not None and (a.ndim != 4 or a.shape[0] != t or a.shape[3] != channels):
                raise ValueError(f"{name} must be shaped (T={t}, H, W, {channels}), got {tuple(a.shape)}")

    @property
    def num_segments(self) -> int:
        return len(self.gops)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in MODALITIES if getattr(self, m) is not None)

    def __repr__(self) -> str:
        parts = [f"{m}={tuple(getattr(self, m).shape)}:{getattr(self, m).dtype}" for m in self.modalities]
        picks = list(zip(np.asarray(self.gops).tolist(), np.asarray(self.positions).tolist()))
        return f"Sample({self.path!r}, backend={self.backend}, picks={picks}, {', '.join(parts)})"


__all__ = ["MODALITIES", "Sample", "check_modalities"]
