"""`gpudecode` command line: look at videos, prepare datasets, measure the engine.

    gpudecode inspect VIDEO...            GOP table summary and whether the engine reads it as is
    gpudecode show VIDEO -o out.png       I-frame, MV and residual of the sampled segments
    gpudecode index DIR_OR_LIST...        build the GOP index cache in parallel
    gpudecode mvs DIR_OR_LIST...          export each video's MVs once into a sidecar (clip.mp4.mvs)
    gpudecode prepare SRC DST             re-encode to the canonical form (GOP 12, no B-frames), with sidecars
    gpudecode synth DST                   generate the synthetic motion-only dataset
    gpudecode benchmark [VIDEO...]        clips/s of the engine (CPU, GPU or both)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from gpudecode._cli_errors import UsageError, run_main

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".3gp")


def _size(text: str) -> tuple[int, int]:
    from gpudecode.prepare import parse_size

    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def expand_videos(items: Sequence[str]) -> list[Path]:
    """Folders (searched recursively for video files), list files (one path per line) and videos.

    A folder without any video is a :class:`UsageError` that names it (also a folder named like a video).
    """
    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in VIDEO_EXTENSIONS and q.is_file())
            if not found:
                raise UsageError(f"no videos found in {item}" + (" (a folder, not a video file)"
                                                                  if p.suffix.lower() in VIDEO_EXTENSIONS else ""),
                                 f"video files end in {', '.join(VIDEO_EXTENSIONS)}")
            out += found
        elif p.suffix.lower() == ".txt" and p.is_file():
            base = p.parent
            for line in p.read_text().splitlines():
                if line.strip():
                    q = Path(line.split()[0])
                    out.append(q if q.is_absolute() else base / q)
        else:
            out.append(p)
    return out


def cmd_inspect(args) -> int:
    from gpudecode.errors import GpudecodeError
    from gpudecode.index import index_videos

    paths = expand_videos(args.videos)
    # In worker processes, like `gpudecode index`: a file that crashes the decoder is reported as such
    # ("crashed the decoder (SIGSEGV)") and the other files are still inspected.
    results = index_videos(paths, workers=min(len(paths), os.cpu_count() or 1) or 1, cache=not args.no_cache,
                           progress=len(paths) > 20 and not args.json)
    bad = 0
    reports = []
    for path in paths:
        ix = results[str(path)]
        if isinstance(ix, GpudecodeError):
            e = ix
            bad += 1
            reports.append({"path": str(path), "readable": False, "error": type(e).__name__, "message": str(e)})
            if not args.json:
                print(f"{path}: cannot be read: {e}")
            continue
        problems = ix.problems()
        bad += bool(problems)
        lengths = sorted(ix.gop_lengths)
        sidecar = _sidecar_state(path, ix, args.cache_dir) if not problems else None
        report = {"path": str(path), "readable": not problems, "codec": ix.codec, "width": ix.width, "height": ix.height,
                  "fps": ix.fps, "frames": ix.num_frames, "gops": ix.num_gops, "I": ix.num_i, "P": ix.num_p, "B": ix.num_b,
                  "gop_lengths": list(ix.gop_lengths), "variable_frame_rate": ix.variable_frame_rate,
                  "problems": [str(p) for p in problems], "warnings": ix.warnings(), "mv_sidecar": sidecar}
        reports.append(report)
        if args.json:
            continue
        gl = f"{lengths[0]}/{lengths[len(lengths) // 2]}/{lengths[-1]}" if lengths else "-"
        print(f"{path}: {ix.codec} {ix.width}x{ix.height} {ix.fps:.2f} fps{' (VFR)' if ix.variable_frame_rate else ''}, "
              f"{ix.num_frames} frames, {ix.num_gops} GOPs (I {ix.num_i}, P {ix.num_p}, B {ix.num_b}), "
              f"GOP length min/median/max {gl}")
        if args.gops:
            for g, (s, n) in enumerate(zip(ix.gop_starts, ix.gop_lengths)):
                print(f"  GOP {g:4d}: frames {s}..{s + n - 1} ({n})")
        print("  readable as is: " + ("yes" if not problems else "no"))
        if sidecar is not None:
            print(f"  MV sidecar: {'valid' if sidecar['valid'] else sidecar['kind']} ({sidecar['path']})"
                  + ("" if sidecar["valid"] else f": {sidecar['reason']}"))
        for p in problems:
            print(f"  problem: {p.reason}" + (f" ({p.remedy})" if p.remedy else ""))
        for w in ix.warnings():
            print(f"  note: {w}")
    if args.json:
        print(json.dumps(reports, indent=2))
    return 1 if bad else 0


def _sidecar_state(path, index, cache_dir) -> dict:
    """Whether ``path`` has a sidecar the engines will use (every GOP inflated and checked)."""
    from gpudecode.errors import SidecarError
    from gpudecode.sidecar import SidecarReader

    reader = SidecarReader(cache_dir)
    try:
        reader.check(path, index, gops=True)
    except SidecarError as e:
        return {"path": e.path, "valid": False, "kind": e.kind, "reason": e.reason}
    return {"path": str(reader.path(path)), "valid": True}


def cmd_mvs(args) -> int:
    from gpudecode.mvs_pass import write_sidecars

    report = write_sidecars(expand_videos(args.videos), cache_dir=args.cache_dir, workers=args.workers,
                            overwrite=args.overwrite, timeout=args.timeout)
    print(report.summary())
    return 1 if report.failed else 0


def cmd_show(args) -> int:
    from gpudecode.engine import VideoSampler
    from gpudecode.visualize import save_sample_figure

    sampler = VideoSampler(num_segments=args.segments, backend=args.backend)
    num_gops = sampler.index(args.video).num_gops
    note = None
    if num_gops < args.segments:  # more segments would share GOPs and draw the same I-frame twice
        note = f"{num_gops} GOPs: showing {num_gops} segments, one per GOP (asked for {args.segments})"
        sampler.num_segments = num_gops
        print(f"{args.video}: {note}")
    sample = sampler(args.video, mode=args.mode, rng=args.seed)
    try:
        out = save_sample_figure(sample, args.output, note=note)
    except OSError as e:
        raise UsageError(f"cannot write {args.output}: {e.strerror or e}", "choose another -o/--output") from None
    print(f"{sample}\nwrote {os.path.abspath(out)}")
    return 0


def cmd_index(args) -> int:
    from gpudecode.errors import GpudecodeError
    from gpudecode.index import index_videos

    paths = expand_videos(args.videos)
    results = index_videos(paths, workers=args.workers, progress=True)
    failed = {p: r for p, r in results.items() if isinstance(r, GpudecodeError)}
    unreadable = {p: r.problems()[0] for p, r in results.items() if not isinstance(r, GpudecodeError) and r.problems()}
    print(f"indexed {len(results) - len(failed)} of {len(results)} videos; {len(unreadable)} need `gpudecode prepare`; "
          f"{len(failed)} failed")
    for p, e in list(failed.items()) + list(unreadable.items()):
        print(f"  {e}")
    return 1 if failed else 0


def cmd_prepare(args) -> int:
    from gpudecode.prepare import prepare_videos

    sources = expand_videos(args.src)  # a folder without videos is an error that names it
    if len(args.src) == 1 and Path(args.src[0]).is_dir():
        sources = Path(args.src[0])  # the folder itself: outputs keep the layout below it
    report = prepare_videos(sources, args.dst, codec=args.codec, gop=args.gop, size=args.size,
                            workers=args.workers, overwrite=args.overwrite, progress=True, mvs=args.mvs)
    print(report.summary())
    return 1 if report.failed else 0


def cmd_synth(args) -> int:
    from gpudecode.synth import make_synthetic_dataset

    report = make_synthetic_dataset(args.dst, num_videos_per_class=args.videos_per_class, size=args.size,
                                    num_frames=args.frames, codec=args.codec, gop=args.gop, seed=args.seed, progress=True)
    print(report)
    test_list = Path(args.dst) / "test.txt"
    if test_list.exists() and not test_list.read_text().strip():
        print(f"gpudecode synth: warning: {test_list} is empty: with {args.videos_per_class} clip(s) per class every "
              "clip went to training; use --videos-per-class 3 or more for a test split", file=sys.stderr)
    return 0


def cmd_benchmark(args) -> int:
    from gpudecode.benchmark import failures, format_report, run_benchmark

    report = run_benchmark(expand_videos(args.videos) if args.videos else None, backends=args.backend,
                           num_segments=args.segments, clips=args.clips, workers=args.workers, output=args.out)
    print(format_report(report))
    failed = failures(report)
    for error, names in failed.items():  # once per reason: both GPU rows usually fail for the same one
        print(f"gpudecode benchmark: error: {', '.join(names)}: {error}", file=sys.stderr)
    return 1 if failed else 0


class _DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, unless its help already says it or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gpudecode", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    defaults = _DefaultsHelp

    p = sub.add_parser("inspect", help="GOP table summary and whether the engine can read a video as is",
                       formatter_class=defaults)
    p.add_argument("videos", nargs="+", help="videos, folders (searched recursively) or list files (one path a line)")
    p.add_argument("--gops", action="store_true", help="print every GOP (first and last frame, length)")
    p.add_argument("--json", action="store_true", help="machine-readable output (one object per video)")
    p.add_argument("--no-cache", action="store_true", help="re-index instead of using the GOP index cache")
    p.add_argument("--cache-dir", default=None, help="where the MV sidecars live when not beside the videos "
                                                     "(default: $GPUDECODE_MVS_DIR, else beside them)")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("show", help="draw I-frame, MV (colour wheel) and residual of the sampled segments",
                       formatter_class=defaults)
    p.add_argument("video", help="the video to draw")
    p.add_argument("-o", "--output", default="sample.png", help="PNG to write (its path is printed)")
    p.add_argument("--segments", type=_positive, default=8,
                   help="TSN segments, one column each (at most one per GOP: fewer when the video has fewer GOPs)")
    p.add_argument("--mode", choices=["train", "test"], default="test",
                   help="test: centre GOP and middle P-frame of each segment; train: random ones (--seed)")
    p.add_argument("--seed", type=int, default=0, help="random picks in --mode train")
    p.add_argument("--backend", choices=["cpu", "gpu", "auto"], default="cpu", help="decoding backend")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("index", help="build the GOP index cache for a dataset, in parallel", formatter_class=defaults)
    p.add_argument("videos", nargs="+", help="videos, folders or list files")
    p.add_argument("--workers", type=_positive, default=None, help="processes (default: all cores)")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("mvs", help="export every video's MVs once into a sidecar file (clip.mp4.mvs), in parallel",
                       formatter_class=defaults)
    p.add_argument("videos", nargs="+", help="videos, folders or list files")
    p.add_argument("--cache-dir", default=None, help="write the sidecars under this folder (mirroring the videos' "
                                                     "absolute paths) instead of beside the videos, for read-only "
                                                     "datasets (default: $GPUDECODE_MVS_DIR, else beside them)")
    p.add_argument("--workers", type=_positive, default=None, help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="rewrite sidecars that are already current")
    p.add_argument("--timeout", type=float, default=None, help="seconds before a hung video is given up")
    p.set_defaults(func=cmd_mvs)

    p = sub.add_parser("prepare", help="re-encode videos to the engine's canonical form", formatter_class=defaults)
    p.add_argument("src", nargs="+", help="a folder (searched recursively), or videos / list files")
    p.add_argument("dst", help="output folder; the source layout is kept, done files are skipped (resumable)")
    p.add_argument("--codec", choices=["mpeg4", "h264"], default="mpeg4", help="output codec (both export MVs)")
    p.add_argument("--gop", type=_positive, default=12, help="frames per GOP (an I-frame every GOP frames)")
    p.add_argument("--size", type=_size, default=None, help="resize to WIDTHxHEIGHT, e.g. 340x256 (default: keep)")
    p.add_argument("--workers", type=_positive, default=None, help="processes (default: all cores)")
    p.add_argument("--overwrite", action="store_true", help="re-encode files that are already done")
    p.add_argument("--mvs", action=argparse.BooleanOptionalAction, default=True,
                   help="write each output's MV sidecar (clip.mp4.mvs) as it is re-encoded")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("synth", help="generate the synthetic dataset whose classes differ by motion only",
                       formatter_class=defaults)
    p.add_argument("dst", help="output folder: videos/, train.txt, test.txt, classInd.txt")
    p.add_argument("--videos-per-class", type=_positive, default=24,
                   help="clips per class (8 classes); a quarter go to test.txt, so use 3 or more")
    p.add_argument("--size", type=_size, default=(112, 112), help="WIDTHxHEIGHT, even, at least 16x16")
    p.add_argument("--frames", type=_positive, default=48, help="frames per clip")
    p.add_argument("--codec", choices=["mpeg4", "h264"], default="mpeg4", help="codec of the clips")
    p.add_argument("--gop", type=_positive, default=12, help="frames per GOP")
    p.add_argument("--seed", type=int, default=0, help="content and motion seed (same seed, same bytes)")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("benchmark", help="clips/s of the engine on the CPU (all cores), the GPU, or both",
                       formatter_class=defaults)
    p.add_argument("videos", nargs="*", help="videos, folders or list files (default: 8 synthetic clips, one per "
                                             "motion class, mpeg4 340x256, 96 frames, GOP 12, made once in the temp "
                                             "folder)")
    p.add_argument("--backend", choices=["cpu", "gpu", "both"], default="cpu",
                   help="cpu: the CPU engine; gpu: the GPU path (rows gpu_upload, gpu_nvdec); both: all of them "
                        "plus cpu_stage, the GPU path's CPU stage alone (its ceiling on these cores); gpu/both need "
                        "an NVIDIA GPU and the cuda13 or cuda12 extra (README, Installing)")
    p.add_argument("--segments", type=_positive, default=8, help="TSN segments per clip")
    p.add_argument("--clips", type=_positive, default=200, help="clips to decode per backend")
    p.add_argument("--workers", type=_positive, default=None, help="CPU worker processes (default: all cores)")
    p.add_argument("--out", "--output", dest="out", default=None,
                   help="JSON path (default: ~/.cache/gpudecode/benchmarks/engine_<host>.json, or under "
                        "$GPUDECODE_CACHE_DIR; the path written is printed)")
    p.set_defaults(func=cmd_benchmark)
    return parser


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


def main(argv: Sequence[str] | None = None) -> int:
    """``gpudecode``: expected errors (a bad video, a missing GPU, a wrong option) end in one line on stderr
    and exit status 1 or 2 (``gpudecode._cli_errors``); Ctrl-C ends with 130 without tracebacks."""
    return run_main(_main, argv, prog="gpudecode")


if __name__ == "__main__":
    sys.exit(main())
