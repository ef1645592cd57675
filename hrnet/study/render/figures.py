"""The figures of a study report, drawn from the report dict only: ``curves.png`` (with the
no-learning floors on the NME panel), ``calibration.png`` (the reference's NME against the floors),
``trend.png`` (Lookahead(X) - X against iterations), ``sensitivity.png`` (on common seeds),
``lookahead.png``. Measured values only: no smoothing, no line beyond the measured points."""
from __future__ import annotations

import math
import textwrap
from typing import Any, List, Mapping, Sequence

import numpy as np

from hrnet.study.analyse import stats
from hrnet.study.analyse.verdict import fmt
from hrnet.study.render.answer_figures import effective_time_panel, gap_panel

__all__ = ["plot_curves", "plot_calibration", "plot_trend", "plot_sensitivity", "plot_lookahead", "FIGURES"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(n: int) -> List[Any]:
    """``n`` colours: tab10 up to ten, then tab20 and tab20b, distinct up to 40 (then they repeat)."""
    plt = _plt()
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    pool = [plt.get_cmap(name)(i) for name in ("tab20", "tab20b") for i in range(20)]
    return [pool[i % len(pool)] for i in range(n)]


def _stack(runs: Sequence[Mapping[str, Any]], key: str):
    """(epochs, (n_runs, n_epochs) values) over the epochs every run has a finite value of ``key``."""
    series = [{e: v for e, v in zip(r["curves"]["epoch"], r["curves"][key]) if v is not None} for r in runs]
    series = [s for s in series if s]
    if not series:
        return None
    common = sorted(set.intersection(*(set(s) for s in series)))
    if not common:
        return None
    return np.array(common), np.array([[s[e] for e in common] for s in series], dtype=np.float64)


def _floor_lines(ax, report: Mapping[str, Any]) -> None:
    """The box-centre floor, the constant-layout floor and the 'has not learned' threshold."""
    fl = report.get("floors", {})
    if "valid" not in fl:
        return
    box = fl["valid"]["box_centre"]["NME"]
    ax.axhline(box, color="black", linestyle="-", linewidth=1.2, label=f"floor: box centre ({box:.3f})")
    ax.axhline(fl["valid"]["constant_layout"]["NME"], color="gray", linestyle=":", linewidth=1.2,
               label=f"floor: constant layout ({fl['valid']['constant_layout']['NME']:.3f})")
    ax.axhline(fl["learned_fraction"] * box, color="black", linestyle="--", linewidth=0.8,
               label=f"{fl['learned_fraction']:g} x box centre: above it, not learned")


def _nme_limits(ax, done: Mapping[str, Sequence[Mapping[str, Any]]], report: Mapping[str, Any]) -> None:
    """The NME panel from epoch 1 on: the untrained epoch 0 (far above) would flatten every gap."""
    ends = [v for runs in done.values() if (st := _stack(runs, "NME")) is not None
            for v in (st[1].mean(0)[st[0] >= 1].tolist() or [])]
    if not ends:
        return
    box = report.get("floors", {}).get("valid", {}).get("box_centre", {}).get("NME") or max(ends)
    finals = [st[1].mean(0)[-1] for runs in done.values() if (st := _stack(runs, "NME")) is not None]
    ax.set_ylim(0.97 * min(ends), 1.08 * max(finals + [box]))
    ax.set_title("valid NME (epoch 0, untrained, and early values above the top are off the axis)")


def plot_curves(report: Mapping[str, Any], path: str) -> bool:
    """Train loss, valid loss, valid NME per arm against epoch: mean line, min-max band over seeds;
    the no-learning floors on the NME panel; and Lookahead(X) - X per epoch for the same-LR pairs
    (``answer_figures.gap_panel``)."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    arms = list(report["arms"])
    done = {a: [r for r in report["runs"] if r["arm"] == a and r["status"] == "finished"] for a in arms}
    if not any(done.values()):
        return False
    fig, grid = plt.subplots(2, 2, figsize=(16, 11))
    axes = list(grid.flat)
    for color, arm in zip(_colors(len(arms)), arms):
        for ax, key in zip(axes, ("train_loss", "valid_loss", "NME")):
            st = _stack(done[arm], key)
            if st is None:
                continue
            ep, vals = st
            ax.plot(ep, vals.mean(0), color=color, linewidth=1.6, label=f"{arm} (n={len(vals)})")
            if len(vals) > 1:
                ax.fill_between(ep, vals.min(0), vals.max(0), color=color, alpha=0.15, linewidth=0)
    _floor_lines(axes[2], report)
    for ax, title in zip(axes, ("train loss", "valid loss", "valid NME")):
        ax.set_title(title)
        ax.set_xlabel("epoch (0 = untrained)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if "loss" in title:
            ax.set_yscale("log")
    _nme_limits(axes[2], done, report)
    where = axes[0] if axes[0].get_legend_handles_labels()[0] else axes[2]  # the arms, where they fit
    where.legend(fontsize=7, loc="upper right", ncol=1 if len(arms) <= 8 else 2)
    handles, labels = axes[2].get_legend_handles_labels()
    floors = [(h, t) for h, t in zip(handles, labels) if t not in set(arms) and " (n=" not in t]
    if floors and where is axes[0]:
        axes[2].legend(*zip(*floors), fontsize=7, loc="upper right")
    if not gap_panel(axes[3], report, _colors(max(len(report["same_lr"]["pairs"]), 1))):
        axes[3].set_axis_off()
        axes[3].text(0.5, 0.5, "no same-LR pair Lookahead(X), X with a finished seed", ha="center", va="center")
    fig.suptitle(f"study {report['study']['name']}: mean over seeds (line), min-max over seeds (band); raw values")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _lr_panel(ax, report: Mapping[str, Any]) -> None:
    """Final NME against LR per optimizer line (the reference's optimizer and Lookahead thick), the
    floors, and each line's best LR (the tuned comparison's: a star)."""
    sens = report["sensitivity"]
    lines, seeds = sens["lr_lines"], sens["lr_line_seeds"]
    ref_family = report["arms"][report["study"]["reference"]]["family"]
    best = {k: v["best_lr"] for k, v in (report.get("tuned") or {}).get("lines", {}).items()}
    for i, (color, (fam, pts)) in enumerate(zip(_colors(len(lines)), lines.items())):
        key = fam == ref_family or fam.startswith("lookahead(")
        mean = np.array([p["mean"] for p in pts])
        err = [[p["mean"] - p["ci_low"] if math.isfinite(p["ci_low"]) else 0.0 for p in pts],
               [p["ci_high"] - p["mean"] if math.isfinite(p["ci_high"]) else 0.0 for p in pts]]
        shift = 1.0 + 0.05 * (i - (len(lines) - 1) / 2)  # lines side by side at a shared LR, not on top
        ax.errorbar([p["lr"] * shift for p in pts], mean, yerr=err, color=color, marker="o", capsize=4,
                    linewidth=2.4 if key else 1.0, alpha=1.0 if key else 0.6,
                    label=f"{fam} (seeds {','.join(map(str, seeds[fam]))}, {len(pts)} LR{'s' if len(pts) > 1 else ''})")
        star = [p for p in pts if best.get(fam) is not None and p["lr"] == best[fam] and len(pts) > 1]
        if star:
            ax.scatter([star[0]["lr"] * shift], [star[0]["mean"]], marker="*", s=180, color=color, zorder=4)
    _floor_lines(ax, report)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (lines sharing an LR drawn slightly apart)")
    ax.set_ylabel("final valid NME (mean, 95% CI over the line's common seeds)")
    ax.set_title("final NME against LR; star: a line's best LR (selected on this validation set)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def _grid_panel(fig, ax, grid: Mapping[str, Any]) -> None:
    mat = np.full((len(grid["k"]), len(grid["alpha"])), np.nan)
    for i, k in enumerate(grid["k"]):
        for j, a in enumerate(grid["alpha"]):
            c = grid["cells"].get(f"{k},{a:g}")
            if c and c["mean"] is not None:
                mat[i, j] = c["mean"]
    im = ax.imshow(mat, cmap="viridis_r", aspect="auto")
    for i, k in enumerate(grid["k"]):
        for j, a in enumerate(grid["alpha"]):
            c = grid["cells"].get(f"{k},{a:g}")
            if c:
                ax.text(j, i, f"{fmt(c['mean'])}\n+- {fmt(c['std'])} (n={c['n']})", ha="center", va="center",
                        fontsize=9,
                        color="white" if np.isfinite(mat[i, j]) and mat[i, j] > np.nanmean(mat) else "black")
    ax.set_xticks(range(len(grid["alpha"])), [f"{a:g}" for a in grid["alpha"]])
    ax.set_yticks(range(len(grid["k"])), [str(k) for k in grid["k"]])
    ax.set_xlabel("alpha")
    ax.set_ylabel("k")
    ax.set_title(f"Lookahead final NME, LR {grid['lr']:g}, seeds {','.join(map(str, grid['seeds']))}")
    fig.colorbar(im, ax=ax)


def plot_sensitivity(report: Mapping[str, Any], path: str) -> bool:
    """Final NME vs LR (log x) per optimizer with 95% CI error bars; the k x alpha grid (common seeds)."""
    sens = report["sensitivity"]
    lines, grid = sens["lr_lines"], sens["k_alpha"]
    if not any(len(p) >= 2 for p in lines.values()) and not grid:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, 2 if grid else 1, figsize=(15 if grid else 9, 6), squeeze=False)
    _lr_panel(axes[0][0], report)
    if grid:
        _grid_panel(fig, axes[0][1], grid)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _slow_fast_panel(ax, report: Mapping[str, Any], arms: Sequence[str]) -> None:
    """Valid NME of the slow (solid) and fast (dashed) weights of ``arms``, mean and min-max over seeds."""
    from matplotlib.ticker import MaxNLocator

    for color, arm in zip(_colors(len(arms)), arms):
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
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (0 = untrained)")
    ax.set_ylabel("valid NME")
    ax.set_title("slow (solid) vs fast (dashed) weights; band: min-max over seeds")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def plot_lookahead(report: Mapping[str, Any], path: str) -> bool:
    """Lookahead: the effective time (``answer_figures.effective_time_panel``) and the valid NME of
    the slow and fast weights of the arms where they differ at some validation; arms whose every
    validation followed a sync (slow = fast by construction) are named, not drawn."""
    las = report["lookahead"]
    differ = [n for n, la in las.items() if la["logged"] and any(la["epochs_where_they_differ"].values())]
    same = [n for n, la in las.items() if la["logged"] and la["epochs_where_they_differ"]
            and not any(la["epochs_where_they_differ"].values())]
    timed = bool(report.get("effective_time", {}).get("pairs")) and any(
        p["ratio"]["n"] for p in report["effective_time"]["pairs"])
    if not differ and not timed:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, int(timed) + int(bool(differ)), figsize=(9 * (int(timed) + int(bool(differ))), 8.5),
                             squeeze=False)
    axes = list(axes[0])
    if timed:
        effective_time_panel(axes.pop(0), report, _colors(len(report["effective_time"]["pairs"])))
    if differ:
        _slow_fast_panel(axes.pop(0), report, differ)
    note = (f"slow and fast weights coincide at every validation of {', '.join(same)} (each followed a sync: k "
            "divides the iterations per epoch): not drawn") if same else ""
    fig.suptitle("Lookahead\n" + textwrap.fill(note, 110), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_calibration(report: Mapping[str, Any], path: str) -> bool:
    """The reference arm's valid NME per epoch (each seed thin, the mean over seeds thick), the
    box-centre and constant-layout floors, the calibration target and the LR steps."""
    cal = report["calibration"]
    runs = [r for r in report["runs"] if r["arm"] == cal["arm"] and r["status"] == "finished"]
    st = _stack(runs, "NME")
    if st is None:
        return False
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(9, 5.5))
    for r in runs:
        pts = [(e, v) for e, v in zip(r["curves"]["epoch"], r["curves"]["NME"]) if v is not None]
        ax.plot(*zip(*pts), color="tab:blue", linewidth=0.8, alpha=0.5)
    ep, vals = st
    ax.plot(ep, vals.mean(0), color="tab:blue", linewidth=2.4, label=f"{cal['arm']}: mean over {len(vals)} seeds "
            "(thin: each seed)")
    if cal["box_centre_floor"] is not None:
        box = cal["box_centre_floor"]
        ax.axhline(box, color="black", linewidth=1.2, label=f"floor: box centre ({box:.3f})")
        if cal["constant_layout_floor"] is not None:
            ax.axhline(cal["constant_layout_floor"], color="gray", linestyle=":", linewidth=1.2,
                       label=f"floor: constant layout ({cal['constant_layout_floor']:.3f})")
        ax.axhline(cal["target_NME"], color="tab:green", linestyle="--", linewidth=1.2,
                   label=f"{cal['target_fraction']:g} x box centre ({cal['target_NME']:.3f}): target")
    steps = report["arms"][cal["arm"]].get("setting", {}).get("TRAIN.LR_STEP", [])
    for i, e in enumerate(steps):
        ax.axvline(e, color="gray", linewidth=0.6, alpha=0.6, label="LR x factor" if i == 0 else None)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch (0 = untrained)")
    ax.set_ylabel("valid NME (lower is better)")
    frac = cal["fraction_of_floor"]
    ax.set_title(f"calibration: {cal['arm']} ends at {fmt(cal['final_NME']['mean'])}"
                 + (f" = {frac:.2f} x the box-centre floor" if frac is not None else "") + "; measured values")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _trend_line(ax, ln: Mapping[str, Any], color, offset: float) -> None:
    """One trend line: per-seed differences (faint), mean with 95% CI error bars, joined by a thin line."""
    pts = [p for p in ln["points"] if p["iterations"] and p["comparison"]["n"]]
    x = np.array([p["iterations"] * offset for p in pts], dtype=np.float64)
    for xi, p in zip(x, pts):  # each seed's difference just right of its mean, not hidden by the error bar
        d = p["comparison"]["diffs"]
        ax.scatter([xi * 1.06] * len(d), d, color=color, alpha=0.35, s=18, linewidths=0)
    mean = np.array([p["comparison"]["mean_diff"] for p in pts])
    lo = [p["comparison"]["ci_low"] for p in pts]
    hi = [p["comparison"]["ci_high"] for p in pts]
    err = [[m - v if math.isfinite(v) else 0.0 for m, v in zip(mean, lo)],
           [v - m if math.isfinite(v) else 0.0 for m, v in zip(mean, hi)]]
    c = ln["change"]
    ax.errorbar(x, mean, yerr=err, color=color, marker="o", capsize=4, linewidth=1.0,
                label=f"Lookahead({ln['optimizer']}) - {ln['optimizer']}, LR {fmt(ln['lr'], 'g')}, k {ln['k']} "
                      f"alpha {fmt(ln['alpha'], 'g')}; change between learned lengths: {c['trend']}")
    for xi, m, p in zip(x, mean, pts):  # filled only where both arms learned: else hollow, labelled
        neither = p["comparison"]["verdict"] == stats.NOT_LEARNED
        if neither or not p.get("both_learned", True):
            ax.scatter([xi], [m], s=40, facecolors="white", edgecolors=color, zorder=3)
            ax.annotate("neither arm\nhas learned" if neither else "one arm\nhas not learned", (xi, m),
                        textcoords="offset points", xytext=(-8, 0), ha="right", va="center", fontsize=8, color=color)


def plot_trend(report: Mapping[str, Any], path: str) -> bool:
    """Lookahead(X) - X final NME against iterations per run (log x): mean and 95% CI per length,
    each seed's difference faint, the zero line and the user's iterations (dashed)."""
    lines = [ln for ln in report.get("trend", {}).get("lines", [])
             if sum(1 for p in ln["points"] if p["iterations"] and p["comparison"]["n"]) >= 2]
    if not lines:
        return False
    plt = _plt()
    from matplotlib.ticker import FuncFormatter

    user = report["trend"]["user_iterations"]
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for i, (color, ln) in enumerate(zip(_colors(len(lines)), lines)):
        _trend_line(ax, ln, color, 1.0 + 0.03 * (i - (len(lines) - 1) / 2))  # lines side by side, not on top
    ax.axhline(0.0, color="black", linewidth=1.0)
    ax.axvline(user, color="tab:red", linestyle="--", linewidth=1.2, label=f"user's run ({user:,} iterations)")
    ax.text(user, 0.98, " user's run", color="tab:red", transform=ax.get_xaxis_transform(), ha="right", va="top",
            rotation=90, fontsize=9)
    its = [p["iterations"] for ln in lines for p in ln["points"] if p["iterations"]]
    ax.set_xscale("log")
    ax.set_xlim(min(its + [user]) / 1.6, max(its + [user]) * 1.6)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlabel("training iterations per run (log scale)")
    ax.set_ylabel("final valid NME: Lookahead(X) - X (below 0: Lookahead better)")
    ax.set_title("the gap against training length: mean, 95% CI (unadjusted), each seed faint; filled: both arms "
                 "learned", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


#: (file name, drawing function) of every figure, in the report's order.
FIGURES = (("curves.png", plot_curves), ("calibration.png", plot_calibration), ("trend.png", plot_trend),
           ("sensitivity.png", plot_sensitivity), ("lookahead.png", plot_lookahead))
