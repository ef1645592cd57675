"""The study's families of paired comparisons, each with Holm-adjusted verdicts (``stats.adjust_family``).

* **vs the reference**: every arm against the reference arm, one family per metric (final NME,
  final valid loss, final PCK and AUC; the last two higher-is-better);
* **same-LR pairs**: Lookahead(X) - X for every LR at which both ran with all other settings equal
  (training length included: the pairs at other lengths are ``trend.py``'s), the user's question:
  does wrapping X in Lookahead help at a given LR? One family;
* **Lookahead slow vs fast weights**: per Lookahead arm, at the end and averaged over epochs (one
  family each); the best-epoch difference is shown without a verdict (selected on the validation set).

Only finished runs enter, paired by seed. A comparison whose two sides both "have not learned"
(``floors.LEARNED_FRACTION``) reads so instead of better / worse.

Families are fixed by the plan (:func:`compare_family`): Holm's ``m`` is the number of planned
members, whether or not they have finished (a member without a p-value counts as p = 1), so a
run finishing in one family never changes another family's verdicts and, in its own family, can
only lower the others' adjusted p-values; a family whose members have fewer pairs than their
arms plan is marked ``provisional``. Each comparison names the machines (CPU model and flags
recorded in ``metrics.json``) of the runs it pairs and whether its pairs share numerics
(``numerics.py``: by fingerprint or untrained NME, not by the CPU's name), and its ``arms`` and
``metric`` (so a same-machine check can redo it with a replicate, ``machines.py``).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from hrnet.study.analyse import stats
from hrnet.study.analyse.numerics import comparison_numerics

__all__ = ["COMPARED_METRICS", "per_seed", "vs_reference", "same_lr_pairs", "lookahead_pairs", "lookahead_slow_fast",
           "family_dicts", "compare_family", "planned_pairs", "machines", "OPTIMIZER_KEYS"]

#: The metrics compared with the reference arm: (record key, title, lower is better).
COMPARED_METRICS = (("final_NME", "final NME", True), ("final_valid_loss", "final valid loss", True),
                    ("PCK", "final PCK", False), ("AUC", "final AUC", False))
#: Settings that may differ between the two sides of a same-LR pair: the optimizer being compared,
#: under its config keys and its short ``hparams`` names. The rest of ``arm_setting`` (the whole
#: resolved config, training length and iterations included) must agree.
OPTIMIZER_KEYS = frozenset({"optimizer", "inner", "k", "alpha", "seed", "TRAIN.OPTIMIZER", "TRAIN.LOOKAHEAD.INNER",
                            "TRAIN.LOOKAHEAD.K", "TRAIN.LOOKAHEAD.ALPHA"})


def per_seed(records: Sequence[Mapping[str, Any]], key: str) -> Dict[int, Optional[float]]:
    """``seed -> record[key]`` of the finished runs (the only ones that enter a statistic)."""
    return {r["seed"]: r.get(key) for r in records if r["status"] == "finished"}


def _not_learned(arms: Mapping[str, Mapping[str, Any]], a: str, b: str) -> bool:
    return arms[a].get("learned") is False and arms[b].get("learned") is False


def family_dicts(family: Mapping[str, stats.PairedComparison], not_learned: Sequence[str] = (),
                 m: Optional[int] = None) -> Dict[str, Dict[str, Any]]:
    """Holm-adjust a family (planned size ``m``, ``stats.holm``) and return its comparisons as dicts."""
    return {k: c.to_dict() for k, c in stats.adjust_family(family, not_learned, m).items()}


def planned_pairs(arms: Mapping[str, Mapping[str, Any]], a: str, b: str) -> Optional[int]:
    """The seeds both arms plan (None when an entry does not list its seeds)."""
    if "seeds" not in arms.get(a, {}) or "seeds" not in arms.get(b, {}):
        return None
    return len(set(arms[a]["seeds"]) & set(arms[b]["seeds"]))


def _machine_name(r: Mapping[str, Any]) -> str:
    m = r.get("machine") or {}
    if not m.get("cpu"):
        return "not recorded"
    flags = m.get("cpu_flags") or []
    return m["cpu"] + (f" ({', '.join(sorted(flags))})" if flags else "")


def machines(by_arm: Mapping[str, Sequence[Mapping[str, Any]]], a: str, b: str, seeds: Sequence[int],
             arms: Optional[Mapping[str, Mapping[str, Any]]] = None) -> Dict[str, Any]:
    """The machines of the finished runs of ``a`` and ``b`` at ``seeds``: ``machines`` (their CPU
    names and flags, distinct, sorted: for the reader), ``numerics`` (``numerics.comparison_numerics``:
    which pairs share numerics, by fingerprint or epoch-0 NME) and ``mixed_machines`` (some pair
    crosses machines: its two runs computed differently, whatever their CPU names say)."""
    names = sorted({_machine_name(r) for arm in (a, b) for r in by_arm.get(arm, ())
                    if r["status"] == "finished" and r["seed"] in set(seeds)})
    num = comparison_numerics(by_arm, arms or {}, a, b, seeds)
    return {"machines": names, "numerics": num, "mixed_machines": num["different"] > 0}


def compare_family(by_arm: Mapping[str, Sequence[Mapping[str, Any]]], arms: Mapping[str, Mapping[str, Any]],
                   members: Mapping[str, Tuple[str, str]], key: str = "final_NME", lower_is_better: bool = True
                   ) -> Dict[str, Dict[str, Any]]:
    """One Holm family fixed by the plan: ``name -> (arm, other)``, each ``arm - other`` in ``key``
    paired by seed; m = the number of members. Every dict gets ``provisional`` (some member has
    fewer pairs than the two arms plan) and the machines of its runs."""
    family = {k: stats.paired_comparison(per_seed(by_arm[a], key), per_seed(by_arm[b], key),
                                         lower_is_better=lower_is_better) for k, (a, b) in members.items()}
    stuck = [k for k, (a, b) in members.items() if _not_learned(arms, a, b)]
    out = family_dicts(family, stuck, len(members))
    provisional = any(out[k]["n"] < (planned_pairs(arms, a, b) or 0) for k, (a, b) in members.items())
    for k, (a, b) in members.items():
        out[k].update(provisional=provisional, arms=[a, b], metric=key,
                      **machines(by_arm, a, b, out[k]["seeds"], arms))
    return out


def vs_reference(reference: str, by_arm: Mapping[str, Sequence[Mapping[str, Any]]],
                 arms: Mapping[str, Mapping[str, Any]], families: Optional[Mapping[str, Sequence[str]]] = None
                 ) -> Dict[str, Dict[str, Any]]:
    """``arm -> metric -> comparison`` of every other arm with ``reference``; per metric one Holm
    family per entry of ``families`` (``name -> arms``; default: one family of every other arm),
    each comparison labelled with its ``family``."""
    others = [a for a in by_arm if a != reference]
    families = families if families is not None else {"all": others}
    out: Dict[str, Dict[str, Any]] = {a: {} for a in others}
    for name, members in families.items():
        for key, _, lower in COMPARED_METRICS:
            got = compare_family(by_arm, arms, {a: (a, reference) for a in members}, key, lower)
            for a, c in got.items():
                out[a][key] = dict(c, family=name)
    return out


def _main_k_alpha(arms: Mapping[str, Mapping[str, Any]]) -> Optional[Tuple[Any, Any]]:
    """The (k, alpha) most Lookahead arms use (ties: the first in the study file), or None."""
    kas = [(a["k"], a["alpha"]) for a in arms.values() if a["family"].startswith("lookahead(")]
    if not kas:
        return None
    counts = Counter(kas)
    return max(kas, key=lambda ka: (counts[ka], -kas.index(ka)))


def _same_setting(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Same settings (the whole resolved config, iterations included) but the optimizer's own."""
    sa = {k: v for k, v in a["setting"].items() if k not in OPTIMIZER_KEYS}
    sb = {k: v for k, v in b["setting"].items() if k not in OPTIMIZER_KEYS}
    return a["lr"] is not None and sa == sb


def lookahead_pairs(arms: Mapping[str, Mapping[str, Any]]) -> List[Tuple[str, str]]:
    """``(Lookahead(X) arm, X arm)`` for every Lookahead arm (any k, alpha) and every arm of its inner
    optimizer X with all other settings equal, in the study file's order."""
    pairs = []
    for la, e in arms.items():
        if not e["family"].startswith("lookahead("):
            continue
        inner = e["family"][len("lookahead("):-1]
        pairs += [(la, base) for base, b in arms.items() if b["family"] == inner and _same_setting(e, b)]
    return pairs


def same_lr_pairs(by_arm: Mapping[str, Sequence[Mapping[str, Any]]], arms: Mapping[str, Mapping[str, Any]]
                  ) -> Dict[str, Any]:
    """Final NME of Lookahead(X) - X for every LR at which both ran, at the study's main (k, alpha)
    (the other (k, alpha) are the k x alpha grid's); one Holm family. ``pairs`` sorted by optimizer and LR."""
    ka = _main_k_alpha(arms)
    pairs: List[Dict[str, Any]] = []
    members: Dict[str, Tuple[str, str]] = {}
    for la, base in lookahead_pairs(arms):
        e = arms[la]
        if (e["k"], e["alpha"]) != ka:
            continue
        key = f"{la} - {base}"
        members[key] = (la, base)
        pairs.append({"key": key, "lr": e["lr"], "optimizer": arms[base]["family"], "lookahead_arm": la,
                      "base_arm": base})
    adjusted = compare_family(by_arm, arms, members)
    for p in pairs:
        p["comparison"] = adjusted[p["key"]]
    pairs.sort(key=lambda p: (p["optimizer"], p["lr"]))
    return {"k": ka[0] if ka else None, "alpha": ka[1] if ka else None, "pairs": pairs}


def _slow_fast_values(done: Sequence[Mapping[str, Any]]) -> Dict[str, Dict[int, float]]:
    """Per seed: the final, best and epoch-mean valid NME of the slow and of the fast weights (epochs >= 1)."""
    out: Dict[str, Dict[int, float]] = {k: {} for k in ("final_slow", "final_fast", "best_slow", "best_fast",
                                                         "mean_slow", "mean_fast", "n_differ")}
    for r in done:
        c = r["curves"]
        pairs = [(a, b) for e, a, b in zip(c["epoch"], c["NME_slow"], c["NME_fast"])
                 if e >= 1 and a is not None and b is not None]
        if not pairs:
            continue
        s = r["seed"]
        out["final_slow"][s], out["final_fast"][s] = pairs[-1]
        out["best_slow"][s], out["best_fast"][s] = min(a for a, _ in pairs), min(b for _, b in pairs)
        out["mean_slow"][s] = float(np.mean([a for a, _ in pairs]))
        out["mean_fast"][s] = float(np.mean([b for _, b in pairs]))
        out["n_differ"][s] = sum(a != b for a, b in pairs)
    return out


def lookahead_slow_fast(by_arm: Mapping[str, Sequence[Mapping[str, Any]]], arms: Mapping[str, Mapping[str, Any]]
                        ) -> Dict[str, Any]:
    """Per Lookahead arm: slow - fast weights' valid NME, paired by seed.

    At a validation after a multiple of k iterations the fast weights were just reset to the slow
    ones and both coincide (the final one, often), so the mean over epochs is compared too
    (each its own family over the arms); the best values are shown without a verdict.
    """
    values = {a: _slow_fast_values([r for r in rs if r["status"] == "finished"
                                    and r["hparams"].get("optimizer") == "lookahead"]) for a, rs in by_arm.items()}
    values = {a: v for a, v in values.items() if any(r["status"] == "finished" and r["hparams"].get("optimizer")
                                                     == "lookahead" for r in by_arm[a])}
    stuck = [a for a in values if arms[a].get("learned") is False]
    final = family_dicts({a: stats.paired_comparison(v["final_slow"], v["final_fast"]) for a, v in values.items()},
                         stuck)
    mean = family_dicts({a: stats.paired_comparison(v["mean_slow"], v["mean_fast"]) for a, v in values.items()}, stuck)
    out = {}
    for a, v in values.items():
        best = stats.paired_comparison(v["best_slow"], v["best_fast"]).to_dict()
        best.update(verdict=None, p_adjusted=None)  # selected on the validation set: no verdict
        done = [r for r in by_arm[a] if r["status"] == "finished"]
        out[a] = {"logged": bool(v["final_slow"]), "final_NME_slow": {str(k): x for k, x in v["final_slow"].items()},
                  "final_NME_fast": {str(k): x for k, x in v["final_fast"].items()},
                  "slow": stats.summarize(v["final_slow"].values()).to_dict(),
                  "fast": stats.summarize(v["final_fast"].values()).to_dict(),
                  "slow_vs_fast": final[a], "best_slow_vs_fast": best, "epoch_mean_slow_vs_fast": mean[a],
                  "epochs_where_they_differ": {str(k): x for k, x in v["n_differ"].items()},
                  "eval_weights": next((r["eval_weights"] for r in done if r["eval_weights"]), None)}
    return out


def walk_dicts(node: Any, keys: Sequence[str], path: str = "") -> Iterator[Tuple[str, Dict[str, Any]]]:
    """(report path, dict) of every dict inside ``node`` (a report, depth first) holding all ``keys``."""
    if isinstance(node, dict):
        if all(k in node for k in keys):
            yield path, node
        for k, v in node.items():
            yield from walk_dicts(v, keys, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk_dicts(v, keys, f"{path}[{i}]")
