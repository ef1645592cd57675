"""HRNet-W18 heatmap model and the training/evaluation core.

The model names are imported lazily: ``hrnet.model`` pulls in timm (seconds), which data loader
workers and the synthetic renderer, importing only ``hrnet.heatmaps``, do not need.
"""
from typing import Any

__all__ = ["SUPPORTED_MODELS", "HRNetHeatmap", "LoadReport", "build_model", "load_pretrained",
           "to_official_state_dict"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'hrnet' has no attribute {name!r}")
