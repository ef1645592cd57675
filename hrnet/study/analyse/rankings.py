"""What a report sets side by side: the ranking, LR and k x alpha sensitivity, and the real photos.

Every mean, ranking or range here is computed over the seeds that all the arms involved share
(``stats.common_seeds``): a mean over seeds 0-2 beside one over seeds 0-1 compares seed 2 with
nothing. The seeds used are stated next to each result.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from hrnet.study.analyse import stats
from hrnet.study.analyse.comparisons import family_dicts
from hrnet.study.analyse.floors import has_learned
from hrnet.study.analyse.real_photos import EVALUATED_CHECKPOINT

__all__ = ["ranking", "sensitivity", "real_hands_summary", "final_nme_by_seed"]


def final_nme_by_seed(entry: Mapping[str, Any]) -> Dict[int, Optional[float]]:
    """``seed -> final NME`` of an arm entry (finished seeds)."""
    return {int(s): v for s, v in entry["final_NME"]["per_seed"].items()}


def ranking(arms: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """Arms with a finished run, best first by mean final NME over the seeds they all share."""
    ranked = {a: final_nme_by_seed(e) for a, e in arms.items() if e["final_NME"]["n"]}
    seeds, order = stats.rank_on_common_seeds(ranked)
    return {"seeds": seeds, "order": [{"arm": a, "mean": m} for a, m in order],
            "arms": list(ranked), "without_finished_runs": [a for a in arms if a not in ranked]}


def _line_label(a: Mapping[str, Any]) -> str:
    return a["family"] + (f" k{a['k']} alpha{a['alpha']:g}" if a["k"] is not None else "")


def _points(members: Sequence[Tuple[str, Mapping[str, Any]]]) -> Tuple[List[int], Dict[str, stats.Summary]]:
    """The common seeds of ``members`` (name, entry) and each member's final-NME summary over them."""
    values = {n: final_nme_by_seed(a) for n, a in members}
    seeds = stats.common_seeds(values)
    return seeds, {n: stats.summarize([v[s] for s in seeds]) for n, v in values.items()}


def sensitivity(arms: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    """Final NME against LR per optimizer (Lookahead lines keyed by k and alpha too) and the k x alpha
    grid of the Lookahead arms at the LR with the most (k, alpha) pairs; each on its arms' common seeds."""
    groups: Dict[str, List[Tuple[str, Mapping[str, Any]]]] = {}
    for name, a in arms.items():
        if a["lr"] is not None and a["final_NME"]["n"]:
            groups.setdefault(_line_label(a), []).append((name, a))
    lines: Dict[str, List[Dict[str, Any]]] = {}
    line_seeds: Dict[str, List[int]] = {}
    for label, members in groups.items():
        seeds, summ = _points(members)
        if not seeds:
            continue
        line_seeds[label] = seeds
        lines[label] = sorted(({"arm": n, "lr": a["lr"], **summ[n].to_dict()} for n, a in members),
                              key=lambda p: p["lr"])
    spread = {label: {"lrs": [p["lr"] for p in pts], "seeds": line_seeds[label],
                      "min_mean": min(p["mean"] for p in pts), "max_mean": max(p["mean"] for p in pts),
                      "range": max(p["mean"] for p in pts) - min(p["mean"] for p in pts)}
              for label, pts in lines.items() if len(pts) >= 2}
    return {"lr_lines": lines, "lr_line_seeds": line_seeds, "lr_spread": spread, "k_alpha": _k_alpha_grid(arms)}


def _k_alpha_grid(arms: Mapping[str, Mapping[str, Any]]) -> Dict[str, Any]:
    la = [(n, a) for n, a in arms.items() if a["k"] is not None and a["final_NME"]["n"]]
    by_lr: Dict[float, List[Tuple[str, Mapping[str, Any]]]] = {}
    for n, a in la:
        by_lr.setdefault(a["lr"], []).append((n, a))
    if not by_lr:
        return {}
    lr, members = max(by_lr.items(), key=lambda kv: (len({(a["k"], a["alpha"]) for _, a in kv[1]}), -kv[0]))
    if len({(a["k"], a["alpha"]) for _, a in members}) < 2:
        return {}
    seeds, summ = _points(members)
    if not seeds:
        return {}
    cells = {f"{a['k']},{a['alpha']:g}": {"arm": n, "mean": summ[n].mean, "std": summ[n].std, "n": summ[n].n}
             for n, a in members}
    means = [c["mean"] for c in cells.values()]
    return {"lr": lr, "k": sorted({a["k"] for _, a in members}), "alpha": sorted({a["alpha"] for _, a in members}),
            "cells": cells, "seeds": seeds, "range": max(means) - min(means)}


# ---------------------------------------------------------------------------- real photos
def _real_values(rs: Sequence[Mapping[str, Any]], names: Sequence[str], errors: Dict[str, str]
                 ) -> Dict[str, Dict[str, Dict[str, Optional[float]]]]:
    """``set -> {"NME": {seed: v}, "PCK": {seed: v}}`` of an arm's finished runs (errors collected)."""
    out = {s: {"NME": {}, "PCK": {}} for s in names}
    for r in rs:
        res = r.get("real_hands")
        if r["status"] != "finished" or not res:
            continue
        if "error" in res:
            errors[r["name"]] = res["error"]
            continue
        for s in names:
            out[s]["NME"][str(r["seed"])] = res.get(s, {}).get("NME")
            out[s]["PCK"][str(r["seed"])] = res.get(s, {}).get(r["pck_key"])
    return out


def _real_per_arm(by_arm, names, floor: Optional[float], errors: Dict[str, str]) -> Dict[str, Any]:
    per_arm: Dict[str, Any] = {}
    for arm, rs in by_arm.items():
        vals = _real_values(rs, names, errors)
        per_arm[arm] = {s: {"NME": stats.summarize(v["NME"].values()).to_dict(),
                            "PCK": stats.summarize(v["PCK"].values()).to_dict(),
                            "NME_per_seed": v["NME"], "PCK_per_seed": v["PCK"]} for s, v in vals.items()}
        mean = per_arm[arm]["all"]["NME"]["mean"] if per_arm[arm]["all"]["NME"]["n"] else None
        per_arm[arm]["NME_over_floor"] = mean / floor if mean is not None and floor else None
        per_arm[arm]["learned"] = has_learned(mean, floor)
    return per_arm


def _real_ranking(arms, per_arm) -> Dict[str, Any]:
    """Synthetic and real rankings over the seeds all compared arms share (both measured), Kendall tau."""
    compared = [a for a in arms if arms[a]["final_NME"]["n"] and per_arm[a]["all"]["NME"]["n"]]
    syn = {a: final_nme_by_seed(arms[a]) for a in compared}
    real = {a: {int(s): v for s, v in per_arm[a]["all"]["NME_per_seed"].items()} for a in compared}
    seeds = stats.common_seeds({**{(a, "synthetic"): v for a, v in syn.items()},
                                **{(a, "real"): v for a, v in real.items()}})
    if not seeds:
        return {"seeds": [], "rank_synthetic": [], "rank_real": [], "kendall_tau": None,
                "mean_synthetic": {}, "mean_real": {}}
    syn_mean = {a: stats.mean_on_seeds(v, seeds) for a, v in syn.items()}
    real_mean = {a: stats.mean_on_seeds(v, seeds) for a, v in real.items()}
    tau = None
    if len(compared) >= 2:
        from scipy.stats import kendalltau

        t = float(kendalltau([syn_mean[a] for a in compared], [real_mean[a] for a in compared]).statistic)
        tau = t if math.isfinite(t) else None
    return {"seeds": seeds, "rank_synthetic": sorted(compared, key=syn_mean.get),
            "rank_real": sorted(compared, key=real_mean.get), "kendall_tau": tau,
            "mean_synthetic": syn_mean, "mean_real": real_mean}


def real_hands_summary(reference: str, by_arm: Mapping[str, Sequence[Mapping[str, Any]]],
                       arms: Mapping[str, Mapping[str, Any]], sets: Mapping[str, Tuple[str, str]],
                       floors: Mapping[str, Any], folder: Optional[str]) -> Dict[str, Any]:
    """Real-photo NME and PCK per arm and set (final models), against the real floors; the paired
    comparison with the reference (one Holm family); the rankings on common seeds."""
    if not sets:
        return {"available": False, "folder": folder,
                "note": "no real hand sets found" if folder else "no real_hands in the study file (or --no-real-hands)"}
    names = list(sets) + ["all"]
    real_floors = floors.get("real") or {}
    floor = real_floors.get("all", {}).get("box_centre", {}).get("NME")
    errors: Dict[str, str] = {}
    per_arm = _real_per_arm(by_arm, names, floor, errors)
    ref_nme = {int(k): v for k, v in per_arm[reference]["all"]["NME_per_seed"].items()}
    family = {a: stats.paired_comparison({int(k): v for k, v in per_arm[a]["all"]["NME_per_seed"].items()}, ref_nme)
              for a in per_arm if a != reference}
    stuck = [a for a in family if per_arm[a]["learned"] is False and per_arm[reference]["learned"] is False]
    weights: Dict[str, List[str]] = {}  # which weights of the final checkpoint -> arms
    for arm, rs in by_arm.items():
        for w in sorted({r["real_hands"]["evaluated"]["weights"] for r in rs
                         if r.get("real_hands") and r["real_hands"].get("evaluated")}):
            weights.setdefault(w, []).append(arm)
    evaluated = {"checkpoint": EVALUATED_CHECKPOINT, "weights": weights}
    pck_key = next((r["pck_key"] for rs in by_arm.values() for r in rs), "PCK")
    return {"available": True, "folder": folder, "sets": names, "pck_key": pck_key, "floors": real_floors,
            "set_sizes": {s: {k: real_floors.get(s, {}).get(k) for k in ("num_images", "num_hands")} for s in names},
            "per_arm": per_arm, "vs_reference": family_dicts(family, stuck), "errors": errors,
            "evaluated": evaluated, **_real_ranking(arms, per_arm)}
