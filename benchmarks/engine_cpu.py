"""CPU engine against the CoViAR-style access pattern and the decode floor (one core).

    python -m benchmarks.engine_cpu                      # synthetic + prepared real clips
    python -m benchmarks.engine_cpu --clips 4 --repeats 3  # quicker

For 8-segment training samples (I-frame, MV, residual), per clip:
- engine:   one open, each sampled GOP decoded once, kernels on the chain (what users get);
- coviar:   the published loader's access pattern: a separate open and decode for every segment
            and modality (24 for 8 segments), with the same decoder and kernels (and, to be
            generous to it, a seek to the GOP instead of parsing from the start of the file);
- floor:    PyAV decoding, with MV export, of exactly the frames the sample needs, nothing else.
Reported: median ms per clip, clips/s, engine speed-up over coviar, engine time over the floor.
Targets (issue 2): coviar/engine >= 2.5; engine/floor <= 2.0 (340x256 mpeg4), <= 1.5 (h264).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path

import numpy as np

from benchmarks.common import median_ms, write_result
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
    backend = CpuBackend()
    rows = []
    for path in paths:
        index = index_video(path, cache=False)
        index.check_readable()
        rng = np.random.default_rng(seed)
        picks_list = [sample_gops(index.gop_lengths, segments, mode="train", rng=rng) for _ in range(repeats)]

        def run(fn):
            picks = itertools.cycle(picks_list)  # each timed call gets the next sampled clip
            return median_ms(lambda: fn(index, next(picks)), repeats)

        engine = run(lambda ix, p: backend.decode(ix, p))
        coviar = run(lambda ix, p: coviar_style(backend, ix, p))
        floor_ms = run(floor)
        rows.append({"video": Path(path).name, "codec": index.codec, "size": f"{index.width}x{index.height}",
                     "engine_ms": engine, "coviar_ms": coviar, "floor_ms": floor_ms,
                     "speedup_vs_coviar": coviar / engine, "engine_over_floor": engine / floor_ms})
        print(f"  {rows[-1]['video']:40s} {index.codec:5s} engine {engine:7.2f} ms  coviar {coviar:7.2f} ms  "
              f"floor {floor_ms:7.2f} ms  x{coviar / engine:.2f} vs coviar  {engine / floor_ms:.2f}x floor")
    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    return {"clips": rows, "median": {k: med(k) for k in ("engine_ms", "coviar_ms", "floor_ms", "speedup_vs_coviar",
                                                          "engine_over_floor")},
            "engine_clips_per_s": 1e3 / med("engine_ms")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", default="/tmp/gpudecode-bench", help="where test clips are generated/prepared")
    ap.add_argument("--real-dir", default=str(REAL))
    ap.add_argument("--clips", type=int, default=8, help="clips per set")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--segments", type=int, default=8)
    ap.add_argument("--output", default=None)
    args = ap.parse_args(argv)

    from gpudecode.prepare import prepare_videos
    from gpudecode.synth import make_synthetic_dataset

    work = Path(args.work_dir)
    sets: dict[str, list[Path]] = {}
    for codec in ("mpeg4", "h264"):
        synth = work / f"synth_{codec}"
        make_synthetic_dataset(synth, num_videos_per_class=1, size=(340, 256), num_frames=96, codec=codec, seed=0,
                               progress=False)
        sets[f"synthetic 340x256 {codec}"] = sorted((synth / "videos").rglob("*.mp4"))[: args.clips]
        real = Path(args.real_dir)
        if real.is_dir():
            prepared = work / f"real_{codec}"
            sources = sorted(p for p in real.iterdir() if p.suffix in (".mp4", ".avi"))
            prepare_videos(sources, prepared, codec=codec, gop=12, size=(340, 256), workers=None, progress=True)
            sets[f"real prepared 340x256 {codec}"] = sorted(prepared.rglob("*.mp4"))[: args.clips]
    results = {}
    for name, paths in sets.items():
        print(f"{name}: {len(paths)} clips, {args.segments} segments, median of {args.repeats}")
        results[name] = measure(paths, segments=args.segments, repeats=args.repeats)
        m = results[name]["median"]
        print(f"  median: engine {m['engine_ms']:.2f} ms ({results[name]['engine_clips_per_s']:.1f} clips/s), "
              f"x{m['speedup_vs_coviar']:.2f} vs coviar-style, {m['engine_over_floor']:.2f}x the decode floor")
    path = write_result("engine_cpu", {"segments": args.segments, "repeats": args.repeats, "sets": results}, args.output)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
