"""One-command GPU validation: what anyone with a GPU runs first.

    python -m benchmarks.gpu_suite                 # tests + engine + kernel bandwidth, one report
    python -m benchmarks.gpu_suite --quick         # fewer clips

1. the GPU-marked tests (CUDA kernels = NumPy twins, the batched stage on CuPy and the GPU backend =
   CPU backend), failing instead of skipping when no GPU is usable (GPUDECODE_REQUIRE_GPU=1);
2. throughput on 340x256 mpeg4 and 1280x720 h264 synthetic clips, all cores: the CPU engine, the CPU
   stage alone (the GPU path's ceiling), and the GPU path end to end (CPU stage in worker processes,
   batched GPU stage here) with upload and NVDEC pixels; ratios against the issue's targets
   (GPU path >= 0.9x its ceiling, >= 2x the CPU engine on 340x256 mpeg4);
3. the GPU stage alone per batch of 64 clips x 8 segments at 340x256 and 1280x720: device ms
   (target <= 1 ms at 340x256 on an H100), kernel bytes/s against the device's peak, host ms per clip;
4. the per-clip kernels' bandwidth (the unbatched kernels, for comparison).
Writes benchmarks/results/gpu_suite_<gpu>.json.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from gpudecode.bench_stages import bench_cpu_stage, bench_gpu_path, bench_gpu_stage
from gpudecode.benchmark import bench_cpu, synthetic_clips, write_result

ROOT = Path(__file__).resolve().parents[1]


def run_gpu_tests() -> dict:
    env = dict(os.environ, GPUDECODE_REQUIRE_GPU="1")
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|xfailed|error)", tail)}
    return {"exit_code": proc.returncode, "summary": tail, **counts, "output_tail": proc.stdout[-4000:]}


def kernel_bandwidth(width: int = 1280, height: int = 720, repeats: int = 50) -> dict:
    """Effective memory bandwidth of the per-pixel kernels (minimum bytes moved / median time)."""
    from gpudecode._cuda import cuda_kernels, import_cupy

    cp = import_cupy()
    k = cuda_kernels()
    props = cp.cuda.runtime.getDeviceProperties(0)
    peak = 2 * props["memoryClockRate"] * 1e3 * props["memoryBusWidth"] / 8  # bytes/s, DDR
    rng = np.random.default_rng(0)
    grid = cp.asarray(rng.integers(-8, 9, ((height + 7) // 8, (width + 7) // 8, 2)).astype(np.int16))
    src_a, src_b = cp.empty((height, width), cp.int32), cp.empty((height, width), cp.int32)
    k.accumulate_step(None, src_a, grid, 3)
    y = cp.asarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
    u = cp.asarray(rng.integers(0, 256, ((height + 1) // 2, (width + 1) // 2), dtype=np.uint8))
    rgb = cp.empty((height, width, 3), cp.uint8)
    mv, res = cp.empty((height, width, 2), cp.int16), cp.empty((height, width, 3), cp.int16)
    n = width * height
    cases = {
        "accumulate_step": (lambda: k.accumulate_step(src_a, src_b, grid, 3), n * (4 + 4)),
        "yuv420_to_rgb": (lambda: k.yuv420_to_rgb(y, u, u, u.strides[0], 1, 0, rgb), n * (1 + 0.5 + 3)),
        "gather_mv_residual": (lambda: k.gather_mv_residual(src_a, rgb, y, u, u, u.strides[0], 1, 0, mv, res),
                               n * (4 + 3 + 1.5 + 4 + 6)),
    }
    out = {"peak_GBps": peak / 1e9, "size": f"{width}x{height}"}
    for name, (fn, nbytes) in cases.items():
        fn()
        times = []
        for _ in range(repeats):
            start, end = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, end) * 1e-3)
        t = float(np.median(times))
        out[name] = {"median_us": t * 1e6, "GBps": nbytes / t / 1e9, "fraction_of_peak": nbytes / t / peak}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--output", default=None)
    args = ap.parse_args(argv)
    clips = 40 if args.quick else 400
    report: dict = {"tests": run_gpu_tests()}
    print("GPU tests:", report["tests"]["summary"])
    engine = {}
    for label, size, codec in (("340x256 mpeg4", (340, 256), "mpeg4"), ("1280x720 h264", (1280, 720), "h264")):
        paths = synthetic_clips(size, codec)
        row = {"cpu": bench_cpu(paths, clips=clips, segments=8, workers=None),
               "cpu_stage": bench_cpu_stage(paths, clips=clips, segments=8, workers=None)}
        for pixels in ("upload", "nvdec"):
            try:
                row[f"gpu_path_{pixels}"] = bench_gpu_path(paths, clips=clips, segments=8, batch=64, pixels=pixels)
            except Exception as e:
                row[f"gpu_path_{pixels}"] = {"error": f"{type(e).__name__}: {e}"}
        gpu_rows = {n: r["clips_per_s"] for n, r in row.items() if n.startswith("gpu_path") and "clips_per_s" in r}
        best = max(gpu_rows.values(), default=0.0)
        row["best_pixels"] = max(gpu_rows, key=gpu_rows.get)[len("gpu_path_"):] if gpu_rows else None
        row["gpu_over_cpu"] = best / row["cpu"]["clips_per_s"]
        row["gpu_over_ceiling"] = best / row["cpu_stage"]["clips_per_s"]
        row["ceiling_over_cpu"] = row["cpu_stage"]["clips_per_s"] / row["cpu"]["clips_per_s"]
        try:
            row["gpu_stage_64x8"] = bench_gpu_stage(paths, batch=64, segments=8)
        except Exception as e:
            row["gpu_stage_64x8"] = {"error": f"{type(e).__name__}: {e}"}
        engine[label] = row
        stage_ms = row["gpu_stage_64x8"].get("gpu_ms_per_batch", float("nan"))
        print(f"{label}: CPU {row['cpu']['clips_per_s']:.1f} clips/s, CPU stage x{row['ceiling_over_cpu']:.2f}, "
              f"GPU path x{row['gpu_over_cpu']:.2f} ({row['gpu_over_ceiling']:.2f} of its ceiling, "
              f"pixels={row['best_pixels']}), GPU stage {stage_ms:.2f} ms per 64x8 batch")
    report["engine"] = engine
    try:
        report["kernels"] = kernel_bandwidth()
    except Exception as e:
        report["kernels"] = {"error": f"{type(e).__name__}: {e}"}
    gpu = report.get("engine", {}).get("340x256 mpeg4", {}).get("gpu_path_upload", {}).get("gpu", "nogpu")
    name = f"gpu_suite_{re.sub(r'[^A-Za-z0-9]+', '_', gpu).strip('_')}"
    path = write_result(name, report, args.output or ROOT / "benchmarks" / "results" / f"{name}.json")
    print(f"wrote {path}")
    return 0 if report["tests"]["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
