"""The calibration of a study's scale: does the reference arm learn, measured against the floor?

A comparison of optimizers means something only where the models learn. The study's scale is
chosen so that the reference arm (the user's Adam at 1e-4) ends at or below
:data:`TARGET_FRACTION` x the box-centre floor of the study's validation set (``floors.py``;
0.5 x would be a model that clearly localises fingers). :func:`calibration` measures it from the
reference's finished runs; :func:`calibration_sentence` says it in words, computed from those numbers.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence

from hrnet.study.analyse import stats

__all__ = ["TARGET_FRACTION", "calibration", "calibration_sentence"]

#: The reference arm's mean final NME should be at or below this fraction of the box-centre floor.
TARGET_FRACTION = 0.7


def calibration(reference: str, runs: Sequence[Mapping[str, Any]], floors: Mapping[str, Any]) -> Dict[str, Any]:
    """The reference arm's final NME over its finished seeds against the floors: mean, fraction of
    the box-centre floor, whether it is at or below :data:`TARGET_FRACTION` x (None when unknown)."""
    done = sorted((r for r in runs if r["arm"] == reference and r["status"] == "finished"
                   and r["final_NME"] is not None), key=lambda r: r["seed"])
    final = stats.summarize([r["final_NME"] for r in done])
    valid = floors.get("valid") or {}
    box = valid.get("box_centre", {}).get("NME")
    fraction = final.mean / box if final.n and box else None
    return {"arm": reference, "seeds": [r["seed"] for r in done], "final_NME": final.to_dict(),
            "iterations": sorted({r["iterations"] for r in done if r["iterations"]}),
            "box_centre_floor": box, "constant_layout_floor": valid.get("constant_layout", {}).get("NME"),
            "target_fraction": TARGET_FRACTION, "target_NME": TARGET_FRACTION * box if box else None,
            "fraction_of_floor": fraction, "reached": None if fraction is None else bool(fraction <= TARGET_FRACTION)}


def calibration_sentence(cal: Mapping[str, Any]) -> str:
    """One sentence from :func:`calibration`'s numbers."""
    ref, n = cal["arm"], cal["final_NME"]["n"]
    if cal["box_centre_floor"] is None:
        return f"Calibration: no box-centre floor for this validation set; whether {ref} learns is not judged."
    if not n:
        return f"Calibration: {ref} has no finished run yet; whether this scale reaches {TARGET_FRACTION:g} x the " \
               f"box-centre floor ({cal['target_NME']:.4f}) is not known."
    its = ", ".join(f"{i:,}" for i in cal["iterations"]) or "an unknown number of"
    head = (f"Calibration: the reference {ref} ends at a mean final NME of {cal['final_NME']['mean']:.4f} over "
            f"{n} seed{'s' if n != 1 else ''} after {its} iterations, {cal['fraction_of_floor']:.2f} x the "
            f"box-centre floor ({cal['box_centre_floor']:.4f})")
    if cal["reached"]:
        return head + f": at or below {TARGET_FRACTION:g} x ({cal['target_NME']:.4f}), the models learn at this scale."
    return head + (f": above {TARGET_FRACTION:g} x ({cal['target_NME']:.4f}); the study does not reach "
                   f"{TARGET_FRACTION:g} x at this scale (the closest scale used), so its comparisons are "
                   "between models that learn less than the target regime asks.")
