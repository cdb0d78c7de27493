"""torchvision ResNets as TEAM-Net streams: split into stages, MV stem, input BatchNorm, temporal shift.

A stream keeps the torchvision ResNet whole as ``.backbone`` (its ``fc`` replaced by ``nn.Identity``),
so its parameter names are torchvision's and ImageNet weights load as they are; the model runs it
stage by stage (``stem``, ``layer1`` .. ``layer4``) so that TEAM can sit between stages.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.models import ResNet, WeightsEnum, get_model, get_model_weights

__all__ = [
    "RESNET_DEPTHS",
    "STAGES",
    "StemInit",
    "TemporalShift",
    "ResNetStream",
    "resnet_stream",
    "resolve_weights",
]

#: Depths torchvision builds (``torchvision.models.resnet{depth}``).
RESNET_DEPTHS: tuple[int, ...] = (18, 34, 50, 101, 152)
#: The stages of a stream, in order: ``stem`` is conv1 + bn1 + relu + maxpool (the paper's Conv1 and
#: pool1), ``layer1`` .. ``layer4`` are the paper's Res2 .. Res5.
STAGES: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3", "layer4")

StemInit = Literal["random", "rgb_mean"]


def _shift(x: Tensor, num_segments: int, fold_div: int) -> Tensor:
    """TSM's shift (Lin et al. 2019): 1/fold_div of the channels from the next segment, 1/fold_div from
    the previous one, zeros at the clip's ends, the rest unchanged."""
    b, c, h, w = x.shape
    if b % num_segments:
        raise ValueError(
            f"temporal shift built for num_segments={num_segments} received a batch*time size of {b}, "
            "which is not a multiple of it: call model.set_num_segments(T) to match the input"
        )
    x = x.reshape(b // num_segments, num_segments, c, h, w)
    fold = c // fold_div
    # zeros_like keeps x's strides, so a channels-last input stays channels-last after the reshape back.
    out = torch.zeros_like(x)
    out[:, :-1, :fold] = x[:, 1:, :fold]
    out[:, 1:, fold : 2 * fold] = x[:, :-1, fold : 2 * fold]
    out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
    return out.reshape(b, c, h, w)


class TemporalShift(nn.Module):
    """Shift channels along time, then apply ``conv`` (TSM's residual-branch shift, "blockres").

    The published TSM and TEAM-Net wrap the conv as ``.net``; here it is ``.conv`` and
    :mod:`teamnet.checkpoint` maps the published name.
    """

    def __init__(self, conv: nn.Module, num_segments: int, fold_div: int = 8):
        super().__init__()
        if num_segments < 1:
            raise ValueError(f"num_segments must be >= 1, received {num_segments}")
        if fold_div < 2:
            raise ValueError(f"fold_div must be >= 2 (1/fold_div shifted each way), received {fold_div}")
        self.conv = conv
        self.num_segments = num_segments
        self.fold_div = fold_div

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(_shift(x, self.num_segments, self.fold_div))

    def extra_repr(self) -> str:
        return f"num_segments={self.num_segments}, fold_div={self.fold_div}"


class ResNetStream(nn.Module):
    """One stream of TEAM-Net: optional input BatchNorm, then a torchvision ResNet run stage by stage.

    Args:
        backbone: a torchvision ResNet; its ``fc`` is replaced by ``nn.Identity`` (the model owns the
            classifiers) and ``backbone.forward`` is never called.
        input_bn: normalisation applied to the raw input; the published MV and residual streams learn a
            ``BatchNorm2d`` there because their value ranges are not ImageNet's. ``None``: none.
    """

    def __init__(self, backbone: ResNet, input_bn: nn.Module | None = None):
        super().__init__()
        if not isinstance(backbone, ResNet):
            raise TypeError(f"backbone must be a torchvision ResNet, received {type(backbone).__name__}")
        backbone.fc = nn.Identity()
        self.input_bn = input_bn if input_bn is not None else nn.Identity()
        self.backbone = backbone
        self.in_channels: int = backbone.conv1.in_channels
        expansion = type(backbone.layer1[0]).expansion
        width = backbone.conv1.out_channels
        #: Channels after each stage: the widths TEAM must be built with.
        self.stage_channels: dict[str, int] = {
            "stem": width,
            **{f"layer{i + 1}": width * 2**i * expansion for i in range(4)},
        }
        self.out_channels: int = self.stage_channels["layer4"]

    def forward_stage(self, stage: str, x: Tensor) -> Tensor:
        """Run one stage; ``stage`` is one of :data:`STAGES`."""
        if stage == "stem":
            b = self.backbone
            return b.maxpool(b.relu(b.bn1(b.conv1(self.input_bn(x)))))
        return getattr(self.backbone, stage)(x)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` to the last feature map ``(B, out_channels, H/32, W/32)``."""
        for stage in STAGES:
            x = self.forward_stage(stage, x)
        return x

    def set_num_segments(self, num_segments: int) -> None:
        """Set the clip length of every temporal shift (no-op without TSM)."""
        for m in self.modules():
            if isinstance(m, TemporalShift):
                if num_segments < 1:
                    raise ValueError(f"num_segments must be >= 1, received {num_segments}")
                m.num_segments = num_segments

    @property
    def num_segments(self) -> int | None:
        """The clip length the temporal shifts expect; ``None`` without TSM (any length works)."""
        for m in self.modules():
            if isinstance(m, TemporalShift):
                return m.num_segments
        return None


def resolve_weights(depth: int, weights: str | WeightsEnum | None) -> WeightsEnum | None:
    """torchvision's weights enum member for ``resnet{depth}``: ``"IMAGENET1K_V1"``, ``"DEFAULT"``,
    ``"ResNet50_Weights.IMAGENET1K_V2"`` or the member itself; ``None`` for random weights."""
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"ResNet depth must be one of {RESNET_DEPTHS}, received {depth}")
    enum = get_model_weights(f"resnet{depth}")
    if weights is None:
        return None
    if isinstance(weights, enum):
        return weights
    if isinstance(weights, WeightsEnum):
        raise ValueError(f"resnet{depth} needs {enum.__name__} weights, received {weights}")
    if isinstance(weights, str):
        name = weights.rsplit(".", 1)[-1]
        if name not in enum.__members__:
            raise ValueError(
                f"unknown weights {weights!r} for resnet{depth}: allowed {sorted(enum.__members__)}"
            )
        return enum[name]
    raise TypeError(f"weights must be a str, a WeightsEnum or None, received {type(weights).__name__}")


def _load_backbone_file(backbone: ResNet, path: str | os.PathLike) -> None:
    """Load a torchvision-layout ResNet state dict (e.g. ``resnet50-0676ba61.pth``) from a local file."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and not any(isinstance(v, Tensor) for v in state.values()):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if not isinstance(state, Mapping):
        raise ValueError(f"{os.fspath(path)}: expected a ResNet state dict, found {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    # The ImageNet classifier is thrown away anyway: a file with or without it is fine.
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    try:
        missing, unexpected = backbone.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches: most often a file for another depth
        raise ValueError(f"{os.fspath(path)}: does not fit this ResNet (another depth?): {e}") from e
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(
            f"{os.fspath(path)}: does not fit this ResNet (another depth or layout?): "
            f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )


def _replace_stem(backbone: ResNet, in_channels: int, init: StemInit) -> None:
    old = backbone.conv1
    new = nn.Conv2d(in_channels, old.out_channels, kernel_size=7, stride=2, padding=3, bias=False)
    # "random" keeps nn.Conv2d's default init, as the published MV stream does.
    if init == "rgb_mean":
        # TSN's cross-modality initialisation (Wang et al. 2016, §3.2): average the RGB filters over
        # their input channels and replicate the mean for each new input channel.
        with torch.no_grad():
            new.weight.copy_(old.weight.mean(dim=1, keepdim=True).expand_as(new.weight))
    backbone.conv1 = new


def resnet_stream(
    depth: int,
    *,
    in_channels: int = 3,
    input_bn: bool = False,
    weights: str | WeightsEnum | None = None,
    weights_path: str | os.PathLike | None = None,
    stem_init: StemInit = "random",
    temporal_shift: bool = False,
    num_segments: int | None = None,
    shift_div: int = 8,
) -> ResNetStream:
    """Build one stream.

    Args:
        depth: torchvision ResNet depth, one of :data:`RESNET_DEPTHS`.
        in_channels: 3 for I-frames and residuals, 2 for MVs; other than 3, conv1 is replaced.
        input_bn: learn a ``BatchNorm2d(in_channels)`` on the input (published MV and residual streams).
        weights: torchvision weights (downloads on first use), see :func:`resolve_weights`.
        weights_path: a local torchvision-layout ResNet state dict instead of ``weights``.
        stem_init: how a replaced conv1 starts: ``"random"`` (published) or ``"rgb_mean"`` (the mean of
            the pretrained RGB filters, TSN's cross-modality init).
        temporal_shift: insert TSM's shift before the first conv of every residual block.
        num_segments: segments per clip, needed by the temporal shift.
        shift_div: the shift moves ``1/shift_div`` of the channels each way (8 in TSM).
    """
    resolved = resolve_weights(depth, weights)
    if resolved is not None and weights_path is not None:
        raise ValueError("give either weights (torchvision) or weights_path (local file), not both")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, received {in_channels}")
    if stem_init not in ("random", "rgb_mean"):
        raise ValueError(f"stem_init must be 'random' or 'rgb_mean', received {stem_init!r}")
    if temporal_shift and num_segments is None:
        raise ValueError("temporal_shift=True needs num_segments (the clip length T), received None")

    backbone = get_model(f"resnet{depth}", weights=resolved)
    if weights_path is not None:
        _load_backbone_file(backbone, weights_path)
    if in_channels != backbone.conv1.in_channels:
        _replace_stem(backbone, in_channels, stem_init)
    if temporal_shift:
        assert num_segments is not None
        for name in STAGES[1:]:
            for block in getattr(backbone, name):
                block.conv1 = TemporalShift(block.conv1, num_segments, shift_div)
    return ResNetStream(backbone, nn.BatchNorm2d(in_channels) if input_bn else None)
