"""hrnet.study.execute.runner with the local executor: CPU runs side by side (--jobs), each with its own threads."""
from __future__ import annotations

import json
import os
import sys

import pytest

from conftest import FAKE_TRAINER_START, ROOT, make_cfg

sys.path.insert(0, os.path.join(ROOT, "tools"))

FAKE = FAKE_TRAINER_START + r'''
import json, time
t0 = time.time()
time.sleep(1.0)
with open(os.path.join(run_dir, "probe.json"), "w") as f:
    json.dump({"omp": os.environ.get("OMP_NUM_THREADS"), "start": t0, "end": time.time()}, f)
with open(os.path.join(run_dir, "metrics.json"), "w") as f:
    json.dump({"status": "finished", "epochs_completed": cfg.TRAIN.END_EPOCH, "final_NME": 0.2}, f)
'''


def _runs(tmp_path, n):
    from hrnet.study.plan.spec import PlannedRun

    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE)
    cfg = os.path.join(ROOT, "experiments", "hand_adam.yaml")
    end = int(make_cfg(cfg).TRAIN.END_EPOCH)  # the fake "trains" all the epochs at once
    runs = [PlannedRun("fake", i, cfg, str(tmp_path / f"fake_seed{i}"),
                       ("OUTPUT_DIR", str(tmp_path), "EXPERIMENT_NAME", f"fake_seed{i}"), end)
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
    again = execute(runs, LocalExecutor(cmd, [None, None], threads=1), echo=lines.append)  # each with its config.yaml
    assert sorted(again.skipped) == sorted(result.finished) and not again.finished, lines


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


def test_records_without_config_yaml_are_refused_as_stale_and_moved_aside_when_asked(tmp_path, capsys):
    """Run folders with a finished metrics.json but no config.yaml (which the trainer writes first):
    nothing says what they trained, so the study refuses to train (one line, as for a stale folder)
    and ``--move-stale`` moves them to <out>/stale/ and trains the planned runs in their place."""
    import _cli
    import study as study_tool
    from hrnet.study.plan.spec import load_study, plan_runs

    smoke = tmp_path / "smoke.yaml"
    smoke.write_text(open(os.path.join(ROOT, "experiments", "studies", "smoke.yaml")).read()
                     .replace("config: ../", f"config: {ROOT}/experiments/") + "real_hands: false\n")
    out = tmp_path / "out"
    runs = plan_runs(load_study(str(smoke)), str(out))
    for run in runs:
        os.makedirs(run.run_dir)
        with open(os.path.join(run.run_dir, "metrics.json"), "w") as f:
            json.dump({"status": "finished", "epochs_completed": run.end_epoch, "final_NME": 0.123}, f)
    fake = tmp_path / "fake_train.py"  # the planned run: its config.yaml, then a finished metrics.json
    fake.write_text(FAKE_TRAINER_START + "import json\njson.dump({'status': 'finished', 'epochs_completed': "
                    "cfg.TRAIN.END_EPOCH, 'final_NME': 0.2}, open(os.path.join(run_dir, 'metrics.json'), 'w'))\n")
    launcher = ["--launcher", f"{sys.executable} {fake}"]
    rc = _cli.run(study_tool.main, [str(smoke), "--out", str(out), *launcher])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert f"{len(runs)} run folder(s) hold a run of another config than the plan" in err and "--move-stale" in err
    assert f"{runs[0].name} (no config.yaml: cannot be checked against the plan" in err, err
    assert not (out / "stale").exists() and all(os.listdir(r.run_dir) == ["metrics.json"] for r in runs)

    rc = _cli.run(study_tool.main, [str(smoke), "--out", str(out), "--move-stale", *launcher])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    moved = sorted(os.listdir(out / "stale"))
    assert len(moved) == len(runs) and all(any(m.startswith(f"{r.name}-") for m in moved) for r in runs), moved
    for m in moved:  # the old folders, untouched
        assert os.listdir(out / "stale" / m) == ["metrics.json"]
        assert json.loads((out / "stale" / m / "metrics.json").read_text())["final_NME"] == 0.123
    assert f"{runs[0].name}: trained with another config (no config.yaml" in printed and "moved to" in printed
    rep = json.loads((out / "report.json").read_text())
    assert {(r["status"], r["final_NME"]) for r in rep["runs"]} == {("finished", 0.2)}
