"""The trend with training length: Lookahead(X) - X at several training lengths, paired by seed.

Arms that differ **only in training length** (``TRAIN.END_EPOCH``, with ``TRAIN.LR_STEP`` at the
same fractions of it and the same iterations per epoch, hence proportional iterations) are
recognised from their settings (``scale.arm_setting``: the whole resolved config); everything else
(every other config key: optimizer, LR, k, alpha, model, data, batch ...) must agree.

* :func:`length_variants`: the arms at another length than the reference's that are a shorter or
  longer version of an arm at the reference's length. They are left out of the study's other
  families (comparisons with the reference, same-LR pairs, rankings, sensitivity), which compare
  optimizers at one length, and enter the trend only.
* :func:`trend`: per line (inner optimizer, LR, k, alpha) measured at two lengths or more, the gap
  Lookahead(X) - X in final NME at each length (paired by seed; mean, unadjusted 95% CI, one Holm
  family over every planned point of every line, "has not learned" as in the other families), and
  whether the gap changes with length, **between the lengths where both arms learned** (a length
  where either arm ends above the floor's threshold measures who leaves the plateau first, not
  the gap): per seed ``gap(longest) - gap(shortest)`` of those lengths over the seeds all four arms
  finished (Holm over the planned lines). The words: "grows" / "shrinks" (the mean gaps' sizes on
  those seeds) or "changes sign" when the change is detectable; else "holds (no detectable change)",
  or "not measurable at this n" when the change's 95% interval is wider than the gap at the
  shorter length; fewer than two learned lengths: not judged. Nothing is said about lengths
  outside the measured range (the user's 19,800 iterations, when longer).
"""
from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from hrnet.study.analyse import stats
from hrnet.study.analyse.comparisons import compare_family, family_dicts, lookahead_pairs, machines, per_seed
from hrnet.study.analyse.numerics import merge_numerics

__all__ = ["LENGTH_KEYS", "length_of", "length_variants", "trend", "GROWS", "SHRINKS", "HOLDS", "REVERSES",
           "NOT_MEASURABLE", "FEWER_LEARNED"]

#: The settings that make a training length (the rest must agree for two arms to differ in length only).
LENGTH_KEYS = ("TRAIN.END_EPOCH", "TRAIN.LR_STEP", "epochs", "iterations")
GROWS = "grows"
SHRINKS = "shrinks"
HOLDS = "holds (no detectable change)"
REVERSES = "changes sign"
NOT_MEASURABLE = "not measurable at this n"
FEWER_LEARNED = "not judged (fewer than two lengths where both arms learned)"


def length_of(entry: Mapping[str, Any]) -> Tuple[int, Optional[int]]:
    """``(epochs, iterations)`` of an arm entry (iterations None when the image count is unknown)."""
    s = entry["setting"]
    return int(s["TRAIN.END_EPOCH"]), s["iterations"]


def _without_length(entry: Mapping[str, Any]) -> str:
    """The arm's settings but its length, with the LR steps as fractions of it and the iterations
    per epoch (other data is another setting, not another length); a canonical string."""
    s = entry["setting"]
    end = max(int(s["TRAIN.END_EPOCH"]), 1)
    rest = {k: v for k, v in s.items() if k not in LENGTH_KEYS}
    rest["lr_step_fractions"] = [round(float(e) / end, 4) for e in s["TRAIN.LR_STEP"]]
    rest["iterations_per_epoch"] = None if s["iterations"] is None else s["iterations"] / end
    return json.dumps(rest, sort_keys=True, default=str)


def length_variants(arms: Mapping[str, Mapping[str, Any]], reference: str) -> Dict[str, str]:
    """``arm -> the arm it is a shorter / longer version of``: arms at another length than the
    reference's whose settings but the length equal those of an arm at the reference's length."""
    ref_len = length_of(arms[reference])
    at_ref = {}
    for name, e in arms.items():
        if length_of(e) == ref_len:
            at_ref.setdefault(_without_length(e), name)
    return {name: at_ref[_without_length(e)] for name, e in arms.items()
            if length_of(e) != ref_len and _without_length(e) in at_ref}


def _lines(arms: Mapping[str, Mapping[str, Any]]) -> List[List[Tuple[str, str]]]:
    """The Lookahead(X) - X pairs grouped by everything but the length; groups of >= 2 lengths,
    each sorted from the shortest to the longest."""
    groups: Dict[str, List[Tuple[str, str]]] = {}
    for la, base in lookahead_pairs(arms):
        groups.setdefault(_without_length(arms[la]), []).append((la, base))
    lines = []
    for pairs in groups.values():
        by_len: Dict[Tuple[int, Optional[int]], Tuple[str, str]] = {}
        for la, base in pairs:
            by_len.setdefault(length_of(arms[la]), (la, base))
        if len(by_len) >= 2:
            # (epochs, iterations): one group shares its iterations per epoch, so epochs order it.
            lines.append([by_len[k] for k in sorted(by_len)])
    return lines


def _gap(by_arm: Mapping[str, Sequence[Mapping[str, Any]]], la: str, base: str) -> stats.PairedComparison:
    return stats.paired_comparison(per_seed(by_arm[la], "final_NME"), per_seed(by_arm[base], "final_NME"))


def _change_word(c: Mapping[str, Any], short: Optional[float], long: Optional[float]) -> str:
    """The change in words: too few / holds / not measurable (its 95% interval wider than the gap at
    the shorter length) when not detectable; else changes sign, grows or shrinks (the gaps' sizes)."""
    if c["verdict"] == stats.TOO_FEW or short is None or long is None:
        return stats.TOO_FEW
    if c["verdict"] == stats.NO_DIFFERENCE:
        width = c.get("ci_high", math.nan) - c.get("ci_low", math.nan)
        return NOT_MEASURABLE if not width <= abs(short) else HOLDS  # a NaN width is not measurable either
    if short * long < 0:
        return REVERSES
    return GROWS if abs(long) > abs(short) else SHRINKS


def _change(by_arm, short: Tuple[str, str], long: Tuple[str, str]) -> stats.PairedComparison:
    """Per seed ``gap(long) - gap(short)`` over the seeds all four arms finished."""
    g_short, g_long = _gap(by_arm, *short), _gap(by_arm, *long)
    return stats.paired_comparison(dict(zip(g_long.seeds, g_long.diffs)), dict(zip(g_short.seeds, g_short.diffs)))


def _learned_ends(line: Sequence[Tuple[str, str]], arms: Mapping[str, Mapping[str, Any]]
                  ) -> Optional[Tuple[Tuple[str, str], Tuple[str, str]]]:
    """The shortest and the longest length of a line where neither arm 'has not learned'; None below two."""
    ok = [p for p in line if arms[p[0]].get("learned") is not False and arms[p[1]].get("learned") is not False]
    return (ok[0], ok[-1]) if len(ok) >= 2 else None


def _key(line: Sequence[Tuple[str, str]]) -> str:
    return f"{line[-1][0]} vs {line[0][0]}"


def trend(by_arm: Mapping[str, Sequence[Mapping[str, Any]]], arms: Mapping[str, Mapping[str, Any]], reference: str,
          user_iterations: int) -> Dict[str, Any]:
    """The gap Lookahead(X) - X against training length for every line measured at >= 2 lengths
    (``lines``, the reference's line first), with the change between the lengths where both learned."""
    lines = _lines(arms)
    adjusted = compare_family(by_arm, arms, {f"{la} - {base}": (la, base) for line in lines for la, base in line})
    ends = {_key(line): _learned_ends(line, arms) for line in lines}
    raw = {k: _change(by_arm, *e) if e else stats.paired_comparison({}, {}) for k, e in ends.items()}
    changes = family_dicts(raw, m=len(lines))
    provisional = any(c["provisional"] for c in adjusted.values())
    for k, e in ends.items():
        found = [machines(by_arm, *pair, changes[k]["seeds"], arms) for pair in (e or ())]
        num = merge_numerics([f["numerics"] for f in found])
        changes[k].update(provisional=provisional, machines=sorted({n for f in found for n in f["machines"]}),
                          numerics=num, mixed_machines=num["different"] > 0)
    out = [_line(line, arms, adjusted, changes[_key(line)], ends[_key(line)], reference, user_iterations)
           for line in lines]
    out.sort(key=lambda ln: (not ln["reference_line"], ln["optimizer"], ln["lr"] or 0.0))
    return {"lines": out, "user_iterations": user_iterations, "family_size": len(adjusted),
            "provisional": provisional}


def _line(line: Sequence[Tuple[str, str]], arms: Mapping[str, Mapping[str, Any]], adjusted: Mapping[str, Any],
          change: Dict[str, Any], ends: Optional[Tuple[Tuple[str, str], Tuple[str, str]]], reference: str,
          user_iterations: int) -> Dict[str, Any]:
    """One trend line's report entry: its points from the shortest length, the change between the
    lengths where both arms learned (``ends``; None: fewer than two), the range."""
    pts = []
    for la, base in line:
        epochs, its = length_of(arms[la])
        pts.append({"lookahead_arm": la, "base_arm": base, "epochs": epochs, "iterations": its,
                    "lr_step": list(arms[la]["setting"]["TRAIN.LR_STEP"]), "comparison": adjusted[f"{la} - {base}"],
                    "both_learned": arms[la].get("learned") is not False and arms[base].get("learned") is not False})
    seeds = change["seeds"]
    gap_short = gap_long = None
    if ends and seeds:
        by_la = {p["lookahead_arm"]: p["comparison"] for p in pts}
        mean_on = (lambda c: stats.mean_on_seeds(dict(zip(c["seeds"], c["diffs"])), seeds))
        gap_short, gap_long = mean_on(by_la[ends[0][0]]), mean_on(by_la[ends[1][0]])
    change.update(shortest=ends[0][0] if ends else None, longest=ends[1][0] if ends else None,
                  gap_shortest=gap_short, gap_longest=gap_long,
                  trend=_change_word(change, gap_short, gap_long) if ends else FEWER_LEARNED)  # no seeds: too few
    # Which way a detectable change goes: the gap Lookahead(X) - X rising with length moves against Lookahead.
    change["direction"] = (("against Lookahead" if change["mean_diff"] > 0 else "in Lookahead's favour")
                           if change["trend"] in (GROWS, SHRINKS, REVERSES) else None)
    its = [p["iterations"] for p in pts if p["iterations"]]
    e = arms[line[0][0]]
    return {"optimizer": arms[line[0][1]]["family"], "lr": e["lr"], "k": e["k"], "alpha": e["alpha"],
            "reference_line": any(base == reference or arms[base].get("length_variant_of") == reference
                                  for _, base in line),
            "points": pts, "change": change, "measured_iterations": [min(its), max(its)] if its else None,
            "user_outside": bool(its) and not (min(its) <= user_iterations <= max(its))}
