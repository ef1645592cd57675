"""Panels of the answer's figures, drawn from the report dict only (measured values, no smoothing):
the Lookahead(X) - X gap per epoch with its seed interval (:func:`gap_panel`, in ``curves.png``) and
the effective time tau(t) against t (:func:`effective_time_panel`, in ``lookahead.png``)."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from hrnet.study.analyse import stats
from hrnet.study.analyse.words import fmt

__all__ = ["gap_series", "gap_panel", "effective_time_pairs", "effective_time_panel"]


def _curve(run: Mapping[str, Any]) -> Dict[int, float]:
    c = run["curves"]
    return {int(e): float(v) for e, v in zip(c["epoch"], c["NME"]) if v is not None}


def gap_series(report: Mapping[str, Any], la: str, base: str) -> Optional[Tuple[np.ndarray, np.ndarray, List[Any]]]:
    """(epochs >= 1, per-seed diffs (seeds x epochs), per-epoch ``stats.Summary``) of ``la - base``
    valid NME, over the seeds both finished and the epochs every such seed has; None without any."""
    runs = [r for r in report["runs"] if r["status"] == "finished"]
    a = {r["seed"]: _curve(r) for r in runs if r["arm"] == la}
    b = {r["seed"]: _curve(r) for r in runs if r["arm"] == base}
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    epochs = sorted(set.intersection(*(set(a[s]) & set(b[s]) for s in seeds)) - {0})
    if not epochs:
        return None
    diffs = np.array([[a[s][e] - b[s][e] for e in epochs] for s in seeds], dtype=np.float64)
    return np.array(epochs), diffs, [stats.summarize(diffs[:, i]) for i in range(len(epochs))]


def gap_panel(ax, report: Mapping[str, Any], colors: Sequence[Any]) -> bool:
    """Lookahead(X) - X valid NME per epoch for each same-LR pair: mean, 95% t interval over seeds
    (band), each seed faint, zero line, the LR steps; False when no pair has a finished seed."""
    drawn = False
    for color, p in zip(colors, report["same_lr"]["pairs"]):
        got = gap_series(report, p["lookahead_arm"], p["base_arm"])
        if got is None:
            continue
        ep, diffs, summ = got
        for row in diffs:
            ax.plot(ep, row, color=color, linewidth=0.6, alpha=0.35)
        ax.plot(ep, [s.mean for s in summ], color=color, linewidth=1.8, label=f"{p['key']} (n={len(diffs)})")
        if len(diffs) > 1:
            ax.fill_between(ep, [s.ci_low for s in summ], [s.ci_high for s in summ], color=color, alpha=0.18,
                            linewidth=0)
        drawn = True
    if not drawn:
        return False
    steps = report["arms"][report["study"]["reference"]].get("setting", {}).get("TRAIN.LR_STEP", [])
    for i, e in enumerate(steps):
        ax.axvline(e, color="gray", linewidth=0.6, alpha=0.6, label="LR x factor" if i == 0 else None)
    ax.axhline(0.0, color="black", linewidth=1.0)
    ax.set_title("Lookahead(X) - X valid NME per epoch (same LR): mean, 95% CI band, each seed faint")
    ax.set_xlabel("epoch")
    ax.set_ylabel("valid NME difference (below 0: Lookahead better)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return True


def effective_time_pairs(report: Mapping[str, Any]) -> List[Mapping[str, Any]]:
    """The effective-time pairs with a measured seed, at the reference's length (a length variant's
    window is a prefix of its longer arm's) and the study's main k and alpha (the k x alpha points
    are in the table): the same-LR and the effective-step pairs."""
    arms, sl = report["arms"], report.get("same_lr") or {}
    return [p for p in (report.get("effective_time") or {}).get("pairs", [])
            if p["ratio"]["n"] and not arms.get(p["lookahead_arm"], {}).get("length_variant_of")
            and (sl.get("k") is None or (p["k"], p["alpha"]) == (sl["k"], sl["alpha"]))]


def effective_time_panel(ax, report: Mapping[str, Any], colors: Sequence[Any]) -> bool:
    """tau(t) against t per pair: each seed thin, the mean over seeds thick, t (same pace, dotted) and
    the alpha x lr prediction (dashed); False when no pair has a measured seed."""
    pairs = effective_time_pairs(report)
    if not pairs:
        return False
    top = 1
    for color, p in zip(colors, pairs):
        taus = []
        for v in p["per_seed"].values():
            pts = [(t, x) for t, x in zip(v["epochs"], v["tau"]) if x is not None]
            if pts:
                ax.plot(*zip(*pts), color=color, linewidth=0.6, alpha=0.4)
            taus.append({t: x for t, x in zip(v["epochs"], v["tau"]) if x is not None})
        ts = sorted(set.intersection(*(set(t) for t in taus))) if taus else []
        r, q = p["ratio"], p["pace"]
        ax.plot(ts, [np.mean([tau[t] for tau in taus]) for t in ts], color=color, linewidth=2.2,
                label=f"{p['base_arm']} vs {p['lookahead_arm']} (n={r['n']}): mean tau/t {fmt(r['mean'], '.2f')} "
                      f"[{fmt(r['ci_low'], '.2f')}, {fmt(r['ci_high'], '.2f')}]; slope over epochs "
                      f"{p['pace_window'][0]}..{p['pace_window'][1]} {fmt(q['mean'], '.2f')} "
                      f"[{fmt(q['ci_low'], '.2f')}, {fmt(q['ci_high'], '.2f')}]")
        w = np.array([p["window"][0], p["window"][1]], dtype=np.float64)
        ax.plot(w, p["predicted_ratio"] * w, color=color, linestyle="--", linewidth=1.0)
        top = max(top, p["window"][1])
    ax.plot([], [], color="gray", linestyle="--", label="dashed, each pair's colour: the alpha x lr prediction, "
                                                        "alpha x LR(Lookahead) / LR(X) x t")
    ax.plot([0, top], [0, top], color="black", linestyle=":", linewidth=1.0, label="same pace (tau = t)")
    ax.set_xlabel("Lookahead epoch t (before the first LR drop)")
    ax.set_ylabel("tau(t): epoch at which X reaches Lookahead's NME at t")
    ax.set_title("effective time: measured tau(t) (thin: each seed; thick: mean)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1)
    return True
