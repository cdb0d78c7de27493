"""Memory soak: RSS over thousands of clips, for the CPU engine and for the training loader's workers.

    python -m benchmarks.soak                         # 5,000 clips each, engine and loader
    python -m benchmarks.soak --clips 1000 --modes engine
    python -m benchmarks.soak --pyav-side-data        # the engine as it read MVs before (for the "before" figure)

Neither mode ever calls ``gc.collect()``: what a leak or a reference cycle would pile up in a long
training run shows here. RSS is sampled every ``--every`` clips; the figure of merit is the RSS at the
end over the RSS after warm-up (the first 10% of the clips), target <= 1.10, for the engine process
and for each loader worker.

Clips: 340x256 mpeg4, 96 frames, GOP 12, generated once into ``--data`` (default
``data/soak``), 8-segment training samples (I-frame, MV, residual).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from gpudecode.progress import tqdm  # plain lines when stderr is a log file

from benchmarks.common import machine_info, write_result


def rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process in MB (Linux /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    """All descendant process ids of ``pid`` (loader workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except FileNotFoundError:
            continue
        for t in tasks:
            try:
                with open(f"/proc/{p}/task/{t}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except FileNotFoundError:
                kids = []
            out += kids
            todo += kids
    return out


def make_clips(dst: Path, count: int) -> list[str]:
    """``count`` canonical 340x256 mpeg4 clips of moving noise texture (made once, reused)."""
    from gpudecode.encode import write_video
    from gpudecode.synth import render_translation

    dst.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = dst / f"clip{i:03d}.mp4"
        if not path.exists():
            frames = render_translation((340, 256), 96, dx=1 + i % 3, dy=i % 2, seed=i)
            write_video(path, frames, codec="mpeg4", gop=12)
        paths.append(str(path))
    return paths


def _summary(series: list[tuple[int, float]], clips: int) -> dict:
    warm = next(mb for n, mb in series if n >= max(1, clips // 10))
    end = series[-1][1]
    return {"rss_mb_after_warmup": round(warm, 1), "rss_mb_end": round(end, 1),
            "rss_mb_max": round(max(mb for _, mb in series), 1), "end_over_warmup": round(end / warm, 3)}


def soak_engine(paths: list[str], clips: int, every: int, *, pyav_side_data: bool = False) -> dict:
    from gpudecode import cpu
    from gpudecode._av import _NO_MVS
    from gpudecode.engine import VideoSampler

    if pyav_side_data:  # the reader before the fix: PyAV's cached frame.side_data (a reference cycle)
        def old_motion_vectors(frame):
            sd = frame.side_data.get("MOTION_VECTORS")
            return sd.to_ndarray() if sd is not None else _NO_MVS
        cpu.motion_vectors = old_motion_vectors
    sampler = VideoSampler(num_segments=8, cache=False)
    indexes = [sampler.index(p) for p in paths]
    rng = np.random.default_rng(0)
    series = [(0, rss_mb())]
    t0 = time.perf_counter()
    for n in tqdm(range(1, clips + 1), desc="engine", unit="clip"):
        index = indexes[n % len(indexes)]
        sampler.backend.decode(index, sampler.picks(index, mode="train", rng=rng))
        if n % every == 0:
            series.append((n, rss_mb()))
    return {"clips": clips, "seconds": round(time.perf_counter() - t0, 1), "rss_mb": series,
            "pyav_side_data": pyav_side_data, **_summary(series, clips)}


def soak_loader(paths: list[str], clips: int, every: int, *, workers: int, kind: str) -> dict:
    from teamnet.dali_loader import ClipLoader
    from teamnet.datasets import VideoList

    listed = (paths * (64 // len(paths) + 1))[:max(64, len(paths))]  # a few batches per epoch whatever --videos is
    videos = VideoList(listed, [i % 2 for i in range(len(listed))], ["a", "b"])
    batch = 8
    loader = ClipLoader(videos, mode="train", modalities=("iframe", "mv", "residual"), num_segments=8,
                        batch_size=batch, size=112, workers=workers, kind=kind, cache=False)
    me = os.getpid()
    series: dict[str, list[tuple[int, float]]] = {"main": []}
    done, epoch = 0, 0
    t0 = time.perf_counter()
    bar = tqdm(total=clips, desc=f"loader ({kind}, {workers} workers)", unit="clip")
    while done < clips:
        for b in loader.epoch(epoch):
            done += len(b.labels)
            bar.update(len(b.labels))
            if done // every != (done - len(b.labels)) // every or done >= clips:
                series["main"].append((done, rss_mb()))
                for k, pid in enumerate(sorted(children(me))):
                    try:
                        series.setdefault(f"worker{k}", []).append((done, rss_mb(pid)))
                    except FileNotFoundError:
                        pass
            if done >= clips:
                break
        epoch += 1
    bar.close()
    loader.close()
    out = {"clips": done, "seconds": round(time.perf_counter() - t0, 1), "kind": kind, "workers": workers,
           "processes": {}}
    for name, s in series.items():
        if len(s) >= 2:
            out["processes"][name] = {"rss_mb": s, **_summary(s, done)}
    out["worst_end_over_warmup"] = max(p["end_over_warmup"] for p in out["processes"].values())
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=5000, help="clips per mode")
    ap.add_argument("--every", type=int, default=250, help="sample RSS every this many clips")
    ap.add_argument("--videos", type=int, default=16, help="distinct clips to cycle through")
    ap.add_argument("--data", default="data/soak", help="where the generated clips are kept")
    ap.add_argument("--modes", default="engine,loader", help="comma-separated: engine, loader")
    ap.add_argument("--workers", type=int, default=2, help="loader workers")
    ap.add_argument("--kind", default="auto", choices=["auto", "dali", "torch"], help="loader kind")
    ap.add_argument("--pyav-side-data", action="store_true",
                    help="engine mode reads MVs through PyAV's frame.side_data (the leak, for comparison)")
    ap.add_argument("-o", "--output", help="JSON path (default benchmarks/results/soak_<host>.json)")
    args = ap.parse_args(argv)
    machine = machine_info()
    paths = make_clips(Path(args.data), args.videos)
    payload: dict = {"command": "python -m benchmarks.soak " + " ".join(sys.argv[1:] if argv is None else argv),
                     "target": "RSS at the end within 10% of its value after warm-up (end_over_warmup <= 1.10)"}
    modes = args.modes.split(",")
    if "engine" in modes:
        payload["engine"] = soak_engine(paths, args.clips, args.every, pyav_side_data=args.pyav_side_data)
        print(f"engine: RSS {payload['engine']['rss_mb_after_warmup']} MB after warm-up -> "
              f"{payload['engine']['rss_mb_end']} MB after {args.clips} clips "
              f"(x{payload['engine']['end_over_warmup']})")
    if "loader" in modes:
        from teamnet.dali_loader import dali_available

        kind = args.kind if args.kind != "auto" else ("dali" if dali_available() else "torch")
        payload["loader"] = soak_loader(paths, args.clips, args.every, workers=args.workers, kind=kind)
        for name, p in payload["loader"]["processes"].items():
            print(f"loader {name}: RSS {p['rss_mb_after_warmup']} MB after warm-up -> {p['rss_mb_end']} MB "
                  f"(x{p['end_over_warmup']})")
    path = write_result("soak", payload, args.output, machine=machine)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
