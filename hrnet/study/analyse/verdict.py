"""The verdict of a study report: plain sentences, each computed from the numbers of the report dict.

A sentence never says more than its numbers carry: verdicts come from Holm-adjusted p-values with
at least ``stats.MIN_PAIRS`` pairs, models that have not learned are named as such, rankings and
ranges are on common seeds (stated), and the best NME (selected on the validation set) is not judged.
"""
from __future__ import annotations

from typing import Any, List, Mapping

from hrnet.study.analyse import stats
from hrnet.study.analyse.answer_text import (answer_sentences, closing_sentences, family_sentences, ranking_sentence,
                                             trend_change_text)
from hrnet.study.analyse.calibration import calibration_sentence
from hrnet.study.analyse.words import _grouped, fmt, fmt_p

__all__ = ["verdict", "fmt", "fmt_p", "measured_range"]


def _floors(report: Mapping[str, Any]) -> List[str]:
    fl, arms = report["floors"], report["arms"]
    if not fl.get("available") and "valid" not in fl:
        return [f"No no-learning floor: {fl.get('note', 'not computed')}; 'has not learned' is not judged."]
    v, frac = fl["valid"], fl["learned_fraction"]
    stuck = [n for n, a in arms.items() if a["learned"] is False]
    judged = [n for n, a in arms.items() if a["learned"] is not None]
    out = [f"No-learning floors on the validation set ({v['num_images']} images): every joint at the box centre "
           f"NME {v['box_centre']['NME']:.4f}, the best constant layout fitted on the training set "
           f"{v['constant_layout']['NME']:.4f}. {len(stuck)} of {len(judged)} arms end above {frac:g} x the "
           f"box-centre floor and have not learned" + (": " + ", ".join(stuck) if stuck else "") + "."]
    ref = report["study"]["reference"]
    if arms[ref]["learned"] is False:
        out.append(f"The reference {ref} has not learned: its comparisons with other arms that have not learned "
                   f"carry no verdict; they measure who leaves the starting plateau sooner, not who localises better.")
    return out


def measured_range(line: Mapping[str, Any], user: int) -> str:
    """Where the user's iterations stand against the lengths a trend line measured."""
    its = line["measured_iterations"]
    if not its:
        return "The iterations per run are not known (no image count in the config): the lengths are in epochs."
    span = f"{its[0]:,}..{its[1]:,} iterations per run"
    if line["user_outside"]:
        return (f"The user's {user:,} iterations lie outside the measured range ({span}): nothing here says how "
                "the gap behaves there; the trend is not extrapolated.")
    return f"The user's {user:,} iterations lie within the measured range ({span})."


def _trend(report: Mapping[str, Any]) -> List[str]:
    tr = report.get("trend") or {"lines": []}
    out = []
    for ln in tr["lines"]:
        pts = "; ".join(f"{fmt(p['comparison']['mean_diff'], '+.4f')} [{fmt(p['comparison']['ci_low'], '+.4f')}, "
                        f"{fmt(p['comparison']['ci_high'], '+.4f')}] at {fmt(p['iterations'], ',d')} iterations "
                        f"({p['epochs']} epochs; {p['comparison']['verdict']}, n={p['comparison']['n']}"
                        + ("" if p.get("both_learned", True) else "; not both learned") + ")"
                        for p in ln["points"])
        out.append(f"Lookahead({ln['optimizer']}) - {ln['optimizer']} at LR {fmt(ln['lr'], 'g')} by training length, "
                   f"Holm over the {tr['family_size']} planned points: {pts}. " + trend_change_text(ln) + " "
                   + measured_range(ln, tr["user_iterations"]))
    return out


def _ranking(report: Mapping[str, Any]) -> List[str]:
    rk, arms = report["ranking"], report["arms"]
    if not rk["order"]:
        return ["No seed is finished by every arm with a finished run: no ranking (see the per-arm table)."]
    user = ranking_sentence(report)
    if user:
        return user
    return [f"Ranking by mean final valid NME on the seeds all ranked arms share ({', '.join(map(str, rk['seeds']))}; "
            "lower is better): " + " < ".join(f"{o['arm']} ({o['mean']:.4f}"
                                              + (", not learned" if arms[o["arm"]]["learned"] is False else "") + ")"
                                              for o in rk["order"]) + "."]


def _comparisons(report: Mapping[str, Any]) -> List[str]:
    out = family_sentences(report) + answer_sentences(report)
    sl = report["same_lr"]
    comps = {f"{p['lookahead_arm']} - {p['base_arm']} at LR {p['lr']:g}": p["comparison"] for p in sl["pairs"]}
    text = _grouped(comps, "the optimizer without Lookahead")
    if text:
        m = next(c["family_size"] for c in comps.values() if c["n"])
        out.append(f"Same-LR pairs, Lookahead(X) - X final NME (k {sl['k']}, alpha {fmt(sl['alpha'], 'g')}), Holm over "
                   f"the {m} planned: " + text + (" (provisional)" if any(c.get("provisional") for c in comps.values())
                                                  else "") + ".")
    elif comps:
        out.append("Same-LR pairs: no pair has a seed finished by both sides yet.")
    else:
        out.append("Same-LR pairs: no LR at which both an optimizer and Lookahead of it ran.")
    return out


def _runs(report: Mapping[str, Any]) -> List[str]:
    out = []
    bad = {r["name"]: r["status"] for r in report["runs"] if r["status"] in ("failed", "diverged")}
    if bad:
        out.append(f"{len(bad)} run(s) did not finish and are left out of the statistics: "
                   + ", ".join(f"{n} ({s})" for n, s in bad.items()) + ".")
    missing = [r["name"] for r in report["runs"] if r["status"] in ("partial", "not run")]
    if missing:
        out.append(f"{len(missing)} run(s) are not finished yet (partial or not run): the statistics cover the "
                   f"finished seeds only.")
    it = report["iterations"]
    if it["fraction_of_user"] is not None:
        runs = sorted({v for v in it["per_run"].values() if v})
        out.append(f"Training length: {', '.join(f'{v:,}' for v in runs)} iterations per run, against the user's "
                   f"{it['user']:,} ({100 * it['fraction_of_user']:.2g}% of it at most): the results describe "
                   f"this scale.")
    return out


def _lookahead(report: Mapping[str, Any]) -> List[str]:
    out = []
    word = {stats.BETTER: "lower (better)", stats.WORSE: "higher (worse)"}
    for name, la in report["lookahead"].items():
        c, b = la["epoch_mean_slow_vs_fast"], la["best_slow_vs_fast"]
        differ = la["epochs_where_they_differ"]
        if la["logged"] and differ and not any(differ.values()):
            # Every validation fell right after a sync (iterations per epoch a multiple of k).
            out.append(f"{name}: slow and fast weights coincide at every validation of every seed "
                       f"({len(differ)} seeds: each validation followed a Lookahead sync), so this study "
                       f"cannot tell them apart.")
        elif la["logged"] and c["n"]:
            what = word.get(c["verdict"], c["verdict"] if c["verdict"] in (stats.TOO_FEW, stats.NOT_LEARNED)
                            else "not detectably different")
            out.append(f"{name}: slow - fast weights' valid NME averaged over epochs 1..end {c['mean_diff']:+.4f} "
                       f"(95% CI [{fmt(c['ci_low'])}, {fmt(c['ci_high'])}], Holm p {fmt_p(c['p_adjusted'])}, "
                       f"n={c['n']}): {what}; best slow - fast {b['mean_diff']:+.4f} (selected on the validation "
                       f"set: no verdict).")
    return out


def _sensitivity(report: Mapping[str, Any]) -> List[str]:
    out = []
    spread = report["sensitivity"]["lr_spread"]
    if spread:
        out.append("LR sensitivity (range of the mean final NME over the LRs tried, on each line's common seeds): "
                   + "; ".join(f"{fam}: {s['range']:.4f} over LR {min(s['lrs']):g}..{max(s['lrs']):g} "
                               f"(seeds {', '.join(map(str, s['seeds']))})"
                               for fam, s in sorted(spread.items(), key=lambda kv: kv[1]["range"])) + ".")
    grid = report["sensitivity"]["k_alpha"]
    if grid:
        out.append(f"Lookahead k x alpha grid at LR {grid['lr']:g}: the mean final NME spans {grid['range']:.4f} "
                   f"over k {grid['k']} and alpha {grid['alpha']} (seeds {', '.join(map(str, grid['seeds']))}).")
    return out


def _real(report: Mapping[str, Any]) -> List[str]:
    rh = report["real_hands"]
    if not rh.get("available"):
        return []
    sizes = ", ".join(f"{s}: {v['num_images']} images, {v['num_hands']} distinct hands"
                      for s, v in rh["set_sizes"].items() if s != "all" and v["num_images"] is not None)
    floor = rh["floors"].get("all", {}).get("box_centre", {}).get("NME")
    judged = [a for a, v in rh["per_arm"].items() if v["learned"] is not None]
    stuck = [a for a in judged if rh["per_arm"][a]["learned"] is False]
    out = [f"Real hand photos, final models ({sizes}); box-centre floor {fmt(floor)}: {len(stuck)} of {len(judged)} "
           f"arms end above {report['floors']['learned_fraction']:g} x that floor on them."]
    if rh.get("kendall_tau") is not None:
        same = rh["rank_synthetic"] == rh["rank_real"]
        out.append(f"On seeds {', '.join(map(str, rh['seeds']))} the real-photo ranking "
                   + ("is the same as" if same else "differs from") + f" the synthetic one (Kendall tau "
                   f"{rh['kendall_tau']:+.2f}): " + " < ".join(rh["rank_real"]) + ".")
    return out


def verdict(report: Mapping[str, Any]) -> List[str]:
    """Plain sentences, each computed from the numbers of ``report``."""
    if not any(a["final_NME"]["n"] for a in report["arms"].values()):
        return ["No arm has a finished run yet: nothing to conclude."] + _runs(report)
    return (_floors(report) + [calibration_sentence(report["calibration"])] + _ranking(report) + _comparisons(report)
            + _trend(report) + _runs(report) + _lookahead(report) + _sensitivity(report) + _real(report)
            + closing_sentences(report))
