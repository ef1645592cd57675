"""Unit tests of the study report's renderers (hrnet/study/render/: md.py, report.py, answer_md.py,
machines_md.py, figures.py, answer_figures.py) on tiny hand-made report dicts: the exact markdown
lines of each section, and what each figure decides to draw (series, labels, limits, titles) read
back from its matplotlib Axes (Agg), not from pixels. Fast: the mutation section ``study_render``
runs them for every mutant."""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Optional

import numpy as np
import pytest

from hrnet.study.analyse import stats
from hrnet.study.render import answer_md, figures, machines_md, md, report as rp
from hrnet.study.render import answer_figures as af

NAN = float("nan")


def comp(n: int = 3, mean: float = -0.0123, lo: float = -0.02, hi: float = -0.0046, p: float = 0.0123,
         padj: float = 0.0246, better: int = 3, worse: int = 0, ties: int = 0, verdict: Optional[str] = "better",
         **kw: Any) -> Dict[str, Any]:
    """A paired comparison's dict as the report holds it."""
    return dict({"n": n, "mean_diff": mean, "ci_low": lo, "ci_high": hi, "p_value": p, "p_adjusted": padj,
                 "n_arm_better": better, "n_ref_better": worse, "n_ties": ties, "verdict": verdict}, **kw)


def summ(mean: Optional[float], std: float = 0.01, n: int = 3, lo: float = 0.1, hi: float = 0.3) -> Dict[str, Any]:
    return {"mean": mean, "std": std, "n": n, "ci_low": lo, "ci_high": hi}


# ---------------------------------------------------------------------------- md.py
def test_msd_mean_std_and_interval():
    assert md.msd(summ(0.2, 0.01, 3, 0.17, 0.23)) == "0.2000 +- 0.0100 [0.1700, 0.2300]"
    assert md.msd(summ(0.2, 0.01, 3, 0.17, 0.23), ".2f") == "0.20 +- 0.01 [0.17, 0.23]"
    assert md.msd(summ(0.2, NAN, 1, NAN, NAN)) == "0.2000"  # one seed: no spread
    assert md.msd(summ(None, n=0)) == md.msd({}) == md.msd(None) == "-"


def test_table_rows_must_match_the_labels():
    assert md.table(["a", "b"], [["1", "2"], ["3", "4"]]) == ["| a | b |", "|---|---|", "| 1 | 2 |", "| 3 | 4 |"]
    assert md.table(["a"], []) == ["| a |", "|---|"]
    with pytest.raises(ValueError, match="^a table row does not match its 2 column labels$"):
        md.table(["a", "b"], [["1", "2"], ["3"]])


def test_seeds_text_and_comparison_cells():
    assert md.seeds_text([0, 2, 5]) == "0, 2, 5" and md.seeds_text([]) == "none"
    assert md.comp_cells(comp(ties=1, worse=2, better=0, p=0.0004, padj=0.3)) == \
        ["3", "-0.0123", "[-0.0200, -0.0046]", "<0.001", "0.300", "0 / 2 / 1", "better"]
    assert md.comp_cells(comp(n=1, mean=0.5, lo=NAN, hi=NAN, p=NAN, padj=NAN, verdict=None))[1:] == \
        ["+0.5000", "[-, -]", "-", "-", "3 / 0 / 0", "-"]
    assert md.COMP_HEAD == ["pairs", "mean diff", "95% CI (unadjusted)", "p", "Holm p",
                            "seeds better / worse / tie", "verdict"]


# ---------------------------------------------------------------------------- report.py
FLOORS = {"learned_fraction": 0.8, "source": "floors.json",
          "valid": {"num_images": 3, "num_hands": 2, "box_centre": {"NME": 0.5, "PCK@0.2": 0.25},
                    "constant_layout": {"NME": 0.4}},
          "real": {"photos": {"num_images": 5, "num_hands": 4, "box_centre": {"NME": 0.6, "PCK@0.1": 0.125},
                              "constant_layout": {"NME": 0.45}}, "empty": None}}
STUDY = {"name": "s", "generated": "2026-01-01", "file": "study.yaml", "out_dir": "out", "paths": "relative",
         "description": "", "reference": "adam", "statistics": "paired t", "shared_overrides": [],
         "command_line_overrides": [], "nme_levels": [0.3, 0.25]}
CAL = {"arm": "adam", "box_centre_floor": None, "final_NME": {"n": 0}}


def arm(**kw: Any) -> Dict[str, Any]:
    a = {"config": "hand_adam.yaml", "family": "adam", "lr": 1e-4, "k": None, "alpha": None, "overrides": [],
         "seeds": [0, 1], "priority": 0, "finished_seeds": [0, 1], "iterations": [1200, 1500],
         "final_NME": summ(0.2), "final_NME_over_floor": 0.4, "learned": True, "PCK": summ(0.5),
         "AUC": summ(0.25), "EPE": summ(3.21), "best_NME": summ(0.18),
         "epochs_to_reach": {"0.3": {"n": 2, "n_reached": 2, "median": 2}, "0.25": {"n": 0}},
         "wall_time_s": {"mean": 90.0}, "overhead_fraction": {"mean": 0.123, "n": 2}}
    a.update(kw)
    return a


def test_header_and_verdict():
    assert rp._header({"study": STUDY, "verdict": ["one.", "two."]}) == [
        "# Study `s`", "",
        "Generated 2026-01-01 from `study.yaml` into `out` (relative). Regenerate with `python tools/study.py "
        "study.yaml --out out --report-only`; every number below is in `report.json` (per seed).", "",
        "## Verdict", "", "- one.", "- two.", ""]


def test_floor_rows_per_set():
    assert rp._floor_rows({"floors": FLOORS}) == [
        ["validation set (synthetic)", "3", "2", "0.5000", "0.250", "0.4000", "0.4000"],
        ["real: photos", "5", "4", "0.6000", "0.125", "0.4500", "0.4800"]]
    assert rp._floor_rows({"floors": {"learned_fraction": 0.8}}) == []


def _protocol_report(**study: Any) -> Dict[str, Any]:
    return {"study": dict(STUDY, **study), "floors": FLOORS, "iterations": {"formula": "epochs x batches"},
            "scale": [{"key": "TRAIN.END_EPOCH", "user": 210, "study": 6, "scaled": True},
                      {"key": "MODEL.SIGMA", "user": 2, "study": 2, "scaled": False}],
            "calibration": CAL,
            "arms": {"adam": arm(), "la": arm(family=None, lr=2e-4, k=5, alpha=0.5, overrides=["TRAIN.K=5", "X=1"],
                                               priority=2, seed_priority={3: 1, 4: 0})}}




PROTOCOL = (
    ['## Protocol',
     '',
     'Reference arm: **adam**. Statistics: paired t. Runs with the same seed share the initial weights, data '
     'order and augmentation. Only finished runs enter the statistics.',
     '',
     "What this study changes from the user's setting (configs/defaults.py and the six "
     '`experiments/hand_*.yaml`); `iterations`: optimizer steps per run, epochs x batches:',
     '',
     "| config key | user's setting | this study |",
     '|---|---|---|',
     '| `TRAIN.END_EPOCH` | 210 | **6** |',
     '| `MODEL.SIGMA` | 2 | 2 |',
     '',
     "**No-learning floors** (predictions that never look at the image, scored by the project's NME): every "
     'joint at the box centre, and the one layout in box coordinates with the lowest NME on the training '
     'annotations placed in each box. An arm above 0.8 x the box-centre floor has not learned. Distinct '
     'hands: annotations with identical box and keypoints counted once. Source: floors.json.',
     '',
     '| set | images | distinct hands | box-centre NME | box-centre PCK | constant-layout NME | not learned '
     'above |',
     '|---|---|---|---|---|---|---|',
     '| validation set (synthetic) | 3 | 2 | 0.5000 | 0.250 | 0.4000 | 0.4000 |',
     '| real: photos | 5 | 4 | 0.6000 | 0.125 | 0.4500 | 0.4800 |',
     '',
     'Calibration: no box-centre floor for this validation set; whether adam learns is not judged. '
     "(`calibration.png`: the reference's valid NME per epoch against the floors.)",
     '',
     'Arms:',
     '',
     '| arm | config | optimizer | LR | k | alpha | arm overrides | seeds | priority |',
     '|---|---|---|---|---|---|---|---|---|',
     '| adam | `hand_adam.yaml` | adam | 0.0001 | - | - |  | 0,1 | 0 |',
     '| la | `hand_adam.yaml` | - | 0.0002 | 5 | 0.5 | `TRAIN.K=5 X=1` | 0,1 | 2; seed 3: 1; seed 4: 0 |',
     ''])


def test_protocol_section():
    assert rp._protocol(_protocol_report()) == PROTOCOL
    got = rp._protocol(_protocol_report(description="Why.", shared_overrides=["A=1", "B=2"],
                                        command_line_overrides=["C=3"]))
    assert got[:4] == ["## Protocol", "", "Why.", ""] and got[4:] == PROTOCOL[2:10] + [
        "", "Shared overrides: `A=1 B=2`; command line: `C=3`"] + PROTOCOL[10:]
    got = rp._protocol(_protocol_report(shared_overrides=["A=1"]))
    assert got == PROTOCOL[:10] + ["", "Shared overrides: `A=1`"] + PROTOCOL[10:]
    got = rp._protocol(_protocol_report(command_line_overrides=["C=3"]))  # listed even without shared ones
    assert got == PROTOCOL[:10] + ["", "Shared overrides: ``; command line: `C=3`"] + PROTOCOL[10:]


def test_protocol_without_floors_says_why():
    rep = dict(_protocol_report(), floors={"note": "no annotations"})
    got = rp._protocol(rep)
    assert got[11] == PROTOCOL[11].replace("Source: floors.json.", "Source: no annotations.")
    assert got[12:15] == ["", "no annotations", ""]
    assert rp._protocol(dict(_protocol_report(), floors={}))[11:14] == [
        PROTOCOL[11].replace("Source: floors.json.", "Source: -."), "", "-"]


def test_code_versions_lists_the_versions_and_the_comparisons_across_them():
    pv = {"source": "runs' provenance.json",
          "versions": [{"label": "abc123", "runs": [f"r{i}" for i in range(6)]},
                       {"label": "def456 (dirty)", "runs": [f"r{i}" for i in range(7)]}],
          "runs_with_several": ["r1", "r2"], "comparisons_across_versions": ["comparisons.la.final_NME", "x"]}
    assert rp._code_versions({"provenance": pv}) == [
        "**Code versions** (runs' provenance.json):", "",
        "- abc123: 6 run(s) (r0, r1, r2, r3, r4, r5)", "- def456 (dirty): 7 run(s)",
        "- trained by several versions (resumed with other code): r1, r2", "",
        "Comparisons whose runs came from different code versions (2; in report.json: `code_versions_differ`): "
        "comparisons.la.final_NME; x.", ""]
    pv.update(versions=[], runs_with_several=[], comparisons_across_versions=[])
    assert rp._code_versions({"provenance": pv}) == [
        "**Code versions** (runs' provenance.json):", "", "- no run recorded yet", "",
        "Every comparison pairs runs of one code version.", ""]
    assert rp._code_versions({}) == [] and rp._code_versions({"provenance": None}) == []


def _run(name: str, status: str = "finished", **kw: Any) -> Dict[str, Any]:
    r = {"name": name, "arm": name.split("_seed")[0], "seed": int(name.split("_seed")[1]), "status": status,
         "reason": None, "iterations": 1200, "final_NME": 0.21234, "wall_time_s": 42.0, "machine": None,
         "pck_key": "PCK@0.2", "curves": {"epoch": [0, 1, 2], "NME": [0.7, 0.4, 0.3]}}
    r.update(kw)
    return r


RUNS = [_run("adam_seed0", machine={"cpu": "Xeon|Gold", "threads": 4, "device": "cpu"}),
        _run("adam_seed1", machine={"cpu": "Xeon|Gold", "threads": 0, "device": None}),
        _run("la_seed0", status="failed", reason="exit 1 | OOM", iterations=None, wall_time_s=None),
        _run("la_seed1", status="not run", machine={"cpu": "EPYC"}),
        _run("la_seed2", status="running", machine={"cpu": None})]


def test_runs_section_counts_statuses_and_cpus():
    assert rp._runs({"runs": RUNS}) == [
        "## Runs", "",
        "2 finished, 1 failed, 1 not run, 1 running of 5 runs, in the plan's order (priority, seed, arm); folders "
        "`runs/<arm>_seed<s>/`. The machine each run trained on, as its metrics.json records it ('-': not "
        "recorded).", "",
        "CPU models: Xeon/Gold (2 runs); not recorded (2 runs).", "",
        "| run | status | detail | iterations | final NME | wall time | CPU | torch threads | device |",
        "|---|---|---|---|---|---|---|---|---|",
        "| adam_seed0 | finished |  | 1,200 | 0.2123 | 42 s | Xeon/Gold | 4 | cpu |",
        "| adam_seed1 | finished |  | 1,200 | 0.2123 | 42 s | Xeon/Gold | 0 | - |",
        "| la_seed0 | failed | exit 1 / OOM | - | - | - | - | - | - |",
        "| la_seed1 | not run |  | 1,200 | - | 42 s | EPYC | - | - |",
        "| la_seed2 | running |  | 1,200 | - | 42 s | - | - | - |", ""]
    one = rp._runs({"runs": [RUNS[0]]})
    assert one[2].startswith("1 finished of 1 runs") and one[4] == "CPU models: Xeon/Gold (1 run)."
    assert rp._runs({"runs": [RUNS[3]]})[4:6] == ["| run | status | detail | iterations | final NME | wall time | CPU "
                                                  "| torch threads | device |", "|---|---|---|---|---|---|---|---|---|"]


def test_learned_and_reach_cells():
    assert [rp._learned(v) for v in (True, False, None)] == ["yes", "**has not learned**", "-"]
    assert rp._reach({"n": 0}) == "-"
    assert rp._reach({"n": 3, "n_reached": 2, "median": 2.5}) == "2/3 reached; median 2.5"
    assert rp._reach({"n": 3, "n_reached": 1, "median": None}) == "1/3 reached; median not reached"


def _arms_report() -> Dict[str, Any]:
    return {"study": STUDY, "runs": RUNS,
            "ranking": {"order": [{"arm": "adam", "mean": 0.21}], "seeds": [0, 1]},
            "arms": {"adam": arm(), "la": arm(finished_seeds=[], iterations=[], final_NME=summ(None, n=0),
                                              final_NME_over_floor=None, learned=False, PCK=summ(0.5, NAN, 1),
                                              epochs_to_reach={"0.3": {"n": 0}, "0.25": {"n": 1, "n_reached": 0,
                                                                                         "median": None}},
                                              wall_time_s={"mean": None}, overhead_fraction={"mean": None, "n": 0})}}


PER_ARM = (
    ['## Per arm',
     '',
     'Mean +- std [95% CI] over **all finished seeds of each arm** (seed sets may differ between arms); the '
     "column 'common seeds' is the mean over the seeds every ranked arm shares (0, 1), the only one to set "
     'side by side.',
     '',
     '| arm | finished seeds | iterations / run | final NME (all seeds) | final NME / box-centre floor | '
     'learned | final NME, common seeds (0, 1) | PCK@0.2 (all seeds) | AUC (all seeds) | EPE px (all seeds) '
     '|',
     '|---|---|---|---|---|---|---|---|---|---|',
     '| adam | 0,1 | 1,200,1,500 | 0.2000 +- 0.0100 [0.1000, 0.3000] | 0.40 | yes | 0.2100 | 0.5000 +- '
     '0.0100 [0.1000, 0.3000] | 0.2500 +- 0.0100 [0.1000, 0.3000] | 3.21 +- 0.01 [0.10, 0.30] |',
     '| la | - | - | - | - | **has not learned** | - | 0.5000 | 0.2500 +- 0.0100 [0.1000, 0.3000] | 3.21 +- '
     '0.01 [0.10, 0.30] |',
     '',
     'Training course (all finished seeds). Epochs to reach a level: the seeds that reached it first, then '
     "the median epoch with a seed that never reached it counted as infinitely slow ('not reached' when the "
     'median seed did not). The best NME (selected on the validation set: optimistic) is the minimum over '
     'every validation of the same images: biased low, no verdict is drawn from it.',
     '',
     '| arm | best NME (selected on the validation set: optimistic) | epochs to NME <= 0.3 | epochs to NME '
     '<= 0.25 | wall time / run | start-up share |',
     '|---|---|---|---|---|---|',
     '| adam | 0.1800 +- 0.0100 [0.1000, 0.3000] | 2/2 reached; median 2 | - | 1.5 min | 12.3% |',
     '| la | 0.1800 +- 0.0100 [0.1000, 0.3000] | - | 0/1 reached; median not reached | - | - |',
     ''])


def test_per_arm_section():
    assert rp._per_arm(_arms_report()) == PER_ARM
    no_runs = dict(_arms_report(), runs=[], ranking={"order": [], "seeds": []})
    got = rp._per_arm(no_runs)  # no run: PCK under its generic name, no common seeds
    assert "| PCK (all seeds) |" in got[4] and "common seeds (none)" in got[4] and "shares (none)," in got[2]


def _comparisons_report(variants: Any = None, pairs: bool = True) -> Dict[str, Any]:
    c = {"final_NME": comp(family="the user's arms", family_size=2), "final_valid_loss": comp(family_size=2),
         "PCK": comp(mean=0.01, lo=0.0, hi=0.02, verdict="worse", family="f", family_size=1, provisional=True),
         "AUC": comp(family_size=3, provisional=True)}
    sl = {"k": 5, "alpha": 0.5, "pairs": [{"key": "la - adam", "optimizer": "adam", "lr": 1e-4,
                                           "comparison": comp(family="same-LR", family_size=1)}] if pairs else []}
    rep = {"study": STUDY, "comparisons": {"la": c}, "same_lr": sl}
    if variants is not None:
        rep["length_variants"] = variants
    return rep


COMPARISONS = (
    ['## Paired comparisons with the reference (adam)',
     '',
     'Per seed `arm - adam` on the seeds both finished; mean, unadjusted 95% CI, paired t-test p and the '
     "Holm-adjusted p over the family, one per metric: the user's arms (their experiment yaml as it is) and "
     "the study's added arms (with overrides) are two families, each of its planned size m (see 'Families of "
     "comparisons'). Verdict from the Holm p (< 0.05), none below 3 pairs. NME and loss: lower is better; "
     'PCK and AUC: higher is better.',
     '',
     '**final NME** (lower is better)',
     '',
     '| arm | pairs | mean diff | 95% CI (unadjusted) | p | Holm p | seeds better / worse / tie | verdict | '
     'family (planned m) |',
     '|---|---|---|---|---|---|---|---|---|',
     "| la | 3 | -0.0123 | [-0.0200, -0.0046] | 0.012 | 0.025 | 3 / 0 / 0 | better | the user's arms (m 2) |",
     '',
     '**final valid loss** (lower is better)',
     '',
     '| arm | pairs | mean diff | 95% CI (unadjusted) | p | Holm p | seeds better / worse / tie | verdict | '
     'family (planned m) |',
     '|---|---|---|---|---|---|---|---|---|',
     '| la | 3 | -0.0123 | [-0.0200, -0.0046] | 0.012 | 0.025 | 3 / 0 / 0 | better | m 2 |',
     '',
     '**final PCK** (higher is better)',
     '',
     '| arm | pairs | mean diff | 95% CI (unadjusted) | p | Holm p | seeds better / worse / tie | verdict | '
     'family (planned m) |',
     '|---|---|---|---|---|---|---|---|---|',
     '| la | 3 | +0.0100 | [+0.0000, +0.0200] | 0.012 | 0.025 | 3 / 0 / 0 | worse | f (m 1), provisional |',
     '',
     '**final AUC** (higher is better)',
     '',
     '| arm | pairs | mean diff | 95% CI (unadjusted) | p | Holm p | seeds better / worse / tie | verdict | '
     'family (planned m) |',
     '|---|---|---|---|---|---|---|---|---|',
     '| la | 3 | -0.0123 | [-0.0200, -0.0046] | 0.012 | 0.025 | 3 / 0 / 0 | better | m 3, provisional |',
     '',
     '## Same-LR pairs: Lookahead(X) - X',
     '',
     'Final NME of each Lookahead arm (k 5, alpha 0.5) minus the arm of its inner optimizer at the same LR '
     '(all other settings equal), paired by seed; one Holm family of the planned pairs. Negative: Lookahead '
     "is lower (better). `curves.png` draws each pair's difference per epoch.",
     '',
     '| pair | optimizer | LR | pairs | mean diff | 95% CI (unadjusted) | p | Holm p | seeds better / worse '
     '/ tie | verdict | family (planned m) |',
     '|---|---|---|---|---|---|---|---|---|---|---|',
     '| la - adam | adam | 0.0001 | 3 | -0.0123 | [-0.0200, -0.0046] | 0.012 | 0.025 | 3 / 0 / 0 | better | '
     'same-LR (m 1) |',
     ''])


def test_comparisons_section():
    assert rp._comparisons(_comparisons_report()) == COMPARISONS
    assert rp._comparisons(_comparisons_report(variants={})) == COMPARISONS
    got = rp._comparisons(_comparisons_report(variants={"adam_long": 1, "la_long": 2}))
    assert got[2] == COMPARISONS[2] + (" Arms at another training length than the reference's (adam_long, la_long) "
                                       "enter the trend with training length only, not these families, the same-LR "
                                       "pairs, the ranking or the sensitivity.")
    got = rp._comparisons(_comparisons_report(pairs=False))
    assert got[-3:] == ["", "No LR at which both an optimizer and Lookahead of it ran.", ""]
    assert got[:-3] == COMPARISONS[:-5]


def test_family_cell():
    assert rp._family_cell({"family": "f", "family_size": 2}) == "f (m 2)"
    assert rp._family_cell({"family_size": 2, "provisional": True}) == "m 2, provisional"
    assert rp._family_cell({"family": "", "family_size": 1, "provisional": False}) == "m 1"


def _la_entry(**kw: Any) -> Dict[str, Any]:
    e = {"eval_weights": "slow", "slow": summ(0.2), "fast": summ(0.21, NAN, 1), "logged": True,
         "slow_vs_fast": comp(p=0.0004, padj=0.0008), "best_slow_vs_fast": comp(mean=0.001, lo=0.0005, hi=0.002, verdict=None),
         "epoch_mean_slow_vs_fast": comp(lo=NAN), "epochs_where_they_differ": {"0": 3, "1": 0}}
    e.update(kw)
    return e


LOOKAHEAD = (
    ['## Lookahead: slow vs fast weights',
     '',
     '| arm | validated | final NME slow | final NME fast | slow - fast, final | slow - fast, best '
     '(optimistic) | slow - fast, mean over epochs | epochs where they differ |',
     '|---|---|---|---|---|---|---|---|',
     '| la | slow | 0.2000 +- 0.0100 [0.1000, 0.3000] | 0.2100 | -0.0123 [-0.0200, -0.0046], Holm p <0.001: '
     'better | +0.0010 [+0.0005, +0.0020], no verdict | -0.0123 [-, -0.0046], Holm p 0.025: better | seed 0: '
     '3, seed 1: 0 |',
     '| la2 | - | 0.2000 +- 0.0100 [0.1000, 0.3000] | 0.2100 | not logged | - | - | - |',
     '',
     'Paired by seed, mean [95% CI]. At a validation after a multiple of k iterations the fast weights have '
     'just been reset to the slow ones and both coincide (often the final one), hence the mean over epochs.',
     ''])


def test_lookahead_section():
    assert rp._lookahead({"lookahead": {"la": _la_entry(), "la2": _la_entry(eval_weights=None, logged=False)}}) == \
        LOOKAHEAD
    assert rp._lookahead({"lookahead": {}}) == ["## Lookahead: slow vs fast weights", "", "No finished Lookahead run.",
                                                ""]


def _sens(lines: bool = True, grid: bool = True) -> Dict[str, Any]:
    pts = [{"lr": 1e-4, "arm": "adam", "mean": 0.2, "std": 0.01, "n": 3, "ci_low": 0.18, "ci_high": 0.22},
           {"lr": 1e-3, "arm": "adam_lr", "mean": 0.25, "std": NAN, "n": 1, "ci_low": NAN, "ci_high": NAN}]
    return {"sensitivity": {
        "lr_lines": {"adam": pts, "lookahead(adam)": pts[:1]} if lines else {},
        "lr_line_seeds": {"adam": [0, 1], "lookahead(adam)": []},
        "k_alpha": {"lr": 1e-4, "seeds": [0, 2], "k": [5, 10], "alpha": [0.5, 0.8],
                    "cells": {"5,0.5": {"mean": 0.2, "std": 0.01, "n": 3}, "10,0.8": {"mean": 0.3, "std": 0.02,
                                                                                    "n": 2}}} if grid else None}}


SENSITIVITY = (
    ['## Sensitivity',
     '',
     'Each line (and the grid) on the seeds all its arms share.',
     '',
     '| optimizer | seeds | LR | arm | final NME | n |',
     '|---|---|---|---|---|---|',
     '| adam | 0, 1 | 0.0001 | adam | 0.2000 +- 0.0100 | 3 |',
     '| adam | 0, 1 | 0.001 | adam_lr | 0.2500 +- - | 1 |',
     '| lookahead(adam) | none | 0.0001 | adam | 0.2000 +- 0.0100 | 3 |',
     '',
     'Lookahead k x alpha at LR 0.0001, seeds 0, 2 (mean +- std final NME, n):',
     '',
     '| k \\ alpha | 0.5 | 0.8 |',
     '|---|---|---|',
     '| 5 | 0.2000 +- 0.0100 (3) | - |',
     '| 10 | - | 0.3000 +- 0.0200 (2) |',
     ''])


def test_sensitivity_section():
    assert rp._sensitivity(_sens()) == SENSITIVITY
    assert rp._sensitivity(_sens(lines=False, grid=False)) == [
        "## Sensitivity", "", "Each line (and the grid) on the seeds all its arms share.", "", ""]
    assert rp._sensitivity(_sens(lines=False)) == SENSITIVITY[:4] + SENSITIVITY[9:]
    assert rp._sensitivity(_sens(grid=False)) == SENSITIVITY[:9] + [""]


def _real_hands(**kw: Any) -> Dict[str, Any]:
    rh = {"available": True, "folder": "../real", "source": "photos.json",
          "evaluated": {"checkpoint": "final.pth", "weights": {"slow": ["la"], "model": ["adam", "la2"]}},
          "sets": ["indoor", "outdoor"],
          "set_sizes": {"indoor": {"num_images": 4, "num_hands": 5}, "outdoor": {"num_images": 0, "num_hands": None}},
          "per_arm": {"adam": {"indoor": {"NME": summ(0.3)}, "outdoor": {"NME": summ(0.4, n=1)}, "NME_over_floor": 0.5,
                               "learned": True, "all": {"PCK": summ(0.6)}},
                      "la": {"indoor": {"NME": summ(0.31)}, "outdoor": {"NME": summ(0.41)}, "NME_over_floor": 0.9,
                             "learned": False, "all": {"PCK": summ(0.61, n=1)}}},
          "vs_reference": {"la": comp()}, "pck_key": "PCK@0.2", "seeds": [0, 1],
          "rank_synthetic": ["la", "adam"], "rank_real": [], "kendall_tau": -0.5, "errors": {}}
    rh.update(kw)
    return {"study": STUDY, "real_hands": rh}


REAL = (
    ['## Real hand photos',
     '',
     "Each finished run's final model (`final.pth`, the weights its final validation used, as the synthetic "
     'final NME; slow weights: la; model weights: adam, la2) on the photos in `../real` (photos.json), at '
     "its own input size; mean +- std over all finished seeds. Paired with adam: one Holm family; 'learned' "
     'against the pooled box-centre floor.',
     '',
     '| arm | indoor NME (4 img, 5 hands) | outdoor NME (- img, - hands) | all NME / floor | learned | all '
     'PCK@0.2 | all NME - adam: pairs | all NME - adam: mean diff | all NME - adam: 95% CI (unadjusted) | '
     'all NME - adam: p | all NME - adam: Holm p | all NME - adam: seeds better / worse / tie | all NME - '
     'adam: verdict |',
     '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
     '| adam | 0.3000 +- 0.0100 | 0.4000 | 0.50 | yes | 0.6000 +- 0.0100 | (reference) |  |  |  |  |  |  |',
     '| la | 0.3100 +- 0.0100 | 0.4100 +- 0.0100 | 0.90 | **has not learned** | 0.6100 | 3 | -0.0123 | '
     '[-0.0200, -0.0046] | 0.012 | 0.025 | 3 / 0 / 0 | better |',
     '',
     'Rankings on the seeds all compared arms share (0, 1): synthetic final NME la < adam; real photos (all) '
     '-; Kendall tau -0.50.',
     ''])


def test_real_hands_section():
    assert rp._real(_real_hands()) == REAL
    got = rp._real(_real_hands(errors={"la_seed0": "no checkpoint", "x": "y"}, source=None, evaluated=None))
    assert got[2] == REAL[2].replace(" (photos.json)", "").replace("`final.pth`", "`None`").replace(
        "slow weights: la; model weights: adam, la2", "-")
    assert got[3:-1] == REAL[3:-1] + ["", "Not evaluated: la_seed0: no checkpoint; x: y"] and got[-1] == ""


def test_real_hands_not_evaluated_says_why():
    head = ["## Real hand photos", ""]
    assert rp._real({"real_hands": {"available": False, "note": "no photos", "folder": "../real"}}) == \
        head + ["Not evaluated: no photos (`../real`).", ""]
    assert rp._real({"real_hands": {"note": "off"}}) == head + ["Not evaluated: off.", ""]


def _trend_report(change: bool = True, measured: bool = True) -> Dict[str, Any]:
    points = [{"lookahead_arm": "la", "base_arm": "adam", "epochs": 6, "lr_step": [4, 5], "iterations": 1200,
               "comparison": comp()},
              {"lookahead_arm": "la_long", "base_arm": "adam_long", "epochs": 12, "lr_step": [8], "iterations": None,
               "both_learned": False, "comparison": comp(verdict="has not learned")}]
    c = ({"shortest": "6 epochs", "longest": "12 epochs", "seeds": [0, 1, 2], "mean_diff": 0.004, "ci_low": -0.001,
          "ci_high": 0.009, "p_value": 0.08, "p_adjusted": 0.16, "gap_shortest": -0.01, "gap_longest": -0.006,
          "trend": "shrinks", "direction": "towards 0"} if change else {"shortest": None, "trend": "fewer learned"})
    ln = {"optimizer": "adam", "lr": 1e-4, "k": 5, "alpha": 0.5, "reference_line": change, "points": points,
          "change": c, "measured_iterations": [1200, 2400] if measured else [], "user_outside": True}
    return {"trend": {"lines": [ln], "family_size": 2, "user_iterations": 19800}}


TREND = (
    ['## Training length: Lookahead(X) - X against iterations',
     '',
     'Final NME of Lookahead(X) minus X at each training length, paired by seed; one Holm family over the 2 '
     'planned points. The change: per seed, the gap at the longest minus the gap at the shortest of the '
     'lengths where both arms learned, over the seeds all four arms finished (Holm over the planned lines); '
     "'grows' / 'shrinks' compare the sizes of the two mean gaps on those seeds, 'changes sign' says so, and "
     "a change whose 95% CI is wider than the gap at the shorter length is 'not measurable at this n'. The "
     "user's run: 19,800 iterations.",
     '',
     "**Lookahead(adam) - adam at LR 0.0001** (k 5, alpha 0.5), the reference's line",
     '',
     '| pair | epochs (LR steps) | iterations / run | both learned | pairs | mean diff | 95% CI (unadjusted) '
     '| p | Holm p | seeds better / worse / tie | verdict |',
     '|---|---|---|---|---|---|---|---|---|---|---|',
     '| la - adam | 6 (4, 5) | 1,200 | yes | 3 | -0.0123 | [-0.0200, -0.0046] | 0.012 | 0.025 | 3 / 0 / 0 | '
     'better |',
     '| la_long - adam_long | 12 (8) | - | no | 3 | -0.0123 | [-0.0200, -0.0046] | 0.012 | 0.025 | 3 / 0 / 0 '
     '| has not learned |',
     '',
     'Change of the gap from 6 epochs to 12 epochs (seeds 0, 1, 2): +0.0040, 95% CI [-0.0010, +0.0090], p '
     "0.080, Holm p 0.160; mean gap -0.0100 -> -0.0060: **shrinks** (towards 0). The user's 19,800 "
     'iterations lie outside the measured range (1,200..2,400 iterations per run): nothing here says how the '
     'gap behaves there; the trend is not extrapolated.',
     ''])


def test_trend_section():
    assert rp._trend(_trend_report()) == TREND
    got = rp._trend(_trend_report(change=False, measured=False))
    assert got[:4] == TREND[:4] and got[4] == TREND[4].replace(", the reference's line", "")
    assert got[5:10] == TREND[5:10]
    assert got[10:] == ["", "**fewer learned**. The iterations per run are not known (no image count in the config): "
                            "the lengths are in epochs.", ""]
    rep = _trend_report()
    rep["trend"]["lines"][0]["change"]["direction"] = None
    assert rp._trend(rep)[11] == TREND[11].replace(" (towards 0)", "")
    assert rp._trend({"trend": {"lines": []}}) == [
        "## Training length: Lookahead(X) - X against iterations", "",
        "No pair Lookahead(X), X measured at two training lengths or more (arms that differ only in "
        "`TRAIN.END_EPOCH`, with `TRAIN.LR_STEP` at the same fractions of it).", ""]


# ---------------------------------------------------------------------------- answer_md.py
def test_vs_user_section():
    rep = {"lookahead_vs_user": {"lookahead_arm": "la", "comparisons": {"sgd": comp(), "rms": comp(provisional=True)}}}
    assert answer_md._vs_user(rep) == (
        ["## la against the user's other optimizers",
         '',
         "Final NME of `la - X` for each of the user's other arms X (the reference's comparison is in the "
         'family above), paired by seed; one Holm family, m = the planned members. Negative: Lookahead is '
         'better. Every order the ranking states between these arms has its own comparison here or with the '
         'reference.',
         '',
         '| X | pairs | mean diff | 95% CI (unadjusted) | p | Holm p | seeds better / worse / tie | verdict '
         '| family |',
         '|---|---|---|---|---|---|---|---|---|',
         '| sgd | 3 | -0.0123 | [-0.0200, -0.0046] | 0.012 | 0.025 | 3 / 0 / 0 | better | complete |',
         '| rms | 3 | -0.0123 | [-0.0200, -0.0046] | 0.012 | 0.025 | 3 / 0 / 0 | better | provisional |',
         ''])
    assert answer_md._vs_user({}) == answer_md._vs_user({"lookahead_vs_user": {"comparisons": {}}}) == []


def _effective_step(margin: Optional[float] = 0.004) -> Dict[str, Any]:
    return {"effective_step": {
        "margin": margin, "margin_fraction": 0.5, "key_pair": ["la", "adam"], "key_gap": -0.008,
        "pairs": [{"key": "la(2e-4) - adam(1e-4)", "lr": 2e-4, "base_lr": 1e-4, "alpha": 0.5, "difference": comp(),
                   "equivalence": {"ci_low": -0.003, "ci_high": 0.002, "p_lower": 0.01, "p_upper": 0.0002,
                                   "p_adjusted": 0.02, "verdict": "equivalent within the margin"}},
                  {"key": "la - adam(5e-5)", "lr": 1e-4, "base_lr": 5e-5, "alpha": 0.5,
                   "difference": comp(provisional=True), "equivalence": None}]}}


EFFECTIVE_STEP = (
    ['## Effective step: Lookahead(X, alpha, lr) against X at alpha x lr',
     '',
     'The hypothesis Lookahead(X, alpha, lr) ~ X(alpha x lr): with alpha = 0.5 the slow weights move about '
     'half as far per cycle as the inner optimizer, so Lookahead at 2 x lr should behave like X at lr, and X '
     'at lr / 2 like Lookahead at lr. Final NME of `Lookahead - X`, paired by seed. Difference: paired '
     't-test, Holm over the planned pairs. Equivalence: two one-sided paired t-tests (TOST) at +-margin, '
     'Holm over the planned pairs; equivalent exactly when the 90% interval lies inside +-margin. Margin '
     "0.0040 = 0.5 x the key pair's gap (la - adam, -0.0080): the question is whether the smaller step "
     'explains that gap, and a pair within half of it says the step explains most of it.',
     '',
     '| pair | LR (Lookahead) | LR (X) | alpha | pairs | mean diff | 95% CI (unadjusted) | p | Holm p | '
     'seeds better / worse / tie | verdict | 90% CI | TOST p (lower / upper) | TOST Holm p | equivalence | '
     'family |',
     '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
     '| la(2e-4) - adam(1e-4) | 0.0002 | 0.0001 | 0.5 | 3 | -0.0123 | [-0.0200, -0.0046] | 0.012 | 0.025 | 3 '
     '/ 0 / 0 | better | [-0.0030, +0.0020] | 0.010 / <0.001 | 0.020 | equivalent within the margin | '
     'complete |',
     '| la - adam(5e-5) | 0.0001 | 5e-05 | 0.5 | 3 | -0.0123 | [-0.0200, -0.0046] | 0.012 | 0.025 | 3 / 0 / '
     '0 | better | [-, -] | - / - | - | - | provisional |',
     ''])


def test_effective_step_section():
    assert answer_md._effective_step(_effective_step()) == EFFECTIVE_STEP
    got = answer_md._effective_step(_effective_step(margin=None))
    assert got[2] == EFFECTIVE_STEP[2][:EFFECTIVE_STEP[2].index("Margin 0.0040")] + \
        "No margin yet: the key pair has no measured gap."
    assert got[3:] == EFFECTIVE_STEP[3:]
    assert answer_md._effective_step({}) == answer_md._effective_step({"effective_step": {"pairs": []}}) == []


def _effective_time() -> Dict[str, Any]:
    d = {"mean_diff": -0.25, "ci_low": -0.4, "ci_high": -0.1, "p_value": 0.02}
    return {"effective_time": {"pairs": [
        {"lookahead_arm": "la", "base_arm": "adam", "window": [1, 4], "predicted_ratio": 0.5,
         "per_seed": {"0": {"ratio": 0.61, "censored": 1}, "1": {"ratio": 0.5, "censored": 2}},
         "ratio": summ(0.555, 0.05, 2, 0.1, 1.0), "ratio_minus_predicted": d, "pace_window": [2, 4],
         "pace": summ(0.6, 0.1, 2, 0.0, 1.2), "pace_minus_predicted": dict(d, p_value=0.0001)},
        {"lookahead_arm": "la2", "base_arm": "adam", "window": [1, 3], "predicted_ratio": 1.0, "per_seed": {},
         "ratio": summ(None, n=0), "ratio_minus_predicted": d, "pace_window": [2, 3], "pace": summ(None, n=0),
         "pace_minus_predicted": d}]}}


EFFECTIVE_TIME = (
    ['## Effective time',
     '',
     'For each Lookahead(X) arm and X at the same LR (or at alpha x the LR), paired by seed, before the '
     "first LR drop: tau(t) is the epoch at which X's valid NME curve (linear between epochs) first reaches "
     "Lookahead's NME at epoch t; per seed the ratio is the mean of tau(t) / t over the epochs t whose level "
     'X reaches before its LR drops (the others are censored, counted); mean and 95% Student t interval over '
     'seeds. Below 1: Lookahead progresses more slowly than X. The pace: per seed the least-squares slope of '
     "tau(t) on t over the second half of the window, past the first epochs' steep drop (where every curve "
     'crosses the early levels within an epoch, so tau(t) is close to t whatever the pace, pulling the ratio '
     'towards 1). Predicted ratio and pace: alpha x LR(Lookahead) / LR(X), from the hypothesis Lookahead(X, '
     'alpha, lr) ~ X(alpha x lr) when progress depends on lr x iterations only (the slow weights advance '
     "alpha x the k fast steps' displacement per cycle); the difference is a one-sample t-test over seeds, "
     'descriptive (no Holm family). `lookahead.png` draws tau(t).',
     '',
     '| pair | epochs t | predicted | ratio per seed | ratio mean +- std [95% CI] | ratio - predicted [95% '
     'CI], p | pace epochs | pace mean +- std [95% CI] | pace - predicted [95% CI], p | censored epochs (all '
     'seeds) |',
     '|---|---|---|---|---|---|---|---|---|---|',
     '| la vs adam | 1..4 | 0.5 | 0: 0.610, 1: 0.500 | 0.555 +- 0.050 [0.100, 1.000] | -0.250 [-0.400, '
     '-0.100], p 0.020 | 2..4 | 0.600 +- 0.100 [0.000, 1.200] | -0.250 [-0.400, -0.100], p <0.001 | 3 |',
     '| la2 vs adam | 1..3 | 1 | - | - | -0.250 [-0.400, -0.100], p 0.020 | 2..3 | - | -0.250 [-0.400, '
     '-0.100], p 0.020 | 0 |',
     ''])


def test_effective_time_section():
    assert answer_md._effective_time(_effective_time()) == EFFECTIVE_TIME
    assert answer_md._effective_time({}) == answer_md._effective_time({"effective_time": {"pairs": []}}) == []


def test_k_alpha_and_tuned_sections():
    ka = {"k_alpha_vs_key": {"key": "la", "lr": 1e-4, "k": 5, "alpha": 0.5,
                             "pairs": [{"arm": "la_k10", "k": 10, "alpha": 0.8, "comparison": comp(provisional=True)}]}}
    assert answer_md._k_alpha(ka) == (
        ['## k x alpha against la',
         '',
         'Final NME of each Lookahead arm at LR 0.0001 with another (k, alpha) minus la (k 5, alpha 0.5), '
         'paired by seed; one Holm family (m = the planned arms).',
         '',
         '| arm | k | alpha | pairs | mean diff | 95% CI (unadjusted) | p | Holm p | seeds better / worse / '
         'tie | verdict | family |',
         '|---|---|---|---|---|---|---|---|---|---|---|',
         '| la_k10 | 10 | 0.8 | 3 | -0.0123 | [-0.0200, -0.0046] | 0.012 | 0.025 | 3 / 0 / 0 | better | '
         'provisional |',
         ''])
    assert answer_md._k_alpha({}) == answer_md._k_alpha({"k_alpha_vs_key": {"pairs": []}}) == []
    tu = {"tuned": {"label": "selected on the validation set", "lines": {
        "adam": {"planned_lrs": [1e-4, 1e-3], "measured_lrs": [1e-4], "seeds": [0, 1], "best_lr": 1e-4,
                 "best_mean": 0.2, "best_at_edge": "lowest"},
        "sgd": {"planned_lrs": [1e-4, 1e-3, 1e-2], "measured_lrs": [1e-4, 1e-3], "seeds": [0], "best_lr": 1e-3,
                "best_mean": 0.3, "best_at_edge": None},
        "lookahead(adam)": {"planned_lrs": [1e-4], "measured_lrs": [], "seeds": [], "best_lr": None,
                            "best_mean": None}},
        "pairs": [{"lookahead_arm": "la", "lookahead_lr": 2e-4, "base_arm": "adam", "base_lr": 1e-4,
                   "comparison": comp()}]}}
    assert answer_md._tuned(tu) == TUNED
    tu["tuned"]["pairs"] = []
    assert answer_md._tuned(tu) == TUNED[:9] + [""]
    assert answer_md._tuned({}) == answer_md._tuned({"tuned": {"lines": {}}}) == []


TUNED = (
    ['## Tuned against tuned',
     '',
     "Each optimizer line at the LR of its grid with the lowest mean final NME on the line's common seeds, "
     'selected on the validation set; then Lookahead(X) - X at those LRs, paired by seed (a family of one '
     "each), provisional while a line has LRs not yet measured. A best LR at the grid's end means the grid "
     "does not bracket that optimizer's optimum.",
     '',
     "| line | LRs planned | LRs measured | common seeds | best LR | mean final NME at it | best at the grid's end |",
     '|---|---|---|---|---|---|---|',
     '| adam | 0.0001, 0.001 | 0.0001 | 0, 1 | 0.0001 | 0.2000 | yes, the lowest: the optimum may lie beyond |',
     '| sgd | 0.0001, 0.001, 0.01 | 0.0001, 0.001 | 0 | 0.001 | 0.3000 | no |',
     '| lookahead(adam) | 0.0001 | - | none | - | - | - |',
     '',
     '| pair (best LRs) | pairs | mean diff | 95% CI (unadjusted) | p | Holm p | seeds better / worse / tie '
     '| verdict | status |',
     '|---|---|---|---|---|---|---|---|---|',
     '| la (0.0002) - adam (0.0001) | 3 | -0.0123 | [-0.0200, -0.0046] | 0.012 | 0.025 | 3 / 0 / 0 | better '
     '| complete |',
     ''])


def _families(**machines: Any) -> Dict[str, Any]:
    return {"families": [{"name": "the user's arms vs adam", "question": "Q?", "m": 3, "measured": 2, "members": 3,
                          "provisional": True, "p_adjusted": [0.0004, 0.2]},
                         {"name": "same-LR", "question": "R?", "m": 1, "measured": 1, "members": 1,
                          "provisional": False, "p_adjusted": []}],
            "machines": dict({"machines": ["Xeon (avx2)", "EPYC"], "bases": ["fingerprint", "epoch-0 NME"],
                              "mixed": ["comparisons.la.final_NME", "x"], "unknown": ["y"]}, **machines)}


FAMILIES = (
    ['## Families of comparisons',
     '',
     'Holm families are fixed by the plan, not by what has finished: m is the number of planned members, and '
     'a member not yet measured counts as p = 1 (sorted last), so each adjusted p is an upper bound of the '
     'one the complete family gives with the same measured values. A run finishing in one family never moves '
     "another family's verdicts; in its own it can only lower the others' adjusted p. A family with members "
     'not yet measured (or with fewer pairs than planned) is provisional.',
     '',
     '| family | question | planned m | members measured | status | Holm p of the members |',
     '|---|---|---|---|---|---|',
     "| the user's arms vs adam | Q? | 3 | 2 of 3 | provisional | <0.001, 0.200 |",
     '| same-LR | R? | 1 | 1 of 1 | complete |  |',
     '',
     'Machines of the compared runs, decided by numerics (two runs of one seed share them when their '
     '`numerics` fingerprints are equal, else when their untrained epoch-0 NME is exactly equal; the CPU '
     'name does not decide it); basis used here: fingerprint or epoch-0 NME. CPU names: Xeon (avx2); EPYC. '
     'Comparisons whose pairs cross machines on some seeds: comparisons.la.final_NME, x. Machines not told '
     'apart (no fingerprint, no comparable untrained NME): y.',
     ''])


def test_families_section():
    assert answer_md.families_section(_families()) == FAMILIES
    got = answer_md.families_section(_families(bases=[], mixed=[], unknown=[]))
    assert got[:-2] == FAMILIES[:-2] and got[-1] == ""
    assert got[-2] == FAMILIES[-2].replace("fingerprint or epoch-0 NME", "nothing recorded").split(
        " Comparisons whose")[0] + " Every comparison pairs runs of the same numerics."
    assert answer_md.families_section(_families(machines=[])) == FAMILIES[:-3] + [""]
    assert answer_md.families_section({}) == FAMILIES[:4] + [""]
    got = answer_md.families_section(_families(bases=None, unknown=None))
    assert "basis used here: nothing recorded." in got[-2] and "not told apart" not in got[-2]


def test_answer_sections_in_order():
    rep = dict(_effective_step(), **_effective_time())
    assert answer_md.answer_sections(rep) == EFFECTIVE_STEP + EFFECTIVE_TIME
    assert answer_md.answer_sections({}) == []


# ---------------------------------------------------------------------------- machines_md.py
def _spread(checks: bool = True) -> Dict[str, Any]:
    row = {"seed": 0, "final_NME_replicate": 0.2, "final_NME_original": 0.21, "diff": -0.01,
           "untrained_NME_replicate": 0.70001, "untrained_NME_original": 0.7, "same_numerics": False,
           "basis": "fingerprint"}
    rep1 = {"arm": "adam_rerun", "of": "adam", "config": "hand_adam.yaml", "overrides": ["A=1", "B=2"], "seeds": [0, 1],
            "per_seed": [row, dict(row, seed=1, diff=None, final_NME_replicate=None, untrained_NME_replicate=None,
                                   same_numerics=None, basis=None),
                         dict(row, seed=2, diff=0.0, same_numerics=True, basis="epoch-0 NME")],
            "diff": {"n": 2, "mean": -0.005, "ci_low": -0.07, "ci_high": 0.06}, "seed_std": 0.01, "seed_std_n": 3,
            "same_numerics": 1, "reproduced": 1}
    rep2 = {"arm": "la_rerun", "of": "la", "config": "hand_la.yaml", "overrides": [], "seeds": [], "per_seed": [],
            "diff": {"n": 0}}
    check = {"comparison": "comparisons.la.final_NME", "arms": ["la", "adam"], "replaced": "adam",
             "replicate": "adam_rerun", "seeds_substituted": [0, 2],
             "original": dict(comp(), numerics={"same": 1, "pairs": 3, "crossing_seeds": [0, 2]}),
             "check": dict(comp(mean=0.0123, lo=0.002, hi=0.03, verdict=None, padj=0.5),
                           numerics={"same": 3, "pairs": 3, "crossing_seeds": []})}
    return {"machine_spread": {"replicates": [rep1, rep2], "checks": [check] if checks else []}}


SPREAD = (
    ['## Machine-to-machine spread',
     '',
     "A replicate arm trains another arm's setting again (the whole config but the seed): the same runs, on "
     'the machine that trained them. It is not an optimizer and enters no family, ranking, sensitivity, '
     "tuned comparison or figure. Per seed: replicate minus original final NME, each side's untrained "
     '(epoch-0) NME, and whether the two share numerics (equal `numerics` fingerprints, else an equal '
     'untrained NME); runs that share numerics must end bitwise equal.',
     '',
     '**adam_rerun** (`hand_adam.yaml` `A=1 B=2`, seeds 0, 1): a replicate of **adam**.',
     '',
     "Machine-to-machine spread: adam_rerun reruns adam's config; the same runs on the replicate's machine "
     'end 0.0050 lower on average (95% CI [-0.0700, +0.0600], n=2), against a seed std of adam of 0.0100 '
     '(n=3); numerics equal on 1 of 3 seeds (1 of them end bitwise equal, as they must).',
     '',
     '| seed | final NME adam_rerun | final NME adam | replicate - original | untrained NME adam_rerun | '
     'untrained NME adam | same numerics (basis) |',
     '|---|---|---|---|---|---|---|',
     '| 0 | 0.2000 | 0.2100 | -0.0100 | 0.70001 | 0.70000 | **no** (fingerprint) |',
     '| 1 | - | 0.2100 | - | - | 0.70000 | unknown |',
     '| 2 | 0.2000 | 0.2100 | +0.0000 | 0.70001 | 0.70000 | yes (epoch-0 NME) |',
     '',
     '**la_rerun** (`hand_la.yaml`, seeds none): a replicate of **la**.',
     '',
     'No seed finished on both sides yet.',
     '',
     '**same-machine checks**: final-NME comparisons whose pairs cross machines, redone with a replicate in '
     'place of one side on the seeds where the replicate shares numerics with the other side (the other '
     'seeds kept); p x m: the p-value times the planned family size (the strictest Holm step).',
     '',
     '| comparison | arms | replaced by (seeds) | as reported | numerics as reported | same-machine check | '
     'numerics of the check |',
     '|---|---|---|---|---|---|---|',
     '| comparisons.la.final_NME | la - adam | adam -> adam_rerun (0, 2) | -0.0123 [-0.0200, -0.0046], Holm '
     'p 0.025, n=3: better | 1/3 same, crossing seeds 0, 2 | +0.0123 [+0.0020, +0.0300], p x m 0.500, n=3: - '
     '| 3/3 same |',
     ''])


def test_machine_spread_section():
    assert machines_md.machine_spread_section(_spread()) == SPREAD
    assert machines_md.machine_spread_section(_spread(checks=False)) == SPREAD[:-6]
    assert machines_md.machine_spread_section({}) == []
    assert machines_md.machine_spread_section({"machine_spread": None}) == []
    assert machines_md.machine_spread_section({"machine_spread": {"replicates": [], "checks": []}}) == []


def test_machine_cells():
    assert [machines_md._same(v, b) for v, b in ((True, "fingerprint"), (False, None), (None, None))] == \
        ["yes (fingerprint)", "**no**", "unknown"]
    assert machines_md._numerics(None) == machines_md._numerics({}) == "-"
    assert machines_md._numerics({"same": 2, "pairs": 3, "crossing_seeds": [4]}) == "2/3 same, crossing seeds 4"
    assert machines_md._numerics({"same": 3, "pairs": 3, "crossing_seeds": []}) == "3/3 same"


# ---------------------------------------------------------------------------- the whole report
def full_report() -> Dict[str, Any]:
    rep: Dict[str, Any] = {"verdict": ["v."]}
    for part in (_protocol_report(), _arms_report(), _comparisons_report(), _trend_report(), _sens(), _real_hands(),
                 _families(), _spread(), _effective_step()):
        rep.update(part)
    rep["lookahead"] = {"la": _la_entry()}
    return rep


FIGURES_NOTE = (
    ('`curves.png`: mean over seeds (line) and min-max over seeds (band), raw values, no smoothing; on the '
     "NME panel (from epoch 1) the no-learning floors and the 'has not learned' threshold; the fourth panel: "
     'Lookahead(X) - X valid NME per epoch for each same-LR pair, mean with its 95% t interval over seeds '
     "(band) and each seed (faint). `calibration.png`: the reference's valid NME per epoch (thin: each seed; "
     'thick: the mean), measured values, against the floors. `trend.png`: Lookahead(X) - X against '
     "iterations per run (log scale), mean with its unadjusted 95% CI and each seed's difference (faint), "
     "with the user's run marked; hollow: a length where an arm has not learned; no line is drawn beyond the "
     "lengths measured. `sensitivity.png`: final NME against LR per optimizer (the reference's optimizer and "
     "Lookahead thick) with the floors; a star marks a line's best LR. `lookahead.png`: the effective time "
     'tau(t) (each seed thin, the mean thick, the alpha x lr prediction dashed); the slow and fast weights '
     'where they differ at some validation (arms where every validation followed a sync are named in the '
     'title, not drawn).'))


def test_render_markdown_joins_the_sections_in_order():
    rep = full_report()
    sections = (rp._header(rep) + rp._protocol(rep) + rp._runs(rep) + rp._per_arm(rep) + rp._comparisons(rep)
                + answer_md.answer_sections(rep) + rp._trend(rep) + rp._lookahead(rep) + rp._sensitivity(rep)
                + rp._real(rep) + answer_md.families_section(rep) + machines_md.machine_spread_section(rep))
    assert rp.render_markdown(rep, []) == "\n".join(sections) + "\n"
    assert rp.render_markdown(rep, ["curves.png", "trend.png"]) == "\n".join(
        sections + ["## Figures", "", "![curves.png](curves.png)", "![trend.png](trend.png)", "", FIGURES_NOTE]) + "\n"
    assert "EFFECTIVE" not in FIGURES_NOTE and FIGURES_NOTE.startswith("`curves.png`: mean over seeds (line)")


def test_write_report_writes_the_json_the_markdown_and_the_figures_with_data(tmp_path, monkeypatch):
    import json

    drawn: List[str] = []

    def draw(ok: bool):
        def f(report, path):
            assert report is rep  # each figure is drawn from the report
            drawn.append(os.path.basename(path))
            if ok:
                open(path, "w").close()
            return ok
        return f

    monkeypatch.setattr(rp, "FIGURES", (("one.png", draw(True)), ("stale.png", draw(False)),
                                        ("never.png", draw(False))))
    out = tmp_path / "new" / "out"
    out.mkdir(parents=True)
    (out / "stale.png").write_text("an earlier report's figure")
    rep = full_report()
    paths = rp.write_report(rep, str(out))
    assert paths == [str(out / "report.json"), str(out / "report.md"), str(out / "one.png")]
    assert drawn == ["one.png", "stale.png", "never.png"]
    assert sorted(os.listdir(out)) == ["one.png", "report.json", "report.md"]  # the stale figure removed
    assert (out / "report.md").read_text() == rp.render_markdown(rep, ["one.png"])
    assert json.loads((out / "report.json").read_text())["study"] == STUDY
    paths = rp.write_report(rep, str(tmp_path / "fresh" / "dir"))  # the folder is made
    assert os.path.isfile(paths[1]) and rp.REPORT_JSON == "report.json" and rp.REPORT_MD == "report.md"


# ---------------------------------------------------------------------------- figures.py, answer_figures.py
@pytest.fixture
def saved(monkeypatch) -> List[Any]:
    """The figures the plot functions save, as (Figure, path, savefig keywords), without rendering pixels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.figure

    figs: List[Any] = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", lambda self, path, **kw: figs.append((self, path, kw)))
    monkeypatch.setattr(matplotlib.figure.Figure, "tight_layout", lambda self, *a, **kw: None)
    return figs


def _axes():
    fig, ax = figures._plt().subplots()
    return fig, ax


def lines_of(ax) -> List[tuple]:
    """(label, x, y, linestyle, linewidth) of every line of ``ax`` (label None: not in the legend)."""
    return [(None if ln.get_label().startswith("_") else ln.get_label(), list(ln.get_xdata()), [float(v) for v in ln.get_ydata()], ln.get_linestyle(),
             ln.get_linewidth()) for ln in ax.get_lines()]


def scatters(ax) -> List[Any]:
    from matplotlib.collections import PathCollection

    return [c for c in ax.collections if isinstance(c, PathCollection)]


def legend_texts(ax) -> List[str]:
    leg = ax.get_legend()
    return [t.get_text() for t in leg.get_texts()] if leg else []


def curve_run(arm: str, seed: int, nme: List[Optional[float]], status: str = "finished", **extra: Any
              ) -> Dict[str, Any]:
    epochs = list(range(len(nme)))
    curves = {"epoch": epochs, "NME": nme, "train_loss": [None] + [1.0 / (e + 1) + seed for e in epochs[1:]],
              "valid_loss": [2.0 + seed] * len(epochs)}
    curves.update(extra)
    return {"arm": arm, "seed": seed, "status": status, "curves": curves}


def test_colors_come_from_tab10_then_tab20():
    plt = figures._plt()
    assert figures._colors(3) == [plt.get_cmap("tab10")(i) for i in range(3)]
    assert figures._colors(10)[9] == plt.get_cmap("tab10")(9)
    assert len(set(figures._colors(11))) == 11  # past ten arms, no two share a colour
    got = figures._colors(21)
    assert got[10] == plt.get_cmap("tab20")(10) and got[20] == plt.get_cmap("tab20b")(0)
    assert len(set(figures._colors(40))) == 40  # 21 arms (this study) and up to 40 share no colour
    assert figures._colors(41)[40] == plt.get_cmap("tab20")(0)


def test_stack_keeps_the_epochs_every_run_has_a_value_of():
    runs = [curve_run("a", 0, [0.7, None, 0.3, 0.2]), curve_run("a", 1, [0.6, 0.5, 0.4, None])]
    ep, vals = figures._stack(runs, "NME")
    assert ep.tolist() == [0, 2] and vals.tolist() == [[0.7, 0.3], [0.6, 0.4]] and vals.dtype.name == "float64"
    assert figures._stack([curve_run("a", 0, [None, None])], "NME") is None
    assert figures._stack([], "NME") is None
    assert figures._stack([curve_run("a", 0, [0.7, None]), curve_run("a", 1, [None, 0.5])], "NME") is None
    ep, vals = figures._stack([curve_run("a", 0, [None, None]), curve_run("a", 1, [0.7, 0.5])], "NME")
    assert ep.tolist() == [0, 1] and vals.tolist() == [[0.7, 0.5]]  # a run without values is left out


def test_floor_lines_draw_the_floors_and_the_threshold():
    fig, ax = _axes()
    figures._floor_lines(ax, {"floors": {"learned_fraction": 0.8, "valid": {"box_centre": {"NME": 0.5},
                                                                            "constant_layout": {"NME": 0.4}}}})
    assert [(lb, y, ls, lw) for lb, _, y, ls, lw in lines_of(ax)] == [
        ("floor: box centre (0.500)", [0.5, 0.5], "-", 1.2), ("floor: constant layout (0.400)", [0.4, 0.4], ":", 1.2),
        ("0.8 x box centre: above it, not learned", [0.4, 0.4], "--", 0.8)]
    assert [ln.get_color() for ln in ax.get_lines()] == ["black", "gray", "black"]
    fig, ax = _axes()
    figures._floor_lines(ax, {"floors": {"learned_fraction": 0.8}})
    figures._floor_lines(ax, {})
    assert ax.get_lines() == []
    figures._plt().close("all")


def test_nme_limits_start_at_epoch_1():
    fig, ax = _axes()
    done = {"a": [curve_run("a", 0, [0.9, 0.5, 0.3]), curve_run("a", 1, [0.9, 0.4, 0.2])],
            "b": [curve_run("b", 0, [0.9, 0.6, 0.45])], "c": []}
    figures._nme_limits(ax, done, {"floors": {"valid": {"box_centre": {"NME": 0.5}}}})
    assert ax.get_ylim() == pytest.approx((0.97 * 0.25, 1.08 * 0.5))  # the lowest mean from epoch 1; the floor
    assert ax.get_title() == "valid NME (epoch 0, untrained, and early values above the top are off the axis)"
    figures._nme_limits(ax, done, {})  # no floor: the highest mean from epoch 1
    assert ax.get_ylim() == pytest.approx((0.97 * 0.25, 1.08 * 0.6))
    figures._nme_limits(ax, {"b": [curve_run("b", 0, [0.9, 0.6, 0.7])]}, {"floors": {}})
    assert ax.get_ylim() == pytest.approx((0.97 * 0.6, 1.08 * 0.7))  # the finals count too
    fig, ax = _axes()
    ylim = ax.get_ylim()
    figures._nme_limits(ax, {"a": [curve_run("a", 0, [0.9])], "c": []}, {})  # epoch 0 only: nothing to set
    assert ax.get_ylim() == ylim and ax.get_title() == ""
    figures._plt().close("all")


def _curves_report(pairs: bool = True, n_arms: int = 2) -> Dict[str, Any]:
    runs = [curve_run("adam", 0, [0.9, 0.5, 0.3]), curve_run("adam", 1, [0.9, 0.4, 0.2]),
            curve_run("la", 0, [0.9, 0.45, 0.25]), curve_run("la", 1, [0.9, 0.1, 0.1], status="failed")]
    arms = {"adam": {"family": "adam", "setting": {"TRAIN.LR_STEP": [2]}}, "la": {"family": "lookahead(adam)"}}
    for i in range(2, n_arms):
        arms[f"x{i}"] = {}
    return {"study": {"name": "s", "reference": "adam"}, "arms": arms, "runs": runs,
            "floors": {"learned_fraction": 0.8, "valid": {"box_centre": {"NME": 0.5}, "constant_layout": {"NME": 0.4}}},
            "same_lr": {"pairs": [{"key": "la - adam", "lookahead_arm": "la", "base_arm": "adam"}] if pairs else []}}


def test_plot_curves(saved):
    assert figures.plot_curves(_curves_report(), "out/curves.png")
    (fig, path, kw), = saved
    assert (path, kw) == ("out/curves.png", {"dpi": 100})
    assert tuple(fig.get_size_inches()) == (16, 11)
    assert fig._suptitle.get_text() == "study s: mean over seeds (line), min-max over seeds (band); raw values"
    train, valid, nme, gap = fig.axes
    assert [ax.get_title() for ax in (train, valid, gap)] == [
        "train loss", "valid loss", "Lookahead(X) - X valid NME per epoch (same LR): mean, 95% CI band, each seed faint"]
    assert nme.get_title().startswith("valid NME (epoch 0")
    assert [ax.get_yscale() for ax in (train, valid, nme)] == ["log", "log", "linear"]
    assert {ax.get_xlabel() for ax in (train, valid, nme)} == {"epoch (0 = untrained)"}
    assert lines_of(train) == [("adam (n=2)", [1, 2], [1.0, pytest.approx(1 / 3 + 0.5)], "-", 1.6),
                               ("la (n=1)", [1, 2], [0.5, pytest.approx(1 / 3)], "-", 1.6)]
    assert [ln[2] for ln in lines_of(valid)] == [[2.5, 2.5, 2.5], [2.0, 2.0, 2.0]]
    assert len(train.collections) == 1  # the band: adam only (la has one finished seed)
    assert [ln[0] for ln in lines_of(nme)] == ["adam (n=2)", "la (n=1)", "floor: box centre (0.500)",
                                               "floor: constant layout (0.400)", "0.8 x box centre: above it, not learned"]
    assert lines_of(nme)[0][2] == pytest.approx([0.9, 0.45, 0.25])
    assert nme.get_ylim() == pytest.approx((0.97 * 0.25, 1.08 * 0.5))
    assert legend_texts(train) == ["adam (n=2)", "la (n=1)"] and train.get_legend()._ncols == 1
    assert legend_texts(nme) == ["floor: box centre (0.500)", "floor: constant layout (0.400)",
                                 "0.8 x box centre: above it, not learned"]
    assert train.get_legend()._loc == nme.get_legend()._loc == 1  # upper right
    assert "la - adam (n=1)" in [ln[0] for ln in lines_of(gap)] and gap.axison


def test_plot_curves_legend_without_train_loss_and_without_pairs(saved):
    rep = _curves_report(pairs=False, n_arms=9)
    for r in rep["runs"]:
        r["curves"]["train_loss"] = [None] * 3
    assert figures.plot_curves(rep, "c.png")
    train, valid, nme, gap = saved[0][0].axes
    assert train.get_legend() is None and legend_texts(nme)[:2] == ["adam (n=2)", "la (n=1)"]
    assert nme.get_legend()._ncols == 2  # more than 8 arms: two columns
    assert not gap.axison and [t.get_text() for t in gap.texts] == [
        "no same-LR pair Lookahead(X), X with a finished seed"]
    rep["runs"] = [r for r in rep["runs"] if r["status"] != "finished"]
    assert not figures.plot_curves(rep, "none.png") and len(saved) == 1
    eight = _curves_report(pairs=False, n_arms=8)
    for r in eight["runs"]:
        r["curves"]["train_loss"] = [None] * 3
    assert figures.plot_curves(eight, "c8.png")
    assert saved[-1][0].axes[2].get_legend()._ncols == 1  # 8 arms still fit one column


def test_plot_curves_floor_legend_needs_floors(saved):
    rep = _curves_report()
    del rep["floors"]
    assert figures.plot_curves(rep, "c.png")
    train, valid, nme, gap = saved[0][0].axes
    assert legend_texts(train) == ["adam (n=2)", "la (n=1)"] and nme.get_legend() is None


def _sens_report(grid: bool = True, lines: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    pt = lambda lr, m, lo, hi: {"lr": lr, "mean": m, "ci_low": lo, "ci_high": hi}  # noqa: E731
    lines = lines if lines is not None else {
        "adam": [pt(1e-4, 0.2, 0.18, 0.23), pt(1e-3, 0.25, NAN, NAN)],
        "sgd": [pt(1e-2, 0.3, 0.28, 0.31)],
        "lookahead(adam)": [pt(1e-4, 0.19, 0.17, 0.2), pt(1e-3, 0.22, 0.2, 0.24)]}
    k_alpha = {"lr": 1e-4, "seeds": [0, 1], "k": [5, 10], "alpha": [0.5, 0.8],
               "cells": {"5,0.5": {"mean": 0.2, "std": 0.01, "n": 3}, "5,0.8": {"mean": 0.3, "std": 0.02, "n": 2},
                         "10,0.5": {"mean": None, "std": None, "n": 0}}}
    return {"study": {"reference": "adam"}, "arms": {"adam": {"family": "adam"}},
            "floors": {"learned_fraction": 0.8, "valid": {"box_centre": {"NME": 0.5}, "constant_layout": {"NME": 0.4}}},
            "tuned": {"lines": {"adam": {"best_lr": 1e-4}, "sgd": {"best_lr": 1e-2}, "lookahead(adam)": {"best_lr": None}}},
            "sensitivity": {"lr_lines": lines, "lr_line_seeds": {"adam": [0, 1], "sgd": [0], "lookahead(adam)": [1]},
                            "k_alpha": k_alpha if grid else None}}


def test_lr_panel_draws_each_line_with_its_interval_and_best_lr():
    fig, ax = _axes()
    figures._lr_panel(ax, _sens_report())
    bars = ax.containers
    assert [b.get_label() for b in bars] == ["adam (seeds 0,1, 2 LRs)", "sgd (seeds 0, 1 LR)",
                                             "lookahead(adam) (seeds 1, 2 LRs)"]
    data = [b.lines[0] for b in bars]
    assert list(data[0].get_xdata()) == pytest.approx([1e-4 * 0.95, 1e-3 * 0.95])  # side by side: 0.95, 1, 1.05
    assert list(data[1].get_xdata()) == pytest.approx([1e-2])
    assert list(data[2].get_xdata()) == pytest.approx([1e-4 * 1.05, 1e-3 * 1.05])
    assert list(data[0].get_ydata()) == pytest.approx([0.2, 0.25])
    assert [(d.get_linewidth(), d.get_alpha()) for d in data] == [(2.4, 1.0), (1.0, 0.6), (2.4, 1.0)]
    segs = bars[0].lines[2][0].get_segments()  # the error bars: the CI, none where it is not finite
    assert [tuple(s[:, 1]) for s in segs] == [pytest.approx((0.18, 0.23)), pytest.approx((0.25, 0.25))]
    stars = scatters(ax)
    assert [tuple(s.get_offsets()[0]) for s in stars] == [pytest.approx((1e-4 * 0.95, 0.2))]  # not sgd's single LR
    assert (stars[0].get_sizes().tolist(), stars[0].get_zorder()) == ([180], 4)
    assert [ln.get_label() for ln in ax.get_lines() if ln.get_label().startswith(("floor", "0.8"))] == [
        "floor: box centre (0.500)", "floor: constant layout (0.400)", "0.8 x box centre: above it, not learned"]
    assert ax.get_xscale() == "log" and ax.get_legend() is not None
    assert ax.get_xlabel() == "learning rate (lines sharing an LR drawn slightly apart)"
    assert ax.get_ylabel() == "final valid NME (mean, 95% CI over the line's common seeds)"
    assert ax.get_title() == "final NME against LR; star: a line's best LR (selected on this validation set)"
    figures._plt().close("all")


def test_lr_panel_without_tuned_lines_draws_no_star():
    rep = _sens_report()
    del rep["tuned"]
    fig, ax = _axes()
    figures._lr_panel(ax, rep)
    assert scatters(ax) == []
    figures._plt().close("all")


def test_grid_panel_shows_each_cell():
    fig, ax = _axes()
    figures._grid_panel(fig, ax, _sens_report()["sensitivity"]["k_alpha"])
    mat = ax.images[0].get_array()
    assert mat.tolist()[0] == [0.2, 0.3] and mat.mask.tolist() == [[False, False], [True, True]]
    assert [(t.get_text(), t.get_position(), t.get_color()) for t in ax.texts] == [
        ("0.2000\n+- 0.0100 (n=3)", (0, 0), "black"), ("0.3000\n+- 0.0200 (n=2)", (1, 0), "white"),
        ("-\n+- - (n=0)", (0, 1), "black")]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.5", "0.8"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["5", "10"]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("alpha", "k", "Lookahead final NME, LR 0.0001, seeds 0,1")
    assert len(fig.axes) == 2  # the colour bar
    figures._plt().close("all")


def test_plot_sensitivity_panels(saved):
    assert figures.plot_sensitivity(_sens_report(), "s.png")
    fig, path, kw = saved[-1]
    assert (path, kw, len(fig.axes), tuple(fig.get_size_inches())) == ("s.png", {"dpi": 100}, 3, (15, 6))
    assert fig.axes[1].get_title().startswith("Lookahead final NME")
    assert figures.plot_sensitivity(_sens_report(grid=False), "s.png")
    fig = saved[-1][0]
    assert (len(fig.axes), tuple(fig.get_size_inches())) == (1, (9, 6))
    one = {"adam": [{"lr": 1e-4, "mean": 0.2, "ci_low": 0.1, "ci_high": 0.3}]}
    assert not figures.plot_sensitivity(_sens_report(grid=False, lines=one), "s.png")  # no line with two LRs
    assert figures.plot_sensitivity(_sens_report(lines=one), "s.png") and len(saved) == 3


def test_slow_fast_panel_draws_both_weights_of_each_arm():
    runs = [curve_run("la", s, [0.9, 0.5, 0.3], NME_slow=[0.9, 0.5 + s / 10, 0.3], NME_fast=[0.9, 0.6, None])
            for s in range(2)] + [curve_run("la", 2, [0.9], status="failed", NME_slow=[5.0], NME_fast=[5.0]),
                                  curve_run("lb", 0, [0.9, 0.4], NME_slow=[0.9, 0.4], NME_fast=[None, None])]
    fig, ax = _axes()
    figures._slow_fast_panel(ax, {"runs": runs}, ["la", "lb"])
    assert [(lb, x, y, ls) for lb, x, y, ls, _ in lines_of(ax)] == [
        ("la slow (n=2)", [0, 1, 2], pytest.approx([0.9, 0.55, 0.3]), "-"),
        ("la fast (n=2)", [0, 1], pytest.approx([0.9, 0.6]), "--"),
        ("lb slow (n=1)", [0, 1], pytest.approx([0.9, 0.4]), "-")]
    assert {ln.get_linewidth() for ln in ax.get_lines()} == {1.6}
    assert len(ax.collections) == 2  # la's two bands
    assert [ln.get_color() for ln in ax.get_lines()] == [figures._colors(2)[0]] * 2 + [figures._colors(2)[1]]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == (
        "epoch (0 = untrained)", "valid NME", "slow (solid) vs fast (dashed) weights; band: min-max over seeds")
    assert legend_texts(ax) == ["la slow (n=2)", "la fast (n=2)", "lb slow (n=1)"]
    figures._plt().close("all")


def _et_pair(n: int = 2, **kw: Any) -> Dict[str, Any]:
    p = {"lookahead_arm": "la", "base_arm": "adam", "k": 5, "alpha": 0.5, "window": [1, 4], "pace_window": [2, 4],
         "predicted_ratio": 0.5,
         "per_seed": {"0": {"epochs": [1, 2, 3, 4], "tau": [0.6, 1.1, None, 2.0]},
                      "1": {"epochs": [1, 2, 3, 4], "tau": [0.4, 0.9, 1.6, 2.2]}},
         "ratio": summ(0.55, 0.05, n, 0.1, 1.0), "pace": summ(0.6, 0.1, n, 0.0, 1.2)}
    p.update(kw)
    return p


def test_effective_time_pairs_keep_the_main_k_alpha_at_the_reference_length():
    pairs = [_et_pair(), _et_pair(n=0), _et_pair(lookahead_arm="la_long"), _et_pair(k=10), _et_pair(alpha=0.8)]
    rep = {"arms": {"la_long": {"length_variant_of": "la"}, "la": {}}, "same_lr": {"k": 5, "alpha": 0.5},
           "effective_time": {"pairs": pairs}}
    assert af.effective_time_pairs(rep) == [pairs[0]]
    rep["same_lr"] = {"k": None}
    assert af.effective_time_pairs(rep) == [pairs[0], pairs[3], pairs[4]]  # no main k, alpha: every k, alpha
    del rep["same_lr"]
    assert af.effective_time_pairs(rep) == [pairs[0], pairs[3], pairs[4]]
    assert af.effective_time_pairs({"arms": {}}) == af.effective_time_pairs({"arms": {}, "effective_time": None}) == []


def test_effective_time_panel_draws_tau_against_t():
    rep = {"arms": {}, "effective_time": {"pairs": [_et_pair(), _et_pair(window=[1, 6], predicted_ratio=1.0,
                                                                          base_arm="sgd")]}}
    fig, ax = _axes()
    assert af.effective_time_panel(ax, rep, ["red", "blue"])
    got = lines_of(ax)
    assert [(x, y) for _, x, y, _, _ in got[:2]] == [([1, 2, 4], [0.6, 1.1, 2.0]), ([1, 2, 3, 4], [0.4, 0.9, 1.6, 2.2])]
    label = ("adam vs la (n=2): mean tau/t 0.55 [0.10, 1.00]; slope over epochs 2..4 0.60 [0.00, 1.20]")
    assert got[2][:3] == (label, [1, 2, 4], pytest.approx([0.5, 1.0, 2.1])) and got[2][4] == 2.2
    assert got[3][1:4] == ([1.0, 4.0], [0.5, 2.0], "--") and got[3][4] == 1.0
    assert [ln.get_color() for ln in ax.get_lines()[:4]] == ["red"] * 4 and ax.get_lines()[4].get_color() == "blue"
    assert [ln.get_alpha() for ln in ax.get_lines()[:2]] == [0.4, 0.4] and got[0][4] == 0.6
    assert got[7][1:4] == ([1.0, 6.0], [1.0, 6.0], "--")
    assert got[8][0] == "dashed, each pair's colour: the alpha x lr prediction, alpha x LR(Lookahead) / LR(X) x t"
    assert got[8][1:4] == ([], [], "--") and ax.get_lines()[8].get_color() == "gray"
    assert got[9] == ("same pace (tau = t)", [0, 6], [0.0, 6.0], ":", 1.0)
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == (
        "Lookahead epoch t (before the first LR drop)", "tau(t): epoch at which X reaches Lookahead's NME at t",
        "effective time: measured tau(t) (thin: each seed; thick: mean)")
    assert len(legend_texts(ax)) == 4 and ax.get_legend()._loc == 9  # upper center, below the axes
    assert not af.effective_time_panel(ax, {"arms": {}, "effective_time": {"pairs": [_et_pair(n=0)]}}, ["red"])
    fig, ax = _axes()
    pair = _et_pair(window=[1, 0.5], per_seed={"0": {"epochs": [1], "tau": [None]}})
    assert af.effective_time_panel(ax, {"arms": {}, "effective_time": {"pairs": [pair]}}, ["red"])
    assert lines_of(ax)[0][1:3] == ([], []) and lines_of(ax)[-1][1:3] == ([0, 1], [0.0, 1.0])  # t at least 1
    fig, ax = _axes()
    assert af.effective_time_panel(ax, {"arms": {}, "effective_time": {"pairs": [_et_pair(per_seed={})]}}, ["red"])
    assert lines_of(ax)[0][1:3] == ([], [])
    figures._plt().close("all")


def test_plot_lookahead_panels_and_the_coincide_note(saved):
    la = {"la": {"logged": True, "epochs_where_they_differ": {"0": 0, "1": 0}},
          "lb": {"logged": True, "epochs_where_they_differ": {"0": 2}},
          "lc": {"logged": False, "epochs_where_they_differ": {"0": 0}},
          "ld": {"logged": True, "epochs_where_they_differ": {}}}
    runs = [curve_run("lb", 0, [0.9, 0.5], NME_slow=[0.9, 0.5], NME_fast=[0.9, 0.6])]
    rep = {"lookahead": la, "runs": runs, "arms": {}, "effective_time": {"pairs": [_et_pair()]}}
    assert figures.plot_lookahead(rep, "l.png")
    fig, path, kw = saved[-1]
    assert (path, kw, len(fig.axes), tuple(fig.get_size_inches())) == ("l.png", {"dpi": 100}, 2, (18, 8.5))
    assert fig.axes[0].get_title().startswith("effective time") and fig.axes[1].get_title().startswith("slow (solid)")
    assert [ln[0] for ln in lines_of(fig.axes[1])] == ["lb slow (n=1)", "lb fast (n=1)"]
    assert fig._suptitle.get_text() == (
        "Lookahead\nslow and fast weights coincide at every validation of la (each followed a sync: k divides the "
        "iterations per\nepoch): not drawn")  # wrapped at 110 characters
    assert fig._suptitle.get_fontsize() == 10
    rep["effective_time"] = {"pairs": [_et_pair(n=0)]}
    assert figures.plot_lookahead(rep, "l.png")
    assert (len(saved[-1][0].axes), tuple(saved[-1][0].get_size_inches())) == (1, (9, 8.5))
    del la["lb"]
    assert not figures.plot_lookahead(rep, "l.png")  # nothing differs, nothing timed
    rep["effective_time"] = {"pairs": [_et_pair()]}
    del la["la"]
    assert figures.plot_lookahead(rep, "l.png")
    assert len(saved[-1][0].axes) == 1 and saved[-1][0]._suptitle.get_text() == "Lookahead\n"
    assert not figures.plot_lookahead({"lookahead": {}}, "l.png") and len(saved) == 3


def _cal_report(**cal: Any) -> Dict[str, Any]:
    c = {"arm": "adam", "box_centre_floor": 0.5, "constant_layout_floor": 0.4, "target_NME": 0.35,
         "target_fraction": 0.7, "fraction_of_floor": 0.6, "final_NME": {"mean": 0.3}}
    c.update(cal)
    runs = [curve_run("adam", 0, [0.9, None, 0.35]), curve_run("adam", 1, [0.8, 0.5, 0.25]),
            curve_run("adam", 2, [5.0, 5.0, 5.0], status="failed"), curve_run("la", 0, [1.0, 1.0, 1.0])]
    return {"calibration": c, "runs": runs, "arms": {"adam": {"setting": {"TRAIN.LR_STEP": [1, 2]}}}}


def test_plot_calibration(saved):
    assert figures.plot_calibration(_cal_report(), "c.png")
    fig, path, kw = saved[-1]
    assert (path, kw, tuple(fig.get_size_inches())) == ("c.png", {"dpi": 100}, (9, 5.5))
    ax, = fig.axes
    got = lines_of(ax)
    assert [(x, y, lw) for _, x, y, _, lw in got[:3]] == [
        ([0, 2], [0.9, 0.35], 0.8), ([0, 1, 2], [0.8, 0.5, 0.25], 0.8), ([0, 2], pytest.approx([0.85, 0.3]), 2.4)]
    assert [ln.get_alpha() for ln in ax.get_lines()[:3]] == [0.5, 0.5, None]
    assert got[2][0] == "adam: mean over 2 seeds (thin: each seed)"
    assert [(lb, y[0], ls, lw) for lb, _, y, ls, lw in got[3:6]] == [
        ("floor: box centre (0.500)", 0.5, "-", 1.2), ("floor: constant layout (0.400)", 0.4, ":", 1.2),
        ("0.7 x box centre (0.350): target", 0.35, "--", 1.2)]
    assert [ln.get_color() for ln in ax.get_lines()[3:6]] == ["black", "gray", "tab:green"]
    assert [(lb, x[0], lw) for lb, x, _, _, lw in got[6:]] == [("LR x factor", 1, 0.6), (None, 2, 0.6)]
    assert legend_texts(ax) == ["adam: mean over 2 seeds (thin: each seed)", "floor: box centre (0.500)",
                                "floor: constant layout (0.400)", "0.7 x box centre (0.350): target", "LR x factor"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("epoch (0 = untrained)", "valid NME (lower is better)")
    assert ax.get_title() == "calibration: adam ends at 0.3000 = 0.60 x the box-centre floor; measured values"
    assert ax.get_legend()._loc == 1


def test_plot_calibration_without_floors_or_runs(saved):
    assert figures.plot_calibration(_cal_report(constant_layout_floor=None), "c.png")
    assert [ln[0] for ln in lines_of(saved[-1][0].axes[0])][3:5] == ["floor: box centre (0.500)",
                                                                      "0.7 x box centre (0.350): target"]
    assert figures.plot_calibration(_cal_report(box_centre_floor=None, fraction_of_floor=None), "c.png")
    ax = saved[-1][0].axes[0]
    assert [ln[0] for ln in lines_of(ax)][3:] == ["LR x factor", None]
    assert ax.get_title() == "calibration: adam ends at 0.3000; measured values"
    rep = _cal_report()
    rep["arms"]["adam"] = {}
    assert figures.plot_calibration(rep, "c.png") and len(lines_of(saved[-1][0].axes[0])) == 6  # no LR step
    rep["runs"] = rep["runs"][2:]
    assert not figures.plot_calibration(rep, "c.png") and len(saved) == 3


def _point(its: Optional[int], diffs: List[float], verdict: str = "worse", **kw: Any) -> Dict[str, Any]:
    m = sum(diffs) / len(diffs) if diffs else NAN
    return dict({"iterations": its, "comparison": {"n": len(diffs), "diffs": diffs, "mean_diff": m,
                                                   "ci_low": m - 0.01, "ci_high": m + 0.02, "verdict": verdict}}, **kw)


def _trend_fig_report() -> Dict[str, Any]:
    pts = [_point(750, [0.02, 0.022, 0.018], stats.NOT_LEARNED), _point(None, [0.1, 0.1]),
           _point(1500, [0.01, 0.02], both_learned=False), _point(3000, []), _point(6000, [0.005, 0.007])]
    pts[4]["comparison"]["ci_low"] = NAN
    line = {"optimizer": "adam", "lr": 1e-4, "k": 5, "alpha": 0.5, "change": {"trend": "shrinks"}, "points": pts}
    one = {"optimizer": "sgd", "lr": 0.01, "k": 5, "alpha": 0.5, "change": {"trend": "-"},
           "points": [_point(750, [0.1, 0.1, 0.1]), _point(1500, [])]}
    return {"trend": {"lines": [line, one], "user_iterations": 19800}}


def test_trend_line_points_interval_and_hollow_markers():
    fig, ax = _axes()
    figures._trend_line(ax, _trend_fig_report()["trend"]["lines"][0], "red", 1.5)
    bar, = ax.containers
    x = [750 * 1.5, 1500 * 1.5, 6000 * 1.5]
    assert list(bar.lines[0].get_xdata()) == pytest.approx(x)  # the measured lengths only
    assert list(bar.lines[0].get_ydata()) == pytest.approx([0.02, 0.015, 0.006])
    assert bar.get_label() == ("Lookahead(adam) - adam, LR 0.0001, k 5 alpha 0.5; change between learned lengths: "
                               "shrinks")
    assert [tuple(s[:, 1]) for s in bar.lines[2][0].get_segments()] == [
        pytest.approx((0.01, 0.04)), pytest.approx((0.005, 0.035)), pytest.approx((0.006, 0.026))]
    dots = scatters(ax)
    seeds = [d.get_offsets().tolist() for d in dots[:3]]  # each seed's difference, just right of its mean
    assert np.allclose(seeds[0], [[x[0] * 1.06, 0.02], [x[0] * 1.06, 0.022], [x[0] * 1.06, 0.018]])
    assert np.allclose(seeds[1], [[x[1] * 1.06, 0.01], [x[1] * 1.06, 0.02]])
    assert np.allclose(seeds[2], [[x[2] * 1.06, 0.005], [x[2] * 1.06, 0.007]])
    assert [d.get_alpha() for d in dots[:3]] == [0.35] * 3
    hollow = [d.get_offsets().tolist()[0] for d in dots[3:]]
    assert hollow == [pytest.approx([x[0], 0.02]), pytest.approx([x[1], 0.015])]  # neither learned; one did not
    assert [tuple(d.get_facecolor()[0]) for d in dots[3:]] == [(1.0, 1.0, 1.0, 1.0)] * 2
    assert [(t.get_text(), t.xy) for t in ax.texts] == [("neither arm\nhas learned", pytest.approx((x[0], 0.02))),
                                                        ("one arm\nhas not learned", pytest.approx((x[1], 0.015)))]
    figures._plt().close("all")


def test_plot_trend(saved):
    rep = _trend_fig_report()
    assert figures.plot_trend(rep, "t.png")
    fig, path, kw = saved[-1]
    assert (path, kw, tuple(fig.get_size_inches())) == ("t.png", {"dpi": 100}, (9, 5.5))
    ax, = fig.axes
    assert len(ax.containers) == 1  # the sgd line has one measured length: not drawn
    assert list(ax.containers[0].lines[0].get_xdata()) == pytest.approx([750, 1500, 6000])  # one line: no offset
    assert lines_of(ax)[-2:] == [
        (None, [0, 1], [0.0, 0.0], "-", 1.0), ("user's run (19,800 iterations)", [19800, 19800], [0, 1], "--", 1.2)]
    assert [(t.get_text(), t.get_position()) for t in ax.texts[-1:]] == [(" user's run", (19800, 0.98))]
    assert ax.get_xscale() == "log" and ax.get_xlim() == pytest.approx((750 / 1.6, 19800 * 1.6))
    assert ax.xaxis.get_major_formatter()(12345.0, 0) == "12,345"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("training iterations per run (log scale)",
                                                  "final valid NME: Lookahead(X) - X (below 0: Lookahead better)")
    assert ax.get_title() == ("the gap against training length: mean, 95% CI (unadjusted), each seed faint; filled: "
                              "both arms learned")
    assert legend_texts(ax)[0] == "user's run (19,800 iterations)"
    rep["trend"]["lines"].append(dict(rep["trend"]["lines"][0], optimizer="rms"))
    rep["trend"]["user_iterations"] = 100
    assert figures.plot_trend(rep, "t.png")
    ax = saved[-1][0].axes[0]
    assert [list(c.lines[0].get_xdata())[0] for c in ax.containers] == pytest.approx([750 * 0.985, 750 * 1.015])
    assert ax.get_xlim() == pytest.approx((100 / 1.6, 6000 * 1.6))
    assert not figures.plot_trend({"trend": {"lines": [_trend_fig_report()["trend"]["lines"][1]]}}, "t.png")
    assert not figures.plot_trend({}, "t.png") and len(saved) == 2


def test_gap_series_pairs_the_seeds_and_epochs_both_have():
    runs = [curve_run("adam", 0, [0.9, 0.5, 0.3]), curve_run("adam", 1, [0.9, 0.4, None]),
            curve_run("la", 0, [0.9, 0.45, 0.32]), curve_run("la", 1, [0.9, 0.42, 0.2]),
            curve_run("la", 2, [0.9, 0.1, 0.1]), curve_run("adam", 2, [0.9, 0.1, 0.1], status="failed")]
    ep, diffs, s = af.gap_series({"runs": runs}, "la", "adam")
    assert ep.tolist() == [1] and np.allclose(diffs, [[-0.05], [0.02]]) and diffs.shape == (2, 1)
    assert s[0].n == 2 and s[0].mean == pytest.approx(-0.015)
    assert af.gap_series({"runs": runs}, "la", "sgd") is None
    runs = [curve_run("adam", 0, [0.9]), curve_run("la", 0, [0.8])]
    assert af.gap_series({"runs": runs}, "la", "adam") is None  # epoch 0 only
    assert af._curve(curve_run("a", 0, [0.5, None, 1])) == {0: 0.5, 2: 1.0}


def test_gap_panel_draws_each_pair():
    runs = [curve_run("adam", s, [0.9, 0.5, 0.3]) for s in range(2)] + \
        [curve_run("la", s, [0.9, 0.45 + s / 100, 0.32]) for s in range(2)] + \
        [curve_run("sgd", 0, [0.9, 0.5, 0.3]), curve_run("ls", 0, [0.9, 0.6, 0.4])]
    pairs = [{"key": "la - adam", "lookahead_arm": "la", "base_arm": "adam"},
             {"key": "none", "lookahead_arm": "lx", "base_arm": "adam"},
             {"key": "ls - sgd", "lookahead_arm": "ls", "base_arm": "sgd"}]
    rep = {"runs": runs, "same_lr": {"pairs": pairs}, "study": {"reference": "adam"},
           "arms": {"adam": {"setting": {"TRAIN.LR_STEP": [1, 2]}}}}
    fig, ax = _axes()
    assert af.gap_panel(ax, rep, ["red", "green", "blue"])
    got = lines_of(ax)
    assert [(lb, x, y, lw) for lb, x, y, _, lw in got[:3]] == [
        (None, [1, 2], pytest.approx([-0.05, 0.02]), 0.6), (None, [1, 2], pytest.approx([-0.04, 0.02]), 0.6),
        ("la - adam (n=2)", [1, 2], pytest.approx([-0.045, 0.02]), 1.8)]
    assert [ln.get_alpha() for ln in ax.get_lines()[:2]] == [0.35, 0.35]
    assert [ln.get_color() for ln in ax.get_lines()[:3]] == ["red"] * 3  # each seed in its pair's colour
    assert got[4][0] == "ls - sgd (n=1)" and ax.get_lines()[4].get_color() == "blue"  # the colour of its pair
    assert len(ax.collections) == 1  # the band of the pair with two seeds
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    s = stats.summarize([-0.05, -0.04])
    assert min(band) == pytest.approx(s.ci_low) and max(band) == pytest.approx(max(s.ci_high, 0.02 + 0))
    assert any(y == pytest.approx(s.ci_high) for y in band)  # from the lower to the upper bound, not to 0
    assert [(lb, x, y, ls, lw) for lb, x, y, ls, lw in got[5:]] == [
        ("LR x factor", [1, 1], [0, 1], "-", 0.6), (None, [2, 2], [0, 1], "-", 0.6),
        (None, [0, 1], [0.0, 0.0], "-", 1.0)]
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == (
        "Lookahead(X) - X valid NME per epoch (same LR): mean, 95% CI band, each seed faint", "epoch",
        "valid NME difference (below 0: Lookahead better)")
    assert legend_texts(ax) == ["la - adam (n=2)", "ls - sgd (n=1)", "LR x factor"]
    fig, ax = _axes()
    rep["arms"]["adam"] = {}
    assert af.gap_panel(ax, rep, ["red", "green", "blue"]) and len(ax.get_lines()) == 6  # no LR step
    fig, ax = _axes()
    assert not af.gap_panel(ax, dict(rep, same_lr={"pairs": pairs[1:2]}), ["red"]) and ax.get_lines() == []
    figures._plt().close("all")


# ---------------------------------------------------------------------------- how the figures are drawn
def _legend_style(ax) -> tuple:
    leg = ax.get_legend()
    return leg.get_texts()[0].get_fontsize(), leg._loc, leg._ncols


def _grid_style(ax) -> tuple:
    """(major grid on, its alpha, minor grid on, integer epochs)."""
    return (ax.xaxis._major_tick_kw.get("gridOn"), ax.xaxis._major_tick_kw.get("grid_alpha"),
            bool(ax.xaxis._minor_tick_kw.get("gridOn")))


def _band_style(coll) -> tuple:
    return coll.get_alpha(), list(coll.get_linewidth()), tuple(coll.get_facecolor()[0][:3])


def test_curves_styles(saved):
    figures.plot_curves(_curves_report(), "c.png")
    train, valid, nme, gap = saved[0][0].axes
    colors = figures._colors(2)
    assert [ln.get_color() for ln in train.get_lines()] == colors
    assert _band_style(train.collections[0]) == (0.15, [0.0], tuple(colors[0][:3]))
    band = train.collections[0].get_paths()[0].vertices[:, 1]
    assert (min(band), max(band)) == pytest.approx((1 / 3, 1.5))  # the min and max over seeds
    assert _legend_style(train) == (7, 1, 1) and _legend_style(nme) == (7, 1, 1)
    for ax in (train, valid, nme):
        assert _grid_style(ax) == (True, 0.3, False) and ax.xaxis.get_major_locator()._integer
    rep = _curves_report(pairs=False)
    figures.plot_curves(rep, "c.png")
    text, = saved[1][0].axes[3].texts
    assert (text.get_position(), text.get_ha(), text.get_va()) == ((0.5, 0.5), "center", "center")


def test_sensitivity_styles():
    fig, ax = _axes()
    figures._lr_panel(ax, _sens_report())
    bar = ax.containers[0]
    assert (bar.lines[0].get_marker(), bar.lines[1][0].get_markersize(), bar.lines[0].get_color()) == \
        ("o", 8.0, figures._colors(3)[0])
    star, = scatters(ax)
    assert tuple(star.get_facecolor()[0]) == tuple(figures._colors(3)[0])
    assert _legend_style(ax)[0] == 7 and _grid_style(ax) == (True, 0.3, True)
    fig, ax = _axes()
    figures._grid_panel(fig, ax, _sens_report()["sensitivity"]["k_alpha"])
    assert (ax.images[0].get_cmap().name, ax.get_aspect()) == ("viridis_r", "auto")
    assert {(t.get_ha(), t.get_va(), t.get_fontsize()) for t in ax.texts} == {("center", "center", 9)}
    figures._plt().close("all")


def test_slow_fast_and_calibration_styles(saved):
    runs = [curve_run("la", s, [0.9, 0.5], NME_slow=[0.9, 0.5 + s / 10], NME_fast=[0.9, 0.6]) for s in range(2)]
    fig, ax = _axes()
    figures._slow_fast_panel(ax, {"runs": runs}, ["la"])
    assert _band_style(ax.collections[0])[:2] == (0.1, [0.0])
    assert _legend_style(ax)[0] == 8 and _grid_style(ax) == (True, 0.3, False)
    assert ax.xaxis.get_major_locator()._integer
    figures.plot_calibration(_cal_report(), "c.png")
    ax = saved[-1][0].axes[0]
    lines = ax.get_lines()
    assert [ln.get_color() for ln in lines[:3]] == ["tab:blue"] * 3
    assert [(ln.get_color(), ln.get_alpha()) for ln in lines[6:]] == [("gray", 0.6)] * 2
    assert _legend_style(ax)[:2] == (8, 1) and _grid_style(ax) == (True, 0.3, False)
    assert ax.xaxis.get_major_locator()._integer
    figures._plt().close("all")


def test_trend_styles(saved):
    rep = _trend_fig_report()
    figures.plot_trend(rep, "t.png")
    ax = saved[-1][0].axes[0]
    color = figures._colors(1)[0]
    bar = ax.containers[0]
    assert (bar.lines[0].get_marker(), bar.lines[1][0].get_markersize(), bar.lines[0].get_linewidth()) == ("o", 8.0, 1.0)
    dots = scatters(ax)
    assert [(d.get_sizes().tolist(), list(d.get_linewidths())) for d in dots[:3]] == [([18.0], [0.0])] * 3
    assert tuple(dots[0].get_facecolor()[0][:3]) == tuple(color[:3])
    hollow = dots[3]
    assert (hollow.get_sizes().tolist(), tuple(hollow.get_edgecolor()[0]), hollow.get_zorder()) == \
        ([40.0], tuple(color), 3)
    notes = [t for t in ax.texts if t.get_text().startswith(("neither", "one arm"))]
    assert [(n.get_anncoords(), tuple(n.xyann), n.get_ha(), n.get_va(), n.get_fontsize(), n.get_color())
            for n in notes] == [("offset points", (-8, 0), "right", "center", 8, color)] * 2
    zero, user = ax.get_lines()[-2:]
    assert (zero.get_color(), user.get_color()) == ("black", "tab:red")
    text = ax.texts[-1]
    assert (text.get_color(), text.get_ha(), text.get_va(), text.get_rotation(), text.get_fontsize()) == \
        ("tab:red", "right", "top", 90.0, 9)
    assert text.get_transform() == ax.get_xaxis_transform()
    assert ax.title.get_fontsize() == 10 and _legend_style(ax)[:2] == (8, 0) and _grid_style(ax) == (True, 0.3, True)


def test_gap_and_effective_time_styles():
    runs = [curve_run("adam", s, [0.9, 0.5, 0.3]) for s in range(2)] + \
        [curve_run("la", s, [0.9, 0.45 + s / 100, 0.32]) for s in range(2)]
    rep = {"runs": runs, "same_lr": {"pairs": [{"key": "la - adam", "lookahead_arm": "la", "base_arm": "adam"}]},
           "study": {"reference": "adam"}, "arms": {"adam": {"setting": {"TRAIN.LR_STEP": [1]}}}}
    fig, ax = _axes()
    af.gap_panel(ax, rep, ["red"])
    assert _band_style(ax.collections[0]) == (0.18, [0.0], (1.0, 0.0, 0.0))
    step, zero = ax.get_lines()[-2:]
    assert (step.get_color(), step.get_alpha(), zero.get_color()) == ("gray", 0.6, "black")
    assert _legend_style(ax)[:2] == (7, 0) and _grid_style(ax) == (True, 0.3, False)
    fig, ax = _axes()
    af.effective_time_panel(ax, {"arms": {}, "effective_time": {"pairs": [_et_pair()]}}, ["red"])
    assert _legend_style(ax) == (7, 9, 1) and _grid_style(ax) == (True, 0.3, False)
    anchor = ax.get_legend().get_bbox_to_anchor().transformed(ax.transAxes.inverted())
    assert (anchor.x0, anchor.y0) == pytest.approx((0.5, -0.12))
    figures._plt().close("all")


# ---------------------------------------------------------------------------- written against the survivors
def test_slow_fast_panel_bands_follow_the_measured_epochs():
    runs = [curve_run("la", s, [0.9, 0.5, 0.3], NME_slow=[0.9, None, 0.5 + s / 10],
                      NME_fast=[0.8 + s / 10, 0.6, 0.4]) for s in range(2)]
    runs.append(curve_run("lc", 0, [0.9, 0.5, 0.3], NME_slow=[None] * 3, NME_fast=[0.9, 0.5, 0.3]))
    fig, ax = _axes()
    figures._slow_fast_panel(ax, {"runs": runs}, ["la", "lc"])
    # A run without slow values still draws its fast ones; x: the epochs measured, not their positions.
    assert [(lb, x) for lb, x, *_ in lines_of(ax)] == [("la slow (n=2)", [0, 2]), ("la fast (n=2)", [0, 1, 2]),
                                                       ("lc fast (n=1)", [0, 1, 2])]
    slow, fast = ax.collections
    vertices = lambda band: {(round(float(x), 6), round(float(y), 6)) for x, y in band.get_paths()[0].vertices}  # noqa: E731
    assert vertices(slow) == {(0, 0.9), (2, 0.5), (2, 0.6)}  # min and max over seeds, per epoch
    assert vertices(fast) == {(0, 0.8), (0, 0.9), (1, 0.6), (2, 0.4)}
    assert [tuple(b.get_facecolor()[0][:3]) for b in (slow, fast)] == [tuple(figures._colors(2)[0][:3])] * 2
    figures._plt().close("all")


def test_grid_panel_cell_colour_against_the_mean():
    grid = {"lr": 1e-4, "seeds": [0], "k": [5], "alpha": [0.5, 0.6, 0.8],
            "cells": {"5,0.5": {"mean": 0.2, "std": 0.01, "n": 3}, "5,0.6": {"mean": 0.25, "std": 0.01, "n": 3},
                      "5,0.8": {"mean": 0.3, "std": 0.01, "n": 3}}}
    fig, ax = _axes()
    figures._grid_panel(fig, ax, grid)
    assert [t.get_color() for t in ax.texts] == ["black", "black", "white"]  # white only above the mean
    figures._plt().close("all")


def test_plot_lookahead_note_names_every_coinciding_arm(saved):
    import matplotlib

    la = {"la": {"logged": True, "epochs_where_they_differ": {"0": 0}},
          "lb_k5": {"logged": True, "epochs_where_they_differ": {"0": 0}},
          "lc": {"logged": True, "epochs_where_they_differ": {"0": 2}}}
    runs = [curve_run("lc", 0, [0.9, 0.5], NME_slow=[0.9, 0.5], NME_fast=[0.9, 0.6])]
    with matplotlib.rc_context({"font.size": 12}):  # the title's 10 pt is set, not the default
        assert figures.plot_lookahead({"lookahead": la, "runs": runs, "effective_time": {"pairs": []}}, "l.png")
    title = saved[-1][0]._suptitle
    assert title.get_text() == (
        "Lookahead\nslow and fast weights coincide at every validation of la, lb_k5 (each followed a sync: k divides "
        "the\niterations per epoch): not drawn")  # 110 characters a line: "iterations" would make 111
    assert title.get_fontsize() == 10


def test_effective_time_same_pace_line_is_black():
    fig, ax = _axes()
    af.effective_time_panel(ax, {"arms": {}, "effective_time": {"pairs": [_et_pair()]}}, ["red"])
    assert ax.get_lines()[-1].get_label() == "same pace (tau = t)" and ax.get_lines()[-1].get_color() == "black"
    figures._plt().close("all")


def test_curves_bands_take_their_arms_colour_and_span_per_epoch(saved):
    rep = _curves_report()
    rep["arms"] = {"la": rep["arms"]["la"], "adam": rep["arms"]["adam"]}  # the arm with a band second
    figures.plot_curves(rep, "c.png")
    train = saved[0][0].axes[0]
    band, = train.collections
    assert tuple(band.get_facecolor()[0][:3]) == tuple(figures._colors(2)[1][:3])
    points = {(round(float(x), 6), round(float(y), 6)) for x, y in band.get_paths()[0].vertices}
    assert points == {(1, 0.5), (1, 1.5), (2, 0.333333), (2, 1.333333)}  # per-epoch min and max over seeds


def test_curves_nme_panel_keeps_its_title_without_trained_epochs(saved):
    rep = _curves_report(pairs=False)
    for r in rep["runs"]:
        r["curves"] = {"epoch": [0], "NME": [0.9], "train_loss": [None], "valid_loss": [1.0]}
    assert figures.plot_curves(rep, "c.png")
    train, valid, nme, gap = saved[0][0].axes
    assert nme.get_title() == "valid NME" and nme.get_yscale() == "linear" and valid.get_yscale() == "log"


def test_lr_panel_star_is_a_star_in_its_lines_colour():
    from matplotlib.markers import MarkerStyle

    rep = _sens_report()
    rep["tuned"]["lines"]["adam"]["best_lr"] = None  # only the last line (third colour) has a best LR
    rep["tuned"]["lines"]["lookahead(adam)"]["best_lr"] = 1e-3
    fig, ax = _axes()
    figures._lr_panel(ax, rep)
    star, = scatters(ax)
    assert tuple(star.get_offsets()[0]) == pytest.approx((1e-3 * 1.05, 0.22))
    assert tuple(star.get_facecolor()[0][:3]) == tuple(figures._colors(3)[2][:3])
    marker = MarkerStyle("*")
    assert np.allclose(star.get_paths()[0].vertices, marker.get_path().transformed(marker.get_transform()).vertices)
    figures._plt().close("all")


def test_signs_small_lrs_and_lists_in_the_sections():
    # Signed numbers keep their '+', LRs below 1e-4 their lower-case exponent, lists their separators.
    pt = {"lr": 5e-5, "arm": "adam", "mean": 0.2, "std": 0.01, "n": 3}
    got = rp._sensitivity({"sensitivity": {"lr_lines": {"adam": [pt]}, "lr_line_seeds": {"adam": [0]},
                                           "k_alpha": None}})
    assert got[6] == "| adam | 0 | 5e-05 | adam | 0.2000 +- 0.0100 | 3 |"
    rep = _trend_report()
    ln = rep["trend"]["lines"][0]
    ln.update(lr=5e-5, alpha=5e-5)
    ln["change"].update(ci_low=0.001, gap_shortest=0.01, gap_longest=0.006)
    got = rp._trend(rep)
    assert got[4] == "**Lookahead(adam) - adam at LR 5e-05** (k 5, alpha 5e-05), the reference's line"
    assert "95% CI [+0.0010, +0.0090]" in got[11] and "mean gap +0.0100 -> +0.0060:" in got[11]
    rh = _real_hands(rank_synthetic=[], rank_real=["adam", "la"])
    rh["real_hands"]["per_arm"]["adam"]["indoor"]["NME"] = summ(0.3, n=2)  # two seeds: mean +- std
    got = rp._real(rh)
    assert got[6].startswith("| adam | 0.3000 +- 0.0100 | 0.4000 |")
    assert got[9] == ("Rankings on the seeds all compared arms share (0, 1): synthetic final NME -; real photos (all) "
                      "adam < la; Kendall tau -0.50.")
    got = answer_md.families_section(_families(unknown=["y", "z"]))
    assert got[-2].endswith(" Machines not told apart (no fingerprint, no comparable untrained NME): y, z.")


def test_small_values_and_lists_in_the_answer_sections():
    ka = {"k_alpha_vs_key": {"key": "la", "lr": 5e-5, "k": 5, "alpha": 5e-5,
                             "pairs": [{"arm": "la_k10", "k": 10, "alpha": 5e-5, "comparison": comp()}]}}
    got = answer_md._k_alpha(ka)
    assert got[2].startswith("Final NME of each Lookahead arm at LR 5e-05 with another (k, alpha) minus la (k 5, "
                             "alpha 5e-05),")
    assert got[6].startswith("| la_k10 | 10 | 5e-05 | 3 |")
    tu = {"tuned": {"label": "x", "pairs": [], "lines": {
        "adam": {"planned_lrs": [5e-5, 1e-3], "measured_lrs": [5e-5, 1e-3], "seeds": [0], "best_lr": 5e-5,
                 "best_mean": 0.2, "best_at_edge": "lowest"}}}}
    assert answer_md._tuned(tu)[6] == ("| adam | 5e-05, 0.001 | 5e-05, 0.001 | 0 | 5e-05 | 0.2000 | yes, the lowest: "
                                       "the optimum may lie beyond |")
    # A point of one LR has no grid to be at the end of; a grid of two not flagged is "no".
    tu["tuned"]["lines"] = {"k10": {"planned_lrs": [1e-4], "measured_lrs": [1e-4], "seeds": [0], "best_lr": 1e-4,
                                    "best_mean": 0.2, "best_at_edge": None},
                            "two": {"planned_lrs": [1e-4, 2e-4], "measured_lrs": [1e-4, 2e-4], "seeds": [0],
                                    "best_lr": 1e-4, "best_mean": 0.2, "best_at_edge": None}}
    assert [row.rsplit("|", 2)[1] for row in answer_md._tuned(tu)[6:8]] == [" - ", " no "]
    et = _effective_time()
    et["effective_time"]["pairs"] = et["effective_time"]["pairs"][1:]
    et["effective_time"]["pairs"][0]["predicted_ratio"] = 5e-5
    assert answer_md._effective_time(et)[6].startswith("| la2 vs adam | 1..3 | 5e-05 | - |")


def test_protocol_and_effective_step_small_values():
    rep = _protocol_report(shared_overrides=["A=1"], command_line_overrides=["C=3", "D=4"])
    rep["floors"] = dict(FLOORS, learned_fraction=0.7)
    rep["arms"] = {"la": arm(lr=5e-5, k=0, alpha=5e-5)}
    del rep["arms"]["la"]["priority"]  # priority 0 unless given
    got = rp._protocol(rep)
    assert got[11] == "Shared overrides: `A=1`; command line: `C=3 D=4`"
    assert "An arm above 0.7 x the box-centre floor has not learned." in got[13]
    assert got[-2] == "| la | `hand_adam.yaml` | adam | 5e-05 | - | 5e-05 |  | 0,1 | 0 |"  # k 0: no k
    es = _effective_step()
    p = es["effective_step"]["pairs"][0]
    p.update(lr=5e-5, alpha=5e-5)
    p["equivalence"]["ci_low"] = 0.001
    row = answer_md._effective_step(es)[6]
    assert row.startswith("| la(2e-4) - adam(1e-4) | 5e-05 | 0.0001 | 5e-05 |")
    assert "| [+0.0010, +0.0020] |" in row


def test_same_lr_pairs_at_small_lrs():
    rep = _comparisons_report()
    rep["same_lr"]["alpha"] = 5e-5
    rep["same_lr"]["pairs"][0]["lr"] = 5e-5
    got = rp._comparisons(rep)
    assert got[-6].startswith("Final NME of each Lookahead arm (k 5, alpha 5e-05) minus")
    assert got[-2].startswith("| la - adam | adam | 5e-05 | 3 |")


def test_trend_lines_take_their_colours_and_small_lrs(saved):
    import matplotlib

    rep = _trend_fig_report()
    two = {"optimizer": "rms", "lr": 5e-5, "k": 5, "alpha": 5e-5, "change": {"trend": "holds"},
           "points": [_point(750, [0.01, 0.02]), _point(1500, [0.03, 0.01])]}
    two["points"][1]["comparison"]["ci_high"] = NAN
    rep["trend"]["lines"] = [rep["trend"]["lines"][0], two]  # two measured lengths are enough
    with matplotlib.rc_context({"font.size": 12}):
        assert figures.plot_trend(rep, "t.png")
    ax = saved[-1][0].axes[0]
    assert ax.title.get_fontsize() == 10
    first, second = ax.containers
    assert second.get_label() == ("Lookahead(rms) - rms, LR 5e-05, k 5 alpha 5e-05; change between learned lengths: "
                                  "holds")
    color = figures._colors(2)[1]
    assert second.lines[0].get_color() == color
    dots = [d for d in scatters(ax) if tuple(d.get_facecolor()[0][:3]) == tuple(color[:3])]
    assert len(dots) == 2  # each seed's differences of the second line, in its colour
    x = [1500 * 1.015]
    segs = [tuple(s[:, 1]) for s in second.lines[2][0].get_segments()]
    assert segs[1] == pytest.approx((0.01, 0.02))  # no finite upper bound: no bar above the mean
    assert list(second.lines[0].get_xdata())[1] == pytest.approx(x[0])


def test_slow_fast_band_takes_its_arms_colour():
    runs = [curve_run("lc", 0, [0.9, 0.5], NME_slow=[0.9, 0.5], NME_fast=[0.9, 0.6])]
    runs += [curve_run("la", s, [0.9, 0.5], NME_slow=[0.9, 0.5 + s / 10], NME_fast=[0.9, 0.6]) for s in range(2)]
    fig, ax = _axes()
    figures._slow_fast_panel(ax, {"runs": runs}, ["lc", "la"])  # the arm with bands second
    assert [tuple(b.get_facecolor()[0][:3]) for b in ax.collections] == [tuple(figures._colors(2)[1][:3])] * 2
    figures._plt().close("all")
