"""How a training epoch reports its progress while it runs.

On a terminal a live bar (rank 0); in a log file (nohup, sweeps) a plain progress line every
minute; to TensorBoard the mean loss of every ``PRINT_FREQ`` iterations (``train/loss_iter``,
step = global iteration). The epoch's own summary line is ``run_record.epoch_line``'s.
"""
from __future__ import annotations

import logging
import sys
import math
import time
from typing import Optional

from hrnet.engine.run_record import TAG_LOSS_ITER

__all__ = ["EpochProgress", "fmt_duration"]

_logger = logging.getLogger(__name__)


def fmt_duration(s: Optional[float]) -> str:
    """``42 s``, ``3.5 min``, ``2.1 h``; ``-`` for None or a non-finite value."""
    if s is None or not math.isfinite(s):
        return "-"
    if s < 60:
        return f"{s:.0f} s"
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.1f} min"


class EpochProgress:
    """The progress display of epoch ``epoch`` (0-based) of ``n_iter`` iterations of ``global_batch``
    images; ``writer``: the run's SummaryWriter (None on ranks > 0). Use as a context manager."""

    def __init__(self, cfg, epoch: int, n_iter: int, global_batch: int, is_main: bool, writer=None) -> None:
        from tqdm import tqdm

        self.epoch, self.end_epoch = epoch, int(cfg.TRAIN.END_EPOCH)
        self.n_iter, self.global_batch = n_iter, global_batch
        self.print_freq = max(int(cfg.PRINT_FREQ), 1)
        self.writer, self.is_main = writer, is_main
        self.tty = sys.stderr.isatty()
        self.bar = tqdm(total=n_iter * global_batch, unit="img", disable=not (is_main and self.tty), leave=False,
                        dynamic_ncols=True, desc=f"epoch {epoch + 1}/{self.end_epoch}", file=sys.stderr)
        self.t0 = time.time()
        self.next_report = self.t0 + 60.0
        self.loss: Optional[float] = None  # the latest mean loss given to update()

    def __enter__(self) -> "EpochProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def update(self, it: int, global_step: int, loss: Optional[float] = None) -> None:
        """After iteration ``it`` (0-based); ``global_step``: iterations done in the run. ``loss``: the mean
        loss since the last one given, passed when ``global_step`` is a multiple of ``PRINT_FREQ`` (the
        trainer reads the loss back from the device only then): a ``train/loss_iter`` point."""
        if loss is not None:
            self.loss = loss
            if self.writer is not None:
                self.writer.add_scalar(TAG_LOSS_ITER, loss, global_step)
            self.bar.set_postfix(loss=f"{loss:.3e}", refresh=False)
        self.bar.update(self.global_batch)
        if self.is_main and not self.tty and self.loss is not None and time.time() >= self.next_report:
            self.next_report += 60.0
            rate = (it + 1) * self.global_batch / (time.time() - self.t0)
            _logger.info("epoch %d/%d: %d/%d iterations | loss %.4e | %.1f img/s | epoch ETA %.1f min",
                         self.epoch + 1, self.end_epoch, it + 1, self.n_iter, self.loss, rate,
                         (self.n_iter - it - 1) * self.global_batch / rate / 60)
