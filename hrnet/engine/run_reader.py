"""Reading run folders back: ``Run`` / ``load_run`` (curves, metrics.json, problems), for
``tools/compare.py``.

The file names and TensorBoard tags are ``hrnet.engine.run_record``'s, the module the trainer
writes them with, so writer and readers cannot drift apart. Nothing here raises on a damaged or
partial folder: problems are recorded on the :class:`Run`.
"""
from __future__ import annotations

import glob
import math
import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from hrnet.engine.run_record import CONFIG, EVENTS_GLOB, TAG_VALID_NME, is_number, read_metrics

__all__ = ["SEED_RE", "Run", "load_run", "read_scalars", "expand_run_dirs"]

SEED_RE = re.compile(r"^(?P<group>.+)_seed(?P<seed>\d+)$")


@dataclass
class Run:
    """One run folder as read back from disk (problems are recorded in ``problems``, never raised)."""
    path: str
    name: str
    curves: Dict[str, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # tag -> (steps, values)
    info: Dict = field(default_factory=dict)  # metrics.json, when present and an object
    optimizer: str = ""
    lr: Optional[float] = None
    problems: List[str] = field(default_factory=list)

    @property
    def group(self) -> str:
        """The name without its ``_seed<s>`` suffix."""
        m = SEED_RE.match(self.name)
        return m.group("group") if m else self.name

    @property
    def nme(self) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """(steps, values) of ``valid/NME``, or None."""
        return self.curves.get(TAG_VALID_NME)

    @property
    def status(self) -> str:
        if self.nme is None:
            return "missing"
        status = self.info.get("status")
        return status if isinstance(status, str) else "partial (no metrics.json)"

    @property
    def best(self) -> Tuple[Optional[float], Optional[int]]:
        """(lowest finite NME, its step), (None, None) without points."""
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
        if is_number(self.info.get("wall_time_s")):
            return float(self.info["wall_time_s"])
        return self.info.get("_event_span")


def _has_events(path: str) -> bool:
    return bool(glob.glob(os.path.join(path, EVENTS_GLOB)))


def expand_run_dirs(paths: Sequence[str]) -> List[str]:
    """Run folders: each path itself, or its sub-folders holding events (``compare.py output``)."""
    out: List[str] = []
    for p in paths:
        if os.path.isdir(p) and not _has_events(p) and not os.path.isfile(os.path.join(p, CONFIG)):
            subs = sorted(d for d in glob.glob(os.path.join(p, "*")) if os.path.isdir(d) and _has_events(d))
            if subs:
                out.extend(subs)
                continue
        out.append(p)
    return out


def read_scalars(path: str) -> Tuple[Dict[str, Tuple[np.ndarray, np.ndarray]], Optional[float]]:
    """``tag -> (steps, values)`` of a run folder's event files, and the wall-clock span (s) of the events.

    A step logged twice (a resumed run repeating an interrupted epoch) keeps its latest value.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(path, size_guidance={"scalars": 0})
    acc.Reload()
    curves: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
    t_min, t_max = math.inf, -math.inf
    for tag in acc.Tags().get("scalars", []):
        latest: Dict[int, Tuple[float, float]] = {}
        for e in acc.Scalars(tag):
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
    run.info, problems = read_metrics(path)
    run.problems.extend(problems)
    hp = run.info.get("hparams", {})
    optimizer, lr = hp.get("optimizer", ""), hp.get("lr")
    run.optimizer = optimizer if isinstance(optimizer, str) else ""
    run.lr = float(lr) if is_number(lr) else None
    cfg_path = os.path.join(path, CONFIG)
    if not run.optimizer and os.path.isfile(cfg_path):
        try:
            from yacs.config import CfgNode

            with open(cfg_path) as f:
                cfg = CfgNode.load_cfg(f)
            run.optimizer, run.lr = str(cfg.TRAIN.OPTIMIZER), float(cfg.TRAIN.LR)
        except Exception as exc:  # a hand-edited or truncated file must not stop the report
            run.problems.append(f"unreadable {CONFIG} ({exc})")
    if not _has_events(path):
        run.problems.append("no TensorBoard event files")
        return run
    try:
        run.curves, span = read_scalars(path)
        run.info.setdefault("_event_span", span)
    except Exception as exc:  # a truncated event file must not stop the report
        run.problems.append(f"unreadable event files ({exc})")
        return run
    if TAG_VALID_NME not in run.curves:
        run.problems.append(f"no {TAG_VALID_NME} points")
    end = run.info.get("end_epoch")
    if run.epochs is not None and end is not None and run.epochs < end:
        run.problems.append(f"{run.epochs}/{end} epochs")
    return run
