"""train.py end to end on a tiny synthetic dataset, CPU only, through the DALI CPU pipeline.

- one training epoch in process: loss, evaluation, metrics log, checkpoints;
- a run killed (SIGKILL) part-way and resumed ends with exactly the weights of an uninterrupted run;
- Ctrl-C (SIGINT to the process group) saves the exact position and exits 130 without tracebacks, with
  the DALI and the PyTorch loader; the resumed run equals the uninterrupted one, metrics.jsonl included;
- 2-process DDP on gloo equals 1 process with the same global batch; Ctrl-C under torchrun stops
  every rank at one step, saves once, and the run resumes there;
- corrupt and missing videos are skipped, counted and listed, and training finishes.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from teamnet.config import load_config
from teamnet.train import lr_at, resolve_amp, train
from tests.conftest import REAL

pytest.importorskip("nvidia.dali")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


def _overrides(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"data.root={root}", "data.num_segments=2", "data.test_segments=2", "data.crop_size=32",
        "data.scale_size=32", "data.workers=1", "data.loader=dali", "optim.batch_size=4", "optim.epochs=1",
        "optim.lr=0.01", "model.kwargs={iframe_depth: 18, mv_depth: 18, residual_depth: 18}", f"out_dir={out}",
        "progress=false", "tensorboard=false", "threads=1", *extra,
    ]


def _cfg(root: Path, out: Path, *extra: str):
    return load_config(CONFIGS / "synthetic.yaml", _overrides(root, out, *extra))


def _records(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "teamnet.train", "--config", str(CONFIGS / "synthetic.yaml"),
            *[a for item in args for a in ("--set", item)]]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


# -- configuration ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_configs_load(path):
    cfg = load_config(path)
    if path.stem != "synthetic":  # the synthetic main job trains from scratch with its own recipe (its yaml)
        assert cfg.optim.name == "sgd" and cfg.optim.schedule == "step"
        assert cfg.optim.weight_decay == 5e-4 and cfg.optim.momentum == 0.9
    assert not cfg.optim.decay_norm_and_bias  # the published recipe; its 5x/10x heads except from scratch
    assert cfg.optim.head_lr_mult == ((1.0, 1.0) if path.stem == "synthetic" else (5.0, 10.0))
    if path.stem != "synthetic":  # the paper's settings (DESIGN §3)
        assert cfg.optim.batch_size == 80 and cfg.data.num_segments == 8
        if path.stem.startswith("kinetics"):
            assert (cfg.optim.lr, cfg.optim.lr_steps, cfg.optim.epochs) == (0.01, (30, 40, 45), 50)
        else:
            assert (cfg.optim.lr, cfg.optim.lr_steps, cfg.optim.epochs) == (0.005, (15, 20, 25), 30)


def test_overrides_and_errors():
    cfg = load_config(None, ["optim.lr_steps=[2, 4]", "data.flip=false", "model.kwargs.mv_depth=34", "seed=3"])
    assert cfg.optim.lr_steps == (2, 4) and cfg.data.flip is False and cfg.model.kwargs == {"mv_depth": 34}
    # a dict value replaces the entry (switching models must not keep the old builder's arguments)
    tsn = load_config(CONFIGS / "synthetic.yaml", ["model.name=tsn", "model.kwargs={depth: 18}"])
    assert tsn.model.kwargs == {"depth": 18}
    assert [lr_at(cfg, e) for e in (0, 2, 4)] == pytest.approx([0.005, 0.0005, 0.00005])
    with pytest.raises(ValueError, match="allowed"):
        load_config(None, ["optim.learning_rate=1"])
    with pytest.raises(ValueError, match="one of"):
        load_config(None, ["amp=fp32"])
    with pytest.raises(TypeError, match="integer"):
        load_config(None, ["optim.epochs=ten"])


def test_cosine_schedule_with_warm_up():
    cfg = load_config(None, ["optim.schedule=cosine", "optim.epochs=4", "optim.lr=0.01", "optim.min_lr=0.001",
                             "optim.warmup_epochs=1"])
    steps = 10
    lrs = [lr_at(cfg, e, s, steps) for e in range(4) for s in range(steps)]
    assert lrs[9] == pytest.approx(0.01)  # the warm-up's last step reaches lr
    assert lrs[:10] == pytest.approx([0.001 * (k + 1) for k in range(10)])  # linear from 0, per step
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then only down
    assert lrs[-1] == pytest.approx(0.001, abs=5e-5) and lrs[-1] > 0.001  # ends just above min_lr
    assert lr_at(cfg, 2, 5, steps) == pytest.approx(0.001 + 0.009 * 0.5 * (1 + math.cos(math.pi * 1.5 / 3)))
    with pytest.raises(ValueError, match="min_lr"):
        load_config(None, ["optim.lr=0.01", "optim.min_lr=0.1"])
    # the step schedule is unchanged by the per-step signature, and warm-up applies to it too
    step = load_config(None, ["optim.lr=0.01", "optim.lr_steps=[2]", "optim.warmup_epochs=0.5"])
    assert [lr_at(step, 0, s, 4) for s in range(4)] == pytest.approx([0.005, 0.01, 0.01, 0.01])
    assert lr_at(step, 2, 0, 4) == pytest.approx(0.001)


def test_adamw_takes_the_same_parameter_groups():
    from teamnet.models import build_model
    from teamnet.train import make_optimizer

    model = build_model("teamnet", num_classes=5, iframe_depth=18, mv_depth=18, residual_depth=18)
    cfg = load_config(CONFIGS / "synthetic.yaml")
    optimizer = make_optimizer(model, cfg, 0.002)
    assert isinstance(optimizer, torch.optim.AdamW)
    decay = {g["name"]: g["weight_decay"] for g in optimizer.param_groups}
    assert decay["weights"] == cfg.optim.weight_decay > 0 and decay["norm_and_bias"] == 0
    assert {g["lr"] for g in optimizer.param_groups} == {0.002}  # head_lr_mult [1, 1] in the synthetic recipe


def test_parameter_groups_follow_the_published_recipe():
    # issue 12: new classifier layers at 5x (weights) / 10x (biases) the lr; weight decay 5e-4 on weights
    # only, not on biases and BatchNorm (what the published script meant; by a bug it applied none).
    from teamnet.models import build_model
    from teamnet.train import make_optimizer, param_groups, set_lr

    model = build_model("teamnet", num_classes=5, iframe_depth=18, mv_depth=18, residual_depth=18)
    names = {id(p): n for n, p in model.named_parameters()}
    norms = {id(p) for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             for p in m.parameters()}
    cfg = load_config(None)
    groups = {g["name"]: g for g in param_groups(model, cfg.optim)}
    assert set(groups) == {"weights", "norm_and_bias", "head_weights", "head_biases"}
    every = [id(p) for g in groups.values() for p in g["params"]]
    assert sorted(every) == sorted(names) and len(set(every)) == len(every)  # each parameter exactly once
    head = {n for n in names.values() if n.startswith("heads.")}
    assert {names[id(p)] for p in groups["head_weights"]["params"]} == {n for n in head if n.endswith("weight")}
    assert {names[id(p)] for p in groups["head_biases"]["params"]} == {n for n in head if n.endswith("bias")}
    assert {id(p) for p in groups["norm_and_bias"]["params"]} == \
        {id(p) for p in model.parameters() if (id(p) in norms or names[id(p)].endswith(".bias"))} - \
        {id(p) for p in groups["head_biases"]["params"]}
    assert all(p.ndim == 4 or names[id(p)].startswith("team.") and p.ndim == 2
               for p in groups["weights"]["params"])  # convolutions and TEAM's linear layers
    assert [(groups[k]["lr_mult"], groups[k]["weight_decay"]) for k in
            ("weights", "norm_and_bias", "head_weights", "head_biases")] == [(1, 5e-4), (1, 0), (5, 5e-4), (10, 0)]
    optimizer = make_optimizer(model, cfg, 0.01)
    set_lr(optimizer, 0.001)
    assert {g["name"]: g["lr"] for g in optimizer.param_groups} == pytest.approx(
        {"weights": 0.001, "norm_and_bias": 0.001, "head_weights": 0.005, "head_biases": 0.01})
    # decay everywhere and one lr, on request
    plain = load_config(None, ["optim.decay_norm_and_bias=true", "optim.head_lr_mult=[1, 1]"])
    assert {(g["lr_mult"], g["weight_decay"]) for g in param_groups(model, plain.optim)} == {(1, 5e-4)}
    with pytest.raises(ValueError, match="head_lr_mult"):
        load_config(None, ["optim.head_lr_mult=[5, 0]"])


def test_amp_choice():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == (None, False)  # off on the CPU unless asked
    assert resolve_amp("bf16", cpu) == (torch.bfloat16, False)
    assert resolve_amp("off", torch.device("cuda", 0)) == (None, False)


# -- training ---------------------------------------------------------------------------------------------
def test_training_epoch_on_cpu_through_dali(tiny, tmp_path):
    out = tmp_path / "run"
    metrics = train(_cfg(tiny, out, "log_every=1"))
    assert 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0 and metrics["num_videos"] == 8
    assert len(metrics["confusion"]) == 8 and sum(map(sum, metrics["confusion"])) == 8
    kinds = [r["kind"] for r in _records(out)]
    assert kinds.count("train") == 6 and kinds[-2:] == ["epoch", "test"]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in _records(out) if r["kind"] == "train")
    from teamnet.checkpoint import load_checkpoint

    model, ckpt = load_checkpoint(out / "last.pt")  # rebuilt from the recorded builder call
    assert ckpt["epoch"] == 1 and ckpt["extra"]["classes"][0] == "move_right"
    assert (out / "best.pt").exists() and (out / "config.yaml").exists()
    # the weights moved away from the initialisation (same seed)
    assert any(not torch.equal(v, w) for (k, v), w in zip(model.state_dict().items(), _init_weights(model).values())
               if v.is_floating_point())


def test_predict_prints_top5_and_draws_cams(tiny, tmp_path, capsys):
    out = tmp_path / "run"
    train(_cfg(tiny, out, "max_steps=1"))  # one step is enough to have a checkpoint
    from teamnet.predict import main as predict

    video = tiny / "videos" / "move_left" / "move_left_000.mp4"
    # H.264 with B-frames (MPEG-4 Part 2 B-frames are read as is): re-encoded on the fly
    bframes = REAL / "tests_data_rawvideo_dataset_part_0.mp4"  # optional fixture: the test is complete without it
    videos = [str(video)] + ([str(bframes)] if bframes.exists() else [])
    cam = tmp_path / "cam.png"
    assert predict([*videos, "--checkpoint", str(out / "last.pt"), "--cam", str(cam)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("  5. ") == len(videos) and "%" in printed
    assert (tmp_path / "cam_move_left_000.png").exists() if len(videos) > 1 else cam.exists()
    if len(videos) > 1:  # B-frames: re-encoded in a temporary file, and said so
        assert "re-encoded" in printed and "B-frames" in printed
    assert predict([str(tmp_path / "missing.mp4"), "--checkpoint", str(out / "last.pt")]) == 1


def _init_weights(model):
    from teamnet.models import build_model

    torch.manual_seed(0)
    return build_model(model.build_spec["name"], **model.build_spec["kwargs"]).state_dict()


# 2 epochs of 6 steps, no evaluation before the end: the run that interrupted runs are compared with.
STRAIGHT = ("optim.epochs=2", "eval_every=0", "log_every=1")


@pytest.fixture(scope="module")
def straight(tiny, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    subprocess.run(_cli(*_overrides(tiny, out, *STRAIGHT)), check=True, env=_env(), cwd=REPO,
                   stdout=subprocess.DEVNULL, timeout=300)
    return out


def _wait_for_step(proc: subprocess.Popen, out: Path, global_step: int) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if any(r.get("global_step", 0) >= global_step for r in _records(out) if r["kind"] == "train"):
            return
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be interrupted"


def test_killed_run_resumes_exactly(tiny, tmp_path, straight):
    # The interrupted run checkpoints every 2 steps and is SIGKILLed after step 7.
    common = STRAIGHT
    killed = tmp_path / "killed"
    args = _cli(*_overrides(tiny, killed, *common, "checkpoint_every_steps=2"))
    proc = subprocess.Popen(args, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_step(proc, killed, 7)
        workers = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    # DALI's decoding workers die with the killed run instead of lingering
    _assert_gone(workers)
    interrupted = torch.load(killed / "last.pt", map_location="cpu", weights_only=True)
    assert (interrupted["epoch"], interrupted["extra"]["step_in_epoch"]) < (2, 0)  # really part-way

    subprocess.run(args, check=True, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, timeout=300)
    a, b = _weights(straight / "last.pt"), _weights(killed / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)


def _assert_gone(workers: list[int]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    lingering = [p for p in workers if _alive(p)]
    for p in lingering:
        os.kill(p, signal.SIGKILL)
    assert not lingering


def _interrupt(args: list[str], out: Path, at_step: int) -> tuple[subprocess.CompletedProcess, list[int]]:
    """Start a run in its own process group and Ctrl-C it (SIGINT to the group, as a terminal does)."""
    proc = subprocess.Popen(args, env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _wait_for_step(proc, out, at_step)
        workers = _children(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr), workers


def test_ctrl_c_saves_the_position_and_the_resumed_run_matches(tiny, tmp_path, straight):
    # issue 14: Ctrl-C at epoch 2 gave 5 tracebacks (main + DALI workers), no checkpoint, a resume at epoch 1.
    out = tmp_path / "run"
    args = _cli(*_overrides(tiny, out, *STRAIGHT, "data.workers=2"))
    done, workers = _interrupt(args, out, at_step=8)  # epoch 2 (1-based), part-way
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr, done.stderr
    match = re.search(r"interrupted at epoch (\d+) step (\d+), checkpoint saved to (\S+);", done.stderr)
    assert match, done.stderr
    epoch, step = int(match[1]), int(match[2])
    assert epoch == 2 and 0 < step < 6 and Path(match[3]) == out / "last.pt"
    saved = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert (saved["epoch"], saved["extra"]["step_in_epoch"]) == (epoch - 1, step)
    _assert_gone(workers)  # DALI's workers ended with the run (quietly: nothing on stderr above)

    resumed = subprocess.run(args, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {out / 'last.pt'} at epoch 2 step {step}" in resumed.stdout
    a, b = _weights(straight / "last.pt"), _weights(out / "last.pt")
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0, msg=k)

    # metrics.jsonl: one record per step and epoch, epochs numbered from 1 everywhere, the epoch's loss over
    # all its steps (those before the interruption too), as in the uninterrupted run
    records, reference = _records(out), _records(straight)
    train = [r for r in records if r["kind"] == "train"]
    assert [r["global_step"] for r in train] == list(range(1, 13))
    assert [(r["epoch"], r["step"]) for r in train] == [(e, s) for e in (1, 2) for s in range(1, 7)]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2] and [r["clips"] for r in epochs] == [24, 24]
    for mine, ref in zip(epochs, [r for r in reference if r["kind"] == "epoch"]):
        assert mine["loss"] == pytest.approx(ref["loss"], abs=1e-5)
    assert [r["kind"] for r in records].count("test") == 1

    # running the finished run again logs nothing more and says so
    again = subprocess.run(args, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "finished its 2 epochs already" in again.stdout
    assert _records(out) == records


def test_ctrl_c_with_the_torch_loader_is_quiet(tiny, tmp_path):
    # PyTorch's DataLoader workers get the SIGINT too: they must leave it to the training process.
    out = tmp_path / "run"
    args = _cli(*_overrides(tiny, out, "optim.epochs=2", "log_every=1", "data.loader=torch", "data.workers=2"))
    done, workers = _interrupt(args, out, at_step=2)
    assert done.returncode == 130 and "Traceback" not in done.stderr, done.stderr
    assert re.search(r"interrupted at epoch 1 step [2-6], checkpoint saved to", done.stderr), done.stderr
    _assert_gone(workers)


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_ddp_two_processes_match_one(tiny, tmp_path):
    # Same global batch of 4: one process, or two gloo processes with 2 each. BatchNorm statistics are
    # frozen (SyncBatchNorm is CUDA-only) and dropout is off, so the runs differ only by reduction order.
    # SGD: AdamW divides by the gradient's running RMS, which turns a reduction-order difference in a
    # near-zero gradient into a full lr-sized step (the synthetic recipe's AdamW is not what is tested here).
    common = ("model.freeze_bn=true", "model.kwargs.dropout=0.0", "optim.epochs=1", "optim.name=sgd")
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(_cli(*_overrides(tiny, one, *common)), check=True, env=_env(), cwd=REPO,
                   stdout=subprocess.DEVNULL, timeout=300)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "teamnet.train", *_cli(*_overrides(tiny, two, *common))[3:]]
    subprocess.run(torchrun, check=True, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, timeout=300)
    a, b = _weights(one / "last.pt"), _weights(two / "last.pt")
    moved = 0
    init = _init_weights_from(one / "last.pt")
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-5, rtol=1e-4, msg=k)
        moved += int(a[k].is_floating_point() and not torch.equal(a[k], init[k]))
    assert moved > 10
    ra, rb = _records(one)[-1], _records(two)[-1]
    assert ra["kind"] == rb["kind"] == "test" and ra["num_videos"] == rb["num_videos"] == 8


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        out += kids
        todo += kids
    return out


def test_ctrl_c_under_torchrun_stops_every_rank_at_one_step_and_resumes(tiny, tmp_path):
    # A terminal's Ctrl-C reaches torchrun only (it starts each rank in its own session); torchrun
    # forwards SIGINT to the ranks and SIGKILLs them 30 s later. Every rank must stop at the same step
    # (a rank a step ahead would wait in all-reduce until killed), rank 0 saves, one message is printed.
    out = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "teamnet.train", *_cli(*_overrides(tiny, out, "log_every=1"))[3:]]
    proc = subprocess.Popen(torchrun, env=_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        _wait_for_step(proc, out, 2)
        ranks_and_workers = _descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=25)  # well inside torchrun's 30 s before SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert stderr.count("Ctrl-C: stopping after this step") == 1, stderr
    messages = re.findall(r"teamnet-train: interrupted at epoch 1 step (\d+), checkpoint saved to", stderr)
    assert len(messages) == 1, stderr
    step = int(messages[0])
    saved = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert (saved["epoch"], saved["extra"]["step_in_epoch"]) == (0, step) and 2 <= step < 6
    assert "KeyboardInterrupt" not in stderr
    _assert_gone(ranks_and_workers)

    resumed = subprocess.run(torchrun, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {out / 'last.pt'} at epoch 1 step {step}" in resumed.stdout
    train_steps = [r["global_step"] for r in _records(out) if r["kind"] == "train"]
    assert train_steps == list(range(1, 7))  # 24 clips, global batch 4: each step once, none lost or repeated
    assert [r["kind"] for r in _records(out)].count("test") == 1


def _init_weights_from(path: Path):
    from teamnet.checkpoint import load_checkpoint

    model, _ = load_checkpoint(path)
    return _init_weights(model)


def test_corrupt_videos_are_skipped_and_reported(tiny, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(tiny, root)
    lines = (root / "train.txt").read_text().splitlines()
    truncated, garbage = (root / lines[0].split()[0]), (root / lines[5].split()[0])
    truncated.write_bytes(truncated.read_bytes()[:300])
    garbage.write_bytes(os.urandom(2000))
    (root / "train.txt").write_text("\n".join(lines + ["videos/move_left/not_there.mp4 1"]) + "\n")
    out = tmp_path / "run"
    metrics = train(_cfg(root, out, "optim.batch_size=5"))  # 25 listed: every one is read
    assert metrics["num_videos"] == 8  # training went to the end and evaluated
    epoch = [r for r in _records(out) if r["kind"] == "epoch"][-1]
    missing = root / "videos/move_left/not_there.mp4"
    assert set(epoch["bad_videos"]) == {str(truncated), str(garbage), str(missing)}
    assert epoch["bad_videos_count"] == 3 and epoch["clips"] == 22
    printed = capsys.readouterr().out
    assert "bad video(s)" in printed and str(garbage) in printed
