"""The answer's report sections (``answer.py``, ``effective_time.py``), the table of every Holm
family fixed by the plan, and the machines the compared runs trained on.

:func:`answer_sections` adds to the report dict: ``key_lookahead``, ``lookahead_vs_user``,
``effective_step``, ``k_alpha_vs_key``, ``tuned``, ``effective_time``, ``user_ranking``,
``families`` (one row per family: its planned size m, the members measured, provisional or not)
and ``machines`` (the CPUs of the compared runs; the comparisons whose pairs cross machines, by
numerics: ``numerics.py``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

from hrnet.study.analyse.answer import (ADDED, USER, effective_step, effective_step_pairs, k_alpha_vs_key,
                                        key_lookahead, lookahead_vs_user, tuned, user_ranking)
from hrnet.study.analyse.comparisons import lookahead_pairs, walk_dicts
from hrnet.study.analyse.effective_time import effective_time

__all__ = ["answer_sections", "family_table", "machine_summary"]


def answer_sections(reference: str, by_arm: Mapping[str, Sequence[Mapping[str, Any]]],
                    arms: Mapping[str, Mapping[str, Any]], main: Mapping[str, Mapping[str, Any]],
                    report: Mapping[str, Any]) -> Dict[str, Any]:
    """The report's answer sections; ``main``: the arms at the reference's length; ``report``: the
    report so far (its ``comparisons``, ``same_lr`` and ``trend``)."""
    runs = {a: by_arm[a] for a in main}
    key = key_lookahead(main, reference)
    vs_user = lookahead_vs_user(runs, main, reference, key)
    out: Dict[str, Any] = {
        "key_lookahead": key, "lookahead_vs_user": vs_user,
        "effective_step": effective_step(runs, main, reference, key), "k_alpha_vs_key": k_alpha_vs_key(runs, main, key),
        "tuned": tuned(runs, main),
        "effective_time": effective_time(by_arm, arms, lookahead_pairs(arms) + effective_step_pairs(main)),
        "user_ranking": user_ranking(main, reference, report["comparisons"], vs_user)}
    whole = dict(report, **out)
    out["families"] = family_table(whole)
    out["machines"] = machine_summary(whole)
    return out


def _row(name: str, question: str, comps: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """One family: its planned size, members with a p-value (2 pairs or more), provisional or not."""
    comps = [c for c in comps if c]
    return {"name": name, "question": question, "members": len(comps),
            "m": max((c.get("family_size", 0) for c in comps), default=0),
            "measured": sum(c["n"] >= 2 for c in comps), "provisional": any(c.get("provisional") for c in comps),
            "p_adjusted": [c.get("p_adjusted") for c in comps]}


def family_table(report: Mapping[str, Any]) -> List[Dict[str, Any]]:
    """Every Holm family of final-NME comparisons in the report, in the report's order."""
    ref = report["study"]["reference"]
    rows = []
    for fam in (USER, ADDED):
        comps = [m["final_NME"] for m in report["comparisons"].values() if m["final_NME"].get("family") == fam]
        if comps:
            rows.append(_row(f"{fam} vs {ref}", f"final NME of each against {ref}", comps))
    vs = report.get("lookahead_vs_user") or {}
    if vs.get("comparisons"):
        rows.append(_row(f"{vs['lookahead_arm']} vs the user's other optimizers",
                         "does the user's Lookahead beat each of them", list(vs["comparisons"].values())))
    if report["same_lr"]["pairs"]:
        rows.append(_row("same-LR pairs", "Lookahead(X) - X at each LR",
                         [p["comparison"] for p in report["same_lr"]["pairs"]]))
    es = report.get("effective_step") or {}
    if es.get("pairs"):
        rows.append(_row("effective-step pairs: difference", "Lookahead(X, lr) - X(alpha x lr)",
                         [p["difference"] for p in es["pairs"]]))
        rows.append(_row("effective-step pairs: equivalence (TOST)", "within +- the margin",
                         [p["equivalence"] for p in es["pairs"]]))
    ka = report.get("k_alpha_vs_key") or {}
    if ka.get("pairs"):
        rows.append(_row(f"k x alpha vs {ka['key']}", "another (k, alpha) at the same LR",
                         [p["comparison"] for p in ka["pairs"]]))
    lines = report["trend"]["lines"]
    if lines:
        rows.append(_row("trend: points", "Lookahead(X) - X at each length",
                         [p["comparison"] for ln in lines for p in ln["points"]]))
        rows.append(_row("trend: changes", "the gap between the lengths where both learned",
                         [ln["change"] for ln in lines]))
    for p in (report.get("tuned") or {}).get("pairs", []):
        rows.append(_row(f"tuned: {p['lookahead_arm']} - {p['base_arm']}", "each at its best LR (optimistic)",
                         [p["comparison"]]))
    return rows


def machine_summary(report: Mapping[str, Any]) -> Dict[str, Any]:
    """The CPUs of the runs the comparisons pair (``machines``, for the reader) and, decided by
    numerics (``numerics.py``: fingerprint, else untrained NME) rather than by those names, the
    comparisons (report paths) whose pairs cross machines (``mixed``) or cannot be told (``unknown``),
    and the bases used."""
    seen: Dict[str, None] = {}
    mixed: List[str] = []
    unknown: List[str] = []
    bases: Dict[str, None] = {}
    # user_ranking's steps repeat comparisons held elsewhere in the report: counted there only
    skip = ("runs", "arms", "families", "replicates", "machine_spread", "user_ranking")
    for path, c in walk_dicts({k: v for k, v in report.items() if k not in skip}, ("mixed_machines",)):
        seen.update(dict.fromkeys(c.get("machines") or ()))
        num = c.get("numerics") or {}
        if c["mixed_machines"]:
            mixed.append(path)
        if num.get("unknown"):
            unknown.append(path)
        bases.update(dict.fromkeys(b for b in (num.get("basis") or "").split(" and ") if b))
    return {"machines": sorted(seen), "mixed": mixed, "unknown": unknown, "bases": list(bases)}
