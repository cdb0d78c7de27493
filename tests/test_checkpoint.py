"""Published checkpoints load key for key, mismatches are reported, ours round-trip atomically; every
load says which input conventions (``preprocess``) its weights need.

The published state dicts are built here from torchvision's own ResNets and the key names in
DESIGN §3 (the TEAM-Net repository's ``TEAM_Net``, CoViAR's ``Model``, TSM's ``TSN``), not from our
converter, so a renaming mistake on either side shows.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from torchvision.models import resnet18, resnet50

from teamnet import (
    CheckpointMismatchError,
    convert_published,
    coviar_r50,
    load_checkpoint,
    load_published,
    load_published_coviar,
    save_checkpoint,
    teamnet,
    teamnet_r50,
    teamnet_tsm_r50,
    tsn_r50,
)
from teamnet import checkpoint as checkpoint_module

K = 7


pytestmark = pytest.mark.usefixtures("seeded_torch")


def randomised(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Same keys and shapes, fresh values, so a copy that lands in the wrong place is noticed."""
    return {k: torch.randn(v.shape) if v.is_floating_point() else v.clone() for k, v in state.items()}


def published_stream(depth: int, modality: str, tsm: bool = False) -> dict[str, torch.Tensor]:
    """``base_model.*`` (fc dropped: the published code makes it a Dropout) and ``data_bn.*``."""
    base = (resnet50 if depth == 50 else resnet18)().state_dict()
    out = {}
    for k, v in base.items():
        if k.startswith("fc."):
            continue
        if tsm and ".conv1." in k and k.startswith("layer"):
            k = k.replace(".conv1.", ".conv1.net.")  # TSM wraps the conv as `.net`
        if modality == "mv" and k == "conv1.weight":
            v = torch.empty(64, 2, 7, 7)  # fresh 2-channel stem
        out["base_model." + k] = v
    if modality != "iframe":
        bn = nn.BatchNorm2d(2 if modality == "mv" else 3).state_dict()
        out.update({"data_bn." + k: v for k, v in bn.items()})
    return out


def published_teamnet(num_classes: int = K, tsm: bool = False, iframe_depth: int = 50) -> dict[str, torch.Tensor]:
    """The published TEAM-Net's state dict; ``iframe_depth=18`` gives a small one of the same layout."""
    state = {}
    streams = (("I_model.", iframe_depth, "iframe"), ("MV_model.", 18, "mv"), ("R_model.", 18, "residual"))
    for prefix, depth, modality in streams:
        state.update({prefix + k: v for k, v in published_stream(depth, modality, tsm).items()})
        width = 2048 if depth == 50 else 512
        state[prefix + "new_fc.weight"] = torch.empty(num_classes, width)
        state[prefix + "new_fc.bias"] = torch.empty(num_classes)
    # team0..3: channels of (I, MV, R) after conv1+pool, layer1, layer2, layer3.
    i_channels = (64, 256, 512, 1024) if iframe_depth == 50 else (64, 64, 128, 256)
    for k, (ci, cp) in enumerate(zip(i_channels, (64, 64, 128, 256))):
        c = ci + 2 * cp
        state[f"team{k}.fc_squeeze.weight"] = torch.empty(c // 4, c)
        state[f"team{k}.fc_i.weight"] = torch.empty(ci, c // 4)
        state[f"team{k}.fc_mv.weight"] = torch.empty(cp, c // 4)
        state[f"team{k}.fc_r.weight"] = torch.empty(cp, c // 4)
        for s in ("i", "mv", "r"):
            state[f"team{k}.conv_s_{s}.weight"] = torch.empty(1, 3, 3, 3)
    return randomised(state)


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert torch.equal(a, b)


# -- published TEAM-Net -----------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", ["", "module."])
def test_published_teamnet_loads_every_key(prefix):
    state = published_teamnet()
    model = teamnet_r50(num_classes=K)
    assert len(state) == len(model.state_dict())  # one published key per key of ours
    state_dict = {prefix + k: v for k, v in state.items()}
    checkpoint = {"epoch": 31, "arch": "resnet50", "state_dict": state_dict, "best_prec1": 94.3}
    report = load_published(model, checkpoint)
    assert report.ok and not (report.missing or report.unexpected or report.mismatched or report.ignored)
    assert len(report.loaded) == len(state)
    ours = model.state_dict()
    assert_same(ours["team.layer2.channel.expand.iframe.weight"], state["team2.fc_i.weight"])
    assert_same(ours["team.stem.channel.squeeze.weight"], state["team0.fc_squeeze.weight"])
    assert_same(ours["team.layer3.spatial.conv.residual.weight"], state["team3.conv_s_r.weight"])
    assert_same(ours["streams.mv.input_bn.running_var"], state["MV_model.data_bn.running_var"])
    assert_same(ours["streams.mv.backbone.conv1.weight"], state["MV_model.base_model.conv1.weight"])
    assert_same(ours["streams.iframe.backbone.layer4.2.bn3.bias"], state["I_model.base_model.layer4.2.bn3.bias"])
    assert_same(ours["heads.residual.fc.bias"], state["R_model.new_fc.bias"])


def test_published_file_is_read_with_weights_only(tmp_path):
    path = tmp_path / "resnet50_tsn_8f.pth.tar"
    torch.save({"epoch": 31, "arch": "resnet50", "state_dict": published_teamnet(), "best_prec1": 94.3}, path)
    model = teamnet_r50(num_classes=K)
    report = load_published(model, path)
    assert report.ok and report.preprocess == "published"
    assert "use preprocess='published'" in str(report)  # what train.py prints after model.init_from
    with pytest.raises(ValueError, match="use load_published"):
        load_checkpoint(path, model)


def test_published_model_gives_the_published_output():
    """The published forward, written out from its code, on the loaded weights: same logits."""
    state = published_teamnet()
    # Sane BatchNorm statistics so the comparison is not of exploding numbers.
    state = {k: v.abs() + 0.5 if k.endswith("running_var") else v for k, v in state.items()}
    model = teamnet_r50(num_classes=K).eval()
    load_published(model, state)
    x = {m: torch.randn(1, 2, c, 32, 32) for m, c in (("iframe", 3), ("mv", 2), ("residual", 3))}
    with torch.no_grad():
        ours = model(**x)
        # The published TEAM_Net.forward reads the same weights through our modules' parameters.
        streams = model.streams
        f = {m: v.flatten(0, 1) for m, v in x.items()}
        f = {m: streams[m].forward_stage("stem", f[m]) for m in f}
        for k, stage in enumerate(["layer1", "layer2", "layer3", "layer4"]):
            i, mv, r = f["iframe"], f["mv"], f["residual"]
            c = torch.cat([t.mean(-1).mean(-1) for t in (i, mv, r)], 1)
            z = torch.relu(c @ state[f"team{k}.fc_squeeze.weight"].T)
            i, mv, r = (
                torch.sigmoid(z @ state[f"team{k}.fc_{s}.weight"].T)[..., None, None] * t
                for s, t in (("i", i), ("mv", mv), ("r", r))
            )
            s_map = torch.cat([t.mean(1, keepdim=True) for t in (i, mv, r)], 1)
            i, mv, r = (
                torch.sigmoid(nn.functional.conv2d(s_map, state[f"team{k}.conv_s_{s}.weight"], padding=1)) * t
                for s, t in (("i", i), ("mv", mv), ("r", r))
            )
            f = {m: streams[m].forward_stage(stage, t) for m, t in zip(("iframe", "mv", "residual"), (i, mv, r))}
        published = 0
        for m, p in (("iframe", "I_model"), ("mv", "MV_model"), ("residual", "R_model")):
            pooled = f[m].mean((2, 3))
            logits = pooled @ state[f"{p}.new_fc.weight"].T + state[f"{p}.new_fc.bias"]
            published = published + logits.view(1, 2, K).mean(1)
    torch.testing.assert_close(ours, published)


def test_missing_and_unexpected_keys_are_named_and_nothing_is_half_loaded():
    state = published_teamnet()
    del state["team3.conv_s_r.weight"]
    state["team3.conv_s_x.weight"] = torch.zeros(1, 3, 3, 3)
    state["I_model.base_model.fc.weight"] = torch.zeros(1000, 2048)
    model = teamnet_r50(num_classes=K)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as info:
        load_published(model, state)
    message = str(info.value)
    assert "missing from the checkpoint (1):\n    team.layer3.spatial.conv.residual.weight" in message
    assert "team3.conv_s_x.weight" in message and "heads.iframe.fc.weight" not in message
    assert "streams.iframe.backbone.fc.weight" in message  # the published Dropout had no weights
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())

    report = load_published(model, state, strict=False)
    assert report.missing == ["team.layer3.spatial.conv.residual.weight"]
    assert sorted(report.unexpected) == ["streams.iframe.backbone.fc.weight", "team3.conv_s_x.weight"]
    assert_same(model.state_dict()["team.layer2.spatial.conv.mv.weight"], state["team2.conv_s_mv.weight"])


def test_other_num_classes_is_a_shape_mismatch_unless_heads_are_excluded():
    kinetics = published_teamnet(num_classes=400)
    model = teamnet_r50(num_classes=101)
    with pytest.raises(CheckpointMismatchError, match=r"heads.iframe.fc.weight: \(400, 2048\) vs \(101, 2048\)"):
        load_published(model, kinetics)
    head = model.heads["mv"].fc.weight.clone()
    report = load_published(model, kinetics, exclude=("heads.",))  # fine-tune from Kinetics
    assert report.ok and len(report.excluded) == 6
    assert torch.equal(model.heads["mv"].fc.weight, head)


def test_checkpoints_without_num_batches_tracked_still_load():
    state = {k: v for k, v in published_teamnet().items() if not k.endswith("num_batches_tracked")}
    report = load_published(teamnet_r50(num_classes=K), state)
    assert report.ok and len(report.ignored) > 50
    assert "ignored (num_batches_tracked" in str(report)


def test_published_tsm_teamnet_maps_conv1_net():
    report = load_published(teamnet_tsm_r50(num_classes=K), published_teamnet(tsm=True))
    assert report.ok and "streams.iframe.backbone.layer1.0.conv1.conv.weight" in report.loaded


def test_published_tsn_and_coviar_streams():
    new_fc = {"new_fc.weight": torch.empty(K, 2048), "new_fc.bias": torch.empty(K)}
    tsn_state = randomised(published_stream(50, "iframe") | new_fc)
    model = tsn_r50(num_classes=K)
    assert load_published(model, {"state_dict": {"module." + k: v for k, v in tsn_state.items()}}).ok
    assert_same(model.heads["iframe"].fc.weight, tsn_state["new_fc.weight"])

    def coviar_stream(depth, modality):  # CoViAR keeps ResNet's fc as the classifier
        width = 2048 if depth == 50 else 512
        fc = {"base_model.fc.weight": torch.empty(K, width), "base_model.fc.bias": torch.empty(K)}
        return {"state_dict": {"module." + k: v for k, v in randomised(published_stream(depth, modality) | fc).items()}}

    files = {m: coviar_stream(50 if m == "iframe" else 18, m) for m in ("iframe", "mv", "residual")}
    model = coviar_r50(num_classes=K)
    report = load_published_coviar(model, **files)
    assert report.ok and report.preprocess == "published"
    assert_same(model.heads["mv"].fc.bias, files["mv"]["state_dict"]["module.base_model.fc.bias"])
    assert_same(model.streams["residual"].input_bn.weight, files["residual"]["state_dict"]["module.data_bn.weight"])
    with pytest.raises(TypeError, match="load_published_coviar"):
        load_published(model, files["iframe"])


def test_convert_published_leaves_unknown_keys_alone():
    out = convert_published({"team0.fc_i.weight": torch.zeros(1), "foo": torch.zeros(1)})
    assert set(out) == {"team.stem.channel.expand.iframe.weight", "foo"}
    with pytest.raises(ValueError, match="layout must be 'teamnet' or 'stream', received 'coviar'"):
        convert_published({}, layout="coviar")


# -- our layout -------------------------------------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path):
    model = teamnet(num_classes=K, iframe_depth=18, arrangement="parallel", team_at=("stem", "layer4")).eval()
    path = save_checkpoint(
        tmp_path / "run" / "last.pt",
        nn.DataParallel(model),  # wrappers are unwrapped: no `module.` in our keys
        epoch=3,
        metrics={"top1": 0.5},
        config={"lr": 0.01, "segments": 8},
    )
    assert os.listdir(path.parent) == ["last.pt"]  # no temporary file left behind
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "teamnet" and raw["version"] == 1 and raw["epoch"] == 3
    assert raw["model"] == {
        "name": "teamnet",
        "kwargs": {"num_classes": K, "iframe_depth": 18, "arrangement": "parallel", "team_at": ("stem", "layer4")},
    }
    assert "team.layer4.channel.squeeze.weight" in raw["state_dict"]
    assert not any(k.startswith("module.") for k in raw["state_dict"])

    rebuilt, checkpoint = load_checkpoint(path)  # rebuilt from the recorded builder call
    assert checkpoint["metrics"] == {"top1": 0.5} and checkpoint["config"]["segments"] == 8
    x = {m: torch.randn(1, 2, c, 32, 32) for m, c in (("iframe", 3), ("mv", 2), ("residual", 3))}
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(**x), model(**x))

    with pytest.raises(CheckpointMismatchError, match="team.layer1.channel.squeeze.weight"):
        load_checkpoint(path, teamnet(num_classes=K, iframe_depth=18))


def test_save_is_atomic(tmp_path, monkeypatch):
    model = tsn_r50(num_classes=K)
    path = save_checkpoint(tmp_path / "ckpt.pt", model, epoch=1)
    before = path.read_bytes()

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, epoch=2)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.pt"]


# -- input conventions: recorded in ours, "published" for published files ----------------------------------
@pytest.fixture(scope="module")
def small_teamnet():
    """A TEAM-Net with ResNet-18 streams, built once (building is the slow part of these tests)."""
    return teamnet(num_classes=K, iframe_depth=18)


def test_preprocess_round_trips_through_our_checkpoints(tmp_path, small_teamnet):
    for recorded in (None, "ours", "published"):
        config = {"data": {"preprocess": recorded}} if recorded else {}
        path = save_checkpoint(tmp_path / f"{recorded}.pt", small_teamnet, config=config)
        raw = torch.load(path, weights_only=True)
        assert raw["preprocess"] == (recorded or "ours")  # from the run's config; ours when it says nothing
        assert checkpoint_module.preprocess_of(path) == raw["preprocess"]
    _, checkpoint = load_checkpoint(path, small_teamnet)
    assert checkpoint["preprocess"] == "published"
    # an explicit argument wins over the config; a bad value is refused before anything is written
    explicit = save_checkpoint(tmp_path / "b.pt", small_teamnet, config={"data": {"preprocess": "ours"}},
                               preprocess="published")
    assert torch.load(explicit, weights_only=True)["preprocess"] == "published"
    with pytest.raises(ValueError, match="preprocess must be one of"):
        save_checkpoint(tmp_path / "c.pt", small_teamnet, preprocess="rgb")
    assert not (tmp_path / "c.pt").exists()


def test_checkpoints_written_before_the_setting_read_as_ours(tmp_path, small_teamnet):
    path = save_checkpoint(tmp_path / "old.pt", small_teamnet, config={"lr": 0.01})
    raw = torch.load(path, weights_only=True)
    del raw["preprocess"]
    torch.save(raw, path)
    assert load_checkpoint(path, small_teamnet)[1]["preprocess"] == "ours"
    raw["config"] = {"data": {"preprocess": "published"}}  # no top-level key, but the run's config says
    assert checkpoint_module.preprocess_of(raw) == "published"


def test_published_and_plain_state_dicts(small_teamnet):
    published = published_teamnet(iframe_depth=18)
    assert checkpoint_module.is_published(published) and checkpoint_module.preprocess_of(published) == "published"
    assert checkpoint_module.is_published({"state_dict": {"module." + k: v for k, v in published.items()}})
    ours = small_teamnet.state_dict()
    assert not checkpoint_module.is_published(ours) and checkpoint_module.preprocess_of(ours) is None


def test_choose_preprocess():
    choose = checkpoint_module.choose_preprocess
    assert choose("auto", None) == ("ours", None)  # training from scratch / ImageNet: ours, silently
    assert choose("auto", "ours", "k400.pt") == ("ours", None)
    chosen, note = choose("auto", "published", "teamnet_ucf101.pth.tar")
    assert chosen == "published" and "teamnet_ucf101.pth.tar" in note and "override" in note
    chosen, note = choose("ours", "published", "teamnet_ucf101.pth.tar")  # set explicitly: kept, and said
    assert chosen == "ours" and "as set" in note
    assert choose("published", None) == ("published", None)
    with pytest.raises(ValueError, match="preprocess must be one of"):
        choose("BGR", None)


def test_init_from_our_published_and_plain_checkpoints(tmp_path, small_teamnet):
    published = published_teamnet(iframe_depth=18)
    model = small_teamnet
    report = checkpoint_module.init_from_checkpoint(model, {"epoch": 3, "state_dict": published},
                                                    exclude=("heads.",))
    assert report.ok and report.preprocess == "published" and len(report.excluded) == 6
    assert_same(model.state_dict()["team.layer1.channel.squeeze.weight"], published["team1.fc_squeeze.weight"])
    path = save_checkpoint(tmp_path / "ft.pt", model, preprocess="published")  # fine-tuned from published
    report = checkpoint_module.init_from_checkpoint(model, path)
    assert report.ok and report.preprocess == "published"
    report = checkpoint_module.init_from_checkpoint(model, model.state_dict())
    assert report.ok and report.preprocess is None


@pytest.mark.parametrize("tsm", [False, True])
def test_load_model_rebuilds_a_published_teamnet_from_its_keys(tmp_path, tsm):
    state = published_teamnet(num_classes=5, tsm=tsm, iframe_depth=18)
    path = tmp_path / "published.pth.tar"
    torch.save({"epoch": 30, "arch": "resnet18", "state_dict": state, "best_prec1": 90.0}, path)
    model, checkpoint = checkpoint_module.load_model(path)
    assert checkpoint["preprocess"] == "published" and checkpoint["epoch"] == 30
    assert model.build_spec["kwargs"] | {"temporal_shift": tsm} == {
        "num_classes": 5, "iframe_depth": 18, "mv_depth": 18, "residual_depth": 18, "temporal_shift": tsm,
        "num_segments": 8 if tsm else None}
    assert_same(model.state_dict()["heads.iframe.fc.weight"], state["I_model.new_fc.weight"])
    if not tsm:
        ours = save_checkpoint(tmp_path / "ours.pt", model, preprocess="ours")
        assert checkpoint_module.load_model(ours)[1]["preprocess"] == "ours"
    tsn = tmp_path / "tsn.pth.tar"
    torch.save({"state_dict": published_stream(18, "iframe")}, tsn)
    with pytest.raises(ValueError, match="not TEAM-Net's"):
        checkpoint_module.load_model(tsn)
