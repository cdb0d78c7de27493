"""GOP-level TSN sampling (DESIGN §1, the paper's "sampling on the GOP level").

The video's GOPs are split into ``num_segments`` equal segments. Training draws, per segment, a
random GOP inside the segment and a random P-frame position inside that GOP; testing takes the
segment's centre GOP and the GOP's middle position. A pick is ``(gop, pos)``: ``pos`` counts
frames from the GOP's I-frame, so ``pos = 0`` is the I-frame itself (its MV and residual are
zero) and is only used for a GOP that has no P-frame.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

Mode = Literal["train", "test"]


def sample_gops(gop_lengths: Sequence[int], num_segments: int, *, mode: Mode = "train",
                rng: np.random.Generator | int | None = None) -> list[tuple[int, int]]:
    """One ``(gop, pos)`` pick per segment.

    Works for any number of GOPs: with fewer GOPs than segments, neighbouring segments share a
    GOP (each still draws its own position in training); a one-frame GOP gives ``pos = 0``.
    ``rng`` is a Generator or a seed; testing ignores it.
    """
    lengths = [int(n) for n in gop_lengths]
    if num_segments < 1:
        raise ValueError(f"num_segments must be >= 1, got {num_segments}")
    if not lengths or min(lengths) < 1:
        raise ValueError(f"gop_lengths must be non-empty and positive, got {lengths[:8]}")
    if mode not in ("train", "test"):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    num_gops = len(lengths)
    span = num_gops / num_segments
    picks = []
    if mode == "test":
        for seg in range(num_segments):
            gop = min(int((seg + 0.5) * span), num_gops - 1)
            picks.append((gop, lengths[gop] // 2))
        return picks
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    for seg in range(num_segments):
        gop = min(int((seg + rng.random()) * span), num_gops - 1)
        n = lengths[gop]
        picks.append((gop, int(rng.integers(1, n)) if n > 1 else 0))
    return picks


__all__ = ["sample_gops", "Mode"]
