"""Clips to PyTorch: the engine feeds a DALI pipeline that crops, flips, rescales and normalises them.

    engine (gpudecode)  ->  external_source  ->  slice (one window per clip)  ->  resize  ->  flip
        -> MV x/y scaled with the resize (x negated on flip)  ->  normalise (DESIGN §2)  ->  PyTorch

That is ``preprocess="ours"``; ``"published"`` feeds published weights the inputs they were trained on
(one window per modality, MVs quantised before the resize and not rescaled, BGR residual), with the
arithmetic of :func:`teamnet.augment.reference_transform`.

Which clip each rank reads at each step, and every random draw, come from :mod:`teamnet.clip_source`
(:class:`EpochPlan`, :class:`ClipSource`): DALI holds no random state, and a resumed run sees exactly the
batches the uninterrupted one would have seen.

The CPU engine runs in DALI's parallel external_source workers (``py_num_workers`` processes, by default
this machine's cores over the local ranks). With the GPU engine the source returns device arrays and runs
in the main process. ``device_id=None`` runs the whole pipeline on the CPU (tests, CPU-only machines).

Without DALI, :class:`ClipLoader` falls back to a ``torch.utils.data.DataLoader`` that applies
:func:`teamnet.augment.reference_transform` (the fallback is the reference, slower, same numbers up to
the antialiasing filter).
"""

from __future__ import annotations

import copy
import os
import sys
from dataclasses import dataclass, field
from typing import Iterator, Literal, Sequence

import numpy as np
import torch

from teamnet.augment import CROP_SCALES, Preprocess, check_preprocess, reference_transform
from teamnet.clip_source import ClipItem, ClipSource, EpochPlan, Mode, _error_bytes, decode_error
from teamnet.datasets import ClipDataset, VideoList

#: What DALI's and torch's loaders raise when a worker process died under them
_WORKER_DIED = ("Worker data receiving interrupted", "DataLoader worker")


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
        import nvidia.dali.plugin.pytorch  # noqa: F401
    except ImportError:
        return False
    return True


# -- the DALI pipeline ------------------------------------------------------------------------------------
def augment_clip(inputs: dict, crops: dict, flips: dict, mv_scale, *, size: int, antialias: bool = True,
                 preprocess: Preprocess = "ours") -> dict:
    """Per-clip processing shared by training and testing (DALI graph): crop window -> resize to
    ``size`` x ``size`` -> flip -> MV scale -> normalise. ``crops[m]`` is modality ``m``'s ``[x, y, w, h]``
    (CPU), ``flips[m]`` an int (CPU), ``mv_scale`` ``[±sx, sy]`` on the inputs' device. The arithmetic of
    :func:`teamnet.augment.reference_transform` for either ``preprocess``."""
    from nvidia.dali import fn, math, types

    from teamnet.augment import IMAGENET_MEAN, IMAGENET_STD, MV_BOUND, MV_STEP

    # Decided once at build time: which input convention the graph implements.
    published = check_preprocess(preprocess) == "published"
    mean = np.asarray(IMAGENET_MEAN, np.float32) * 255
    std = np.asarray(IMAGENET_STD, np.float32)
    out = {}
    for name, x in inputs.items():
        crop = crops[name]
        x = fn.slice(x, crop[0:2], crop[2:4], axes=[2, 1], normalized_anchor=False, normalized_shape=False)
        if published and name == "mv":
            # quantise_mv before the resize: truncate toward zero, written with floor/ceil because
            # DALI has no trunc() and its float->int cast may round differently on CPU and GPU.
            v = x * MV_STEP
            v = math.max(math.floor(v), 0.0) + math.min(math.ceil(v), 0.0)
            x = math.clamp(v + 128.0, 0.0, 255.0)
        x = fn.resize(x, size=[size, size], antialias=antialias, dtype=types.FLOAT)
        x = fn.flip(x, horizontal=flips[name])
        if name == "iframe":
            x = (x - mean) / (std * 255)
        elif name == "mv" and published:
            x = ((x - 128.0) * mv_scale + 128.0) / 255.0 - 0.5  # mv_scale = [±1, 1]: the code flip only
        elif name == "mv":
            x = (math.clamp(x * mv_scale, -MV_BOUND, MV_BOUND) * (127.5 / MV_BOUND) + 128.0) / 255.0 - 0.5
        else:
            if published:  # RGB -> BGR
                x = fn.stack(x[:, :, :, 2], x[:, :, :, 1], x[:, :, :, 0], axis=3)
            x = (math.clamp(x + 128.0, 0.0, 255.0) / 255.0 - 0.5) / std
        out[name] = x
    return out


def build_pipeline(source: ClipSource, *, batch_size: int, size: int, antialias: bool = True,
                   device_id: int | None = None, workers: int = 1, threads: int = 1, gpu_engine: bool = False,
                   prefetch: int = 2):
    """The DALI pipeline over ``source``; outputs in :data:`OUTPUTS` order, frames (N, T, H, W, C)."""
    from nvidia.dali import fn, pipeline_def

    mods = source.modalities
    n = len(mods)
    # Decided once at build time: where the data lives and whether the source runs in workers.
    parallel = not gpu_engine
    start_method = "fork" if device_id is None else "spawn"  # fork is cheap but unsafe after CUDA init

    @pipeline_def(batch_size=batch_size, num_threads=threads, device_id=device_id, prefetch_queue_depth=prefetch,
                  py_num_workers=max(1, workers), py_start_method=start_method)
    def clip_pipeline():
        outs = fn.external_source(source=source, num_outputs=3 * n + 5, batch=False, parallel=parallel,
                                  device="gpu" if gpu_engine else "cpu", layout=["FHWC"] * n + [None] * (2 * n + 5))
        frames = dict(zip(mods, outs[:n]))
        crops, flips = dict(zip(mods, outs[n:2 * n])), dict(zip(mods, outs[2 * n:3 * n]))
        mv_scale, label, index, valid, error = outs[3 * n:]
        if device_id is not None and not gpu_engine:
            frames = {m: x.gpu() for m, x in frames.items()}
        if device_id is not None:
            mv_scale = mv_scale.gpu()
        out = augment_clip(frames, crops, flips, mv_scale, size=size, antialias=antialias,
                           preprocess=source.preprocess)
        return (*(out[m] for m in mods), label, index, valid, error)

    return clip_pipeline()


# -- what the training loop gets --------------------------------------------------------------------------
@dataclass
class Batch:
    """One step's clips on this rank.

    ``inputs[m]`` is ``(N, T, C, H, W)`` float32, a channels-last view (``flatten(0, 1)`` gives an
    ``(N*T, C, H, W)`` tensor in ``torch.channels_last``); ``valid`` is False for bad videos and padding;
    ``errors`` maps each bad video's path to the reason.
    """

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    indices: torch.Tensor
    valid: torch.Tensor
    errors: dict[str, str] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Batch:
        nb = torch.device(device).type == "cuda"
        return Batch({m: x.to(device, non_blocking=nb) for m, x in self.inputs.items()},
                     self.labels.to(device), self.indices.to(device), self.valid.to(device), self.errors)


def _batch_from(frames: dict[str, torch.Tensor], labels, indices, valid, errors_rows, videos: VideoList) -> Batch:
    inputs = {m: x.permute(0, 1, 4, 2, 3) for m, x in frames.items()}  # (N,T,H,W,C) -> (N,T,C,H,W) view
    valid_b = valid.reshape(-1).bool()
    idx = indices.reshape(-1).long()
    errors = {}
    for k in torch.nonzero(~valid_b).reshape(-1).tolist():
        if int(idx[k]) >= 0:
            errors[videos.paths[int(idx[k])]] = decode_error(errors_rows[k].cpu().numpy())
    return Batch(inputs, labels.reshape(-1).long(), idx, valid_b, errors)


class ClipLoader:
    """Batches of one rank, epoch by epoch, from DALI or from the reference fallback.

    >>> loader = ClipLoader(videos, mode="train", modalities=("iframe", "mv", "residual"), num_segments=3,
    ...                     batch_size=8, size=64)
    >>> for batch in loader.epoch(0): ...

    Epochs must be read in order, starting at ``first_epoch`` (whose first ``start_step`` steps are
    skipped, to resume). ``kind="auto"`` takes DALI when it is installed. ``preprocess``: ``"ours"`` or
    ``"published"`` (the input conventions of published weights, :mod:`teamnet.augment`). ``engine="gpu"``
    (or "auto" with a CUDA device and CuPy) returns a :class:`teamnet.gpu_loader.GpuClipLoader`: the
    batched GPU engine.
    """

    def __new__(cls, *args, engine: str = "cpu", device_id: int | None = None, **kwargs):
        if cls is ClipLoader:
            from teamnet.gpu_loader import GpuClipLoader, gpu_stage_available

            if engine == "gpu" or (engine == "auto" and gpu_stage_available(device_id)):
                cls = GpuClipLoader
        return super().__new__(cls)

    def __init__(self, videos: VideoList, *, mode: Mode, modalities: Sequence[str], num_segments: int,
                 batch_size: int, size: int, scales: Sequence[float] = CROP_SCALES, flip: bool = True,
                 antialias: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1, first_epoch: int = 0,
                 start_step: int = 0, workers: int = 0, threads: int = 0, device_id: int | None = None,
                 engine: str = "cpu", kind: Literal["auto", "dali", "torch"] = "auto", cache: bool | str = True,
                 preprocess: Preprocess = "ours"):
        if kind not in ("auto", "dali", "torch"):
            raise ValueError(f"kind must be 'auto', 'dali' or 'torch', got {kind!r}")
        if kind == "auto":
            kind = "dali" if dali_available() else "torch"
        if kind == "dali" and not dali_available():
            raise ImportError("data.loader='dali' but nvidia-dali is not installed: pip install "
                              "nvidia-dali-cuda130 (or -cuda120 on V100), or set data.loader=torch")
        self.kind = kind
        self.videos = videos
        self.mode = mode
        self.plan = EpochPlan(len(videos), batch_size, mode, seed, rank, world_size)
        dataset = ClipDataset(videos, num_segments=num_segments, modalities=modalities, mode=mode,
                              backend=engine, cache=cache)
        self.source = ClipSource(dataset, self.plan, size=size, scales=scales, flip=flip, first_epoch=first_epoch,
                                 start_step=start_step, preprocess=preprocess)
        self.size = size
        self.antialias = antialias
        local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", world_size if world_size > 1 else 1))
        self.workers = workers or max(1, (os.cpu_count() or 1) // max(1, local_ranks))
        self.threads = threads or max(1, min(4, self.workers))
        self.device_id = device_id
        self.engine = engine
        self._next_epoch = first_epoch
        self._start_step = start_step
        self._iterator = None
        self._pipe_source = self.source  # what the DALI pipeline reads: a restarted copy after a worker died

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.source.modalities

    def describe(self) -> str:
        """One line for the start of a run: which loader, engine and device this is."""
        if self.kind == "dali":
            return f"loader: DALI ({'CPU' if self.device_id is None else 'GPU'}), engine: {self.engine}, {self.workers} workers"
        return (f"loader: torch fallback (reference transform on the CPU, no DALI), engine: {self.engine}, "
                f"{self.workers} workers")

    def steps(self, epoch: int | None = None) -> int:
        """Steps of an epoch (the first one, when resuming, has ``start_step`` fewer)."""
        skip = self._start_step if epoch is not None and epoch == self.source.first_epoch else 0
        return self.plan.steps - skip

    def __len__(self) -> int:
        return self.plan.steps

    def _dali_iterator(self):
        if self._iterator is None:
            from nvidia.dali.plugin.pytorch import DALIGenericIterator

            pipe = build_pipeline(self._pipe_source, batch_size=self.plan.local_batch, size=self.size,
                                  antialias=self.antialias, device_id=self.device_id, workers=self.workers,
                                  threads=self.threads, gpu_engine=self.engine == "gpu")
            names = [*self.modalities, "label", "index", "valid", "error"]
            self._iterator = DALIGenericIterator(pipe, names, auto_reset=True)
        return self._iterator

    def _begin_epoch(self, epoch: int) -> bool:
        """Check that epochs are read in order and move on; False when ``epoch`` has no step left."""
        if epoch != self._next_epoch:
            raise ValueError(f"epochs must be read in order: expected epoch {self._next_epoch}, got {epoch}")
        self._next_epoch += 1
        return self.steps(epoch) > 0

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The batches of ``epoch`` (train order and augmentation depend on it; test order does not)."""
        if not self._begin_epoch(epoch):
            return
        step = self._start_step if epoch == self.source.first_epoch else 0
        while True:
            try:
                for batch in self._dali_epoch() if self.kind == "dali" else self._torch_epoch(epoch, step):
                    yield batch
                    step += 1
                return
            except RuntimeError as e:
                if not any(s in str(e) for s in _WORKER_DIED):
                    raise
                self._recover(epoch, step, e)

    def _recover(self, epoch: int, step: int, error: BaseException) -> None:
        """A worker died (a decoder crash): find the video that kills it, mark it bad (here and in the
        index cache) and restart the epoch's remaining steps without it; or, when no video crashes when
        read again, end the run with a message that names the videos it was reading."""
        lb = self.plan.local_batch
        in_flight = 2 * max(1, self.workers) + 4  # batches that may have been in flight (prefetch, workers)
        positions = range(step * lb, min(self.plan.steps, step + in_flight) * lb)
        crashes = self.source.find_crashes(epoch, positions, workers=self.workers)
        if not crashes:
            order = self.source.epoch_order(epoch)
            names = [self.videos.paths[int(order[p])] for p in positions[:lb] if order[p] >= 0]
            raise RuntimeError(f"a loader worker died in epoch {epoch} at step {step}, reading one of {names} "
                               f"(or a later batch); none of the {len(positions)} videos read from there crashes when "
                               "read again. Restart to resume from the last checkpoint") from error
        store = None
        if self.source.dataset.cache:  # remembered like an indexing failure while the file is unchanged
            from gpudecode.index import resolve_cache

            store = resolve_cache(self.source.dataset.cache)
        for index, crash in crashes.items():
            print(f"loader: a worker died reading {crash}; marked bad, the epoch goes on", file=sys.stderr, flush=True)
            self.source.crashed[index] = str(crash)
            if store is not None:
                store.put(crash.path, crash)
        if self.kind == "dali":
            self._pipe_source = copy.copy(self.source)  # shares `crashed`
            self._pipe_source.first_epoch, self._pipe_source.start_step, self._pipe_source._orders = epoch, step, {}
            self._iterator = None

    def _dali_epoch(self) -> Iterator[Batch]:
        for out in self._dali_iterator():
            d = out[0]
            yield _batch_from({m: d[m] for m in self.modalities}, d["label"], d["index"], d["valid"], d["error"],
                              self.videos)

    def _torch_epoch(self, epoch: int, step: int) -> Iterator[Batch]:
        dataset = _FallbackDataset(self.source, epoch, step * self.plan.local_batch, self.antialias)
        # Always worker processes, one at least: a decoder that crashes on a hostile file then takes a
        # worker down, not the run (_recover finds the file and the epoch goes on).
        loader = torch.utils.data.DataLoader(dataset, batch_size=self.plan.local_batch, shuffle=False,
                                             num_workers=max(1, self.workers), collate_fn=_collate)
        for frames, labels, indices, valid, errors in loader:
            yield _batch_from(frames, labels, indices, valid, errors, self.videos)

    def close(self) -> None:
        self._iterator = None


class _FallbackDataset(torch.utils.data.Dataset):
    """The fallback (no DALI): the same source items through :func:`reference_transform`."""

    def __init__(self, source: ClipSource, epoch: int, skip: int, antialias: bool):
        self.source, self.epoch, self.skip, self.antialias = source, epoch, skip, antialias

    def __len__(self) -> int:
        return self.source.plan.steps * self.source.plan.local_batch - self.skip

    def __getitem__(self, k: int):
        it = self.source.item(self.epoch, self.skip + k)
        frames = reference_transform(it.windows, self.source.size, antialias=self.antialias,
                                     preprocess=self.source.preprocess, **it.arrays)
        return frames, it.label, it.index, int(it.valid), _error_bytes(it.error)


def _collate(items):
    frames = {m: torch.stack([f[m] for f, *_ in items]) for m in items[0][0]}
    labels = torch.tensor([i[1] for i in items], dtype=torch.int64)
    indices = torch.tensor([i[2] for i in items], dtype=torch.int64)
    valid = torch.tensor([i[3] for i in items], dtype=torch.uint8)
    errors = torch.from_numpy(np.stack([i[4] for i in items]))
    return frames, labels, indices, valid, errors


__all__ = [
    "Batch",
    "ClipItem",
    "ClipLoader",
    "ClipSource",
    "EpochPlan",
    "augment_clip",
    "build_pipeline",
    "dali_available",
    "decode_error",
]
