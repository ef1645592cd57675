"""Effective time: at which epoch does X reach what Lookahead(X) reached at epoch t?

For a Lookahead(X) arm and an X arm with all other settings equal (the same LR: a same-LR pair;
or X at alpha x the LR: an effective-step pair, ``answer.effective_step_pairs``), paired by seed,
before the first LR drop (both at their full LR; epochs 1 .. the first ``TRAIN.LR_STEP``):

* ``tau(t)``: the first time X's valid-NME curve (epochs 0 .. the first LR step, linear between
  epochs) is at or below Lookahead(X)'s NME at epoch t; censored (left out, counted) when X never
  gets that low before its LR drops;
* per seed the **ratio** ``mean over t of tau(t) / t``; over seeds its mean and 95% Student t
  interval. Below 1: X needs fewer epochs than Lookahead to get as far (Lookahead is slower);
* per seed the **pace**: the least-squares slope of tau(t) on t over the second half of the window
  (t >= last / 2, three uncensored epochs at least). The first epochs' steep drop makes tau(t) close
  to t whatever the pace (every curve crosses the early levels within the first epoch), which pulls
  the ratio towards 1; the slope measures how many epochs of X one more epoch of Lookahead is worth
  once past that transient, free of the offset.

The prediction of the hypothesis Lookahead(X, alpha, lr) ~ X(alpha x lr): if progress depends on
lr x iterations only (small steps along a roughly straight path), Lookahead's slow weights advance
alpha x the displacement of the k fast steps per cycle, i.e. move as X at alpha x lr, which gets in
t epochs where X at lr' gets in ``alpha x lr / lr' x t``: predicted ratio and pace ``alpha x lr /
lr'`` (alpha for a same-LR pair, 1 for an effective-step pair). The measured ratio and pace are
compared with it by a one-sample t-test over seeds (no Holm family: a description of the curves,
not a verdict).
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from hrnet.study.analyse import stats

__all__ = ["crossing_epoch", "seed_ratio", "effective_time"]


def crossing_epoch(epochs: Sequence[int], values: Sequence[Optional[float]], level: float) -> Optional[float]:
    """The first time the curve (linear between epochs) is at or below ``level``; None if never."""
    pts = [(float(e), float(v)) for e, v in zip(epochs, values) if v is not None and math.isfinite(v)]
    for i, (e, v) in enumerate(pts):
        if v <= level:
            if i == 0:
                return e
            e0, v0 = pts[i - 1]
            return e0 + (v0 - level) / (v0 - v) * (e - e0)
    return None


def _curve(run: Mapping[str, Any], last: int) -> Tuple[List[int], List[Optional[float]]]:
    c = run["curves"]
    pts = [(int(e), v) for e, v in zip(c["epoch"], c["NME"]) if int(e) <= last]
    return [e for e, _ in pts], [v for _, v in pts]


def seed_ratio(la: Mapping[str, Any], base: Mapping[str, Any], last: int) -> Dict[str, Any]:
    """One seed: ``tau(t)`` for t = 1..``last`` and the mean of ``tau(t) / t`` over the uncensored t."""
    eb, vb = _curve(base, last)
    el, vl = _curve(la, last)
    tau: List[Optional[float]] = []
    for t, v in zip(el, vl):
        if t < 1:
            continue
        tau.append(None if v is None or not math.isfinite(v) else crossing_epoch(eb, vb, v))
    ts = [t for t in el if t >= 1]
    ratios = [x / t for x, t in zip(tau, ts) if x is not None]
    late = [(t, x) for t, x in zip(ts, tau) if x is not None and t >= last / 2.0]
    return {"epochs": ts, "tau": tau, "ratio": sum(ratios) / len(ratios) if ratios else None,
            "pace": _slope(late) if len(late) >= 3 else None, "used": len(ratios),
            "censored": sum(x is None for x in tau)}


def _slope(points: Sequence[Tuple[float, float]]) -> Optional[float]:
    """The least-squares slope of y on x (None when x does not vary)."""
    xs = [float(x) for x, _ in points]
    ys = [float(y) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else None


def _against(values: Mapping[int, float], predicted: float) -> Dict[str, Any]:
    """Summary of ``values`` over seeds and their one-sample t-test against ``predicted``."""
    c = stats.paired_comparison(dict(values), {s: predicted for s in values}).to_dict()
    return {"summary": stats.summarize(values.values()).to_dict(),
            "minus_predicted": {k: c[k] for k in ("mean_diff", "ci_low", "ci_high", "p_value", "n")}}


def _pair(la: str, base: str, by_arm, arms) -> Dict[str, Any]:
    """One pair's effective time over the seeds both finished."""
    steps = arms[base]["setting"].get("TRAIN.LR_STEP") or []
    last = int(min(steps)) if steps else int(arms[base]["setting"]["TRAIN.END_EPOCH"])
    done = {r["seed"]: r for r in by_arm[base] if r["status"] == "finished"}
    per_seed = {r["seed"]: seed_ratio(r, done[r["seed"]], last) for r in by_arm[la]
                if r["status"] == "finished" and r["seed"] in done}
    e, b = arms[la], arms[base]
    predicted = float(e["alpha"]) * float(e["lr"]) / float(b["lr"])
    ratio = _against({s: v["ratio"] for s, v in sorted(per_seed.items()) if v["ratio"] is not None}, predicted)
    pace = _against({s: v["pace"] for s, v in sorted(per_seed.items()) if v["pace"] is not None}, predicted)
    return {"lookahead_arm": la, "base_arm": base, "lr": e["lr"], "base_lr": b["lr"], "k": e["k"],
            "alpha": e["alpha"], "window": [1, last], "pace_window": [math.ceil(last / 2.0), last],
            "predicted_ratio": predicted, "ratio": ratio["summary"], "ratio_minus_predicted": ratio["minus_predicted"],
            "pace": pace["summary"], "pace_minus_predicted": pace["minus_predicted"],
            "per_seed": {str(s): v for s, v in sorted(per_seed.items())}}


def effective_time(by_arm: Mapping[str, Sequence[Mapping[str, Any]]], arms: Mapping[str, Mapping[str, Any]],
                   pairs: Sequence[Tuple[str, str]]) -> Dict[str, Any]:
    """The effective time of every (Lookahead(X), X) pair in ``pairs`` whose arms have an LR and alpha."""
    out = [_pair(la, base, by_arm, arms) for la, base in pairs
           if arms[la]["lr"] and arms[base]["lr"] and arms[la]["alpha"] is not None]
    return {"pairs": out, "prediction": "alpha x LR(Lookahead) / LR(X): Lookahead(X, alpha, lr) ~ X(alpha x lr) "
                                        "when progress depends on lr x iterations only"}
