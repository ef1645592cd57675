"""The report's "Machine-to-machine spread" section: each replicate arm against its original, seed by
seed, and the same-machine checks (``hrnet.study.analyse.machines``). Reads the report dict only."""
from __future__ import annotations

from typing import Any, List, Mapping, Optional

from hrnet.study.analyse.machines import CHECK_LABEL, spread_sentence
from hrnet.study.analyse.words import fmt, fmt_p
from hrnet.study.render.md import seeds_text, table

__all__ = ["machine_spread_section"]


def _same(v: Optional[bool], basis: Optional[str]) -> str:
    return {True: "yes", False: "**no**"}.get(v, "unknown") + (f" ({basis})" if basis else "")


def _numerics(num: Optional[Mapping[str, Any]]) -> str:
    if not num:
        return "-"
    return f"{num['same']}/{num['pairs']} same" + (f", crossing seeds {seeds_text(num['crossing_seeds'])}"
                                                   if num["crossing_seeds"] else "")


def _cmp(c: Mapping[str, Any], p_label: str) -> str:
    return (f"{fmt(c['mean_diff'], '+.4f')} [{fmt(c['ci_low'], '+.4f')}, {fmt(c['ci_high'], '+.4f')}], "
            f"{p_label} {fmt_p(c['p_adjusted'])}, n={c['n']}: {c['verdict'] or '-'}")


def _replicate(e: Mapping[str, Any]) -> List[str]:
    md = [f"**{e['arm']}** (`{e['config']}`" + (f" `{' '.join(e['overrides'])}`" if e["overrides"] else "")
          + f", seeds {seeds_text(e['seeds'])}): a replicate of **{e['of']}**.", ""]
    text = spread_sentence(e)
    md += [text or "No seed finished on both sides yet.", ""]
    if e["per_seed"]:
        md += table(["seed", f"final NME {e['arm']}", f"final NME {e['of']}", "replicate - original",
                     f"untrained NME {e['arm']}", f"untrained NME {e['of']}", "same numerics (basis)"],
                    [[str(r["seed"]), fmt(r["final_NME_replicate"]), fmt(r["final_NME_original"]),
                      fmt(r["diff"], "+.4f"), fmt(r["untrained_NME_replicate"], ".5f"),
                      fmt(r["untrained_NME_original"], ".5f"), _same(r["same_numerics"], r["basis"])]
                     for r in e["per_seed"]]) + [""]
    return md


def machine_spread_section(report: Mapping[str, Any]) -> List[str]:
    """The section, or nothing for a study without replicate arms."""
    ms = report.get("machine_spread") or {}
    if not ms.get("replicates"):
        return []
    md = ["## Machine-to-machine spread", "",
          "A replicate arm trains another arm's setting again (the whole config but the seed): the same runs, on "
          "the machine that trained them. It is not an optimizer and enters no family, ranking, sensitivity, tuned "
          "comparison or figure. Per seed: replicate minus original final NME, each side's untrained (epoch-0) NME, "
          "and whether the two share numerics (equal `numerics` fingerprints, else an equal untrained NME); runs "
          "that share numerics must end bitwise equal.", ""]
    for e in ms["replicates"]:
        md += _replicate(e)
    if ms["checks"]:
        md += [f"**{CHECK_LABEL}s**: final-NME comparisons whose pairs cross machines, redone with a replicate in "
               "place of one side on the seeds where the replicate shares numerics with the other side (the other "
               "seeds kept); p x m: the p-value times the planned family size (the strictest Holm step).", ""]
        md += table(["comparison", "arms", "replaced by (seeds)", "as reported", "numerics as reported",
                     CHECK_LABEL, "numerics of the check"],
                    [[c["comparison"], " - ".join(c["arms"]),
                      f"{c['replaced']} -> {c['replicate']} ({seeds_text(c['seeds_substituted'])})",
                      _cmp(c["original"], "Holm p"), _numerics(c["original"]["numerics"]), _cmp(c["check"], "p x m"),
                      _numerics(c["check"]["numerics"])] for c in ms["checks"]])
        md += [""]
    return md
