"""The Ray executor: each planned run is one Ray task that runs the run's ``tools/train.py`` command
on a worker of a Ray cluster (``ray start --head`` / ``--address``, or a local instance).

Imported only for ``--executor ray`` (``executors.make_executor``), so the local path needs no Ray.

- Resources: each task asks for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs; Ray sets the
  task's ``CUDA_VISIBLE_DEVICES`` (its GPUs only). The trainer's ``OMP_NUM_THREADS`` is the study's
  ``threads`` (as in the local executor, whatever the environment), else its CPUs: CPU results
  depend on the thread count, and so a run gives the local executor's numbers bit for bit.
- The study folder must be on a filesystem every node sees at the same path, and every node must
  run the driver's code: :meth:`RayExecutor.open` writes a marker file into the folder and a probe
  task on every node must find it and the driver's ``code_version`` (one line of error otherwise).
  Every training task checks again (a node that joined later): a node that fails is kept out
  (``label_selector`` on its node id) and the run goes to another node.
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

from hrnet.runtime.provenance import code_version, describe, same_code
from hrnet.study.execute.executors import CLUSTER_INSTALL, Attempt, Child, Executor, ExecutorError
from hrnet.study.plan.spec import PlannedRun

__all__ = ["RayExecutor", "TrainerKilled", "node_problem", "MARKER_PREFIX", "NODE_LABEL"]

#: The driver's marker in the study folder: ``.ray_marker_<random hex>`` (one per driver session).
MARKER_PREFIX = ".ray_marker_"
#: The label every Ray node carries with its id: runs keep out of the nodes that failed their check.
NODE_LABEL = "ray.io/node-id"


class TrainerKilled(Exception):
    """The trainer was killed from outside the study; Ray retries the task (``retry_exceptions``)."""


def node_problem(marker: str, files: Sequence[str] = (), code: Optional[Mapping[str, Any]] = None) -> str:
    """Why this node cannot train the study's runs ('' when it can): the driver's ``marker`` is not
    in the study folder here, one of ``files`` (the python, ``tools/train.py``) is missing, or the
    checkout here is not the driver's ``code`` (``hrnet.runtime.provenance.code_version``)."""
    node = ray.util.get_node_ip_address()
    if not os.path.isfile(marker):
        return (f"the study folder {os.path.dirname(marker)} is not the driver's on Ray node {node} (the marker "
                f"{os.path.basename(marker)} the driver wrote is missing there): the study folder (--out) must be on a "
                f"filesystem every node sees at the same path (NFS, a cluster file system)")
    missing = [p for p in files if not os.path.exists(p)]
    if missing:
        return (f"Ray node {node} has no {missing[0]}: every node needs the checkout and its Python environment "
                f"at the same path ({CLUSTER_INSTALL})")
    here = code_version() if code is not None else None
    if code is not None and not same_code(here, code):
        return (f"Ray node {node} runs other code than the driver ({describe(here)} there, {describe(code)} on the "
                f"driver): every node needs the same checkout at the same path ({CLUSTER_INSTALL})")
    return ""


@ray.remote(num_cpus=0, max_retries=0)
def _probe(marker: str, files: Sequence[str], code: Mapping[str, Any]) -> str:
    return node_problem(marker, files, code)


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


def _train(run: PlannedRun, train_command: List[str], where: str, cwd: str, threads: Optional[int]) -> Attempt:
    """One training process of ``run``; on ``ray.cancel`` it gets one SIGINT and may checkpoint."""
    child = None
    try:
        child = Child(run, train_command, where=where, cwd=cwd, in_ray_worker=True, threads=threads)
        rc = _wait(child)
    except KeyboardInterrupt:  # ray.cancel (the driver's Ctrl-C): the trainer checkpoints and exits
        if child is None:
            return Attempt(None)
        child.send_signal(signal.SIGINT)
        return child.finish(_wait(child, interruptible=False))
    attempt = child.finish(rc)
    # Judged from the run folder (torchrun exits 1 whatever its ranks did): a trainer stopped by a
    # signal nobody in the study sent, or killed without a word, is retried from its checkpoint.
    if attempt.outcome in ("interrupted", "killed"):
        raise TrainerKilled(f"{run.name}: trainer on {where} {attempt.outcome} from outside (exit status {rc})")
    return attempt


@ray.remote(max_retries=0)
def _train_task(run: PlannedRun, train_command: List[str], marker: str, files: List[str], cwd: str,
                code: Mapping[str, Any], threads: Optional[int]) -> Dict[str, Any]:
    """Runs in a Ray worker: one training process of ``run`` in the driver's working directory
    ``cwd`` (relative paths in overrides mean what they mean locally), ``threads`` its
    OMP_NUM_THREADS; an :class:`Attempt` as a dict, or ``{"unfit_node", "problem"}`` when this node
    fails :func:`node_problem` (the driver keeps the node out and starts the run elsewhere)."""
    node, gpus = ray.util.get_node_ip_address(), os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f"node {node}" + (f" GPU {gpus}" if gpus else "")
    problem = node_problem(marker, files, code)
    if problem:
        return {"unfit_node": ray.get_runtime_context().get_node_id(), "problem": problem}
    # ray.cancel raises KeyboardInterrupt through a simulated SIGINT, which does nothing while SIGINT
    # is ignored (a worker whose raylet was started from a background shell job inherits that).
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _train(run, train_command, where, cwd, threads).to_dict()
    finally:
        signal.signal(signal.SIGINT, old)


class _Job:
    """A run handed to Ray and its current task (``ref``; another one when a node was unfit)."""

    def __init__(self, run: PlannedRun) -> None:
        self.run, self.ref, self.moves = run, None, 0


class RayExecutor(Executor):
    """One Ray task per run on the cluster at ``address`` (None: a local instance; ``auto``: the
    cluster this node belongs to), each asking for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs
    (fractions share a device); Ray queues what does not fit. A Ray connection made before is reused.
    ``threads``: each trainer's OMP_NUM_THREADS (the study's; None: its CPUs); ``device``: the
    study's DEVICE (a study that may use CUDA must ask for GPUs where the cluster has them)."""

    max_in_flight = None

    def __init__(self, train_command: Sequence[str], out_dir: str, address: Optional[str] = None,
                 gpus_per_run: float = 0.0, cpus_per_run: float = 1.0, max_retries: int = 3,
                 threads: Optional[int] = None, device: str = "auto") -> None:
        self.train_command, self.out_dir, self.address = list(train_command), os.path.abspath(out_dir), address
        self.gpus, self.cpus, self.max_retries = float(gpus_per_run), float(cpus_per_run), int(max_retries)
        self.threads = int(threads) if threads else max(1, int(round(self.cpus)))
        self.device = str(device).lower()
        self.marker = os.path.join(self.out_dir, MARKER_PREFIX + uuid.uuid4().hex)
        # The python and tools/train.py by absolute path, the working directory: every node needs them too.
        self.cwd = os.getcwd()
        self.files = [p for p in self.train_command if os.path.isabs(p) and os.path.exists(p)] + [self.cwd]
        self.code = code_version()  # every node must run this code (the probe, every task)
        self.unfit: Dict[str, str] = {}  # node id -> why it may not train (kept out of every run)
        self._owns_ray = False
        self._cancelled: Set[str] = set()  # jobs cancelled once (ray.cancel raised KeyboardInterrupt in them)
        self._killed: Set[str] = set()  # jobs cancelled twice (their worker killed)

    def open(self) -> None:
        if not ray.is_initialized():
            _check_reachable(self.address)
            local = {"include_dashboard": False} if self.address is None else {}
            # No address: a new local instance, as --help says; ray.init(None) would join a cluster that
            # RAY_ADDRESS or /tmp/ray/ray_current_cluster names (a leftover one, another user's).
            try:
                ray.init(address=self.address or "local", logging_level=logging.WARNING, **local)
            except ConnectionError as exc:
                raise ExecutorError(f"--ray-address {self.address}: {_one_line(exc)}") from exc
            self._owns_ray = True
        os.makedirs(self.out_dir, exist_ok=True)
        with open(self.marker, "w", encoding="utf-8") as f:
            f.write("written by tools/study.py --executor ray; every Ray node must see this file\n")
        self._check_nodes()

    def _nodes(self) -> List[Mapping[str, Any]]:
        """The live nodes that may train (not kept out)."""
        return [n for n in ray.nodes() if n.get("Alive") and n["NodeID"] not in self.unfit]

    def _fits(self, resources: Mapping[str, float]) -> int:
        """How many runs fit a node with ``resources`` at once."""
        counts = [int(resources.get("CPU", 0) // self.cpus)] if self.cpus > 0 else []
        if self.gpus > 0:
            counts.append(int(resources.get("GPU", 0) // self.gpus))
        return min(counts) if counts else 1

    def _check_nodes(self) -> None:
        """Every node sees the study folder and the trainer and runs the driver's code; some node fits a
        run; a study that may use CUDA asks for the GPUs the cluster has."""
        nodes = self._nodes()
        self._check_gpus(nodes)
        if not any(self._fits(n["Resources"]) for n in nodes):
            have = ", ".join(f"{n['NodeManagerAddress']} ({n['Resources'].get('CPU', 0):g} CPU, "
                             f"{n['Resources'].get('GPU', 0):g} GPU)" for n in nodes)
            raise ExecutorError(f"no node of the Ray cluster fits a run of {self.cpus:g} CPU and {self.gpus:g} GPU "
                                f"(--cpus-per-run, --gpus-per-run); nodes: {have}")
        refs = [_probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(self.marker, self.files, self.code) for n in nodes]
        try:
            problems = ray.get(refs, timeout=300)
        except ray.exceptions.RayError as exc:
            raise ExecutorError(f"a Ray node cannot run the study's code ({_one_line(exc)}): every node needs the "
                                f"checkout and its Python environment at the same path ({CLUSTER_INSTALL})") from exc
        problem = next((p for p in problems if p), "")
        if problem:
            raise ExecutorError(problem)

    def _check_gpus(self, nodes: Sequence[Mapping[str, Any]]) -> None:
        """A study whose DEVICE is cuda (or auto) on a cluster with GPUs must ask for them: Ray hides the
        GPUs from a task that asks for none (CUDA_VISIBLE_DEVICES empty), so it would train on the CPU."""
        total = sum(float(n["Resources"].get("GPU", 0)) for n in nodes)
        if self.device == "cpu" or self.gpus > 0:
            return
        if total > 0:
            raise ExecutorError(f"--gpus-per-run 0: the Ray cluster has {total:g} GPU(s) but a run that asks for none "
                                f"sees none (Ray empties CUDA_VISIBLE_DEVICES), so this study (DEVICE "
                                f"{self.device}) would train on the CPU; pass --gpus-per-run 1 (the launcher's "
                                f"process count for torchrun), or DEVICE cpu")
        if self.device == "cuda":
            raise ExecutorError("the study trains on cuda (DEVICE) but the Ray cluster has no GPU; start the nodes "
                                "with their GPUs, or set DEVICE cpu")

    def describe(self) -> str:
        nodes = self._nodes()
        total = {k: sum(n["Resources"].get(k, 0) for n in nodes) for k in ("CPU", "GPU")}
        return (f"Ray cluster of {len(nodes)} node(s), {total['CPU']:g} CPU, {total['GPU']:g} GPU; {self.cpus:g} CPU "
                f"and {self.gpus:g} GPU per run, {self.parallel()} at a time")

    def parallel(self) -> int:
        return max(sum(self._fits(n["Resources"]) for n in self._nodes()), 1)

    def _submit(self, job: _Job) -> None:
        """Start ``job``'s run as a task, kept out of the unfit nodes (their node-id label)."""
        options: Dict[str, Any] = dict(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.max_retries,
                                       retry_exceptions=[TrainerKilled], name=f"train {job.run.name}")
        if self.unfit:
            options["label_selector"] = {NODE_LABEL: f"!in({','.join(sorted(self.unfit))})"}
        job.ref = _train_task.options(**options).remote(job.run, self.train_command, self.marker, self.files,
                                                        self.cwd, self.code, self.threads)

    def start(self, run: PlannedRun) -> _Job:
        job = _Job(run)
        self._submit(job)
        return job

    def poll(self, job: _Job) -> Optional[Attempt]:
        if not ray.wait([job.ref], timeout=0)[0]:
            return None
        try:
            result = ray.get(job.ref)
        except ray.exceptions.TaskCancelledError:  # queued, or killed by a second stop (resumable)
            return Attempt(-signal.SIGKILL if job.ref.hex() in self._killed else None)
        except ray.exceptions.RayError as exc:  # its last process is in the run's session record
            cause = getattr(exc, "cause", None)
            why = (f"Ray gave up after {self.max_retries} retries" if cause is None or isinstance(cause, TrainerKilled)
                   else "its Ray task failed")
            return Attempt(None, error=f"{why}: {_one_line(exc)}")
        if "unfit_node" not in result:
            return Attempt(**result)
        return self._keep_out(job, result["unfit_node"], result["problem"])

    def _keep_out(self, job: _Job, node: str, problem: str) -> Optional[Attempt]:
        """Keep ``node`` out of every run from now on and start ``job`` elsewhere (None), or report it
        when no node is left; a stopped study starts nothing."""
        if node not in self.unfit:
            self.unfit[node] = problem
            print(f"[study] a Ray node is kept out of the runs: {problem}", flush=True)
        job.moves += 1
        if job.ref.hex() in self._cancelled or not self._nodes() or job.moves > len(ray.nodes()):
            return Attempt(None, error=problem + ("" if self._nodes() else "; no other Ray node can train it"))
        self._submit(job)
        return None

    def stop(self, job: _Job, signum: int) -> None:
        """The first call raises KeyboardInterrupt in the task (the trainer gets one SIGINT and
        checkpoints); a second one kills the worker, and with it the trainer, at once."""
        force = job.ref.hex() in self._cancelled
        (self._killed if force else self._cancelled).add(job.ref.hex())
        ray.cancel(job.ref, force=force)

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
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()  # [::1]:6379 is IPv6
    except OSError as exc:
        raise ExecutorError(f"--ray-address {address}: no Ray cluster answers there ({exc.strerror or exc}); start "
                            f"one with ray start --head, or pass --ray-address auto on a node of the cluster") from exc


def _one_line(exc: BaseException) -> str:
    """The first line of a Ray error (a task's own exception when it has one)."""
    cause = getattr(exc, "cause", None) or exc
    lines = str(cause).strip().splitlines()
    return lines[0][:300] if lines else type(cause).__name__
