"""Optimizer studies: a study file -> runs (arms x seeds) -> statistics -> one report dict.

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
initial weights, data order and augmentation: the statistics pair them by seed (``hrnet.stats``).

The layers: :func:`load_study` (validate the file), :func:`plan_runs` (arms x seeds -> folders and
overrides), :func:`execute` (train the runs that are not finished as subprocesses, one per device
slot), :func:`collect` (read every run folder back with ``hrnet.run_record``; evaluate each run's
``model_best.pth`` on the real hand photos, cached in the run folder) and :func:`analyse` (the
report dict: every number ``hrnet.study_report`` writes into ``report.md`` and the figures).
Besides the trainer's files, the study writes into each run folder ``stdout.log`` (the child's
output), ``study_sessions.json`` (one record per training process: wall time, exit status) and
``real_hands.json`` (the cached real-photo evaluation).
"""
from __future__ import annotations

import collections
import datetime
import json
import math
import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from configs import ConfigError, get_defaults, load_config

from . import stats
from .run_record import BEST, CONFIG, LATEST, find_run_files, read_metrics

__all__ = ["StudyError", "Arm", "Study", "PlannedRun", "ExecutionResult", "load_study", "plan_runs", "run_state",
           "execute", "collect", "evaluate_real_hands", "analyse", "SCALE_KEYS", "SESSIONS", "CHILD_LOG",
           "REAL_HANDS_CACHE", "DEFAULT_REAL_HANDS", "COMPARED_METRICS"]

SESSIONS = "study_sessions.json"
CHILD_LOG = "stdout.log"
REAL_HANDS_CACHE = "real_hands.json"
#: ``../shared/data/real-hands`` beside the checkout (the project's real hand samples).
DEFAULT_REAL_HANDS = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
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


# ---------------------------------------------------------------------------- planning
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


def run_state(run: PlannedRun) -> str:
    """``finished`` (all planned epochs), ``diverged`` (not retried: it would diverge again),
    ``partial`` (a checkpoint to resume from) or ``new``."""
    info, _ = read_metrics(run.run_dir)
    done = info.get("epochs_completed", -1)
    if info.get("status") == "finished" and done >= run.end_epoch:
        return "finished"
    if info.get("status") == "diverged":
        return "diverged"
    return "partial" if os.path.isfile(os.path.join(run.run_dir, LATEST)) else "new"


def _read_sessions(run_dir: str) -> List[Dict[str, Any]]:
    try:
        with open(os.path.join(run_dir, SESSIONS), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, list) else []
    except (OSError, ValueError):
        return []


def _append_session(run_dir: str, record: Mapping[str, Any]) -> None:
    from .checkpoint import write_json

    write_json(_read_sessions(run_dir) + [dict(record)], os.path.join(run_dir, SESSIONS))


def _last_error_line(run_dir: str) -> str:
    """The most telling line of the child's output: the last ``error``-ish line, else the last line."""
    try:
        with open(os.path.join(run_dir, CHILD_LOG), encoding="utf-8", errors="replace") as f:
            lines = [ln.strip() for ln in f.read().splitlines()[-200:] if ln.strip()]
    except OSError:
        return ""
    for ln in reversed(lines):
        if re.search(r"error|exception|non-finite|Traceback", ln, re.IGNORECASE) and not ln.startswith("File "):
            return ln[:300]
    return lines[-1][:300] if lines else ""


def _fmt_duration(s: Optional[float]) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    if s < 60:
        return f"{s:.0f} s"
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min"


# ---------------------------------------------------------------------------- execution
@dataclass
class ExecutionResult:
    """What :func:`execute` did: finished / failed (name, reason) runs; ``interrupted`` by a signal."""
    finished: List[str] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    interrupted: bool = False


@dataclass
class _Child:
    run: PlannedRun
    proc: subprocess.Popen
    slot: Optional[str]
    start: float
    epochs_before: int
    resumed: bool
    log: Any


def _epochs_done(run_dir: str) -> int:
    info, _ = read_metrics(run_dir)
    done = info.get("epochs_completed", 0)
    return done if isinstance(done, int) else 0


def execute(runs: Sequence[PlannedRun], train_command: Sequence[str], slots: Sequence[Optional[str]] = (None,),
            echo: Callable[[str], None] = print) -> ExecutionResult:
    """Train the runs that are not finished, one subprocess per slot at a time.

    ``train_command``: the launcher and ``tools/train.py`` (e.g. ``[python, tools/train.py]`` or
    ``[torchrun, --standalone, --nproc_per_node, 2, tools/train.py]``). ``slots``: None (inherit the
    environment) or a ``CUDA_VISIBLE_DEVICES`` value per concurrent process. A run with a checkpoint
    is resumed (``--resume``); a diverged one is not retried. Each child runs in its own session with
    its output in ``<run>/stdout.log``; SIGINT / SIGTERM to this process are forwarded to the children
    (which checkpoint and exit), the remaining runs are not started and ``interrupted`` is set.
    Prints one line per finished run with an ETA of the rest of the study.
    """
    result = ExecutionResult()
    todo: collections.deque = collections.deque()
    for run in runs:
        state = run_state(run)
        if state == "finished":
            result.skipped.append(run.name)
        elif state == "diverged":
            result.failed.append((run.name, "diverged before; not retried (delete the folder to retry)"))
        else:
            todo.append(run)
    n_total, n_done = len(todo), 0
    echo(f"[study] {len(runs)} runs: {len(result.skipped)} finished (skipped), {len(todo)} to train "
         f"({sum(run_state(r) == 'partial' for r in todo)} to resume), "
         f"{len(result.failed)} diverged before; {len(slots)} at a time; "
         f"each run's output in <run>/{CHILD_LOG}")
    if not todo:
        return result
    running: Dict[int, _Child] = {}
    stop: List[int] = []
    epoch_seconds: List[Tuple[float, int]] = []  # (child wall s, epochs it trained)

    def on_signal(signum, frame):
        stop.append(signum)
        for child in list(running.values()):
            try:
                child.proc.send_signal(signum)
            except (ProcessLookupError, OSError):
                pass

    old = {}
    if _in_main_thread():
        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while todo or running:
            for i, slot in enumerate(slots):
                if i in running or not todo or stop:
                    continue
                running[i] = _start(todo.popleft(), list(train_command), slot)
            if not running:
                break
            time.sleep(0.2)
            for i, child in list(running.items()):
                rc = child.proc.poll()
                if rc is None:
                    continue
                del running[i]
                n_done += 1
                line = _finish(child, rc, result, epoch_seconds, bool(stop))
                eta = _eta(list(todo) + [c.run for c in running.values()], epoch_seconds, len(slots))
                echo(f"[study] {n_done}/{n_total} {line}" + ("" if stop else f" | study ETA {eta}"))
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if stop:
        result.interrupted = True
        echo(f"[study] stopped by {signal.Signals(stop[0]).name}: {len(todo)} run(s) not started; runs stopped "
             f"mid-way kept a checkpoint; run the same command again to continue")
    return result


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _start(run: PlannedRun, train_command: List[str], slot: Optional[str]) -> _Child:
    os.makedirs(run.run_dir, exist_ok=True)
    # A folder that already holds run files but no checkpoint (a run that failed while setting up)
    # restarts from scratch through --resume (the trainer says so in its log).
    resume = os.path.isfile(os.path.join(run.run_dir, LATEST)) or bool(find_run_files(run.run_dir))
    cmd = train_command + ["--cfg", run.config] + (["--resume"] if resume else []) + list(run.opts)
    env = dict(os.environ)
    if slot is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot
    log = open(os.path.join(run.run_dir, CHILD_LOG), "a", encoding="utf-8")
    log.write(f"\n# {datetime.datetime.now().isoformat(timespec='seconds')} "
              f"{'CUDA_VISIBLE_DEVICES=' + slot + ' ' if slot is not None else ''}"
              f"{' '.join(shlex.quote(c) for c in cmd)}\n")
    log.flush()
    # Own session: a terminal's Ctrl-C reaches only the study, which forwards it exactly once (a
    # second SIGINT would make the trainer abort without writing its final metrics.json).
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    return _Child(run, proc, slot, time.time(), _epochs_done(run.run_dir), resume, log)


def _finish(child: _Child, rc: int, result: ExecutionResult, epoch_seconds: List[Tuple[float, int]],
            stopping: bool) -> str:
    """Record the session, classify the outcome; the progress line of this run."""
    child.log.close()
    run, wall = child.run, time.time() - child.start
    info, _ = read_metrics(run.run_dir)
    after = info.get("epochs_completed", 0) if isinstance(info.get("epochs_completed"), int) else 0
    _append_session(run.run_dir, {"started": datetime.datetime.fromtimestamp(child.start).isoformat(timespec="seconds"),
                                  "wall_s": round(wall, 2), "exit_status": rc, "device": child.slot,
                                  "resumed": child.resumed, "epochs_before": child.epochs_before,
                                  "epochs_after": after, "command": shlex.join(child.proc.args)})
    where = f" (GPU {child.slot})" if child.slot is not None else ""
    head = f"{run.arm} seed {run.seed}"
    if after > child.epochs_before:
        epoch_seconds.append((wall, after - child.epochs_before))
    if rc == 0 and info.get("status") == "finished":
        result.finished.append(run.name)
        final = info.get("final_NME")
        nme = f"final NME {final:.5f}" if isinstance(final, (int, float)) else "final NME -"
        return f"{head}: {nme}, {_fmt_duration(wall)}{where}"
    if stopping or rc in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        return f"{head}: stopped after {after}/{run.end_epoch} epochs ({_fmt_duration(wall)}); resumable"
    status = info.get("status")
    reason = "diverged" if status == "diverged" else f"failed (exit status {rc})"
    detail = _last_error_line(run.run_dir)
    result.failed.append((run.name, reason + (f": {detail}" if detail else "")))
    return f"{head}: {reason} after {after}/{run.end_epoch} epochs{where}: {detail or '-'} (see {run.run_dir}/{CHILD_LOG})"


def _eta(remaining: Sequence[PlannedRun], epoch_seconds: Sequence[Tuple[float, int]], n_slots: int) -> str:
    """Seconds per epoch (start-up included) of this session's runs x epochs left / slots."""
    trained = sum(n for _, n in epoch_seconds)
    if not trained:
        return "after the first run"
    per_epoch = sum(w for w, _ in epoch_seconds) / trained
    left = sum(max(r.end_epoch - _epochs_done(r.run_dir), 0) for r in remaining)
    return _fmt_duration(left * per_epoch / max(n_slots, 1)) if left else "0 s"


# ---------------------------------------------------------------------------- reading results
def _real_hand_sets(folder: Optional[str]) -> Dict[str, Tuple[str, str]]:
    """``name -> (image folder, annotation json)``: each sub-folder of ``folder`` with one ``*.json``."""
    sets: Dict[str, Tuple[str, str]] = {}
    if not folder or not os.path.isdir(folder):
        return sets
    for name in sorted(os.listdir(folder)):
        sub = os.path.join(folder, name)
        jsons = sorted(f for f in os.listdir(sub) if f.endswith(".json")) if os.path.isdir(sub) else []
        if len(jsons) == 1:
            sets[name] = (sub, jsons[0])
    return sets


def evaluate_real_hands(run_dir: str, sets: Mapping[str, Tuple[str, str]], pck_key: str) -> Dict[str, Any]:
    """NME and PCK of ``run_dir/model_best.pth`` on each real hand set and on all of them pooled.

    The model runs at the run's own ``config.yaml`` (input size, decoding) on the CPU or the
    device ``DEVICE`` selects. Cached in ``run_dir/real_hands.json``, keyed by the model file's size
    and modification time and by the sets, so a report regenerated later does not evaluate again.
    Returns ``{set name or "all": {"NME", pck_key, "num_images"}}``, or ``{"error": text}``.
    """
    from .checkpoint import write_json

    best = os.path.join(run_dir, BEST)
    if not os.path.isfile(best):
        return {"error": f"no {BEST}"}
    st = os.stat(best)
    key = {"model_size": st.st_size, "model_mtime_ns": st.st_mtime_ns,
           "sets": {k: list(v) for k, v in sorted(sets.items())}}
    cache = os.path.join(run_dir, REAL_HANDS_CACHE)
    try:
        with open(cache, encoding="utf-8") as f:
            cached = json.load(f)
        if cached.get("key") == key:
            return cached["results"]
    except (OSError, ValueError, AttributeError):
        pass
    try:
        results = _evaluate_real_hands(run_dir, best, sets, pck_key)
    except Exception as exc:  # one unreadable model must not stop the report
        return {"error": " ".join(f"{type(exc).__name__}: {exc}".split())[:300]}
    write_json({"key": key, "results": results}, cache)
    return results


def _evaluate_real_hands(run_dir: str, best: str, sets: Mapping[str, Tuple[str, str]], pck_key: str
                         ) -> Dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    from data import build_dataset

    from .device import select_device
    from .evaluate import run_inference
    from .metrics import compute_metrics
    from .model_file import load_model_file

    results: Dict[str, Any] = {}
    pooled: Dict[str, List[np.ndarray]] = {"preds": [], "joints": [], "bbox": []}
    model, device, cfg = None, None, None
    for name, (root, ann) in sets.items():
        cfg = load_config(os.path.join(run_dir, CONFIG),
                          ["DATASET.FORMAT", "coco", "DATASET.ROOT", root, "DATASET.TESTSET", ann,
                           "DATASET.MAX_TEST_SAMPLES", "0", "WORKERS", "0", "TEST.BATCH_SIZE_PER_GPU", "16"])
        if model is None:
            device = select_device(cfg.DEVICE)
            model, _ = load_model_file(cfg, best, device)
        loader = DataLoader(build_dataset(cfg, is_train=False), batch_size=16, shuffle=False, num_workers=0)
        with torch.inference_mode():
            out = run_inference(model, loader, cfg, device, progress=False)
        m = compute_metrics(out["preds"], out["joints"], out["bbox"], cfg)
        results[name] = {"NME": m["NME"], pck_key: m[pck_key], "num_images": m["num_images"]}
        for k in pooled:
            pooled[k].append(out[k])
    if cfg is not None:
        m = compute_metrics(*(np.concatenate(pooled[k]) for k in ("preds", "joints", "bbox")), cfg)
        results["all"] = {"NME": m["NME"], pck_key: m[pck_key], "num_images": m["num_images"]}
    return results


def _num(v: Any) -> Optional[float]:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _status(run: PlannedRun, info: Mapping[str, Any], sessions: Sequence[Mapping[str, Any]]) -> Tuple[str, str]:
    """(status, reason) of a run folder: finished | diverged | failed | partial | not run."""
    status = info.get("status")
    done = info.get("epochs_completed", 0) if isinstance(info.get("epochs_completed"), int) else 0
    last_rc = sessions[-1].get("exit_status") if sessions else None
    if status == "finished" and done >= run.end_epoch:
        return "finished", ""
    if status == "diverged":
        return "diverged", _last_error_line(run.run_dir)
    if last_rc not in (None, 0, 128 + signal.SIGINT, 128 + signal.SIGTERM):
        return "failed", f"exit status {last_rc}: {_last_error_line(run.run_dir)}"
    if status or os.path.isfile(os.path.join(run.run_dir, LATEST)):
        return "partial", f"{done}/{run.end_epoch} epochs"
    return "not run", ""


def collect(study: Study, out_dir: str, evaluate_real: bool = True) -> List[Dict[str, Any]]:
    """One record per planned run, read back from its folder (``metrics.json`` through
    ``hrnet.run_record``, the study's session records, the cached real-hand evaluation)."""
    from .metrics import metric_names

    sets = _real_hand_sets(study.real_hands) if evaluate_real else {}
    records = []
    for run in plan_runs(study, out_dir):
        info, problems = read_metrics(run.run_dir)
        sessions = _read_sessions(run.run_dir)
        status, reason = _status(run, info, sessions)
        pck_key = metric_names(load_config(run.config, list(run.opts)))[1]
        final = info.get("final", {}) if isinstance(info.get("final"), dict) else {}
        history = [h for h in info.get("history", []) if isinstance(h, dict)]
        curves = {k: [_num(h.get(k)) for h in history]
                  for k in ("train_loss", "valid_loss", "NME", "NME_slow", "NME_fast")}
        epochs = [int(h.get("epoch", i)) for i, h in enumerate(history)]
        rec: Dict[str, Any] = {
            "name": run.name, "arm": run.arm, "seed": run.seed, "status": status, "reason": reason,
            "problems": problems, "epochs_completed": info.get("epochs_completed"), "end_epoch": run.end_epoch,
            "hparams": info.get("hparams", {}),
            "final_NME": _num(info.get("final_NME")), "best_NME": _num(info.get("best_NME")),
            "best_epoch": info.get("best_epoch"), "final_valid_loss": _num(info.get("final_valid_loss")),
            "final_train_loss": _num(info.get("final_train_loss")), "pck_key": pck_key,
            "PCK": _num(final.get(pck_key)), "AUC": _num(final.get("AUC")), "EPE": _num(final.get("EPE")),
            "wall_time_s": _num(info.get("wall_time_s")),
            "epochs_to_reach": {f"{lv:g}": stats.epochs_to_reach(epochs, curves["NME"], lv) for lv in study.nme_levels},
            "curves": dict(curves, epoch=epochs),
            "eval_weights": history[-1].get("eval_weights") if history else None,
            "sessions": len(sessions),
        }
        rec.update(_overhead(sessions, history))
        if status == "finished" and sets:
            rec["real_hands"] = evaluate_real_hands(run.run_dir, sets, pck_key)
        records.append(rec)
    return records


def _overhead(sessions: Sequence[Mapping[str, Any]], history: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """Process wall time and the part of it outside the training epochs (start-up, data set build,
    untrained validation, tear-down), for runs trained in one study session only."""
    if len(sessions) != 1 or len(history) < 2 or _num(sessions[0].get("wall_s")) is None:
        return {"process_wall_s": None, "overhead_s": None, "overhead_fraction": None}
    wall = float(sessions[0]["wall_s"])
    t0, t1 = _num(history[0].get("wall_time")), _num(history[-1].get("wall_time"))
    if t0 is None or t1 is None:
        return {"process_wall_s": wall, "overhead_s": None, "overhead_fraction": None}
    overhead = max(wall - (t1 - t0), 0.0)
    return {"process_wall_s": wall, "overhead_s": overhead, "overhead_fraction": overhead / wall if wall else None}


# ---------------------------------------------------------------------------- analysis
#: The metrics compared with the reference arm: (record key, title); all lower-is-better.
COMPARED_METRICS = (("final_NME", "final NME"), ("best_NME", "best NME"), ("final_valid_loss", "final valid loss"))


def _family(hp: Mapping[str, Any]) -> str:
    """``adam`` / ``sgd`` / ``lookahead(adam)``: the optimizer, for grouping arms by LR."""
    opt = str(hp.get("optimizer", "?"))
    return f"lookahead({hp.get('inner', '?')})" if opt == "lookahead" else opt


def _per_seed(records: Sequence[Mapping[str, Any]], key: str) -> Dict[int, Optional[float]]:
    return {r["seed"]: r.get(key) for r in records if r["status"] == "finished"}


def _last_finite(values: Sequence[Optional[float]]) -> Optional[float]:
    return values[-1] if values and values[-1] is not None else None


def analyse(study: Study, records: Sequence[Mapping[str, Any]], out_dir: str) -> Dict[str, Any]:
    """The report dict: protocol, per-run records, per-arm statistics, paired comparisons with the
    reference, Lookahead slow vs fast, LR and k/alpha sensitivity, real-hand results, the verdict."""
    by_arm = {a.name: [r for r in records if r["arm"] == a.name] for a in study.arms}
    arms: Dict[str, Any] = {}
    for arm in study.arms:
        rs = by_arm[arm.name]
        done = [r for r in rs if r["status"] == "finished"]
        hp = next((r["hparams"] for r in rs if r["hparams"]), {})
        entry: Dict[str, Any] = {
            "config": os.path.relpath(arm.config, os.path.dirname(study.path)), "overrides": list(arm.overrides),
            "seeds": list(arm.seeds), "family": _family(hp) if hp else "", "lr": hp.get("lr"),
            "k": hp.get("k"), "alpha": hp.get("alpha"), "n_finished": len(done), "n_runs": len(rs),
            "statuses": {r["name"]: r["status"] for r in rs},
        }
        for key in ("final_NME", "best_NME", "PCK", "AUC", "EPE", "final_valid_loss", "wall_time_s",
                    "overhead_fraction"):
            entry[key] = stats.summarize([r[key] for r in done]).to_dict()
            entry[key]["per_seed"] = {str(r["seed"]): r[key] for r in done}
        entry["epochs_to_reach"] = {}
        for lv in study.nme_levels:
            eps = [r["epochs_to_reach"][f"{lv:g}"] for r in done]
            reached = [e for e in eps if e is not None]
            entry["epochs_to_reach"][f"{lv:g}"] = {
                "n_reached": len(reached), "n": len(eps), "mean": float(np.mean(reached)) if reached else None,
                "per_seed": {str(r["seed"]): e for r, e in zip(done, eps)}}
        arms[arm.name] = entry

    ref = by_arm[study.reference]
    comparisons: Dict[str, Any] = {}
    for arm in study.arms:
        if arm.name == study.reference:
            continue
        comparisons[arm.name] = {key: stats.paired_comparison(_per_seed(by_arm[arm.name], key),
                                                              _per_seed(ref, key)).to_dict()
                                 for key, _ in COMPARED_METRICS}

    lookahead: Dict[str, Any] = {}
    for arm in study.arms:
        done = [r for r in by_arm[arm.name] if r["status"] == "finished" and r["hparams"].get("optimizer") == "lookahead"]
        if not done:
            continue
        slow = {r["seed"]: _last_finite(r["curves"]["NME_slow"]) for r in done}
        fast = {r["seed"]: _last_finite(r["curves"]["NME_fast"]) for r in done}
        logged = any(v is not None for v in slow.values()) and any(v is not None for v in fast.values())
        # At a validation where the iteration count is a multiple of k the fast weights were just
        # reset to the slow ones and both NMEs coincide (always so after 30 epochs with k 5 or 10),
        # so the final values alone say little: compare the best values and the mean over epochs too.
        best_slow, best_fast, avg_slow, avg_fast, n_differ = {}, {}, {}, {}, {}
        for r in done:
            pairs = [(a, b) for e, a, b in zip(r["curves"]["epoch"], r["curves"]["NME_slow"], r["curves"]["NME_fast"])
                     if e >= 1 and a is not None and b is not None]
            if pairs:
                best_slow[r["seed"]], best_fast[r["seed"]] = min(a for a, _ in pairs), min(b for _, b in pairs)
                avg_slow[r["seed"]] = float(np.mean([a for a, _ in pairs]))
                avg_fast[r["seed"]] = float(np.mean([b for _, b in pairs]))
                n_differ[str(r["seed"])] = sum(a != b for a, b in pairs)
        lookahead[arm.name] = {
            "logged": logged, "final_NME_slow": {str(k): v for k, v in slow.items()},
            "final_NME_fast": {str(k): v for k, v in fast.items()},
            "slow": stats.summarize(list(slow.values())).to_dict(),
            "fast": stats.summarize(list(fast.values())).to_dict(),
            "slow_vs_fast": stats.paired_comparison(slow, fast).to_dict(),
            "best_slow_vs_fast": stats.paired_comparison(best_slow, best_fast).to_dict(),
            "epoch_mean_slow_vs_fast": stats.paired_comparison(avg_slow, avg_fast).to_dict(),
            "epochs_where_they_differ": n_differ,
            "eval_weights": next((r["eval_weights"] for r in done if r["eval_weights"]), None)}

    report = {
        "study": {"name": study.name, "file": study.path, "description": study.description,
                  "reference": study.reference, "shared_overrides": list(study.overrides),
                  "command_line_overrides": list(study.cli_overrides), "nme_levels": list(study.nme_levels),
                  "out_dir": os.path.abspath(out_dir), "real_hands": study.real_hands,
                  "generated": datetime.datetime.now().isoformat(timespec="seconds"),
                  "statistics": "per arm: mean, sample std (ddof 1) and 95% Student t interval over finished seeds; "
                                "vs the reference: paired by seed, mean of (arm - reference) with its 95% Student t "
                                "interval; 'better'/'worse' when the interval excludes 0 (lower is better)"},
        "scale": _scale(study),
        "runs": list(records),
        "arms": arms,
        "comparisons": comparisons,
        "lookahead": lookahead,
        "sensitivity": _sensitivity(study, arms),
        "real_hands": _real_hands_summary(study, by_arm, arms),
    }
    report["verdict"] = _verdict(report)
    return report


def _scale(study: Study) -> List[Dict[str, Any]]:
    """Per :data:`SCALE_KEYS`: the user's setting (the defaults) and this study's value(s) over its arms."""
    user = get_defaults()
    values: Dict[str, List[Any]] = {k: [] for k in SCALE_KEYS}
    for arm in study.arms:
        cfg = load_config(arm.config, list(study.overrides + arm.overrides + study.cli_overrides))
        for k in SCALE_KEYS:
            v = _get(cfg, k)
            if v not in values[k]:
                values[k].append(v)
    rows = []
    for k in SCALE_KEYS:
        u = _get(user, k)
        rows.append({"key": k, "user": u, "study": values[k][0] if len(values[k]) == 1 else values[k],
                     "scaled": values[k] != [u]})
    return rows


def _get(cfg, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node[part]
    return list(node) if isinstance(node, (list, tuple)) else node


def _sensitivity(study: Study, arms: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """Final NME against LR per family (Lookahead arms keyed by k and alpha too), and the
    k x alpha grid of the Lookahead arms at the LR with the most (k, alpha) pairs."""
    lines: Dict[str, List[Dict[str, Any]]] = {}
    for name, a in arms.items():
        if a["lr"] is None or not a["final_NME"]["n"]:
            continue
        fam = a["family"] + (f" k{a['k']} alpha{a['alpha']:g}" if a["k"] is not None else "")
        lines.setdefault(fam, []).append({"arm": name, "lr": a["lr"], "mean": a["final_NME"]["mean"],
                                          "std": a["final_NME"]["std"], "ci_low": a["final_NME"]["ci_low"],
                                          "ci_high": a["final_NME"]["ci_high"], "n": a["final_NME"]["n"]})
    for pts in lines.values():
        pts.sort(key=lambda p: p["lr"])
    spread = {fam: {"lrs": [p["lr"] for p in pts], "min_mean": min(p["mean"] for p in pts),
                    "max_mean": max(p["mean"] for p in pts),
                    "range": max(p["mean"] for p in pts) - min(p["mean"] for p in pts)}
              for fam, pts in lines.items() if len(pts) >= 2}
    la = [(n, a) for n, a in arms.items() if a["k"] is not None and a["final_NME"]["n"]]
    grid: Dict[str, Any] = {}
    if la:
        by_lr: Dict[float, List[Tuple[str, Mapping[str, Any]]]] = {}
        for n, a in la:
            by_lr.setdefault(a["lr"], []).append((n, a))
        lr, members = max(by_lr.items(), key=lambda kv: (len({(a["k"], a["alpha"]) for _, a in kv[1]}), -kv[0]))
        if len({(a["k"], a["alpha"]) for _, a in members}) >= 2:
            ks = sorted({a["k"] for _, a in members})
            alphas = sorted({a["alpha"] for _, a in members})
            cells = {f"{a['k']},{a['alpha']:g}": {"arm": n, "mean": a["final_NME"]["mean"], "std": a["final_NME"]["std"],
                                                  "n": a["final_NME"]["n"]} for n, a in members}
            means = [c["mean"] for c in cells.values()]
            grid = {"lr": lr, "k": ks, "alpha": alphas, "cells": cells, "range": max(means) - min(means)}
    return {"lr_lines": lines, "lr_spread": spread, "k_alpha": grid}


def _real_hands_summary(study: Study, by_arm: Mapping[str, Sequence[Mapping[str, Any]]],
                        arms: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    sets = _real_hand_sets(study.real_hands)
    if not sets:
        return {"available": False, "folder": study.real_hands,
                "note": "no real hand sets found" if study.real_hands else "disabled in the study file"}
    names = list(sets) + ["all"]
    per_arm: Dict[str, Any] = {}
    errors: Dict[str, str] = {}
    pck_key = "PCK"
    for arm, rs in by_arm.items():
        per_arm[arm] = {}
        for s in names:
            vals_nme, vals_pck = {}, {}
            for r in rs:
                res = r.get("real_hands")
                if not res:
                    continue
                if "error" in res:
                    errors[r["name"]] = res["error"]
                    continue
                pck_key = r["pck_key"]
                vals_nme[str(r["seed"])] = res.get(s, {}).get("NME")
                vals_pck[str(r["seed"])] = res.get(s, {}).get(pck_key)
            per_arm[arm][s] = {"NME": stats.summarize(list(vals_nme.values())).to_dict(),
                               "PCK": stats.summarize(list(vals_pck.values())).to_dict(),
                               "NME_per_seed": vals_nme, "PCK_per_seed": vals_pck,
                               "num_images": next((r["real_hands"][s]["num_images"] for r in rs
                                                   if r.get("real_hands") and s in r["real_hands"]), None)}
    ranked = [a for a in arms if arms[a]["final_NME"]["n"] and per_arm[a]["all"]["NME"]["n"]]
    synth = sorted(ranked, key=lambda a: arms[a]["final_NME"]["mean"])
    real = sorted(ranked, key=lambda a: per_arm[a]["all"]["NME"]["mean"])
    tau = None
    if len(ranked) >= 2:
        from scipy.stats import kendalltau

        tau = float(kendalltau([arms[a]["final_NME"]["mean"] for a in ranked],
                               [per_arm[a]["all"]["NME"]["mean"] for a in ranked]).statistic)
    ref_nme = {int(k): v for k, v in per_arm[study.reference]["all"]["NME_per_seed"].items()}
    vs_reference = {a: stats.paired_comparison({int(k): v for k, v in per_arm[a]["all"]["NME_per_seed"].items()},
                                               ref_nme).to_dict()
                    for a in per_arm if a != study.reference}
    return {"available": True, "folder": study.real_hands, "sets": names, "pck_key": pck_key,
            "per_arm": per_arm, "vs_reference": vs_reference, "errors": errors, "rank_synthetic": synth,
            "rank_real": real,
            "kendall_tau": tau if tau is None or math.isfinite(tau) else None}


def _fmt(v: Optional[float], spec: str = ".4f") -> str:
    return "-" if v is None or not math.isfinite(v) else format(v, spec)


def _verdict(report: Mapping[str, Any]) -> List[str]:
    """Plain sentences, each computed from the numbers of ``report``."""
    out: List[str] = []
    arms, ref = report["arms"], report["study"]["reference"]
    done = {n: a for n, a in arms.items() if a["final_NME"]["n"]}
    if not done:
        return ["No arm has a finished run yet: nothing to conclude."]
    order = sorted(done, key=lambda n: done[n]["final_NME"]["mean"])
    out.append("Ranking by mean final valid NME (lower is better): "
               + " < ".join(f"{n} ({done[n]['final_NME']['mean']:.4f}, n={done[n]['final_NME']['n']})" for n in order)
               + ".")
    groups: Dict[str, List[str]] = {stats.BETTER: [], stats.WORSE: [], stats.NO_DIFFERENCE: []}
    for name, comp in report["comparisons"].items():
        c = comp["final_NME"]
        if c["n"]:
            groups[c["verdict"]].append(f"{name} ({c['mean_diff']:+.4f}, 95% CI [{_fmt(c['ci_low'])}, "
                                        f"{_fmt(c['ci_high'])}], n={c['n']})")
    if any(groups.values()):
        parts = []
        if groups[stats.BETTER]:
            parts.append("better than " + ref + ": " + "; ".join(groups[stats.BETTER]))
        if groups[stats.WORSE]:
            parts.append("worse than " + ref + ": " + "; ".join(groups[stats.WORSE]))
        if groups[stats.NO_DIFFERENCE]:
            parts.append("no detectable difference from " + ref + " at this n: " + "; ".join(groups[stats.NO_DIFFERENCE]))
        out.append("Final NME, paired by seed: " + ". ".join(parts) + ".")
    bad = {r["name"]: r["status"] for r in report["runs"] if r["status"] in ("failed", "diverged")}
    if bad:
        out.append(f"{len(bad)} run(s) did not finish and are left out of the statistics: "
                   + ", ".join(f"{n} ({s})" for n, s in bad.items()) + ".")
    missing = [r["name"] for r in report["runs"] if r["status"] in ("partial", "not run")]
    if missing:
        out.append(f"{len(missing)} run(s) are not finished yet (partial or not run): the statistics cover the "
                   f"finished seeds only.")
    for name, la in report["lookahead"].items():
        c, b = la["epoch_mean_slow_vs_fast"], la["best_slow_vs_fast"]
        if la["logged"] and c["n"]:
            word = {stats.BETTER: "lower (better)", stats.WORSE: "higher (worse)"}
            out.append(f"{name}: slow - fast weights' valid NME, averaged over epochs 1..end: {c['mean_diff']:+.4f} "
                       f"(95% CI [{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}], n={c['n']}); best NME slow - fast "
                       f"{b['mean_diff']:+.4f} (95% CI [{_fmt(b['ci_low'])}, {_fmt(b['ci_high'])}]): the slow weights "
                       f"are {word.get(c['verdict'], 'not detectably different')} over the run.")
    spread = report["sensitivity"]["lr_spread"]
    if spread:
        out.append("LR sensitivity (range of the mean final NME over the LRs tried): " + "; ".join(
            f"{fam}: {s['range']:.4f} over LR {min(s['lrs']):g}..{max(s['lrs']):g}"
            for fam, s in sorted(spread.items(), key=lambda kv: kv[1]["range"])) + ".")
    grid = report["sensitivity"]["k_alpha"]
    if grid:
        out.append(f"Lookahead k x alpha grid at LR {grid['lr']:g}: the mean final NME spans {grid['range']:.4f} "
                   f"over k {grid['k']} and alpha {grid['alpha']}.")
    rh = report["real_hands"]
    if rh.get("available") and rh.get("kendall_tau") is not None:
        same = rh["rank_synthetic"] == rh["rank_real"]
        out.append(f"Real hand photos ({', '.join(s for s in rh['sets'] if s != 'all')}): the ranking by real-photo NME "
                   + ("is the same as" if same else "differs from") + " the synthetic ranking (Kendall tau "
                   f"{rh['kendall_tau']:+.2f}): " + " < ".join(rh["rank_real"]) + ".")
    return out
