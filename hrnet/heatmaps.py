"""Heatmap encoding (targets) and decoding (argmax with quarter shift, DARK): pure functions.

All coordinates here are in **heatmap pixels**, with pixel centres at integer coordinates
(see ``data/transforms.py`` for the one convention and the mapping back to image pixels).
"""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

Array = Union[np.ndarray, torch.Tensor]


def encode_heatmaps(joints: np.ndarray, visible: np.ndarray, size: Tuple[int, int], sigma: float
                    ) -> Tuple[np.ndarray, np.ndarray]:
    """Gaussian targets centred at the exact sub-pixel joint positions.

    Args:
        joints: (J, 2) joint positions in heatmap pixels (x, y).
        visible: (J,) labelled flags (> 0 means labelled).
        size: heatmap (width, height).
        sigma: Gaussian sigma in heatmap pixels.
    Returns:
        target (J, H, W) float32 with peak 1 at the joint, and target_weight (J,) float32:
        0 for unlabelled joints and joints outside the heatmap, whose target is all zero.
    """
    w, h = int(size[0]), int(size[1])
    joints = np.asarray(joints, dtype=np.float32)
    inside = ((joints[:, 0] >= -0.5) & (joints[:, 0] <= w - 0.5)
              & (joints[:, 1] >= -0.5) & (joints[:, 1] <= h - 0.5))
    weight = ((np.asarray(visible) > 0) & inside & np.isfinite(joints).all(1)).astype(np.float32)
    mu = np.where(weight[:, None] > 0, joints, 0.0)
    inv = -0.5 / (sigma * sigma)
    # Separable Gaussian: an outer product of a row and a column profile per joint.
    gx = np.exp(inv * (np.arange(w, dtype=np.float32)[None, :] - mu[:, :1]) ** 2)
    gy = np.exp(inv * (np.arange(h, dtype=np.float32)[None, :] - mu[:, 1:]) ** 2)
    target = (gy * weight[:, None])[:, :, None] * gx[:, None, :]
    return target.astype(np.float32, copy=False), weight


def _as_tensor(heatmaps: Array) -> torch.Tensor:
    t = torch.as_tensor(heatmaps)
    return t.float() if t.dtype != torch.float64 else t


def get_max_preds(heatmaps: Array) -> Tuple[torch.Tensor, torch.Tensor]:
    """Integer argmax of each heatmap.

    Args:
        heatmaps: (B, J, H, W).
    Returns:
        coords (B, J, 2) float (x, y) and maxvals (B, J).
    """
    hm = _as_tensor(heatmaps)
    b, j, h, w = hm.shape
    maxvals, idx = hm.reshape(b, j, h * w).max(dim=2)
    coords = torch.stack([idx % w, torch.div(idx, w, rounding_mode="floor")], dim=2).to(hm.dtype)
    return coords, maxvals


def _gather(hm: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """hm (B, J, H, W) read at integer (x, y) (B, J) -> (B, J)."""
    w = hm.shape[-1]
    return hm.flatten(2).gather(2, (y * w + x).unsqueeze(2)).squeeze(2)


def _shift_quarter(hm: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Official HRNet refinement: move 0.25 px toward the higher neighbour (interior peaks only)."""
    b, j, h, w = hm.shape
    x, y = coords[..., 0].long(), coords[..., 1].long()
    xl, xr = (x - 1).clamp(0, w - 1), (x + 1).clamp(0, w - 1)
    yu, yd = (y - 1).clamp(0, h - 1), (y + 1).clamp(0, h - 1)
    dx = _gather(hm, xr, y) - _gather(hm, xl, y)
    dy = _gather(hm, x, yd) - _gather(hm, x, yu)
    interior_x = (x > 0) & (x < w - 1)
    interior_y = (y > 0) & (y < h - 1)
    shift = torch.stack([torch.sign(dx) * interior_x, torch.sign(dy) * interior_y], dim=2)
    return coords + 0.25 * shift.to(coords.dtype)


def _gaussian_blur(hm: torch.Tensor, kernel: int) -> torch.Tensor:
    """Depthwise Gaussian blur (OpenCV's sigma for the kernel size), keeping each map's maximum."""
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    r = torch.arange(kernel, dtype=hm.dtype, device=hm.device) - (kernel - 1) / 2
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    g = g / g.sum()
    b, j, h, w = hm.shape
    x = hm.reshape(b * j, 1, h, w)
    pad = kernel // 2
    x = F.conv2d(F.pad(x, (pad, pad, 0, 0), mode="replicate"), g.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, pad, pad), mode="replicate"), g.view(1, 1, -1, 1))
    x = x.reshape(b, j, h, w)
    orig_max = hm.flatten(2).amax(2)[..., None, None]
    new_max = x.flatten(2).amax(2)[..., None, None].clamp_min(1e-12)
    return x * (orig_max / new_max)


def _dark_refine(hm: torch.Tensor, coords: torch.Tensor, kernel: int) -> torch.Tensor:
    """DARK (Zhang et al., CVPR 2020): one Newton step on the blurred log-heatmap at the argmax."""
    b, j, h, w = hm.shape
    logh = torch.log(_gaussian_blur(hm, kernel).clamp_min(1e-10))
    logh = F.pad(logh.reshape(b * j, 1, h, w), (2, 2, 2, 2), mode="replicate").reshape(b, j, h + 4, w + 4)
    x, y = coords[..., 0].long() + 2, coords[..., 1].long() + 2

    def at(dx: int, dy: int) -> torch.Tensor:
        return _gather(logh, x + dx, y + dy)

    c = at(0, 0)
    gx = 0.5 * (at(1, 0) - at(-1, 0))
    gy = 0.5 * (at(0, 1) - at(0, -1))
    hxx = 0.25 * (at(2, 0) - 2 * c + at(-2, 0))
    hyy = 0.25 * (at(0, 2) - 2 * c + at(0, -2))
    hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = hxx * hyy - hxy * hxy
    ok = det.abs() > 1e-12
    safe = torch.where(ok, det, torch.ones_like(det))
    # offset = -H^-1 g, with the 2x2 inverse written out.
    ox = -(hyy * gx - hxy * gy) / safe
    oy = -(-hxy * gx + hxx * gy) / safe
    offset = torch.stack([ox, oy], dim=2) * ok.unsqueeze(2)
    return coords + offset.clamp(-1.0, 1.0)


def decode_heatmaps(heatmaps: Array, method: str = "argmax", dark_kernel: int = 11
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel joint positions from heatmaps.

    Args:
        heatmaps: (B, J, H, W) tensor or array (any device).
        method: ``argmax`` (integer argmax + quarter-pixel shift toward the higher neighbour,
            as official HRNet) or ``dark`` (Taylor expansion on the blurred log-heatmap).
        dark_kernel: Gaussian kernel size of DARK's blur (11 suits sigma 2 targets).
    Returns:
        coords (B, J, 2) in heatmap pixels (x, y), and maxvals (B, J) (the peak values, as scores).
    """
    hm = _as_tensor(heatmaps)
    if hm.dim() != 4:
        raise ValueError(f"heatmaps must be (B, J, H, W), got shape {tuple(hm.shape)}")
    coords, maxvals = get_max_preds(hm)
    if method == "argmax":
        coords = _shift_quarter(hm, coords)
    elif method == "dark":
        coords = _dark_refine(hm, coords, dark_kernel)
    else:
        raise ValueError(f"unknown heatmap decoding {method!r}: use 'argmax' or 'dark'")
    return coords, maxvals
