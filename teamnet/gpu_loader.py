"""The training loader of the batched GPU engine (``data.engine=gpu``): packets from loader workers, the
GPU stage and the augmentation on the device, no host round trip.

    loader workers (all cores): index -> GOP picks -> CpuStage (decode only) -> ClipPacket
        -> one shared-memory buffer per batch
    training process, a prefetch thread:  GpuStage (its own CUDA streams)  ->  augment_batch in PyTorch on
        a third stream (crop, resize, flip, MV scale/sign, normalise)  ->  queue of `prefetch` ready batches
    training loop: waits for a batch's event on its own stream (device side) and trains on it

Same data as the CPU loader (:mod:`teamnet.dali_loader`): :class:`PacketSource` is a :class:`ClipSource`
whose items are packets, so the order (:class:`EpochPlan`: DDP sharding by rank and world size), the resume
offset (``start_step``), the per-clip random draws from ``(seed, epoch, video)`` (GOP picks through the same
``VideoSampler.picks``, then the crop window and flip) and bad-video handling are the CPU loader's own. A
video that cannot be read travels as an invalid placeholder with its message, and its rows of the batch
are what the CPU path gives a blank placeholder (normalise(0)).

Choices (issue 10), and why:

- **Transport: a torch DataLoader, one shared-memory buffer per batch.** A worker builds a whole batch of
  packets and writes their MV records and YUV planes into one buffer allocated in shared memory, so the
  training process receives a file descriptor, not a pickled copy; the GPU stage then packs the buffer
  into its pinned staging buffer (one memcpy, off the training thread). Measured here (2 workers, 2 MB
  packets, main-thread CPU per packet received and packed): 1.0-1.3 ms when a worker sends a batch of 16,
  1.5-1.6 ms when every packet travels alone; pickled NumPy and shared tensors cost the same at this size.
  DALI's parallel external_source also uses shared memory, but its outputs land in DALI's own buffers
  and the GPU stage, which is not a DALI operator, would have to copy them out again.
- **Augmentation: PyTorch on the device** (:func:`teamnet.batch_augment.augment_batch`), not DALI's GPU
  external_source. DALI would copy the stage's (N, T, H, W, C) outputs (~0.6 GB of int16/uint8 per
  64 x 8 batch at 340x256) into its own buffers, needs dense per-sample arrays (a batch padded to its
  largest clip is not), a separate feed for the per-clip metadata kept in step with the frames, and a
  third memory pool and stream to order against CuPy's and PyTorch's. The PyTorch form costs about
  ten resize calls per modality per batch whatever N is, runs on its own stream, and is the code that
  CI runs on the CPU, where it equals :func:`teamnet.augment.reference_transform` bit for bit. Not
  measured on a GPU (none was available); the DALI graph stays the CPU engine's path.
- **Overlap:** the prefetch thread packs, launches and augments batch k+1 (and k+2) while the training
  loop runs batch k; the only host waits are the GPU stage's own (for a staging buffer's copy two
  batches back). No ``synchronize()``: the consumer's stream waits for each batch's event.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from dataclasses import dataclass, fields
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from gpudecode._cuda import stream_from_torch
from gpudecode.errors import BackendUnavailableError
from gpudecode.packet import ClipPacket, CpuStage, Pixels
from teamnet.augment import CROP_SCALES, CropWindow, draw_window
from teamnet.batch_augment import augment_batch, normalised_zero
from teamnet.clip_source import ClipSource, EpochPlan, Mode
from teamnet.dali_loader import Batch, ClipLoader
from teamnet.datasets import VideoList

_PAYLOAD = ("mv_records", "yuv")  # the packet fields that travel in the shared buffer
_END = object()


# -- the CPU side: packets -------------------------------------------------------------------------------
class PacketDataset:
    """:class:`teamnet.datasets.ClipDataset`'s twin for the GPU path: ``get(i, rng)`` ->
    ``(ClipPacket | None, error | None)``, never raising for a bad video.

    The GOP picks come from the same ``VideoSampler.picks`` the CPU engine uses, with the same ``rng``,
    so both paths draw identical picks (and then identical crop windows) for a clip. Picklable.
    """

    def __init__(self, videos: VideoList, *, num_segments: int, modalities: Sequence[str], mode: Mode = "train",
                 pixels: Pixels = "upload", cache: bool | str = True):
        self.videos = videos
        self.num_segments = num_segments
        self.modalities = tuple(modalities)
        self.mode = mode
        self.pixels = pixels
        self.cache = cache
        self._sampler = self._stage = None

    def __len__(self) -> int:
        return len(self.videos)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_sampler": None, "_stage": None}

    @property
    def stage(self) -> CpuStage:
        if self._stage is None:
            self._stage = CpuStage(pixels=self.pixels)
        return self._stage

    def get(self, index: int, rng: np.random.Generator | None = None) -> tuple[ClipPacket | None, str | None]:
        from gpudecode import GpudecodeError, VideoSampler

        if self._sampler is None:
            self._sampler = VideoSampler(num_segments=self.num_segments, backend="cpu", modalities=self.modalities,
                                         cache=self.cache)
        path = self.videos.paths[index]
        try:  # the steps of VideoSampler.__call__, with the CPU stage in place of the backend
            gop_index = self._sampler.index(path)
            gop_index.check_readable()
            picks = self._sampler.picks(gop_index, mode=self.mode, rng=rng)
            return self.stage(gop_index, picks, modalities=self.modalities), None
        except GpudecodeError as e:
            return None, str(e)
        except Exception as e:  # noqa: BLE001 (same rule as ClipDataset.get: one file never stops a run)
            return None, f"{path}: unexpected {type(e).__name__}: {e}"


@dataclass
class PacketItem:
    """One clip of the GPU path before the GPU stage: its packet (None for a bad video or padding),
    window and bookkeeping; :class:`teamnet.dali_loader.ClipItem` with a packet for arrays."""

    packet: ClipPacket | None
    window: CropWindow
    label: int
    index: int  # video index, -1 for padding
    valid: bool
    error: str = ""


class PacketSource(ClipSource):
    """:class:`ClipSource` over a :class:`PacketDataset`: same order, sharding, resume offset and draws."""

    def item(self, epoch: int, position: int) -> PacketItem:
        index = int(self.epoch_order(epoch)[position])
        mode = self.plan.mode
        if index < 0:
            return PacketItem(None, CropWindow(0, 0, 1, 1), 0, -1, False)
        label = self.dataset.videos.labels[index]
        rng = np.random.default_rng([self.plan.seed, epoch, index]) if mode == "train" else None
        packet, error = self.dataset.get(index, rng=rng)
        if packet is None:
            return PacketItem(None, CropWindow(0, 0, 1, 1), label, index, False, error)
        window = draw_window(mode, packet.height, packet.width, rng, scales=self.scales, flip=self.flip)
        return PacketItem(packet, window, label, index, True)


# -- the hand-off: a batch of packets in one shared-memory buffer ----------------------------------------
def to_wire(items: Sequence[PacketItem], *, shared: bool = True) -> dict:
    """A batch of items as small picklable metadata plus one uint8 tensor holding every packet's MV records
    and YUV planes (allocated in shared memory when ``shared``: DataLoader workers then pass a file
    descriptor, not the bytes)."""
    sizes = [sum(getattr(it.packet, f).nbytes for f in _PAYLOAD) if it.packet is not None else 0 for it in items]
    total = int(sum(sizes))
    if shared and total:
        payload = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(total))
    else:
        payload = torch.empty(total, dtype=torch.uint8)
    buf = payload.numpy()
    metas, at = [], 0
    for it in items:
        p = it.packet
        fields_ = None
        if p is not None:
            fields_ = {f.name: getattr(p, f.name) for f in fields(ClipPacket) if f.name not in _PAYLOAD}
            for name in _PAYLOAD:
                a = getattr(p, name)
                buf[at:at + a.nbytes] = a
                fields_[name] = (at, a.nbytes)
                at += a.nbytes
        metas.append((fields_, it.window, it.label, it.index, it.valid, it.error))
    return {"items": metas, "payload": payload}


def from_wire(wire: dict) -> list[PacketItem]:
    """The items of :func:`to_wire`; packets' MV records and planes are views into the shared buffer."""
    buf = wire["payload"].numpy()
    items = []
    for fields_, window, label, index, valid, error in wire["items"]:
        packet = None
        if fields_ is not None:
            kw = dict(fields_)
            for name in _PAYLOAD:
                at, nbytes = kw[name]
                kw[name] = buf[at:at + nbytes]
            packet = ClipPacket(**kw)
        items.append(PacketItem(packet, window, label, index, valid, error))
    return items


class _Steps(torch.utils.data.Sampler):
    """The positions of one epoch, a list per step: ``[(epoch, position), ...]`` (set before iterating)."""

    def __init__(self, plan: EpochPlan):
        self.plan = plan
        self.epoch = 0
        self.skip = 0

    def __len__(self) -> int:
        return self.plan.steps - self.skip

    def __iter__(self):
        lb = self.plan.local_batch
        for step in range(self.skip, self.plan.steps):
            yield [(self.epoch, step * lb + k) for k in range(lb)]


class _WorkerBatches(torch.utils.data.Dataset):
    """What each DataLoader worker runs: a step's positions -> the wire form of its packets."""

    def __init__(self, source: PacketSource):
        self.source = source

    def __len__(self) -> int:
        return self.source.plan.steps

    def __getitem__(self, positions):
        items = [self.source.item(epoch, position) for epoch, position in positions]
        return to_wire(items, shared=torch.utils.data.get_worker_info() is not None)


def _as_is(wire: dict) -> dict:
    """The DataLoader's per-item conversion, off: its default turns the packets' NumPy arrays into tensors."""
    return wire


def _tie_to_parent(_worker_id: int) -> None:
    """Workers die with the training process even when it is SIGKILLed (Linux; elsewhere a no-op)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# -- the device side --------------------------------------------------------------------------------------
def gpu_stage_available(device_id: int | None) -> bool:
    """Whether ``data.engine=auto`` can take the GPU path: a CUDA device and a working CuPy."""
    if device_id is None:
        return False
    try:
        from gpudecode._cuda import import_cupy

        import_cupy()
    except Exception:  # BackendUnavailableError, or a broken install raising something else
        return False
    return True


class _HostOrder:
    """Stream ordering on the host executor: everything has happened by the time a call returns."""

    def tensor(self, a) -> torch.Tensor:
        return torch.from_numpy(a)

    def begin(self, ready) -> None:
        pass

    def end(self) -> Any:
        return None

    def hand_over(self, event, batch: Batch) -> None:
        pass


class TorchCuda:
    """torch's CUDA side of the hand-over: the augmentation's stream, the training loop's stream, DLPack
    import and ``record_stream``. Kept apart from :class:`_CudaOrder` because it is the one part a CuPy
    double cannot stand in for (CPU-only torch in CI): tests replace it and run the CuPy side as is."""

    def __init__(self, device: torch.device):
        self.device = device
        self.stream = torch.cuda.Stream(device)

    def context(self):
        return torch.cuda.stream(self.stream)

    def device_context(self):
        return torch.cuda.device(self.device)

    def consumer(self):
        return torch.cuda.current_stream(self.device)

    def tensor(self, a, cp_stream) -> torch.Tensor:
        with cp_stream:  # CuPy's DLPack export orders against its current stream: this one
            return torch.from_dlpack(a)

    def record(self, tensors, consumer) -> None:
        for x in tensors:
            x.record_stream(consumer)  # PyTorch's allocator keeps them until the consumer is done


class _CudaOrder:
    """Stream ordering on a device, without host waits (its CuPy side runs on tests/cudadouble in CI).

    The augmentation runs on its own torch stream, which waits for the GPU stage's ``ready`` event; an
    event after the augmentation orders (a) the GPU stage's compute stream, so that CuPy's pool reuses
    the stage's output memory only after the augmentation read it, and (b) the training loop's stream,
    which also records the batch's tensors so PyTorch's allocator keeps them until it is done.
    """

    def __init__(self, executor, torch_side):
        self.cp = executor.cp
        self.executor = executor
        self.torch = torch_side
        self.device = torch_side.device
        self.stream = torch_side.stream
        self.cp_stream = stream_from_torch(self.cp, self.stream, executor.device)

    def tensor(self, a) -> torch.Tensor:
        return self.torch.tensor(a, self.cp_stream)

    def begin(self, ready) -> None:
        if ready is not None:
            with self.cp.cuda.Device(self.executor.device):
                self.cp_stream.wait_event(ready)

    def end(self):
        with self.cp.cuda.Device(self.executor.device):  # events belong to the current device
            event = self.cp.cuda.Event(disable_timing=True)
            event.record(self.cp_stream)
        self.executor.wait(event)
        return event

    def hand_over(self, event, batch: Batch) -> None:
        consumer = self.torch.consumer()
        with self.cp.cuda.Device(self.executor.device):
            stream_from_torch(self.cp, consumer, self.executor.device).wait_event(event)
        self.torch.record(batch.inputs.values(), consumer)


def _torch_side(executor, device_id: int | None):
    """The torch half of the device hand-over (tests/cudadouble replaces this with its own)."""
    return TorchCuda(torch.device("cuda", device_id if device_id is not None else executor.device))


# -- the loader -------------------------------------------------------------------------------------------
class GpuClipLoader(ClipLoader):
    """:class:`ClipLoader` for ``engine="gpu"``: ``ClipLoader(..., engine="gpu")`` returns one.

    Same constructor and API (``epoch``, ``steps``, ``plan``, ``describe``); ``kind`` (DALI or not) does not
    apply: this path augments in PyTorch on the device. Extra keyword arguments: ``executor`` (default
    ``gpudecode._cuda.CupyExecutor(device_id)``; ``gpudecode.executor.HostExecutor()`` runs the same path
    on the CPU, a test instrument), ``pixels`` (only "upload" so far) and ``prefetch`` (batches kept ready
    ahead of the training loop, besides the one being made; default 2).
    """

    def __init__(self, videos: VideoList, *, mode: Mode, modalities: Sequence[str], num_segments: int,
                 batch_size: int, size: int, scales: Sequence[float] = CROP_SCALES, flip: bool = True,
                 antialias: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1, first_epoch: int = 0,
                 start_step: int = 0, workers: int = 0, threads: int = 0, device_id: int | None = None,
                 engine: str = "gpu", kind: str = "auto", cache: bool | str = True, executor=None,
                 pixels: Pixels = "upload", prefetch: int = 2, preprocess: str = "ours"):
        from gpudecode.stage import GpuStage

        if preprocess != "ours":
            # The batched augmentation implements the shared crop/flip of "ours" only.
            raise ValueError(f"data.engine=gpu supports data.preprocess='ours' only, got {preprocess!r}: "
                             "evaluate published weights with data.engine=cpu")
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1, got {prefetch}")
        if pixels == "nvdec":
            raise ValueError("pixels='nvdec' is not wired into the training loader yet: use 'upload'")
        if executor is None:
            if device_id is None:
                raise BackendUnavailableError(None, "data.engine=gpu needs a CUDA device, and this run has none",
                                              "set device=cuda on a machine with an NVIDIA GPU, or data.engine=cpu")
            from gpudecode._cuda import CupyExecutor

            executor = CupyExecutor(device_id)
        self.kind = "gpu"
        self.videos = videos
        self.mode = mode
        self.plan = EpochPlan(len(videos), batch_size, mode, seed, rank, world_size)
        dataset = PacketDataset(videos, num_segments=num_segments, modalities=modalities, mode=mode, pixels=pixels,
                                cache=cache)
        self.source = PacketSource(dataset, self.plan, size=size, scales=scales, flip=flip, first_epoch=first_epoch,
                                   start_step=start_step)
        self.size = size
        self.antialias = antialias
        local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", world_size if world_size > 1 else 1))
        self.workers = workers or max(1, (os.cpu_count() or 1) // max(1, local_ranks))
        self.threads = threads
        self.device_id = device_id
        self.engine = "gpu"
        self.pixels = pixels
        self.prefetch = prefetch
        self.executor = executor
        self.stage = GpuStage(executor, pixels=pixels, backend="gpu")
        on_device = getattr(executor, "name", "") != "host"
        if on_device:
            self._order = _CudaOrder(executor, _torch_side(executor, device_id))
            self.device = self._order.device
        else:
            self._order, self.device = _HostOrder(), torch.device("cpu")
        self._blank = {m: normalised_zero(m, size, device=self.device) for m in self.modalities}
        self._steps = _Steps(self.plan)
        self._loader = None
        self._next_epoch = first_epoch
        self._start_step = start_step
        self._iterator = None

    def describe(self) -> str:
        """One line for the start of a run: which loader, engine and device this is."""
        ex = self.executor
        where = getattr(ex, "device_name", None) or ("the host executor (a test instrument)" if ex.name == "host"
                                                      else f"{ex.name} executor")
        return (f"loader: torch workers + gpu stage on {where} ({self.pixels}), augmentation in PyTorch on "
                f"{self.device}, engine: gpu, {self.workers} workers")

    # -- the CPU side ----------------------------------------------------------------------------------
    def _dataloader(self) -> torch.utils.data.DataLoader:
        if self._loader is None:
            # fork: cheap, and the workers never touch CUDA (PyAV and NumPy only); spawn where fork is missing.
            context = "fork" if sys.platform.startswith("linux") else "spawn"
            self._loader = torch.utils.data.DataLoader(
                _WorkerBatches(self.source), batch_size=None, sampler=self._steps, num_workers=self.workers,
                persistent_workers=True, prefetch_factor=2, multiprocessing_context=context,
                worker_init_fn=_tie_to_parent, collate_fn=_as_is)
        return self._loader

    def packet_batches(self, epoch: int) -> Iterator[list[PacketItem]]:
        """The packet items of each step of ``epoch`` as the workers make them (before the GPU stage);
        does not advance the epoch counter (tests, benchmarks of the CPU side)."""
        self._steps.epoch = epoch
        self._steps.skip = self._start_step if epoch == self.source.first_epoch else 0
        for wire in self._dataloader():
            yield from_wire(wire)

    # -- the device side -------------------------------------------------------------------------------
    def stage_batch(self, items: Sequence[PacketItem]):
        """The GPU stage over the valid items' packets -> (SampleBatch or None, their rows in ``items``)."""
        rows = [k for k, it in enumerate(items) if it.packet is not None]
        if not rows:
            return None, rows
        return self.stage([items[k].packet for k in rows]), rows

    def make_batch(self, items: Sequence[PacketItem]) -> tuple[Batch, Any]:
        """GPU stage and augmentation of one step's items -> (Batch on the device, its ready event)."""
        n, t, s = len(items), self.source.dataset.num_segments, self.size
        samples, rows = self.stage_batch(items)
        with (self._order.torch.context() if isinstance(self._order, _CudaOrder) else contextlib.nullcontext()):
            if samples is not None:
                self._order.begin(samples.ready)
                frames = {m: self._order.tensor(getattr(samples, m)) for m in self.modalities}
                aug = augment_batch(frames, [items[k].window for k in rows], s, antialias=self.antialias)
            if len(rows) == n:
                out = aug
            else:  # bad videos and padding: what a blank placeholder becomes on the CPU path
                out = {m: b.expand(n, t, *b.shape).contiguous() for m, b in self._blank.items()}
                if rows:
                    where = torch.tensor(rows, device=self.device)
                    for m in out:
                        out[m][where] = aug[m]
            event = self._order.end()
        errors = {self.videos.paths[it.index]: it.error for it in items if not it.valid and it.index >= 0}
        batch = Batch({m: x.permute(0, 1, 4, 2, 3) for m, x in out.items()},
                      torch.tensor([it.label for it in items], dtype=torch.int64),
                      torch.tensor([it.index for it in items], dtype=torch.int64),
                      torch.tensor([it.valid for it in items], dtype=torch.bool), errors)
        return batch, event

    def epoch(self, epoch: int) -> Iterator[Batch]:
        if not self._begin_epoch(epoch):
            return
        packets = self.packet_batches(epoch)
        first = next(packets)  # starts (or resumes) the workers here, not in the prefetch thread
        ready: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()

        def put(x) -> bool:
            while not stop.is_set():
                try:
                    ready.put(x, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                with (self._order.torch.device_context() if isinstance(self._order, _CudaOrder)
                      else contextlib.nullcontext()):
                    for items in _chain([first], packets):
                        if not put(self.make_batch(items)):
                            return
                put(_END)
            except BaseException as e:  # noqa: BLE001 (re-raised in the training thread)
                put(e)

        thread = threading.Thread(target=produce, name="gpu-loader-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                x = ready.get()
                if x is _END:
                    break
                if isinstance(x, BaseException):
                    raise x
                batch, event = x
                self._order.hand_over(event, batch)
                yield batch
        finally:
            stop.set()
            thread.join()
            packets.close()

    def close(self) -> None:
        self._loader = None  # persistent workers end with their DataLoader


def _chain(first, rest):
    yield from first
    yield from rest


__all__ = ["GpuClipLoader", "PacketDataset", "PacketItem", "PacketSource", "from_wire", "gpu_stage_available",
           "to_wire"]
