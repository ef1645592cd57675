"""Write a study's report from the dict of ``hrnet.study.analysis.analyse``: ``report.json``, ``report.md``
and the figures ``curves.png``, ``sensitivity.png``, ``lookahead.png``.

Everything here reads the report dict only, so every number of the markdown and the figures is in
``report.json`` (per-seed values included) and anyone can recompute the statistics from it.
"""
from __future__ import annotations

import math
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from hrnet.runtime.checkpoint import write_json

__all__ = ["write_report", "render_markdown", "plot_curves", "plot_sensitivity", "plot_lookahead"]

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
CURVES_PNG = "curves.png"
SENSITIVITY_PNG = "sensitivity.png"
LOOKAHEAD_PNG = "lookahead.png"


def _f(v: Optional[float], spec: str = ".4f") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def _msd(s: Mapping[str, Any], spec: str = ".4f") -> str:
    """``mean +- std [ci_low, ci_high]`` of a ``stats.Summary`` dict."""
    if not s or not s.get("n"):
        return "-"
    text = _f(s["mean"], spec)
    if s["n"] > 1:
        text += f" +- {_f(s['std'], spec)} [{_f(s['ci_low'], spec)}, {_f(s['ci_high'], spec)}]"
    return text


def _dur(s: Optional[float]) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def render_markdown(report: Mapping[str, Any], figures: Sequence[str]) -> str:
    """``report.md``: protocol, runs, per-arm table, paired comparisons, Lookahead, sensitivity,
    real hands, verdict; ``figures`` are the file names written beside it."""
    st, arms, runs = report["study"], report["arms"], report["runs"]
    ref = st["reference"]
    md: List[str] = [f"# Study `{st['name']}`", "",
                     f"Generated {st['generated']} from `{st['file']}` into `{st['out_dir']}`. Regenerate with "
                     f"`python tools/study.py {st['file']} --out {st['out_dir']} --report-only`; every number below "
                     f"is in `report.json` (per seed).", ""]
    md += ["## Verdict", ""] + [f"- {s}" for s in report["verdict"]] + [""]

    md += ["## Protocol", ""]
    if st["description"]:
        md += [st["description"], ""]
    md += [f"Reference arm: **{ref}**. Statistics: {st['statistics']}. Runs with the same seed share the "
           f"initial weights, data order and augmentation. Only finished runs enter the statistics.", ""]
    md += ["What this study changes from the user's setting (configs/defaults.py and the six "
           "`experiments/hand_*.yaml`):", ""]
    md += _table(["config key", "user's setting", "this study"],
                 [[f"`{r['key']}`", f"{r['user']}", f"**{r['study']}**" if r["scaled"] else f"{r['study']}"]
                  for r in report["scale"]])
    if st["shared_overrides"] or st["command_line_overrides"]:
        md += ["", f"Shared overrides: `{' '.join(st['shared_overrides'])}`"
               + (f"; command line: `{' '.join(st['command_line_overrides'])}`" if st["command_line_overrides"] else "")]
    md += ["", "Arms:", ""]
    md += _table(["arm", "config", "optimizer", "LR", "k", "alpha", "arm overrides", "seeds"],
                 [[n, f"`{a['config']}`", a["family"] or "-", _f(a["lr"], "g"), _f(a["k"], "d") if a["k"] else "-",
                   _f(a["alpha"], "g"), f"`{' '.join(a['overrides'])}`" if a["overrides"] else "",
                   ",".join(map(str, a["seeds"]))] for n, a in arms.items()])

    md += ["", "## Runs", ""]
    counts: Dict[str, int] = {}
    for r in runs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    md += [", ".join(f"{v} {k}" for k, v in counts.items()) + f" of {len(runs)} runs.", ""]
    trouble = [r for r in runs if r["status"] != "finished"]
    if trouble:
        md += _table(["run", "status", "detail"], [[r["name"], r["status"], (r["reason"] or "").replace("|", "/")]
                                                   for r in trouble]) + [""]

    pck = next((r["pck_key"] for r in runs), "PCK")
    levels = st["nme_levels"]
    md += ["## Per arm (mean +- std [95% CI] over finished seeds)", ""]
    head = ["arm", "finished", "final NME", "best NME", pck, "AUC", "EPE (px)"] + \
        [f"epochs to NME <= {lv:g}" for lv in levels] + ["wall time / run", "start-up share"]
    rows = []
    for n, a in arms.items():
        row = [n, f"{a['n_finished']}/{a['n_runs']}", _msd(a["final_NME"]), _msd(a["best_NME"]), _msd(a["PCK"]),
               _msd(a["AUC"]), _msd(a["EPE"], ".2f")]
        for lv in levels:
            e = a["epochs_to_reach"][f"{lv:g}"]
            row.append(f"{_f(e['mean'], '.1f')} ({e['n_reached']}/{e['n']})" if e["n"] else "-")
        ov = a["overhead_fraction"]
        row += [_dur(a["wall_time_s"]["mean"]), f"{100 * ov['mean']:.1f}%" if ov["n"] else "-"]
        rows.append(row)
    md += _table(head, rows)
    md += ["", "Epochs to reach a level: mean over the seeds that reached it (reached/finished). Wall time: the "
           "trainer's `wall_time_s`; start-up share: the part of the training process's wall time outside the "
           "training epochs (process start, data set, model, untrained validation), runs trained in one session.", ""]

    md += [f"## Paired comparisons with the reference ({ref})", "",
           "Per seed `arm - reference` (negative: the arm is lower, i.e. better); mean [95% CI]; seeds favouring "
           "each side.", ""]
    from hrnet.study.analysis import COMPARED_METRICS

    for key, title in COMPARED_METRICS:
        md += [f"**{title}**", ""]
        md += _table(["arm", "pairs", "mean diff", "95% CI", "seeds arm better / ref better / tie", "verdict"],
                     [[n, str(c[key]["n"]), _f(c[key]["mean_diff"], "+.4f"),
                       f"[{_f(c[key]['ci_low'], '+.4f')}, {_f(c[key]['ci_high'], '+.4f')}]",
                       f"{c[key]['n_arm_better']} / {c[key]['n_ref_better']} / {c[key]['n_ties']}", c[key]["verdict"]]
                      for n, c in report["comparisons"].items()])
        md += [""]

    md += ["## Lookahead: slow vs fast weights", ""]
    if report["lookahead"]:
        ci = (lambda c: f"{_f(c['mean_diff'], '+.4f')} [{_f(c['ci_low'], '+.4f')}, {_f(c['ci_high'], '+.4f')}] "
              f"({c['verdict'] if c['verdict'] != 'no detectable difference at this n' else 'no detectable difference'})")
        md += _table(["arm", "validated", "final NME slow", "final NME fast", "slow - fast, final",
                      "slow - fast, best", "slow - fast, mean over epochs", "epochs where they differ"],
                     [[n, la["eval_weights"] or "-", _msd(la["slow"]), _msd(la["fast"])]
                      + ([ci(la["slow_vs_fast"]), ci(la["best_slow_vs_fast"]), ci(la["epoch_mean_slow_vs_fast"]),
                          ", ".join(f"seed {k}: {v}" for k, v in la["epochs_where_they_differ"].items())]
                         if la["logged"] else ["not logged", "-", "-", "-"])
                      for n, la in report["lookahead"].items()])
        md += ["", "Paired by seed, mean [95% CI]. At a validation after a multiple of k iterations the fast weights "
               "have just been reset to the slow ones and both coincide (always the final one after 30 epochs with "
               "k 5 or 10), hence the best and the mean over epochs."]
        if not any(la["logged"] for la in report["lookahead"].values()):
            md += ["", "These runs' `metrics.json` history has no `NME_slow` / `NME_fast` (a trainer that logs both "
                   "is needed for this table)."]
    else:
        md += ["No finished Lookahead run."]
    md += [""]

    sens = report["sensitivity"]
    md += ["## Sensitivity", ""]
    if sens["lr_lines"]:
        md += _table(["optimizer", "LR", "arm", "final NME", "n"],
                     [[fam, _f(p["lr"], "g"), p["arm"], f"{_f(p['mean'])} +- {_f(p['std'])}", str(p["n"])]
                      for fam, pts in sens["lr_lines"].items() for p in pts])
    grid = sens["k_alpha"]
    if grid:
        md += ["", f"Lookahead k x alpha at LR {grid['lr']:g} (mean +- std final NME, n):", ""]
        md += _table(["k \\ alpha"] + [f"{a:g}" for a in grid["alpha"]],
                     [[str(k)] + [(lambda c: f"{_f(c['mean'])} +- {_f(c['std'])} ({c['n']})" if c else "-")(
                         grid["cells"].get(f"{k},{a:g}")) for a in grid["alpha"]] for k in grid["k"]])
    md += [""]

    rh = report["real_hands"]
    md += ["## Real hand photos", ""]
    if rh.get("available"):
        sets = rh["sets"]
        md += [f"Each finished run's `model_best.pth` on the real photos in `{rh['folder']}` (a model trained on "
               f"synthetic hands, evaluated at its own input size; mean +- std over seeds):", ""]
        sd = (lambda s: f"{_f(s['mean'])} +- {_f(s['std'])}" if s["n"] > 1 else _f(s["mean"]))
        ref = report["study"]["reference"]
        md += _table(["arm"] + [f"{s} NME ({rh['per_arm'][ref][s]['num_images'] or '-'} img)" for s in sets]
                     + [f"all {rh['pck_key']}", f"all NME - {ref} [95% CI], paired", "verdict"],
                     [[n] + [sd(v[s]["NME"]) for s in sets] + [sd(v["all"]["PCK"])]
                      + ([f"{_f(c['mean_diff'], '+.4f')} [{_f(c['ci_low'], '+.4f')}, {_f(c['ci_high'], '+.4f')}]",
                          c["verdict"]] if (c := rh["vs_reference"].get(n)) else ["(reference)", ""])
                      for n, v in rh["per_arm"].items()])
        md += ["", f"Ranking, synthetic final NME: {' < '.join(rh['rank_synthetic']) or '-'}; real photos (all): "
               f"{' < '.join(rh['rank_real']) or '-'}; Kendall tau {_f(rh['kendall_tau'], '+.2f')}."]
        if rh["errors"]:
            md += ["", "Not evaluated: " + "; ".join(f"{k}: {v}" for k, v in rh["errors"].items())]
    else:
        md += [f"Not evaluated: {rh.get('note')} ({rh.get('folder')})."]
    md += [""]
    if figures:
        md += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
        md += ["`curves.png`: mean over seeds (line) and min-max over seeds (band), raw values, no smoothing."]
    return "\n".join(md) + "\n"


# ---------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(n: int) -> List[Any]:
    plt = _plt()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _stack(runs: Sequence[Mapping[str, Any]], key: str):
    """(epochs, (n_runs, n_epochs) values) over the epochs every run has a finite value of ``key``."""
    series = [dict(zip(r["curves"]["epoch"], r["curves"][key])) for r in runs]
    series = [{e: v for e, v in s.items() if v is not None} for s in series]
    series = [s for s in series if s]
    if not series:
        return None
    common = sorted(set.intersection(*(set(s) for s in series)))
    if not common:
        return None
    return np.array(common), np.array([[s[e] for e in common] for s in series], dtype=np.float64)


def plot_curves(report: Mapping[str, Any], path: str) -> bool:
    """Train loss, valid loss, valid NME per arm against epoch: mean line, min-max band over seeds."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    arms = list(report["arms"])
    done = {a: [r for r in report["runs"] if r["arm"] == a and r["status"] == "finished"] for a in arms}
    if not any(done.values()):
        return False
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    for color, arm in zip(_colors(len(arms)), arms):
        for ax, key in zip(axes, ("train_loss", "valid_loss", "NME")):
            st = _stack(done[arm], key)
            if st is None:
                continue
            ep, vals = st
            ax.plot(ep, vals.mean(0), color=color, linewidth=1.6, label=f"{arm} (n={len(vals)})")
            if len(vals) > 1:
                ax.fill_between(ep, vals.min(0), vals.max(0), color=color, alpha=0.15, linewidth=0)
    for ax, title in zip(axes, ("train loss", "valid loss", "valid NME")):
        ax.set_title(title)
        ax.set_xlabel("epoch (0 = untrained)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if "loss" in title:
            ax.set_yscale("log")
    axes[2].legend(fontsize=7, loc="upper right", ncol=1 if len(arms) <= 8 else 2)
    fig.suptitle(f"study {report['study']['name']}: mean over seeds (line), min-max over seeds (band); raw values")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_sensitivity(report: Mapping[str, Any], path: str) -> bool:
    """Final NME vs LR (log x) per optimizer with 95% CI error bars (std where n < 2); the k x alpha grid."""
    sens = report["sensitivity"]
    lines = {fam: pts for fam, pts in sens["lr_lines"].items()}
    grid = sens["k_alpha"]
    if not any(len(p) >= 2 for p in lines.values()) and not grid:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, 2 if grid else 1, figsize=(14 if grid else 8, 5.5), squeeze=False)
    ax = axes[0][0]
    for color, (fam, pts) in zip(_colors(len(lines)), lines.items()):
        lr = np.array([p["lr"] for p in pts])
        mean = np.array([p["mean"] for p in pts])
        lo = np.array([p["mean"] - p["ci_low"] if p["ci_low"] is not None and math.isfinite(p["ci_low"]) else 0.0
                       for p in pts])
        hi = np.array([p["ci_high"] - p["mean"] if p["ci_high"] is not None and math.isfinite(p["ci_high"]) else 0.0
                       for p in pts])
        ax.errorbar(lr, mean, yerr=[lo, hi], color=color, marker="o", capsize=4, linewidth=1.5, label=fam)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final valid NME (mean, 95% CI over seeds)")
    ax.set_title("LR sensitivity")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if grid:
        ax2 = axes[0][1]
        mat = np.full((len(grid["k"]), len(grid["alpha"])), np.nan)
        for i, k in enumerate(grid["k"]):
            for j, a in enumerate(grid["alpha"]):
                c = grid["cells"].get(f"{k},{a:g}")
                if c and c["mean"] is not None:
                    mat[i, j] = c["mean"]
        im = ax2.imshow(mat, cmap="viridis_r", aspect="auto")
        for i, k in enumerate(grid["k"]):
            for j, a in enumerate(grid["alpha"]):
                c = grid["cells"].get(f"{k},{a:g}")
                if c:
                    ax2.text(j, i, f"{_f(c['mean'])}\n+- {_f(c['std'])} (n={c['n']})", ha="center", va="center",
                             fontsize=9, color="white" if np.isfinite(mat[i, j]) and mat[i, j] > np.nanmean(mat)
                             else "black")
        ax2.set_xticks(range(len(grid["alpha"])), [f"{a:g}" for a in grid["alpha"]])
        ax2.set_yticks(range(len(grid["k"])), [str(k) for k in grid["k"]])
        ax2.set_xlabel("alpha")
        ax2.set_ylabel("k")
        ax2.set_title(f"Lookahead final NME, LR {grid['lr']:g} (lower is better)")
        fig.colorbar(im, ax=ax2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_lookahead(report: Mapping[str, Any], path: str) -> bool:
    """Valid NME of the slow (solid) and fast (dashed) weights per Lookahead arm, mean over seeds."""
    logged = [n for n, la in report["lookahead"].items() if la["logged"]]
    if not logged:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for color, arm in zip(_colors(len(logged)), logged):
        runs = [r for r in report["runs"] if r["arm"] == arm and r["status"] == "finished"]
        for key, style in (("NME_slow", "-"), ("NME_fast", "--")):
            st = _stack(runs, key)
            if st is None:
                continue
            ep, vals = st
            ax.plot(ep, vals.mean(0), style, color=color, linewidth=1.6,
                    label=f"{arm} {key.split('_')[1]} (n={len(vals)})")
            if len(vals) > 1:
                ax.fill_between(ep, vals.min(0), vals.max(0), color=color, alpha=0.1, linewidth=0)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (0 = untrained)")
    ax.set_ylabel("valid NME")
    ax.set_title("Lookahead: slow (solid) vs fast (dashed) weights; band: min-max over seeds")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_report(report: Mapping[str, Any], out_dir: str) -> List[str]:
    """Write ``report.json``, the figures that have data and ``report.md`` into ``out_dir``; their paths."""
    os.makedirs(out_dir, exist_ok=True)
    figures = []
    for name, draw in ((CURVES_PNG, plot_curves), (SENSITIVITY_PNG, plot_sensitivity), (LOOKAHEAD_PNG, plot_lookahead)):
        path = os.path.join(out_dir, name)
        if draw(report, path):
            figures.append(name)
        elif os.path.exists(path):
            os.remove(path)  # a figure of an earlier report that this one has no data for
    write_json(report, os.path.join(out_dir, REPORT_JSON))
    with open(os.path.join(out_dir, REPORT_MD), "w", encoding="utf-8") as f:
        f.write(render_markdown(report, figures))
    return [os.path.join(out_dir, n) for n in (REPORT_JSON, REPORT_MD, *figures)]
