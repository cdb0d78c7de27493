"""The GPU path of the training loader without a GPU: packets from real worker processes, the batched GPU
stage on the host executor, the batched augmentation in PyTorch on the CPU.

Against the CPU loader: the same batches (order, sharding, resume, bad-video placeholders and messages)
and the same augmentation draws; the stage's outputs bit-exact with the CPU engine before augmentation,
and the augmented batches bit-exact with the torch fallback (both run the reference transform's ops).
Only CuPy's own calls and the CUDA stream ordering are left unexecuted here.
"""

from __future__ import annotations

from functools import partialmethod
from pathlib import Path

import numpy as np
import pytest
import torch

from gpudecode.errors import BackendUnavailableError
from gpudecode.executor import HostExecutor
from teamnet.augment import draw_window, reference_transform
from teamnet.batch_augment import augment_batch
from teamnet.dali_loader import ClipLoader, ClipSource
from teamnet.datasets import ClipDataset, VideoList, load_split
from teamnet.gpu_loader import GpuClipLoader, PacketItem, from_wire, to_wire

MODALITIES = ("iframe", "mv", "residual")
REPO = Path(__file__).resolve().parents[1]


def _args(**kw):
    args = dict(mode="train", modalities=MODALITIES, num_segments=2, batch_size=4, size=24, workers=2, seed=1)
    args.update(kw)
    return args


def _gpu(videos, **kw) -> GpuClipLoader:
    loader = ClipLoader(videos, engine="gpu", executor=HostExecutor(), **_args(**kw))
    assert isinstance(loader, GpuClipLoader)
    return loader


def _reference(videos, **kw) -> ClipLoader:
    """The CPU path whose augmentation is the reference transform (the torch fallback)."""
    return ClipLoader(videos, engine="cpu", kind="torch", **_args(**{"workers": 1, **kw}))


def _assert_same_batches(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.valid, b.valid) and a.errors == b.errors
        for m in MODALITIES:
            assert a.inputs[m].shape == b.inputs[m].shape
            assert a.inputs[m].flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(a.inputs[m], b.inputs[m]), m


# -- the batched augmentation -----------------------------------------------------------------------------
@pytest.mark.parametrize("antialias", [False, True])
def test_batched_augmentation_equals_reference_bit_for_bit(antialias):
    rng = np.random.default_rng(0)
    n, t, h, w = 7, 2, 40, 52
    arrays = {"iframe": rng.integers(0, 256, (n, t, h, w, 3)).astype(np.uint8),
              "mv": rng.integers(-40, 40, (n, t, h, w, 2)).astype(np.int16),
              "residual": rng.integers(-255, 256, (n, t, h, w, 3)).astype(np.int16)}
    # clip 0 is smaller than the batch (padded to the largest clip): its window lies inside its own frames
    windows = [draw_window("train", 30, 36, rng)] + [draw_window("train", h, w, rng) for _ in range(n - 2)]
    windows.append(draw_window("test", h, w, None))
    assert any(win.flip for win in windows) and len({(win.width, win.height) for win in windows}) > 1
    got = augment_batch({m: torch.from_numpy(a) for m, a in arrays.items()}, windows, 24, antialias=antialias)
    for i, win in enumerate(windows):
        want = reference_transform(win, 24, antialias=antialias, **{m: a[i] for m, a in arrays.items()})
        for m in MODALITIES:
            assert torch.equal(got[m][i], want[m]), (i, m)


def test_batched_augmentation_resizes_once_per_window_size(monkeypatch):
    """The number of resize calls follows the distinct window sizes, not the number of clips."""
    import teamnet.batch_augment as ba

    calls = []
    real = ba.F.interpolate
    monkeypatch.setattr(ba.F, "interpolate", lambda x, **kw: calls.append(x.shape[0]) or real(x, **kw))
    rng = np.random.default_rng(1)
    windows = [draw_window("train", 32, 32, rng, scales=(1.0, 0.75), flip=True) for _ in range(16)]
    sizes = {(w.width, w.height) for w in windows}
    augment_batch({"mv": torch.zeros(16, 3, 32, 32, 2, dtype=torch.int16)}, windows, 16)
    assert len(calls) == len(sizes) <= 4 and sum(calls) == 16 * 3  # 2 scales: 4 (height, width) pairs


def test_batched_augmentation_rejects_a_window_outside_the_frames():
    frames = {"mv": torch.zeros(1, 2, 16, 16, 2, dtype=torch.int16)}
    with pytest.raises(ValueError, match="outside"):
        augment_batch(frames, [draw_window("test", 20, 20, None)], 8)


# -- the hand-off ---------------------------------------------------------------------------------------
def test_packets_survive_the_shared_buffer(tiny_data):
    videos = load_split(tiny_data, "train")
    loader = _gpu(videos)
    items = [loader.source.item(0, k) for k in range(3)]
    items.append(PacketItem(None, items[0].window, 2, 5, False, "a bad video"))
    wire = to_wire(items, shared=True)
    assert wire["payload"].is_shared()
    back = from_wire(wire)
    for a, b in zip(items, back):
        assert (a.window, a.label, a.index, a.valid, a.error) == (b.window, b.label, b.index, b.valid, b.error)
        if a.packet is None:
            assert b.packet is None
            continue
        for name, value in vars(a.packet).items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(getattr(b.packet, name), value, err_msg=name)
            elif name != "stats":
                assert getattr(b.packet, name) == value, name


# -- the loader against the CPU path -------------------------------------------------------------------
def test_same_draws_and_bit_exact_samples_before_augmentation(tiny_data):
    """Worker processes make the packets; the GPU stage's samples equal the CPU engine's, clip by clip,
    and every clip has the CPU path's crop window and flip."""
    videos = load_split(tiny_data, "train")
    loader = _gpu(videos)
    cpu = ClipSource(ClipDataset(videos, num_segments=2, modalities=MODALITIES, mode="train"), loader.plan, size=24)
    flips = steps = 0
    for step, items in enumerate(loader.packet_batches(0)):
        samples, rows = loader.stage_batch(items)
        assert rows == [0, 1, 2, 3]
        # regression: the DataLoader's default conversion once turned the packets' arrays into tensors
        assert all(isinstance(getattr(it.packet, f), np.ndarray) for it in items for f in ("gops", "frame_keys", "yuv"))
        for k, it in enumerate(items):
            want = cpu.item(0, step * 4 + k)
            assert (it.index, it.label, it.window, it.valid) == (want.index, want.label, want.window, want.valid)
            got = samples.sample(k)
            for m in MODALITIES:
                np.testing.assert_array_equal(getattr(got, m), want.arrays[m], err_msg=f"{videos.paths[it.index]} {m}")
            flips += it.window.flip
        steps += 1
    assert steps == loader.plan.steps == 6 and flips > 0
    loader.close()


def test_same_batches_as_the_cpu_path_after_augmentation(tiny_data):
    videos = load_split(tiny_data, "train")
    gpu = _gpu(videos)
    ref = _reference(videos)
    for epoch in (0, 1):  # epochs reshuffle and redraw; persistent workers serve both
        _assert_same_batches(list(gpu.epoch(epoch)), list(ref.epoch(epoch)))
    gpu.close()


def test_dali_cpu_path_sees_the_same_clips(tiny_data):
    pytest.importorskip("nvidia.dali")
    videos = load_split(tiny_data, "train")
    gpu = list(_gpu(videos).epoch(0))
    dali = list(ClipLoader(videos, engine="cpu", kind="dali", **_args(workers=1)).epoch(0))
    assert len(gpu) == len(dali)
    for a, b in zip(gpu, dali):
        assert torch.equal(a.indices, b.indices) and torch.equal(a.labels, b.labels)
        for m in MODALITIES:  # DALI's antialiasing filter differs slightly from PyTorch's (test_dali.py)
            assert (a.inputs[m] - b.inputs[m]).abs().mean() < 0.02


def test_bad_videos_and_padding_are_placeholders_as_on_the_cpu_path(tiny_data, tmp_path):
    videos = load_split(tiny_data, "test")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00" * 1000)
    bad = VideoList([videos.paths[0], str(garbage), str(tmp_path / "missing.mp4"), *videos.paths[1:3]],
                    [videos.labels[0], 0, 1, *videos.labels[1:3]], videos.classes)
    got = list(_gpu(bad, mode="test").epoch(0))  # 5 videos, batch 4: the second batch has 3 padding rows
    _assert_same_batches(got, list(_reference(bad, mode="test").epoch(0)))
    assert torch.cat([b.valid for b in got]).tolist() == [True, False, False, True, True, False, False, False]
    assert torch.cat([b.indices for b in got]).tolist()[5:] == [-1, -1, -1]
    errors = {k: v for b in got for k, v in b.errors.items()}
    assert set(errors) == {str(garbage), str(tmp_path / "missing.mp4")}
    assert all(path in message for path, message in errors.items())


def test_resume_and_sharding_as_on_the_cpu_path(tiny_data):
    videos = load_split(tiny_data, "train")
    full = _gpu(videos)
    list(full.epoch(0))
    epoch1 = list(full.epoch(1))
    resumed = _gpu(videos, first_epoch=1, start_step=2)
    assert resumed.steps(1) == len(epoch1) - 2
    again = list(resumed.epoch(1))
    _assert_same_batches(again, epoch1[2:])
    with pytest.raises(ValueError, match="in order"):
        next(resumed.epoch(5))
    # two ranks of batch 2 read the two halves of each global batch of 4
    ranks = [list(_gpu(videos, rank=r, world_size=2, first_epoch=1).epoch(1)) for r in range(2)]
    for step, batch in enumerate(epoch1):
        assert torch.equal(torch.cat([ranks[0][step].indices, ranks[1][step].indices]), batch.indices)
        for m in MODALITIES:
            assert torch.equal(torch.cat([ranks[0][step].inputs[m], ranks[1][step].inputs[m]]), batch.inputs[m])
    # leaving an epoch early stops the prefetch thread; the next epoch starts cleanly
    loader = _gpu(videos)
    it = loader.epoch(0)
    next(it)
    it.close()
    assert len(list(loader.epoch(1))) == loader.plan.steps


def test_describe_and_dispatch(tiny_data):
    videos = load_split(tiny_data, "train")
    assert "gpu stage on the host executor" in _gpu(videos).describe()
    assert "2 workers" in _gpu(videos).describe()
    cpu = _reference(videos)
    assert type(cpu) is ClipLoader and cpu.describe().startswith("loader: torch fallback")
    assert type(ClipLoader(videos, engine="auto", kind="torch", **_args())) is ClipLoader  # no CUDA device here
    with pytest.raises(BackendUnavailableError, match="CUDA device"):
        ClipLoader(videos, engine="gpu", **_args())
    with pytest.raises(ValueError, match="preprocess='ours' only"):
        ClipLoader(videos, engine="gpu", executor=HostExecutor(), preprocess="published", **_args())


def test_training_runs_on_the_gpu_path(tiny_data, tmp_path, monkeypatch):
    """train.py end to end with data.engine=gpu (the host executor standing in for CuPy)."""
    from teamnet.config import load_config
    from teamnet.train import train

    import teamnet.runsetup

    monkeypatch.setattr(GpuClipLoader, "__init__", partialmethod(GpuClipLoader.__init__, executor=HostExecutor()))
    # the up-front check (CuPy, a CUDA device) passes as it would on a GPU machine
    monkeypatch.setattr(teamnet.runsetup, "resolve_engine", lambda cfg, device: "gpu")
    cfg = load_config(REPO / "configs" / "synthetic.yaml", [
        f"data.root={tiny_data.root}", "data.num_segments=2", "data.test_segments=2", "data.crop_size=32",
        "data.scale_size=32", "data.workers=2", "data.engine=gpu", "optim.batch_size=4", "optim.epochs=1",
        "model.kwargs={iframe_depth: 18, mv_depth: 18, residual_depth: 18}", f"out_dir={tmp_path / 'run'}",
        "progress=false", "tensorboard=false", "threads=1"])
    metrics = train(cfg)
    assert 0.0 <= metrics["top1"] <= 1.0
    assert (tmp_path / "run" / "last.pt").exists()



@pytest.mark.cuda
def test_device_path_equals_host_path(tiny_data, cuda_double):
    """On a GPU: CuPy stage + CUDA augmentation against the host executor + CPU augmentation (bit-exact before
    augmentation; CUDA's resize rounds differently from the CPU's, so close after it); no synchronize()."""
    videos = load_split(tiny_data, "train")
    dev = ClipLoader(videos, engine="gpu", device_id=0, **_args())
    host = _gpu(videos)
    on = "cpu" if cuda_double is not None else "cuda"  # the double keeps torch on the CPU (tests/cudadouble)
    assert "gpu stage on" in dev.describe() and (f"{on}:0" if on == "cuda" else on) in dev.describe()
    for got, want in zip(dev.packet_batches(0), host.packet_batches(0)):
        a, _ = dev.stage_batch(got)
        b, _ = host.stage_batch(want)
        for m in MODALITIES:
            np.testing.assert_array_equal(dev.executor.to_host(getattr(a, m)), getattr(b, m))
    for a, b in zip(dev.epoch(0), host.epoch(0)):
        assert a.inputs["iframe"].device.type == on and torch.equal(a.indices, b.indices)
        for m in MODALITIES:
            torch.testing.assert_close(a.inputs[m].cpu(), b.inputs[m], atol=1e-4, rtol=1e-4)
