"""hrnet.study.stats against scipy.stats on known inputs, the verdict logic, and properties (hypothesis)
that hold for any input: pairing does not depend on the order of the runs, an interval holds its mean."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from hypothesis import given, settings
from hypothesis import strategies as st

from hrnet.study.stats import (BETTER, NO_DIFFERENCE, TOO_FEW, WORSE, adjust_family, epochs_to_reach,
                               paired_comparison, summarize, t_quantile)

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
