"""The data side of a training run: the two data sets, their loaders, and the generator that seeds them.

:func:`build_run_data` builds the training and validation sets (rank 0 first, so a synthetic set is
rendered once), the fixed validation crops of the TensorBoard prediction grid, and the loaders. For
exact resume the training order and the workers' seeds come from ``RunData.generator``, whose
state the checkpoint saves; :func:`recalibration_loader` gives every rank the same batches.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from configs import ConfigError

from hrnet.engine.distributed import DistInfo, ShardSampler
from hrnet.engine.signals import ignore_sigint_in_worker
from hrnet.runtime.checkpoint import rng_fork

__all__ = ["RunData", "build_run_data", "loader_kwargs", "recalibration_loader"]

_logger = logging.getLogger(__name__)


@dataclass
class RunData:
    """What :func:`build_run_data` built. ``skipped``: one line per sample left out by
    ``DATASET.ON_BAD_SAMPLE skip``; ``gallery``: the prediction grid's crops (rank 0, or None)."""
    train_set: Dataset
    valid_set: Dataset
    train_loader: DataLoader
    valid_loader: DataLoader
    train_sampler: Optional[DistributedSampler]
    generator: torch.Generator
    skipped: List[str] = field(default_factory=list)
    gallery: Any = None


def loader_kwargs(cfg, device: torch.device) -> Dict[str, Any]:
    """DataLoader options of ``cfg.WORKERS`` on ``device``."""
    workers = int(cfg.WORKERS)
    kw: Dict[str, Any] = {"num_workers": workers, "pin_memory": device.type == "cuda"}
    if workers > 0:
        # Not persistent: each epoch's workers are seeded from the checkpointed loader generator (exact resume).
        kw.update(worker_init_fn=ignore_sigint_in_worker, prefetch_factor=4)
    return kw


def _datasets(cfg, d: DistInfo):
    from data import build_dataset

    train_set = build_dataset(cfg, is_train=True) if d.is_main else None
    if d.distributed:  # rank 0 builds first: a synthetic dataset is rendered once, not by every rank
        torch.distributed.barrier()
    if not d.is_main:
        train_set = build_dataset(cfg, is_train=True)
    return train_set, build_dataset(cfg, is_train=False)


def build_run_data(cfg, d: DistInfo) -> RunData:
    """The data sets and loaders of ``cfg`` for this process (all ranks call it).

    Raises ``ConfigError`` when the training set holds less than one global batch or the
    validation set is empty, and the data sets' own errors (a missing file, a bad sample).
    """
    train_set, valid_set = _datasets(cfg, d)
    skipped = list(train_set.skipped) + list(valid_set.skipped)
    for line in skipped:
        _logger.warning("skipped (DATASET.ON_BAD_SAMPLE skip): %s", line)
    gallery = None
    if d.is_main and int(cfg.TEST.VIS_IMAGES) > 0:
        from hrnet.evaluation.visualize import gallery_samples

        with rng_fork():  # reading samples must not move the training RNG streams
            gallery = gallery_samples(valid_set, int(cfg.TEST.VIS_IMAGES))
    batch, kw = int(cfg.TRAIN.BATCH_SIZE_PER_GPU), loader_kwargs(cfg, d.device)
    generator = torch.Generator()
    generator.manual_seed(int(cfg.SEED) + d.rank)
    sampler = None
    if d.distributed:
        sampler = DistributedSampler(train_set, num_replicas=d.world_size, rank=d.rank,
                                     shuffle=bool(cfg.TRAIN.SHUFFLE), seed=int(cfg.SEED), drop_last=True)
    train_loader = DataLoader(train_set, batch_size=batch, sampler=sampler,
                              shuffle=bool(cfg.TRAIN.SHUFFLE) if sampler is None else None,
                              drop_last=True, generator=generator, **kw)
    if len(train_loader) == 0:
        raise ConfigError(f"TRAIN.BATCH_SIZE_PER_GPU {batch} x {d.world_size} process(es) is larger than the "
                          f"training set ({len(train_set)} samples): not one batch per epoch")
    if len(valid_set) == 0:
        raise ConfigError(f"DATASET.TESTSET {cfg.DATASET.TESTSET}: the validation set is empty")
    valid_loader = DataLoader(valid_set, batch_size=int(cfg.TEST.BATCH_SIZE_PER_GPU),
                              sampler=ShardSampler(len(valid_set), d.rank, d.world_size), shuffle=False,
                              drop_last=False, generator=torch.Generator().manual_seed(int(cfg.SEED)), **kw)
    return RunData(train_set, valid_set, train_loader, valid_loader, sampler, generator, skipped, gallery)


def recalibration_loader(cfg, train_set: Dataset, step: int, device: torch.device) -> DataLoader:
    """Augmented training batches for the BN recalibration at validation ``step``: the same on every
    rank (so the recalibrated copies agree) and independent of the training RNG streams."""
    gen = torch.Generator().manual_seed(int(cfg.SEED) * 7919 + step)
    return DataLoader(train_set, batch_size=int(cfg.TRAIN.BATCH_SIZE_PER_GPU), shuffle=True, drop_last=True,
                      generator=gen, **loader_kwargs(cfg, device))
