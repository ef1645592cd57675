"""Configuration: yacs defaults, a yaml file, then ``KEY VALUE`` command-line overrides."""
from __future__ import annotations

import os
from typing import Optional, Sequence

from yacs.config import CfgNode

from .defaults import get_defaults

__all__ = ["CfgNode", "ConfigError", "get_defaults", "load_config", "experiment_name"]


class ConfigError(ValueError):
    """A config file or override that does not fit the defaults (names the key and the file)."""


def _explain(exc: Exception) -> str:
    # yacs words its errors as "Non-existent config key: X" / "Type mismatch (...) for config key: X".
    return str(exc.args[0]) if exc.args else repr(exc)


def load_config(path: Optional[str] = None, opts: Sequence[str] = (), freeze: bool = True) -> CfgNode:
    """Defaults, then the yaml file ``path``, then ``opts`` (``["TRAIN.LR", "0.001", ...]``).

    Returns a frozen CfgNode. ``EXPERIMENT_NAME`` defaults to the yaml file's stem.
    Raises ``ConfigError`` naming the key and the file for an unknown key or a wrong type,
    and ``FileNotFoundError`` for a missing file.
    """
    cfg = get_defaults()
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file not found: {path}")
        try:
            cfg.merge_from_file(path)
        except (KeyError, ValueError, AssertionError, TypeError) as exc:
            raise ConfigError(f"{path}: {_explain(exc)}") from exc
    opts = list(opts)
    if len(opts) % 2:
        raise ConfigError(f"command-line overrides must be KEY VALUE pairs, got an odd list: {opts}")
    try:
        cfg.merge_from_list(opts)
    except (KeyError, ValueError, AssertionError, TypeError) as exc:
        raise ConfigError(f"command-line override: {_explain(exc)}") from exc
    if not cfg.EXPERIMENT_NAME:
        cfg.EXPERIMENT_NAME = os.path.splitext(os.path.basename(path))[0] if path else "default"
    _validate(cfg, path or "<defaults>")
    if freeze:
        cfg.freeze()
    return cfg


def _validate(cfg: CfgNode, source: str) -> None:
    """Value checks yacs cannot express (types are already checked against the defaults)."""
    def need(ok: bool, key: str, why: str) -> None:
        if not ok:
            raise ConfigError(f"{source}: {key} {why}")

    need(cfg.DEVICE in ("auto", "cpu", "cuda"), "DEVICE", f"must be auto|cpu|cuda, got {cfg.DEVICE!r}")
    need(cfg.AMP.MODE in ("off", "on", "auto"), "AMP.MODE", f"must be off|on|auto, got {cfg.AMP.MODE!r}")
    need(cfg.AMP.DTYPE in ("bf16", "fp16"), "AMP.DTYPE", f"must be bf16|fp16, got {cfg.AMP.DTYPE!r}")
    need(len(cfg.MODEL.IMAGE_SIZE) == 2 and len(cfg.MODEL.HEATMAP_SIZE) == 2,
         "MODEL.IMAGE_SIZE/HEATMAP_SIZE", "must be [width, height]")
    need(cfg.MODEL.NUM_JOINTS > 0, "MODEL.NUM_JOINTS", "must be positive")
    need(cfg.MODEL.SIGMA > 0, "MODEL.SIGMA", "must be positive")
    need(cfg.DATASET.FORMAT in ("synthetic", "coco", "csv"), "DATASET.FORMAT",
         f"must be synthetic|coco|csv, got {cfg.DATASET.FORMAT!r}")
    need(cfg.DATASET.ON_BAD_SAMPLE in ("error", "skip"), "DATASET.ON_BAD_SAMPLE",
         f"must be error|skip, got {cfg.DATASET.ON_BAD_SAMPLE!r}")
    need(cfg.TRAIN.BATCH_SIZE_PER_GPU > 0, "TRAIN.BATCH_SIZE_PER_GPU", "must be positive")
    need(cfg.TEST.BATCH_SIZE_PER_GPU > 0, "TEST.BATCH_SIZE_PER_GPU", "must be positive")
    need(cfg.TRAIN.LR > 0, "TRAIN.LR", "must be positive")
    need(list(cfg.TRAIN.LR_STEP) == sorted(cfg.TRAIN.LR_STEP), "TRAIN.LR_STEP", "must be increasing")
    need(cfg.TRAIN.LOOKAHEAD.EVAL_WEIGHTS in ("slow", "fast"), "TRAIN.LOOKAHEAD.EVAL_WEIGHTS",
         f"must be slow|fast, got {cfg.TRAIN.LOOKAHEAD.EVAL_WEIGHTS!r}")
    need(cfg.TEST.DECODE in ("argmax", "dark"), "TEST.DECODE", f"must be argmax|dark, got {cfg.TEST.DECODE!r}")


def experiment_name(cfg: CfgNode) -> str:
    """The run folder name under OUTPUT_DIR."""
    return cfg.EXPERIMENT_NAME or "default"
