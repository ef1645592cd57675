"""hrnet.study.execute.runner with the local executor: CPU runs side by side (--jobs), each with its own threads."""
from __future__ import annotations

import json
import os
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))

FAKE = r'''
import json, os, sys, time
run_dir = sys.argv[-1]
os.makedirs(run_dir, exist_ok=True)
t0 = time.time()
time.sleep(1.0)
with open(os.path.join(run_dir, "probe.json"), "w") as f:
    json.dump({"omp": os.environ.get("OMP_NUM_THREADS"), "start": t0, "end": time.time()}, f)
with open(os.path.join(run_dir, "metrics.json"), "w") as f:
    json.dump({"status": "finished", "epochs_completed": 1, "final_NME": 0.2}, f)
'''


def _runs(tmp_path, n):
    from hrnet.study.plan.spec import PlannedRun

    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE)
    runs = [PlannedRun("fake", i, "cfg.yaml", str(tmp_path / f"fake_seed{i}"), (str(tmp_path / f"fake_seed{i}"),), 1)
            for i in range(n)]
    return [sys.executable, str(fake)], runs


def _probe(run):
    with open(os.path.join(run.run_dir, "probe.json")) as f:
        return json.load(f)


def test_jobs_run_side_by_side_with_their_share_of_the_threads(tmp_path):
    from hrnet.study.execute.executors import LocalExecutor
    from hrnet.study.execute.runner import execute

    cmd, runs = _runs(tmp_path, 3)
    lines = []
    result = execute(runs, LocalExecutor(cmd, [None, None], threads=1), echo=lines.append)
    assert sorted(result.finished) == ["fake_seed0", "fake_seed1", "fake_seed2"], lines
    probes = [_probe(r) for r in runs]
    assert [p["omp"] for p in probes] == ["1", "1", "1"]
    assert probes[1]["start"] < probes[0]["end"]  # the first two overlapped ...
    assert probes[2]["start"] >= min(probes[0]["end"], probes[1]["end"]) - 0.05  # ... the third waited for a slot
    sessions = json.load(open(os.path.join(runs[0].run_dir, "study_sessions.json")))
    assert sessions[0]["threads"] == 1 and sessions[0]["exit_status"] == 0
    assert "2 at a time, 1 thread(s) each" in lines[0]


def test_without_jobs_the_threads_are_inherited(tmp_path, monkeypatch):
    from hrnet.study.execute.executors import LocalExecutor
    from hrnet.study.execute.runner import execute

    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    cmd, runs = _runs(tmp_path, 1)
    execute(runs, LocalExecutor(cmd), echo=lambda s: None)
    assert _probe(runs[0])["omp"] == "7"


@pytest.mark.parametrize("options, words", [
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--jobs", "2", "--devices", "0,1"], "--devices gives each run a GPU"),
    (["--jobs", "2", "--executor", "ray"], "--jobs is an option of the local executor"),
])
def test_jobs_option_mixups_are_one_line(capsys, tmp_path, options, words):
    import _cli
    import study as study_tool

    study = os.path.join(ROOT, "experiments", "studies", "smoke.yaml")
    rc = _cli.run(study_tool.main, [study, "--out", str(tmp_path / "out"), "--no-real-hands", *options])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and words in err and err.count("\n") == 1, err
    assert not os.path.exists(tmp_path / "out" / "runs")
