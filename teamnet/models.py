"""TEAM-Net and its baselines, TSN and CoViAR, as segment networks over partially decoded video.

Every model takes one tensor per modality shaped ``(N, T, C, H, W)`` (``C`` = 3 for ``iframe`` and
``residual``, 2 for ``mv``), runs each frame through its stream, classifies each frame, averages the
logits over the ``T`` segments (TSN's consensus) and adds the streams' logits with fixed weights:

- :class:`TEAMNet`: three streams with TEAM between stages; weights 1:1:1 (the published sum).
- :class:`CoViAR`: the same three streams without TEAM, combined only at the end, by default
  I:MV:R = 2:1:1 as the published ``combine.py``. The published streams are trained apart, one loss
  each: train with a loss per entry of ``stream_logits`` (``return_features=True``) to match that.
- :class:`TSN`: the I-frame stream alone.

All accept the same call ``model(iframe, mv=None, residual=None)`` so one trainer drives them all;
``model.modalities`` names what to feed. ``forward_features`` and ``forward_head`` split the network
at the last feature maps, which is what class activation maps (paper Fig. 2) need.

Build models with the keyword-only builders at the bottom (``teamnet_r50(num_classes=101)``) or by
name, ``build_model("teamnet_r50", num_classes=101)``, which is what a YAML config uses.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from .backbones import STAGES, ResNetStream, StemInit, resnet_stream
from .team import MODALITIES, TEAM, Arrangement

__all__ = [
    "DEFAULT_TEAM_AT",
    "VideoOutput",
    "ClassifierHead",
    "SegmentNet",
    "TEAMNet",
    "CoViAR",
    "TSN",
    "MODELS",
    "build_model",
    "list_models",
    "teamnet",
    "teamnet_r50",
    "teamnet_tsm_r50",
    "coviar",
    "coviar_r50",
    "tsn",
    "tsn_r50",
    "tsn_tsm_r50",
]

#: Where TEAM sits by default: after Conv1 (+pool1), Res2, Res3 and Res4, the paper's Stage{1,2,3,4},
#: best in its Table 4. Adding "layer4" (Res5) is the ablation's Stage{1,...,5}.
DEFAULT_TEAM_AT: tuple[str, ...] = ("stem", "layer1", "layer2", "layer3")

PathLike = str | os.PathLike

#: Input channels of each modality: RGB I-frame, (x, y) MV, RGB residual.
_IN_CHANNELS: dict[str, int] = {"iframe": 3, "mv": 2, "residual": 3}


@dataclass
class VideoOutput:
    """What ``forward(..., return_features=True)`` returns.

    Attributes:
        logits: ``(N, K)``, the fused prediction (what ``forward`` returns otherwise).
        stream_logits: per modality, ``(N, K)`` averaged over segments, before the fusion weights.
        features: per modality, the last feature map ``(N, T, C, h, w)``, for class activation maps.
    """

    logits: Tensor
    stream_logits: dict[str, Tensor]
    features: dict[str, Tensor]

    def __repr__(self) -> str:  # shapes, not contents
        def shapes(d: dict[str, Tensor]) -> str:
            return "{" + ", ".join(f"{k}: {tuple(v.shape)}" for k, v in d.items()) + "}"

        return (
            f"VideoOutput(logits={tuple(self.logits.shape)}, stream_logits={shapes(self.stream_logits)}, "
            f"features={shapes(self.features)})"
        )


class ClassifierHead(nn.Module):
    """Per-frame classifier of one stream: global average pool, dropout, linear (with bias).

    The published streams replace ResNet's ``fc`` by ``Dropout`` and add ``new_fc``; same order here.
    """

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.5):
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), received {dropout}")
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        # mean + flatten(1) rather than the published `.squeeze()`, which drops the batch dimension
        # when N * T == 1.
        return self.fc(self.dropout(x.mean(dim=(2, 3))))


class SegmentNet(nn.Module):
    """Streams, one classifier each, segment consensus, weighted sum: what the three models share.

    Subclasses choose the streams and may fuse them between stages by overriding :meth:`fuse`.

    Args:
        streams: one :class:`ResNetStream` per modality, keyed by ``"iframe"``, ``"mv"``, ``"residual"``
            (in that order; a subset for single-modality models).
        num_classes: ``K``.
        fusion_weights: the weight of each stream's logits in the sum.
        dropout: before each classifier.
    """

    def __init__(
        self,
        streams: Mapping[str, ResNetStream],
        num_classes: int,
        *,
        fusion_weights: Mapping[str, float],
        dropout: float = 0.5,
    ):
        super().__init__()
        modalities = tuple(m for m in MODALITIES if m in streams)
        if not modalities or set(streams) != set(modalities):
            raise ValueError(f"streams must be keyed by some of {MODALITIES}, received {tuple(streams)}")
        if set(fusion_weights) != set(modalities):
            raise ValueError(
                f"fusion_weights must give one weight per stream {modalities}, received {tuple(fusion_weights)}"
            )
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, received {num_classes}")
        for m in modalities:
            if streams[m].in_channels != _IN_CHANNELS[m]:
                raise ValueError(
                    f"the {m} stream must take {_IN_CHANNELS[m]} input channels, "
                    f"received a stream taking {streams[m].in_channels}"
                )
        #: The inputs this model reads, in call order; a data loader feeds exactly these.
        self.modalities: tuple[str, ...] = modalities
        self.num_classes = num_classes
        self.fusion_weights: dict[str, float] = {m: float(fusion_weights[m]) for m in modalities}
        self.streams = nn.ModuleDict({m: streams[m] for m in modalities})
        self.heads = nn.ModuleDict(
            {m: ClassifierHead(streams[m].out_channels, num_classes, dropout) for m in modalities}
        )

    # -- temporal shift -----------------------------------------------------------------------------
    @property
    def num_segments(self) -> int | None:
        """The ``T`` a TSM model is set for; ``None`` when any ``T`` works (no temporal shift)."""
        return next(iter(self.streams.values())).num_segments

    def set_num_segments(self, num_segments: int) -> None:
        """Change the clip length of a TSM model, e.g. 8 for training and 25 for testing."""
        for stream in self.streams.values():
            stream.set_num_segments(num_segments)

    # -- forward ------------------------------------------------------------------------------------
    def _flatten_inputs(self, inputs: dict[str, Tensor | None]) -> tuple[dict[str, Tensor], int, int]:
        shapes = {}
        for m in self.modalities:
            x = inputs[m]
            if x is None:
                raise ValueError(f"{type(self).__name__} reads {self.modalities}: {m} is missing (None)")
            if x.dim() != 5 or x.shape[2] != _IN_CHANNELS[m]:
                raise ValueError(
                    f"{m} must be shaped (N, T, {_IN_CHANNELS[m]}, H, W), received {tuple(x.shape)}"
                )
            shapes[m] = tuple(x.shape)
        n, t = shapes[self.modalities[0]][:2]
        if any(s[:2] != (n, t) for s in shapes.values()):
            raise ValueError(f"all modalities need the same (N, T), received {shapes}")
        expected_t = self.num_segments
        if expected_t is not None and t != expected_t:
            raise ValueError(
                f"this TSM model is set for num_segments={expected_t}, received T={t}: "
                f"call model.set_num_segments({t}) first"
            )
        # (N, T, C, H, W) -> (N*T, C, H, W): a view, so a channels-last layout survives.
        return {m: inputs[m].flatten(0, 1) for m in self.modalities}, n, t  # type: ignore[union-attr]

    def fuse(self, stage: str, x: dict[str, Tensor]) -> dict[str, Tensor]:
        """Mix the streams after ``stage``; the baselines keep them apart."""
        return x

    def forward_features(
        self, iframe: Tensor, mv: Tensor | None = None, residual: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The last feature map of each stream, ``(N, T, C, h, w)``."""
        x, n, t = self._flatten_inputs({"iframe": iframe, "mv": mv, "residual": residual})
        for stage in STAGES:
            x = {m: self.streams[m].forward_stage(stage, x[m]) for m in self.modalities}
            x = self.fuse(stage, x)
        return {m: f.unflatten(0, (n, t)) for m, f in x.items()}

    def forward_head(self, features: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """Classify each frame, average over segments, weight and sum the streams.

        Returns ``(logits (N, K), per-stream logits {modality: (N, K)})``.
        """
        stream_logits = {}
        for m in self.modalities:
            f = features[m]
            stream_logits[m] = self.heads[m](f.flatten(0, 1)).unflatten(0, f.shape[:2]).mean(dim=1)
        logits = sum(self.fusion_weights[m] * stream_logits[m] for m in self.modalities)
        return logits, stream_logits  # type: ignore[return-value]

    def forward(
        self,
        iframe: Tensor,
        mv: Tensor | None = None,
        residual: Tensor | None = None,
        *,
        return_features: bool = False,
    ) -> Tensor | VideoOutput:
        """``(N, K)`` logits, or a :class:`VideoOutput` with per-stream logits and feature maps.

        Modalities the model does not read (see ``.modalities``) are ignored, so that every model
        can be called the same way.
        """
        features = self.forward_features(iframe, mv, residual)
        logits, stream_logits = self.forward_head(features)
        if return_features:
            return VideoOutput(logits, stream_logits, features)
        return logits

    def class_activation_maps(self, features: Mapping[str, Tensor], target: Tensor) -> dict[str, Tensor]:
        """CAM (Zhou et al. 2016) of class ``target`` (``(N,)`` indices) per stream: ``(N, T, h, w)``.

        The classifier weights of the target class, applied to each position of the last feature map;
        upsample to the input size to overlay.
        """
        cams = {}
        for m in self.modalities:
            w = self.heads[m].fc.weight[target]  # (N, C)
            cams[m] = torch.einsum("ntchw,nc->nthw", features[m], w.to(features[m].dtype))
        return cams


class TEAMNet(SegmentNet):
    """TEAM-Net: I-frame, MV and residual streams exchanging information through TEAM modules.

    Args:
        iframe, mv, residual: the three streams (ResNet-50, ResNet-18, ResNet-18 in the paper).
        num_classes: ``K``.
        team_at: stages after which a TEAM fuses the streams, from :data:`~teamnet.backbones.STAGES`.
        arrangement: of channel and spatial fusion inside each TEAM (see :class:`~teamnet.team.TEAM`).
        reduction: channel-fusion reduction ratio.
        dropout: before each stream's classifier.
    """

    def __init__(
        self,
        iframe: ResNetStream,
        mv: ResNetStream,
        residual: ResNetStream,
        num_classes: int,
        *,
        team_at: Sequence[str] = DEFAULT_TEAM_AT,
        arrangement: Arrangement = "channel_spatial",
        reduction: int = 4,
        dropout: float = 0.5,
    ):
        super().__init__(
            {"iframe": iframe, "mv": mv, "residual": residual},
            num_classes,
            fusion_weights={m: 1.0 for m in MODALITIES},
            dropout=dropout,
        )
        if isinstance(team_at, str) or not set(team_at) <= set(STAGES) or len(set(team_at)) != len(team_at):
            raise ValueError(f"team_at must be distinct stages from {STAGES}, received {team_at!r}")
        self.team_at = tuple(s for s in STAGES if s in team_at)  # network order, whatever the input order
        self.arrangement = arrangement
        self.reduction = reduction
        self.team = nn.ModuleDict(
            {
                s: TEAM(
                    *(self.streams[m].stage_channels[s] for m in MODALITIES),
                    reduction=reduction,
                    arrangement=arrangement,
                )
                for s in self.team_at
            }
        )

    def _flatten_inputs(self, inputs: dict[str, Tensor | None]) -> tuple[dict[str, Tensor], int, int]:
        x, n, t = super()._flatten_inputs(inputs)
        sizes = {m: tuple(v.shape[-2:]) for m, v in x.items()}
        if self.team_at and len(set(sizes.values())) != 1:
            raise ValueError(f"TEAM fuses maps pixel by pixel: give all modalities the same H x W, received {sizes}")
        return x, n, t

    def fuse(self, stage: str, x: dict[str, Tensor]) -> dict[str, Tensor]:
        if stage not in self.team:
            return x
        return dict(zip(MODALITIES, self.team[stage](x["iframe"], x["mv"], x["residual"])))


class CoViAR(SegmentNet):
    """CoViAR (Wu et al. 2018) as re-implemented for the paper: three independent streams, late fusion.

    Args:
        iframe, mv, residual: the three streams (ResNet-50, ResNet-18, ResNet-18 in the paper).
        num_classes: ``K``.
        fusion_weights: ``(w_iframe, w_mv, w_residual)``; the published ``combine.py`` uses 2:1:1.
        dropout: before each classifier; the published CoViAR has none.
    """

    def __init__(
        self,
        iframe: ResNetStream,
        mv: ResNetStream,
        residual: ResNetStream,
        num_classes: int,
        *,
        fusion_weights: Sequence[float] = (2.0, 1.0, 1.0),
        dropout: float = 0.0,
    ):
        if len(fusion_weights) != 3:
            raise ValueError(
                f"fusion_weights must be (w_iframe, w_mv, w_residual), received {tuple(fusion_weights)}"
            )
        super().__init__(
            {"iframe": iframe, "mv": mv, "residual": residual},
            num_classes,
            fusion_weights=dict(zip(MODALITIES, fusion_weights)),
            dropout=dropout,
        )


class TSN(SegmentNet):
    """TSN (Wang et al. 2016) on I-frames: the RGB-only baseline of the paper (ResNet-50)."""

    def __init__(self, iframe: ResNetStream, num_classes: int, *, dropout: float = 0.5):
        super().__init__({"iframe": iframe}, num_classes, fusion_weights={"iframe": 1.0}, dropout=dropout)


# -- builders -----------------------------------------------------------------------------------------

#: Builders by name, for configs: ``build_model(name, **kwargs)``.
MODELS: dict[str, Callable[..., SegmentNet]] = {}
#: Builder arguments that only choose initial weights: not recorded in ``build_spec`` (a checkpoint
#: overwrites the weights, and rebuilding must never download).
_INIT_ARGS = ("pretrained", "weights", "weights_path", "mv_stem_init")

_B = TypeVar("_B", bound=Callable[..., SegmentNet])


def _register(builder: _B) -> _B:
    """Register a public builder and have it record how it was called on the model (``build_spec``)."""

    @functools.wraps(builder)
    def wrapper(**kwargs: Any) -> SegmentNet:
        model = builder(**kwargs)
        model.build_spec = {  # type: ignore[assignment]
            "name": builder.__name__,
            "kwargs": {k: v for k, v in kwargs.items() if k not in _INIT_ARGS},
        }
        return model

    MODELS[builder.__name__] = wrapper
    return wrapper  # type: ignore[return-value]


def _build_streams(
    depths: Mapping[str, int],
    *,
    pretrained: bool,
    weights: str | None,
    weights_path: PathLike | Mapping[str, PathLike] | None,
    mv_stem_init: StemInit,
    temporal_shift: bool,
    num_segments: int | None,
) -> dict[str, ResNetStream]:
    if weights is None and pretrained:
        weights = "IMAGENET1K_V1"  # what `pretrained=True` meant when the published code was written
    if weights_path is None or isinstance(weights_path, Mapping):
        paths = dict(weights_path or {})
    elif len(depths) == 1:
        paths = {next(iter(depths)): weights_path}
    else:
        raise ValueError(
            f"a model with streams {tuple(depths)} needs one file per stream: "
            "weights_path={'iframe': ..., 'mv': ..., 'residual': ...}"
        )
    if not set(paths) <= set(depths):
        raise ValueError(f"weights_path keys must be among {tuple(depths)}, received {tuple(paths)}")
    return {
        m: resnet_stream(
            depth,
            in_channels=_IN_CHANNELS[m],
            # The published MV and residual streams normalise their input with a learnt BatchNorm.
            input_bn=m != "iframe",
            weights=None if m in paths else weights,
            weights_path=paths.get(m),
            stem_init=mv_stem_init if m == "mv" else "random",
            temporal_shift=temporal_shift,
            num_segments=num_segments,
        )
        for m, depth in depths.items()
    }


@_register
def teamnet(
    *,
    num_classes: int,
    iframe_depth: int = 50,
    mv_depth: int = 18,
    residual_depth: int = 18,
    team_at: Sequence[str] = DEFAULT_TEAM_AT,
    arrangement: Arrangement = "channel_spatial",
    reduction: int = 4,
    dropout: float = 0.5,
    temporal_shift: bool = False,
    num_segments: int | None = None,
    pretrained: bool = False,
    weights: str | None = None,
    weights_path: PathLike | Mapping[str, PathLike] | None = None,
    mv_stem_init: StemInit = "random",
) -> TEAMNet:
    """TEAM-Net with any torchvision ResNet depth per stream.

    Args:
        num_classes: ``K``.
        iframe_depth, mv_depth, residual_depth: ResNet depth of each stream (18, 34, 50, 101, 152).
        team_at, arrangement, reduction, dropout: see :class:`TEAMNet`.
        temporal_shift: the TSM variant (paper, supplementary B); needs ``num_segments``.
        num_segments: the clip length ``T`` the temporal shift is set for.
        pretrained: ImageNet weights ``IMAGENET1K_V1`` from torchvision (downloads on first use).
        weights: another torchvision weights name, e.g. ``"IMAGENET1K_V2"``.
        weights_path: local torchvision-layout ResNet files, ``{"iframe": path, "mv": ..., ...}``;
            a stream with a file ignores ``pretrained``/``weights``.
        mv_stem_init: the MV conv1 (2 input channels) starts ``"random"`` (published) or from the
            averaged RGB filters (``"rgb_mean"``).
    """
    streams = _build_streams(
        {"iframe": iframe_depth, "mv": mv_depth, "residual": residual_depth},
        pretrained=pretrained,
        weights=weights,
        weights_path=weights_path,
        mv_stem_init=mv_stem_init,
        temporal_shift=temporal_shift,
        num_segments=num_segments,
    )
    return TEAMNet(
        **streams,
        num_classes=num_classes,
        team_at=team_at,
        arrangement=arrangement,
        reduction=reduction,
        dropout=dropout,
    )


@_register
def teamnet_r50(*, num_classes: int, **kwargs: Any) -> TEAMNet:
    """The paper's TEAM-Net: ResNet-50 I-frame, ResNet-18 MV and residual streams; other arguments as
    :func:`teamnet`. 47.74M parameters for K = 101, 1.567M of them in the four TEAMs."""
    return teamnet(num_classes=num_classes, iframe_depth=50, mv_depth=18, residual_depth=18, **kwargs)


@_register
def teamnet_tsm_r50(*, num_classes: int, num_segments: int = 8, **kwargs: Any) -> TEAMNet:
    """TEAM-Net on TSM backbones (paper, supplementary B); 8 segments as in its Table 1."""
    return teamnet_r50(num_classes=num_classes, temporal_shift=True, num_segments=num_segments, **kwargs)


@_register
def coviar(
    *,
    num_classes: int,
    iframe_depth: int = 50,
    mv_depth: int = 18,
    residual_depth: int = 18,
    fusion_weights: Sequence[float] = (2.0, 1.0, 1.0),
    dropout: float = 0.0,
    temporal_shift: bool = False,
    num_segments: int | None = None,
    pretrained: bool = False,
    weights: str | None = None,
    weights_path: PathLike | Mapping[str, PathLike] | None = None,
    mv_stem_init: StemInit = "random",
) -> CoViAR:
    """CoViAR with any depth per stream; arguments as :func:`teamnet` and :class:`CoViAR`."""
    streams = _build_streams(
        {"iframe": iframe_depth, "mv": mv_depth, "residual": residual_depth},
        pretrained=pretrained,
        weights=weights,
        weights_path=weights_path,
        mv_stem_init=mv_stem_init,
        temporal_shift=temporal_shift,
        num_segments=num_segments,
    )
    return CoViAR(**streams, num_classes=num_classes, fusion_weights=fusion_weights, dropout=dropout)


@_register
def coviar_r50(*, num_classes: int, **kwargs: Any) -> CoViAR:
    """The paper's CoViAR baseline: ResNet-50 I-frame, ResNet-18 MV and residual, fused 2:1:1."""
    return coviar(num_classes=num_classes, iframe_depth=50, mv_depth=18, residual_depth=18, **kwargs)


@_register
def tsn(
    *,
    num_classes: int,
    depth: int = 50,
    dropout: float = 0.5,
    temporal_shift: bool = False,
    num_segments: int | None = None,
    pretrained: bool = False,
    weights: str | None = None,
    weights_path: PathLike | None = None,
) -> TSN:
    """TSN on I-frames with any ResNet depth; ``temporal_shift=True`` makes it TSM."""
    streams = _build_streams(
        {"iframe": depth},
        pretrained=pretrained,
        weights=weights,
        weights_path=weights_path,
        mv_stem_init="random",
        temporal_shift=temporal_shift,
        num_segments=num_segments,
    )
    return TSN(streams["iframe"], num_classes, dropout=dropout)


@_register
def tsn_r50(*, num_classes: int, **kwargs: Any) -> TSN:
    """The paper's TSN baseline: ResNet-50 on I-frames."""
    return tsn(num_classes=num_classes, depth=50, **kwargs)


@_register
def tsn_tsm_r50(*, num_classes: int, num_segments: int = 8, **kwargs: Any) -> TSN:
    """The paper's TSM baseline (supplementary Table 1): ResNet-50 with temporal shift, 8 segments."""
    return tsn_r50(num_classes=num_classes, temporal_shift=True, num_segments=num_segments, **kwargs)


def list_models() -> list[str]:
    """Names :func:`build_model` accepts."""
    return sorted(MODELS)


def build_model(name: str, **kwargs: Any) -> SegmentNet:
    """Build a model by builder name (see :func:`list_models`), e.g. from a YAML config."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: allowed {list_models()}")
    return MODELS[name](**kwargs)
