"""Model speed in clips/s: TEAM-Net, TSN and CoViAR, fp32 NCHW against AMP channels-last.

Run from the repository root:

    python -m benchmarks.model_speed                                   # GPU if any: batch 8, T=8, 224²
    python -m benchmarks.model_speed --device cpu --batch 1 --iters 3 --warmup 1
    python -m benchmarks.model_speed --train                           # forward + backward

Random weights (speed does not depend on them), synthetic inputs (the data pipeline is measured
elsewhere). Each (model, mode) gets ``--warmup`` untimed iterations, then ``--iters`` timed ones, with
``torch.cuda.synchronize()`` around each on a GPU; the figure is the median. The result goes to
``benchmarks/results/model_speed_<device>.json`` with the machine and the git commit.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent
if __package__ in (None, ""):  # run as `python benchmarks/model_speed.py`: import this checkout's teamnet
    sys.path.insert(0, str(REPO))

from gpudecode.benchmark import machine_info, write_result  # noqa: E402
from teamnet import build_model  # noqa: E402

MODELS = ("teamnet_r50", "tsn_r50", "coviar_r50")
_CHANNELS = {"iframe": 3, "mv": 2, "residual": 3}


def clip(model: torch.nn.Module, batch: int, segments: int, size: int, device: torch.device, channels_last: bool):
    """Synthetic inputs for the modalities the model reads, ``(N, T, C, H, W)``.

    Channels-last inputs are made as (N, T, H, W, C) and permuted, which is what a loader writing
    HWC frames gives: flattening N and T then yields a channels-last (N*T, C, H, W) view.
    """
    out = {}
    for m in model.modalities:
        c = _CHANNELS[m]
        if channels_last:
            out[m] = torch.randn(batch, segments, size, size, c, device=device).permute(0, 1, 4, 2, 3)
        else:
            out[m] = torch.randn(batch, segments, c, size, size, device=device)
    return out


def time_model(
    name: str,
    *,
    device: torch.device,
    batch: int,
    segments: int,
    size: int,
    iters: int,
    warmup: int,
    amp_dtype: torch.dtype | None,
    train: bool,
) -> dict[str, object]:
    """Median seconds per batch of one model in one mode (``amp_dtype=None``: fp32 NCHW)."""
    model = build_model(name, num_classes=101).to(device)
    channels_last = amp_dtype is not None
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train(train)
    inputs = clip(model, batch, segments, size, device, channels_last)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()

    def step() -> None:
        if train:
            with autocast:
                loss = model(**inputs).float().logsumexp(dim=1).mean()
            loss.backward()
            model.zero_grad(set_to_none=True)
        else:
            with torch.inference_mode(), autocast:
                model(**inputs)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "model": name,
        "mode": "fp32-nchw" if amp_dtype is None else f"amp-{str(amp_dtype).removeprefix('torch.')}-channels-last",
        "pass": "train" if train else "inference",
        "median_s_per_batch": median,
        "clips_per_s": batch / median,
        "frames_per_s": batch * segments / median,
        "times_s": times,
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:1")
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="names for teamnet.build_model")
    parser.add_argument("--segments", type=int, default=8, help="T, 8 as in the paper's speed table")
    parser.add_argument("--size", type=int, default=224, help="input height and width")
    parser.add_argument("--batch", type=int, default=8, help="clips per batch (1 is enough on CPU)")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations (the median is kept)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first (cuDNN autotune, caches)")
    parser.add_argument("--amp-dtype", choices=["auto", "bf16", "fp16"], default="auto",
                        help="auto: bf16 where supported, else fp16 (V100)")
    parser.add_argument("--train", action="store_true", help="time forward + backward instead of inference")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default results/model_speed_<device>.json)")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.amp_dtype == "auto":
        bf16_ok = device.type != "cuda" or torch.cuda.is_bf16_supported()
        amp_dtype = torch.bfloat16 if bf16_ok else torch.float16
    else:
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.amp_dtype]

    info = machine_info()  # before the runs, so the load average is the one they started under
    results = []
    for name in args.models:
        for dtype in (None, amp_dtype):
            torch.manual_seed(0)
            r = time_model(
                name, device=device, batch=args.batch, segments=args.segments, size=args.size,
                iters=args.iters, warmup=args.warmup, amp_dtype=dtype, train=args.train,
            )
            print(f"{r['model']:>12} {r['mode']:>26} {r['pass']}: {r['clips_per_s']:8.2f} clips/s "
                  f"({r['median_s_per_batch'] * 1e3:.1f} ms per batch of {args.batch})", flush=True)
            results.append(r)

    report = {
        "settings": {
            "device": str(device), "segments": args.segments, "size": args.size, "batch": args.batch,
            "iters": args.iters, "warmup": args.warmup, "pass": "train" if args.train else "inference",
            "amp_dtype": str(amp_dtype).removeprefix("torch."), "num_classes": 101, "weights": "random",
        },
        "results": results,
    }
    if device.type == "cuda":
        report["settings"].update(gpu=torch.cuda.get_device_name(device), cudnn=torch.backends.cudnn.version())
    out = args.out or RESULTS / f"model_speed_{device.type}{'_train' if args.train else ''}.json"
    out = write_result("model_speed", report, out, machine=info)
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
