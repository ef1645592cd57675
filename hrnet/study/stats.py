"""Statistics of an optimizer study: pure functions over per-seed numbers, no I/O.

Runs of different arms with the same seed share the initial weights, the data order and the
augmentation, so arms are compared **paired by seed**: the per-seed difference ``arm - reference``
removes the seed-to-seed spread the two runs have in common. Every metric here is "lower is
better" unless ``lower_is_better=False`` is passed (NME, losses, EPE: lower; PCK, AUC: higher).

Confidence intervals are two-sided Student t intervals, ``mean +- t(1 - (1 - level) / 2, n - 1)
* sd / sqrt(n)``, with the sample standard deviation (``ddof=1``). With fewer than two values an
interval is undefined (NaN bounds) and a comparison's verdict is "no detectable difference at this n".
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

__all__ = ["Summary", "PairedComparison", "summarize", "t_quantile", "paired_comparison", "epochs_to_reach",
           "BETTER", "WORSE", "NO_DIFFERENCE"]

BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no detectable difference at this n"


def t_quantile(level: float, dof: int) -> float:
    """Two-sided Student t critical value: ``t.ppf(1 - (1 - level) / 2, dof)``; NaN for ``dof < 1``."""
    if dof < 1:
        return float("nan")
    from scipy.stats import t

    return float(t.ppf(1.0 - (1.0 - level) / 2.0, dof))


def _finite(values: Sequence[float]) -> np.ndarray:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    return v[np.isfinite(v)]


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


def summarize(values: Sequence[Optional[float]], level: float = 0.95) -> Summary:
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


@dataclass(frozen=True)
class PairedComparison:
    """An arm against the reference over the seeds both finished.

    ``diffs`` are per seed ``arm - reference`` (so negative favours the arm when lower is better);
    ``mean_diff`` and ``ci_low`` / ``ci_high`` summarise them (Student t, ``level``);
    ``n_arm_better`` / ``n_ref_better`` / ``n_ties`` count the seeds; ``verdict`` is
    :data:`BETTER` / :data:`WORSE` (the arm, when the interval excludes 0) or :data:`NO_DIFFERENCE`.
    """
    seeds: tuple
    diffs: tuple
    mean_diff: float
    std_diff: float
    ci_low: float
    ci_high: float
    n_arm_better: int
    n_ref_better: int
    n_ties: int
    verdict: str
    lower_is_better: bool = True
    level: float = 0.95

    @property
    def n(self) -> int:
        return len(self.seeds)

    def to_dict(self) -> Dict[str, object]:
        d = asdict(self)
        d["seeds"], d["diffs"], d["n"] = list(self.seeds), list(self.diffs), self.n
        return d


def paired_comparison(arm: Mapping[int, Optional[float]], reference: Mapping[int, Optional[float]],
                      lower_is_better: bool = True, level: float = 0.95) -> PairedComparison:
    """Compare ``arm`` with ``reference``, both ``seed -> value``, over the seeds where both are finite.

    The verdict is "better" when the whole ``level`` interval of the mean paired difference lies on
    the arm's good side of 0, "worse" when it lies on the other side, else "no detectable
    difference at this n" (always so with fewer than two pairs).
    """
    seeds = sorted(s for s in arm if s in reference and arm[s] is not None and reference[s] is not None
                   and math.isfinite(arm[s]) and math.isfinite(reference[s]))
    diffs = np.array([float(arm[s]) - float(reference[s]) for s in seeds], dtype=np.float64)
    s = summarize(diffs, level)
    sign = 1.0 if lower_is_better else -1.0  # sign * diff < 0: the arm is better on that seed
    n_arm = int(np.sum(sign * diffs < 0))
    n_ref = int(np.sum(sign * diffs > 0))
    verdict = NO_DIFFERENCE
    if s.n >= 2 and math.isfinite(s.ci_low):
        lo, hi = sorted((sign * s.ci_low, sign * s.ci_high))
        if hi < 0:
            verdict = BETTER
        elif lo > 0:
            verdict = WORSE
    return PairedComparison(tuple(seeds), tuple(float(d) for d in diffs), s.mean, s.std, s.ci_low, s.ci_high,
                            n_arm, n_ref, len(seeds) - n_arm - n_ref, verdict, lower_is_better, level)


def epochs_to_reach(epochs: Sequence[int], values: Sequence[float], level: float) -> Optional[int]:
    """The first epoch whose value is at or below ``level`` (e.g. valid NME); None if never reached."""
    for e, v in zip(epochs, values):
        if v is not None and math.isfinite(v) and v <= level:
            return int(e)
    return None
