"""The study's analysis on hand-made annotation files and run folders (no training, in-process):
floors against a hand computation, Holm's worked example, common seeds, censoring, same-LR pairs,
which runs enter the statistics, pairing by seed, report labels, higher-is-better metrics, the
real-photo cache and the study file's real-photo folder; the plan's order and the study folder,
the trend with training length, the calibration, each run's machine and --report-only from the
small records a repository keeps."""
from __future__ import annotations

import json
import math
import os
import re

import numpy as np
import pytest

from conftest import ROOT, write_planned_configs

from hrnet.study.analyse import stats

CFG = os.path.join(ROOT, "experiments")
J = 21


# ---------------------------------------------------------------------------- annotation files
def _coco(path, hands):
    """A COCO file of (bbox, keypoints (J, 3)) hands, one image each (the images need not exist)."""
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 100, "height": 100} for i in range(len(hands))]
    anns = [{"id": i, "image_id": i, "bbox": list(b), "keypoints": np.asarray(k, float).ravel().tolist()}
            for i, (b, k) in enumerate(hands)]
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": anns}, f)


def _all_at(x, y, unlabelled=()):
    k = np.tile([x, y, 2.0], (J, 1))
    for j in unlabelled:
        k[j] = [0.0, 0.0, 0.0]
    return k


def _data(folder):
    """Training: square 10 px boxes, every joint at box coordinates u in {-0.2, 0, 0.3}, v = 0.1
    (collinear: the NME-optimal layout is the middle point (0, 0.1)). Validation: 3 hands, the third
    a copy of the first (2 distinct hands)."""
    os.makedirs(folder, exist_ok=True)
    _coco(os.path.join(folder, "train.json"),
          [((0, 0, 10, 10), _all_at(4.5 + 10 * u, 4.5 + 1.0)) for u in (-0.2, 0.0, 0.3)])
    # box (0, 0, 10, 10): centre (4.5, 4.5); joints at (7.5, 8.5): 5 px from the centre, NME 0.5.
    # box (10, 10, 20, 10): centre (19.5, 14.5), size 20; joints at (19.5, 18.5): 4 px, NME 0.2
    # (two unlabelled joints at a far point that must not count).
    first = ((0, 0, 10, 10), _all_at(7.5, 8.5))
    second = ((10, 10, 20, 10), _all_at(19.5, 18.5, unlabelled=(3, 7)))
    _coco(os.path.join(folder, "test.json"), [first, second, first])


def test_floors_against_a_hand_computation(tmp_path):
    from configs import load_config
    from hrnet.study.analyse.floors import fit_constant_layout, read_annotations, study_floors

    _data(str(tmp_path / "data"))
    k, b = read_annotations(str(tmp_path / "data" / "train.json"), str(tmp_path / "data"), J)
    np.testing.assert_allclose(fit_constant_layout(k, b), np.tile([0.0, 0.1], (J, 1)), atol=1e-6)
    cfg = load_config(os.path.join(CFG, "hand_adam.yaml"), ["DATASET.FORMAT", "coco", "DATASET.ROOT",
                                                            str(tmp_path / "data")])
    fl = study_floors(cfg, {}, str(tmp_path / "out"))
    v = fl["valid"]
    assert (v["num_images"], v["num_hands"]) == (3, 2)
    assert v["box_centre"]["NME"] == pytest.approx((0.5 + 0.2 + 0.5) / 3)
    # Layout (0, 0.1): predictions (4.5, 5.5) -> sqrt(18) / 10; (19.5, 15.5) -> 3 / 20.
    assert v["constant_layout"]["NME"] == pytest.approx((2 * math.sqrt(18) / 10 + 3 / 20) / 3, abs=1e-6)
    assert v["box_centre"]["PCK@0.2"] == pytest.approx(0.0)  # every joint >= 0.2 box sizes away


def test_floors_come_from_floors_json_when_the_annotations_are_gone(tmp_path):
    import shutil

    from configs import load_config
    from hrnet.study.analyse.floors import study_floors

    _data(str(tmp_path / "data"))
    opts = ["DATASET.FORMAT", "coco", "DATASET.ROOT", str(tmp_path / "data")]
    cfg = load_config(os.path.join(CFG, "hand_adam.yaml"), opts)
    first = study_floors(cfg, {}, str(tmp_path / "out"))
    shutil.rmtree(tmp_path / "data")
    again = study_floors(cfg, {}, str(tmp_path / "out"))
    assert again["valid"] == first["valid"] and "floors.json" in again["source"]
    other = load_config(os.path.join(CFG, "hand_adam.yaml"), opts + ["DATASET.MAX_TEST_SAMPLES", "2"])
    assert study_floors(other, {}, str(tmp_path / "out"))["available"] is False  # another data set


# ---------------------------------------------------------------------------- statistics
def test_holm_worked_example():
    # Holm (1979) as on Wikipedia: p = 0.01, 0.04, 0.03, 0.005 at alpha 0.05 rejects H1 and H4 only.
    # Sorted 0.005, 0.01, 0.03, 0.04 x (4, 3, 2, 1) = 0.02, 0.03, 0.06, 0.04 -> running max 0.06.
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adj = stats.holm([0.5, float("nan"), 0.3])  # NaN does not count in m
    assert adj[0] == pytest.approx(0.6) and math.isnan(adj[1]) and adj[2] == pytest.approx(0.6)
    assert stats.holm([0.4, 0.6]) == [pytest.approx(0.8), pytest.approx(0.8)]
    assert stats.holm([0.7, 0.9]) == [1.0, 1.0]  # capped at 1


def test_family_verdicts_use_adjusted_p():
    ref = {s: 0.30 + 0.01 * s for s in range(4)}
    diffs = ([-0.010, -0.006, -0.012, -0.004], [-0.010, -0.005, -0.012, -0.003], [-0.009, -0.006, -0.012, -0.005],
             [-0.011, -0.004, -0.010, -0.004])  # paired t p-values 0.022, 0.038, 0.015, 0.031
    # Alone each would be "better" (p < 0.05); the four together are not, after Holm (4 x 0.015 > 0.05).
    fam = {f"a{i}": stats.paired_comparison({s: ref[s] + x for s, x in enumerate(d)}, ref) for i, d in enumerate(diffs)}
    assert all(c.p_value < 0.05 and c.verdict == stats.BETTER for c in fam.values())
    adjusted = stats.adjust_family(fam)
    assert all(c.p_adjusted > 0.05 and c.verdict == stats.NO_DIFFERENCE and c.family_size == 4
               for c in adjusted.values())
    assert all(c.ci_high < 0 for c in adjusted.values())  # the unadjusted interval stays as it was
    assert stats.adjust_family(fam, not_learned=["a1"])["a1"].verdict == stats.NOT_LEARNED
    two = stats.paired_comparison({0: 0.1, 1: 0.1}, {0: 0.5, 1: 0.6})
    assert two.verdict == stats.TOO_FEW and math.isfinite(two.ci_low)  # interval shown, no verdict


def test_common_seeds_change_the_ranking():
    a = {0: 0.30, 1: 0.30, 2: 0.10}  # mean 0.233 over all its seeds: seed 2 is easy for it
    b = {0: 0.28, 1: 0.28}           # mean 0.28; better than a on both shared seeds
    assert np.mean(list(a.values())) < np.mean(list(b.values()))
    seeds, order = stats.rank_on_common_seeds({"a": a, "b": b})
    assert seeds == [0, 1] and [n for n, _ in order] == ["b", "a"]
    assert order[1][1] == pytest.approx(0.30)
    assert stats.rank_on_common_seeds({"a": {0: 0.1}, "b": {1: 0.2}}) == ([], [])


def test_epochs_to_reach_counts_the_seeds_that_never_reach():
    # Lookahead reached at epoch 14 on 1 seed of 3; Adam on 3 of 3: a mean of the reachers (14 vs 21.3)
    # would read as Lookahead being faster.
    slow = stats.censored_reach({0: 14, 1: None, 2: None})
    assert (slow["n"], slow["n_reached"], slow["median"]) == (3, 1, None)
    fast = stats.censored_reach({0: 20, 1: 21, 2: 23})
    assert (fast["n_reached"], fast["median"]) == (3, 21.0)
    assert stats.censored_reach({0: 5, 1: 7, 2: None})["median"] == 7.0
    assert stats.censored_reach({0: 5, 1: None})["median"] is None  # even n: the mean of 5 and infinity
    assert stats.censored_reach({0: 4, 1: 6})["median"] == 5.0


# ---------------------------------------------------------------------------- hand-made studies
@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Each test works in its own folder (the hand-made studies name their data set ``data``, relative)."""
    monkeypatch.chdir(tmp_path)


def _study(tmp_path, arms, seeds=(0, 1, 2), end_epoch=3, extra=""):
    """A study file over the hand-made data set ``tmp_path/data`` (the working directory is
    ``tmp_path``); ``arms``: (name, config, overrides dict)."""
    _data(str(tmp_path / "data"))
    lines = [f"reference: {arms[0][0]}", f"seeds: {list(seeds)}", "nme_levels: [0.3]", "overrides:",
             "  DATASET.FORMAT: coco", "  DATASET.ROOT: data", f"  TRAIN.END_EPOCH: {end_epoch}",
             "  TRAIN.LR_STEP: [1]", extra, "arms:"]
    for name, config, over in arms:
        lines.append(f"  - {{name: {name}, config: {CFG}/{config}, overrides: {json.dumps(over)}}}")
    path = tmp_path / "hand.yaml"
    path.write_text("\n".join(lines) + "\n")
    from hrnet.study.plan.spec import load_study

    return load_study(str(path))


def _run(out, name, seed, final, hp, status="finished", epochs=3, pck=0.5, nme_curve=None, machine=None):
    """``out/runs/name_seed<seed>/metrics.json`` of a run that ended at ``final`` NME after ``epochs``."""
    curve = nme_curve or [0.7, 0.5, final - 0.02][:epochs] + [final]  # best 0.02 below the final NME
    hist = [{"epoch": e, "NME": v, "valid_loss": v / 100, "wall_time": 10.0 * e} for e, v in enumerate(curve)]
    d = os.path.join(out, "runs", f"{name}_seed{seed}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "metrics.json"), "w") as f:
        json.dump({"status": status, "epochs_completed": epochs, "end_epoch": epochs, "final_NME": final,
                   "best_NME": min(curve), "final_valid_loss": final / 100, "wall_time_s": 30.0,
                   "final": {"PCK@0.2": pck, "AUC": pck / 2, "EPE": 3.0}, "hparams": dict(hp, seed=seed),
                   "history": hist, **({"machine": machine} if machine else {})}, f)


ADAM = {"optimizer": "adam", "inner": "adam", "lr": 0.0001, "batch": 32, "wd": 0.0, "epochs": 3}
LA = dict(ADAM, optimizer="lookahead", k=5, alpha=0.5)


def _analyse(study, out):
    """The report of ``study`` on the hand-made run folders in ``out``, each with its planned
    config.yaml (written where missing, as the trainer writes it first)."""
    from hrnet.study.analyse.analysis import analyse, collect

    write_planned_configs(study, out)
    return analyse(study, collect(study, str(out)), str(out))


def test_only_finished_runs_enter_and_pairs_match_by_seed(tmp_path):
    study = _study(tmp_path, [("adam", "hand_adam.yaml", {}), ("la", "hand_lookahead_adam.yaml", {})])
    out = tmp_path / "out"
    for s in (0, 1, 2):
        _run(out, "adam", s, 0.20 + 0.01 * s, ADAM)
    _run(out, "la", 0, 0.19, LA)
    _run(out, "la", 1, 0.10, LA, status="interrupted", epochs=2)  # not finished: out of every statistic
    _run(out, "la", 2, 0.22, LA)
    rep = _analyse(study, out)
    assert [r["status"] for r in rep["runs"] if r["arm"] == "la"] == ["finished", "partial", "finished"]
    assert rep["arms"]["la"]["final_NME"]["n"] == 2
    assert rep["arms"]["la"]["final_NME"]["mean"] == pytest.approx((0.19 + 0.22) / 2)
    c = rep["comparisons"]["la"]["final_NME"]
    assert c["seeds"] == [0, 2]  # seed 2 with seed 2, not the second finished run with seed 1
    assert c["diffs"] == pytest.approx([0.19 - 0.20, 0.22 - 0.22])
    assert rep["ranking"]["seeds"] == [0, 2]
    # Listing the runs in another order changes nothing.
    from hrnet.study.analyse.analysis import analyse, collect

    shuffled = analyse(study, list(reversed(collect(study, str(out)))), str(out))
    assert shuffled["comparisons"] == rep["comparisons"] and shuffled["same_lr"] == rep["same_lr"]


def test_records_without_config_yaml_are_unverified_and_count_for_nothing(tmp_path):
    """A finished metrics.json in a folder without config.yaml (which the trainer writes first): nothing
    says what it trained, so the run is "unverified", in no statistic, and the verdict names it."""
    study = _study(tmp_path, [("adam", "hand_adam.yaml", {}), ("la", "hand_lookahead_adam.yaml", {})])
    out = tmp_path / "out"
    for s in (0, 1, 2):
        _run(out, "adam", s, 0.20 + 0.01 * s, ADAM)
        _run(out, "la", s, 0.19 + 0.01 * s + 0.001 * s * s, LA)
    write_planned_configs(study, out)
    os.remove(out / "runs" / "la_seed2" / "config.yaml")
    from hrnet.study.analyse.analysis import analyse, collect

    rep = analyse(study, collect(study, str(out)), str(out))  # not _analyse: it would write the config.yaml
    run = next(r for r in rep["runs"] if r["name"] == "la_seed2")
    assert (run["status"], run["reason"]) == ("unverified", "no config.yaml: cannot be checked against the plan, "
                                                            "so it counts for nothing"), run
    la = rep["arms"]["la"]
    assert la["n_finished"] == 2 and la["final_NME"]["n"] == 2 and la["epochs_to_reach"]["0.3"]["n"] == 2
    assert la["final_NME"]["mean"] == pytest.approx((0.19 + 0.201) / 2)
    assert rep["comparisons"]["la"]["final_NME"]["seeds"] == [0, 1]
    assert rep["same_lr"]["pairs"][0]["comparison"]["n"] == 2 and rep["ranking"]["seeds"] == [0, 1]
    assert rep["verdict"][0].startswith("1 run folder(s) hold a run of another config than this plan")
    assert "or no config.yaml (unverified)" in rep["verdict"][0] and "la_seed2 (no config.yaml" in rep["verdict"][0]


def test_a_run_finished_before_end_epoch_was_raised_is_not_finished(tmp_path):
    out = tmp_path / "out"
    _run(out, "adam", 0, 0.2, ADAM, epochs=3)  # "finished" at 3 epochs ...
    write_planned_configs(_study(tmp_path, [("adam", "hand_adam.yaml", {})], seeds=(0,), end_epoch=3), out)
    study = _study(tmp_path, [("adam", "hand_adam.yaml", {})], seeds=(0,), end_epoch=4)  # ... the study now asks for 4
    rep = _analyse(study, out)
    assert rep["runs"][0]["status"] == "partial" and rep["runs"][0]["reason"] == "3/4 epochs"
    assert rep["arms"]["adam"]["final_NME"]["n"] == 0


def _lr_study(tmp_path):
    arms = [("adam", "hand_adam.yaml", {})]
    arms += [(f"adam_lr{lr}", "hand_adam.yaml", {"TRAIN.LR": lr}) for lr in (0.001, 0.00003)]
    arms += [("la", "hand_lookahead_adam.yaml", {}), ("la_lr0.001", "hand_lookahead_adam.yaml", {"TRAIN.LR": 0.001}),
             ("la_k10", "hand_lookahead_adam.yaml", {"TRAIN.LOOKAHEAD.K": 10})]
    study = _study(tmp_path, arms)
    out = tmp_path / "out"
    # A U-shaped LR curve: 3e-5 -> 0.30, 1e-4 -> 0.20, 1e-3 -> 0.28 (range 0.10, not 0.28 - 0.30).
    base = {"adam": (0.20, ADAM), "adam_lr0.001": (0.28, dict(ADAM, lr=0.001)),
            "adam_lr3e-05": (0.30, dict(ADAM, lr=0.00003)), "la": (0.21, LA), "la_lr0.001": (0.25, dict(LA, lr=0.001)),
            "la_k10": (0.19, dict(LA, k=10))}
    for arm, (v, hp) in base.items():
        for s in (0, 1, 2):
            _run(out, arm, s, v + 0.002 * s + (0.0005 * s * s if arm.startswith("la") else 0.0), hp)
    return study, out


def test_same_lr_pairs_and_a_u_shaped_lr_range(tmp_path):
    study, out = _lr_study(tmp_path)
    rep = _analyse(study, out)
    sl = rep["same_lr"]
    assert (sl["k"], sl["alpha"]) == (5, 0.5)  # the k10 arm belongs to the k x alpha grid
    assert [(p["lr"], p["lookahead_arm"], p["base_arm"]) for p in sl["pairs"]] == [
        (0.0001, "la", "adam"), (0.001, "la_lr0.001", "adam_lr0.001")]
    low, high = (p["comparison"] for p in sl["pairs"])
    assert low["diffs"] == pytest.approx([0.01, 0.0105, 0.012]) and low["family_size"] == 2
    assert low["verdict"] == stats.WORSE and high["verdict"] == stats.BETTER
    assert low["p_adjusted"] == pytest.approx(min(1.0, 2 * min(low["p_value"], high["p_value"]))
                                              if low["p_value"] <= high["p_value"] else
                                              max(low["p_value"], 2 * high["p_value"]))
    spread = rep["sensitivity"]["lr_spread"]["adam"]
    assert spread["range"] == pytest.approx(0.10) and spread["seeds"] == [0, 1, 2]
    assert rep["sensitivity"]["k_alpha"]["range"] == pytest.approx(0.02)


def _table(md, label):
    """{row's first cell: {column label: cell}} of the first markdown table with a column ``label``."""
    lines = md.splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith("| ") and f"| {label} |" in ln + " |")
    head = [c.strip() for c in lines[i].strip("|").split("|")]
    rows = {}
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            break
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows[cells[0]] = dict(zip(head, cells))
    return rows


def test_report_tables_label_their_columns(tmp_path):
    from hrnet.study.render.report import BEST_LABEL as BEST, render_markdown

    study, out = _lr_study(tmp_path)
    rep = _analyse(study, out)
    md = render_markdown(rep, [])
    arm = rep["arms"]["adam_lr0.001"]
    row = _table(md, "final NME (all seeds)")["adam_lr0.001"]
    assert row["final NME (all seeds)"].startswith(f"{arm['final_NME']['mean']:.4f} +- ")
    assert row["final NME / box-centre floor"] == f"{arm['final_NME_over_floor']:.2f}"
    assert row["PCK@0.2 (all seeds)"].startswith("0.5000") and row["AUC (all seeds)"].startswith("0.2500")
    assert row["finished seeds"] == "0,1,2" and row["iterations / run"] == "-"  # a coco set: not known from the config
    assert _table(md, "learned")["adam"]["learned"] == "yes"
    course = _table(md, "epochs to NME <= 0.3")["adam"]
    assert course["epochs to NME <= 0.3"] == "3/3 reached; median 2"
    assert course[BEST].startswith(f"{0.202 - 0.02:.4f} +- ")  # the best, not the final NME (0.202)
    c = rep["comparisons"]["la"]["final_NME"]
    comp = _table(md.split("**final NME**")[1], "Holm p")["la"]
    assert (comp["p"], comp["Holm p"]) == (f"{c['p_value']:.3f}", f"{c['p_adjusted']:.3f}") != ("0.000", "0.000")
    # Families fixed by the plan: la is the only user arm (no overrides) besides the reference, a family
    # of one (p_adjusted = p); the grid's arms are the other family, of 4.
    assert c["p_adjusted"] == c["p_value"] and c["family_size"] == 1
    assert rep["comparisons"]["la_k10"]["final_NME"]["family_size"] == 4
    assert comp["mean diff"] == f"{c['mean_diff']:+.4f}" and comp["verdict"] == c["verdict"]
    pair = _table(md, "pair")["la - adam"]
    assert (pair["LR"], pair["verdict"]) == ("0.0001", rep["same_lr"]["pairs"][0]["comparison"]["verdict"])
    floors = _table(md, "box-centre NME")["validation set (synthetic)"]
    assert floors["box-centre NME"] == f"{rep['floors']['valid']['box_centre']['NME']:.4f}"
    assert (floors["images"], floors["distinct hands"]) == ("3", "2")
    assert not re.search(r"[`( ]/(work|tmp|home)/", md)  # no absolute path of this machine


def test_not_learned_and_higher_is_better(tmp_path):
    study = _study(tmp_path, [("adam", "hand_adam.yaml", {}), ("sgd", "hand_sgd_lr0.01.yaml", {}),
                              ("la", "hand_lookahead_adam.yaml", {})])
    out = tmp_path / "out"
    floor = 1.2 / 3  # the box-centre floor of the hand-made validation set
    sgd = {"optimizer": "sgd", "inner": "sgd", "lr": 0.01, "batch": 32, "wd": 0.0, "epochs": 3}
    for s in (0, 1, 2):
        _run(out, "adam", s, 0.9 * floor + 0.001 * s, ADAM, pck=0.30 + 0.01 * s)
        _run(out, "sgd", s, 0.95 * floor + 0.002 * s, sgd, pck=0.40 + 0.01 * s + 0.001 * s * s)
        _run(out, "la", s, 0.5 * floor + 0.001 * s * s, LA, pck=0.20 + 0.01 * s)
    rep = _analyse(study, out)
    assert [rep["arms"][a]["learned"] for a in ("adam", "sgd", "la")] == [False, False, True]
    comp = rep["comparisons"]
    assert comp["sgd"]["final_NME"]["verdict"] == stats.NOT_LEARNED  # both above 0.8 x the floor
    assert comp["la"]["final_NME"]["verdict"] == stats.BETTER
    # PCK is higher-is-better: sgd's PCK is higher on every seed, so it is "better" there, with the
    # interval of (sgd - adam) above 0 and every seed counted for sgd.
    pck = comp["la"]["PCK"]
    assert pck["ci_high"] < 0 and pck["verdict"] == stats.WORSE and pck["n_ref_better"] == 3
    assert pck["lower_is_better"] is False
    assert any("have not learned: adam, sgd" in s for s in rep["verdict"])
    assert any(s.startswith("The reference adam has not learned") for s in rep["verdict"])


def test_higher_is_better_pck_orientation():
    c = stats.paired_comparison({0: 0.52, 1: 0.61, 2: 0.57}, {0: 0.40, 1: 0.50, 2: 0.47}, lower_is_better=False)
    assert 0 < c.ci_low < c.mean_diff < c.ci_high and c.verdict == stats.BETTER
    assert (c.n_arm_better, c.n_ref_better) == (3, 0)
    flipped = stats.paired_comparison({0: 0.40, 1: 0.50, 2: 0.47}, {0: 0.52, 1: 0.61, 2: 0.57}, lower_is_better=False)
    assert flipped.ci_high < 0 and flipped.verdict == stats.WORSE


# ---------------------------------------------------------------------------- real photos, study file
def test_real_photo_cache_is_keyed_by_content_and_settings(tmp_path, real_hands):
    from configs import load_config
    from hrnet.study.analyse.real_photos import cache_key, evaluate_real_hands, real_hand_sets

    sets = real_hand_sets(real_hands)
    run = tmp_path / "run"
    run.mkdir()
    cfg = load_config(os.path.join(CFG, "hand_adam.yaml"))
    (run / "config.yaml").write_text(cfg.dump())
    model = run / "checkpoint_latest.pth"
    model.write_bytes(b"weights v1")
    from hrnet.study.analyse.floors import file_sha256

    cached = {"freihand": {"NME": 0.1}}
    (run / "real_hands.json").write_text(json.dumps({"key": cache_key(cfg, sets, file_sha256(str(model))),
                                                     "results": cached}))
    assert evaluate_real_hands(str(run), sets, "PCK@0.2") == cached
    st = os.stat(model)
    model.write_bytes(b"weights v2")  # same size and modification time, other content
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert "error" in evaluate_real_hands(str(run), sets, "PCK@0.2")  # re-evaluated (and this file is no model)
    model.unlink()  # committed records: no checkpoint, the cached result of the same settings is used
    assert evaluate_real_hands(str(run), sets, "PCK@0.2") == cached
    for key, value in (("TEST.FLIP_TEST", "True"), ("TEST.DECODE", "dark"), ("TEST.PCK_THRESHOLD", "0.1")):
        other = load_config(os.path.join(CFG, "hand_adam.yaml"), [key, value])
        assert cache_key(other, sets, "x") != cache_key(cfg, sets, "x"), key
        (run / "config.yaml").write_text(other.dump())
        assert "no cached result" in evaluate_real_hands(str(run), sets, "PCK@0.2")["error"]
    assert cache_key(cfg, dict(list(sets.items())[:1]), "x") != cache_key(cfg, sets, "x")
    assert real_hands not in json.dumps(cache_key(cfg, sets, "x"))  # no machine path in the cache


def test_real_hands_folder_is_a_study_key_or_an_option(tmp_path, monkeypatch):
    from hrnet.study.plan.spec import load_study

    path = tmp_path / "s.yaml"
    path.write_text(f"arms:\n  - {{name: a, config: {CFG}/hand_adam.yaml}}\n")
    assert load_study(str(path)).real_hands is None  # no key: no real photos, no default location
    path.write_text(path.read_text() + "real_hands: ../photos\n")
    assert load_study(str(path)).real_hands == os.path.join(os.path.dirname(tmp_path), "photos")
    monkeypatch.chdir(tmp_path)
    assert load_study(str(path), real_hands="here/photos").real_hands == str(tmp_path / "here" / "photos")
    assert load_study(str(path), real_hands="").real_hands is None


# ---------------------------------------------------------------------------- plan, study folder
def test_plan_orders_by_priority_then_seed_then_file_order(tmp_path):
    from hrnet.study.plan.spec import StudyError, load_study, output_dir, plan_runs

    path = tmp_path / "s.yaml"
    path.write_text(f"seeds: [0, 1]\narms:\n  - {{name: late, config: {CFG}/hand_adam.yaml, priority: 2}}\n"
                    f"  - {{name: a, config: {CFG}/hand_adam.yaml}}\n"
                    f"  - {{name: b, config: {CFG}/hand_adam.yaml, seeds: [0, 1, 2]}}\n"
                    f"  - {{name: first, config: {CFG}/hand_adam.yaml, priority: -1, seeds: [1]}}\n")
    study = load_study(str(path))
    runs = plan_runs(study, "out")
    assert [r.name for r in runs] == ["first_seed1", "a_seed0", "b_seed0", "a_seed1", "b_seed1", "b_seed2",
                                      "late_seed0", "late_seed1"]
    assert runs[0].run_dir == str(tmp_path / "out" / "runs" / "first_seed1")
    opts = list(runs[0].opts)
    assert opts[opts.index("OUTPUT_DIR") + 1] == str(tmp_path / "out" / "runs")
    # The study folder: --out, else the file's out (relative to the file), else output/studies/<name>.
    assert output_dir(study) == os.path.join("output", "studies", "s")
    path.write_text(path.read_text() + "out: ../docs/here\n")
    study = load_study(str(path))
    assert output_dir(study) == str(tmp_path.parent / "docs" / "here")
    assert output_dir(study, "elsewhere") == "elsewhere"
    for bad, words in (("priority: high", "priority must be an integer"), ("priority: true", "priority"),):
        path.write_text(f"arms:\n  - {{name: a, config: {CFG}/hand_adam.yaml, {bad}}}\n")
        with pytest.raises(StudyError, match=words):
            load_study(str(path))
    path.write_text(f"out: 3\narms:\n  - {{name: a, config: {CFG}/hand_adam.yaml}}\n")
    with pytest.raises(StudyError, match="out must be a folder"):
        load_study(str(path))


# ---------------------------------------------------------------------------- trend with training length
def test_pairs_and_length_variants_need_the_same_setting_but_the_length():
    from hrnet.study.analyse.comparisons import lookahead_pairs
    from hrnet.study.analyse.trend import length_variants

    def entry(family, epochs, its, steps, **kw):
        setting = {"lr": 1e-4, "batch": 32, "epochs": epochs, "TRAIN.END_EPOCH": epochs, "TRAIN.LR_STEP": steps,
                   "iterations": its, "optimizer": family[:9], "k": kw.get("k"), "alpha": kw.get("alpha")}
        return {"family": family, "lr": 1e-4, "k": kw.get("k"), "alpha": kw.get("alpha"), "setting": setting}

    la = {"k": 5, "alpha": 0.5}
    arms = {"adam": entry("adam", 30, 900, [20, 25]), "adam_e6": entry("adam", 6, 180, [4, 5]),
            "adam_fewer": entry("adam", 30, 450, [20, 25]), "la": entry("lookahead(adam)", 30, 900, [20, 25], **la),
            "la_e6": entry("lookahead(adam)", 6, 180, [4, 5], **la),
            "la_e6_steps": entry("lookahead(adam)", 6, 180, [2, 3], **la)}
    # Each Lookahead arm pairs with Adam at its own length only; fewer images (fewer iterations) is
    # another setting although the epochs agree, and so are other LR steps.
    assert lookahead_pairs(arms) == [("la", "adam"), ("la_e6", "adam_e6")]
    # A shorter version: LR steps at the same fractions of the epochs; fewer images or other steps are not.
    assert length_variants(arms, "adam") == {"adam_e6": "adam", "la_e6": "la"}


LENGTHS = ((30, [20, 25]), (12, [8, 10]), (6, [4, 5]))


def _trend_study(tmp_path):
    """Adam and Lookahead(Adam) at LR 1e-4 at 30, 12 and 6 epochs (LR steps at the same fractions),
    at LR 1e-3 at 30 and 6 epochs; 3 training images, batch 1: 3 iterations per epoch; seeds 0-4."""
    arms = []
    for lr, tag in ((0.0001, ""), (0.001, "_lr1e-3")):
        for epochs, steps in LENGTHS:
            if lr == 0.001 and epochs == 12:
                continue
            over = {"TRAIN.LR": lr, "TRAIN.END_EPOCH": epochs, "TRAIN.LR_STEP": steps}
            suffix = tag + ("" if epochs == 30 else f"_e{epochs}")
            arms += [(f"adam{suffix}", "hand_adam.yaml", over), (f"la{suffix}", "hand_lookahead_adam.yaml", over)]
    extra = "  TRAIN.BATCH_SIZE_PER_GPU: 1\n  DATASET.MAX_TRAIN_SAMPLES: 3\nreal_hands: false\nout: study"
    return _study(tmp_path, arms, seeds=range(5), end_epoch=30, extra=extra)


# Per seed noise of the gap, two patterns whose per-seed difference averages 0.
NOISE_A = (0.002, -0.001, 0.0, -0.002, 0.001)
NOISE_B = (-0.001, 0.002, -0.002, 0.001, 0.0)


def _write_trend_runs(out):
    """LR 1e-4: the gap Lookahead - Adam grows with length (+0.002, +0.010, +0.020 plus noise);
    LR 1e-3: it holds (+0.010 at 6 and 30 epochs, noise patterns that cancel on average)."""
    for s in range(5):
        for epochs, _ in LENGTHS:
            suffix = "" if epochs == 30 else f"_e{epochs}"
            adam = 0.30 - 0.003 * epochs + 0.004 * s
            hp = dict(ADAM, epochs=epochs)
            _run(out, f"adam{suffix}", s, adam, hp, epochs=epochs)
            gap = {6: 0.002, 12: 0.010, 30: 0.020}[epochs] + 0.0005 * s * epochs / 6
            _run(out, f"la{suffix}", s, adam + gap, dict(LA, epochs=epochs), epochs=epochs)
            if epochs != 12:
                hp = dict(ADAM, lr=0.001, epochs=epochs)
                _run(out, f"adam_lr1e-3{suffix}", s, adam - 0.01, hp, epochs=epochs)
                noise = (NOISE_A if epochs == 6 else NOISE_B)[s]
                _run(out, f"la_lr1e-3{suffix}", s, adam - 0.01 + 0.010 + noise, dict(LA, lr=0.001, epochs=epochs),
                     epochs=epochs)


def test_trend_with_training_length(tmp_path):
    from hrnet.study.render.report import render_markdown, write_report

    study = _trend_study(tmp_path)
    out = tmp_path / "study"
    _write_trend_runs(str(out))
    rep = _analyse(study, out)
    assert rep["length_variants"] == {"adam_e12": "adam", "la_e12": "la", "adam_e6": "adam", "la_e6": "la",
                                      "adam_lr1e-3_e6": "adam_lr1e-3", "la_lr1e-3_e6": "la_lr1e-3"}
    # The other families compare arms at the reference's length only.
    assert [(p["lr"], p["lookahead_arm"]) for p in rep["same_lr"]["pairs"]] == [(0.0001, "la"), (0.001, "la_lr1e-3")]
    assert set(rep["comparisons"]) == {"la", "adam_lr1e-3", "la_lr1e-3"}
    assert [p["lr"] for p in rep["sensitivity"]["lr_lines"]["adam"]] == [0.0001, 0.001]
    tr = rep["trend"]
    assert tr["family_size"] == 5 and tr["user_iterations"] == 19800
    grows, holds = tr["lines"]  # the reference's line first
    assert (grows["reference_line"], grows["lr"], holds["reference_line"], holds["lr"]) == (True, 0.0001, False, 0.001)
    assert [(p["epochs"], p["iterations"], p["lr_step"]) for p in grows["points"]] == [
        (6, 18, [4, 5]), (12, 36, [8, 10]), (30, 90, [20, 25])]
    for p, gap in zip(grows["points"], (0.002, 0.010, 0.020)):
        assert p["comparison"]["diffs"] == pytest.approx([gap + 0.0005 * s * p["epochs"] / 6 for s in range(5)])
        assert p["comparison"]["family_size"] == 5
    c = grows["change"]
    assert (c["shortest"], c["longest"], c["seeds"]) == ("la_e6", "la", [0, 1, 2, 3, 4])
    assert c["diffs"] == pytest.approx([0.018 + 0.0005 * s * 4 for s in range(5)])
    assert c["ci_low"] > 0 and c["trend"] == "grows"
    assert (c["gap_shortest"], c["gap_longest"]) == (pytest.approx(0.003), pytest.approx(0.025))
    h = holds["change"]
    assert h["mean_diff"] == pytest.approx(0.0, abs=1e-12) and h["trend"] == "holds (no detectable change)"
    assert h["diffs"] == pytest.approx([b - a for a, b in zip(NOISE_A, NOISE_B)])
    assert grows["measured_iterations"] == [18, 90] and grows["user_outside"]
    line = next(s for s in rep["verdict"] if s.startswith("Lookahead(adam) - adam at LR 0.0001"))
    assert "the gap grows (against Lookahead)" in line
    assert "The user's 19,800 iterations lie outside the measured range (18..90" in line
    md = render_markdown(rep, [])
    rows = _table(md, "epochs (LR steps)")
    assert rows["la_e6 - adam_e6"]["iterations / run"] == "18"
    assert rows["la - adam"]["epochs (LR steps)"] == "30 (20, 25)"
    assert rows["la - adam"]["mean diff"] == f"{grows['points'][2]['comparison']['mean_diff']:+.4f}"
    assert "**grows** (against Lookahead)" in md and "**holds (no detectable change)**" in md
    names = {os.path.basename(p) for p in write_report(rep, str(out))}
    assert {"trend.png", "calibration.png"} <= names


def test_trend_needs_three_common_seeds_and_a_second_length(tmp_path):
    from hrnet.study.analyse.trend import trend

    study = _trend_study(tmp_path)
    out = tmp_path / "study"
    _write_trend_runs(str(out))
    import shutil

    for s in (2, 3, 4):  # the shortest Lookahead arm finished seeds 0 and 1 only
        shutil.rmtree(out / "runs" / f"la_e6_seed{s}")
    rep = _analyse(study, out)
    c = rep["trend"]["lines"][0]["change"]
    assert c["seeds"] == [0, 1] and c["trend"] == stats.TOO_FEW
    assert rep["trend"]["lines"][0]["points"][0]["comparison"]["verdict"] == stats.TOO_FEW
    no_lengths = {a: e for a, e in rep["arms"].items() if not a.endswith(("_e6", "_e12"))}
    assert trend({}, no_lengths, "adam", 19800)["lines"] == []


# ---------------------------------------------------------------------------- calibration, machine
def test_calibration_against_the_floor():
    from hrnet.study.analyse.calibration import calibration, calibration_sentence

    floors = {"valid": {"box_centre": {"NME": 0.30}, "constant_layout": {"NME": 0.28}}}
    runs = [{"arm": "adam", "seed": s, "status": "finished", "final_NME": v, "iterations": 2790}
            for s, v in enumerate((0.19, 0.21, 0.20))]
    runs.append({"arm": "adam", "seed": 3, "status": "partial", "final_NME": 0.01, "iterations": 2790})
    cal = calibration("adam", runs, floors)
    assert cal["fraction_of_floor"] == pytest.approx(0.20 / 0.30) and cal["reached"] is True
    assert cal["seeds"] == [0, 1, 2] and cal["target_NME"] == pytest.approx(0.21)
    text = calibration_sentence(cal)
    assert "0.2000 over 3 seeds after 2,790 iterations, 0.67 x the box-centre floor (0.3000)" in text
    assert "at or below 0.7 x (0.2100)" in text
    above = calibration("adam", [dict(r, final_NME=0.25) for r in runs], floors)
    assert above["reached"] is False
    assert "the study does not reach 0.7 x at this scale (the closest scale used)" in calibration_sentence(above)
    assert calibration("adam", [], {})["reached"] is None
    assert "not judged" in calibration_sentence(calibration("adam", runs, {"available": False}))


def test_each_run_reports_its_machine(tmp_path):
    from hrnet.study.render.report import render_markdown

    study = _study(tmp_path, [("adam", "hand_adam.yaml", {})], seeds=(0, 1))
    out = tmp_path / "out"
    amx = {"cpu": "Intel(R) Xeon(R) Platinum 8480+", "cpu_flags": ["avx2", "amx_tile"], "torch": "2.14.1",
           "threads": 2, "device": "cpu"}
    _run(out, "adam", 0, 0.2, ADAM, machine=amx)
    _run(out, "adam", 1, 0.2, ADAM)  # recorded before metrics.json had a machine entry
    rep = _analyse(study, out)
    assert [r["machine"] for r in rep["runs"]] == [amx, None]
    md = render_markdown(rep, [])
    assert f"CPU models: {amx['cpu']} (1 run); not recorded (1 run)." in md
    rows = _table(md, "torch threads")
    assert (rows["adam_seed0"]["CPU"], rows["adam_seed0"]["torch threads"]) == (amx["cpu"], "2")
    assert (rows["adam_seed1"]["CPU"], rows["adam_seed1"]["torch threads"], rows["adam_seed1"]["device"]) == \
        ("-", "-", "-")


# ---------------------------------------------------------------------------- --report-only
def _study_cli():
    """tools/study.py's main, imported from its file (the tools import their helpers by path)."""
    import importlib.util
    import sys

    sys.path.insert(0, os.path.join(ROOT, "tools"))
    spec = importlib.util.spec_from_file_location("study_cli", os.path.join(ROOT, "tools", "study.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_report_only_from_the_small_records_alone(tmp_path, capsys):
    import shutil

    study = _trend_study(tmp_path)  # out: study (relative to the study file)
    out = tmp_path / "study"
    _write_trend_runs(str(out))
    main = _study_cli()
    write_planned_configs(study, out)
    for d in (out / "runs").iterdir():  # what a repository keeps besides metrics.json and config.yaml
        (d / "study_sessions.json").write_text(json.dumps([{"wall_s": 40.0, "exit_status": 0}]))
    assert main([study.path, "--report-only", "--no-real-hands"]) == 0
    first = json.loads((out / "report.json").read_text())
    assert first["study"]["out_dir"] == "study"
    # Another machine: no annotation files (floors from floors.json), only the committed files.
    shutil.rmtree(tmp_path / "data")
    for name in ("report.json", "report.md", "trend.png"):
        (out / name).unlink()
    assert main([study.path, "--report-only", "--no-real-hands"]) == 0
    again = json.loads((out / "report.json").read_text())
    for key in ("arms", "comparisons", "same_lr", "trend", "calibration", "floors", "ranking", "verdict"):
        if key == "floors":
            first[key].pop("source"), again[key].pop("source")
        assert again[key] == first[key], key
    assert (out / "trend.png").is_file()
    # --out wins over the file's out: a folder without runs.
    assert main([study.path, "--report-only", "--no-real-hands", "--out", "elsewhere"]) == 1
    elsewhere = json.loads((tmp_path / "elsewhere" / "report.json").read_text())
    assert {r["status"] for r in elsewhere["runs"]} == {"not run"}
    capsys.readouterr()


# ---------------------------------------------------------------------------- real photos, from the records
def _real_records():
    """Real-photo results as ``collect`` records them: adam and la on 3 seeds (la's seed 2 failed to
    evaluate, its seed 1 lacks the onehand set), sgd finished seed 0 only (seed 1 without a result,
    seed 2 partial: its number must not count), rms without runs."""
    def rec(arm, seed, res, status="finished"):
        return {"name": f"{arm}_seed{seed}", "arm": arm, "seed": seed, "status": status, "pck_key": "PCK@0.2",
                "real_hands": res}

    def res(nme, pck, weights, sets=("onehand", "all")):
        out = {s: {"NME": nme + (0.01 if s == "onehand" else 0.0), "PCK@0.2": pck} for s in sets}
        return dict(out, evaluated={"checkpoint": "checkpoint_latest.pth", "weights": weights})

    by_arm = {"adam": [rec("adam", s, res(v, p, "trained")) for s, v, p in ((0, 0.46, 0.5), (1, 0.42, 0.6),
                                                                            (2, 0.44, 0.7))],
              "la": [rec("la", 2, {"error": "RuntimeError: boom"}), rec("la", 0, res(0.30, 0.8, "slow")),
                     rec("la", 1, res(0.31, 0.9, "slow", sets=("all",)))],
              "sgd": [rec("sgd", 1, None), rec("sgd", 2, res(0.01, 1.0, "trained"), status="partial"),
                      rec("sgd", 0, res(0.44, 0.4, "trained"))],
              "rms": []}

    def entry(values):
        return {"final_NME": {"n": len(values), "per_seed": {str(s): v for s, v in values.items()}}}

    arms = {"adam": entry({0: 0.20, 1: 0.21, 2: 0.22}), "la": entry({0: 0.18, 1: 0.19, 2: 0.20}),
            "sgd": entry({0: 0.25, 1: 0.26}), "rms": entry({0: 0.1})}  # rms: no real-photo result, not ranked
    return by_arm, arms


FLOORS = {"available": True, "real": {"all": {"box_centre": {"NME": 0.5}, "num_images": 12},
                                      "onehand": {"num_images": 10, "num_hands": 8}}}


def test_real_hands_summary_from_the_records():
    from scipy.stats import ttest_rel

    from hrnet.study.analyse.rankings import real_hands_summary

    by_arm, arms = _real_records()
    sets = {"onehand": ("photos/onehand", "ann.json")}
    got = real_hands_summary("adam", by_arm, arms, sets, FLOORS, "photos")
    assert (got["available"], got["folder"], got["sets"], got["pck_key"]) == (True, "photos", ["onehand", "all"],
                                                                              "PCK@0.2")
    assert got["floors"] == FLOORS["real"] and got["errors"] == {"la_seed2": "RuntimeError: boom"}
    assert got["set_sizes"] == {"onehand": {"num_images": 10, "num_hands": 8},
                                "all": {"num_images": 12, "num_hands": None}}
    assert got["evaluated"] == {"checkpoint": "checkpoint_latest.pth", "weights": {"trained": ["adam", "sgd"],
                                                                                   "slow": ["la"]}}
    adam, la, sgd = (got["per_arm"][a] for a in ("adam", "la", "sgd"))
    assert adam["all"]["NME_per_seed"] == {"0": 0.46, "1": 0.42, "2": 0.44}
    assert adam["all"]["NME"]["mean"] == pytest.approx(0.44) and adam["all"]["NME"]["n"] == 3
    assert adam["all"]["PCK_per_seed"] == {"0": 0.5, "1": 0.6, "2": 0.7}
    assert adam["all"]["PCK"]["mean"] == pytest.approx(0.6)
    assert adam["onehand"]["NME_per_seed"] == {"0": pytest.approx(0.47), "1": pytest.approx(0.43),
                                               "2": pytest.approx(0.45)}
    assert la["onehand"]["NME_per_seed"] == {"0": pytest.approx(0.31), "1": None} and la["onehand"]["NME"]["n"] == 1
    assert la["all"]["NME_per_seed"] == {"0": 0.30, "1": 0.31}  # seed 2: an error, no number
    assert sgd["all"]["NME_per_seed"] == {"0": 0.44}  # seed 1 without a result, seed 2 not finished
    rms = got["per_arm"]["rms"]
    assert rms["all"]["NME"]["n"] == 0 and rms["learned"] is None and rms["NME_over_floor"] is None
    # Against the real box-centre floor 0.5 (learned: at or below 0.8 x): adam 0.88 and sgd 0.88 have not.
    assert (adam["NME_over_floor"], la["NME_over_floor"], sgd["NME_over_floor"]) == (
        pytest.approx(0.88), pytest.approx(0.61), pytest.approx(0.88))
    assert (adam["learned"], la["learned"], sgd["learned"]) == (False, True, False)
    vs = got["vs_reference"]
    assert set(vs) == {"la", "sgd", "rms"}
    assert vs["la"]["seeds"] == [0, 1] and vs["la"]["diffs"] == pytest.approx([0.30 - 0.46, 0.31 - 0.42])
    p = ttest_rel([0.30, 0.31], [0.46, 0.42]).pvalue
    assert vs["la"]["p_value"] == pytest.approx(p) and vs["la"]["p_adjusted"] == pytest.approx(p)
    assert vs["la"]["verdict"] == stats.TOO_FEW and vs["la"]["family_size"] == 1
    assert vs["sgd"]["diffs"] == pytest.approx([-0.02]) and vs["sgd"]["verdict"] == stats.NOT_LEARNED
    assert vs["rms"]["n"] == 0 and vs["rms"]["verdict"] == stats.TOO_FEW
    # Rankings over the seeds every compared arm has on both sides (seed 0 only): synthetic la < adam <
    # sgd, real la < sgd < adam; one discordant pair of three: Kendall tau 1/3.
    assert got["seeds"] == [0]
    assert got["rank_synthetic"] == ["la", "adam", "sgd"] and got["rank_real"] == ["la", "sgd", "adam"]
    assert got["mean_synthetic"] == {"adam": 0.20, "la": 0.18, "sgd": 0.25}
    assert got["mean_real"] == {"adam": 0.46, "la": 0.30, "sgd": 0.44}
    assert got["kendall_tau"] == pytest.approx(1 / 3)


def test_real_hands_summary_without_sets_floors_or_common_seeds():
    from hrnet.study.analyse.rankings import real_hands_summary

    by_arm, arms = _real_records()
    assert real_hands_summary("adam", by_arm, arms, {}, FLOORS, "photos") == {
        "available": False, "folder": "photos", "note": "no real hand sets found"}
    assert real_hands_summary("adam", by_arm, arms, {}, FLOORS, None)["note"] == \
        "no real_hands in the study file (or --no-real-hands)"
    sets = {"onehand": ("photos/onehand", "ann.json")}
    # Floors not computed here but read back for the real sets: still used.
    got = real_hands_summary("adam", by_arm, arms, sets, dict(FLOORS, available=False), "photos")
    assert got["floors"] == FLOORS["real"] and got["per_arm"]["adam"]["learned"] is False
    got = real_hands_summary("adam", by_arm, arms, sets, {"available": True}, "photos")
    assert got["floors"] == {} and got["per_arm"]["adam"]["NME_over_floor"] is None
    assert got["per_arm"]["adam"]["learned"] is None and got["vs_reference"]["sgd"]["verdict"] == stats.TOO_FEW
    assert got["set_sizes"]["all"] == {"num_images": None, "num_hands": None}
    # No seed shared by every compared arm (sgd's real result only at seed 2, where la has none): no ranking.
    sgd0 = next(r for r in by_arm["sgd"] if r["seed"] == 0 and r["status"] == "finished")
    sgd0.update(seed=2, real_hands={"all": {"NME": 0.4, "PCK@0.2": 0.5}})
    got = real_hands_summary("adam", by_arm, arms, sets, FLOORS, "photos")
    assert {k: got[k] for k in ("seeds", "rank_synthetic", "rank_real", "kendall_tau", "mean_synthetic",
                                "mean_real")} == {"seeds": [], "rank_synthetic": [], "rank_real": [],
                                                  "kendall_tau": None, "mean_synthetic": {}, "mean_real": {}}
    # One compared arm: no tau; identical values on both sides: tau undefined (NaN) is None.
    only = real_hands_summary("adam", {"adam": by_arm["adam"]}, {"adam": arms["adam"]}, sets, FLOORS, "photos")
    assert only["seeds"] == [0, 1, 2] and only["kendall_tau"] is None and only["rank_real"] == ["adam"]
    flat = {a: [dict(r, real_hands={"all": {"NME": 0.4}}) for r in by_arm[a]] for a in ("adam", "la")}
    got = real_hands_summary("adam", flat, {a: arms[a] for a in flat}, sets, FLOORS, "photos")
    assert got["seeds"] == [0, 1, 2] and got["kendall_tau"] is None
    assert got["pck_key"] == "PCK@0.2" and got["per_arm"]["la"]["all"]["PCK"]["n"] == 0
    # Two arms ranked alike on both sides: tau 1.
    two = real_hands_summary("adam", {a: by_arm[a] for a in ("adam", "la")}, {a: arms[a] for a in ("adam", "la")},
                             sets, FLOORS, "photos")
    assert two["seeds"] == [0, 1] and two["rank_real"] == ["la", "adam"] and two["kendall_tau"] == pytest.approx(1.0)
    # No run recorded anywhere: the PCK key's generic name.
    assert real_hands_summary("adam", {"adam": [], "la": []}, {a: arms[a] for a in ("adam", "la")}, sets, FLOORS,
                              "photos")["pck_key"] == "PCK"


# ---------------------------------------------------------------------------- comparisons, on hand-made arms
def _holm2(p1, p2):
    """Holm's adjustment of two p-values by hand: the smaller times 2, the larger at least that."""
    lo = min(1.0, 2 * min(p1, p2))
    return (lo, max(lo, max(p1, p2))) if p1 <= p2 else (max(lo, p1), lo)


def _setting(lr, batch=32, **kw):
    """An ``arm_setting``: the optimizer's own keys (free between pair sides) and the rest."""
    return dict({"lr": lr, "batch": batch, "wd": 0.0, "epochs": 3, "TRAIN.END_EPOCH": 3, "TRAIN.LR_STEP": [2],
                 "iterations": 30, "model": "hrnet_w18_small"}, **kw)


def _arm(family, lr, k=None, alpha=None, learned=True, **setting):
    opt = "lookahead" if family.startswith("lookahead(") else family
    return {"family": family, "lr": lr, "k": k, "alpha": alpha, "learned": learned,
            "setting": _setting(lr, optimizer=opt, k=k, alpha=alpha, **setting)}


def _records(values, status=None, **fields):
    """Run records ``seed -> final NME`` (``status``: seed -> a status other than finished)."""
    status = status or {}
    return [dict({"seed": s, "status": status.get(s, "finished"), "final_NME": v}, **fields)
            for s, v in values.items()]


def test_per_seed_and_vs_reference_families():
    from scipy.stats import ttest_rel

    from hrnet.study.analyse.comparisons import per_seed, vs_reference

    def recs(nme, pck, status=None):
        return [dict(r, final_valid_loss=r["final_NME"] / 10, PCK=pck[r["seed"]], AUC=pck[r["seed"]] / 2)
                for r in _records(nme, status)]

    ref_nme = {0: 0.30, 1: 0.31, 2: 0.33, 3: 0.36}
    a_nme = {0: 0.27, 1: 0.29, 2: 0.30, 3: 0.10}  # seed 3 did not finish: never compared
    b_nme = {0: 0.305, 1: 0.30, 2: 0.335, 3: 0.36}
    by_arm = {"ref": recs(ref_nme, {s: 0.5 for s in range(4)}),
              "a": recs(a_nme, {0: 0.61, 1: 0.62, 2: 0.64, 3: 0.99}, status={3: "partial"}),
              "b": recs(b_nme, {0: 0.5, 1: 0.52, 2: 0.49, 3: 0.5})}
    assert per_seed(by_arm["a"], "final_NME") == {0: 0.27, 1: 0.29, 2: 0.30}
    assert per_seed(by_arm["a"], "EPE") == {0: None, 1: None, 2: None}
    arms = {"ref": {"learned": False}, "a": {"learned": True}, "b": {"learned": False}}
    out = vs_reference("ref", by_arm, arms)
    assert set(out) == {"a", "b"} and set(out["a"]) == {"final_NME", "final_valid_loss", "PCK", "AUC"}
    a, b = out["a"]["final_NME"], out["b"]["final_NME"]
    assert a["seeds"] == [0, 1, 2] and a["diffs"] == pytest.approx([-0.03, -0.02, -0.03])
    assert b["seeds"] == [0, 1, 2, 3] and a["lower_is_better"] is True
    pa = ttest_rel([0.27, 0.29, 0.30], [0.30, 0.31, 0.33]).pvalue
    pb = ttest_rel(list(b_nme.values()), list(ref_nme.values())).pvalue
    assert (a["p_value"], b["p_value"]) == (pytest.approx(pa), pytest.approx(pb))
    assert (a["p_adjusted"], b["p_adjusted"]) == tuple(map(pytest.approx, _holm2(pa, pb)))
    assert a["family_size"] == 2 and a["verdict"] == stats.BETTER  # 2 x p = 0.02
    assert b["verdict"] == stats.NOT_LEARNED  # both sides above the floor's threshold
    loss = out["a"]["final_valid_loss"]
    assert loss["diffs"] == pytest.approx([-0.003, -0.002, -0.003])
    pck = out["a"]["PCK"]  # higher is better: a's higher PCK is "better"
    assert pck["lower_is_better"] is False and pck["diffs"] == pytest.approx([0.11, 0.12, 0.14])
    assert pck["n_arm_better"] == 3 and pck["verdict"] == stats.BETTER
    auc = out["a"]["AUC"]
    assert auc["diffs"] == pytest.approx([0.055, 0.06, 0.07]) and auc["lower_is_better"] is False
    assert all(out["b"][k]["verdict"] == stats.NOT_LEARNED for k in out["b"])
    assert vs_reference("ref", {"ref": by_arm["ref"]}, arms) == {}


def _pair_arms():
    return {"adam": _arm("adam", 1e-4), "adam_lr1e-3": _arm("adam", 1e-3), "sgd": _arm("sgd", 1e-2, learned=False),
            "la": _arm("lookahead(adam)", 1e-4, 5, 0.5), "la_lr1e-3": _arm("lookahead(adam)", 1e-3, 5, 0.5),
            "la_k10": _arm("lookahead(adam)", 1e-4, 10, 0.5),
            "la_sgd": _arm("lookahead(sgd)", 1e-2, 5, 0.5, learned=False),
            "la_b16": _arm("lookahead(adam)", 1e-4, 5, 0.5, batch=16),  # no Adam arm at batch 16
            "la_nolr": dict(_arm("lookahead(adam)", None, 5, 0.5), setting=_setting(1e-4, optimizer="lookahead",
                                                                                    k=5, alpha=0.5))}


def test_lookahead_pairs_and_the_main_k_alpha():
    from hrnet.study.analyse.comparisons import _main_k_alpha, lookahead_pairs

    arms = _pair_arms()
    assert lookahead_pairs(arms) == [("la", "adam"), ("la_lr1e-3", "adam_lr1e-3"), ("la_k10", "adam"),
                                     ("la_sgd", "sgd")]  # an arm without an LR pairs with nothing
    assert _main_k_alpha(arms) == (5, 0.5)  # 5 arms at (5, 0.5), 1 at (10, 0.5)
    first = {"k10": arms["la_k10"], "la": arms["la"], "la_sgd": arms["la_sgd"]}
    assert _main_k_alpha(first) == (5, 0.5)  # the most used, not the first listed
    tie = {"x": _arm("lookahead(adam)", 1e-4, 10, 0.5), "y": _arm("lookahead(adam)", 1e-4, 5, 0.8),
           "z": _arm("adam", 1e-4)}
    assert _main_k_alpha(tie) == (10, 0.5)  # a tie: the first in the study file
    assert _main_k_alpha(dict(reversed(list(tie.items())))) == (5, 0.8)
    assert _main_k_alpha({"z": tie["z"]}) is None and lookahead_pairs({"z": tie["z"]}) == []


def test_same_lr_pairs_on_hand_made_arms():
    from scipy.stats import ttest_rel

    from hrnet.study.analyse.comparisons import same_lr_pairs

    arms = _pair_arms()
    base = {0: 0.30, 1: 0.32, 2: 0.31}
    gaps = {"la": (0.010, 0.012, 0.011), "la_lr1e-3": (-0.02, -0.025, -0.021), "la_sgd": (0.0, 0.001, -0.001),
            "la_k10": (0.1, 0.1, 0.1)}
    by_arm = {a: _records(base) for a in arms}
    for la, g in gaps.items():
        by_arm[la] = _records({s: base[s] + g[s] for s in base})
    by_arm["la"][2]["status"] = "failed"  # pairs on seeds 0 and 1 only
    got = same_lr_pairs(by_arm, arms)
    assert (got["k"], got["alpha"]) == (5, 0.5)
    assert [(p["key"], p["lr"], p["optimizer"], p["lookahead_arm"], p["base_arm"]) for p in got["pairs"]] == [
        ("la - adam", 1e-4, "adam", "la", "adam"),
        ("la_lr1e-3 - adam_lr1e-3", 1e-3, "adam", "la_lr1e-3", "adam_lr1e-3"),
        ("la_sgd - sgd", 1e-2, "sgd", "la_sgd", "sgd")]  # by optimizer, then LR; k10 is the grid's
    la, la3, la_sgd = (p["comparison"] for p in got["pairs"])
    assert la["seeds"] == [0, 1] and la["diffs"] == pytest.approx([0.010, 0.012]) and la["verdict"] == stats.TOO_FEW
    p3 = ttest_rel([base[s] + gaps["la_lr1e-3"][s] for s in base], list(base.values())).pvalue
    p_sgd = ttest_rel([base[s] + gaps["la_sgd"][s] for s in base], list(base.values())).pvalue
    p2 = ttest_rel([0.31, 0.332], [0.30, 0.32]).pvalue
    m3 = sorted([p2, p3, p_sgd])  # Holm over the three pairs
    adj = [min(1, 3 * m3[0])]
    adj += [max(adj[0], min(1, 2 * m3[1]))]
    adj += [max(adj[1], m3[2])]
    assert [c["p_adjusted"] for c in (la, la3, la_sgd)] == pytest.approx([adj[m3.index(p)] for p in (p2, p3, p_sgd)])
    assert la3["family_size"] == 3 and la3["verdict"] == stats.BETTER
    assert la_sgd["verdict"] == stats.NOT_LEARNED  # both sides "have not learned"
    assert same_lr_pairs({"adam": by_arm["adam"]}, {"adam": arms["adam"]}) == {"k": None, "alpha": None, "pairs": []}


def _slow_fast_records(seeds, d1, d3, status=None, optimizer="lookahead", weights=("slow",)):
    """Lookahead runs whose fast weights trail the slow ones by ``d1(s)`` at epoch 1 and ``d3(s)`` at
    epoch 3 (equal at epoch 2, just after a sync); epoch 0 (untrained) differs and must not count."""
    status = status or {}
    out = []
    for s in seeds:
        slow = [0.9, 0.5 + 0.01 * s, 0.4 + 0.01 * s, 0.30 + 0.01 * s]
        fast = [0.95, slow[1] + d1(s), slow[2], slow[3] + d3(s)]
        out.append({"seed": s, "status": status.get(s, "finished"), "hparams": {"optimizer": optimizer},
                    "eval_weights": weights[s % len(weights)],
                    "curves": {"epoch": [0, 1, 2, 3], "NME_slow": slow, "NME_fast": fast}})
    return out


def test_lookahead_slow_and_fast_weights_by_hand():
    from scipy.stats import ttest_rel

    from hrnet.study.analyse.comparisons import lookahead_slow_fast

    la = _slow_fast_records(range(4), lambda s: 0.02 + 0.001 * s, lambda s: 0.01 + 0.002 * s, status={3: "partial"},
                            weights=(None, "slow"))
    la[2]["curves"]["NME_fast"][1] = None  # a validation without the fast weights' NME: that epoch is skipped
    nothing = _slow_fast_records([4], lambda s: 0.0, lambda s: 0.0)[0]
    nothing["curves"]["NME_slow"] = [None] * 4  # finished, but no slow-weight NME logged: left out
    la.insert(0, nothing)
    same = _slow_fast_records(range(3), lambda s: 0.0, lambda s: 0.0, weights=("fast",))
    unlogged = _slow_fast_records(range(2), lambda s: 0.0, lambda s: 0.0)
    for r in unlogged:
        r["curves"]["NME_slow"] = [None] * 4
    by_arm = {"la": la, "same": same, "unlogged": unlogged,
              "adam": _slow_fast_records(range(3), lambda s: 0.1, lambda s: 0.1, optimizer="adam")}
    arms = {"la": {"learned": True}, "same": {"learned": False}, "unlogged": {}, "adam": {}}
    out = lookahead_slow_fast(by_arm, arms)
    assert set(out) == {"la", "same", "unlogged"}  # only arms with finished Lookahead runs
    o = out["la"]
    assert o["logged"] is True and o["eval_weights"] == "slow" and out["same"]["eval_weights"] == "fast"
    assert o["final_NME_slow"] == {"0": 0.30, "1": 0.31, "2": 0.32}
    assert o["final_NME_fast"] == {"0": pytest.approx(0.31), "1": pytest.approx(0.322), "2": pytest.approx(0.334)}
    assert o["slow"]["mean"] == pytest.approx(0.31) and o["fast"]["n"] == 3
    assert o["epochs_where_they_differ"] == {"0": 2, "1": 2, "2": 1}
    final = o["slow_vs_fast"]
    assert final["diffs"] == pytest.approx([-0.010, -0.012, -0.014])
    p = ttest_rel([0.30, 0.31, 0.32], [0.31, 0.322, 0.334]).pvalue
    assert final["p_value"] == pytest.approx(p) and final["p_adjusted"] == pytest.approx(min(1.0, 2 * p))
    assert final["family_size"] == 2 and out["same"]["slow_vs_fast"]["p_adjusted"] == 1.0
    # Epoch means over epochs 1-3 (seed 2 without its epoch 1): -(d1 + d3) / 3, and -d3 / 2 for seed 2.
    assert o["epoch_mean_slow_vs_fast"]["diffs"] == pytest.approx([-0.01, -0.011, -(0.01 + 0.004) / 2])
    best = o["best_slow_vs_fast"]
    assert best["diffs"] == pytest.approx([-0.010, -0.012, -0.014])
    assert best["verdict"] is None and best["p_adjusted"] is None  # selected on the validation set: no verdict
    assert out["same"]["slow_vs_fast"]["verdict"] == stats.NOT_LEARNED
    assert out["same"]["epoch_mean_slow_vs_fast"]["verdict"] == stats.NOT_LEARNED
    u = out["unlogged"]
    assert u["logged"] is False and u["final_NME_slow"] == {} and u["slow_vs_fast"]["n"] == 0
    assert u["eval_weights"] == "slow" and u["epochs_where_they_differ"] == {}


# ---------------------------------------------------------------------------- trend, on hand-made arms
def _len_arm(family, lr, epochs, learned=True, its_per_epoch=10, steps=None, **kw):
    """An arm entry at ``epochs`` (LR steps at 2/3 and 5/6 of it, ``its_per_epoch`` iterations per epoch)."""
    k, alpha = (5, 0.5) if family.startswith("lookahead(") else (None, None)
    e = _arm(family, lr, k, alpha, learned)
    e["setting"].update({"epochs": epochs, "TRAIN.END_EPOCH": epochs,
                         "TRAIN.LR_STEP": steps or [epochs * 2 // 3, epochs * 5 // 6],
                         "iterations": None if its_per_epoch is None else its_per_epoch * epochs}, **kw)
    return e


def test_length_of_and_length_variants():
    from hrnet.study.analyse.trend import _without_length, length_of, length_variants

    arms = {"adam": _len_arm("adam", 1e-4, 30), "adam_again": _len_arm("adam", 1e-4, 30),
            "adam_e6": _len_arm("adam", 1e-4, 6), "adam_e12": _len_arm("adam", 1e-4, 12),
            "adam_e6_fewer": _len_arm("adam", 1e-4, 6, its_per_epoch=5),  # other data, not another length
            "adam_e6_steps": _len_arm("adam", 1e-4, 6, steps=[2, 3]),
            "sgd_e6": _len_arm("sgd", 1e-2, 6)}  # no sgd at the reference's length
    assert length_of(arms["adam_e6"]) == (6, 60)
    assert length_of(_len_arm("adam", 1e-4, 6, its_per_epoch=None)) == (6, None)
    assert length_variants(arms, "adam") == {"adam_e6": "adam", "adam_e12": "adam"}  # the first arm at that setting
    # LR steps compare as fractions of the length to 4 decimals; a zero length does not divide by zero.
    assert _without_length(_len_arm("adam", 1e-4, 3, steps=[1])) == _without_length(
        _len_arm("adam", 1e-4, 10_000, steps=[3333]))
    assert _without_length(_len_arm("adam", 1e-4, 3, steps=[1])) != _without_length(
        _len_arm("adam", 1e-4, 1000, steps=[334]))
    zero = _len_arm("adam", 1e-4, 0, steps=[2])
    assert json.loads(_without_length(zero))["lr_step_fractions"] == [2.0]
    assert json.loads(_without_length(zero))["iterations_per_epoch"] == 0.0
    assert json.loads(_without_length(_len_arm("adam", 1e-4, 6, its_per_epoch=None)))["iterations_per_epoch"] is None
    assert "epochs" not in json.loads(_without_length(zero)) and "iterations" not in json.loads(_without_length(zero))
    shuffled = dict(arms["adam"], setting=dict(reversed(list(arms["adam"]["setting"].items()))))
    assert _without_length(shuffled) == _without_length(arms["adam"])  # canonical: the keys' order does not count


def _trend_arms_and_runs():
    """Three lines of Lookahead(Adam) - Adam at 6 and 30 epochs (4 seeds): LR 1e-4 (the reference's)
    shrinks, LR 1e-3 holds (its Lookahead arms have not learned, its Adam arms have), LR 1e-5 has
    not learned on either side. Listed LR 1e-3 before 1e-5, and 30 epochs before 6 for LR 1e-3."""
    arms, values = {}, {}
    base = [0.30 + 0.01 * s for s in range(4)]
    lines = ((1e-4, "", (6, 30), {6: (0.021, 0.019, 0.022, 0.020), 30: (0.005, 0.006, 0.004, 0.007)}, (True, True)),
             (1e-3, "_lr1e-3", (30, 6), {6: (0.011, 0.009, 0.0105, 0.0095), 30: (0.009, 0.011, 0.0095, 0.0105)},
              (False, True)),
             (1e-5, "_lr1e-5", (6, 30), {6: (0.03, 0.031, 0.029, 0.03), 30: (0.03, 0.029, 0.031, 0.03)},
              (False, False)))
    for lr, tag, lengths, gaps, (la_learned, base_learned) in lines:
        for epochs in lengths:
            suffix = tag + ("" if epochs == 30 else f"_e{epochs}")
            arms[f"adam{suffix}"] = _len_arm("adam", lr, epochs, base_learned)
            arms[f"la{suffix}"] = _len_arm("lookahead(adam)", lr, epochs, la_learned)
            values[f"adam{suffix}"] = dict(enumerate(base))
            values[f"la{suffix}"] = {s: base[s] + gaps[epochs][s] for s in range(4)}
    return arms, {a: _records(v) for a, v in values.items()}


def test_trend_lines_by_hand():
    from scipy.stats import ttest_rel

    from hrnet.study.analyse.trend import FEWER_LEARNED, SHRINKS, trend

    arms, by_arm = _trend_arms_and_runs()
    got = trend(by_arm, arms, "adam", 250)
    assert got["family_size"] == 6 and got["user_iterations"] == 250
    shrinks, low, holds = got["lines"]  # the reference's line first, then by optimizer and LR
    assert [(ln["lr"], ln["reference_line"]) for ln in got["lines"]] == [(1e-4, True), (1e-5, False), (1e-3, False)]
    assert (shrinks["optimizer"], shrinks["k"], shrinks["alpha"]) == ("adam", 5, 0.5)
    assert [(p["lookahead_arm"], p["base_arm"], p["epochs"], p["iterations"], p["lr_step"]) for p in holds["points"]] \
        == [("la_lr1e-3_e6", "adam_lr1e-3_e6", 6, 60, [4, 5]), ("la_lr1e-3", "adam_lr1e-3", 30, 300, [20, 25])]
    c = shrinks["change"]
    assert c["diffs"] == pytest.approx([-0.016, -0.013, -0.018, -0.013]) and c["verdict"] == stats.BETTER
    assert (c["shortest"], c["longest"], c["trend"], c["direction"]) == ("la_e6", "la", SHRINKS,
                                                                        "in Lookahead's favour")
    assert (c["gap_shortest"], c["gap_longest"]) == (pytest.approx(0.0205), pytest.approx(0.0055))
    assert c["p_value"] == pytest.approx(ttest_rel([0.005, 0.006, 0.004, 0.007], [0.021, 0.019, 0.022, 0.020]).pvalue)
    assert c["family_size"] == 3
    # LR 1e-3's Lookahead arms have not learned: no length where both learned, the change is not judged.
    assert holds["change"]["trend"] == FEWER_LEARNED and holds["change"]["direction"] is None
    # "has not learned" needs both sides: LR 1e-5's points, not LR 1e-3's (its Adam arms learned).
    assert [p["comparison"]["verdict"] for p in low["points"]] == [stats.NOT_LEARNED] * 2
    assert [p["comparison"]["verdict"] for p in holds["points"]] == [stats.WORSE] * 2
    assert [p["comparison"]["verdict"] for p in shrinks["points"]] == [stats.WORSE] * 2
    assert shrinks["measured_iterations"] == [60, 300]
    # The user's iterations inside the measured range (its ends included) or outside it.
    assert [trend(by_arm, arms, "adam", u)["lines"][0]["user_outside"] for u in (59, 60, 300, 301)] == [
        True, False, False, True]


def test_trend_line_edge_cases():
    from hrnet.study.analyse.trend import GROWS, REVERSES, _change_word, trend

    # The reference's line without a point at the reference's length: its Adam arms are length
    # variants of the reference. Iterations unknown: lengths ordered by epochs, nothing said about the user's.
    arms = {"adam": _len_arm("adam", 1e-4, 30, its_per_epoch=None)}
    for e in (12, 6):
        arms[f"adam_e{e}"] = dict(_len_arm("adam", 1e-4, e, its_per_epoch=None), length_variant_of="adam")
        arms[f"la_e{e}"] = _len_arm("lookahead(adam)", 1e-4, e, its_per_epoch=None)
    by_arm = {"adam": [], "adam_e12": _records({0: 0.3, 1: 0.31, 2: 0.3}), "adam_e6": _records({3: 0.3, 4: 0.3}),
              "la_e12": _records({0: 0.31, 1: 0.33, 2: 0.3}), "la_e6": _records({3: 0.31, 4: 0.32})}
    (line,) = trend(by_arm, arms, "adam", 19800)["lines"]
    assert line["reference_line"] is True and [p["epochs"] for p in line["points"]] == [6, 12]
    assert line["measured_iterations"] is None and line["user_outside"] is False
    c = line["change"]  # the two lengths share no seed
    assert c["seeds"] == [] and c["trend"] == stats.TOO_FEW and c["direction"] is None
    assert (c["gap_shortest"], c["gap_longest"]) == (None, None)
    other = {n: dict(e, length_variant_of="sgd") if n.startswith("adam_") else e for n, e in arms.items()}
    assert trend(by_arm, other, "adam", 19800)["lines"][0]["reference_line"] is False
    # A detectable change whose gap flips sign is worded as one; a larger one "grows".
    assert _change_word({"verdict": stats.WORSE}, 0.01, -0.01) == REVERSES
    assert _change_word({"verdict": stats.BETTER}, 0.01, 0.02) == GROWS
    assert _change_word({"verdict": stats.TOO_FEW}, 0.01, 0.02) == stats.TOO_FEW


# ---------------------------------------------------------------------------- rankings and sensitivity, by hand
def _final(family, lr, values, k=None, alpha=None):
    return {"family": family, "lr": lr, "k": k, "alpha": alpha,
            "final_NME": {"n": len(values), "per_seed": {str(s): v for s, v in values.items()}}}


def test_ranking_on_common_seeds_by_hand():
    from hrnet.study.analyse.rankings import final_nme_by_seed, ranking

    arms = {"a": _final("adam", 1e-4, {0: 0.30, 1: 0.30, 2: 0.10}), "none": _final("adam", 1e-3, {}),
            "b": _final("sgd", 1e-2, {0: 0.28, 1: 0.29})}
    assert final_nme_by_seed(arms["a"]) == {0: 0.30, 1: 0.30, 2: 0.10}
    got = ranking(arms)
    assert got == {"seeds": [0, 1], "order": [{"arm": "b", "mean": pytest.approx(0.285)},
                                              {"arm": "a", "mean": pytest.approx(0.30)}],
                   "arms": ["a", "b"], "without_finished_runs": ["none"]}


def _sensitivity_arms():
    la = "lookahead(adam)"
    return {"rms_a": _final("rmsprop", 1e-3, {0: 0.3}), "rms_b": _final("rmsprop", 1e-4, {1: 0.3}),  # no common seed
            "adam": _final("adam", 1e-4, {0: 0.30, 1: 0.32, 2: 0.31}),
            "adam_lr1e-3": _final("adam", 1e-3, {0: 0.25, 1: 0.27, 2: 0.26}),
            "adam_lr1e-5": _final("adam", 1e-5, {0: 0.40, 1: 0.42}),
            "adam_nolr": _final("adam", None, {0: 0.1}), "adam_unfinished": _final("adam", 3e-4, {}),
            "sgd": _final("sgd", 1e-2, {0: 0.5, 1: 0.5, 2: 0.5}),
            "la_k5": _final(la, 1e-4, {0: 0.29, 1: 0.31, 2: 0.30}, 5, 0.5),
            "la_k10": _final(la, 1e-4, {0: 0.27, 1: 0.29, 2: 0.31}, 10, 0.5),
            "la_k5_lr1e-3": _final(la, 1e-3, {0: 0.2, 1: 0.2, 2: 0.2}, 5, 0.5),
            "la_k5_a08_lr1e-2": _final(la, 1e-2, {0: 0.6}, 5, 0.8),
            "la_k10_a08_lr1e-2": _final(la, 1e-2, {0: 0.7}, 10, 0.8)}


def test_sensitivity_lines_and_ranges_by_hand():
    from hrnet.study.analyse.rankings import _line_label, sensitivity

    arms = _sensitivity_arms()
    assert _line_label(arms["adam"]) == "adam" and _line_label(arms["la_k5"]) == "lookahead(adam) k5 alpha0.5"
    got = sensitivity(arms)
    lines = got["lr_lines"]
    assert set(lines) == {"adam", "sgd", "lookahead(adam) k5 alpha0.5", "lookahead(adam) k10 alpha0.5",
                          "lookahead(adam) k5 alpha0.8", "lookahead(adam) k10 alpha0.8"}  # rmsprop: no common seed
    # Adam over the seeds its three LRs share (0, 1), by LR; a U-shape's range is max - min.
    assert [(p["arm"], p["lr"], p["n"]) for p in lines["adam"]] == [("adam_lr1e-5", 1e-5, 2), ("adam", 1e-4, 2),
                                                                     ("adam_lr1e-3", 1e-3, 2)]
    assert [p["mean"] for p in lines["adam"]] == pytest.approx([0.41, 0.31, 0.26])
    assert lines["adam"][0]["std"] == pytest.approx(np.std([0.40, 0.42], ddof=1)) and lines["adam"][0]["level"] == 0.95
    assert got["lr_line_seeds"]["adam"] == [0, 1] and "rmsprop" not in got["lr_line_seeds"]
    assert got["lr_spread"]["adam"] == {"lrs": [1e-5, 1e-4, 1e-3], "seeds": [0, 1], "min_mean": pytest.approx(0.26),
                                        "max_mean": pytest.approx(0.41), "range": pytest.approx(0.15)}
    assert set(got["lr_spread"]) == {"adam", "lookahead(adam) k5 alpha0.5"}  # two LRs or more
    assert got["lr_spread"]["lookahead(adam) k5 alpha0.5"]["range"] == pytest.approx(0.10)
    # The k x alpha grid at the LR with the most (k, alpha) pairs; a tie (1e-4, 1e-2: two each): the smaller LR.
    grid = got["k_alpha"]
    assert grid == {"lr": 1e-4, "k": [5, 10], "alpha": [0.5], "seeds": [0, 1, 2], "range": pytest.approx(0.01),
                    "cells": {"5,0.5": {"arm": "la_k5", "mean": pytest.approx(0.30), "std": pytest.approx(0.01),
                                        "n": 3},
                              "10,0.5": {"arm": "la_k10", "mean": pytest.approx(0.29), "std": pytest.approx(0.02),
                                         "n": 3}}}


def test_k_alpha_grid_needs_two_pairs_and_common_seeds():
    from hrnet.study.analyse.rankings import _k_alpha_grid

    arms = _sensitivity_arms()
    assert _k_alpha_grid({n: arms[n] for n in ("adam", "sgd")}) == {}
    assert _k_alpha_grid({n: arms[n] for n in ("la_k5", "la_k5_lr1e-3")}) == {}  # one (k, alpha) per LR
    la = "lookahead(adam)"
    apart = {"x": _final(la, 1e-4, {0: 0.3}, 5, 0.5), "y": _final(la, 1e-4, {1: 0.3}, 10, 0.5)}
    assert _k_alpha_grid(apart) == {}
    unfinished = dict(apart, y=_final(la, 1e-4, {}, 10, 0.5))
    assert _k_alpha_grid(unfinished) == {}  # y has no finished run: one pair left
    grid = _k_alpha_grid({"a": _final(la, 1e-3, {0: 0.3, 1: 0.34}, 5, 0.5),
                          "b": _final(la, 1e-3, {0: 0.2, 1: 0.2}, 5, 0.8)})
    assert (grid["lr"], grid["k"], grid["alpha"], grid["range"]) == (1e-3, [5], [0.5, 0.8], pytest.approx(0.12))


# ---------------------------------------------------------------------------- calibration sentences
def test_calibration_numbers_and_every_sentence():
    from hrnet.study.analyse.calibration import calibration, calibration_sentence

    floors = {"valid": {"box_centre": {"NME": 0.5}, "constant_layout": {"NME": 0.45}}}
    runs = [{"arm": "adam", "seed": s, "status": "finished", "final_NME": v, "iterations": its}
            for s, v, its in ((0, 0.34, 2790), (1, 0.36, 5580), (2, 0.35, None))]
    runs += [{"arm": "adam", "seed": 3, "status": "finished", "final_NME": None, "iterations": 99},
             {"arm": "sgd", "seed": 0, "status": "finished", "final_NME": 0.01, "iterations": 77}]
    cal = calibration("adam", runs, floors)
    assert cal == {"arm": "adam", "seeds": [0, 1, 2], "final_NME": cal["final_NME"], "iterations": [2790, 5580],
                   "box_centre_floor": 0.5, "constant_layout_floor": 0.45, "target_fraction": 0.7,
                   "target_NME": pytest.approx(0.35), "fraction_of_floor": pytest.approx(0.7), "reached": True}
    assert cal["final_NME"]["n"] == 3 and cal["final_NME"]["mean"] == pytest.approx(0.35)
    assert calibration("adam", runs[2:3], floors)["reached"] is True  # exactly 0.7 x: reached
    assert calibration_sentence(cal) == (
        "Calibration: the reference adam ends at a mean final NME of 0.3500 over 3 seeds after 2,790, 5,580 "
        "iterations, 0.70 x the box-centre floor (0.5000): at or below 0.7 x (0.3500), the models learn at this scale.")
    one = calibration("adam", [dict(runs[1], iterations=None)], floors)
    assert one["iterations"] == [] and one["reached"] is False
    assert calibration_sentence(one) == (
        "Calibration: the reference adam ends at a mean final NME of 0.3600 over 1 seed after an unknown number of "
        "iterations, 0.72 x the box-centre floor (0.5000): above 0.7 x (0.3500); the study does not reach 0.7 x at "
        "this scale (the closest scale used), so its comparisons are between models that learn less than the "
        "target regime asks.")
    none = calibration("adam", runs[3:], floors)
    assert (none["fraction_of_floor"], none["reached"], none["seeds"]) == (None, None, [])
    assert calibration_sentence(none) == ("Calibration: adam has no finished run yet; whether this scale reaches 0.7 x "
                                          "the box-centre floor (0.3500) is not known.")
    unknown = calibration("adam", runs, {"valid": {"constant_layout": {"NME": 0.45}}})
    assert (unknown["box_centre_floor"], unknown["target_NME"], unknown["reached"]) == (None, None, None)
    assert calibration_sentence(unknown) == ("Calibration: no box-centre floor for this validation set; whether adam "
                                             "learns is not judged.")
    assert calibration("adam", runs, {})["constant_layout_floor"] is None


# ---------------------------------------------------------------------------- floors, piece by piece
def _random_hands(seed=0, n=7, joints=3):
    """Non-square boxes, joints scattered around the centre, some unlabelled; the last joint never labelled."""
    rng = np.random.default_rng(seed)
    bbox = np.column_stack([rng.uniform(0, 50, n), rng.uniform(0, 50, n), rng.uniform(10, 40, n),
                            rng.uniform(10, 40, n)])
    kp = np.zeros((n, joints, 3))
    kp[..., 0] = (bbox[:, 0] + bbox[:, 2] / 2 - 0.5)[:, None] + rng.normal(0, 0.3, (n, joints)) * bbox[:, 2:3]
    kp[..., 1] = (bbox[:, 1] + bbox[:, 3] / 2 - 0.5)[:, None] + rng.normal(0, 0.3, (n, joints)) * bbox[:, 3:4]
    kp[..., 2] = 2
    kp[1, 0, 2] = kp[3, 1, 2] = 0
    kp[5, :2, 2] = 0
    kp[:, -1, 2] = 0
    kp[::2, 1, 2] = 1  # labelled but occluded (COCO v = 1; every CSV joint): labelled all the same
    kp[kp[..., 2] == 0, :2] = 1e4  # unlabelled joints' coordinates must not matter
    return kp, bbox


def test_box_geometry():
    from hrnet.study.analyse.floors import box_centres, box_coordinates, layout_predictions

    bbox = np.array([[0, 0, 10, 10], [10, 10, 20, 8]], dtype=np.float32)
    np.testing.assert_array_equal(box_centres(bbox), [[4.5, 4.5], [19.5, 13.5]])  # x + w / 2 - 0.5
    assert box_centres(np.zeros((0, 4))).shape == (0, 2)
    kp = np.array([[[9.5, 4.5, 2], [4.5, 2.0, 2]], [[19.5, 17.5, 2], [9.5, 13.5, 0]]])
    q = box_coordinates(kp, bbox)
    np.testing.assert_allclose(q, [[[0.5, 0.0], [0.0, -0.25]], [[0.0, 0.5], [-0.5, 0.0]]])
    for i in range(2):  # placing an image's own box coordinates in its box gives its keypoints back
        np.testing.assert_allclose(layout_predictions(q[i], bbox)[i], kp[i, :, :2])
    np.testing.assert_allclose(layout_predictions(np.array([[0.5, -0.5]]), bbox), [[[9.5, -0.5]], [[29.5, 9.5]]])
    assert np.isfinite(box_coordinates(kp[:1], np.array([[0.0, 0.0, 0.0, 0.0]]))).all()  # a degenerate box
    np.testing.assert_allclose(box_coordinates(np.array([[[1.0, 0.0, 2]]]), np.array([[0, 0, 0.5, 0.5]])),
                               [[[2.5, 0.5]]])  # a box under a pixel: still divided by its own size


def test_constant_layout_is_the_nme_optimum():
    from scipy.optimize import minimize

    from hrnet.study.analyse.floors import box_coordinates, fit_constant_layout

    kp, bbox = _random_hands()
    layout = fit_constant_layout(kp, bbox)
    q, lab = box_coordinates(kp, bbox), kp[..., 2] > 0
    c = lab / np.maximum(lab.sum(axis=1, keepdims=True), 1)  # 1 / the image's labelled joints (image 5: none)
    d = bbox[:, 2:4] / bbox[:, 2:4].max(axis=1, keepdims=True)  # NME divides by max(w, h)
    for j in range(2):
        def nme_part(p):
            return np.sum(c[:, j] * np.sqrt((((p - q[:, j]) * d) ** 2).sum(-1)))

        ref = minimize(nme_part, np.zeros(2), method="Nelder-Mead",
                       options={"xatol": 1e-12, "fatol": 1e-15, "maxiter": 20000})
        np.testing.assert_allclose(layout[j], ref.x, atol=1e-6)
        # The start (no iteration): the weighted mean with weights c_ij d_i^2.
        w = c[:, j, None] * d ** 2
        np.testing.assert_allclose(fit_constant_layout(kp, bbox, iterations=0)[j],
                                   (w * q[:, j]).sum(0) / w.sum(0), rtol=1e-12)
    assert np.isnan(layout[2]).all()  # a joint never labelled
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ... without a division warning in the report's log
        fit_constant_layout(kp, bbox)
    # Box coordinates do not depend on the image's scale: the same hands 100 x smaller (sub-pixel boxes;
    # pixel-centre coordinates shrink about the top-left edge) have the same layout.
    small = kp.copy()
    small[..., :2] = (kp[..., :2] + 0.5) / 100 - 0.5
    np.testing.assert_allclose(fit_constant_layout(small, bbox / 100)[:2], layout[:2], atol=1e-9)
    # float32 annotations are fitted in float64, as their float64 copies are.
    np.testing.assert_array_equal(fit_constant_layout(kp.astype(np.float32), bbox.astype(np.float32)),
                                  fit_constant_layout(kp.astype(np.float32).astype(np.float64),
                                                      bbox.astype(np.float32).astype(np.float64)))
    # One hand: every joint's layout is its own box coordinates, from the first step on.
    one = box_coordinates(kp[:1], bbox[:1])[0]
    for its in (0, 200):
        np.testing.assert_allclose(fit_constant_layout(kp[:1], bbox[:1], iterations=its)[:2], one[:2], rtol=1e-12)


def test_distinct_hands_and_learned():
    from hrnet.study.analyse.floors import distinct_hands, has_learned

    kp = np.zeros((4, 2, 3))
    bbox = np.tile([0.0, 0.0, 10.0, 10.0], (4, 1))
    kp[1, 0, 0] = 0.004  # the same hand to 0.01 px
    kp[2, 0, 0] = 0.01
    bbox[3, 2] = 10.01
    assert distinct_hands(kp, bbox) == 3 and distinct_hands(kp[:2], bbox[:2]) == 1
    assert has_learned(0.4, 0.5) is True and has_learned(0.41, 0.5) is False  # 0.8 x the floor, inclusive
    assert [has_learned(*a) for a in ((None, 0.5), (0.3, None), (float("nan"), 0.5), (0.3, float("inf")))] == [None] * 4


def test_read_annotations_coco_csv_limits_and_bad_samples(tmp_path):
    import warnings

    from hrnet.study.analyse.floors import read_annotations

    good = ((0, 0, 10, 10), _all_at(4.5, 4.5))
    bad = ((0, 0, 10, 10), np.full((J, 3), np.nan))
    _coco(str(tmp_path / "a.json"), [good, bad, ((5, 5, 20, 20), _all_at(9.0, 9.0))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a bad sample is skipped silently
        k, b = read_annotations(str(tmp_path / "a.json"), str(tmp_path), J)
    assert k.shape == (2, J, 3) and b.tolist() == [[0, 0, 10, 10], [5, 5, 20, 20]]
    assert read_annotations(str(tmp_path / "a.json"), str(tmp_path), J, limit=1)[1].tolist() == [[0, 0, 10, 10]]
    assert read_annotations(str(tmp_path / "a.json"), str(tmp_path), J, limit=0)[1].shape == (2, 4)
    _coco(str(tmp_path / "empty.json"), [bad])
    k, b = read_annotations(str(tmp_path / "empty.json"), str(tmp_path), J)
    assert (k.shape, b.shape) == ((0, J, 3), (0, 4))
    row = ["img.jpg", "0.1", "9.5", "9.5"] + ["9.5"] * (2 * J)  # a 20 px square around (9.5, 9.5)
    (tmp_path / "a.csv").write_text(",".join(row) + "\n")
    k, b = read_annotations(str(tmp_path / "a.csv"), str(tmp_path), J)
    assert b.tolist() == [[0.0, 0.0, 20.0, 20.0]] and k[0, 0].tolist() == [9.5, 9.5, 1.0]  # CSV: labelled = 1


def test_set_floors_against_compute_metrics():
    from hrnet.evaluation.metrics import compute_metrics
    from hrnet.study.analyse.floors import box_centres, fit_constant_layout, layout_predictions, set_floors

    kp, bbox = _random_hands(1, n=6, joints=J)
    layout = fit_constant_layout(kp, bbox)  # the last joint is NaN: predicted at the box centre
    thresholds = {"FAILURE_THRESHOLD": 0.1, "PCK_THRESHOLD": 0.1, "AUC_MAX_PX": 30.0}
    got = set_floors(kp, bbox, layout, thresholds)
    centre = np.repeat(box_centres(bbox)[:, None], J, axis=1)
    m = compute_metrics(centre, kp, bbox, thresholds)
    assert got["box_centre"] == {"NME": m["NME"], "PCK@0.1": m["PCK@0.1"]}
    m = compute_metrics(layout_predictions(np.nan_to_num(layout), bbox), kp, bbox, thresholds)
    assert got["constant_layout"] == {"NME": m["NME"], "PCK@0.1": m["PCK@0.1"]}
    assert got["constant_layout"]["NME"] < got["box_centre"]["NME"]
    assert (got["num_images"], got["num_hands"]) == (6, 6)


def test_study_floors_cache_and_real_sets(tmp_path):
    import shutil

    from configs import load_config
    from hrnet.study.analyse.floors import (FLOORS_JSON, _dataset_files, _identity, _read_cache, fit_constant_layout,
                                    read_annotations, set_floors, study_floors)

    _data(str(tmp_path / "data"))
    opts = ["DATASET.FORMAT", "coco", "DATASET.ROOT", str(tmp_path / "data")]
    cfg = load_config(os.path.join(CFG, "hand_adam.yaml"), opts)
    assert _dataset_files(cfg) == (str(tmp_path / "data"), str(tmp_path / "data" / "train.json"),
                                   str(tmp_path / "data" / "test.json"))
    synthetic = load_config(os.path.join(CFG, "hand_adam.yaml"), ["DATASET.FORMAT", "synthetic", "DATASET.ROOT", "rel"])
    assert _dataset_files(synthetic)[0] == str(tmp_path / "rel")  # relative to the working directory
    coco_rel = load_config(os.path.join(CFG, "hand_adam.yaml"), ["DATASET.FORMAT", "coco", "DATASET.ROOT", "rel"])
    assert _dataset_files(coco_rel)[0] == "rel"  # as the data set reads it
    ident = _identity(cfg)
    assert ident == {"format": "coco", "root": str(tmp_path / "data"), "trainset": cfg.DATASET.TRAINSET,
                     "testset": cfg.DATASET.TESTSET, "synthetic": [int(cfg.DATASET.SYNTHETIC.NUM_TRAIN),
                                                                   int(cfg.DATASET.SYNTHETIC.NUM_TEST),
                                                                   int(cfg.DATASET.SYNTHETIC.SEED)],
                     "max_samples": [0, 0], "num_joints": 21, "thresholds": [0.1, 0.2, float(cfg.TEST.AUC_MAX_PX)]}
    # Two real-photo sets (the hand-made validation hands, split in two).
    for name, hands in (("one", [((0, 0, 10, 10), _all_at(7.5, 8.5))]),
                        ("two", [((10, 10, 20, 10), _all_at(19.5, 18.5)), ((0, 0, 10, 10), _all_at(4.5, 4.5))])):
        os.makedirs(tmp_path / name)
        _coco(str(tmp_path / name / "ann.json"), hands)
    sets = {"one": (str(tmp_path / "one"), "ann.json"), "two": (str(tmp_path / "two"), "ann.json")}
    out = str(tmp_path / "out")
    fl = study_floors(cfg, sets, out)
    assert fl["available"] is True and fl["source"] == "the annotation files"
    layout = fit_constant_layout(*read_annotations(str(tmp_path / "data" / "train.json"), "", J))
    np.testing.assert_allclose(fl["layout"], np.round(layout, 6))
    per = {n: read_annotations(str(tmp_path / n / "ann.json"), "", J) for n in sets}
    for n in sets:
        assert fl["real"][n] == set_floors(*per[n], layout, cfg)
    pooled = [np.concatenate([per[n][i] for n in sets]) for i in (0, 1)]
    assert fl["real"]["all"] == set_floors(*pooled, layout, cfg) and fl["real"]["all"]["num_images"] == 3
    cached = json.loads((tmp_path / "out" / FLOORS_JSON).read_text())
    assert cached["identity"] == json.loads(json.dumps(ident)) and _read_cache(out, ident) == cached
    assert cached["floors"]["real"]["one"] == fl["real"]["one"]
    # A set whose file is gone comes from floors.json, and so does the pooled "all" (not recomputed from part).
    (tmp_path / "two" / "ann.json").unlink()
    again = study_floors(cfg, sets, out)
    assert again["real"] == fl["real"] and again["source"] == "the annotation files"
    os.remove(tmp_path / "out" / FLOORS_JSON)
    study_floors(cfg, {"one": sets["one"]}, out)  # a cache holding set "one" only
    partial = study_floors(cfg, sets, out)
    assert set(partial["real"]) == {"one", "all"} and partial["real"]["all"] == fl["real"]["one"]
    # Without the annotation files: the cache of the same data set, else no floors (a one-line note).
    shutil.rmtree(tmp_path / "data")
    back = study_floors(cfg, {}, out)
    assert back["valid"] == fl["valid"]
    assert back["source"] == "floors.json (the annotation files are not on this machine)"
    other = load_config(os.path.join(CFG, "hand_adam.yaml"), opts + ["DATASET.MAX_TEST_SAMPLES", "2"])
    assert study_floors(other, {}, out) == {
        "available": False, "note": f"no floors: {os.path.relpath(str(tmp_path / 'data' / 'test.json'))} is missing "
                                    f"and there is no floors.json for this data set in the output folder"}
    for bad in ("[1, 2]", "{oops", '{"identity": 3}'):
        (tmp_path / "out" / FLOORS_JSON).write_text(bad)
        assert _read_cache(out, ident) == {}
    assert _read_cache(str(tmp_path / "nowhere"), ident) == {}



def test_study_floors_follow_the_configs_limits_and_thresholds(tmp_path):
    import shutil

    from configs import load_config
    from hrnet.study.analyse.floors import FLOORS_JSON, fit_constant_layout, read_annotations, set_floors, study_floors

    _data(str(tmp_path / "data"))
    # Training hands whose NME-optimal layout (a Fermat point) has many decimals; the last one is beyond
    # MAX_TRAIN_SAMPLES.
    train = [((0, 0, 10, 10), _all_at(4.5 + 10 * u, 4.5 + 10 * v)) for u, v in ((-0.2, 0.0), (0.25, 0.05),
                                                                                 (0.0, 0.33), (0.9, 0.9))]
    _coco(str(tmp_path / "data" / "train.json"), train)
    opts = ["DATASET.FORMAT", "coco", "DATASET.ROOT", str(tmp_path / "data"), "DATASET.MAX_TRAIN_SAMPLES", "3",
            "DATASET.MAX_TEST_SAMPLES", "2", "TEST.PCK_THRESHOLD", "0.1"]
    cfg = load_config(os.path.join(CFG, "hand_adam.yaml"), opts)
    for name in ("one", "two"):
        os.makedirs(tmp_path / name)
        _coco(str(tmp_path / name / "ann.json"), [((0, 0, 10, 10), _all_at(7.5, 8.5))])
    sets = {n: (str(tmp_path / n), "ann.json") for n in ("one", "two")}
    out = str(tmp_path / "out")
    fl = study_floors(cfg, sets, out)
    k, b = read_annotations(str(tmp_path / "data" / "train.json"), "", J)
    layout = fit_constant_layout(k[:3], b[:3])
    assert fl["layout"] == np.round(layout, 6).tolist() and fl["layout"][0] != np.round(layout, 7).tolist()[0]
    valid = read_annotations(str(tmp_path / "data" / "test.json"), "", J)
    assert fl["valid"] == set_floors(valid[0][:2], valid[1][:2], layout, cfg) and fl["valid"]["num_images"] == 2
    assert set(fl["valid"]["box_centre"]) == {"NME", "PCK@0.1"} and set(fl["real"]["one"]["box_centre"]) == \
        {"NME", "PCK@0.1"} and set(fl["real"]["all"]["constant_layout"]) == {"NME", "PCK@0.1"}
    # The first real set gone: the second is still computed from its file.
    os.remove(tmp_path / "out" / FLOORS_JSON)
    (tmp_path / "one" / "ann.json").unlink()
    again = study_floors(cfg, sets, out)
    assert set(again["real"]) == {"two"} and again["real"]["two"] == fl["real"]["two"]  # no cache: "one" left out
    # Only the validation file gone: the floors come from floors.json, nothing is recomputed.
    (tmp_path / "data" / "test.json").unlink()
    back = study_floors(cfg, sets, out)
    assert back["source"].startswith("floors.json") and back["real"] == again["real"]
    shutil.rmtree(tmp_path / "out")
    assert study_floors(cfg, sets, out)["available"] is False


def test_lookahead_verdict_line_when_slow_and_fast_always_coincide():
    from hrnet.study.analyse.verdict import _lookahead
    comp = {"mean_diff": 0.0, "ci_low": 0.0, "ci_high": 0.0, "p_adjusted": 1.0, "n": 3, "verdict": stats.NO_DIFFERENCE}
    la = {"logged": True, "epoch_mean_slow_vs_fast": comp, "best_slow_vs_fast": comp,
          "epochs_where_they_differ": {"0": 0, "1": 0, "2": 0}}
    line, = _lookahead({"lookahead": {"la": la}})
    # k divides the iterations per epoch: every validation follows a sync, nothing to compare.
    assert line.startswith("la: slow and fast weights coincide at every validation") and "3 seeds" in line
    la["epochs_where_they_differ"]["1"] = 2  # one seed where they differ: the comparison is made
    line, = _lookahead({"lookahead": {"la": la}})
    assert line.startswith("la: slow - fast weights' valid NME averaged") and "not detectably different" in line
    la["epochs_where_they_differ"] = {}  # no seed logged both: neither line claims anything about seeds
    assert _lookahead({"lookahead": {"la": la}})[0].startswith("la: slow - fast")


def test_trend_figure_draws_lines_with_two_measured_lengths(tmp_path, monkeypatch):
    import matplotlib.axes
    from hrnet.study.render import figures

    def point(its, diffs, verdict):
        m = float(np.mean(diffs))
        return {"iterations": its, "comparison": {"n": len(diffs), "diffs": diffs, "mean_diff": m, "ci_low": m - 0.01,
                                                  "ci_high": m + 0.01, "verdict": verdict}}

    line = {"optimizer": "adam", "lr": 1e-4, "k": 5, "alpha": 0.5, "change": {"trend": "holds"},
            "points": [point(750, [0.02, 0.021, 0.019], stats.NOT_LEARNED), point(3750, [0.018, 0.017, 0.02], "worse")]}
    report = {"trend": {"lines": [line], "user_iterations": 19800}}
    notes = []
    real_annotate = matplotlib.axes.Axes.annotate
    monkeypatch.setattr(matplotlib.axes.Axes, "annotate",
                        lambda self, text, *a, **k: notes.append(text) or real_annotate(self, text, *a, **k))
    assert figures.plot_trend(report, str(tmp_path / "trend.png")) and (tmp_path / "trend.png").stat().st_size > 0
    assert notes == ["neither arm\nhas learned"]  # only the point whose two arms stayed near the floor
    line["points"] = line["points"][:1]  # one measured length: no trend to draw
    assert not figures.plot_trend(report, str(tmp_path / "none.png")) and not (tmp_path / "none.png").exists()
