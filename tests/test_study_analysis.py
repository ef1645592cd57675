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

from conftest import ROOT

from hrnet.study import stats

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
    from hrnet.study.floors import fit_constant_layout, read_annotations, study_floors

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
    from hrnet.study.floors import study_floors

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
    from hrnet.study.spec import load_study

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
    from hrnet.study.analysis import analyse, collect

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
    from hrnet.study.analysis import analyse, collect

    shuffled = analyse(study, list(reversed(collect(study, str(out)))), str(out))
    assert shuffled["comparisons"] == rep["comparisons"] and shuffled["same_lr"] == rep["same_lr"]


def test_a_run_finished_before_end_epoch_was_raised_is_not_finished(tmp_path):
    study = _study(tmp_path, [("adam", "hand_adam.yaml", {})], seeds=(0,), end_epoch=4)
    out = tmp_path / "out"
    _run(out, "adam", 0, 0.2, ADAM, epochs=3)  # "finished" at 3 epochs; the study now asks for 4
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
    from hrnet.study.report import BEST_LABEL as BEST, render_markdown

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
    assert c["p_adjusted"] > c["p_value"]
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
    from hrnet.study.real_photos import cache_key, evaluate_real_hands, real_hand_sets

    sets = real_hand_sets(real_hands)
    run = tmp_path / "run"
    run.mkdir()
    cfg = load_config(os.path.join(CFG, "hand_adam.yaml"))
    (run / "config.yaml").write_text(cfg.dump())
    model = run / "checkpoint_latest.pth"
    model.write_bytes(b"weights v1")
    from hrnet.study.floors import file_sha256

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
    from hrnet.study.spec import load_study

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
    from hrnet.study.spec import StudyError, load_study, output_dir, plan_runs

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
    from hrnet.study.comparisons import lookahead_pairs
    from hrnet.study.trend import length_variants

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
    from hrnet.study.report import render_markdown, write_report

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
    from hrnet.study.trend import trend

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
    from hrnet.study.calibration import calibration, calibration_sentence

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
    from hrnet.study.report import render_markdown

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
    for d in (out / "runs").iterdir():  # what a repository keeps besides metrics.json
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
