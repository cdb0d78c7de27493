"""GOP-level TSN sampling (DESIGN §1, the paper's "sampling on the GOP level").

The video's GOPs are split into ``num_segments`` equal segments. Training draws, per segment, a
random GOP inside the segment and a random P-frame position inside that GOP; testing takes the
segment's centre GOP and the GOP's middle position. A pick is ``(gop, pos)``: ``pos`` counts
frames from the GOP's I-frame, so ``pos = 0`` is the I-frame itself (its MV and residual are
zero) and is only used for a GOP that has no P-frame.

In a video with B-frames that the engine skips (MPEG-4 Part 2), a GOP's P-frames are not at every
position: ``positions`` lists them per GOP (``GopIndex.p_positions``), training draws among them and
testing takes the one closest to the middle. A B-frame is never picked.
"""

from __future__ import annotations

from typing import Literal, Sequence

import numpy as np

Mode = Literal["train", "test"]


def sample_gops(gop_lengths: Sequence[int], num_segments: int, *, mode: Mode = "train",
                rng: np.random.Generator | int | None = None,
                positions: Sequence[Sequence[int]] | None = None) -> list[tuple[int, int]]:
    """One ``(gop, pos)`` pick per segment.

    Works for any number of GOPs: with fewer GOPs than segments, neighbouring segments share a
    GOP (each still draws its own position in training); a one-frame GOP gives ``pos = 0``.
    ``rng`` is a Generator or a seed; testing ignores it. ``positions`` (per GOP, its P-frame
    positions) restricts the positions to those frames; None means every position after the I-frame.
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
    if positions is not None and len(positions) != num_gops:
        raise ValueError(f"positions must list {num_gops} GOPs, got {len(positions)}")
    if mode == "test":
        for seg in range(num_segments):
            gop = min(int((seg + 0.5) * span), num_gops - 1)
            middle = lengths[gop] // 2
            if positions is None:
                picks.append((gop, middle))
            else:  # the P-frame closest to the middle (the earlier one on a tie), or the I-frame
                ps = positions[gop]
                picks.append((gop, min(ps, key=lambda p: (abs(p - middle), p)) if len(ps) else 0))
        return picks
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    for seg in range(num_segments):
        gop = min(int((seg + rng.random()) * span), num_gops - 1)
        if positions is None:
            n = lengths[gop]
            picks.append((gop, int(rng.integers(1, n)) if n > 1 else 0))
        else:
            ps = positions[gop]
            picks.append((gop, int(ps[int(rng.integers(0, len(ps)))]) if len(ps) else 0))
    return picks


def group_picks(picks: Sequence[tuple[int, int]], gop_lengths: Sequence[int], *, path: str = "",
                chain: bool = True, positions: Sequence[Sequence[int]] | None = None) -> dict[int, dict[int, list[int]]]:
    """``{gop: {pos: [segments]}}``: the plan for decoding each sampled GOP once.

    Without the P-frame ``chain`` (I-frames only) every pick of a GOP collapses onto its I-frame.
    With ``positions`` (per GOP, its P-frame positions), a pick on any other frame is refused.
    """
    plan: dict[int, dict[int, list[int]]] = {}
    for seg, (gop, pos) in enumerate(picks):
        if not (0 <= gop < len(gop_lengths) and 0 <= pos < gop_lengths[gop]):
            raise ValueError(f"{path}: pick (gop={gop}, pos={pos}) is outside the video's {len(gop_lengths)} GOPs "
                             f"of lengths {tuple(gop_lengths[:8])}{'...' if len(gop_lengths) > 8 else ''}")
        if positions is not None and pos != 0 and pos not in positions[gop]:
            raise ValueError(f"{path}: pick (gop={gop}, pos={pos}) is not a P-frame (B-frames are never sampled); "
                             f"GOP {gop}'s P-frames are at {tuple(positions[gop])}")
        plan.setdefault(gop, {}).setdefault(pos if chain else 0, []).append(seg)
    return dict(sorted(plan.items()))


__all__ = ["Mode", "group_picks", "sample_gops"]
