"""Training a study's runs (hrnet/study/execute/: runner.py, executors.py, select.py, launch.py),
case by case with a scripted executor or a one-line python child: the tests of the
``study_execute`` mutation section. No trainer runs; each test takes well under a second.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Sequence

import pytest

from conftest import ROOT

from hrnet.study.execute import executors, launch, runner
from hrnet.study.execute.executors import Attempt, Executor, ExecutorError, LocalExecutor
from hrnet.study.plan.spec import PlannedRun, StudyError

ADAM = os.path.join(ROOT, "experiments", "hand_adam.yaml")


def _run(tmp_path, name: str = "a_seed0", end_epoch: int = 3, seed: int = 0) -> PlannedRun:
    d = tmp_path / "out" / "runs" / name
    return PlannedRun(name.split("_seed")[0], seed, ADAM, str(d),
                      ("TRAIN.END_EPOCH", str(end_epoch), "OUTPUT_DIR", str(d.parent), "EXPERIMENT_NAME", name),
                      end_epoch)


def _folder(run: PlannedRun, metrics: Optional[Dict[str, Any]] = None, config: bool = True,
            files: Sequence[str] = (), log: str = "") -> PlannedRun:
    """The run's folder as a trainer leaves it: config.yaml (the planned one), metrics.json, ``files``."""
    from conftest import write_planned_config

    os.makedirs(run.run_dir, exist_ok=True)
    if config:
        write_planned_config(run)
    if metrics is not None:
        with open(os.path.join(run.run_dir, "metrics.json"), "w") as f:
            json.dump(metrics, f)
    for name in files:
        open(os.path.join(run.run_dir, name), "w").close()
    if log:
        with open(os.path.join(run.run_dir, "stdout.log"), "w") as f:
            f.write(log)
    return run


FINISHED = {"status": "finished", "epochs_completed": 3, "final_NME": 0.123456}


# ---------------------------------------------------------------------------- runner.run_state
def test_run_state(tmp_path):
    assert runner.run_state(_run(tmp_path, "n_seed0")) == "new"
    assert runner.run_state(_folder(_run(tmp_path, "f_seed0"), FINISHED)) == "finished"
    assert runner.run_state(_folder(_run(tmp_path, "d_seed0"), {"status": "diverged"})) == "diverged"
    assert runner.run_state(_folder(_run(tmp_path, "p_seed0"), {"status": "interrupted"},
                                    files=["checkpoint_latest.pth"])) == "partial"
    assert runner.run_state(_folder(_run(tmp_path, "q_seed0"), {"status": "interrupted"})) == "new"
    assert runner.run_state(_folder(_run(tmp_path, "u_seed0"), FINISHED, config=False)) == "stale"
    stale = _folder(_run(tmp_path, "s_seed0"), FINISHED)
    assert runner.run_state(PlannedRun(stale.arm, 0, ADAM, stale.run_dir, stale.opts + ("TRAIN.LR", "0.5"), 3)) == \
        "stale"


# ---------------------------------------------------------------------------- runner.execute, scripted
class _Scripted(Executor):
    """Runs "train" at once: ``script[name]`` is the Attempt its poll returns after ``polls`` Nones
    (and the metrics.json it writes first); records every call."""

    def __init__(self, script: Dict[str, Any], max_in_flight: Optional[int] = 1, parallel: int = 1,
                 polls: int = 0, on_poll=None) -> None:
        self.script, self.max_in_flight, self._parallel, self.polls = script, max_in_flight, parallel, polls
        self.calls: List[Any] = []
        self.in_flight, self.most = 0, 0
        self.on_poll = on_poll
        self._waits: Dict[str, int] = {}

    def open(self) -> None:
        self.calls.append("open")

    def close(self) -> None:
        self.calls.append("close")

    def describe(self) -> str:
        return "scripted"

    def parallel(self) -> int:
        return self._parallel

    def start(self, run: PlannedRun) -> PlannedRun:
        self.calls.append(("start", run.name))
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        self._waits[run.name] = self.polls
        return run

    def poll(self, job: PlannedRun) -> Optional[Attempt]:
        if self.on_poll is not None:
            self.on_poll(self, job)
        if self._waits[job.name] > 0:
            self._waits[job.name] -= 1
            return None
        attempt, metrics = self.script[job.name]
        if metrics is not None:
            _folder(job, metrics, config=not os.path.exists(os.path.join(job.run_dir, "config.yaml")))
        self.in_flight -= 1
        return attempt

    def stop(self, job: PlannedRun, signum: int) -> None:
        self.calls.append(("stop", job.name, signum))


@pytest.fixture
def no_sleep(monkeypatch):
    monkeypatch.setattr(runner.time, "sleep", lambda s: None)


def test_execute_skips_finished_and_diverged_runs_without_opening(tmp_path, no_sleep):
    done = _folder(_run(tmp_path, "a_seed0"), FINISHED)
    diverged = _folder(_run(tmp_path, "a_seed1", seed=1), {"status": "diverged"})
    lines: List[str] = []
    ex = _Scripted({})
    result = runner.execute([done, diverged], ex, lines.append)
    assert ex.calls == ["close"]
    assert (result.finished, result.skipped, result.interrupted) == ([], ["a_seed0"], False)
    assert result.failed == [("a_seed1", "diverged before; not retried (delete the folder to retry)")]
    assert lines == ["[study] 2 runs: 1 finished (skipped), 0 to train (0 to resume), 1 diverged before"]


def test_execute_books_each_ending(tmp_path, no_sleep):
    runs = [_run(tmp_path, f"a_seed{i}", seed=i) for i in range(6)]
    _folder(runs[1], {"status": "interrupted", "epochs_completed": 1}, files=["checkpoint_latest.pth"],
            log="RuntimeError: old\n")
    _folder(runs[4], None, log="epoch 1\nValueError: bad value\n")
    _folder(runs[5], None)
    script = {
        "a_seed0": (Attempt(0, 10.0, 0, 3, "GPU 0", outcome="finished"), FINISHED),
        "a_seed1": (Attempt(1, 4.0, 1, 2, outcome="interrupted"), {"status": "interrupted", "epochs_completed": 2}),
        "a_seed2": (Attempt(None, error="no node left"), None),
        "a_seed3": (Attempt(-9, 5.0, 0, 1, "node x", outcome="killed"), {"status": "running", "epochs_completed": 1}),
        "a_seed4": (Attempt(2, 1.0, 0, 0, outcome="failed"), None),
        "a_seed5": (Attempt(0, 2.0, 0, 0), {"status": "finished", "epochs_completed": 3, "final_NME": None}),
    }
    lines: List[str] = []
    ex = _Scripted(script, max_in_flight=2, parallel=2)
    result = runner.execute(runs, ex, lines.append)
    assert ex.calls[0] == "open" and ex.calls[-1] == "close" and ex.most == 2
    assert [c[1] for c in ex.calls if c[0] == "start"] == [r.name for r in runs]
    assert result.finished == ["a_seed0", "a_seed5"] and result.skipped == [] and not result.interrupted
    assert result.failed == [("a_seed2", "no node left"),
                             ("a_seed3", "killed from outside (exit status -9; resumable)"),
                             ("a_seed4", "failed (exit status 2): ValueError: bad value")]
    d = tmp_path / "out" / "runs"
    # ETA = seconds per epoch trained so far x epochs left (queued and running) / 2 in parallel:
    # 10/3 x 14 / 2 = 23 s; 14/4 x 12 / 2 = 21 s; 3.5 x 9 / 2 = 16 s; 19/5 x 6 / 2 = 11 s; 3.8 x 3 / 2 = 6 s
    assert lines == [
        "[study] 6 runs: 0 finished (skipped), 6 to train (1 to resume), 0 diverged before; scripted; each run's "
        "output in <run>/stdout.log",
        "[study] 1/6 a seed 0: final NME 0.12346, 10 s (GPU 0) | study ETA 23 s",
        "[study] 2/6 a seed 1: stopped after 2/3 epochs (4 s); resumable | study ETA 21 s",
        "[study] 3/6 a seed 2: failed: no node left | study ETA 16 s",
        "[study] 4/6 a seed 3: killed from outside (exit status -9; resumable) after 1/3 epochs (node x): - "
        f"(see {d}/a_seed3/stdout.log) | study ETA 11 s",
        f"[study] 5/6 a seed 4: failed (exit status 2) after 0/3 epochs: ValueError: bad value (see {d}/a_seed4/"
        "stdout.log) | study ETA 6 s",
        "[study] 6/6 a seed 5: final NME -, 2 s | study ETA 0 s",
    ]


@pytest.mark.parametrize("attempt, metrics, line, failed", [
    # no outcome recorded (records before it): the exit status and the folder decide
    (Attempt(0), FINISHED, "a seed 0: final NME 0.12346, 0 s", None),
    (Attempt(0), {"status": "interrupted"}, "a seed 0: failed (exit status 0) after 0/3 epochs: - (see {d})",
     "failed (exit status 0)"),
    (Attempt(1), FINISHED, "a seed 0: failed (exit status 1) after 0/3 epochs: - (see {d})", "failed (exit status 1)"),
    (Attempt(130), {}, "a seed 0: stopped after 0/3 epochs (0 s); resumable", None),
    (Attempt(143), {}, "a seed 0: stopped after 0/3 epochs (0 s); resumable", None),
    (Attempt(137), {"status": "diverged"}, "a seed 0: diverged after 0/3 epochs: - (see {d})", "diverged"),
    (Attempt(1, outcome="diverged"), {}, "a seed 0: diverged after 0/3 epochs: - (see {d})", "diverged"),
    (Attempt(0, outcome="failed"), FINISHED, "a seed 0: failed (exit status 0) after 0/3 epochs: - (see {d})",
     "failed (exit status 0)"),
])
def test_book_without_or_with_an_outcome(tmp_path, attempt, metrics, line, failed):
    run = _folder(_run(tmp_path), metrics)
    result = runner.ExecutionResult()
    seconds: List[Any] = []
    got = runner._book(run, attempt, result, seconds, False)
    assert got == line.format(d=f"{run.run_dir}/stdout.log")
    assert result.failed == ([] if failed is None else [("a_seed0", failed)])
    assert result.finished == (["a_seed0"] if "final NME" in line else [])
    assert seconds == []  # no epoch trained


def test_book_while_stopping_and_the_epoch_seconds(tmp_path):
    run = _folder(_run(tmp_path), {"status": "failed"})
    result, seconds = runner.ExecutionResult(), []
    assert runner._book(run, Attempt(1, 30.0, 1, 3), result, seconds, True) == \
        "a seed 0: stopped after 3/3 epochs (30 s); resumable"
    assert seconds == [(30.0, 2)] and result.failed == []


@pytest.mark.parametrize("seconds, left, parallel, eta", [
    ([], [0, 0], 1, "after the first run"),
    ([(10.0, 0)], [0, 0], 1, "after the first run"),
    ([(10.0, 2), (20.0, 3)], [0, 0], 1, "36 s"),  # 30 s / 5 epochs x 6 epochs
    ([(10.0, 2), (20.0, 3)], [0, 0], 2, "18 s"),
    ([(10.0, 2), (20.0, 3)], [0, 0], 0, "36 s"),
    ([(10.0, 2)], [3, 5], 1, "0 s"),  # nothing left (a run past its end counts 0, not negative)
    ([(10.0, 2)], [5, 2], 1, "5 s"),
])
def test_eta(tmp_path, seconds, left, parallel, eta):
    runs = [_folder(_run(tmp_path, f"a_seed{i}", seed=i), {"epochs_completed": done}, config=False)
            for i, done in enumerate(left)]
    assert runner._eta(runs, seconds, parallel) == eta


def test_a_signal_stops_every_run_once_and_starts_no_more(tmp_path, no_sleep):
    runs = [_run(tmp_path, f"a_seed{i}", seed=i) for i in range(4)]
    sent: List[int] = []

    def hang_up_once(ex, job):  # the terminal closed while the first two trained
        if not sent:
            sent.append(signal.SIGHUP)
            os.kill(os.getpid(), signal.SIGHUP)

    stopped = Attempt(143, 1.0, 0, 1, outcome="interrupted")
    script = {"a_seed0": (stopped, {"status": "interrupted", "epochs_completed": 1}),
              "a_seed1": (Attempt(None), None)}  # stopped while queued
    lines: List[str] = []
    ex = _Scripted(script, max_in_flight=2, polls=1, on_poll=hang_up_once)
    old = signal.getsignal(signal.SIGHUP)
    result = runner.execute(runs, ex, lines.append)
    assert signal.getsignal(signal.SIGHUP) is old  # the handler restored
    assert result.interrupted and result.failed == [] and result.finished == []
    assert [c for c in ex.calls if c[0] == "stop"] == [("stop", "a_seed0", signal.SIGTERM),
                                                       ("stop", "a_seed1", signal.SIGTERM)]
    assert lines[1:] == ["[study] 1/4 a seed 0: stopped after 1/3 epochs (1 s); resumable",
                         "[study] stopped by SIGHUP: 3 run(s) not started; runs stopped mid-way kept a checkpoint; "
                         "run the same command again to continue"]


def test_sigint_is_forwarded_as_sigint(tmp_path, no_sleep):
    run = _run(tmp_path)
    ex = _Scripted({"a_seed0": (Attempt(130, 1.0, 0, 0), {})}, polls=1,
                   on_poll=lambda ex, job: ex.calls.count("sent") or (ex.calls.append("sent"),
                                                                       os.kill(os.getpid(), signal.SIGINT)))
    lines: List[str] = []
    assert runner.execute([run], ex, lines.append).interrupted
    assert ("stop", "a_seed0", signal.SIGINT) in ex.calls
    assert lines[-1].startswith("[study] stopped by SIGINT: 0 run(s) not started")


def test_stale_folders_are_refused_or_moved(tmp_path, no_sleep, monkeypatch):
    runs = [_folder(_run(tmp_path, f"a_seed{i}", seed=i), FINISHED, config=False) for i in range(3)]
    with pytest.raises(StudyError) as exc:
        runner.execute(runs, _Scripted({}), print)
    why = "no config.yaml: cannot be checked against the plan, so it counts for nothing"
    assert str(exc.value) == (
        f"3 run folder(s) hold a run of another config than the plan (stored -> planned, or no config.yaml): "
        f"a_seed0 ({why}); a_seed1 ({why}) ...; restore the plan, or pass --move-stale to move them to "
        f"<out>/stale/ and train the planned runs")
    with pytest.raises(StudyError) as exc:
        runner.execute(runs[:2], _Scripted({}), print)
    assert f"a_seed1 ({why}); restore" in str(exc.value)
    monkeypatch.setattr(runner, "move_stale", lambda r: f"/moved/{r.name}")
    lines: List[str] = []
    runner._set_stale_aside(runs[:1], True, lines.append)
    assert lines == [f"[study] a_seed0: trained with another config ({why}); moved to /moved/a_seed0"]


# ---------------------------------------------------------------------------- executors
@pytest.mark.parametrize("rc, before, after, outcome", [
    (0, {}, {}, "failed"),
    (0, {}, {"status": "finished"}, "finished"),
    (0, {"status": "finished"}, {"status": "finished"}, "finished"),
    (1, {"status": "finished"}, {"status": "finished"}, "failed"),
    (0, {"status": "x", "epochs_completed": 1}, {"status": "x", "epochs_completed": 2}, "killed"),
    (2, {}, {"status": "diverged"}, "diverged"),
    (0, {"status": "failed", "wall_time_s": 1}, {"status": "failed", "wall_time_s": 2}, "failed"),
    (-15, {}, {}, "killed"),
    (-1, {}, {}, "killed"),
    (130, {}, {}, "interrupted"),
    (143, {}, {}, "interrupted"),
    (129, {}, {}, "failed"),
])
def test_process_outcome(rc, before, after, outcome):
    assert executors.process_outcome(rc, before, after) == outcome


def test_signalled_rank_takes_the_first_signal_of_the_summary():
    out = ("exitcode : -6\nFailures:\n  exitcode  : 1\n  exitcode: -15\nRoot Cause (first observed failure):\n"
           "  exitcode : -9\n")
    assert executors.signalled_rank(out) == 15
    assert executors.signalled_rank("Failures:\n exitcode : -9\n") is None


def test_recorded_command_keeps_paths_outside_the_project():
    assert executors.recorded_command(["python", "/elsewhere/train.py", "a b"]) == "python /elsewhere/train.py 'a b'"


def test_attempt_as_a_dict():
    assert Attempt(3, 1.5, 1, 2, "GPU 0", "e", "failed").to_dict() == {
        "exit_status": 3, "wall_s": 1.5, "epochs_before": 1, "epochs_after": 2, "where": "GPU 0", "error": "e",
        "outcome": "failed"}
    assert Attempt(None).to_dict() == {"exit_status": None, "wall_s": 0.0, "epochs_before": 0, "epochs_after": 0,
                                       "where": "", "error": "", "outcome": ""}


def test_the_executor_interface():
    ex = Executor()
    assert ex.max_in_flight == 1 and ex.open() is None and ex.close() is None
    for call in (ex.describe, ex.parallel, lambda: ex.start(None), lambda: ex.poll(None), lambda: ex.stop(None, 2)):
        with pytest.raises(NotImplementedError):
            call()


CHILD = r"""
import json, os, sys
argv = sys.argv[1:]
run_dir = os.path.join(argv[argv.index("OUTPUT_DIR") + 1], argv[argv.index("EXPERIMENT_NAME") + 1])
env = os.environ.get
print("argv", json.dumps(argv), "cuda", env("CUDA_VISIBLE_DEVICES"), "omp", env("OMP_NUM_THREADS"), "cwd", os.getcwd(),
      flush=True)
with open(os.path.join(run_dir, "metrics.json"), "w") as f:
    json.dump({"status": argv[-1], "epochs_completed": 2, "wall_time_s": 3.0}, f)
sys.exit(int(argv[-3]))
"""


def _child_run(tmp_path, rc: int = 0, status: str = "finished") -> PlannedRun:
    d = tmp_path / "runs" / "c_seed0"
    return PlannedRun("c", 0, "arm.yaml", str(d), ("OUTPUT_DIR", str(d.parent), "EXPERIMENT_NAME", "c_seed0",
                                                   "RC", str(rc), "STATUS", status), 3)


def _wait(child: executors.Child) -> Attempt:
    child.proc.wait(timeout=30)
    return child.poll()


def test_child_runs_the_command_and_records_the_session(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    run = _child_run(tmp_path)
    os.makedirs(run.run_dir)
    with open(os.path.join(run.run_dir, "metrics.json"), "w") as f:
        json.dump({"status": "interrupted", "epochs_completed": 1, "wall_time_s": 1.0}, f)
    child = executors.Child(run, [sys.executable, "-c", CHILD], slot="3", where="GPU 3", cwd=str(tmp_path), threads=2)
    assert (child.resumed, child.threads, child.epochs_before) == (True, 2, 1)
    attempt = _wait(child)
    assert (attempt.exit_status, attempt.epochs_before, attempt.epochs_after, attempt.where, attempt.outcome,
            attempt.error) == (0, 1, 2, "GPU 3", "finished", "")
    assert 0 < attempt.wall_s < 30
    text = open(os.path.join(run.run_dir, "stdout.log")).read()
    log = text.splitlines()
    host = __import__("socket").gethostname()
    assert log[0] == "" and log[1].startswith("# ") and f" {host} CUDA_VISIBLE_DEVICES=3 {sys.executable} -c " in log[1]
    assert f"' --cfg arm.yaml --resume OUTPUT_DIR {tmp_path / 'runs'} EXPERIMENT_NAME c_seed0 RC 0 STATUS finished\n" \
        in text
    printed = next(ln for ln in log if ln.startswith("argv ["))
    assert printed.endswith(f"cuda 3 omp 2 cwd {tmp_path}")
    sessions = json.load(open(os.path.join(run.run_dir, "study_sessions.json")))
    assert len(sessions) == 1
    s = sessions[0]
    assert (s["exit_status"], s["outcome"], s["device"], s["threads"], s["resumed"], s["epochs_before"],
            s["epochs_after"]) == (0, "finished", "3", 2, True, 1, 2)
    assert s["command"].startswith("python") and "--resume" in s["command"] and s["code_version"] == child.code
    assert set(s) == {"started", "wall_s", "exit_status", "outcome", "device", "threads", "host", "resumed",
                      "epochs_before", "epochs_after", "command", "code_version"}
    # a second process appends its record
    again = executors.Child(run, [sys.executable, "-c", CHILD])
    _wait(again)
    assert len(json.load(open(os.path.join(run.run_dir, "study_sessions.json")))) == 2


def test_child_inherits_the_threads_and_reads_a_killed_rank(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    run = _child_run(tmp_path, rc=1, status="failed")
    child = executors.Child(run, [sys.executable, "-c", CHILD + "\n"])
    assert (child.resumed, child.threads) == (False, 5)
    out = open(os.path.join(run.run_dir, "stdout.log")).read()
    assert "CUDA_VISIBLE_DEVICES=" not in out
    with open(os.path.join(run.run_dir, "stdout.log"), "a") as f:  # as a torchrun whose rank was killed
        f.write("Failures:\n exitcode : -9\nRoot Cause (first observed failure):\n exitcode : 1\n")
    attempt = _wait(child)
    assert (attempt.exit_status, attempt.outcome) == (1, "killed")
    printed = next(ln for ln in open(os.path.join(run.run_dir, "stdout.log")) if ln.startswith("argv ["))
    assert printed.rstrip().endswith(f"cuda None omp 5 cwd {os.getcwd()}")
    monkeypatch.setenv("OMP_NUM_THREADS", "x")
    assert executors.Child(_child_run(tmp_path / "2"), [sys.executable, "-c", "pass"]).threads is None


def test_child_output_is_its_own(tmp_path):
    run = _child_run(tmp_path, rc=3, status="failed")
    os.makedirs(run.run_dir)
    with open(os.path.join(run.run_dir, "stdout.log"), "w") as f:
        f.write("Failures:\n exitcode : -9\nRoot Cause (first observed failure):\n")  # an earlier process's
    attempt = _wait(executors.Child(run, [sys.executable, "-c", CHILD]))
    assert (attempt.exit_status, attempt.outcome) == (3, "failed")


def test_a_child_stopped_by_a_signal(tmp_path):
    run = _child_run(tmp_path)
    child = executors.Child(run, [sys.executable, "-c", "import time; time.sleep(30)"])
    assert child.poll() is None
    child.send_signal(signal.SIGKILL)
    attempt = _wait(child)
    assert (attempt.exit_status, attempt.outcome) == (-signal.SIGKILL, "killed")
    child.send_signal(signal.SIGTERM)  # gone already: no error


def test_local_executor_fills_its_slots(tmp_path):
    ex = LocalExecutor([sys.executable, "-c", CHILD], slots=["0", "1"], threads=3)
    assert (ex.max_in_flight, ex.parallel(), ex.describe()) == (2, 2, "2 at a time, 3 thread(s) each")
    assert LocalExecutor(["x"]).describe() == "1 at a time" and LocalExecutor(["x"]).max_in_flight == 1
    a, b = _child_run(tmp_path / "a"), _child_run(tmp_path / "b")
    assert (ex.start(a), ex.start(b)) == (0, 1)
    ex._busy[0].proc.wait(timeout=30)
    got = ex.poll(0)
    assert got.where == "GPU 0" and got.exit_status == 0
    assert ex.start(_child_run(tmp_path / "c")) == 0  # the free slot
    for job in (0, 1):
        ex.stop(job, signal.SIGKILL)
        ex._busy[job].proc.wait(timeout=30)
        assert ex.poll(job) is not None
    assert ex._busy == {}
    none = LocalExecutor([sys.executable, "-c", "import time; time.sleep(30)"])
    job = none.start(_child_run(tmp_path / "d"))
    assert none.poll(job) is None and none._busy[job].where == ""
    none.stop(job, signal.SIGKILL)
    none._busy[job].proc.wait(timeout=30)
    none.poll(job)


# ---------------------------------------------------------------------------- select
def test_make_executor(tmp_path, monkeypatch):
    from hrnet.study.execute.select import make_executor

    local = make_executor("local", ["python", "t.py"], str(tmp_path), slots=["0", "1"], threads=2)
    assert isinstance(local, LocalExecutor) and (local.train_command, local.slots, local.threads) == (
        ["python", "t.py"], ["0", "1"], 2)
    assert make_executor("local", ["p"], str(tmp_path)).slots == [None]
    assert make_executor("local", ["p"], str(tmp_path)).threads is None
    pytest.importorskip("ray")
    ray = make_executor("ray", ["p"], str(tmp_path), threads=3, gpus_per_run=0.5)
    assert type(ray).__name__ == "RayExecutor" and (ray.threads, ray.gpus, ray.out_dir) == (3, 0.5, str(tmp_path))
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ExecutorError) as exc:
        make_executor("ray", ["p"], str(tmp_path))
    assert str(exc.value).startswith('--executor ray needs Ray: pip install -e ".[cluster]" (import ray: ')


# ---------------------------------------------------------------------------- launch
@pytest.mark.parametrize("launcher, torchrun, n", [
    ([], False, 1),
    (["python"], False, 1),
    (["/usr/bin/torchrun"], True, 1),
    (["torchrun", "--nproc_per_node", "4"], True, 4),
    (["torchrun", "--nproc-per-node=2"], True, 2),
    (["torchrun", "--nproc_per_node=gpu"], True, None),
    (["torchrun", "--nproc_per_node"], True, 1),  # no value: torchrun's default
    (["python", "-m", "torch.distributed.run", "--nproc_per_node", "3"], True, 3),
    (["python", "-m", "torch.distributed.launch"], True, 1),
    (["python", "-m"], False, 1),
    (["python", "-m", "torch.distributed"], False, 1),
    (["python", "torch.distributed.run", "-m"], False, 1),
    (["python", "-u", "torch.distributed.run"], False, 1),
    (["torchrunner", "--nproc_per_node", "2"], False, 1),
])
def test_launchers(launcher, torchrun, n):
    assert launch.is_torchrun(launcher) is torchrun
    assert launch.processes_per_run(launcher) == n


def test_option_takes_the_first_name_found():
    assert launch._option(["--a", "1", "--b=2"], "--b", "--a") == "1"
    assert launch._option(["--a=x=y"], "--a") == "x=y"
    assert launch._option(["--ab", "1"], "--a") is None
    assert launch._option(["--ab=1"], "--a") is None


@pytest.mark.parametrize("devices, launcher, device, have, message", [
    ("0,x", ["python"], "cuda", 4, "--devices '0,x': expected GPU indices such as 0,1,2,3 or 0+1,2+3"),
    ("0,", ["python"], "cuda", 4, "--devices '0,': expected GPU indices such as 0,1,2,3 or 0+1,2+3"),
    ("0+", ["python"], "cuda", 4, "--devices '0+': expected GPU indices such as 0,1,2,3 or 0+1,2+3"),
    ("1,2+1", ["torchrun", "--nproc_per_node", "1"], "cuda", 4,
     "--devices 1,2+1: GPU 1 is given twice (two processes would share it)"),
    ("0,1", ["torchrun", "--nproc_per_node", "3"], "cuda", 4,
     "--devices 0,1: entry 0 gives a run 1 GPU(s) but --launcher starts 3 processes per run (torchrun "
     "--nproc_per_node 3): two ranks would share a GPU; give each entry 3 GPUs (0+1+2,...)"),
    ("0+1+2", ["python", "t.py"], "cuda", 4,
     "--devices 0+1+2: entry 0+1+2 gives a run 3 GPUs but --launcher starts 1 process(es) per run (python t.py), "
     "so 2 would stay idle; pass --launcher \"torchrun --standalone --nproc_per_node 3\", or one GPU per entry"),
    ("0", ["python"], "cpu", 4, "--devices 0: the study trains on the CPU (DEVICE cpu); --jobs N trains CPU runs "
                                "side by side"),
    ("0,3", ["python"], "auto", 3, "--devices 0,3: GPU 3 is not on this machine (3 GPU(s))"),
])
def test_device_slots_refusals(monkeypatch, devices, launcher, device, have, message):
    monkeypatch.setattr(launch, "_visible_gpus", lambda: have)
    with pytest.raises(ExecutorError) as exc:
        launch.device_slots(devices, launcher, device)
    assert str(exc.value) == message


def test_device_slots_accepted(monkeypatch):
    monkeypatch.setattr(launch, "_visible_gpus", lambda: 3)
    assert launch.device_slots(" 0 , 2 ", ["python"], "cuda") == ["0", "2"]
    assert launch.device_slots("0+1+2", ["torchrun", "--nproc_per_node", "gpu"], "auto") == ["0,1,2"]
    monkeypatch.setattr(launch, "_visible_gpus", lambda: None)  # a subset: not checked
    assert launch.device_slots("7", ["python"], "cuda") == ["7"]


def test_visible_gpus(monkeypatch):
    import torch

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert launch._visible_gpus() is None
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 5)
    assert launch._visible_gpus() == 5


@pytest.mark.parametrize("launcher, parallel, message", [
    (["torchrun"], 2, "--launcher torchrun: 2 runs at a time would share one torchrun rendezvous (its default port, "
                      "or the endpoint given); add --standalone (each run picks a free port)"),
    (["torchrun", "--nproc_per_node", "2"], None, "--launcher torchrun --nproc_per_node 2: runs on one node would "
                                                  "share one torchrun rendezvous (its default port, or the endpoint "
                                                  "given); add --standalone (each run picks a free port)"),
    (["torchrun"], 1, None),
    (["torchrun", "--standalone"], 4, None),
    (["python"], 4, None),
])
def test_check_rendezvous(launcher, parallel, message):
    if message is None:
        launch.check_rendezvous(launcher, parallel)
    else:
        with pytest.raises(ExecutorError) as exc:
            launch.check_rendezvous(launcher, parallel)
        assert str(exc.value) == message


@pytest.mark.parametrize("gpus, launcher, device, message", [
    (3, ["torchrun", "--nproc_per_node", "2"], "cuda",
     "--gpus-per-run 3: --launcher starts 2 processes per run (torchrun --nproc_per_node 2): 1 would stay idle; "
     "pass --gpus-per-run 2"),
    (1.5, ["torchrun", "--nproc_per_node", "2"], "auto",
     "--gpus-per-run 1.5: --launcher starts 2 processes per run (torchrun --nproc_per_node 2): two ranks would "
     "share a GPU; pass --gpus-per-run 2"),
    (1, ["torchrun", "--nproc_per_node", "2"], "cpu", None),
    (0, ["torchrun", "--nproc_per_node", "2"], "cuda", None),
    (2, ["torchrun", "--nproc_per_node", "2"], "cuda", None),
    (1, ["torchrun", "--nproc_per_node", "gpu"], "cuda", None),
    (3, ["torchrun"], "cuda", None),
])
def test_check_ray_gpus(gpus, launcher, device, message):
    if message is None:
        launch.check_ray_gpus(gpus, launcher, device)
    else:
        with pytest.raises(ExecutorError) as exc:
            launch.check_ray_gpus(gpus, launcher, device)
        assert str(exc.value) == message


def test_study_device(tmp_path):
    from hrnet.study.plan.spec import load_study

    def study(*devices):
        arms = "".join(f"  - {{name: a{i}, config: {ADAM}, overrides: {{DEVICE: {d}}}}}\n"
                       for i, d in enumerate(devices))
        p = tmp_path / "s.yaml"
        p.write_text("arms:\n" + arms)
        return load_study(str(p))

    assert launch.study_device(study("cpu", "cpu")) == "cpu"
    assert launch.study_device(study("cuda")) == "cuda"
    assert launch.study_device(study("cuda", "cpu")) == "auto"
    assert launch.study_device(study("auto")) == "auto"


# ---------------------------------------------------------------------------- survivors of the first run
def test_signalled_rank_reads_the_last_summary_and_signals_only():
    first = "Failures:\n exitcode : -9\nRoot Cause (first observed failure):\n exitcode : -9\n"
    last = "Failures:\n exitcode : 0\n exitcode : 1\nRoot Cause (first observed failure):\n exitcode : 1\n"
    assert executors.signalled_rank(first + "resumed\n" + last) is None  # a retried launcher's own summary
    assert executors.signalled_rank(last) is None  # exit code 0 is no signal


def test_recorded_command_leaves_relative_words(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the project: a relative word must not become a path here
    assert executors.recorded_command(["python", "--cfg", "x.yaml"]) == "python --cfg x.yaml"


def test_child_starts_its_trainer_in_a_session_that_dies_with_it(tmp_path, monkeypatch):
    """The Popen call: own session, stderr into the log, SIGTERM on the driver's death (SIGKILL in a
    Ray worker), and the code version of this checkout recorded."""
    from hrnet.runtime.provenance import code_version

    seen = []

    class _Popen:
        def __init__(self, cmd, **kw):
            seen.append(kw)

    monkeypatch.setattr(executors, "subprocess", SimpleNamespace(Popen=_Popen, STDOUT=subprocess.STDOUT))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    local = executors.Child(_child_run(tmp_path / "l"), ["p"])
    ray = executors.Child(_child_run(tmp_path / "r"), ["p"], in_ray_worker=True)
    assert (local.where, local.threads, local.code) == ("", None, code_version())
    for kw, death in zip(seen, (signal.SIGTERM, signal.SIGKILL)):
        assert kw["start_new_session"] is True and kw["stderr"] is subprocess.STDOUT
        assert kw["preexec_fn"].func is executors._child_setup and kw["preexec_fn"].args == (death,)
    header = open(os.path.join(local.run.run_dir, "stdout.log")).read().splitlines()[1]
    assert header.endswith(f" {__import__('socket').gethostname()} p --cfg arm.yaml OUTPUT_DIR {tmp_path / 'l' / 'runs'} "
                           "EXPERIMENT_NAME c_seed0 RC 0 STATUS finished")
    ray.log.close()
    local.log.close()


SUMMARY = "Failures:\n exitcode : 1\nRoot Cause (first observed failure):\n exitcode : -9\n"


@pytest.mark.parametrize("status, tail, outcome", [
    ("interrupted", SUMMARY, "killed"),  # a rank stopped after another was killed: resumable
    ("failed", SUMMARY, "killed"),
    ("failed", SUMMARY + "x" * 70000 + "\n", "failed"),  # the summary out of the last 64 kB: not this ending
    ("failed", "\xff\n", "failed"),
])
def test_child_outcome_from_its_output(tmp_path, status, tail, outcome):
    run = _child_run(tmp_path, rc=1, status=status)
    script = CHILD.replace("sys.exit(", f"sys.stdout.buffer.write({tail.encode('latin-1')!r}); sys.stdout.flush(); "
                                        "sys.exit(")
    attempt = _wait(executors.Child(run, [sys.executable, "-c", script]))
    assert (attempt.exit_status, attempt.outcome) == (1, outcome)
    session = json.load(open(os.path.join(run.run_dir, "study_sessions.json")))[-1]
    assert session["outcome"] == outcome and session["wall_s"] == round(attempt.wall_s, 2)


def test_local_executor_gives_each_child_its_slot_and_threads(tmp_path):
    ex = LocalExecutor([sys.executable, "-c", CHILD], slots=["4"], threads=3)
    run = _child_run(tmp_path)
    job = ex.start(run)
    ex._busy[job].proc.wait(timeout=30)
    assert ex.poll(job).where == "GPU 4"
    printed = next(ln for ln in open(os.path.join(run.run_dir, "stdout.log")) if ln.startswith("argv ["))
    assert " cuda 4 omp 3 cwd " in printed


def test_execute_moves_stale_folders_when_asked(tmp_path, no_sleep, monkeypatch):
    run = _folder(_run(tmp_path), FINISHED, config=False)
    moved = []
    monkeypatch.setattr(runner, "move_stale", lambda r: moved.append(r.name) or shutil.rmtree(r.run_dir) or "/x")
    lines: List[str] = []
    result = runner.execute([run], _Scripted({"a_seed0": (Attempt(0, 1.0, 0, 3), FINISHED)}), lines.append,
                            move_stale_runs=True)
    assert moved == ["a_seed0"] and result.finished == ["a_seed0"]
    assert lines[0].startswith("[study] a_seed0: trained with another config (") and lines[0].endswith("moved to /x")


def test_runs_are_booked_as_they_end_and_polled_every_200_ms(tmp_path, monkeypatch):
    slept: List[float] = []
    monkeypatch.setattr(runner.time, "sleep", slept.append)
    runs = [_run(tmp_path, f"a_seed{i}", seed=i) for i in range(2)]
    ex = _Scripted({"a_seed0": (Attempt(0, 1.0, 0, 3), FINISHED), "a_seed1": (Attempt(0, 1.0, 0, 3), FINISHED)},
                   max_in_flight=2)
    ex._slow = {"a_seed0": 2}
    real_poll = ex.poll

    def poll(job):  # a_seed0 trains two rounds longer than a_seed1
        if ex._slow.get(job.name):
            ex._slow[job.name] -= 1
            return None
        return real_poll(job)

    ex.poll = poll
    lines: List[str] = []
    runner.execute(runs, ex, lines.append)
    assert [ln.split(" ")[1] for ln in lines[1:]] == ["1/2", "2/2"] and "a seed 1:" in lines[1]
    assert slept and set(slept) == {0.2}


def test_a_second_signal_is_forwarded_again_and_stopping_runs_are_not_failures(tmp_path, no_sleep):
    runs = [_run(tmp_path, f"a_seed{i}", seed=i) for i in range(4)]
    sent: List[int] = []

    def two_signals(ex, job):
        if len(sent) < 2:
            sent.append(signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    script = {"a_seed0": (Attempt(1, 1.0, 0, 1), {"status": "failed", "epochs_completed": 1}),
              "a_seed1": (Attempt(None), None), "a_seed2": (Attempt(None), None)}
    ex = _Scripted(script, max_in_flight=3, polls=2, on_poll=two_signals)
    lines: List[str] = []
    result = runner.execute(runs, ex, lines.append)
    stops = [c for c in ex.calls if c[0] == "stop"]
    assert stops == [("stop", f"a_seed{i}", signal.SIGINT) for i in range(3)] * 2
    assert result.failed == [] and result.interrupted
    assert lines[1] == "[study] 1/4 a seed 0: stopped after 1/3 epochs (1 s); resumable"
    assert lines[2].startswith("[study] stopped by SIGINT: 3 run(s) not started;")
