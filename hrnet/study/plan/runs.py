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

from hrnet.engine.run_record import LATEST, read_metrics
from hrnet.study.plan.spec import PlannedRun

__all__ = ["SESSIONS", "CHILD_LOG", "read_sessions", "last_error_line", "epochs_done", "run_status"]

SESSIONS = "study_sessions.json"
CHILD_LOG = "stdout.log"
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
    """(status, reason) of a planned run's folder: ``finished`` | ``diverged`` | ``failed`` |
    ``partial`` | ``not run``.

    "finished" needs the planned epochs: a run finished at 2 epochs is partial once the study asks
    for 3 (``TRAIN.END_EPOCH`` raised), and is resumed rather than counted. ``failed``: the last
    training process exited with an error (not a stop at a checkpoint). ``info`` / ``sessions``:
    the folder's metrics.json and session records when the caller has read them already.
    """
    if info is None:
        info = read_metrics(run.run_dir)[0]
    if sessions is None:
        sessions = read_sessions(run.run_dir)
    status, done = info.get("status"), _epochs(info)
    last_rc = sessions[-1].get("exit_status") if sessions else None
    if status == "finished" and done >= run.end_epoch:
        return "finished", ""
    if status == "diverged":
        return "diverged", last_error_line(run.run_dir)
    if last_rc not in (None, 0) + STOPPED_STATUSES:
        return "failed", f"exit status {last_rc}: {last_error_line(run.run_dir)}"
    if status or os.path.isfile(os.path.join(run.run_dir, LATEST)):
        return "partial", f"{done}/{run.end_epoch} epochs"
    return "not run", ""
