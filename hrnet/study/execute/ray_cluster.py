"""The Ray executor: each planned run is one Ray task that runs the run's ``tools/train.py`` command
on a worker of a Ray cluster (``ray start --head`` / ``--address``, or a local instance).

Imported only for ``--executor ray`` (``executors.make_executor``), so the local path needs no Ray.

- Resources: each task asks for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs; Ray sets the
  task's ``CUDA_VISIBLE_DEVICES`` (its GPUs only) and ``OMP_NUM_THREADS`` (its CPUs), which the
  trainer inherits. CPU results depend on the thread count: to reproduce a local run bit for bit,
  give it as many threads (``OMP_NUM_THREADS``) as ``--cpus-per-run``.
- The study folder must be on a filesystem every node sees at the same path: :meth:`RayExecutor.open`
  writes a marker file into it and a probe task on every node must find it (one line of error
  otherwise); every training task checks again (a node that joined later).
- Faults: a task whose worker or node dies, or whose trainer is killed from outside (OOM killer,
  preemption, ``kill``), is retried up to ``max_retries`` times; the retry decides ``--resume`` when
  it starts, so it continues from the run's latest checkpoint (the trainer resumes exactly: same
  final NME). A trainer that fails for its own reasons (exit status 1, 2) is returned, not retried.
  The trainer dies with its worker (``PR_SET_PDEATHSIG``), so a retry never races a stale trainer.
- Ctrl-C of the driver: ``ray.cancel`` raises KeyboardInterrupt in the task, which sends the
  trainer one SIGINT and waits for its checkpoint; a queued task is dropped.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import time
import uuid
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from hrnet.study.execute.executors import CLUSTER_INSTALL, Attempt, Child, Executor, ExecutorError
from hrnet.study.plan.spec import PlannedRun

__all__ = ["RayExecutor", "TrainerKilled", "node_problem", "MARKER_PREFIX"]

#: The driver's marker in the study folder: ``.ray_marker_<random hex>`` (one per driver session).
MARKER_PREFIX = ".ray_marker_"
_KILLED = (128 + signal.SIGINT, 128 + signal.SIGTERM)  # a trainer stopped by a signal it caught


class TrainerKilled(Exception):
    """The trainer was killed from outside the study; Ray retries the task (``retry_exceptions``)."""


def node_problem(marker: str, files: Sequence[str] = ()) -> str:
    """Why this node cannot train the study's runs ('' when it can): the driver's ``marker`` is not
    in the study folder here, or one of ``files`` (the python, ``tools/train.py``) is missing."""
    node = ray.util.get_node_ip_address()
    if not os.path.isfile(marker):
        return (f"the study folder {os.path.dirname(marker)} is not the driver's on Ray node {node} (the marker "
                f"{os.path.basename(marker)} the driver wrote is missing there): the study folder (--out) must be on a "
                f"filesystem every node sees at the same path (NFS, a cluster file system)")
    missing = [p for p in files if not os.path.exists(p)]
    if missing:
        return (f"Ray node {node} has no {missing[0]}: every node needs the checkout and its Python environment "
                f"at the same path ({CLUSTER_INSTALL})")
    return ""


@ray.remote(num_cpus=0, max_retries=0)
def _probe(marker: str, files: Sequence[str]) -> str:
    return node_problem(marker, files)


def _wait(child: Child, interruptible: bool = True) -> int:
    """The trainer's exit status; polls (a blocking wait would hold back ray.cancel's KeyboardInterrupt)."""
    while True:
        try:
            rc = child.proc.poll()
            if rc is not None:
                return rc
            time.sleep(0.2)
        except KeyboardInterrupt:
            if interruptible:
                raise


def _train(run: PlannedRun, train_command: List[str], where: str, cwd: str) -> Attempt:
    """One training process of ``run``; on ``ray.cancel`` it gets one SIGINT and may checkpoint."""
    child = None
    try:
        child = Child(run, train_command, where=where, cwd=cwd, in_ray_worker=True)
        rc = _wait(child)
    except KeyboardInterrupt:  # ray.cancel (the driver's Ctrl-C): the trainer checkpoints and exits
        if child is None:
            return Attempt(None)
        child.send_signal(signal.SIGINT)
        return child.finish(_wait(child, interruptible=False))
    attempt = child.finish(rc)
    if rc < 0 or rc in _KILLED:
        raise TrainerKilled(f"{run.name}: trainer on {where} killed from outside (exit status {rc})")
    return attempt


@ray.remote(max_retries=0)
def _train_task(run: PlannedRun, train_command: List[str], marker: str, files: List[str], cwd: str) -> Dict[str, Any]:
    """Runs in a Ray worker: one training process of ``run`` in the driver's working directory
    ``cwd`` (relative paths in overrides mean what they mean locally); an :class:`Attempt` as a dict."""
    node, gpus = ray.util.get_node_ip_address(), os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f"node {node}" + (f" GPU {gpus}" if gpus else "")
    problem = node_problem(marker, files)
    if problem:
        return Attempt(None, where=where, error=problem).to_dict()
    # ray.cancel raises KeyboardInterrupt through a simulated SIGINT, which does nothing while SIGINT
    # is ignored (a worker whose raylet was started from a background shell job inherits that).
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _train(run, train_command, where, cwd).to_dict()
    finally:
        signal.signal(signal.SIGINT, old)


class RayExecutor(Executor):
    """One Ray task per run on the cluster at ``address`` (None: a local instance; ``auto``: the
    cluster this node belongs to), each asking for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs
    (fractions share a device); Ray queues what does not fit. A Ray connection made before is reused."""

    max_in_flight = None

    def __init__(self, train_command: Sequence[str], out_dir: str, address: Optional[str] = None,
                 gpus_per_run: float = 0.0, cpus_per_run: float = 1.0, max_retries: int = 3) -> None:
        self.train_command, self.out_dir, self.address = list(train_command), os.path.abspath(out_dir), address
        self.gpus, self.cpus, self.max_retries = float(gpus_per_run), float(cpus_per_run), int(max_retries)
        self.marker = os.path.join(self.out_dir, MARKER_PREFIX + uuid.uuid4().hex)
        # The python and tools/train.py by absolute path, the working directory: every node needs them too.
        self.cwd = os.getcwd()
        self.files = [p for p in self.train_command if os.path.isabs(p) and os.path.exists(p)] + [self.cwd]
        self._owns_ray = False
        self._cancelled: Set[str] = set()  # jobs cancelled once (ray.cancel raised KeyboardInterrupt in them)
        self._killed: Set[str] = set()  # jobs cancelled twice (their worker killed)

    def open(self) -> None:
        if not ray.is_initialized():
            _check_reachable(self.address)
            local = {"include_dashboard": False} if self.address is None else {}
            try:
                ray.init(address=self.address, logging_level=logging.WARNING, **local)
            except ConnectionError as exc:
                raise ExecutorError(f"--ray-address {self.address}: {_one_line(exc)}") from exc
            self._owns_ray = True
        os.makedirs(self.out_dir, exist_ok=True)
        with open(self.marker, "w", encoding="utf-8") as f:
            f.write("written by tools/study.py --executor ray; every Ray node must see this file\n")
        self._check_nodes()

    def _nodes(self) -> List[Mapping[str, Any]]:
        return [n for n in ray.nodes() if n.get("Alive")]

    def _fits(self, resources: Mapping[str, float]) -> int:
        """How many runs fit a node with ``resources`` at once."""
        counts = [int(resources.get("CPU", 0) // self.cpus)] if self.cpus > 0 else []
        if self.gpus > 0:
            counts.append(int(resources.get("GPU", 0) // self.gpus))
        return min(counts) if counts else 1

    def _check_nodes(self) -> None:
        """Every node sees the study folder and the trainer; some node fits a run."""
        nodes = self._nodes()
        if not any(self._fits(n["Resources"]) for n in nodes):
            have = ", ".join(f"{n['NodeManagerAddress']} ({n['Resources'].get('CPU', 0):g} CPU, "
                             f"{n['Resources'].get('GPU', 0):g} GPU)" for n in nodes)
            raise ExecutorError(f"no node of the Ray cluster fits a run of {self.cpus:g} CPU and {self.gpus:g} GPU "
                                f"(--cpus-per-run, --gpus-per-run); nodes: {have}")
        refs = [_probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(self.marker, self.files) for n in nodes]
        try:
            problems = ray.get(refs, timeout=300)
        except ray.exceptions.RayError as exc:
            raise ExecutorError(f"a Ray node cannot run the study's code ({_one_line(exc)}): every node needs the "
                                f"checkout and its Python environment at the same path ({CLUSTER_INSTALL})") from exc
        problem = next((p for p in problems if p), "")
        if problem:
            raise ExecutorError(problem)

    def describe(self) -> str:
        nodes = self._nodes()
        total = {k: sum(n["Resources"].get(k, 0) for n in nodes) for k in ("CPU", "GPU")}
        return (f"Ray cluster of {len(nodes)} node(s), {total['CPU']:g} CPU, {total['GPU']:g} GPU; {self.cpus:g} CPU "
                f"and {self.gpus:g} GPU per run, {self.parallel()} at a time")

    def parallel(self) -> int:
        return max(sum(self._fits(n["Resources"]) for n in self._nodes()), 1)

    def start(self, run: PlannedRun) -> Any:
        return _train_task.options(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.max_retries,
                                   retry_exceptions=[TrainerKilled], name=f"train {run.name}").remote(
            run, self.train_command, self.marker, self.files, self.cwd)

    def poll(self, job: Any) -> Optional[Attempt]:
        if not ray.wait([job], timeout=0)[0]:
            return None
        try:
            return Attempt(**ray.get(job))
        except ray.exceptions.TaskCancelledError:  # queued, or killed by a second stop (resumable)
            return Attempt(-signal.SIGKILL if job.hex() in self._killed else None)
        except ray.exceptions.RayError as exc:  # its last process is in the run's session record
            cause = getattr(exc, "cause", None)
            why = (f"Ray gave up after {self.max_retries} retries" if cause is None or isinstance(cause, TrainerKilled)
                   else "its Ray task failed")
            return Attempt(None, error=f"{why}: {_one_line(exc)}")

    def stop(self, job: Any, signum: int) -> None:
        """The first call raises KeyboardInterrupt in the task (the trainer gets one SIGINT and
        checkpoints); a second one kills the worker, and with it the trainer, at once."""
        force = job.hex() in self._cancelled
        (self._killed if force else self._cancelled).add(job.hex())
        ray.cancel(job, force=force)

    def close(self) -> None:
        try:
            os.remove(self.marker)
        except OSError:
            pass
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False


def _check_reachable(address: Optional[str]) -> None:
    """Fail in seconds where nothing listens at a ``HOST:PORT`` address (``ray.init`` would retry
    for minutes); ``auto``, ``ray://`` and None are Ray's to resolve."""
    host, sep, port = (address or "").rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as exc:
        raise ExecutorError(f"--ray-address {address}: no Ray cluster answers there ({exc.strerror or exc}); start "
                            f"one with ray start --head, or pass --ray-address auto on a node of the cluster") from exc


def _one_line(exc: BaseException) -> str:
    """The first line of a Ray error (a task's own exception when it has one)."""
    cause = getattr(exc, "cause", None) or exc
    lines = str(cause).strip().splitlines()
    return lines[0][:300] if lines else type(cause).__name__
