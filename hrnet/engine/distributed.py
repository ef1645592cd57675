"""DDP plumbing for ``torchrun``: process group set-up, the device, sharding and gathering.

``torchrun --nproc_per_node N tools/train.py ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; without them everything here degrades to a single process (rank 0 of 1).
The backend is nccl on CUDA and gloo on CPU (the tests run 2 gloo processes on CPU).
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from hrnet.runtime.device import select_device

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "all_gather_object",
           "broadcast_buffers", "all_reduce_sum", "ShardSampler", "merge_shards"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, its ``device``."""
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files, TensorBoard events and progress bars."""
        return self.rank == 0


def init_distributed(device: str = "auto", timeout_min: float = 30.0) -> DistInfo:
    """Join the ``torchrun`` process group when ``WORLD_SIZE > 1``; the device from ``hrnet.runtime.device.select_device``.

    Idempotent: a second call returns the same description without re-initialising.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = select_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_min))
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_object(obj: Any) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]``; ``[obj]`` in a single process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (no-op in a single process); returns ``tensor``."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``src``'s buffers (BN running statistics) to every rank.

    DDP broadcasts buffers at the *start* of each forward, so after the last training step every
    rank holds slightly different BN statistics; evaluation and the saved weights use rank 0's.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for buf in module.buffers():
            dist.broadcast(buf, src)


class ShardSampler(Sampler[int]):
    """Evaluation sharding without padding: rank ``r`` takes indices ``r, r + W, r + 2W, ...``.

    Unlike ``DistributedSampler`` no sample is repeated to even out the shards, so the gathered
    results cover the dataset exactly once (losses and metrics equal the single-process ones).
    """

    def __init__(self, length: int, rank: int, world_size: int) -> None:
        self.length, self.rank, self.world_size = int(length), int(rank), int(world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.length, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.length, self.world_size))


def merge_shards(shards: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Reassemble per-rank ``hrnet.evaluation.evaluate.run_inference`` outputs in dataset order.

    :class:`ShardSampler` gives rank ``r`` the indices ``r, r + W, ...`` without padding, so item
    ``i`` is item ``i // W`` of rank ``i % W``: the merged arrays equal a single-process run's.
    Per-item arrays (first dimension = the shard's item count) are interleaved, ``loss_sum`` and
    ``count`` summed, anything else taken from rank 0.
    """
    if len(shards) == 1:
        return shards[0]
    world = len(shards)
    n = sum(len(s["ann_id"]) for s in shards)
    merged: Dict[str, Any] = {}
    for key, value in shards[0].items():
        if isinstance(value, np.ndarray) and value.ndim >= 1 and len(value) == len(shards[0]["ann_id"]):
            out = np.empty((n,) + value.shape[1:], dtype=value.dtype)
            for r, s in enumerate(shards):
                out[r::world] = s[key]
            merged[key] = out
        elif key in ("loss_sum", "count"):
            merged[key] = sum(s[key] for s in shards)
        else:
            merged[key] = value
    distinct = len(np.unique(merged["ann_id"]))
    if distinct != n:
        _logger.warning("validation: %d predictions but only %d distinct annotation ids", n, distinct)
    return merged
