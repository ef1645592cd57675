"""Compare training runs from their TensorBoard event files, or run a multi-seed sweep first.

    python tools/compare.py output/hand_* --out comparison.png
    python tools/compare.py --run experiments/hand_*.yaml --seeds 3 [--output-dir DIR] [--out PNG] [KEY VALUE ...]

The first form reads each run folder's event files (``train/loss``, ``valid/loss``, ``valid/NME``
against epoch; step 0 is the untrained model), draws the three curves (thin: raw, solid: smoothed
with TensorBoard's debiased EMA) and prints a markdown table: best and final NME, epoch of the best,
wall time and status. Missing or partial runs are reported in the table, never fatal. Runs named
``<name>_seed<s>`` are also grouped: mean +- std over seeds per ``<name>``.

The second form (exit status 1 when a run fails, diverges or is interrupted) trains every config x seed (seeds 0..N-1) as a ``tools/train.py`` subprocess with
``SEED s EXPERIMENT_NAME <yaml stem>_seed<s>`` (plus your ``KEY VALUE`` overrides), skipping finished
runs and resuming partial ones, so an interrupted sweep continues where it stopped; then it reports
as above. ``--launcher "torchrun --nproc_per_node 4"`` runs each training with DDP.
"""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import _paths  # noqa: F401  (repository root on sys.path)

import numpy as np

TAGS = ("train/loss", "valid/loss", "valid/NME")
TITLES = {"train/loss": "train loss", "valid/loss": "valid loss", "valid/NME": "valid NME"}
_SEED_RE = re.compile(r"^(?P<group>.+)_seed(?P<seed>\d+)$")
HERE = os.path.dirname(os.path.abspath(__file__))


@dataclass
class Run:
    """One run folder as read back from disk."""
    path: str
    name: str
    curves: Dict[str, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # tag -> (steps, values)
    info: Dict = field(default_factory=dict)  # metrics.json, when present
    optimizer: str = ""
    lr: Optional[float] = None
    problems: List[str] = field(default_factory=list)

    @property
    def group(self) -> str:
        m = _SEED_RE.match(self.name)
        return m.group("group") if m else self.name

    @property
    def nme(self) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        return self.curves.get("valid/NME")

    @property
    def status(self) -> str:
        if self.nme is None:
            return "missing"
        return self.info.get("status", "partial (no metrics.json)")

    @property
    def best(self) -> Tuple[Optional[float], Optional[int]]:
        if self.nme is None or not len(self.nme[1]):
            return None, None
        steps, vals = self.nme
        finite = np.where(np.isfinite(vals), vals, np.inf)
        i = int(np.argmin(finite))
        return float(vals[i]), int(steps[i])

    @property
    def final(self) -> Optional[float]:
        return float(self.nme[1][-1]) if self.nme is not None and len(self.nme[1]) else None

    @property
    def epochs(self) -> Optional[int]:
        return int(self.nme[0][-1]) if self.nme is not None and len(self.nme[0]) else None

    @property
    def wall_time(self) -> Optional[float]:
        """Seconds: ``metrics.json``'s ``wall_time_s`` (all sessions of a resumed run), else the events' span."""
        if self.info.get("wall_time_s") is not None:
            return float(self.info["wall_time_s"])
        return self.info.get("_event_span")


def _has_events(path: str) -> bool:
    return bool(glob.glob(os.path.join(path, "events.out.tfevents.*")))


def expand_run_dirs(paths: Sequence[str]) -> List[str]:
    """Run folders: each path itself, or its sub-folders holding events (``compare.py output``)."""
    out: List[str] = []
    for p in paths:
        if os.path.isdir(p) and not _has_events(p) and not os.path.isfile(os.path.join(p, "config.yaml")):
            subs = sorted(d for d in glob.glob(os.path.join(p, "*")) if os.path.isdir(d) and _has_events(d))
            if subs:
                out.extend(subs)
                continue
        out.append(p)
    return out


def read_scalars(path: str) -> Tuple[Dict[str, Tuple[np.ndarray, np.ndarray]], Optional[float]]:
    """``tag -> (steps, values)`` of a run folder's event files, and the wall-clock span of the events.

    A step logged twice (a resumed run repeating an interrupted epoch) keeps its latest value.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(path, size_guidance={"scalars": 0})
    acc.Reload()
    curves: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    t_min, t_max = math.inf, -math.inf
    for tag in acc.Tags().get("scalars", []):
        events = acc.Scalars(tag)
        latest: Dict[int, Tuple[float, float]] = {}
        for e in events:
            if e.step not in latest or e.wall_time >= latest[e.step][0]:
                latest[e.step] = (e.wall_time, e.value)
            t_min, t_max = min(t_min, e.wall_time), max(t_max, e.wall_time)
        steps = np.array(sorted(latest), dtype=np.int64)
        curves[tag] = (steps, np.array([latest[s][1] for s in steps], dtype=np.float64))
    return curves, (t_max - t_min if t_max >= t_min else None)


def load_run(path: str) -> Run:
    """Read one run folder; problems are recorded on the Run, never raised."""
    run = Run(path=path, name=os.path.basename(os.path.normpath(path)))
    if not os.path.isdir(path):
        run.problems.append("folder not found")
        return run
    metrics_path = os.path.join(path, "metrics.json")
    if os.path.isfile(metrics_path):
        try:
            with open(metrics_path) as f:
                run.info = json.load(f)
        except (OSError, ValueError) as exc:
            run.problems.append(f"unreadable metrics.json ({exc})")
    hp = run.info.get("hparams", {})
    run.optimizer, run.lr = hp.get("optimizer", ""), hp.get("lr")
    cfg_path = os.path.join(path, "config.yaml")
    if not run.optimizer and os.path.isfile(cfg_path):
        try:
            from yacs.config import CfgNode

            with open(cfg_path) as f:
                cfg = CfgNode.load_cfg(f)
            run.optimizer, run.lr = str(cfg.TRAIN.OPTIMIZER), float(cfg.TRAIN.LR)
        except Exception as exc:  # a hand-edited or truncated file must not stop the report
            run.problems.append(f"unreadable config.yaml ({exc})")
    if not _has_events(path):
        run.problems.append("no TensorBoard event files")
        return run
    try:
        run.curves, span = read_scalars(path)
        run.info.setdefault("_event_span", span)
    except Exception as exc:
        run.problems.append(f"unreadable event files ({exc})")
        return run
    if "valid/NME" not in run.curves:
        run.problems.append("no valid/NME points")
    end = run.info.get("end_epoch")
    if run.epochs is not None and end is not None and run.epochs < end:
        run.problems.append(f"{run.epochs}/{end} epochs")
    return run


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


def _fmt_time(s: Optional[float]) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f} s"
    return f"{s / 3600:.2f} h" if s >= 3600 else f"{s / 60:.1f} min"


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
                     f"| {_fmt(best_ep, 'd')} | {_fmt(r.final)} | {_fmt_time(r.wall_time)} | "
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
                     f"| {_fmt_time(float(np.mean(times)) if times else None)} | {'; '.join(others)} |")
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


def plot(runs: Sequence[Run], out: str, smoothing: float = 0.6, by_group: bool = False) -> None:
    """Three panels (train loss, valid loss, valid NME) against epoch; raw thin, smoothed solid."""
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
            ax.plot(steps, mean, color=color, alpha=0.3, linewidth=1)
            n = f" (n={len(rs)})" if len(rs) > 1 else ""
            ax.plot(steps, smooth(mean, smoothing), color=color, linewidth=2, label=label + n)
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
    fig.suptitle(f"thin: raw, solid: smoothed (EMA {smoothing})" + (", band: +- std over seeds" if by_group else ""))
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- sweep
def _run_child(cmd: List[str]) -> Tuple[int, bool]:
    """Run one training; Ctrl-C / SIGTERM reach the child, which checkpoints; returns (rc, interrupted)."""
    proc = subprocess.Popen(cmd)
    interrupted = False

    def forward(signum, frame):
        nonlocal interrupted
        interrupted = True
        proc.send_signal(signum)

    old = signal.signal(signal.SIGTERM, forward)
    try:
        while True:
            try:
                return proc.wait(), interrupted
            except KeyboardInterrupt:  # the terminal sent SIGINT to the child too; let it finish cleanly
                interrupted = True
    finally:
        signal.signal(signal.SIGTERM, old)


def sweep(configs: Sequence[str], seeds: int, output_dir: Optional[str], opts: Sequence[str],
          launcher: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Train each config x seed (skip finished, resume partial); returns the run folders and the failures."""
    from configs import load_config

    run_dirs: List[str] = []
    failed: List[str] = []
    for path in configs:
        stem = os.path.splitext(os.path.basename(path))[0]
        for seed in range(seeds):
            name = f"{stem}_seed{seed}"
            extra = list(opts) + ["SEED", str(seed), "EXPERIMENT_NAME", name]
            if output_dir:
                extra += ["OUTPUT_DIR", output_dir]
            cfg = load_config(path, extra)
            run_dir = os.path.join(cfg.OUTPUT_DIR, name)
            run_dirs.append(run_dir)
            info = {}
            if os.path.isfile(os.path.join(run_dir, "metrics.json")):
                with open(os.path.join(run_dir, "metrics.json")) as f:
                    info = json.load(f)
            if info.get("status") == "finished" and info.get("epochs_completed", -1) >= cfg.TRAIN.END_EPOCH:
                print(f"[sweep] {name}: finished, skipped", flush=True)
                continue
            if info.get("status") == "diverged":
                print(f"[sweep] {name}: diverged before, not retried (delete {run_dir} to retry)", flush=True)
                failed.append(name)
                continue
            resume = os.path.isfile(os.path.join(run_dir, "checkpoint_latest.pth"))
            cmd = list(launcher) + [os.path.join(HERE, "train.py"), "--cfg", path] + (["--resume"] if resume else []) \
                + extra
            print(f"[sweep] {name}: {'resuming' if resume else 'starting'}: {' '.join(shlex.quote(c) for c in cmd)}",
                  flush=True)
            rc, interrupted = _run_child(cmd)
            if interrupted or rc in (128 + signal.SIGINT, 128 + signal.SIGTERM):
                print(f"[sweep] interrupted during {name}; run the same command again to continue", flush=True)
                return run_dirs, failed + [name]
            if rc != 0:
                print(f"[sweep] {name}: exited with status {rc}; see {run_dir}/train.log", flush=True)
                failed.append(name)
    return run_dirs, failed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="*", help="run folders (OUTPUT_DIR/<experiment>), or a folder of runs")
    parser.add_argument("--out", default="", help="PNG to draw (e.g. comparison.png)")
    parser.add_argument("--smoothing", type=float, default=0.6, help="EMA weight of the smoothed curves (0..1)")
    parser.add_argument("--run", nargs="+", metavar="YAML", help="sweep: train these configs first")
    parser.add_argument("--seeds", type=int, default=1, help="sweep: seeds 0..N-1 per config")
    parser.add_argument("--output-dir", default=None, help="sweep: OUTPUT_DIR of the runs (default: the configs')")
    parser.add_argument("--launcher", default=sys.executable,
                        help='sweep: command that runs tools/train.py (e.g. "torchrun --nproc_per_node 4")')
    args, opts = parser.parse_known_args(argv)
    if not 0 <= args.smoothing < 1:
        parser.error("--smoothing must be in [0, 1)")
    if args.run:
        # KEY VALUE overrides land in --run's list or among the positionals (argparse cannot tell
        # them apart): everything that is not a .yaml file is an override.
        configs = [c for c in args.run if c.endswith((".yaml", ".yml"))]
        opts = [c for c in args.run if not c.endswith((".yaml", ".yml"))] + list(args.runs) + list(opts)
        if len(opts) % 2:
            parser.error(f"overrides must be KEY VALUE pairs, got {opts}")
        if args.seeds < 1:
            parser.error("--seeds must be >= 1")
        run_dirs, failed = sweep(configs, args.seeds, args.output_dir, opts, shlex.split(args.launcher))
    else:
        if opts:
            parser.error(f"unrecognised arguments: {opts}")
        if not args.runs:
            parser.error("give run folders, or --run YAML ... for a sweep")
        run_dirs, failed = expand_run_dirs(args.runs), []
    runs = [load_run(p) for p in run_dirs]
    print(run_table(runs))
    grouped = any(_SEED_RE.match(r.name) for r in runs)
    if grouped:
        print()
        print(group_table(runs))
    if args.out:
        if any(r.curves for r in runs):
            plot(runs, args.out, args.smoothing, by_group=grouped)
            print(f"\nwrote {args.out}")
        else:
            print(f"\nno run has TensorBoard scalars; {args.out} not written")
    if failed:
        print(f"\n{len(failed)} run(s) did not finish: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
