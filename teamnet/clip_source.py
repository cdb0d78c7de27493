"""Data order and the per-clip source: which video each rank reads at each step, and that video's sample.

Data order (:class:`EpochPlan`): each epoch is a permutation of the videos cut into global batches of
``batch_size``; rank ``r`` of ``W`` reads the ``r``-th slice of each global batch. One process with batch
B and W processes with batch B/W each therefore see the same samples at every step.

Everything random is drawn in Python from ``(seed, epoch, video index)`` (:meth:`ClipSource.item`): the
engine's GOP/position picks, then the crop window(s) and the flip, which the augmentation receives as
inputs. So a clip's augmentation does not depend on which worker, rank or process read it, and a resumed
run sees exactly the batches the uninterrupted one would have seen. A bad video becomes a placeholder
that its batch marks invalid. :mod:`teamnet.dali_loader` (and :mod:`teamnet.gpu_loader`) turn items into
batches.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from gpudecode.workers import crash_if_testing
from teamnet.augment import CROP_SCALES, CropWindow, Preprocess, check_preprocess, draw_windows
from teamnet.datasets import ClipDataset

Mode = Literal["train", "test"]
_CHANNELS = {"iframe": 3, "mv": 2, "residual": 3}
_DTYPES = {"iframe": np.uint8, "mv": np.int16, "residual": np.int16}
#: Bytes of a bad video's error message carried through the pipeline.
ERROR_BYTES = 320
# What DALI's parallel external_source and torch's DataLoader raise when one of their workers dies.
_PLACEHOLDER = 16  # side of the blank frames that stand in for a bad video


# -- data order -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpochPlan:
    """Which video each rank reads at each step of an epoch.

    Training: a permutation seeded by ``(seed, epoch)``, the last incomplete global batch dropped.
    Testing: every video once in list order, the last global batch padded with ``-1`` (no video).
    """

    num_videos: int
    batch_size: int  # global
    mode: Mode = "train"
    seed: int = 0
    rank: int = 0
    world_size: int = 1

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.batch_size % self.world_size:
            raise ValueError(f"batch_size ({self.batch_size}) must be a positive multiple of the number of "
                             f"processes ({self.world_size})")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size}), got {self.rank}")
        if self.mode == "train" and self.num_videos < self.batch_size:
            raise ValueError(f"{self.num_videos} training videos do not fill one batch of {self.batch_size}: "
                             "lower optim.batch_size")

    @property
    def local_batch(self) -> int:
        return self.batch_size // self.world_size

    @property
    def steps(self) -> int:
        if self.mode == "train":
            return self.num_videos // self.batch_size
        return -(-self.num_videos // self.batch_size)

    def global_order(self, epoch: int) -> np.ndarray:
        """(steps, batch_size) video indices of all ranks; -1 is padding."""
        n, b = self.num_videos, self.batch_size
        if self.mode == "train":
            perm = np.random.default_rng([self.seed, epoch]).permutation(n)
            return perm[: self.steps * b].reshape(self.steps, b)
        order = np.full(self.steps * b, -1, np.int64)
        order[:n] = np.arange(n)
        return order.reshape(self.steps, b)

    def order(self, epoch: int) -> np.ndarray:
        """This rank's video indices for the epoch, step after step (``steps * local_batch``)."""
        lb = self.local_batch
        return np.ascontiguousarray(self.global_order(epoch)[:, self.rank * lb:(self.rank + 1) * lb]).ravel()


# -- the source -------------------------------------------------------------------------------------------
def _error_bytes(message: str) -> np.ndarray:
    raw = message.encode("utf-8", "replace")[: ERROR_BYTES - 1]
    out = np.zeros(ERROR_BYTES, np.uint8)
    out[: len(raw)] = np.frombuffer(raw, np.uint8)
    return out


def decode_error(row) -> str:
    raw = bytes(np.asarray(row, np.uint8).tolist())
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


@dataclass
class ClipItem:
    """One clip before the pipeline: raw engine arrays, a window per modality, and bookkeeping."""

    arrays: dict[str, np.ndarray]
    windows: dict[str, CropWindow]
    label: int
    index: int  # video index, -1 for padding
    valid: bool
    error: str = ""

    @property
    def window(self) -> CropWindow:
        """The clip's one window (``preprocess="ours"``, and any test clip)."""
        distinct = set(self.windows.values())
        if len(distinct) != 1:
            raise ValueError(f"this clip has one window per modality ({self.windows}): read .windows")
        return distinct.pop()


class ClipSource:
    """Per-sample source for DALI's (parallel) external_source, and for the fallback loader.

    Called with DALI's ``SampleInfo``: epoch ``first_epoch + epoch_idx``, position ``idx_in_epoch`` (the
    first epoch starts ``start_step`` steps in, for resuming); raises StopIteration at the epoch's end.
    """

    def __init__(self, dataset: ClipDataset, plan: EpochPlan, *, size: int, scales: Sequence[float] = CROP_SCALES,
                 flip: bool = True, first_epoch: int = 0, start_step: int = 0, preprocess: Preprocess = "ours"):
        self.dataset = dataset
        self.plan = plan
        self.size = size
        self.scales = tuple(scales)
        self.flip = flip
        self.preprocess = check_preprocess(preprocess)
        self.first_epoch = first_epoch
        self.start_step = start_step
        self._orders: dict[int, np.ndarray] = {}
        #: video index -> message, for videos that killed a loader worker (read as bad from then on)
        self.crashed: dict[int, str] = {}
        self._owner = os.getpid()
        self._checked = self._owner

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.dataset.modalities

    def epoch_order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: self.plan.order(epoch)}  # one epoch at a time is all a worker needs
        return self._orders[epoch]

    def item(self, epoch: int, position: int) -> ClipItem:
        """The ``position``-th clip of this rank in ``epoch``; never raises for a bad video."""
        index = int(self.epoch_order(epoch)[position])
        mode = self.plan.mode
        if index < 0:
            return self._placeholder(-1, 0, "")
        label = self.dataset.videos.labels[index]
        if index in self.crashed:
            return self._placeholder(index, label, self.crashed[index])
        crash_if_testing(self.dataset.videos.paths[index])  # test-only hook (GPUDECODE_TEST_CRASH_ON)
        rng = np.random.default_rng([self.plan.seed, epoch, index]) if mode == "train" else None
        sample, error = self.dataset.get(index, rng=rng)
        if sample is None:
            return self._placeholder(index, label, error)
        arrays = {m: getattr(sample, m) for m in self.modalities}
        h, w = next(iter(arrays.values())).shape[1:3]
        windows = draw_windows(mode, h, w, rng, self.modalities, preprocess=self.preprocess, scales=self.scales,
                               flip=self.flip)
        return ClipItem(arrays, windows, label, index, True)

    def _probe(self, job: tuple[int, int]) -> bool:
        return self.item(*job).valid

    def find_crashes(self, epoch: int, positions: Sequence[int], workers: int) -> dict:
        """Read ``positions`` of ``epoch`` again, in worker processes that may die; return the videos
        that kill their worker, as ``{video index: CorruptVideoError}``."""
        from gpudecode.errors import CorruptVideoError
        from gpudecode.workers import WorkerDied, run_isolated

        order = self.epoch_order(epoch)
        out = {}
        for (_, position), _, error in run_isolated(self._probe, [(epoch, p) for p in positions], workers=workers):
            if isinstance(error, WorkerDied):
                index = int(order[position])
                path = self.dataset.videos.paths[index]
                out[index] = CorruptVideoError(path, error.reason, "the file is damaged or hostile; drop it")
        return out

    def _placeholder(self, index: int, label: int, error: str) -> ClipItem:
        t = self.dataset.num_segments
        arrays = {m: np.zeros((t, _PLACEHOLDER, _PLACEHOLDER, _CHANNELS[m]), _DTYPES[m]) for m in self.modalities}
        window = CropWindow(0, 0, _PLACEHOLDER, _PLACEHOLDER)
        return ClipItem(arrays, {m: window for m in self.modalities}, label, index, False, error)

    def mv_scale(self, window: CropWindow) -> np.ndarray:
        """What MV x and y are multiplied by after the resize: ``[±sx, sy]`` (ours: stretched with the
        resize, x negated on flip); ``[±1, 1]`` for ``"published"`` (not rescaled, x still negated)."""
        if self.preprocess == "published":
            sx = sy = 1.0
        else:
            sx, sy = self.size / window.width, self.size / window.height
        return np.array([-sx if window.flip else sx, sy], np.float32)

    def _tie_to_owner(self) -> None:
        """In a worker process: die with the training process, even when it is SIGKILLed (DALI's idle
        workers otherwise outlive it). Linux only; elsewhere a no-op."""
        self._checked = os.getpid()
        if os.getppid() != self._owner:
            os._exit(0)  # orphaned already
        try:
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def __call__(self, info):
        if self._checked != os.getpid():
            self._tie_to_owner()
        epoch = self.first_epoch + info.epoch_idx
        position = info.idx_in_epoch + (self.start_step * self.plan.local_batch if info.epoch_idx == 0 else 0)
        if position >= self.plan.steps * self.plan.local_batch:
            raise StopIteration
        it = self.item(epoch, position)
        mods = self.modalities
        mv_window = it.windows.get("mv", CropWindow(0, 0, self.size, self.size))
        return (*(it.arrays[m] for m in mods), *(it.windows[m].as_array() for m in mods),
                *(np.array(int(it.windows[m].flip), np.int32) for m in mods), self.mv_scale(mv_window),
                np.array(it.label, np.int64), np.array(it.index, np.int64), np.array(int(it.valid), np.uint8),
                _error_bytes(it.error))


__all__ = ["ClipItem", "ClipSource", "EpochPlan", "ERROR_BYTES", "Mode", "decode_error"]
