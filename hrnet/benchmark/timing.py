"""Interleaved timing and the statistics the benchmarks share.

A load change on a shared machine (another job starting, a frequency step) must hit every variant
under comparison alike, so variants are timed in turns (A, B, A, B ...) rather than one after the
other, and every figure is a median over turns. Both clocks are read around each call: wall time
(``time.perf_counter``) and this process's CPU time (``time.process_time``, all its threads), which
a loaded machine disturbs less (with one thread; with more, OpenMP spin-waits count too).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

__all__ = ["Samples", "clock", "device_sync", "interleave", "loadavg", "paired_ratios", "set_threads"]


@dataclass
class Samples:
    """One variant's timings, one entry per timed call: seconds of wall and of process CPU time."""
    wall: List[float] = field(default_factory=list)
    cpu: List[float] = field(default_factory=list)


def set_threads(threads: int) -> None:
    """``torch.set_num_threads(threads)``; 0 keeps torch's default."""
    if threads:
        torch.set_num_threads(threads)


def device_sync(device: torch.device) -> Callable[[], None]:
    """A function that waits for ``device``'s queued work (CUDA); a no-op elsewhere."""
    if device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def clock(fn: Callable[[], Any], sync: Callable[[], None] = lambda: None) -> Tuple[float, float]:
    """Wall and process CPU seconds of ``fn()``, with ``sync()`` before and after (queued device work)."""
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - t0, time.process_time() - c0


def interleave(variants: Mapping[str, Callable[[int], Any]], rounds: int, *, warmup: int = 0,
               rotate: bool = False, sync: Callable[[], None] = lambda: None,
               prepare: Optional[Mapping[str, Callable[[], Any]]] = None) -> Dict[str, Samples]:
    """Time each variant once per round, in turns; ``variants[name](round_index)`` is one call.

    ``warmup`` extra rounds come first and are not recorded (round indices count them).
    ``rotate``: round r starts at the r-th variant (A B C, B C A, ...: none is always first or
    last), else the order is fixed. ``prepare[name]()`` runs untimed before that variant's call.
    """
    names = list(variants)
    out = {name: Samples() for name in names}
    for r in range(warmup + rounds):
        order = names[r % len(names):] + names[:r % len(names)] if rotate else names
        for name in order:
            if prepare and name in prepare:
                prepare[name]()
            wall, cpu = clock(lambda: variants[name](r), sync)
            if r >= warmup:
                out[name].wall.append(wall)
                out[name].cpu.append(cpu)
    return out


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> List[float]:
    """``a[i] / b[i]`` for each round i: the ratio a load change hits least (both timed in one round)."""
    return [x / y for x, y in zip(a, b)]


def loadavg() -> List[float]:
    """The 1, 5 and 15 minute load averages, 2 decimals: how busy the machine was around a measurement."""
    return [round(x, 2) for x in os.getloadavg()]
