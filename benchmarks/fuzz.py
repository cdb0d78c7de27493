"""Long fuzzing runs: thousands of damaged files through index + sample + decode, crashes and hangs counted.

    python -m benchmarks.fuzz                          # 3,000 files, seed 0, 2 child processes at a time
    python -m benchmarks.fuzz --files 20000 --seed 7 --jobs 8
    python -m benchmarks.fuzz --files 200 --valgrind 60   # and the first 60 files under valgrind memcheck
    python -m benchmarks.fuzz --files 500 --seeds ../shared/fixtures/real/v_SoccerJuggling_g23_c01.avi \
        --output benchmarks/results/fuzz_real.json           # mutate real clips instead

The same machinery as ``tests/test_fuzz.py`` (``tests/fuzzing.py``): files mutated deterministically
by seed from small mpeg4/h264 clips, read in child processes under ``MALLOC_PERTURB_`` and
``PYTHONFAULTHANDLER=1``, every crash, hang, untyped exception, unnamed error and index/stream
disagreement pinned on its file. ``--valgrind N`` also runs the seed clips and the first N files
under valgrind's memcheck (slow: ~2-5 s a file) and counts reads and writes of freed or invalid
memory, per file. Writes ``benchmarks/results/fuzz.json``; exits 1 when anything was found.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.common import machine_info, write_result
from tests.fuzzing import REPO, child_env, make_corpus, run_corpus

_VG_ERROR = re.compile(r"==\d+== (Invalid (?:read|write) of size \d+|Invalid free|Mismatched free|"
                       r"Conditional jump or move depends on uninitialised value|Use of uninitialised value)")


def run_valgrind(paths: list[Path], timeout: float) -> dict:
    """Read ``paths`` in one child under valgrind memcheck; memory errors per file (before the first file: startup).

    Valgrind reports each distinct error (by stack) once, against the first file that triggers it.
    Errors in the interpreter's own startup and in the dynamic loader are not counted.
    """
    if shutil.which("valgrind") is None:
        return {"skipped": "valgrind is not installed"}
    with tempfile.TemporaryDirectory(prefix="fuzz_vg_") as tmp:
        list_file = Path(tmp) / "files.txt"
        list_file.write_text("".join(f"{p}\n" for p in paths))
        env = child_env(extra={"PYTHONMALLOC": "malloc"})  # pymalloc's arenas hide frees from valgrind
        cmd = ["valgrind", "--tool=memcheck", "--log-fd=1", "--num-callers=30", "--leak-check=no",
               sys.executable, "-m", "tests.fuzzing", "--child", str(list_file)]
        try:
            out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=REPO,
                                 timeout=timeout, text=True, errors="replace").stdout
            timed_out = False
        except subprocess.TimeoutExpired as e:
            out, timed_out = (e.stdout or b"").decode("utf-8", "replace") if isinstance(e.stdout, bytes) else (e.stdout or ""), True
    current, per_file, kinds, freed, uninitialised, examples = None, Counter(), Counter(), Counter(), 0, []
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("BEGIN\t"):
            current = line.split("\t", 1)[1]
            continue
        m = _VG_ERROR.match(line)
        if not m or current is None:  # before the first file: the interpreter's startup
            continue
        prefix = line.split(" ", 1)[0]
        block = [line]
        for follow in lines[i + 1:]:
            if not follow.startswith(prefix) or follow.strip() == prefix:
                break
            block.append(follow)
        report = "\n".join(block)
        if "dl-load.c" in report or "dl-open.c" in report:  # the dynamic loader's own reads: known noise
            continue
        kind = m.group(1).split(" of size")[0]
        if "uninitialised" in kind:  # SIMD code in FFmpeg trips this often: counted, not a finding
            uninitialised += 1
            continue
        per_file[current] += 1
        kinds[kind] += 1
        if "free'd" in report:
            freed[current] += 1
        if len(examples) < 5:
            examples.append({"file": current, "report": report[:4000]})
    done = sum(1 for line in lines if line.startswith(("OK\t", "ERR\t", "UNTYPED\t", "UNNAMED\t", "INCONSISTENT\t")))
    return {"files": len(paths), "files_finished": done, "timed_out": timed_out,
            "errors": sum(per_file.values()), "error_kinds": dict(kinds), "uninitialised_value_reports": uninitialised,
            "use_after_free": sum(freed.values()), "files_with_errors": dict(per_file), "examples": examples}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="child processes at a time")
    parser.add_argument("--chunk", type=int, default=50, help="files per child process")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds a file may take before it is a hang")
    parser.add_argument("--malloc-perturb", type=int, default=165)
    parser.add_argument("--valgrind", type=int, default=0, metavar="N",
                        help="also run the seed clips and the first N files under valgrind memcheck")
    parser.add_argument("--seeds", nargs="+", default=None, metavar="VIDEO",
                        help="mutate these videos instead of the built-in small clips (e.g. real clips; slower)")
    parser.add_argument("--dir", default=None, help="where to write the files (default: a temporary folder)")
    parser.add_argument("--output", default="benchmarks/results/fuzz.json")
    args = parser.parse_args(argv)

    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="fuzz_") as tmp:
        root = Path(args.dir or tmp)
        files = make_corpus(root, args.files, seed=args.seed, seeds=args.seeds)
        report = run_corpus(files, jobs=args.jobs, chunk=args.chunk, timeout=args.timeout,
                            env=child_env(args.malloc_perturb))
        print(report.summary(), flush=True)
        payload = {"command": "python -m benchmarks.fuzz " + " ".join(argv if argv is not None else sys.argv[1:]),
                   "seed": args.seed, "malloc_perturb": args.malloc_perturb, "timeout_s": args.timeout,
                   "jobs": args.jobs, **report.to_dict()}
        found = bool(report.findings)
        if args.valgrind:
            seeds = [Path(p) for p in args.seeds] if args.seeds else sorted((root / "seeds").iterdir())
            vg = run_valgrind([*seeds, *files[: args.valgrind]], timeout=max(600.0, 30.0 * (args.valgrind + 10)))
            print("valgrind:", {k: v for k, v in vg.items() if k != "examples"}, flush=True)
            payload["valgrind"] = vg
            found |= bool(vg.get("errors"))
    path = write_result("fuzz", payload, args.output, machine=machine)
    print(f"wrote {path}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
