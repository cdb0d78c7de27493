"""Checkpoints: ours (documented below) and the published TEAM-Net, CoViAR and TSN/TSM ones.

Our layout, written by :func:`save_checkpoint` (a ``torch.save`` of a dict of plain values and
tensors, so :func:`load_checkpoint` reads it with ``weights_only=True``)::

    {
      "format": "teamnet", "version": 1,
      "model": {"name": "teamnet_r50", "kwargs": {"num_classes": 101, ...}} or None,
      "state_dict": {
        "streams.<m>.input_bn.*"                 BatchNorm2d on the raw input (m = mv, residual)
        "streams.<m>.backbone.<torchvision key>" the ResNet, torchvision's names without fc.*;
                                                 with TSM, "layerL.B.conv1.conv.weight"
        "heads.<m>.fc.weight", ".bias"           per-stream classifier (K, C)
        "team.<stage>.channel.squeeze.weight"    TEAM after <stage> (stem, layer1, ...)
        "team.<stage>.channel.expand.<m>.weight"
        "team.<stage>.spatial.conv.<m>.weight"
      },                                         m in iframe, mv, residual
      "epoch": int or None, "metrics": {...}, "config": {...},
      "optimizer": optimizer.state_dict() or None, "extra": {...}, "torch_version": "2.x",
      "preprocess": "ours" or "published",       the input conventions the weights were trained with
    }                                            (absent from older files: read as "ours")

``"model"`` is the builder call (``build_spec``, weight-init arguments left out) so
``load_checkpoint(path)`` can rebuild the model without downloading anything.

The published layouts (DESIGN §3) are ``{epoch, arch, state_dict, best_prec1}`` with
``I_model.base_model.*``, ``I_model.new_fc.*``, ``MV_model.data_bn.*``, ``R_model.*``,
``team0..3.{fc_squeeze, fc_i, fc_mv, fc_r, conv_s_i, conv_s_mv, conv_s_r}`` (TEAM-Net), and per
stream ``base_model.*`` + ``base_model.fc.*`` (CoViAR) or ``new_fc.*`` (TSN/TSM), TSM convs wrapped as
``conv1.net``, all possibly behind a DataParallel ``module.`` prefix. :func:`load_published` and
:func:`load_published_coviar` rename them to ours and report every key that does not fit.

Published weights were trained on other input conventions than ours (DESIGN §3, :mod:`teamnet.augment`),
so every load says which ones its weights need (``LoadReport.preprocess``, ``checkpoint["preprocess"]``);
:func:`choose_preprocess` turns that and the user's setting into the one the loaders use, and says when
it switched.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .augment import PREPROCESS, check_preprocess
from .models import DEFAULT_TEAM_AT, TSN, CoViAR, SegmentNet, TEAMNet, build_model
from .team import MODALITIES

__all__ = [
    "FORMAT",
    "VERSION",
    "LoadReport",
    "CheckpointMismatchError",
    "convert_published",
    "load_state_dict_checked",
    "load_published",
    "load_published_coviar",
    "save_checkpoint",
    "load_checkpoint",
    "choose_preprocess",
    "init_from_checkpoint",
    "is_published",
    "load_model",
    "preprocess_of",
]

FORMAT = "teamnet"
VERSION = 1

Source = str | os.PathLike | Mapping[str, Any]


class CheckpointMismatchError(ValueError):
    """A checkpoint does not fit the model; the message lists every key that does not."""

    def __init__(self, report: LoadReport, what: str = "checkpoint"):
        self.report = report
        super().__init__(f"{what} does not fit the model:\n{report}")


@dataclass
class LoadReport:
    """What loading a state dict did, key by key (our names).

    Attributes:
        loaded: keys that fit, copied into the model (none are when a strict load fails).
        missing: model keys the checkpoint does not have (they keep their current values).
        unexpected: checkpoint keys the model does not have (not loaded).
        mismatched: ``(key, checkpoint shape, model shape)`` for keys present in both.
        excluded: keys left out on request (``exclude=``), e.g. a classifier to fine-tune anew.
        ignored: BatchNorm ``num_batches_tracked`` missing from checkpoints written before PyTorch 0.4.1;
            harmless with the default momentum, so they do not make a load fail.
        preprocess: the input conventions the loaded weights were trained with (``"published"`` for
            published checkpoints, what ours recorded), None when unknown; pass it to the loaders.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    preprocess: str | None = None

    @property
    def ok(self) -> bool:
        """Every model key was loaded or deliberately excluded/ignored, and nothing was left over."""
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        def block(title: str, items: Sequence[Any], limit: int = 20) -> list[str]:
            if not items:
                return []
            lines = [f"  {title} ({len(items)}):"]
            lines += [f"    {i}" for i in items[:limit]]
            if len(items) > limit:
                lines.append(f"    ... and {len(items) - limit} more")
            return lines

        lines = [f"{len(self.loaded)} tensors fit the model"]
        lines += block("missing from the checkpoint", self.missing)
        lines += block("unexpected in the checkpoint", self.unexpected)
        lines += block(
            "shape mismatch (key, checkpoint, model)",
            [f"{k}: {tuple(a)} vs {tuple(b)}" for k, a, b in self.mismatched],
        )
        lines += block("excluded on request", self.excluded, limit=5)
        lines += block("ignored (num_batches_tracked absent from old checkpoints)", self.ignored, limit=3)
        if self.preprocess == "published":
            lines.append("  trained on the published input conventions: use preprocess='published' "
                         "(README: Using published weights)")
        return "\n".join(lines)


# -- reading --------------------------------------------------------------------------------------------
def _read(source: Source) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        return source
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"{os.fspath(source)}: holds objects other than tensors and plain values, which "
            "weights_only=True refuses to unpickle. If you trust the file, load it yourself with "
            "torch.load(path, weights_only=False) and pass the resulting dict instead of the path. "
            f"({e})"
        ) from e


def state_dict_of(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """The state dict inside a checkpoint dict (``state_dict`` or ``model`` entry) or the dict itself,
    without DataParallel's ``module.`` and torch.compile's ``_orig_mod.`` prefixes."""
    state = checkpoint
    if not any(isinstance(v, Tensor) for v in checkpoint.values()):
        for key in ("state_dict", "model_state", "model"):
            if isinstance(checkpoint.get(key), Mapping):
                state = checkpoint[key]
                break
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "_orig_mod."):
            k = k.removeprefix(prefix)
        out[k] = v
    return out


def unwrap_model(model: nn.Module) -> nn.Module:
    """The model inside DataParallel / DistributedDataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


# -- published layouts ----------------------------------------------------------------------------------
_PUBLISHED_STREAMS = {"I_model.": "iframe", "MV_model.": "mv", "R_model.": "residual"}
_PUBLISHED_TEAM = {
    "fc_squeeze.": "channel.squeeze.",
    "fc_i.": "channel.expand.iframe.",
    "fc_mv.": "channel.expand.mv.",
    "fc_r.": "channel.expand.residual.",
    "conv_s_i.": "spatial.conv.iframe.",
    "conv_s_mv.": "spatial.conv.mv.",
    "conv_s_r.": "spatial.conv.residual.",
}
_TSM_CONV = re.compile(r"\.conv1\.net\.")


def _convert_stream_key(key: str, modality: str, classifiers: tuple[str, ...]) -> str | None:
    for classifier in classifiers:
        if key.startswith(classifier):
            return f"heads.{modality}.fc." + key.removeprefix(classifier)
    if key.startswith("base_model."):
        return f"streams.{modality}.backbone." + _TSM_CONV.sub(".conv1.conv.", key.removeprefix("base_model."))
    if key.startswith("data_bn."):
        return f"streams.{modality}.input_bn." + key.removeprefix("data_bn.")
    return None


def convert_published(
    state_dict: Mapping[str, Tensor], *, layout: Literal["teamnet", "stream"] = "teamnet", modality: str = "iframe"
) -> dict[str, Tensor]:
    """Rename a published state dict to our keys.

    Args:
        state_dict: published keys (``module.`` already stripped or not).
        layout: ``"teamnet"`` (the TEAM-Net repository's ``TEAM_Net``) or ``"stream"`` (one stream of
            CoViAR or TSN/TSM: ``base_model.*``, ``data_bn.*``, ``base_model.fc.*`` or ``new_fc.*``).
        modality: for ``layout="stream"``, the stream it goes to.

    Keys that match no rule keep their published name, so that loading reports them as unexpected.
    """
    if layout not in ("teamnet", "stream"):
        raise ValueError(f"layout must be 'teamnet' or 'stream', received {layout!r}")
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, received {modality!r}")
    out: dict[str, Tensor] = {}
    for key, value in state_dict_of(state_dict).items():
        new = None
        if layout == "stream":
            # CoViAR keeps ResNet's fc as its classifier; TSN/TSM make it a Dropout and add new_fc.
            new = _convert_stream_key(key, modality, ("new_fc.", "base_model.fc."))
        else:
            for prefix, m in _PUBLISHED_STREAMS.items():
                if key.startswith(prefix):
                    new = _convert_stream_key(key.removeprefix(prefix), m, ("new_fc.",))
            match = re.match(r"team(\d+)\.(.*)$", key)
            if match and int(match[1]) < len(DEFAULT_TEAM_AT):
                # The published TEAM-Net has team0..team3 after stem, layer1, layer2, layer3.
                rest = match[2]
                for old, ours in _PUBLISHED_TEAM.items():
                    if rest.startswith(old):
                        new = f"team.{DEFAULT_TEAM_AT[int(match[1])]}.{ours}{rest.removeprefix(old)}"
        out[new if new is not None else key] = value
    return out


# -- loading with a report ------------------------------------------------------------------------------
def load_state_dict_checked(
    model: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    strict: bool = True,
    exclude: Sequence[str] = (),
    what: str = "checkpoint",
) -> LoadReport:
    """Load ``state_dict`` (our keys) into ``model`` and say what fitted.

    Args:
        strict: raise :class:`CheckpointMismatchError` (loading nothing) unless every key fits; with
            ``False``, load the keys that fit and return the report, to be read.
        exclude: key prefixes to leave out on both sides, e.g. ``("heads.",)`` to fine-tune a Kinetics
            model on UCF-101 with fresh classifiers.
    """
    model = unwrap_model(model)
    own = model.state_dict()
    report = LoadReport()
    excluded = tuple(exclude)
    to_load = {}
    for k, v in state_dict.items():
        if excluded and k.startswith(excluded):
            report.excluded.append(k)
        elif k not in own:
            report.unexpected.append(k)
        elif tuple(v.shape) != tuple(own[k].shape):
            report.mismatched.append((k, tuple(v.shape), tuple(own[k].shape)))
        else:
            to_load[k] = v
            report.loaded.append(k)
    for k in own:
        if k in state_dict or (excluded and k.startswith(excluded)):
            continue
        if k.endswith("num_batches_tracked"):
            report.ignored.append(k)
        else:
            report.missing.append(k)
    if strict and not report.ok:
        raise CheckpointMismatchError(report, what)
    model.load_state_dict(to_load, strict=False)
    return report


def load_published(
    model: SegmentNet, source: Source, *, strict: bool = True, exclude: Sequence[str] = ()
) -> LoadReport:
    """Load a published TEAM-Net checkpoint into a :class:`TEAMNet`, or a TSN/TSM one into a
    :class:`TSN`. ``source``: a path or an already loaded checkpoint / state dict.

    For CoViAR, whose streams were trained and saved apart, use :func:`load_published_coviar`.
    """
    inner = unwrap_model(model)
    checkpoint = _read(source)
    if isinstance(inner, TEAMNet):
        converted = convert_published(checkpoint, layout="teamnet")
    elif isinstance(inner, TSN):
        converted = convert_published(checkpoint, layout="stream", modality="iframe")
    elif isinstance(inner, CoViAR):
        raise TypeError("CoViAR's streams are published as three files: use load_published_coviar()")
    else:
        raise TypeError(f"model must be a TEAMNet or a TSN, received {type(inner).__name__}")
    report = load_state_dict_checked(model, converted, strict=strict, exclude=exclude, what="published checkpoint")
    report.preprocess = "published"
    return report


def load_published_coviar(
    model: CoViAR,
    *,
    iframe: Source,
    mv: Source,
    residual: Source,
    strict: bool = True,
    exclude: Sequence[str] = (),
) -> LoadReport:
    """Load the three published CoViAR stream checkpoints (``pytorch-coviar`` ``train.py`` output)."""
    inner = unwrap_model(model)
    if not isinstance(inner, CoViAR):
        raise TypeError(f"model must be a CoViAR, received {type(inner).__name__}")
    merged: dict[str, Tensor] = {}
    for modality, source in (("iframe", iframe), ("mv", mv), ("residual", residual)):
        merged.update(convert_published(_read(source), layout="stream", modality=modality))
    report = load_state_dict_checked(model, merged, strict=strict, exclude=exclude,
                                     what="published CoViAR checkpoints")
    report.preprocess = "published"  # CoViAR's loader is where the published conventions come from
    return report


# -- our layout -----------------------------------------------------------------------------------------
def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    epoch: int | None = None,
    metrics: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    optimizer: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    preprocess: str | None = None,
) -> Path:
    """Write ``model`` in our layout (module docstring), atomically: a crash mid-write leaves the old file.

    ``config``, ``metrics`` and ``extra`` must hold plain values (numbers, strings, lists, dicts,
    tensors) so the file stays loadable with ``weights_only=True``; pass ``dataclasses.asdict(cfg)``.
    ``preprocess``: the input conventions the weights were trained with; default ``config["data"]
    ["preprocess"]`` when that is ``"ours"`` or ``"published"``, else ``"ours"``.
    """
    if preprocess is None:
        data = (config or {}).get("data")
        recorded = data.get("preprocess") if isinstance(data, Mapping) else None
        preprocess = recorded if recorded in PREPROCESS else "ours"
    check_preprocess(preprocess)
    model = unwrap_model(model)
    path = Path(path)
    checkpoint = {
        "format": FORMAT,
        "version": VERSION,
        "model": getattr(model, "build_spec", None),
        "state_dict": model.state_dict(),
        "epoch": epoch,
        "metrics": dict(metrics or {}),
        "config": dict(config or {}),
        "optimizer": optimizer,
        "extra": dict(extra or {}),
        "torch_version": str(torch.__version__),  # TorchVersion would not load with weights_only
        "preprocess": preprocess,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(
    path: str | os.PathLike,
    model: nn.Module | None = None,
    *,
    strict: bool = True,
    exclude: Sequence[str] = (),
    map_location: str | torch.device = "cpu",
) -> tuple[nn.Module, dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`; returns ``(model, checkpoint dict)``.

    With ``model=None`` the model is rebuilt from the recorded builder call (random init, nothing is
    downloaded) before the weights are loaded.
    """
    checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(checkpoint, Mapping) or checkpoint.get("format") != FORMAT:
        state = state_dict_of(checkpoint) if isinstance(checkpoint, Mapping) else {}
        hint = (
            ": it looks like a published TEAM-Net/CoViAR/TSN checkpoint, use load_published()"
            if any(k.startswith(("I_model.", "base_model.", "team0.")) for k in state)
            else ""
        )
        raise ValueError(f"{os.fspath(path)}: not a {FORMAT!r} checkpoint{hint}")
    if checkpoint.get("version", 0) > VERSION:
        raise ValueError(
            f"{os.fspath(path)}: checkpoint version {checkpoint['version']} is newer than this code "
            f"reads ({VERSION}): update teamnet"
        )
    if model is None:
        spec = checkpoint.get("model")
        if not spec:
            raise ValueError(f"{os.fspath(path)}: records no builder call: pass the model to load into")
        model = build_model(spec["name"], **spec["kwargs"])
    load_state_dict_checked(model, state_dict_of(checkpoint), strict=strict, exclude=exclude, what=os.fspath(path))
    checkpoint = dict(checkpoint)
    checkpoint["preprocess"] = preprocess_of(checkpoint)
    return model, checkpoint


# -- which input conventions the weights need --------------------------------------------------------------
_PUBLISHED_PREFIXES = ("I_model.", "MV_model.", "R_model.", "team0.", "base_model.", "data_bn.", "new_fc.")


def is_published(checkpoint: Mapping[str, Any]) -> bool:
    """Whether a checkpoint dict (or state dict) is in a published layout (TEAM-Net, CoViAR, TSN/TSM)."""
    if checkpoint.get("format") == FORMAT:
        return False
    return any(k.startswith(_PUBLISHED_PREFIXES) for k in state_dict_of(checkpoint))


def _peek(source: Source) -> Mapping[str, Any]:
    """A checkpoint for reading its metadata: memory-mapped where the file format allows (cheap for a
    200 MB file), else read whole."""
    if isinstance(source, Mapping):
        return source
    try:
        return torch.load(source, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, pickle.UnpicklingError):  # legacy (pre-1.6) format: no mmap
        return _read(source)


def preprocess_of(source: Source) -> str | None:
    """The input conventions a checkpoint's weights were trained with: ``"published"`` for a published
    layout, what ours recorded (``"ours"`` for files from before it was recorded), None for a bare state
    dict of our keys (nothing says)."""
    checkpoint = _peek(source)
    if checkpoint.get("format") == FORMAT:
        recorded = checkpoint.get("preprocess")
        if recorded is None:  # older files: the run's config may say, else it was ours
            data = (checkpoint.get("config") or {}).get("data") or {}
            recorded = data.get("preprocess") if isinstance(data, Mapping) else None
        return recorded if recorded in PREPROCESS else "ours"
    return "published" if is_published(checkpoint) else None


def choose_preprocess(
    setting: str, weights: str | None, source: str | os.PathLike = "the weights"
) -> tuple[str, str | None]:
    """The input conventions to use, and the one log line to print about it (None: nothing to say).

    ``setting``: ``"auto"`` (take the weights'; ``"ours"`` when they do not say) or an explicit
    ``"ours"``/``"published"``, which is kept. ``weights``: what the weights were trained with
    (:func:`preprocess_of`, ``LoadReport.preprocess``); ``source`` names them in the message.
    """
    if setting != "auto":
        check_preprocess(setting)
    if weights is not None:
        check_preprocess(weights)
    name = os.fspath(source)
    if setting == "auto":
        chosen = weights or "ours"
        if chosen == "published":
            return chosen, (f"preprocess: 'published', the input conventions {name} was trained with (BGR residual, "
                            "MVs quantised before resizing and not rescaled, crop and flip per modality); "
                            "set preprocess explicitly to override")
        return chosen, None
    if weights is not None and weights != setting:
        return setting, f"preprocess: {setting!r} as set, although {name} was trained with {weights!r} inputs"
    return setting, None


def init_from_checkpoint(
    model: nn.Module, source: Source, *, exclude: Sequence[str] = (), strict: bool = False
) -> LoadReport:
    """Initialise ``model`` from our checkpoint, a published TEAM-Net/TSN one, or a bare state dict of
    our keys (e.g. Kinetics weights to fine-tune on UCF-101, ``exclude=("heads.",)``); the report says
    what fitted and, in ``preprocess``, which input conventions the weights need."""
    checkpoint = _read(source)
    what = "checkpoint" if isinstance(source, Mapping) else os.fspath(source)
    if is_published(checkpoint):
        return load_published(model, checkpoint, strict=strict, exclude=exclude)
    report = load_state_dict_checked(model, state_dict_of(checkpoint), strict=strict, exclude=exclude, what=what)
    report.preprocess = preprocess_of(checkpoint)
    return report


_RESNET_DEPTHS = {
    ((2, 2, 2, 2), False): 18,
    ((3, 4, 6, 3), False): 34,
    ((3, 4, 6, 3), True): 50,
    ((3, 4, 23, 3), True): 101,
    ((3, 8, 36, 3), True): 152,
}


def _published_depth(state: Mapping[str, Tensor], prefix: str) -> int:
    """The ResNet depth of one published stream, from its block keys."""
    blocks = []
    for layer in range(1, 5):
        pattern = re.compile(rf"{re.escape(prefix)}base_model\.layer{layer}\.(\d+)\.")
        found = {int(m[1]) for m in map(pattern.match, state) if m}
        blocks.append(max(found) + 1 if found else 0)
    bottleneck = any(k.startswith(f"{prefix}base_model.layer1.0.conv3.") for k in state)
    depth = _RESNET_DEPTHS.get((tuple(blocks), bottleneck))
    if depth is None:
        raise ValueError(f"the published {prefix.rstrip('.')} stream is no torchvision ResNet (blocks {blocks})")
    return depth


def load_model(
    path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
) -> tuple[SegmentNet, dict[str, Any]]:
    """The model in a checkpoint file, ours (:func:`load_checkpoint`) or a published TEAM-Net one (the
    architecture read off its keys: stream depths, TSM, classes); returns ``(model, checkpoint dict)``,
    ``checkpoint["preprocess"]`` saying which input conventions the weights need."""
    raw = torch.load(path, map_location=map_location, weights_only=True)
    if not (isinstance(raw, Mapping) and is_published(raw)):
        return load_checkpoint(path, map_location=map_location)
    state = state_dict_of(raw)
    if "I_model.new_fc.weight" not in state:
        raise ValueError(f"{os.fspath(path)}: a published checkpoint, but not TEAM-Net's: build the model "
                         "yourself and call load_published() or load_published_coviar()")
    tsm = any(".conv1.net." in k for k in state)
    model = build_model(
        "teamnet",
        num_classes=int(state["I_model.new_fc.weight"].shape[0]),
        iframe_depth=_published_depth(state, "I_model."),
        mv_depth=_published_depth(state, "MV_model."),
        residual_depth=_published_depth(state, "R_model."),
        temporal_shift=tsm,
        num_segments=8 if tsm else None,  # what the TSM variant was trained with; set_num_segments changes it
    )
    report = load_published(model, raw)
    checkpoint = {k: v for k, v in raw.items() if k != "state_dict"}
    checkpoint.update(format="published", preprocess=report.preprocess, config={}, extra={})
    return model, checkpoint
