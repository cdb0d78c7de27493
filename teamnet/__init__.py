"""TEAM-Net (Wang, She & Smolic, BMVC 2021) and its baselines for partially decoded video.

Models take ``(N, T, C, H, W)`` tensors per modality (``iframe``, ``mv``, ``residual``) and return
``(N, K)`` logits; build them by name with :func:`build_model` or with the builders below.
"""

# Imported on first use (PEP 562): `import teamnet` (and so `python -m teamnet.train --help`) must not
# import torch, which takes seconds; `from teamnet import build_model` works as before.
_LAZY = {
    **dict.fromkeys(("RESNET_DEPTHS", "STAGES", "ResNetStream", "TemporalShift", "resnet_stream",
                     "resolve_weights"), "backbones"),
    **dict.fromkeys(("CheckpointMismatchError", "LoadReport", "convert_published", "load_checkpoint",
                     "load_published", "load_published_coviar", "load_state_dict_checked", "save_checkpoint"),
                    "checkpoint"),
    **dict.fromkeys(("DEFAULT_TEAM_AT", "MODELS", "TSN", "ClassifierHead", "CoViAR", "SegmentNet", "TEAMNet",
                     "VideoOutput", "build_model", "coviar", "coviar_r50", "list_models", "teamnet", "teamnet_r50",
                     "teamnet_tsm_r50", "tsn", "tsn_r50", "tsn_tsm_r50"), "models"),
    **dict.fromkeys(("ARRANGEMENTS", "MODALITIES", "TEAM", "ChannelFusion", "SpatialFusion"), "team"),
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'teamnet' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ARRANGEMENTS",
    "DEFAULT_TEAM_AT",
    "MODALITIES",
    "MODELS",
    "RESNET_DEPTHS",
    "STAGES",
    "TEAM",
    "TSN",
    "ChannelFusion",
    "CheckpointMismatchError",
    "ClassifierHead",
    "CoViAR",
    "LoadReport",
    "ResNetStream",
    "SegmentNet",
    "SpatialFusion",
    "TEAMNet",
    "TemporalShift",
    "VideoOutput",
    "build_model",
    "convert_published",
    "coviar",
    "coviar_r50",
    "list_models",
    "load_checkpoint",
    "load_published",
    "load_published_coviar",
    "load_state_dict_checked",
    "resnet_stream",
    "resolve_weights",
    "save_checkpoint",
    "teamnet",
    "teamnet_r50",
    "teamnet_tsm_r50",
    "tsn",
    "tsn_r50",
    "tsn_tsm_r50",
]
