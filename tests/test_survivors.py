"""Tests written against the mutants earlier suites let through (issue 26), one block per module:

- the study's analysis: the trend's wording for negative gaps, an arm whose "learned" is unknown
  (no floor) never labelled "not learned", epochs-to-reach over finished runs only, and
  ``plan.runs.run_status`` (the one "is this run finished" check) case by case;
- the study's execution: the resume decision from a run folder, ``--jobs N``'s threads per run,
  the Ray executor's shared-folder probe against a node-local folder at the same path;
- the real-photo cache key; the training loader's last partial batch; COCO-WholeBody's
  ``*hand_valid`` default; ``TRAIN.LOOKAHEAD.EVAL_WEIGHTS`` in ``tools/test.py``;
- setup.cfg's mutation sections against the modules that decide a result.
(The ``inference`` and ``evaluate`` survivors' tests live in test_inference.py and test_evaluate.py.)

Each is fast (no training); each failed with its bug planted by hand or killed its mutants
(docs/mutation_testing.md).
"""
from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import FAKE_TRAINER_START, ROOT, make_cfg, write_planned_config, write_planned_configs
from test_study_analysis import ADAM, LA, _len_arm, _real_records, _records, _run, _study

from hrnet.study.analyse import stats
from hrnet.study.plan.spec import PlannedRun

sys.path.insert(0, os.path.join(ROOT, "tools"))


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """The hand-made studies name their data set ``data``, relative to the working directory."""
    monkeypatch.chdir(tmp_path)


def _analyse(study, out):
    from hrnet.study.analyse.analysis import analyse, collect

    write_planned_configs(study, out)  # each hand-made run with its config.yaml, as the trainer leaves it
    return analyse(study, collect(study, str(out)), str(out))


# ---------------------------------------------------------------------------- analyse: the trend's wording
def _negative_line(short_gap, long_gap, seeds=4):
    """One Lookahead(Adam) - Adam line at 6 and 30 epochs whose per-seed gaps are about the given ones."""
    arms, by_arm = {}, {}
    base = [0.30 + 0.01 * s for s in range(seeds)]
    noise = [0.0004, -0.0003, 0.0002, -0.0001][:seeds]
    for epochs, gap in ((6, short_gap), (30, long_gap)):
        suffix = "" if epochs == 30 else f"_e{epochs}"
        arms[f"adam{suffix}"] = _len_arm("adam", 1e-4, epochs)
        arms[f"la{suffix}"] = _len_arm("lookahead(adam)", 1e-4, epochs)
        by_arm[f"adam{suffix}"] = _records(dict(enumerate(base)))
        by_arm[f"la{suffix}"] = _records({s: base[s] + gap + noise[s] * (epochs / 6) for s in range(seeds)})
    return arms, by_arm


def test_trend_words_a_negative_gap_by_its_size():
    """Lookahead ahead at both lengths (negative gaps): -0.005 -> -0.02 grows (in its favour),
    -0.02 -> -0.005 shrinks (against it). Without ``abs`` the signed comparison says the opposite."""
    from hrnet.study.analyse.trend import GROWS, SHRINKS, _change_word, trend

    assert _change_word({"verdict": stats.BETTER}, -0.005, -0.02) == GROWS, "a larger negative gap grows"
    assert _change_word({"verdict": stats.WORSE}, -0.02, -0.005) == SHRINKS, "a smaller negative gap shrinks"
    assert _change_word({"verdict": stats.NO_DIFFERENCE}, -0.02, -0.005) != SHRINKS
    (grows,) = trend(*_negative_line(-0.005, -0.02)[::-1], "adam", 250)["lines"]
    c = grows["change"]
    assert c["verdict"] == stats.BETTER and c["mean_diff"] < 0
    assert (c["trend"], c["direction"]) == (GROWS, "in Lookahead's favour"), c
    assert [p["comparison"]["verdict"] for p in grows["points"]] == [stats.BETTER] * 2
    (shrinks,) = trend(*_negative_line(-0.02, -0.005)[::-1], "adam", 250)["lines"]
    c = shrinks["change"]
    assert (c["trend"], c["direction"]) == (SHRINKS, "against Lookahead"), c
    assert c["gap_shortest"] == pytest.approx(-0.02, abs=1e-3) and c["gap_longest"] == pytest.approx(-0.005, abs=2e-3)


# ---------------------------------------------------------------------------- analyse: "learned" unknown
def _three_arm_study(tmp_path, finished=(0, 1, 2)):
    """adam (reference) and sgd above 0.8 x the floor, la far below; runs of seeds ``finished``."""
    study = _study(tmp_path, [("adam", "hand_adam.yaml", {}), ("sgd", "hand_sgd_lr0.01.yaml", {}),
                              ("la", "hand_lookahead_adam.yaml", {})])
    out = tmp_path / "out"
    floor = 1.2 / 3  # the hand-made validation set's box-centre floor
    sgd = {"optimizer": "sgd", "inner": "sgd", "lr": 0.01, "batch": 32, "wd": 0.0, "epochs": 3}
    for s in finished:
        _run(out, "adam", s, 0.9 * floor + 0.001 * s, ADAM)
        _run(out, "sgd", s, 0.95 * floor + 0.002 * s, sgd)
        _run(out, "la", s, 0.5 * floor + 0.001 * s * s, LA)
    write_planned_configs(study, out)
    return study, out


def test_without_a_floor_no_arm_is_labelled_not_learned(tmp_path):
    """No validation annotations and no floors.json: "learned" is unknown (None) for every arm, so no
    comparison reads "has not learned" and neither the verdict nor the report says so."""
    from hrnet.study.render.report import render_markdown

    study, out = _three_arm_study(tmp_path)
    os.remove(tmp_path / "data" / "test.json")
    rep = _analyse(study, out)
    assert rep["floors"]["available"] is False
    assert [rep["arms"][a]["learned"] for a in ("adam", "sgd", "la")] == [None] * 3
    verdicts = [c["verdict"] for arm in rep["comparisons"].values() for c in arm.values()]
    verdicts += [p["comparison"]["verdict"] for p in rep["same_lr"]["pairs"]]
    assert stats.NOT_LEARNED not in verdicts, f"an arm of unknown 'learned' was labelled not learned: {verdicts}"
    assert rep["comparisons"]["sgd"]["final_NME"]["verdict"] == stats.WORSE  # judged, as any other pair
    text = " ".join(rep["verdict"])
    assert "'has not learned' is not judged" in text
    assert "has not learned:" not in text and "not learned)" not in text and ", not learned" not in text, text
    md = render_markdown(rep, [])
    assert "**has not learned**" not in md


def test_an_arm_without_finished_runs_is_not_counted_as_not_learned(tmp_path):
    """With a floor, an arm with no finished run (the reference here) has an unknown "learned": it is
    neither listed among the arms that have not learned nor called a reference that has not learned."""
    from hrnet.study.analyse.analysis import analyse, collect

    study, out = _three_arm_study(tmp_path)
    records = [r for r in collect(study, str(out)) if r["arm"] != "adam"]
    rep = analyse(study, records, str(out))
    assert rep["arms"]["adam"]["learned"] is None and rep["arms"]["sgd"]["learned"] is False
    text = " ".join(rep["verdict"])
    assert "1 of 2 arms end above" in text and "have not learned: sgd." in text, text
    assert "The reference adam has not learned" not in text, text
    assert rep["comparisons"]["sgd"]["final_NME"]["verdict"] == stats.TOO_FEW  # no reference seed to pair


def test_trend_and_slow_fast_judge_an_unknown_learned_as_learned():
    """The trend's points and the Lookahead slow/fast family: "has not learned" needs ``learned`` False
    on both sides, never None (no floor)."""
    from hrnet.study.analyse.comparisons import lookahead_slow_fast
    from hrnet.study.analyse.trend import trend

    arms, by_arm = _negative_line(-0.005, -0.02)
    for e in arms.values():
        e["learned"] = None
    (line,) = trend(by_arm, arms, "adam", 250)["lines"]
    assert [p["comparison"]["verdict"] for p in line["points"]] == [stats.BETTER] * 2, "None read as not learned"
    recs = [{"seed": s, "status": "finished", "hparams": {"optimizer": "lookahead"}, "eval_weights": "slow",
             "curves": {"epoch": [0, 1, 2], "NME_slow": [0.5, 0.30, 0.29 + 0.001 * s],
                        "NME_fast": [0.5, 0.31, 0.30 + 0.002 * s]}} for s in range(3)]
    got = lookahead_slow_fast({"la": recs}, {"la": {"learned": None}})["la"]
    assert got["slow_vs_fast"]["verdict"] == stats.BETTER, got["slow_vs_fast"]
    assert lookahead_slow_fast({"la": recs}, {"la": {"learned": False}})["la"]["slow_vs_fast"]["verdict"] \
        == stats.NOT_LEARNED


def test_real_photos_without_a_floor_judge_no_arm_not_learned():
    """No real-photo floor: every arm's real "learned" is None; no comparison with the reference
    reads "has not learned" and the verdict counts 0 judged arms."""
    from hrnet.study.analyse.rankings import real_hands_summary
    from hrnet.study.analyse.verdict import _real

    by_arm, arms = _real_records()
    got = real_hands_summary("adam", by_arm, arms, {"onehand": ("photos/onehand", "ann.json")}, {"available": False},
                             "photos")
    assert {a: v["learned"] for a, v in got["per_arm"].items()} == dict.fromkeys(("adam", "la", "sgd", "rms"))
    verdicts = {a: c["verdict"] for a, c in got["vs_reference"].items()}
    assert stats.NOT_LEARNED not in verdicts.values(), f"unknown 'learned' read as not learned: {verdicts}"
    line = _real({"real_hands": got, "floors": {"learned_fraction": 0.8}})[0]
    assert "0 of 0 arms end above" in line, line


# ---------------------------------------------------------------------------- analyse: epochs to reach
def test_epochs_to_reach_counts_finished_runs_only(tmp_path):
    """A partial run and a failed run that reached the level early must not enter the arm's
    epochs-to-reach (nor its n): only finished runs enter any statistic."""
    study = _study(tmp_path, [("adam", "hand_adam.yaml", {})], seeds=(0, 1, 2, 3))
    out = tmp_path / "out"
    _run(out, "adam", 0, 0.35, ADAM, nme_curve=[0.7, 0.5, 0.28, 0.35])  # reached 0.3 at epoch 2
    _run(out, "adam", 1, 0.40, ADAM)  # never reached
    _run(out, "adam", 2, 0.10, ADAM, status="interrupted", epochs=2, nme_curve=[0.7, 0.1, 0.1])  # partial
    _run(out, "adam", 3, 0.10, ADAM, status="failed", epochs=1, nme_curve=[0.7, 0.1])
    with open(out / "runs" / "adam_seed3" / "study_sessions.json", "w") as f:
        json.dump([{"exit_status": 1}], f)
    rep = _analyse(study, out)
    assert [r["status"] for r in rep["runs"]] == ["finished", "finished", "partial", "failed"]
    reach = rep["arms"]["adam"]["epochs_to_reach"]["0.3"]
    assert (reach["n"], reach["n_reached"]) == (2, 1), f"unfinished runs counted in epochs-to-reach: {reach}"
    assert reach["per_seed"] == {"0": 2, "1": None} and reach["median"] is None


# ---------------------------------------------------------------------------- plan: run_status
def _planned(tmp_path, end_epoch=3):
    """Run ``a_seed0`` of ``end_epoch`` epochs, its folder holding its config.yaml (as the trainer leaves it)."""
    d = tmp_path / "runs" / "a_seed0"
    run = PlannedRun("a", 0, os.path.join(ROOT, "experiments", "hand_adam.yaml"), str(d),
                     ("TRAIN.END_EPOCH", str(end_epoch), "OUTPUT_DIR", str(d.parent), "EXPERIMENT_NAME", d.name),
                     end_epoch)
    write_planned_config(run)
    return run


def test_run_status_case_by_case(tmp_path):
    """The one "is this run finished" check: finished needs the planned epochs (a run finished at
    END_EPOCH 2 is partial once the plan asks for 3); a stop at a checkpoint (130, 143) is partial,
    any other non-zero exit of the last process failed; a diverged run says its error line."""
    from hrnet.study.plan.runs import run_status

    run = _planned(tmp_path)
    fin = {"status": "finished"}
    assert run_status(run, dict(fin, epochs_completed=2), []) == ("partial", "2/3 epochs"), \
        "a run finished at 2 epochs counted as finished when the plan asks for 3"
    assert run_status(run, dict(fin, epochs_completed=3), [])[0] == "finished"
    assert run_status(run, dict(fin, epochs_completed=4), [{"exit_status": 1}])[0] == "finished"
    assert run_status(_planned(tmp_path, end_epoch=1), dict(fin, epochs_completed=True), []) == (
        "partial", "0/1 epochs")  # a bool is no epoch count
    assert run_status(run, dict(fin, epochs_completed="3"), [])[0] == "partial"
    assert run_status(run, {}, []) == ("not run", "")
    for rc in (130, 143, 0, None):
        assert run_status(run, {"status": "interrupted", "epochs_completed": 1}, [{"exit_status": rc}]) == (
            "partial", "1/3 epochs"), rc
    (tmp_path / "runs" / "a_seed0" / "stdout.log").write_text("epoch 1\nRuntimeError: boom\nbye\n")
    assert run_status(run, {"status": "interrupted"}, [{"exit_status": 1}]) == (
        "failed", "exit status 1: RuntimeError: boom")
    assert run_status(run, {}, [{"exit_status": 0}, {"exit_status": 2}])[0] == "failed"
    assert run_status(run, {}, [{"exit_status": 2}, {"exit_status": 0}]) == ("not run", "")  # the last one counts
    assert run_status(run, {"status": "diverged", "epochs_completed": 1}, []) == ("diverged", "RuntimeError: boom")
    (tmp_path / "runs" / "a_seed0" / "checkpoint_latest.pth").write_bytes(b"")
    assert run_status(run, {}, []) == ("partial", "0/3 epochs")


def test_run_status_reads_the_folder_when_not_given(tmp_path):
    from hrnet.study.plan.runs import run_status

    run = _planned(tmp_path, end_epoch=2)
    with open(os.path.join(run.run_dir, "metrics.json"), "w") as f:
        json.dump({"status": "finished", "epochs_completed": 2}, f)
    assert run_status(run)[0] == "finished"
    with open(os.path.join(run.run_dir, "study_sessions.json"), "w") as f:
        json.dump([{"exit_status": 1}], f)
    assert run_status(_planned(tmp_path, end_epoch=3))[0] == "failed"  # the session file was read too


def test_run_status_follows_the_sessions_outcome(tmp_path):
    """The last session's ``outcome`` (read from the run folder by the executor) decides over its exit
    status, which is a launcher's: torchrun exits 1 for a rank stopped at a checkpoint (partial,
    resumable), and a launcher stopped by SIGTERM after its rank failed exits 143 (failed)."""
    from hrnet.study.plan.runs import run_status

    run = _planned(tmp_path)
    stopped = {"status": "interrupted", "epochs_completed": 1}
    assert run_status(run, stopped, [{"exit_status": 1, "outcome": "interrupted"}]) == ("partial", "1/3 epochs"), \
        "a torchrun stopped at a checkpoint (exit 1, outcome interrupted) read as failed"
    (tmp_path / "runs" / "a_seed0" / "stdout.log").write_text("ValueError: rank 0 failed\n")
    assert run_status(run, dict(stopped, status="failed"), [{"exit_status": 143, "outcome": "failed"}]) == (
        "failed", "exit status 143: ValueError: rank 0 failed"), "a session whose outcome is failed read as partial"
    # Without an outcome (records before it), the exit status decides, as before.
    assert run_status(run, stopped, [{"exit_status": 1}])[0] == "failed"
    assert run_status(run, stopped, [{"exit_status": 143}])[0] == "partial"


# ---------------------------------------------------------------------------- execute: resume, threads, Ray probe
@pytest.mark.parametrize("files, resume", [
    ((), False),
    (("config.yaml",), True),  # a run that failed while setting up: restarted through --resume
    (("metrics.json",), True),
    (("events.out.tfevents.1.host",), True),
    (("checkpoint_latest.pth",), True),
    (("stdout.log", "study_sessions.json"), False),  # the study's own files do not make a run
])
def test_run_command_resumes_a_folder_with_run_files(tmp_path, files, resume):
    from hrnet.study.execute.executors import run_command

    run = PlannedRun("a", 0, "arm.yaml", str(tmp_path / "a_seed0"), ("SEED", "0"), 3)
    os.makedirs(run.run_dir)
    for name in files:
        open(os.path.join(run.run_dir, name), "w").close()
    cmd, resumed = run_command(run, ["python", "train.py"])
    assert resumed is resume, f"{files}: resume {resumed}"
    assert cmd == ["python", "train.py", "--cfg", "arm.yaml"] + (["--resume"] if resume else []) + ["SEED", "0"]


FAKE_TRAIN = FAKE_TRAINER_START + r'''
import json
with open(os.path.join(run_dir, "probe.json"), "w") as f:
    json.dump({"omp": os.environ.get("OMP_NUM_THREADS")}, f)
with open(os.path.join(run_dir, "metrics.json"), "w") as f:
    json.dump({"status": "finished", "epochs_completed": 1000, "final_NME": 0.2}, f)
'''


def _jobs_study(tmp_path, monkeypatch, jobs, cores, affinity, device="auto", threads=None):
    """tools/study.py --jobs ``jobs`` on the smoke study (its DEVICE ``device``, its ``threads``) with a
    fake trainer, on a machine of ``cores`` CPUs of which this process may use ``affinity``: each
    run's OMP_NUM_THREADS."""
    import _cli
    import study as study_tool

    tmp_path.mkdir(exist_ok=True)
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAIN)
    smoke = open(os.path.join(ROOT, "experiments", "studies", "smoke.yaml")).read()
    text = (smoke.replace("config: ../", f"config: {ROOT}/experiments/").replace("DEVICE: cpu", f"DEVICE: {device}")
            + "real_hands: false\n" + (f"threads: {threads}\n" if threads else ""))
    (tmp_path / "smoke.yaml").write_text(text)
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(affinity)), raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "99")
    out = tmp_path / "out"
    rc = _cli.run(study_tool.main, [str(tmp_path / "smoke.yaml"), "--out", str(out), "--jobs", str(jobs),
                                    "--launcher", f"{sys.executable} {fake}"])
    assert rc == 0
    runs = sorted(os.listdir(out / "runs"))
    assert len(runs) == 4
    return {r: json.load(open(out / "runs" / r / "probe.json"))["omp"] for r in runs}


def test_jobs_give_each_run_the_study_threads(tmp_path, monkeypatch):
    """A CPU study's runs train with its threads (default 1), whatever --jobs: the thread count changes
    the last bits of CPU results, so it belongs to the study."""
    assert set(_jobs_study(tmp_path, monkeypatch, 3, 8, 8, device="cpu").values()) == {"1"}
    assert set(_jobs_study(tmp_path / "t3", monkeypatch, 3, 8, 8, threads=3).values()) == {"3"}


def test_jobs_split_the_cores_this_process_may_use(tmp_path, monkeypatch):
    """A study without threads (not a CPU study) on 8 cores of which this process may use 4 (taskset,
    a container's cpuset): --jobs 2 gives each run 2 threads (4 // 2), not 4 (8 // 2, oversubscribed);
    --jobs 3, 1 (4 // 3)."""
    got = set(_jobs_study(tmp_path, monkeypatch, 2, 8, 4).values())
    assert got == {"2"}, (f"--jobs 2 with 4 usable of 8 cores gave OMP_NUM_THREADS {got}: the split must use "
                          "os.sched_getaffinity (the usable cores), not os.cpu_count")
    assert set(_jobs_study(tmp_path / "j3", monkeypatch, 3, 8, 4).values()) == {"1"}


class _FakeProbe:
    """``ray_cluster._probe`` run in this process, as on a node whose working directory is ``node_cwd``."""

    def __init__(self, node_cwd):
        self.node_cwd = node_cwd

    def options(self, **kw):
        return self

    def remote(self, marker, *args):
        from hrnet.study.execute.ray_cluster import node_problem

        here = os.getcwd()
        os.chdir(self.node_cwd)
        try:
            return node_problem(marker, *args)
        finally:
            os.chdir(here)


def _ray_executor(tmp_path, monkeypatch, node_cwd):
    ray_cluster = pytest.importorskip("hrnet.study.execute.ray_cluster")
    ray = ray_cluster.ray
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "NodeID": "ab" * 28, "NodeManagerAddress": "10.0.0.2",
                                                "Resources": {"CPU": 2.0}}])
    monkeypatch.setattr(ray, "get", lambda refs, timeout=None: list(refs))
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "10.0.0.2")
    monkeypatch.setattr(ray_cluster, "_probe", _FakeProbe(node_cwd))
    # /proc/self/cwd/study: the driver's folder for the driver, another one on a node whose cwd differs.
    return ray_cluster.RayExecutor([sys.executable, os.path.join(ROOT, "tools", "train.py")], "/proc/self/cwd/study")


def test_ray_probe_refuses_a_node_local_folder_at_the_same_path(tmp_path, monkeypatch):
    """The study folder at the same path on the node, but node-local (no driver's marker there): open()
    refuses with one line; the same folder seen by the node passes."""
    from hrnet.study.execute.executors import ExecutorError

    driver, node = tmp_path / "driver", tmp_path / "node"
    (node / "study").mkdir(parents=True)  # a folder at the same path, on the node's own disk
    driver.mkdir()
    monkeypatch.chdir(driver)
    ex = _ray_executor(tmp_path, monkeypatch, node)
    with pytest.raises(ExecutorError, match="is not the driver's on Ray node 10.0.0.2.*every node sees"):
        ex.open()
    ex.close()
    assert os.listdir(driver / "study") == []  # the marker removed
    ok = _ray_executor(tmp_path, monkeypatch, driver)
    ok.open()  # the node sees the driver's folder: no error
    ok.close()
    missing = _ray_executor(tmp_path, monkeypatch, driver)
    missing.files.append(str(tmp_path / "no_such_python"))
    with pytest.raises(ExecutorError, match="has no .*no_such_python"):
        missing.open()
    missing.close()


def test_ray_without_an_address_starts_its_own_instance(tmp_path, monkeypatch):
    """No --ray-address: a new local instance, also where RAY_ADDRESS (or a leftover cluster's
    /tmp/ray/ray_current_cluster) names another cluster; ray.init(address=None) would join that one
    (CI met such a cluster). --ray-address auto is passed through for Ray to resolve."""
    ray_cluster = pytest.importorskip("hrnet.study.execute.ray_cluster")
    ray = ray_cluster.ray
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: calls.append(kw))
    monkeypatch.setattr(ray_cluster.RayExecutor, "_check_nodes", lambda self: None)
    for address, expected in ((None, "local"), ("auto", "auto")):
        ray_cluster.RayExecutor([sys.executable, "train.py"], str(tmp_path / "study"), address=address).open()
        assert calls.pop()["address"] == expected


def test_ray_training_task_checks_the_folder_again(tmp_path, monkeypatch):
    """A node that joined after the probe: the training task itself finds no marker and reports the
    node unfit instead of training (no process, nothing written)."""
    ray_cluster = pytest.importorskip("hrnet.study.execute.ray_cluster")
    from hrnet.runtime.provenance import code_version

    monkeypatch.setattr(ray_cluster.ray.util, "get_node_ip_address", lambda: "10.0.0.3")
    monkeypatch.setattr(ray_cluster.ray, "get_runtime_context", lambda: SimpleNamespace(get_node_id=lambda: "n3"))
    run = PlannedRun("a", 0, "arm.yaml", str(tmp_path / "runs" / "a_seed0"), (), 3)
    got = ray_cluster._train_task._function(run, [sys.executable, "-c", "raise SystemExit(3)"],
                                            str(tmp_path / ".ray_marker_x"), [], str(tmp_path), code_version(), 1)
    assert got["unfit_node"] == "n3" and "is not the driver's on Ray node 10.0.0.3" in got["problem"]
    assert not os.path.exists(run.run_dir)


# ---------------------------------------------------------------------------- analyse: the real-photo cache key
def _sets(tmp_path):
    folder = tmp_path / "photos" / "one"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ann.json").write_text('{"images": [], "annotations": []}')
    return {"one": (str(folder), "ann.json")}


def test_real_photo_cache_key_follows_the_evaluated_weights_and_annotations(tmp_path, monkeypatch):
    from hrnet.study.analyse import real_photos
    from hrnet.study.analyse.real_photos import cache_key

    cfg = make_cfg(os.path.join(ROOT, "experiments", "hand_lookahead_adam.yaml"))
    sets = _sets(tmp_path)
    key = cache_key(cfg, sets, "m")
    fast = make_cfg(os.path.join(ROOT, "experiments", "hand_lookahead_adam.yaml"),
                    ["TRAIN.LOOKAHEAD.EVAL_WEIGHTS", "fast"])
    assert cache_key(fast, sets, "m") != key, "the key ignores which Lookahead weights are evaluated"
    assert cache_key(cfg, sets, "other model") != key
    monkeypatch.setattr(real_photos, "EVALUATED_CHECKPOINT", "model_best.pth")
    assert cache_key(cfg, sets, "m") != key, "the key ignores which checkpoint is evaluated"
    monkeypatch.undo()
    assert cache_key(cfg, sets, "m") == key
    ann = os.path.join(*sets["one"])
    st = os.stat(ann)
    with open(ann, "w") as f:
        f.write('{"images": [], "annotationz": []}')  # other content, same name, size and mtime
    os.utime(ann, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache_key(cfg, sets, "m") != key, "the key ignores the annotation file's content"


# ---------------------------------------------------------------------------- engine: the training loader
class _Tiny(torch.utils.data.Dataset):
    skipped = ()

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.tensor(i)


def _run_data(monkeypatch, n_train, batch, shuffle=True, *opts):
    import data
    from hrnet.engine.distributed import DistInfo
    from hrnet.engine.loaders import build_run_data

    monkeypatch.setattr(data, "build_dataset", lambda cfg, is_train: _Tiny(n_train if is_train else 10))
    cfg = make_cfg(None, ["TRAIN.BATCH_SIZE_PER_GPU", str(batch), "TEST.BATCH_SIZE_PER_GPU", "4", "WORKERS", "0",
                          "TEST.VIS_IMAGES", "0", "TRAIN.SHUFFLE", str(shuffle), *opts])
    return build_run_data(cfg, DistInfo(0, 1, 0, torch.device("cpu")))


def test_training_loader_drops_the_last_partial_batch(monkeypatch):
    """10 samples in batches of 4: two full batches per epoch (every step sees a full batch, as BN and
    the LR schedule's iteration count assume), the 2 left over drawn in another epoch; validation keeps all 10."""
    rd = _run_data(monkeypatch, 10, 4)
    batches = [b.tolist() for b in rd.train_loader]
    assert [len(b) for b in batches] == [4, 4] and len(rd.train_loader) == 2, f"partial batch kept: {batches}"
    assert len(set(sum(batches, []))) == 8
    assert sorted(sum((b.tolist() for b in rd.valid_loader), [])) == list(range(10))
    again = _run_data(monkeypatch, 10, 4)
    assert [b.tolist() for b in again.train_loader] == batches  # seeded by SEED: the same order
    other = _run_data(monkeypatch, 10, 4, True, "SEED", "1")
    assert [b.tolist() for b in other.train_loader] != batches
    ordered = _run_data(monkeypatch, 10, 4, False)
    assert [b.tolist() for b in ordered.train_loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    from configs import ConfigError

    with pytest.raises(ConfigError, match="TRAIN.BATCH_SIZE_PER_GPU 11 x 1 process"):
        _run_data(monkeypatch, 10, 11)


def test_recalibration_batches_are_full_and_fixed_by_the_step(monkeypatch):
    from hrnet.engine.loaders import recalibration_loader

    cfg = make_cfg(None, ["TRAIN.BATCH_SIZE_PER_GPU", "4", "WORKERS", "0"])

    def draw(step):
        return [b.tolist() for b in recalibration_loader(cfg, _Tiny(10), step, torch.device("cpu"))]

    assert [len(b) for b in draw(3)] == [4, 4] and draw(3) == draw(3) and draw(3) != draw(4)


# ---------------------------------------------------------------------------- data: COCO-WholeBody hand_valid
def test_wholebody_hand_without_hand_valid_is_a_sample(tmp_path):
    """``*hand_valid`` absent means valid (mmpose's COCO-WholeBody files may omit it); false drops the hand."""
    from data import read_coco

    kp = np.tile([50.0, 60.0, 2.0], (21, 1))
    kp[:, 0] += np.arange(21)
    ann = {"images": [{"id": 1, "file_name": "a.jpg"}],
           "annotations": [{"id": 3, "image_id": 1, "keypoints": [0] * 51, "lefthand_kpts": kp.ravel().tolist(),
                            "lefthand_box": [40, 50, 40, 30], "righthand_kpts": kp.ravel().tolist(),
                            "righthand_box": [40, 50, 40, 30], "righthand_valid": False}]}
    path = tmp_path / "wb.json"
    path.write_text(json.dumps(ann))
    recs = read_coco(str(path), str(tmp_path), 21)
    assert [r.ann_id for r in recs] == [6], "a left hand without lefthand_valid was dropped (or the invalid right kept)"


# ---------------------------------------------------------------------------- tools/test.py: EVAL_WEIGHTS
@pytest.fixture(scope="module")
def lookahead_fast_run(tmp_path_factory, real_hands):
    """A Lookahead checkpoint_latest.pth mid-cycle whose run validated its fast weights."""
    from hrnet import build_model
    from optim.factory import build_optimizer
    from hrnet.runtime.checkpoint import save_checkpoint

    opts = ["MODEL.NAME", "hrnet_w18_small", "MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]",
            "DATASET.FORMAT", "coco", "DATASET.ROOT", os.path.join(real_hands, "freihand"), "DATASET.TESTSET",
            "test_freihand.json", "TEST.BATCH_SIZE_PER_GPU", "8", "WORKERS", "0", "DEVICE", "cpu"]
    cfg = make_cfg(None, opts + ["TRAIN.OPTIMIZER", "lookahead", "TRAIN.LOOKAHEAD.K", "3", "TRAIN.LR", "0.01",
                                 "TRAIN.LOOKAHEAD.EVAL_WEIGHTS", "fast"])
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    x = torch.randn(2, 3, 64, 64)
    for _ in range(4):  # a sync after 3 steps, then one fast step: fast != slow
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    fast = {k: v.clone() for k, v in model.state_dict().items()}
    path = str(tmp_path_factory.mktemp("run") / "checkpoint_latest.pth")
    save_checkpoint({"state_dict": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1,
                     "config": cfg.dump()}, path)
    return path, fast, opts


def test_test_py_evaluates_the_weights_the_run_validated(lookahead_fast_run, tmp_path, capsys):
    """TRAIN.LOOKAHEAD.EVAL_WEIGHTS fast in the checkpoint's config: tools/test.py (no --weights) takes the
    fast weights, as the run's validation did; --weights slow still chooses the slow ones."""
    import _cli
    import test as test_tool
    from hrnet.evaluation.model_file import load_model_file

    path, fast, opts = lookahead_fast_run
    model, info = load_model_file(make_cfg(None, opts), path, torch.device("cpu"))
    assert info.weights == "fast", f"EVAL_WEIGHTS fast ignored: {info.weights} weights evaluated"
    assert all(torch.equal(v, fast[k]) for k, v in model.state_dict().items())
    assert _cli.run(test_tool.main, opts + ["--model-file", path, "--no-progress", "--out", str(tmp_path / "ev")]) == 0
    assert f"evaluating {path}: fast weights (Lookahead)" in capsys.readouterr().out
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["weights"] == "fast"
    _, slow = load_model_file(make_cfg(None, opts), path, torch.device("cpu"), weights="slow")
    assert slow.weights == "slow"


# ---------------------------------------------------------------------------- the mutation sections themselves
#: Modules of the result-deciding packages that need no mutation section, and why.
NOT_MUTATED = {
    "hrnet/evaluation/visualize.py": "pictures (prediction grids); no number, no run's fate",
    "hrnet/evaluation/error_analysis.py": "pictures of the worst hands; no number",
    "hrnet/evaluation/export.py": "ONNX / TorchScript export, checked against the model by its own --check",
    "hrnet/runtime/perf.py": "allocator and thread tuning: speed only",
    "hrnet/models/hrnet.py": "the network itself: any mutant changes every number, caught only by training tests",
    "configs/defaults.py": "constants; configs/__init__.py validates them",
}
RESULT_PACKAGES = ("configs", "data", "optim", "hrnet/study", "hrnet/engine", "hrnet/evaluation", "hrnet/runtime",
                   "hrnet/models")


def test_every_module_that_decides_a_result_has_a_mutation_section():
    """Every module of the packages that decide a number or a run's fate is in a [mutation:*] section of
    setup.cfg (or NOT_MUTATED says why not); every named file and test exists; every mutated file is in
    [mutmut] only_mutate, where ``mutmut show NAME`` looks for it."""
    import configparser

    import mutation

    sections = mutation.modules(os.path.join(ROOT, "setup.cfg"))
    mutated = {f for files, _ in sections.values() for f in files}
    named = mutated | {t.split("::")[0] for _, tests in sections.values() for t in tests}
    assert not [p for p in sorted(named) if not os.path.exists(os.path.join(ROOT, p))], "setup.cfg names missing files"
    import ast

    named_tests = {t for _, tests in sections.values() for t in tests if "::" in t}
    defined = {f: {n.name for n in ast.walk(ast.parse(open(os.path.join(ROOT, f)).read()))
                   if isinstance(n, ast.FunctionDef)} for f in {t.split("::")[0] for t in named_tests}}
    missing = sorted(t for t in named_tests if t.split("::")[1].split("[")[0] not in defined[t.split("::")[0]])
    assert not missing, f"setup.cfg names tests that do not exist: {missing}"  # the section could not run
    parser = configparser.ConfigParser()
    parser.read(os.path.join(ROOT, "setup.cfg"))
    assert not mutated - set(parser["mutmut"]["only_mutate"].split()), "add these to [mutmut] only_mutate"
    modules = {os.path.relpath(os.path.join(base, f), ROOT) for pkg in RESULT_PACKAGES
               for base, _, files in os.walk(os.path.join(ROOT, pkg)) for f in files
               if f.endswith(".py") and f != "__init__.py" or os.path.join(pkg, f) == "configs/__init__.py"}
    orphans = sorted(modules - mutated - set(NOT_MUTATED))
    assert not orphans, f"no [mutation:*] section of setup.cfg mutates {orphans} (add one, or a reason to NOT_MUTATED)"
