"""TEAM-Net, TSN, CoViAR and the TSM variant: sizes, fusion, inputs, weights, speed-readiness.

Everything runs on CPU with random weights and tiny inputs (T = 2, 32 x 32 or 64 x 64); nothing is
downloaded.
"""

from __future__ import annotations


import pytest
import torch
from torch import nn
from torchvision.models import ResNet, ResNet18_Weights, ResNet50_Weights, resnet18
from torchvision.models.resnet import BasicBlock

from teamnet import backbones as teamnet_backbones
from teamnet import (
    ARRANGEMENTS,
    DEFAULT_TEAM_AT,
    STAGES,
    CoViAR,
    ResNetStream,
    TEAMNet,
    TemporalShift,
    VideoOutput,
    build_model,
    coviar_r50,
    list_models,
    resnet_stream,
    resolve_weights,
    teamnet,
    teamnet_r50,
    teamnet_tsm_r50,
    tsn,
    tsn_r50,
)

K = 5


pytestmark = pytest.mark.usefixtures("seeded_torch")


def clip(n: int = 1, t: int = 2, size: int = 32) -> dict[str, torch.Tensor]:
    return {
        "iframe": torch.randn(n, t, 3, size, size),
        "mv": torch.randn(n, t, 2, size, size),
        "residual": torch.randn(n, t, 3, size, size),
    }


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def r50_streams():
    """The published streams, built once and shared by models that only run forward passes."""
    return {
        "iframe": resnet_stream(50),
        "mv": resnet_stream(18, in_channels=2, input_bn=True),
        "residual": resnet_stream(18, input_bn=True),
    }


def tiny_streams(temporal_shift: bool = False, num_segments: int = 2) -> dict[str, ResNetStream]:
    """ResNet-10 streams (torchvision's ResNet with one BasicBlock per stage): fast to compile."""
    out = {}
    for m, c in (("iframe", 3), ("mv", 2), ("residual", 3)):
        backbone = ResNet(BasicBlock, [1, 1, 1, 1])
        backbone.conv1 = nn.Conv2d(c, 64, 7, 2, 3, bias=False)
        if temporal_shift:
            for stage in STAGES[1:]:
                for block in getattr(backbone, stage):
                    block.conv1 = TemporalShift(block.conv1, num_segments)
        out[m] = ResNetStream(backbone, nn.BatchNorm2d(c) if m != "iframe" else None)
    return out


# -- size -------------------------------------------------------------------------------------------------
def test_default_teamnet_has_the_published_parameter_count():
    model = teamnet_r50(num_classes=101)
    total, in_team = n_params(model), n_params(model.team)
    assert (round(total / 1e6, 2), round(in_team / 1e6, 3)) == (47.74, 1.567)
    # Exactly: torchvision ResNet-50 + 2 x ResNet-18 without fc (23,508,032 + 2 x 11,176,512), the MV
    # conv1 on 2 channels (-3,136), input BNs (10), three fc with bias, and bias-free TEAMs.
    assert total == 47_735_549
    assert in_team == 1_567_044
    assert len(model.team) == 4 and model.team_at == DEFAULT_TEAM_AT
    assert n_params(tsn_r50(num_classes=101)) == 23_508_032 + 2048 * 101 + 101
    assert n_params(coviar_r50(num_classes=101)) == total - in_team


# -- every model ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list_models())
def test_every_builder_runs_forward_and_backward(name):
    kwargs = {"num_segments": 2} if "tsm" in name else {}
    model = build_model(name, num_classes=K, **kwargs)
    x = clip(n=2)
    out = model(**{m: x[m] for m in model.modalities})
    assert out.shape == (2, K) and torch.isfinite(out).all()
    out.logsumexp(dim=1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.build_spec == {"name": name, "kwargs": {"num_classes": K, **kwargs}}


def test_modalities_and_the_common_call():
    x = clip()
    assert teamnet_r50(num_classes=K).modalities == ("iframe", "mv", "residual")
    assert coviar_r50(num_classes=K).modalities == ("iframe", "mv", "residual")
    model = tsn_r50(num_classes=K).eval()
    assert model.modalities == ("iframe",)
    # A trainer calls every model with all three; TSN reads only the I-frames.
    torch.testing.assert_close(model(x["iframe"], x["mv"], x["residual"]), model(x["iframe"]))


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
@pytest.mark.parametrize(
    "team_at",
    # The paper's Table 4: Stage{1}, {1,2}, {1,2,3}, {1,2,3,4} (default), {1,...,5}; and none.
    [STAGES[:1], STAGES[:2], STAGES[:3], STAGES[:4], STAGES, ()],
    ids=lambda s: "+".join(s) or "none",
)
def test_every_arrangement_and_stage_set_runs(r50_streams, arrangement, team_at):
    model = TEAMNet(**r50_streams, num_classes=K, team_at=team_at, arrangement=arrangement).eval()
    assert tuple(model.team) == team_at
    with torch.no_grad():
        out = model(**clip())
    assert out.shape == (1, K) and torch.isfinite(out).all()


def test_team_at_is_put_in_network_order_and_checked(r50_streams):
    model = TEAMNet(**r50_streams, num_classes=K, team_at=["layer2", "stem"])
    assert model.team_at == ("stem", "layer2")
    with pytest.raises(ValueError, match=r"team_at must be distinct stages from \('stem', .*received \['layer5'\]"):
        TEAMNet(**r50_streams, num_classes=K, team_at=["layer5"])
    with pytest.raises(ValueError, match="team_at must be distinct"):
        TEAMNet(**r50_streams, num_classes=K, team_at="stem")


# -- fusion -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("team_at", [DEFAULT_TEAM_AT, ("layer3",), ()])
def test_mv_reaches_iframe_features_only_through_team(r50_streams, team_at):
    model = TEAMNet(**r50_streams, num_classes=K, team_at=team_at).eval()
    x = clip()
    other = dict(x, mv=x["mv"] + torch.randn_like(x["mv"]))
    with torch.no_grad():
        a, b = model.forward_features(**x), model.forward_features(**other)
    assert not torch.equal(a["mv"], b["mv"])
    assert torch.equal(a["iframe"], b["iframe"]) is (not team_at)
    assert torch.equal(a["residual"], b["residual"]) is (not team_at)


def test_coviar_streams_stay_independent(r50_streams):
    model = CoViAR(**r50_streams, num_classes=K).eval()
    x = clip()
    with torch.no_grad():
        a = model(**x, return_features=True)
        b = model(**dict(x, mv=torch.randn_like(x["mv"])), return_features=True)
    torch.testing.assert_close(a.stream_logits["iframe"], b.stream_logits["iframe"])
    torch.testing.assert_close(a.stream_logits["residual"], b.stream_logits["residual"])


@pytest.mark.parametrize("kind", ["teamnet", "coviar"])
def test_return_features_gives_stream_logits_and_last_maps(r50_streams, kind):
    cls, weights = (TEAMNet, (1, 1, 1)) if kind == "teamnet" else (CoViAR, (2, 1, 1))
    model = cls(**r50_streams, num_classes=K).eval()
    x = clip(n=2, t=3, size=64)
    with torch.no_grad():
        out = model(**x, return_features=True)
        plain = model(**x)
    assert isinstance(out, VideoOutput) and "(2, 3, 2048, 2, 2)" in repr(out)
    assert {m: tuple(f.shape) for m, f in out.features.items()} == {
        "iframe": (2, 3, 2048, 2, 2),
        "mv": (2, 3, 512, 2, 2),
        "residual": (2, 3, 512, 2, 2),
    }
    torch.testing.assert_close(out.logits, plain)
    fused = sum(w * out.stream_logits[m] for w, m in zip(weights, model.modalities))
    torch.testing.assert_close(out.logits, fused)
    # Segment consensus: the stream logit is the mean of the per-frame classifier outputs.
    f = out.features["mv"]
    per_frame = model.heads["mv"](f.flatten(0, 1)).unflatten(0, (2, 3))
    torch.testing.assert_close(out.stream_logits["mv"], per_frame.mean(dim=1))
    cams = model.class_activation_maps(out.features, torch.tensor([0, 3]))
    assert cams["iframe"].shape == (2, 3, 2, 2)


def test_segment_order_does_not_matter_without_temporal_shift_and_does_with_it():
    x = clip(t=3, size=64)
    perm = {m: v[:, [2, 0, 1]] for m, v in x.items()}
    with torch.no_grad():
        plain = teamnet(num_classes=K, iframe_depth=18).eval()
        torch.testing.assert_close(plain(**x), plain(**perm))
        tsm = teamnet(num_classes=K, iframe_depth=18, temporal_shift=True, num_segments=3).eval()
        assert not torch.allclose(tsm(**x), tsm(**perm))


def test_batch_time_of_one(r50_streams):
    """N * T = 1: the published head's `.squeeze()` loses the batch dimension there."""
    model = TEAMNet(**r50_streams, num_classes=K)
    with torch.no_grad():
        assert model.eval()(**clip(n=1, t=1)).shape == (1, K)
    # Training mode too, where BatchNorm needs more than one value per channel: 2 x 2 after layer4.
    assert model.train()(**clip(n=1, t=1, size=64)).shape == (1, K)


# -- inputs -----------------------------------------------------------------------------------------------
def test_bad_inputs_are_explained(r50_streams):
    model = TEAMNet(**r50_streams, num_classes=K)
    x = clip()
    with pytest.raises(ValueError, match=r"reads \('iframe', 'mv', 'residual'\): mv is missing"):
        model(x["iframe"], None, x["residual"])
    with pytest.raises(ValueError, match=r"mv must be shaped \(N, T, 2, H, W\), received \(1, 2, 3, 32, 32\)"):
        model(x["iframe"], x["residual"], x["residual"])
    with pytest.raises(ValueError, match=r"mv must be shaped .* received \(2, 2, 32, 32\)"):
        model(x["iframe"], x["mv"][0], x["residual"])
    with pytest.raises(ValueError, match=r"same \(N, T\)"):
        model(x["iframe"], x["mv"][:, :1], x["residual"])
    with pytest.raises(ValueError, match="same H x W"):
        model(x["iframe"], torch.randn(1, 2, 2, 16, 16), x["residual"])
    # CoViAR has no TEAM: its streams may differ in size.
    small_mv = torch.randn(1, 2, 2, 16, 16)
    assert CoViAR(**r50_streams, num_classes=K).eval()(x["iframe"], small_mv, x["residual"]).shape == (1, K)


def test_tsm_checks_the_clip_length_and_can_change_it():
    model = teamnet_tsm_r50(num_classes=K).eval()  # 8 segments by default
    assert model.num_segments == 8
    with pytest.raises(ValueError, match=r"set for num_segments=8, received T=2: call model.set_num_segments\(2\)"):
        model(**clip(t=2))
    model.set_num_segments(2)
    with torch.no_grad():
        assert model(**clip(t=2)).shape == (1, K)
    assert tsn_r50(num_classes=K).num_segments is None


def test_builder_arguments_are_checked():
    with pytest.raises(ValueError, match=r"unknown model 'teamnet_r51': allowed \['coviar'"):
        build_model("teamnet_r51", num_classes=K)
    with pytest.raises(ValueError, match=r"ResNet depth must be one of \(18, 34, 50, 101, 152\), received 20"):
        teamnet(num_classes=K, mv_depth=20)
    with pytest.raises(ValueError, match="temporal_shift=True needs num_segments"):
        tsn(num_classes=K, depth=18, temporal_shift=True)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), received 1.5"):
        tsn(num_classes=K, depth=18, dropout=1.5)
    with pytest.raises(ValueError, match=r"fusion_weights must be \(w_iframe, w_mv, w_residual\)"):
        build_model("coviar", num_classes=K, iframe_depth=18, fusion_weights=(1.0, 1.0))
    with pytest.raises(TypeError):
        teamnet_r50(num_classes=K, iframe_depth=18)  # the r50 builder fixes the depths


# -- temporal shift ---------------------------------------------------------------------------------------
def test_temporal_shift_moves_one_eighth_each_way():
    n, t, c = 2, 3, 16
    x = torch.randn(n * t, c, 4, 4)
    shift = TemporalShift(nn.Identity(), num_segments=t)
    y = shift(x.contiguous(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)
    x5, y5 = x.unflatten(0, (n, t)), y.unflatten(0, (n, t))
    torch.testing.assert_close(y5[:, :-1, :2], x5[:, 1:, :2])  # channels 0-1 from the next segment
    torch.testing.assert_close(y5[:, 1:, 2:4], x5[:, :-1, 2:4])  # channels 2-3 from the previous one
    assert (y5[:, -1, :2] == 0).all() and (y5[:, 0, 2:4] == 0).all()
    torch.testing.assert_close(y5[:, :, 4:], x5[:, :, 4:])


def test_temporal_shift_sits_before_every_residual_blocks_first_conv():
    stream = resnet_stream(18, temporal_shift=True, num_segments=8)
    shifts = [m for m in stream.modules() if isinstance(m, TemporalShift)]
    assert len(shifts) == 8  # 2 BasicBlocks x 4 stages
    assert all(isinstance(getattr(stream.backbone, s)[0].conv1, TemporalShift) for s in STAGES[1:])
    assert isinstance(stream.backbone.conv1, nn.Conv2d)  # not the stem


# -- initialisation ---------------------------------------------------------------------------------------
def test_weights_names_resolve_to_torchvision_enums():
    assert resolve_weights(50, "IMAGENET1K_V1") is ResNet50_Weights.IMAGENET1K_V1
    assert resolve_weights(18, "ResNet18_Weights.DEFAULT") is ResNet18_Weights.DEFAULT
    assert resolve_weights(18, ResNet18_Weights.IMAGENET1K_V1) is ResNet18_Weights.IMAGENET1K_V1
    assert resolve_weights(18, None) is None
    with pytest.raises(ValueError, match=r"unknown weights 'IMAGENET22K' for resnet50: allowed \['DEFAULT'"):
        resolve_weights(50, "IMAGENET22K")
    with pytest.raises(ValueError, match="resnet18 needs ResNet18_Weights"):
        resolve_weights(18, ResNet50_Weights.IMAGENET1K_V1)


def test_pretrained_asks_torchvision_for_imagenet1k_v1(monkeypatch):
    """Checked without downloading: record what the builders ask torchvision for."""
    asked = []

    def fake_get_model(name, weights=None):
        asked.append((name, weights))
        return resnet18() if name == "resnet18" else getattr(__import__("torchvision").models, name)()

    monkeypatch.setattr(teamnet_backbones, "get_model", fake_get_model)
    teamnet_r50(num_classes=K, pretrained=True)
    assert asked == [
        ("resnet50", ResNet50_Weights.IMAGENET1K_V1),
        ("resnet18", ResNet18_Weights.IMAGENET1K_V1),
        ("resnet18", ResNet18_Weights.IMAGENET1K_V1),
    ]
    asked.clear()
    tsn(num_classes=K, depth=18, weights="IMAGENET1K_V1")
    assert asked == [("resnet18", ResNet18_Weights.IMAGENET1K_V1)]


def test_weights_from_a_local_file(tmp_path):
    reference = resnet18()  # random, standing in for an ImageNet file
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    ref = reference.state_dict()

    model = tsn(num_classes=K, depth=18, weights_path=path)
    ours = model.streams["iframe"].backbone.state_dict()
    assert all(torch.equal(ours[k], ref[k]) for k in ours)

    model = teamnet(
        num_classes=K,
        iframe_depth=18,
        weights_path={"mv": path, "residual": path},
        mv_stem_init="rgb_mean",
    )
    mv_conv1 = model.streams["mv"].backbone.conv1.weight
    assert mv_conv1.shape == (64, 2, 7, 7)
    expected = ref["conv1.weight"].mean(dim=1, keepdim=True)
    torch.testing.assert_close(mv_conv1, expected.expand(-1, 2, -1, -1))
    torch.testing.assert_close(model.streams["residual"].backbone.layer3[1].conv2.weight, ref["layer3.1.conv2.weight"])
    assert not torch.equal(model.streams["iframe"].backbone.conv1.weight, ref["conv1.weight"])  # random

    with pytest.raises(ValueError, match="does not fit this ResNet"):
        tsn(num_classes=K, depth=34, weights_path=path)
    with pytest.raises(ValueError, match=r"needs one file per stream: weights_path=\{'iframe'"):
        teamnet(num_classes=K, iframe_depth=18, weights_path=path)


def test_mv_stem_is_random_by_default():
    stream = resnet_stream(18, in_channels=2, input_bn=True)
    assert stream.backbone.conv1.weight.shape == (64, 2, 7, 7)
    assert isinstance(stream.input_bn, nn.BatchNorm2d) and stream.input_bn.num_features == 2


# -- speed-readiness --------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["teamnet", "coviar", "tsn"])
def test_channels_last_autocast_forward_and_backward(name, dtype):
    depth = {"iframe_depth": 18} if name != "tsn" else {"depth": 18}
    model = build_model(name, num_classes=K, **depth).to(memory_format=torch.channels_last)
    x = clip(n=2)
    with torch.autocast("cpu", dtype=dtype):
        out = model(**x, return_features=True)
    assert out.logits.dtype == dtype and out.logits.shape == (2, K)
    assert out.features["iframe"].flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
    out.logits.float().logsumexp(dim=1).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad():
        ref = model(**x)
        with torch.autocast("cpu", dtype=dtype):
            low = model(**x)
    torch.testing.assert_close(low.float(), ref, atol=0.1, rtol=0.1)


@pytest.mark.slow
def test_torch_compile_full_graph():
    """One graph, no breaks, same result: a TEAM-Net of ResNet-10 streams with temporal shift."""
    model = TEAMNet(**tiny_streams(temporal_shift=True), num_classes=K).eval()
    x = clip()
    with torch.no_grad():
        ref = model(**x)
        out = torch.compile(model, fullgraph=True)(**x)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
