"""Issue 14: the command lines as a user meets them. Each mistake a user makes ends in one line (plus a hint)
on stderr, no traceback, a non-zero exit status (2 for usage errors), and nothing written before the
configuration is valid. Most cases call the entry points' ``main`` in this process (the function the console
scripts run); a few run the real command in a subprocess to check the whole path.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gpudecode import cli
from gpudecode.encode import write_video
from gpudecode.prepare import prepare_videos
from teamnet import predict, train
from teamnet.datasets import parse_list

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = str(REPO / "configs" / "synthetic.yaml")


def _gpu() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _train_args(root: Path, out: Path, *extra: str) -> list[str]:
    sets = [f"data.root={root}", "data.num_segments=2", "data.test_segments=2", "data.crop_size=32",
            "data.scale_size=32", "data.workers=1", "data.loader=torch", "optim.batch_size=4", "optim.epochs=1",
            "model.kwargs={iframe_depth: 18, mv_depth: 18, residual_depth: 18}", f"out_dir={out}",
            "progress=false", "tensorboard=false", "threads=1", *extra]
    return ["--config", SYNTHETIC, *[a for s in sets for a in ("--set", s)]]


def _one_line_error(err: str, prog: str) -> str:
    """The error line; asserts there is no traceback and at most a hint besides."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(lines) == 1, err
    return lines[0]


def _clip(path: Path, frames: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    return write_video(path, np.stack([np.roll(base, 2 * k, axis=1) for k in range(frames)]), codec="mpeg4", gop=12)


# -- teamnet-train: configuration and data mistakes -------------------------------------------------------
CONFIG_MISTAKES = {
    "unknown key": (["--set", "optim.learning_rate=0.1"], 2, "unknown key(s) ['learning_rate'] in optim"),
    "wrong type": (["--set", "optim.epochs=ten"], 2, "optim.epochs must be an integer, got 'ten'"),
    "missing config file": (["--config", "configs/nope.yaml"], 2, "config file configs/nope.yaml"),
    "unknown model": (["--set", "model.name=resnet"], 2, "model.name must be one of"),
    "empty data.root": (["--set", "data.root="], 2, "data.root must be the folder of the videos"),
    "--set without =": (["--set", "optim.lr"], 2, "--set takes key=value"),
    "batch larger than the dataset": (["--set", "optim.batch_size=64"], 2,
                                      "optim.batch_size=64 is larger than the training split (24 videos"),
    "out-of-range value": (["--set", "data.test_crops=3"], 2, "data.test_crops must be 1, 2, 5 or 10"),
}


@pytest.mark.parametrize("case", list(CONFIG_MISTAKES))
def test_config_mistakes_are_one_line_and_write_nothing(case, tiny, tmp_path, capsys):
    args, code, message = CONFIG_MISTAKES[case]
    out = tmp_path / "run"
    assert train.main(_train_args(tiny, out) + args) == code
    line = _one_line_error(capsys.readouterr().err, "teamnet-train")
    assert message in line
    assert not out.exists()  # not even config.yaml


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(_train_args(tiny, out, "device=cuda")) == 1
    assert "device=cuda but PyTorch sees no CUDA device" in _one_line_error(capsys.readouterr().err, "teamnet-train")
    assert not out.exists()


@pytest.mark.skipif(_gpu(), reason="needs a machine without a usable GPU")
@pytest.mark.parametrize("loader", ["dali", "torch"])
def test_gpu_engine_without_a_gpu_stops_before_any_work(loader, tiny, tmp_path, capsys):
    # issue 14: a 51-line DALI traceback, or a whole epoch with every video marked bad
    if loader == "dali":
        pytest.importorskip("nvidia.dali")
    out = tmp_path / "run"
    assert train.main(_train_args(tiny, out, "data.engine=gpu", f"data.loader={loader}")) == 1
    err = capsys.readouterr().err
    line = _one_line_error(err, "teamnet-train")
    assert "data.engine=gpu: " in line and "data.engine=cpu" in line  # the reason and the remedy
    assert not out.exists()


def test_labels_out_of_range_name_the_list_and_line(tiny, tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    for name in ("classInd.txt", "test.txt"):
        (root / name).write_text((tiny / name).read_text())
    lines = (tiny / "train.txt").read_text().splitlines()
    lines[2] = lines[2].rsplit(" ", 1)[0] + " 8"
    (root / "train.txt").write_text("\n".join(f"{tiny}/{line}" for line in lines) + "\n")
    out = tmp_path / "run"
    assert train.main(_train_args(root, out)) == 1
    line = _one_line_error(capsys.readouterr().err, "teamnet-train")
    assert f"{root / 'train.txt'}:3: label 8 is outside the 8 classes" in line
    assert not out.exists()


def test_classes_inferred_from_labels_are_announced(tmp_path):
    (tmp_path / "list.txt").write_text("a.mp4 0\nb.mp4 1\nc.mp4 99\n")
    with pytest.warns(UserWarning, match=r"classes inferred from labels: 100 \(max label 99\).*class index"):
        videos = parse_list(tmp_path / "list.txt", root=tmp_path)
    assert len(videos.classes) == 100


def test_an_empty_test_split_is_an_error(tiny, tmp_path, capsys):
    # issue 14: `top-1 nan%`, `best top-1 -inf%`, NaN in the JSON and exit 0
    root = tmp_path / "data"
    root.mkdir()
    (root / "classInd.txt").write_text((tiny / "classInd.txt").read_text())
    (root / "train.txt").write_text((tiny / "train.txt").read_text().replace("videos/", f"{tiny}/videos/"))
    (root / "test.txt").write_text("")
    assert train.main(_train_args(root, tmp_path / "run")) == 1
    assert "the test split (test.txt) lists no video" in _one_line_error(capsys.readouterr().err, "teamnet-train")


def test_out_dir_of_another_models_run_is_refused_before_writing(tiny, tmp_path, capsys):
    # issue 14: config.yaml overwritten with the TSN config, then CheckpointMismatchError and 282 key names
    out = tmp_path / "run"
    assert train.main(_train_args(tiny, out, "max_steps=1")) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert train.main(_train_args(tiny, out, "model.name=tsn", "model.kwargs={depth: 18}")) == 2
    err = capsys.readouterr().err
    line = _one_line_error(err, "teamnet-train")
    assert f"out_dir={out} holds a run of teamnet" in line and "not of tsn" in line
    assert 'resume=""' in err and "new out_dir" in err  # the hint
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


# -- checkpoints ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["text", "truncated", "empty", "folder"])
def test_a_file_that_is_not_a_checkpoint(kind, tmp_path, capsys):
    path = tmp_path / "model.pt"
    if kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "truncated":
        torch.save({"state_dict": {"w": torch.zeros(1000)}}, path)
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        path.mkdir()
    assert predict.main([str(tmp_path / "v.mp4"), "--checkpoint", str(path)]) == 1
    line = _one_line_error(capsys.readouterr().err, "teamnet-predict")
    assert f"{path} is not a TEAM-Net checkpoint (" in line


def test_init_from_a_broken_checkpoint(tiny, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_text("hello")
    out = tmp_path / "run"
    assert train.main(_train_args(tiny, out, f"model.init_from={bad}")) == 1
    assert f"{bad} is not a TEAM-Net checkpoint" in _one_line_error(capsys.readouterr().err, "teamnet-train")
    assert not out.exists()


# -- gpudecode ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["prepare", "src", "dst", "--gop", "0"], ["synth", "dst", "--videos-per-class", "0"],
                                  ["show", "v.mp4", "--segments", "0"]])
def test_numbers_out_of_range_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "must be >= 1, got 0" in err and "Traceback" not in err


def test_show_into_an_unwritable_place_and_the_default_output(tmp_path, capsys, monkeypatch):
    video = _clip(tmp_path / "v.mp4")
    (tmp_path / "file").write_text("")
    assert cli.main(["show", str(video), "-o", str(tmp_path / "file" / "x.png"), "--segments", "2"]) == 2
    assert "cannot write" in _one_line_error(capsys.readouterr().err, "gpudecode")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["show", str(video), "--segments", "2"]) == 0
    assert f"wrote {tmp_path / 'sample.png'}" in capsys.readouterr().out


def test_inspect_an_empty_folder_or_a_folder_named_like_a_video(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert cli.main(["inspect", str(tmp_path / "empty")]) == 2
    assert f"no videos found in {tmp_path / 'empty'}" in _one_line_error(capsys.readouterr().err, "gpudecode")
    (tmp_path / "x.mp4").mkdir()
    assert cli.main(["inspect", str(tmp_path / "x.mp4"), "--json"]) == 2
    line = _one_line_error(capsys.readouterr().err, "gpudecode")
    assert f"no videos found in {tmp_path / 'x.mp4'} (a folder, not a video file)" in line


def test_benchmark_lists_skipped_videos_prints_the_table_and_the_json_path(tmp_path, capsys):
    folder = tmp_path / "videos"
    _clip(folder / "good.mp4")
    (folder / "bad.mp4").write_text("not a video")
    out = tmp_path / "bench.json"
    assert cli.main(["benchmark", str(folder), "--clips", "2", "--workers", "1", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipped 1 video(s)" in printed and "bad.mp4" in printed
    assert "clips/s" in printed and "demux" in printed and f"wrote {out}" in printed
    assert json.loads(out.read_text())["skipped"]
    (folder / "good.mp4").unlink()
    assert cli.main(["benchmark", str(folder), "--clips", "2", "--workers", "1", "--output", str(out)]) == 1
    assert "none of the 1 videos can be read" in _one_line_error(capsys.readouterr().err, "gpudecode")


@pytest.mark.skipif(_gpu(), reason="needs a machine without a usable GPU")
def test_benchmark_on_a_missing_gpu_fails(tmp_path, capsys):
    # issue 14: exit 0 with the error only inside the JSON
    assert cli.main(["benchmark", str(_clip(tmp_path / "v.mp4")), "--backend", "gpu", "--clips", "2"]) == 1
    assert "CuPy" in _one_line_error(capsys.readouterr().err, "gpudecode")


def test_prepare_removes_the_parts_a_killed_run_left(tmp_path):
    src = tmp_path / "src"
    _clip(src / "a.mp4")
    dst = tmp_path / "dst"
    dst.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = dst / f".a.mp4.{dead.pid}.part"
    live = dst / f".b.mp4.{os.getpid()}.part"  # a concurrent prepare's file: kept
    stale.write_bytes(b"half")
    live.write_bytes(b"half")
    report = prepare_videos(src, dst, workers=1, progress=False)
    assert report.ok and (dst / "a.mp4").exists()
    assert not stale.exists() and live.exists()


def test_every_option_has_help():
    parsers = [cli.build_parser()]
    parsers += [a.choices[name] for a in parsers[0]._actions if isinstance(a, argparse._SubParsersAction)
                for name in a.choices]
    for parser in parsers:
        for action in parser._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                assert action.help, f"{parser.prog}: {action.dest} has no help text"


# -- the real commands, in a subprocess --------------------------------------------------------------------
def _run(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_commands_in_a_subprocess(tmp_path):
    done = _run("teamnet.train", "--config", SYNTHETIC, "--set", "optim.learnin_rate=1", "--set", f"out_dir={tmp_path / 'r'}")
    assert done.returncode == 2 and "unknown key(s)" in _one_line_error(done.stderr, "teamnet-train")
    (tmp_path / "t.pt").write_text("text")
    done = _run("teamnet.predict", "v.mp4", "--checkpoint", str(tmp_path / "t.pt"))
    assert done.returncode == 1 and "is not a TEAM-Net checkpoint" in _one_line_error(done.stderr, "teamnet-predict")
    (tmp_path / "empty").mkdir()
    done = _run("gpudecode.cli", "inspect", str(tmp_path / "empty"))
    assert done.returncode == 2 and "no videos found in" in _one_line_error(done.stderr, "gpudecode")
    assert not (tmp_path / "r").exists()


def test_a_native_crash_prints_the_python_stack(tmp_path):
    # faulthandler is on in the entry points: a SIGSEGV in FFmpeg or a kernel shows where Python was
    code = ("import os, signal\nfrom gpudecode._cli_errors import run_main\n"
            "def crash(argv):\n    os.kill(os.getpid(), signal.SIGSEGV)\n"
            "run_main(crash, [], prog='gpudecode')\n")
    script = tmp_path / "crash.py"
    script.write_text(code)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0
    assert "Fatal Python error: Segmentation fault" in done.stderr and "in crash" in done.stderr
