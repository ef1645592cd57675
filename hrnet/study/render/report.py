"""Write a study's report from the dict of ``hrnet.study.analyse.analysis.analyse``: ``report.json``,
``report.md`` (one function per section) and the figures of ``hrnet.study.render.figures``, into the
study folder (beside its ``runs/``).

Everything here reads the report dict only, so every number of the markdown and the figures is in
``report.json`` (per-seed values included) and anyone can recompute the statistics from it.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from hrnet.engine.progress import fmt_duration
from hrnet.runtime.checkpoint import write_json, write_text
from hrnet.study.analyse import stats
from hrnet.study.analyse.calibration import calibration_sentence
from hrnet.study.analyse.comparisons import COMPARED_METRICS
from hrnet.study.render.answer_md import answer_sections, families_section
from hrnet.study.render.figures import FIGURES
from hrnet.study.render.machines_md import machine_spread_section
from hrnet.study.render.md import COMP_HEAD, comp_cells, msd, seeds_text, table
from hrnet.study.analyse.verdict import fmt as _f, fmt_p, measured_range

__all__ = ["write_report", "render_markdown", "REPORT_JSON", "REPORT_MD"]

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
BEST_LABEL = "best NME (selected on the validation set: optimistic)"


# The shared markdown pieces (``md.py``), under the names this module has always used.
_msd, _table, _seeds, _comp_cells, _COMP_HEAD = msd, table, seeds_text, comp_cells, COMP_HEAD


def _header(report: Mapping[str, Any]) -> List[str]:
    st = report["study"]
    return [f"# Study `{st['name']}`", "",
            f"Generated {st['generated']} from `{st['file']}` into `{st['out_dir']}` ({st['paths']}). Regenerate with "
            f"`python tools/study.py {st['file']} --out {st['out_dir']} --report-only`; every number below is in "
            f"`report.json` (per seed).", "", "## Verdict", ""] + [f"- {s}" for s in report["verdict"]] + [""]


def _floor_rows(report: Mapping[str, Any]) -> List[List[str]]:
    fl = report["floors"]
    rows = []
    sets = [("validation set (synthetic)", fl.get("valid"))]
    sets += [(f"real: {k}", v) for k, v in fl.get("real", {}).items()]
    for name, v in sets:
        if v:
            pck = next((k for k in v["box_centre"] if k != "NME"), "PCK")
            rows.append([name, str(v["num_images"]), str(v["num_hands"]), _f(v["box_centre"]["NME"]),
                         _f(v["box_centre"][pck], ".3f"), _f(v["constant_layout"]["NME"]),
                         _f(fl["learned_fraction"] * v["box_centre"]["NME"])])
    return rows


def _protocol(report: Mapping[str, Any]) -> List[str]:
    st, fl = report["study"], report["floors"]
    md = ["## Protocol", ""] + ([st["description"], ""] if st["description"] else [])
    md += [f"Reference arm: **{st['reference']}**. Statistics: {st['statistics']}. Runs with the same seed share the "
           "initial weights, data order and augmentation. Only finished runs enter the statistics.", "",
           "What this study changes from the user's setting (configs/defaults.py and the six "
           "`experiments/hand_*.yaml`); `iterations`: optimizer steps per run, "
           f"{report['iterations']['formula']}:", ""]
    md += _table(["config key", "user's setting", "this study"],
                 [[f"`{r['key']}`", f"{r['user']}", f"**{r['study']}**" if r["scaled"] else f"{r['study']}"]
                  for r in report["scale"]])
    if st["shared_overrides"] or st["command_line_overrides"]:
        md += ["", f"Shared overrides: `{' '.join(st['shared_overrides'])}`"
               + (f"; command line: `{' '.join(st['command_line_overrides'])}`"
                  if st["command_line_overrides"] else "")]
    md += ["", "**No-learning floors** (predictions that never look at the image, scored by the project's NME): "
           "every joint at the box centre, and the one layout in box coordinates with the lowest NME on the "
           f"training annotations placed in each box. An arm above {fl.get('learned_fraction', 0.8):g} x the "
           "box-centre floor has not learned. Distinct hands: annotations with identical box and keypoints "
           f"counted once. Source: {fl.get('source', fl.get('note', '-'))}.", ""]
    rows = _floor_rows(report)
    md += _table(["set", "images", "distinct hands", "box-centre NME", "box-centre PCK", "constant-layout NME",
                  "not learned above"], rows) if rows else [fl.get("note", "-")]
    md += ["", calibration_sentence(report["calibration"]) + " (`calibration.png`: the reference's valid NME per "
           "epoch against the floors.)", "", "Arms:", ""]
    md += _table(["arm", "config", "optimizer", "LR", "k", "alpha", "arm overrides", "seeds", "priority"],
                 [[n, f"`{a['config']}`", a["family"] or "-", _f(a["lr"], "g"), _f(a["k"], "d") if a["k"] else "-",
                   _f(a["alpha"], "g"), f"`{' '.join(a['overrides'])}`" if a["overrides"] else "",
                   ",".join(map(str, a["seeds"])), str(a.get("priority", 0))
                   + "".join(f"; seed {k}: {v}" for k, v in (a.get("seed_priority") or {}).items())]
                  for n, a in report["arms"].items()])
    return md + [""] + _code_versions(report)


def _code_versions(report: Mapping[str, Any]) -> List[str]:
    """Which code trained the runs (``provenance``) and the comparisons whose runs came from several."""
    pv = report.get("provenance")
    if not pv:
        return []
    md = [f"**Code versions** ({pv['source']}):", ""]
    md += [f"- {v['label']}: {len(v['runs'])} run(s)" + (f" ({', '.join(v['runs'])})" if len(v["runs"]) <= 6 else "")
           for v in pv["versions"]] or ["- no run recorded yet"]
    if pv["runs_with_several"]:
        md += [f"- trained by several versions (resumed with other code): {', '.join(pv['runs_with_several'])}"]
    across = pv["comparisons_across_versions"]
    md += ["", (f"Comparisons whose runs came from different code versions ({len(across)}; in report.json: "
                "`code_versions_differ`): " + "; ".join(across) + ".") if across
           else "Every comparison pairs runs of one code version."]
    return md + [""]


def _machine_text(m: Optional[Mapping[str, Any]]) -> List[str]:
    """CPU model, torch threads and device of a run's ``machine`` record ("-" when not recorded)."""
    m = m or {}
    threads = m.get("threads")
    return [(m.get("cpu") or "-").replace("|", "/"), str(threads) if threads is not None else "-",
            m.get("device") or "-"]


def _runs(report: Mapping[str, Any]) -> List[str]:
    runs = report["runs"]
    counts: Dict[str, int] = {}
    for r in runs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    md = ["## Runs", "", ", ".join(f"{v} {k}" for k, v in counts.items()) + f" of {len(runs)} runs, in the "
          "plan's order (priority, seed, arm); folders `runs/<arm>_seed<s>/`. The machine each run trained on, as "
          "its metrics.json records it ('-': not recorded).", ""]
    cpus: Dict[str, int] = {}
    for r in runs:
        if r["status"] != "not run":
            cpu = ((r.get("machine") or {}).get("cpu") or "not recorded").replace("|", "/")
            cpus[cpu] = cpus.get(cpu, 0) + 1
    if cpus:
        md += ["CPU models: " + "; ".join(f"{c} ({n} run{'s' if n != 1 else ''})" for c, n in cpus.items()) + ".", ""]
    md += _table(["run", "status", "detail", "iterations", "final NME", "wall time", "CPU", "torch threads", "device"],
                 [[r["name"], r["status"], (r["reason"] or "").replace("|", "/"), _f(r["iterations"], ",d"),
                   _f(r["final_NME"]) if r["status"] == "finished" else "-", fmt_duration(r["wall_time_s"])]
                  + _machine_text(r.get("machine")) for r in runs])
    return md + [""]


def _learned(v: Optional[bool]) -> str:
    return {True: "yes", False: "**has not learned**"}.get(v, "-")


def _reach(e: Mapping[str, Any]) -> str:
    if not e["n"]:
        return "-"
    return f"{e['n_reached']}/{e['n']} reached; median " + (_f(e["median"], "g") if e["median"] is not None
                                                            else "not reached")


def _per_arm(report: Mapping[str, Any]) -> List[str]:
    arms, rk = report["arms"], report["ranking"]
    pck = next((r["pck_key"] for r in report["runs"]), "PCK")
    common = {o["arm"]: o["mean"] for o in rk["order"]}
    md = ["## Per arm", "", "Mean +- std [95% CI] over **all finished seeds of each arm** (seed sets may differ "
          "between arms); the column 'common seeds' is the mean over the seeds every ranked arm shares "
          f"({_seeds(rk['seeds'])}), the only one to set side by side.", ""]
    md += _table(["arm", "finished seeds", "iterations / run", "final NME (all seeds)", "final NME / box-centre floor",
                  "learned", f"final NME, common seeds ({_seeds(rk['seeds'])})", f"{pck} (all seeds)",
                  "AUC (all seeds)", "EPE px (all seeds)"],
                 [[n, ",".join(map(str, a["finished_seeds"])) or "-",
                   ",".join(f"{i:,}" for i in a["iterations"]) or "-",
                   _msd(a["final_NME"]), _f(a["final_NME_over_floor"], ".2f"), _learned(a["learned"]),
                   _f(common.get(n)), _msd(a["PCK"]), _msd(a["AUC"]), _msd(a["EPE"], ".2f")] for n, a in arms.items()])
    levels = report["study"]["nme_levels"]
    md += ["", f"Training course (all finished seeds). Epochs to reach a level: the seeds that reached it first, then "
           "the median epoch with a seed that never reached it counted as infinitely slow ('not reached' when the "
           f"median seed did not). The {BEST_LABEL} is the minimum over every validation of the same images: biased "
           "low, no verdict is drawn from it.", ""]
    md += _table(["arm", BEST_LABEL] + [f"epochs to NME <= {lv:g}" for lv in levels] + ["wall time / run",
                                                                                       "start-up share"],
                 [[n, _msd(a["best_NME"])] + [_reach(a["epochs_to_reach"][f"{lv:g}"]) for lv in levels]
                  + [fmt_duration(a["wall_time_s"]["mean"]),
                     f"{100 * a['overhead_fraction']['mean']:.1f}%" if a["overhead_fraction"]["n"] else "-"]
                  for n, a in arms.items()])
    return md + [""]


def _comparisons(report: Mapping[str, Any]) -> List[str]:
    ref = report["study"]["reference"]
    variants = report.get("length_variants", {})
    md = [f"## Paired comparisons with the reference ({ref})", "",
          f"Per seed `arm - {ref}` on the seeds both finished; mean, unadjusted 95% CI, paired t-test p and the "
          f"Holm-adjusted p over the family, one per metric: the user's arms (their experiment yaml as it is) and "
          "the study's added arms (with overrides) are two families, each of its planned size m (see 'Families of "
          f"comparisons'). Verdict from the Holm p (< 0.05), "
          f"none below {stats.MIN_PAIRS} pairs. NME and loss: lower is better; PCK and AUC: higher is better."
          + (" Arms at another training length than the reference's (" + ", ".join(variants) + ") enter the "
             "trend with training length only, not these families, the same-LR pairs, the ranking or the "
             "sensitivity." if variants else ""), ""]
    for key, title, lower in COMPARED_METRICS:
        md += [f"**{title}** ({'lower' if lower else 'higher'} is better)", ""]
        md += _table(["arm"] + _COMP_HEAD + ["family (planned m)"],
                     [[n] + _comp_cells(c[key]) + [_family_cell(c[key])] for n, c in report["comparisons"].items()])
        md += [""]
    sl = report["same_lr"]
    md += ["## Same-LR pairs: Lookahead(X) - X", "",
           f"Final NME of each Lookahead arm (k {sl['k']}, alpha {_f(sl['alpha'], 'g')}) minus the arm of its inner "
           "optimizer at the same LR (all other settings equal), paired by seed; one Holm family of the planned pairs. "
           "Negative: Lookahead is lower (better). `curves.png` draws each pair's difference per epoch.", ""]
    if sl["pairs"]:
        md += _table(["pair", "optimizer", "LR"] + _COMP_HEAD + ["family (planned m)"],
                     [[p["key"], p["optimizer"], _f(p["lr"], "g")] + _comp_cells(p["comparison"])
                      + [_family_cell(p["comparison"])] for p in sl["pairs"]])
    else:
        md += ["No LR at which both an optimizer and Lookahead of it ran."]
    return md + [""]


def _family_cell(c: Mapping[str, Any]) -> str:
    """``the user's arms (m 5)``, ``provisional`` when its family has members not yet measured."""
    return (f"{c.get('family', '-')} (m {c['family_size']})" if c.get("family") else f"m {c['family_size']}") + (
        ", provisional" if c.get("provisional") else "")


def _lookahead(report: Mapping[str, Any]) -> List[str]:
    md = ["## Lookahead: slow vs fast weights", ""]
    las = report["lookahead"]
    if not las:
        return md + ["No finished Lookahead run.", ""]
    ci = (lambda c: f"{_f(c['mean_diff'], '+.4f')} [{_f(c['ci_low'], '+.4f')}, {_f(c['ci_high'], '+.4f')}]"
          + (f", Holm p {fmt_p(c['p_adjusted'])}: {c['verdict']}" if c["verdict"] else ", no verdict"))
    md += _table(["arm", "validated", "final NME slow", "final NME fast", "slow - fast, final",
                  "slow - fast, best (optimistic)", "slow - fast, mean over epochs", "epochs where they differ"],
                 [[n, la["eval_weights"] or "-", _msd(la["slow"]), _msd(la["fast"])]
                  + ([ci(la["slow_vs_fast"]), ci(la["best_slow_vs_fast"]), ci(la["epoch_mean_slow_vs_fast"]),
                      ", ".join(f"seed {k}: {v}" for k, v in la["epochs_where_they_differ"].items())]
                     if la["logged"] else ["not logged", "-", "-", "-"]) for n, la in las.items()])
    md += ["", "Paired by seed, mean [95% CI]. At a validation after a multiple of k iterations the fast weights have "
           "just been reset to the slow ones and both coincide (often the final one), hence the mean over epochs."]
    return md + [""]


def _sensitivity(report: Mapping[str, Any]) -> List[str]:
    sens = report["sensitivity"]
    md = ["## Sensitivity", "", "Each line (and the grid) on the seeds all its arms share.", ""]
    if sens["lr_lines"]:
        md += _table(["optimizer", "seeds", "LR", "arm", "final NME", "n"],
                     [[fam, _seeds(sens["lr_line_seeds"][fam]), _f(p["lr"], "g"), p["arm"],
                       f"{_f(p['mean'])} +- {_f(p['std'])}", str(p["n"])]
                      for fam, pts in sens["lr_lines"].items() for p in pts])
    grid = sens["k_alpha"]
    if grid:
        md += ["", f"Lookahead k x alpha at LR {grid['lr']:g}, seeds {_seeds(grid['seeds'])} "
               "(mean +- std final NME, n):", ""]
        md += _table(["k \\ alpha"] + [f"{a:g}" for a in grid["alpha"]],
                     [[str(k)] + [(lambda c: f"{_f(c['mean'])} +- {_f(c['std'])} ({c['n']})" if c else "-")(
                         grid["cells"].get(f"{k},{a:g}")) for a in grid["alpha"]] for k in grid["k"]])
    return md + [""]


def _real(report: Mapping[str, Any]) -> List[str]:
    rh = report["real_hands"]
    md = ["## Real hand photos", ""]
    if not rh.get("available"):
        return md + [f"Not evaluated: {rh.get('note')}" + (f" (`{rh['folder']}`)." if rh.get("folder") else "."), ""]
    ev = rh.get("evaluated") or {}
    sets, ref = rh["sets"], report["study"]["reference"]
    size = {s: f"{v['num_images'] or '-'} img, {v['num_hands'] or '-'} hands" for s, v in rh["set_sizes"].items()}
    used = "; ".join(f"{w} weights: {', '.join(arms)}" for w, arms in ev.get("weights", {}).items()) or "-"
    md += [f"Each finished run's final model (`{ev.get('checkpoint')}`, the weights its final validation used, as "
           f"the synthetic final NME; {used}) on the photos in "
           f"`{rh['folder']}`" + (f" ({rh['source']})" if rh.get("source") else "") + ", at its own input size; "
           f"mean +- std over all finished seeds. Paired with {ref}: one Holm "
           "family; 'learned' against the pooled box-centre floor.", ""]
    sd = (lambda s: f"{_f(s['mean'])} +- {_f(s['std'])}" if s["n"] > 1 else _f(s["mean"]))
    md += _table(["arm"] + [f"{s} NME ({size[s]})" for s in sets] + ["all NME / floor", "learned",
                                                                     f"all {rh['pck_key']}"]
                 + [f"all NME - {ref}: {h}" for h in _COMP_HEAD],
                 [[n] + [sd(v[s]["NME"]) for s in sets] + [_f(v["NME_over_floor"], ".2f"), _learned(v["learned"]),
                                                           sd(v["all"]["PCK"])]
                  + (_comp_cells(rh["vs_reference"][n]) if n in rh["vs_reference"] else ["(reference)"] + [""] * 6)
                  for n, v in rh["per_arm"].items()])
    md += ["", f"Rankings on the seeds all compared arms share ({_seeds(rh['seeds'])}): synthetic final NME "
           f"{' < '.join(rh['rank_synthetic']) or '-'}; real photos (all) {' < '.join(rh['rank_real']) or '-'}; "
           f"Kendall tau {_f(rh['kendall_tau'], '+.2f')}."]
    if rh["errors"]:
        md += ["", "Not evaluated: " + "; ".join(f"{k}: {v}" for k, v in rh["errors"].items())]
    return md + [""]


def _trend(report: Mapping[str, Any]) -> List[str]:
    tr = report["trend"]
    md = ["## Training length: Lookahead(X) - X against iterations", ""]
    if not tr["lines"]:
        return md + ["No pair Lookahead(X), X measured at two training lengths or more (arms that differ only in "
                     "`TRAIN.END_EPOCH`, with `TRAIN.LR_STEP` at the same fractions of it).", ""]
    md += [f"Final NME of Lookahead(X) minus X at each training length, paired by seed; one Holm family over the "
           f"{tr['family_size']} planned points. The change: per seed, the gap at the longest minus the gap at the "
           "shortest of the lengths where both arms learned, over the seeds all four arms finished (Holm over the "
           "planned lines); 'grows' / 'shrinks' compare the sizes of the two mean gaps on those seeds, 'changes "
           "sign' says so, and a change whose 95% CI is wider than the gap at the shorter length is 'not measurable "
           f"at this n'. The user's run: {tr['user_iterations']:,} iterations.", ""]
    for ln in tr["lines"]:
        md += [f"**Lookahead({ln['optimizer']}) - {ln['optimizer']} at LR {_f(ln['lr'], 'g')}** (k {ln['k']}, alpha "
               f"{_f(ln['alpha'], 'g')})" + (", the reference's line" if ln["reference_line"] else ""), ""]
        md += _table(["pair", "epochs (LR steps)", "iterations / run", "both learned"] + _COMP_HEAD,
                     [[f"{p['lookahead_arm']} - {p['base_arm']}",
                       f"{p['epochs']} ({', '.join(map(str, p['lr_step']))})", _f(p["iterations"], ",d"),
                       "yes" if p.get("both_learned", True) else "no"] + _comp_cells(p["comparison"])
                      for p in ln["points"]])
        c = ln["change"]
        md += ["", (f"Change of the gap from {c['shortest']} to {c['longest']} (seeds {_seeds(c['seeds'])}): "
                    f"{_f(c['mean_diff'], '+.4f')}, 95% CI [{_f(c['ci_low'], '+.4f')}, {_f(c['ci_high'], '+.4f')}], "
                    f"p {fmt_p(c['p_value'])}, Holm p {fmt_p(c['p_adjusted'])}; mean gap "
                    f"{_f(c['gap_shortest'], '+.4f')} -> {_f(c['gap_longest'], '+.4f')}: **{c['trend']}**"
                    + (f" ({c['direction']})" if c.get("direction") else "") + ". " if c["shortest"] else
                    f"**{c['trend']}**. ") + measured_range(ln, tr["user_iterations"]), ""]
    return md


def render_markdown(report: Mapping[str, Any], figures: Sequence[str]) -> str:
    """``report.md``: verdict, protocol (scale, floors, calibration, arms), runs, per arm, comparisons
    with the reference and same-LR pairs, the trend with training length, Lookahead, sensitivity,
    real hands; ``figures`` are the file names written beside it."""
    md = (_header(report) + _protocol(report) + _runs(report) + _per_arm(report) + _comparisons(report)
          + answer_sections(report) + _trend(report) + _lookahead(report) + _sensitivity(report) + _real(report)
          + families_section(report) + machine_spread_section(report))
    if figures:
        md += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
        md += ["`curves.png`: mean over seeds (line) and min-max over seeds (band), raw values, no smoothing; on the "
               "NME panel (from epoch 1) the no-learning floors and the 'has not learned' threshold; the fourth "
               "panel: Lookahead(X) - X valid NME per epoch for each same-LR pair, mean with its 95% t interval over "
               "seeds (band) and each seed (faint). `calibration.png`: the reference's valid NME per epoch (thin: "
               "each seed; thick: the mean), measured values, against the floors. `trend.png`: Lookahead(X) - X "
               "against iterations per run (log scale), mean with its unadjusted 95% CI and each seed's difference "
               "(faint), with the user's run marked; hollow: a length where an arm has not learned; no line is drawn "
               "beyond the lengths measured. `sensitivity.png`: final NME against LR per optimizer (the reference's "
               "optimizer and Lookahead thick) with the floors; a star marks a line's best LR. `lookahead.png`: the "
               "effective time tau(t) (each seed thin, the mean thick, the alpha x lr prediction dashed); the slow "
               "and fast weights where they differ at some validation (arms where every validation followed a sync "
               "are named in the title, not drawn)."]
    return "\n".join(md) + "\n"


def write_report(report: Mapping[str, Any], out_dir: str) -> List[str]:
    """Write ``report.json``, the figures that have data and ``report.md`` into ``out_dir``; their paths."""
    os.makedirs(out_dir, exist_ok=True)
    figures = []
    for name, draw in FIGURES:
        path = os.path.join(out_dir, name)
        if draw(report, path):
            figures.append(name)
        elif os.path.exists(path):
            os.remove(path)  # a figure of an earlier report that this one has no data for
    write_json(report, os.path.join(out_dir, REPORT_JSON))
    write_text(render_markdown(report, figures), os.path.join(out_dir, REPORT_MD))
    return [os.path.join(out_dir, n) for n in (REPORT_JSON, REPORT_MD, *figures)]
