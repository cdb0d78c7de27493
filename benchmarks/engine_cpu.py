"""CPU engine against the CoViAR-style access pattern and the decode floor (one core).

    python -m benchmarks.engine_cpu                      # synthetic + prepared real clips, 340x256 and 720p h264
    python -m benchmarks.engine_cpu --clips 4 --repeats 3 --no-hd  # quicker

For 8-segment training samples (I-frame, MV, residual), per clip:
- engine:   one open, each sampled GOP decoded once, kernels on the chain (what users get: a
            sample's memory is reused once it is dropped, gpudecode.buffers);
- engine_fresh: the same with fresh memory for every sample (``BufferPool(0)``): what the pool saves;
- coviar:   the published loader's access pattern: a separate open and decode for every segment
            and modality (24 for 8 segments), with the same decoder and kernels (and, to be
            generous to it, a seek to the GOP instead of parsing from the start of the file);
- floor:    PyAV decoding, with MV export, of exactly the frames the sample needs, nothing else.
Reported: median ms per clip, clips/s, engine speed-up over coviar, engine time over the floor.
Each round times engine, coviar and floor on the same sampled clip one after the other, so the
ratios come from one run under the same load; medians over rounds. Both clocks are recorded: wall
time (``*_ms``) and CPU time of the process (``*_cpu_ms``; a shared machine makes the wall clock
also count waiting for a core). Decoding runs on one thread, so both measure one core's work.
Targets (issue 11): engine/floor <= 1.6 (340x256 mpeg4), <= 1.3 (h264); coviar/engine >= 3 (mpeg4).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.common import write_result
from gpudecode.benchmark import machine_info
from gpudecode.buffers import BufferPool
from gpudecode.cpu import CpuBackend
from gpudecode.gopreader import GopReader
from gpudecode.index import index_video
from gpudecode.sample import MODALITIES
from gpudecode.sampling import sample_gops

REAL = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"


def floor(index, picks) -> None:
    last: dict[int, int] = {}
    for gop, pos in picks:
        last[gop] = max(last.get(gop, 0), pos)
    with GopReader(index, export_mvs=True) as reader:
        for gop in sorted(last):
            for _ in reader.frames(gop, last[gop]):
                pass


def coviar_style(backend, index, picks) -> None:
    for pick in picks:
        for modality in MODALITIES:
            backend.decode(index, [pick], modalities=(modality,))


def measure(paths, *, segments: int, repeats: int, seed: int = 0) -> dict:
    backend, fresh, other = CpuBackend(), CpuBackend(pool=BufferPool(0)), CpuBackend()
    rows = []
    for path in paths:
        index = index_video(path, cache=False)
        index.check_readable()
        rng = np.random.default_rng(seed)
        picks_list = [sample_gops(index.gop_lengths, segments, mode="train", rng=rng, positions=index.p_positions) for _ in range(repeats)]
        fns = {"engine": lambda p: backend.decode(index, p), "engine_fresh": lambda p: fresh.decode(index, p),
               "coviar": lambda p: coviar_style(other, index, p), "floor": lambda p: floor(index, p)}
        for fn in fns.values():  # warm-up: caches, the host library, the decoder
            fn(picks_list[0])
        wall: dict[str, list[float]] = {name: [] for name in fns}
        cpu: dict[str, list[float]] = {name: [] for name in fns}
        for picks in picks_list:  # each round: the three on the same sampled clip
            for name, fn in fns.items():
                w0, c0 = time.perf_counter(), time.process_time()
                fn(picks)
                cpu[name].append(1e3 * (time.process_time() - c0))
                wall[name].append(1e3 * (time.perf_counter() - w0))
        med = {f"{name}_ms": statistics.median(v) for name, v in wall.items()}
        med |= {f"{name}_cpu_ms": statistics.median(v) for name, v in cpu.items()}
        rows.append({"video": Path(path).name, "codec": index.codec, "size": f"{index.width}x{index.height}", **med,
                     "speedup_vs_coviar": med["coviar_ms"] / med["engine_ms"],
                     "engine_over_floor": med["engine_ms"] / med["floor_ms"],
                     "speedup_vs_coviar_cpu": med["coviar_cpu_ms"] / med["engine_cpu_ms"],
                     "engine_over_floor_cpu": med["engine_cpu_ms"] / med["floor_cpu_ms"],
                     "fresh_memory_over_pooled_cpu": med["engine_fresh_cpu_ms"] / med["engine_cpu_ms"]})
        r = rows[-1]
        print(f"  {r['video']:40s} {index.codec:5s} engine {r['engine_ms']:7.2f} ms  coviar {r['coviar_ms']:7.2f} ms  "
              f"floor {r['floor_ms']:7.2f} ms  x{r['speedup_vs_coviar']:.2f} vs coviar  {r['engine_over_floor']:.2f}x floor"
              f"  | cpu: x{r['speedup_vs_coviar_cpu']:.2f}, {r['engine_over_floor_cpu']:.2f}x floor, "
              f"fresh memory x{r['fresh_memory_over_pooled_cpu']:.2f}")
    keys = [k for k in rows[0] if k.endswith("_ms") or k.startswith(("speedup", "engine_over", "fresh_"))]
    median = {k: statistics.median(r[k] for r in rows) for k in keys}
    stats = backend.stats  # per-stage wall time inside the engine, warm-up included (its own backend)
    stages = {k: 1e3 * v / stats["clips"] for k, v in stats.items() if k not in ("clips", "frames")}
    return {"clips": rows, "median": median, "engine_clips_per_s": 1e3 / median["engine_ms"],
            "host_isa": backend.kernels.isa, "engine_stage_ms_per_clip": stages,
            "engine_frames_per_clip": stats["frames"] / stats["clips"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", default="/tmp/gpudecode-bench", help="where test clips are generated/prepared")
    ap.add_argument("--real-dir", default=str(REAL))
    ap.add_argument("--clips", type=int, default=8, help="clips per set")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--segments", type=int, default=8)
    ap.add_argument("--no-hd", action="store_true", help="skip the 1280x720 h264 set (real clips, prepared at 720p)")
    ap.add_argument("--sets", default=None, help="only the sets whose name contains one of these comma-separated "
                    "words (e.g. 'mpeg4' or 'real,720')")
    ap.add_argument("--output", default=None)
    args = ap.parse_args(argv)

    from gpudecode.prepare import prepare_videos
    from gpudecode.synth import make_synthetic_dataset

    work = Path(args.work_dir)
    words = args.sets.split(",") if args.sets else []

    def wanted(name: str) -> bool:
        return not words or any(w in name for w in words)

    sets: dict[str, list[Path]] = {}
    for codec in ("mpeg4", "h264"):
        synth = work / f"synth_{codec}"
        if wanted(f"synthetic 340x256 {codec}"):
            make_synthetic_dataset(synth, num_videos_per_class=1, size=(340, 256), num_frames=96, codec=codec, seed=0,
                                   progress=False)
            sets[f"synthetic 340x256 {codec}"] = sorted((synth / "videos").rglob("*.mp4"))[: args.clips]
        real = Path(args.real_dir)
        if real.is_dir() and wanted(f"real prepared 340x256 {codec}"):
            prepared = work / f"real_{codec}"
            sources = sorted(p for p in real.iterdir() if p.suffix in (".mp4", ".avi"))
            prepare_videos(sources, prepared, codec=codec, gop=12, size=(340, 256), workers=None, progress=True)
            sets[f"real prepared 340x256 {codec}"] = sorted(prepared.rglob("*.mp4"))[: args.clips]
    real = Path(args.real_dir)
    if not args.no_hd and real.is_dir() and wanted("real prepared 1280x720 h264"):
        prepared = work / "real_h264_1280x720"
        sources = sorted(p for p in real.iterdir() if p.suffix in (".mp4", ".avi"))[: args.clips]
        prepare_videos(sources, prepared, codec="h264", gop=12, size=(1280, 720), workers=None, progress=True)
        sets["real prepared 1280x720 h264"] = sorted(prepared.rglob("*.mp4"))[: args.clips]
    machine = machine_info()  # the load average the runs start under
    results = {}
    for name, paths in sets.items():
        print(f"{name}: {len(paths)} clips, {args.segments} segments, median of {args.repeats}")
        results[name] = measure(paths, segments=args.segments, repeats=args.repeats)
        m = results[name]["median"]
        print(f"  median: engine {m['engine_ms']:.2f} ms ({results[name]['engine_clips_per_s']:.1f} clips/s), "
              f"x{m['speedup_vs_coviar']:.2f} vs coviar-style, {m['engine_over_floor']:.2f}x the decode floor; "
              f"CPU time: engine {m['engine_cpu_ms']:.2f} ms, x{m['speedup_vs_coviar_cpu']:.2f} vs coviar-style, "
              f"{m['engine_over_floor_cpu']:.2f}x the decode floor")
    payload = {"segments": args.segments, "repeats": args.repeats, "clock": "median of rounds; wall (perf_counter) "
               "and process CPU time (process_time); engine, coviar and floor interleaved per round", "sets": results}
    path = write_result("engine_cpu", payload, args.output, machine=machine)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
