"""hrnet.study.analyse.stats against scipy.stats on known inputs, the verdict logic, and properties (hypothesis)
that hold for any input: pairing does not depend on the order of the runs, an interval holds its mean."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from hypothesis import given, settings
from hypothesis import strategies as st

from hrnet.study.analyse.stats import (BETTER, NO_DIFFERENCE, NOT_LEARNED, TOO_FEW, WORSE, adjust_family, censored_reach,
                               decide, epochs_to_reach, mean_on_seeds, paired_comparison, rank_on_common_seeds,
                               summarize, t_quantile)

ARM = {0: 0.199, 1: 0.195, 2: 0.2095, 3: 0.188, 4: 0.197}
REF = {0: 0.205, 1: 0.204, 2: 0.209, 3: 0.197, 4: 0.203}


def test_t_quantile_matches_known_values():
    # Textbook two-sided 95% critical values.
    assert t_quantile(0.95, 1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(0.95, 4) == pytest.approx(2.776, abs=1e-3)
    assert t_quantile(0.90, 9) == pytest.approx(1.833, abs=1e-3)
    assert math.isnan(t_quantile(0.95, 0))


def test_summarize_matches_scipy_interval():
    values = [0.31, 0.27, 0.35, 0.29]
    s = summarize(values)
    lo, hi = sps.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sps.sem(values))
    assert (s.n, s.mean, s.std) == (4, pytest.approx(np.mean(values)), pytest.approx(np.std(values, ddof=1)))
    assert (s.ci_low, s.ci_high) == (pytest.approx(lo), pytest.approx(hi))


def test_summarize_drops_missing_and_handles_small_n():
    s = summarize([0.2, None, float("nan"), float("inf"), 0.4])
    assert s.n == 2 and s.mean == pytest.approx(0.3)
    one = summarize([0.5])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.std) and math.isnan(one.ci_low)
    assert summarize([]).n == 0 and math.isnan(summarize([]).mean)


def test_paired_interval_agrees_with_ttest_rel():
    c = paired_comparison(ARM, REF)
    a = np.array([ARM[s] for s in sorted(ARM)])
    r = np.array([REF[s] for s in sorted(REF)])
    res = sps.ttest_rel(a, r)
    ci = res.confidence_interval(0.95)
    assert c.n == 5 and c.seeds == (0, 1, 2, 3, 4)
    assert c.mean_diff == pytest.approx(float(np.mean(a - r)))
    assert (c.ci_low, c.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    # The interval excludes 0 exactly when the two-sided paired t-test rejects at 5%; same p-value.
    assert c.p_value == pytest.approx(res.pvalue) and c.p_adjusted == c.p_value
    assert (c.verdict != NO_DIFFERENCE) == (res.pvalue < 0.05)
    assert c.verdict == BETTER  # arm lower on 4 of 5 seeds, p about 0.03
    assert (c.n_arm_better, c.n_ref_better, c.n_ties) == (4, 1, 0)


def test_paired_uses_only_shared_finite_seeds():
    c = paired_comparison({0: 0.3, 1: 0.2, 2: float("nan"), 7: 0.1}, {0: 0.25, 1: 0.25, 2: 0.2, 3: 0.2})
    assert c.seeds == (0, 1)
    assert c.diffs == (pytest.approx(0.05), pytest.approx(-0.05))
    assert (c.n_arm_better, c.n_ref_better) == (1, 1)


def test_verdicts():
    worse = paired_comparison({s: v + 0.05 + 0.001 * s for s, v in REF.items()}, REF)
    assert worse.verdict == WORSE and worse.n_ref_better == 5
    # Higher is better (PCK): the same numbers flip the verdict.
    flipped = paired_comparison({s: v + 0.05 + 0.001 * s for s, v in REF.items()}, REF, lower_is_better=False)
    assert flipped.verdict == BETTER and flipped.n_arm_better == 5
    noisy = paired_comparison({0: 0.20, 1: 0.30, 2: 0.18}, {0: 0.25, 1: 0.21, 2: 0.22})
    assert noisy.verdict == NO_DIFFERENCE
    # Fewer than 3 pairs, however large the gap, give no verdict; identical runs give no difference.
    assert paired_comparison({0: 0.9}, {0: 0.1}).verdict == TOO_FEW
    assert paired_comparison({0: 0.9, 1: 0.91}, {0: 0.1, 1: 0.1}).verdict == TOO_FEW
    assert paired_comparison(REF, REF).verdict == NO_DIFFERENCE
    assert paired_comparison(REF, REF).n_ties == 5


def test_epochs_to_reach():
    epochs, nme = [0, 1, 2, 3, 4], [0.7, 0.4, float("nan"), 0.25, 0.19]
    assert epochs_to_reach(epochs, nme, 0.3) == 3
    assert epochs_to_reach(epochs, nme, 0.4) == 1  # at the level counts
    assert epochs_to_reach(epochs, nme, 0.1) is None



def test_summary_fields_at_every_n_and_level():
    for values in ([], [None, float("nan")], [0.5]):
        d = summarize(values, level=0.9).to_dict()
        assert d["n"] == len([v for v in values if v is not None and math.isfinite(v)]) and d["level"] == 0.9
        assert all(math.isnan(d[k]) for k in ("std", "ci_low", "ci_high"))
        assert math.isnan(d["mean"]) == (d["n"] == 0)
    values = [0.31, 0.27, 0.35, 0.29]
    s = summarize(values, level=0.9)
    lo, hi = sps.t.interval(0.9, 3, loc=np.mean(values), scale=sps.sem(values))
    assert s.level == 0.9 and (s.ci_low, s.ci_high) == (pytest.approx(lo), pytest.approx(hi))


def test_summarize_computes_in_float64_whatever_the_input_dtype():
    # float32 metrics (a model's outputs) summarised in float32 would lose about 1e-8 relative.
    values32 = np.array([0.1, 0.2, 0.7, 0.4], dtype=np.float32)
    s = summarize(values32)
    v64 = values32.astype(np.float64)
    assert s.mean == np.mean(v64) and s.std == np.std(v64, ddof=1)


def test_p_value_at_two_pairs_and_with_identical_differences():
    # Two pairs: a p-value (it counts in its Holm family) but no verdict.
    two = paired_comparison({0: 0.3, 1: 0.5}, {0: 0.1, 1: 0.2})
    assert two.p_value == pytest.approx(sps.ttest_rel([0.3, 0.5], [0.1, 0.2]).pvalue) and two.verdict == TOO_FEW
    assert math.isnan(paired_comparison({0: 0.3}, {0: 0.1}).p_value)
    # Every seed differs by exactly the same amount (std 0): certain, p 0; no difference at all: p 1.
    same_gap = paired_comparison({0: 0.5, 1: 0.75, 2: 1.0}, {0: 0.25, 1: 0.5, 2: 0.75})
    assert same_gap.diffs == (0.25, 0.25, 0.25) and same_gap.std_diff == 0.0
    assert same_gap.p_value == 0.0 and same_gap.verdict == WORSE
    assert paired_comparison(REF, REF).p_value == 1.0


def test_paired_comparison_fields_level_and_not_learned():
    c = paired_comparison(ARM, REF, level=0.9)
    a, r = (np.array([m[s] for s in sorted(m)]) for m in (ARM, REF))
    ci = sps.ttest_rel(a, r).confidence_interval(0.9)
    assert c.level == 0.9 and (c.ci_low, c.ci_high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert c.std_diff == pytest.approx(np.std(a - r, ddof=1))
    assert paired_comparison(ARM, REF, not_learned=True).verdict == NOT_LEARNED
    d = c.to_dict()
    assert set(d) == {"seeds", "diffs", "n", "mean_diff", "std_diff", "ci_low", "ci_high", "p_value", "p_adjusted",
                      "n_arm_better", "n_ref_better", "n_ties", "verdict", "lower_is_better", "level", "family_size"}
    assert d["seeds"] == [0, 1, 2, 3, 4] and d["diffs"] == list(c.diffs) and d["n"] == 5  # lists: JSON as written
    # Ties are ties whichever way the metric is oriented.
    assert paired_comparison(REF, REF, lower_is_better=False).n_ties == 5


def test_decide_defaults_and_boundaries():
    assert decide(5, -0.1, 0.01) == BETTER  # lower is better, 95%, learned: the defaults
    assert decide(5, 1.0, 0.001) == WORSE
    assert decide(5, -0.1, 1.0 - 0.95) == NO_DIFFERENCE  # p must be below alpha, not equal to it
    assert decide(5, 0.0, 0.01) == NO_DIFFERENCE  # no mean difference has no side
    assert decide(2, -0.1, 0.01) == TOO_FEW and decide(5, -0.1, 0.01, not_learned=True) == NOT_LEARNED
    assert decide(5, -0.1, 0.07, level=0.9) == BETTER and decide(5, -0.1, float("nan")) == NO_DIFFERENCE


def test_censored_reach_fields_and_odd_medians():
    assert censored_reach({}) == {"n": 0, "n_reached": 0, "median": None, "per_seed": {}}
    r = censored_reach({3: 9, 1: None, 0: 2, 2: 4, 4: 6})
    assert r == {"n": 5, "n_reached": 4, "median": 6.0, "per_seed": {"3": 9, "1": None, "0": 2, "2": 4, "4": 6}}


def test_mean_on_seeds_and_higher_is_better_ranking():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" warning in a report's log
        assert math.isnan(mean_on_seeds({0: 0.2}, []))
    assert mean_on_seeds({0: 0.2, 1: 0.4, 2: 9.0}, [0, 1]) == pytest.approx(0.3)
    pck = {"a": {0: 0.5, 1: 0.7}, "b": {0: 0.8, 1: 0.9}, "c": {0: 0.1, 1: 0.2}}
    seeds, order = rank_on_common_seeds(pck, lower_is_better=False)
    assert seeds == [0, 1] and order == [("b", pytest.approx(0.85)), ("a", pytest.approx(0.6)),
                                         ("c", pytest.approx(0.15))]


# ---------------------------------------------------------------------------- properties
_value = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.integers(0, 20), st.tuples(_value, _value), min_size=2, max_size=8), st.randoms())
def test_pairing_does_not_depend_on_the_order_of_the_runs(pairs, rnd):
    arm = {s: a for s, (a, _) in pairs.items()}
    ref = {s: r for s, (_, r) in pairs.items()}
    seeds = list(pairs)
    rnd.shuffle(seeds)
    shuffled = paired_comparison({s: arm[s] for s in seeds}, {s: ref[s] for s in reversed(seeds)})
    assert shuffled == paired_comparison(arm, ref)
    fam = {"x": paired_comparison(arm, ref), "y": paired_comparison(ref, arm)}
    assert adjust_family(dict(reversed(list(fam.items())))) == adjust_family(fam)


@settings(max_examples=80, deadline=None)
@given(st.lists(_value, min_size=2, max_size=12), st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_an_interval_contains_its_mean_and_is_ordered(values, level):
    s = summarize(values, level)
    assert s.ci_low <= s.mean <= s.ci_high
    c = paired_comparison(dict(enumerate(values)), {i: 0.0 for i in range(len(values))}, level=level)
    assert c.ci_low <= c.mean_diff <= c.ci_high
    flipped = paired_comparison(dict(enumerate(values)), {i: 0.0 for i in range(len(values))},
                                lower_is_better=False, level=level)
    assert (flipped.ci_low, flipped.ci_high) == (c.ci_low, c.ci_high)  # the interval is of arm - ref either way


def test_t_test_p_needs_two_values_whatever_the_std():
    from hrnet.study.analyse.stats import _t_test_p
    # One value carries no spread: no p-value, even if a caller passes std 0 (which would read as p 0).
    assert math.isnan(_t_test_p(0.1, 0.0, 1)) and math.isnan(_t_test_p(float("nan"), 0.1, 5))
    assert _t_test_p(0.1, 0.0, 2) == 0.0 and _t_test_p(0.0, 0.0, 2) == 1.0


# ---------------------------------------------------------------------------- equivalence (TOST)
from dataclasses import replace  # noqa: E402

from hrnet.study.analyse.stats import (EQUIVALENT, NOT_SHOWN_EQUIVALENT, adjust_equivalence,  # noqa: E402
                                       common_seeds, equivalence_test, holm)

TOST_ARM = {0: 0.204, 1: 0.198, 2: 0.201, 3: 0.203, 4: 0.199, 9: 0.5}
TOST_REF = {0: 0.200, 1: 0.200, 2: 0.200, 3: 0.200, 4: 0.200, 7: 0.1}


def _tost_scipy(d: np.ndarray, margin: float, level: float) -> tuple:
    """(p_lower, p_upper, ci_low, ci_high) of two one-sided one-sample t-tests, from scipy alone."""
    lo = sps.ttest_1samp(d, -margin, alternative="greater").pvalue
    hi = sps.ttest_1samp(d, margin, alternative="less").pvalue
    ci = sps.t.interval(1 - 2 * (1 - level), len(d) - 1, loc=d.mean(), scale=sps.sem(d))
    return lo, hi, ci[0], ci[1]


@pytest.mark.parametrize("margin,level", [(0.006, 0.95), (0.004, 0.9), (0.0025, 0.95)])
def test_tost_fields_against_scipy(margin, level):
    e = equivalence_test(TOST_ARM, TOST_REF, margin, level=level)
    d = np.array([TOST_ARM[s] - TOST_REF[s] for s in range(5)])
    p_lo, p_hi, lo, hi = _tost_scipy(d, margin, level)
    assert e.seeds == (0, 1, 2, 3, 4) and e.n == 5 and e.diffs == pytest.approx(tuple(d))
    assert (e.p_lower, e.p_upper, e.ci_low, e.ci_high) == tuple(pytest.approx(x, rel=1e-9) for x in (p_lo, p_hi, lo, hi))
    assert e.p_value == e.p_adjusted == pytest.approx(max(p_lo, p_hi), rel=1e-9)
    assert e.mean_diff == pytest.approx(d.mean()) and e.level == level and e.family_size == 1
    assert e.verdict == (EQUIVALENT if max(p_lo, p_hi) < 1 - level else NOT_SHOWN_EQUIVALENT)
    assert e.to_dict() == dict(seeds=[0, 1, 2, 3, 4], diffs=list(e.diffs), n=5, margin=margin, mean_diff=e.mean_diff,
                               ci_low=e.ci_low, ci_high=e.ci_high, p_lower=e.p_lower, p_upper=e.p_upper,
                               p_value=e.p_value, p_adjusted=e.p_adjusted, verdict=e.verdict, level=level,
                               family_size=1)


def test_tost_verdicts_at_the_margins_and_small_n():
    # Margin 0.006: p about 0.003 (equivalent); 0.0025: p about 0.14 (not shown); 0.004 at level 0.9: p < 0.1.
    assert equivalence_test(TOST_ARM, TOST_REF, 0.006).verdict == EQUIVALENT
    assert equivalence_test(TOST_ARM, TOST_REF, 0.0025).verdict == NOT_SHOWN_EQUIVALENT
    # Two pairs have p-values but no verdict; one pair has neither; a margin of 0 or less tests nothing.
    two = equivalence_test({0: 0.2, 1: 0.21}, {0: 0.2, 1: 0.2}, 0.1)
    d = np.array([0.0, 0.01])
    assert (two.p_lower, two.p_upper) == tuple(pytest.approx(x) for x in _tost_scipy(d, 0.1, 0.95)[:2])
    assert two.verdict == TOO_FEW
    one = equivalence_test({0: 0.2}, {0: 0.2}, 0.1)
    assert math.isnan(one.p_lower) and math.isnan(one.p_upper) and math.isnan(one.p_value) and one.verdict == TOO_FEW
    for margin in (0.0, -0.01):
        z = equivalence_test(TOST_ARM, TOST_REF, margin)
        assert math.isnan(z.p_lower) and math.isnan(z.p_value) and z.verdict == NOT_SHOWN_EQUIVALENT


@pytest.mark.parametrize("gap,margin,p_lower,p_upper,verdict", [
    (0.125, 0.25, 0.0, 0.0, EQUIVALENT),              # every seed differs by the same amount, inside the margin
    (0.125, 0.125, 0.0, 1.0, NOT_SHOWN_EQUIVALENT),   # exactly at +margin: the upper H0 (mean >= margin) holds
    (-0.125, 0.125, 1.0, 0.0, NOT_SHOWN_EQUIVALENT),  # exactly at -margin: the lower H0 holds
    (0.125, 0.0625, 0.0, 1.0, NOT_SHOWN_EQUIVALENT)])
def test_tost_with_identical_differences(gap, margin, p_lower, p_upper, verdict):
    ref = {0: 0.25, 1: 0.5, 2: 0.75}  # binary fractions: the differences are exactly equal, std exactly 0
    e = equivalence_test({s: v + gap for s, v in ref.items()}, ref, margin)
    assert e.diffs == (gap,) * 3 and (e.p_lower, e.p_upper, e.p_value) == (p_lower, p_upper, max(p_lower, p_upper))
    assert e.verdict == verdict


def test_adjust_equivalence_is_holm_over_the_planned_size():
    a = equivalence_test(TOST_ARM, TOST_REF, 0.006)
    b = equivalence_test(TOST_ARM, TOST_REF, 0.0045)
    fam = {"a": a, "b": b, "none": equivalence_test({}, {}, 0.006)}
    got = adjust_equivalence(fam, m=4)
    want = holm([a.p_value, b.p_value, math.nan], m=4)
    assert [got[k].p_adjusted for k in ("a", "b")] == [pytest.approx(w, rel=1e-12) for w in want[:2]]
    assert got["a"].p_adjusted == pytest.approx(min(1.0, 4 * a.p_value))  # the smaller p: 4 x
    assert got["b"].p_adjusted == pytest.approx(max(4 * a.p_value, 3 * b.p_value))
    assert all(g.family_size == 4 for g in got.values()) and math.isnan(got["none"].p_adjusted)
    assert got["a"].verdict == EQUIVALENT and got["b"].verdict == NOT_SHOWN_EQUIVALENT  # b: 0.036 alone, > 0.05 adjusted
    assert b.verdict == EQUIVALENT and got["none"].verdict == TOO_FEW
    assert (got["a"].p_value, got["a"].seeds) == (a.p_value, a.seeds)  # the rest unchanged
    # Without a planned size: the members with a p-value.
    plain = adjust_equivalence(fam)
    assert plain["a"].family_size == 2 and plain["a"].p_adjusted == pytest.approx(2 * a.p_value)
    # The member's own level decides: 2 x 0.0187 = 0.037 is below 0.05 and 0.1, not below 0.01.
    for level, verdict in ((0.9, EQUIVALENT), (0.95, EQUIVALENT), (0.99, NOT_SHOWN_EQUIVALENT)):
        got = adjust_equivalence({"b": equivalence_test(TOST_ARM, TOST_REF, 0.0045, level=level)}, m=2)["b"]
        assert got.p_adjusted == pytest.approx(2 * b.p_value) and (got.verdict, got.level) == (verdict, level)
    # A p adjusted to exactly alpha is not below it: not shown (as decide's p == alpha).
    edge = adjust_equivalence({"a": replace(a, p_value=(1.0 - 0.95) / 2)}, m=2)["a"]
    assert edge.p_adjusted == 1.0 - 0.95 and edge.verdict == NOT_SHOWN_EQUIVALENT
    assert adjust_equivalence({"none": equivalence_test({}, {}, 0.006)})["none"].family_size == 0


def test_tost_verdict_at_three_pairs():
    e = equivalence_test({0: 0.201, 1: 0.199, 2: 0.2}, {0: 0.2, 1: 0.2, 2: 0.2}, 0.01)
    assert e.n == 3 and e.p_value < 0.01 and e.verdict == EQUIVALENT


def test_holm_caps_at_one_and_adjust_family_recomputes_each_verdict():
    assert holm([0.6, 0.7, math.nan]) == [1.0, 1.0, pytest.approx(math.nan, nan_ok=True)]
    worse = paired_comparison({s: v + 0.05 + 0.001 * s for s, v in REF.items()}, REF)  # p 2e-7
    higher = paired_comparison({s: v + 0.05 + 0.001 * s for s, v in REF.items()}, REF, lower_is_better=False)
    assert (worse.lower_is_better, higher.lower_is_better) == (True, False)
    for level, verdict in ((0.9, BETTER), (0.95, NO_DIFFERENCE)):
        fam = {"w": worse, "f": higher, "nl": worse, "x": paired_comparison(ARM, REF, level=level)}  # x: p 0.0273
        got = adjust_family(fam, ["nl"], m=5)
        assert got["x"].p_adjusted == pytest.approx(2 * fam["x"].p_value)  # 4th smallest of 5: 2 x, 0.0545
        assert {k: c.verdict for k, c in got.items()} == {"w": WORSE, "f": BETTER, "nl": NOT_LEARNED, "x": verdict}
        assert all(c.family_size == 5 for c in got.values()) and got["f"].lower_is_better is False
    assert adjust_family({"a": paired_comparison({}, {})})["a"].family_size == 0  # no p-value: no member yet


def test_censored_reach_even_medians_and_unreached_median():
    assert censored_reach({0: 2, 1: 4, 2: 10, 3: None})["median"] == 7.0
    assert censored_reach({0: 3, 1: 5})["median"] == 4.0
    assert censored_reach({0: None, 1: None, 2: 3}) == {"n": 3, "n_reached": 1, "median": None,
                                                        "per_seed": {"0": None, "1": None, "2": 3}}
    assert censored_reach({0: None, 1: 3})["median"] is None  # the mean of 3 and "never" is never


def test_common_seeds_and_default_ranking():
    assert common_seeds({}) == [] and rank_on_common_seeds({}) == ([], [])
    assert rank_on_common_seeds({"a": {0: 0.1}, "b": {1: 0.2}}) == ([], [])
    got = rank_on_common_seeds({"a": {0: 0.3, 1: 0.5, 2: None}, "b": {0: 0.1, 1: 0.2, 2: 0.9}})
    assert got == ([0, 1], [("b", pytest.approx(0.15)), ("a", pytest.approx(0.4))])  # lower first by default
