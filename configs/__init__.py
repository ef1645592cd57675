"""Configuration: yacs defaults, a yaml file, then ``KEY VALUE`` command-line overrides."""
from __future__ import annotations

import os
import warnings
from typing import Any, Collection, Dict, List, Mapping, Optional, Sequence, Tuple

import yaml
from yacs.config import CfgNode

from .defaults import get_defaults

__all__ = ["CfgNode", "ConfigError", "get_defaults", "load_config", "experiment_name", "config_value", "flat_config",
           "config_differences", "ABSENT"]


class ConfigError(ValueError):
    """A config file or override that does not fit the defaults (names the key and the file)."""


def _explain(exc: Exception) -> str:
    # yacs words its errors as "Non-existent config key: X" / "Type mismatch (...) for config key: X".
    return str(exc.args[0]) if exc.args else repr(exc)


def _ints_to_floats(node: CfgNode, defaults: CfgNode) -> None:
    """An integer where the default is a float (``TRAIN.LR: 1``, ``TEST.AUC_MAX_PX 0``) becomes that
    float: yacs would refuse it as a type mismatch, which no user means."""
    for key, value in node.items():
        ref = defaults.get(key) if isinstance(defaults, CfgNode) else None
        if isinstance(value, CfgNode):
            _ints_to_floats(value, ref)
        elif isinstance(ref, float) and isinstance(value, int) and not isinstance(value, bool):
            node[key] = float(value)


_MISSING = object()


def config_value(cfg: Any, key: str, default: Any = _MISSING) -> Any:
    """``cfg`` at a dotted ``key`` (``TRAIN.LOOKAHEAD.K``), lists for list values; ``default`` where
    the key is absent (without one: ``KeyError`` naming the key). The one dotted-key reader."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is _MISSING:
                raise KeyError(key)
            return default
        node = node[part]
    return list(node) if isinstance(node, (list, tuple)) else node


def flat_config(node: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """``{"A.B": value}`` of a nested config; tuples as lists (a yaml round trip makes lists)."""
    out: Dict[str, Any] = {}
    for k, v in node.items():
        if isinstance(v, Mapping):
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = list(v) if isinstance(v, tuple) else v
    return out


#: How a key missing on one side of :func:`config_differences` is shown.
ABSENT = "<absent>"


def config_differences(old: Mapping[str, Any], new: Mapping[str, Any], free_keys: Collection[str] = ()
                       ) -> List[Tuple[str, Any, Any]]:
    """``(key, old value, new value)``, sorted by key, for every key outside ``free_keys`` where two
    flat configs (:func:`flat_config`) differ. The one rule for "the same config" (a resume's and a
    study run's): a key absent from ``old`` equals a ``new`` value that is its default, because a key
    added to the defaults after ``old`` was written must default to the old behaviour."""
    defaults = flat_config(get_defaults())
    out = []
    for k in sorted(set(old) | set(new)):
        if k in free_keys:
            continue
        a, b = old.get(k, ABSENT), new.get(k, ABSENT)
        if a == ABSENT and k in defaults and b == defaults[k]:
            continue
        if a != b:
            out.append((k, a, b))
    return out


def _coerce_opts(opts: Sequence[str], defaults: CfgNode) -> list:
    """``KEY VALUE`` pairs with integer values of float keys written as floats (see :func:`_ints_to_floats`)."""
    from ast import literal_eval

    out = list(opts)
    for i in range(0, len(out) - 1, 2):
        ref = config_value(defaults, str(out[i]), None)
        if isinstance(ref, float):
            try:
                value = literal_eval(out[i + 1])
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, int) and not isinstance(value, bool):
                out[i + 1] = repr(float(value))
    return out


def _check_sections(node: dict, defaults: CfgNode, path: str, prefix: str = "") -> None:
    """A section of the defaults (``TRAIN``, ``TRAIN.LOOKAHEAD`` ...) must be a mapping in the file too;
    yacs would report the mismatch with a dump of the whole default section."""
    for key, value in node.items():
        ref = defaults.get(key) if isinstance(defaults, CfgNode) else None
        if isinstance(ref, CfgNode):
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {prefix}{key} is a section (KEY: value lines under it), got "
                                  f"{type(value).__name__} {value!r}")
            _check_sections(value, ref, path, f"{prefix}{key}.")


def _merge_file(cfg: CfgNode, path: str) -> None:
    """Merge the yaml file ``path`` into ``cfg``; every problem is a ``ConfigError`` naming the file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        with open(path, "rb") as f:  # decoded whole: an error's offset is then the file's, not a chunk's
            data = yaml.safe_load(f.read().decode("utf-8-sig"))
    except yaml.YAMLError as exc:  # the parser's message spans lines; keep the position
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"{path}: not valid yaml{where}: {problem}") from exc
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 text (line {line}, byte {exc.start}: "
                          f"{exc.object[exc.start:exc.start + 1]!r})") from exc
    if data is None:  # an empty file (or only comments): the defaults
        return
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file is a mapping of KEY: value lines, this one holds a "
                          f"{type(data).__name__} ({str(data)[:60]!r})")
    _check_sections(data, cfg, path)
    try:
        loaded = CfgNode(data)
        _ints_to_floats(loaded, cfg)
        cfg.merge_from_other_cfg(loaded)
    except (KeyError, ValueError, AssertionError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: {_explain(exc)}") from exc


def load_config(path: Optional[str] = None, opts: Sequence[str] = (), freeze: bool = True) -> CfgNode:
    """Defaults, then the yaml file ``path``, then ``opts`` (``["TRAIN.LR", "0.001", ...]``).

    Returns a frozen CfgNode. ``EXPERIMENT_NAME`` defaults to the yaml file's stem.
    Raises ``ConfigError`` naming the key and the file for an unknown key or a wrong type,
    and ``FileNotFoundError`` for a missing file.
    """
    cfg = get_defaults()
    if path:
        _merge_file(cfg, path)
    opts = _coerce_opts(opts, cfg)
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
    need(min(cfg.MODEL.IMAGE_SIZE) > 0 and min(cfg.MODEL.HEATMAP_SIZE) > 0, "MODEL.IMAGE_SIZE/HEATMAP_SIZE",
         "must be positive")  # their ratio (stride 4) is the model's rule: hrnet.build_model checks it
    need(cfg.MODEL.NUM_JOINTS > 0, "MODEL.NUM_JOINTS", "must be positive")
    need(cfg.MODEL.SIGMA > 0, "MODEL.SIGMA", "must be positive")
    need(cfg.DATASET.FORMAT in ("synthetic", "coco", "csv"), "DATASET.FORMAT",
         f"must be synthetic|coco|csv, got {cfg.DATASET.FORMAT!r}")
    need(cfg.DATASET.ON_BAD_SAMPLE in ("error", "skip"), "DATASET.ON_BAD_SAMPLE",
         f"must be error|skip, got {cfg.DATASET.ON_BAD_SAMPLE!r}")
    need(cfg.WORKERS >= 0, "WORKERS", f"must be >= 0, got {cfg.WORKERS}")
    need(cfg.DATASET.BBOX_PADDING > 0, "DATASET.BBOX_PADDING", f"must be positive, got {cfg.DATASET.BBOX_PADDING}")
    need(cfg.DATASET.MAX_TRAIN_SAMPLES >= 0, "DATASET.MAX_TRAIN_SAMPLES",
         f"must be >= 0 (0 = all), got {cfg.DATASET.MAX_TRAIN_SAMPLES}")
    need(cfg.DATASET.MAX_TEST_SAMPLES >= 0, "DATASET.MAX_TEST_SAMPLES",
         f"must be >= 0 (0 = all), got {cfg.DATASET.MAX_TEST_SAMPLES}")
    need(cfg.DATASET.SYNTHETIC.NUM_TRAIN >= 0 and cfg.DATASET.SYNTHETIC.NUM_TEST >= 0,
         "DATASET.SYNTHETIC.NUM_TRAIN/NUM_TEST", "must be >= 0")
    need(0 <= cfg.DATASET.SCALE_FACTOR < 1, "DATASET.SCALE_FACTOR",
         f"must be in [0, 1) (scales 1 -/+ f), got {cfg.DATASET.SCALE_FACTOR}")
    for key in ("FLIP_PROB", "ROT_PROB", "COLOR_PROB", "BLUR_PROB", "NOISE_PROB"):
        need(0 <= cfg.DATASET[key] <= 1, f"DATASET.{key}", f"is a probability in [0, 1], got {cfg.DATASET[key]}")
    need(cfg.TRAIN.END_EPOCH >= 1, "TRAIN.END_EPOCH", f"must be >= 1, got {cfg.TRAIN.END_EPOCH}")
    need(cfg.TRAIN.BEGIN_EPOCH >= 0, "TRAIN.BEGIN_EPOCH", f"must be >= 0, got {cfg.TRAIN.BEGIN_EPOCH}")
    need(cfg.TRAIN.BATCH_SIZE_PER_GPU > 0, "TRAIN.BATCH_SIZE_PER_GPU", "must be positive")
    need(cfg.TEST.BATCH_SIZE_PER_GPU > 0, "TEST.BATCH_SIZE_PER_GPU", "must be positive")
    need(cfg.TRAIN.LR > 0, "TRAIN.LR", "must be positive")
    need(list(cfg.TRAIN.LR_STEP) == sorted(cfg.TRAIN.LR_STEP), "TRAIN.LR_STEP", "must be increasing")
    need(all(step > 0 for step in cfg.TRAIN.LR_STEP), "TRAIN.LR_STEP", f"epochs must be positive, got {list(cfg.TRAIN.LR_STEP)}")
    late = [step for step in cfg.TRAIN.LR_STEP if step >= cfg.TRAIN.END_EPOCH]
    if late:  # legal (a shortened run of a longer schedule) but usually a forgotten edit
        warnings.warn(f"{source}: TRAIN.LR_STEP {late} at or beyond TRAIN.END_EPOCH {cfg.TRAIN.END_EPOCH}: "
                      f"those LR decays never happen", stacklevel=3)
    if cfg.TRAIN.BEGIN_EPOCH:
        warnings.warn(f"{source}: TRAIN.BEGIN_EPOCH {cfg.TRAIN.BEGIN_EPOCH} is ignored: a fresh run starts at "
                      f"epoch 0 and --resume at its checkpoint's epoch", stacklevel=3)
    need(cfg.TRAIN.WD >= 0, "TRAIN.WD", f"must be >= 0, got {cfg.TRAIN.WD}")
    need(cfg.TRAIN.CLIP_GRAD_NORM >= 0, "TRAIN.CLIP_GRAD_NORM", f"must be >= 0 (0 = off), got {cfg.TRAIN.CLIP_GRAD_NORM}")
    # TRAIN.OPTIMIZER, TRAIN.LOOKAHEAD.K/ALPHA/INNER/PULLBACK and MODEL.NAME are checked by their builders
    # (optim/, hrnet/models/hrnet.py), which the trainer runs before touching any file or image.
    la = cfg.TRAIN.LOOKAHEAD
    need(la.BN_RECALIBRATE_BATCHES >= 0, "TRAIN.LOOKAHEAD.BN_RECALIBRATE_BATCHES",
         f"must be >= 0 (0 = off), got {la.BN_RECALIBRATE_BATCHES}")
    need(cfg.TRAIN.LOOKAHEAD.EVAL_WEIGHTS in ("slow", "fast"), "TRAIN.LOOKAHEAD.EVAL_WEIGHTS",
         f"must be slow|fast, got {cfg.TRAIN.LOOKAHEAD.EVAL_WEIGHTS!r}")
    need(cfg.TEST.DECODE in ("argmax", "dark"), "TEST.DECODE", f"must be argmax|dark, got {cfg.TEST.DECODE!r}")
    for key in ("FAILURE_THRESHOLD", "PCK_THRESHOLD", "AUC_MAX_PX"):
        need(cfg.TEST[key] > 0, f"TEST.{key}", f"must be positive, got {cfg.TEST[key]}")


def experiment_name(cfg: CfgNode) -> str:
    """The run folder name under OUTPUT_DIR."""
    return cfg.EXPERIMENT_NAME or "default"
