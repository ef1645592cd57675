"""The answer's verdict sentences (``answer.py``, ``effective_time.py``, ``families.py``), each
computed from the numbers of the report dict; ``verdict.py`` places them."""
from __future__ import annotations

from typing import Any, Dict, List, Mapping

from hrnet.study.analyse import stats
from hrnet.study.analyse.machines import spread_sentence
from hrnet.study.analyse.trend import FEWER_LEARNED, NOT_MEASURABLE
from hrnet.study.analyse.words import fmt, fmt_p

__all__ = ["answer_sentences", "closing_sentences", "family_sentences", "ranking_sentence", "trend_change_text",
           "interval"]

PROVISIONAL = "provisional: its family has members not yet measured"


def interval(c: Mapping[str, Any], p_label: str = "Holm p") -> str:
    """``+0.0183 [+0.0132, +0.0234], Holm p 0.002, n=5`` of a comparison dict."""
    return (f"{fmt(c['mean_diff'], '+.4f')} [{fmt(c['ci_low'], '+.4f')}, {fmt(c['ci_high'], '+.4f')}], "
            f"{p_label} {fmt_p(c['p_adjusted'])}, n={c['n']}")


def _tag(c: Mapping[str, Any]) -> str:
    return f" ({PROVISIONAL})" if c.get("provisional") else ""


def _by_verdict(comps: Mapping[str, Mapping[str, Any]], words: Mapping[str, str]) -> str:
    """``<words[verdict]>: name (interval); ...`` per verdict, the measured comparisons only."""
    groups: Dict[str, List[str]] = {}
    for name, c in comps.items():
        if c["n"]:
            groups.setdefault(c["verdict"], []).append(f"{name} ({interval(c)})")
    return ". ".join(f"{words.get(v, v)}: " + "; ".join(g) for v, g in groups.items())


def ranking_sentence(report: Mapping[str, Any]) -> List[str]:
    """The user's optimizers in order, each adjacent step with the paired comparison behind it."""
    rk = report.get("user_ranking") or {}
    if not rk.get("order"):
        return []
    order = " < ".join(f"{o['arm']} ({o['mean']:.4f}" + (", not learned" if o["learned"] is False else "") + ")"
                       for o in rk["order"])
    steps = []
    for s in rk["steps"]:
        c = s["comparison"]
        if c is None:
            steps.append(f"{s['better']} < {s['worse']}: no paired comparison, the order is by means only")
            continue
        backed = c["verdict"] in (stats.BETTER, stats.WORSE)
        steps.append(f"{s['better']} < {s['worse']}: {s['arm']} - {s['other']} {interval(c)}, {c['verdict']} "
                     f"({s['family']}; " + ("the order holds" if backed else "the order is not shown at this n")
                     + (", provisional" if c.get("provisional") else "") + ")")
    return [f"Ranking of the user's optimizers by mean final valid NME on the seeds they all share "
            f"({', '.join(map(str, rk['seeds']))}; lower is better): {order}. Each step by its own paired comparison: "
            + "; ".join(steps) + "."]


def family_sentences(report: Mapping[str, Any]) -> List[str]:
    """The comparisons with the reference, one sentence per family (final NME)."""
    ref = report["study"]["reference"]
    fams: Dict[str, Dict[str, Any]] = {}
    for arm, metrics in report["comparisons"].items():
        c = metrics["final_NME"]
        fams.setdefault(c.get("family", "all"), {})[arm] = c
    words = {stats.BETTER: f"better than {ref}", stats.WORSE: f"worse than {ref}",
             stats.NO_DIFFERENCE: f"no detectable difference from {ref} at this n",
             stats.TOO_FEW: f"too few seeds for a verdict (< {stats.MIN_PAIRS} pairs)",
             stats.NOT_LEARNED: "both sides have not learned (no verdict)"}
    out = []
    for fam, comps in fams.items():
        m = next(iter(comps.values()))["family_size"]
        measured = sum(c["n"] >= 2 for c in comps.values())
        text = _by_verdict(comps, words) or "no member measured yet"
        prov = any(c.get("provisional") for c in comps.values())
        out.append(f"Final NME against {ref}, {fam}, paired by seed, Holm over the {m} planned "
                   f"({measured} measured{'; provisional' if prov else ''}): {text}.")
    return out


def _vs_user(report: Mapping[str, Any]) -> List[str]:
    vs = report.get("lookahead_vs_user") or {}
    comps, key = vs.get("comparisons") or {}, vs.get("lookahead_arm")
    if not comps:
        return []
    words = {stats.BETTER: f"{key} better than", stats.WORSE: f"{key} worse than",
             stats.NO_DIFFERENCE: f"no detectable difference between {key} and", stats.TOO_FEW: "too few seeds",
             stats.NOT_LEARNED: "both have not learned"}
    m = next(iter(comps.values()))["family_size"]
    return [f"{key} against the user's other optimizers ({key} - X, final NME, paired by seed, Holm over {m}): "
            + (_by_verdict(comps, words) or "no member measured yet") + _tag(next(iter(comps.values()))) + "."]


def _effective_step(report: Mapping[str, Any]) -> List[str]:
    es = report.get("effective_step") or {}
    if not es.get("pairs"):
        return []
    gap = es["key_gap"]
    head = (f"Effective step, the hypothesis Lookahead(X, alpha, lr) ~ X(alpha x lr) (Lookahead(X) at lr against X "
            f"at alpha x lr, final NME paired by seed; difference and equivalence each Holm over {len(es['pairs'])}); "
            + (f"margin +-{es['margin']:.4f} = {es['margin_fraction']:g} x the key pair's gap ({gap:+.4f}): a pair "
               "within it says the smaller step explains most of that gap" if es["margin"] else
               "no margin yet (the key pair has no gap)") + ": ")
    parts = []
    for p in es["pairs"]:
        d, e = p["difference"], p["equivalence"]
        if not d["n"]:
            parts.append(f"{p['key']}: not measured yet")
            continue
        eq = (f"; 90% CI [{fmt(e['ci_low'], '+.4f')}, {fmt(e['ci_high'], '+.4f')}], TOST Holm p "
              f"{fmt_p(e['p_adjusted'])}: {e['verdict']}") if e else ""
        parts.append(f"{p['key']}: {interval(d)}, {d['verdict']}{eq}" + (", provisional" if d["provisional"] else ""))
    return [head + "; ".join(parts) + "."]


def _versus(d: Mapping[str, Any], predicted: float) -> str:
    """``above the predicted 0.5 (difference ...)`` of a ``*_minus_predicted`` dict."""
    rel = ("above" if d["mean_diff"] > 0 else "below") if d["p_value"] < 0.05 else "not distinguishable from"
    return (f"{rel} the predicted {predicted:g} (difference {fmt(d['mean_diff'], '+.2f')} [{fmt(d['ci_low'], '+.2f')}, "
            f"{fmt(d['ci_high'], '+.2f')}], p {fmt_p(d['p_value'])})")


def _effective_time(report: Mapping[str, Any]) -> List[str]:
    et = report.get("effective_time") or {}
    arms = report.get("arms", {})
    done = [p for p in et.get("pairs", []) if p["ratio"]["n"]  # the lengths' variants: in the table only
            and not arms.get(p["lookahead_arm"], {}).get("length_variant_of")]
    if not done:
        return []
    texts = []
    for p in done:
        r, q = p["ratio"], p["pace"]
        text = (f"{p['base_arm']} reaches {p['lookahead_arm']}'s epoch-t NME at {r['mean']:.2f} x t on average over "
                f"epochs {p['window'][0]}..{p['window'][1]} (95% CI [{fmt(r['ci_low'], '.2f')}, "
                f"{fmt(r['ci_high'], '.2f')}], {r['n']} seeds), "
                + _versus(p["ratio_minus_predicted"], p["predicted_ratio"]))
        if q["n"]:
            text += (f"; past the first epochs' steep drop (epochs {p['pace_window'][0]}..{p['pace_window'][1]}) one "
                     f"more {p['lookahead_arm']} epoch is worth {q['mean']:.2f} {p['base_arm']} epochs (95% CI "
                     f"[{fmt(q['ci_low'], '.2f')}, {fmt(q['ci_high'], '.2f')}]), "
                     + _versus(p["pace_minus_predicted"], p["predicted_ratio"]))
        texts.append(text)
    return ["Effective time, before the first LR drop (tau(t): the epoch at which X reaches what Lookahead(X) reached "
            "at epoch t; below 1, Lookahead progresses more slowly; predicted alpha x LR(Lookahead) / LR(X) if "
            "progress depends on lr x iterations only): " + "; ".join(texts) + "."]


def _k_alpha(report: Mapping[str, Any]) -> List[str]:
    ka = report.get("k_alpha_vs_key") or {}
    if not ka.get("pairs"):
        return []
    comps = {f"k {p['k']} alpha {p['alpha']:g}": p["comparison"] for p in ka["pairs"]}
    words = {stats.BETTER: f"better than {ka['key']}", stats.WORSE: f"worse than {ka['key']}",
             stats.NO_DIFFERENCE: f"no detectable difference from {ka['key']}", stats.TOO_FEW: "too few seeds",
             stats.NOT_LEARNED: "both have not learned"}
    return [f"Other (k, alpha) at LR {ka['lr']:g} against {ka['key']} (k {ka['k']}, alpha {ka['alpha']:g}), "
            f"Holm over {len(comps)}: " + (_by_verdict(comps, words) or "not measured yet") + "."]


def _tuned(report: Mapping[str, Any]) -> List[str]:
    tu = report.get("tuned") or {}
    out = []
    for p in tu.get("pairs", []):
        lines = [tu["lines"][p["lookahead_line"]], tu["lines"][p["base_line"]]]
        grid = "; ".join(f"{label} at {ln['best_lr']:g} ({len(ln['measured_lrs'])} of {len(ln['planned_lrs'])} LRs "
                         "measured)" for label, ln in zip((p["lookahead_line"], p["base_line"]), lines))
        edges = [f"{label}'s best is the {ln['best_at_edge']} LR of its grid, so its optimum may lie beyond the grid"
                 for label, ln in zip((p["lookahead_line"], p["base_line"]), lines) if ln.get("best_at_edge")]
        c = p["comparison"]
        out.append(f"Tuned against tuned, each optimizer at the best LR of its grid by final NME, {tu['label']}: "
                   f"{grid}; {p['lookahead_arm']} - {p['base_arm']} {interval(c, 'p')}, {c['verdict']}"
                   + (" (provisional until every LR of both grids is measured)" if c["provisional"] else "")
                   + "".join(f"; {e}" for e in edges) + ".")
    return out


def _families(report: Mapping[str, Any]) -> List[str]:
    rows = report.get("families") or []
    if not rows:
        return []
    prov = [r["name"] for r in rows if r["provisional"]]
    return ["Holm families are fixed by the plan: m is the number of planned members and a member not yet measured "
            "counts as p = 1, so a run finishing in one family never moves another family's verdicts, and in its own "
            "it can only lower the others' adjusted p-values; "
            + "; ".join(f"{r['name']} (m {r['m']}, {r['measured']} measured)" for r in rows)
            + (f". Provisional (members not yet measured): {', '.join(prov)}." if prov else ".")]


def _machines(report: Mapping[str, Any]) -> List[str]:
    """Which comparisons pair runs of other numerics (``numerics.py``), and each replicate's spread."""
    mc = report.get("machines") or {}
    spread = [spread_sentence(e) for e in (report.get("machine_spread") or {}).get("replicates", [])]
    spread = [t for t in spread if t]
    if not mc.get("machines"):
        return spread
    basis = " or ".join(mc.get("bases") or []) or "nothing recorded"
    cpus = f"CPU names (not what decides): {'; '.join(mc['machines'])}"
    out = []
    if mc["mixed"]:
        out.append(f"{len(mc['mixed'])} comparison(s) pair runs from machines of different numerics (by {basis}) on "
                   "some seeds: " + ", ".join(mc["mixed"][:8]) + (" ..." if len(mc["mixed"]) > 8 else "")
                   + f"; {cpus}.")
    if mc.get("unknown"):
        out.append(f"{len(mc['unknown'])} comparison(s) have pairs whose machines cannot be told apart (no "
                   "fingerprint, no comparable untrained NME): " + ", ".join(mc["unknown"][:8])
                   + (" ..." if len(mc["unknown"]) > 8 else "."))  # the ellipsis ends the sentence
    if not out:
        out.append(f"Every comparison pairs runs of the same numerics (by {basis}); {cpus}.")
    return out + spread


def trend_change_text(ln: Mapping[str, Any]) -> str:
    """The change of a trend line's gap between the lengths where both arms learned, in words."""
    c = ln["change"]
    learned = [f"{p['epochs']}" for p in ln["points"] if p.get("both_learned", True)]
    if c["trend"] == FEWER_LEARNED:
        return (f"The change of the gap is not judged: fewer than two lengths where both arms learned (both learned "
                f"at {', '.join(learned) or 'none'} epochs).")
    word = c["trend"] if c["trend"] != stats.TOO_FEW else (f"not judged yet ({stats.TOO_FEW}: fewer than "
                                                          f"{stats.MIN_PAIRS} seeds common to all four arms)")
    word += f" ({c['direction']})" if c.get("direction") else ""
    # "the gap grows / shrinks / holds / changes sign", but "the gap's change is not measurable / not judged yet"
    subject = "the gap's change is" if c["trend"] in (NOT_MEASURABLE, stats.TOO_FEW) else "the gap"
    return (f"Between the lengths where both arms learned ({c['shortest']} to {c['longest']}) {subject} {word}: change "
            f"{fmt(c['mean_diff'], '+.4f')} (95% CI [{fmt(c['ci_low'], '+.4f')}, {fmt(c['ci_high'], '+.4f')}], Holm p "
            f"{fmt_p(c['p_adjusted'])}, n={c['n']}; mean gap {fmt(c.get('gap_shortest'), '+.4f')} -> "
            f"{fmt(c.get('gap_longest'), '+.4f')}).")


def answer_sentences(report: Mapping[str, Any]) -> List[str]:
    """The answer's sentences after the comparisons with the reference."""
    return (_vs_user(report) + _effective_step(report) + _effective_time(report) + _k_alpha(report) + _tuned(report))


def closing_sentences(report: Mapping[str, Any]) -> List[str]:
    """The families and machines sentences, last."""
    return _families(report) + _machines(report)

