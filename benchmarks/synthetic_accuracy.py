"""Does TEAM-Net use motion? Train it and TSN (I-frames only) on the motion-only synthetic dataset.

The synthetic classes differ only by how a disk moves; frame 0 of a clip is the same whatever its class,
so TSN on I-frames should stay near chance (1/8) while TEAM-Net, which also reads MVs and residuals,
should be nearly perfect. Both use configs/synthetic.yaml (same data, schedule and augmentation).

    python benchmarks/synthetic_accuracy.py                       # both models, ~15-20 min on 2 CPU cores
    python benchmarks/synthetic_accuracy.py --epochs 30 --set optim.lr=0.005

Prints a table and writes benchmarks/results/synthetic_accuracy.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gpudecode.benchmark import write_result  # noqa: E402
from teamnet.config import config_to_dict, load_config  # noqa: E402
from teamnet.train import train  # noqa: E402

MODELS = {
    "teamnet": ["model.name=teamnet", "model.kwargs={iframe_depth: 18, mv_depth: 18, residual_depth: 18}"],
    "tsn": ["model.name=tsn", "model.kwargs={depth: 18}"],
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "synthetic.yaml"))
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--out", default=str(REPO / "runs" / "bench_synthetic"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "synthetic_accuracy.json"))
    args = parser.parse_args(argv)

    results = {}
    for name in args.models:
        overrides = [*MODELS[name], f"out_dir={Path(args.out) / name}", "resume=", "progress=false", *args.overrides]
        if args.epochs is not None:
            overrides.append(f"optim.epochs={args.epochs}")
        cfg = load_config(args.config, overrides)
        start = time.perf_counter()
        metrics = train(cfg)
        results[name] = {
            "top1": metrics["top1"], "top5": metrics["top5"], "mean_class_accuracy": metrics["mean_class_accuracy"],
            "num_videos": metrics["num_videos"], "per_class_accuracy": metrics["per_class_accuracy"],
            "seconds": time.perf_counter() - start, "config": config_to_dict(cfg),
        }
    num_classes = len(next(iter(results.values()))["per_class_accuracy"])
    chance = 1.0 / num_classes
    print(f"\nsynthetic motion-only dataset, {num_classes} classes (chance {100 * chance:.1f}%):")
    print(f"{'model':<10} {'top-1':>8} {'top-5':>8} {'minutes':>8}")
    for name, r in results.items():
        print(f"{name:<10} {100 * r['top1']:7.2f}% {100 * r['top5']:7.2f}% {r['seconds'] / 60:8.1f}")
    checks = {}
    if "teamnet" in results:
        checks["teamnet_top1_at_least_95"] = results["teamnet"]["top1"] >= 0.95
    if "tsn" in results:
        checks["tsn_within_10_points_of_chance"] = abs(results["tsn"]["top1"] - chance) <= 0.10
    for k, ok in checks.items():
        print(f"  {k}: {'yes' if ok else 'NO'}")
    out = write_result("synthetic_accuracy", {"chance": chance, "results": results, "checks": checks}, args.output)
    print(f"wrote {out}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
