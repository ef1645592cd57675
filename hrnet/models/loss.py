"""Heatmap loss: HRNet's ``JointsMSELoss`` (per-joint weighted MSE), vectorised."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; training stopped before the optimizer step."""

    @classmethod
    def at(cls, loss: float, epoch: int, end_epoch: int, it: int, n_iter: int, global_step: int,
           kept: str) -> "NonFiniteLossError":
        """The error for 0-based ``epoch`` / iteration ``it``, saying what was ``kept`` and what to try."""
        return cls(f"non-finite training loss ({loss}) at epoch {epoch + 1}/{end_epoch} (0-based {epoch}), "
                   f"iteration {it + 1}/{n_iter} (global iteration {global_step + 1}); no optimizer step was "
                   f"taken. {kept}. Lower TRAIN.LR, set TRAIN.CLIP_GRAD_NORM or TRAIN.WARMUP_ITERS.")

__all__ = ["JointsMSELoss", "NonFiniteLossError"]


class JointsMSELoss(nn.Module):
    """``0.5 * mean_j MSE(pred_j * w_j, gt_j * w_j)``, the official HRNet heatmap loss.

    HRNet loops over joints and averages ``0.5 * MSE`` of the weighted heatmaps; since every
    joint's MSE is a mean over the same ``B * H * W`` elements, that equals ``0.5 *`` the mean of
    the squared weighted difference over all ``B * J * H * W`` elements, computed here in one
    op. A joint with weight 0 (unlabelled, outside the crop) contributes zero but still counts
    in the mean, as in HRNet, so the loss scale does not depend on how many joints are labelled.

    The loss is computed in float32 even when ``output`` comes from an autocast (bf16/fp16)
    forward pass.
    """

    def __init__(self, use_target_weight: bool = True) -> None:
        super().__init__()
        self.use_target_weight = use_target_weight

    def forward(self, output: torch.Tensor, target: torch.Tensor,
                target_weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scalar loss.

        Args:
            output: (B, J, H, W) predicted heatmaps.
            target: (B, J, H, W) target heatmaps.
            target_weight: (B, J) or (B, J, 1) per-joint weights (0 or 1 in practice).
        """
        if output.shape != target.shape:
            raise ValueError(f"JointsMSELoss: output {tuple(output.shape)} and target "
                             f"{tuple(target.shape)} differ in shape")
        diff = output.float() - target.float()
        if self.use_target_weight and target_weight is not None:
            w = target_weight.float().reshape(target.shape[0], target.shape[1], 1, 1)
            diff = diff * w
        return 0.5 * diff.pow(2).mean()
