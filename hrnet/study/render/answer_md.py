"""The report's answer sections in markdown (``analyse/answer.py``, ``effective_time.py``,
``families.py``): Lookahead against the user's other optimizers, the effective-step pairs (difference
and equivalence), the effective time, k x alpha against the user's Lookahead, tuned against tuned,
and the families of comparisons with the machines of their runs. Reads the report dict only."""
from __future__ import annotations

from typing import Any, List, Mapping

from hrnet.study.analyse.words import fmt, fmt_p
from hrnet.study.render.md import COMP_HEAD, comp_cells, msd, seeds_text, table

__all__ = ["answer_sections", "families_section"]


def _prov(c: Mapping[str, Any]) -> str:
    return "provisional" if c.get("provisional") else "complete"


def _vs_user(report: Mapping[str, Any]) -> List[str]:
    vs = report.get("lookahead_vs_user") or {}
    if not vs.get("comparisons"):
        return []
    key = vs["lookahead_arm"]
    md = [f"## {key} against the user's other optimizers", "",
          f"Final NME of `{key} - X` for each of the user's other arms X (the reference's comparison is in the family "
          "above), paired by seed; one Holm family, m = the planned members. Negative: Lookahead is better. Every "
          "order the ranking states between these arms has its own comparison here or with the reference.", ""]
    md += table(["X"] + COMP_HEAD + ["family"],
                [[o] + comp_cells(c) + [_prov(c)] for o, c in vs["comparisons"].items()])
    return md + [""]


def _effective_step(report: Mapping[str, Any]) -> List[str]:
    es = report.get("effective_step") or {}
    if not es.get("pairs"):
        return []
    md = ["## Effective step: Lookahead(X, alpha, lr) against X at alpha x lr", "",
          "The hypothesis Lookahead(X, alpha, lr) ~ X(alpha x lr): with alpha = 0.5 the slow weights move about half "
          "as far per cycle as the inner optimizer, so Lookahead at 2 x lr should behave like X at lr, and X at "
          "lr / 2 like Lookahead at lr. Final NME of `Lookahead - X`, paired by seed. Difference: paired t-test, "
          "Holm over the planned pairs. Equivalence: two one-sided paired t-tests (TOST) at +-margin, Holm over the "
          "planned pairs; equivalent exactly when the 90% interval lies inside +-margin. "
          + (f"Margin {es['margin']:.4f} = {es['margin_fraction']:g} x the key pair's gap "
             f"({es['key_pair'][0]} - {es['key_pair'][1]}, {es['key_gap']:+.4f}): the question is whether the smaller "
             "step explains that gap, and a pair within half of it says the step explains most of it."
             if es["margin"] else "No margin yet: the key pair has no measured gap."), ""]
    rows = []
    for p in es["pairs"]:
        e = p["equivalence"] or {}
        rows.append([p["key"], fmt(p["lr"], "g"), fmt(p["base_lr"], "g"), fmt(p["alpha"], "g")]
                    + comp_cells(p["difference"])
                    + [f"[{fmt(e.get('ci_low'), '+.4f')}, {fmt(e.get('ci_high'), '+.4f')}]",
                       f"{fmt_p(e.get('p_lower'))} / {fmt_p(e.get('p_upper'))}", fmt_p(e.get("p_adjusted")),
                       e.get("verdict") or "-", _prov(p["difference"])])
    md += table(["pair", "LR (Lookahead)", "LR (X)", "alpha"] + COMP_HEAD
                + ["90% CI", "TOST p (lower / upper)", "TOST Holm p", "equivalence", "family"], rows)
    return md + [""]


def _effective_time(report: Mapping[str, Any]) -> List[str]:
    et = report.get("effective_time") or {}
    if not et.get("pairs"):
        return []
    md = ["## Effective time", "",
          "For each Lookahead(X) arm and X at the same LR (or at alpha x the LR), paired by seed, before the first LR "
          "drop: tau(t) is the epoch at which X's valid NME curve (linear between epochs) first reaches Lookahead's "
          "NME at epoch t; per seed the ratio is the mean of tau(t) / t over the epochs t whose level X reaches before "
          "its LR drops (the others are censored, counted); mean and 95% Student t interval over seeds. Below 1: "
          "Lookahead progresses more slowly than X. The pace: per seed the least-squares slope of tau(t) on t over "
          "the second half of the window, past the first epochs' steep drop (where every curve crosses the early "
          "levels within an epoch, so tau(t) is close to t whatever the pace, pulling the ratio towards 1). "
          "Predicted ratio and pace: alpha x LR(Lookahead) / LR(X), from the "
          "hypothesis Lookahead(X, alpha, lr) ~ X(alpha x lr) when progress depends on lr x iterations only "
          "(the slow weights advance alpha x the k fast steps' displacement per cycle); the difference is a "
          "one-sample t-test over seeds, descriptive (no Holm family). `lookahead.png` draws tau(t).", ""]
    rows = []
    for p in et["pairs"]:
        d = p["ratio_minus_predicted"]
        per = ", ".join(f"{s}: {fmt(v['ratio'], '.3f')}" for s, v in p["per_seed"].items()) or "-"
        cens = sum(v["censored"] for v in p["per_seed"].values())
        q = p["pace_minus_predicted"]
        rows.append([f"{p['lookahead_arm']} vs {p['base_arm']}", f"{p['window'][0]}..{p['window'][1]}",
                     fmt(p["predicted_ratio"], "g"), per, msd(p["ratio"], ".3f"), _vs_pred(d),
                     f"{p['pace_window'][0]}..{p['pace_window'][1]}", msd(p["pace"], ".3f"), _vs_pred(q), str(cens)])
    md += table(["pair", "epochs t", "predicted", "ratio per seed", "ratio mean +- std [95% CI]",
                 "ratio - predicted [95% CI], p", "pace epochs", "pace mean +- std [95% CI]",
                 "pace - predicted [95% CI], p", "censored epochs (all seeds)"], rows)
    return md + [""]


def _vs_pred(d: Mapping[str, Any]) -> str:
    return (f"{fmt(d['mean_diff'], '+.3f')} [{fmt(d['ci_low'], '+.3f')}, {fmt(d['ci_high'], '+.3f')}], "
            f"p {fmt_p(d['p_value'])}")


def _k_alpha(report: Mapping[str, Any]) -> List[str]:
    ka = report.get("k_alpha_vs_key") or {}
    if not ka.get("pairs"):
        return []
    md = [f"## k x alpha against {ka['key']}", "",
          f"Final NME of each Lookahead arm at LR {fmt(ka['lr'], 'g')} with another (k, alpha) minus {ka['key']} "
          f"(k {ka['k']}, alpha {fmt(ka['alpha'], 'g')}), paired by seed; one Holm family (m = the planned arms).", ""]
    md += table(["arm", "k", "alpha"] + COMP_HEAD + ["family"],
                [[p["arm"], str(p["k"]), fmt(p["alpha"], "g")] + comp_cells(p["comparison"]) + [_prov(p["comparison"])]
                 for p in ka["pairs"]])
    return md + [""]


def _edge(line: Mapping[str, Any]) -> str:
    """A grid whose best LR is its highest or lowest does not bracket the optimum."""
    if line.get("best_at_edge"):
        return f"yes, the {line['best_at_edge']}: the optimum may lie beyond"
    return "no" if line["best_lr"] is not None and len(line["planned_lrs"]) > 1 else "-"


def _tuned(report: Mapping[str, Any]) -> List[str]:
    tu = report.get("tuned") or {}
    if not tu.get("lines"):
        return []
    md = ["## Tuned against tuned", "",
          f"Each optimizer line at the LR of its grid with the lowest mean final NME on the line's common seeds, "
          f"{tu['label']}; then Lookahead(X) - X at those LRs, paired by seed (a family of one each), provisional "
          "while a line has LRs not yet measured. A best LR at the grid's end means the grid does not bracket "
          "that optimizer's optimum.", ""]
    md += table(["line", "LRs planned", "LRs measured", "common seeds", "best LR", "mean final NME at it",
                 "best at the grid's end"],
                [[label, ", ".join(f"{v:g}" for v in ln["planned_lrs"]),
                  ", ".join(f"{v:g}" for v in ln["measured_lrs"]) or "-", seeds_text(ln["seeds"]),
                  fmt(ln["best_lr"], "g"), fmt(ln["best_mean"]), _edge(ln)] for label, ln in tu["lines"].items()])
    if tu["pairs"]:
        md += ["", *table(["pair (best LRs)"] + COMP_HEAD + ["status"],
                          [[f"{p['lookahead_arm']} ({p['lookahead_lr']:g}) - {p['base_arm']} ({p['base_lr']:g})"]
                           + comp_cells(p["comparison"]) + [_prov(p["comparison"])] for p in tu["pairs"]])]
    return md + [""]


def families_section(report: Mapping[str, Any]) -> List[str]:
    """Every Holm family (final NME), fixed by the plan; and the machines of the compared runs."""
    rows = report.get("families") or []
    md = ["## Families of comparisons", "",
          "Holm families are fixed by the plan, not by what has finished: m is the number of planned members, and a "
          "member not yet measured counts as p = 1 (sorted last), so each adjusted p is an upper bound of the one the "
          "complete family gives with the same measured values. A run finishing in one family never moves another "
          "family's verdicts; in its own it can only lower the others' adjusted p. A family with members not yet "
          "measured (or with fewer pairs than planned) is provisional.", ""]
    if rows:
        md += table(["family", "question", "planned m", "members measured", "status", "Holm p of the members"],
                    [[r["name"], r["question"], str(r["m"]), f"{r['measured']} of {r['members']}",
                      "provisional" if r["provisional"] else "complete",
                      ", ".join(fmt_p(p) for p in r["p_adjusted"])] for r in rows])
    mc = report.get("machines") or {}
    if mc.get("machines"):
        basis = " or ".join(mc.get("bases") or []) or "nothing recorded"
        md += ["", "Machines of the compared runs, decided by numerics (two runs of one seed share them when their "
               "`numerics` fingerprints are equal, else when their untrained epoch-0 NME is exactly equal; the CPU "
               f"name does not decide it); basis used here: {basis}. CPU names: " + "; ".join(mc["machines"]) + ". "
               + (f"Comparisons whose pairs cross machines on some seeds: {', '.join(mc['mixed'])}." if mc["mixed"]
                  else "Every comparison pairs runs of the same numerics.")
               + (f" Machines not told apart (no fingerprint, no comparable untrained NME): {', '.join(mc['unknown'])}."
                  if mc.get("unknown") else "")]
    return md + [""]


def answer_sections(report: Mapping[str, Any]) -> List[str]:
    """The answer's sections, after the comparisons with the reference."""
    return _vs_user(report) + _effective_step(report) + _effective_time(report) + _k_alpha(report) + _tuned(report)
