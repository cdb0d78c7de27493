"""The GPU path's ceiling, measured without a GPU: the CPU stage alone against the CPU engine.

    python -m benchmarks.gpu_path                  # 340x256 mpeg4 and h264, all cores, 5 rounds
    python -m benchmarks.gpu_path --clips 40 --rounds 3
    python -m benchmarks.gpu_path --sidecars       # MVs from sidecars: CPU ms per clip, sizes (one core)

With the batched GPU engine the loader's workers run only the CPU stage (decode with MV export of the
needed frames, MV records and planes into a packet); everything per pixel moves to the GPU. So the CPU
stage's clips/s on all cores is the most the GPU path can deliver on those cores, and its ratio to the
CPU engine's clips/s on the same cores is the most the GPU can gain. Both run on all cores in
alternating rounds (this machine is shared and noisy: medians of the per-round figures and of the
per-round ratio). Also, in one process: the GPU stage on the host executor per clip (the kernels of
batch.cu, host build) against the CPU engine's own kernel time, to say whether the host executor would
make a good CPU backend.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks.common import machine_info, write_result
from gpudecode.bench_stages import bench_cpu_stage
from gpudecode.benchmark import bench_cpu, synthetic_clips


def host_executor_vs_cpu_engine(paths, *, clips: int, segments: int, batch: int = 8) -> dict:
    """One process: CPU engine ms per clip vs CPU stage + GPU stage on the host executor."""
    from gpudecode.cpu import CpuBackend
    from gpudecode.executor import HostExecutor
    from gpudecode.index import index_video
    from gpudecode.packet import CpuStage
    from gpudecode.sampling import sample_gops
    from gpudecode.stage import GpuStage

    indexes = [index_video(p) for p in paths]
    rng = np.random.default_rng(0)
    jobs = [(indexes[i % len(indexes)], sample_gops(indexes[i % len(indexes)].gop_lengths, segments, mode="train", rng=rng,
                                                      positions=indexes[i % len(indexes)].p_positions))
            for i in range(clips)]
    cpu, stage, gpu = CpuBackend(), CpuStage(), GpuStage(HostExecutor())
    cpu.decode(*jobs[0])
    gpu([stage(*jobs[0])])
    cpu.stats.clear()
    stage.stats.clear()
    t = time.perf_counter()
    for job in jobs:
        cpu.decode(*job)
    engine_ms = 1e3 * (time.perf_counter() - t) / clips
    t = time.perf_counter()
    t_gpu = 0.0
    for i in range(0, clips, batch):
        packets = [stage(*job) for job in jobs[i:i + batch]]
        t0 = time.perf_counter()
        gpu(packets)
        t_gpu += time.perf_counter() - t0
    staged_ms = 1e3 * (time.perf_counter() - t) / clips
    return {"clips": clips, "batch": batch, "cpu_engine_ms_per_clip": engine_ms,
            "cpu_engine_kernels_ms_per_clip": 1e3 * cpu.stats["kernels"] / clips,
            "cpu_stage_ms_per_clip": 1e3 * stage.stats["total"] / clips,
            "host_executor_gpu_stage_ms_per_clip": 1e3 * t_gpu / clips,
            "staged_total_ms_per_clip": staged_ms, "staged_over_engine": staged_ms / engine_ms}


def _cpu_ms(fn, jobs) -> float:
    """Median over 3 passes of the CPU time (this process) per job, after one warm-up job."""
    fn(*jobs[0])
    runs = []
    for _ in range(3):
        t = time.process_time()
        for job in jobs:
            fn(*job)
        runs.append(1e3 * (time.process_time() - t) / len(jobs))
    return statistics.median(runs)


def sidecar_ceiling(paths, *, clips: int, segments: int, real: list[str] | None = None) -> dict:
    """With MVs from sidecars: the CPU stage's CPU ms per clip (``pixels="nvdec"``: a file read, no decoder)
    against the CPU engine's, and the CPU engine itself with sidecar MVs (decoding without MV export).
    Also what writing the sidecars costs against one indexing pass (a decode), and their sizes."""
    import os

    from gpudecode.cpu import CpuBackend
    from gpudecode.index import build_index
    from gpudecode.packet import CpuStage
    from gpudecode.sampling import sample_gops
    from gpudecode.sidecar import write_sidecar

    def write_cost(videos):
        t = time.process_time()
        written = [write_sidecar(p) for p in videos]
        t_write = time.process_time() - t
        t = time.process_time()
        for p in videos:
            build_index(p)
        t_index = time.process_time() - t
        sizes = [w.nbytes / w.video_bytes for w in written]
        return written, {"write_over_index_pass": t_write / t_index, "write_ms_per_video": 1e3 * t_write / len(videos),
                         "sidecar_over_video_bytes": sum(w.nbytes for w in written) / sum(w.video_bytes for w in written),
                         "sidecar_over_video_bytes_max": max(sizes)}

    written, out = write_cost(paths)
    indexes = [w.index for w in written]
    rng = np.random.default_rng(0)
    jobs = [(indexes[i % len(indexes)], sample_gops(indexes[i % len(indexes)].gop_lengths, segments, mode="train",
                                                    rng=rng, positions=indexes[i % len(indexes)].p_positions))
            for i in range(clips)]
    engine, engine_side = CpuBackend(), CpuBackend(mvs="sidecar")
    stage = CpuStage(mvs="sidecar", pixels="nvdec")
    keep = []  # packets are dropped one clip later, as a loader does (the buffer pool reuses their memory)

    def staged(ix, picks):
        keep[:] = [stage(ix, picks)]

    out["cpu_engine_ms_per_clip"] = _cpu_ms(engine.decode, jobs)
    out["cpu_engine_sidecar_mvs_ms_per_clip"] = _cpu_ms(engine_side.decode, jobs)
    out["cpu_stage_sidecar_nvdec_ms_per_clip"] = _cpu_ms(staged, jobs)
    out["ceiling_over_engine"] = out["cpu_engine_ms_per_clip"] / out["cpu_stage_sidecar_nvdec_ms_per_clip"]
    out["engine_saved_by_sidecar_mvs"] = 1 - out["cpu_engine_sidecar_mvs_ms_per_clip"] / out["cpu_engine_ms_per_clip"]
    out["mv_records_per_clip"] = float(np.mean([int(p.mv_offsets[-1]) for p in [stage(*j) for j in jobs[:20]]]))
    assert not engine_side.stats["sidecar_fallbacks"] and not stage.stats["sidecar_fallbacks"]
    if real:  # synthetic motion says little about sizes: real clips, prepared like the set
        _, out["real_clips"] = write_cost(real)
        out["real_clips"]["videos"] = [os.path.basename(p) for p in real]
    return out


def _prepared_real(size, codec) -> list[str]:
    """The shared real clips re-encoded with ``gpudecode prepare`` (cached in the temp folder), if present."""
    import tempfile
    from pathlib import Path

    from gpudecode.prepare import prepare_videos

    real = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"
    if not real.is_dir():
        return []
    dst = Path(tempfile.gettempdir()) / f"gpudecode-bench-real-{size[0]}x{size[1]}-{codec}"
    sources = sorted(p for p in real.iterdir() if p.suffix in (".mp4", ".avi"))[:10]
    prepare_videos(sources, dst, codec=codec, size=size, progress=False, mvs=False)
    return sorted(str(p) for p in dst.rglob("*.mp4"))


def sidecars_main(args, machine) -> None:
    sets = {}
    for size, codec in (((340, 256), "mpeg4"), ((340, 256), "h264"), ((1280, 720), "h264")):
        label = f"{size[0]}x{size[1]} {codec}"
        real = _prepared_real(size, codec) if size == (340, 256) else []
        sets[label] = r = sidecar_ceiling(synthetic_clips(size, codec), clips=args.clips, segments=args.segments,
                                          real=real)
        print(f"{label}: CPU engine {r['cpu_engine_ms_per_clip']:.2f} ms/clip, with sidecar MVs "
              f"{r['cpu_engine_sidecar_mvs_ms_per_clip']:.2f}; CPU stage from sidecars (nvdec) "
              f"{r['cpu_stage_sidecar_nvdec_ms_per_clip']:.3f} ms/clip: x{r['ceiling_over_engine']:.1f}; sidecar "
              f"{100 * r['sidecar_over_video_bytes']:.1f}% of the video bytes (real clips: "
              f"{100 * r.get('real_clips', {}).get('sidecar_over_video_bytes', float('nan')):.1f}%), writing "
              f"x{r['write_over_index_pass']:.2f} an index pass")
    path = write_result("gpu_path_sidecar_cpu", {"segments": args.segments, "clips": args.clips, "sets": sets},
                        args.output or "benchmarks/results/gpu_path_sidecar_cpu.json", machine=machine)
    print(f"wrote {path}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=80, help="clips per measurement (split over the workers)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--segments", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None, help="default: all cores")
    ap.add_argument("--output", default=None, help="default: benchmarks/results/gpu_path_ceiling_cpu.json "
                                                   "(gpu_path_sidecar_cpu.json with --sidecars)")
    ap.add_argument("--sidecars", action="store_true", help="MVs from sidecars, one process: CPU ms per clip and sizes")
    args = ap.parse_args(argv)
    machine = machine_info()
    if args.sidecars:
        return sidecars_main(args, machine)
    args.output = args.output or "benchmarks/results/gpu_path_ceiling_cpu.json"
    sets = {}
    for codec in ("mpeg4", "h264"):
        label = f"340x256 {codec}"
        paths = synthetic_clips((340, 256), codec)
        rounds = []
        for r in range(args.rounds):
            order = ("engine", "stage") if r % 2 == 0 else ("stage", "engine")
            row = {}
            for which in order:
                if which == "engine":
                    row["engine"] = bench_cpu(paths, clips=args.clips, segments=args.segments, workers=args.workers)
                else:
                    row["stage"] = bench_cpu_stage(paths, clips=args.clips, segments=args.segments, workers=args.workers)
            row["ratio"] = row["stage"]["clips_per_s"] / row["engine"]["clips_per_s"]
            rounds.append(row)
            print(f"{label} round {r}: engine {row['engine']['clips_per_s']:.1f} clips/s, "
                  f"CPU stage {row['stage']['clips_per_s']:.1f} clips/s, x{row['ratio']:.2f}")
        med = lambda f: statistics.median(f(row) for row in rounds)  # noqa: E731
        per_stage = {which: {k: statistics.median(row[which]["ms_per_clip_by_stage"].get(k, 0.0) for row in rounds)
                             for k in rounds[0][which]["ms_per_clip_by_stage"]} for which in ("engine", "stage")}
        sets[label] = {
            "workers": rounds[0]["engine"]["workers"],
            "median": {"engine_clips_per_s": med(lambda r: r["engine"]["clips_per_s"]),
                       "cpu_stage_clips_per_s": med(lambda r: r["stage"]["clips_per_s"]),
                       "ceiling_over_engine": med(lambda r: r["ratio"])},
            "ms_per_clip_by_stage": per_stage,
            "host_executor": host_executor_vs_cpu_engine(paths, clips=max(8, args.clips // 4), segments=args.segments),
            "rounds": rounds,
        }
        m = sets[label]["median"]
        print(f"{label}: median engine {m['engine_clips_per_s']:.1f} clips/s, CPU stage {m['cpu_stage_clips_per_s']:.1f} "
              f"clips/s: the GPU path's ceiling is x{m['ceiling_over_engine']:.2f} the CPU engine on these cores")
        print(f"  host executor: {sets[label]['host_executor']}")
    path = write_result("gpu_path_ceiling_cpu", {"segments": args.segments, "clips": args.clips, "rounds": args.rounds,
                                                 "sets": sets}, args.output, machine=machine)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
