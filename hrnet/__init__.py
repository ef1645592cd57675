"""HRNet-W18 hand keypoints: the network, its training engine, evaluation and the optimizer study.

One sub-package per concern; imports run downward only (a test checks it)::

    hrnet.study       study file and plan, runner, real photos, analysis and statistics, report
    hrnet.benchmark   performance measurements behind tools/benchmark.py (one module per measurement)
      -> hrnet.engine       trainer loop, run record (run folder files), distributed, signals
        -> hrnet.evaluation   metrics, inference loop, model files, visualisation, export
          -> hrnet.models       the network (timm backbone + HRNetV2 head), official weights, loss
          -> hrnet.runtime      device and autocast policy, checkpoint schema and atomic files, allocator

All of them may import ``data``, ``optim`` and ``configs`` (the floor below ``hrnet``); nothing
here imports ``tools``.

The model names are imported on first use: ``hrnet.models.hrnet`` pulls in timm (seconds), which
tools that only read run folders or checkpoints do not need.
"""
from typing import Any

__all__ = ["SUPPORTED_MODELS", "HRNetHeatmap", "LoadReport", "build_model", "load_pretrained",
           "to_official_state_dict"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from hrnet.models import hrnet as model

        return getattr(model, name)
    raise AttributeError(f"module 'hrnet' has no attribute {name!r}")
