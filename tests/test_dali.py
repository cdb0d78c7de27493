"""The DALI pipeline against the reference augmentation (both ``preprocess`` conventions), data order and
sharding, resume offsets, bad videos.

Runs the CPU-only pipeline (``device_id=None``); skipped when nvidia-dali is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from teamnet.augment import CropWindow, reference_transform
from teamnet.dali_loader import ClipLoader, ClipSource, EpochPlan
from teamnet.datasets import VideoList, load_split

pytest.importorskip("nvidia.dali")

MODALITIES = ("iframe", "mv", "residual")


# -- a source of random arrays (no video), to compare the pipeline with the reference ----------------------
class _FakeSample:
    def __init__(self, rng, t, h, w):
        self.iframe = rng.integers(0, 256, (t, h, w, 3)).astype(np.uint8)
        self.mv = rng.integers(-40, 40, (t, h, w, 2)).astype(np.int16)
        self.residual = rng.integers(-255, 256, (t, h, w, 3)).astype(np.int16)


class _FakeDataset:
    """Random clips of varying sizes; video 3 is 'bad'."""

    modalities = MODALITIES
    num_segments = 2

    def __init__(self, n):
        self.videos = VideoList([f"/fake/{i}.mp4" for i in range(n)], [i % 3 for i in range(n)], ["a", "b", "c"])

    def get(self, index, rng=None):
        if index == 3:
            return None, "/fake/3.mp4: broken on purpose"
        gen = np.random.default_rng(index)
        h, w = (40, 56) if index % 2 else (48, 36)
        return _FakeSample(gen, self.num_segments, h, w), None


def _run_pipeline(mode, antialias, flip=True, n=8, size=24, preprocess="ours"):
    from nvidia.dali.plugin.pytorch import DALIGenericIterator

    from teamnet.dali_loader import build_pipeline

    plan = EpochPlan(n, 4, mode, seed=5)
    source = ClipSource(_FakeDataset(n), plan, size=size, flip=flip, preprocess=preprocess)
    pipe = build_pipeline(source, batch_size=4, size=size, antialias=antialias, workers=1, threads=1)
    out = []
    for data in DALIGenericIterator(pipe, [*MODALITIES, "label", "index", "valid", "error"]):
        out.append(data[0])
    return source, out


@pytest.mark.parametrize("preprocess", ["ours", "published"])
@pytest.mark.parametrize("mode,antialias", [("train", False), ("train", True), ("test", False)])
def test_pipeline_matches_reference(mode, antialias, preprocess):
    source, batches = _run_pipeline(mode, antialias, preprocess=preprocess)
    flips = apart = 0
    for b, batch in enumerate(batches):
        for k in range(4):
            item = source.item(0, b * 4 + k)
            assert int(batch["index"][k]) == item.index and int(batch["valid"][k]) == item.valid
            if not item.valid:
                continue
            flips += any(w.flip for w in item.windows.values())
            apart += len(set(item.windows.values())) > 1
            want = reference_transform(item.windows, 24, antialias=antialias, preprocess=preprocess, **item.arrays)
            for m in MODALITIES:
                got = batch[m][k]
                if antialias:  # DALI's and PyTorch's antialiasing filters differ slightly
                    assert (got - want[m]).abs().mean() < 0.02, m
                else:
                    torch.testing.assert_close(got, want[m], atol=2e-4, rtol=1e-5)
    if mode == "train":
        assert flips > 0
    # published training draws a window per modality; ours (and every test clip) one per clip
    assert (apart > 0) == (mode == "train" and preprocess == "published")


def test_bad_video_travels_as_invalid_with_its_message():
    _, batches = _run_pipeline("test", False)
    from teamnet.dali_loader import decode_error

    k = [int(i) for i in batches[0]["index"]].index(3)
    assert int(batches[0]["valid"][k]) == 0
    assert decode_error(batches[0]["error"][k]) == "/fake/3.mp4: broken on purpose"


def test_epoch_plan_shards_global_batches():
    one = EpochPlan(23, 6, "train", seed=3)
    two = [EpochPlan(23, 6, "train", seed=3, rank=r, world_size=2) for r in range(2)]
    assert one.steps == 3  # the incomplete last batch is dropped
    order = one.order(4).reshape(3, 6)
    shards = [p.order(4).reshape(3, 3) for p in two]
    assert np.array_equal(np.concatenate(shards, axis=1), order)  # rank r: the r-th half of each global batch
    assert len(set(order.ravel())) == 18
    assert not np.array_equal(one.order(4), one.order(5))  # reshuffled each epoch
    test = [EpochPlan(7, 4, "test", rank=r, world_size=2) for r in range(2)]
    seen = np.concatenate([p.order(0) for p in test])
    assert sorted(i for i in seen if i >= 0) == list(range(7)) and (seen == -1).sum() == 1
    with pytest.raises(ValueError, match="multiple"):
        EpochPlan(10, 5, world_size=2)


# -- real clips through the engine -----------------------------------------------------------------------
def _loader(videos, kind, **kw):
    args = dict(mode="train", modalities=MODALITIES, num_segments=2, batch_size=4, size=24, workers=1, kind=kind,
                seed=1)
    args.update(kw)
    return ClipLoader(videos, **args)


@pytest.mark.parametrize("preprocess", ["ours", "published"])
def test_dali_and_fallback_loaders_agree_on_real_clips(tiny_data, preprocess):
    videos = load_split(tiny_data, "train")
    dali = list(_loader(videos, "dali", preprocess=preprocess).epoch(0))
    ref = list(_loader(videos, "torch", preprocess=preprocess).epoch(0))
    assert len(dali) == len(ref) == len(videos) // 4
    for a, b in zip(dali, ref):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.labels, b.labels) and bool(a.valid.all())
        for m in MODALITIES:
            assert a.inputs[m].shape == (4, 2, 3 if m != "mv" else 2, 24, 24)
            # channels-last ready: (N*T, C, H, W) views are channels_last without a copy
            assert a.inputs[m].flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
            assert (a.inputs[m] - b.inputs[m]).abs().mean() < 0.02


def test_resume_offset_gives_the_same_batches(tiny_data):
    videos = load_split(tiny_data, "train")
    full = _loader(videos, "dali")
    list(full.epoch(0))
    epoch1 = list(full.epoch(1))
    resumed = _loader(videos, "dali", first_epoch=1, start_step=2)
    assert resumed.steps(1) == len(epoch1) - 2
    again = list(resumed.epoch(1))
    assert len(again) == len(epoch1) - 2
    for a, b in zip(epoch1[2:], again):
        assert torch.equal(a.indices, b.indices)
        for m in MODALITIES:
            assert torch.equal(a.inputs[m], b.inputs[m])
    with pytest.raises(ValueError, match="in order"):
        next(resumed.epoch(5))


def test_missing_and_corrupt_videos_are_reported(tiny_data, tmp_path):
    videos = load_split(tiny_data, "test")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 1000)
    bad = VideoList([str(garbage), str(tmp_path / "missing.mp4"), *videos.paths[:2]], [0, 1, *videos.labels[:2]],
                    videos.classes)
    batches = list(_loader(bad, "dali", mode="test").epoch(0))
    valid = torch.cat([b.valid for b in batches])
    assert valid.tolist() == [False, False, True, True]
    errors = {}
    for b in batches:
        errors.update(b.errors)
    assert set(errors) == {str(garbage), str(tmp_path / "missing.mp4")}
    assert all(path in msg for path, msg in errors.items())


def test_source_picks_do_not_depend_on_rank(tiny_data):
    # augmentation is drawn from (seed, epoch, video): a clip looks the same whichever rank reads it
    videos = load_split(tiny_data, "train")
    from teamnet.datasets import ClipDataset

    ds = ClipDataset(videos, num_segments=2, modalities=MODALITIES, mode="train")
    one = ClipSource(ds, EpochPlan(len(videos), 4, seed=2), size=24)
    two = ClipSource(ds, EpochPlan(len(videos), 4, seed=2, rank=1, world_size=2), size=24)
    a = one.item(0, 2)  # rank 0 of 1 process, step 0, third clip = rank 1 of 2, step 0, first clip
    b = two.item(0, 0)
    assert a.index == b.index and a.window == b.window
    assert all(np.array_equal(a.arrays[m], b.arrays[m]) for m in MODALITIES)
    assert isinstance(a.window, CropWindow)


def test_published_clip_has_a_window_per_modality():
    source = ClipSource(_FakeDataset(8), EpochPlan(8, 4, "train", seed=5), size=24, preprocess="published")
    items = [source.item(0, k) for k in range(8)]
    apart = [it for it in items if it.valid and len(set(it.windows.values())) > 1]
    assert apart, "eight clips and not one with distinct windows per modality"
    with pytest.raises(ValueError, match="one window per modality"):
        apart[0].window
    # what the pipeline is told: each modality's own window and flip, and MVs not rescaled
    out = source(type("Info", (), {"epoch_idx": 0, "idx_in_epoch": items.index(apart[0])})())
    n = len(MODALITIES)
    crops, flips, mv_scale = out[n:2 * n], out[2 * n:3 * n], out[3 * n]
    for m, crop, flip in zip(MODALITIES, crops, flips):
        assert np.array_equal(crop, apart[0].windows[m].as_array()) and int(flip) == apart[0].windows[m].flip
    assert mv_scale.tolist() == [-1.0 if apart[0].windows["mv"].flip else 1.0, 1.0]
    with pytest.raises(ValueError, match="preprocess must be one of"):
        ClipSource(_FakeDataset(8), EpochPlan(8, 4), size=24, preprocess="BGR")
