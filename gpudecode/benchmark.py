"""`gpudecode benchmark`: engine throughput on all CPU cores and/or the GPU, with per-stage times.

The CPU side runs one engine per worker process (the way a training loader uses it); the GPU side
runs in this process. Results go to JSON with the machine, the GPU, the driver and the commit: at
``--out``, by default in the user's cache folder (never into the checkout, whose ``benchmarks/results``
holds the measurements the README quotes).

Rows (``BACKEND_ROWS``): ``cpu`` the CPU engine; ``cpu_stage`` (with ``--backend both``) the GPU path's
CPU stage alone, i.e. the most the GPU path can reach with these cores; ``gpu_upload``/``gpu_nvdec`` the
GPU path with the frames' pixels decoded on the CPU and uploaded, or decoded by NVDEC.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """HEAD of the checkout this code runs from (with -dirty when tracked files changed), or 'unknown'."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=cwd)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=cwd).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except OSError:
        return "unknown"


def machine_info() -> dict:
    """CPU, core count, library versions and, when there is one, the GPU, its driver and CUDA."""
    info = {"hostname": socket.gethostname(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            # Other work on the machine slows the figures down: say how busy it was.
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    for mod in ("numpy", "av", "torch", "cupy"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # not installed, or a GPU package that cannot load here
            pass
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    except Exception:
        pass
    try:
        from gpudecode._cuda import import_cupy

        cp = import_cupy()
        info["gpu"] = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
        info["cuda_driver"] = cp.cuda.runtime.driverGetVersion()
        info["cuda_runtime"] = cp.cuda.runtime.runtimeGetVersion()
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True)
        if smi.returncode == 0:
            info["driver"] = smi.stdout.strip()
    except Exception:
        pass
    return info


def write_result(name: str, payload: dict, output: str | os.PathLike | None = None,
                 machine: dict | None = None) -> Path:
    """Write ``payload`` plus machine and commit as JSON (atomically) and return the path.

    ``machine`` is :func:`machine_info` taken before the measurement (its load average is then the one
    the runs started under); by default it is taken now.
    """
    if output is None:
        results = Path("benchmarks/results")
        output = (results if results.is_dir() else Path(".")) / f"{name}_{socket.gethostname()}.json"
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": git_commit(),
           "machine": machine if machine is not None else machine_info(), **payload}
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)
    return path


#: What each row of the report measures (printed under the table).
BACKEND_ROWS = {
    "cpu": "the CPU engine, one per worker process (as a training loader runs it)",
    "cpu_stage": "the GPU path's CPU stage alone (decode with MV export into packets, no pixel work): "
                 "the most the GPU path can reach with these cores",
    "gpu_upload": "the GPU path, pixels decoded on the CPU and uploaded",
    "gpu_nvdec": "the GPU path, pixels decoded by NVDEC",
}
#: Stage columns in pipeline order (``ms_per_clip_by_stage`` keys).
STAGE_ORDER = ("demux", "decode", "mv_parse", "kernels", "copy", "total")
#: The clips measured when no video is given: ``gpudecode synth``, one clip per class.
SYNTH_CLIPS = {"size": (340, 256), "num_frames": 96, "codec": "mpeg4", "gop": 12}


def default_output(name: str = "engine") -> Path:
    """``<cache>/benchmarks/<name>_<host>.json``, beside the GOP index cache (``GPUDECODE_CACHE_DIR``)."""
    from gpudecode.index import default_cache_path

    return default_cache_path().parent / "benchmarks" / f"{name}_{socket.gethostname()}.json"


def _cpu_worker(job: tuple[list[str], int, int, int]) -> dict:
    paths, clips, segments, seed = job
    from gpudecode.cpu import CpuBackend
    from gpudecode.index import index_video
    from gpudecode.sampling import sample_gops

    backend = CpuBackend()
    indexes = [index_video(p) for p in paths]
    rng = np.random.default_rng(seed)
    for i in range(clips):
        ix = indexes[i % len(indexes)]
        backend.decode(ix, sample_gops(ix.gop_lengths, segments, mode="train", rng=rng, positions=ix.p_positions))
    return dict(backend.stats)


def _summarise(stats: dict, wall: float, segments: int) -> dict:
    clips = stats.get("clips", 0)
    per_clip = {k: 1e3 * v / clips for k, v in stats.items() if k not in ("clips", "frames", "seeks")} if clips else {}
    return {"clips": int(clips), "wall_s": wall, "clips_per_s": clips / wall, "segments_per_s": clips * segments / wall,
            "decoded_frames_per_s": stats.get("frames", 0) / wall, "ms_per_clip_by_stage": per_clip}


def bench_cpu(paths: Sequence[str], *, clips: int, segments: int, workers: int | None) -> dict:
    workers = workers or os.cpu_count() or 1
    per_worker = max(1, clips // workers)
    jobs = [(list(paths), per_worker, segments, seed) for seed in range(workers)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_cpu_worker, [(list(paths), 1, segments, 99)] * workers))  # warm-up: imports, host kernels
        t = time.perf_counter()
        results = list(pool.map(_cpu_worker, jobs))
        wall = time.perf_counter() - t
    total: dict[str, float] = {}
    for r in results:
        for k, v in r.items():
            total[k] = total.get(k, 0.0) + v
    return {"workers": workers, **_summarise(total, wall, segments)}


def bench_gpu(paths: Sequence[str], *, clips: int, segments: int, pixels: str) -> dict:
    from gpudecode.gpu import GpuBackend
    from gpudecode.index import index_video
    from gpudecode.sampling import sample_gops

    backend = GpuBackend(pixels=pixels)
    indexes = [index_video(p) for p in paths]
    rng = np.random.default_rng(0)
    picks = [sample_gops(indexes[i % len(indexes)].gop_lengths, segments, mode="train", rng=rng,
                         positions=indexes[i % len(indexes)].p_positions) for i in range(clips)]
    backend.decode(indexes[0], picks[0])  # warm-up: NVRTC compile, decoder creation
    backend.cp.cuda.Device().synchronize()
    stats_before = dict(backend.stats)
    t = time.perf_counter()
    for i in range(clips):
        backend.decode(indexes[i % len(indexes)], picks[i])
    backend.cp.cuda.Device().synchronize()
    wall = time.perf_counter() - t
    stats = {k: v - stats_before.get(k, 0.0) for k, v in backend.stats.items()}
    return {"pixels": pixels, "gpu": backend.device_name, **_summarise(stats, wall, segments)}


def synthetic_clips(size: tuple[int, int] = SYNTH_CLIPS["size"], codec: str = SYNTH_CLIPS["codec"]) -> list[str]:
    """The default benchmark set: one ``gpudecode synth`` clip per class, made once in the temp folder."""
    from gpudecode.synth import make_synthetic_dataset

    root = synthetic_root(size, codec)
    if not (root / "test.txt").exists():
        make_synthetic_dataset(root, num_videos_per_class=1, size=size, num_frames=SYNTH_CLIPS["num_frames"],
                               codec=codec, gop=SYNTH_CLIPS["gop"], seed=0, progress=False)
    return sorted(str(p) for p in (root / "videos").rglob("*.mp4"))


def synthetic_root(size: tuple[int, int] = SYNTH_CLIPS["size"], codec: str = SYNTH_CLIPS["codec"]) -> Path:
    return Path(tempfile.gettempdir()) / f"gpudecode-bench-synth-{size[0]}x{size[1]}-{codec}"


def describe_data(num_videos: int, synthetic: bool) -> str:
    """What the report's videos are, in one line."""
    if not synthetic:
        return f"{num_videos} video(s) given on the command line"
    w, h = SYNTH_CLIPS["size"]
    return (f"{num_videos} synthetic clips (no video given): `gpudecode synth`, one per motion class, "
            f"{SYNTH_CLIPS['codec']} {w}x{h}, {SYNTH_CLIPS['num_frames']} frames, GOP {SYNTH_CLIPS['gop']}, "
            f"in {synthetic_root()}")


def run_benchmark(paths: Sequence[str | os.PathLike] | None = None, *, backends: str = "cpu", num_segments: int = 8,
                  clips: int = 200, workers: int | None = None, output: str | os.PathLike | None = None) -> dict:
    """Measure and write JSON (``output``, default :func:`default_output`); returns the report."""
    from gpudecode.errors import GpudecodeError
    from gpudecode.index import index_videos

    if backends not in ("cpu", "gpu", "both"):
        raise ValueError(f"backends must be 'cpu', 'gpu' or 'both', got {backends!r}")
    if backends == "gpu":  # nothing to measure without one: say so before any work
        from gpudecode._cuda import import_cupy

        import_cupy()
    synthetic = not paths
    paths = [str(p) for p in paths] if paths else synthetic_clips()
    indexed = index_videos(paths, progress=False)
    readable = [p for p, ix in indexed.items() if not isinstance(ix, Exception) and not ix.problems()]
    skipped = {str(p): str(ix) if isinstance(ix, Exception) else str(ix.problems()[0])
               for p, ix in indexed.items() if isinstance(ix, Exception) or ix.problems()}
    if not readable:
        first = next(iter(skipped.values()), "")
        raise GpudecodeError(None, f"none of the {len(paths)} videos can be read by the engine as is "
                                   f"(e.g. {first})", "check them with `gpudecode inspect`; run `gpudecode prepare`")
    report: dict = {"data": describe_data(len(readable), synthetic), "videos": readable, "skipped": skipped,
                    "segments": num_segments, "clips_per_backend": clips, "rows": {}, "results": {}}
    if backends in ("cpu", "both"):
        report["results"]["cpu"] = bench_cpu(readable, clips=clips, segments=num_segments, workers=workers)
    if backends == "both":  # the GPU path's ceiling, measurable on any machine: its CPU stage alone
        from gpudecode.bench_stages import bench_cpu_stage

        report["results"]["cpu_stage"] = bench_cpu_stage(readable, clips=clips, segments=num_segments, workers=workers)
    if backends in ("gpu", "both"):
        for pixels in ("upload", "nvdec"):
            try:
                report["results"][f"gpu_{pixels}"] = bench_gpu(readable, clips=clips, segments=num_segments, pixels=pixels)
            except Exception as e:  # report what could not run instead of losing the CPU numbers
                report["results"][f"gpu_{pixels}"] = {"error": f"{type(e).__name__}: {e}"}
    report["rows"] = {name: BACKEND_ROWS[name] for name in report["results"]}
    report["summary"] = {name: {k: r.get(k) for k in ("clips_per_s", "decoded_frames_per_s", "error") if k in r}
                         for name, r in report["results"].items()}
    report["output"] = str(write_result("engine", report, output if output is not None else default_output()))
    return report


def failures(report: dict) -> dict[str, list[str]]:
    """``{error: [rows]}``: both GPU rows usually fail for the same reason, said once."""
    out: dict[str, list[str]] = {}
    for name, r in report["results"].items():
        if "error" in r:
            out.setdefault(r["error"], []).append(name)
    return out


def format_report(report: dict) -> str:
    """What ``gpudecode benchmark`` prints: the data, skipped videos, a labelled table, what the rows are, the JSON."""
    lines = []
    skipped = report.get("skipped") or {}
    if skipped:
        lines.append(f"skipped {len(skipped)} video(s) the engine cannot read as is:")
        lines += [f"  {message if path in message else f'{path}: {message}'}" for path, message in skipped.items()]
    lines.append(f"data: {report.get('data') or describe_data(len(report['videos']), False)}")
    lines.append(f"{report['segments']} segments per clip, {report.get('clips_per_backend', '?')} clips per row")
    measured = {name: r for name, r in report["results"].items() if "error" not in r}
    found = {k for r in measured.values() for k in r.get("ms_per_clip_by_stage", {})}
    stages = [s for s in STAGE_ORDER if s in found] + sorted(found - set(STAGE_ORDER))
    name_w = max([len("backend")] + [len(n) for n in measured])
    left = f"{'backend':<{name_w}s} {'clips/s':>8s} {'frames/s':>9s}"
    right = "".join(f" {s:>8s}" for s in stages)
    group = f"{'':<{name_w}s} {'throughput (all workers)':>18s}"
    if stages:
        group = group.ljust(len(left)) + "  " + "ms per clip in each stage (a worker's wall time)".center(len(right))
    lines += [group.rstrip(), left + " " + right, "-" * len(left + " " + right)]
    for name, r in measured.items():
        by_stage = r.get("ms_per_clip_by_stage", {})
        lines.append(f"{name:<{name_w}s} {r['clips_per_s']:8.1f} {r['decoded_frames_per_s']:9.0f} "
                     + "".join(f" {by_stage[s]:8.2f}" if s in by_stage else f" {'-':>8s}" for s in stages))
    for error, names in failures(report).items():  # the CLI prints the error itself once, on stderr
        lines.append(f"{', '.join(names)}: not measured ({error.split(':', 1)[0]}, the error is on stderr)")
    lines.append("frames/s: frames decoded per second; total: the whole clip, the stages plus the Python around them")
    lines += [f"{name}: {BACKEND_ROWS.get(name, '')}" for name in report["results"]]
    lines.append(f"wrote {os.path.abspath(report['output'])}")
    return "\n".join(lines)
