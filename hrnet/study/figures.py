"""The figures of a study report, drawn from the report dict only: ``curves.png`` (with the
no-learning floors on the NME panel), ``sensitivity.png`` (on common seeds), ``lookahead.png``."""
from __future__ import annotations

import math
from typing import Any, List, Mapping, Sequence

import numpy as np

from hrnet.study.verdict import fmt

__all__ = ["plot_curves", "plot_sensitivity", "plot_lookahead", "FIGURES"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(n: int) -> List[Any]:
    cmap = _plt().get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


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


def plot_curves(report: Mapping[str, Any], path: str) -> bool:
    """Train loss, valid loss, valid NME per arm against epoch: mean line, min-max band over seeds;
    the no-learning floors on the NME panel."""
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
    _floor_lines(axes[2], report)
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


def _lr_panel(ax, lines: Mapping[str, Sequence[Mapping[str, Any]]], seeds: Mapping[str, Sequence[int]]) -> None:
    for color, (fam, pts) in zip(_colors(len(lines)), lines.items()):
        mean = np.array([p["mean"] for p in pts])
        err = [[p["mean"] - p["ci_low"] if math.isfinite(p["ci_low"]) else 0.0 for p in pts],
               [p["ci_high"] - p["mean"] if math.isfinite(p["ci_high"]) else 0.0 for p in pts]]
        ax.errorbar([p["lr"] for p in pts], mean, yerr=err, color=color, marker="o", capsize=4, linewidth=1.5,
                    label=f"{fam} (seeds {','.join(map(str, seeds[fam]))})")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("final valid NME (mean, 95% CI over the line's common seeds)")
    ax.set_title("LR sensitivity")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


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
    fig, axes = plt.subplots(1, 2 if grid else 1, figsize=(14 if grid else 8, 5.5), squeeze=False)
    _lr_panel(axes[0][0], lines, sens["lr_line_seeds"])
    if grid:
        _grid_panel(fig, axes[0][1], grid)
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
    from matplotlib.ticker import MaxNLocator

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


#: (file name, drawing function) of every figure, in the report's order.
FIGURES = (("curves.png", plot_curves), ("sensitivity.png", plot_sensitivity), ("lookahead.png", plot_lookahead))
