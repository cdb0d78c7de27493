"""The TEAM module (mulTi-modal lEArning Module) of TEAM-Net (Wang, She & Smolic, BMVC 2021, §3).

TEAM fuses the three streams of a partially decoded video, I-frame, motion vector (MV) and residual,
at one depth of the network. It has the shape of timm's CBAM: a channel gate, a spatial gate and a small
module that composes them; the difference is that each gate is computed from all three streams and
applied to each one, so each stream sees the others.

- :class:`ChannelFusion` ("what", eq. 1-4): global average pool each stream, concatenate, one shared
  squeeze ``Linear(C -> C/r) + ReLU``, then one ``Linear(C/r -> C_i) + sigmoid`` per stream.
- :class:`SpatialFusion` ("where", eq. 5-7): mean over channels of each stream gives three maps; one
  ``Conv2d(3 -> 1, 3x3) + sigmoid`` per stream turns them into that stream's spatial gate.
- :class:`TEAM`: the two composed by ``arrangement``; the paper's best (and default) is channel then
  spatial (Table 3).

As in the published code: no biases, no BatchNorm, no identity path. Every tensor is ``(B, C_i, H, W)``
with ``B = N * T`` (batch times segments), the same ``B``, ``H`` and ``W`` for the three streams.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
from torch import Tensor, nn

__all__ = ["MODALITIES", "ARRANGEMENTS", "Arrangement", "ChannelFusion", "SpatialFusion", "TEAM"]

#: The three streams, in the order every function here takes and returns them.
MODALITIES: tuple[str, str, str] = ("iframe", "mv", "residual")

Arrangement = Literal["channel", "spatial", "parallel", "spatial_channel", "channel_spatial"]
#: The five arrangements of the paper's ablation (Table 3): TEAM_c, TEAM_s, TEAM_c+s, TEAM_s->c,
#: TEAM_c->s.
ARRANGEMENTS: tuple[str, ...] = get_args(Arrangement)

Streams = tuple[Tensor, Tensor, Tensor]


def _check_streams(iframe: Tensor, mv: Tensor, residual: Tensor, channels: tuple[int, ...]) -> None:
    for name, x, c in zip(MODALITIES, (iframe, mv, residual), channels):
        if x.dim() != 4 or x.shape[1] != c:
            raise ValueError(
                f"TEAM expects {name} shaped (B, {c}, H, W), received {tuple(x.shape)}"
            )
    if not (iframe.shape[0] == mv.shape[0] == residual.shape[0]):
        raise ValueError(
            "TEAM needs the same batch*time size B for the three streams, received "
            f"{iframe.shape[0]}, {mv.shape[0]}, {residual.shape[0]}"
        )


class ChannelFusion(nn.Module):
    """Channel fusion (paper eq. 1-4): a squeeze-and-excitation over the three streams' channels.

    Args:
        iframe_channels, mv_channels, residual_channels: channels of each stream at this depth.
        reduction: ``r`` of eq. 2; the squeezed width is ``(C_I + C_MV + C_R) // r`` (at least 1, so
            that tiny test networks work; the published networks never reach that floor).
    """

    def __init__(self, iframe_channels: int, mv_channels: int, residual_channels: int, reduction: int = 4):
        super().__init__()
        channels = (iframe_channels, mv_channels, residual_channels)
        if any(c < 1 for c in channels):
            raise ValueError(f"channel counts must be >= 1, received {channels}")
        if reduction < 1:
            raise ValueError(f"reduction must be an integer >= 1, received {reduction}")
        self.channels = channels
        self.reduction = reduction
        hidden = max(1, sum(channels) // reduction)
        # Bias-free, as in the published code: 1.567M parameters in the four default TEAMs.
        self.squeeze = nn.Linear(sum(channels), hidden, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.expand = nn.ModuleDict({m: nn.Linear(hidden, c, bias=False) for m, c in zip(MODALITIES, channels)})

    def gates(self, iframe: Tensor, mv: Tensor, residual: Tensor) -> Streams:
        """The three channel gates, each ``(B, C_i, 1, 1)`` in (0, 1)."""
        _check_streams(iframe, mv, residual, self.channels)
        # Eq. 1 and the concatenation z_c: mean over H, W (works for channels-last and for B = 1,
        # where the published `.squeeze()` in the head loses the batch dimension).
        z = torch.cat([x.mean(dim=(2, 3)) for x in (iframe, mv, residual)], dim=1)
        z = self.relu(self.squeeze(z))  # eq. 2
        return tuple(  # type: ignore[return-value]
            torch.sigmoid(self.expand[m](z))[:, :, None, None] for m in MODALITIES  # eq. 3
        )

    def forward(self, iframe: Tensor, mv: Tensor, residual: Tensor) -> Streams:
        g = self.gates(iframe, mv, residual)
        return iframe * g[0], mv * g[1], residual * g[2]  # eq. 4

    def extra_repr(self) -> str:
        return f"channels={self.channels}, reduction={self.reduction}"


class SpatialFusion(nn.Module):
    """Spatial fusion (paper eq. 5-7): per-stream spatial gates from the three channel-mean maps.

    Args:
        iframe_channels, mv_channels, residual_channels: channels of each stream (used to check inputs;
            the fusion itself has 3 x 27 weights whatever the widths).
        kernel_size: of the gate convolutions; 3 in the paper.
    """

    def __init__(
        self, iframe_channels: int, mv_channels: int, residual_channels: int, kernel_size: int = 3
    ):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1 (to keep H, W), received {kernel_size}")
        self.channels = (iframe_channels, mv_channels, residual_channels)
        self.conv = nn.ModuleDict(
            {
                m: nn.Conv2d(len(MODALITIES), 1, kernel_size, padding=kernel_size // 2, bias=False)
                for m in MODALITIES
            }
        )

    def gates(self, iframe: Tensor, mv: Tensor, residual: Tensor) -> Streams:
        """The three spatial gates, each ``(B, 1, H, W)`` in (0, 1)."""
        _check_streams(iframe, mv, residual, self.channels)
        if not (iframe.shape[2:] == mv.shape[2:] == residual.shape[2:]):
            raise ValueError(
                "spatial fusion needs the same H x W for the three streams, received "
                f"{tuple(iframe.shape[2:])}, {tuple(mv.shape[2:])}, {tuple(residual.shape[2:])}"
            )
        z = torch.cat([x.mean(dim=1, keepdim=True) for x in (iframe, mv, residual)], dim=1)  # eq. 5
        return tuple(torch.sigmoid(self.conv[m](z)) for m in MODALITIES)  # type: ignore[return-value]  # eq. 6

    def forward(self, iframe: Tensor, mv: Tensor, residual: Tensor) -> Streams:
        g = self.gates(iframe, mv, residual)
        return iframe * g[0], mv * g[1], residual * g[2]  # eq. 7


class TEAM(nn.Module):
    """Channel and/or spatial fusion of the three streams, arranged as in the paper's Table 3.

    Args:
        iframe_channels, mv_channels, residual_channels: channels of each stream at this depth.
        reduction: channel-fusion reduction ratio ``r`` (4 in the paper and the published code).
        arrangement: ``"channel_spatial"`` (TEAM_c->s, the paper's choice), ``"spatial_channel"``
            (s->c), ``"parallel"`` (c+s), ``"channel"`` (c only) or ``"spatial"`` (s only).

    The paper does not define how the parallel arrangement merges its two branches; here both fusions
    see the same input and their outputs are added, as in concurrent spatial and channel SE (scSE,
    Roy et al. 2018), which the name "c+s" suggests.
    """

    def __init__(
        self,
        iframe_channels: int,
        mv_channels: int,
        residual_channels: int,
        reduction: int = 4,
        arrangement: Arrangement = "channel_spatial",
    ):
        super().__init__()
        if arrangement not in ARRANGEMENTS:
            raise ValueError(f"arrangement must be one of {ARRANGEMENTS}, received {arrangement!r}")
        self.arrangement = arrangement
        channels = (iframe_channels, mv_channels, residual_channels)
        self.channel = ChannelFusion(*channels, reduction=reduction) if arrangement != "spatial" else None
        self.spatial = SpatialFusion(*channels) if arrangement != "channel" else None

    def forward(self, iframe: Tensor, mv: Tensor, residual: Tensor) -> Streams:
        x = (iframe, mv, residual)
        if self.arrangement == "channel_spatial":
            return self.spatial(*self.channel(*x))
        if self.arrangement == "spatial_channel":
            return self.channel(*self.spatial(*x))
        if self.arrangement == "channel":
            return self.channel(*x)
        if self.arrangement == "spatial":
            return self.spatial(*x)
        c, s = self.channel(*x), self.spatial(*x)  # parallel
        return c[0] + s[0], c[1] + s[1], c[2] + s[2]

    def extra_repr(self) -> str:
        return f"arrangement={self.arrangement!r}"
