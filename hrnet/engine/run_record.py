"""The run record: the files of a run folder, how the trainer writes them, how tools read them back.

A run folder ``OUTPUT_DIR/<EXPERIMENT_NAME>/`` holds:

* ``config.yaml`` (:data:`CONFIG`), the resolved config; ``train.log`` (:data:`LOG`);
* TensorBoard event files (:data:`EVENTS_GLOB`) with the scalar tags below;
* ``checkpoint_latest.pth`` (:data:`LATEST`) and ``model_best.pth`` (:data:`BEST`), see ``hrnet.runtime.checkpoint``;
* ``metrics.json`` (:data:`METRICS`): :func:`metrics_summary`, rewritten after every epoch.

Step semantics: **step = number of completed training epochs**; step 0 is the validation of the
untrained model. The writer (``hrnet.engine.trainer``) and the readers (``hrnet.engine.run_reader``
for ``tools/compare.py`` and the study) both use this module, so the names cannot drift apart.
"""
from __future__ import annotations

import contextlib
import glob
import json
import logging
import math
import os
import sys
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from hrnet.runtime.checkpoint import jsonable, write_json


__all__ = ["LATEST", "BEST", "METRICS", "CONFIG", "LOG", "EVENTS_GLOB", "RUN_FILES", "RESUME_FREE_KEYS",
           "TAG_TRAIN_LOSS", "TAG_VALID_LOSS", "TAG_VALID_NME", "TAG_TRAIN_LR", "TAG_TRAIN_IMG_PER_S", "TAG_LOSS_ITER",
           "TAG_BEST_NME", "valid_tag", "find_run_files", "NEW", "RESUME", "REPLACE", "check_run_dir", "replace_run",
           "FILE_ONLY", "run_log", "hparams", "history_entry", "metrics_summary", "config_text", "write_metrics",
           "write_scalars", "write_hparams", "read_metrics", "is_number"]

# ---------------------------------------------------------------------------- file names
LATEST = "checkpoint_latest.pth"
BEST = "model_best.pth"
METRICS = "metrics.json"
CONFIG = "config.yaml"
LOG = "train.log"
EVENTS_GLOB = "events.out.tfevents.*"
# Files that make a folder "a run": a new run refuses a folder holding any of them (see find_run_files).
RUN_FILES = (CONFIG, METRICS, LATEST, BEST)

#: The one list of config keys that cannot change a run's trajectory: a resume may change them (any
#: other change is refused) and the study's run identity ignores them. Not WORKERS: it changes how
#: batches are drawn and augmentation is seeded.
RESUME_FREE_KEYS = frozenset({"TRAIN.RESUME", "TRAIN.END_EPOCH", "TRAIN.BEGIN_EPOCH", "PRINT_FREQ", "OUTPUT_DIR"})

# ---------------------------------------------------------------------------- TensorBoard scalar tags
TAG_TRAIN_LOSS = "train/loss"        # mean training loss of the epoch, at step e + 1
TAG_VALID_LOSS = "valid/loss"        # validation loss, steps 0..END_EPOCH
TAG_VALID_NME = "valid/NME"          # validation NME, steps 0..END_EPOCH
TAG_TRAIN_LR = "train/lr"            # LR of the epoch's last iteration
TAG_TRAIN_IMG_PER_S = "train/img_per_s"
TAG_LOSS_ITER = "train/loss_iter"    # mean of the last PRINT_FREQ iterations, step = global iteration
TAG_BEST_NME = "hparam/best_NME"     # best validation NME so far
TAG_NME_SLOW = "valid/NME_slow"      # Lookahead runs: NME of the slow weights (every validation)
TAG_NME_FAST = "valid/NME_fast"      # Lookahead runs: NME of the fast (inner optimizer's) weights
TAG_PREDICTIONS = "valid/predictions"  # image grid: TEST.VIS_IMAGES fixed validation crops, GT and prediction


def valid_tag(metric: str) -> str:
    """TensorBoard tag of a validation metric (``AUC`` -> ``valid/AUC``)."""
    return f"valid/{metric}"


def find_run_files(path: str) -> List[str]:
    """Names of the run files in folder ``path`` (:data:`RUN_FILES` and event files), sorted."""
    if not os.path.isdir(path):
        return []
    found = [name for name in RUN_FILES if os.path.exists(os.path.join(path, name))]
    found += [os.path.basename(p) for p in glob.glob(os.path.join(path, EVENTS_GLOB))]
    return sorted(found)


#: :func:`check_run_dir`'s answers: start in an empty folder, resume its checkpoint, or replace a run
#: that never completed an epoch.
NEW, RESUME, REPLACE = "new", "resume", "replace"
#: metrics.json statuses of a run that stopped before its end (not one that may still be running).
STOPPED = ("failed", "interrupted", "diverged")


def check_run_dir(run_dir: str, resume: bool) -> Tuple[str, str]:
    """``(action, why)``: whether a run started with ``resume`` takes folder ``run_dir`` as
    :data:`NEW`, :data:`RESUME` (its ``checkpoint_latest.pth``) or :data:`REPLACE` (:func:`replace_run`
    first; ``why`` says why that is safe). Raises ``FileExistsError`` (one line) where the run would
    overwrite another run's results.

    A new run needs a folder without run files (:func:`find_run_files`), or one whose run ended
    before completing its first epoch (a damaged image, a missing file: nothing trained to keep), so
    the same command works once the data is fixed. ``resume`` continues from the checkpoint;
    without one it starts afresh only if the earlier session never saved a model.
    """
    found = find_run_files(run_dir)
    if resume and LATEST in found:
        return RESUME, ""
    if not found:
        return NEW, ""
    info, _ = read_metrics(run_dir)
    if info.get("status") in STOPPED and info.get("epochs_completed") == 0:
        return REPLACE, f"its run {info['status']} before completing an epoch"
    if resume and BEST not in found:  # an earlier session stopped before its first checkpoint
        return REPLACE, f"resume requested but {LATEST} does not exist, nor any model"
    how = ("its checkpoint is gone, so it cannot be resumed" if resume
           else "continue it with --resume (or TRAIN.RESUME True)")
    raise FileExistsError(f"{run_dir} already holds a run ({', '.join(found)}); {how}, or remove the folder, "
                          f"or set EXPERIMENT_NAME / OUTPUT_DIR to start a new one")


def replace_run(run_dir: str) -> List[str]:
    """Remove the run files of ``run_dir`` (:func:`find_run_files`; train.log stays, the new session
    appends to it); returns their names."""
    found = find_run_files(run_dir)
    for name in found:
        os.remove(os.path.join(run_dir, name))
    return found


# ---------------------------------------------------------------------------- writer side
#: logging ``extra`` of a record meant for train.log only (e.g. a failure's traceback), not the console.
FILE_ONLY = {"file_only": True}


@contextlib.contextmanager
def run_log(run_dir: str, rank: int = 0) -> Iterator[None]:
    """The root logger at INFO to stderr and, on rank 0, to ``run_dir/train.log`` for the block.

    Ranks > 0 print warnings only, prefixed with their rank. Records logged with
    ``extra=FILE_ONLY`` go to train.log only.
    """
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.INFO)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    stream.addFilter(lambda record: not getattr(record, "file_only", False))
    handlers: List[logging.Handler] = [stream]
    if rank > 0:
        stream.setLevel(logging.WARNING)
        stream.setFormatter(logging.Formatter(f"[rank {rank}] %(levelname)s %(message)s"))
    else:
        handlers.append(logging.FileHandler(os.path.join(run_dir, LOG)))
        handlers[-1].setFormatter(fmt)
    for h in handlers:
        root.addHandler(h)
    try:
        yield
    finally:
        for h in handlers:
            root.removeHandler(h)
            h.close()
        root.setLevel(old_level)


def hparams(cfg, world_size: int) -> Dict[str, Any]:
    """The hyperparameters that identify a run (metrics.json ``hparams``, TensorBoard HPARAMS tab)."""
    name = cfg.TRAIN.OPTIMIZER.lower()
    hp: Dict[str, Any] = {
        "optimizer": name, "lr": float(cfg.TRAIN.LR),
        "inner": cfg.TRAIN.LOOKAHEAD.INNER.lower() if name == "lookahead" else name,
        "batch": int(cfg.TRAIN.BATCH_SIZE_PER_GPU) * int(world_size), "seed": int(cfg.SEED),
        "wd": float(cfg.TRAIN.WD), "epochs": int(cfg.TRAIN.END_EPOCH), "model": cfg.MODEL.NAME,
    }
    if name == "lookahead":
        hp.update(k=int(cfg.TRAIN.LOOKAHEAD.K), alpha=float(cfg.TRAIN.LOOKAHEAD.ALPHA))
    return hp


def history_entry(step: int, val: Mapping[str, Any], best_nme: float, wall_time: float,
                  train: Optional[Mapping[str, float]] = None, lr: Optional[float] = None) -> Dict[str, Any]:
    """One ``history`` item: validation at ``step`` (and the training epoch that led to it).

    ``val`` holds ``NME``, ``valid_loss``, ``eval_weights`` and ``metrics`` (long per-item arrays,
    such as ``per_image_NME``, are left out), and for Lookahead runs ``NME_slow`` and ``NME_fast``;
    ``train`` holds ``train_loss`` and ``img_per_s``.
    ``wall_time`` in seconds since the run started (all sessions).
    """
    entry: Dict[str, Any] = {"epoch": int(step), "NME": val["NME"], "valid_loss": val["valid_loss"],
                             "best_NME": best_nme, "eval_weights": val["eval_weights"],
                             "metrics": {k: jsonable(v) for k, v in val["metrics"].items()
                                         if not (isinstance(v, np.ndarray) and v.ndim and len(v) > 64)}}
    for key in ("NME_slow", "NME_fast"):
        if key in val:
            entry[key] = val[key]
    if train is not None:
        entry.update(train_loss=train["train_loss"], lr=lr, img_per_s=train["img_per_s"])
    entry["wall_time"] = wall_time
    return entry


def epoch_line(entry: Mapping[str, Any], end_epoch: int, best_epoch: int, val: Mapping[str, Any],
               train: Optional[Mapping[str, float]] = None) -> str:
    """The train.log line of one :func:`history_entry` (``val``/``train``: the timings behind it)."""
    if train is None:
        return (f"epoch 0 (untrained) | valid loss {entry['valid_loss']:.4e} | NME {entry['NME']:.5f} | "
                f"{entry['eval_weights']} weights | eval {val['time']:.1f}s")
    other = "".join(f" | {k} {entry[k]:.5f}" for k in ("NME_slow", "NME_fast") if k in entry)
    wait = 100.0 * train["data_time"] / max(train["train_time"], 1e-9)
    return (f"epoch {entry['epoch']}/{end_epoch} | train loss {entry['train_loss']:.4e} | valid loss "
            f"{entry['valid_loss']:.4e} | NME {entry['NME']:.5f}{' *' if val['is_best'] else ''} (best "
            f"{entry['best_NME']:.5f} @ {best_epoch}){other} | lr {entry['lr']:.2e} | train {train['train_time']:.1f}s "
            f"{train['img_per_s']:.1f} img/s (data wait {wait:.0f}%) | eval {val['time']:.1f}s")


def metrics_summary(cfg, world_size: int, *, status: str, epochs_completed: int, best_nme: float,
                    best_epoch: int, wall_time: float, history: Sequence[Mapping[str, Any]],
                    skipped: Sequence[str] = (), machine: Optional[Mapping[str, Any]] = None,
                    precision: Optional[Mapping[str, Any]] = None, code_version: Optional[Mapping[str, Any]] = None,
                    code_versions: Sequence[Mapping[str, Any]] = ()) -> Dict[str, Any]:
    """The content of ``metrics.json``: status (running | finished | interrupted | diverged |
    failed), final / best / untrained NME, losses, wall time (s), final metrics, :func:`hparams`,
    the samples left out by ``DATASET.ON_BAD_SAMPLE skip`` (one line each), the machine of the
    latest session (``hrnet.runtime.device.describe_machine``), its numerics (``precision``: autocast
    dtype, TF32, deterministic kernels, cuDNN autotuner as in effect on its device), the code of the
    latest session (``code_version``: ``hrnet.runtime.provenance.code_version``) and of every session
    whose code differed from the one before (``code_versions``: ``{"code_version", "from_epoch"}``) and
    the per-epoch history (without per-epoch metric dicts)."""
    from configs import experiment_name

    last = history[-1] if history else {}
    return {
        "experiment": experiment_name(cfg),
        "status": status,
        "epochs_completed": int(epochs_completed),
        "end_epoch": int(cfg.TRAIN.END_EPOCH),
        "final_NME": last.get("NME"),
        "best_NME": best_nme if math.isfinite(best_nme) else None,
        "best_epoch": int(best_epoch),
        "untrained_NME": history[0]["NME"] if history else None,
        "final_valid_loss": last.get("valid_loss"),
        "final_train_loss": last.get("train_loss"),
        "wall_time_s": round(float(wall_time), 2),
        "final": dict(last.get("metrics", {})),
        "hparams": hparams(cfg, world_size),
        "world_size": int(world_size),
        "num_images_skipped": len(skipped),
        "skipped": list(skipped),
        "machine": dict(machine or {}),
        **({"precision": dict(precision)} if precision is not None else {}),
        **({"code_version": dict(code_version), "code_versions": [dict(v) for v in code_versions]}
           if code_version is not None else {}),
        "history": [{k: v for k, v in h.items() if k != "metrics"} for h in history],
    }


def config_text(cfg) -> str:
    """``config.yaml``'s content: the resolved config, OUTPUT_DIR relative to the project root when it
    lies inside (``docs/study_cpu/runs``; a record kept in the repository names no machine's folders)."""
    from hrnet.runtime.provenance import project_relative

    out = project_relative(cfg.OUTPUT_DIR)
    if out == cfg.OUTPUT_DIR:
        return cfg.dump()
    cfg = cfg.clone()
    cfg.defrost()
    cfg.OUTPUT_DIR = out
    return cfg.dump()


def write_metrics(run_dir: str, summary: Mapping[str, Any]) -> None:
    """Write ``metrics.json`` atomically (strict JSON: NaN and inf become null)."""
    write_json(summary, os.path.join(run_dir, METRICS))


def write_scalars(writer, entry: Mapping[str, Any], cfg) -> None:
    """The TensorBoard scalars of one :func:`history_entry`: NME, losses, LR, throughput, and the
    validation metrics ``hrnet.evaluation.metrics.metric_names(cfg)`` (thresholds from ``cfg.TEST``), AUC, EPE."""
    from hrnet.evaluation.metrics import metric_names

    step = entry["epoch"]
    writer.add_scalar(TAG_VALID_NME, entry["NME"], step)
    writer.add_scalar(TAG_VALID_LOSS, entry["valid_loss"], step)
    writer.add_scalar(TAG_BEST_NME, entry["best_NME"], step)
    for tag, key in ((TAG_NME_SLOW, "NME_slow"), (TAG_NME_FAST, "NME_fast")):
        if key in entry:
            writer.add_scalar(tag, entry[key], step)
    for key in tuple(metric_names(cfg)) + ("AUC", "EPE"):
        value = entry["metrics"].get(key)
        if value is not None:
            writer.add_scalar(valid_tag(key), float(value), step)
    if "train_loss" in entry:
        writer.add_scalar(TAG_TRAIN_LOSS, entry["train_loss"], step)
        writer.add_scalar(TAG_TRAIN_LR, entry["lr"], step)
        writer.add_scalar(TAG_TRAIN_IMG_PER_S, entry["img_per_s"], step)
    writer.flush()


def write_hparams(writer, hp: Mapping[str, Any], finished: bool = False) -> None:
    """The HPARAMS-tab session of a run, written into the run's own folder (not a sub-run).

    At the start: the hyperparameters and the metric tags; when the run finishes: the session's
    end. The metrics are existing scalar tags, for which TensorBoard shows the latest value.
    """
    from torch.utils.tensorboard.summary import hparams as hparams_summary

    metrics = {TAG_VALID_NME: 0.0, TAG_BEST_NME: 0.0, TAG_VALID_LOSS: 0.0, TAG_TRAIN_LOSS: 0.0}
    experiment, start, end = hparams_summary(dict(hp), metrics)
    for summary in ([end] if finished else [experiment, start]):
        writer.file_writer.add_summary(summary)


def is_number(v: Any) -> bool:
    """An int or float, not a bool (JSON numbers as read back)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_metrics(path: str) -> Tuple[Dict[str, Any], List[str]]:
    """The ``metrics.json`` of run folder ``path`` ({} when absent) and its problems.

    Malformed content (not JSON, not an object, a key of the wrong type such as ``hparams: null``)
    is reported in the problems and left out, never raised.
    """
    metrics_path = os.path.join(path, METRICS)
    if not os.path.isfile(metrics_path):
        return {}, []
    try:
        with open(metrics_path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as exc:
        return {}, [f"unreadable {METRICS} ({exc})"]
    if not isinstance(info, dict):
        return {}, [f"{METRICS} holds a {type(info).__name__}, not an object"]
    problems = []
    for key, ok in (("status", lambda v: isinstance(v, str)), ("end_epoch", lambda v: isinstance(v, int)),
                    ("epochs_completed", lambda v: isinstance(v, int)), ("wall_time_s", is_number),
                    ("hparams", lambda v: isinstance(v, dict))):
        if key in info and not ok(info[key]):
            problems.append(f"{METRICS}: bad {key} ({info.pop(key)!r})")
    return info, problems
