"""The training loop: model + data + optimizer + evaluator, TensorBoard, checkpoints, resume, DDP.

``Trainer(cfg).fit()`` runs one experiment into ``OUTPUT_DIR/<EXPERIMENT_NAME>/``:

* ``config.yaml`` (the resolved config), ``train.log``, TensorBoard event files,
* ``checkpoint_latest.pth`` (everything needed to resume, saved after every epoch),
* ``model_best.pth`` (the evaluated weights with the lowest valid NME),
* ``metrics.json`` (status, final and best NME, epoch of the best, wall time, final metrics,
  per-epoch history; rewritten after every epoch).

Step semantics (TensorBoard ``step``, ``best_epoch``, ``epoch`` in checkpoints): **step = number of
completed training epochs**. Step 0 is the validation of the untrained model; training epoch
``e`` (0-based) is logged at step ``e + 1``, so a 30-epoch run has validation points 0..30 and
training points 1..30. ``train/lr`` at step ``e + 1`` is the LR of epoch ``e``'s last iteration.
``train/loss_iter`` uses the global iteration count as step (the mean loss of the last
``PRINT_FREQ`` iterations, logged every ``PRINT_FREQ`` iterations).

Exact resume: the checkpoint is written at epoch boundaries with the RNG states (python, numpy,
torch, CUDA and the DataLoader's generator, per rank); validation and BN recalibration run in a
forked RNG state with their own generators, so they never change the training trajectory, and a
resumed run reaches bitwise the same weights as an uninterrupted one on CPU. Ctrl-C / SIGTERM stop
the run at the end of the current iteration; the partial epoch is discarded, and
``checkpoint_latest.pth`` (always present once the epoch-0 validation is done) holds the last
completed epoch, from which ``--resume`` restarts that epoch. A non-finite loss stops the run before
the optimizer step, naming epoch and iteration, and leaves the checkpoints of the last good epoch.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import random
import signal
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler

from configs import experiment_name

from .checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state
from .distributed import (DistInfo, ShardSampler, all_gather_object, all_reduce_sum, broadcast_buffers,
                          init_distributed)
from .loss import JointsMSELoss

__all__ = ["Trainer", "NonFiniteLossError", "TrainingInterrupted", "seed_everything", "rng_fork",
           "LATEST", "BEST", "METRICS"]

_logger = logging.getLogger(__name__)

LATEST = "checkpoint_latest.pth"
BEST = "model_best.pth"
METRICS = "metrics.json"
_FORMAT_VERSION = 1
# Config keys that may differ between a checkpoint and the resuming run without a warning.
_RESUME_FREE_KEYS = {"TRAIN.RESUME", "TRAIN.END_EPOCH", "WORKERS", "PRINT_FREQ", "OUTPUT_DIR"}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; training stopped before the optimizer step."""


class TrainingInterrupted(Exception):
    """Raised inside the epoch loop when SIGINT/SIGTERM asked the run to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def rng_fork(generator: Optional[torch.Generator] = None) -> Iterator[None]:
    """Run the block with the global RNGs (and ``generator``) restored afterwards.

    Evaluation and BN recalibration use random numbers (augmentation, worker seeds); forking keeps
    the training trajectory independent of whether, how often or with which weights they run.
    """
    state = get_rng_state(generator)
    try:
        yield
    finally:
        set_rng_state(state, generator)


def _ignore_sigint_in_worker(worker_id: int) -> None:
    # A terminal's Ctrl-C reaches the whole process group; DataLoader workers must survive it so the
    # main process can finish its iteration and write a clean checkpoint.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _write_json(obj: Any, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


def _flat_cfg(cfg, prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flat_cfg(v, prefix + k + "."))
        else:
            out[prefix + k] = v
    return out


class Trainer:
    """One experiment: ``Trainer(cfg).fit()``; see the module docstring for files and semantics.

    Args:
        cfg: the (frozen) config from ``configs.load_config``.
        resume: overrides ``cfg.TRAIN.RESUME`` when not None.
    """

    def __init__(self, cfg, resume: Optional[bool] = None) -> None:
        self.cfg = cfg
        self.resume = bool(cfg.TRAIN.RESUME if resume is None else resume)
        self.run_dir = os.path.join(cfg.OUTPUT_DIR, experiment_name(cfg))
        self.dist: Optional[DistInfo] = None
        self.writer = None
        self._stop_signal: Optional[int] = None
        self._old_handlers: Dict[int, Any] = {}
        self._log_handlers: List[logging.Handler] = []
        self.history: List[Dict[str, Any]] = []
        self.best_nme = math.inf
        self.best_epoch = -1
        self.epoch = 0  # completed training epochs
        self.global_step = 0  # completed training iterations
        self.wall_offset = 0.0  # wall time of earlier sessions of this run (resume)
        self.status = "running"

    # ------------------------------------------------------------------ set-up
    def _setup_logging(self) -> None:
        root = logging.getLogger()
        self._old_root_level = root.level
        root.setLevel(logging.INFO)
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(fmt)
        if not self.dist.is_main:
            stream.setLevel(logging.WARNING)
            stream.setFormatter(logging.Formatter(f"[rank {self.dist.rank}] %(levelname)s %(message)s"))
        handlers: List[logging.Handler] = [stream]
        if self.dist.is_main:
            fh = logging.FileHandler(os.path.join(self.run_dir, "train.log"))
            fh.setFormatter(fmt)
            handlers.append(fh)
        for h in handlers:
            root.addHandler(h)
        self._log_handlers = handlers

    def _teardown_logging(self) -> None:
        root = logging.getLogger()
        for h in self._log_handlers:
            root.removeHandler(h)
            h.close()
        self._log_handlers = []
        root.setLevel(getattr(self, "_old_root_level", logging.WARNING))

    def _on_signal(self, signum: int, frame) -> None:
        # Only set a flag (no I/O in a signal handler); the loop checks it after each iteration.
        # A second Ctrl-C aborts at once (the checkpoint on disk is complete: saves are atomic).
        self._stop_signal = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers = {}

    def _setup_device(self) -> None:
        cfg = self.cfg
        if cfg.DETERMINISTIC:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        else:
            torch.backends.cudnn.benchmark = bool(cfg.CUDNN.BENCHMARK)
        self.device = self.dist.device
        dtype = torch.bfloat16 if cfg.AMP.DTYPE == "bf16" else torch.float16
        amp = bool(cfg.AMP.ENABLED)
        if amp and self.device.type == "cpu" and dtype != torch.bfloat16:
            _logger.warning("AMP.DTYPE fp16 is CUDA-only; training in float32 on CPU")
            amp = False
        self.amp_dtype = dtype if amp else None
        self.scaler = None
        if amp and dtype == torch.float16:
            # torch.amp.GradScaler since torch 2.3; torch.cuda.amp.GradScaler before
            self.scaler = torch.amp.GradScaler("cuda") if hasattr(torch.amp, "GradScaler") \
                else torch.cuda.amp.GradScaler()

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _loader_kwargs(self) -> Dict[str, Any]:
        workers = int(self.cfg.WORKERS)
        kw: Dict[str, Any] = {"num_workers": workers, "pin_memory": self.device.type == "cuda"}
        if workers > 0:
            # Not persistent: each epoch's workers are seeded from the loader generator, which the
            # checkpoint stores, so a resumed epoch gets the same augmentation as the original.
            kw.update(worker_init_fn=_ignore_sigint_in_worker, prefetch_factor=4)
        return kw

    def _build_data(self) -> None:
        from data import build_dataset

        cfg, d = self.cfg, self.dist
        if d.is_main:
            self.train_set = build_dataset(cfg, is_train=True)
        # Rank 0 builds first: a synthetic dataset is rendered once, not by every rank at once.
        self._barrier()
        if not d.is_main:
            self.train_set = build_dataset(cfg, is_train=True)
        self.valid_set = build_dataset(cfg, is_train=False)
        batch = int(cfg.TRAIN.BATCH_SIZE_PER_GPU)
        self.generator = torch.Generator()
        self.generator.manual_seed(int(cfg.SEED) + d.rank)
        self.train_sampler = None
        if d.distributed:
            self.train_sampler = DistributedSampler(self.train_set, num_replicas=d.world_size, rank=d.rank,
                                                    shuffle=bool(cfg.TRAIN.SHUFFLE), seed=int(cfg.SEED),
                                                    drop_last=True)
        self.train_loader = DataLoader(
            self.train_set, batch_size=batch, sampler=self.train_sampler,
            shuffle=bool(cfg.TRAIN.SHUFFLE) if self.train_sampler is None else None,
            drop_last=True, generator=self.generator, **self._loader_kwargs())
        if len(self.train_loader) == 0:
            raise ValueError(f"the training set has {len(self.train_set)} samples, fewer than one batch "
                             f"(TRAIN.BATCH_SIZE_PER_GPU {batch} x {d.world_size} process(es))")
        if len(self.valid_set) == 0:
            raise ValueError(f"the validation set ({cfg.DATASET.TESTSET}) is empty")
        self.valid_loader = DataLoader(
            self.valid_set, batch_size=int(cfg.TEST.BATCH_SIZE_PER_GPU),
            sampler=ShardSampler(len(self.valid_set), d.rank, d.world_size), shuffle=False,
            drop_last=False, generator=torch.Generator().manual_seed(int(cfg.SEED)), **self._loader_kwargs())

    def _build_model_and_optimizer(self) -> None:
        from hrnet import build_model
        from optim import build_optimizer, build_scheduler, build_warmup

        cfg = self.cfg
        model = build_model(cfg).to(self.device)  # channels_last per cfg.CHANNELS_LAST (build_model)
        self.raw_model = model
        self.criterion = JointsMSELoss(use_target_weight=True).to(self.device)
        if self.dist.distributed:
            self.model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        else:
            self.model = model
        self.optimizer = build_optimizer(cfg, self.raw_model)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.warmup = build_warmup(cfg, self.optimizer)
        self.lookahead = hasattr(self.optimizer, "slow_weights")

    def _barrier(self) -> None:
        if self.dist.distributed:
            torch.distributed.barrier()

    # ------------------------------------------------------------------ checkpoints
    def _rng_states(self) -> List[Dict[str, Any]]:
        """Every rank's RNG state (collective: all ranks call it)."""
        return all_gather_object(get_rng_state(self.generator))

    def _save_latest(self, rng_states: List[Dict[str, Any]]) -> None:
        if not self.dist.is_main:
            return
        state = {
            "format_version": _FORMAT_VERSION,
            "epoch": self.epoch,
            "global_step": self.global_step,
            "state_dict": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "warmup": self.warmup.state_dict() if self.warmup is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "best_nme": self.best_nme,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "rng": rng_states,
            "world_size": self.dist.world_size,
            "wall_time": self._wall_time(),
            "config": self.cfg.dump(),
        }
        save_checkpoint(state, os.path.join(self.run_dir, LATEST))

    def _load_latest(self, path: str) -> None:
        ck = load_checkpoint(path, map_location="cpu")
        if ck.get("format_version") != _FORMAT_VERSION:
            raise ValueError(f"{path}: checkpoint format {ck.get('format_version')!r}, expected {_FORMAT_VERSION}")
        self._warn_config_changes(ck.get("config", ""), path)
        self.raw_model.load_state_dict(ck["state_dict"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        if self.warmup is not None and ck.get("warmup") is not None:
            self.warmup.load_state_dict(ck["warmup"])
        if self.scaler is not None and ck.get("scaler") is not None:
            self.scaler.load_state_dict(ck["scaler"])
        self.epoch = int(ck["epoch"])
        self.global_step = int(ck["global_step"])
        self.best_nme = float(ck["best_nme"])
        self.best_epoch = int(ck["best_epoch"])
        self.history = list(ck["history"])
        self.wall_offset = float(ck["wall_time"])
        rng = ck["rng"]
        if len(rng) != self.dist.world_size:
            _logger.warning("%s was written by %d process(es), resuming with %d: RNG streams restart, "
                            "the run is not bitwise identical to an uninterrupted one",
                            path, len(rng), self.dist.world_size)
        set_rng_state(rng[self.dist.rank % len(rng)], self.generator)
        _logger.info("resumed from %s: %d/%d epochs done, best NME %.5f at epoch %d",
                     path, self.epoch, self.cfg.TRAIN.END_EPOCH, self.best_nme, self.best_epoch)

    def _warn_config_changes(self, old_yaml: str, path: str) -> None:
        if not old_yaml:
            return
        from yacs.config import CfgNode

        old = _flat_cfg(CfgNode.load_cfg(old_yaml))
        new = _flat_cfg(self.cfg)
        changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
                   if k not in _RESUME_FREE_KEYS and old.get(k) != new.get(k)]
        if changed:
            _logger.warning("resuming %s with a changed config (%s)", path, "; ".join(changed))

    # ------------------------------------------------------------------ bookkeeping
    def _wall_time(self) -> float:
        return self.wall_offset + (time.time() - self._session_start)

    def _hparams(self) -> Dict[str, Any]:
        cfg = self.cfg
        name = cfg.TRAIN.OPTIMIZER.lower()
        hp: Dict[str, Any] = {
            "optimizer": name, "lr": float(cfg.TRAIN.LR),
            "inner": cfg.TRAIN.LOOKAHEAD.INNER.lower() if name == "lookahead" else name,
            "batch": int(cfg.TRAIN.BATCH_SIZE_PER_GPU) * self.dist.world_size, "seed": int(cfg.SEED),
            "wd": float(cfg.TRAIN.WD), "epochs": int(cfg.TRAIN.END_EPOCH), "model": cfg.MODEL.NAME,
        }
        if name == "lookahead":
            hp.update(k=int(cfg.TRAIN.LOOKAHEAD.K), alpha=float(cfg.TRAIN.LOOKAHEAD.ALPHA))
        return hp

    def _write_hparams(self, finished: bool = False) -> None:
        """The HPARAMS-tab session of this run, written into the run's own folder (not a sub-run).

        At the start: the hyperparameters and the metric tags; when the run finishes: the
        session's end (status success). The metrics are existing scalar tags, for which TensorBoard
        shows the latest value: the final NME / losses and the best NME.
        """
        from torch.utils.tensorboard.summary import hparams

        metrics = {"valid/NME": 0.0, "hparam/best_NME": 0.0, "valid/loss": 0.0, "train/loss": 0.0}
        experiment, start, end = hparams(self._hparams(), metrics)
        for summary in ([end] if finished else [experiment, start]):
            self.writer.file_writer.add_summary(summary)

    def _metrics_summary(self) -> Dict[str, Any]:
        last = self.history[-1] if self.history else {}
        final = {k: _jsonable(v) for k, v in last.get("metrics", {}).items()}
        return {
            "experiment": experiment_name(self.cfg),
            "status": self.status,
            "epochs_completed": self.epoch,
            "end_epoch": int(self.cfg.TRAIN.END_EPOCH),
            "final_NME": last.get("NME"),
            "best_NME": self.best_nme if math.isfinite(self.best_nme) else None,
            "best_epoch": self.best_epoch,
            "untrained_NME": self.history[0]["NME"] if self.history else None,
            "final_valid_loss": last.get("valid_loss"),
            "final_train_loss": last.get("train_loss"),
            "wall_time_s": round(self._wall_time(), 2),
            "final": final,
            "hparams": self._hparams(),
            "world_size": self.dist.world_size,
            "history": [{k: v for k, v in h.items() if k != "metrics"} for h in self.history],
        }

    def _write_metrics(self) -> Dict[str, Any]:
        """Write ``metrics.json`` (rank 0); returns its content."""
        summary = self._metrics_summary()
        if self.dist.is_main:
            _write_json(summary, os.path.join(self.run_dir, METRICS))
        return summary

    # ------------------------------------------------------------------ evaluation
    def _recalibrated_copy(self, model: nn.Module, step: int) -> nn.Module:
        """A copy of ``model`` whose BN statistics are recomputed on training batches.

        Cumulative averages (``momentum=None``) over ``TRAIN.LOOKAHEAD.BN_RECALIBRATE_BATCHES``
        augmented training batches; every rank uses the same batches, so the copies agree. The
        training model is untouched.
        """
        n = int(self.cfg.TRAIN.LOOKAHEAD.BN_RECALIBRATE_BATCHES)
        copy_model = copy.deepcopy(model)
        bns = [m for m in copy_model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
        gen = torch.Generator().manual_seed(int(self.cfg.SEED) * 7919 + step)
        loader = DataLoader(self.train_set, batch_size=int(self.cfg.TRAIN.BATCH_SIZE_PER_GPU), shuffle=True,
                            drop_last=True, generator=gen, **self._loader_kwargs())
        copy_model.train()
        with torch.no_grad(), self._autocast():
            for i, batch in enumerate(loader):
                if i >= n:
                    break
                copy_model(self._to_device_images(batch["image"]))
        copy_model.eval()
        return copy_model

    def _validate(self, step: int) -> Dict[str, Any]:
        """Validation NME / loss at ``step``; saves ``model_best.pth`` on a new best (all ranks call)."""
        from hrnet.evaluate import run_inference
        from hrnet.metrics import compute_metrics

        cfg, raw = self.cfg, self.raw_model
        broadcast_buffers(raw)
        use_slow = self.lookahead and cfg.TRAIN.LOOKAHEAD.EVAL_WEIGHTS == "slow"
        weights = "slow" if use_slow else ("fast" if self.lookahead else "model")
        t0 = time.time()
        with rng_fork(), (self.optimizer.slow_weights() if use_slow else contextlib.nullcontext()):
            eval_model = raw
            if use_slow and int(cfg.TRAIN.LOOKAHEAD.BN_RECALIBRATE_BATCHES) > 0:
                eval_model = self._recalibrated_copy(raw, step)
                weights = "slow+bn"
            # run_inference switches to eval mode, inference_mode, channels_last and cfg.AMP itself.
            out = run_inference(eval_model, self.valid_loader, cfg, self.device, criterion=self.criterion,
                                progress=self.dist.is_main and sys.stderr.isatty())
            merged = self._merge_shards(all_gather_object(out))
            metrics = compute_metrics(merged["preds"], merged["joints"], merged["bbox"], cfg)
            nme = float(metrics["NME"])
            valid_loss = float(merged["loss_sum"]) / max(int(merged["count"]), 1)
            is_best = nme < self.best_nme
            if is_best:
                self.best_nme, self.best_epoch = nme, step
                if self.dist.is_main:
                    save_checkpoint({"state_dict": eval_model.state_dict(), "epoch": step, "NME": nme,
                                     "eval_weights": weights, "config": cfg.dump()},
                                    os.path.join(self.run_dir, BEST))
        return {"NME": nme, "valid_loss": valid_loss, "metrics": metrics, "is_best": is_best,
                "eval_weights": weights, "time": time.time() - t0}

    def _merge_shards(self, shards: List[Dict[str, Any]]) -> Dict[str, Any]:
        """Reassemble per-rank ``run_inference`` outputs in dataset order.

        ``ShardSampler`` gives rank ``r`` the indices ``r, r + W, ...`` without padding, so item
        ``i`` is item ``i // W`` of rank ``i % W``: the merged arrays equal a single-process run's.
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
        if len(np.unique(merged["ann_id"])) != n:
            _logger.warning("validation: %d predictions but only %d distinct annotation ids",
                            n, len(np.unique(merged["ann_id"])))
        return merged

    # ------------------------------------------------------------------ training
    def _to_device_images(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        if self.cfg.CHANNELS_LAST:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def _current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _train_one_epoch(self, epoch: int) -> Dict[str, float]:
        """Train epoch ``epoch`` (0-based); returns mean loss, time, throughput."""
        from tqdm import tqdm

        cfg, d = self.cfg, self.dist
        self.model.train()
        if self.train_sampler is not None:
            self.train_sampler.set_epoch(epoch)
        if int(cfg.WORKERS) == 0:
            # The dataset seeds its augmentation stream from torch.initial_seed() (in a worker:
            # base_seed + id, drawn from the loader generator each epoch). Without workers, do the
            # same in this process, so each epoch's augmentation follows from the checkpointed
            # generator state and a resumed run repeats it exactly.
            torch.manual_seed(int(torch.empty((), dtype=torch.int64).random_(generator=self.generator).item()))
        n_iter = len(self.train_loader)
        global_batch = int(cfg.TRAIN.BATCH_SIZE_PER_GPU) * d.world_size
        warmup_iters = int(cfg.TRAIN.WARMUP_ITERS)
        clip = float(cfg.TRAIN.CLIP_GRAD_NORM)
        print_freq = max(int(cfg.PRINT_FREQ), 1)
        # A live bar on a terminal; in a log file (nohup, sweeps) a plain progress line every minute.
        tty = sys.stderr.isatty()
        bar = tqdm(total=n_iter * global_batch, unit="img", disable=not (d.is_main and tty), leave=False,
                   dynamic_ncols=True, desc=f"epoch {epoch + 1}/{cfg.TRAIN.END_EPOCH}", file=sys.stderr)
        next_report = time.time() + 60.0
        loss_sum, window, data_time = 0.0, [], 0.0
        t0 = t_data = time.time()
        try:
            for it, batch in enumerate(self.train_loader):
                data_time += time.time() - t_data
                images = self._to_device_images(batch["image"])
                target = batch["target"].to(self.device, non_blocking=True)
                target_weight = batch["target_weight"].to(self.device, non_blocking=True)
                with self._autocast():
                    output = self.model(images)
                loss = self.criterion(output, target, target_weight)
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
                # One small collective carries the loss and the stop request: every rank sees the same
                # values and stops at the same iteration (no rank left waiting in an all-reduce).
                stats = torch.stack([loss.detach().float(),
                                     torch.tensor(float(self._stop_signal is not None), device=loss.device)])
                stats = all_reduce_sum(stats).cpu()
                loss_val = float(stats[0]) / d.world_size
                if not math.isfinite(loss_val):
                    raise NonFiniteLossError(
                        f"non-finite training loss ({loss_val}) at epoch {epoch + 1}/{cfg.TRAIN.END_EPOCH} "
                        f"(0-based {epoch}), iteration {it + 1}/{n_iter} (global iteration {self.global_step + 1}); "
                        f"no optimizer step was taken. {LATEST} and {BEST} keep the state after epoch "
                        f"{self.epoch}. Lower TRAIN.LR, set TRAIN.CLIP_GRAD_NORM or TRAIN.WARMUP_ITERS.")
                if self.scaler is not None:
                    if clip > 0:
                        self.scaler.unscale_(self.optimizer)
                        torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), clip)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    if clip > 0:
                        torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), clip)
                    self.optimizer.step()
                if self.warmup is not None and self.global_step < warmup_iters:
                    self.warmup.step()
                self.global_step += 1
                loss_sum += loss_val
                window.append(loss_val)
                if self.global_step % print_freq == 0:
                    if self.writer is not None:
                        self.writer.add_scalar("train/loss_iter", sum(window) / len(window), self.global_step)
                    window = []
                bar.update(global_batch)
                bar.set_postfix(loss=f"{loss_val:.3e}", refresh=False)
                if d.is_main and not tty and time.time() >= next_report:
                    next_report += 60.0
                    rate = (it + 1) * global_batch / (time.time() - t0)
                    _logger.info("epoch %d/%d: %d/%d iterations | loss %.4e | %.1f img/s | epoch ETA %.1f min",
                                 epoch + 1, cfg.TRAIN.END_EPOCH, it + 1, n_iter, loss_val, rate,
                                 (n_iter - it - 1) * global_batch / rate / 60)
                if stats[1] > 0:
                    raise TrainingInterrupted(self._stop_signal or signal.SIGTERM)
                t_data = time.time()
        finally:
            bar.close()
        elapsed = time.time() - t0
        return {"train_loss": loss_sum / n_iter, "train_time": elapsed, "data_time": data_time,
                "img_per_s": n_iter * global_batch / max(elapsed, 1e-9)}

    # ------------------------------------------------------------------ the run
    def _log_step(self, step: int, train: Optional[Dict[str, float]], val: Dict[str, Any],
                  lr: Optional[float]) -> None:
        entry: Dict[str, Any] = {"epoch": step, "NME": val["NME"], "valid_loss": val["valid_loss"],
                                 "best_NME": self.best_nme, "eval_weights": val["eval_weights"],
                                 "metrics": {k: _jsonable(v) for k, v in val["metrics"].items()
                                             if not (isinstance(v, np.ndarray) and v.ndim and len(v) > 64)}}
        if train is not None:
            entry.update(train_loss=train["train_loss"], lr=lr, img_per_s=train["img_per_s"])
        entry["wall_time"] = self._wall_time()
        self.history.append(entry)
        if self.writer is not None:
            w = self.writer
            w.add_scalar("valid/NME", val["NME"], step)
            w.add_scalar("valid/loss", val["valid_loss"], step)
            w.add_scalar("hparam/best_NME", self.best_nme, step)
            for key in ("failure_rate@0.1", "PCK@0.2", "AUC", "EPE"):
                if key in val["metrics"]:
                    w.add_scalar(f"valid/{key}", float(val["metrics"][key]), step)
            if train is not None:
                w.add_scalar("train/loss", train["train_loss"], step)
                w.add_scalar("train/lr", lr, step)
                w.add_scalar("train/img_per_s", train["img_per_s"], step)
            w.flush()
        best = " *" if val["is_best"] else ""
        if train is None:
            _logger.info("epoch 0 (untrained) | valid loss %.4e | NME %.5f | %s weights | eval %.1fs",
                         val["valid_loss"], val["NME"], val["eval_weights"], val["time"])
        else:
            _logger.info("epoch %d/%d | train loss %.4e | valid loss %.4e | NME %.5f%s (best %.5f @ %d) | lr %.2e "
                         "| train %.1fs %.1f img/s (data wait %.0f%%) | eval %.1fs",
                         step, self.cfg.TRAIN.END_EPOCH, train["train_loss"], val["valid_loss"], val["NME"], best,
                         self.best_nme, self.best_epoch, lr, train["train_time"], train["img_per_s"],
                         100.0 * train["data_time"] / max(train["train_time"], 1e-9), val["time"])

    def _prepare_run_dir(self) -> Optional[str]:
        """Create the run folder; the checkpoint to resume from, or None for a fresh run."""
        latest = os.path.join(self.run_dir, LATEST)
        exists = os.path.isfile(latest)
        if self.resume:
            if exists:
                return latest
            _logger.warning("resume requested but %s does not exist: starting from scratch", latest)
            return None
        if exists:
            raise FileExistsError(
                f"{self.run_dir} already holds a run ({LATEST}); continue it with --resume (or TRAIN.RESUME True), "
                f"or remove the folder, or set EXPERIMENT_NAME / OUTPUT_DIR to start a new one")
        return None

    def fit(self) -> Dict[str, Any]:
        """Run the experiment; returns the ``metrics.json`` content.

        Raises ``NonFiniteLossError`` when the loss diverges. On SIGINT/SIGTERM returns with
        ``status == "interrupted"`` and ``signal`` set (``tools/train.py`` exits with 128 + signal).
        """
        cfg = self.cfg
        self._session_start = time.time()
        self.dist = init_distributed(cfg.DEVICE)
        resume_from, error = None, None
        if self.dist.is_main:
            os.makedirs(self.run_dir, exist_ok=True)
            try:
                resume_from = self._prepare_run_dir()
            except FileExistsError as exc:
                error = str(exc)
        resume_from, error = all_gather_object((resume_from, error))[0]  # every rank agrees
        if error:
            raise FileExistsError(error)
        self._setup_logging()
        self._setup_device()
        seed_everything(int(cfg.SEED) + self.dist.rank)
        try:
            if self.dist.is_main:
                with open(os.path.join(self.run_dir, "config.yaml"), "w") as f:
                    f.write(cfg.dump())
                _logger.info("run %s -> %s (config.yaml, train.log, TensorBoard events, %s, %s, %s); "
                             "device %s x %d; watch: tensorboard --logdir %s", experiment_name(cfg),
                             os.path.abspath(self.run_dir), LATEST, BEST, METRICS, self.device,
                             self.dist.world_size, cfg.OUTPUT_DIR)
            self._build_data()
            self._build_model_and_optimizer()
            if resume_from:
                self._load_latest(resume_from)
            # From here on Ctrl-C / SIGTERM end the run cleanly (earlier they abort the set-up at once).
            self._install_signal_handlers()
            if self.dist.is_main:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=self.run_dir)
                if not resume_from:
                    self._write_hparams()
            _logger.info("train %d samples (%d iterations/epoch), valid %d samples; optimizer %s, lr %g, %d epochs",
                         len(self.train_set), len(self.train_loader), len(self.valid_set), cfg.TRAIN.OPTIMIZER,
                         cfg.TRAIN.LR, cfg.TRAIN.END_EPOCH)
            if not resume_from:
                if cfg.TRAIN.BEGIN_EPOCH:
                    _logger.warning("TRAIN.BEGIN_EPOCH %d ignored: a fresh run starts at epoch 0 "
                                    "(resume continues from the checkpoint's epoch)", cfg.TRAIN.BEGIN_EPOCH)
                val = self._validate(0)
                self._log_step(0, None, val, None)
                self._save_latest(self._rng_states())
                self._write_metrics()
            for epoch in range(self.epoch, int(cfg.TRAIN.END_EPOCH)):
                if self._stop_signal is not None:
                    raise TrainingInterrupted(self._stop_signal)
                train = self._train_one_epoch(epoch)
                lr = self._current_lr()
                self.scheduler.step()
                self.epoch = epoch + 1
                val = self._validate(self.epoch)
                self._log_step(self.epoch, train, val, lr)
                self._save_latest(self._rng_states())
                self._write_metrics()
            self.status = "finished"
            summary = self._write_metrics()
            if self.writer is not None:
                self._write_hparams(finished=True)
            _logger.info("finished %s in %.1f min: final NME %.5f, best NME %.5f at epoch %d -> %s",
                         experiment_name(cfg), self._wall_time() / 60, self.history[-1]["NME"], self.best_nme,
                         self.best_epoch, os.path.abspath(self.run_dir))
            return summary
        except TrainingInterrupted as exc:
            self.status = "interrupted"
            summary = self._write_metrics()
            _logger.warning("%s: stopped during epoch %d; %s holds the state after %d completed epoch(s) "
                            "(the partial epoch is discarded); continue with --resume", exc, self.epoch + 1,
                            os.path.join(self.run_dir, LATEST), self.epoch)
            return dict(summary, signal=exc.signum)
        except NonFiniteLossError as exc:
            self.status = "diverged"
            self._write_metrics()
            _logger.error("%s", exc)
            raise
        finally:
            if self.writer is not None:
                self.writer.close()
                self.writer = None
            self._restore_signal_handlers()
            self._teardown_logging()
