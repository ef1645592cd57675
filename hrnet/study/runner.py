"""Training a study's planned runs: skip the finished, resume the partial, one subprocess per slot.

Besides the trainer's files, the runner writes into each run folder ``stdout.log`` (the child's
output) and ``study_sessions.json`` (one record per training process: wall time, exit status).
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

from hrnet.engine.run_record import LATEST, find_run_files, read_metrics
from hrnet.runtime.checkpoint import write_json
from hrnet.study.spec import PlannedRun

__all__ = ["ExecutionResult", "execute", "run_state", "read_sessions", "last_error_line", "fmt_duration",
           "SESSIONS", "CHILD_LOG"]

SESSIONS = "study_sessions.json"
CHILD_LOG = "stdout.log"


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


def read_sessions(run_dir: str) -> List[Dict[str, Any]]:
    try:
        with open(os.path.join(run_dir, SESSIONS), encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, list) else []
    except (OSError, ValueError):
        return []


def _append_session(run_dir: str, record: Mapping[str, Any]) -> None:
    write_json(read_sessions(run_dir) + [dict(record)], os.path.join(run_dir, SESSIONS))


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


def fmt_duration(s: Optional[float]) -> str:
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
        return f"{head}: {nme}, {fmt_duration(wall)}{where}"
    if stopping or rc in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        return f"{head}: stopped after {after}/{run.end_epoch} epochs ({fmt_duration(wall)}); resumable"
    status = info.get("status")
    reason = "diverged" if status == "diverged" else f"failed (exit status {rc})"
    detail = last_error_line(run.run_dir)
    result.failed.append((run.name, reason + (f": {detail}" if detail else "")))
    return f"{head}: {reason} after {after}/{run.end_epoch} epochs{where}: {detail or '-'} (see {run.run_dir}/{CHILD_LOG})"


def _eta(remaining: Sequence[PlannedRun], epoch_seconds: Sequence[Tuple[float, int]], n_slots: int) -> str:
    """Seconds per epoch (start-up included) of this session's runs x epochs left / slots."""
    trained = sum(n for _, n in epoch_seconds)
    if not trained:
        return "after the first run"
    per_epoch = sum(w for w, _ in epoch_seconds) / trained
    left = sum(max(r.end_epoch - _epochs_done(r.run_dir), 0) for r in remaining)
    return fmt_duration(left * per_epoch / max(n_slots, 1)) if left else "0 s"
