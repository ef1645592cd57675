"""Statistics of an optimizer study: pure functions over per-seed numbers, no I/O.

Runs of different arms with the same seed share the initial weights, the data order and the
augmentation, so arms are compared **paired by seed**: the per-seed difference ``arm - reference``
removes the seed-to-seed spread the two runs have in common. Every metric here is "lower is
better" unless ``lower_is_better=False`` is passed (NME, losses, EPE: lower; PCK, AUC: higher).

Confidence intervals are two-sided Student t intervals, ``mean +- t(1 - (1 - level) / 2, n - 1)
* sd / sqrt(n)``, with the sample standard deviation (``ddof=1``); the p-value is the two-sided
paired t-test's. A report draws many comparisons, so each **family** of comparisons (e.g. every
arm's final NME against the reference) gets Holm-adjusted p-values (:func:`holm`) and the verdict
uses them (:func:`adjust_family`); the unadjusted interval stays beside it. No verdict comes from
fewer than :data:`MIN_PAIRS` pairs (:data:`TOO_FEW`), and a comparison whose two sides have not
learned (both above the no-learning floor's threshold) gets :data:`NOT_LEARNED`, never better/worse.
A family's size is the one its plan gives (``m`` of :func:`holm`), not the members finished so far.
Where the question is "does it match", :func:`equivalence_test` (two one-sided tests, TOST) asks
whether the paired difference lies within a stated margin.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Summary", "PairedComparison", "summarize", "t_quantile", "paired_comparison", "holm", "adjust_family",
           "decide", "epochs_to_reach", "censored_reach", "common_seeds", "mean_on_seeds", "rank_on_common_seeds",
           "Equivalence", "equivalence_test", "adjust_equivalence", "BETTER", "WORSE", "NO_DIFFERENCE", "TOO_FEW",
           "NOT_LEARNED", "EQUIVALENT", "NOT_SHOWN_EQUIVALENT", "MIN_PAIRS"]

BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no detectable difference at this n"
TOO_FEW = "too few seeds"
NOT_LEARNED = "has not learned"
EQUIVALENT = "equivalent within the margin"
NOT_SHOWN_EQUIVALENT = "not shown equivalent at this n"
#: The fewest seed pairs a verdict is drawn from (a t interval with 1 degree of freedom says little).
MIN_PAIRS = 3


def t_quantile(level: float, dof: int) -> float:
    """Two-sided Student t critical value: ``t.ppf(1 - (1 - level) / 2, dof)``; NaN for ``dof < 1``."""
    if dof < 1:
        return float("nan")
    from scipy.stats import t

    return float(t.ppf(1.0 - (1.0 - level) / 2.0, dof))


def _finite(values: Iterable[Optional[float]]) -> np.ndarray:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    return v[np.isfinite(v)]


def _ok(v: Optional[float]) -> bool:
    return v is not None and math.isfinite(v)


@dataclass(frozen=True)
class Summary:
    """Mean, sample std (ddof 1) and the ``level`` Student t interval of the finite values."""
    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float
    level: float = 0.95

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def summarize(values: Iterable[Optional[float]], level: float = 0.95) -> Summary:
    """:class:`Summary` of ``values`` (None / NaN / inf dropped). n 0: all NaN; n 1: std and CI NaN."""
    v = _finite(values)
    n = len(v)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, level)
    mean = float(v.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan, level)
    std = float(v.std(ddof=1))
    half = t_quantile(level, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half, level)


def _t_test_p(mean: float, std: float, n: int) -> float:
    """Two-sided one-sample t-test p-value of ``mean == 0`` (NaN below 2 values; 0 or 1 when std is 0)."""
    if n < 2 or not math.isfinite(mean):
        return math.nan
    if std == 0:
        return 1.0 if mean == 0 else 0.0
    from scipy.stats import t

    return float(2.0 * t.sf(abs(mean) / (std / math.sqrt(n)), n - 1))


class _PerSeed:
    """``n`` and ``to_dict`` of a per-seed result dataclass (fields ``seeds`` and ``diffs``)."""
    seeds: tuple
    diffs: tuple

    @property
    def n(self) -> int:
        return len(self.seeds)

    def to_dict(self) -> Dict[str, object]:
        d = asdict(self)
        d["seeds"], d["diffs"], d["n"] = list(self.seeds), list(self.diffs), self.n
        return d


@dataclass(frozen=True)
class PairedComparison(_PerSeed):
    """An arm against a reference over the seeds both finished.

    ``diffs`` are per seed ``arm - reference`` (so negative favours the arm when lower is better);
    ``mean_diff`` and ``ci_low`` / ``ci_high`` summarise them (Student t, ``level``, unadjusted);
    ``p_value`` is the paired t-test's, ``p_adjusted`` the Holm-adjusted one of its family (the
    same as ``p_value`` for a family of one); ``n_arm_better`` / ``n_ref_better`` / ``n_ties``
    count the seeds; ``verdict`` (from ``p_adjusted``) is :data:`BETTER` / :data:`WORSE` (the arm),
    :data:`NO_DIFFERENCE`, :data:`TOO_FEW` or :data:`NOT_LEARNED`.
    """
    seeds: tuple
    diffs: tuple
    mean_diff: float
    std_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    p_adjusted: float
    n_arm_better: int
    n_ref_better: int
    n_ties: int
    verdict: str
    lower_is_better: bool = True
    level: float = 0.95
    family_size: int = 1


def decide(n: int, mean_diff: float, p: float, lower_is_better: bool = True, level: float = 0.95,
           not_learned: bool = False) -> str:
    """The verdict of one comparison from its (adjusted) p-value: :data:`NOT_LEARNED` when both
    sides have not learned, :data:`TOO_FEW` below :data:`MIN_PAIRS` pairs, better / worse when
    ``p < 1 - level`` (the side given by the sign of ``mean_diff``), else :data:`NO_DIFFERENCE`."""
    if not_learned:
        return NOT_LEARNED
    if n < MIN_PAIRS:
        return TOO_FEW
    if not (math.isfinite(p) and p < 1.0 - level and mean_diff != 0):
        return NO_DIFFERENCE
    arm_lower = mean_diff < 0
    return BETTER if arm_lower == lower_is_better else WORSE


def paired_comparison(arm: Mapping[int, Optional[float]], reference: Mapping[int, Optional[float]],
                      lower_is_better: bool = True, level: float = 0.95, not_learned: bool = False
                      ) -> PairedComparison:
    """Compare ``arm`` with ``reference``, both ``seed -> value``, over the seeds where both are finite.

    Pairs are matched by seed (never by position), so the result does not depend on the order of
    either mapping. The verdict is that of a family of one (:func:`decide`); a report adjusts it
    with the rest of its family through :func:`adjust_family`.
    """
    seeds = sorted(s for s in arm if s in reference and _ok(arm[s]) and _ok(reference[s]))
    diffs = np.array([float(arm[s]) - float(reference[s]) for s in seeds], dtype=np.float64)
    s = summarize(diffs, level)
    sign = 1.0 if lower_is_better else -1.0  # sign * diff < 0: the arm is better on that seed
    n_arm = int(np.sum(sign * diffs < 0))
    n_ref = int(np.sum(sign * diffs > 0))
    p = _t_test_p(s.mean, s.std, s.n)
    return PairedComparison(tuple(seeds), tuple(float(d) for d in diffs), s.mean, s.std, s.ci_low, s.ci_high,
                            p, p, n_arm, n_ref, len(seeds) - n_arm - n_ref,
                            decide(s.n, s.mean, p, lower_is_better, level, not_learned), lower_is_better, level)


def holm(p_values: Sequence[float], m: Optional[int] = None) -> List[float]:
    """Holm's step-down adjusted p-values, in the input order; NaN entries stay NaN.

    With the p-values sorted ascending, ``p_adj(i) = max_{j <= i} min(1, (m - j + 1) p(j))`` (1-based
    ``j``): rejecting where ``p_adj < alpha`` keeps the family-wise error rate <= alpha. ``m``: the
    family's planned size (default: the finite p-values); members without a p-value yet count as
    p = 1 (sorted last), so each adjusted p is an upper bound of the one the complete family gives
    with the same measured p-values: a member finishing can only lower the others' adjusted p.
    """
    idx = [i for i, p in enumerate(p_values) if p is not None and math.isfinite(p)]
    order = sorted(idx, key=lambda i: p_values[i])
    size = len(order) if m is None else max(int(m), len(order))
    out = [math.nan] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (size - rank) * float(p_values[i])))
        out[i] = running
    return out


def adjust_family(family: Mapping[str, PairedComparison], not_learned: Iterable[str] = (),
                  m: Optional[int] = None) -> Dict[str, PairedComparison]:
    """The comparisons of one family with Holm-adjusted p-values and the verdicts they give.

    Every comparison with a p-value (two pairs or more) counts in the family, including those
    too small for a verdict, so the correction is never smaller than the tests drawn; ``m``: the
    planned family size (:func:`holm`), for a family fixed by the plan rather than by what finished.
    ``not_learned``: the keys whose two sides both have not learned (verdict :data:`NOT_LEARNED`).
    """
    keys = list(family)
    adjusted = holm([family[k].p_value for k in keys], m)
    m = max(m or 0, sum(math.isfinite(p) for p in adjusted))
    skip = set(not_learned)
    out = {}
    for k, p in zip(keys, adjusted):
        c = family[k]
        out[k] = replace(c, p_adjusted=p, family_size=m,
                         verdict=decide(c.n, c.mean_diff, p, c.lower_is_better, c.level, k in skip))
    return out


@dataclass(frozen=True)
class Equivalence(_PerSeed):
    """Two one-sided paired t-tests (TOST) of ``-margin < mean(arm - reference) < margin``.

    ``p_lower``: H0 mean <= -margin; ``p_upper``: H0 mean >= +margin; ``p_value`` the larger of the
    two; equivalence at level ``1 - alpha`` exactly when the ``1 - 2 alpha`` interval
    (``ci_low``, ``ci_high``: 90% at the default 95%) lies inside (-margin, +margin).
    """
    seeds: tuple
    diffs: tuple
    margin: float
    mean_diff: float
    ci_low: float
    ci_high: float
    p_lower: float
    p_upper: float
    p_value: float
    p_adjusted: float
    verdict: str
    level: float = 0.95
    family_size: int = 1


def _equivalence_verdict(n: int, p: float, level: float) -> str:
    if n < MIN_PAIRS:
        return TOO_FEW
    return EQUIVALENT if math.isfinite(p) and p < 1.0 - level else NOT_SHOWN_EQUIVALENT


def equivalence_test(arm: Mapping[int, Optional[float]], reference: Mapping[int, Optional[float]], margin: float,
                     level: float = 0.95) -> Equivalence:
    """TOST of ``arm - reference`` paired by seed (the seeds where both are finite) at ``+-margin``."""
    from scipy.stats import t

    seeds = sorted(s for s in arm if s in reference and _ok(arm[s]) and _ok(reference[s]))
    diffs = np.array([float(arm[s]) - float(reference[s]) for s in seeds], dtype=np.float64)
    s = summarize(diffs, 1.0 - 2.0 * (1.0 - level))
    p_lo = p_hi = math.nan
    if s.n >= 2 and margin > 0:
        se = s.std / math.sqrt(s.n)
        if se == 0:
            p_lo, p_hi = float(s.mean <= -margin), float(s.mean >= margin)
        else:
            p_lo = float(t.sf((s.mean + margin) / se, s.n - 1))
            p_hi = float(t.cdf((s.mean - margin) / se, s.n - 1))
    p = max(p_lo, p_hi) if math.isfinite(p_lo) else math.nan
    return Equivalence(tuple(seeds), tuple(float(d) for d in diffs), float(margin), s.mean, s.ci_low, s.ci_high,
                       p_lo, p_hi, p, p, _equivalence_verdict(s.n, p, level), level)


def adjust_equivalence(family: Mapping[str, Equivalence], m: Optional[int] = None) -> Dict[str, Equivalence]:
    """The TOST results of one family with Holm-adjusted p-values (planned size ``m``) and their verdicts."""
    keys = list(family)
    adjusted = holm([family[k].p_value for k in keys], m)
    size = max(m or 0, sum(math.isfinite(p) for p in adjusted))
    return {k: replace(family[k], p_adjusted=p, family_size=size,
                       verdict=_equivalence_verdict(family[k].n, p, family[k].level)) for k, p in zip(keys, adjusted)}


def epochs_to_reach(epochs: Sequence[int], values: Sequence[Optional[float]], level: float) -> Optional[int]:
    """The first epoch whose value is at or below ``level`` (e.g. valid NME); None if never reached."""
    for e, v in zip(epochs, values):
        if _ok(v) and v <= level:
            return int(e)
    return None


def censored_reach(per_seed: Mapping[object, Optional[int]]) -> Dict[str, object]:
    """Epochs to reach a level over seeds, a seed that never reached it counted as infinitely slow.

    Returns ``n`` (seeds), ``n_reached``, ``median`` (None when the median seed did not reach it:
    the median is then "not reached", never a mean of the seeds that did) and ``per_seed``.
    """
    vals = sorted(math.inf if v is None else float(v) for v in per_seed.values())
    median: Optional[float] = None
    if vals:
        m = _median(vals)
        median = m if math.isfinite(m) else None
    return {"n": len(vals), "n_reached": sum(map(math.isfinite, vals)), "median": median,
            "per_seed": {str(k): v for k, v in per_seed.items()}}


def _median(sorted_vals: Sequence[float]) -> float:
    """The median of sorted values that may hold inf (the mean of the middle two when n is even)."""
    n = len(sorted_vals)
    mid = sorted_vals[n // 2] if n % 2 else (sorted_vals[n // 2 - 1] + sorted_vals[n // 2]) / 2.0
    return float(mid)


def common_seeds(per_arm: Mapping[str, Mapping[int, Optional[float]]]) -> List[int]:
    """The seeds at which every arm of ``per_arm`` (``arm -> seed -> value``) has a finite value."""
    sets = [{s for s, v in vals.items() if _ok(v)} for vals in per_arm.values()]
    return sorted(set.intersection(*sets)) if sets else []


def mean_on_seeds(values: Mapping[int, Optional[float]], seeds: Sequence[int]) -> float:
    """The mean of ``values`` over ``seeds`` (NaN when ``seeds`` is empty)."""
    return float(np.mean([float(values[s]) for s in seeds])) if seeds else math.nan


def rank_on_common_seeds(per_arm: Mapping[str, Mapping[int, Optional[float]]], lower_is_better: bool = True
                         ) -> Tuple[List[int], List[Tuple[str, float]]]:
    """Arms ordered best first by their mean over the seeds they all share: ``(seeds, [(arm, mean)])``.

    Means over different seed sets are not comparable (a hard seed in one arm only moves its
    mean), hence the common seeds; empty when the arms share no seed.
    """
    seeds = common_seeds(per_arm)
    if not seeds:
        return [], []
    means = [(a, mean_on_seeds(v, seeds)) for a, v in per_arm.items()]
    return seeds, sorted(means, key=lambda am: am[1] if lower_is_better else -am[1])
