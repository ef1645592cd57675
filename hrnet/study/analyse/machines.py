"""Replicate arms and the machine-to-machine spread.

**Replicates.** An arm whose setting (``analysis._arm_entry``'s ``setting``: the whole resolved
config but the seed and the trajectory-free keys, ``plan.identity.setting``) equals another arm's is
a *replicate* of it (the reference first, then the first such arm in the study file): the same runs
again, on whatever machine trains them (``adam_rerun`` of ``adam``). A replicate is not an
optimizer: it stays out of every family, ranking, sensitivity, tuned comparison and figure, and
enters only :func:`machine_spread`.

**Spread** (:func:`machine_spread`): per replicate, per seed, replicate minus original final NME,
with each side's untrained (epoch-0) NME and whether the two share numerics (``numerics.py``);
mean, std, 95% CI and n of the differences, against the original's seed std. Seeds that share
numerics must end bitwise equal (CPU training is deterministic): ``reproduced`` counts those that do.

**Same-machine checks**: a final-NME comparison whose pairs cross machines on some seeds, where a
replicate of one side shares numerics with the other side on such a seed, is redone with the
replicate's run substituted on those seeds (the others kept), Holm-adjusted as the strictest member
of its planned family (p x m).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from hrnet.study.analyse import stats
from hrnet.study.analyse.comparisons import machines, per_seed, walk_dicts
from hrnet.study.analyse.numerics import finished_by_seed, pair_numerics, untrained_nme, untrained_setting
from hrnet.study.analyse.words import fmt

__all__ = ["replicate_arms", "machine_spread", "same_machine_checks", "spread_sentence", "CHECK_LABEL"]

CHECK_LABEL = "same-machine check"
Runs = Mapping[str, Sequence[Mapping[str, Any]]]
Arms = Mapping[str, Mapping[str, Any]]


def replicate_arms(arms: Arms, reference: str) -> Dict[str, str]:
    """``replicate -> original``: each arm whose ``setting`` equals an earlier one's (the reference
    counts as the earliest), in the order of ``arms``."""
    order = [reference] + [a for a in arms if a != reference] if reference in arms else list(arms)
    originals: List[str] = []
    out: Dict[str, str] = {}
    for a in order:
        of = next((o for o in originals if arms[o]["setting"] == arms[a]["setting"]), None)
        if of is None:
            originals.append(a)
        else:
            out[a] = of
    return {a: out[a] for a in arms if a in out}


def _seed_row(rep: Mapping[str, Any], orig: Mapping[str, Any]) -> Dict[str, Any]:
    same, basis = pair_numerics(rep, orig, True)  # one setting: the untrained NME is comparable
    a, b = rep.get("final_NME"), orig.get("final_NME")
    diff = a - b if a is not None and b is not None else None
    return {"seed": rep["seed"], "final_NME_replicate": a, "final_NME_original": b, "diff": diff,
            "untrained_NME_replicate": untrained_nme(rep), "untrained_NME_original": untrained_nme(orig),
            "same_numerics": same, "basis": basis,
            "fingerprint_replicate": (rep.get("machine") or {}).get("numerics"),
            "fingerprint_original": (orig.get("machine") or {}).get("numerics")}


def _spread_entry(rep: str, of: str, by_arm: Runs, arms: Arms) -> Dict[str, Any]:
    ra, rb = finished_by_seed(by_arm.get(rep, ())), finished_by_seed(by_arm.get(of, ()))
    rows = [_seed_row(ra[s], rb[s]) for s in sorted(set(ra) & set(rb))]
    diffs = [r["diff"] for r in rows if r["diff"] is not None]
    same = [r for r in rows if r["same_numerics"]]
    return {"arm": rep, "of": of, "seeds": list(arms[rep].get("seeds", [])), "per_seed": rows,
            "diff": stats.summarize(diffs).to_dict(), "seed_std": arms[of]["final_NME"]["std"],
            "seed_std_n": arms[of]["final_NME"]["n"], "same_numerics": len(same),
            "reproduced": sum(r["diff"] == 0.0 for r in same),
            "config": arms[rep].get("config"), "overrides": list(arms[rep].get("overrides", []))}


def _substitutes(side: str, other: str, rep: str, seeds: Sequence[int], by_arm: Runs, arms: Arms) -> List[int]:
    """The seeds where ``side`` and ``other`` cross machines and ``rep`` (a replicate of ``side``)
    shares numerics with ``other``."""
    rs, ro, rr = (finished_by_seed(by_arm.get(x, ())) for x in (side, other, rep))
    sa, so = (untrained_setting((arms.get(x) or {}).get("setting")) for x in (side, other))
    comparable = sa is not None and sa == so
    return [s for s in seeds if s in rs and s in ro and s in rr
            and pair_numerics(rs[s], ro[s], comparable)[0] is False and pair_numerics(rr[s], ro[s], comparable)[0]]


def _check(c: Mapping[str, Any], side: str, rep: str, seeds: List[int], by_arm: Runs, arms: Arms
           ) -> Dict[str, Any]:
    """``c`` redone with ``rep``'s runs in place of ``side``'s on ``seeds``."""
    a, b = c["arms"]
    swapped = [r for r in by_arm[side] if r["seed"] not in seeds] + [r for r in by_arm[rep] if r["seed"] in seeds]
    runs = dict(by_arm, **{side: swapped})
    lower = c.get("lower_is_better", True)
    pc = stats.paired_comparison(per_seed(runs[a], c["metric"]), per_seed(runs[b], c["metric"]), lower)
    stuck = ["check"] if c.get("verdict") == stats.NOT_LEARNED else []
    out = stats.adjust_family({"check": pc}, stuck, max(int(c.get("family_size") or 1), 1))["check"].to_dict()
    out.update(arms=[a, b], metric=c["metric"], **machines(runs, a, b, out["seeds"], arms))
    return out


def same_machine_checks(report: Mapping[str, Any], by_arm: Runs, arms: Arms, replicates: Mapping[str, str]
                        ) -> List[Dict[str, Any]]:
    """Every final-NME comparison of ``report`` whose pairs cross machines, redone with a replicate of
    one side substituted on the seeds where it shares numerics with the other side."""
    skip = ("runs", "arms", "families", "machines", "machine_spread", "replicates")
    out = []
    for path, c in walk_dicts({k: v for k, v in report.items() if k not in skip}, ("arms", "metric", "numerics")):
        if c["metric"] != "final_NME" or not c["numerics"]["different"]:
            continue
        for i, side in enumerate(c["arms"]):
            other = c["arms"][1 - i]
            for rep in (r for r, of in replicates.items() if of == side):
                seeds = _substitutes(side, other, rep, c["seeds"], by_arm, arms)
                if seeds:
                    out.append({"label": CHECK_LABEL, "comparison": path, "arms": list(c["arms"]), "replaced": side,
                                "replicate": rep, "seeds_substituted": seeds, "original": _brief(c),
                                "check": _check(c, side, rep, seeds, by_arm, arms)})
    return out


def _brief(c: Mapping[str, Any]) -> Dict[str, Any]:
    keys = ("n", "seeds", "mean_diff", "ci_low", "ci_high", "p_value", "p_adjusted", "family_size", "verdict",
            "numerics", "lower_is_better")
    return {k: c.get(k) for k in keys}


def machine_spread(report: Mapping[str, Any], by_arm: Runs, arms: Arms, replicates: Mapping[str, str]
                   ) -> Dict[str, Any]:
    """The report's ``machine_spread``: per replicate arm its spread against the original
    (``replicates``), and the same-machine checks. ``by_arm`` / ``arms``: every arm, replicates
    included."""
    return {"replicates": [_spread_entry(rep, of, by_arm, arms) for rep, of in replicates.items()],
            "checks": same_machine_checks(report, by_arm, arms, replicates)}


def spread_sentence(e: Mapping[str, Any]) -> Optional[str]:
    """One replicate's spread in words (None before any pair)."""
    d = e["diff"]
    if not d["n"]:
        return None
    ci = f"95% CI [{fmt(d['ci_low'], '+.4f')}, {fmt(d['ci_high'], '+.4f')}], n={d['n']}"
    if d["mean"] == 0:
        how = f"end exactly where {e['of']}'s did on average ({ci})"
    else:
        how = f"end {fmt(abs(d['mean']))} {'higher' if d['mean'] > 0 else 'lower'} on average ({ci})"
    n = len(e["per_seed"])
    return (f"Machine-to-machine spread: {e['arm']} reruns {e['of']}'s config; the same runs on the replicate's "
            f"machine {how}, against a seed std of {e['of']} of {fmt(e['seed_std'])} (n={e['seed_std_n']}); "
            f"numerics equal on {e['same_numerics']} of {n} seeds"
            + (f" ({e['reproduced']} of them end bitwise equal, as they must)" if e["same_numerics"] else "") + ".")
