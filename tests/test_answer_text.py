"""The study's sentences in exact words (hrnet/study/analyse/words.py, answer_text.py): each built from
a hand-made report dict, so a changed word, number format, order or condition shows (fast: no analysis)."""
from __future__ import annotations

import math
from typing import Any, Dict

import numpy as np
import pytest

from hrnet.study.analyse import answer_text as at
from hrnet.study.analyse import stats
from hrnet.study.analyse.trend import FEWER_LEARNED, NOT_MEASURABLE
from hrnet.study.analyse.words import comp_text, fmt, fmt_p, grouped

NAN = float("nan")


def _c(mean: float = -0.01234, lo: float = -0.02, hi: float = -0.005, p: float = 0.0123, n: int = 5,
       verdict: str = stats.BETTER, **kw: Any) -> Dict[str, Any]:
    """A comparison dict as the report holds it."""
    return dict(mean_diff=mean, ci_low=lo, ci_high=hi, p_adjusted=p, p_value=p, n=n, verdict=verdict, **kw)


# ---------------------------------------------------------------------------- words.py
@pytest.mark.parametrize("value,spec,text", [
    (None, ".4f", "-"), (NAN, ".4f", "-"), (math.inf, ".4f", "-"), (-math.inf, "+.2f", "-"),
    (0.123456, ".4f", "0.1235"), (0.5, "+.2f", "+0.50"), (12345, ",d", "12,345"), (0, ".4f", "0.0000")])
def test_fmt(value, spec, text):
    assert fmt(value, spec) == text


def test_fmt_default_spec_and_p_values():
    assert fmt(0.123456) == "0.1235"
    assert [fmt_p(p) for p in (0.0009999, 0.001, 0.0123, 1.0, None, NAN, 0.0)] == \
        ["<0.001", "0.001", "0.012", "1.000", "-", "-", "<0.001"]


def test_comp_text_and_grouped_in_the_order_of_the_verdicts():
    assert comp_text("x", _c()) == "x (-0.0123, 95% CI [-0.0200, -0.0050], Holm p 0.012, n=5)"
    assert comp_text("y", _c(lo=NAN, hi=None, p=NAN, n=1)) == "y (-0.0123, 95% CI [-, -], Holm p -, n=1)"
    comps = {"nl": _c(verdict=stats.NOT_LEARNED), "few": _c(n=2, verdict=stats.TOO_FEW),
             "none": _c(n=0, verdict=stats.TOO_FEW), "same": _c(verdict=stats.NO_DIFFERENCE),
             "w": _c(mean=0.02, verdict=stats.WORSE), "b1": _c(), "b2": _c(p=0.0001)}
    got = grouped(comps, "adam")
    assert got == ("better than adam: b1 (-0.0123, 95% CI [-0.0200, -0.0050], Holm p 0.012, n=5); "
                   "b2 (-0.0123, 95% CI [-0.0200, -0.0050], Holm p <0.001, n=5). "
                   "worse than adam: w (+0.0200, 95% CI [-0.0200, -0.0050], Holm p 0.012, n=5). "
                   "no detectable difference from adam at this n: same (-0.0123, 95% CI [-0.0200, -0.0050], Holm p "
                   "0.012, n=5). too few seeds for a verdict (< 3 pairs): few (-0.0123, 95% CI [-0.0200, -0.0050], "
                   "Holm p 0.012, n=2). both sides have not learned (no verdict): nl (-0.0123, 95% CI [-0.0200, "
                   "-0.0050], Holm p 0.012, n=5)")
    assert grouped({"none": _c(n=0)}, "adam") == ""


# ---------------------------------------------------------------------------- answer_text.py
def test_interval_tag_and_by_verdict():
    assert at.interval(_c()) == "-0.0123 [-0.0200, -0.0050], Holm p 0.012, n=5"
    assert at.interval(_c(mean=None, p=0.0002), "p") == "- [-0.0200, -0.0050], p <0.001, n=5"
    assert at._tag({"provisional": True}) == " (provisional: its family has members not yet measured)"
    assert at._tag({"provisional": False}) == at._tag({}) == ""
    comps = {"a": _c(verdict=stats.WORSE), "z": _c(n=0), "b": _c(verdict="odd"), "c": _c(verdict=stats.WORSE)}
    assert at._by_verdict(comps, {stats.WORSE: "worse"}) == (
        "worse: a (-0.0123 [-0.0200, -0.0050], Holm p 0.012, n=5); c (-0.0123 [-0.0200, -0.0050], Holm p 0.012, "
        "n=5). odd: b (-0.0123 [-0.0200, -0.0050], Holm p 0.012, n=5)")


def _ranking_report() -> Dict[str, Any]:
    return {"user_ranking": {"seeds": [0, 2, 3], "order": [
        {"arm": "la", "mean": 0.2, "learned": True}, {"arm": "adam", "mean": 0.21, "learned": None},
        {"arm": "sgd", "mean": 0.4, "learned": False}], "steps": [
        {"better": "la", "worse": "adam", "arm": "la", "other": "adam", "family": "F1",
         "comparison": _c(provisional=True)},
        {"better": "adam", "worse": "sgd", "arm": "sgd", "other": "adam", "family": "F2",
         "comparison": _c(mean=0.19, verdict=stats.NO_DIFFERENCE)}]}}


def test_ranking_sentence_in_words():
    (s,) = at.ranking_sentence(_ranking_report())
    assert s == ("Ranking of the user's optimizers by mean final valid NME on the seeds they all share (0, 2, 3; lower "
                 "is better): la (0.2000) < adam (0.2100) < sgd (0.4000, not learned). Each step by its own paired "
                 "comparison: la < adam: la - adam -0.0123 [-0.0200, -0.0050], Holm p 0.012, n=5, better (F1; the "
                 "order holds, provisional); adam < sgd: sgd - adam +0.1900 [-0.0200, -0.0050], Holm p 0.012, n=5, "
                 "no detectable difference at this n (F2; the order is not shown at this n).")
    rep = _ranking_report()
    rep["user_ranking"]["steps"] = [{"better": "la", "worse": "adam", "comparison": None},
                                    {"better": "adam", "worse": "sgd", "arm": "sgd", "other": "adam", "family": "F",
                                     "comparison": _c(verdict=stats.WORSE)}]
    (s,) = at.ranking_sentence(rep)
    assert "comparison: la < adam: no paired comparison, the order is by means only; adam < sgd: sgd - adam " \
           "-0.0123 [-0.0200, -0.0050], Holm p 0.012, n=5, worse (F; the order holds)." in s
    assert at.ranking_sentence({}) == at.ranking_sentence({"user_ranking": {"order": []}}) == []


def test_family_sentences_one_per_family():
    rep = {"study": {"reference": "adam"}, "comparisons": {
        "la": {"final_NME": _c(family="users", family_size=3)},
        "rms": {"final_NME": _c(n=2, verdict=stats.TOO_FEW, family="users", family_size=3, provisional=True)},
        "sgd": {"final_NME": _c(n=1, verdict=stats.TOO_FEW, family="users", family_size=3)},
        "x": {"final_NME": _c(n=0, verdict=stats.TOO_FEW, family_size=2)}}}
    assert at.family_sentences(rep) == [
        "Final NME against adam, users, paired by seed, Holm over the 3 planned (2 measured; provisional): better "
        "than adam: la (-0.0123 [-0.0200, -0.0050], Holm p 0.012, n=5). too few seeds for a verdict (< 3 pairs): rms "
        "(-0.0123 [-0.0200, -0.0050], Holm p 0.012, n=2); sgd (-0.0123 [-0.0200, -0.0050], Holm p 0.012, n=1).",
        "Final NME against adam, all, paired by seed, Holm over the 2 planned (0 measured): no member measured yet."]
    words = {stats.NO_DIFFERENCE: "no detectable difference from adam at this n", stats.WORSE: "worse than adam",
             stats.NOT_LEARNED: "both sides have not learned (no verdict)"}
    for verdict, text in words.items():
        rep = {"study": {"reference": "adam"}, "comparisons": {"a": {"final_NME": _c(verdict=verdict, family_size=1)}}}
        assert f"(1 measured): {text}: a (" in at.family_sentences(rep)[0]


def test_vs_user_in_words():
    comps = {"rms": _c(mean=0.0231, verdict=stats.WORSE, family_size=2, provisional=True),
             "sgd": _c(n=0, verdict=stats.TOO_FEW, family_size=2)}
    (s,) = at._vs_user({"lookahead_vs_user": {"lookahead_arm": "la", "comparisons": comps}})
    assert s == ("la against the user's other optimizers (la - X, final NME, paired by seed, Holm over 2): la worse "
                 "than: rms (+0.0231 [-0.0200, -0.0050], Holm p 0.012, n=5) (provisional: its family has members not "
                 "yet measured).")
    (s,) = at._vs_user({"lookahead_vs_user": {"lookahead_arm": "la", "comparisons": {"sgd": comps["sgd"]}}})
    assert s.endswith("Holm over 2): no member measured yet.")
    for verdict, text in ((stats.BETTER, "la better than"), (stats.NO_DIFFERENCE,
                                                             "no detectable difference between la and"),
                          (stats.TOO_FEW, "too few seeds"), (stats.NOT_LEARNED, "both have not learned")):
        got = at._vs_user({"lookahead_vs_user": {"lookahead_arm": "la",
                                                 "comparisons": {"x": _c(verdict=verdict, family_size=1)}}})
        assert f"Holm over 1): {text}: x (" in got[0]
    assert at._vs_user({}) == at._vs_user({"lookahead_vs_user": {"comparisons": {}}}) == []


def test_effective_step_in_words():
    eq = dict(_c(lo=-0.004, hi=0.003, p=0.0004), verdict=stats.EQUIVALENT)
    es = {"key_gap": 0.0183, "margin": 0.00915, "margin_fraction": 0.5, "pairs": [
        {"key": "la - adam_lr5e-5", "difference": _c(verdict=stats.NO_DIFFERENCE, provisional=True),
         "equivalence": eq},
        {"key": "la2 - adam", "difference": _c(n=2, verdict=stats.TOO_FEW, provisional=False), "equivalence": None},
        {"key": "la3 - adam", "difference": _c(n=0), "equivalence": None}]}
    (s,) = at._effective_step({"effective_step": es})
    assert s == ("Effective step, the hypothesis Lookahead(X, alpha, lr) ~ X(alpha x lr) (Lookahead(X) at lr against X "
                 "at alpha x lr, final NME paired by seed; difference and equivalence each Holm over 3); margin "
                 "+-0.0092 = 0.5 x the key pair's gap (+0.0183): a pair within it says the smaller step explains most "
                 "of that gap: la - adam_lr5e-5: -0.0123 [-0.0200, -0.0050], Holm p 0.012, n=5, no detectable "
                 "difference at this n; 90% CI [-0.0040, +0.0030], TOST Holm p <0.001: equivalent within the margin, "
                 "provisional; la2 - adam: -0.0123 [-0.0200, -0.0050], Holm p 0.012, n=2, too few seeds; la3 - adam: "
                 "not measured yet.")
    (s,) = at._effective_step({"effective_step": dict(es, margin=None, key_gap=None)})
    assert "Holm over 3); no margin yet (the key pair has no gap): la - adam_lr5e-5: " in s
    assert at._effective_step({}) == at._effective_step({"effective_step": {"pairs": []}}) == []


@pytest.mark.parametrize("mean,p,text", [
    (0.2, 0.01, "above the predicted 0.5 (difference +0.20 [-0.02, -0.01], p 0.010)"),
    (-0.2, 0.0001, "below the predicted 0.5 (difference -0.20 [-0.02, -0.01], p <0.001)"),
    (0.0, 0.01, "below the predicted 0.5 (difference +0.00 [-0.02, -0.01], p 0.010)"),
    (0.2, 0.05, "not distinguishable from the predicted 0.5 (difference +0.20 [-0.02, -0.01], p 0.050)"),
    (0.2, NAN, "not distinguishable from the predicted 0.5 (difference +0.20 [-0.02, -0.01], p -)")])
def test_versus_the_prediction(mean, p, text):
    assert at._versus({"mean_diff": mean, "ci_low": -0.02, "ci_high": -0.01, "p_value": p}, 0.5) == text


def _et_pair(la: str, n_pace: int) -> Dict[str, Any]:
    diff = {"mean_diff": -0.1, "ci_low": -0.2, "ci_high": 0.0, "p_value": 0.03}
    return {"lookahead_arm": la, "base_arm": "adam", "window": [1, 20], "pace_window": [10, 20],
            "predicted_ratio": 0.5, "ratio": {"n": 5, "mean": 0.672, "ci_low": 0.631, "ci_high": 0.712},
            "ratio_minus_predicted": diff, "pace": {"n": n_pace, "mean": 0.475, "ci_low": 0.4, "ci_high": NAN},
            "pace_minus_predicted": dict(diff, p_value=0.5)}


def test_effective_time_in_words():
    rep = {"effective_time": {"pairs": [_et_pair("la", 3), _et_pair("la_e60", 3), _et_pair("la2", 0),
                                        dict(_et_pair("la3", 3), ratio={"n": 0})]},
           "arms": {"la_e60": {"length_variant_of": "la"}}}
    (s,) = at._effective_time(rep)
    assert s == ("Effective time, before the first LR drop (tau(t): the epoch at which X reaches what Lookahead(X) "
                 "reached at epoch t; below 1, Lookahead progresses more slowly; predicted alpha x LR(Lookahead) / "
                 "LR(X) if progress depends on lr x iterations only): adam reaches la's epoch-t NME at 0.67 x t on "
                 "average over epochs 1..20 (95% CI [0.63, 0.71], 5 seeds), below the predicted 0.5 (difference "
                 "-0.10 [-0.20, +0.00], p 0.030); past the first epochs' steep drop (epochs 10..20) one more la epoch "
                 "is worth 0.47 adam epochs (95% CI [0.40, -]), not distinguishable from the predicted 0.5 "
                 "(difference -0.10 [-0.20, +0.00], p 0.500); adam reaches la2's epoch-t NME at 0.67 x t on average "
                 "over epochs 1..20 (95% CI [0.63, 0.71], 5 seeds), below the predicted 0.5 (difference -0.10 "
                 "[-0.20, +0.00], p 0.030).")
    assert at._effective_time({"effective_time": {"pairs": [_et_pair("la_e60", 3)]},
                               "arms": {"la_e60": {"length_variant_of": "la"}}}) == []
    assert at._effective_time({}) == []


def test_k_alpha_and_tuned_in_words():
    ka = {"key": "la", "k": 5, "alpha": 0.5, "lr": 0.0001, "pairs": [
        {"k": 10, "alpha": 0.8, "comparison": _c(verdict=stats.NO_DIFFERENCE)},
        {"k": 5, "alpha": 0.8, "comparison": _c(n=0)}]}
    assert at._k_alpha({"k_alpha_vs_key": ka}) == [
        "Other (k, alpha) at LR 0.0001 against la (k 5, alpha 0.5), Holm over 2: no detectable difference from la: "
        "k 10 alpha 0.8 (-0.0123 [-0.0200, -0.0050], Holm p 0.012, n=5)."]
    ka["pairs"] = ka["pairs"][1:]
    assert at._k_alpha({"k_alpha_vs_key": ka}) == [
        "Other (k, alpha) at LR 0.0001 against la (k 5, alpha 0.5), Holm over 1: not measured yet."]
    for verdict, text in ((stats.BETTER, "better than la"), (stats.WORSE, "worse than la"),
                          (stats.TOO_FEW, "too few seeds"), (stats.NOT_LEARNED, "both have not learned")):
        ka["pairs"] = [{"k": 10, "alpha": 0.8, "comparison": _c(verdict=verdict)}]
        assert f"Holm over 1: {text}: k 10 alpha 0.8 (" in at._k_alpha({"k_alpha_vs_key": ka})[0]
    assert at._k_alpha({}) == at._k_alpha({"k_alpha_vs_key": {"pairs": []}}) == []
    tu = {"label": "SEL", "lines": {"L": {"best_lr": 0.0002, "measured_lrs": [1, 2], "planned_lrs": [1, 2, 3]},
                                    "B": {"best_lr": 0.001, "measured_lrs": [1], "planned_lrs": [1, 2]}},
          "pairs": [{"lookahead_line": "L", "base_line": "B", "lookahead_arm": "la2", "base_arm": "adam3",
                     "comparison": _c(verdict=stats.WORSE, provisional=True)}]}
    assert at._tuned({"tuned": tu}) == [
        "Tuned against tuned, each optimizer at the best LR of its grid by final NME, SEL: L at 0.0002 (2 of 3 LRs "
        "measured); B at 0.001 (1 of 2 LRs measured); la2 - adam3 -0.0123 [-0.0200, -0.0050], p 0.012, n=5, worse "
        "(provisional until every LR of both grids is measured)."]
    tu["pairs"][0]["comparison"]["provisional"] = False
    assert at._tuned({"tuned": tu})[0].endswith("p 0.012, n=5, worse.")
    tu["lines"]["B"]["best_at_edge"], tu["lines"]["L"]["best_at_edge"] = "highest", None
    assert at._tuned({"tuned": tu})[0].endswith(
        "p 0.012, n=5, worse; B's best is the highest LR of its grid, so its optimum may lie beyond the grid.")
    tu["lines"]["L"]["best_at_edge"] = "lowest"
    assert at._tuned({"tuned": tu})[0].endswith(
        "worse; L's best is the lowest LR of its grid, so its optimum may lie beyond the grid; B's best is the "
        "highest LR of its grid, so its optimum may lie beyond the grid.")
    assert at._tuned({}) == []


def test_families_and_machines_sentences():
    rows = [{"name": "A", "m": 5, "measured": 5, "provisional": False},
            {"name": "B", "m": 9, "measured": 2, "provisional": True},
            {"name": "C", "m": 2, "measured": 0, "provisional": True}]
    head = ("Holm families are fixed by the plan: m is the number of planned members and a member not yet measured "
            "counts as p = 1, so a run finishing in one family never moves another family's verdicts, and in its own "
            "it can only lower the others' adjusted p-values; ")
    assert at._families({"families": rows}) == [
        head + "A (m 5, 5 measured); B (m 9, 2 measured); C (m 2, 0 measured). Provisional (members not yet "
        "measured): B, C."]
    assert at._families({"families": rows[:1]}) == [head + "A (m 5, 5 measured)."]
    assert at._families({}) == at._families({"families": []}) == []
    mixed = [f"p{i}" for i in range(9)]
    mc = {"machines": ["Xeon A", "Xeon B"], "mixed": mixed, "unknown": ["u1"], "bases": ["fingerprint", "epoch-0 NME"]}
    assert at._machines({"machines": mc}) == [
        "9 comparison(s) pair runs from machines of different numerics (by fingerprint or epoch-0 NME) on some seeds: "
        "p0, p1, p2, p3, p4, p5, p6, p7 ...; CPU names (not what decides): Xeon A; Xeon B.",
        "1 comparison(s) have pairs whose machines cannot be told apart (no fingerprint, no comparable untrained "
        "NME): u1."]
    mc = {"machines": ["Xeon A"], "mixed": mixed[:8], "unknown": mixed, "bases": []}
    got = at._machines({"machines": mc})
    assert got[0].endswith("(by nothing recorded) on some seeds: p0, p1, p2, p3, p4, p5, p6, p7; CPU names (not what "
                           "decides): Xeon A.")
    assert got[1].startswith("9 comparison(s) have pairs")
    assert got[1].endswith("NME): p0, p1, p2, p3, p4, p5, p6, p7 ...")  # the ellipsis ends it: three dots
    # Exactly 8 paths: all listed, no ellipsis.
    assert at._machines({"machines": dict(mc, unknown=mixed[:8])})[1].endswith("p5, p6, p7.")
    assert at._machines({"machines": dict(mc, mixed=[], unknown=[], bases=["fingerprint"])}) == [
        "Every comparison pairs runs of the same numerics (by fingerprint); CPU names (not what decides): Xeon A."]
    spread = {"replicates": [{"diff": {"n": 0}}, {"arm": "r", "of": "adam", "per_seed": [{}, {}], "seed_std": 0.005,
                                                   "seed_std_n": 5, "same_numerics": 0, "reproduced": 0,
                                                   "diff": {"n": 2, "mean": 0.0001, "ci_low": -0.0014,
                                                            "ci_high": 0.0017}}]}
    want = ("Machine-to-machine spread: r reruns adam's config; the same runs on the replicate's machine end 0.0001 "
            "higher on average (95% CI [-0.0014, +0.0017], n=2), against a seed std of adam of 0.0050 (n=5); "
            "numerics equal on 0 of 2 seeds.")
    assert at._machines({"machine_spread": spread}) == [want]  # no machines: the spread alone
    assert at._machines({"machines": dict(mc, mixed=[], unknown=[]), "machine_spread": spread})[1:] == [want]


def _line(trend: str, direction: str = "", **kw: Any) -> Dict[str, Any]:
    change = dict(_c(mean=-0.0005, lo=-0.001, hi=0.0002, p=0.2, n=4), trend=trend, direction=direction,
                  shortest="la_e12", longest="la", gap_shortest=0.02, gap_longest=0.0195, **kw)
    return {"change": change, "points": [{"epochs": 6, "both_learned": False}, {"epochs": 12, "both_learned": True},
                                         {"epochs": 30}]}


def test_trend_change_in_words():
    assert at.trend_change_text(_line("holds (no detectable change)")) == (
        "Between the lengths where both arms learned (la_e12 to la) the gap holds (no detectable change): change "
        "-0.0005 (95% CI [-0.0010, +0.0002], Holm p 0.200, n=4; mean gap +0.0200 -> +0.0195).")
    assert at.trend_change_text(_line("shrinks", "towards Lookahead")).startswith(
        "Between the lengths where both arms learned (la_e12 to la) the gap shrinks (towards Lookahead): change ")
    assert at.trend_change_text(_line(stats.TOO_FEW)).startswith(
        "Between the lengths where both arms learned (la_e12 to la) the gap's change is not judged yet (too few seeds: fewer than "
        "3 seeds common to all four arms): change ")
    assert at.trend_change_text(_line(NOT_MEASURABLE)).startswith(
        "Between the lengths where both arms learned (la_e12 to la) the gap's change is not measurable at this n: change ")
    ln = _line(FEWER_LEARNED)
    assert at.trend_change_text(ln) == ("The change of the gap is not judged: fewer than two lengths where both arms "
                                        "learned (both learned at 12, 30 epochs).")
    ln["points"] = [{"epochs": 6, "both_learned": False}]
    assert at.trend_change_text(ln).endswith("(both learned at none epochs).")
    c = _line("grows")
    del c["change"]["gap_shortest"]
    assert at.trend_change_text(c).endswith("n=4; mean gap - -> +0.0195).")


def test_answer_and_closing_sentences_in_order():
    rep = {"lookahead_vs_user": {"lookahead_arm": "la", "comparisons": {"rms": _c(family_size=1)}},
           "k_alpha_vs_key": {"key": "la", "k": 5, "alpha": 0.5, "lr": 1e-4,
                              "pairs": [{"k": 10, "alpha": 0.8, "comparison": _c()}]},
           "families": [{"name": "A", "m": 1, "measured": 1, "provisional": False}]}
    got = at.answer_sentences(rep)
    assert [s[:12] for s in got] == ["la against t", "Other (k, al"]
    assert [s[:12] for s in at.closing_sentences(rep)] == ["Holm familie"]


# ---------------------------------------------------------------------------- verdict.py
from hrnet.study.analyse import verdict as vd  # noqa: E402


def _arms(**learned: Any) -> Dict[str, Any]:
    return {a: {"learned": v, "final_NME": {"n": 3}} for a, v in learned.items()}


def _floors() -> Dict[str, Any]:
    return {"available": True, "learned_fraction": 0.8,
            "valid": {"num_images": 40, "box_centre": {"NME": 0.31234}, "constant_layout": {"NME": 0.25}}}


def test_floors_in_words():
    rep = {"floors": _floors(), "arms": _arms(adam=False, la=True, sgd=False, x=None), "study": {"reference": "adam"}}
    assert vd._floors(rep) == [
        "No-learning floors on the validation set (40 images): every joint at the box centre NME 0.3123, the best "
        "constant layout fitted on the training set 0.2500. 2 of 3 arms end above 0.8 x the box-centre floor and have "
        "not learned: adam, sgd.",
        "The reference adam has not learned: its comparisons with other arms that have not learned carry no verdict; "
        "they measure who leaves the starting plateau sooner, not who localises better."]
    rep["arms"] = _arms(adam=True, la=None)
    assert vd._floors(rep) == [
        "No-learning floors on the validation set (40 images): every joint at the box centre NME 0.3123, the best "
        "constant layout fitted on the training set 0.2500. 0 of 1 arms end above 0.8 x the box-centre floor and have "
        "not learned."]
    rep["arms"]["adam"]["learned"] = None  # unknown is not "not learned"
    assert len(vd._floors(rep)) == 1
    rep["floors"] = dict(_floors(), available=False)  # a cached floor still counts
    assert vd._floors(rep)[0].startswith("No-learning floors on the validation set (40 images)")
    assert vd._floors({"floors": {"note": "no annotations"}, "arms": {}}) == [
        "No no-learning floor: no annotations; 'has not learned' is not judged."]
    assert vd._floors({"floors": {"available": False}, "arms": {}}) == [
        "No no-learning floor: not computed; 'has not learned' is not judged."]


def test_measured_range_and_trend_in_words():
    ln = {"measured_iterations": [1200, 6000], "user_outside": True}
    assert vd.measured_range(ln, 19800) == ("The user's 19,800 iterations lie outside the measured range "
                                            "(1,200..6,000 iterations per run): nothing here says how the gap behaves "
                                            "there; the trend is not extrapolated.")
    assert vd.measured_range(dict(ln, user_outside=False), 3000) == (
        "The user's 3,000 iterations lie within the measured range (1,200..6,000 iterations per run).")
    assert vd.measured_range({"measured_iterations": None, "user_outside": False}, 3000) == (
        "The iterations per run are not known (no image count in the config): the lengths are in epochs.")
    line = dict(_line("grows", "towards the optimizer"), optimizer="adam", lr=0.0001,
                measured_iterations=[1200, 6000], user_outside=False)
    line["points"] = [{"epochs": 6, "iterations": 1200, "both_learned": False, "comparison": _c(verdict=stats.WORSE)},
                      {"epochs": 30, "iterations": None, "comparison": _c(n=2, lo=NAN)}]
    (s,) = vd._trend({"trend": {"lines": [line], "family_size": 4, "user_iterations": 3000}})
    assert s == ("Lookahead(adam) - adam at LR 0.0001 by training length, Holm over the 4 planned points: -0.0123 "
                 "[-0.0200, -0.0050] at 1,200 iterations (6 epochs; worse, n=5; not both learned); -0.0123 [-, -0.0050] "
                 "at - iterations (30 epochs; better, n=2). " + at.trend_change_text(line) + " The user's 3,000 "
                 "iterations lie within the measured range (1,200..6,000 iterations per run).")
    assert vd._trend({}) == vd._trend({"trend": {"lines": []}}) == []


def test_ranking_without_user_ranking_and_without_seeds():
    rep = {"ranking": {"order": [], "seeds": []}, "arms": {}}
    assert vd._ranking(rep) == ["No seed is finished by every arm with a finished run: no ranking (see the per-arm "
                                "table)."]
    rep = {"ranking": {"seeds": [0, 1], "order": [{"arm": "la", "mean": 0.2}, {"arm": "sgd", "mean": 0.41234}]},
           "arms": _arms(la=None, sgd=False)}
    assert vd._ranking(rep) == ["Ranking by mean final valid NME on the seeds all ranked arms share (0, 1; lower is "
                                "better): la (0.2000) < sgd (0.4123, not learned)."]
    rep.update(_ranking_report())
    assert vd._ranking(rep) == at.ranking_sentence(rep)


def _same_lr(pairs):
    return {"k": 5, "alpha": 0.5, "pairs": pairs}


def test_same_lr_sentences():
    base = {"study": {"reference": "adam"}, "comparisons": {}}
    pairs = [{"lookahead_arm": "la", "base_arm": "adam", "lr": 0.0001, "comparison": _c(n=0, family_size=7)},
             {"lookahead_arm": "la2", "base_arm": "adam2", "lr": 0.0002,
              "comparison": _c(verdict=stats.NO_DIFFERENCE, family_size=3, provisional=True)}]
    (s,) = vd._comparisons(dict(base, same_lr=_same_lr(pairs)))
    assert s == ("Same-LR pairs, Lookahead(X) - X final NME (k 5, alpha 0.5), Holm over the 3 planned: no detectable "
                 "difference from the optimizer without Lookahead at this n: la2 - adam2 at LR 0.0002 (-0.0123, 95% CI "
                 "[-0.0200, -0.0050], Holm p 0.012, n=5) (provisional).")
    pairs[1]["comparison"]["provisional"] = False
    assert vd._comparisons(dict(base, same_lr=_same_lr(pairs)))[0].endswith("n=5).")
    assert vd._comparisons(dict(base, same_lr=_same_lr(pairs[:1]))) == [
        "Same-LR pairs: no pair has a seed finished by both sides yet."]
    assert vd._comparisons(dict(base, same_lr=_same_lr([]))) == [
        "Same-LR pairs: no LR at which both an optimizer and Lookahead of it ran."]


def test_runs_in_words():
    runs = [{"name": "a_s0", "status": "failed"}, {"name": "a_s1", "status": "diverged"},
            {"name": "a_s2", "status": "partial"}, {"name": "a_s3", "status": "not run"},
            {"name": "a_s4", "status": "finished"}]
    it = {"fraction_of_user": 0.123, "per_run": {"a": 2400, "b": 1200, "c": 2400, "d": None}, "user": 19800}
    assert vd._runs({"runs": runs, "iterations": it}) == [
        "2 run(s) did not finish and are left out of the statistics: a_s0 (failed), a_s1 (diverged).",
        "2 run(s) are not finished yet (partial or not run): the statistics cover the finished seeds only.",
        "Training length: 1,200, 2,400 iterations per run, against the user's 19,800 (12% of it at most): the results "
        "describe this scale."]
    assert vd._runs({"runs": runs[4:], "iterations": dict(it, fraction_of_user=None)}) == []


def _la(c: Dict[str, Any], differ: Dict[str, int], logged: bool = True) -> Dict[str, Any]:
    return {"logged": logged, "epochs_where_they_differ": differ, "epoch_mean_slow_vs_fast": c,
            "best_slow_vs_fast": {"mean_diff": -0.0021}}


@pytest.mark.parametrize("verdict,word", [
    (stats.BETTER, "lower (better)"), (stats.WORSE, "higher (worse)"), (stats.TOO_FEW, stats.TOO_FEW),
    (stats.NOT_LEARNED, stats.NOT_LEARNED), (stats.NO_DIFFERENCE, "not detectably different")])
def test_lookahead_slow_and_fast_in_words(verdict, word):
    (s,) = vd._lookahead({"lookahead": {"la": _la(_c(verdict=verdict, lo=-0.02345), {"0": 3})}})
    assert s == (f"la: slow - fast weights' valid NME averaged over epochs 1..end -0.0123 (95% CI [-0.0234, -0.0050], "
                 f"Holm p 0.012, n=5): {word}; best slow - fast -0.0021 (selected on the validation set: no verdict).")


def test_lookahead_weights_that_coincide_or_were_not_logged():
    same = vd._lookahead({"lookahead": {"la": _la(_c(), {"0": 0, "1": 0})}})
    assert same == ["la: slow and fast weights coincide at every validation of every seed (2 seeds: each validation "
                    "followed a Lookahead sync), so this study cannot tell them apart."]
    assert vd._lookahead({"lookahead": {"la": _la(_c(), {"0": 0}, logged=False), "lb": _la(_c(n=0), {}),
                                        "lc": _la(_c(n=0), {"0": 1})}}) == []
    assert vd._lookahead({"lookahead": {"la": _la(_c(), {})}})[0].startswith("la: slow - fast weights' valid NME")


def test_sensitivity_in_words():
    sens = {"lr_spread": {"sgd": {"range": 0.2, "lrs": [0.01, 0.001], "seeds": [0, 1]},
                          "adam": {"range": 0.01234, "lrs": [5e-05, 0.001, 0.0001], "seeds": [0]}},
            "k_alpha": {"lr": 0.0001, "range": 0.0031, "k": [5, 10], "alpha": [0.5, 0.8], "seeds": [0, 1, 2]}}
    assert vd._sensitivity({"sensitivity": sens}) == [
        "LR sensitivity (range of the mean final NME over the LRs tried, on each line's common seeds): adam: 0.0123 "
        "over LR 5e-05..0.001 (seeds 0); sgd: 0.2000 over LR 0.001..0.01 (seeds 0, 1).",
        "Lookahead k x alpha grid at LR 0.0001: the mean final NME spans 0.0031 over k [5, 10] and alpha [0.5, 0.8] "
        "(seeds 0, 1, 2)."]
    assert vd._sensitivity({"sensitivity": {"lr_spread": {}, "k_alpha": None}}) == []


def test_real_photos_in_words():
    rh = {"available": True, "set_sizes": {"freihand": {"num_images": 8, "num_hands": 2},
                                           "gone": {"num_images": None, "num_hands": None},
                                           "all": {"num_images": 8, "num_hands": 2}},
          "floors": {"all": {"box_centre": {"NME": 0.28591}}},
          "per_arm": {"a": {"learned": False}, "b": {"learned": True}, "c": {"learned": None}},
          "kendall_tau": 0.5, "seeds": [0, 1], "rank_synthetic": ["b", "a"], "rank_real": ["a", "b"]}
    rep = {"real_hands": rh, "floors": {"learned_fraction": 0.8}}
    assert vd._real(rep) == [
        "Real hand photos, final models (freihand: 8 images, 2 distinct hands); box-centre floor 0.2859: 1 of 2 arms "
        "end above 0.8 x that floor on them.",
        "On seeds 0, 1 the real-photo ranking differs from the synthetic one (Kendall tau +0.50): a < b."]
    rh.update(rank_synthetic=["a", "b"], kendall_tau=1.0)
    assert "ranking is the same as the synthetic one (Kendall tau +1.00): a < b." in vd._real(rep)[1]
    rh.update(kendall_tau=None, floors={})
    assert vd._real(rep) == [vd._real(rep)[0]] and "box-centre floor -:" in vd._real(rep)[0]
    assert vd._real({"real_hands": {"available": False}}) == []


def test_verdict_before_any_finished_run():
    rep = {"arms": {"a": {"final_NME": {"n": 0}}}, "runs": [{"name": "a_s0", "status": "failed"}],
           "iterations": {"fraction_of_user": None}}
    assert vd.verdict(rep) == ["No arm has a finished run yet: nothing to conclude.",
                               "1 run(s) did not finish and are left out of the statistics: a_s0 (failed)."]


# ---------------------------------------------------------------------------- families.py
from hrnet.study.analyse.families import family_table, machine_summary  # noqa: E402


def _m(n: int, size: int, p: float, prov: bool = False, **kw: Any) -> Dict[str, Any]:
    return dict(n=n, family_size=size, p_adjusted=p, provisional=prov, **kw)


def test_family_table_rows_in_the_reports_order():
    rep = {"study": {"reference": "adam"},
           "comparisons": {"la": {"final_NME": _m(5, 2, 0.01, family="the user's arms")},
                           "rms": {"final_NME": _m(1, 2, None, family="the user's arms")},
                           "lr": {"final_NME": _m(2, 3, 0.3, True, family="the study's added arms")},
                           "odd": {"final_NME": _m(5, 9, 0.5, family="other")}},
           "lookahead_vs_user": {"lookahead_arm": "la", "comparisons": {"rms": _m(3, 4, 0.04), "sgd": {}}},
           "same_lr": {"pairs": [{"comparison": _m(4, 2, 0.2)}]},
           "effective_step": {"pairs": [{"difference": _m(3, 2, 0.5, True), "equivalence": _m(3, 2, 0.01)},
                                        {"difference": _m(0, 2, None), "equivalence": None}]},
           "k_alpha_vs_key": {"key": "la", "pairs": [{"comparison": _m(2, 3, 0.7)}]},
           "trend": {"lines": [{"points": [{"comparison": _m(3, 4, 0.1)}, {"comparison": _m(1, 4, None)}],
                                "change": _m(3, 1, 0.2)}]},
           "tuned": {"pairs": [{"lookahead_arm": "la2", "base_arm": "adam3", "comparison": _m(3, 1, 0.9, True)}]}}
    rows = family_table(rep)
    assert [(r["name"], r["question"], r["members"], r["m"], r["measured"], r["provisional"]) for r in rows] == [
        ("the user's arms vs adam", "final NME of each against adam", 2, 2, 1, False),
        ("the study's added arms vs adam", "final NME of each against adam", 1, 3, 1, True),
        ("la vs the user's other optimizers", "does the user's Lookahead beat each of them", 1, 4, 1, False),
        ("same-LR pairs", "Lookahead(X) - X at each LR", 1, 2, 1, False),
        ("effective-step pairs: difference", "Lookahead(X, lr) - X(alpha x lr)", 2, 2, 1, True),
        ("effective-step pairs: equivalence (TOST)", "within +- the margin", 1, 2, 1, False),
        ("k x alpha vs la", "another (k, alpha) at the same LR", 1, 3, 1, False),
        ("trend: points", "Lookahead(X) - X at each length", 2, 4, 1, False),
        ("trend: changes", "the gap between the lengths where both learned", 1, 1, 1, False),
        ("tuned: la2 - adam3", "each at its best LR (optimistic)", 1, 1, 1, True)]
    assert rows[0]["p_adjusted"] == [0.01, None] and rows[4]["p_adjusted"] == [0.5, None]
    bare = {"study": {"reference": "adam"}, "comparisons": {}, "same_lr": {"pairs": []}, "trend": {"lines": []}}
    assert family_table(bare) == []
    assert family_table(dict(bare, lookahead_vs_user={"comparisons": {}}, effective_step={"pairs": []},
                             k_alpha_vs_key={"pairs": []}, tuned={"pairs": []})) == []
    # A family row of members without family_size (none measured yet): m 0.
    assert family_table(dict(bare, same_lr={"pairs": [{"comparison": {"n": 0}}]}))[0]["m"] == 0


def test_machine_summary_reads_every_comparison_but_the_skipped_sections():
    def c(mixed: bool, machines=(), **num: Any) -> Dict[str, Any]:
        return {"mixed_machines": mixed, "machines": None if machines is None else list(machines), "numerics": num}

    rep = {"comparisons": {"a": {"final_NME": c(True, ("X", "Y"), basis="epoch-0 NME")},
                           "b": {"final_NME": c(False, ("Y",), unknown=2, basis="fingerprint and epoch-0 NME")}},
           "trend": {"lines": [{"change": c(False, ("Z",), basis="fingerprint")}]},
           "other": [c(True, None), {"no": "mixed key"}]}
    for k in ("runs", "arms", "families", "replicates", "machine_spread", "user_ranking"):
        rep[k] = {"x": c(True, ("SKIPPED",), unknown=1, basis="skipped")}
    assert machine_summary(rep) == {"machines": ["X", "Y", "Z"], "mixed": ["comparisons.a.final_NME", "other[0]"],
                                    "unknown": ["comparisons.b.final_NME"],
                                    "bases": ["epoch-0 NME", "fingerprint"]}
    assert machine_summary({}) == {"machines": [], "mixed": [], "unknown": [], "bases": []}


# ---------------------------------------------------------------------------- answer.py
from test_study_analysis import _arm, _records  # noqa: E402

from hrnet.study.analyse import answer as ans  # noqa: E402


def _user_arms() -> Dict[str, Any]:
    """adam (reference), la and rms the user's (no overrides), la_lr2e-4 and adam_lr5e-5 added."""
    arms = {"adam": _arm("adam", 1e-4), "la2": _arm("lookahead(adam)", 2e-4, 5, 0.5),
            "la": _arm("lookahead(adam)", 1e-4, 5, 0.5), "rms": _arm("rmsprop", 1e-4),
            "adam5": _arm("adam", 5e-5), "la_k10": _arm("lookahead(adam)", 1e-4, 10, 0.5)}
    for name, e in arms.items():
        e["overrides"] = ["TRAIN.LR"] if name in ("la2", "adam5", "la_k10") else []
    return arms


def test_reference_families_and_the_key_lookahead():
    arms = _user_arms()
    assert ans.reference_families(arms, "adam") == {ans.USER: ["la", "rms"], ans.ADDED: ["la2", "adam5", "la_k10"]}
    assert ans.USER == "the user's arms" and ans.ADDED == "the study's added arms"
    assert ans.reference_families({"adam": arms["adam"], "rms": arms["rms"]}, "adam") == {ans.USER: ["rms"]}
    assert ans.key_lookahead(arms, "adam") == "la"  # the user's Lookahead before la_k10 (an added arm)
    arms["la"]["overrides"] = ["x"]
    assert ans.key_lookahead(arms, "adam") == "la"  # no user arm among them: the first found
    assert ans.key_lookahead(arms, "rms") is None


def test_lookahead_vs_user_and_k_alpha_vs_key():
    arms = _user_arms()
    vals = {"adam": (0.20, 0.21, 0.22), "la": (0.19, 0.205, 0.21), "rms": (0.25, 0.26, 0.262),
            "la_k10": (0.18, 0.2, 0.19), "la2": (0.2, 0.2, 0.2), "adam5": (0.3, 0.3, 0.3)}
    by_arm = {a: _records(dict(enumerate(v))) for a, v in vals.items()}
    got = ans.lookahead_vs_user(by_arm, arms, "adam", "la")
    assert got["lookahead_arm"] == "la" and list(got["comparisons"]) == ["rms"]
    c = got["comparisons"]["rms"]
    assert c["diffs"] == pytest.approx([-0.06, -0.055, -0.052]) and c["family_size"] == 1 and c["arms"] == ["la", "rms"]
    assert ans.lookahead_vs_user(by_arm, arms, "adam", None) == {"lookahead_arm": None, "comparisons": {}}
    ka = ans.k_alpha_vs_key(by_arm, arms, "la")
    assert (ka["key"], ka["k"], ka["alpha"], ka["lr"]) == ("la", 5, 0.5, 1e-4)
    (p,) = ka["pairs"]
    assert (p["arm"], p["k"], p["alpha"]) == ("la_k10", 10, 0.5)
    assert p["comparison"]["diffs"] == pytest.approx([-0.01, -0.005, -0.02]) and p["comparison"]["arms"] == ["la_k10", "la"]
    assert ans.k_alpha_vs_key(by_arm, arms, None) == {"key": None, "pairs": []}


def test_user_ranking_backs_each_step_with_its_comparison():
    arms = _user_arms()
    for a, v in {"adam": (0.20, 0.21, 0.22), "la": (0.19, 0.2, 0.21), "rms": (0.25, 0.26, 0.27)}.items():
        arms[a]["final_NME"] = {"n": 3, "per_seed": {str(s): x for s, x in enumerate(v)}}
    arms["rms"]["learned"] = False
    for a in ("la2", "adam5", "la_k10"):
        arms[a]["final_NME"] = {"n": 0, "per_seed": {}}
    la_c, rms_c, vs = {"verdict": "better", "family": "F"}, {"verdict": "worse"}, {"verdict": "better"}
    comps = {"la": {"final_NME": la_c}, "rms": {"final_NME": rms_c}, "la2": {}}
    got = ans.user_ranking(arms, "adam", comps, {"lookahead_arm": "la", "comparisons": {"rms": vs}})
    assert got["seeds"] == [0, 1, 2]
    assert [(o["arm"], o["learned"]) for o in got["order"]] == [("la", True), ("adam", True), ("rms", False)]
    assert got["order"][0]["mean"] == pytest.approx(0.2)
    assert got["steps"] == [
        {"better": "la", "worse": "adam", "family": "F vs adam", "arm": "la", "other": "adam", "comparison": la_c},
        {"better": "adam", "worse": "rms", "family": "all vs adam", "arm": "rms", "other": "adam", "comparison": rms_c}]
    # Without a comparison of the two: no family, no arm; the lookahead-vs-user family backs la vs rms.
    del arms["adam"]["final_NME"]["per_seed"]["0"]
    arms["adam"]["final_NME"]["per_seed"].update({"0": 0.3, "1": 0.3, "2": 0.3})
    got = ans.user_ranking(arms, "adam", {}, {"lookahead_arm": "la", "comparisons": {"rms": vs}})
    assert [o["arm"] for o in got["order"]] == ["la", "rms", "adam"]
    assert got["steps"] == [
        {"better": "la", "worse": "rms", "family": "la vs the user's other optimizers", "arm": "la", "other": "rms",
         "comparison": vs},
        {"better": "rms", "worse": "adam", "family": None, "arm": None, "other": None, "comparison": None}]


# ---------------------------------------------------------------------------- effective_time.py
from hrnet.study.analyse import effective_time as et  # noqa: E402


def _curve_run(seed: int, values, status: str = "finished") -> Dict[str, Any]:
    return {"seed": seed, "status": status, "curves": {"epoch": list(range(len(values))), "NME": list(values)}}


def test_crossing_epoch_edges_and_the_slope():
    assert et.crossing_epoch([0, 1], [0.5, 0.4], 0.6) == 0.0  # already below at the first point
    assert et.crossing_epoch([2, 4], [1.0, 0.5], 0.75) == 3.0  # linear between epochs 2 and 4
    assert et.crossing_epoch([0, 1, 2], [None, float("nan"), 0.4], 0.5) == 2.0
    assert et.crossing_epoch([], [], 0.5) is None
    assert et._slope([(1, 2.0), (2, 4.0), (3, 7.0)]) == pytest.approx(2.5)
    assert et._slope([(2, 1.0), (2, 3.0)]) is None


def test_seed_ratio_skips_epoch_zero_and_missing_values():
    base = [1.0 - 0.1 * e for e in range(8)]
    la = [1.0, 0.95, None, 0.85, float("nan"), 0.75, 0.7, 0.65]
    r = et.seed_ratio(_curve_run(0, la), _curve_run(0, base), 6)
    assert r["epochs"] == [1, 2, 3, 4, 5, 6] and r["tau"][1] is None and r["tau"][3] is None
    assert r["tau"][0] == pytest.approx(0.5) and r["tau"][4] == pytest.approx(2.5)
    assert r["used"] == 4 and r["censored"] == 2
    assert r["ratio"] == pytest.approx(np.mean([0.5 / 1, 1.5 / 3, 2.5 / 5, 3.0 / 6]))
    assert r["pace"] == pytest.approx(0.5)  # t >= 3 uncensored: 3, 5, 6
    short = et.seed_ratio(_curve_run(0, la[:6]), _curve_run(0, base), 5)
    assert short["pace"] is None  # t >= 2.5 uncensored: 3 and 5 only
    none = et.seed_ratio(_curve_run(0, [1.0, 0.01]), _curve_run(0, base), 1)
    assert none["ratio"] is None and none["pace"] is None and none["censored"] == 1 and none["used"] == 0


def test_effective_time_pair_fields():
    from test_study_analysis import _arm

    arms = {"adam": _arm("adam", 2e-4), "la": _arm("lookahead(adam)", 1e-4, 5, 0.5),
            "sgd": _arm("sgd", None), "la_sgd": _arm("lookahead(sgd)", 1e-4, 5, None)}
    arms["adam"]["setting"].update({"TRAIN.LR_STEP": [], "TRAIN.END_EPOCH": 7})
    base = [1.0 - 0.1 * e for e in range(10)]
    by_arm = {"adam": [_curve_run(s, [v + 0.001 * s for v in base]) for s in (0, 1, 2)] + [_curve_run(3, base)],
              "la": [_curve_run(s, [1.0 - 0.04 * e for e in range(10)]) for s in (0, 1, 2)]
              + [_curve_run(3, base, "failed"), _curve_run(4, base)]}
    got = et.effective_time(by_arm, arms, [("la", "adam"), ("la_sgd", "sgd"), ("la", "sgd")])
    assert got["prediction"] == ("alpha x LR(Lookahead) / LR(X): Lookahead(X, alpha, lr) ~ X(alpha x lr) when "
                                 "progress depends on lr x iterations only")
    (p,) = got["pairs"]
    assert (p["lookahead_arm"], p["base_arm"], p["lr"], p["base_lr"], p["k"], p["alpha"]) == \
        ("la", "adam", 1e-4, 2e-4, 5, 0.5)
    assert p["window"] == [1, 7] and p["pace_window"] == [4, 7] and p["predicted_ratio"] == pytest.approx(0.25)
    assert list(p["per_seed"]) == ["0", "1", "2"]  # seed 3 failed on one side, seed 4 has no base
    ratios = [p["per_seed"][s]["ratio"] for s in ("0", "1", "2")]
    assert p["ratio"]["n"] == 3 and p["ratio"]["mean"] == pytest.approx(np.mean(ratios))
    assert p["ratio_minus_predicted"] == {k: pytest.approx(v, nan_ok=True) for k, v in stats.paired_comparison(
        dict(enumerate(ratios)), {s: 0.25 for s in range(3)}).to_dict().items()
        if k in ("mean_diff", "ci_low", "ci_high", "p_value", "n")}
    paces = [p["per_seed"][s]["pace"] for s in ("0", "1", "2")]
    assert p["pace"]["mean"] == pytest.approx(np.mean(paces)) and p["pace_minus_predicted"]["n"] == 3
    arms["adam"]["setting"]["TRAIN.LR_STEP"] = [6, 4]
    (p,) = et.effective_time(by_arm, arms, [("la", "adam")])["pairs"]
    assert p["window"] == [1, 4] and p["pace_window"] == [2, 4]


# ---------------------------------------------------------------------------- survivors of the study_answer run
# Format specs with a sign ("+.4f") against the default (".4f") show only on positive numbers, so these
# comparisons hold positive bounds.
def test_signed_formats_show_on_positive_bounds():
    pos = _c(mean=0.0123, lo=0.002, hi=0.03)
    assert comp_text("x", pos) == "x (+0.0123, 95% CI [+0.0020, +0.0300], Holm p 0.012, n=5)"
    assert at.interval(pos) == "+0.0123 [+0.0020, +0.0300], Holm p 0.012, n=5"
    ln = _line("grows")
    ln["change"].update(mean_diff=0.0005, ci_low=0.0001, ci_high=0.001)
    assert "change +0.0005 (95% CI [+0.0001, +0.0010], Holm p 0.200" in at.trend_change_text(ln)
    line = dict(_line("grows"), optimizer="adam", lr=5e-05, measured_iterations=None, user_outside=False)
    line["points"] = [{"epochs": 6, "iterations": 1200, "comparison": pos}]
    (s,) = vd._trend({"trend": {"lines": [line], "family_size": 1, "user_iterations": 3000}})
    assert s.startswith("Lookahead(adam) - adam at LR 5e-05 by training length, Holm over the 1 planned points: "
                        "+0.0123 [+0.0020, +0.0300] at 1,200 iterations")
    pairs = [{"lookahead_arm": "la", "base_arm": "adam", "lr": 5e-05, "comparison": dict(pos, family_size=1)}]
    (s,) = vd._comparisons({"study": {"reference": "adam"}, "comparisons": {},
                            "same_lr": {"k": 5, "alpha": 5e-05, "pairs": pairs}})
    assert s.startswith("Same-LR pairs, Lookahead(X) - X final NME (k 5, alpha 5e-05), Holm over the 1 planned")


def test_effective_step_and_time_sentences_past_an_unmeasured_pair():
    eq = dict(_c(lo=0.001, hi=0.003, p=0.0004), verdict=stats.EQUIVALENT)
    es = {"key_gap": 0.0183, "margin": 0.00915, "margin_fraction": 0.5, "pairs": [
        {"key": "la3 - adam", "difference": _c(n=0), "equivalence": None},
        {"key": "la - adam5", "difference": _c(provisional=False), "equivalence": eq}]}
    (s,) = at._effective_step({"effective_step": es})
    assert s.endswith(": la3 - adam: not measured yet; la - adam5: -0.0123 [-0.0200, -0.0050], Holm p 0.012, n=5, "
                      "better; 90% CI [+0.0010, +0.0030], TOST Holm p <0.001: equivalent within the margin.")
    pair = _et_pair("la", 3)
    pair["pace"]["ci_high"] = 0.55
    (s,) = at._effective_time({"effective_time": {"pairs": [pair]}})  # a report without arms: none a variant
    assert "is worth 0.47 adam epochs (95% CI [0.40, 0.55]), not distinguishable" in s


def test_machines_ellipsis_only_past_eight_paths():
    mc = {"machines": ["X"], "mixed": [], "unknown": [f"p{i}" for i in range(8)], "bases": []}
    assert at._machines({"machines": mc})[0].endswith("NME): p0, p1, p2, p3, p4, p5, p6, p7.")


def test_runs_real_photos_and_sensitivity_details():
    it = {"fraction_of_user": 0.9, "per_run": {"a": 2400}, "user": 2667}
    assert "against the user's 2,667 (90% of it at most)" in vd._runs({"runs": [], "iterations": it})[0]
    rh = {"available": True, "set_sizes": {"freihand": {"num_images": 8, "num_hands": 2},
                                           "ho3d": {"num_images": 4, "num_hands": 1}},
          "floors": {}, "per_arm": {"a": {"learned": False}, "b": {"learned": True}, "c": {"learned": True}}}
    assert vd._real({"real_hands": rh, "floors": {"learned_fraction": 0.8}}) == [
        "Real hand photos, final models (freihand: 8 images, 2 distinct hands, ho3d: 4 images, 1 distinct hands); "
        "box-centre floor -: 1 of 3 arms end above 0.8 x that floor on them."]
    sens = {"lr_spread": {"adam": {"range": 0.2, "lrs": [0.001], "seeds": [0]},
                          "sgd": {"range": 0.01, "lrs": [0.01], "seeds": [0]}}, "k_alpha": None}
    (s,) = vd._sensitivity({"sensitivity": sens})
    assert s.endswith("common seeds): sgd: 0.0100 over LR 0.01..0.01 (seeds 0); adam: 0.2000 over LR 0.001..0.001 "
                      "(seeds 0).")  # by range, not by name


def _full_report() -> Dict[str, Any]:
    """A report with every section the verdict reads (each section's own tests pin its words)."""
    return {"floors": _floors(), "arms": _arms(adam=True, la=True), "study": {"reference": "adam"},
            "calibration": {"arm": "adam", "final_NME": {"n": 3}, "box_centre_floor": None},
            "ranking": {"seeds": [0, 1], "order": [{"arm": "la", "mean": 0.2}, {"arm": "adam", "mean": 0.3}]},
            "comparisons": {}, "same_lr": {"k": 5, "alpha": 0.5, "pairs": []},
            "trend": {"lines": [dict(_line("grows"), optimizer="adam", lr=1e-4, measured_iterations=None,
                                     user_outside=False, points=[])], "family_size": 1, "user_iterations": 3000},
            "runs": [{"name": "a_s0", "status": "failed"}],
            "iterations": {"fraction_of_user": 0.5, "per_run": {"a": 1200}, "user": 2400},
            "lookahead": {"la": _la(_c(), {"0": 3})},
            "sensitivity": {"lr_spread": {"adam": {"range": 0.2, "lrs": [0.001], "seeds": [0]}}, "k_alpha": None},
            "real_hands": {"available": True, "set_sizes": {}, "floors": {}, "per_arm": {}},
            "families": [{"name": "A", "m": 1, "measured": 1, "provisional": False}]}


def test_verdict_joins_every_section_in_order():
    from hrnet.study.analyse.calibration import calibration_sentence

    rep = _full_report()
    parts = [vd._floors(rep), [calibration_sentence(rep["calibration"])], vd._ranking(rep), vd._comparisons(rep),
             vd._trend(rep), vd._runs(rep), vd._lookahead(rep), vd._sensitivity(rep), vd._real(rep),
             at.closing_sentences(rep)]
    assert all(parts)  # each section says something, so a lost or moved one shows
    assert vd.verdict(rep) == [s for part in parts for s in part]


# ---------------------------------------------------------------------------- answer.py survivors
def _measured(arms: Dict[str, Any], values: Dict[str, Any]) -> Dict[str, Any]:
    """Give ``arms`` final NME per seed (``arm -> {seed: value}``); the others none."""
    for a, e in arms.items():
        v = values.get(a, {})
        e["final_NME"] = {"n": len(v), "per_seed": {str(s): x for s, x in v.items()}}
    return arms


def test_key_lookahead_prefers_a_user_arm_whatever_the_order():
    arms = _user_arms()
    arms = {a: arms[a] for a in ("adam", "la_k10", "la", "rms")}
    assert ans.key_lookahead(arms, "adam") == "la"


def test_no_user_arm_but_the_reference():
    arms = _user_arms()
    arms = {a: arms[a] for a in ("adam", "la_k10")}  # la_k10 (added) is the key arm: no user arm to compare
    by_arm = {a: _records({0: 0.2, 1: 0.21, 2: 0.22}) for a in arms}
    assert ans.lookahead_vs_user(by_arm, arms, "adam", "la_k10") == {"lookahead_arm": "la_k10", "comparisons": {}}
    _measured(arms, {"adam": {0: 0.2, 1: 0.21}, "la_k10": {0: 0.1, 1: 0.11}})
    got = ans.user_ranking(arms, "adam", {}, {})  # no key Lookahead: no vs-user family
    assert [o["arm"] for o in got["order"]] == ["adam"] and got["steps"] == []


def test_effective_step_pairs_tolerance_and_the_free_lr_key():
    arms = {"la": _arm("lookahead(adam)", 3e-4, 5, 0.5, **{"TRAIN.LR": 3e-4}),
            "adam": _arm("adam", 1.5e-4 * (1 + 1e-7), **{"TRAIN.LR": 1.5e-4}),
            "la_nolr": _arm("lookahead(adam)", None, 5, 0.5)}
    assert ans.effective_step_pairs(arms) == [("la", "adam")]  # within rel 1e-6; TRAIN.LR may differ


def test_effective_step_rows_and_equivalence():
    arms = _user_arms()
    vals = {"adam": {0: 0.20, 1: 0.21, 2: 0.22, 3: 0.2}, "la": {0: 0.22, 1: 0.23, 2: 0.245, 3: 0.22},
            "adam5": {0: 0.221, 1: 0.229, 2: 0.246}, "la2": {0: 0.2}}
    by_arm = {a: _records(vals.get(a, {})) for a in arms}
    got = ans.effective_step(by_arm, arms, "adam", "la")
    assert {k: got[k] for k in ("margin_fraction", "key_pair")} == {"margin_fraction": 0.5, "key_pair": ["la", "adam"]}
    assert got["key_gap"] == pytest.approx(0.02125) and got["margin"] == pytest.approx(0.010625)
    rows = {r["key"]: r for r in got["pairs"]}
    assert list(rows) == ["la2 - adam", "la - adam5"]
    r = rows["la - adam5"]
    assert {k: r[k] for k in ("lookahead_arm", "base_arm", "lr", "base_lr", "alpha", "k")} == \
        {"lookahead_arm": "la", "base_arm": "adam5", "lr": 1e-4, "base_lr": 5e-5, "alpha": 0.5, "k": 5}
    assert r["difference"]["n"] == 3 and r["equivalence"]["n"] == 3
    # Both members' TOST in a family of the 2 planned, la2 - adam (1 pair, no p-value) included.
    assert r["equivalence"]["family_size"] == rows["la2 - adam"]["equivalence"]["family_size"] == 2
    assert r["equivalence"]["provisional"] is r["difference"]["provisional"] is False  # the difference's flag
    # The key pair without a common seed: no gap, no margin, no TOST.
    by_arm["la"] = _records({7: 0.2})
    got = ans.effective_step(by_arm, arms, "adam", "la")
    assert got["key_gap"] is None and got["margin"] is None and got["pairs"][1]["equivalence"] is None


def test_tuned_grids_bases_and_lines():
    arms = {"adam1": _arm("adam", 1e-4), "adam2": _arm("adam", 2e-4),
            "sgd1": _arm("sgd", 1e-2), "sgd2": _arm("sgd", 2e-2), "sgd3": _arm("sgd", 3e-2),
            "lsgd1": _arm("lookahead(sgd)", 1e-2, 5, 0.5), "lsgd2": _arm("lookahead(sgd)", 2e-2, 5, 0.5),
            "lrms1": _arm("lookahead(rmsprop)", 1e-3, 5, 0.5), "lrms2": _arm("lookahead(rmsprop)", 2e-3, 5, 0.5),
            "lx1": _arm("lookahead(adamw)", 1e-4, 5, 0.5), "lx2": _arm("lookahead(adamw)", 2e-4, 5, 0.5),
            "la1": _arm("lookahead(adam)", 1e-4, 5, 0.5), "la2": _arm("lookahead(adam)", 2e-4, 5, 0.5),
            "adamw1": _arm("adamw", 1e-4), "adamw2": _arm("adamw", 2e-4),
            "odd1": _arm("rmsprop", 1e-3), "odd2": _arm("rmsprop", 2e-3)}
    seeds3 = {0: 0.3, 1: 0.31, 2: 0.32}
    vals = {"adam1": seeds3, "adam2": {0: 0.2, 1: 0.21, 2: 0.22}, "sgd1": seeds3, "la1": {0: 0.25, 1: 0.2, 2: 0.26},
            "la2": {0: 0.4, 1: 0.4, 2: 0.4}, "lrms1": seeds3, "lrms2": seeds3, "lx1": seeds3,
            "adamw1": {0: 0.3}, "adamw2": {5: 0.3}, "odd1": seeds3}
    _measured(arms, vals)
    by_arm = {a: _records(vals.get(a, {})) for a in arms}
    got = ans.tuned(by_arm, arms)
    lines = got["lines"]
    # adamw: its arms share no seed, so no means and no best; lookahead(sgd): none measured.
    aw = next(ln for ln in lines.values() if ln["family"] == "adamw")
    assert (aw["seeds"], aw["means"], aw["best_arm"], aw["best_lr"]) == ([], {}, None, None)
    ls = next(ln for ln in lines.values() if ln["family"] == "lookahead(sgd)")
    assert (ls["means"], ls["best_arm"], ls["best_lr"]) == ({}, None, None)
    ad = next(ln for ln in lines.values() if ln["family"] == "adam")
    assert ad["means"] == {"adam1": pytest.approx(0.31), "adam2": pytest.approx(0.21)} and ad["best_arm"] == "adam2"
    # Each Lookahead line against its own optimizer's line (rmsprop: two LRs planned, one measured), not
    # the first grid; lookahead(adamw), before lookahead(adam), has no adamw best: skipped, not the end.
    (p,) = [p for p in got["pairs"] if p["lookahead_arm"] == "la1"]
    assert {k: v for k, v in p.items() if k != "comparison"} == {
        "lookahead_line": next(k for k, ln in lines.items() if ln["family"] == "lookahead(adam)"),
        "base_line": next(k for k, ln in lines.items() if ln["family"] == "adam"),
        "lookahead_arm": "la1", "base_arm": "adam2", "lookahead_lr": 1e-4, "base_lr": 2e-4}
    assert [(p["lookahead_arm"], p["base_arm"]) for p in got["pairs"]] == [("lrms1", "odd1"), ("la1", "adam2")]


# ---------------------------------------------------------------------------- families.py survivors
def test_answer_sections_computes_each_section_from_the_main_arms():
    import json

    from hrnet.study.analyse.comparisons import lookahead_pairs
    from hrnet.study.analyse.families import answer_sections

    main = _user_arms()
    vals = {"adam": {0: 0.20, 1: 0.21, 2: 0.22}, "la": {0: 0.19, 1: 0.205, 2: 0.21}, "rms": {0: 0.25, 1: 0.26, 2: 0.27},
            "adam5": {0: 0.2, 1: 0.2, 2: 0.21}, "la2": {0: 0.2, 1: 0.21, 2: 0.2}, "la_k10": {0: 0.2, 1: 0.2, 2: 0.2}}
    _measured(main, vals)
    # A longer pair outside main: only the effective time reads every arm.
    arms = dict(main, la_e6=_arm("lookahead(adam)", 1e-4, 5, 0.5, epochs=6), adam_e6=_arm("adam", 1e-4, epochs=6))
    curve = {"epoch": list(range(4)), "NME": [1.0, 0.9, 0.8, 0.7]}
    by_arm = {a: _records(vals.get(a, {0: 0.3, 1: 0.3, 2: 0.3}), curves=curve) for a in arms}
    c = dict(_c(family=ans.USER, family_size=2), mixed_machines=True, machines=["X", "Y"],
             numerics={"basis": "fingerprint"})
    report = {"study": {"reference": "adam"}, "comparisons": {"la": {"final_NME": c}},
              "same_lr": {"pairs": []}, "trend": {"lines": []}}
    got = answer_sections("adam", by_arm, arms, main, report)
    assert got["key_lookahead"] == "la" and list(got["lookahead_vs_user"]["comparisons"]) == ["rms"]
    assert [(p["lookahead_arm"], p["base_arm"]) for p in got["effective_time"]["pairs"]] == \
        [("la", "adam"), ("la_k10", "adam"), ("la_e6", "adam_e6"), ("la2", "adam"), ("la", "adam5")]
    assert got["user_ranking"]["steps"][0]["comparison"] == c
    assert got["machines"]["mixed"] == ["comparisons.la.final_NME"]
    runs = {a: by_arm[a] for a in main}
    want = {"key_lookahead": "la", "lookahead_vs_user": ans.lookahead_vs_user(runs, main, "adam", "la"),
            "effective_step": ans.effective_step(runs, main, "adam", "la"),
            "k_alpha_vs_key": ans.k_alpha_vs_key(runs, main, "la"), "tuned": ans.tuned(runs, main),
            "effective_time": et.effective_time(by_arm, arms, lookahead_pairs(arms) + ans.effective_step_pairs(main))}
    want["user_ranking"] = ans.user_ranking(main, "adam", report["comparisons"], want["lookahead_vs_user"])
    whole = dict(report, **want)
    want.update(families=family_table(whole), machines=machine_summary(whole))
    assert json.dumps(got, sort_keys=True, default=str) == json.dumps(want, sort_keys=True, default=str)


def test_family_of_equivalence_tests_not_run_yet_has_m_zero():
    rep = {"study": {"reference": "adam"}, "comparisons": {}, "same_lr": {"pairs": []}, "trend": {"lines": []},
           "effective_step": {"pairs": [{"difference": _m(3, 1, 0.5), "equivalence": None}]}}
    rows = family_table(rep)
    assert [(r["name"], r["members"], r["m"], r["measured"]) for r in rows] == [
        ("effective-step pairs: difference", 1, 1, 1), ("effective-step pairs: equivalence (TOST)", 0, 0, 0)]


# ---------------------------------------------------------------------------- effective_time.py survivors
def test_crossing_exactly_at_the_level_and_the_late_window():
    assert et.crossing_epoch([0, 1, 2], [1.0, 0.5, 0.6], 0.5) == 1.0  # touching the level counts
    base = [1.0 - 0.1 * e for e in range(10)]
    # tau(t) = 0.5, 0.5, 1.5, 2, 2.5, 3 at t = 1..6: the pace is the slope over t >= 3 only (0.5)
    la = [1.0, 0.95, 0.95, 0.85, 0.8, 0.75, 0.7]
    assert et.seed_ratio(_curve_run(0, la), _curve_run(0, base), 6)["pace"] == pytest.approx(0.5)
