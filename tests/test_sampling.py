"""GOP-level TSN sampling (DESIGN §1)."""

from __future__ import annotations

import numpy as np
import pytest

from gpudecode import sample_gops


def test_test_mode_takes_centre_gops_and_middle_positions():
    assert sample_gops([12] * 16, 8, mode="test") == [(g, 6) for g in (1, 3, 5, 7, 9, 11, 13, 15)]


def test_train_mode_draws_a_gop_inside_each_segment():
    lengths = [12] * 40
    for seed in range(50):
        picks = sample_gops(lengths, 8, mode="train", rng=seed)
        for seg, (gop, pos) in enumerate(picks):
            assert seg * 5 <= gop < (seg + 1) * 5
            assert 1 <= pos <= 11


def test_train_positions_cover_every_p_frame_and_never_the_iframe():
    seen = {pos for seed in range(300) for _, pos in sample_gops([12], 1, rng=seed)}
    assert seen == set(range(1, 12))


def test_seeded_and_generator_rng_are_reproducible():
    a = sample_gops([12, 12, 7, 12, 3], 8, rng=5)
    assert a == sample_gops([12, 12, 7, 12, 3], 8, rng=5)
    assert a == sample_gops([12, 12, 7, 12, 3], 8, rng=np.random.default_rng(5))


@pytest.mark.parametrize("mode", ["train", "test"])
@pytest.mark.parametrize("lengths", [[12, 12, 5], [1], [12], [1, 1, 1], [12] * 7 + [2], [250, 50]])
def test_edge_cases_stay_inside_the_video(lengths, mode):
    """Fewer GOPs than segments, a single GOP, one-frame GOPs, a short last GOP."""
    for seed in range(20):
        picks = sample_gops(lengths, 8, mode=mode, rng=seed)
        assert len(picks) == 8
        assert [g for g, _ in picks] == sorted(g for g, _ in picks)  # segments stay in temporal order
        for gop, pos in picks:
            assert 0 <= gop < len(lengths)
            n = lengths[gop]
            assert (pos == 0) if n == 1 else (1 <= pos < n)


def test_fewer_gops_than_segments_uses_every_gop():
    picks = sample_gops([12, 12, 12], 8, mode="test")
    assert sorted({g for g, _ in picks}) == [0, 1, 2]


@pytest.mark.parametrize("kwargs, match", [({"num_segments": 0}, "num_segments"), ({"mode": "val"}, "mode")])
def test_bad_arguments(kwargs, match):
    args = {"gop_lengths": [12], "num_segments": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        sample_gops(**args)


def test_empty_gop_table_is_rejected():
    with pytest.raises(ValueError, match="gop_lengths"):
        sample_gops([], 8)
