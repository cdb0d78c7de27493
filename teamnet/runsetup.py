"""Everything a training run needs before its first step, checked before anything is written.

:func:`prepare_run` goes in this order, so that a mistake costs seconds and leaves no trace:

1. the machine: ``device=cuda`` and ``data.engine=gpu`` need a usable GPU, ``data.loader=dali`` needs DALI
   (:class:`~gpudecode.errors.BackendUnavailableError` with its remedy);
2. the resume checkpoint: readable, and of the same model as the config (an ``out_dir`` holding another
   model's run is refused, :class:`~teamnet.errors.RunDirError`);
3. the data: both splits parse, the test split is not empty, one batch fits the training split;
4. the model: built, initialised (``model.init_from``) and given the resumed weights;
5. only then ``out_dir``: ``config.yaml``, and ``metrics.jsonl`` cut back to the resumed step.

The training loop itself is in :mod:`teamnet.train`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn

from gpudecode.errors import BackendUnavailableError
from teamnet.checkpoint import (choose_preprocess, init_from_checkpoint, load_state_dict_checked, preprocess_of,
                                save_checkpoint, unwrap_model)
from teamnet.config import TrainConfig, config_to_dict
from teamnet.datasets import BadVideoReport, VideoList, ensure_synthetic, load_split
from teamnet.errors import CheckpointError, ConfigError, DataError, RunDirError, checkpoint_errors
from teamnet.models import build_model, list_models

_CUDA_REMEDY = "use device=cpu (or auto), or install a CUDA build of PyTorch on a machine with an NVIDIA GPU"


# -- processes and devices --------------------------------------------------------------------------------
class Dist:
    """Rank, world size and device of this process; initialises torch.distributed under torchrun."""

    def __init__(self, device_choice: str = "auto"):
        self.rank = int(os.environ.get("RANK", 0))
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        use_cuda = device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available())
        if device_choice == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailableError(None, "device=cuda but PyTorch sees no CUDA device", _CUDA_REMEDY)
        self.device = torch.device("cuda", self.local_rank) if use_cuda else torch.device("cpu")
        if self.world_size > 1:
            # NCCL for GPUs, gloo for CPU processes.
            backend = "nccl" if use_cuda else "gloo"
            if use_cuda:
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend, rank=self.rank, world_size=self.world_size)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_sum(self, x: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            x = x.clone()
            dist.all_reduce(x)
        return x

    def gather_objects(self, obj: Any) -> list[Any]:
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def resolve_amp(choice: str, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use a GradScaler): bf16 where the GPU has it, fp16 + scaler on V100-class
    GPUs (no bf16), off on the CPU unless asked."""
    if choice == "off" or (choice == "auto" and device.type != "cuda"):
        return None, False
    if choice == "auto":
        try:
            bf16 = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch
            bf16 = torch.cuda.is_bf16_supported()
        choice = "bf16" if bf16 else "fp16"
    dtype = torch.bfloat16 if choice == "bf16" else torch.float16
    return dtype, choice == "fp16" and device.type == "cuda"


def resolve_engine(cfg: TrainConfig, device: torch.device) -> str:
    """The gpudecode backend the loader uses: ``engine=gpu`` checked here (CuPy, a device, ``device=cuda``),
    ``auto`` decided once here (GPU when usable and training on CUDA, else CPU) instead of in every worker."""
    from teamnet.dali_loader import dali_available

    engine = cfg.data.engine
    if cfg.data.loader == "dali" and not dali_available():
        raise BackendUnavailableError(None, "data.loader=dali but nvidia-dali is not installed",
                                      "pip install nvidia-dali-cuda130 (-cuda120 on V100), or set data.loader=torch")
    if engine == "cpu":
        return "cpu"
    from gpudecode._cuda import import_cupy

    try:
        import_cupy()
    except BackendUnavailableError as e:
        if engine == "gpu":
            raise BackendUnavailableError(None, f"data.engine=gpu: {e.reason}",
                                          f"{e.remedy}; or set data.engine=cpu") from None
        return "cpu"
    if device.type != "cuda":
        if engine == "gpu":
            raise ConfigError(f"data.engine=gpu decodes into GPU memory, but the run is on {device} "
                              f"(device={cfg.device})", "set device=cuda (or auto), or data.engine=cpu")
        return "cpu"
    return "gpu"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    np_state = np.random.get_state()
    state["numpy"] = {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                      "has_gauss": int(np_state[3]), "gauss": float(np_state[4])}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "python" in state:
        py = state["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state(("MT19937", s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


# -- model --------------------------------------------------------------------------------------------------
def build(cfg: TrainConfig, num_classes: int) -> nn.Module:
    if cfg.model.name not in list_models():
        raise ConfigError(f"model.name must be one of {list_models()}, got {cfg.model.name!r}")
    try:
        model = build_model(cfg.model.name, num_classes=num_classes, **cfg.model.kwargs)
    except (TypeError, ValueError) as e:  # an unknown or out-of-range builder argument
        raise ConfigError(f"model.kwargs={cfg.model.kwargs!r} do not fit {cfg.model.name}: {e}") from e
    if cfg.model.init_from:
        # e.g. Kinetics weights for UCF-101: everything but the classifiers (init_exclude), with a report;
        # ours or a published TEAM-Net/TSN checkpoint
        with checkpoint_errors(cfg.model.init_from):
            report = init_from_checkpoint(model, cfg.model.init_from, exclude=cfg.model.init_exclude)
        if not report.loaded:
            raise CheckpointError(f"model.init_from={cfg.model.init_from}: no tensor fits {cfg.model.name}",
                                  "is it a checkpoint of this model? published ones load with load_published()")
        if int(os.environ.get("RANK", 0)) == 0:
            print(f"initialised from {cfg.model.init_from}: {report}", flush=True)
    return model


# -- optimiser ----------------------------------------------------------------------------------------------
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def param_groups(model: nn.Module, optim) -> list[dict[str, Any]]:
    """SGD parameter groups of the published recipe (DESIGN §3), each with its ``lr_mult``:

    - ``weights``: everything else, base lr, weight decay;
    - ``norm_and_bias``: biases and normalisation parameters, base lr, no weight decay (unless
      ``optim.decay_norm_and_bias``);
    - ``head_weights`` / ``head_biases``: the new classifier layers (``heads.*``), ``optim.head_lr_mult``
      times the base lr; head biases without weight decay either (unless ``decay_norm_and_bias``).
    """
    norm_params = {id(p) for m in model.modules() if isinstance(m, _NORMS) for p in m.parameters(recurse=False)}
    decay, exempt = optim.weight_decay, optim.weight_decay if optim.decay_norm_and_bias else 0.0
    head_w, head_b = optim.head_lr_mult
    groups = {"weights": ([], 1.0, decay), "norm_and_bias": ([], 1.0, exempt),
              "head_weights": ([], head_w, decay), "head_biases": ([], head_b, exempt)}
    for name, p in unwrap_model(model).named_parameters():
        if not p.requires_grad:
            continue
        bias_like = id(p) in norm_params or name.endswith(".bias") or p.ndim <= 1
        if name.startswith("heads."):
            groups["head_biases" if bias_like else "head_weights"][0].append(p)
        else:
            groups["norm_and_bias" if bias_like else "weights"][0].append(p)
    return [{"params": params, "name": name, "lr_mult": mult, "weight_decay": wd}
            for name, (params, mult, wd) in groups.items() if params]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The scheduled base ``lr`` times each group's ``lr_mult``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)


def make_optimizer(model: nn.Module, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    """``optim.name``: SGD with momentum (the paper's) or AdamW, over :func:`param_groups`."""
    groups = param_groups(model, cfg.optim)
    if cfg.optim.name == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=cfg.optim.weight_decay)
    else:
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=cfg.optim.momentum, weight_decay=cfg.optim.weight_decay)
    set_lr(optimizer, lr)
    return optimizer


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any], path: Path) -> None:
    """The resumed optimiser state; one written with other parameter groups is a :class:`CheckpointError`."""
    saved = [g.get("name") for g in state["param_groups"]]
    ours = [g.get("name") for g in optimizer.param_groups]
    if saved != ours:
        raise CheckpointError(f"{path}: its optimiser has the parameter groups {saved}, this code makes {ours} "
                              "(the published recipe's groups, optim.head_lr_mult)",
                              'start over with resume="" or a new out_dir (model.init_from=... keeps the weights)')
    optimizer.load_state_dict(state)


# -- checkpoints --------------------------------------------------------------------------------------------
@dataclass
class EpochTally:
    """What an epoch's summary needs, kept across an interruption: clips and loss sum over the whole
    epoch, seconds, seconds waiting for data, bad videos."""

    clips: float = 0.0
    loss_sum: float = 0.0
    seconds: float = 0.0
    data_seconds: float = 0.0
    bad: BadVideoReport = field(default_factory=BadVideoReport)

    def state(self) -> dict[str, Any]:
        return {"clips": self.clips, "loss_sum": self.loss_sum, "seconds": self.seconds,
                "data_seconds": self.data_seconds, "bad_videos": dict(self.bad.errors), "bad_count": self.bad.count}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> EpochTally:
        if not state:
            return cls()
        return cls(float(state["clips"]), float(state["loss_sum"]), float(state["seconds"]),
                   float(state["data_seconds"]), BadVideoReport(dict(state["bad_videos"]), int(state["bad_count"])))

    def merged(self, env: Dist) -> EpochTally:
        """The whole job's tally (a collective: every rank calls it at the same step)."""
        sums = env.all_sum(torch.tensor([self.clips, self.loss_sum], dtype=torch.float64))
        bad = BadVideoReport()
        for part in env.gather_objects(self.bad):
            bad.update(part)
        return EpochTally(float(sums[0]), float(sums[1]), self.seconds, self.data_seconds, bad)


def save_state(path: Path, model, optimizer, scaler, cfg: TrainConfig, *, epoch: int, step: int, global_step: int,
               best: float, classes: Sequence[str], metrics: dict | None = None, tally: EpochTally | None = None,
               pending_eval: bool = False) -> None:
    """Everything a resume needs; ``epoch``/``step``: where the next step starts. ``tally``: the epoch so far
    (mid-epoch checkpoints); ``pending_eval``: the evaluation after epoch ``epoch`` has not run yet."""
    extra = {
        "step_in_epoch": step,
        "global_step": global_step,
        "scaler": scaler.state_dict(),
        "rng": rng_state(),
        "best_top1": best,
        "classes": list(classes),
        "epoch_tally": tally.state() if tally is not None else None,
        "pending_eval": pending_eval,
    }
    save_checkpoint(path, model, epoch=epoch, metrics=metrics or {}, config=config_to_dict(cfg),
                    optimizer=optimizer.state_dict(), extra=extra)


def find_resume(cfg: TrainConfig) -> Path | None:
    if not cfg.resume:
        return None
    if cfg.resume == "auto":
        path = Path(cfg.out_dir) / "last.pt"
        return path if path.exists() else None
    path = Path(cfg.resume)
    if not path.exists():
        raise FileNotFoundError(2, "resume checkpoint not found", cfg.resume)
    return path


@dataclass
class Resume:
    """Where a resumed run starts (``epoch``/``step`` of the next step) and what it carries over."""

    path: Path
    checkpoint: dict[str, Any]
    epoch: int
    step: int
    global_step: int
    best: float
    tally: EpochTally
    pending_eval: bool
    metrics: dict[str, Any]


def read_resume(cfg: TrainConfig) -> Resume | None:
    """The checkpoint to resume from, checked to be a run of the configured model (nothing is written)."""
    path = find_resume(cfg)
    if path is None:
        return None
    with checkpoint_errors(path):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        extra = checkpoint["extra"]
        resume = Resume(path, checkpoint, int(checkpoint["epoch"]), int(extra["step_in_epoch"]),
                        int(extra["global_step"]), float(extra["best_top1"]),
                        EpochTally.from_state(extra.get("epoch_tally")), bool(extra.get("pending_eval", False)),
                        dict(checkpoint.get("metrics") or {}))
    groups = [g.get("name") for g in (checkpoint.get("optimizer") or {}).get("param_groups", [])]
    if None in groups:
        raise CheckpointError(f"{path}: written before the optimiser had the published recipe's parameter groups "
                              "(optim.head_lr_mult), so its optimiser state cannot be resumed",
                              'start over with resume="" or a new out_dir; model.init_from=... keeps the weights')
    recorded = (checkpoint.get("config") or {}).get("model") or {}
    wanted = config_to_dict(cfg)["model"]
    theirs = (recorded.get("name"), recorded.get("kwargs") or {})
    if theirs != (wanted["name"], wanted["kwargs"]):
        what = f"{theirs[0]} {theirs[1]}" if theirs[1] else f"{theirs[0]}"
        ours = f"{wanted['name']} {wanted['kwargs']}" if wanted["kwargs"] else wanted["name"]
        if cfg.resume == "auto":
            raise RunDirError(f"out_dir={cfg.out_dir} holds a run of {what}, not of {ours}; nothing was written",
                              "choose a new out_dir, or set resume=\"\" to start over there (overwriting it)")
        raise CheckpointError(f"resume={cfg.resume} is a run of {what}, not of {ours}")
    return resume


# -- data -----------------------------------------------------------------------------------------------------
def _list_name(cfg: TrainConfig, subset: str) -> str:
    d = cfg.data
    name = d.train_list if subset == "train" else d.test_list
    return name or f"the {d.dataset} {subset} split {d.split}"


def load_data(cfg: TrainConfig, env: Dist) -> tuple[VideoList, VideoList]:
    """Both splits, checked to make a run: readable lists, a test video at least, one full batch."""
    splits = {}
    for subset in ("train", "test"):
        try:
            splits[subset] = load_split(cfg.data, subset)
        except FileNotFoundError as e:
            raise DataError(f"data ({cfg.data.dataset}, root {cfg.data.root}): {e.filename or ''}"
                            f"{': ' if e.filename else ''}{e.strerror or e}",
                            "check data.root, data.splits and the list names") from None
        except (ValueError, TypeError) as e:
            raise DataError(f"data: {e}") from e
    train, test = splits["train"], splits["test"]
    if len(test) == 0:
        raise DataError(f"the test split ({_list_name(cfg, 'test')}) lists no video",
                        "a synthetic dataset needs 3 clips per class or more for a test split")
    if len(train) < cfg.optim.batch_size:
        raise ConfigError(f"optim.batch_size={cfg.optim.batch_size} is larger than the training split "
                          f"({len(train)} videos in {_list_name(cfg, 'train')})", "lower optim.batch_size")
    if cfg.optim.batch_size % env.world_size:
        raise ConfigError(f"optim.batch_size={cfg.optim.batch_size} must be a multiple of the number of "
                          f"processes ({env.world_size})")
    return train, test


# -- the whole setup --------------------------------------------------------------------------------------------
@dataclass
class Run:
    """A checked run: data, model (with resumed or initial weights), the resume point, the engine."""

    cfg: TrainConfig
    env: Dist
    out_dir: Path
    train_videos: VideoList
    test_videos: VideoList
    model: nn.Module
    engine: str
    resume: Resume | None

    @property
    def classes(self) -> list[str]:
        return self.train_videos.classes


def prepare_run(cfg: TrainConfig, env: Dist) -> Run:
    """Check everything, then write ``config.yaml`` (rank 0); see the module docstring for the order."""
    main = env.is_main
    if cfg.model.name not in list_models():
        raise ConfigError(f"model.name must be one of {list_models()}, got {cfg.model.name!r}")
    engine = resolve_engine(cfg, env.device)
    # data.preprocess "auto": the input conventions init_from's weights were trained with (published
    # checkpoints: "published"), else ours; resolved before the config is written or saved anywhere.
    weights = None
    if cfg.model.init_from:
        with checkpoint_errors(cfg.model.init_from):
            weights = preprocess_of(cfg.model.init_from)
    preprocess, note = choose_preprocess(cfg.data.preprocess, weights, cfg.model.init_from)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, preprocess=preprocess))
    if main and note:
        print(note, flush=True)
    resume = read_resume(cfg)
    out_dir = Path(cfg.out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"out_dir={cfg.out_dir} is a file, not a folder")
    if main and cfg.data.dataset == "synthetic":
        ensure_synthetic(cfg.data, progress=cfg.progress)
    env.barrier()
    train_videos, test_videos = load_data(cfg, env)

    seed_everything(cfg.seed)
    model = build(cfg, len(train_videos.classes))
    if resume is not None:
        with checkpoint_errors(resume.path):
            load_state_dict_checked(model, resume.checkpoint["state_dict"], what=str(resume.path))

    if main:  # everything checked: now the run may write
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    env.barrier()
    return Run(cfg, env, out_dir, train_videos, test_videos, model, engine, resume)


def describe_loader(loader, engine: str, cfg: TrainConfig, env: Dist, amp_dtype) -> str:
    """The start line: which loader, engine, workers, AMP and device this run really uses."""
    if loader.kind == "dali":
        kind = f"DALI ({'GPU' if loader.device_id is not None else 'CPU'} pipeline)"
    else:
        why = ", DALI not installed" if cfg.data.loader == "auto" else ""
        kind = f"torch DataLoader (reference transform{why})"
    if engine == "gpu":
        workers = "decoding in the main process"
    else:
        workers = f"{loader.workers} decoding worker{'s' if loader.workers != 1 else ''}"
    engine_text = f"engine {engine}" + (" (auto)" if cfg.data.engine == "auto" else "")
    return (f"loader: {kind}, {engine_text}, {workers}; device {env.device} x{env.world_size}; "
            f"AMP {str(amp_dtype).removeprefix('torch.') if amp_dtype else 'off'}")


def loggable(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics with NaN replaced by None, so metrics.jsonl stays strict JSON."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return {k: clean(v) for k, v in metrics.items()}


__all__ = ["Dist", "EpochTally", "Resume", "Run", "describe_loader", "find_resume", "load_data", "load_optimizer_state",
           "loggable", "make_optimizer", "param_groups", "prepare_run", "read_resume", "resolve_amp", "resolve_engine",
           "save_state", "seed_everything", "set_lr"]
