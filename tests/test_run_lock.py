"""One trainer per run folder (hrnet/engine/run_lock.py): a second trainer is refused in one line naming
the folder and the holder's PID, whatever its flags, while the first trains on; a lock left by a
dead process does not block."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from hrnet.engine.run_lock import LOCK_FILE, RunFolderBusy, RunLock, holder_pid

TRAIN = os.path.join(ROOT, "tools", "train.py")
TINY = ["MODEL.NAME", "hrnet_w18_small", "MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]",
        "MODEL.SIGMA", "1.0", "DATASET.FORMAT", "coco", "DATASET.TRAINSET", "test_freihand.json",
        "DATASET.TESTSET", "test_freihand.json", "TRAIN.BATCH_SIZE_PER_GPU", "4", "TEST.BATCH_SIZE_PER_GPU", "4",
        "WORKERS", "0", "TEST.VIS_IMAGES", "0", "DEVICE", "cpu"]
HOLD = "import sys, time; from hrnet.engine.run_lock import RunLock; RunLock(sys.argv[1]).acquire(); " \
       "print('held', flush=True); time.sleep(60)"


def test_a_second_lock_is_refused_naming_the_folder_and_the_holder(tmp_path):
    run = str(tmp_path / "run")
    first = RunLock(run)
    first.acquire()
    assert os.path.isfile(os.path.join(run, LOCK_FILE)) and holder_pid(run) == os.getpid()
    with pytest.raises(RunFolderBusy) as e:
        RunLock(run).acquire()
    assert str(e.value).startswith(f"{run} is being trained by another trainer (PID {os.getpid()});")
    assert "\n" not in str(e.value)
    first.release()
    first.release()  # idempotent
    assert holder_pid(run) is None
    again = RunLock(run)
    again.acquire()
    again.release()


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path):
    run = str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, run], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert holder_pid(run) == holder.pid
        with pytest.raises(RunFolderBusy, match=f"PID {holder.pid}"):
            RunLock(run).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert holder_pid(run) is None  # the kernel released it with the process
    lock = RunLock(run)
    lock.acquire()
    lock.release()


def _train(real_hands, out, *extra, **kw):
    cmd = [sys.executable, TRAIN, "--cfg", os.path.join(ROOT, "experiments", "hand_adam.yaml"), *TINY,
           "DATASET.ROOT", os.path.join(real_hands, "freihand"), "OUTPUT_DIR", str(out), *map(str, extra)]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.timeout(300)
def test_a_second_trainer_is_refused_while_the_first_finishes(real_hands, tmp_path):
    run = tmp_path / "hand_adam"
    first = _train(real_hands, tmp_path, "TRAIN.END_EPOCH", 2)
    deadline = time.time() + 120
    while not (run / "metrics.json").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # epoch 0 recorded: the folder holds a run and its trainer is busy
    assert first.poll() is None, first.communicate()
    first.send_signal(signal.SIGSTOP)  # held mid-run (the lock stays), however slow the others start
    try:
        assert holder_pid(str(run)) == first.pid
        # a resume to another end, a fresh run (which would otherwise refuse by the folder's files)
        seconds = [_train(real_hands, tmp_path, *flags)
                   for flags in (["--resume", "TRAIN.END_EPOCH", 3], [])]
        for second in seconds:
            _, err = second.communicate(timeout=120)
            assert second.returncode == 2, err
            errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
            assert errors == [f"error: {run} is being trained by another trainer (PID {first.pid}); wait for it to "
                              f"end or stop it (kill -TERM {first.pid} stops it at a checkpoint), then run again"], err
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=240)
    assert first.returncode == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "finished" and [h["epoch"] for h in metrics["history"]] == [0, 1, 2]
    log = (run / "train.log").read_text()
    assert log.count("run hand_adam ->") == 1  # no second session got as far as the log


@pytest.mark.timeout(300)
def test_a_killed_trainer_leaves_no_lock_behind(real_hands, tmp_path):
    run = tmp_path / "hand_adam"
    first = _train(real_hands, tmp_path, "TRAIN.END_EPOCH", 4)
    deadline = time.time() + 120
    while not (run / "checkpoint_latest.pth").exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert holder_pid(str(run)) is None
    resumed = _train(real_hands, tmp_path, "--resume", "TRAIN.END_EPOCH", 1)
    _, err = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, err
