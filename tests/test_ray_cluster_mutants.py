"""The Ray executor's own logic (hrnet/study/execute/ray_cluster.py) against fake Ray calls: the tests
of the ``study_ray`` mutation section. A real cluster takes tens of seconds per test
(tests/test_study_ray.py); here ``ray.nodes`` / ``get`` / ``wait`` / ``cancel`` and the remote
functions are stand-ins, and a training task runs a one-line python child.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from types import SimpleNamespace
from typing import Any, Dict, List

import pytest

ray_cluster = pytest.importorskip("hrnet.study.execute.ray_cluster")
ray = ray_cluster.ray

from hrnet.runtime.provenance import code_version  # noqa: E402
from hrnet.study.execute.executors import Attempt, ExecutorError  # noqa: E402
from hrnet.study.plan.spec import PlannedRun  # noqa: E402

RayExecutor = ray_cluster.RayExecutor


def _node(node_id: str, cpu: float = 8.0, gpu: float = 0.0, alive: bool = True) -> Dict[str, Any]:
    return {"Alive": alive, "NodeID": node_id, "NodeManagerAddress": f"10.0.0.{node_id[-1]}",
            "Resources": {"CPU": cpu, "GPU": gpu} if gpu else {"CPU": cpu}}


@pytest.fixture
def nodes(monkeypatch) -> List[Dict[str, Any]]:
    """The cluster's node list (edit it in the test); ``ray.util.get_node_ip_address`` is 10.0.0.9."""
    listed: List[Dict[str, Any]] = []
    monkeypatch.setattr(ray, "nodes", lambda: listed)
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "10.0.0.9")
    return listed


def _ex(tmp_path, **kw) -> RayExecutor:
    return RayExecutor([sys.executable, "-c", "pass"], str(tmp_path / "study"), **kw)


# ---------------------------------------------------------------------------- node_problem
def test_node_problem_word_for_word(tmp_path, nodes):
    marker = tmp_path / ".ray_marker_1"
    assert ray_cluster.node_problem(str(marker)) == (
        f"the study folder {tmp_path} is not the driver's on Ray node 10.0.0.9 (the marker .ray_marker_1 the driver "
        f"wrote is missing there): the study folder (--out) must be on a filesystem every node sees at the same path "
        f"(NFS, a cluster file system)")
    marker.mkdir()  # a folder is no marker
    assert "is not the driver's" in ray_cluster.node_problem(str(marker))
    marker.rmdir()
    marker.write_text("x")
    assert ray_cluster.node_problem(str(marker)) == ""
    assert ray_cluster.node_problem(str(marker), [str(marker), str(tmp_path)]) == ""
    assert ray_cluster.node_problem(str(marker), [str(tmp_path), "/no/python", "/no/train.py"]) == (
        'Ray node 10.0.0.9 has no /no/python: every node needs the checkout and its Python environment at the same '
        'path (pip install -e ".[cluster]")')
    here = code_version()
    assert ray_cluster.node_problem(str(marker), [], here) == ""
    other = dict(here, source_sha256="0" * 64, git_commit="1234567890ab", git_dirty=True)
    assert ray_cluster.node_problem(str(marker), [], other) == (
        f"Ray node 10.0.0.9 runs other code than the driver ({ray_cluster.describe(here)} there, commit 12345678 "
        f"(uncommitted changes), sources 00000000 on the driver): every node needs the same checkout at the same "
        f'path (pip install -e ".[cluster]")')
    assert ray_cluster._probe._function(str(marker), ["/no/python"], here).startswith("Ray node 10.0.0.9 has no")


# ---------------------------------------------------------------------------- the executor's set-up
def test_executor_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ex = RayExecutor([sys.executable, "relative.py", str(tmp_path / "missing.py")], "study", address="auto",
                     gpus_per_run=1, cpus_per_run=2.6, max_retries="2", device="CUDA")
    assert (ex.out_dir, ex.address, ex.gpus, ex.cpus, ex.max_retries, ex.threads, ex.device) == (
        str(tmp_path / "study"), "auto", 1.0, 2.6, 2, 3, "cuda")
    assert isinstance(ex.gpus, float) and isinstance(ex.max_retries, int)
    assert ex.files == [sys.executable, str(tmp_path)] and ex.cwd == str(tmp_path)
    assert os.path.dirname(ex.marker) == str(tmp_path / "study")
    assert os.path.basename(ex.marker).startswith(".ray_marker_") and len(os.path.basename(ex.marker)) == 12 + 32
    assert ex.marker != RayExecutor(["p"], "study").marker
    assert ex.code == code_version() and ex.unfit == {} and ex.max_in_flight is None
    assert (RayExecutor(["p"], "s", cpus_per_run=0.2).threads, RayExecutor(["p"], "s", threads=4).threads) == (1, 4)
    plain = RayExecutor(["p"], "s")
    assert (plain.cpus, plain.gpus, plain.max_retries, plain.device, plain.address) == (1.0, 0.0, 3, "auto", None)


@pytest.mark.parametrize("cpus, gpus, resources, fits", [
    (1, 0, {"CPU": 8.0}, 8),
    (3, 0, {"CPU": 8.0}, 2),
    (1, 1, {"CPU": 8.0, "GPU": 2.0}, 2),
    (4, 0.5, {"CPU": 8.0, "GPU": 2.0}, 2),
    (1, 0.5, {"CPU": 8.0, "GPU": 2.0}, 4),
    (1, 1, {"CPU": 8.0}, 0),
    (0, 1, {"CPU": 8.0, "GPU": 3.0}, 3),
    (0, 0, {"CPU": 8.0}, 1),
    (2, 0, {}, 0),
])
def test_fits(tmp_path, cpus, gpus, resources, fits):
    assert _ex(tmp_path, cpus_per_run=cpus, gpus_per_run=gpus)._fits(resources) == fits


def test_nodes_parallel_and_describe(tmp_path, nodes):
    nodes += [_node("n1", 8, 2), _node("n2", 4), _node("n3", 64, alive=False), _node("n4", 2)]
    ex = _ex(tmp_path, cpus_per_run=2)
    assert [n["NodeID"] for n in ex._nodes()] == ["n1", "n2", "n4"]
    assert ex.parallel() == 4 + 2 + 1
    assert ex.describe() == "Ray cluster of 3 node(s), 14 CPU, 2 GPU; 2 CPU and 0 GPU per run, 7 at a time"
    ex.unfit["n2"] = "why"
    assert [n["NodeID"] for n in ex._nodes()] == ["n1", "n4"] and ex.parallel() == 5
    assert _ex(tmp_path, cpus_per_run=16).parallel() == 1  # none fits now: never 0 (the ETA divides by it)


def test_check_gpus_word_for_word(tmp_path):
    with_gpus = [_node("n1", 8, 1.5), _node("n2", 8, 2)]
    for device in ("cuda", "auto"):
        with pytest.raises(ExecutorError) as exc:
            _ex(tmp_path, device=device)._check_gpus(with_gpus)
        assert str(exc.value) == (
            "--gpus-per-run 0: the Ray cluster has 3.5 GPU(s) but a run that asks for none sees none (Ray empties "
            f"CUDA_VISIBLE_DEVICES), so this study (DEVICE {device}) would train on the CPU; pass --gpus-per-run 1 "
            "(the launcher's process count for torchrun), or DEVICE cpu")
    _ex(tmp_path, device="cpu")._check_gpus(with_gpus)
    _ex(tmp_path, device="cuda", gpus_per_run=0.5)._check_gpus(with_gpus)
    with pytest.raises(ExecutorError) as exc:
        _ex(tmp_path, device="cuda")._check_gpus([_node("n1")])
    assert str(exc.value) == ("the study trains on cuda (DEVICE) but the Ray cluster has no GPU; start the nodes "
                              "with their GPUs, or set DEVICE cpu")
    _ex(tmp_path, device="cuda", gpus_per_run=1)._check_gpus([_node("n1")])  # Ray queues it: its own message
    _ex(tmp_path, device="auto")._check_gpus([_node("n1")])


class _Remote:
    """A remote function's stand-in: ``options(**kw).remote(*args)`` recorded, a ref returned."""

    def __init__(self, result=None):
        self.calls: List[Any] = []
        self.result = result

    def options(self, **kw):
        self.calls.append(kw)
        return self

    def remote(self, *args):
        self.calls[-1] = (self.calls[-1], args)
        ref = f"ref{len(self.calls)}"
        return self.result(*args) if callable(self.result) else SimpleNamespace(hex=lambda: ref)


def test_check_nodes(tmp_path, nodes, monkeypatch):
    ids = [f"{i:02x}" * 28 for i in (1, 2, 3)]  # Ray's node ids: 56 hex digits
    nodes += [_node(ids[0], 2), _node(ids[1], 8), _node(ids[2], 8, alive=False)]
    probe = _Remote(lambda marker, files, code: "")
    monkeypatch.setattr(ray_cluster, "_probe", probe)
    got: List[Any] = []
    monkeypatch.setattr(ray, "get", lambda refs, timeout=None: got.append(timeout) or list(refs))
    ex = _ex(tmp_path, cpus_per_run=4)
    ex._check_nodes()
    assert got == [300]
    assert [kw["scheduling_strategy"].node_id for kw, _ in probe.calls] == ids[:2]  # every live node
    assert all(kw["scheduling_strategy"].soft is False for kw, _ in probe.calls)
    assert probe.calls[0][1] == (ex.marker, ex.files, ex.code)
    with pytest.raises(ExecutorError) as exc:
        _ex(tmp_path, cpus_per_run=16, gpus_per_run=0.5, device="cpu")._check_nodes()
    assert str(exc.value) == ("no node of the Ray cluster fits a run of 16 CPU and 0.5 GPU (--cpus-per-run, "
                              "--gpus-per-run); nodes: 10.0.0.1 (2 CPU, 0 GPU), 10.0.0.2 (8 CPU, 0 GPU)")
    probe.calls.clear()
    probe.result = lambda marker, files, code: "" if len(probe.calls) == 1 else "node 2 is odd"
    with pytest.raises(ExecutorError, match="^node 2 is odd$"):
        ex._check_nodes()

    def fails(refs, timeout=None):
        raise ray.exceptions.RayTaskError("_probe", "tb", ImportError("no module named hrnet\nmore"))

    monkeypatch.setattr(ray, "get", fails)
    with pytest.raises(ExecutorError) as exc:
        ex._check_nodes()
    assert str(exc.value) == ("a Ray node cannot run the study's code (no module named hrnet): every node needs "
                              'the checkout and its Python environment at the same path (pip install -e ".[cluster]")')


def test_open_and_close(tmp_path, nodes, monkeypatch):
    nodes.append(_node("n1"))
    calls: List[Any] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(("init", kw)))
    monkeypatch.setattr(ray, "shutdown", lambda: calls.append("shutdown"))
    monkeypatch.setattr(ray_cluster, "_check_reachable", lambda address: calls.append(("reachable", address)))
    monkeypatch.setattr(RayExecutor, "_check_nodes", lambda self: calls.append(
        ("check", open(self.marker).read())))
    ex = _ex(tmp_path)
    ex.open()
    assert calls == [("reachable", None),
                     ("init", {"address": "local", "logging_level": 30, "include_dashboard": False}),
                     ("check", "written by tools/study.py --executor ray; every Ray node must see this file\n")]
    ex.close()
    assert calls[-1] == "shutdown" and not os.path.exists(ex.marker) and os.listdir(tmp_path / "study") == []
    ex.close()  # once only
    assert calls.count("shutdown") == 1
    calls.clear()
    _ex(tmp_path, address="10.0.0.1:6379").open()
    assert calls[:2] == [("reachable", "10.0.0.1:6379"), ("init", {"address": "10.0.0.1:6379", "logging_level": 30})]

    def refused(**kw):
        raise ConnectionError("no cluster\nat all")

    monkeypatch.setattr(ray, "init", refused)
    with pytest.raises(ExecutorError) as exc:
        _ex(tmp_path, address="auto").open()
    assert str(exc.value) == "--ray-address auto: no cluster"
    # a connection made before: reused, and left open
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    calls.clear()
    joined = _ex(tmp_path)
    joined.open()
    joined.close()
    assert [c[0] for c in calls] == ["check"]


def test_check_reachable(monkeypatch):
    import socket

    tried: List[Any] = []

    class _Conn:
        def close(self):
            tried.append("closed")

    def connect(addr, timeout):
        tried.append((addr, timeout))
        if addr[1] == 1:
            raise ConnectionRefusedError(111, "Connection refused")
        if addr[1] == 2:
            raise OSError("odd")
        return _Conn()

    monkeypatch.setattr(socket, "create_connection", connect)
    for address in (None, "auto", "ray://10.0.0.1:10001", "host", "host:port", ""):
        ray_cluster._check_reachable(address)
    assert tried == []
    ray_cluster._check_reachable("10.0.0.1:6379")
    assert tried == [(("10.0.0.1", 6379), 10), "closed"]
    with pytest.raises(ExecutorError) as exc:
        ray_cluster._check_reachable("h:1")
    assert str(exc.value) == ("--ray-address h:1: no Ray cluster answers there (Connection refused); start one with "
                              "ray start --head, or pass --ray-address auto on a node of the cluster")
    with pytest.raises(ExecutorError, match=r"answers there \(odd\)"):
        ray_cluster._check_reachable("h:2")
    tried.clear()
    ray_cluster._check_reachable("[fd00::1]:6379")  # IPv6: the port after the last colon, no brackets
    assert tried == [(("fd00::1", 6379), 10), "closed"]


def test_one_line():
    assert ray_cluster._one_line(ValueError("first\nsecond")) == "first"
    assert ray_cluster._one_line(ValueError("  \n x" + "y" * 400)) == "x" + "y" * 299
    assert ray_cluster._one_line(KeyError()) == "KeyError"
    wrapped = ray.exceptions.RayTaskError("f", "tb", RuntimeError("the cause\nmore"))
    assert ray_cluster._one_line(wrapped) == "the cause"


# ---------------------------------------------------------------------------- runs as tasks
def _run(tmp_path, name: str = "a_seed0") -> PlannedRun:
    return PlannedRun("a", 0, "arm.yaml", str(tmp_path / "runs" / name), (), 3)


@pytest.fixture
def tasks(monkeypatch):
    """``_train_task`` as a stand-in; ``ray.wait`` says every ref is ready; ``ray.get`` returns ``results``."""
    task = _Remote()
    monkeypatch.setattr(ray_cluster, "_train_task", task)
    results: Dict[str, Any] = {}

    def get(ref):
        r = results[ref.hex()]
        if isinstance(r, BaseException):
            raise r
        return r

    monkeypatch.setattr(ray, "wait", lambda refs, timeout=None: (refs, []) if refs[0].hex() in results else ([], refs))
    monkeypatch.setattr(ray, "get", get)
    cancels: List[Any] = []
    monkeypatch.setattr(ray, "cancel", lambda ref, force=False: cancels.append((ref.hex(), force)))
    return SimpleNamespace(task=task, results=results, cancels=cancels)


def test_submit_asks_for_the_run_resources(tmp_path, nodes, tasks):
    ex = _ex(tmp_path, cpus_per_run=2, gpus_per_run=0.5, max_retries=4, threads=3)
    job = ex.start(_run(tmp_path))
    (options, args), = tasks.task.calls
    assert options == {"num_cpus": 2.0, "num_gpus": 0.5, "max_retries": 4,
                       "retry_exceptions": [ray_cluster.TrainerKilled], "name": "train a_seed0"}
    assert args == (job.run, ex.train_command, ex.marker, ex.files, ex.cwd, ex.code, 3)
    assert (job.ref.hex(), job.moves) == ("ref1", 0)
    ex.unfit.update({"zz": "x", "aa": "y"})
    ex.start(_run(tmp_path))
    assert tasks.task.calls[-1][0]["label_selector"] == {"ray.io/node-id": "!in(aa,zz)"}


def test_poll(tmp_path, nodes, tasks):
    nodes.append(_node("n1"))
    ex = _ex(tmp_path, max_retries=2)
    job = ex.start(_run(tmp_path))
    assert ex.poll(job) is None  # still training
    tasks.results["ref1"] = Attempt(0, 3.0, 0, 3, "node x", outcome="finished").to_dict()
    assert ex.poll(job) == Attempt(0, 3.0, 0, 3, "node x", outcome="finished")
    tasks.results["ref1"] = ray.exceptions.TaskCancelledError()
    assert ex.poll(job) == Attempt(None)  # queued when stopped
    ex._killed.add("ref1")
    assert ex.poll(job) == Attempt(-signal.SIGKILL)  # killed by a second stop
    tasks.results["ref1"] = ray.exceptions.RayTaskError("t", "tb", ray_cluster.TrainerKilled("a_seed0: killed\nx"))
    assert ex.poll(job) == Attempt(None, error="Ray gave up after 2 retries: a_seed0: killed")
    tasks.results["ref1"] = ray.exceptions.WorkerCrashedError()
    assert ex.poll(job).error.startswith("Ray gave up after 2 retries: ")
    tasks.results["ref1"] = ray.exceptions.RayTaskError("t", "tb", ValueError("bad\nx"))
    assert ex.poll(job) == Attempt(None, error="its Ray task failed: bad")


def test_an_unfit_node_is_kept_out(tmp_path, nodes, tasks, capsys):
    nodes += [_node("n1"), _node("n2")]
    ex = _ex(tmp_path)
    job = ex.start(_run(tmp_path))
    tasks.results["ref1"] = {"unfit_node": "n1", "problem": "no marker on n1"}
    assert ex.poll(job) is None  # started again elsewhere
    assert ex.unfit == {"n1": "no marker on n1"} and job.moves == 1 and job.ref.hex() == "ref2"
    assert tasks.task.calls[-1][0]["label_selector"] == {"ray.io/node-id": "!in(n1)"}
    assert capsys.readouterr().out == "[study] a Ray node is kept out of the runs: no marker on n1\n"
    other = ex.start(_run(tmp_path, "a_seed1"))
    tasks.results[other.ref.hex()] = {"unfit_node": "n1", "problem": "no marker on n1"}
    assert ex.poll(other) is None and capsys.readouterr().out == ""  # said once
    tasks.results["ref2"] = {"unfit_node": "n2", "problem": "other code on n2"}
    assert ex.poll(job) == Attempt(None, error="other code on n2; no other Ray node can train it")


def test_an_unfit_node_after_a_stop_or_too_many_moves(tmp_path, nodes, tasks):
    nodes += [_node("n1"), _node("n2"), _node("n3")]
    ex = _ex(tmp_path)
    job = ex.start(_run(tmp_path))
    ex.stop(job, signal.SIGINT)
    tasks.results["ref1"] = {"unfit_node": "n1", "problem": "p1"}
    assert ex.poll(job) == Attempt(None, error="p1")  # a stopped study starts nothing
    job = ex.start(_run(tmp_path, "b_seed0"))
    job.moves = 3  # as many moves as nodes: the next one gives up
    tasks.results[job.ref.hex()] = {"unfit_node": "n2", "problem": "p2"}
    assert ex.poll(job) == Attempt(None, error="p2")
    job = ex.start(_run(tmp_path, "c_seed0"))
    job.moves = 2
    tasks.results[job.ref.hex()] = {"unfit_node": "n2", "problem": "p2"}
    assert ex.poll(job) is None and job.moves == 3


def test_stop_cancels_then_kills(tmp_path, nodes, tasks):
    ex = _ex(tmp_path)
    job = ex.start(_run(tmp_path))
    ex.stop(job, signal.SIGINT)
    ex.stop(job, signal.SIGINT)
    ex.stop(job, signal.SIGINT)
    assert tasks.cancels == [("ref1", False), ("ref1", True), ("ref1", True)]
    assert ex._cancelled == {"ref1"} and ex._killed == {"ref1"}


# ---------------------------------------------------------------------------- inside the task
class _Proc:
    def __init__(self, codes):
        self.codes = list(codes)

    def poll(self):
        code = self.codes.pop(0)
        if isinstance(code, BaseException):
            raise code
        return code


def test_wait_polls_and_may_not_be_interrupted(monkeypatch):
    slept: List[float] = []
    monkeypatch.setattr(ray_cluster.time, "sleep", slept.append)
    assert ray_cluster._wait(SimpleNamespace(proc=_Proc([None, None, 5]))) == 5
    assert slept == [0.2, 0.2]
    with pytest.raises(KeyboardInterrupt):
        ray_cluster._wait(SimpleNamespace(proc=_Proc([None, KeyboardInterrupt(), 0])))
    assert ray_cluster._wait(SimpleNamespace(proc=_Proc([KeyboardInterrupt(), 0])), interruptible=False) == 0
    assert ray_cluster._wait(SimpleNamespace(proc=_Proc([0]))) == 0


WRITE = r"""
import json, os, sys
d = os.path.join(sys.argv[sys.argv.index("OUTPUT_DIR") + 1], "a_seed0")
with open(os.path.join(d, "metrics.json"), "w") as f:
    json.dump({"status": sys.argv[-1], "epochs_completed": 3, "wall_time_s": 1.0}, f)
print("omp", os.environ.get("OMP_NUM_THREADS"), "cwd", os.getcwd())
sys.exit(int(sys.argv[-2]))
"""


def _task_run(tmp_path, rc: int, status: str) -> PlannedRun:
    return PlannedRun("a", 0, "arm.yaml", str(tmp_path / "runs" / "a_seed0"),
                      ("OUTPUT_DIR", str(tmp_path / "runs"), str(rc), status), 3)


def test_train_returns_or_retries(tmp_path):
    run = _task_run(tmp_path, 0, "finished")
    got = ray_cluster._train(run, [sys.executable, "-c", WRITE], "node n", str(tmp_path), 2)
    assert (got.exit_status, got.outcome, got.where, got.epochs_after) == (0, "finished", "node n", 3)
    log = open(os.path.join(run.run_dir, "stdout.log")).read()
    assert f"omp 2 cwd {tmp_path}" in log
    sessions = json.load(open(os.path.join(run.run_dir, "study_sessions.json")))
    assert sessions[-1]["threads"] == 2
    failed = ray_cluster._train(_task_run(tmp_path / "f", 2, "failed"), [sys.executable, "-c", WRITE], "n",
                                str(tmp_path), 1)
    assert (failed.exit_status, failed.outcome) == (2, "failed")  # its own error: returned, not retried
    for rc, status in ((1, "interrupted"), (1, "running")):
        with pytest.raises(ray_cluster.TrainerKilled) as exc:
            ray_cluster._train(_task_run(tmp_path / status, rc, status), [sys.executable, "-c", WRITE], "node m",
                               str(tmp_path), 1)
        outcome = "interrupted" if status == "interrupted" else "killed"
        assert str(exc.value) == f"a_seed0: trainer on node m {outcome} from outside (exit status {rc})"


STOPPABLE = r"""
import json, os, signal, sys, time
d = os.path.join(sys.argv[sys.argv.index("OUTPUT_DIR") + 1], "a_seed0")

def stop(signum, frame):  # as the trainer: a checkpoint, then exit 130
    with open(os.path.join(d, "metrics.json"), "w") as f:
        json.dump({"status": "interrupted", "epochs_completed": 1, "wall_time_s": 1.0}, f)
    sys.exit(130)

signal.signal(signal.SIGINT, stop)
open(os.path.join(d, "ready"), "w").close()
time.sleep(30)
"""


def test_train_cancelled(tmp_path, monkeypatch):
    """ray.cancel while the trainer runs: one SIGINT, its checkpoint awaited, the attempt returned (a
    stop the study asked for is not retried)."""
    real_wait = ray_cluster._wait
    seen: List[Any] = []
    run = _task_run(tmp_path, 0, "interrupted")

    def cancelled_once(child, interruptible=True):
        seen.append(interruptible)
        if interruptible:
            while not os.path.exists(os.path.join(run.run_dir, "ready")):  # the trainer's handler is set
                assert child.proc.poll() is None
                real_sleep(0.05)
            raise KeyboardInterrupt
        return real_wait(child, interruptible)

    real_sleep = ray_cluster.time.sleep
    monkeypatch.setattr(ray_cluster, "_wait", cancelled_once)
    sent: List[int] = []
    real_send = ray_cluster.Child.send_signal
    monkeypatch.setattr(ray_cluster.Child, "send_signal", lambda self, s: (sent.append(s), real_send(self, s)))
    got = ray_cluster._train(run, [sys.executable, "-c", STOPPABLE], "n", str(tmp_path), 1)
    assert seen == [True, False] and sent == [signal.SIGINT]
    assert (got.exit_status, got.outcome) == (130, "interrupted")  # returned, not raised as TrainerKilled

    def no_child(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(ray_cluster, "Child", no_child)
    assert ray_cluster._train(run, ["x"], "n", str(tmp_path), 1) == Attempt(None)


def test_train_task_on_a_fit_node(tmp_path, monkeypatch):
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "10.0.0.4")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    marker = tmp_path / ".ray_marker_x"
    marker.write_text("x")
    seen: List[Any] = []

    def train(run, cmd, where, cwd, threads):
        seen.append((where, cwd, threads, signal.getsignal(signal.SIGINT)))
        return Attempt(0, where=where)

    monkeypatch.setattr(ray_cluster, "_train", train)
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        got = ray_cluster._train_task._function(_run(tmp_path), ["p"], str(marker), [], "/cwd", code_version(), 2)
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN  # restored
    finally:
        signal.signal(signal.SIGINT, old)
    assert got == Attempt(0, where="node 10.0.0.4 GPU 1").to_dict()
    assert seen == [("node 10.0.0.4 GPU 1", "/cwd", 2, signal.default_int_handler)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    ray_cluster._train_task._function(_run(tmp_path), ["p"], str(marker), [], "/cwd", code_version(), 2)
    assert seen[-1][0] == "node 10.0.0.4"


# ---------------------------------------------------------------------------- survivors of the run (not yet re-run)
def test_resources_a_node_does_not_list_count_zero(tmp_path, nodes, monkeypatch):
    assert _ex(tmp_path, cpus_per_run=1)._fits({}) == 0  # no CPU entry: no CPU
    with pytest.raises(ExecutorError, match="the Ray cluster has 1 GPU"):
        _ex(tmp_path, device="auto")._check_gpus([_node("n1", 8, 1)])
    nodes += [{"Alive": True, "NodeID": "n1", "NodeManagerAddress": "10.0.0.1", "Resources": {"GPU": 1.0}},
              _node("n2", 2, 1)]
    with pytest.raises(ExecutorError) as exc:
        _ex(tmp_path, cpus_per_run=4, gpus_per_run=1)._check_nodes()
    assert str(exc.value).endswith("nodes: 10.0.0.1 (0 CPU, 1 GPU), 10.0.0.2 (2 CPU, 1 GPU)")


def test_poll_never_blocks(tmp_path, nodes, tasks, monkeypatch):
    waits: List[Any] = []
    monkeypatch.setattr(ray, "wait", lambda refs, **kw: waits.append(kw) or ([], refs))
    ex = _ex(tmp_path)
    assert ex.poll(ex.start(_run(tmp_path))) is None and waits == [{"timeout": 0}]


def test_a_trainer_in_a_ray_worker_dies_with_it(tmp_path, monkeypatch):
    seen: List[Any] = []

    def child(run, cmd, **kw):
        seen.append(kw)
        raise KeyboardInterrupt  # (stops _train before any process)

    monkeypatch.setattr(ray_cluster, "Child", child)
    ray_cluster._train(_run(tmp_path), ["p"], "n", "/cwd", 2)
    assert seen == [{"where": "n", "cwd": "/cwd", "in_ray_worker": True, "threads": 2}]
