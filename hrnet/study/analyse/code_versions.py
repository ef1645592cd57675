"""Which code trained which run, in the report: the versions, and the comparisons that cross them.

Each run record carries ``code_versions`` (``plan.identity.run_code_versions``: the code of each
training session, ``not recorded (before provenance)`` for runs trained before ``metrics.json``
recorded it). :func:`provenance` lists the versions with their runs and marks every paired
comparison whose runs (both sides, on the seeds it pairs) came from more than one version, a
"not recorded" one included: such a difference may be the code's as well as the optimizer's.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Sequence, Tuple

from hrnet.study.plan.identity import NOT_RECORDED

__all__ = ["provenance"]


def _versions(by_arm: Mapping[str, Sequence[Mapping[str, Any]]], arms: Sequence[str], seeds: Sequence[int]
              ) -> Dict[str, str]:
    """``id -> label`` of the code versions of the finished runs of ``arms`` with ``seeds``."""
    found: Dict[str, str] = {}
    for a in arms:
        for r in by_arm.get(a, ()):
            if r["status"] == "finished" and r["seed"] in seeds:
                found.update((v["id"], v["label"]) for v in r.get("code_versions") or ())
    return found


def _comparisons(report: Mapping[str, Any]) -> Iterator[Tuple[str, Dict[str, Any], Tuple[str, ...]]]:
    """(name, comparison dict, the arms on its two sides) of every paired comparison between arms."""
    ref = report["study"]["reference"]
    for arm, metrics in report["comparisons"].items():
        for metric, c in metrics.items():
            yield f"{arm} vs {ref} ({metric})", c, (arm, ref)
    for p in report["same_lr"]["pairs"]:
        yield f"same LR: {p['key']}", p["comparison"], (p["lookahead_arm"], p["base_arm"])
    for line in report["trend"]["lines"]:
        pts = line["points"]
        for p in pts:
            yield f"trend: {p['lookahead_arm']} - {p['base_arm']}", p["comparison"], (p["lookahead_arm"], p["base_arm"])
        ends = (pts[0]["lookahead_arm"], pts[0]["base_arm"], pts[-1]["lookahead_arm"], pts[-1]["base_arm"])
        yield f"trend change: {pts[-1]['lookahead_arm']} vs {pts[0]['lookahead_arm']}", line["change"], ends
    real = report.get("real_hands") or {}
    for arm, c in (real.get("vs_reference") or {}).items():
        yield f"real photos: {arm} vs {ref}", c, (arm, ref)


def provenance(report: Mapping[str, Any], by_arm: Mapping[str, Sequence[Mapping[str, Any]]]) -> Dict[str, Any]:
    """The report's ``provenance``: each code version with the runs it trained (epochs of them), the
    runs trained by several, and the comparisons across versions. Marks each comparison dict in
    ``report`` with ``code_versions`` (labels) and ``code_versions_differ``."""
    runs: Dict[str, List[str]] = {}
    mixed = []
    for r in report["runs"]:
        versions = r.get("code_versions") or []
        for label in dict.fromkeys(v["label"] for v in versions):
            runs.setdefault(label, []).append(r["name"])
        if len({v["id"] for v in versions}) > 1:
            mixed.append(r["name"])
    across = []
    for name, c, arms in _comparisons(report):
        found = _versions(by_arm, arms, c.get("seeds") or ())
        c["code_versions"] = sorted(set(found.values()))
        c["code_versions_differ"] = len(found) > 1
        if c["code_versions_differ"]:
            across.append(name)
    # sorted: the report must not depend on the order the run folders were read in
    return {"versions": [{"label": k, "runs": sorted(v)} for k, v in sorted(runs.items())],
            "runs_with_several": sorted(mixed),
            "comparisons_across_versions": across, "not_recorded": NOT_RECORDED,
            "source": "each run's metrics.json code_version / code_versions (git commit, dirty flag, sha256 of "
                      "the sources)"}
