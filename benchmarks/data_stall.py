"""Data stall: training step time with the real loader against the same model fed in-memory tensors.

    python benchmarks/data_stall.py                                   # configs/synthetic.yaml, CPU
    python benchmarks/data_stall.py --config configs/ucf101_teamnet.yaml --set data.root=...   # on a GPU

Both phases run the same model, optimiser and batch shapes: "memory" repeats one pre-made batch already on
the device, "loader" reads clips through the engine and the DALI pipeline (or the fallback). The stall is
the share of the loader's step time that the model did not need: 1 - t_memory / t_loader. Prints the
step times, clips/s and the stall; writes benchmarks/results/data_stall_<device>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from gpudecode.benchmark import write_result  # noqa: E402
from teamnet.config import load_config  # noqa: E402
from teamnet.datasets import ensure_synthetic, load_split  # noqa: E402
from teamnet.train import Dist, _loader, resolve_amp  # noqa: E402
from teamnet.models import build_model  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "synthetic.yaml"))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per phase")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.data.dataset == "synthetic":
        ensure_synthetic(cfg.data)
    env = Dist(cfg.device)
    videos = load_split(cfg.data, "train")
    model = build_model(cfg.model.name, num_classes=len(videos.classes), **cfg.model.kwargs)
    loader = _loader(cfg, videos, "train", model.modalities, env)
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

    # phase 1: the real loader (epochs chained as needed)
    def batches():
        epoch = 0
        while True:
            yield from loader.epoch(epoch)
            epoch += 1

    stream = batches()
    first = None
    times, waits = [], []
    for i in range(args.warmup + args.steps):
        _sync(env.device)
        t0 = time.perf_counter()
        batch = next(stream).to(env.device)
        _sync(env.device)
        t1 = time.perf_counter()
        step(batch.inputs, batch.labels)
        _sync(env.device)
        t2 = time.perf_counter()
        if first is None:
            first = batch
        if i >= args.warmup:
            times.append(t2 - t0)
            waits.append(t1 - t0)
    t_loader = sum(times) / len(times)
    wait = sum(waits) / len(waits)

    # phase 2: the same batch from memory
    inputs = {m: x.clone() for m, x in first.inputs.items()}  # clone keeps the channels-last strides
    labels = first.labels.clone()
    mem = []
    for i in range(args.warmup + args.steps):
        _sync(env.device)
        t0 = time.perf_counter()
        step(inputs, labels)
        _sync(env.device)
        if i >= args.warmup:
            mem.append(time.perf_counter() - t0)
    t_memory = sum(mem) / len(mem)
    batch_size = loader.plan.local_batch
    stall = max(0.0, 1.0 - t_memory / t_loader)
    report = {
        "device": str(env.device) if env.device.type == "cpu" else torch.cuda.get_device_name(env.device),
        "model": cfg.model.name, "loader": loader.kind, "workers": loader.workers,
        "batch_size": batch_size, "num_segments": cfg.data.num_segments, "crop_size": cfg.data.crop_size,
        "step_s_loader": t_loader, "step_s_memory": t_memory, "wait_s_per_step": wait,
        "clips_per_s_loader": batch_size / t_loader, "clips_per_s_memory": batch_size / t_memory, "stall": stall,
    }
    print(f"{cfg.model.name} on {report['device']}, batch {batch_size} x {cfg.data.num_segments} segments at "
          f"{cfg.data.crop_size}px, loader {loader.kind} with {loader.workers} worker(s):")
    print(f"  step with the real loader : {1000 * t_loader:8.1f} ms  ({report['clips_per_s_loader']:.1f} clips/s, "
          f"waiting {1000 * wait:.1f} ms for data)")
    print(f"  step from memory          : {1000 * t_memory:8.1f} ms  ({report['clips_per_s_memory']:.1f} clips/s)")
    print(f"  data stall                : {100 * stall:8.1f} %")
    out = write_result("data_stall", report, args.output or REPO / "benchmarks" / "results" / f"data_stall_{env.device.type}.json")
    print(f"wrote {out}")
    env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
