"""Data stall: training step time with the real loader against the same model fed in-memory tensors, for the
CPU engine path and the GPU path (packets from loader workers -> batched GPU stage -> augmentation on the device).

    python benchmarks/data_stall.py                                   # configs/synthetic.yaml, CPU, both paths
    python benchmarks/data_stall.py --preset gpu --config configs/ucf101_teamnet.yaml --set data.root=...  # a GPU

``--preset gpu`` is the issue's setting: TEAM-Net (ResNet-50 / 18 / 18), 224 x 224, 8 segments, AMP,
channels-last, batch 64. On a CPU machine the sizes stay small (the config's), and the GPU path runs its
stage on the host executor (``gpudecode.executor.HostExecutor``, the CI test instrument): its figures are
CPU figures of the packet path, not GPU figures.

Per path (``--engine``): "loader only" reads ``--steps`` batches with no model (the loader's own clips/s);
then "loader" steps train on its batches, interleaved one for one with "memory" steps that repeat one
pre-made batch already on the device (so the load of a shared machine hits both alike). The stall is the
share of the loader's step time that the model did not need: 1 - t_memory / t_loader. Step times are
medians. Writes benchmarks/results/data_stall_<device>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gpudecode.benchmark import machine_info, write_result  # noqa: E402
from teamnet.config import load_config  # noqa: E402
from teamnet.datasets import ensure_synthetic, load_split  # noqa: E402
from teamnet.models import build_model  # noqa: E402
from teamnet.train import Dist, _loader, resolve_amp  # noqa: E402

#: The issue's GPU setting (issue 10): TEAM-Net R50/18/18, 224, 8 segments, AMP, channels-last, batch 64.
GPU_PRESET = ["model.name=teamnet_r50", "model.kwargs={}", "data.crop_size=224", "data.num_segments=8",
              "optim.batch_size=64", "amp=auto", "model.channels_last=true"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(loader):
    epoch = 0
    while True:
        yield from loader.epoch(epoch)
        epoch += 1


def _build_loader(cfg, videos, modalities, env, engine: str):
    """The training loader of ``engine``; on a machine without CUDA the GPU path runs on the host executor."""
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, engine=engine))
    kw = {}
    if engine == "gpu" and env.device.type != "cuda":
        from gpudecode.executor import HostExecutor

        kw["executor"] = HostExecutor()
    return _loader(cfg, videos, "train", modalities, env, **kw)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "synthetic.yaml"))
    parser.add_argument("--preset", choices=["config", "gpu"], default="config",
                        help="gpu: TEAM-Net R50/18/18, 224, 8 segments, AMP, channels-last, batch 64")
    parser.add_argument("--engine", choices=["config", "cpu", "gpu", "both"], default="both",
                        help="which loader path(s) to time; config: data.engine")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per phase")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    cfg = load_config(args.config, (GPU_PRESET if args.preset == "gpu" else []) + args.overrides)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.data.dataset == "synthetic":
        ensure_synthetic(cfg.data)
    machine = machine_info()
    env = Dist(cfg.device)
    videos = load_split(cfg.data, "train")
    model = build_model(cfg.model.name, num_classes=len(videos.classes), **cfg.model.kwargs)
    engines = {"config": [cfg.data.engine], "both": ["cpu", "gpu"]}.get(args.engine, [args.engine])
    model.to(env.device)
    if cfg.model.channels_last:
        model.to(memory_format=torch.channels_last)
    model.train()
    amp_dtype, _ = resolve_amp(cfg.amp, env.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay)

    def step(inputs, labels):
        with torch.autocast(env.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = F.cross_entropy(model(**inputs).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    paths, memory = {}, None
    for engine in engines:
        loader = _build_loader(cfg, videos, model.modalities, env, engine)
        describe = loader.describe()
        print(describe, flush=True)
        stream = _batches(loader)
        # loader only: the loader's own rate, nothing else running
        alone = []
        for i in range(args.warmup + args.steps):
            t0 = time.perf_counter()
            batch = next(stream).to(env.device)
            _sync(env.device)
            if i >= args.warmup:
                alone.append(time.perf_counter() - t0)
        if memory is None:  # one batch kept on the device, the same for every path
            memory = ({m: x.clone() for m, x in batch.inputs.items()}, batch.labels.clone())  # clone keeps strides
        # the model fed by the loader, interleaved step by step with the model fed from memory, so that the
        # load of a shared machine hits both alike
        times, waits, mem = [], [], []
        for i in range(args.warmup + args.steps):
            _sync(env.device)
            t0 = time.perf_counter()
            step(*memory)
            _sync(env.device)
            t1 = time.perf_counter()
            batch = next(stream).to(env.device)
            _sync(env.device)
            t2 = time.perf_counter()
            step(batch.inputs, batch.labels)
            _sync(env.device)
            t3 = time.perf_counter()
            if i >= args.warmup:
                mem.append(t1 - t0)
                times.append(t3 - t1)
                waits.append(t2 - t1)
        stream.close()
        loader.close()
        b = loader.plan.local_batch
        t_loader, t_memory = statistics.median(times), statistics.median(mem)
        paths[engine] = {"loader": describe, "workers": loader.workers,
                         "loader_only_s_per_batch": statistics.median(alone),
                         "loader_only_clips_per_s": b / statistics.median(alone),
                         "step_s_loader": t_loader, "wait_s_per_step": statistics.median(waits),
                         "clips_per_s_loader": b / t_loader, "step_s_memory": t_memory,
                         "clips_per_s_memory": b / t_memory, "stall": max(0.0, 1.0 - t_memory / t_loader)}

    batch_size = len(memory[1])
    device = str(env.device) if env.device.type == "cpu" else torch.cuda.get_device_name(env.device)
    report = {
        "device": device, "gpu_figures": env.device.type == "cuda", "model": cfg.model.name,
        "model_kwargs": cfg.model.kwargs, "amp": str(amp_dtype), "channels_last": cfg.model.channels_last,
        "batch_size": batch_size, "num_segments": cfg.data.num_segments, "crop_size": cfg.data.crop_size,
        "paths": paths,
    }
    print(f"{cfg.model.name} on {device}, batch {batch_size} x {cfg.data.num_segments} segments at "
          f"{cfg.data.crop_size}px, amp {amp_dtype or 'off'}:")
    for engine, r in paths.items():
        print(f"  [{engine}] loader alone        : {1000 * r['loader_only_s_per_batch']:8.1f} ms per batch "
              f"({r['loader_only_clips_per_s']:.1f} clips/s)")
        print(f"  [{engine}] step with the loader: {1000 * r['step_s_loader']:8.1f} ms  ({r['clips_per_s_loader']:.1f} "
              f"clips/s, waiting {1000 * r['wait_s_per_step']:.1f} ms for data)")
        print(f"  [{engine}] step from memory    : {1000 * r['step_s_memory']:8.1f} ms  ({r['clips_per_s_memory']:.1f} "
              f"clips/s)  ->  data stall {100 * r['stall']:.1f} %")
    if env.device.type != "cuda":
        print("  (no GPU: the gpu path ran its stage on the host executor; these are CPU figures)")
    out = write_result("data_stall", report, args.output or REPO / "benchmarks" / "results" / f"data_stall_{env.device.type}.json",
                       machine=machine)
    print(f"wrote {out}")
    env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
