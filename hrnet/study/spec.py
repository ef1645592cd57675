"""The study file: its keys, validation (:func:`load_study`) and the plan (:func:`plan_runs`).

A study file (yaml, ``experiments/studies/*.yaml``)::

    name: optimizers_cpu                 # default: the file's stem; names the output folder
    description: >                       # the protocol in words (copied into the report)
      ...
    reference: adam                      # the arm every other arm is compared with, by seed
    seeds: [0, 1, 2]                     # or N (= 0..N-1); an arm may set its own
    overrides:                           # shared KEY: VALUE config overrides (the scale)
      MODEL.NAME: hrnet_w18_small
    nme_levels: [0.3, 0.2]               # "epochs to reach valid NME <= level" columns
    real_hands: ../../../shared/data/real-hands   # folder of COCO test sets, or false; default: that folder
    arms:
      - name: adam                       # run folders <name>_seed<s>
        config: ../hand_adam.yaml        # experiment yaml, relative to the study file
        overrides: {TRAIN.LR: 0.0003}    # optional, applied after the shared ones
        seeds: [0, 1]                    # optional

Paths in the file are relative to the study file. Each run is an ordinary ``tools/train.py`` run
with ``OUTPUT_DIR <out> EXPERIMENT_NAME <arm>_seed<s> SEED <s>`` after the shared, the arm's and
the command line's overrides (in that order), so runs of different arms with the same seed share
initial weights, data order and augmentation: the statistics pair them by seed.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple

from configs import ConfigError, load_config

__all__ = ["StudyError", "Arm", "Study", "PlannedRun", "load_study", "plan_runs", "SCALE_KEYS", "DEFAULT_REAL_HANDS"]

#: ``../shared/data/real-hands`` beside the checkout (the project's real hand samples).
DEFAULT_REAL_HANDS = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                                   "shared", "data", "real-hands"))
#: The keys a study scales; the report compares them with the user's setting (configs/defaults.py).
SCALE_KEYS = ("MODEL.NAME", "MODEL.IMAGE_SIZE", "MODEL.HEATMAP_SIZE", "MODEL.PRETRAINED", "DATASET.FORMAT",
              "DATASET.SYNTHETIC.NUM_TRAIN", "DATASET.SYNTHETIC.NUM_TEST", "DATASET.MAX_TRAIN_SAMPLES",
              "DATASET.MAX_TEST_SAMPLES", "TRAIN.END_EPOCH", "TRAIN.LR_STEP", "TRAIN.LR_FACTOR",
              "TRAIN.BATCH_SIZE_PER_GPU", "TRAIN.WARMUP_ITERS", "AMP.MODE", "DEVICE")
_STUDY_KEYS = ("name", "description", "reference", "seeds", "overrides", "nme_levels", "real_hands", "arms")
_ARM_KEYS = ("name", "config", "overrides", "seeds")
_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_SEED_SUFFIX = re.compile(r"_seed\d+$")


class StudyError(ConfigError):
    """A study file that cannot be run (names the file and the key or arm)."""


# ---------------------------------------------------------------------------- the study file
@dataclass(frozen=True)
class Arm:
    """One arm: an experiment yaml (absolute path) with its overrides, trained once per seed."""
    name: str
    config: str
    overrides: Tuple[str, ...]
    seeds: Tuple[int, ...]


@dataclass(frozen=True)
class Study:
    """A validated study file; ``overrides`` are the shared ones followed by the command line's."""
    path: str
    name: str
    description: str
    reference: str
    arms: Tuple[Arm, ...]
    overrides: Tuple[str, ...]
    cli_overrides: Tuple[str, ...]
    nme_levels: Tuple[float, ...]
    real_hands: Optional[str]

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)


def _override_list(value: Any, where: str) -> Tuple[str, ...]:
    """A ``{KEY: value}`` mapping -> ``("KEY", "value", ...)`` as ``configs.load_config`` takes them."""
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise StudyError(f"{where}: overrides must be a mapping KEY: VALUE, got {type(value).__name__}")
    out: List[str] = []
    for key, v in value.items():
        if isinstance(v, (Mapping, set)) or v is None:
            raise StudyError(f"{where}: override {key} must be a number, string, boolean or list, got {v!r}")
        # yacs parses each value with literal_eval: lists and numbers as Python literals, strings as they are.
        out += [str(key), repr(list(v)) if isinstance(v, (list, tuple)) else str(v)]
    return tuple(out)


def _seeds(value: Any, where: str) -> Tuple[int, ...]:
    if isinstance(value, bool) or value is None:
        raise StudyError(f"{where}: seeds must be a list of integers or a count, got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise StudyError(f"{where}: seeds must be >= 1, got {value}")
        return tuple(range(value))
    if not isinstance(value, list) or not value or not all(isinstance(s, int) and not isinstance(s, bool)
                                                           and s >= 0 for s in value):
        raise StudyError(f"{where}: seeds must be a non-empty list of integers >= 0 or a count, got {value!r}")
    if len(set(value)) != len(value):
        raise StudyError(f"{where}: seeds repeat: {value}")
    return tuple(value)


def load_study(path: str, cli_overrides: Sequence[str] = ()) -> Study:
    """Read and validate a study file; every arm's config is loaded once with seed 0 to catch bad keys.

    ``cli_overrides`` (``KEY VALUE ...``) apply to every arm, after the file's overrides.
    Raises :class:`StudyError` naming the file and the key or arm.
    """
    import yaml

    if not os.path.isfile(path):
        raise StudyError(f"study file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        raise StudyError(f"{path}: not valid yaml ({' '.join(str(exc).split())})") from exc
    if not isinstance(doc, dict):
        raise StudyError(f"{path}: a study file is a mapping with the keys {', '.join(_STUDY_KEYS)}")
    unknown = sorted(set(doc) - set(_STUDY_KEYS))
    if unknown:
        raise StudyError(f"{path}: unknown key(s) {', '.join(map(str, unknown))} (known: {', '.join(_STUDY_KEYS)})")
    here = os.path.dirname(os.path.abspath(path))
    cli = tuple(str(v) for v in cli_overrides)
    if len(cli) % 2:
        raise StudyError(f"command-line overrides must be KEY VALUE pairs, got {list(cli)}")
    shared = _override_list(doc.get("overrides"), f"{path}: overrides")
    default_seeds = _seeds(doc.get("seeds", 1), f"{path}: seeds")
    arms_doc = doc.get("arms")
    if not isinstance(arms_doc, list) or not arms_doc:
        raise StudyError(f"{path}: arms must be a non-empty list")
    arms: List[Arm] = []
    for i, a in enumerate(arms_doc):
        where = f"{path}: arms[{i}]"
        if not isinstance(a, dict):
            raise StudyError(f"{where} must be a mapping with the keys {', '.join(_ARM_KEYS)}")
        bad = sorted(set(a) - set(_ARM_KEYS))
        if bad:
            raise StudyError(f"{where}: unknown key(s) {', '.join(map(str, bad))} (known: {', '.join(_ARM_KEYS)})")
        name = a.get("name")
        if not isinstance(name, str) or not _ARM_NAME.match(name) or _SEED_SUFFIX.search(name):
            raise StudyError(f"{where}: name must be letters, digits, _ . + - (not ending in _seed<N>), got {name!r}")
        where = f"{path}: arm {name}"
        if any(x.name == name for x in arms):
            raise StudyError(f"{where}: the name is used twice")
        if not isinstance(a.get("config"), str):
            raise StudyError(f"{where}: config (an experiment yaml) is required")
        config = os.path.normpath(os.path.join(here, a["config"]))
        if not os.path.isfile(config):
            raise StudyError(f"{where}: config file not found: {config}")
        arm = Arm(name, config, _override_list(a.get("overrides"), where),
                  _seeds(a["seeds"], f"{where}: seeds") if "seeds" in a else default_seeds)
        try:
            load_config(arm.config, list(shared + arm.overrides + cli))
        except (ConfigError, FileNotFoundError) as exc:
            raise StudyError(f"{where}: {exc}") from exc
        arms.append(arm)
    reference = doc.get("reference", arms[0].name)
    if reference not in [a.name for a in arms]:
        raise StudyError(f"{path}: reference {reference!r} is not an arm ({', '.join(a.name for a in arms)})")
    levels = doc.get("nme_levels", [])
    if not isinstance(levels, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                                               for v in levels):
        raise StudyError(f"{path}: nme_levels must be a list of positive numbers, got {levels!r}")
    real = doc.get("real_hands", DEFAULT_REAL_HANDS)
    if real is not False and real is not None and not isinstance(real, str):
        raise StudyError(f"{path}: real_hands must be a folder or false, got {real!r}")
    real = os.path.normpath(os.path.join(here, real)) if isinstance(real, str) else None
    name = doc.get("name", os.path.splitext(os.path.basename(path))[0])
    if not isinstance(name, str) or not _ARM_NAME.match(name):
        raise StudyError(f"{path}: name must be letters, digits, _ . + -, got {name!r}")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise StudyError(f"{path}: description must be text")
    return Study(os.path.abspath(path), name, description.strip(), reference, tuple(arms), shared, cli,
                 tuple(float(v) for v in levels), real)


@dataclass(frozen=True)
class PlannedRun:
    """One training of the study: ``arm`` with ``seed`` into ``run_dir``; ``opts`` for ``tools/train.py``."""
    arm: str
    seed: int
    config: str
    run_dir: str
    opts: Tuple[str, ...]
    end_epoch: int

    @property
    def name(self) -> str:
        return os.path.basename(self.run_dir)


def plan_runs(study: Study, out_dir: str) -> List[PlannedRun]:
    """Every arm x seed, seed-major (all arms of seed 0 first, so pairs complete early)."""
    out_dir = os.path.abspath(out_dir)
    runs = []
    for seed in sorted({s for a in study.arms for s in a.seeds}):
        for arm in study.arms:
            if seed not in arm.seeds:
                continue
            name = f"{arm.name}_seed{seed}"
            opts = study.overrides + arm.overrides + study.cli_overrides + (
                "SEED", str(seed), "OUTPUT_DIR", out_dir, "EXPERIMENT_NAME", name)
            cfg = load_config(arm.config, list(opts))
            runs.append(PlannedRun(arm.name, seed, arm.config, os.path.join(out_dir, name), opts,
                                   int(cfg.TRAIN.END_EPOCH)))
    return runs
