"""``benchmark data``: the training data pipeline in one process, and the albumentations baseline."""
from __future__ import annotations

import random
import statistics
import time
from typing import Any, Callable, Dict

import cv2
import numpy as np
import torch

from configs import ConfigError
from data import build_dataset
from hrnet.benchmark import Options
from hrnet.benchmark.timing import clock, interleave, paired_ratios

__all__ = ["bench_data", "AlbumentationsReference"]

#: Samples per timed block of ``--compare`` (one block per variant per round).
COMPARE_BLOCK = 50


class AlbumentationsReference:
    """The photometric augmentation as albumentations' Compose (the pipeline before
    ``data.transforms.PhotometricAug``), behind PhotometricAug's ``set_random_state``/``draw``/``apply``
    interface: the ``data --compare`` baseline. It converts BGR -> RGB -> BGR around the Compose (the
    old path read the crop as RGB directly: ~0.02 ms per sample more here)."""

    def __init__(self, cfg, rng: np.random.Generator) -> None:
        import albumentations as A  # only here: its import is slow and --compare alone needs it

        d = cfg.DATASET
        self.compose = A.Compose([
            A.RandomBrightnessContrast(brightness_limit=d.BRIGHTNESS, contrast_limit=d.BRIGHTNESS, p=d.COLOR_PROB),
            A.HueSaturationValue(hue_shift_limit=d.HUE, sat_shift_limit=d.SATURATION, val_shift_limit=0,
                                 p=d.COLOR_PROB),
            A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.5), p=d.BLUR_PROB),
            A.GaussNoise(std_range=(0.25 * d.NOISE_STD, d.NOISE_STD), p=d.NOISE_PROB),
        ])
        self.set_random_state(rng)

    def set_random_state(self, rng: np.random.Generator, py_random: random.Random = None) -> None:
        """Draw from a generator seeded by ``rng`` (the dataset seeds its augmentation on first use)."""
        self.compose.set_random_state(np.random.default_rng(rng.integers(2 ** 31)), py_random or random.Random(0))

    def draw(self) -> Dict[str, Any]:
        return {"albumentations": True}  # the old path always converted and called the Compose

    def apply(self, img: np.ndarray, effects: Dict[str, Any], bgr: bool = True) -> np.ndarray:
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        return cv2.cvtColor(self.compose(image=rgb)["image"], cv2.COLOR_RGB2BGR)


def load(dataset, start: int, stop: int) -> None:
    """``dataset[i]`` for i in [start, stop), cycling through the set; the samples are dropped."""
    n = len(dataset)
    for i in range(start, stop):
        dataset[i % n]


def compare_photometric(cfg, dataset, steps: int) -> Dict[str, Any]:
    """``dataset[i]`` with albumentations' Compose against the project's PhotometricAug, interleaved
    in blocks of :data:`COMPARE_BLOCK` samples (rotating order; both variants see the same samples
    in a round). ``speedup_cpu``: median over rounds of the per-round ratio of CPU time per sample."""
    ours = dataset._photometric
    if ours is None:
        raise ConfigError("benchmark data --compare: DATASET.COLOR_AUG is off, nothing to compare")
    augs = {"albumentations": AlbumentationsReference(cfg, np.random.default_rng(cfg.SEED)), "ours": ours}
    block = COMPARE_BLOCK
    rounds = max(1, -(-steps // block))

    def load_block(aug) -> Callable[[int], None]:
        def run(r: int) -> None:
            dataset._photometric = aug
            load(dataset, r * block, (r + 1) * block)
        return run

    try:
        samples = interleave({name: load_block(aug) for name, aug in augs.items()}, rounds, rotate=True)
    finally:
        dataset._photometric = ours
    cpu = {name: [t / block for t in s.cpu] for name, s in samples.items()}
    wall = {name: [t / block for t in s.wall] for name, s in samples.items()}
    ratios = paired_ratios(cpu["albumentations"], cpu["ours"])
    return dict(
        speedup_cpu=round(statistics.median(ratios), 3),
        speedup_cpu_spread=[round(min(ratios), 3), round(max(ratios), 3)],
        speedup_wall=round(statistics.median(paired_ratios(wall["albumentations"], wall["ours"])), 3),
        cpu_ms_per_sample={k: round(1000 * statistics.median(v), 4) for k, v in cpu.items()},
        samples_per_cpu_s_compared={k: round(1 / statistics.median(v), 1) for k, v in cpu.items()},
        rounds=rounds, block=block)


def bench_data(cfg, options: Options) -> Dict[str, Any]:
    """Training data pipeline throughput in one process; ``samples_per_s``.

    Builds the training dataset (``build_s``: annotation parsing and image header checks), then
    times ``dataset[i]`` (read, decode, crop, augment, targets, normalised tensor) for
    ``options.steps`` samples (default 1000, cycling through the set in order) after
    ``options.warmup`` (default 20), with OpenCV and torch on one thread, as in one DataLoader
    worker. No collation, no pinning. ``samples_per_cpu_s`` divides by the process's CPU time
    instead of wall time.

    ``options.compare`` (needs DATASET.COLOR_AUG) times the same samples with the photometric
    augmentation as albumentations' Compose (the previous pipeline) against the project's
    ``PhotometricAug``, interleaved in blocks of 50 samples (A, B, B, A ...: a load change on a
    shared machine hits both alike); ``speedup_cpu`` is the median over rounds of the per-round
    ratio of process CPU time per sample (one thread: the figure least disturbed by other load),
    with its spread (min, max) and the wall-time ratio beside it.
    """
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    torch.manual_seed(cfg.SEED)
    t0 = time.perf_counter()
    dataset = build_dataset(cfg, is_train=True)
    build_s = time.perf_counter() - t0
    n = len(dataset)
    steps = options.steps or 1000
    warmup = 20 if options.warmup < 0 else options.warmup
    load(dataset, 0, warmup)
    result = compare_photometric(cfg, dataset, steps) if options.compare else {}
    elapsed, cpu_s = clock(lambda: load(dataset, warmup, warmup + steps))
    result.update({
        "samples_per_s": steps / elapsed,
        "ms_per_sample": 1000.0 * elapsed / steps,
        # CPU time of this process: less sensitive than wall time to other jobs on a shared machine.
        "samples_per_cpu_s": steps / cpu_s,
        "steps": steps,
        "num_samples": n,
        "format": cfg.DATASET.FORMAT,
        "annotations": dataset.source,
        "build_s": build_s,
        "color_aug": bool(cfg.DATASET.COLOR_AUG),
        "reduced_decode": bool(cfg.DATASET.REDUCED_DECODE),
        "threads": 1,
    })
    return result
