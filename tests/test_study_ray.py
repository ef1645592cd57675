"""tools/study.py --executor ray on a local Ray instance of 2 CPUs (started once for the module): the
smoke study gives the local executor's final NMEs with default flags (OMP_NUM_THREADS=2 exported
everywhere: the study's threads decide), also with a Ray worker killed and a trainer killed mid-run
(both retried, resumed from their checkpoint); a study folder the workers cannot see, or a node
running other code, is refused; a node that fails the per-task check is kept out and the run goes
elsewhere (a real second node on this machine); Ctrl-C cancels the tasks; a failing trainer is
reported once; a missing Ray names the install command."""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Dict, Optional, Tuple

import pytest

from conftest import FAKE_TRAINER_START, ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))

SMOKE = os.path.join(ROOT, "experiments", "studies", "smoke.yaml")
STUDY = os.path.join(ROOT, "tools", "study.py")
TRAIN = os.path.join(ROOT, "tools", "train.py")
NAMES = ("adam_seed0", "lookahead_adam_seed0")
# Half the smoke study's images: 2 iterations per epoch, 2 epochs (a kill after epoch 1 is mid-run).
SCALE = ("DATASET.SYNTHETIC.NUM_TRAIN", "32", "DATASET.SYNTHETIC.NUM_TEST", "16")
pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the trainers through /proc")


@pytest.fixture(scope="module")
def study_file(tmp_path_factory) -> str:
    """The smoke study with seed 0 only and no real-photo evaluation (the executors are compared)."""
    path = tmp_path_factory.mktemp("studyfile") / "smoke1.yaml"
    path.write_text(open(SMOKE).read().replace("config: ../", f"config: {ROOT}/experiments/")
                    .replace("seeds: [0, 1]", "seeds: [0]") + "real_hands: false\n")
    return str(path)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("data") / "hands")


def _env() -> Dict[str, str]:
    """The environment of a shell that exported a thread count (neither executor may let it decide);
    read when used: ray.init puts the cluster's credentials in it."""
    return dict(os.environ, OMP_NUM_THREADS="2")


def _study(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, STUDY, *args], capture_output=True, text=True, timeout=600, **kw)


def _run_dirs(study_file: str, out: str) -> Dict[str, str]:
    """Run name -> run folder, from the plan (the study folder's layout is spec.py's business)."""
    from hrnet.study.plan.spec import load_study, plan_runs

    return {r.name: r.run_dir for r in plan_runs(load_study(study_file, list(SCALE)), out)}


def _final_nmes(out: str) -> Dict[Tuple[str, str], float]:
    rep = json.load(open(os.path.join(out, "report.json")))
    return {(arm, seed): v for arm, a in rep["arms"].items() for seed, v in a["final_NME"]["per_seed"].items()}


@pytest.fixture(scope="module")
def local(tmp_path_factory, study_file, data_root) -> str:
    """The plan trained by the local executor with default flags (one run at a time, the study's
    threads: 1 for a CPU study, whatever OMP_NUM_THREADS the shell exported), and its report."""
    out = str(tmp_path_factory.mktemp("local") / "smoke")
    res = _study(study_file, "--out", out, "DATASET.ROOT", data_root, *SCALE, env=_env())
    assert res.returncode == 0, res.stdout + res.stderr
    return out


@pytest.fixture(scope="module")
def ray_address() -> str:
    """A local Ray instance of 2 CPUs for the module; the drivers under test connect to it. Its
    workers ignore SIGINT, as those of a raylet started from a background shell job do (the harder
    case for ray.cancel, which raises KeyboardInterrupt through a simulated SIGINT)."""
    ray = pytest.importorskip("ray")
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited by the raylet, then its workers
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("OMP_NUM_THREADS", "2")  # as exported in the shell that started the cluster
            ctx = ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    finally:
        signal.signal(signal.SIGINT, old)
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


def _trainer(run_dir: str) -> Optional[Tuple[int, int]]:
    """(pid, parent pid) of the tools/train.py process training into ``run_dir``, or None."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace").split("\0")
            if (TRAIN in args and args[args.index("OUTPUT_DIR") + 1] == os.path.dirname(run_dir)
                    and args[args.index("EXPERIMENT_NAME") + 1] == os.path.basename(run_dir)):
                return int(pid), int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return None


@pytest.fixture(scope="module")
def ray_study(tmp_path_factory, study_file, data_root, ray_address, local) -> Dict:
    """The same plan through --executor ray; once each run has its epoch-1 checkpoint, adam's Ray
    worker is SIGKILLed and lookahead's trainer gets a SIGTERM (``pkill -f train.py``)."""
    from hrnet.study.execute.executors import epochs_done

    out = str(tmp_path_factory.mktemp("ray") / "smoke")
    dirs = _run_dirs(study_file, out)
    cmd = [sys.executable, STUDY, study_file, "--out", out, "--executor", "ray", "--ray-address", ray_address,
           "DATASET.ROOT", data_root, *SCALE]
    t0 = time.time()
    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    killed: Dict[str, str] = {}
    while len(killed) < 2 and driver.poll() is None and time.time() < t0 + 300:
        for name in set(NAMES) - set(killed):
            found = _trainer(dirs[name])
            if found and epochs_done(dirs[name]) >= 1:  # epoch 1's checkpoint, then metrics.json
                pid, worker = found
                if name == "adam_seed0":
                    assert open(f"/proc/{worker}/cmdline").read().startswith("ray::"), "not a Ray worker"
                    os.kill(worker, signal.SIGKILL)
                    killed[name] = "worker"
                else:
                    os.kill(pid, signal.SIGTERM)
                    killed[name] = "trainer"
        time.sleep(0.05)
    output, _ = driver.communicate(timeout=600)
    return {"out": out, "dirs": dirs, "local_dirs": _run_dirs(study_file, local), "rc": driver.returncode,
            "output": output, "killed": killed, "wall_s": time.time() - t0}


def test_ray_gives_the_local_executors_numbers(ray_study, local):
    assert ray_study["rc"] == 0, ray_study["output"]
    assert "Ray cluster of 1 node(s), 2 CPU, 0 GPU; 1 CPU and 0 GPU per run, 2 at a time" in ray_study["output"]
    nmes = _final_nmes(ray_study["out"])
    assert set(nmes) == {("adam", "0"), ("lookahead_adam", "0")}
    assert nmes == _final_nmes(local)  # bit for bit: same commands, same thread count
    for name in NAMES:
        metrics = json.load(open(os.path.join(ray_study["dirs"][name], "metrics.json")))
        local_metrics = json.load(open(os.path.join(ray_study["local_dirs"][name], "metrics.json")))
        assert metrics["final_NME"] == local_metrics["final_NME"]
        assert metrics["machine"]["threads"] == local_metrics["machine"]["threads"] == 1
        sessions = json.load(open(os.path.join(ray_study["dirs"][name], "study_sessions.json")))
        assert {s["threads"] for s in sessions} == {1}
    assert not [f for f in os.listdir(ray_study["out"]) if f.startswith(".ray_marker_")]  # removed at the end


def test_killed_worker_and_trainer_are_retried_from_their_checkpoint(ray_study):
    assert ray_study["killed"] == {"adam_seed0": "worker", "lookahead_adam_seed0": "trainer"}, ray_study["output"]
    sessions = {n: json.load(open(os.path.join(ray_study["dirs"][n], "study_sessions.json"))) for n in NAMES}
    # The killed worker left no record; its trainer died with it, the retry resumed after epoch 1.
    assert [(s["exit_status"], s["resumed"], s["epochs_before"]) for s in sessions["adam_seed0"]] == [(0, True, 1)]
    # The trainer stopped by SIGTERM checkpointed, said so, and the retried task resumed it.
    assert [(s["exit_status"], s["resumed"]) for s in sessions["lookahead_adam_seed0"]] == [(143, False), (0, True)]
    assert sessions["lookahead_adam_seed0"][1]["epochs_before"] == 1
    for name in NAMES:
        log = open(os.path.join(ray_study["dirs"][name], "train.log")).read()
        assert "resumed from" in log and log.count("finished ") == 1
        assert "--resume" in sessions[name][-1]["command"]


def test_study_folder_the_workers_cannot_see_is_refused(ray_address, study_file, data_root, tmp_path):
    """``/proc/self/cwd/...`` is the driver's folder for the driver and another one for each Ray
    worker (whose working directory differs): a folder on a disk the other nodes do not share."""
    driver_cwd = tmp_path / "driver"
    driver_cwd.mkdir()
    res = _study(study_file, "--out", "/proc/self/cwd/study", "--executor", "ray", "--ray-address", ray_address,
                 "DATASET.ROOT", data_root, cwd=str(driver_cwd))
    assert res.returncode == 2, res.stdout + res.stderr
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "the study folder /proc/self/cwd/study is not the driver's on Ray node" in errors[0]
    assert "must be on a filesystem every node sees" in errors[0]
    assert os.listdir(driver_cwd / "study") == []  # nothing trained; the marker removed


def test_unreachable_ray_address_is_one_line(study_file, tmp_path):
    pytest.importorskip("ray")
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = _study(study_file, "--out", str(tmp_path / "out"), "--executor", "ray", "--ray-address", f"127.0.0.1:{port}")
    assert res.returncode == 2 and res.stderr.startswith(f"error: --ray-address 127.0.0.1:{port}: no Ray cluster "
                                                         f"answers there"), res.stderr
    assert res.stderr.count("\n") == 1 and not os.path.exists(tmp_path / "out")


# ---------------------------------------------------------------------------- fake trainers
FAKE_TRAINER = FAKE_TRAINER_START + r'''
import json, signal, time
# What this run does: modes.json beside the run folders, {run name: mode} (see _fake_runs).
mode = json.load(open(os.path.join(os.path.dirname(run_dir), "modes.json")))[os.path.basename(run_dir)]
attempts = len([f for f in os.listdir(run_dir) if f.startswith("attempt")])
with open(os.path.join(run_dir, f"attempt{attempts}"), "w") as f:
    f.write(str(os.getpid()))
def on_signal(signum, frame):
    with open(os.path.join(run_dir, "signals"), "a") as f:
        f.write(signal.Signals(signum).name + "\n")
    if mode != "stubborn":  # stubborn: as a trainer in a long step, not stopping yet
        sys.exit(128 + signum)
signal.signal(signal.SIGINT, on_signal)
if mode == "fail":
    sys.exit(2)
if mode == "killed" or (mode == "killed_once" and attempts == 0):
    os.kill(os.getpid(), signal.SIGKILL)
if mode in ("sleep", "stubborn"):
    time.sleep(30)
if mode == "go":  # until the test says go (a file beside the run folders)
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(os.path.dirname(run_dir), "go")) and time.time() < deadline:
        time.sleep(0.05)
with open(os.path.join(run_dir, "metrics.json"), "w") as f:
    json.dump({"status": "finished", "epochs_completed": cfg.TRAIN.END_EPOCH, "final_NME": 0.25}, f)
'''
#: A fake run's overrides but its folder: 2 epochs (the fake "trains" them at once).
FAKE_OPTS = ("TRAIN.END_EPOCH", "2", "TRAIN.LR_STEP", "[1]")


def _fake_runs(tmp_path, *modes: str):
    from hrnet.study.plan.spec import PlannedRun

    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAINER)
    names = [f"fake_seed{i}" for i in range(len(modes))]
    (tmp_path / "modes.json").write_text(json.dumps(dict(zip(names, modes))))  # what each does (FAKE_TRAINER)
    cfg = os.path.join(ROOT, "experiments", "hand_adam.yaml")
    runs = [PlannedRun("fake", i, cfg, str(tmp_path / n),
                       FAKE_OPTS + ("OUTPUT_DIR", str(tmp_path), "EXPERIMENT_NAME", n), 2) for i, n in enumerate(names)]
    return [sys.executable, str(fake)], runs


def _execute(ray_address, tmp_path, train_command, runs, **options):
    from hrnet.study.execute.ray_cluster import RayExecutor
    from hrnet.study.execute.runner import execute

    lines = []
    result = execute(runs, RayExecutor(train_command, str(tmp_path), **options), echo=lines.append)
    return result, "\n".join(lines)


def _sessions(run) -> list:
    return [s["exit_status"] for s in json.load(open(os.path.join(run.run_dir, "study_sessions.json")))]


def test_failing_trainer_is_reported_once_a_killed_one_retried(ray_address, tmp_path):
    cmd, runs = _fake_runs(tmp_path, "fail", "killed_once", "killed")
    result, out = _execute(ray_address, tmp_path, cmd, runs, max_retries=1)
    assert _sessions(runs[0]) == [2]  # its own failure: not retried
    assert "fake seed 0: failed (exit status 2)" in out
    assert _sessions(runs[1]) == [-signal.SIGKILL, 0] and result.finished == ["fake_seed1"]
    assert _sessions(runs[2]) == [-signal.SIGKILL] * 2  # max_retries=1: two tries, then reported
    assert "fake seed 2: failed" in out and "Ray gave up after 1 retries" in out and "killed from outside" in out
    assert [n for n, _ in result.failed] == ["fake_seed0", "fake_seed2"] and not result.interrupted


def test_ctrl_c_cancels_the_tasks_and_stops_the_trainer_once(ray_address, tmp_path):
    cmd, runs = _fake_runs(tmp_path, "sleep", "sleep")

    def interrupt_when_started():
        deadline = time.time() + 20
        while not os.path.exists(os.path.join(runs[0].run_dir, "attempt0")) and time.time() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # as a terminal's Ctrl-C; execute() handles it

    threading.Thread(target=interrupt_when_started, daemon=True).start()
    t0 = time.time()
    result, out = _execute(ray_address, tmp_path, cmd, runs, cpus_per_run=2)  # the second run waits in Ray's queue
    assert result.interrupted and time.time() - t0 < 25, out  # not after the fake's 30 s
    assert open(os.path.join(runs[0].run_dir, "signals")).read() == "SIGINT\n"  # once, through ray.cancel
    assert _sessions(runs[0]) == [130]
    assert "fake seed 0: stopped after 0/2 epochs" in out and "1 run(s) not started" in out
    assert not os.path.exists(runs[1].run_dir)


def test_second_ctrl_c_stops_at_once(ray_address, tmp_path):
    cmd, runs = _fake_runs(tmp_path, "stubborn")
    started, signals = os.path.join(runs[0].run_dir, "attempt0"), os.path.join(runs[0].run_dir, "signals")

    def interrupt_twice():
        for path in (started, signals):  # the second Ctrl-C once the trainer has seen the first
            deadline = time.time() + 20
            while not os.path.exists(path) and time.time() < deadline:
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_twice, daemon=True).start()
    t0 = time.time()
    result, out = _execute(ray_address, tmp_path, cmd, runs)
    assert result.interrupted and time.time() - t0 < 25, out  # not after the fake's 30 s
    assert open(signals).read() == "SIGINT\n" and "fake seed 0: stopped after 0/2 epochs" in out
    pid, deadline = int(open(started).read()), time.time() + 10
    while os.path.exists(f"/proc/{pid}") and time.time() < deadline:  # killed with its Ray worker
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}")


def test_missing_ray_names_the_install_command(monkeypatch, capsys, study_file, tmp_path):
    import _cli
    import study as study_tool

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if not installed
    rc = _cli.run(study_tool.main, [study_file, "--out", str(tmp_path / "out"), "--executor", "ray"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1, err
    assert err.startswith("error: --executor ray needs Ray: pip install -e \".[cluster]\""), err
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("options, words", [
    (["--gpus-per-run", "1"], "--gpus-per-run is an option of --executor ray"),
    (["--ray-address", "auto"], "--ray-address is an option of --executor ray"),
    (["--executor", "ray", "--devices", "0,1"], "--devices is an option of the local executor"),
    (["--executor", "ray", "--cpus-per-run", "0"], "expected GPUs >= 0 and CPUs > 0"),
])
def test_executor_option_mixups_are_one_line(capsys, study_file, tmp_path, options, words):
    import _cli
    import study as study_tool

    rc = _cli.run(study_tool.main, [study_file, "--out", str(tmp_path / "out"), *options])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and words in err and err.count("\n") == 1, err


# ---------------------------------------------------------------------------- nodes that run other code
def test_a_node_running_other_code_is_refused_at_start(ray_address, tmp_path):
    """The start-up probe compares each node's code_version with the driver's (faked here: the driver's
    sources are 'changed', the one node's are not)."""
    from hrnet.study.execute.executors import ExecutorError

    cmd, runs = _fake_runs(tmp_path, "sleep")
    from hrnet.study.execute.ray_cluster import RayExecutor
    from hrnet.study.execute.runner import execute

    ex = RayExecutor(cmd, str(tmp_path))
    ex.code = dict(ex.code, source_sha256="0" * 64)
    with pytest.raises(ExecutorError, match=r"Ray node \S+ runs other code than the driver \(.*sources "
                                            r"\w{8} there, .*sources 00000000 on the driver\)"):
        execute(runs, ex, echo=lambda s: None)
    assert not os.path.exists(runs[0].run_dir)  # nothing started


TWO_NODES = r'''
import json, os, shutil, sys, threading, time
root, fake, out, copy, opts = sys.argv[1:5] + [json.loads(sys.argv[5])]
sys.path.insert(0, root)
import ray
from ray.cluster_utils import Cluster
from hrnet.study.execute.executors import ExecutorError
from hrnet.study.execute.ray_cluster import RayExecutor
from hrnet.study.execute.runner import execute
from hrnet.study.plan.spec import PlannedRun

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
ray.init(address=cluster.address, logging_level="WARNING")
head = ray.get_runtime_context().get_node_id()
names = [f"fake_seed{i}" for i in range(2)]
dirs = [os.path.join(out, n) for n in names]
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "modes.json"), "w") as f:  # both wait for the go (the fake trainer's modes)
    json.dump(dict.fromkeys(names, "go"), f)
cfg = os.path.join(root, "experiments", "hand_adam.yaml")
runs = [PlannedRun("fake", i, cfg, d, tuple(opts) + ("OUTPUT_DIR", out, "EXPERIMENT_NAME", n), 2)
        for i, (n, d) in enumerate(zip(names, dirs))]
ex = RayExecutor([sys.executable, fake], out)

lines, results = [], []
# execute() in a thread: Ray adds a node from the main thread only
worker = threading.Thread(target=lambda: results.append(execute(runs, ex, echo=lines.append)), daemon=True)
worker.start()
while not os.path.exists(os.path.join(dirs[0], "attempt0")):  # the first run trains on the head ...
    time.sleep(0.05)
cluster.add_node(num_cpus=1, env_vars={"PYTHONPATH": copy})  # ... and a node with other code joins
deadline = time.time() + 120
while not ex.unfit and time.time() < deadline:  # the second run went there, and was refused
    time.sleep(0.05)
open(os.path.join(out, "go"), "w").close()
worker.join(300)
result = results[0]
nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
try:
    RayExecutor([sys.executable, fake], out).open()
    refused = ""
except ExecutorError as exc:
    refused = str(exc)
print(json.dumps({"finished": result.finished, "failed": result.failed, "unfit": sorted(ex.unfit),
                  "head": head, "nodes": sorted(nodes), "lines": lines, "refused": refused}))
ray.shutdown()
cluster.shutdown()
'''


def test_a_node_that_fails_the_task_check_is_kept_out(tmp_path):
    """A real second node joins after the start-up probe and runs other code (its workers import a
    copy of the project with one changed source): the run it takes is started again on the head, the
    node gets no run after that, and a new driver's probe refuses the cluster."""
    pytest.importorskip("ray")
    copy = tmp_path / "copy"
    for folder in ("configs", "data", "optim", "hrnet", "tools"):
        shutil.copytree(os.path.join(ROOT, folder), copy / folder, ignore=shutil.ignore_patterns("__pycache__"))
    with open(copy / "hrnet" / "__init__.py", "a") as f:
        f.write("# another checkout\n")
    cmd, _ = _fake_runs(tmp_path, "go")
    script = tmp_path / "two_nodes.py"
    script.write_text(TWO_NODES)
    res = subprocess.run([sys.executable, str(script), ROOT, cmd[1], str(tmp_path / "out"), str(copy),
                          json.dumps(FAKE_OPTS)],
                         capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads(res.stdout.strip().splitlines()[-1])
    assert sorted(report["finished"]) == ["fake_seed0", "fake_seed1"] and not report["failed"], report
    other = [n for n in report["nodes"] if n != report["head"]]
    assert report["unfit"] == other and len(other) == 1, report  # the second node, kept out
    assert "a Ray node is kept out of the runs" in res.stdout and "runs other code than the driver" in res.stdout
    for i in range(2):  # each run trained once, on the head
        sessions = json.load(open(tmp_path / "out" / f"fake_seed{i}" / "study_sessions.json"))
        assert [s["exit_status"] for s in sessions] == [0]
    assert "runs other code than the driver" in report["refused"]


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGKILL], ids=["SIGHUP", "SIGKILL"])
def test_a_ray_driver_that_dies_leaves_no_trainer(ray_address, study_file, tmp_path, signum):
    """The study driver of a cluster that outlives it (--ray-address) is hung up on or killed: its
    trainers stop too (SIGHUP: the driver cancels its tasks; SIGKILL: Ray ends the dead job's workers,
    and each trainer dies with its worker)."""
    out = str(tmp_path / "smoke")
    dirs = _run_dirs(study_file, out)
    cmd = [sys.executable, STUDY, study_file, "--out", out, "--executor", "ray", "--ray-address", ray_address,
           "DATASET.ROOT", str(tmp_path / "hands"), *SCALE, "TRAIN.END_EPOCH", "8", "TRAIN.LR_STEP", "[6]"]
    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(),
                              start_new_session=True)
    deadline = time.time() + 240
    found = []
    while not found and driver.poll() is None and time.time() < deadline:
        found = [t for t in (_trainer(d) for d in dirs.values()) if t
                 and os.path.exists(os.path.join(dirs[NAMES[0]], "metrics.json"))]
        time.sleep(0.05)
    assert found, driver.communicate()[0]
    os.kill(driver.pid, signum)
    output, _ = driver.communicate(timeout=120)
    deadline = time.time() + 180  # Ray notices a dead job's driver late on a loaded machine
    while any(_trainer(d) for d in dirs.values()) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_trainer(d) for d in dirs.values()), output
    assert all(_dead(pid) for pid, _ in found)


def _dead(pid: int) -> bool:
    """Gone, or a zombie (dead, not yet reaped by the process that adopted it)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
