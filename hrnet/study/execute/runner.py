"""Training a study's planned runs: skip the finished, resume the partial, report, through an executor.

The bookkeeping lives here, once for every executor (``executors.py``: local subprocesses, or Ray
tasks on a cluster): the triage of the plan, the progress and ETA lines, the failures, Ctrl-C.
Besides the trainer's files, each run folder gets ``stdout.log`` (the trainer's output) and
``study_sessions.json`` (one record per training process: wall time, exit status, host).
"""
from __future__ import annotations

import collections
import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterator, List, Sequence, Tuple

from hrnet.engine.progress import fmt_duration
from hrnet.engine.run_record import LATEST, read_metrics
from hrnet.study.execute.executors import Attempt, Executor
from hrnet.study.plan.runs import CHILD_LOG, STALE, UNVERIFIED, epochs_done, last_error_line, move_stale, run_status
from hrnet.study.plan.spec import PlannedRun, StudyError

__all__ = ["ExecutionResult", "execute", "run_state"]


def run_state(run: PlannedRun) -> str:
    """``finished`` (all planned epochs), ``diverged`` (not retried: it would diverge again),
    ``stale`` (trained with another config than the plan's), ``partial`` (a checkpoint to resume
    from) or ``new``; from :func:`runs.run_status`."""
    status, _ = run_status(run)
    if status in ("finished", "diverged", STALE):
        return status
    if status == UNVERIFIED:  # treated as stale: nothing says what it trained
        return STALE
    return "partial" if os.path.isfile(os.path.join(run.run_dir, LATEST)) else "new"


# ---------------------------------------------------------------------------- execution
@dataclass
class ExecutionResult:
    """What :func:`execute` did: finished / failed (name, reason) runs; ``interrupted`` by a signal."""
    finished: List[str] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)
    skipped: List[str] = field(default_factory=list)
    interrupted: bool = False


def execute(runs: Sequence[PlannedRun], executor: Executor, echo: Callable[[str], None] = print,
            move_stale_runs: bool = False) -> ExecutionResult:
    """Train the runs that are not finished through ``executor`` (see ``executors.py``).

    A folder holding a run of another config than the plan's (``stale``) is never reused: without
    ``move_stale_runs`` nothing trains and ``StudyError`` says how to go on; with it, each such
    folder is moved to ``<out>/stale/`` (``runs.move_stale``) and the planned run trains afresh.

    A finished run is skipped, a diverged one not retried; a run with a checkpoint resumes (the
    executor's process decides ``--resume`` from the folder when it starts). SIGINT / SIGTERM to this
    process ask the executor to stop every run at a checkpoint (a second one: at once); the remaining
    runs are not started and ``interrupted`` is set. Prints one line per finished run with an ETA of
    the rest of the study.
    """
    result = ExecutionResult()
    _set_stale_aside(runs, move_stale_runs, echo)
    todo: Deque[PlannedRun] = collections.deque()
    for run in runs:
        state = run_state(run)
        if state == "finished":
            result.skipped.append(run.name)
        elif state == "diverged":
            result.failed.append((run.name, "diverged before; not retried (delete the folder to retry)"))
        else:
            todo.append(run)
    try:
        if todo:
            executor.open()
        echo(f"[study] {len(runs)} runs: {len(result.skipped)} finished (skipped), {len(todo)} to train "
             f"({sum(run_state(r) == 'partial' for r in todo)} to resume), {len(result.failed)} diverged before"
             + (f"; {executor.describe()}; each run's output in <run>/{CHILD_LOG}" if todo else ""))
        if todo:
            _train(todo, executor, result, echo)
    finally:
        executor.close()
    return result


def _set_stale_aside(runs: Sequence[PlannedRun], move: bool, echo: Callable[[str], None]) -> None:
    """Refuse (one line) or, with ``move``, move aside the folders whose run is not the planned one."""
    stale = [(r, run_status(r)[1]) for r in runs if run_state(r) == STALE]
    if stale and not move:
        shown = "; ".join(f"{r.name} ({why})" for r, why in stale[:2]) + (" ..." if len(stale) > 2 else "")
        raise StudyError(f"{len(stale)} run folder(s) hold a run of another config than the plan (stored -> "
                         f"planned, or no config.yaml): {shown}; restore the plan, or pass --move-stale to move them to "
                         f"<out>/stale/ and train the planned runs")
    for r, why in stale:
        echo(f"[study] {r.name}: trained with another config ({why}); moved to {move_stale(r)}")


def _train(todo: Deque[PlannedRun], executor: Executor, result: ExecutionResult, echo: Callable[[str], None]) -> None:
    """Hand the runs to the executor as it takes them, book each as it ends; stop on a signal."""
    running: Dict[int, Tuple[Any, PlannedRun]] = {}  # start order -> (executor's handle, run)
    n_total, n_done, n_started, not_started, forwarded = len(todo), 0, 0, 0, 0
    epoch_seconds: List[Tuple[float, int]] = []  # (process wall s, epochs it trained)
    with _stop_requests() as stop:
        while todo or running:
            while todo and not stop and (executor.max_in_flight is None or len(running) < executor.max_in_flight):
                run = todo.popleft()
                running[n_started] = (executor.start(run), run)
                n_started += 1
            while len(stop) > forwarded:  # here, not in the signal handler: executors may do I/O
                for job, _ in running.values():  # a hang-up (the terminal closed) stops them as SIGTERM does
                    executor.stop(job, signal.SIGTERM if stop[forwarded] == signal.SIGHUP else stop[forwarded])
                forwarded += 1
            if not running:
                break
            time.sleep(0.2)
            for key, (job, run) in list(running.items()):
                attempt = executor.poll(job)
                if attempt is None:
                    continue
                del running[key]
                if attempt.exit_status is None and not attempt.error:  # stopped while queued
                    not_started += 1
                    continue
                n_done += 1
                line = _book(run, attempt, result, epoch_seconds, bool(stop))
                eta = _eta(list(todo) + [r for _, r in running.values()], epoch_seconds, executor.parallel())
                echo(f"[study] {n_done}/{n_total} {line}" + ("" if stop else f" | study ETA {eta}"))
    if stop:
        result.interrupted = True
        echo(f"[study] stopped by {signal.Signals(stop[0]).name}: {len(todo) + not_started} run(s) not started; "
             f"runs stopped mid-way kept a checkpoint; run the same command again to continue")


@contextlib.contextmanager
def _stop_requests() -> Iterator[List[int]]:
    """A list that SIGINT / SIGTERM / SIGHUP append their number to while inside (main thread only)."""
    stop: List[int] = []
    old = {}
    if threading.current_thread() is threading.main_thread():
        old = {s: signal.signal(s, lambda signum, frame: stop.append(signum))
               for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _book(run: PlannedRun, attempt: Attempt, result: ExecutionResult, epoch_seconds: List[Tuple[float, int]],
          stopping: bool) -> str:
    """Classify how the run's process ended (into ``result``), by its ``outcome`` (read from the run
    folder: a launcher's exit status is not its trainer's); the progress line of this run."""
    rc, where, outcome = attempt.exit_status, f" ({attempt.where})" if attempt.where else "", attempt.outcome
    head, after = f"{run.arm} seed {run.seed}", attempt.epochs_after
    if after > attempt.epochs_before:
        epoch_seconds.append((attempt.wall_s, after - attempt.epochs_before))
    info, _ = read_metrics(run.run_dir)
    if outcome == "finished" or (not outcome and rc == 0 and info.get("status") == "finished"):
        result.finished.append(run.name)
        final = info.get("final_NME")
        nme = f"final NME {final:.5f}" if isinstance(final, (int, float)) else "final NME -"
        return f"{head}: {nme}, {fmt_duration(attempt.wall_s)}{where}"
    if attempt.error:
        result.failed.append((run.name, attempt.error))
        return f"{head}: failed{where}: {attempt.error}"
    if stopping or outcome == "interrupted" or (not outcome and rc in (128 + signal.SIGINT, 128 + signal.SIGTERM)):
        return f"{head}: stopped after {after}/{run.end_epoch} epochs ({fmt_duration(attempt.wall_s)}); resumable"
    reason = {"diverged": "diverged", "killed": f"killed from outside (exit status {rc}; resumable)"}.get(
        outcome or info.get("status", ""), f"failed (exit status {rc})")
    detail = last_error_line(run.run_dir)
    result.failed.append((run.name, reason + (f": {detail}" if detail else "")))
    return (f"{head}: {reason} after {after}/{run.end_epoch} epochs{where}: {detail or '-'} "
            f"(see {run.run_dir}/{CHILD_LOG})")


def _eta(remaining: Sequence[PlannedRun], epoch_seconds: Sequence[Tuple[float, int]], n_parallel: int) -> str:
    """Seconds per epoch (start-up included) of this session's runs x epochs left / runs in parallel."""
    trained = sum(n for _, n in epoch_seconds)
    if not trained:
        return "after the first run"
    per_epoch = sum(w for w, _ in epoch_seconds) / trained
    left = sum(max(r.end_epoch - epochs_done(r.run_dir), 0) for r in remaining)
    return fmt_duration(left * per_epoch / max(n_parallel, 1)) if left else "0 s"
