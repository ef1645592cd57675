"""HRNet-W18 heatmap model and the training/evaluation core (above ``data/``, ``optim/``, ``configs/``).

The model names are imported on first use: ``hrnet.model`` pulls in timm (seconds), which tools
that only read run folders or checkpoints (``compare.py``, ``study.py`` via ``hrnet.run_record``)
do not need.
"""
from typing import Any

__all__ = ["SUPPORTED_MODELS", "HRNetHeatmap", "LoadReport", "build_model", "load_pretrained",
           "to_official_state_dict"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'hrnet' has no attribute {name!r}")
