"""The comparisons that answer the user's question, each in a family fixed by the plan.

The arms are read from their settings (``analysis._arm_entry``), never from names:

* **the user's arms**: the arms at the reference's length that run an experiment yaml as it is (no
  arm overrides): the user's own runs. Their comparisons with the reference are one family
  (``vs_reference``), the study's added arms (LR and k x alpha grids, effective-step arms) another,
  so an added arm finishing never moves the user's verdicts;
* **the key Lookahead arm**: the Lookahead arm paired with the reference at the same LR (the user's
  Lookahead(Adam) 1e-4);
* :func:`lookahead_vs_user`: the key Lookahead arm against each other user arm (Lookahead(Adam) vs
  RMSprop, vs each SGD): the study's question, one family, so that every ranking sentence has a
  paired comparison (:func:`user_ranking`);
* :func:`effective_step`: Lookahead(X, alpha, lr) against X at alpha x lr (all else equal; the
  study's main k and alpha), the
  hypothesis that Lookahead behaves like its inner optimizer with alpha times the step. Both the
  difference (paired t) and the equivalence (TOST, ``stats.equivalence_test``) within a margin of
  :data:`MARGIN_FRACTION` x the key pair's gap: the question is whether the smaller step explains
  the gap, and a difference under half of it means it explains most of it;
* :func:`k_alpha_vs_key`: each other (k, alpha) at the key arm's LR against the key arm;
* :func:`tuned`: each optimizer at the best LR of its grid (final NME), selected on the same
  validation set it reports (optimistic for both sides), and Lookahead(X) - X at those LRs.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from hrnet.study.analyse import stats
from hrnet.study.analyse.comparisons import OPTIMIZER_KEYS, _main_k_alpha, compare_family, lookahead_pairs, per_seed
from hrnet.study.analyse.rankings import _line_label, final_nme_by_seed

__all__ = ["MARGIN_FRACTION", "SELECTED", "reference_families", "key_lookahead", "lookahead_vs_user",
           "effective_step_pairs", "effective_step", "k_alpha_vs_key", "tuned", "user_ranking"]

#: The equivalence margin of the effective-step pairs, as a fraction of the key pair's gap.
MARGIN_FRACTION = 0.5
SELECTED = "selected on the same validation set it reports (optimistic for both)"
USER, ADDED = "the user's arms", "the study's added arms"
Runs = Mapping[str, Sequence[Mapping[str, Any]]]
Arms = Mapping[str, Mapping[str, Any]]


def _is_lookahead(e: Mapping[str, Any]) -> bool:
    return e["family"].startswith("lookahead(")


def _inner(e: Mapping[str, Any]) -> str:
    return e["family"][len("lookahead("):-1]


def reference_families(arms: Arms, reference: str) -> Dict[str, List[str]]:
    """The families of comparisons with the reference: the user's arms (no arm overrides) and the
    study's added arms; ``arms``: the arms at the reference's length."""
    others = [a for a in arms if a != reference]
    fams = {USER: [a for a in others if not arms[a].get("overrides")],
            ADDED: [a for a in others if arms[a].get("overrides")]}
    return {k: v for k, v in fams.items() if v}


def key_lookahead(arms: Arms, reference: str) -> Optional[str]:
    """The Lookahead arm paired with the reference at the same LR (a user arm first), or None."""
    found = [la for la, base in lookahead_pairs(arms) if base == reference]
    return next((la for la in found if not arms[la].get("overrides")), found[0] if found else None)


def lookahead_vs_user(by_arm: Runs, arms: Arms, reference: str, key: Optional[str]) -> Dict[str, Any]:
    """The key Lookahead arm minus each other user arm (not the reference's, a family of its own),
    final NME paired by seed; one Holm family."""
    if key is None:
        return {"lookahead_arm": None, "comparisons": {}}
    users = reference_families(arms, reference).get(USER, [])
    members = {o: (key, o) for o in users if o != key}
    return {"lookahead_arm": key, "comparisons": compare_family(by_arm, arms, members)}


def _same_but(a: Mapping[str, Any], b: Mapping[str, Any], free: Sequence[str]) -> bool:
    """Same settings but the optimizer's own keys and ``free``."""
    skip = set(OPTIMIZER_KEYS) | set(free)
    sa = {k: v for k, v in a["setting"].items() if k not in skip}
    sb = {k: v for k, v in b["setting"].items() if k not in skip}
    return sa == sb


def effective_step_pairs(arms: Arms) -> List[Tuple[str, str]]:
    """``(Lookahead(X) arm at lr, X arm at alpha x lr)`` with all other settings equal, at the study's
    main (k, alpha) (the other (k, alpha) are the k x alpha family's), in file order."""
    pairs = []
    ka = _main_k_alpha(arms)
    for la, e in arms.items():
        if not _is_lookahead(e) or e["lr"] is None or e["alpha"] is None or (e["k"], e["alpha"]) != ka:
            continue
        target = float(e["alpha"]) * float(e["lr"])
        pairs += [(la, b) for b, x in arms.items() if x["family"] == _inner(e) and x["lr"] is not None
                  and math.isclose(float(x["lr"]), target, rel_tol=1e-6) and _same_but(e, x, ("lr", "TRAIN.LR"))]
    return pairs


def _key_gap(by_arm: Runs, key: Optional[str], reference: str) -> Optional[float]:
    if key is None:
        return None
    c = stats.paired_comparison(per_seed(by_arm[key], "final_NME"), per_seed(by_arm[reference], "final_NME"))
    return c.mean_diff if c.n and math.isfinite(c.mean_diff) else None


def effective_step(by_arm: Runs, arms: Arms, reference: str, key: Optional[str]) -> Dict[str, Any]:
    """Lookahead(X, alpha, lr) - X(alpha x lr), final NME paired by seed: the difference (one Holm
    family) and its equivalence within +-margin (TOST, one Holm family), margin
    :data:`MARGIN_FRACTION` x |key pair gap| (no TOST before the key pair has a gap)."""
    pairs = effective_step_pairs(arms)
    members = {f"{la} - {b}": (la, b) for la, b in pairs}
    diff = compare_family(by_arm, arms, members)
    gap = _key_gap(by_arm, key, reference)
    margin = MARGIN_FRACTION * abs(gap) if gap else None
    eq: Dict[str, Any] = {}
    if margin:
        tests = {k: stats.equivalence_test(per_seed(by_arm[la], "final_NME"), per_seed(by_arm[b], "final_NME"),
                                           margin) for k, (la, b) in members.items()}
        eq = {k: dict(t.to_dict(), provisional=diff[k]["provisional"])
              for k, t in stats.adjust_equivalence(tests, len(members)).items()}
    rows = [{"key": k, "lookahead_arm": la, "base_arm": b, "lr": arms[la]["lr"], "base_lr": arms[b]["lr"],
             "alpha": arms[la]["alpha"], "k": arms[la]["k"], "difference": diff[k], "equivalence": eq.get(k)}
            for k, (la, b) in members.items()]
    return {"margin": margin, "margin_fraction": MARGIN_FRACTION, "key_gap": gap, "key_pair": [key, reference],
            "pairs": rows}


def k_alpha_vs_key(by_arm: Runs, arms: Arms, key: Optional[str]) -> Dict[str, Any]:
    """Each Lookahead arm at the key arm's LR and setting but another (k, alpha), minus the key arm;
    one Holm family."""
    if key is None:
        return {"key": None, "pairs": []}
    e = arms[key]
    others = [a for a, x in arms.items() if a != key and x["family"] == e["family"] and x["lr"] == e["lr"]
              and (x["k"], x["alpha"]) != (e["k"], e["alpha"]) and _same_but(e, x, ())]
    got = compare_family(by_arm, arms, {a: (a, key) for a in others})
    return {"key": key, "k": e["k"], "alpha": e["alpha"], "lr": e["lr"],
            "pairs": [{"arm": a, "k": arms[a]["k"], "alpha": arms[a]["alpha"], "comparison": got[a]} for a in others]}


def _grid_lines(arms: Arms) -> Dict[str, Dict[str, Any]]:
    """Per optimizer line (``rankings._line_label``): planned LRs, and the best LR on its common seeds."""
    groups: Dict[str, List[str]] = {}
    for a, e in arms.items():
        if e["lr"] is not None:
            groups.setdefault(_line_label(e), []).append(a)
    lines = {}
    for label, members in groups.items():
        done = [a for a in members if arms[a]["final_NME"]["n"]]
        values = {a: final_nme_by_seed(arms[a]) for a in done}
        seeds = stats.common_seeds(values) if done else []
        means = {a: stats.mean_on_seeds(values[a], seeds) for a in done} if seeds else {}
        best = min(means, key=means.get) if means else None
        planned = sorted({arms[a]["lr"] for a in members})
        lines[label] = {"family": arms[members[0]]["family"], "planned_lrs": planned,
                        "measured_lrs": sorted({arms[a]["lr"] for a in means}), "seeds": seeds,
                        "means": {a: means[a] for a in means}, "best_arm": best,
                        "best_lr": arms[best]["lr"] if best else None, "best_mean": means.get(best),
                        "best_at_edge": _grid_edge(arms[best]["lr"], planned) if best else None}
    return lines


def _grid_edge(lr: float, planned: Sequence[float]) -> Optional[str]:
    """``"highest"`` / ``"lowest"`` when a grid's best LR is its end: the grid does not bracket the
    optimum, which may lie beyond it; None inside the grid or for a line of one LR (no grid)."""
    if len(planned) < 2:
        return None
    return "highest" if lr == planned[-1] else "lowest" if lr == planned[0] else None


def tuned(by_arm: Runs, arms: Arms) -> Dict[str, Any]:
    """Each optimizer line at its best LR (final NME, :data:`SELECTED`) and Lookahead(X) - X at those
    LRs for the lines with a grid (two LRs or more planned), paired by seed (a family of one each);
    ``provisional`` while a line has unmeasured LRs."""
    lines = _grid_lines(arms)
    pairs = []
    for label, ln in lines.items():  # grids only: a line of one LR is not tuned (the k x alpha points)
        if not ln["family"].startswith("lookahead(") or not ln["best_arm"] or len(ln["planned_lrs"]) < 2:
            continue
        base = next((b for b, x in lines.items() if x["family"] == ln["family"][len("lookahead("):-1]
                     and x["best_arm"] and len(x["planned_lrs"]) >= 2), None)
        if base is None:
            continue
        la, b = ln["best_arm"], lines[base]["best_arm"]
        c = compare_family(by_arm, arms, {"tuned": (la, b)})["tuned"]
        c["provisional"] = c["provisional"] or any(len(x["measured_lrs"]) < len(x["planned_lrs"])
                                                   for x in (ln, lines[base]))
        pairs.append({"lookahead_line": label, "base_line": base, "lookahead_arm": la, "base_arm": b,
                      "lookahead_lr": ln["best_lr"], "base_lr": lines[base]["best_lr"], "comparison": c})
    return {"label": SELECTED, "lines": lines, "pairs": pairs}


def _lookup(comparisons: Mapping[str, Any], vs_user: Mapping[str, Any], reference: str
            ) -> Dict[frozenset, Tuple[str, str, Mapping[str, Any]]]:
    """``{arm, other} -> (family, arm, comparison of arm - other)`` of the final-NME comparisons."""
    out: Dict[frozenset, Tuple[str, str, Mapping[str, Any]]] = {}
    for a, metrics in comparisons.items():
        c = metrics.get("final_NME")
        if c:
            out[frozenset((a, reference))] = (f"{c.get('family', 'all')} vs {reference}", a, c)
    key = vs_user.get("lookahead_arm")
    for o, c in vs_user.get("comparisons", {}).items():
        out.setdefault(frozenset((key, o)), (f"{key} vs the user's other optimizers", key, c))
    return out


def user_ranking(arms: Arms, reference: str, comparisons: Mapping[str, Any], vs_user: Mapping[str, Any]
                 ) -> Dict[str, Any]:
    """The user's arms (and the reference) by mean final NME on their common seeds, each adjacent
    step with the paired comparison that backs it (None: no comparison, the order is by means only)."""
    users = [reference] + reference_families(arms, reference).get(USER, [])
    ranked = {a: final_nme_by_seed(arms[a]) for a in users if arms[a]["final_NME"]["n"]}
    seeds, order = stats.rank_on_common_seeds(ranked)
    lookup = _lookup(comparisons, vs_user, reference)
    steps = []
    for (a, _), (b, _) in zip(order, order[1:]):
        fam, arm, c = lookup.get(frozenset((a, b)), (None, None, None))
        steps.append({"better": a, "worse": b, "family": fam, "arm": arm,
                      "other": (b if arm == a else a) if arm else None, "comparison": c})
    return {"seeds": seeds, "order": [{"arm": a, "mean": m, "learned": arms[a].get("learned")} for a, m in order],
            "steps": steps}
