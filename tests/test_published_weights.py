"""Published weights get the published input conventions without being asked: ``model.init_from`` of a
published file in train.py and ``teamnet.predict --checkpoint`` of one switch ``preprocess`` "auto" to
"published" and print one line saying so; an explicit setting is kept (and the mismatch said).

The published files are small TEAM-Nets (ResNet-18 streams) in the published layout, built from
DESIGN §3's key names by tests/test_checkpoint.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from teamnet import train as train_module
from teamnet.config import load_config
from tests.test_checkpoint import published_teamnet

pytest.importorskip("nvidia.dali")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.fixture(scope="module")
def published_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("published") / "teamnet_synthetic.pth.tar"
    torch.manual_seed(0)
    state = published_teamnet(num_classes=8, iframe_depth=18)
    state = {k: v.abs() + 0.5 if k.endswith("running_var") else v for k, v in state.items()}  # sane BN
    torch.save({"epoch": 30, "arch": "resnet18", "state_dict": state, "best_prec1": 50.0}, path)
    return path


def _evaluate(tiny: Path, out: Path, published: Path, *extra: str, monkeypatch) -> list[str]:
    """Evaluation only (optim.epochs=0) from the published file; returns the preprocess each loader got."""
    seen = []
    real = train_module.ClipLoader

    def spy(*args, **kwargs):
        seen.append(kwargs["preprocess"])
        return real(*args, **kwargs)

    monkeypatch.setattr(train_module, "ClipLoader", spy)
    cfg = load_config(CONFIGS / "synthetic.yaml", [
        f"data.root={tiny}", "data.num_segments=2", "data.test_segments=2", "data.crop_size=32",
        "data.scale_size=32", "data.workers=1", "optim.batch_size=4", "optim.epochs=0",
        "model.kwargs={iframe_depth: 18, mv_depth: 18, residual_depth: 18}", f"model.init_from={published}",
        "model.init_exclude=[]", f"out_dir={out}", "progress=false", "tensorboard=false", "threads=1", *extra])
    metrics = train_module.train(cfg)
    assert metrics["num_videos"] == 8
    return seen


def test_train_init_from_a_published_file_switches_to_published(tiny, published_file, tmp_path, capsys,
                                                                 monkeypatch):
    out = tmp_path / "auto"
    assert _evaluate(tiny, out, published_file, monkeypatch=monkeypatch) == ["published", "published"]
    printed = capsys.readouterr().out
    lines = [line for line in printed.splitlines() if line.startswith("preprocess: 'published'")]
    assert len(lines) == 1 and str(published_file) in lines[0]
    assert "use preprocess='published'" in printed  # the load report says it too
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["preprocess"] == "published"

    out = tmp_path / "explicit"
    seen = _evaluate(tiny, out, published_file, "data.preprocess=ours", monkeypatch=monkeypatch)
    assert seen == ["ours", "ours"]
    assert "preprocess: 'ours' as set, although" in capsys.readouterr().out
    assert yaml.safe_load((out / "config.yaml").read_text())["data"]["preprocess"] == "ours"


def test_predict_with_a_published_checkpoint(tiny, published_file, capsys):
    from teamnet.predict import Predictor, main as predict

    video = str(tiny / "videos" / "move_left" / "move_left_000.mp4")
    assert predict([video, "--checkpoint", str(published_file), "--segments", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("  5. ") == 1
    assert captured.err.count("preprocess: 'published'") == 1 and str(published_file) in captured.err

    auto = Predictor(published_file, num_segments=2)
    ours = Predictor(published_file, num_segments=2, preprocess="ours")
    assert (auto.preprocess, ours.preprocess) == ("published", "ours") and "as set" in ours.preprocess_note
    _, sample, _ = auto(video)
    from teamnet.augment import centre_square, reference_transform

    h, w = sample.iframe.shape[1:3]
    want = reference_transform(centre_square(h, w), auto.scale_size, preprocess="published",
                               iframe=sample.iframe, mv=sample.mv, residual=sample.residual)
    got, got_ours = auto.inputs(sample), ours.inputs(sample)
    for m in ("iframe", "mv", "residual"):
        torch.testing.assert_close(got[m][0], want[m].permute(0, 3, 1, 2))
    assert torch.equal(got["iframe"], got_ours["iframe"])  # the I-frame is the same either way
    assert not torch.allclose(got["residual"], got_ours["residual"])  # BGR vs RGB
