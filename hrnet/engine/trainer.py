"""The training loop: ``Trainer(cfg).fit()`` trains one experiment into ``OUTPUT_DIR/<EXPERIMENT_NAME>/``.

The run folder's files and steps (**step = completed training epochs**, 0 = untrained) are
``hrnet.engine.run_record``'s; the checkpoint schema is ``hrnet.runtime.checkpoint``'s; the data sets and
loaders ``hrnet.engine.loaders``'. Order of work: model, optimizer and schedules first (a config typo
fails before any file or image is touched), then the run folder (a new run refuses another run's
files but replaces one that stopped before completing an epoch; a resume refuses a changed
config or another number of processes), then the data. Under DDP every rank trains one model: rank
0's initial weights reach every rank before the optimizer copies them (Lookahead's slow weights), and
each checkpoint checks that the ranks still agree.

Exact resume: checkpoints at epoch boundaries hold every RNG state (per rank); validation and BN
recalibration run in a forked RNG state, so a resumed run reaches bitwise the same weights as an
uninterrupted one on CPU (on CUDA only approximately: bilinear upsampling's backward has no
deterministic kernel there, and DETERMINISTIC is refused). Ctrl-C / SIGTERM stop at the end of the current iteration and discard the
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
from hrnet.engine.distributed import (all_gather_object, all_reduce_sum, broadcast_module, check_resume_world_size,
                                      check_training_replicas, init_distributed)
from hrnet.engine.loaders import RunData, build_run_data
from hrnet.engine.progress import EpochProgress
from hrnet.engine.run_lock import RunLock
from hrnet.engine.run_record import BEST, LATEST, METRICS
from hrnet.engine.signals import StopRequest, TrainingInterrupted, end_with_launcher
from hrnet.engine.validation import ValidationMixin
from hrnet.models.loss import JointsMSELoss, NonFiniteLossError
from hrnet.runtime.checkpoint import (CheckpointError, clean_stale_tmp, get_rng_state, jsonable, load_training_state,
                                      restore_training_state, save_checkpoint, seed_everything, set_rng_state,
                                      training_state, write_text)
from hrnet.runtime.device import amp_policy_from_cfg, configure_backends_from_cfg, describe_machine
from hrnet.runtime.provenance import code_version, code_versions_after

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
        self.lock = RunLock(self.run_dir)  # one trainer per run folder, from before check_run_dir to the end
        self.code_version = code_version()  # this session's code; code_versions: the run's (metrics.json)
        self.code_versions = code_versions_after([], self.code_version, 0)

    # ------------------------------------------------------------------ set-up
    def _setup_device(self) -> None:
        cfg = self.cfg
        self.dist = init_distributed(cfg.DEVICE)
        self.device = self.dist.device
        self.backends = configure_backends_from_cfg(cfg, self.device)  # DETERMINISTIC, CUDNN.BENCHMARK, TF32
        self.amp = amp_policy_from_cfg(cfg, self.device)
        self.scaler = self.amp.grad_scaler()  # a pass-through unless fp16

    def _build_model_and_optimizer(self) -> None:
        """Model, loss, optimizer, LR schedule, warm-up: cheap, and where every TRAIN.* / MODEL.* check lives."""
        from optim import build_optimizer, build_scheduler, build_warmup

        from hrnet.models.hrnet import build_model

        cfg = self.cfg
        try:
            model = build_model(cfg).to(self.device)  # channels_last per cfg.CHANNELS_LAST (build_model)
            # Rank 0's init everywhere before the optimizer copies anything (Lookahead's slow weights):
            # one model on every rank; a single process is untouched.
            broadcast_module(model)
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
                self.lock.acquire()  # before check_run_dir may remove anything; refuses a second trainer
                action, why = rr.check_run_dir(self.run_dir, self.resume)
                if action == rr.RESUME:
                    checkpoint = load_training_state(os.path.join(self.run_dir, LATEST), self.cfg, rr.RESUME_FREE_KEYS)
                    check_resume_world_size(checkpoint, self.dist.world_size, self.cfg,
                                            os.path.join(self.run_dir, LATEST))
                elif action == rr.REPLACE:
                    removed = rr.replace_run(self.run_dir)
                    self.claim_note = (f"replacing the run in {self.run_dir}: {why}, nothing trained to keep "
                                       f"(removed {', '.join(removed)}; {rr.LOG} keeps its log)")
            except (ConfigError, CheckpointError, OSError) as exc:
                error = exc
        error, resume = all_gather_object((error, checkpoint is not None))[0]
        if error is not None:
            self.lock.release()
            raise error
        if resume and not self.dist.is_main:
            checkpoint = load_training_state(os.path.join(self.run_dir, LATEST), self.cfg, rr.RESUME_FREE_KEYS)
        return checkpoint

    # ------------------------------------------------------------------ checkpoints and the run record
    def _restore_progress(self, ck: Dict[str, Any]) -> None:
        """The run's bookkeeping (epochs, best, history, time) from the checkpoint, before anything can
        fail: a resume whose set-up fails must not record its run as one without a completed epoch."""
        self.epoch, self.global_step = int(ck["epoch"]), int(ck["global_step"])
        self.best_nme, self.best_epoch = float(ck["best_nme"]), int(ck["best_epoch"])
        self.history, self.wall_offset = list(ck["history"]), float(ck["wall_time"])
        self.code_versions = code_versions_after(ck.get("code_versions") or [], self.code_version, self.epoch,
                                                 log=_logger.info)  # a line when the code changed

    def _resume_from(self, ck: Dict[str, Any]) -> None:
        """Weights, optimizer, schedules and RNG streams from the checkpoint (after the data is built)."""
        restore_training_state(ck, model=self.raw_model, optimizer=self.optimizer, scheduler=self.scheduler,
                               warmup=self.warmup, scaler=self.scaler)
        set_rng_state(ck["rng"][self.dist.rank], self.data.generator)  # same world size: check_resume_world_size
        _logger.info("resumed from %s: %d/%d epochs done, best NME %.5f at epoch %d", self.run_dir, self.epoch,
                     self.cfg.TRAIN.END_EPOCH, self.best_nme, self.best_epoch)

    def _save_latest(self) -> None:
        rng = all_gather_object(get_rng_state(self.data.generator))  # collective: every rank calls it
        if self.dist.is_main:
            save_checkpoint(training_state(
                model=self.raw_model, optimizer=self.optimizer, scheduler=self.scheduler, warmup=self.warmup,
                scaler=self.scaler, epoch=self.epoch, global_step=self.global_step, best_nme=self.best_nme,
                best_epoch=self.best_epoch, history=self.history, rng=rng, world_size=self.dist.world_size,
                wall_time=self._wall_time(), config=self.cfg.dump(), code_versions=self.code_versions),
                os.path.join(self.run_dir, LATEST))

    def _wall_time(self) -> float:
        return self.wall_offset + (time.time() - self._session_start)

    def _write_metrics(self) -> Dict[str, Any]:
        """Write ``metrics.json`` (rank 0); returns its content."""
        summary = rr.metrics_summary(self.cfg, self.dist.world_size, status=self.status, epochs_completed=self.epoch,
                                     best_nme=self.best_nme, best_epoch=self.best_epoch,
                                     wall_time=self._wall_time(), history=self.history,
                                     skipped=self.data.skipped if self.data is not None else (),
                                     machine=describe_machine(self.device),
                                     precision=dict(amp=self.amp.name, **self.backends),
                                     code_version=self.code_version, code_versions=self.code_versions)
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
        if self.dist.distributed:  # one model on every rank, or the run fails (ReplicaMismatchError)
            check_training_replicas(self.raw_model, self.optimizer, step)
        self._save_latest()
        self._write_best()  # after the checkpoint whose history describes it (validation.py)
        self._write_metrics()

    # ------------------------------------------------------------------ training
    def _train_step(self, batch: Dict[str, Any], epoch: int, it: int, n_iter: int) -> Tuple[torch.Tensor, bool]:
        """One iteration: forward, backward, loss check, clip, step; returns this rank's loss (a 0-dim float32
        tensor, left on the device) and whether any rank was asked to stop."""
        cfg = self.cfg
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
        loss = loss.detach().float()
        stop = self._check_step(loss, epoch, it, n_iter)
        clip = float(cfg.TRAIN.CLIP_GRAD_NORM)
        if clip > 0:
            self.scaler.unscale_(self.optimizer)  # no-op unless fp16
            torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.warmup is not None and self.global_step < int(cfg.TRAIN.WARMUP_ITERS):
            self.warmup.step()
        self.global_step += 1
        return loss, stop

    def _check_step(self, loss: torch.Tensor, epoch: int, it: int, n_iter: int) -> bool:
        """Raise ``NonFiniteLossError`` when any rank's loss is not finite (before the optimizer step);
        returns whether any rank was asked to stop, so that every rank stops at the same iteration.

        The iteration's one host sync, and the contract needs it: the step must wait for the verdict.
        It reads two flags, never the loss itself (``_train_one_epoch`` reads that every PRINT_FREQ)."""
        d, stop = self.dist, float(self.stop.signum is not None)
        bad = ~torch.isfinite(loss)
        if d.distributed:  # one small collective: no rank left waiting in the next all-reduce
            flags = all_reduce_sum(torch.stack([bad.float(), torch.full((), stop, device=loss.device)]))
            bad_ranks, stop = flags.tolist()
        else:
            bad_ranks = float(bad.item())
        if bad_ranks:
            loss_val = self._mean_over_ranks(loss)
            raise NonFiniteLossError.at(loss_val, epoch, int(self.cfg.TRAIN.END_EPOCH), it, n_iter, self.global_step,
                                        f"{LATEST} and {BEST} keep the state after epoch {self.epoch}")
        return stop > 0

    def _mean_over_ranks(self, value: torch.Tensor) -> float:
        """``value``'s mean over ranks, read back to the host (a collective under DDP)."""
        return float(all_reduce_sum(value.detach().clone())) / self.dist.world_size

    def _train_one_epoch(self, epoch: int) -> Dict[str, float]:
        """Train epoch ``epoch`` (0-based); returns mean loss, times (s), throughput (images/s).

        The losses are summed on the device (float64: the epoch mean is exact) and read back every
        PRINT_FREQ iterations and at the epoch's end, not per iteration."""
        cfg, d = self.cfg, self.dist
        self.model.train()
        if self.data.train_sampler is not None:
            self.data.train_sampler.set_epoch(epoch)
        if int(cfg.WORKERS) == 0:
            # Augmentation is seeded from torch.initial_seed() (in a worker: drawn from the loader generator);
            # do the same here, so a resumed epoch repeats it exactly from the checkpointed generator.
            torch.manual_seed(int(torch.empty((), dtype=torch.int64).random_(generator=self.data.generator).item()))
        n_iter, print_freq = len(self.data.train_loader), max(int(cfg.PRINT_FREQ), 1)
        global_batch = int(cfg.TRAIN.BATCH_SIZE_PER_GPU) * d.world_size
        epoch_sum, window_sum = (torch.zeros((), dtype=torch.float64, device=self.device) for _ in range(2))
        window_n, data_time = 0, 0.0
        with EpochProgress(cfg, epoch, n_iter, global_batch, d.is_main, self.writer) as progress:
            t_data = time.time()
            for it, batch in enumerate(self.data.train_loader):
                data_time += time.time() - t_data
                loss, stop = self._train_step(batch, epoch, it, n_iter)
                epoch_sum += loss
                window_sum += loss
                window_n += 1
                window = None
                if self.global_step % print_freq == 0:  # every rank reaches it at the same iteration
                    window = self._mean_over_ranks(window_sum) / window_n
                    window_sum.zero_()
                    window_n = 0
                progress.update(it, self.global_step, window)
                if stop:
                    raise TrainingInterrupted(self.stop.signum or signal.SIGTERM)
                t_data = time.time()
            train_loss = self._mean_over_ranks(epoch_sum) / n_iter  # waits for the device: then the clock
        elapsed = time.time() - progress.t0
        return {"train_loss": train_loss, "train_time": elapsed, "data_time": data_time,
                "img_per_s": n_iter * global_batch / max(elapsed, 1e-9)}

    # ------------------------------------------------------------------ the run
    def fit(self) -> Dict[str, Any]:
        """Run the experiment; returns the ``metrics.json`` content (plus ``signal`` when SIGINT/SIGTERM stopped
        it: status ``interrupted``). Raises ``ConfigError`` / ``FileExistsError`` before writing anything for a
        bad config or another run's folder, ``NonFiniteLossError`` on divergence."""
        cfg = self.cfg
        self._session_start = time.time()
        end_with_launcher()  # a torchrun rank dies with its launcher (signals.py)
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
                self.lock.release()

    def _start(self, checkpoint: Optional[Dict[str, Any]]) -> None:
        """config.yaml, the data, the resumed state, the TensorBoard writer."""
        cfg = self.cfg
        if self.dist.is_main:
            write_text(rr.config_text(cfg), os.path.join(self.run_dir, rr.CONFIG))
            _logger.info("run %s -> %s (%s, %s, TensorBoard events, %s, %s, %s); device %s x %d, precision %s (%s); "
                         "watch: tensorboard --logdir %s", experiment_name(cfg), os.path.abspath(self.run_dir),
                         rr.CONFIG, rr.LOG, LATEST, BEST, METRICS, self.device, self.dist.world_size, self.amp.name,
                         self.amp.reason, cfg.OUTPUT_DIR)
            for path in clean_stale_tmp(self.run_dir):  # no save is in flight yet
                _logger.warning("removed %s, left by an interrupted save", path)
        self.data = build_run_data(cfg, self.dist)
        if checkpoint is not None:
            self._resume_from(checkpoint)
            self._rewrite_missing_best()  # validation.py: a kill between checkpoint_latest.pth and model_best.pth
            self._write_metrics()  # status running: this session trains (a study tells a killed one by it)
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
