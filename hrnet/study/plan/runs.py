"""A planned run's folder, read back: one place for "how far is this run" and what its process said.

The study's files beside the trainer's (``hrnet.engine.run_record``): ``stdout.log`` (the trainer's
output, appended by every process) and ``study_sessions.json`` (one record per training process).
:func:`run_status` is the single answer to "is this run finished", used by the runner (what to
train) and by the analysis (what to count).
"""
from __future__ import annotations

import json
import os
import re
import signal
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from hrnet.engine.run_record import CONFIG, LATEST, read_metrics
from hrnet.study.plan.identity import describe_differences, stored_config_differences
from hrnet.study.plan.spec import PlannedRun

__all__ = ["SESSIONS", "CHILD_LOG", "STALE", "UNVERIFIED", "STALE_DIR", "read_sessions", "last_error_line", "epochs_done",
           "run_status", "move_stale"]

SESSIONS = "study_sessions.json"
CHILD_LOG = "stdout.log"
#: run_status of a folder whose run trained with another config than the plan's (``identity.py``).
STALE = "stale"
#: A run folder with records but no config.yaml: nothing says what it trained, so it is not counted.
UNVERIFIED = "unverified"
#: Where ``move_stale`` puts such a folder: ``<out>/stale/<name>-<time>/`` beside ``<out>/runs/``.
STALE_DIR = "stale"
#: Exit statuses of a trainer stopped at a checkpoint by SIGINT / SIGTERM (resumable, not failed).
STOPPED_STATUSES = (128 + signal.SIGINT, 128 + signal.SIGTERM)


def read_sessions(run_dir: str) -> List[Dict[str, Any]]:
    """The run's ``study_sessions.json`` records (``[]`` without a readable one)."""
    try:
        with open(os.path.join(run_dir, SESSIONS), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, list) else []
    except (OSError, ValueError):
        return []


def last_error_line(run_dir: str) -> str:
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


def _epochs(info: Mapping[str, Any]) -> int:
    done = info.get("epochs_completed", 0)
    return done if isinstance(done, int) and not isinstance(done, bool) else 0


def epochs_done(run_dir: str) -> int:
    """Epochs completed according to the run's ``metrics.json`` (0 without one)."""
    return _epochs(read_metrics(run_dir)[0])


def run_status(run: PlannedRun, info: Optional[Mapping[str, Any]] = None,
               sessions: Optional[Sequence[Mapping[str, Any]]] = None) -> Tuple[str, str]:
    """(status, reason) of a planned run's folder: ``stale`` | ``unverified`` | ``finished`` | ``diverged`` |
    ``failed`` | ``partial`` | ``not run``.

    ``stale``: the folder's ``config.yaml`` is not the planned config (``identity.py``: what may
    differ); the reason lists the differing keys, stored -> planned. Such a run counts for nothing
    and is never resumed. ``unverified``: records without ``config.yaml`` (the trainer writes it
    before anything else), so nothing says what the run trained: counted for nothing either.
    "finished" needs the planned epochs: a run finished at 2 epochs is partial once the study asks
    for 3 (``TRAIN.END_EPOCH`` raised), and is resumed rather than counted. ``failed``: the last
    training process exited with an error (not a stop at a checkpoint). ``info`` / ``sessions``:
    the folder's metrics.json and session records when the caller has read them already.
    """
    diffs = stored_config_differences(run.run_dir, run.config, run.opts)
    if diffs:
        return STALE, describe_differences(diffs)
    if info is None:
        info = read_metrics(run.run_dir)[0]
    if sessions is None:
        sessions = read_sessions(run.run_dir)
    status, done = info.get("status"), _epochs(info)
    last = sessions[-1] if sessions else {}
    last_rc, outcome = last.get("exit_status"), last.get("outcome")
    if diffs is None and status:
        return UNVERIFIED, f"no {CONFIG}: cannot be checked against the plan, so it counts for nothing"
    if status == "finished" and done >= run.end_epoch:
        return "finished", ""
    if status == "diverged":
        return "diverged", last_error_line(run.run_dir)
    # the run folder's outcome where the executor recorded it (a launcher's exit status hides a
    # rank's: torchrun exits 1 for a run stopped at a checkpoint); the exit status otherwise
    if outcome == "failed" or (not outcome and last_rc not in (None, 0) + STOPPED_STATUSES):
        return "failed", f"exit status {last_rc}: {last_error_line(run.run_dir)}"
    if status or os.path.isfile(os.path.join(run.run_dir, LATEST)):
        return "partial", f"{done}/{run.end_epoch} epochs"
    return "not run", ""


def move_stale(run: PlannedRun) -> str:
    """Move a stale run's folder aside, to ``<out>/stale/<name>-<YYYYmmdd-HHMMSS>/`` (never deleted),
    so the planned run can train in its place; returns the new path."""
    import time

    out = os.path.dirname(os.path.dirname(run.run_dir))
    base = os.path.join(out, STALE_DIR, f"{run.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    dest, i = base, 1
    while os.path.exists(dest):
        dest, i = f"{base}-{i}", i + 1
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    os.rename(run.run_dir, dest)
    return dest
