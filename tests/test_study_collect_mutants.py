"""Fast tests of the study's collection and report assembly (``hrnet/study/analyse/analysis.py``,
``real_photos.py``, ``code_versions.py``), written against mutmut's survivors: each run record's
fields from a hand-made folder, the per-arm entry, the report's sections, the real-photo sets and
cache, and the code versions of the comparisons. Hand-made studies of one or two seeds, no training."""
from __future__ import annotations

import datetime
import json
import os

import numpy as np
import pytest

from conftest import ROOT, make_cfg, write_planned_configs
from test_study_analysis import _coco, _data

from hrnet.study.analyse import stats

CFG = os.path.join(ROOT, "experiments")
TINY = ["MODEL.NAME", "hrnet_w18_small", "MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """The hand-made studies name their data set ``data``, relative to the working directory."""
    monkeypatch.chdir(tmp_path)


def _study_file(tmp_path, arms, seeds=(0, 1), extra=(), file="hand.yaml"):
    """A study ``tmp_path/file`` over the hand-made data set ``tmp_path/data``; ``arms``: (name, config
    (in experiments/ unless absolute), overrides, extra arm keys as YAML text)."""
    from hrnet.study.plan.spec import load_study

    _data(str(tmp_path / "data"))
    lines = [f"reference: {arms[0][0]}", f"seeds: {list(seeds)}", "nme_levels: [0.3, 0.1]", "description: hand made",
             "overrides:", "  DATASET.FORMAT: coco", "  DATASET.ROOT: data", "  TRAIN.END_EPOCH: 3",
             "  TRAIN.LR_STEP: [1]", "  DATASET.MAX_TRAIN_SAMPLES: 128", *extra, "arms:"]
    for name, config, over, more in arms:
        config = config if os.path.isabs(config) else f"{CFG}/{config}"
        lines.append(f"  - {{name: {name}, config: {config}, overrides: {json.dumps(over)}{more}}}")
    path = tmp_path / file
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return load_study(str(path))


def _write(out, name, metrics=None, sessions=None, log=None):
    """``out/runs/<name>/`` with the given metrics.json, study_sessions.json and stdout.log."""
    d = os.path.join(out, "runs", name)
    os.makedirs(d, exist_ok=True)
    for file, content in (("metrics.json", metrics), ("study_sessions.json", sessions)):
        if content is not None:
            with open(os.path.join(d, file), "w") as f:
                json.dump(content, f)
    if log is not None:
        with open(os.path.join(d, "stdout.log"), "w") as f:
            f.write(log)
    return d


HP = {"optimizer": "adam", "inner": "adam", "lr": 0.0001, "batch": 32, "wd": 0.0, "epochs": 3}
LA_HP = dict(HP, optimizer="lookahead", k=5, alpha=0.5)
V1 = {"git_commit": "1a2b3c4d5e6f", "git_dirty": False, "source_sha256": "ab" * 32}


def _finished(seed, nme, hp=HP, world=None, **more):
    """A finished run's metrics.json (3 epochs, final NME ``nme``)."""
    hist = [{"epoch": e, "NME": v, "valid_loss": v / 100, "wall_time": 10.0 * e}
            for e, v in enumerate([0.7, 0.5, nme - 0.02, nme])]
    info = {"status": "finished", "epochs_completed": 3, "end_epoch": 3, "final_NME": nme, "best_NME": nme - 0.02,
            "best_epoch": 2, "final_valid_loss": nme / 100, "final_train_loss": nme / 50, "wall_time_s": 30.0,
            "final": {"PCK@0.2": 0.5 + seed / 10, "AUC": 0.25, "EPE": 3.0 + seed}, "hparams": dict(hp, seed=seed),
            "history": hist, "code_version": V1, "code_versions": [{"code_version": V1, "from_epoch": 0}]}
    if world is not None:
        info["world_size"] = world
    info.update(more)
    return info


# ---------------------------------------------------------------------------- small helpers
def test_rel_path_num_scrub_and_family(tmp_path):
    from hrnet.study.analyse.analysis import _family, _num, _scrub, rel_path

    assert rel_path(None) is None and rel_path("") == ""
    assert rel_path(str(tmp_path / "out" / "x")) == os.path.join("out", "x")
    assert [_num(v) for v in (1, 2.5, True, False, float("nan"), float("inf"), "1", None)] == \
        [1.0, 2.5, None, None, None, None, None, None]
    assert isinstance(_num(1), float)
    out = str(tmp_path / "out")
    assert _scrub(f"error in {out}/runs/a: {out}", out) == "error in out/runs/a: out"
    assert _scrub(f"error in {out}", "out") == "error in out"  # a relative out_dir is made absolute first
    assert [_family(hp) for hp in ({"optimizer": "adam"}, {"optimizer": "lookahead", "inner": "sgd"},
                                   {"optimizer": "lookahead"}, {}, {"optimizer": 3})] == \
        ["adam", "lookahead(sgd)", "lookahead(?)", "?", "3"]


def test_finished_are_the_finished_runs_in_seed_order():
    from hrnet.study.analyse.analysis import finished

    recs = [{"seed": 2, "status": "finished"}, {"seed": 0, "status": "partial"}, {"seed": 1, "status": "finished"},
            {"seed": 3, "status": "stale"}]
    assert finished(recs) == [recs[2], recs[0]]
    assert finished([]) == []


def test_machine_keeps_the_recorded_fields_of_the_right_types():
    from hrnet.study.analyse.analysis import _machine

    assert _machine({}) is None and _machine({"machine": "a cpu"}) is None and _machine({"machine": None}) is None
    full = {"cpu": "Xeon", "cpu_flags": ["avx2", 3], "torch": "2.4", "threads": 4, "device": "cpu",
            "cpu_id": {"family": 6}, "cache_kib": {"l2": 2048}, "numerics": "abc123", "other": 1}
    got = _machine({"machine": full})
    assert got == {"cpu": "Xeon", "cpu_flags": ["avx2", "3"], "torch": "2.4", "threads": 4, "device": "cpu",
                   "cpu_id": {"family": 6}, "cache_kib": {"l2": 2048}, "numerics": "abc123"}
    assert got["cpu_id"] is not full["cpu_id"]  # a copy: the report never aliases metrics.json
    bad = {"cpu": 1, "cpu_flags": "avx2", "torch": None, "threads": True, "device": ["cpu"], "cpu_id": [6],
           "cache_kib": "2048", "numerics": 5}
    assert _machine({"machine": bad}) == {"cpu": None, "cpu_flags": [], "torch": None, "threads": None,
                                          "device": None}
    assert _machine({"machine": {"threads": 2.0, "numerics": ""}})["threads"] is None
    assert "numerics" not in _machine({"machine": {"numerics": ""}})


@pytest.mark.parametrize("sessions, history, expected", [
    ([{"wall_s": 50.0}], [{"wall_time": 5.0}, {"wall_time": 35.0}], (50.0, 20.0, 0.4)),
    ([{"wall_s": 20}], [{"wall_time": 5.0}, {"wall_time": 35.0}], (20.0, 0.0, 0.0)),  # never negative
    ([{"wall_s": 0}], [{"wall_time": 5.0}, {"wall_time": 5.0}], (0.0, 0.0, None)),
    ([{"wall_s": 50.0}], [{"wall_time": 5.0}, {}], (50.0, None, None)),
    ([{"wall_s": 50.0}], [{}, {"wall_time": 5.0}], (50.0, None, None)),
    ([{"wall_s": 50.0}], [{"wall_time": 5.0}], (None, None, None)),  # one epoch: nothing to subtract
    ([{"wall_s": 50.0}, {"wall_s": 10.0}], [{"wall_time": 5.0}, {"wall_time": 35.0}], (None, None, None)),
    ([], [{"wall_time": 5.0}, {"wall_time": 35.0}], (None, None, None)),
    ([{"wall_s": "50"}], [{"wall_time": 5.0}, {"wall_time": 35.0}], (None, None, None)),
    ([{}], [{"wall_time": 5.0}, {"wall_time": 35.0}], (None, None, None)),
])
def test_overhead_of_a_one_session_run(sessions, history, expected):
    from hrnet.study.analyse.analysis import _overhead

    got = _overhead(sessions, history)
    assert (got["process_wall_s"], got["overhead_s"], got["overhead_fraction"]) == expected
    assert list(got) == ["process_wall_s", "overhead_s", "overhead_fraction"]


def test_stale_sentence_names_at_most_four_runs():
    from hrnet.study.analyse.analysis import _stale_sentence

    assert _stale_sentence([{"status": "finished", "name": "a", "reason": ""}]) == []
    head = ("{n} run folder(s) hold a run of another config than this plan (stale: stored -> planned) or no "
            "config.yaml (unverified), and count for nothing (restore the plan, or train with --move-stale): ")
    two = [{"status": "stale", "name": "a_seed0", "reason": "TRAIN.LR: 0.1 -> 0.01"},
           {"status": "finished", "name": "b_seed0", "reason": ""},
           {"status": "unverified", "name": "c_seed0", "reason": "no config.yaml"}]
    assert _stale_sentence(two) == [head.format(n=2) + "a_seed0 (TRAIN.LR: 0.1 -> 0.01); c_seed0 (no config.yaml)."]
    five = [{"status": "stale", "name": f"r{i}", "reason": str(i)} for i in range(5)]
    assert _stale_sentence(five) == [head.format(n=5) + "r0 (0); r1 (1); r2 (2); r3 (3) ...."]  # " ..." then the full stop
    four = five[:4]
    assert _stale_sentence(four) == [head.format(n=4) + "r0 (0); r1 (1); r2 (2); r3 (3)."]


# ---------------------------------------------------------------------------- collect: each record's fields
def test_collect_reads_each_field_of_the_run_folders(tmp_path):
    from hrnet.study.analyse.analysis import collect
    from hrnet.study.plan.identity import NOT_RECORDED, run_code_versions

    study = _study_file(tmp_path, [("adam", "hand_adam.yaml", {}, ""), ("la", "hand_lookahead_adam.yaml", {}, "")])
    out = tmp_path / "out"
    machine = {"cpu": "Xeon", "cpu_flags": ["avx2"], "torch": "2.4", "threads": 2, "device": "cpu"}
    hist = [{"epoch": 0, "NME": 0.7, "wall_time": 5.0, "train_loss": None},
            "not a dict",
            {"NME": 0.4, "NME_slow": 0.4, "NME_fast": 0.45, "train_loss": 1.5, "valid_loss": 0.004, "wall_time": 15.0},
            {"epoch": 2, "NME": 0.25, "NME_slow": 0.25, "NME_fast": float("nan"), "valid_loss": True, "wall_time": 25.0},
            {"epoch": 4, "NME": "0.2", "eval_weights": "slow", "wall_time": 35.0}]  # epoch 3 not logged
    adam0 = _finished(0, 0.2, world=2, history=hist, machine=machine, final_NME=0.2, best_NME=float("inf"),
                      final={"PCK@0.2": 0.55, "AUC": "x", "EPE": 3.5})
    _write(out, "adam_seed0", adam0, sessions=[{"wall_s": 50.0, "exit_status": 0, "outcome": "finished"}])
    abs_out = os.path.abspath(str(out))
    _write(out, "adam_seed1", dict(_finished(1, 0.3), status="running", epochs_completed=1, hparams=None),
           sessions=[{"exit_status": 1}], log=f"Traceback\nRuntimeError: no space in {abs_out}/runs/adam_seed1\n")
    _write(out, "la_seed1", _finished(1, 0.19, hp=LA_HP, world="2", final="not a dict"))
    write_planned_configs(study, out)
    recs = collect(study, str(out))
    assert [r["name"] for r in recs] == ["adam_seed0", "la_seed0", "adam_seed1", "la_seed1"]
    a0, la0, a1, la1 = recs
    assert (a0["arm"], a0["seed"], a0["status"], a0["reason"], a0["problems"]) == ("adam", 0, "finished", "", [])
    assert a0["epochs_completed"] == 3 and a0["end_epoch"] == 3 and a0["iterations"] == 3 * (64 // 32)  # 2 ranks
    assert a0["hparams"] == dict(HP, seed=0) and a0["pck_key"] == "PCK@0.2"
    assert (a0["final_NME"], a0["best_NME"], a0["best_epoch"]) == (0.2, None, 2)
    assert (a0["final_valid_loss"], a0["final_train_loss"], a0["wall_time_s"]) == (0.002, 0.004, 30.0)
    assert (a0["PCK"], a0["AUC"], a0["EPE"]) == (0.55, None, 3.5)
    assert a0["curves"] == {"train_loss": [None, 1.5, None, None], "valid_loss": [None, 0.004, None, None],
                            "NME": [0.7, 0.4, 0.25, None], "NME_slow": [None, 0.4, 0.25, None],
                            "NME_fast": [None, 0.45, None, None], "epoch": [0, 1, 2, 4]}  # index 1 for no epoch
    assert a0["eval_weights"] == "slow" and a0["sessions"] == 1 and a0["machine"] == machine
    assert a0["code_versions"] == run_code_versions(adam0) and a0["code_version"] == a0["code_versions"][-1]["label"]
    assert a0["code_version"] != NOT_RECORDED
    assert (a0["process_wall_s"], a0["overhead_s"], a0["overhead_fraction"]) == (50.0, 20.0, 0.4)
    assert a0["epochs_to_reach"] == {"0.3": 2, "0.1": None}
    assert list(a0) == ["name", "arm", "seed", "status", "reason", "problems", "epochs_completed", "end_epoch",
                        "iterations", "hparams", "final_NME", "best_NME", "best_epoch", "final_valid_loss",
                        "final_train_loss", "pck_key", "PCK", "AUC", "EPE", "wall_time_s", "curves", "eval_weights",
                        "sessions", "machine", "code_versions", "code_version", "process_wall_s", "overhead_s",
                        "overhead_fraction", "epochs_to_reach"]
    # A failed run: the reason names its folder relative to the working directory; a bad key is a problem.
    assert a1["status"] == "failed" and a1["reason"] == "exit status 1: RuntimeError: no space in out/runs/adam_seed1"
    assert a1["problems"] == ["metrics.json: bad hparams (None)"] and a1["hparams"] == {}
    assert a1["iterations"] == 3 * (128 // 32)  # no world_size: one process
    assert (a1["best_NME"], a1["AUC"], a1["PCK"]) == (pytest.approx(0.28), 0.25, 0.6)  # finite: read by their keys
    # Never run: an empty record.
    assert (la0["status"], la0["reason"], la0["code_version"], la0["code_versions"]) == ("not run", "", None, [])
    assert la0["curves"] == {k: [] for k in ("train_loss", "valid_loss", "NME", "NME_slow", "NME_fast", "epoch")}
    assert (la0["eval_weights"], la0["machine"], la0["sessions"], la0["hparams"]) == (None, None, 0, {})
    assert la0["epochs_to_reach"] == {"0.3": None, "0.1": None} and la0["epochs_completed"] is None
    # world_size "2" is no int: one process; "final" no dict: no PCK.
    assert la1["iterations"] == 12 and (la1["PCK"], la1["AUC"], la1["EPE"]) == (None, None, None)
    assert la1["eval_weights"] is None and la1["status"] == "finished" and "real_hands" not in la1


def test_collect_evaluates_the_finished_runs_on_the_real_photos(tmp_path, real_hands):
    from hrnet.study.analyse.analysis import analyse, collect

    study = _study_file(tmp_path, [("adam", "hand_adam.yaml", {}, "")], extra=[f"real_hands: {real_hands}"])
    out = tmp_path / "out"
    _write(out, "adam_seed0", _finished(0, 0.2))
    _write(out, "adam_seed1", dict(_finished(1, 0.2), status="running", epochs_completed=1))
    write_planned_configs(study, out)
    r0, r1 = collect(study, str(out))
    assert r0["real_hands"] == {"error": "no checkpoint_latest.pth and no cached result for these settings"}
    assert "real_hands" not in r1  # not finished: not evaluated
    assert all("real_hands" not in r for r in collect(study, str(out), evaluate_real=False))
    real = analyse(study, [r0, r1], str(out))["real_hands"]  # the photos are here: no "source" of the numbers
    assert real["available"] is True and real["folder"] == os.path.relpath(real_hands) and "source" not in real


# ---------------------------------------------------------------------------- analyse: the arm entries and sections
def _four_arm_study(tmp_path):
    """adam (reference, seed 2 planned later), la, a longer adam (a length variant) and adam again (a replicate)."""
    arms = [("adam", "hand_adam.yaml", {}, ", seeds: [0, 1, 2], seed_priority: {2: 3}"),
            ("la", "hand_lookahead_adam.yaml", {}, ", priority: 1"),
            ("adam_e6", "hand_adam.yaml", {"TRAIN.END_EPOCH": 6, "TRAIN.LR_STEP": [2]}, ""),
            ("adam_again", "hand_adam.yaml", {"PRINT_FREQ": 7}, "")]
    study = _study_file(tmp_path, arms)
    out = tmp_path / "out"
    _write(out, "adam_seed0", _finished(0, 0.2, world=2))
    _write(out, "adam_seed1", _finished(1, 0.22))
    _write(out, "la_seed0", _finished(0, 0.1, hp=LA_HP))
    _write(out, "la_seed1", dict(_finished(1, 0.12, hp=LA_HP), status="running", epochs_completed=2))
    _write(out, "adam_again_seed0", _finished(0, 0.21))
    write_planned_configs(study, out)
    return study, out


def _spy(monkeypatch, module, name: str) -> list:
    """The positional arguments of each call of ``module.name`` (still called)."""
    calls, real = [], getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


def test_analyse_builds_each_arm_entry_and_section(tmp_path, monkeypatch):
    from hrnet.engine.run_record import hparams
    from hrnet.study.analyse import analysis
    from hrnet.study.analyse.analysis import analyse, collect
    from hrnet.study.analyse.answer import USER
    from hrnet.study.analyse.calibration import calibration
    from hrnet.study.analyse.rankings import ranking
    from hrnet.study.analyse.verdict import verdict
    from hrnet.study.plan.scale import arm_config, arm_setting, iteration_summary, scale_rows, user_iterations

    study, out = _four_arm_study(tmp_path)
    recs = collect(study, str(out))
    trends, replicate_calls = _spy(monkeypatch, analysis, "trend"), _spy(monkeypatch, analysis, "replicate_arms")
    rep = analyse(study, list(reversed(recs)), str(out))
    # The trend gets the runs of every arm but the replicate, the reference; the replicates are found from it.
    by_arm, arms, reference, _ = trends[0]
    assert {a: [r["name"] for r in rs] for a, rs in by_arm.items()} == {
        "adam": ["adam_seed2", "adam_seed1", "adam_seed0"], "la": ["la_seed1", "la_seed0"], "adam_e6": [
            "adam_e6_seed1", "adam_e6_seed0"]} and reference == "adam"
    assert replicate_calls[0][1] == "adam"
    assert list(rep) == ["study", "scale", "iterations", "floors", "calibration", "runs", "arms", "length_variants",
                         "ranking", "comparisons", "same_lr", "trend", "lookahead", "sensitivity", "real_hands",
                         "key_lookahead", "lookahead_vs_user", "effective_step", "k_alpha_vs_key", "tuned",
                         "effective_time", "user_ranking", "families", "machines", "replicates", "machine_spread", "provenance", "verdict"]
    floor = 1.2 / 3  # the hand-made validation set's box-centre floor
    assert rep["floors"]["learned_fraction"] == 0.8 and rep["floors"]["valid"]["box_centre"]["NME"] == \
        pytest.approx(floor)
    assert rep["runs"] == list(reversed(recs)) and rep["calibration"] == calibration("adam", recs, rep["floors"])
    # The replicate enters the machine spread only; the length variant the trend only.
    assert list(rep["arms"]) == ["adam", "la", "adam_e6"] and rep["length_variants"] == {"adam_e6": "adam"}
    assert rep["arms"]["adam_e6"]["length_variant_of"] == "adam" and "length_variant_of" not in rep["arms"]["la"]
    assert list(rep["replicates"]) == ["adam_again"] and rep["replicates"]["adam_again"]["replicate_of"] == "adam"
    assert rep["replicates"]["adam_again"]["final_NME"]["per_seed"] == {"0": 0.21}
    assert rep["ranking"] == ranking({a: rep["arms"][a] for a in ("adam", "la")})
    assert list(rep["comparisons"]) == ["la"] and rep["comparisons"]["la"]["final_NME"]["seeds"] == [0]
    assert rep["comparisons"]["la"]["final_NME"]["family"] == USER  # reference_families, not one family "all"
    spread = rep["machine_spread"]["replicates"]
    assert [(e["arm"], e["of"]) for e in spread] == [("adam_again", "adam")]
    row = spread[0]["per_seed"][0]
    assert (row["seed"], row["final_NME_replicate"], row["final_NME_original"]) == (0, 0.21, 0.2)
    assert [p["key"] for p in rep["same_lr"]["pairs"]] == ["la - adam"] and list(rep["lookahead"]) == ["la"]
    assert rep["real_hands"]["available"] is False and rep["real_hands"]["folder"] is None
    assert "source" not in rep["real_hands"]
    assert rep["scale"] == scale_rows(study) and rep["iterations"] == iteration_summary(rep["runs"], rep["arms"])
    assert rep["trend"]["lines"] == [] and rep["trend"]["user_iterations"] == user_iterations()
    assert [p["arm"] for p in rep["sensitivity"]["lr_lines"]["adam"]] == ["adam"]  # not the longer adam
    assert rep["verdict"] == verdict(rep)  # no stale run: no sentence before the verdict's
    adam, la = rep["arms"]["adam"], rep["arms"]["la"]
    assert adam["config"] == os.path.relpath(os.path.join(CFG, "hand_adam.yaml"), str(tmp_path))
    assert (adam["overrides"], adam["seeds"], adam["finished_seeds"]) == ([], [0, 1, 2], [0, 1])
    assert (adam["family"], adam["lr"], adam["k"], adam["alpha"]) == ("adam", 0.0001, None, None)
    assert adam["hparams"] == dict(HP, seed=0)  # the first seed's, whatever the records' order
    assert (adam["n_finished"], adam["n_runs"]) == (2, 3)
    assert adam["statuses"] == {"adam_seed2": "not run", "adam_seed1": "finished", "adam_seed0": "finished"}
    assert adam["iterations"] == [6, 12]  # seed 0 on 2 ranks; seed 2 never ran: its count still enters
    assert adam["setting"] == arm_setting(arm_config(study, study.arm("adam")))
    assert (adam["priority"], adam["seed_priority"], la["priority"], la["seed_priority"]) == (0, {"2": 3}, 1, {})
    assert adam["final_NME"] == dict(stats.summarize([0.2, 0.22]).to_dict(), per_seed={"0": 0.2, "1": 0.22})
    assert adam["PCK"]["per_seed"] == {"0": 0.5, "1": 0.6} and adam["EPE"]["mean"] == pytest.approx(3.5)
    for key in ("best_NME", "AUC", "final_valid_loss", "wall_time_s", "overhead_fraction"):
        assert set(adam[key]["per_seed"]) == {"0", "1"}, key
    assert adam["final_NME_over_floor"] == pytest.approx(0.21 / floor) and adam["learned"] is True
    assert adam["epochs_to_reach"] == {"0.3": stats.censored_reach({0: 2, 1: 2}),
                                       "0.1": stats.censored_reach({0: None, 1: None})}
    assert (la["family"], la["k"], la["alpha"], la["finished_seeds"], la["n_runs"]) == ("lookahead(adam)", 5, 0.5,
                                                                                         [0], 2)
    assert la["statuses"] == {"la_seed1": "partial", "la_seed0": "finished"}
    e6 = rep["arms"]["adam_e6"]  # no run: the hparams of its config, without a seed
    cfg = arm_config(study, study.arm("adam_e6"))
    assert e6["hparams"] == {k: v for k, v in hparams(cfg, 1).items() if k != "seed"} and "seed" not in e6["hparams"]
    assert (e6["family"], e6["n_finished"], e6["final_NME_over_floor"], e6["learned"]) == ("adam", 0, None, None)
    assert e6["overrides"] == ["TRAIN.END_EPOCH", "6", "TRAIN.LR_STEP", "[2]"]
    assert rep["provenance"]["versions"][0]["runs"] == ["adam_again_seed0", "adam_seed0", "adam_seed1", "la_seed0",
                                                        "la_seed1"]


def test_analyse_without_floors_and_the_protocol(tmp_path):
    from hrnet.study.analyse.analysis import STATISTICS, analyse, collect

    study, out = _four_arm_study(tmp_path)
    os.remove(tmp_path / "data" / "test.json")  # no validation annotations, no floors.json: learned unknown
    before = datetime.datetime.now().replace(microsecond=0)
    rep = analyse(study, collect(study, str(out)), str(out))
    assert rep["floors"]["available"] is False and rep["floors"]["learned_fraction"] == 0.8
    assert rep["arms"]["adam"]["final_NME_over_floor"] is None and rep["arms"]["adam"]["learned"] is None
    p = rep["study"]
    assert len(p["generated"]) == len("2026-01-02T03:04:05")  # to the second
    generated = datetime.datetime.fromisoformat(p.pop("generated"))
    assert before <= generated <= datetime.datetime.now()
    assert p == {"name": "hand", "file": "hand.yaml", "description": "hand made", "reference": "adam",
                 "shared_overrides": list(study.overrides), "command_line_overrides": [],
                 "nme_levels": [0.3, 0.1], "out_dir": "out", "real_hands": None,
                 "paths": "relative to the working directory of the command that wrote the report",
                 "statistics": STATISTICS, "min_pairs": stats.MIN_PAIRS}
    assert "at least 3 pairs" in STATISTICS and "above 0.8 x the box-centre floor" in STATISTICS


def test_analyse_says_when_the_real_photo_results_come_from_the_records(tmp_path):
    from hrnet.study.analyse.analysis import analyse, collect
    from hrnet.study.analyse.real_photos import FROM_RECORDS, cache_key

    gone = tmp_path / "photos"  # the study's photo folder is not on this machine
    study = _study_file(tmp_path, [("adam", "hand_adam.yaml", {}, ""), ("la", "hand_lookahead_adam.yaml", {}, "")],
                        extra=[f"real_hands: {gone}"])
    out = tmp_path / "out"
    sets_key = {"a": {"annotations": "a.json", "sha256": "5" * 64}}
    for name, final, hp in (("adam_seed0", 0.2, HP), ("adam_seed1", 0.22, HP), ("la_seed0", 0.1, LA_HP),
                            ("la_seed1", 0.12, LA_HP)):
        d = _write(out, name, _finished(int(name[-1]), final, hp=hp))
        write_planned_configs(study, out)
        cfg = make_cfg(os.path.join(d, "config.yaml"))
        key = cache_key(cfg, {"a": (str(gone / "a"), "a.json")}, "m" * 64, {"a": "5" * 64})
        assert key["sets"] == sets_key
        res = {"a": {"NME": final * 2, "PCK@0.2": 0.4, "num_images": 3},
               "all": {"NME": final * 2, "PCK@0.2": 0.4, "num_images": 3},
               "evaluated": {"checkpoint": "checkpoint_latest.pth", "weights": "slow", "epoch": 3, "notes": []}}
        with open(os.path.join(d, "real_hands.json"), "w") as f:
            json.dump({"key": dict(key, model_sha256="m" * 64), "results": res}, f)
    rep = analyse(study, collect(study, str(out)), str(out))
    real = rep["real_hands"]
    assert real["available"] is True and real["source"] == FROM_RECORDS and real["folder"] == "photos"
    assert real["per_arm"]["la"]["all"]["NME_per_seed"] == {"0": 0.2, "1": 0.24}
    assert rep["study"]["real_hands"] == "photos"


# ---------------------------------------------------------------------------- real photos
def _sets_folder(root):
    """photos/{a: one json, b: one json and an image, c: two jsons, d: none}, a file beside them."""
    for name, files in (("b", ["hands.json", "1.jpg"]), ("a", ["a.json"]), ("c", ["x.json", "y.json"]), ("d", [])):
        os.makedirs(root / name, exist_ok=True)
        for f in files:
            (root / name / f).write_text("{}")
    (root / "notes.json").write_text("{}")
    return root


def test_real_hand_sets_are_the_subfolders_with_one_json(tmp_path):
    from hrnet.study.analyse.real_photos import real_hand_sets

    root = _sets_folder(tmp_path / "photos")
    sets = real_hand_sets(str(root))
    assert sets == {"a": (str(root / "a"), "a.json"), "b": (str(root / "b"), "hands.json")}
    assert list(sets) == ["a", "b"]
    assert real_hand_sets(None) == {} and real_hand_sets("") == {} and real_hand_sets(str(tmp_path / "no")) == {}
    assert real_hand_sets(str(root / "notes.json")) == {}


def _cache(run_dir, sets, version=2, results=None):
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "real_hands.json"), "w") as f:
        json.dump({"key": {"version": version, "sets": sets}, "results": results or {}}, f)


def test_committed_sets_are_those_most_caches_share(tmp_path):
    from hrnet.study.analyse.real_photos import committed_sets, study_real_sets

    common = {"b": {"annotations": "b.json", "sha256": "bb"}, "a": {"annotations": "a.json", "sha256": "aa"}}
    other = {"a": {"annotations": "a2.json", "sha256": "a2"}}
    runs = [str(tmp_path / f"r{i}") for i in range(6)]
    _cache(runs[0], other)
    _cache(runs[1], common)
    _cache(runs[2], {k: dict(reversed(list(v.items()))) for k, v in reversed(list(common.items()))})  # other order
    _cache(runs[3], other, version=1)  # an old cache: not counted
    _cache(runs[4], other, version=1)
    _cache(runs[5], {})  # no sets: not counted
    folder = str(tmp_path / "gone")
    sets, shas = committed_sets(runs + [str(tmp_path / "none")], folder)
    assert sets == {"a": (os.path.join(folder, "a"), "a.json"), "b": (os.path.join(folder, "b"), "b.json")}
    assert list(sets) == ["a", "b"] and shas == {"a": "aa", "b": "bb"}
    assert committed_sets(runs[3:], folder) == ({}, {}) and committed_sets([], folder) == ({}, {})
    with open(os.path.join(runs[5], "real_hands.json"), "w") as f:
        json.dump({"key": {"version": 2, "sets": ["a"]}, "results": {}}, f)
    assert committed_sets(runs[5:], folder) == ({}, {})  # sets no mapping
    # study_real_sets: a folder that is here is listed; one that is not comes from the caches.
    assert study_real_sets(None, runs) == ({}, None) and study_real_sets("", runs) == ({}, None)
    assert study_real_sets(folder, runs) == (sets, shas)
    assert study_real_sets(folder, runs[3:]) == ({}, None)
    here = _sets_folder(tmp_path / "photos")
    assert study_real_sets(str(here), runs) == ({"a": (str(here / "a"), "a.json"), "b": (str(here / "b"),
                                                                                         "hands.json")}, None)


def test_read_cache_refuses_what_is_not_a_cache(tmp_path):
    from hrnet.study.analyse.real_photos import _read_cache

    path = tmp_path / "real_hands.json"
    assert _read_cache(str(path)) == {}
    for text in ("[1, 2]", '{"key": [1]}', '{"results": {}}', "not json", '{"key": {"v": 1}, "results": 2}'):
        path.write_text(text)
        assert _read_cache(str(path)) == ({"key": {"v": 1}, "results": 2} if text.startswith('{"key": {') else {})
    path.write_text('{"key": {"v": "\u00e9"}}', encoding="utf-8")
    assert _read_cache(str(path)) == {"key": {"v": "\u00e9"}}


def test_cache_key_fields(tmp_path):
    from hrnet.study.analyse.floors import file_sha256
    from hrnet.study.analyse.real_photos import cache_key

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "b.json").write_text("[]")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "a.json").write_text("{}")
    sets = {"b": (str(tmp_path / "b"), "b.json"), "a": (str(tmp_path / "a"), "a.json")}
    cfg = make_cfg(os.path.join(CFG, "hand_lookahead_adam.yaml"),
                   ["TRAIN.LOOKAHEAD.EVAL_WEIGHTS", "fast", "TEST.FLIP_TEST", "True", "TEST.DECODE", "dark",
                    "AMP.MODE", "off", "TEST.PCK_THRESHOLD", "0.1", "TEST.FAILURE_THRESHOLD", "0.05",
                    "TEST.AUC_MAX_PX", "20", "DATASET.BBOX_PADDING", "1.5"] + TINY)
    key = cache_key(cfg, sets, "m")
    assert key == {"version": 2, "checkpoint": "checkpoint_latest.pth", "model_sha256": "m", "eval_weights": "fast",
                   "image_size": [64, 64], "heatmap_size": [16, 16], "bbox_padding": 1.5, "decode": "dark",
                   "flip_test": True, "amp": "off", "thresholds": [0.05, 0.1, 20.0],
                   "sets": {"a": {"annotations": "a.json", "sha256": file_sha256(str(tmp_path / "a" / "a.json"))},
                            "b": {"annotations": "b.json", "sha256": file_sha256(str(tmp_path / "b" / "b.json"))}}}
    assert list(key["sets"]) == ["a", "b"]
    given = cache_key(cfg, {"a": ("/nowhere/a", "a.json")}, "m", {"a": "s"})  # committed: no file is read
    assert given["sets"] == {"a": {"annotations": "a.json", "sha256": "s"}}


def test_evaluate_real_hands_uses_a_cache_of_the_same_settings(tmp_path, monkeypatch):
    from hrnet.study.analyse import real_photos
    from hrnet.study.analyse.floors import file_sha256
    from hrnet.study.analyse.real_photos import cache_key, evaluate_real_hands

    photos = _sets_folder(tmp_path / "photos")
    sets = {"a": (str(photos / "a"), "a.json")}
    run = tmp_path / "run"
    run.mkdir()
    cfg = make_cfg(os.path.join(CFG, "hand_adam.yaml"))
    (run / "config.yaml").write_text(cfg.dump())
    calls = []

    def fake(run_config, model_file, sets_, pck_key):
        calls.append((run_config, model_file, dict(sets_), pck_key))
        return {"a": {"NME": 0.3}}

    monkeypatch.setattr(real_photos, "_evaluate_real_hands", fake)
    # No checkpoint, no cache.
    assert evaluate_real_hands(str(run), sets, "PCK@0.1") == {
        "error": "no checkpoint_latest.pth and no cached result for these settings"}
    assert evaluate_real_hands(str(run), sets, "PCK@0.1", committed={"a": "s"}) == {
        "error": "the photos are not here and no cached result for these settings"}
    # A checkpoint: evaluated once, cached under its key, then read back.
    model = run / "checkpoint_latest.pth"
    model.write_bytes(b"weights")
    assert evaluate_real_hands(str(run), sets, "PCK@0.1") == {"a": {"NME": 0.3}}
    assert calls == [(str(run / "config.yaml"), str(model), sets, "PCK@0.1")]
    with open(run / "real_hands.json") as f:
        assert json.load(f) == {"key": cache_key(cfg, sets, file_sha256(str(model))), "results": {"a": {"NME": 0.3}}}
    assert evaluate_real_hands(str(run), sets, "PCK@0.1") == {"a": {"NME": 0.3}} and len(calls) == 1
    # Committed records: the cache of this model (by its content) and these annotations is used as it is ...
    shas = {"a": file_sha256(str(photos / "a" / "a.json"))}
    assert evaluate_real_hands(str(run), sets, "PCK@0.1", committed=shas) == {"a": {"NME": 0.3}}
    assert "error" in evaluate_real_hands(str(run), sets, "PCK@0.1", committed={"a": "other"})
    model.unlink()  # ... and without the checkpoint, the cached model hash is taken
    assert evaluate_real_hands(str(run), sets, "PCK@0.1") == {"a": {"NME": 0.3}}
    assert evaluate_real_hands(str(run), sets, "PCK@0.1", committed=shas) == {"a": {"NME": 0.3}} and len(calls) == 1
    # Another setting: evaluated again; an exception is one line of at most 300 characters.
    model.write_bytes(b"weights 2")
    assert evaluate_real_hands(str(run), sets, "PCK@0.1", committed=shas) == {  # the checkpoint here is another model
        "error": "the photos are not here and no cached result for these settings"}
    monkeypatch.setattr(real_photos, "_evaluate_real_hands",
                        lambda *a: (_ for _ in ()).throw(RuntimeError("bad\n  model " + "x" * 400)))
    err = evaluate_real_hands(str(run), sets, "PCK@0.1")["error"]
    assert err == ("RuntimeError: bad model " + "x" * 400)[:300] and len(err) == 300
    (run / "config.yaml").unlink()
    assert evaluate_real_hands(str(run), sets, "PCK@0.1") == {
        "error": f"FileNotFoundError: config file not found: {run / 'config.yaml'}"}


def _photo_sets(root, sizes):
    """COCO sets ``root/<name>/hands.json`` of ``n`` random 100 x 100 photos each (``sizes``: name -> n)."""
    import cv2

    rng = np.random.default_rng(0)
    for name, n in sizes.items():
        os.makedirs(root / name)
        for i in range(n):
            cv2.imwrite(str(root / name / f"{i}.jpg"), rng.integers(0, 255, (100, 100, 3), dtype=np.uint8))
        hands = [((10 + i, 20, 50, 40), np.column_stack([rng.uniform(15, 55, 21), rng.uniform(25, 55, 21),
                                                         np.full(21, 2.0)])) for i in range(n)]
        _coco(str(root / name / "hands.json"), hands)
    return {name: (str(root / name), "hands.json") for name in sizes}


def test_evaluate_real_hands_runs_the_final_model_on_each_set_and_pooled(tmp_path, capfd):
    """A tiny untrained HRNet's checkpoint_latest.pth on two sets of random photos: per set and pooled
    (NME is a mean over images, so the pooled NME is the sets' NMEs weighted by their image counts), at the
    run's PCK threshold, without a progress bar."""
    import torch

    from hrnet.models.hrnet import build_model
    from hrnet.runtime.checkpoint import save_checkpoint, training_state
    from hrnet.study.analyse.real_photos import _evaluate_real_hands

    torch.manual_seed(0)
    cfg = make_cfg(os.path.join(CFG, "hand_adam.yaml"), TINY + ["DEVICE", "cpu", "TEST.PCK_THRESHOLD", "0.1"])
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(cfg.dump())
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [5])
    ck = str(tmp_path / "checkpoint_latest.pth")
    save_checkpoint(training_state(model=model, optimizer=opt, scheduler=sched, warmup=None, scaler=None, epoch=3,
                                   global_step=4, best_nme=1.0, best_epoch=0, history=[], rng=[], world_size=1,
                                   wall_time=0.0, config=cfg.dump()), ck)
    sets = _photo_sets(tmp_path / "photos", {"b": 3, "a": 2})
    capfd.readouterr()
    res = _evaluate_real_hands(str(cfg_path), ck, sets, "PCK@0.1")
    assert "%|" not in capfd.readouterr().err  # no tqdm bar in the report's output
    assert list(res) == ["b", "a", "all", "evaluated"]
    for name, n in (("a", 2), ("b", 3)):
        assert set(res[name]) == {"NME", "PCK@0.1", "num_images"} and res[name]["num_images"] == n
        assert 0 < res[name]["NME"] and 0 <= res[name]["PCK@0.1"] <= 1
    assert res["all"]["num_images"] == 5 and set(res["all"]) == {"NME", "PCK@0.1", "num_images"}
    assert res["all"]["NME"] == pytest.approx((2 * res["a"]["NME"] + 3 * res["b"]["NME"]) / 5)
    assert res["all"]["PCK@0.1"] == pytest.approx((2 * res["a"]["PCK@0.1"] + 3 * res["b"]["PCK@0.1"]) / 5)
    assert res["evaluated"] == {"checkpoint": "checkpoint_latest.pth", "weights": "model", "epoch": 3, "notes": []}
    assert _evaluate_real_hands(str(cfg_path), ck, {}, "PCK@0.1") == {}


# ---------------------------------------------------------------------------- code versions
def _v(i):
    return {"id": f"id{i}", "label": f"v{i}"}


def _prov_report():
    runs = [{"name": "ref_seed0", "arm": "ref", "seed": 0, "status": "finished", "code_versions": [_v(1)]},
            {"name": "ref_seed1", "arm": "ref", "seed": 1, "status": "finished", "code_versions": [_v(1), _v(1)]},
            {"name": "a_seed0", "arm": "a", "seed": 0, "status": "finished", "code_versions": [_v(1)]},
            {"name": "a_seed1", "arm": "a", "seed": 1, "status": "finished", "code_versions": [_v(1), _v(2)]},
            {"name": "a_seed2", "arm": "a", "seed": 2, "status": "partial", "code_versions": [_v(3)]},
            {"name": "b_seed0", "arm": "b", "seed": 0, "status": "finished", "code_versions": None},
            {"name": "la_seed0", "arm": "la", "seed": 0, "status": "finished", "code_versions": [_v(4)]}]
    by_arm = {}
    for r in runs:
        by_arm.setdefault(r["arm"], []).append(r)
    report = {"study": {"reference": "ref"}, "runs": runs,
              "comparisons": {"a": {"final_NME": {"seeds": [0]}, "PCK": {"seeds": [0, 1]}},
                              "b": {"final_NME": {"seeds": [0]}}, "c": {"final_NME": {"seeds": [0]}}},
              "same_lr": {"pairs": [{"key": "la - a", "comparison": {"seeds": [0]}, "lookahead_arm": "la",
                                     "base_arm": "a"}]},
              "trend": {"lines": [{"points": [{"lookahead_arm": "a", "base_arm": "ref", "comparison": {"seeds": [0]}},
                                              {"lookahead_arm": "la", "base_arm": "b", "comparison": {}}],
                                   "change": {"seeds": [0]}}]},
              "real_hands": {"vs_reference": {"a": {"seeds": [2]}, "b": {"seeds": [0]}}}}
    return report, by_arm


def test_provenance_lists_versions_and_the_comparisons_across_them():
    from hrnet.study.analyse.code_versions import provenance
    from hrnet.study.plan.identity import NOT_RECORDED

    report, by_arm = _prov_report()
    got = provenance(report, by_arm)
    assert got == {"versions": [{"label": "v1", "runs": ["a_seed0", "a_seed1", "ref_seed0", "ref_seed1"]},
                                {"label": "v2", "runs": ["a_seed1"]}, {"label": "v3", "runs": ["a_seed2"]},
                                {"label": "v4", "runs": ["la_seed0"]}],
                   "runs_with_several": ["a_seed1"],
                   "comparisons_across_versions": ["a vs ref (PCK)", "same LR: la - a", "trend change: la vs a"],
                   "not_recorded": NOT_RECORDED,
                   "source": "each run's metrics.json code_version / code_versions (git commit, dirty flag, sha256 "
                             "of the sources)"}
    c = report["comparisons"]
    assert (c["a"]["final_NME"]["code_versions"], c["a"]["final_NME"]["code_versions_differ"]) == (["v1"], False)
    assert (c["a"]["PCK"]["code_versions"], c["a"]["PCK"]["code_versions_differ"]) == (["v1", "v2"], True)
    assert (c["b"]["final_NME"]["code_versions"], c["b"]["final_NME"]["code_versions_differ"]) == (["v1"], False)
    assert c["c"]["final_NME"]["code_versions"] == ["v1"]  # an arm without runs: the reference's only
    assert report["same_lr"]["pairs"][0]["comparison"]["code_versions"] == ["v1", "v4"]
    pts = report["trend"]["lines"][0]["points"]
    assert pts[0]["comparison"]["code_versions"] == ["v1"] and pts[1]["comparison"]["code_versions"] == []
    assert report["trend"]["lines"][0]["change"]["code_versions"] == ["v1", "v4"]
    # A partial run's code is in no comparison; a run with code_versions None has none.
    real = report["real_hands"]["vs_reference"]
    assert (real["a"]["code_versions"], real["b"]["code_versions"]) == ([], ["v1"])


def test_provenance_names_every_kind_of_comparison_across_versions():
    from hrnet.study.analyse.code_versions import provenance

    report, by_arm = _prov_report()
    for r in by_arm["ref"]:
        r["code_versions"] = [_v(9)]
    report["real_hands"]["vs_reference"]["a"]["seeds"] = [0]
    got = provenance(report, by_arm)["comparisons_across_versions"]
    assert got == ["a vs ref (final_NME)", "a vs ref (PCK)", "same LR: la - a", "trend: a - ref",
                   "trend change: la vs a", "real photos: a vs ref"]
    report.pop("real_hands")
    assert provenance(report, by_arm)["comparisons_across_versions"][-1] == "trend change: la vs a"
    report["real_hands"] = {"available": False}
    assert provenance(report, by_arm)["comparisons_across_versions"][-1] == "trend change: la vs a"


def test_collect_reads_the_arm_config_file_and_passes_its_pck_key(tmp_path, real_hands, monkeypatch):
    """The run's config is its arm's file (batch, PCK threshold) with the overrides; the study file in
    another folder than the working directory; an arm-like object without ``seed_priority``."""
    from types import SimpleNamespace

    from hrnet.study.analyse import analysis

    config = tmp_path / "mine.yaml"
    config.write_text("TRAIN:\n  OPTIMIZER: adam\n  LR: 0.0001\n  BATCH_SIZE_PER_GPU: 16\n"
                      "TEST:\n  PCK_THRESHOLD: 0.1\n")
    study = _study_file(tmp_path, [("adam", str(config), {}, "")], seeds=(0,), extra=[f"real_hands: {real_hands}"],
                        file="studies/hand.yaml")
    out = tmp_path / "out"
    _write(out, "adam_seed0", _finished(0, 0.2, final={"PCK@0.1": 0.4, "PCK@0.2": 0.6}))
    write_planned_configs(study, out)
    calls = []
    monkeypatch.setattr(analysis, "evaluate_real_hands", lambda run_dir, sets, pck_key, committed: calls.append(
        (os.path.basename(run_dir), pck_key, committed)) or {"all": {}})
    rec, = analysis.collect(study, str(out))
    assert (rec["pck_key"], rec["PCK"], rec["iterations"]) == ("PCK@0.1", 0.4, 3 * (128 // 16))
    assert calls == [("adam_seed0", "PCK@0.1", None)] and rec["real_hands"] == {"all": {}}
    entry = analysis._arm_entry(study, study.arms[0], [rec], None)
    assert entry["config"] == "../mine.yaml"  # relative to the study file's folder
    arm = study.arms[0]
    bare = SimpleNamespace(**{k: getattr(arm, k) for k in ("name", "config", "overrides", "seeds", "priority")})
    assert analysis._arm_entry(study, bare, [rec], None)["seed_priority"] == {}


def test_provenance_of_a_trend_line_of_three_lengths():
    """The trend change of a line is between its shortest and longest points (not the middle one)."""
    from hrnet.study.analyse.code_versions import provenance

    arms = ["la1", "b1", "la2", "b2", "la3", "b3"]
    runs = [{"name": f"{a}_seed0", "arm": a, "seed": 0, "status": "finished", "code_versions": [_v(i)]}
            for i, a in enumerate(arms)]
    points = [{"lookahead_arm": la, "base_arm": b, "comparison": {"seeds": [0]}}
              for la, b in zip(arms[::2], arms[1::2])]
    report = {"study": {"reference": "b1"}, "runs": runs, "comparisons": {}, "same_lr": {"pairs": []},
              "trend": {"lines": [{"points": points, "change": {"seeds": [0]}}]}}
    got = provenance(report, {r["arm"]: [r] for r in runs})["comparisons_across_versions"]
    assert got == ["trend: la1 - b1", "trend: la2 - b2", "trend: la3 - b3", "trend change: la3 vs la1"]
    assert report["trend"]["lines"][0]["change"]["code_versions"] == ["v0", "v1", "v4", "v5"]
