"""HRNet-W18 heatmap model and the training/evaluation core."""
from .model import SUPPORTED_MODELS, HRNetHeatmap, LoadReport, build_model, load_pretrained, to_official_state_dict

__all__ = ["SUPPORTED_MODELS", "HRNetHeatmap", "LoadReport", "build_model", "load_pretrained",
           "to_official_state_dict"]
