"""Numbers and comparisons in words, shared by the verdict sentences (``verdict.py``, ``answer_text.py``)."""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional

from hrnet.study.analyse import stats

__all__ = ["fmt", "fmt_p", "comp_text", "grouped"]

_ORDER = (stats.BETTER, stats.WORSE, stats.NO_DIFFERENCE, stats.TOO_FEW, stats.NOT_LEARNED)


def fmt(v: Optional[float], spec: str = ".4f") -> str:
    """A number, or ``-`` when it is missing or not finite."""
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def fmt_p(p: Optional[float]) -> str:
    """A p-value with 3 decimals, ``<0.001`` below that."""
    return "<0.001" if p is not None and math.isfinite(p) and p < 0.001 else fmt(p, ".3f")


def comp_text(name: str, c: Mapping[str, Any]) -> str:
    return (f"{name} ({c['mean_diff']:+.4f}, 95% CI [{fmt(c['ci_low'], '+.4f')}, {fmt(c['ci_high'], '+.4f')}], "
            f"Holm p {fmt_p(c['p_adjusted'])}, n={c['n']})")


def grouped(comps: Mapping[str, Mapping[str, Any]], other: str) -> str:
    """Comparisons grouped by verdict: ``better than X: ...; worse than X: ...``."""
    groups: Dict[str, List[str]] = {v: [] for v in _ORDER}
    for name, c in comps.items():
        if c["n"]:
            groups[c["verdict"]].append(comp_text(name, c))
    words = {stats.BETTER: f"better than {other}", stats.WORSE: f"worse than {other}",
             stats.NO_DIFFERENCE: f"no detectable difference from {other} at this n",
             stats.TOO_FEW: f"too few seeds for a verdict (< {stats.MIN_PAIRS} pairs)",
             stats.NOT_LEARNED: "both sides have not learned (no verdict)"}
    return ". ".join(f"{words[v]}: " + "; ".join(groups[v]) for v in _ORDER if groups[v])



_comp_text, _grouped = comp_text, grouped
