"""The trend with training length: Lookahead(X) - X at several training lengths, paired by seed.

Arms that differ **only in training length** (``TRAIN.END_EPOCH``, with ``TRAIN.LR_STEP`` at the
same fractions of it and the same iterations per epoch, hence proportional iterations) are
recognised from their settings (``scale.arm_setting``); everything else (optimizer, LR, k, alpha,
model, data, batch) must agree.

* :func:`length_variants`: the arms at another length than the reference's that are a shorter or
  longer version of an arm at the reference's length. They are left out of the study's other
  families (comparisons with the reference, same-LR pairs, rankings, sensitivity), which compare
  optimizers at one length, and enter the trend only.
* :func:`trend`: per line (inner optimizer, LR, k, alpha) measured at two lengths or more, the gap
  Lookahead(X) - X in final NME at each length (paired by seed; mean, unadjusted 95% CI, Holm over
  every point of every line, "has not learned" as in the other families), and whether the gap
  changes with length: per seed ``gap(longest) - gap(shortest)`` over the seeds all four arms
  finished (Holm over the lines). "grows" / "shrinks" compare the mean gaps' sizes on those seeds
  when the change is detectable; otherwise "holds (no detectable change)". Nothing is said about
  lengths outside the measured range (the user's 19,800 iterations, when longer).
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from hrnet.study.analyse import stats
from hrnet.study.analyse.comparisons import family_dicts, lookahead_pairs, per_seed

__all__ = ["LENGTH_KEYS", "length_of", "length_variants", "trend", "GROWS", "SHRINKS", "HOLDS"]

#: The settings that make a training length (the rest must agree for two arms to differ in length only).
LENGTH_KEYS = ("TRAIN.END_EPOCH", "TRAIN.LR_STEP", "epochs", "iterations")
GROWS = "grows"
SHRINKS = "shrinks"
HOLDS = "holds (no detectable change)"


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


def _change_word(c: Mapping[str, Any], short: float, long: float) -> str:
    """grows / shrinks (by the size of the mean gaps) when the change is detectable, else holds / too few."""
    if c["verdict"] in (stats.TOO_FEW, stats.NO_DIFFERENCE):
        return stats.TOO_FEW if c["verdict"] == stats.TOO_FEW else HOLDS
    return GROWS if abs(long) > abs(short) else SHRINKS


def _change(by_arm, short: Tuple[str, str], long: Tuple[str, str]) -> stats.PairedComparison:
    """Per seed ``gap(long) - gap(short)`` over the seeds all four arms finished."""
    g_short, g_long = _gap(by_arm, *short), _gap(by_arm, *long)
    return stats.paired_comparison(dict(zip(g_long.seeds, g_long.diffs)), dict(zip(g_short.seeds, g_short.diffs)))


def trend(by_arm: Mapping[str, Sequence[Mapping[str, Any]]], arms: Mapping[str, Mapping[str, Any]], reference: str,
          user_iterations: int) -> Dict[str, Any]:
    """The gap Lookahead(X) - X against training length for every line measured at >= 2 lengths
    (``lines``, the reference's line first), with the change from the shortest to the longest."""
    lines = _lines(arms)
    points = {f"{la} - {base}": _gap(by_arm, la, base) for line in lines for la, base in line}
    stuck = [f"{la} - {base}" for line in lines for la, base in line
             if arms[la].get("learned") is False and arms[base].get("learned") is False]
    adjusted = family_dicts(points, stuck)
    changes = family_dicts({f"{line[-1][0]} vs {line[0][0]}": _change(by_arm, line[0], line[-1]) for line in lines})
    out = []
    for line in lines:
        out.append(_line(line, arms, adjusted, changes[f"{line[-1][0]} vs {line[0][0]}"], reference, user_iterations))
    out.sort(key=lambda ln: (not ln["reference_line"], ln["optimizer"], ln["lr"] or 0.0))
    return {"lines": out, "user_iterations": user_iterations, "family_size": len(points)}


def _line(line: Sequence[Tuple[str, str]], arms: Mapping[str, Mapping[str, Any]], adjusted: Mapping[str, Any],
          change: Dict[str, Any], reference: str, user_iterations: int) -> Dict[str, Any]:
    """One trend line's report entry: its points from the shortest length, the change, the range."""
    pts = []
    for la, base in line:
        epochs, its = length_of(arms[la])
        pts.append({"lookahead_arm": la, "base_arm": base, "epochs": epochs, "iterations": its,
                    "lr_step": list(arms[la]["setting"]["TRAIN.LR_STEP"]), "comparison": adjusted[f"{la} - {base}"]})
    short, long = pts[0]["comparison"], pts[-1]["comparison"]
    seeds = change["seeds"]
    mean_on = (lambda c: stats.mean_on_seeds(dict(zip(c["seeds"], c["diffs"])), seeds))
    gap_short, gap_long = (mean_on(short), mean_on(long)) if seeds else (None, None)
    change.update(shortest=pts[0]["lookahead_arm"], longest=pts[-1]["lookahead_arm"],
                  gap_shortest=gap_short, gap_longest=gap_long,
                  trend=_change_word(change, gap_short, gap_long))  # no seeds: too few
    # Which way a detectable change goes: the gap Lookahead(X) - X rising with length moves against Lookahead.
    change["direction"] = (("against Lookahead" if change["mean_diff"] > 0 else "in Lookahead's favour")
                           if change["trend"] in (GROWS, SHRINKS) else None)
    its = [p["iterations"] for p in pts if p["iterations"]]
    e = arms[line[0][0]]
    return {"optimizer": arms[line[0][1]]["family"], "lr": e["lr"], "k": e["k"], "alpha": e["alpha"],
            "reference_line": any(base == reference or arms[base].get("length_variant_of") == reference
                                  for _, base in line),
            "points": pts, "change": change, "measured_iterations": [min(its), max(its)] if its else None,
            "user_outside": bool(its) and not (min(its) <= user_iterations <= max(its))}
