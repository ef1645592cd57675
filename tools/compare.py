"""Compare training runs from their run folders.

    python tools/compare.py output/hand_* --out comparison.png [--smoothing 0.6]

Reads each run folder's event files (``train/loss``, ``valid/loss``, ``valid/NME`` against epoch;
step 0 is the untrained model) and ``metrics.json`` through ``hrnet.engine.run_reader`` (the names
are ``hrnet.engine.run_record``'s, the module the trainer writes them with); draws the three curves
(measured values; ``--smoothing`` adds TensorBoard's debiased EMA as a second line) and prints a
markdown table: best and final NME, epoch of the best, wall time and status. Missing or partial
runs are reported in the table, never fatal.
Runs named ``<name>_seed<s>`` are also grouped: mean +- std over seeds per ``<name>``.
To train several optimizers x seeds first, use ``tools/study.py`` (a study file, paired statistics,
a report).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import _cli
import _paths  # noqa: F401  (repository root on sys.path)

import numpy as np

from hrnet.engine.progress import fmt_duration
from hrnet.engine.run_reader import SEED_RE, Run, expand_run_dirs, load_run, read_scalars
from hrnet.engine.run_record import TAG_TRAIN_LOSS, TAG_VALID_LOSS, TAG_VALID_NME

__all__ = ["Run", "load_run", "read_scalars", "expand_run_dirs", "smooth", "run_table", "group_table", "plot",
           "main"]

TAGS = (TAG_TRAIN_LOSS, TAG_VALID_LOSS, TAG_VALID_NME)
TITLES = {TAG_TRAIN_LOSS: "train loss", TAG_VALID_LOSS: "valid loss", TAG_VALID_NME: "valid NME"}
HERE = os.path.dirname(os.path.abspath(__file__))


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """TensorBoard's smoothing: an exponential moving average, debiased for the first points."""
    out = np.empty(len(values), dtype=np.float64)
    last, num = 0.0, 0
    for i, v in enumerate(values):
        if not np.isfinite(v):
            out[i] = v
            continue
        last = last * weight + (1 - weight) * v
        num += 1
        out[i] = last / (1 - weight ** num) if weight > 0 else v
    return out


def _fmt(v: Optional[float], spec: str = ".5f") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def labels(runs: Sequence[Run]) -> List[str]:
    """The run folder names; the path as given where two runs share a name (different output folders)."""
    names = [r.name for r in runs]
    return [r.name if names.count(r.name) == 1 else os.path.normpath(r.path) for r in runs]


def run_table(runs: Sequence[Run]) -> str:
    """Markdown table, one row per run."""
    lines = ["| run | optimizer | LR | status | epochs | best NME | epoch of best | final NME | wall time | notes |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r, label in zip(runs, labels(runs)):
        best, best_ep = r.best
        lr = "-" if r.lr is None else f"{r.lr:g}"
        lines.append(f"| {label} | {r.optimizer or '-'} | {lr} | {r.status} | {_fmt(r.epochs, 'd')} | {_fmt(best)} "
                     f"| {_fmt(best_ep, 'd')} | {_fmt(r.final)} | {fmt_duration(r.wall_time)} | "
                     f"{'; '.join(r.problems)} |")
    return "\n".join(lines)


def _mean_std(values: Sequence[float]) -> str:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if not len(v):
        return "-"
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return f"{v.mean():.5f} +- {std:.5f}"


def group_table(runs: Sequence[Run]) -> str:
    """Markdown table of mean +- std over the seeds of each group (finished runs only)."""
    groups: Dict[str, List[Run]] = {}
    for r in runs:
        groups.setdefault(r.group, []).append(r)
    lines = ["| experiment | optimizer | LR | finished seeds | best NME (mean +- std) | final NME (mean +- std) "
             "| epoch of best (mean) | wall time (mean) | other runs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, rs in groups.items():
        done = [r for r in rs if r.status == "finished"]
        others = [f"{r.name}: {r.status}" for r in rs if r.status != "finished"]
        best_eps = [r.best[1] for r in done if r.best[1] is not None]
        times = [r.wall_time for r in done if r.wall_time is not None]
        lr = "-" if rs[0].lr is None else f"{rs[0].lr:g}"
        lines.append(f"| {name} | {rs[0].optimizer or '-'} | {lr} | {len(done)}/{len(rs)} "
                     f"| {_mean_std([r.best[0] for r in done])} | {_mean_std([r.final for r in done])} "
                     f"| {_fmt(float(np.mean(best_eps)) if best_eps else None, '.1f')} "
                     f"| {fmt_duration(float(np.mean(times)) if times else None)} | {'; '.join(others)} |")
    return "\n".join(lines)


def _group_curve(runs: Sequence[Run], tag: str) -> Optional[Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]]:
    """Mean (and std when several runs) of ``tag`` over the steps every run of the group has."""
    curves = [r.curves[tag] for r in runs if tag in r.curves and len(r.curves[tag][0])]
    if not curves:
        return None
    if len(curves) == 1:
        return curves[0][0], curves[0][1], None
    common = sorted(set.intersection(*(set(s.tolist()) for s, _ in curves)))
    if not common:
        return None
    stack = np.stack([np.array([dict(zip(s.tolist(), v))[c] for c in common]) for s, v in curves])
    return np.array(common), stack.mean(0), stack.std(0)


def plot(runs: Sequence[Run], out: str, smoothing: float = 0.0, by_group: bool = False) -> None:
    """Three panels (train loss, valid loss, valid NME) against epoch: the measured values (mean over
    seeds when grouped, band +- std), and with ``smoothing`` > 0 a thin EMA line beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    drawable = [r for r in runs if r.curves]
    series: Dict[str, List[Run]] = {}
    for r, label in zip(drawable, labels(drawable)):
        series.setdefault(r.group if by_group else label, []).append(r)
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, tag in zip(axes, TAGS):
        for i, (label, rs) in enumerate(series.items()):
            curve = _group_curve(rs, tag)
            if curve is None:
                continue
            steps, mean, std = curve
            color = colors[i % len(colors)]
            n = f" (n={len(rs)})" if len(rs) > 1 else ""
            ax.plot(steps, mean, color=color, linewidth=2, marker=".", label=label + n)
            if smoothing > 0:
                ax.plot(steps, smooth(mean, smoothing), color=color, alpha=0.5, linewidth=1, linestyle="--")
            if std is not None:
                ax.fill_between(steps, mean - std, mean + std, color=color, alpha=0.12, linewidth=0)
        ax.set_title(TITLES[tag])
        ax.set_xlabel("epoch (0 = untrained)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if tag.endswith("loss"):
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    if axes[2].get_legend_handles_labels()[0]:
        axes[2].legend(fontsize=8)
    fig.suptitle("measured values" + (f"; dashed: EMA {smoothing}" if smoothing > 0 else "")
                 + ("; band: +- std over seeds" if by_group else ""))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="run folders (OUTPUT_DIR/<experiment>), or a folder of runs")
    parser.add_argument("--out", default="", help="PNG to draw (e.g. comparison.png)")
    parser.add_argument("--smoothing", type=float, default=0.0,
                        help="EMA weight of an extra smoothed line (0..1; 0 = measured values only)")
    args = parser.parse_args(argv)
    if not 0 <= args.smoothing < 1:
        parser.error("--smoothing must be in [0, 1)")
    if not args.runs:
        parser.error("give run folders (or a folder of runs); tools/study.py trains optimizers x seeds")
    runs = [load_run(p) for p in expand_run_dirs(args.runs)]
    print(run_table(runs))
    grouped = any(SEED_RE.match(r.name) for r in runs)
    if grouped:
        print()
        print(group_table(runs))
    if args.out:
        if any(r.curves for r in runs):
            plot(runs, args.out, args.smoothing, by_group=grouped)
            print(f"\nwrote {args.out}")
        else:
            print(f"\nno run has TensorBoard scalars; {args.out} not written")
    return 0


if __name__ == "__main__":
    sys.exit(_cli.run(main))
