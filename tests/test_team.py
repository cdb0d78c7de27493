"""The TEAM module does what the paper's equations 1-7 say, for any widths, batch sizes and arrangements."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from teamnet import ARRANGEMENTS, TEAM, ChannelFusion, SpatialFusion

# Odd, unequal widths: the published TEAM assumes C_MV == C_R; ours must not.
CHANNELS = (12, 5, 7)


pytestmark = pytest.mark.usefixtures("seeded_torch")


def streams(b: int = 3, channels: tuple[int, int, int] = CHANNELS, hw: tuple[int, int] = (6, 5)):
    return tuple(torch.randn(b, c, *hw) for c in channels)


@pytest.mark.parametrize("b", [1, 3])
def test_gates_are_in_unit_interval_with_the_right_shapes(b):
    x = streams(b)
    for gate, c in zip(ChannelFusion(*CHANNELS).gates(*x), CHANNELS):
        assert gate.shape == (b, c, 1, 1)
        assert ((gate > 0) & (gate < 1)).all()
    for gate in SpatialFusion(*CHANNELS).gates(*x):
        assert gate.shape == (b, 1, 6, 5)
        assert ((gate > 0) & (gate < 1)).all()


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
@pytest.mark.parametrize("b", [1, 4])  # B = N*T = 1 breaks the published code
def test_every_arrangement_keeps_the_input_shapes(arrangement, b):
    x = streams(b)
    out = TEAM(*CHANNELS, arrangement=arrangement)(*x)
    assert [o.shape for o in out] == [i.shape for i in x]
    assert all(torch.isfinite(o).all() for o in out)


def test_channel_fusion_follows_equations_1_to_4():
    fusion = ChannelFusion(*CHANNELS, reduction=4)
    x = streams()
    z_c = torch.cat([f.mean(dim=(2, 3)) for f in x], dim=1)  # eq. 1 + concatenation
    z_l = F.relu(z_c @ fusion.squeeze.weight.T)  # eq. 2
    expected = [
        f * torch.sigmoid(z_l @ fusion.expand[m].weight.T)[:, :, None, None]  # eq. 3, 4
        for f, m in zip(x, ("iframe", "mv", "residual"))
    ]
    for got, want in zip(fusion(*x), expected):
        torch.testing.assert_close(got, want)


def test_spatial_fusion_follows_equations_5_to_7():
    fusion = SpatialFusion(*CHANNELS)
    x = streams()
    z_s = torch.cat([f.mean(dim=1, keepdim=True) for f in x], dim=1)  # eq. 5
    expected = [
        f * torch.sigmoid(F.conv2d(z_s, fusion.conv[m].weight, padding=1))  # eq. 6, 7
        for f, m in zip(x, ("iframe", "mv", "residual"))
    ]
    for got, want in zip(fusion(*x), expected):
        torch.testing.assert_close(got, want)


def test_arrangements_compose_the_two_fusions_as_documented():
    x = streams()
    ref = TEAM(*CHANNELS, arrangement="parallel")
    c, s = ref.channel, ref.spatial

    def build(arrangement):
        team = TEAM(*CHANNELS, arrangement=arrangement)
        team.channel = c if team.channel is not None else None
        team.spatial = s if team.spatial is not None else None
        return team

    expected = {
        "channel_spatial": s(*c(*x)),
        "spatial_channel": c(*s(*x)),
        "channel": c(*x),
        "spatial": s(*x),
        "parallel": tuple(a + b for a, b in zip(c(*x), s(*x))),
    }
    for arrangement, want in expected.items():
        for got, w in zip(build(arrangement)(*x), want):
            torch.testing.assert_close(got, w)


@pytest.mark.parametrize("arrangement", ARRANGEMENTS)
def test_a_change_in_one_stream_reaches_the_others(arrangement):
    """The point of TEAM: the I-frame output depends on the MV input (and the residual on the I-frame)."""
    team = TEAM(*CHANNELS, arrangement=arrangement)
    iframe, mv, residual = streams()
    before = team(iframe, mv, residual)
    after = team(iframe, mv + torch.randn_like(mv), residual)
    assert not torch.allclose(before[0], after[0])  # I-frame changed through the MV
    assert not torch.allclose(before[2], after[2])  # so did the residual
    changed = team(iframe + torch.randn_like(iframe), mv, residual)
    assert not torch.allclose(before[1], changed[1])


def test_published_widths_and_parameter_count():
    # TEAM after layer1 of ResNet-50 / 18 / 18: channels 256, 64, 64, C = 384, C / 4 = 96.
    team = TEAM(256, 64, 64)
    shapes = {k: tuple(v.shape) for k, v in team.state_dict().items()}
    assert shapes == {
        "channel.squeeze.weight": (96, 384),
        "channel.expand.iframe.weight": (256, 96),
        "channel.expand.mv.weight": (64, 96),
        "channel.expand.residual.weight": (64, 96),
        "spatial.conv.iframe.weight": (1, 3, 3, 3),
        "spatial.conv.mv.weight": (1, 3, 3, 3),
        "spatial.conv.residual.weight": (1, 3, 3, 3),
    }  # no biases, no BatchNorm: as published
    assert sum(p.numel() for p in team.parameters()) == 2 * 384 * 96 + 3 * 27
    assert TEAM(256, 64, 64, arrangement="spatial").channel is None
    assert TEAM(256, 64, 64, arrangement="channel").spatial is None


def test_tiny_widths_keep_a_squeeze_of_at_least_one():
    team = TEAM(1, 1, 1, reduction=16)
    assert team.channel.squeeze.out_features == 1
    out = team(*streams(2, (1, 1, 1)))
    assert out[0].shape == (2, 1, 6, 5)


def test_channels_last_and_bf16_autocast():
    team = TEAM(*CHANNELS)
    x = tuple(t.contiguous(memory_format=torch.channels_last) for t in streams(2))
    ref = team(*x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # Inside an autocast network the streams arrive in bf16 (conv outputs).
        out = team(*(t.bfloat16() for t in x))
        mixed = team(*x)  # and fp32 streams must not hit a dtype error either
    for o, mx, r in zip(out, mixed, ref):
        assert o.dtype == torch.bfloat16 and o.shape == r.shape
        assert o.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(o.float(), r, atol=0.05, rtol=0.05)
        torch.testing.assert_close(mx.float(), r, atol=0.05, rtol=0.05)


def test_bad_arguments_name_allowed_and_received_values():
    with pytest.raises(ValueError, match=r"arrangement must be one of .*'channel_spatial'.*received 'c->s'"):
        TEAM(8, 8, 8, arrangement="c->s")
    with pytest.raises(ValueError, match="reduction must be an integer >= 1, received 0"):
        TEAM(8, 8, 8, reduction=0)
    with pytest.raises(ValueError, match=r"channel counts must be >= 1, received \(8, 0, 8\)"):
        ChannelFusion(8, 0, 8)
    team = TEAM(*CHANNELS)
    i, m, r = streams()
    with pytest.raises(ValueError, match=r"mv shaped \(B, 5, H, W\), received \(3, 6, 6, 5\)"):
        team(i, torch.randn(3, 6, 6, 5), r)
    with pytest.raises(ValueError, match="same batch\\*time size"):
        team(i, m[:2], r)
    with pytest.raises(ValueError, match="same H x W"):
        team(i, torch.randn(3, 5, 3, 3), r)
