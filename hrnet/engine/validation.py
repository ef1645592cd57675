"""Validation inside a training run: which weights are evaluated (model, Lookahead slow or fast, slow
with recalibrated BN statistics), ``model_best.pth``, and Lookahead's ``NME_slow`` / ``NME_fast``.

:class:`ValidationMixin` is the part of ``hrnet.engine.trainer.Trainer`` that evaluates. It reads
the trainer's ``cfg``, ``raw_model``, ``optimizer``, ``lookahead``, ``criterion``, ``data``, ``device``,
``dist``, ``amp``, ``writer`` and ``run_dir``, and keeps its ``best_nme`` / ``best_epoch``. Every
rank calls it (predictions are gathered); it runs in a forked RNG state, so how often and with which
weights it runs never changes the training trajectory.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from typing import Any, Dict, Tuple

import torch.nn as nn

from hrnet.engine import run_record as rr
from hrnet.engine.distributed import all_gather_object, broadcast_buffers, merge_shards
from hrnet.engine.loaders import recalibration_loader
from hrnet.engine.run_record import BEST
from hrnet.runtime.checkpoint import load_checkpoint, rng_fork, save_checkpoint

__all__ = ["ValidationMixin"]


class ValidationMixin:
    """``_validate(step)`` and its parts, for ``Trainer`` (see the module docstring for what it uses)."""

    def _infer(self, model: nn.Module) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """Predictions of ``model`` on the validation set, merged over ranks, and their metrics."""
        from hrnet.evaluation.evaluate import run_inference
        from hrnet.evaluation.metrics import compute_metrics

        # run_inference switches to eval mode, inference_mode, channels_last and the AMP policy itself.
        out = run_inference(model, self.data.valid_loader, self.cfg, self.device, criterion=self.criterion,
                            progress=self.dist.is_main and sys.stderr.isatty())
        merged = merge_shards(all_gather_object(out))
        return merged, compute_metrics(merged["preds"], merged["joints"], merged["bbox"], self.cfg)

    def _validate(self, step: int) -> Dict[str, Any]:
        """Validation at ``step`` (all ranks call): ``NME``, ``valid_loss``, ``metrics`` (``compute_metrics``),
        ``is_best``, ``eval_weights``, ``time`` (s), and for Lookahead ``NME_slow`` and ``NME_fast`` (the
        weights not used for ``NME`` are evaluated too). A new best is kept for :meth:`_write_best`."""
        from hrnet.evaluation.evaluate import recalibrate_bn

        cfg, raw = self.cfg, self.raw_model
        broadcast_buffers(raw)
        use_slow = self.lookahead and cfg.TRAIN.LOOKAHEAD.EVAL_WEIGHTS == "slow"
        n_bn = int(cfg.TRAIN.LOOKAHEAD.BN_RECALIBRATE_BATCHES) if use_slow else 0
        t0 = time.time()
        with rng_fork():
            with (self.optimizer.slow_weights() if use_slow else contextlib.nullcontext()):
                if n_bn > 0:
                    loader = recalibration_loader(cfg, self.data.train_set, step, self.device)
                    val = self._score(step, recalibrate_bn(raw, loader, n_bn, cfg, self.device), "slow+bn")
                else:
                    val = self._score(step, raw, "slow" if use_slow else ("fast" if self.lookahead else "model"))
            if self.lookahead:
                self._score_other_weights(val, use_slow)
        val["time"] = time.time() - t0
        return val

    def _score(self, step: int, model: nn.Module, weights: str) -> Dict[str, Any]:
        """``model`` (holding the ``weights`` named) evaluated at ``step``; on a new best its weights and
        BN statistics, exactly those evaluated, become ``model_best.pth`` (:meth:`_write_best`)."""
        cfg = self.cfg
        merged, metrics = self._infer(model)
        nme = float(metrics["NME"])
        is_best = nme < self.best_nme
        if is_best:
            self.best_nme, self.best_epoch = nme, step
            if self.dist.is_main:  # a copy: the weights evaluated may be swapped out before _write_best
                self.pending_best = {"state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
                                     "epoch": step, "NME": nme, "eval_weights": weights, "config": cfg.dump()}
        if self.data.gallery is not None and self.writer is not None:
            from hrnet.evaluation.visualize import gallery_heatmaps, gallery_image

            hm = gallery_heatmaps(model, self.data.gallery, self.amp) if cfg.TEST.VIS_HEATMAP else None
            self.writer.add_image(rr.TAG_PREDICTIONS, gallery_image(self.data.gallery, merged, hm), step,
                                  dataformats="HWC")
        return {"NME": nme, "valid_loss": float(merged["loss_sum"]) / max(int(merged["count"]), 1),
                "metrics": metrics, "is_best": is_best, "eval_weights": weights}

    def _write_best(self) -> None:
        """Write the ``model_best.pth`` found by the last validation; the trainer calls it right after
        ``checkpoint_latest.pth``, so a kill between the two leaves a best file of an earlier step, one
        the checkpoint's history describes (:meth:`_rewrite_missing_best` restores the new one)."""
        best, self.pending_best = getattr(self, "pending_best", None), None
        if best is not None:
            save_checkpoint(best, os.path.join(self.run_dir, BEST))

    def _rewrite_missing_best(self) -> None:
        """On resume (all ranks): when the checkpoint names its own step best but ``model_best.pth``
        holds another step (killed between the two saves), validate that step again (the same weights,
        RNG forked: the same NME) and write its best file."""
        path, missing = os.path.join(self.run_dir, BEST), False
        if self.dist.is_main and self.best_epoch == self.epoch:
            missing = not os.path.isfile(path) or load_checkpoint(path).get("epoch") != self.best_epoch
        if all_gather_object(missing)[0]:
            self.best_nme = math.inf
            self._validate(self.epoch)
            self._write_best()

    def _score_other_weights(self, val: Dict[str, Any], use_slow: bool) -> None:
        """``NME_slow`` and ``NME_fast`` into ``val``: the Lookahead weights not used for ``NME`` are
        evaluated too (with the fast weights' BN statistics), so a study can tell whether slow-weight
        evaluation matters."""
        other = "fast" if use_slow else "slow"
        if self.optimizer.cycle_step == 0 and val["eval_weights"] != "slow+bn":
            val["NME_" + other] = val["NME"]  # just synced: fast weights == slow weights, same model
        else:
            with (self.optimizer.slow_weights() if other == "slow" else contextlib.nullcontext()):
                val["NME_" + other] = float(self._infer(self.raw_model)[1]["NME"])
        val["NME_" + ("slow" if use_slow else "fast")] = val["NME"]
