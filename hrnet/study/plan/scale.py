"""How far a study's scale is from the user's setting: the scaled config keys and training iterations.

The user's setting is ``configs/defaults.py`` (HRNet-W18, 256x256, 21,120 synthetic training
images, batch 32, 30 epochs: 660 x 30 = 19,800 iterations). A study that trains 360 iterations
measures an early stage of training; the report states both counts side by side.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from configs import config_value, get_defaults, load_config
from hrnet.study.plan.identity import setting
from hrnet.study.plan.spec import SCALE_KEYS, Arm, Study

__all__ = ["training_iterations", "user_iterations", "scale_rows", "iteration_summary", "arm_config",
           "arm_setting"]


def _train_images(cfg) -> Optional[int]:
    """Training images of the config: the synthetic count (or ``MAX_TRAIN_SAMPLES`` below it);
    for a coco / csv set only a ``MAX_TRAIN_SAMPLES`` limit says it without reading the file."""
    limit = int(cfg.DATASET.MAX_TRAIN_SAMPLES)
    if cfg.DATASET.FORMAT == "synthetic":
        n = int(cfg.DATASET.SYNTHETIC.NUM_TRAIN)
        return min(n, limit) if limit > 0 else n
    return limit if limit > 0 else None


def training_iterations(cfg, world_size: int = 1) -> Optional[int]:
    """Optimizer steps of a whole run: ``END_EPOCH x floor(floor(images / world) / batch per GPU)``
    (the trainer's loaders drop the last incomplete batch); None when the image count is unknown."""
    n = _train_images(cfg)
    if n is None:
        return None
    per_epoch = (n // max(int(world_size), 1)) // int(cfg.TRAIN.BATCH_SIZE_PER_GPU)
    return int(cfg.TRAIN.END_EPOCH) * per_epoch


def user_iterations() -> int:
    """The user's run (``configs/defaults.py``, one process): 19,800."""
    return int(training_iterations(get_defaults()))


def arm_config(study: Study, arm: Arm):
    """The resolved config of ``arm`` (shared, the arm's and the command line's overrides; seed aside)."""
    return load_config(arm.config, list(study.overrides + arm.overrides + study.cli_overrides))


def arm_setting(cfg) -> Dict[str, Any]:
    """What an arm trains with: its **whole** resolved config (``identity.setting``: every key, flat,
    but the seed and the keys that cannot change a trajectory), the run's hyperparameters under
    their short names (``metrics.json`` ``hparams``: ``optimizer``, ``lr``, ``k`` ...; the same
    values again, for readers) and the training ``iterations``. Two arms are "the same setting but
    X" only when these agree except the keys of X: a difference in any config key (Adam betas, SGD
    momentum, MODEL.SIGMA, DATASET.ROOT ...) separates them."""
    from hrnet.engine.run_record import hparams

    out: Dict[str, Any] = {k: v for k, v in hparams(cfg, 1).items() if k != "seed"}
    out.update(setting(cfg))
    out["iterations"] = training_iterations(cfg)
    return out


def scale_rows(study: Study) -> List[Dict[str, Any]]:
    """Per :data:`SCALE_KEYS` and the training iterations: the user's setting (the defaults) and this
    study's value(s) over its arms, and whether it differs."""
    user = get_defaults()
    values: Dict[str, List[Any]] = {k: [] for k in SCALE_KEYS + ("iterations",)}
    for arm in study.arms:
        cfg = arm_config(study, arm)
        for k in SCALE_KEYS:
            v = config_value(cfg, k)
            if v not in values[k]:
                values[k].append(v)
        its = training_iterations(cfg)
        if its not in values["iterations"]:
            values["iterations"].append(its)
    rows = []
    for k in SCALE_KEYS + ("iterations",):
        u = user_iterations() if k == "iterations" else config_value(user, k)
        rows.append({"key": k, "user": u, "study": values[k][0] if len(values[k]) == 1 else values[k],
                     "scaled": values[k] != [u]})
    return rows


def iteration_summary(records: Sequence[Mapping[str, Any]], arms: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """Training iterations of each run and arm beside the user's, and the ratio of the largest."""
    per_run = {r["name"]: r["iterations"] for r in records}
    known = [v for v in per_run.values() if v]
    user = user_iterations()
    return {"user": user, "per_run": per_run, "per_arm": {a: e["iterations"] for a, e in arms.items()},
            "fraction_of_user": (max(known) / user) if known else None,
            "formula": "END_EPOCH x floor(training images / (batch per GPU x processes)) (the last incomplete "
                       "batch is dropped)"}
