"""The study file: its keys, validation (:func:`load_study`) and the plan (:func:`plan_runs`).

A study file (yaml, ``experiments/studies/*.yaml``)::

    name: optimizers_cpu                 # default: the file's stem
    out: ../../docs/study_cpu            # the study folder, relative to this file (default:
                                         # output/studies/<name> in the working directory)
    description: >                       # the protocol in words (copied into the report)
      ...
    reference: adam                      # the arm every other arm is compared with, by seed
    seeds: [0, 1, 2]                     # or N (= 0..N-1); an arm may set its own
    overrides:                           # shared KEY: VALUE config overrides (the scale)
      MODEL.NAME: hrnet_w18_small
    nme_levels: [0.3, 0.2]               # "epochs to reach valid NME <= level" columns
    real_hands: ../../../shared/data/real-hands   # folder of COCO test sets (relative to this file);
                                                  # absent or false: none (tools/study.py --real-hands DIR)
    threads: 1                           # each run's OMP_NUM_THREADS, whatever the executor and --jobs
                                         # (default 1 when every arm's DEVICE is cpu, else inherited)
    arms:
      - name: adam                       # run folders runs/<name>_seed<s>
        config: ../hand_adam.yaml        # experiment yaml, relative to the study file
        overrides: {TRAIN.LR: 0.0003}    # optional, applied after the shared ones
        seeds: [0, 1]                    # optional
        priority: 1                      # optional, default 0: lower runs first
        seed_priority: {3: 7, 4: 7}      # optional: another priority for some of its seeds (e.g. seeds
                                         # added to an arm whose first seeds ran long ago run last)

Paths in the file are relative to the study file. The study folder (``--out`` wins over ``out``)
holds the report (``report.md``, ``report.json``, figures, ``floors.json``) and ``runs/``, one
folder per run: each run is an ordinary ``tools/train.py`` run with ``OUTPUT_DIR <out>/runs
EXPERIMENT_NAME <arm>_seed<s> SEED <s>`` after the shared, the arm's and the command line's
overrides (in that order), so runs of different arms with the same seed share initial weights,
data order and augmentation: the statistics pair them by seed. The plan runs by (priority, seed,
arm order in the file), a run's priority being its seed's ``seed_priority`` when the arm sets one,
else the arm's ``priority``: what matters most first, and within a priority all arms of a seed
together, so pairs complete early and a study cut short has finished its first priorities.
Arms that differ only in ``TRAIN.END_EPOCH`` (with ``TRAIN.LR_STEP`` at the same fractions of it)
measure the trend with training length (``hrnet/study/analyse/trend.py``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from configs import ConfigError, load_config

__all__ = ["StudyError", "Arm", "Study", "PlannedRun", "load_study", "plan_runs", "output_dir", "SCALE_KEYS",
           "RUNS_DIR"]

#: The keys a study scales; the report compares them with the user's setting (configs/defaults.py).
SCALE_KEYS = ("MODEL.NAME", "MODEL.IMAGE_SIZE", "MODEL.HEATMAP_SIZE", "MODEL.PRETRAINED", "DATASET.FORMAT",
              "DATASET.SYNTHETIC.NUM_TRAIN", "DATASET.SYNTHETIC.NUM_TEST", "DATASET.MAX_TRAIN_SAMPLES",
              "DATASET.MAX_TEST_SAMPLES", "TRAIN.END_EPOCH", "TRAIN.LR_STEP", "TRAIN.LR_FACTOR",
              "TRAIN.BATCH_SIZE_PER_GPU", "TRAIN.WARMUP_ITERS", "AMP.MODE", "DEVICE")
_STUDY_KEYS = ("name", "description", "out", "reference", "seeds", "overrides", "nme_levels", "real_hands", "arms",
               "threads")
_ARM_KEYS = ("name", "config", "overrides", "seeds", "priority", "seed_priority")
#: The study folder's sub-folder of run folders (``<out>/runs/<arm>_seed<s>/``).
RUNS_DIR = "runs"
_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_SEED_SUFFIX = re.compile(r"_seed\d+$")


class StudyError(ConfigError):
    """A study file that cannot be run (names the file and the key or arm)."""


# ---------------------------------------------------------------------------- the study file
@dataclass(frozen=True)
class Arm:
    """One arm: an experiment yaml (absolute path) with its overrides, trained once per seed;
    ``priority``: its place in the plan (lower first); ``seed_priority``: ``(seed, priority)`` pairs
    that replace it for those seeds."""
    name: str
    config: str
    overrides: Tuple[str, ...]
    seeds: Tuple[int, ...]
    priority: int = 0
    seed_priority: Tuple[Tuple[int, int], ...] = ()

    def run_priority(self, seed: int) -> int:
        """The plan priority of this arm's run with ``seed``."""
        return dict(self.seed_priority).get(seed, self.priority)


@dataclass(frozen=True)
class Study:
    """A validated study file; ``overrides`` are the shared ones followed by the command line's;
    ``out``: the file's study folder (absolute) or None."""
    path: str
    name: str
    description: str
    reference: str
    arms: Tuple[Arm, ...]
    overrides: Tuple[str, ...]
    cli_overrides: Tuple[str, ...]
    nme_levels: Tuple[float, ...]
    real_hands: Optional[str]
    out: Optional[str] = None
    #: Each run's OMP_NUM_THREADS in every executor (the file's ``threads``; default 1 when every arm
    #: trains on the CPU, since CPU results depend on the thread count; None: inherited).
    threads: Optional[int] = None

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


def _read_doc(path: str) -> Dict[str, Any]:
    """The study file as a mapping with known keys only."""
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
    _known_keys(doc, _STUDY_KEYS, path)
    return doc


def _known_keys(doc: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    unknown = sorted(set(doc) - set(known))
    if unknown:
        raise StudyError(f"{where}: unknown key(s) {', '.join(map(str, unknown))} (known: {', '.join(known)})")


def _load_arm(a: Any, where: str, here: str, default_seeds: Tuple[int, ...], taken: Sequence[str],
              before: Tuple[str, ...], after: Tuple[str, ...]) -> Arm:
    """One ``arms`` entry, checked; its config is loaded once (``before`` + its overrides + ``after``)."""
    if not isinstance(a, dict):
        raise StudyError(f"{where} must be a mapping with the keys {', '.join(_ARM_KEYS)}")
    _known_keys(a, _ARM_KEYS, where)
    name = a.get("name")
    if not isinstance(name, str) or not _ARM_NAME.match(name) or _SEED_SUFFIX.search(name):
        raise StudyError(f"{where}: name must be letters, digits, _ . + - (not ending in _seed<N>), got {name!r}")
    where = f"{where.rsplit(': ', 1)[0]}: arm {name}"
    if name in taken:
        raise StudyError(f"{where}: the name is used twice")
    if not isinstance(a.get("config"), str):
        raise StudyError(f"{where}: config (an experiment yaml) is required")
    config = os.path.normpath(os.path.join(here, a["config"]))
    if not os.path.isfile(config):
        raise StudyError(f"{where}: config file not found: {config}")
    priority = a.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise StudyError(f"{where}: priority must be an integer (lower runs first), got {priority!r}")
    seeds = _seeds(a["seeds"], f"{where}: seeds") if "seeds" in a else default_seeds
    arm = Arm(name, config, _override_list(a.get("overrides"), where), seeds, priority,
              _seed_priority(a.get("seed_priority"), seeds, where))
    try:
        load_config(arm.config, list(before + arm.overrides + after))
    except (ConfigError, FileNotFoundError) as exc:
        raise StudyError(f"{where}: {exc}") from exc
    return arm


def _seed_priority(value: Any, seeds: Tuple[int, ...], where: str) -> Tuple[Tuple[int, int], ...]:
    """``{seed: priority}`` of an arm, checked: integers, seeds of the arm."""
    if value is None:
        return ()
    ok = isinstance(value, Mapping) and all(isinstance(v, int) and not isinstance(v, bool) for v in
                                            list(value) + list(value.values()))
    if not ok or not set(value) <= set(seeds):
        raise StudyError(f"{where}: seed_priority must map seeds of the arm ({list(seeds)}) to integer "
                         f"priorities, got {value!r}")
    return tuple(sorted(value.items()))


def _real_hands(doc: Mapping[str, Any], path: str, here: str, option: Optional[str]) -> Optional[str]:
    """The real-photo folder (absolute): ``option`` (``--real-hands``, against the working directory)
    if given, else the file's ``real_hands`` (against the study file's folder); None: no real photos."""
    if option is not None:
        return os.path.abspath(option) if option else None
    real = doc.get("real_hands")
    if real is not False and real is not None and not isinstance(real, str):
        raise StudyError(f"{path}: real_hands must be a folder or false, got {real!r}")
    return os.path.normpath(os.path.join(here, real)) if isinstance(real, str) else None


def _out(doc: Mapping[str, Any], path: str, here: str) -> Optional[str]:
    """The file's study folder (absolute, against the study file's folder), or None."""
    out = doc.get("out")
    if out is not None and (not isinstance(out, str) or not out.strip()):
        raise StudyError(f"{path}: out must be a folder (relative to the study file), got {out!r}")
    return os.path.normpath(os.path.join(here, out)) if out else None


def output_dir(study: "Study", option: Optional[str] = None) -> str:
    """The study folder: ``option`` (``--out``, against the working directory) if given, else the
    file's ``out``, else ``output/studies/<name>`` in the working directory."""
    return option or study.out or os.path.join("output", "studies", study.name)


def _scalar_keys(doc: Mapping[str, Any], path: str) -> Tuple[str, str, Tuple[float, ...]]:
    """(name, description, nme_levels) of the study file, checked."""
    levels = doc.get("nme_levels", [])
    if not isinstance(levels, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                                               for v in levels):
        raise StudyError(f"{path}: nme_levels must be a list of positive numbers, got {levels!r}")
    name = doc.get("name", os.path.splitext(os.path.basename(path))[0])
    if not isinstance(name, str) or not _ARM_NAME.match(name):
        raise StudyError(f"{path}: name must be letters, digits, _ . + -, got {name!r}")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise StudyError(f"{path}: description must be text")
    return name, description.strip(), tuple(float(v) for v in levels)


def load_study(path: str, cli_overrides: Sequence[str] = (), real_hands: Optional[str] = None) -> Study:
    """Read and validate a study file; every arm's config is loaded once with seed 0 to catch bad keys.

    ``cli_overrides`` (``KEY VALUE ...``) apply to every arm, after the file's overrides.
    ``real_hands``: a folder of real-photo sets that replaces the file's ``real_hands`` (relative
    to the working directory; ``""``: none). Raises :class:`StudyError` naming the file and the key or arm.
    """
    doc = _read_doc(path)
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
        arms.append(_load_arm(a, f"{path}: arms[{i}]", here, default_seeds, [x.name for x in arms], shared, cli))
    reference = doc.get("reference", arms[0].name)
    if reference not in [a.name for a in arms]:
        raise StudyError(f"{path}: reference {reference!r} is not an arm ({', '.join(a.name for a in arms)})")
    name, description, levels = _scalar_keys(doc, path)
    return Study(os.path.abspath(path), name, description, reference, tuple(arms), shared, cli, levels,
                 _real_hands(doc, path, here, real_hands), _out(doc, path, here),
                 _threads(doc, path, arms, shared, cli))


def _threads(doc: Mapping[str, Any], path: str, arms: Sequence[Arm], before: Tuple[str, ...],
             after: Tuple[str, ...]) -> Optional[int]:
    """The study's ``threads``: the file's (an integer >= 1), else 1 when every arm's DEVICE is cpu, else None."""
    value = doc.get("threads")
    if value is not None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise StudyError(f"{path}: threads must be an integer >= 1 (each run's OMP_NUM_THREADS), got {value!r}")
        return value
    import warnings

    with warnings.catch_warnings():  # _load_arm has said what is odd in each arm's config
        warnings.simplefilter("ignore")
        devices = {str(load_config(a.config, list(before + a.overrides + after)).DEVICE).lower() for a in arms}
    return 1 if devices == {"cpu"} else None


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
    """Every arm x seed into ``<out_dir>/runs/<arm>_seed<s>``, ordered by (priority, seed, the arm's
    place in the file), the priority of each run's seed (``Arm.run_priority``): within a priority
    seed-major, so pairs complete early."""
    runs_dir = os.path.join(os.path.abspath(out_dir), RUNS_DIR)
    order = sorted(((arm.run_priority(seed), seed, i) for i, arm in enumerate(study.arms) for seed in arm.seeds))
    runs = []
    for _, seed, i in order:
        arm = study.arms[i]
        name = f"{arm.name}_seed{seed}"
        opts = study.overrides + arm.overrides + study.cli_overrides + (
            "SEED", str(seed), "OUTPUT_DIR", runs_dir, "EXPERIMENT_NAME", name)
        cfg = load_config(arm.config, list(opts))
        runs.append(PlannedRun(arm.name, seed, arm.config, os.path.join(runs_dir, name), opts,
                               int(cfg.TRAIN.END_EPOCH)))
    return runs
