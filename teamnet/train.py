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

Ctrl-C stops at the next step, saves that exact position to ``out_dir/last.pt`` and exits with status 130;
the same command resumes from there. Mistakes in the configuration, the data, a checkpoint or the machine
(``device=cuda``, ``data.engine=gpu`` without a GPU) end in one line and status 1 or 2, before anything is
written to ``out_dir`` (:mod:`teamnet.runsetup` checks them; this module is the training loop).

Outputs in ``out_dir``: ``last.pt`` (every epoch, atomically), ``best.pt`` (best top-1), ``metrics.jsonl``
(one record per logged step, epoch and test, epochs counted from 1), ``config.yaml`` (the resolved
configuration), and TensorBoard events when tensorboard is installed.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from typing import Any, Sequence

if __name__ == "__main__":  # `python -m teamnet.train --help`: answered before torch & co. (~5 s) are imported
    from teamnet.commands import train_parser

    train_parser().parse_args()

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from gpudecode._cli_errors import INTERRUPTED, Interrupted, interrupts, run_main
from teamnet.augment import eval_views
from teamnet.checkpoint import CheckpointMismatchError, unwrap_model
from teamnet.config import TrainConfig, config_to_dict, load_config
from teamnet.dali_loader import ClipLoader
from teamnet.datasets import BadVideoReport, VideoList
from teamnet.errors import DataError, TeamnetError
from teamnet.metrics import ClassificationMeter, MetricsLog, format_metrics
from teamnet.runsetup import (  # noqa: F401 (find_resume, param_groups, resolve_amp: also imported from here)
    Dist,
    EpochTally,
    Run,
    describe_loader,
    find_resume,
    load_optimizer_state,
    loggable,
    make_optimizer,
    param_groups,
    prepare_run,
    resolve_amp,
    save_state,
    set_lr,
)

_STOP_NOTICE = "Ctrl-C: stopping after this step and saving a checkpoint"


class _Stop(Exception):
    """Ctrl-C was seen by all ranks at a safe point of the evaluation."""


def lr_at(cfg: TrainConfig, epoch: int, step: int = 0, steps: int = 1) -> float:
    """The lr of step ``step`` (of ``steps``) of ``epoch`` (0-based): a pure function of the position, so a
    resumed run continues the schedule exactly.

    ``schedule="step"``: ``lr`` divided by ``1 / lr_decay`` at each epoch of ``lr_steps`` already reached;
    ``"cosine"``: a half cosine from ``lr`` to ``min_lr`` over the epochs after the warm-up. Either way the
    first ``warmup_epochs`` ramp linearly from 0, reaching ``lr`` at their last step.
    """
    o = cfg.optim
    at = epoch + step / max(steps, 1)  # epochs done before this step
    if o.schedule == "cosine":
        span = max(o.epochs - o.warmup_epochs, 1e-9)
        done = min(max(at - o.warmup_epochs, 0.0) / span, 1.0)
        lr = o.min_lr + (o.lr - o.min_lr) * 0.5 * (1.0 + math.cos(math.pi * done))
    else:
        lr = o.lr * o.lr_decay ** sum(epoch >= s for s in o.lr_steps)
    if o.warmup_epochs > 0 and at < o.warmup_epochs:
        lr *= min(1.0, (at + 1.0 / max(steps, 1)) / o.warmup_epochs)
    return lr


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    model.train()
    if freeze_bn:  # TSN's partial BN: keep the statistics the weights were trained with
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _stop_requested(env: Dist) -> bool:
    """Whether any rank saw Ctrl-C (a collective: every rank asks at the same point)."""
    return bool(env.all_sum(torch.tensor([float(interrupts.requested)]))[0] > 0)


# -- evaluation ---------------------------------------------------------------------------------------------
def evaluate(model: nn.Module, loader: ClipLoader, round_: int, cfg: TrainConfig, env: Dist,
             amp_dtype: torch.dtype | None, num_classes: int, *, progress: bool = False) -> tuple[dict, BadVideoReport]:
    """Multi-view test: each clip's logits averaged over ``test_crops`` crops of ``test_segments`` segments.

    Raises :class:`_Stop` when Ctrl-C was pressed (checked between batches, on all ranks together).
    """
    from gpudecode.progress import tqdm  # plain lines when stderr is a log file

    inner = unwrap_model(model)
    model.eval()
    if inner.num_segments is not None:
        inner.set_num_segments(cfg.data.test_segments)
    meter = ClassificationMeter(num_classes)
    bad = BadVideoReport()
    autocast = torch.autocast(env.device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    try:
        with torch.no_grad(), autocast:
            for batch in tqdm(loader.epoch(round_), total=loader.steps(round_), desc="test", leave=False,
                              disable=not progress, dynamic_ncols=True):
                if _stop_requested(env):
                    raise _Stop
                bad.update(batch.errors)
                batch = batch.to(env.device)
                views = eval_views(batch.inputs, cfg.data.crop_size, cfg.data.test_crops)
                logits = sum(inner(**v).float() for v in views) / len(views)
                meter.update(logits, batch.labels, batch.valid)
    finally:
        if inner.num_segments is not None:
            inner.set_num_segments(cfg.data.num_segments)
    meter.all_reduce()
    merged = BadVideoReport()
    for part in env.gather_objects(bad):
        merged.update(part)
    return meter.compute(), merged


# -- training -----------------------------------------------------------------------------------------------
def _loader(cfg: TrainConfig, videos: VideoList, mode: str, modalities, env: Dist, engine: str | None = None,
            **kw) -> ClipLoader:
    """The loader of one split; ``engine``: the resolved backend (default: ``data.engine`` as configured)."""
    d = cfg.data
    engine = engine or d.engine
    train = mode == "train"
    return ClipLoader(
        videos, mode=mode, modalities=modalities,
        num_segments=d.num_segments if train else d.test_segments,
        batch_size=cfg.optim.batch_size if train else (d.eval_batch_size or cfg.optim.batch_size),
        size=d.crop_size if train else d.scale_size, scales=d.scales, flip=d.flip and train,
        antialias=d.antialias, seed=cfg.seed, rank=env.rank, world_size=env.world_size, workers=d.workers,
        device_id=env.device.index if env.device.type == "cuda" else None, engine=engine, kind=d.loader,
        preprocess=d.preprocess, **kw)


def _start_workers(*loaders: ClipLoader) -> None:
    """Start DALI's decoding workers now, with SIGINT ignored: forked or spawned, they then leave Ctrl-C
    to the training process instead of each printing a KeyboardInterrupt traceback. (PyTorch's workers
    are forked per epoch and inherit the handler of :data:`~gpudecode._cli_errors.interrupts`.)"""
    for loader in loaders:
        if loader.kind == "dali":
            with interrupts.ignored():
                loader._dali_iterator()


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run the training ``cfg`` describes; returns the last evaluation's metrics (empty if none ran).

    Ctrl-C (SIGINT) stops at the next step: the exact position is saved to ``out_dir/last.pt`` and
    :class:`~gpudecode._cli_errors.Interrupted` is raised; running the same command again resumes there.
    """
    env = Dist(cfg.device)
    try:
        return _train(cfg, env)
    finally:
        env.close()


def _train(cfg: TrainConfig, env: Dist) -> dict[str, Any]:
    main = env.is_main
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = prepare_run(cfg, env)
    cfg = run.cfg  # as resolved (data.preprocess "auto" -> the weights' conventions)
    model, classes, resume = run.model, run.classes, run.resume
    num_classes = len(classes)
    modalities = model.modalities
    amp_dtype, use_scaler = resolve_amp(cfg.amp, env.device)
    start_epoch = resume.epoch if resume else 0
    start_step = resume.step if resume else 0
    epochs = cfg.optim.epochs

    if resume is not None and epochs > 0 and start_epoch >= epochs and not resume.pending_eval:
        # a finished run: say so, and log nothing twice
        if main:
            print(f"{resume.path}: this run finished its {epochs} epochs already; its last test: "
                  f"{format_metrics(resume.metrics, classes) if resume.metrics else 'none'}\n"
                  f"(to train longer, raise optim.epochs; to start over, set resume=\"\" or a new out_dir)", flush=True)
        return resume.metrics

    # Loaders before CUDA is touched: DALI starts its decoding workers when the pipeline is built.
    train_loader = _loader(cfg, run.train_videos, "train", modalities, env, run.engine,
                           first_epoch=start_epoch, start_step=start_step)
    test_loader = _loader(cfg, run.test_videos, "test", modalities, env, run.engine)
    if main:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"{cfg.model.name}: {n_params / 1e6:.2f}M parameters, {num_classes} classes, reads {modalities}; "
              f"{len(run.train_videos)} train / {len(run.test_videos)} test videos", flush=True)
        print(describe_loader(train_loader, run.engine, cfg, env, amp_dtype), flush=True)
        if resume is not None:
            print(f"resuming from {resume.path} at epoch {start_epoch + 1} step {start_step} "
                  f"(global step {resume.global_step})", flush=True)

    if cfg.model.sync_bn and env.distributed and env.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(env.device)
    if cfg.model.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg, lr_at(cfg, start_epoch))
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    if resume is not None:
        from teamnet.runsetup import set_rng_state

        load_optimizer_state(optimizer, resume.checkpoint["optimizer"], resume.path)
        scaler.load_state_dict(resume.checkpoint["extra"]["scaler"])
        set_rng_state(resume.checkpoint["extra"]["rng"])
        resume.checkpoint = {}  # free the tensors
    ddp = model
    if env.distributed:
        ddp = nn.parallel.DistributedDataParallel(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)

    evaluation_only = epochs == 0
    log = MetricsLog(run.out_dir, enabled=main, tensorboard=cfg.tensorboard,
                     keep_until=None if evaluation_only else (resume.global_step if resume else -1))
    loop = _Loop(cfg, env, run, ddp, model, optimizer, scaler, train_loader, test_loader, log, amp_dtype)
    try:
        _start_workers(train_loader, test_loader)
        with interrupts.deferred(_STOP_NOTICE if main else ""):
            return loop.run(start_epoch, start_step)
    finally:
        log.close()


class _Loop:
    """The epochs: steps, the end-of-epoch summary, evaluation and checkpoints, Ctrl-C at safe points."""

    def __init__(self, cfg, env, run: Run, ddp, model, optimizer, scaler, train_loader, test_loader, log, amp_dtype):
        self.cfg, self.env, self.run_ = cfg, env, run
        self.ddp, self.model, self.optimizer, self.scaler = ddp, model, optimizer, scaler
        self.train_loader, self.test_loader, self.log, self.amp_dtype = train_loader, test_loader, log, amp_dtype
        self.main = env.is_main
        self.show = self.main and cfg.progress
        self.num_classes = len(run.classes)
        self.global_step = run.resume.global_step if run.resume else 0
        self.best = run.resume.best if run.resume else -math.inf
        self.eval_round = 0
        self.last_metrics: dict[str, Any] = {}

    # -- checkpoints and Ctrl-C
    def save(self, name: str, epoch: int, step: int, *, metrics=None, tally: EpochTally | None = None,
             pending_eval: bool = False) -> None:
        """Every rank calls it (the tally is merged over the ranks); rank 0 writes."""
        merged = tally.merged(self.env) if tally is not None else None
        if self.main:
            save_state(self.run_.out_dir / name, self.model, self.optimizer, self.scaler, self.cfg, epoch=epoch,
                       step=step, global_step=self.global_step, best=self.best, classes=self.run_.classes,
                       metrics=loggable(metrics or {}), tally=merged, pending_eval=pending_eval)

    def interrupted(self, epoch: int, step: int, **kw) -> Interrupted:
        """Save the exact position (``epoch`` 0-based, ``step`` steps done in it) and say where."""
        self.save("last.pt", epoch, step, **kw)
        self.env.barrier()
        where = (f"after epoch {epoch}, before its evaluation" if kw.get("pending_eval")
                 else f"at epoch {epoch + 1} step {step}")
        return Interrupted(f"interrupted {where}, checkpoint saved to {self.run_.out_dir / 'last.pt'}; "
                           "run the same command again to resume")

    # -- evaluation after an epoch (``epoch``: epochs done)
    def evaluate_and_save(self, epoch: int) -> None:
        cfg, env = self.cfg, self.env
        try:
            metrics, bad_test = evaluate(self.ddp, self.test_loader, self.eval_round, cfg, env, self.amp_dtype,
                                         self.num_classes, progress=self.show)
        except _Stop:
            raise self.interrupted(epoch, 0, pending_eval=True) from None
        self.eval_round += 1
        self.last_metrics = metrics
        if self.main:
            print(f"epoch {epoch} test: {format_metrics(metrics, self.run_.classes)}", flush=True)
            if bad_test:
                print(f"epoch {epoch} test: {bad_test.summary()}", flush=True)
            self.log.log("test", self.global_step, epoch=epoch, **loggable(metrics), bad_videos=bad_test.errors)
        improved = metrics["top1"] > self.best
        if improved:
            self.best = metrics["top1"]
        self.save("last.pt", epoch, 0, metrics=metrics)
        if improved:
            self.save("best.pt", epoch, 0, metrics=metrics)

    def run(self, start_epoch: int, start_step: int) -> dict[str, Any]:
        cfg, env = self.cfg, self.env
        epochs = cfg.optim.epochs
        resume = self.run_.resume
        if epochs == 0:  # evaluation only
            metrics, bad = evaluate(self.ddp, self.test_loader, 0, cfg, env, self.amp_dtype, self.num_classes,
                                    progress=self.show)
            if self.main:
                print(f"test: {format_metrics(metrics, self.run_.classes)}", flush=True)
                if bad:
                    print(f"test: {bad.summary()}", flush=True)
                self.log.log("test", self.global_step, epoch=start_epoch, **loggable(metrics), bad_videos=bad.errors)
            return metrics
        if resume is not None and resume.pending_eval:  # stopped during the evaluation after start_epoch
            self.evaluate_and_save(start_epoch)
        for epoch in range(start_epoch, epochs):
            tally = resume.tally if resume is not None and epoch == start_epoch and self.main else EpochTally()
            stopped = self.train_epoch(epoch, start_step if epoch == start_epoch else 0, tally)
            if stopped:
                break
            self.end_epoch(epoch, tally)
            if cfg.max_steps and self.global_step >= cfg.max_steps:
                break
        env.barrier()
        if self.main and self.last_metrics:
            m = self.last_metrics
            print(f"final test accuracy: top-1 {100 * m['top1']:.2f}%, top-5 {100 * m['top5']:.2f}% "
                  f"(best top-1 {100 * max(self.best, m['top1']):.2f}%)", flush=True)
        return self.last_metrics

    def train_epoch(self, epoch: int, first: int, tally: EpochTally) -> bool:
        """Steps ``first``.. of ``epoch`` (0-based); True when ``max_steps`` stopped the run part-way."""
        from gpudecode.progress import tqdm  # plain lines when stderr is a log file

        cfg, env, optimizer, scaler = self.cfg, self.env, self.optimizer, self.scaler
        epochs = cfg.optim.epochs
        steps = self.train_loader.plan.steps
        lr = lr_at(cfg, epoch, first, steps)
        set_lr(optimizer, lr)
        set_train_mode(self.ddp, cfg.model.freeze_bn)
        autocast = (lambda: torch.autocast(env.device.type, dtype=self.amp_dtype)) if self.amp_dtype \
            else contextlib.nullcontext
        t_last = time.perf_counter()
        bar = tqdm(total=steps, initial=first, desc=f"epoch {epoch + 1}/{epochs}", disable=not self.show,
                   dynamic_ncols=True, leave=False)
        try:
            for step, batch in enumerate(self.train_loader.epoch(epoch), start=first):
                now = time.perf_counter()
                tally.data_seconds += now - t_last
                tally.seconds += now - t_last
                # One collective per step: the global count of valid clips, and whether any rank saw Ctrl-C.
                valid = batch.valid.float()
                flags = env.all_sum(torch.stack([valid.sum().detach().cpu(), torch.tensor(float(interrupts.requested))]))
                if flags[1] > 0:  # stop before this step: the batch is read again on resume
                    raise self.interrupted(epoch, step, tally=tally)
                tally.bad.update(batch.errors)
                batch = batch.to(env.device)
                valid = valid.to(env.device)
                n_valid = float(flags[0])
                lr = lr_at(cfg, epoch, step, steps)  # per step: warm-up and cosine move within an epoch
                set_lr(optimizer, lr)
                if n_valid > 0:
                    with autocast():
                        logits = self.ddp(**batch.inputs)
                    ce = F.cross_entropy(logits.float(), batch.labels, reduction="none",
                                         label_smoothing=cfg.optim.label_smoothing)
                    # Mean over the valid clips of the global batch: DDP averages gradients over the ranks.
                    loss = (ce * valid).sum() * (env.world_size / n_valid)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if cfg.optim.clip_grad > 0:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.clip_grad)
                    scaler.step(optimizer)
                    scaler.update()
                    tally.clips += float(valid.sum())
                    tally.loss_sum += float((ce.detach() * valid).sum())
                self.global_step += 1
                bar.update()
                if self.main and cfg.log_every and self.global_step % cfg.log_every == 0:
                    avg = tally.loss_sum / max(tally.clips, 1)
                    bar.set_postfix(loss=f"{avg:.3f}", lr=f"{lr:.2g}")
                    self.log.log("train", self.global_step, epoch=epoch + 1, step=step + 1, loss=avg, lr=lr)
                end_of_epoch = step + 1 == steps
                t_last = time.perf_counter()
                tally.seconds += t_last - now
                limit = cfg.max_steps and self.global_step >= cfg.max_steps
                if not end_of_epoch and (limit or (cfg.checkpoint_every_steps
                                                   and (step + 1) % cfg.checkpoint_every_steps == 0)):
                    self.save("last.pt", epoch, step + 1, tally=tally)
                    t_last = time.perf_counter()
                if limit and not end_of_epoch:
                    return True
        finally:
            bar.close()
        return False

    def end_epoch(self, epoch: int, tally: EpochTally) -> None:
        """Summary, ``epoch`` record, evaluation when due, checkpoints (``epoch`` 0-based, now done)."""
        cfg, env = self.cfg, self.env
        epochs = cfg.optim.epochs
        whole = tally.merged(env)
        if whole.clips == 0 and self.train_loader.plan.steps > 0:
            raise DataError(f"epoch {epoch + 1}: no readable training video at all\n{whole.bad.summary()}",
                            "check the videos with `gpudecode inspect`; re-encode them with `gpudecode prepare`")
        elapsed = max(whole.seconds, 1e-9)
        loss = whole.loss_sum / max(whole.clips, 1)
        steps = self.train_loader.plan.steps
        lr = lr_at(cfg, epoch, max(steps - 1, 0), steps)  # the epoch's last step
        if self.main:
            print(f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}, lr {lr:.3g}, {elapsed:.1f} s "
                  f"({whole.clips / elapsed:.1f} clips/s, data wait {100 * whole.data_seconds / elapsed:.0f}%)",
                  flush=True)
            if whole.bad:
                print(f"epoch {epoch + 1}: {whole.bad.summary()}", flush=True)
            self.log.log("epoch", self.global_step, epoch=epoch + 1, loss=loss, lr=lr, seconds=elapsed,
                         clips=int(whole.clips), data_wait=whole.data_seconds / elapsed,
                         bad_videos_count=len(whole.bad), bad_videos=whole.bad.errors)
        last_epoch = epoch + 1 == epochs or (cfg.max_steps and self.global_step >= cfg.max_steps)
        if (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0) or last_epoch:
            if _stop_requested(env):
                raise self.interrupted(epoch + 1, 0, pending_eval=True)
            self.evaluate_and_save(epoch + 1)
        else:
            self.save("last.pt", epoch + 1, 0)


# -- command line -------------------------------------------------------------------------------------------
def _main(argv: Sequence[str] | None = None) -> int:
    from teamnet.commands import train_parser

    args = train_parser().parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        return 0
    rank = int(os.environ.get("RANK", 0))
    try:
        metrics = train(cfg)
    except Interrupted:
        if rank != 0:  # under torchrun every rank stops at the same step; rank 0 says where it saved
            return INTERRUPTED
        raise
    if metrics and rank == 0:
        print(json.dumps(loggable({"top1": metrics["top1"], "top5": metrics["top5"],
                                   "mean_class_accuracy": metrics["mean_class_accuracy"]})))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``teamnet-train``: config, data, checkpoint and backend mistakes end in one line and exit status 1 or 2
    (``gpudecode._cli_errors``); Ctrl-C saves a checkpoint and exits with 130."""
    return run_main(_main, argv, prog="teamnet-train", expected=(TeamnetError, CheckpointMismatchError))


if __name__ == "__main__":
    sys.exit(main())
