"""Train TEAM-Net, TSN or CoViAR on compressed-domain video (I-frames, motion vectors, residuals).

One process (CPU or one GPU); the synthetic config generates its dataset first when it is absent:

    python -m teamnet.train --config configs/synthetic.yaml
    python -m teamnet.train --config configs/ucf101_teamnet.yaml --set data.root=/data/ucf101_mpeg4 --set data.split=2

All GPUs of a machine, or several CPU processes (gloo) to try DDP without a GPU:

    torchrun --standalone --nproc_per_node=8 -m teamnet.train --config configs/kinetics400_teamnet.yaml
    torchrun --standalone --nproc_per_node=2 -m teamnet.train --config configs/synthetic.yaml

A stopped run resumes exactly where it was when started again with the same ``out_dir`` (``resume: auto``):
weights, optimiser, AMP scaler, schedule, RNG states and the position inside the epoch. Evaluate only:
``--set optim.epochs=0 --set model.init_from=runs/x/best.pt``.

Outputs in ``out_dir``: ``last.pt`` (every epoch, atomically), ``best.pt`` (best top-1), ``metrics.jsonl``,
``config.yaml`` (the resolved configuration), and TensorBoard events when tensorboard is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch import nn

from teamnet.augment import eval_views
from teamnet.checkpoint import (choose_preprocess, init_from_checkpoint, load_state_dict_checked, preprocess_of,
                                save_checkpoint, unwrap_model)
from teamnet.config import TrainConfig, config_to_dict, load_config
from teamnet.dali_loader import ClipLoader
from teamnet.datasets import BadVideoReport, VideoList, ensure_synthetic, load_split
from teamnet.metrics import ClassificationMeter, MetricsLog, format_metrics
from teamnet.models import build_model


# -- processes and devices --------------------------------------------------------------------------------
class Dist:
    """Rank, world size and device of this process; initialises torch.distributed under torchrun."""

    def __init__(self, device_choice: str = "auto"):
        self.rank = int(os.environ.get("RANK", 0))
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        use_cuda = device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available())
        if device_choice == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device=cuda but no CUDA device is visible: use device=cpu or auto")
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


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Step schedule: ``lr`` divided by ``1 / lr_decay`` at each epoch of ``lr_steps`` already reached."""
    return cfg.optim.lr * cfg.optim.lr_decay ** sum(epoch >= s for s in cfg.optim.lr_steps)


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
    model = build_model(cfg.model.name, num_classes=num_classes, **cfg.model.kwargs)
    if cfg.model.init_from:
        # e.g. Kinetics weights for UCF-101: everything but the classifiers (init_exclude), with a report;
        # ours or a published TEAM-Net/TSN checkpoint
        report = init_from_checkpoint(model, cfg.model.init_from, exclude=cfg.model.init_exclude)
        if int(os.environ.get("RANK", 0)) == 0:
            print(f"initialised from {cfg.model.init_from}: {report}", flush=True)
    return model


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:  # TSN's partial BN: keep the statistics the weights were trained with
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


# -- checkpoints --------------------------------------------------------------------------------------------
def save_state(path: Path, model, optimizer, scaler, cfg: TrainConfig, *, epoch: int, step: int, global_step: int,
               best: float, classes: Sequence[str], metrics: dict | None = None) -> None:
    """Everything a resume needs; ``epoch``/``step``: where the next step starts."""
    extra = {
        "step_in_epoch": step,
        "global_step": global_step,
        "scaler": scaler.state_dict(),
        "rng": rng_state(),
        "best_top1": best,
        "classes": list(classes),
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
        raise FileNotFoundError(f"resume={cfg.resume!r} does not exist")
    return path


# -- evaluation ---------------------------------------------------------------------------------------------
def evaluate(model: nn.Module, loader: ClipLoader, round_: int, cfg: TrainConfig, env: Dist,
             amp_dtype: torch.dtype | None, num_classes: int, *, progress: bool = False) -> tuple[dict, BadVideoReport]:
    """Multi-view test: each clip's logits averaged over ``test_crops`` crops of ``test_segments`` segments."""
    from tqdm.auto import tqdm

    inner = unwrap_model(model)
    model.eval()
    if inner.num_segments is not None:
        inner.set_num_segments(cfg.data.test_segments)
    meter = ClassificationMeter(num_classes)
    bad = BadVideoReport()
    autocast = torch.autocast(env.device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    with torch.no_grad(), autocast:
        for batch in tqdm(loader.epoch(round_), total=loader.steps(round_), desc="test", leave=False,
                          disable=not progress, dynamic_ncols=True):
            bad.update(batch.errors)
            batch = batch.to(env.device)
            views = eval_views(batch.inputs, cfg.data.crop_size, cfg.data.test_crops)
            logits = sum(inner(**v).float() for v in views) / len(views)
            meter.update(logits, batch.labels, batch.valid)
    meter.all_reduce()
    if inner.num_segments is not None:
        inner.set_num_segments(cfg.data.num_segments)
    merged = BadVideoReport()
    for part in env.gather_objects(bad):
        merged.update(part)
    return meter.compute(), merged


# -- training -----------------------------------------------------------------------------------------------
def _loader(cfg: TrainConfig, videos: VideoList, mode: str, modalities, env: Dist, **kw) -> ClipLoader:
    d = cfg.data
    train = mode == "train"
    return ClipLoader(
        videos, mode=mode, modalities=modalities,
        num_segments=d.num_segments if train else d.test_segments,
        batch_size=cfg.optim.batch_size if train else (d.eval_batch_size or cfg.optim.batch_size),
        size=d.crop_size if train else d.scale_size, scales=d.scales, flip=d.flip and train,
        antialias=d.antialias, seed=cfg.seed, rank=env.rank, world_size=env.world_size, workers=d.workers,
        device_id=env.device.index if env.device.type == "cuda" else None, engine=d.engine, kind=d.loader,
        preprocess=d.preprocess, **kw)


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run the training ``cfg`` describes; returns the last evaluation's metrics (empty if none ran)."""
    env = Dist(cfg.device)
    try:
        return _train(cfg, env)
    finally:
        env.close()


def _train(cfg: TrainConfig, env: Dist) -> dict[str, Any]:
    from tqdm.auto import tqdm

    out_dir = Path(cfg.out_dir)
    main = env.is_main
    # data.preprocess "auto": the input conventions init_from's weights were trained with (published
    # checkpoints: "published"), else ours; resolved before the config is written or saved anywhere.
    weights = preprocess_of(cfg.model.init_from) if cfg.model.init_from else None
    preprocess, note = choose_preprocess(cfg.data.preprocess, weights, cfg.model.init_from)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, preprocess=preprocess))
    if main and note:
        print(note, flush=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    show = main and cfg.progress
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        if cfg.data.dataset == "synthetic":
            ensure_synthetic(cfg.data, progress=cfg.progress)
    env.barrier()

    train_videos = load_split(cfg.data, "train")
    test_videos = load_split(cfg.data, "test")
    classes = train_videos.classes
    num_classes = len(classes)

    seed_everything(cfg.seed)
    model = build(cfg, num_classes)
    modalities = model.modalities
    amp_dtype, use_scaler = resolve_amp(cfg.amp, env.device)
    if main:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{cfg.model.name}: {n_params / 1e6:.2f}M parameters, {num_classes} classes, reads {modalities}; "
              f"{len(train_videos)} train / {len(test_videos)} test videos; device {env.device} x{env.world_size}; "
              f"amp {amp_dtype or 'off'}", flush=True)

    # Resume state first: the training loader starts at the saved position.
    start_epoch, start_step, global_step, best = 0, 0, 0, -math.inf
    resume_path = find_resume(cfg)
    checkpoint = None
    if resume_path is not None:
        checkpoint = torch.load(resume_path, map_location="cpu", weights_only=True)
        start_epoch = int(checkpoint["epoch"])
        start_step = int(checkpoint["extra"]["step_in_epoch"])
        global_step = int(checkpoint["extra"]["global_step"])
        best = float(checkpoint["extra"]["best_top1"])
        if main:
            print(f"resuming from {resume_path}: epoch {start_epoch}, step {start_step}", flush=True)

    # Loaders before CUDA is touched: DALI starts its decoding workers when the pipeline is built.
    train_loader = _loader(cfg, train_videos, "train", modalities, env, first_epoch=start_epoch, start_step=start_step)
    test_loader = _loader(cfg, test_videos, "test", modalities, env)

    if cfg.model.sync_bn and env.distributed and env.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(env.device)
    if cfg.model.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr_at(cfg, start_epoch), momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    if checkpoint is not None:
        load_state_dict_checked(model, checkpoint["state_dict"], what=str(resume_path))
        optimizer.load_state_dict(checkpoint["optimizer"])
        scaler.load_state_dict(checkpoint["extra"]["scaler"])
        set_rng_state(checkpoint["extra"]["rng"])
        del checkpoint
    ddp = model
    if env.distributed:
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)

    log = MetricsLog(out_dir, enabled=main, tensorboard=cfg.tensorboard)
    autocast = (lambda: torch.autocast(env.device.type, dtype=amp_dtype)) if amp_dtype else contextlib.nullcontext
    last_metrics: dict[str, Any] = {}
    eval_round = 0
    stopped = False
    epochs = cfg.optim.epochs

    if epochs == 0 or start_epoch >= epochs:  # evaluation only (or a finished run)
        metrics, bad = evaluate(ddp, test_loader, eval_round, cfg, env, amp_dtype, num_classes, progress=show)
        if main:
            print(f"test: {format_metrics(metrics, classes)}", flush=True)
            if bad:
                print(f"test: {bad.summary()}", flush=True)
            log.log("test", global_step, epoch=start_epoch, **_loggable(metrics), bad_videos=bad.errors)
        return metrics

    for epoch in range(start_epoch, epochs):
        lr = lr_at(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        set_train_mode(ddp, cfg.model.freeze_bn)
        bad = BadVideoReport()
        first = start_step if epoch == start_epoch else 0
        seen = torch.zeros(2)  # valid clips, loss sum (this rank)
        t_epoch = t_last = time.perf_counter()
        data_time = 0.0
        bar = tqdm(total=train_loader.steps(epoch), desc=f"epoch {epoch + 1}/{epochs}", disable=not show,
                   dynamic_ncols=True, leave=False)
        for step, batch in enumerate(train_loader.epoch(epoch), start=first):
            data_time += time.perf_counter() - t_last
            bad.update(batch.errors)
            batch = batch.to(env.device)
            valid = batch.valid.float()
            n_valid = float(env.all_sum(valid.sum().detach().cpu()))
            if n_valid > 0:
                with autocast():
                    logits = ddp(**batch.inputs)
                ce = F.cross_entropy(logits.float(), batch.labels, reduction="none",
                                     label_smoothing=cfg.optim.label_smoothing)
                # Mean over the valid clips of the global batch: DDP averages gradients over the ranks.
                loss = (ce * valid).sum() * (env.world_size / n_valid)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.optim.clip_grad > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                seen += torch.stack([valid.sum().cpu(), (ce.detach() * valid).sum().cpu()])
            global_step += 1
            bar.update()
            if main and cfg.log_every and global_step % cfg.log_every == 0:
                avg = float(seen[1] / seen[0].clamp(min=1))
                bar.set_postfix(loss=f"{avg:.3f}", lr=f"{lr:.2g}")
                log.log("train", global_step, epoch=epoch, step=step + 1, loss=avg, lr=lr)
            end_of_epoch = step + 1 == train_loader.plan.steps
            limit = cfg.max_steps and global_step >= cfg.max_steps
            if cfg.checkpoint_every_steps and (step + 1) % cfg.checkpoint_every_steps == 0 and not end_of_epoch:
                if main:
                    save_state(out_dir / "last.pt", model, optimizer, scaler, cfg, epoch=epoch, step=step + 1,
                               global_step=global_step, best=best, classes=classes)
            if limit and not end_of_epoch:
                if main:
                    save_state(out_dir / "last.pt", model, optimizer, scaler, cfg, epoch=epoch, step=step + 1,
                               global_step=global_step, best=best, classes=classes)
                stopped = True
                break
            t_last = time.perf_counter()
        bar.close()
        if stopped:
            break

        # end of epoch: bad videos, throughput, evaluation, checkpoints
        seen = env.all_sum(seen)
        merged = BadVideoReport()
        for part in env.gather_objects(bad):
            merged.update(part)
        if seen[0] == 0 and train_loader.steps(epoch) > 0:
            raise RuntimeError(f"epoch {epoch + 1}: no readable training video at all\n{merged.summary()}")
        elapsed = time.perf_counter() - t_epoch
        train_loss = float(seen[1] / seen[0].clamp(min=1))
        if main:
            print(f"epoch {epoch + 1}/{epochs}: loss {train_loss:.4f}, lr {lr:.3g}, {elapsed:.1f} s "
                  f"({int(seen[0]) / max(elapsed, 1e-9):.1f} clips/s, data wait {100 * data_time / max(elapsed, 1e-9):.0f}%)",
                  flush=True)
            if merged:
                print(f"epoch {epoch + 1}: {merged.summary()}", flush=True)
            log.log("epoch", global_step, epoch=epoch + 1, loss=train_loss, lr=lr, seconds=elapsed,
                    clips=int(seen[0]), data_wait=data_time / max(elapsed, 1e-9),
                    bad_videos_count=len(merged), bad_videos=merged.errors)
        metrics = {}
        last_epoch = epoch + 1 == epochs or (cfg.max_steps and global_step >= cfg.max_steps)
        if (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0) or last_epoch:
            metrics, bad_test = evaluate(ddp, test_loader, eval_round, cfg, env, amp_dtype, num_classes, progress=show)
            eval_round += 1
            last_metrics = metrics
            if main:
                print(f"epoch {epoch + 1} test: {format_metrics(metrics, classes)}", flush=True)
                if bad_test:
                    print(f"epoch {epoch + 1} test: {bad_test.summary()}", flush=True)
                log.log("test", global_step, epoch=epoch + 1, **_loggable(metrics), bad_videos=bad_test.errors)
        if main:
            improved = bool(metrics) and metrics["top1"] > best
            if improved:
                best = metrics["top1"]
            save_state(out_dir / "last.pt", model, optimizer, scaler, cfg, epoch=epoch + 1, step=0,
                       global_step=global_step, best=best, classes=classes, metrics=_loggable(metrics))
            if improved:
                save_state(out_dir / "best.pt", model, optimizer, scaler, cfg, epoch=epoch + 1, step=0,
                           global_step=global_step, best=best, classes=classes, metrics=_loggable(metrics))
        if cfg.max_steps and global_step >= cfg.max_steps:
            break
    env.barrier()
    if main and last_metrics:
        print(f"final test accuracy: top-1 {100 * last_metrics['top1']:.2f}%, "
              f"top-5 {100 * last_metrics['top5']:.2f}% (best top-1 {100 * max(best, last_metrics['top1']):.2f}%)",
              flush=True)
    log.close()
    return last_metrics


def _loggable(metrics: dict[str, Any]) -> dict[str, Any]:
    """Metrics with NaN replaced by None, so metrics.jsonl stays strict JSON."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return {k: clean(v) for k, v in metrics.items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m teamnet.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file of overrides of teamnet.config defaults (configs/*.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set optim.lr=0.01 (repeatable; value parsed as YAML)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved configuration and exit")
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        return 0
    metrics = train(cfg)
    if metrics and int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps({"top1": metrics["top1"], "top5": metrics["top5"],
                          "mean_class_accuracy": metrics["mean_class_accuracy"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
