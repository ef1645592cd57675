"""The training loop: ``Trainer(cfg).fit()`` trains one experiment into ``OUTPUT_DIR/<EXPERIMENT_NAME>/``.

The run folder's files and steps (**step = completed training epochs**, 0 = untrained) are
``hrnet.engine.run_record``'s; the checkpoint schema is ``hrnet.runtime.checkpoint``'s; the data sets and
loaders ``hrnet.engine.loaders``'. Order of work: model, optimizer and schedules first (a config typo
fails before any file or image is touched), then the run folder (a new run refuses another run's
files but replaces one that stopped before completing an epoch; a resume refuses a changed
config), then the data.

Exact resume: checkpoints at epoch boundaries hold every RNG state (per rank); validation and BN
recalibration run in a forked RNG state, so a resumed run reaches bitwise the same weights as an
uninterrupted one on CPU. Ctrl-C / SIGTERM stop at the end of the current iteration and discard the
partial epoch (``--resume`` restarts it). A non-finite loss stops before the optimizer step and
keeps the last good epoch's checkpoints; any other exception ends with status ``failed`` and the
error, with its traceback, in train.log.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import time
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from configs import ConfigError, experiment_name

from hrnet.engine import run_record as rr
from hrnet.engine.distributed import all_gather_object, all_reduce_sum, init_distributed
from hrnet.engine.loaders import RunData, build_run_data
from hrnet.engine.progress import EpochProgress
from hrnet.engine.run_record import BEST, LATEST, METRICS
from hrnet.engine.signals import StopRequest, TrainingInterrupted
from hrnet.engine.validation import ValidationMixin
from hrnet.models.loss import JointsMSELoss, NonFiniteLossError
from hrnet.runtime.checkpoint import (CheckpointError, clean_stale_tmp, get_rng_state, jsonable, load_training_state,
                                      restore_training_state, save_checkpoint, seed_everything, set_rng_state,
                                      training_state)
from hrnet.runtime.device import amp_policy_from_cfg, configure_backends, describe_machine

__all__ = ["Trainer", "NonFiniteLossError", "TrainingInterrupted", "LATEST", "BEST", "METRICS"]

_logger = logging.getLogger(__name__)


class Trainer(ValidationMixin):
    """One experiment: ``Trainer(cfg).fit()``; see the module docstring for the order of work.

    Args:
        cfg: the (frozen) config from ``configs.load_config``.
        resume: overrides ``cfg.TRAIN.RESUME`` when not None.
    """

    def __init__(self, cfg, resume: Optional[bool] = None) -> None:
        self.cfg = cfg
        self.resume = bool(cfg.TRAIN.RESUME if resume is None else resume)
        self.run_dir = os.path.join(cfg.OUTPUT_DIR, experiment_name(cfg))
        self.writer = None
        self.stop = StopRequest()
        self.history: List[Dict[str, Any]] = []
        self.best_nme, self.best_epoch = math.inf, -1
        self.epoch = 0  # completed training epochs
        self.global_step = 0  # completed training iterations
        self.wall_offset, self.status = 0.0, "running"  # wall_offset: seconds of earlier sessions (resume)
        self.data: Optional[RunData] = None  # data sets and loaders (hrnet.engine.loaders), built after the folder
        self.claim_note = ""  # what taking the run folder did, when worth a log line (a replaced run)

    # ------------------------------------------------------------------ set-up
    def _setup_device(self) -> None:
        cfg = self.cfg
        self.dist = init_distributed(cfg.DEVICE)
        self.device = self.dist.device
        configure_backends(bool(cfg.DETERMINISTIC), bool(cfg.CUDNN.BENCHMARK))
        self.amp = amp_policy_from_cfg(cfg, self.device)
        self.scaler = self.amp.grad_scaler()  # a pass-through unless fp16

    def _build_model_and_optimizer(self) -> None:
        """Model, loss, optimizer, LR schedule, warm-up: cheap, and where every TRAIN.* / MODEL.* check lives."""
        from optim import build_optimizer, build_scheduler, build_warmup

        from hrnet.models.hrnet import build_model

        cfg = self.cfg
        try:
            model = build_model(cfg).to(self.device)  # channels_last per cfg.CHANNELS_LAST (build_model)
            self.optimizer = build_optimizer(cfg, model)
            self.scheduler = build_scheduler(cfg, self.optimizer)
            self.warmup = build_warmup(cfg, self.optimizer)
        except ValueError as exc:  # the builders' checks name the key: a config error, reported in one line
            raise ConfigError(str(exc)) from exc
        self.raw_model = model
        self.criterion = JointsMSELoss(use_target_weight=True).to(self.device)
        self.model = model
        if self.dist.distributed:
            self.model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.lookahead = hasattr(self.optimizer, "slow_weights")

    def _claim_run_dir(self) -> Optional[Dict[str, Any]]:
        """The checkpoint to resume (or None); refuses another run's folder and a changed config, and
        replaces a run that stopped before completing an epoch (``rr.check_run_dir``).
        Rank 0 decides; every rank gets the same answer or the same error."""
        checkpoint, error = None, None
        if self.dist.is_main:
            try:
                action, why = rr.check_run_dir(self.run_dir, self.resume)
                if action == rr.RESUME:
                    checkpoint = load_training_state(os.path.join(self.run_dir, LATEST), self.cfg)
                elif action == rr.REPLACE:
                    removed = rr.replace_run(self.run_dir)
                    self.claim_note = (f"replacing the run in {self.run_dir}: {why}, nothing trained to keep "
                                       f"(removed {', '.join(removed)}; {rr.LOG} keeps its log)")
            except (ConfigError, CheckpointError, OSError) as exc:
                error = exc
        error, resume = all_gather_object((error, checkpoint is not None))[0]
        if error is not None:
            raise error
        if resume and not self.dist.is_main:
            checkpoint = load_training_state(os.path.join(self.run_dir, LATEST), self.cfg)
        return checkpoint

    # ------------------------------------------------------------------ checkpoints and the run record
    def _restore_progress(self, ck: Dict[str, Any]) -> None:
        """The run's bookkeeping (epochs, best, history, time) from the checkpoint, before anything can
        fail: a resume whose set-up fails must not record its run as one without a completed epoch."""
        self.epoch, self.global_step = int(ck["epoch"]), int(ck["global_step"])
        self.best_nme, self.best_epoch = float(ck["best_nme"]), int(ck["best_epoch"])
        self.history, self.wall_offset = list(ck["history"]), float(ck["wall_time"])

    def _resume_from(self, ck: Dict[str, Any]) -> None:
        """Weights, optimizer, schedules and RNG streams from the checkpoint (after the data is built)."""
        restore_training_state(ck, model=self.raw_model, optimizer=self.optimizer, scheduler=self.scheduler,
                               warmup=self.warmup, scaler=self.scaler)
        rng = ck["rng"]
        if len(rng) != self.dist.world_size:
            _logger.warning("checkpoint of %d process(es) resumed with %d: RNG streams differ", len(rng),
                            self.dist.world_size)
        set_rng_state(rng[self.dist.rank % len(rng)], self.data.generator)
        _logger.info("resumed from %s: %d/%d epochs done, best NME %.5f at epoch %d", self.run_dir, self.epoch,
                     self.cfg.TRAIN.END_EPOCH, self.best_nme, self.best_epoch)

    def _save_latest(self) -> None:
        rng = all_gather_object(get_rng_state(self.data.generator))  # collective: every rank calls it
        if self.dist.is_main:
            save_checkpoint(training_state(
                model=self.raw_model, optimizer=self.optimizer, scheduler=self.scheduler, warmup=self.warmup,
                scaler=self.scaler, epoch=self.epoch, global_step=self.global_step, best_nme=self.best_nme,
                best_epoch=self.best_epoch, history=self.history, rng=rng, world_size=self.dist.world_size,
                wall_time=self._wall_time(), config=self.cfg.dump()), os.path.join(self.run_dir, LATEST))

    def _wall_time(self) -> float:
        return self.wall_offset + (time.time() - self._session_start)

    def _write_metrics(self) -> Dict[str, Any]:
        """Write ``metrics.json`` (rank 0); returns its content."""
        summary = rr.metrics_summary(self.cfg, self.dist.world_size, status=self.status, epochs_completed=self.epoch,
                                     best_nme=self.best_nme, best_epoch=self.best_epoch,
                                     wall_time=self._wall_time(), history=self.history,
                                     skipped=self.data.skipped if self.data is not None else (),
                                     machine=describe_machine(self.device))
        if self.dist.is_main:
            rr.write_metrics(self.run_dir, summary)
        return jsonable(summary)

    def _record(self, step: int, val: Dict[str, Any], train: Optional[Dict[str, float]] = None,
                lr: Optional[float] = None) -> None:
        """History entry, TensorBoard scalars, the epoch's log line, checkpoint and metrics.json of ``step``."""
        entry = rr.history_entry(step, val, self.best_nme, self._wall_time(), train, lr)
        self.history.append(entry)
        if self.writer is not None:
            rr.write_scalars(self.writer, entry, self.cfg)
        _logger.info("%s", rr.epoch_line(entry, int(self.cfg.TRAIN.END_EPOCH), self.best_epoch, val, train))
        self._save_latest()
        self._write_metrics()

    # ------------------------------------------------------------------ training
    def _train_step(self, batch: Dict[str, Any], epoch: int, it: int, n_iter: int) -> Tuple[float, bool]:
        """One iteration: forward, backward, loss check, clip, step; returns (mean loss over ranks, stop requested)."""
        cfg, d = self.cfg, self.dist
        images = batch["image"].to(self.device, non_blocking=True)
        if cfg.CHANNELS_LAST:
            images = images.contiguous(memory_format=torch.channels_last)
        target = batch["target"].to(self.device, non_blocking=True)
        target_weight = batch["target_weight"].to(self.device, non_blocking=True)
        with self.amp.autocast():
            output = self.model(images)
        loss = self.criterion(output, target, target_weight)  # float32 (the model's last conv and the loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        # One small collective carries the loss and the stop request: every rank sees the same
        # values and stops at the same iteration (no rank left waiting in an all-reduce).
        stats = torch.stack([loss.detach().float(),
                             torch.tensor(float(self.stop.signum is not None), device=loss.device)])
        stats = all_reduce_sum(stats).cpu()
        loss_val = float(stats[0]) / d.world_size
        if not math.isfinite(loss_val):
            raise NonFiniteLossError.at(loss_val, epoch, int(cfg.TRAIN.END_EPOCH), it, n_iter, self.global_step,
                                        f"{LATEST} and {BEST} keep the state after epoch {self.epoch}")
        clip = float(cfg.TRAIN.CLIP_GRAD_NORM)
        if clip > 0:
            self.scaler.unscale_(self.optimizer)  # no-op unless fp16
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.warmup is not None and self.global_step < int(cfg.TRAIN.WARMUP_ITERS):
            self.warmup.step()
        self.global_step += 1
        return loss_val, bool(stats[1] > 0)

    def _train_one_epoch(self, epoch: int) -> Dict[str, float]:
        """Train epoch ``epoch`` (0-based); returns mean loss, times (s), throughput (images/s)."""
        cfg, d = self.cfg, self.dist
        self.model.train()
        if self.data.train_sampler is not None:
            self.data.train_sampler.set_epoch(epoch)
        if int(cfg.WORKERS) == 0:
            # Augmentation is seeded from torch.initial_seed() (in a worker: drawn from the loader generator);
            # do the same here, so a resumed epoch repeats it exactly from the checkpointed generator.
            torch.manual_seed(int(torch.empty((), dtype=torch.int64).random_(generator=self.data.generator).item()))
        n_iter = len(self.data.train_loader)
        global_batch = int(cfg.TRAIN.BATCH_SIZE_PER_GPU) * d.world_size
        loss_sum, data_time = 0.0, 0.0
        with EpochProgress(cfg, epoch, n_iter, global_batch, d.is_main, self.writer) as progress:
            t_data = time.time()
            for it, batch in enumerate(self.data.train_loader):
                data_time += time.time() - t_data
                loss_val, stop = self._train_step(batch, epoch, it, n_iter)
                loss_sum += loss_val
                progress.update(it, loss_val, self.global_step)
                if stop:
                    raise TrainingInterrupted(self.stop.signum or signal.SIGTERM)
                t_data = time.time()
        elapsed = time.time() - progress.t0
        return {"train_loss": loss_sum / n_iter, "train_time": elapsed, "data_time": data_time,
                "img_per_s": n_iter * global_batch / max(elapsed, 1e-9)}

    # ------------------------------------------------------------------ the run
    def fit(self) -> Dict[str, Any]:
        """Run the experiment; returns the ``metrics.json`` content (plus ``signal`` when SIGINT/SIGTERM stopped
        it: status ``interrupted``). Raises ``ConfigError`` / ``FileExistsError`` before writing anything for a
        bad config or another run's folder, ``NonFiniteLossError`` on divergence."""
        cfg = self.cfg
        self._session_start = time.time()
        self._setup_device()
        seed_everything(int(cfg.SEED) + self.dist.rank)
        self._build_model_and_optimizer()  # fail fast: before any file or image is touched
        checkpoint = self._claim_run_dir()
        if self.dist.is_main:
            os.makedirs(self.run_dir, exist_ok=True)
        with rr.run_log(self.run_dir, self.dist.rank):
            if self.claim_note:
                _logger.warning("%s", self.claim_note)
            try:
                return self._run(checkpoint)
            finally:
                if self.writer is not None:
                    self.writer.close()
                    self.writer = None
                self.stop.restore()

    def _start(self, checkpoint: Optional[Dict[str, Any]]) -> None:
        """config.yaml, the data, the resumed state, the TensorBoard writer."""
        cfg = self.cfg
        if self.dist.is_main:
            with open(os.path.join(self.run_dir, rr.CONFIG), "w") as f:
                f.write(cfg.dump())
            _logger.info("run %s -> %s (%s, %s, TensorBoard events, %s, %s, %s); device %s x %d, precision %s (%s); "
                         "watch: tensorboard --logdir %s", experiment_name(cfg), os.path.abspath(self.run_dir),
                         rr.CONFIG, rr.LOG, LATEST, BEST, METRICS, self.device, self.dist.world_size, self.amp.name,
                         self.amp.reason, cfg.OUTPUT_DIR)
            for path in clean_stale_tmp(self.run_dir):  # no save is in flight yet
                _logger.warning("removed %s, left by an interrupted save", path)
        self.data = build_run_data(cfg, self.dist)
        if checkpoint is not None:
            self._resume_from(checkpoint)
        # From here on Ctrl-C / SIGTERM end the run cleanly (earlier they abort the set-up at once).
        self.stop.install()
        if self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=self.run_dir)
            if checkpoint is None:
                rr.write_hparams(self.writer, rr.hparams(cfg, self.dist.world_size))
        d = self.data
        _logger.info("train %d samples (%d iterations/epoch), valid %d samples; optimizer %s, lr %g, %d epochs",
                     len(d.train_set), len(d.train_loader), len(d.valid_set), cfg.TRAIN.OPTIMIZER, cfg.TRAIN.LR,
                     cfg.TRAIN.END_EPOCH)

    def _run(self, checkpoint: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        cfg = self.cfg
        if checkpoint is not None:
            self._restore_progress(checkpoint)
        try:
            self._start(checkpoint)
            if checkpoint is None:
                self._record(0, self._validate(0))
            for epoch in range(self.epoch, int(cfg.TRAIN.END_EPOCH)):
                if self.stop.signum is not None:
                    raise TrainingInterrupted(self.stop.signum)
                train = self._train_one_epoch(epoch)
                lr = float(self.optimizer.param_groups[0]["lr"])
                self.scheduler.step()
                self.epoch = epoch + 1
                self._record(self.epoch, self._validate(self.epoch), train, lr)
            self.status = "finished"
            summary = self._write_metrics()
            if self.writer is not None:
                rr.write_hparams(self.writer, rr.hparams(cfg, self.dist.world_size), finished=True)
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
        except BaseException as exc:
            self.status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            with contextlib.suppress(Exception):  # e.g. a full disk: the original error matters more
                self._write_metrics()
            # train.log gets the error and its traceback; the console gets the caller's one line.
            _logger.error("run %s: %s: %s", self.status, type(exc).__name__, exc, exc_info=True, extra=rr.FILE_ONLY)
            raise
