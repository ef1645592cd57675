"""The heatmap codec: Gaussian targets (encode) and sub-pixel joints from heatmaps (decode).

:class:`HeatmapCodec` holds everything both directions need: the heatmap size, sigma, the
decoding method (argmax with the quarter shift, or DARK) and DARK's blur kernel, which is
derived from sigma (:func:`dark_kernel_size`). The functions below it are its pure maths.

All coordinates here are in **heatmap pixels**, with pixel centres at integer coordinates
(see ``data/transforms.py`` for the one convention and the mapping back to image pixels).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = ["HeatmapCodec", "dark_kernel_size", "encode_heatmaps", "decode_heatmaps", "get_max_preds",
           "DECODE_METHODS"]

Array = Union[np.ndarray, torch.Tensor]
DECODE_METHODS = ("argmax", "dark")


def dark_kernel_size(sigma: float) -> int:
    """DARK's blur kernel for targets of ``sigma`` heatmap pixels: ``6 sigma - 1`` rounded, made odd (>= 3).

    DarkPose and mmpose blur sigma-2 targets with 11 taps; the same rule gives 9 for sigma 1.5
    and 17 for sigma 3, so the blur stays matched to the Gaussian it smooths.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    k = int(round(6.0 * float(sigma) - 1.0))
    return max(k + 1 - k % 2, 3)


@dataclass(frozen=True)
class HeatmapCodec:
    """Encode joints as Gaussian heatmaps and decode heatmaps to sub-pixel joints.

    Args:
        heatmap_size: (width, height) of the heatmaps, in heatmap pixels.
        sigma: Gaussian sigma of the targets, in heatmap pixels.
        method: ``argmax`` (integer argmax + quarter-pixel shift toward the higher neighbour, as
            official HRNet) or ``dark`` (a Newton step on the blurred log-heatmap).
        dark_kernel: DARK's blur kernel size (odd); None derives it from sigma
            (:func:`dark_kernel_size`).
    """
    heatmap_size: Tuple[int, int]
    sigma: float
    method: str = "argmax"
    dark_kernel: Optional[int] = None

    def __post_init__(self) -> None:
        w, h = (int(v) for v in self.heatmap_size)
        if w < 1 or h < 1:
            raise ValueError(f"heatmap_size must be positive (width, height), got {tuple(self.heatmap_size)}")
        object.__setattr__(self, "heatmap_size", (w, h))
        if self.method not in DECODE_METHODS:
            raise ValueError(f"unknown heatmap decoding {self.method!r}: use 'argmax' or 'dark'")
        kernel = dark_kernel_size(self.sigma) if self.dark_kernel is None else int(self.dark_kernel)
        if kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"dark_kernel must be a positive odd size, got {kernel}")
        object.__setattr__(self, "dark_kernel", kernel)

    @classmethod
    def from_cfg(cls, cfg) -> "HeatmapCodec":
        """The codec of ``MODEL.HEATMAP_SIZE``, ``MODEL.SIGMA`` and ``TEST.DECODE``."""
        size: Sequence[int] = cfg.MODEL.HEATMAP_SIZE
        return cls((int(size[0]), int(size[1])), float(cfg.MODEL.SIGMA), str(cfg.TEST.DECODE))

    def encode(self, joints: np.ndarray, visible: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Targets of (J, 2) joints in heatmap pixels and (J,) labelled flags: (J, h, w) float32, (J,) weights."""
        return encode_heatmaps(joints, visible, self.heatmap_size, self.sigma)

    def decode(self, heatmaps: Array) -> Tuple[torch.Tensor, torch.Tensor]:
        """(B, J, h, w) heatmaps -> coords (B, J, 2) (x, y) in heatmap pixels, maxvals (B, J)."""
        return decode_heatmaps(heatmaps, self.method, self.dark_kernel)


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
    """Official HRNet refinement: move 0.25 px toward the higher neighbour.

    Applied per axis where the peak has both neighbours on that axis (HRNet requires both axes
    interior; per axis keeps the refinement of the other axis for a peak on an edge).
    """
    return coords + _quarter_offset(hm, coords)


def _quarter_offset(hm: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """The (B, J, 2) offset of :func:`_shift_quarter`: +-0.25 or 0 per axis."""
    b, j, h, w = hm.shape
    x, y = coords[..., 0].long(), coords[..., 1].long()
    xl, xr = (x - 1).clamp(0, w - 1), (x + 1).clamp(0, w - 1)
    yu, yd = (y - 1).clamp(0, h - 1), (y + 1).clamp(0, h - 1)
    dx = _gather(hm, xr, y) - _gather(hm, xl, y)
    dy = _gather(hm, x, yd) - _gather(hm, x, yu)
    interior_x = (x > 0) & (x < w - 1)
    interior_y = (y > 0) & (y < h - 1)
    shift = torch.stack([torch.sign(dx) * interior_x, torch.sign(dy) * interior_y], dim=2)
    return 0.25 * shift.to(coords.dtype)


def _gaussian_kernel(kernel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """1-D Gaussian of ``kernel`` taps with OpenCV's default sigma for that size (sum 1)."""
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    r = torch.arange(kernel, dtype=dtype, device=device) - (kernel - 1) / 2
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    return g / g.sum()


def _blurred_log_patch(hm: torch.Tensor, x: torch.Tensor, y: torch.Tensor, kernel: int) -> torch.Tensor:
    """log of the Gaussian-blurred heatmap on the 5x5 pixels around (x, y): (B, J, 5, 5), [row, col].

    DARK blurs the whole map (zero padding outside it) and reads 13 values around the peak;
    blurring only the (kernel + 4)^2 window that those values depend on gives the same numbers
    (tests/test_heatmaps.py) without convolving whole maps.
    """
    b, j, h, w = hm.shape
    s = kernel // 2 + 2  # window half-size: blur radius + the stencil's reach of 2
    n = 2 * s + 1
    offs = torch.arange(-s, s + 1, device=hm.device)
    rows, cols = y[..., None] + offs, x[..., None] + offs  # (B, J, n) each
    # Zeros outside the map, as DARK's zero-padded blur (masking a gather: no padded copy of the map).
    inside = (((rows >= 0) & (rows < h))[..., :, None] & ((cols >= 0) & (cols < w))[..., None, :])
    idx = rows.clamp(0, h - 1)[..., :, None] * w + cols.clamp(0, w - 1)[..., None, :]
    win = hm.flatten(2).gather(2, idx.flatten(2)).view(b, j, n, n) * inside
    g = _gaussian_kernel(kernel, hm.dtype, hm.device)
    patch = win.unfold(3, kernel, 1) @ g  # (B, J, n, 5): horizontal pass
    patch = patch.unfold(2, kernel, 1) @ g  # (B, J, 5, 5): vertical pass
    return torch.log(patch.clamp_min(1e-10))


def _dark_margin(kernel: int) -> int:
    """px from the edge below which DARK falls back to the quarter shift (see :func:`_dark_offset`).

    3 up to sigma 2 (kernel 11); a wider blur carries the zero padding further in, so ``kernel // 3``:
    measured on Gaussians of sigma 1 to 4, DARK's worst error at that margin is 0.11 px (with 3 px,
    sigma 3 reached 0.53 px there: worse than the quarter shift it replaces).
    """
    return max(3, kernel // 3)


def _dark_offset(hm: torch.Tensor, coords: torch.Tensor, kernel: int) -> torch.Tensor:
    """DARK (Zhang et al., CVPR 2020): one Newton step on the blurred log-heatmap at the argmax.

    The blur and the stencil are DarkPose's / mmpose's ``refine_keypoints_dark`` (zero padding,
    central differences over +-2 px). Where the peak is at least :func:`_dark_margin` px from every
    edge and the Hessian is negative definite: the 2-D step ``-H^-1 g``. Elsewhere per axis:
    the 1-D step on an axis whose peak is far enough from the edges, else the quarter shift.
    DarkPose steps from 2 px on (and leaves nearer peaks unrefined); but the zero padding
    biases the step close to an edge: on sigma-2 Gaussians the worst error is 0.37 px for a
    peak 2 px from the edge, 0.11 px at 3 px, against 0.25 px for the quarter shift.
    Returns the (B, J, 2) offset, clamped to +-1 px.
    """
    b, j, h, w = hm.shape
    x, y = coords[..., 0].long(), coords[..., 1].long()
    L = _blurred_log_patch(hm, x, y, kernel)
    c = L[..., 2, 2]
    gx = 0.5 * (L[..., 2, 3] - L[..., 2, 1])
    gy = 0.5 * (L[..., 3, 2] - L[..., 1, 2])
    hxx = 0.25 * (L[..., 2, 4] - 2 * c + L[..., 2, 0])
    hyy = 0.25 * (L[..., 4, 2] - 2 * c + L[..., 0, 2])
    hxy = 0.25 * (L[..., 3, 3] - L[..., 1, 3] - L[..., 3, 1] + L[..., 1, 1])
    margin = _dark_margin(kernel)
    fit_x = (x >= margin) & (x <= w - 1 - margin)
    fit_y = (y >= margin) & (y <= h - 1 - margin)
    det = hxx * hyy - hxy * hxy
    full = fit_x & fit_y & (hxx < 0) & (det > 0)  # a maximum, not a saddle or a flat patch
    one_x = fit_x & (hxx < 0)
    one_y = fit_y & (hyy < 0)
    one = torch.ones_like(det)
    safe_det = torch.where(full, det, one)
    quarter = _quarter_offset(hm, coords)
    # offset = -H^-1 g, the 2x2 inverse written out; 1-D: -g / h.
    ox = torch.where(full, -(hyy * gx - hxy * gy) / safe_det,
                     torch.where(one_x, -gx / torch.where(one_x, hxx, one), quarter[..., 0]))
    oy = torch.where(full, -(hxx * gy - hxy * gx) / safe_det,
                     torch.where(one_y, -gy / torch.where(one_y, hyy, one), quarter[..., 1]))
    return torch.stack([ox, oy], dim=2).clamp(-1.0, 1.0)


def decode_heatmaps(heatmaps: Array, method: str = "argmax", dark_kernel: int = 11
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel joint positions from heatmaps (:meth:`HeatmapCodec.decode` with explicit parameters).

    Args:
        heatmaps: (B, J, H, W) tensor or array (any device).
        method: ``argmax`` (integer argmax + quarter-pixel shift toward the higher neighbour,
            as official HRNet) or ``dark`` (DARK: a Newton step on the blurred log-heatmap).
        dark_kernel: Gaussian kernel size of DARK's blur; 11 suits sigma 2 only, the codec
            derives it from sigma (:func:`dark_kernel_size`).
    Returns:
        coords (B, J, 2) in heatmap pixels (x, y), and maxvals (B, J) (the peak values, as scores).
    """
    hm = _as_tensor(heatmaps)
    if hm.dim() != 4:
        raise ValueError(f"heatmaps must be (B, J, H, W), got shape {tuple(hm.shape)}")
    if method == "dark" and (dark_kernel < 1 or dark_kernel % 2 == 0):
        raise ValueError(f"dark_kernel must be a positive odd size, got {dark_kernel}")
    coords, maxvals = get_max_preds(hm)
    if method == "argmax":
        coords = _shift_quarter(hm, coords)
    elif method == "dark":
        coords = coords + _dark_offset(hm, coords, dark_kernel)
    else:
        raise ValueError(f"unknown heatmap decoding {method!r}: use 'argmax' or 'dark'")
    return coords, maxvals
