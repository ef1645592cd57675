"""The study's answer (issue 28): Holm families fixed by the plan, the equivalence test (TOST)
against scipy, the effective-step pairs, the effective time, the trend between lengths where both
arms learned, every ranking step backed by a paired comparison, tuned against tuned, the machines
of compared runs, per-seed priorities in the plan, the figures' panels, and the committed CPU
study's numbers as the report now shows them."""
from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest
from scipy import stats as sps

from conftest import ROOT, write_planned_configs
from test_study_analysis import ADAM, CFG, LA, _arm, _records, _run, _study

from hrnet.study.analyse import stats

STUDY_CPU = os.path.join(ROOT, "experiments", "studies", "optimizers_cpu.yaml")
RECORDS = os.path.join(ROOT, "docs", "study_cpu")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


# ---------------------------------------------------------------------------- Holm with a planned m
def test_holm_counts_the_planned_members_not_the_finished_ones():
    assert stats.holm([0.01, math.nan]) == [pytest.approx(0.01), pytest.approx(math.nan, nan_ok=True)]
    got = stats.holm([0.01, math.nan], m=2)
    assert got[0] == pytest.approx(0.02) and math.isnan(got[1])
    assert stats.holm([0.02, 0.01], m=4) == [pytest.approx(0.06), pytest.approx(0.04)]  # 3 x 0.02 after 4 x 0.01
    assert stats.holm([0.02, 0.01], m=1) == stats.holm([0.02, 0.01])  # never below the tests drawn


def test_a_member_finishing_can_only_lower_the_others_adjusted_p():
    rng = np.random.default_rng(0)
    for _ in range(200):
        p = list(rng.uniform(0, 0.2, size=5))
        final = stats.holm(p, m=5)
        for missing in range(5):
            prov = stats.holm([math.nan if i == missing else v for i, v in enumerate(p)], m=5)
            assert all(final[i] <= prov[i] + 1e-12 for i in range(5) if i != missing)


def test_adjust_family_uses_the_planned_size():
    a = stats.paired_comparison({0: 0.1, 1: 0.12, 2: 0.11}, {0: 0.2, 1: 0.21, 2: 0.215})
    none = stats.paired_comparison({}, {})
    got = stats.adjust_family({"a": a, "b": none}, m=2)
    assert got["a"].p_adjusted == pytest.approx(min(1.0, 2 * a.p_value)) and got["a"].family_size == 2


# ---------------------------------------------------------------------------- TOST against scipy
D = {0: 0.004, 1: -0.002, 2: 0.001, 3: 0.003, 4: -0.001}


def test_equivalence_test_against_scipy():
    margin = 0.006
    arm = {s: 0.2 + d for s, d in D.items()}
    ref = {s: 0.2 for s in D}
    e = stats.equivalence_test(arm, ref, margin)
    d = np.array([arm[s] - ref[s] for s in sorted(D)])
    p_lo = sps.ttest_1samp(d, -margin, alternative="greater").pvalue
    p_hi = sps.ttest_1samp(d, margin, alternative="less").pvalue
    assert (e.p_lower, e.p_upper) == (pytest.approx(p_lo), pytest.approx(p_hi))
    assert e.p_value == pytest.approx(max(p_lo, p_hi)) and e.margin == margin
    lo, hi = sps.t.interval(0.90, len(d) - 1, loc=d.mean(), scale=sps.sem(d))
    assert (e.ci_low, e.ci_high) == (pytest.approx(lo), pytest.approx(hi))
    # Equivalent exactly when the 90% interval lies inside +-margin.
    for m in (0.002, 0.004, 0.006, 0.01):
        t = stats.equivalence_test(arm, ref, m)
        assert (t.verdict == stats.EQUIVALENT) == (-m < t.ci_low and t.ci_high < m), m
    assert stats.equivalence_test(arm, ref, 0.002).verdict == stats.NOT_SHOWN_EQUIVALENT
    # A large, certain difference is not equivalent; two pairs are too few.
    far = stats.equivalence_test({s: v + 0.05 for s, v in arm.items()}, ref, margin)
    assert far.p_value > 0.5 and far.verdict == stats.NOT_SHOWN_EQUIVALENT
    assert stats.equivalence_test({0: 0.2, 1: 0.2}, {0: 0.2, 1: 0.2001}, margin).verdict == stats.TOO_FEW


def test_equivalence_family_is_holm_adjusted_over_the_planned_pairs():
    ref = {s: 0.2 for s in D}
    a = stats.equivalence_test({s: 0.2 + d for s, d in D.items()}, ref, 0.006)
    got = stats.adjust_equivalence({"a": a, "b": stats.equivalence_test({}, {}, 0.006)}, m=2)
    assert got["a"].p_adjusted == pytest.approx(min(1.0, 2 * a.p_value)) and got["a"].family_size == 2
    assert got["a"].to_dict()["n"] == 5 and got["b"].verdict == stats.TOO_FEW


# ---------------------------------------------------------------------------- families in a report
def _family_study(tmp_path):
    """The user's four runs (no overrides) and two added arms (an LR grid point, an effective-step arm)."""
    arms = [("adam", "hand_adam.yaml", {}), ("la", "hand_lookahead_adam.yaml", {}),
            ("rms", "hand_rmsprop.yaml", {}), ("sgd", "hand_sgd_lr0.01.yaml", {}),
            ("adam_lr1e-3", "hand_adam.yaml", {"TRAIN.LR": 0.001}),
            ("la_lr2e-4", "hand_lookahead_adam.yaml", {"TRAIN.LR": 0.0002})]
    return _study(tmp_path, arms, extra="real_hands: false")


RMS = dict(ADAM, optimizer="rmsprop", inner="rmsprop")
SGD = dict(ADAM, optimizer="sgd", inner="sgd", lr=0.01)


def _family_runs(out, added=True):
    for s in (0, 1, 2):
        _run(out, "adam", s, 0.20 + 0.003 * s, ADAM)
        _run(out, "la", s, 0.22 + 0.002 * s + 0.001 * s * s, LA)
        _run(out, "rms", s, 0.19 + 0.004 * s - 0.0005 * s * s, RMS)
        _run(out, "sgd", s, 0.25 + 0.001 * s, SGD)
        if added:
            _run(out, "adam_lr1e-3", s, 0.23 + 0.002 * s + 0.0007 * s * s, dict(ADAM, lr=0.001))
            _run(out, "la_lr2e-4", s, 0.202 + 0.003 * s + 0.0001 * s * s, dict(LA, lr=0.0002))


def _analyse(study, out):
    from hrnet.study.analyse.analysis import analyse, collect

    write_planned_configs(study, out)  # each hand-made run with its config.yaml, as the trainer leaves it
    return analyse(study, collect(study, str(out), evaluate_real=False), str(out))


def test_an_added_arm_finishing_never_moves_the_users_verdicts(tmp_path):
    study = _family_study(tmp_path)
    before_out, after_out = tmp_path / "before", tmp_path / "after"
    _family_runs(str(before_out), added=False)
    _family_runs(str(after_out), added=True)
    before, after = _analyse(study, before_out), _analyse(study, after_out)
    for arm in ("la", "rms", "sgd"):
        b, a = before["comparisons"][arm]["final_NME"], after["comparisons"][arm]["final_NME"]
        assert a["family"] == "the user's arms" and a["family_size"] == 3
        assert a["p_adjusted"] == b["p_adjusted"] and a["verdict"] == b["verdict"]
    grid = after["comparisons"]["adam_lr1e-3"]["final_NME"]
    assert grid["family"] == "the study's added arms" and grid["family_size"] == 2
    assert before["comparisons"]["adam_lr1e-3"]["final_NME"]["provisional"] is True
    assert grid["provisional"] is False and after["comparisons"]["la"]["final_NME"]["provisional"] is False
    rows = {r["name"]: r for r in after["families"]}
    assert rows["the user's arms vs adam"]["m"] == 3 and rows["the study's added arms vs adam"]["measured"] == 2
    # Lookahead against the user's other optimizers: its own family (rms, sgd), la - X.
    vs = after["lookahead_vs_user"]
    assert vs["lookahead_arm"] == "la" and set(vs["comparisons"]) == {"rms", "sgd"}
    r = vs["comparisons"]["rms"]
    assert r["diffs"] == pytest.approx([0.22 + 0.002 * s + 0.001 * s * s - (0.19 + 0.004 * s - 0.0005 * s * s)
                                        for s in range(3)])
    assert r["family_size"] == 2 and r["verdict"] == stats.WORSE
    assert any(s.startswith("la against the user's other optimizers") and "la worse than: rms" in s
               for s in after["verdict"])


def test_every_ranking_step_names_its_paired_comparison(tmp_path):
    from hrnet.study.render.report import render_markdown

    study = _family_study(tmp_path)
    out = tmp_path / "out"
    _family_runs(str(out))
    rep = _analyse(study, out)
    rk = rep["user_ranking"]
    assert [o["arm"] for o in rk["order"]] == ["rms", "adam", "la", "sgd"] and rk["seeds"] == [0, 1, 2]
    steps = {(s["better"], s["worse"]): s for s in rk["steps"]}
    assert steps[("rms", "adam")]["comparison"] is rep["comparisons"]["rms"]["final_NME"]
    assert steps[("adam", "la")]["family"] == "the user's arms vs adam"
    la_sgd = steps[("la", "sgd")]
    assert la_sgd["comparison"] is rep["lookahead_vs_user"]["comparisons"]["sgd"] and la_sgd["arm"] == "la"
    line = next(s for s in rep["verdict"] if s.startswith("Ranking of the user's optimizers"))
    assert "la < sgd: la - sgd" in line and "no paired comparison" not in line
    md = render_markdown(rep, [])
    assert "## la against the user's other optimizers" in md and "## Families of comparisons" in md


# ---------------------------------------------------------------------------- effective step, tuned
def _lr_arms():
    arms = {"adam": _arm("adam", 1e-4), "adam_lr5e-5": _arm("adam", 5e-5), "adam_lr1e-3": _arm("adam", 1e-3),
            "la": _arm("lookahead(adam)", 1e-4, 5, 0.5), "la_lr2e-4": _arm("lookahead(adam)", 2e-4, 5, 0.5),
            "la_k10": _arm("lookahead(adam)", 1e-4, 10, 0.5),  # the k x alpha family's, not an effective-step pair
            "la_b16": _arm("lookahead(adam)", 2e-4, 5, 0.5, batch=16)}  # no Adam at batch 16
    for name, e in arms.items():
        e["seeds"] = [0, 1, 2, 3]
        e["overrides"] = [] if name in ("adam", "la") else ["TRAIN.LR", "x"]
    return arms


def _final_entries(arms, values):
    for name, v in values.items():
        arms[name]["final_NME"] = {"n": len(v), "per_seed": {str(s): x for s, x in v.items()}}


def test_effective_step_pairs_and_their_equivalence():
    from hrnet.study.analyse.answer import effective_step, effective_step_pairs

    arms = _lr_arms()
    assert effective_step_pairs(arms) == [("la", "adam_lr5e-5"), ("la_lr2e-4", "adam")]
    base = {0: 0.20, 1: 0.21, 2: 0.205, 3: 0.198}
    by_arm = {a: _records(base) for a in arms}
    by_arm["la"] = _records({s: v + 0.02 + 0.001 * s for s, v in base.items()})  # the key gap: +0.0215
    by_arm["la_lr2e-4"] = _records({s: v + d for (s, v), d in zip(base.items(), (0.001, -0.001, 0.0015, 0.0))})
    by_arm["adam_lr5e-5"] = _records({s: v + 0.04 + 0.001 * s * s for s, v in base.items()})
    got = effective_step(by_arm, arms, "adam", "la")
    assert got["key_gap"] == pytest.approx(0.0215) and got["margin"] == pytest.approx(0.5 * 0.0215)
    rows = {p["key"]: p for p in got["pairs"]}
    step = rows["la_lr2e-4 - adam"]
    assert step["difference"]["family_size"] == 2 and step["difference"]["verdict"] == stats.NO_DIFFERENCE
    e = step["equivalence"]
    d = np.array([0.001, -0.001, 0.0015, 0.0])
    p = max(sps.ttest_1samp(d, -got["margin"], alternative="greater").pvalue,
            sps.ttest_1samp(d, got["margin"], alternative="less").pvalue)
    assert e["p_value"] == pytest.approx(p) and e["verdict"] == stats.EQUIVALENT and e["family_size"] == 2
    other = rows["la - adam_lr5e-5"]  # la at 1e-4 about 0.02 better than Adam at 5e-5: beyond the margin
    assert other["difference"]["mean_diff"] == pytest.approx(np.mean([0.02 + 0.001 * s - 0.04 - 0.001 * s * s
                                                                      for s in range(4)]))
    assert other["difference"]["verdict"] == stats.BETTER
    assert other["equivalence"]["verdict"] == stats.NOT_SHOWN_EQUIVALENT
    assert effective_step(by_arm, arms, "adam", None)["margin"] is None  # no key pair: no margin, no TOST


def test_tuned_compares_each_line_at_its_best_lr_on_common_seeds():
    from hrnet.study.analyse.answer import SELECTED, tuned

    arms = _lr_arms()
    del arms["la_b16"], arms["la_k10"]
    values = {"adam": {0: 0.20, 1: 0.21, 2: 0.2}, "adam_lr5e-5": {0: 0.22, 1: 0.23, 2: 0.22},
              "adam_lr1e-3": {0: 0.19, 1: 0.2, 2: 0.17, 3: 0.1},  # seed 3: no other Adam LR has it
              "la": {0: 0.21, 1: 0.22, 2: 0.215}, "la_lr2e-4": {0: 0.195, 1: 0.2, 2: 0.19}}
    _final_entries(arms, values)
    for e in arms.values():
        e["seeds"] = [0, 1, 2]
    by_arm = {a: _records(v) for a, v in values.items()}
    got = tuned(by_arm, arms)
    assert got["label"] == SELECTED == "selected on the same validation set it reports (optimistic for both)"
    adam = got["lines"]["adam"]
    assert (adam["best_arm"], adam["seeds"]) == ("adam_lr1e-3", [0, 1, 2])
    assert adam["best_mean"] == pytest.approx(np.mean([0.19, 0.2, 0.17]))  # not 0.165 with seed 3
    la = got["lines"]["lookahead(adam) k5 alpha0.5"]
    assert la["best_arm"] == "la_lr2e-4" and la["planned_lrs"] == la["measured_lrs"] == [1e-4, 2e-4]
    assert adam["best_at_edge"] == la["best_at_edge"] == "highest"  # neither grid brackets its optimum
    (pair,) = got["pairs"]
    assert (pair["lookahead_arm"], pair["base_arm"], pair["lookahead_lr"]) == ("la_lr2e-4", "adam_lr1e-3", 2e-4)
    assert pair["comparison"]["diffs"] == pytest.approx([0.005, 0.0, 0.02])
    assert pair["comparison"]["provisional"] is False  # every planned LR measured on every planned seed
    arms["la_lr3e-4"] = dict(_arm("lookahead(adam)", 3e-4, 5, 0.5), seeds=[0, 1, 2], overrides=["TRAIN.LR", "x"],
                             final_NME={"n": 0, "per_seed": {}})  # planned, not yet run
    again = tuned(dict(by_arm, **{"la_lr3e-4": []}), arms)
    assert again["lines"]["lookahead(adam) k5 alpha0.5"]["planned_lrs"] == [1e-4, 2e-4, 3e-4]
    assert again["pairs"][0]["comparison"]["provisional"] is True
    assert again["lines"]["lookahead(adam) k5 alpha0.5"]["best_at_edge"] is None  # 2e-4 inside [1e-4, 3e-4]
    # A Lookahead line of one LR (a k x alpha point) has no grid to tune: no pair of its own.
    arms["la_k10"] = dict(_arm("lookahead(adam)", 1e-4, 10, 0.5), seeds=[0, 1, 2], overrides=["x", "y"],
                          final_NME={"n": 3, "per_seed": {"0": 0.1, "1": 0.1, "2": 0.1}})
    got = tuned(dict(by_arm, **{"la_lr3e-4": [], "la_k10": _records({0: 0.1, 1: 0.1, 2: 0.1})}), arms)
    assert got["lines"]["lookahead(adam) k10 alpha0.5"]["best_arm"] == "la_k10"
    assert got["lines"]["lookahead(adam) k10 alpha0.5"]["best_at_edge"] is None  # one LR: no grid
    assert [p["lookahead_arm"] for p in got["pairs"]] == ["la_lr2e-4"]


def test_a_best_lr_at_either_end_of_its_grid_is_flagged():
    from hrnet.study.analyse.answer import _grid_edge

    grid = [5e-5, 1e-4, 3e-4, 1e-3]
    assert [_grid_edge(lr, grid) for lr in grid] == ["lowest", None, None, "highest"]
    assert _grid_edge(1e-4, [1e-4]) is None and _grid_edge(1e-4, [1e-4, 1e-3]) == "lowest"


# ---------------------------------------------------------------------------- effective time
def test_crossing_epoch_interpolates_between_epochs():
    from hrnet.study.analyse.effective_time import crossing_epoch

    assert crossing_epoch([0, 1, 2], [1.0, 0.8, 0.4], 0.6) == pytest.approx(1.5)
    assert crossing_epoch([0, 1, 2], [1.0, 0.8, 0.4], 0.8) == pytest.approx(1.0)
    assert crossing_epoch([0, 1, 2], [1.0, None, 0.4], 0.7) == pytest.approx(1.0)  # a missing epoch is skipped
    assert crossing_epoch([0, 1, 2], [1.0, 0.8, 0.4], 0.3) is None


def _curve_run(seed, values, arm):
    return {"seed": seed, "arm": arm, "status": "finished", "curves": {"epoch": list(range(len(values))),
                                                                        "NME": list(values)}}


def test_effective_time_of_a_lookahead_at_half_pace():
    from hrnet.study.analyse.effective_time import effective_time, seed_ratio

    adam = [1.0 - 0.04 * e for e in range(31)]
    half = [1.0 - 0.02 * e for e in range(31)]
    r = seed_ratio(_curve_run(0, half, "la"), _curve_run(0, adam, "adam"), 20)
    assert r["tau"] == pytest.approx([0.5 * t for t in range(1, 21)]) and r["ratio"] == pytest.approx(0.5)
    assert r["pace"] == pytest.approx(0.5) and r["censored"] == 0
    # A Lookahead below anything Adam reaches before its LR drop: censored, left out of the ratio.
    fast = [1.0 - 0.06 * e for e in range(31)]
    r = seed_ratio(_curve_run(0, fast, "la"), _curve_run(0, adam, "adam"), 20)
    assert r["censored"] == 7 and r["used"] == 13 and r["ratio"] == pytest.approx(1.5)  # t >= 14: below 0.2
    # Over seeds, paired by seed; the prediction alpha x lr / lr' (0.5 here).
    arms = {"adam": _arm("adam", 1e-4), "la": _arm("lookahead(adam)", 1e-4, 5, 0.5)}
    for e in arms.values():
        e["setting"]["TRAIN.LR_STEP"] = [20, 25]
    by_arm = {"adam": [_curve_run(s, [v + 0.001 * s for v in adam], "adam") for s in range(3)],
              "la": [_curve_run(s, [1.0 - (0.02 + 0.001 * s) * e for e in range(31)], "la") for s in range(3)]}
    (p,) = effective_time(by_arm, arms, [("la", "adam")])["pairs"]
    assert p["window"] == [1, 20] and p["predicted_ratio"] == 0.5 and p["ratio"]["n"] == 3
    assert p["per_seed"]["1"]["ratio"] == pytest.approx(np.mean([(0.021 * t + 0.001) / 0.04 / t for t in range(1, 21)]))
    assert p["ratio_minus_predicted"]["mean_diff"] == pytest.approx(p["ratio"]["mean"] - 0.5)
    assert p["pace"]["mean"] == pytest.approx(np.mean([0.5, 0.525, 0.55]))


# ---------------------------------------------------------------------------- the trend's change
def _len(family, epochs, learned):
    from test_study_analysis import _len_arm

    return _len_arm(family, 1e-4, epochs, learned)


def test_the_change_is_measured_between_lengths_where_both_learned():
    from hrnet.study.analyse.trend import FEWER_LEARNED, trend

    base = {s: 0.30 + 0.01 * s for s in range(4)}
    gaps = {6: (0.05, 0.06, 0.04, 0.05), 12: (0.02, 0.021, 0.019, 0.02), 30: (0.02, 0.0205, 0.0195, 0.02)}
    arms, by_arm = {}, {}
    for epochs, la_learned in ((6, False), (12, True), (30, True)):
        sfx = "" if epochs == 30 else f"_e{epochs}"
        arms[f"adam{sfx}"], arms[f"la{sfx}"] = _len("adam", epochs, True), _len("lookahead(adam)", epochs, la_learned)
        by_arm[f"adam{sfx}"] = _records(base)
        by_arm[f"la{sfx}"] = _records({s: base[s] + gaps[epochs][s] for s in range(4)})
    (line,) = trend(by_arm, arms, "adam", 19800)["lines"]
    c = line["change"]
    assert (c["shortest"], c["longest"]) == ("la_e12", "la")  # not la_e6: its Lookahead has not learned
    assert c["diffs"] == pytest.approx([0.0, -0.0005, 0.0005, 0.0]) and c["trend"] == "holds (no detectable change)"
    assert [p["both_learned"] for p in line["points"]] == [False, True, True]
    arms["la_e12"]["learned"] = False
    (line,) = trend(by_arm, arms, "adam", 19800)["lines"]
    assert line["change"]["trend"] == FEWER_LEARNED and line["change"]["shortest"] is None


def test_change_words_not_measurable_and_sign_change():
    from hrnet.study.analyse.trend import HOLDS, NOT_MEASURABLE, REVERSES, SHRINKS, _change_word

    wide = {"verdict": stats.NO_DIFFERENCE, "ci_low": -0.015, "ci_high": 0.012}
    assert _change_word(wide, 0.02, 0.018) == NOT_MEASURABLE  # the interval (0.027) is wider than the gap
    assert _change_word(dict(wide, ci_low=-0.005, ci_high=0.004), 0.02, 0.018) == HOLDS
    assert _change_word({"verdict": stats.BETTER}, 0.02, -0.005) == REVERSES
    assert _change_word({"verdict": stats.BETTER}, 0.02, 0.005) == SHRINKS


# ---------------------------------------------------------------------------- machines
def test_comparisons_pairing_runs_of_different_numerics_say_so(tmp_path):
    """Machines are told apart by what they computed (the untrained NME here, no fingerprint
    recorded), not by the CPU's name: other flags with the same numerics pair fine; the same name
    with another untrained NME crosses machines (tests/test_study_machines.py: the rules in detail)."""
    study = _study(tmp_path, [("adam", "hand_adam.yaml", {}), ("la", "hand_lookahead_adam.yaml", {})],
                   extra="real_hands: false")
    out = tmp_path / "out"
    amx = {"cpu": "Intel Xeon", "cpu_flags": ["avx2", "amx_tile"], "threads": 1, "device": "cpu"}
    plain = dict(amx, cpu_flags=["avx2"])  # other flags, the same numerics: one machine as far as runs tell
    for s in (0, 1, 2):
        _run(out, "adam", s, 0.2 + 0.01 * s, ADAM, machine=amx)
        _run(out, "la", s, 0.21 + 0.012 * s, LA, machine=plain if s == 2 else amx)
    rep = _analyse(study, out)
    c = rep["comparisons"]["la"]["final_NME"]
    assert c["machines"] == ["Intel Xeon (amx_tile, avx2)", "Intel Xeon (avx2)"] and c["mixed_machines"] is False
    assert c["numerics"]["same"] == 3 and c["numerics"]["basis"] == "epoch-0 NME" and rep["machines"]["mixed"] == []
    assert any("Every comparison pairs runs of the same numerics (by epoch-0 NME)" in s for s in rep["verdict"])
    final = 0.21 + 0.012 * 2  # the same CPU name, another untrained NME: another machine's arithmetic
    _run(out, "la", 2, final, LA, machine=amx, nme_curve=[0.7001, 0.5, final - 0.02, final])
    rep = _analyse(study, out)
    c = rep["comparisons"]["la"]["final_NME"]
    assert c["mixed_machines"] is True and c["numerics"]["crossing_seeds"] == [2]
    assert "comparisons.la.final_NME" in rep["machines"]["mixed"]
    assert any("pair runs from machines of different numerics" in s for s in rep["verdict"])


# ---------------------------------------------------------------------------- the plan
def test_seed_priority_runs_some_seeds_of_an_arm_later(tmp_path):
    from hrnet.study.plan.spec import StudyError, load_study, plan_runs

    path = tmp_path / "s.yaml"
    path.write_text(f"seeds: [0, 1]\narms:\n"
                    f"  - {{name: a, config: {CFG}/hand_adam.yaml, seeds: [0, 1, 2, 3],\n"
                    "      seed_priority: {2: 5, 3: 5}}\n"
                    f"  - {{name: b, config: {CFG}/hand_adam.yaml, priority: 1}}\n")
    runs = plan_runs(load_study(str(path)), "out")
    assert [r.name for r in runs] == ["a_seed0", "a_seed1", "b_seed0", "b_seed1", "a_seed2", "a_seed3"]
    for bad in ("seed_priority: {7: 1}", "seed_priority: {2: high}", "seed_priority: [2, 5]"):
        path.write_text(f"arms:\n  - {{name: a, config: {CFG}/hand_adam.yaml, seeds: [0, 1, 2], {bad}}}\n")
        with pytest.raises(StudyError, match="arm a: seed_priority must map seeds of the arm") as exc:
            load_study(str(path))
        assert "s.yaml" in str(exc.value) and "\n" not in str(exc.value)


def test_the_cpu_study_plan_order():
    from hrnet.study.plan.spec import load_study, plan_runs

    names = [r.name for r in plan_runs(load_study(STUDY_CPU, real_hands=""), RECORDS)]
    assert len(names) == 82
    # priorities 0-2 (the 34 runs of the first sessions) come first; then, in the order:
    first = {f"{a}_seed{s}" for s in range(5) for a in ("adam", "lookahead_adam")}
    first |= {f"{a}_seed{s}" for s in range(3) for a in ("adam_e6", "lookahead_adam_e6", "adam_e12",
                                                         "lookahead_adam_e12", "sgd_lr0.01", "sgd_lr0.001",
                                                         "rmsprop", "sgd_lr0.0001")}
    assert set(names[:34]) == first
    assert set(os.listdir(os.path.join(RECORDS, "runs"))) <= set(names)  # every committed run is planned
    new = names[34:]
    assert new[:13] == [f"{a}_seed{s}" for s in range(5) for a in ("adam_rerun", "lookahead_adam_lr2e-4", "adam_lr5e-5")
                        if a != "adam_rerun" or s < 3]
    assert new[13:25] == [f"{a}_seed{s}" for s in range(3) for a in ("adam_lr3e-4", "lookahead_adam_lr3e-4",
                                                                       "adam_lr1e-3", "lookahead_adam_lr1e-3")]
    assert new[25:34] == [f"lookahead_adam_{ka}_seed{s}" for s in range(3)
                          for ka in ("k5_a0.8", "k10_a0.5", "k10_a0.8")]
    assert new[34:40] == [f"{a}_seed{s}" for s in range(3) for a in ("adam_e60", "lookahead_adam_e60")]
    assert new[40:] == [f"{a}_seed{s}" for s in (3, 4) for a in ("adam_e6", "lookahead_adam_e6", "adam_e12",
                                                                   "lookahead_adam_e12")]


# ---------------------------------------------------------------------------- figures
def test_gap_series_and_the_lookahead_figure(tmp_path, monkeypatch):
    from hrnet.study.render import figures
    from hrnet.study.render.answer_figures import gap_series

    runs = [dict(_curve_run(s, [0.7, 0.4 + 0.01 * s, 0.3], "adam")) for s in range(3)]
    runs += [dict(_curve_run(s, [0.7, 0.45 + 0.01 * s + 0.002 * s * s, 0.31], "la")) for s in range(3)]
    runs.append(dict(_curve_run(3, [0.7, 0.1, 0.1], "la")))  # no Adam seed 3: not paired
    report = {"runs": runs}
    ep, diffs, summ = gap_series(report, "la", "adam")
    assert ep.tolist() == [1, 2] and diffs[:, 0] == pytest.approx([0.05, 0.052, 0.058])
    assert summ[1].mean == pytest.approx(0.01) and summ[0].n == 3
    assert gap_series(report, "la", "nothing") is None
    # Slow and fast weights equal at every validation by construction: that panel is not drawn.
    same = {"la": {"logged": True, "epochs_where_they_differ": {"0": 0, "1": 0}}}
    panels = []
    monkeypatch.setattr(figures, "_slow_fast_panel", lambda ax, rep, arms: panels.append(list(arms)))
    assert not figures.plot_lookahead({"lookahead": same, "effective_time": {"pairs": []}}, str(tmp_path / "a.png"))
    differ = dict(same, lb={"logged": True, "epochs_where_they_differ": {"0": 2}})
    assert figures.plot_lookahead({"lookahead": differ, "effective_time": {"pairs": []}}, str(tmp_path / "b.png"))
    assert panels == [["lb"]]


# ---------------------------------------------------------------------------- the committed CPU study
def test_the_committed_cpu_study_answers(tmp_path):
    """--report-only's analysis on a copy of the committed records: the numbers the report now shows."""
    from hrnet.study.analyse.analysis import analyse, collect
    from hrnet.study.plan.spec import load_study
    from hrnet.study.render.report import render_markdown

    out = tmp_path / "study_cpu"
    shutil.copytree(RECORDS, out, ignore=shutil.ignore_patterns("*.png", "report.*"))
    study = load_study(STUDY_CPU, real_hands="")
    rep = analyse(study, collect(study, str(out), evaluate_real=False), str(out))
    comps = rep["comparisons"]
    assert {a for a, c in comps.items() if c["final_NME"]["family"] == "the user's arms"} == {
        "lookahead_adam", "rmsprop", "sgd_lr0.01", "sgd_lr0.001", "sgd_lr0.0001"}
    rms = comps["rmsprop"]["final_NME"]
    assert rms["family_size"] == 5 and rms["p_adjusted"] == pytest.approx(0.041, abs=5e-4) and not rms["provisional"]
    assert comps["adam_lr5e-5"]["final_NME"]["family_size"] == 9
    vs = rep["lookahead_vs_user"]["comparisons"]["rmsprop"]
    assert vs["mean_diff"] == pytest.approx(0.0231, abs=5e-5) and vs["verdict"] == stats.WORSE
    key = next(p for p in rep["effective_time"]["pairs"] if (p["lookahead_arm"], p["base_arm"]) ==
               ("lookahead_adam", "adam"))
    assert key["ratio"]["n"] == 5 and key["ratio"]["mean"] == pytest.approx(0.672, abs=1e-3)
    assert (key["ratio"]["ci_low"], key["ratio"]["ci_high"]) == (pytest.approx(0.631, abs=1e-3),
                                                                 pytest.approx(0.712, abs=1e-3))
    assert key["pace"]["mean"] == pytest.approx(0.475, abs=1e-3)
    assert [p["key"] for p in rep["effective_step"]["pairs"]] == ["lookahead_adam - adam_lr5e-5",
                                                                  "lookahead_adam_lr2e-4 - adam"]
    assert rep["effective_step"]["margin"] == pytest.approx(0.5 * 0.0183, abs=1e-4)
    line = rep["trend"]["lines"][0]
    assert [p["both_learned"] for p in line["points"]] == [False, False, True, True]
    assert (line["change"]["shortest"], line["change"]["longest"]) == ("lookahead_adam", "lookahead_adam_e60")
    # the first 34 runs share one machine's numerics; this round's runs (another machine, same CPU
    # name: epoch-0 NME 0.68088 against 0.68020) cross machines in every comparison they enter
    mixed = rep["machines"]["mixed"]
    assert "comparisons.lookahead_adam_lr2e-4.final_NME" in mixed and "effective_step.pairs[1].difference" in mixed
    assert not [p for p in mixed if p.startswith(("comparisons.lookahead_adam.", "comparisons.rmsprop.",
                                                  "comparisons.sgd", "lookahead_vs_user", "trend"))]
    assert len(rep["machines"]["machines"]) == 1
    md = render_markdown(rep, [])
    assert "## Effective time" in md and "## Tuned against tuned" in md and "provisional" in md
    json.dumps(rep, default=str)  # JSON-able as write_report writes it
