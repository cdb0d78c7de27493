"""Each host kernel against a memcpy of the bytes it moves, and YUV->RGB against FFmpeg's swscale.

    python -m benchmarks.kernels_micro                       # every ISA build, 340x256 and 1280x720
    python -m benchmarks.kernels_micro --compare-rev 48f7b02 # also the kernels as of that commit, per ISA
    python -m benchmarks.kernels_micro --codec mpeg4         # the clip as mpeg4 (the CPU engine's usual)

Inputs are real: a real clip is re-encoded with `gpudecode prepare` (h264 or mpeg4, GOP 12) at each size, and
its first GOP is decoded with MV export; the kernels then run on its MV lists, its accumulated source
map at the GOP's last P-frame, its planes and its I-frame. Per frame and kernel the figure is the
median of ``--repeats`` calls in CPU time of the process (``time.process_time``: on a shared,
overloaded machine a wall clock also counts the time spent waiting for a core; the CPU time of all
threads counts what swscale's worker threads do too), the ctypes call included (about 1 us: the
kernels are called through their raw ctypes functions with the pointers worked out once), next to:
- memcpy: ``np.copyto`` of N bytes, where N is half the bytes the kernel reads plus writes (a memcpy
  of N bytes reads N and writes N), i.e. the same memory traffic done by the C library;
- swscale (YUV->RGB only): PyAV ``frame.reformat(format="rgb24", threads=1)`` and
  ``frame.to_ndarray(format="rgb24", threads=1)`` (one core, like the engine; also swscale's default
  threading), FFmpeg's own SIMD conversion (other rounding: a speed reference, not an equal).
Every library is timed in the same run, interleaved, so ratios between them hold on a noisy machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from benchmarks.common import write_result
from gpudecode._av import colour_matrix, motion_vectors, open_video, yuv420_planes
from gpudecode._host import BASE_FLAGS, ISAS, HostKernels, build_host_library, host_kernels, supported_isas
from gpudecode.benchmark import machine_info
from gpudecode.kernels import CELL_SHIFT
from gpudecode.kernels.reference import grid_shape

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "fixtures" / "real"
SIZES = ((340, 256), (1280, 720))
clock = time.process_time  # CPU time: waiting for a core does not count


def old_libraries(rev: str, out_dir: Path, isas: list[str]) -> dict[str, HostKernels]:
    """The kernels' sources as of git revision ``rev``, built for each of ``isas`` with this checkout's flags
    (a revision without a source for an instruction set is built for the baseline only)."""
    src = out_dir / f"kernels-{rev}"
    src.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", rev, "kernels"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "x", "-C", str(src)], input=archive, check=True)
    libs = {}
    for isa in isas:
        source, isa_flags, _ = ISAS[isa]
        if not (src / "kernels" / "host" / source).exists():
            continue
        lib = out_dir / f"hostkernels-{rev}-{isa}.so"
        subprocess.run(["c++", *BASE_FLAGS, *isa_flags, "-shared", "-fPIC", "-x", "c++",
                        str(src / "kernels" / "host" / source), "-o", str(lib)], check=True)
        libs[f"rev_{rev}_{isa}"] = HostKernels(lib)
    return libs


def frame_inputs(path: Path, k: HostKernels) -> dict:
    """The first GOP of ``path``: I-frame planes, last P-frame's planes and MVs, S_k at that P-frame."""
    container, stream = open_video(path, export_mvs=True)
    with container:
        frames = []
        for frame in container.decode(stream):
            if frames and frame.key_frame:
                break
            planes = tuple(p.copy() for p in yuv420_planes(frame))
            frames.append((planes, motion_vectors(frame).copy(), colour_matrix(frame)))
            w, h = frame.width, frame.height
    gh, gw = grid_shape(w, h, CELL_SHIFT)
    grids, src = [], None
    bufs = [np.empty((h, w), np.int32) for _ in range(2)]
    for t, (_, mvs, _) in enumerate(frames[1:]):
        grid = np.zeros((gh, gw, 2), np.int16)
        assert not k.rasterize_mv(mvs, grid, CELL_SHIFT), "benchmark clip has blocks off the 8-pixel grid"
        out = bufs[t % 2]
        k.accumulate_step(src, out, grid, CELL_SHIFT)
        src, prev = out, src
        grids.append(grid)
    iframe = np.empty((h, w, 3), np.uint8)
    k.yuv420_to_rgb(*frames[0][0], frames[0][2], iframe)
    return {"w": w, "h": h, "iplanes": frames[0][0], "planes": frames[-1][0], "mvs": frames[-1][1], "grid": grids[-1],
            "matrix": frames[0][2], "src": src, "src_prev": prev if prev is not None else bufs[1], "iframe": iframe,
            "p_frames": len(frames) - 1}


def median_us(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = clock()
        fn()
        times.append(clock() - t)
    return 1e6 * statistics.median(times)


def measure(inputs: dict, libs: dict[str, HostKernels], repeats: int) -> dict:
    w, h = inputs["w"], inputs["h"]
    y, u, v = inputs["planes"]
    m, grid, mvs = inputs["matrix"], inputs["grid"], inputs["mvs"]
    gh, gw = grid.shape[:2]
    out_rgb = np.empty((h, w, 3), np.uint8)
    nxt = np.empty((h, w), np.int32)
    mv, res = np.empty((h, w, 2), np.int16), np.empty((h, w, 3), np.int16)
    scratch_grid = np.zeros_like(grid)
    # Bytes each kernel reads and writes (the 4:2:0 planes: 1.5 bytes per pixel).
    traffic = {"rasterize_mv": (mvs.nbytes, grid.nbytes), "accumulate_step": (4 * w * h + grid.nbytes, 4 * w * h),
               "yuv420_to_rgb": (3 * w * h // 2, 3 * w * h),
               "gather_mv_residual": (4 * w * h + 3 * w * h // 2 + 3 * w * h, 4 * w * h + 6 * w * h),
               "gather_mv_only": (4 * w * h, 4 * w * h)}
    # The raw ctypes functions with the pointers worked out once: the typed wrappers' NumPy pointer
    # lookups cost about 5 us a call (measured), more than the smallest kernels.
    P = lambda a: a.ctypes.data  # noqa: E731
    src, src_prev, iframe = inputs["src"], inputs["src_prev"], inputs["iframe"]
    yuv = (P(y), y.strides[0], P(u), P(v), u.strides[0], u.strides[1])
    calls = {
        "rasterize_mv": lambda k: k._rasterize_mv(P_mvs, len(mvs), gw, gh, CELL_SHIFT, P_scratch, k.flag_ptr),
        "accumulate_step": lambda k: k._accumulate_step(P_prev, P_nxt, P_grid, gw, CELL_SHIFT, w, h),
        "yuv420_to_rgb": lambda k: k._yuv420_to_rgb(*yuv, w, h, m, P_rgb),
        "gather_mv_residual": lambda k: k._gather_mv_residual(P_src, P_iframe, *yuv, w, h, m, P_mv, P_res),
        "gather_mv_only": lambda k: k._gather_mv_residual(P_src, None, None, 0, None, None, 0, 1, w, h, m, P_mv, None),
    }
    P_mvs, P_scratch, P_prev, P_nxt, P_grid = P(mvs), P(scratch_grid), P(src_prev), P(nxt), P(grid)
    P_rgb, P_src, P_iframe, P_mv, P_res = P(out_rgb), P(src), P(iframe), P(mv), P(res)
    rows = {}
    for name, call in calls.items():
        read, write = traffic[name]
        n = (read + write) // 2
        a, b = np.ones(n, np.uint8), np.empty(n, np.uint8)
        row = {"bytes_read": read, "bytes_written": write}
        # Interleave: each round times every library and the memcpy once; medians over rounds.
        per = {lib: [] for lib in libs} | {"memcpy": []}
        for lib in libs.values():
            call(lib)
        for _ in range(repeats):
            for lib_name, lib in libs.items():
                t = clock()
                call(lib)
                per[lib_name].append(clock() - t)
            t = clock()
            np.copyto(b, a)
            per["memcpy"].append(clock() - t)
        med = {key: 1e6 * statistics.median(ts) for key, ts in per.items()}
        row["memcpy_us"] = med["memcpy"]
        for lib_name in libs:
            row[f"{lib_name}_us"] = med[lib_name]
            row[f"{lib_name}_over_memcpy"] = med[lib_name] / med["memcpy"]
            row[f"{lib_name}_ns_per_pixel"] = 1e3 * med[lib_name] / (w * h) if name != "rasterize_mv" else None
        rows[name] = row
    # FFmpeg's conversion of the same planes (a yuv420p frame built from them, packed rows).
    frame = av.VideoFrame.from_ndarray(np.concatenate([y[:, :w].reshape(-1), u[: h // 2, : w // 2].reshape(-1),
                                                       v[: h // 2, : w // 2].reshape(-1)]).reshape(h * 3 // 2, w),
                                       format="yuv420p")
    sws = {"reformat_us": median_us(lambda: frame.reformat(format="rgb24", threads=1), repeats),
           "to_ndarray_us": median_us(lambda: frame.to_ndarray(format="rgb24", threads=1), repeats),
           "to_ndarray_default_threads_cpu_us": median_us(lambda: frame.to_ndarray(format="rgb24"), repeats)}
    for lib_name in libs:
        sws[f"{lib_name}_over_to_ndarray"] = rows["yuv420_to_rgb"][f"{lib_name}_us"] / sws["to_ndarray_us"]
    rows["swscale_rgb24"] = sws
    return {"size": f"{w}x{h}", "pixels": w * h, "mvs": len(mvs), "p_frames_accumulated": inputs["p_frames"],
            "kernels": rows}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", default="/tmp/gpudecode-bench/kernels_micro")
    ap.add_argument("--clip", default=str(REAL / "v_SoccerJuggling_g23_c01.avi"), help="real clip to re-encode")
    ap.add_argument("--repeats", type=int, default=101)
    ap.add_argument("--compare-rev", default=None, help="also time the kernels as of this git revision (each ISA)")
    ap.add_argument("--codec", default="h264", choices=["h264", "mpeg4"],
                    help="codec the clip is re-encoded with (the CPU engine's usual clips are mpeg4)")
    ap.add_argument("--output", default=None)
    args = ap.parse_args(argv)

    from gpudecode.prepare import prepare_videos

    machine = machine_info()
    work = Path(args.work_dir)
    libs: dict[str, HostKernels] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for isa in supported_isas():
            libs[isa] = HostKernels(build_host_library(Path(tmp) / f"hostkernels-{isa}.so", isa=isa))
        if args.compare_rev:
            libs |= old_libraries(args.compare_rev, Path(tmp), list(libs))
        loaded = host_kernels()
        print(f"libraries: {', '.join(libs)}; the engine loads {loaded.isa} ({loaded.path})")
        results = {}
        for w, h in SIZES:
            dst = work / args.codec / f"{w}x{h}"
            prepare_videos([args.clip], dst, codec=args.codec, gop=12, size=(w, h), workers=1, progress=False)
            clip = next(dst.rglob("*.mp4"))
            inputs = frame_inputs(clip, libs["baseline"])
            r = measure(inputs, libs, args.repeats)
            results[r["size"]] = r
            print(f"{r['size']} ({r['mvs']} MVs, S after {r['p_frames_accumulated']} P-frames), median us per frame:")
            for name, row in r["kernels"].items():
                if name == "swscale_rgb24":
                    print(f"  {'swscale rgb24':20s} reformat {row['reformat_us']:8.1f}  to_ndarray {row['to_ndarray_us']:8.1f}  "
                          + "  ".join(f"{lib} x{row[f'{lib}_over_to_ndarray']:.2f}" for lib in libs))
                    continue
                print(f"  {name:20s} memcpy {row['memcpy_us']:7.1f}  " + "  ".join(
                    f"{lib} {row[f'{lib}_us']:8.1f} (x{row[f'{lib}_over_memcpy']:.1f})" for lib in libs))
    payload = {"repeats": args.repeats, "clock": "process CPU time (time.process_time), median", "clip": Path(args.clip).name,
               "codec": args.codec, "compare_rev": args.compare_rev, "libraries": list(libs),
               "engine_loads": loaded.isa, "available_isas": list(ISAS), "sizes": results}
    path = write_result("kernels_micro", payload, args.output, machine=machine)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
