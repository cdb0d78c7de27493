"""One command that validates everything on a GPU machine (issue 18): GPU time is scarce and a machine starts bare.

    python -m benchmarks.device_check              # or: bash benchmarks/device_check.sh
    python -m benchmarks.device_check --dry-run    # the plan and the preflight checks, nothing run

On a machine with CUDA, CuPy, torch and Python 3.12 but without PyAV, PyNvVideoCodec or DALI:

1. preflight (seconds; fails fast and clearly without a GPU): nvidia-smi, CuPy sees a device, torch.cuda;
2. installs the wheels carried in ``benchmarks/wheels/`` (git-ignored, never committed; see WHEELS), then the
   project itself (``pip install --no-deps --no-index -e .``: nothing else can be reached from the machine);
3. the ``cuda`` tests with GPUDECODE_REQUIRE_GPU=1 (failing instead of skipping);
4. ``python -m benchmarks.gpu_suite --quick``;
5. a 30-step AMP (bf16), channels-last TEAM-Net training on the synthetic set with ``data.engine=gpu``;
6. ``python -m benchmarks.model_speed``;

and writes every result, with the card, driver and CUDA versions, into one folder
``benchmarks/results/device_check_<card>_<date>/`` (to commit), with ``summary.txt`` naming what ran, how
long it took and what could not run. Each step has a time limit; all of them fit 8 minutes on a 16-core H200.

The carried wheels (cp312, manylinux x86_64), 62.7 MB together; DALI (~200 MB) does not fit a device call
and is skipped with a line:

    pip download --no-deps --only-binary=:all: --implementation cp --python-version 3.12 \\
        --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \\
        -d benchmarks/wheels av==18.1.0 pynvvideocodec==2.2.4
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS_DIR = ROOT / "benchmarks" / "wheels"
#: (distribution, import name, wheel file prefix, MB): what is carried, and what each is for
WHEELS = (("av", "av", "av-18.1.0-cp312", 35.8, "PyAV: the CPU stage, the engine, every test"),
          ("pynvvideocodec", "PyNvVideoCodec", "pynvvideocodec-2.2.4-cp312", 26.9, "NVDEC pixels (pixels='nvdec')"))
SKIPPED = ("DALI (nvidia-dali-cuda130, ~200 MB) does not fit a device call's 64 MiB: its loader tests and "
           "data.engine=cpu kind=dali are not run here",)
#: step -> seconds it may take (sum well under 8 minutes with the install)
LIMITS = {"install": 60, "cuda_tests": 100, "gpu_suite": 150, "train": 90, "model_speed": 60}  # 460 s


def _run(cmd, log: Path, limit: int, env=None) -> dict:
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit)
        out, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        out += f"\n[device_check] timed out after {limit} s\n"
        rc = 124
    log.write_text(f"$ {' '.join(map(str, cmd))}\n{out}")
    lines = [ln for ln in out.strip().splitlines() if ln.strip()]
    return {"cmd": " ".join(map(str, cmd)), "exit_code": rc, "seconds": round(time.perf_counter() - t, 1),
            "last_line": lines[-1] if lines else "", "log": log.name}


def preflight() -> tuple[bool, dict, list[str]]:
    """Whether a GPU is usable here; what was found (card, driver, CUDA); the reasons it is not."""
    info: dict = {"python": sys.version.split()[0], "host": os.uname().nodename}
    problems = []
    smi = shutil.which("nvidia-smi")
    if smi is None:
        problems.append("nvidia-smi not found: no NVIDIA driver on this machine")
    else:
        q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
        if q.returncode != 0 or not q.stdout.strip():
            problems.append(f"nvidia-smi lists no GPU ({q.stderr.strip() or q.stdout.strip()})")
        else:
            info["gpus"] = [ln.strip() for ln in q.stdout.strip().splitlines()]
            info["card"], info["driver"] = (s.strip() for s in info["gpus"][0].split(",")[:2])
    code = ("import json, cupy; r = cupy.cuda.runtime; print(json.dumps({'cupy': cupy.__version__, "
            "'devices': r.getDeviceCount(), 'cuda_runtime': r.runtimeGetVersion(), 'cuda_driver_api': r.driverGetVersion()}))")
    q = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    if q.returncode == 0:
        info.update(json.loads(q.stdout.strip().splitlines()[-1]))
    else:
        problems.append(f"CuPy cannot use a GPU: {(q.stderr.strip().splitlines() or ['?'])[-1]}")
    q = subprocess.run([sys.executable, "-c", "import json, torch; print(json.dumps({'torch': torch.__version__, "
                        "'torch_cuda': torch.version.cuda, 'torch_sees_gpu': torch.cuda.is_available()}))"],
                       capture_output=True, text=True, timeout=120)
    if q.returncode == 0:
        info.update(json.loads(q.stdout.strip().splitlines()[-1]))
        if not info["torch_sees_gpu"]:
            problems.append("torch.cuda.is_available() is False (a CPU build of torch, or no driver)")
    else:
        problems.append(f"torch cannot be imported: {(q.stderr.strip().splitlines() or ['?'])[-1]}")
    return not problems, info, problems


def _wheel(prefix: str) -> Path | None:
    found = sorted(WHEELS_DIR.glob(f"{prefix}*.whl")) if WHEELS_DIR.is_dir() else []
    return found[-1] if found else None


def plan(out: Path) -> list[tuple[str, list, dict | None]]:
    py = sys.executable
    work = ROOT / "runs" / "device_check"  # git-ignored: the synthetic videos and checkpoints stay out of results
    require = dict(os.environ, GPUDECODE_REQUIRE_GPU="1")
    train = [py, "-m", "teamnet.train", "--config", "configs/synthetic.yaml",
             "--set", f"data.root={work / 'synthetic'}", "--set", "data.synth_videos_per_class=16",
             "--set", "data.engine=gpu", "--set", "device=cuda", "--set", "amp=bf16",
             "--set", "model.channels_last=true", "--set", "optim.epochs=8", "--set", "max_steps=30",
             "--set", f"out_dir={work / 'train'}", "--set", "tensorboard=false", "--set", "progress=false",
             "--set", "log_every=5"]
    return [("cuda_tests", [py, "-m", "pytest", "-q", "-m", "cuda", "tests", "-p", "no:cacheprovider"], require),
            ("gpu_suite", [py, "-m", "benchmarks.gpu_suite", "--quick", "--output", str(out / "gpu_suite.json")], None),
            ("train", train, None),
            ("model_speed", [py, "-m", "benchmarks.model_speed", "--device", "cuda", "--out", str(out / "model_speed.json")],
             None)]


def install(out: Path) -> tuple[dict, list[str]]:
    missing = []
    wheels = []
    for dist, mod, prefix, _mb, why in WHEELS:
        if subprocess.run([sys.executable, "-c", f"import {mod}"], capture_output=True).returncode == 0:
            continue
        w = _wheel(prefix)
        if w is None:
            missing.append(f"{dist}: not installed and no {prefix}*.whl in {WHEELS_DIR} ({why})")
        else:
            wheels.append(str(w))
    cmds = []
    if wheels:
        cmds.append([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", *wheels])
    cmds.append([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--no-build-isolation", "-e", "."])
    results = [_run(c, out / f"install_{i}.log", LIMITS["install"]) for i, c in enumerate(cmds)]
    rc = max(r["exit_code"] for r in results)
    return {"exit_code": rc, "seconds": sum(r["seconds"] for r in results), "steps": results,
            "last_line": results[-1]["last_line"]}, missing


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="print the plan and the preflight checks, run nothing")
    ap.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results/device_check_<card>_<date>)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    ok, info, problems = preflight()
    card = re.sub(r"[^A-Za-z0-9]+", "_", info.get("card", "nogpu")).strip("_")
    out = args.out or ROOT / "benchmarks" / "results" / f"device_check_{card}_{dt.date.today():%Y%m%d}"
    print(f"device_check: {info.get('card', 'no GPU')}, driver {info.get('driver', '-')}, "
          f"CUDA runtime {info.get('cuda_runtime', '-')}, CuPy {info.get('cupy', '-')}, torch {info.get('torch', '-')} "
          f"(CUDA {info.get('torch_cuda', '-')}), Python {info['python']}")
    print(f"results: {out}")
    print("wheels carried in benchmarks/wheels/:")
    for dist, _mod, prefix, mb, why in WHEELS:
        w = _wheel(prefix)
        print(f"  {prefix}*.whl ({mb} MB, {why}): {'present' if w else 'ABSENT'}")
    for line in SKIPPED:
        print(f"  skipped: {line}")
    steps = plan(out)
    print("steps (time limit):")
    print(f"  install ({LIMITS['install']} s): the carried wheels, then pip install --no-deps --no-index -e .")
    for name, cmd, env in steps:
        print(f"  {name} ({LIMITS[name]} s): {'GPUDECODE_REQUIRE_GPU=1 ' if env else ''}{' '.join(map(str, cmd))}")
    if not ok:
        print("device_check: FAILED preflight, nothing was run:", file=sys.stderr)
        for p in problems:
            print(f"  - {p}", file=sys.stderr)
        print("  (run it on a machine with an NVIDIA GPU, its driver, CuPy and a CUDA build of torch)", file=sys.stderr)
        return 2
    if args.dry_run:
        print("dry run: preflight passed, nothing run")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"machine": info, "started": dt.datetime.now().isoformat(timespec="seconds"), "steps": {},
                     "not_run": list(SKIPPED)}
    result, missing = install(out)
    summary["steps"]["install"] = result
    summary["not_run"] += missing
    print(f"install: exit {result['exit_code']} in {result['seconds']} s")
    for name, cmd, env in steps:
        if name == "train" and subprocess.run([sys.executable, "-c", "import torchvision, yaml"],
                                              capture_output=True).returncode != 0:
            summary["not_run"].append("train: torchvision or PyYAML missing on this machine")
            continue
        r = _run(cmd, out / f"{name}.log", LIMITS[name], env)
        summary["steps"][name] = r
        print(f"{name}: exit {r['exit_code']} in {r['seconds']} s: {r['last_line'][:160]}")
        if r["exit_code"] != 0:
            summary["not_run"].append(f"{name}: exit {r['exit_code']} (see {r['log']})")
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    lines = [f"{k}: exit {v['exit_code']}, {v['seconds']} s" for k, v in summary["steps"].items()]
    (out / "summary.txt").write_text("\n".join([json.dumps(info), *lines, "could not run:", *summary["not_run"]]) + "\n")
    print(f"device_check: {summary['seconds']} s in all; could not run:")
    for line in summary["not_run"]:
        print(f"  - {line}")
    return 0 if all(v["exit_code"] == 0 for v in summary["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
