"""A run counts only for what it ran (hrnet/study/plan/identity.py): the stored config against the plan,
arms compared on their whole config, and the code version of each run in the report."""
from __future__ import annotations

import json
import os
import sys

import pytest

from conftest import FAKE_TRAINER_START, ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
CFG = os.path.join(ROOT, "experiments")
SMOKE = os.path.join(ROOT, "experiments", "studies", "smoke.yaml")


def _study(tmp_path, arms=(("adam", "hand_adam.yaml", {}),), cli=(), seeds=(0,)):
    from hrnet.study.plan.spec import load_study

    lines = ["reference: " + arms[0][0], f"seeds: {list(seeds)}", "real_hands: false", "nme_levels: [0.3]",
             "overrides: {TRAIN.END_EPOCH: 3, TRAIN.LR_STEP: [1]}", "arms:"]
    lines += [f"  - {{name: {n}, config: {CFG}/{c}, overrides: {json.dumps(o)}}}" for n, c, o in arms]
    path = tmp_path / "s.yaml"
    path.write_text("\n".join(lines) + "\n")
    return load_study(str(path), list(cli))


def _train_by_hand(run, edit=None, status="finished", epochs=None, code_version=None):
    """The folder of ``run`` as the trainer leaves it: config.yaml (the planned config, ``edit``-ed:
    ``{key: value}``, None removes the key) and metrics.json."""
    import yaml

    from configs import load_config
    from hrnet.engine.run_record import hparams

    os.makedirs(run.run_dir, exist_ok=True)
    planned = load_config(run.config, list(run.opts))
    cfg = yaml.safe_load(planned.dump())
    for key, value in (edit or {}).items():
        *parents, last = key.split(".")
        node = cfg
        for p in parents:
            node = node[p]
        if value is None:
            del node[last]
        else:
            node[last] = value
    with open(os.path.join(run.run_dir, "config.yaml"), "w") as f:
        yaml.safe_dump(cfg, f)
    done = run.end_epoch if epochs is None else epochs
    nme = [0.5] + [0.3 - 0.01 * run.seed - 0.001 * e for e in range(1, done + 1)]
    info = {"status": status, "epochs_completed": done, "end_epoch": done, "final_NME": nme[-1],
            "best_NME": min(nme), "final_valid_loss": 0.001, "wall_time_s": 10.0,
            "final": {"PCK@0.2": 0.5, "AUC": 0.4, "EPE": 3.0}, "hparams": hparams(planned, 1),
            "history": [{"epoch": e, "NME": v, "valid_loss": v / 100, "wall_time": float(e)}
                        for e, v in enumerate(nme)]}
    if code_version is not None:
        info["code_version"] = code_version
        info["code_versions"] = [{"code_version": code_version, "from_epoch": 0}]
    with open(os.path.join(run.run_dir, "metrics.json"), "w") as f:
        json.dump(info, f)


def _status(study, out):
    from hrnet.study.plan.runs import run_status
    from hrnet.study.plan.spec import plan_runs

    return [run_status(r) for r in plan_runs(study, str(out))]


# ---------------------------------------------------------------------------- run identity
def test_a_run_of_another_config_is_stale_not_finished(tmp_path):
    from hrnet.study.plan.spec import plan_runs

    out = tmp_path / "out"
    study = _study(tmp_path)
    _train_by_hand(plan_runs(study, str(out))[0])
    assert _status(study, out) == [("finished", "")]
    # The same folder read against a plan with another LR (a command-line override): not that run.
    assert _status(_study(tmp_path, cli=("TRAIN.LR", "0.05")), out) == [("stale", "TRAIN.LR 0.0001 -> 0.05")]
    # An arm's override edited in the study file: the same.
    edited = _study(tmp_path, arms=(("adam", "hand_adam.yaml", {"TRAIN.WD": 0.01}),))
    assert _status(edited, out) == [("stale", "TRAIN.WD 0.0 -> 0.01")]
    # Many differences: the first three keys (sorted), and how many more.
    many = _study(tmp_path, cli=("TRAIN.LR", "0.05", "TRAIN.WD", "0.1", "MODEL.SIGMA", "3.0", "TRAIN.LR_FACTOR", "0.5"))
    status, why = _status(many, out)[0]
    assert status == "stale" and why == ("MODEL.SIGMA 2.0 -> 3.0; TRAIN.LR 0.0001 -> 0.05; TRAIN.LR_FACTOR 0.1 -> 0.5 "
                                  "(+1 more)")


def test_end_epoch_may_only_have_been_raised(tmp_path):
    from hrnet.study.plan.spec import plan_runs

    out = tmp_path / "out"
    run = plan_runs(_study(tmp_path), str(out))[0]  # END_EPOCH 3
    _train_by_hand(run)
    # Raised to 4: the same trajectory goes on; partial (resumed to epoch 4), not stale.
    assert _status(_study(tmp_path, cli=("TRAIN.END_EPOCH", "4")), out) == [("partial", "3/4 epochs")]
    # Lowered to 2: a 3-epoch run does not count as a 2-epoch one.
    assert _status(_study(tmp_path, cli=("TRAIN.END_EPOCH", "2")), out) == [("stale", "TRAIN.END_EPOCH 3 -> 2")]


def test_keys_that_cannot_change_a_trajectory_and_keys_added_later(tmp_path):
    from hrnet.study.plan.spec import plan_runs

    out = tmp_path / "out"
    study = _study(tmp_path)
    run = plan_runs(study, str(out))[0]
    # Output paths (relative as the trainer writes them now, or another machine's), the print
    # frequency, the resume flag, the folder name: the same run.
    _train_by_hand(run, {"OUTPUT_DIR": "docs/elsewhere", "PRINT_FREQ": 7, "TRAIN.RESUME": True,
                         "EXPERIMENT_NAME": "renamed"})
    assert _status(study, out) == [("finished", "")]
    # A key the defaults gained after the run: equal while the plan keeps its default ...
    _train_by_hand(run, {"TF32": None})
    assert _status(study, out) == [("finished", "")]
    # ... not when the plan sets another value.
    assert _status(_study(tmp_path, cli=("TF32", "True")), out) == [("stale", "TF32 <absent> -> True")]
    # A key the defaults no longer have: the run used a setting this code cannot reproduce.
    _train_by_hand(run, {"TRAIN.OLD_KNOB": 3})
    assert _status(study, out) == [("stale", "TRAIN.OLD_KNOB 3 -> <absent>")]
    # The same data folder spelt absolute or relative to the working directory is the same folder.
    _train_by_hand(run, {"DATASET.ROOT": os.path.abspath("datasets/synthetic_hands")})
    assert _status(study, out) == [("finished", "")]
    _train_by_hand(run, {"DATASET.ROOT": "datasets/other_hands"})
    assert _status(study, out)[0][0] == "stale"


def test_a_stale_run_enters_no_statistic_and_the_verdict_says_so(tmp_path):
    from hrnet.study.analyse.analysis import analyse, collect
    from hrnet.study.plan.spec import plan_runs

    out = tmp_path / "out"
    arms = (("adam", "hand_adam.yaml", {}), ("la", "hand_lookahead_adam.yaml", {}))
    study = _study(tmp_path, arms=arms, seeds=(0, 1, 2))
    for run in plan_runs(study, str(out)):
        _train_by_hand(run)
    rep = analyse(study, collect(study, str(out)), str(out))
    assert rep["arms"]["la"]["n_finished"] == 3 and rep["same_lr"]["pairs"][0]["comparison"]["n"] == 3
    # The plan changes Lookahead's alpha: its three folders hold another run.
    changed = _study(tmp_path, arms=(arms[0], ("la", "hand_lookahead_adam.yaml", {"TRAIN.LOOKAHEAD.ALPHA": 0.8})),
                     seeds=(0, 1, 2))
    rep = analyse(changed, collect(changed, str(out)), str(out))
    la = [r for r in rep["runs"] if r["arm"] == "la"]
    assert {(r["status"], r["reason"]) for r in la} == {("stale", "TRAIN.LOOKAHEAD.ALPHA 0.5 -> 0.8")}
    assert rep["arms"]["la"]["n_finished"] == 0 and rep["arms"]["la"]["final_NME"]["n"] == 0
    assert rep["comparisons"]["la"]["final_NME"]["n"] == 0 and rep["same_lr"]["pairs"][0]["comparison"]["n"] == 0
    assert [o["arm"] for o in rep["ranking"]["order"]] == ["adam"]
    assert rep["verdict"][0].startswith("3 run folder(s) hold a run of another config than this plan")
    assert "la_seed0 (TRAIN.LOOKAHEAD.ALPHA 0.5 -> 0.8)" in rep["verdict"][0]


def _smoke_records(out):
    """The smoke study's four run folders as the trainer leaves them (config.yaml, metrics.json), untrained."""
    from hrnet.study.plan.spec import load_study, plan_runs

    runs = plan_runs(load_study(SMOKE), str(out))
    for run in runs:
        _train_by_hand(run)
    return runs


def test_smoke_study_reported_with_another_lr_counts_no_run(tmp_path, capsys):
    import _cli
    import study as study_tool

    out = tmp_path / "smoke"
    _smoke_records(out)
    assert _cli.run(study_tool.main, [SMOKE, "--out", str(out), "--report-only", "--no-real-hands"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert {r["status"] for r in rep["runs"]} == {"finished"}
    assert _cli.run(study_tool.main, [SMOKE, "--out", str(out), "--report-only", "--no-real-hands",
                                      "TRAIN.LR", "0.05"]) == 1
    rep = json.loads((out / "report.json").read_text())
    assert {(r["status"], r["reason"]) for r in rep["runs"]} == {("stale", "TRAIN.LR 0.001 -> 0.05")}
    assert all(a["n_finished"] == 0 for a in rep["arms"].values())
    md = (out / "report.md").read_text()
    assert "| adam_seed0 | stale | TRAIN.LR 0.001 -> 0.05 |" in md
    assert "4 run(s) not finished" in capsys.readouterr().out


def test_training_refuses_a_stale_folder_in_one_line_and_moves_it_when_asked(tmp_path, capsys):
    import _cli
    import study as study_tool

    out = tmp_path / "smoke"
    runs = _smoke_records(out)
    before = sorted(os.listdir(runs[0].run_dir))
    # Training with another LR: refused before anything starts, one line naming the way on.
    rc = _cli.run(study_tool.main, [SMOKE, "--out", str(out), "--no-real-hands", "TRAIN.LR", "0.05"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "4 run folder(s) hold a run of another config than the plan" in err and "--move-stale" in err
    assert "adam_seed0 (TRAIN.LR 0.001 -> 0.05)" in err
    assert sorted(os.listdir(runs[0].run_dir)) == before and not (out / "stale").exists()


def test_move_stale_keeps_the_old_folder_and_trains_the_planned_run(tmp_path):
    from hrnet.study.execute.executors import LocalExecutor
    from hrnet.study.execute.runner import execute
    from hrnet.study.plan.spec import StudyError, plan_runs

    fake = tmp_path / "fake_train.py"  # the planned run: its config.yaml and a finished metrics.json
    fake.write_text(FAKE_TRAINER_START + "import json\njson.dump({'status': 'finished', 'epochs_completed': 3, "
                    "'final_NME': 0.1}, open(os.path.join(run_dir, 'metrics.json'), 'w'))\n")
    out = tmp_path / "out"
    old = plan_runs(_study(tmp_path), str(out))[0]
    _train_by_hand(old)
    run = plan_runs(_study(tmp_path, cli=("TRAIN.LR", "0.05")), str(out))[0]
    with pytest.raises(StudyError, match="--move-stale"):
        execute([run], LocalExecutor([sys.executable, str(fake)]), echo=lambda s: None)
    lines = []
    result = execute([run], LocalExecutor([sys.executable, str(fake)]), echo=lines.append, move_stale_runs=True)
    assert result.finished == [run.name], lines
    moved = os.listdir(out / "stale")
    assert len(moved) == 1 and moved[0].startswith(f"{run.name}-")
    kept = json.loads((out / "stale" / moved[0] / "metrics.json").read_text())
    assert kept["final_NME"] == pytest.approx(0.297)  # the old run, untouched
    assert "TRAIN.LR 0.0001 -> 0.05" in lines[0] and "moved to" in lines[0]
    from hrnet.study.plan.runs import run_status

    assert run_status(run) == ("finished", "")  # the new folder holds the planned run


# ---------------------------------------------------------------------------- the same setting
#: Config keys outside the old subset of "the same setting" (scale.arm_setting before): each must
#: separate two arms on its own.
OTHER_KEYS = (("TRAIN.ADAM_BETAS", [0.8, 0.999]), ("TRAIN.ADAM_EPS", 1e-6), ("TRAIN.MOMENTUM", 0.5),
              ("TRAIN.LOOKAHEAD.PULLBACK", "reset"), ("MODEL.SIGMA", 1.5), ("DATASET.ROOT", "datasets/other_hands"),
              ("TRAIN.CLIP_GRAD_NORM", 1.0), ("TRAIN.SHUFFLE", False))


def _arms(changed: dict = None):
    """Adam and Lookahead(Adam) at 30 and 6 epochs (LR steps at the same fractions), as the analysis
    sees them; ``changed``: arm -> (key, value) set on that arm only."""
    from configs import load_config
    from hrnet.study.plan.scale import arm_setting

    spec = {"adam": ("hand_adam.yaml", []), "la": ("hand_lookahead_adam.yaml", []),
            "adam_e6": ("hand_adam.yaml", ["TRAIN.END_EPOCH", "6", "TRAIN.LR_STEP", "[4, 5]"]),
            "la_e6": ("hand_lookahead_adam.yaml", ["TRAIN.END_EPOCH", "6", "TRAIN.LR_STEP", "[4, 5]"])}
    arms = {}
    for name, (yaml_file, opts) in spec.items():
        if changed and name in changed:
            key, value = changed[name]
            opts = opts + [key, repr(value) if not isinstance(value, str) else value]
        cfg = load_config(os.path.join(CFG, yaml_file), opts)
        la = name.startswith("la")
        arms[name] = {"family": "lookahead(adam)" if la else "adam", "lr": float(cfg.TRAIN.LR),
                      "k": 5 if la else None, "alpha": 0.5 if la else None, "setting": arm_setting(cfg)}
    return arms


def test_every_config_key_separates_arms():
    from hrnet.study.analyse.comparisons import lookahead_pairs
    from hrnet.study.analyse.trend import length_variants

    arms = _arms()
    assert lookahead_pairs(arms) == [("la", "adam"), ("la_e6", "adam_e6")]
    assert length_variants(arms, "adam") == {"adam_e6": "adam", "la_e6": "la"}
    for key, value in OTHER_KEYS:
        # Changed on the Lookahead arm: not Lookahead(X) - X "with all other settings equal", and its
        # shorter version (unchanged) is no longer a shorter version of it.
        arms = _arms({"la": (key, value)})
        assert lookahead_pairs(arms) == [("la_e6", "adam_e6")], key
        assert length_variants(arms, "adam") == {"adam_e6": "adam"}, key
        # Changed on the shorter Adam arm: no pair at 6 epochs, not a shorter version of adam.
        arms = _arms({"adam_e6": (key, value)})
        assert lookahead_pairs(arms) == [("la", "adam")], key
        assert length_variants(arms, "adam") == {"la_e6": "la"}, key


def test_seed_and_run_folder_do_not_separate_arms():
    from configs import load_config
    from hrnet.study.plan.scale import arm_setting

    a = arm_setting(load_config(os.path.join(CFG, "hand_adam.yaml"), ["SEED", "3", "OUTPUT_DIR", "/x"]))
    b = arm_setting(load_config(os.path.join(CFG, "hand_adam.yaml"), ["EXPERIMENT_NAME", "other", "PRINT_FREQ", "5"]))
    assert a == b
    assert "TRAIN.ADAM_BETAS" in a and "SEED" not in a and "OUTPUT_DIR" not in a


# ---------------------------------------------------------------------------- code versions
V1 = {"git_commit": "1a2b3c4d5e6f7a8b9c0d", "git_dirty": False, "source_sha256": "ab" * 32}
V2 = {"git_commit": "1a2b3c4d5e6f7a8b9c0d", "git_dirty": True, "source_sha256": "cd" * 32}


def test_code_versions_of_a_run():
    from hrnet.study.plan.identity import NOT_RECORDED, run_code_versions

    assert run_code_versions({}) == [{"label": NOT_RECORDED, "id": NOT_RECORDED, "from_epoch": None}]
    one = run_code_versions({"code_version": V1, "code_versions": [{"code_version": V1, "from_epoch": 0}]})
    assert one == [{"label": f"git 1a2b3c4d5e, source {'ab' * 6}", "id": "ab" * 32, "from_epoch": 0}]
    # Resumed with a dirty tree from epoch 4: two versions.
    two = run_code_versions({"code_version": V2, "code_versions": [{"code_version": V1, "from_epoch": 0},
                                                                   {"code_version": V2, "from_epoch": 4}]})
    assert [v["label"] for v in two] == [one[0]["label"], f"git 1a2b3c4d5e (dirty), source {'cd' * 6}"]
    # A run begun before provenance, resumed after it: its first epochs are not recorded.
    late = run_code_versions({"code_version": V1, "code_versions": [{"code_version": V1, "from_epoch": 7}]})
    assert [(v["label"], v["from_epoch"]) for v in late] == [(NOT_RECORDED, 0), (one[0]["label"], 7)]
    # No git: the source hash alone.
    assert run_code_versions({"code_version": {"git_commit": None, "git_dirty": None,
                                               "source_sha256": "ef" * 32}})[0]["label"] == f"source {'ef' * 6}"


def test_report_lists_code_versions_and_marks_comparisons_across_them(tmp_path):
    from hrnet.study.analyse.analysis import analyse, collect
    from hrnet.study.plan.identity import NOT_RECORDED
    from hrnet.study.plan.spec import plan_runs
    from hrnet.study.render.report import render_markdown

    out = tmp_path / "out"
    arms = (("adam", "hand_adam.yaml", {}), ("la", "hand_lookahead_adam.yaml", {}),
            ("adam_wd", "hand_adam.yaml", {"TRAIN.WD": 0.001}))
    study = _study(tmp_path, arms=arms, seeds=(0, 1, 2))
    for run in plan_runs(study, str(out)):  # adam and la by V1; adam_wd before provenance
        _train_by_hand(run, code_version=None if run.arm == "adam_wd" else V1)
    rep = analyse(study, collect(study, str(out)), str(out))
    label = f"git 1a2b3c4d5e, source {'ab' * 6}"
    assert {r["name"]: r["code_version"] for r in rep["runs"]}["adam_wd_seed1"] == NOT_RECORDED
    pv = rep["provenance"]
    assert {v["label"]: len(v["runs"]) for v in pv["versions"]} == {label: 6, NOT_RECORDED: 3}
    la, wd = rep["comparisons"]["la"]["final_NME"], rep["comparisons"]["adam_wd"]["final_NME"]
    assert la["code_versions_differ"] is False and la["code_versions"] == [label]
    assert wd["code_versions_differ"] is True and wd["code_versions"] == sorted([label, NOT_RECORDED])
    assert rep["same_lr"]["pairs"][0]["comparison"]["code_versions_differ"] is False
    assert "adam_wd vs adam (final_NME)" in pv["comparisons_across_versions"]
    assert not [c for c in pv["comparisons_across_versions"] if c.startswith("la ")]
    md = render_markdown(rep, [])
    assert f"- {label}: 6 run(s)" in md and f"- {NOT_RECORDED}: 3 run(s)" in md
    assert "Comparisons whose runs came from different code versions (4;" in md  # the 4 metrics of adam_wd
