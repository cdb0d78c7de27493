"""The sample buffer pool: memory comes back only when nothing references it, and the engine's
samples stay intact and correct however the caller holds them."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from gpudecode import index_video, sample_gops
from gpudecode.buffers import ALIGN, BufferPool
from gpudecode.cpu import CpuBackend
from tests.media import few_gops_video, synthetic_video


def base_address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


def test_a_dropped_buffer_is_reused_and_aligned():
    pool = BufferPool()
    a = pool.take(100_000)
    addr = base_address(a)
    assert addr % ALIGN == 0 and a.nbytes == 100_000 and a.flags.writeable
    del a
    b = pool.take(100_000)
    assert base_address(b) == addr
    assert (pool.reused, pool.allocated) == (1, 1)


def holder_of(a: np.ndarray, holder: str):
    return {"view": lambda: a[10:20].view(np.int16),
            "view of a view": lambda: a[8:].view(np.int32).reshape(-1, 2)[1:],
            "torch tensor": lambda: torch.from_numpy(a[:64]),
            "memoryview": lambda: memoryview(a),
            "asarray": lambda: np.asarray(a, np.uint8)}[holder]()  # asarray of the same dtype: no copy


@pytest.mark.parametrize("holder", ["view", "view of a view", "torch tensor", "memoryview", "asarray"])
def test_a_buffer_is_not_reused_while_anything_references_it(holder):
    pool = BufferPool()
    a = pool.take(4096)
    a[:] = 7
    keep = holder_of(a, holder)
    addr = base_address(a)
    del a
    gc.collect()
    b = pool.take(4096)
    assert base_address(b) != addr
    b[:] = 0
    assert bytes(np.asarray(keep).view(np.uint8).reshape(-1)[:2]) == b"\x07\x07"  # untouched by the new owner
    del keep, b


def test_the_pool_keeps_at_most_max_buffers_and_evicts_the_least_recently_used():
    pool = BufferPool(max_buffers=2)
    held = [pool.take(1000) for _ in range(3)]  # all in use: the third is not pooled
    assert len(pool._buffers) == 2
    del held
    small, big = pool.take(1000), pool.take(1000)
    del small, big
    c = pool.take(5000)  # no pooled buffer fits: a new one replaces the least recently used
    assert len(pool._buffers) == 2 and pool.pooled_bytes >= 5000
    del c


def test_sizes_far_smaller_than_a_buffer_do_not_pin_it():
    pool = BufferPool()
    a = pool.take(1_000_000)
    addr = base_address(a)
    del a
    assert base_address(pool.take(999_000)) == addr   # close enough: reused
    assert base_address(pool.take(100_000)) != addr   # a tenth: fresh memory


def test_no_pool_allocates_every_time():
    pool = BufferPool(0)
    pool.take(1000)  # taken and dropped at once
    pool.take(1000)
    assert pool.reused == 0 and pool.allocated == 2 and pool.pooled_bytes == 0


def test_arrays_share_one_buffer_with_aligned_parts():
    pool = BufferPool()
    i, m, r = pool.arrays([((2, 5, 7, 3), np.uint8), None, ((2, 5, 7, 3), np.int16)])
    assert m is None and i.shape == (2, 5, 7, 3) and r.dtype == np.int16
    assert base_address(i) % ALIGN == 0 and base_address(r) % ALIGN == 0
    assert base_address(r) >= base_address(i) + i.nbytes  # no overlap
    assert i.base is r.base


@pytest.fixture(scope="module")
def two_clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("pool")
    return few_gops_video(d / "a", num_gops=3), synthetic_video(d / "b.mp4", "mpeg4", (96, 64), num_frames=36,
                                                                 dx=-1, dy=2, seed=3)


def test_engine_samples_are_independent_and_unchanged_by_reuse(two_clips):
    """Clip A kept while B is decoded stays A; A decoded into B's recycled memory equals A decoded fresh."""
    a_index, b_index = (index_video(p, cache=False) for p in two_clips)
    a_picks = sample_gops(a_index.gop_lengths, 4, mode="train", rng=np.random.default_rng(1))
    b_picks = sample_gops(b_index.gop_lengths, 4, mode="train", rng=np.random.default_rng(2))
    fresh = CpuBackend(pool=BufferPool(0)).decode(a_index, a_picks)
    engine = CpuBackend()
    kept = engine.decode(a_index, a_picks)
    copies = {m: getattr(kept, m).copy() for m in ("iframe", "mv", "residual")}
    engine.decode(b_index, b_picks)  # while A is held
    engine.decode(b_index, b_picks)
    for m, value in copies.items():
        np.testing.assert_array_equal(getattr(kept, m), value)
    del kept
    engine.decode(b_index, b_picks)  # fills the recycled memory with B
    again = engine.decode(a_index, a_picks)
    assert engine.pool.reused > 0
    for m in ("iframe", "mv", "residual"):
        np.testing.assert_array_equal(getattr(again, m), getattr(fresh, m))
