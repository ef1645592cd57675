"""DDP plumbing for ``torchrun``: process group set-up, the device, sharding and gathering.

``torchrun --nproc_per_node N tools/train.py ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; without them everything here degrades to a single process (rank 0 of 1).
The backend is nccl on CUDA and gloo on CPU (the tests run 2 gloo processes on CPU).
Every rank must train one model: :func:`broadcast_module` before anything copies the parameters,
:func:`check_training_replicas` (hashes of every rank's state compared) at each checkpoint.
"""
from __future__ import annotations

import datetime
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Iterator, List, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from configs import ConfigError

from hrnet.engine.run_record import FILE_ONLY
from hrnet.runtime.device import select_device

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "all_gather_object", "broadcast_buffers",
           "broadcast_module", "all_reduce_sum", "fingerprint", "ReplicaMismatchError", "check_replicas_agree",
           "check_training_replicas", "check_resume_world_size", "ShardSampler", "merge_shards"]

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


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers to every rank (no-op in a single process).

    Call it before anything is derived from the parameters (an optimizer's state, Lookahead's slow
    weights): DDP broadcasts rank 0's parameters only when it wraps the model, too late for those.
    """
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        with torch.no_grad():
            for t in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(t.data, src)


def fingerprint(tensors: Iterable[torch.Tensor]) -> str:
    """SHA-1 of the tensors' bytes, in order (shape and dtype included): equal iff bitwise equal."""
    h = hashlib.sha1()
    for t in tensors:
        t = t.detach()
        h.update(f"{tuple(t.shape)}{t.dtype};".encode())
        h.update(t.contiguous().view(-1).view(torch.uint8).cpu().numpy().tobytes())
    return h.hexdigest()


class ReplicaMismatchError(RuntimeError):
    """DDP replicas that should hold the same tensors do not."""


def check_replicas_agree(groups: Dict[str, Sequence[torch.Tensor]]) -> Dict[str, str]:
    """``{name: fingerprint}`` of each group of tensors, the same on every rank (a collective: all
    ranks call it). Raises :class:`ReplicaMismatchError` naming the groups whose ranks differ."""
    mine = {name: fingerprint(tensors) for name, tensors in groups.items()}
    ranks = all_gather_object(mine)
    differ = [name for name in mine if len({r[name] for r in ranks}) > 1]
    if differ:
        raise ReplicaMismatchError(f"DDP replicas differ in {', '.join(differ)}: "
                                   + "; ".join(f"rank {i} {', '.join(r[n][:12] for n in differ)}"
                                               for i, r in enumerate(ranks)))
    return mine


def check_training_replicas(model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> Dict[str, str]:
    """:func:`check_replicas_agree` of what must be equal on every DDP rank between steps: the weights and
    BN statistics (once ``broadcast_buffers`` ran), the optimizer state and, for Lookahead, the slow
    weights; logs the fingerprints of ``step`` (train.log only)."""
    opt = optimizer.state_dict()
    groups = {"weights": list(model.state_dict().values()),
              "optimizer state": [t for _, st in sorted(opt["state"].items()) for _, t in sorted(st.items())
                                  if torch.is_tensor(t)]}
    if "lookahead" in opt:
        slow = opt["lookahead"]["slow_weights"]
        groups["slow weights"] = [slow[i] for i in sorted(slow)]
    prints = check_replicas_agree(groups)
    _logger.info("step %d: the %d DDP replicas agree: %s", step, dist.get_world_size(),
                 ", ".join(f"{k} sha1 {v[:12]}" for k, v in prints.items()), extra=FILE_ONLY)
    return prints


def check_resume_world_size(checkpoint: Dict[str, Any], world_size: int, cfg, path: str) -> None:
    """``ConfigError`` when ``checkpoint`` (at ``path``) was trained by another number of processes: another
    global batch (and data order) is another run, not a continuation."""
    saved = int(checkpoint.get("world_size", len(checkpoint["rng"])))
    if saved != world_size:
        batch = int(cfg.TRAIN.BATCH_SIZE_PER_GPU)
        raise ConfigError(f"cannot resume {path}: trained by {saved} process(es) (global batch {saved * batch}), "
                          f"resumed by {world_size} ({world_size * batch}); resume with {saved} process(es) or "
                          f"start a new run (EXPERIMENT_NAME)")


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
