"""Whether two paired runs computed on machines of the same numerics: the basis of "this comparison
pairs runs of one machine", decided by what the runs computed, not by the CPU's name.

The same CPU string (model name and flags) can hide other numerics: oneDNN picks its kernels and
blocking by microarchitecture and cache sizes, so two machines both called "Intel(R) Xeon(R)
Processor" gave the same seed-0 run an untrained NME of 0.68020 and 0.68088. Two paired runs (same
seed) **share numerics** when

* both record ``machine.numerics`` (``hrnet.runtime.device.numerics_fingerprint``) and the two are
  equal (basis :data:`FINGERPRINT`), or else
* their arms agree on every setting outside ``TRAIN.*`` (model, data, evaluation, device flags) and
  their untrained validation NME (``history`` at epoch 0) is exactly equal (basis :data:`EPOCH0`):
  same seed and the same model and data give the same untrained model, and the optimizer and the
  schedule do not enter epoch 0, so a difference there is the machine's arithmetic.

Otherwise (no fingerprint on one side and no comparable epoch-0 NME) it is unknown.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ["FINGERPRINT", "EPOCH0", "untrained_nme", "untrained_setting", "pair_numerics", "comparison_numerics",
           "merge_numerics", "finished_by_seed"]

FINGERPRINT, EPOCH0 = "fingerprint", "epoch-0 NME"


def untrained_nme(rec: Mapping[str, Any]) -> Optional[float]:
    """The run's validation NME at epoch 0 (before any step), from its record's curves; None when absent."""
    c = rec.get("curves") or {}
    for e, v in zip(c.get("epoch") or (), c.get("NME") or ()):
        if e == 0:
            return v
    return None


def untrained_setting(setting: Optional[Mapping[str, Any]]) -> Optional[Dict[str, Any]]:
    """The config keys of an arm's setting that can reach its untrained validation: all but ``TRAIN.*``
    (the short ``hparams`` names, lower case, are repeats of config keys and are left out)."""
    if setting is None:
        return None
    return {k: v for k, v in setting.items() if (k.isupper() or "." in k) and not k.startswith("TRAIN.")}


def pair_numerics(a: Mapping[str, Any], b: Mapping[str, Any], comparable: bool) -> Tuple[Optional[bool], Optional[str]]:
    """(same numerics, basis) of two runs of one seed; ``comparable``: their arms agree outside
    ``TRAIN.*`` (:func:`untrained_setting`), so their epoch-0 NME may decide. (None, None): unknown."""
    fa, fb = ((r.get("machine") or {}).get("numerics") for r in (a, b))
    if fa and fb:
        return fa == fb, FINGERPRINT
    ea, eb = untrained_nme(a), untrained_nme(b)
    if comparable and ea is not None and eb is not None:
        return ea == eb, EPOCH0
    return None, None


def finished_by_seed(records: Sequence[Mapping[str, Any]]) -> Dict[int, Mapping[str, Any]]:
    """``seed -> record`` of the finished runs."""
    return {r["seed"]: r for r in records if r["status"] == "finished"}


def _comparable(arms: Mapping[str, Mapping[str, Any]], a: str, b: str) -> bool:
    sa, sb = (untrained_setting((arms.get(x) or {}).get("setting")) for x in (a, b))
    return sa is not None and sa == sb


def comparison_numerics(by_arm: Mapping[str, Sequence[Mapping[str, Any]]], arms: Mapping[str, Mapping[str, Any]],
                        a: str, b: str, seeds: Sequence[int]) -> Dict[str, Any]:
    """Per comparison ``a - b`` at ``seeds``: ``pairs``, ``same`` (share numerics), ``different``
    (cross machines: ``crossing_seeds``), ``unknown``, ``basis`` (the bases used, joined)."""
    ra, rb = finished_by_seed(by_arm.get(a, ())), finished_by_seed(by_arm.get(b, ()))
    comparable = _comparable(arms, a, b)
    out: Dict[str, Any] = {"pairs": 0, "same": 0, "different": 0, "unknown": 0, "crossing_seeds": [], "bases": []}
    for s in seeds:
        if s not in ra or s not in rb:
            continue
        same, basis = pair_numerics(ra[s], rb[s], comparable)
        _count(out, s, same, basis)
    return _finish(out)


def _count(out: Dict[str, Any], seed: int, same: Optional[bool], basis: Optional[str]) -> None:
    out["pairs"] += 1
    if same is None:
        out["unknown"] += 1
        return
    out["same" if same else "different"] += 1
    if not same:
        out["crossing_seeds"].append(seed)
    if basis not in out["bases"]:
        out["bases"].append(basis)


def _finish(out: Dict[str, Any]) -> Dict[str, Any]:
    bases: List[str] = out.pop("bases")
    out["basis"] = " and ".join(b for b in (FINGERPRINT, EPOCH0) if b in bases) or None
    return out


def merge_numerics(parts: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """The numerics of a statistic built from several comparisons (a trend change: two pairs a seed)."""
    out: Dict[str, Any] = {"pairs": 0, "same": 0, "different": 0, "unknown": 0, "crossing_seeds": [], "bases": []}
    for p in parts:
        for k in ("pairs", "same", "different", "unknown"):
            out[k] += p[k]
        out["crossing_seeds"] = sorted(set(out["crossing_seeds"]) | set(p["crossing_seeds"]))
        out["bases"] += [b for b in (p["basis"] or "").split(" and ") if b and b not in out["bases"]]
    return _finish(out)
