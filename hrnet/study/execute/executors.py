"""How a study's runs get trained: one small interface, the local executor, and what both share.

The runner (``runner.py``) keeps the books: which runs to train, the progress and ETA lines,
failures, Ctrl-C. An :class:`Executor` only starts a run's ``tools/train.py`` command, polls it
and stops it:

- :class:`LocalExecutor`: subprocesses on this machine, one per slot (``CUDA_VISIBLE_DEVICES``);
- ``RayExecutor`` (``ray_executor.py``, imported only by :func:`make_executor` when asked, so this
  path needs no Ray): one Ray task per run on a cluster.

Both start the same process through :class:`Child`: the run's command with ``--resume`` decided
from its folder when the process starts, its output appended to ``<run>/stdout.log`` and one
record per process appended to ``<run>/study_sessions.json`` (wall time, exit status, host, thread
count, code version, and the ``outcome`` read from the run folder: a launcher's exit status does not
tell, torchrun exits 1 whatever its ranks did). A trainer dies with the process that started it
(``PR_SET_PDEATHSIG``): a study driver killed outright (SIGKILL) leaves no trainer behind.
"""
from __future__ import annotations

import datetime
import functools
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from configs import ConfigError
from hrnet.engine.run_record import LATEST, find_run_files, read_metrics
from hrnet.engine.signals import load_libc, set_parent_death_signal
from hrnet.runtime.checkpoint import write_json
from hrnet.runtime.provenance import code_version, project_relative
from hrnet.study.plan.runs import CHILD_LOG, SESSIONS, epochs_done, read_sessions
from hrnet.study.plan.spec import PlannedRun

__all__ = ["Executor", "LocalExecutor", "Attempt", "Child", "ExecutorError", "run_command", "CLUSTER_INSTALL",
           "OUTCOMES", "process_outcome", "recorded_command", "signalled_rank"]

#: What installs the Ray executor's dependency (setup.py's ``cluster`` extra).
CLUSTER_INSTALL = 'pip install -e ".[cluster]"'


class ExecutorError(ConfigError):
    """An executor that cannot run the study here (Ray missing, a study folder the workers cannot see)."""


def run_command(run: PlannedRun, train_command: Sequence[str]) -> Tuple[List[str], bool]:
    """The run's command and whether it resumes, decided from its folder now (call it when the
    process starts, not earlier: a retried Ray task finds the checkpoint its killed attempt left).

    A folder that already holds run files but no checkpoint (a run that failed while setting up)
    restarts from scratch through ``--resume`` as well (the trainer says so in its log).
    """
    resume = os.path.isfile(os.path.join(run.run_dir, LATEST)) or bool(find_run_files(run.run_dir))
    return list(train_command) + ["--cfg", run.config] + (["--resume"] if resume else []) + list(run.opts), resume


# ---------------------------------------------------------------------------- one training process
#: How a training process ended (``Attempt.outcome``, ``study_sessions.json`` "outcome"): all epochs
#: trained; stopped at a checkpoint by a signal (resumable); a non-finite loss; an error of its own;
#: ended without a word (SIGKILL, the OOM killer, a lost node: resumable from its last checkpoint).
OUTCOMES = ("finished", "interrupted", "diverged", "failed", "killed")
_STOPPED = (128 + signal.SIGINT, 128 + signal.SIGTERM)


@dataclass
class Attempt:
    """What one training process of a run did, as the runner books it.

    ``exit_status`` None: no process ran (stopped while queued; or ``error`` says why it could not).
    ``wall_s``: seconds the process ran; ``where``: ``GPU 0``, ``node 10.0.0.3 GPU 1`` or empty;
    ``outcome``: one of :data:`OUTCOMES` (:func:`process_outcome`), empty when no process ran.
    """
    exit_status: Optional[int]
    wall_s: float = 0.0
    epochs_before: int = 0
    epochs_after: int = 0
    where: str = ""
    error: str = ""
    outcome: str = ""

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _mark(info: Mapping[str, Any]) -> Tuple[Any, ...]:
    """What changes whenever a trainer rewrites metrics.json (its wall time always grows)."""
    return info.get("status"), info.get("epochs_completed"), info.get("wall_time_s")


def process_outcome(rc: int, before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """How a training process ended (:data:`OUTCOMES`), from the run folder's ``metrics.json``
    before (``before``) and after (``after``) it ran, and its exit status ``rc`` only where the
    folder cannot tell: a launcher's exit status is not its trainer's (torchrun exits 1 when a rank
    stopped at a checkpoint or was killed).

    A process that rewrote metrics.json said how it ended (``running`` there: it died mid-epoch
    without a word, killed). One that wrote nothing ended before its first record: killed by a
    signal (negative status), stopped (130 / 143), else failed in its set-up.
    """
    if after and _mark(after) != _mark(before):
        status = after.get("status")
        return status if status in OUTCOMES else "killed"
    if rc == 0 and after.get("status") == "finished":
        return "finished"
    if rc < 0:
        return "killed"
    return "interrupted" if rc in _STOPPED else "failed"


def signalled_rank(output: str) -> Optional[int]:
    """The signal that killed a rank, from torchrun's failure summary in ``output`` (its ``exitcode``
    lines, ``-9`` for SIGKILL), or None: the other ranks of a run whose rank was killed from outside
    fail on their next collective, so the run folder says "failed" though the run is resumable."""
    summary = output[output.rfind("Failures:"):] if "Root Cause (first observed failure)" in output else ""
    codes = [int(c) for c in re.findall(r"exitcode\s*:\s*(-?\d+)", summary)]
    return next((-c for c in codes if c < 0), None)


def recorded_command(cmd: Sequence[str]) -> str:
    """The command as ``study_sessions.json`` records it: the launcher by its name, paths inside the
    project relative to it (``python tools/train.py --cfg experiments/hand_adam.yaml ...``); paths
    elsewhere stay absolute."""
    words = [os.path.basename(cmd[0])] + [project_relative(w) if os.path.isabs(w) else w for w in cmd[1:]]
    return shlex.join(words)


def _child_setup(death_signal: int) -> None:
    """``preexec_fn`` of a trainer: ``death_signal`` when its parent (the study driver, a Ray worker)
    dies, however it dies; and unblock the signals a Ray worker's thread blocks (the mask is
    inherited: a trainer that never sees SIGINT / SIGTERM cannot stop at a checkpoint)."""
    set_parent_death_signal(death_signal)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (signal.SIGINT, signal.SIGTERM))


class Child:
    """One ``tools/train.py`` process of a run, in its own session, output appended to its log.

    ``slot``: a ``CUDA_VISIBLE_DEVICES`` value or None (inherit); ``threads``: its ``OMP_NUM_THREADS``
    (None: inherit; torch takes its intra-op thread count from it); ``cwd``: its working directory
    (None: this process's). A terminal's Ctrl-C reaches only the study, which forwards it exactly
    once (a second SIGINT would make the trainer abort without its final metrics.json).

    The trainer ends with its parent: SIGTERM (a stop at a checkpoint) when a local study driver
    dies, SIGKILL when a Ray worker does (``in_ray_worker``: a retried task must never meet the dead
    worker's trainer still writing).
    """

    def __init__(self, run: PlannedRun, train_command: Sequence[str], slot: Optional[str] = None,
                 where: str = "", cwd: Optional[str] = None, in_ray_worker: bool = False,
                 threads: Optional[int] = None) -> None:
        os.makedirs(run.run_dir, exist_ok=True)
        self.run, self.slot, self.where = run, slot, where
        self.cmd, self.resumed = run_command(run, train_command)
        self.before = read_metrics(run.run_dir)[0]
        self.epochs_before, self.start = epochs_done(run.run_dir), time.time()
        env = dict(os.environ)
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        inherited = env.get("OMP_NUM_THREADS", "")
        self.threads = threads if threads is not None else (int(inherited) if inherited.isdigit() else None)
        self.code = code_version()  # of this node's checkout: what the trainer runs
        self.log = open(os.path.join(run.run_dir, CHILD_LOG), "a", encoding="utf-8")
        self.log.write(f"\n# {datetime.datetime.now().isoformat(timespec='seconds')} {socket.gethostname()} "
                       f"{'CUDA_VISIBLE_DEVICES=' + slot + ' ' if slot is not None else ''}{shlex.join(self.cmd)}\n")
        self.log.flush()
        self.log_start = self.log.tell()  # this process's output starts here
        load_libc()  # here: the forked child may only call into it
        death = signal.SIGKILL if in_ray_worker else signal.SIGTERM
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                     start_new_session=True, preexec_fn=functools.partial(_child_setup, death))

    def _output(self) -> str:
        """What this process wrote to the run's log (its last 64 kB)."""
        try:
            with open(os.path.join(self.run.run_dir, CHILD_LOG), "rb") as f:
                f.seek(max(self.log_start, os.path.getsize(f.name) - (1 << 16)))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def poll(self) -> Optional[Attempt]:
        rc = self.proc.poll()
        return None if rc is None else self.finish(rc)

    def send_signal(self, signum: int) -> None:
        try:
            self.proc.send_signal(signum)
        except (ProcessLookupError, OSError):
            pass

    def finish(self, rc: int) -> Attempt:
        """Close the log, append the session record; what this process did."""
        self.log.close()
        wall = time.time() - self.start
        info = read_metrics(self.run.run_dir)[0]
        after, outcome = epochs_done(self.run.run_dir), process_outcome(rc, self.before, info)
        if outcome in ("failed", "interrupted") and signalled_rank(self._output()) is not None:
            outcome = "killed"  # a torchrun rank killed from outside: the others failed or stopped after it
        _append_session(self.run.run_dir, {
            "started": datetime.datetime.fromtimestamp(self.start).isoformat(timespec="seconds"),
            "wall_s": round(wall, 2), "exit_status": rc, "outcome": outcome, "device": self.slot,
            "threads": self.threads, "host": socket.gethostname(),
            "resumed": self.resumed, "epochs_before": self.epochs_before, "epochs_after": after,
            "command": recorded_command(self.cmd), "code_version": self.code})
        return Attempt(rc, wall, self.epochs_before, after, self.where, outcome=outcome)


def _append_session(run_dir: str, record: Mapping[str, Any]) -> None:
    write_json(read_sessions(run_dir) + [dict(record)], os.path.join(run_dir, SESSIONS))


# ---------------------------------------------------------------------------- executors
class Executor:
    """Starts, polls and stops runs; the runner decides which runs and keeps the books."""

    #: Runs the runner hands over at once; None: all of them (the executor queues them itself).
    max_in_flight: Optional[int] = 1

    def open(self) -> None:
        """Get ready to start runs (called once, only when there is something to train)."""

    def describe(self) -> str:
        """How runs are spread, for the study's first line (``2 at a time``)."""
        raise NotImplementedError

    def parallel(self) -> int:
        """Runs that train at the same time (the ETA divides the work left by it)."""
        raise NotImplementedError

    def start(self, run: PlannedRun) -> Any:
        """Start training ``run``; a handle for :meth:`poll` and :meth:`stop`."""
        raise NotImplementedError

    def poll(self, job: Any) -> Optional[Attempt]:
        """None while the run trains (or waits); then what its process did."""
        raise NotImplementedError

    def stop(self, job: Any, signum: int) -> None:
        """Ask the run to stop at a checkpoint (a queued one: not to start); called again: at once."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what :meth:`open` took (called once at the end, opened or not)."""


class LocalExecutor(Executor):
    """One subprocess per slot on this machine: ``slots`` are None (inherit the environment) or a
    ``CUDA_VISIBLE_DEVICES`` value per concurrent process; ``train_command`` is the launcher and
    ``tools/train.py`` (e.g. ``[python, tools/train.py]`` or ``[torchrun, ..., tools/train.py]``);
    ``threads``: each process's ``OMP_NUM_THREADS`` (None: inherit), so that N CPU runs side by side
    share the cores instead of oversubscribing them."""

    def __init__(self, train_command: Sequence[str], slots: Sequence[Optional[str]] = (None,),
                 threads: Optional[int] = None) -> None:
        self.train_command, self.slots, self.threads = list(train_command), list(slots), threads
        self.max_in_flight = len(self.slots)
        self._busy: Dict[int, Child] = {}

    def describe(self) -> str:
        return f"{len(self.slots)} at a time" + (f", {self.threads} thread(s) each" if self.threads else "")

    def parallel(self) -> int:
        return len(self.slots)

    def start(self, run: PlannedRun) -> int:
        i = next(i for i in range(len(self.slots)) if i not in self._busy)
        slot = self.slots[i]
        self._busy[i] = Child(run, self.train_command, slot, f"GPU {slot}" if slot is not None else "",
                              threads=self.threads)
        return i

    def poll(self, job: int) -> Optional[Attempt]:
        attempt = self._busy[job].poll()
        if attempt is not None:
            del self._busy[job]
        return attempt

    def stop(self, job: int, signum: int) -> None:
        self._busy[job].send_signal(signum)
