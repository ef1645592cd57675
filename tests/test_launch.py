"""The launcher of a study's trainers: a run's fate read from its folder (torchrun exits 1 whatever its
ranks did), ranks that end with their launcher, and the GPU options checked before anything trains
(hrnet/study/execute/launch.py). torchrun runs here on the CPU (gloo, DEVICE cpu, tiny config)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))

TRAIN = os.path.join(ROOT, "tools", "train.py")
SMOKE = os.path.join(ROOT, "experiments", "studies", "smoke.yaml")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
TINY = ("MODEL.NAME", "hrnet_w18_small", "MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]",
        "MODEL.SIGMA", "1.0", "DATASET.FORMAT", "coco", "DATASET.TRAINSET", "test_freihand.json",
        "DATASET.TESTSET", "test_freihand.json", "TRAIN.BATCH_SIZE_PER_GPU", "2", "TEST.BATCH_SIZE_PER_GPU", "4",
        "WORKERS", "0", "TEST.VIS_IMAGES", "0", "DEVICE", "cpu", "TRAIN.END_EPOCH", "500", "TRAIN.LR_STEP", "[400]")
# (500 epochs: a run never ends by itself while a test stops or kills it)


# ---------------------------------------------------------------------------- how a process ended
def test_the_outcome_comes_from_the_run_folder():
    from hrnet.study.execute.executors import process_outcome

    before = {"status": "interrupted", "epochs_completed": 1, "wall_time_s": 10.0}
    wrote = lambda status: dict(before, status=status, wall_time_s=20.0)  # noqa: E731
    # torchrun's exit status 1 says nothing: the folder does
    assert [process_outcome(1, before, wrote(s)) for s in ("finished", "interrupted", "diverged", "failed")] == \
        ["finished", "interrupted", "diverged", "failed"]
    assert process_outcome(1, before, wrote("running")) == "killed"  # died mid-epoch without a word
    # nothing written by this process: its exit status decides
    assert [process_outcome(rc, before, before) for rc in (-9, 130, 143, 2, 1)] == \
        ["killed", "interrupted", "interrupted", "failed", "failed"]
    assert process_outcome(0, {}, {"status": "finished"}) == "finished"


def test_a_rank_killed_by_a_signal_is_read_from_torchruns_summary():
    from hrnet.study.execute.executors import signalled_rank

    summary = ("Traceback ...\n====\ntools/train.py FAILED\n----\nFailures:\n[1]:\n  rank      : 0 (local_rank: 0)\n"
               "  exitcode  : 1 (pid: 11)\n----\nRoot Cause (first observed failure):\n[0]:\n  rank      : 1 "
               "(local_rank: 1)\n  exitcode  : {} (pid: 12) SIGKILL\n  traceback : Signal 9 (SIGKILL) received\n====")
    assert signalled_rank(summary.format(-9)) == 9
    assert signalled_rank(summary.format(1)) is None  # a rank's own error
    assert signalled_rank("exitcode  : -9") is None  # not a torchrun summary


def test_the_recorded_command_is_relative_to_the_project():
    from hrnet.study.execute.executors import recorded_command

    cmd = ["/usr/local/bin/python3.11", os.path.join(ROOT, "tools", "train.py"), "--cfg",
           os.path.join(ROOT, "experiments", "hand_adam.yaml"), "OUTPUT_DIR", os.path.join(ROOT, "docs", "x", "runs"),
           "DATASET.ROOT", "/data/hands", "MODEL.IMAGE_SIZE", "[64, 64]"]
    assert recorded_command(cmd) == ("python3.11 tools/train.py --cfg experiments/hand_adam.yaml OUTPUT_DIR "
                                     "docs/x/runs DATASET.ROOT /data/hands MODEL.IMAGE_SIZE '[64, 64]'")


# ---------------------------------------------------------------------------- torchrun on the CPU
def _run(tmp_path, name="torch_seed0"):
    from hrnet.study.plan.spec import PlannedRun

    real = os.path.join(os.path.dirname(ROOT), "shared", "data", "real-hands", "freihand")
    opts = TINY + ("DATASET.ROOT", os.environ.get("HRNET_FREIHAND", real), "OUTPUT_DIR", str(tmp_path),
                   "EXPERIMENT_NAME", name)
    return PlannedRun("torch", 0, os.path.join(ROOT, "experiments", "hand_adam.yaml"), str(tmp_path / name), opts, 500)


def _ranks(run_dir: str) -> dict:
    """LOCAL_RANK -> pid of the tools/train.py ranks training into ``run_dir``."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace").split("\0")
            env = open(f"/proc/{pid}/environ", "rb").read().decode(errors="replace").split("\0")
        except OSError:
            continue
        rank = next((e.split("=", 1)[1] for e in env if e.startswith("LOCAL_RANK=")), None)
        if TRAIN in args and rank is not None and os.path.basename(run_dir) in args:
            found[int(rank)] = int(pid)
    return found


def _after_epoch_0(run, child, timeout=240):
    deadline = time.time() + timeout
    while not os.path.exists(os.path.join(run.run_dir, "checkpoint_latest.pth")) and time.time() < deadline:
        assert child.proc.poll() is None, open(os.path.join(run.run_dir, "stdout.log")).read()[-3000:]
        time.sleep(0.05)


def _kill_ranks(run_dir: str) -> None:
    """Leave no rank behind whatever the test found (a failed test must not leave trainers running)."""
    for pid in _ranks(run_dir).values():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _gone(pids, timeout=30) -> bool:
    deadline = time.time() + timeout
    while any(os.path.exists(f"/proc/{p}") for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    return not any(os.path.exists(f"/proc/{p}") for p in pids)


pytestmark = [pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the ranks through /proc")]


@pytest.mark.timeout(300)
def test_a_torchrun_stopped_at_a_checkpoint_is_resumable_not_failed(tmp_path):
    """Ctrl-C of the study: torchrun forwards it, the rank stops at a checkpoint, torchrun exits 1."""
    from hrnet.study.execute.executors import LocalExecutor
    from hrnet.study.execute.runner import execute

    run = _run(tmp_path)

    def interrupt_after_epoch_0():
        deadline = time.time() + 240
        while not os.path.exists(os.path.join(run.run_dir, "checkpoint_latest.pth")) and time.time() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # as a terminal's Ctrl-C; execute() forwards it

    threading.Thread(target=interrupt_after_epoch_0, daemon=True).start()
    lines = []
    result = execute([run], LocalExecutor(TORCHRUN + ["--nproc_per_node", "1", TRAIN]), echo=lines.append)
    assert result.interrupted and not result.failed, lines
    session = json.load(open(os.path.join(run.run_dir, "study_sessions.json")))[-1]
    assert session["exit_status"] not in (0, 130), session  # torchrun's own status, not its rank's
    assert session["outcome"] == "interrupted" and "stopped after" in lines[-2] and "resumable" in lines[-2], lines
    assert json.load(open(os.path.join(run.run_dir, "metrics.json")))["status"] == "interrupted"


@pytest.mark.timeout(300)
def test_ranks_end_with_a_killed_torchrun_and_a_killed_rank_is_resumable(tmp_path):
    """SIGKILL of torchrun (a dying Ray worker's death signal, kill -9) reaches torchrun only; its
    ranks, in sessions of their own, end with it. A rank killed from outside is "killed" (Ray retries
    it), though its peer fails on the next collective and torchrun exits 1."""
    from hrnet.study.execute.executors import Child

    run = _run(tmp_path, "killed_torchrun")
    child = Child(run, TORCHRUN + ["--nproc_per_node", "2", TRAIN])
    try:
        _after_epoch_0(run, child)
        ranks = _ranks(run.run_dir)
        assert sorted(ranks) == [0, 1]
        child.proc.send_signal(signal.SIGKILL)
        attempt = child.finish(child.proc.wait())
        assert _gone(ranks.values()), "a rank outlived its torchrun"
        assert attempt.outcome == "killed"
    finally:
        child.proc.kill()
        _kill_ranks(run.run_dir)

    run = _run(tmp_path, "killed_rank")
    child = Child(run, TORCHRUN + ["--nproc_per_node", "2", TRAIN])
    try:
        _after_epoch_0(run, child)
        ranks = _ranks(run.run_dir)
        os.kill(ranks[1], signal.SIGKILL)
        rc = child.proc.wait(timeout=120)
        attempt = child.finish(rc)
        assert rc == 1 and attempt.outcome == "killed", open(os.path.join(run.run_dir, "stdout.log")).read()[-3000:]
        assert _gone(ranks.values())
    finally:
        child.proc.kill()
        _kill_ranks(run.run_dir)


# ---------------------------------------------------------------------------- GPU options, before anything trains
def _one_line(capsys, tmp_path, *options):
    import _cli
    import study as study_tool

    rc = _cli.run(study_tool.main, [SMOKE, "--out", str(tmp_path / "out"), "--no-real-hands", *options])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / "out" / "runs")  # nothing trained
    return err


@pytest.mark.parametrize("options, words", [
    (["--devices", "0+1"], "entry 0+1 gives a run 2 GPUs but --launcher starts 1 process(es) per run"),
    (["--devices", "0,1", "--launcher", "torchrun --standalone --nproc_per_node 2"],
     "entry 0 gives a run 1 GPU(s) but --launcher starts 2 processes per run"),
    (["--devices", "0,0"], "GPU 0 is given twice"),
    (["--devices", "0+1,2+3", "--launcher", "torchrun --standalone --nproc_per_node 2"],
     "--devices 0+1,2+3: the study trains on the CPU (DEVICE cpu)"),
    (["--devices", "0+x"], "expected GPU indices"),
    (["--jobs", "2", "--launcher", "torchrun --nproc_per_node 1"], "2 runs at a time would share one torchrun "
                                                                   "rendezvous"),
    (["--executor", "ray", "--launcher", "torchrun --nproc_per_node 2"], "would share one torchrun rendezvous"),
])
def test_gpu_options_that_do_not_fit_are_one_line(capsys, tmp_path, options, words):
    assert words in _one_line(capsys, tmp_path, *options)


def test_gpu_options_against_a_cuda_study(monkeypatch):
    from hrnet.study.execute import launch
    from hrnet.study.execute.executors import ExecutorError

    torchrun2 = ["torchrun", "--standalone", "--nproc_per_node", "2"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(launch, "_visible_gpus", lambda: 4)
    assert launch.device_slots("0+1,2+3", torchrun2, "cuda") == ["0,1", "2,3"]
    assert launch.device_slots("0,1,2,3", ["python"], "auto") == ["0", "1", "2", "3"]
    with pytest.raises(ExecutorError, match="--devices 4,5: GPU 4 is not on this machine"):
        launch.device_slots("4,5", ["python"], "cuda")
    assert launch.processes_per_run(["python", "-m", "torch.distributed.run", "--nproc-per-node=3"]) == 3
    assert launch.processes_per_run(["torchrun", "--nproc_per_node", "gpu"]) is None
    launch.check_ray_gpus(2, torchrun2, "cuda")
    launch.check_ray_gpus(0.5, ["python"], "cuda")  # two runs share a GPU: allowed
    with pytest.raises(ExecutorError, match="--gpus-per-run 1: .*two ranks would share a GPU; pass --gpus-per-run 2"):
        launch.check_ray_gpus(1, torchrun2, "cuda")


def test_ray_refuses_a_cuda_study_without_gpus_per_run(monkeypatch, tmp_path):
    """A cluster with GPUs (faked: the node list) and --gpus-per-run 0 for a study that may use CUDA:
    Ray would hide the GPUs from its runs, which would train on the CPU."""
    pytest.importorskip("ray")
    from hrnet.study.execute.executors import ExecutorError
    from hrnet.study.execute.ray_cluster import RayExecutor

    nodes = [{"NodeID": "a", "Alive": True, "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 8, "GPU": 2}}]
    for device, gpus, words in (("cuda", 0, "--gpus-per-run 0: the Ray cluster has 2 GPU(s)"),
                                ("auto", 0, "this study (DEVICE auto) would train on the CPU")):
        ex = RayExecutor([sys.executable, TRAIN], str(tmp_path), gpus_per_run=gpus, device=device)
        with pytest.raises(ExecutorError, match=words.replace("(", r"\(").replace(")", r"\)")):
            ex._check_gpus(nodes)
    RayExecutor([sys.executable, TRAIN], str(tmp_path), gpus_per_run=1, device="cuda")._check_gpus(nodes)
    RayExecutor([sys.executable, TRAIN], str(tmp_path), device="cpu")._check_gpus(nodes)  # a CPU study
    no_gpu = [dict(nodes[0], Resources={"CPU": 8})]
    with pytest.raises(ExecutorError, match="trains on cuda .* has no GPU"):
        RayExecutor([sys.executable, TRAIN], str(tmp_path), device="cuda")._check_gpus(no_gpu)
    RayExecutor([sys.executable, TRAIN], str(tmp_path), device="auto")._check_gpus(no_gpu)


def test_the_gpu_study_trains_on_cuda():
    from hrnet.study.execute.launch import study_device
    from hrnet.study.plan.spec import load_study

    study = load_study(os.path.join(ROOT, "experiments", "studies", "optimizers_gpu.yaml"))
    assert study_device(study) == "cuda" and study.threads is None
    assert study_device(load_study(SMOKE)) == "cpu"


def test_the_study_help_runs():
    res = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "study.py"), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and "--cpus-per-run" in res.stdout
