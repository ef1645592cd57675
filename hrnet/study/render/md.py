"""Markdown pieces shared by the report's sections (``report.py``, ``answer_md.py``)."""
from __future__ import annotations

from typing import Any, List, Mapping, Sequence

from hrnet.study.analyse.words import fmt, fmt_p

__all__ = ["msd", "table", "seeds_text", "comp_cells", "COMP_HEAD"]

COMP_HEAD = ["pairs", "mean diff", "95% CI (unadjusted)", "p", "Holm p", "seeds better / worse / tie", "verdict"]


def msd(s: Mapping[str, Any], spec: str = ".4f") -> str:
    """``mean +- std [ci_low, ci_high]`` of a ``stats.Summary`` dict."""
    if not s or not s.get("n"):
        return "-"
    text = fmt(s["mean"], spec)
    if s["n"] > 1:
        text += f" +- {fmt(s['std'], spec)} [{fmt(s['ci_low'], spec)}, {fmt(s['ci_high'], spec)}]"
    return text


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """A markdown table; every row must have one cell per column label."""
    if any(len(r) != len(header) for r in rows):
        raise ValueError(f"a table row does not match its {len(header)} column labels")
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def seeds_text(seeds: Sequence[int]) -> str:
    return ", ".join(map(str, seeds)) if seeds else "none"


def comp_cells(c: Mapping[str, Any]) -> List[str]:
    """pairs, mean diff, unadjusted 95% CI, p, Holm p, seeds favouring each side, verdict."""
    return [str(c["n"]), fmt(c["mean_diff"], "+.4f"), f"[{fmt(c['ci_low'], '+.4f')}, {fmt(c['ci_high'], '+.4f')}]",
            fmt_p(c["p_value"]), fmt_p(c["p_adjusted"]),
            f"{c['n_arm_better']} / {c['n_ref_better']} / {c['n_ties']}", c["verdict"] or "-"]
