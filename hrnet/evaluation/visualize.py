"""Pictures of predictions: hand skeletons, heatmap overlays, grids, the TensorBoard gallery.

Images are RGB uint8 ``(H, W, 3)`` (TensorBoard's ``dataformats="HWC"``); points are ``(J, 2)``
``(x, y)`` pixels of the image they are drawn on, in the one convention of ``data/transforms.py``
(pixel centres at integer coordinates). Geometry (crops, resizes, mapping points into a crop)
goes through ``data.transforms``; nothing here re-derives it.

The drawing functions return new arrays and never modify their inputs; :func:`gallery_samples`
reads dataset items and says so. The error-analysis sheets of a test set (worst / random hands,
per-joint NME chart) are in ``error_analysis.py``.

Joint order (OneHand10K, FreiHAND, COCO-WholeBody-Hand): 0 wrist, then 4 joints per finger from
the base to the tip: thumb 1-4, index 5-8, middle 9-12, ring 13-16, little 17-20.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import torch

from data.transforms import IMAGENET_MEAN, IMAGENET_STD, get_affine_transform, transform_points

__all__ = ["HAND_BONES", "FINGER_NAMES", "FINGER_COLORS", "JOINT_NAMES", "joint_colors", "to_uint8_images",
           "draw_skeleton", "draw_box", "box_corners", "draw_hand", "put_label", "heatmap_overlay", "make_grid", "crop_affines",
           "prediction_grid", "GallerySamples", "gallery_samples", "gallery_heatmaps", "gallery_image"]

FINGER_NAMES = ("thumb", "index", "middle", "ring", "little")
#: RGB colour of each finger (and of its bones), in :data:`FINGER_NAMES` order.
FINGER_COLORS: Tuple[Tuple[int, int, int], ...] = (
    (255, 140, 0), (255, 225, 0), (50, 205, 50), (0, 170, 255), (200, 80, 255))
_WRIST_COLOR = (255, 60, 60)
#: The 20 bones of the 21-joint hand: wrist to each finger base, then along each finger.
HAND_BONES: Tuple[Tuple[int, int], ...] = tuple(
    pair for f in range(5) for pair in ((0, 1 + 4 * f), (1 + 4 * f, 2 + 4 * f), (2 + 4 * f, 3 + 4 * f),
                                         (3 + 4 * f, 4 + 4 * f)))
#: Short joint names for axis labels: W, T1..T4, I1..I4, M1..M4, R1..R4, L1..L4.
JOINT_NAMES: Tuple[str, ...] = ("W",) + tuple(f"{n[0].upper()}{k}" for n in FINGER_NAMES for k in range(1, 5))

_GT_COLOR = (255, 255, 255)
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel drawing at 1/16 px
_ONE = 1 << _SHIFT

ImageBatch = Union[np.ndarray, torch.Tensor]


def joint_colors(num_joints: int = 21) -> List[Tuple[int, int, int]]:
    """RGB colour per joint: the wrist red, every finger joint its finger's colour (extra joints grey)."""
    colors = [_WRIST_COLOR] + [FINGER_COLORS[(j - 1) // 4] for j in range(1, min(num_joints, 21))]
    return colors + [(160, 160, 160)] * (num_joints - len(colors))


def to_uint8_images(images: ImageBatch) -> np.ndarray:
    """Images as RGB uint8 ``(N, H, W, 3)``.

    Accepts the dataset's normalised float ``(N, 3, H, W)`` (ImageNet mean/std, inverted here),
    uint8 ``(N, 3, H, W)`` or uint8 ``(N, H, W, 3)``; a single image without N is accepted too.
    """
    arr = images.detach().cpu().numpy() if torch.is_tensor(images) else np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"images must be (N, 3, H, W) or (N, H, W, 3), got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr.transpose(0, 2, 3, 1) if arr.shape[1] == 3 and arr.shape[3] != 3 else arr)
    if arr.shape[1] != 3:
        raise ValueError(f"float images must be normalised (N, 3, H, W), got shape {arr.shape}")
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, dtype=np.float32)[:, None, None]
    rgb = (arr.astype(np.float32) * std + mean) * 255.0
    return np.ascontiguousarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1))


def _fixed(p: np.ndarray) -> Tuple[int, int]:
    return int(round(float(p[0]) * _ONE)), int(round(float(p[1]) * _ONE))


def _drawable(points: np.ndarray, visible: Optional[np.ndarray], shape: Tuple[int, ...]) -> np.ndarray:
    """(J,) bool: labelled, finite and not absurdly far outside the image (cv2 fixed-point range)."""
    ok = np.isfinite(points).all(axis=1)
    if visible is not None:
        ok &= np.asarray(visible).reshape(-1) > 0
    limit = 4.0 * max(shape[0], shape[1]) + 64.0
    return ok & (np.abs(np.where(np.isfinite(points), points, 0.0)) < limit).all(axis=1)


def draw_skeleton(image: np.ndarray, points: np.ndarray, visible: Optional[np.ndarray] = None,
                  ground_truth: bool = False, thickness: int = 2, radius: int = 3) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 RGB with the hand of ``points`` (J, 2) drawn on it.

    Prediction style: a colour per finger (:data:`FINGER_COLORS`), bones ``thickness`` px,
    joints as dots of ``radius`` px. ``ground_truth=True``: thin white bones (1 px) and small
    white rings, to sit on top of a prediction. Joints with ``visible <= 0`` or non-finite
    coordinates and the bones touching them are left out.
    """
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    ok = _drawable(pts, visible, out.shape)
    colors = joint_colors(len(pts))
    for a, b in HAND_BONES:
        if b < len(pts) and ok[a] and ok[b]:
            color = _GT_COLOR if ground_truth else colors[b]
            cv2.line(out, _fixed(pts[a]), _fixed(pts[b]), color, 1 if ground_truth else thickness,
                     cv2.LINE_AA, _SHIFT)
    for j in np.flatnonzero(ok):
        if ground_truth:
            cv2.circle(out, _fixed(pts[j]), max(1, radius - 1) * _ONE, _GT_COLOR, 1, cv2.LINE_AA, _SHIFT)
        else:
            cv2.circle(out, _fixed(pts[j]), radius * _ONE, colors[j], -1, cv2.LINE_AA, _SHIFT)
    return out


def draw_box(image: np.ndarray, corners: np.ndarray, color: Tuple[int, int, int] = (0, 255, 255),
             thickness: int = 1) -> np.ndarray:
    """A copy of ``image`` with the quadrilateral ``corners`` (4, 2) (pixel-centre coordinates, in
    order around the box) outlined."""
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    pts = np.round(np.asarray(corners, dtype=np.float64) * _ONE).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(out, [pts], True, color, thickness, cv2.LINE_AA, _SHIFT)
    return out


def box_corners(bbox: Sequence[float]) -> np.ndarray:
    """(4, 2) corners of an ``[x, y, w, h]`` edge-convention box in pixel-centre coordinates
    (edge ``x`` lies at centre coordinate ``x - 0.5``, see ``box_to_center_scale``)."""
    x, y, w, h = (float(v) for v in bbox[:4])
    x0, y0, x1, y1 = x - 0.5, y - 0.5, x + w - 0.5, y + h - 0.5
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def draw_hand(image: np.ndarray, bbox: Optional[Sequence[float]], pred: np.ndarray,
              joints: Optional[np.ndarray] = None) -> np.ndarray:
    """A copy of a full image (H, W, 3) uint8 RGB with a hand's box ``[x, y, w, h]`` (cyan; None:
    no box), prediction (J, 2) and optional ground truth (J, 3), all in its pixels; line widths
    grow with the image (1 px per 250 px of its short side)."""
    width = max(1, int(round(min(image.shape[:2]) / 250.0)))
    out = image if bbox is None else draw_box(image, box_corners(bbox), thickness=width)
    out = draw_skeleton(out, pred, thickness=width + 1, radius=width + 2)
    if joints is not None:
        joints = np.asarray(joints, np.float64)
        out = draw_skeleton(out, joints[:, :2], joints[:, 2], ground_truth=True, radius=width + 2)
    return out


def put_label(image: np.ndarray, text: str, color: Tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """A copy of ``image`` with ``text`` in its top-left corner on a dark background."""
    out = np.ascontiguousarray(image, dtype=np.uint8).copy()
    scale = max(0.3, min(out.shape[:2]) / 400.0)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    cv2.rectangle(out, (0, 0), (tw + 4, th + base + 4), (0, 0, 0), -1)
    cv2.putText(out, text, (2, th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)
    return out


def heatmap_overlay(image: np.ndarray, heatmaps: ImageBatch, alpha: float = 0.6) -> np.ndarray:
    """``image`` (H, W, 3) with the summed heatmaps (J, h, w) blended on as a JET colour map.

    The sum is clipped to [0, 1] and resized to (W, H) bilinearly; OpenCV's resize maps output
    pixel ``q`` to cell ``(q + 0.5) h / H - 0.5``, which at stride 4 is the ``q = 4 h + 1.5`` of
    ``data/transforms.py``. Each pixel is blended with weight ``alpha * heat``: no heat, no tint.
    """
    hm = heatmaps.detach().float().cpu().numpy() if torch.is_tensor(heatmaps) else np.asarray(heatmaps)
    heat = np.clip(hm.astype(np.float32).sum(axis=0), 0.0, 1.0)
    heat = cv2.resize(heat, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    color = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]  # BGR -> RGB
    w = (alpha * heat)[..., None]
    return np.clip(image * (1.0 - w) + color * w + 0.5, 0, 255).astype(np.uint8)


def make_grid(tiles: Sequence[np.ndarray], ncols: int = 4, pad: int = 2, pad_value: int = 40) -> np.ndarray:
    """Tiles (each (h, w, 3) uint8, all the same size) in rows of ``ncols``, ``pad`` px apart.
    Returns (H, W, 3) uint8; empty cells of the last row are ``pad_value`` grey."""
    if len(tiles) == 0:
        raise ValueError("make_grid needs at least one tile")
    h, w = tiles[0].shape[:2]
    ncols = max(1, min(int(ncols), len(tiles)))
    nrows = -(-len(tiles) // ncols)
    grid = np.full((nrows * h + (nrows + 1) * pad, ncols * w + (ncols + 1) * pad, 3), pad_value, np.uint8)
    for i, tile in enumerate(tiles):
        if tile.shape[:2] != (h, w):
            raise ValueError(f"tile {i} is {tile.shape[:2]}, tile 0 is {(h, w)}: all tiles must have one size")
        r, c = divmod(i, ncols)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        grid[y:y + h, x:x + w] = tile[..., :3]
    return grid


def crop_affines(center: np.ndarray, scale: np.ndarray, rotation: np.ndarray, flip: np.ndarray,
                 image_size: Sequence[int]) -> np.ndarray:
    """(N, 2, 3) original-image -> crop-input pixel matrices of N crops (the dataset's ``meta``
    ``center`` (N, 2), ``scale`` (N, 2), ``rotation`` (N,) degrees, ``flip`` (N,))."""
    center, scale = np.asarray(center, np.float64).reshape(-1, 2), np.asarray(scale, np.float64).reshape(-1, 2)
    rotation = np.broadcast_to(np.asarray(rotation, np.float64), (len(center),))
    flip = np.broadcast_to(np.asarray(flip, bool), (len(center),))
    return np.stack([get_affine_transform(c, s, float(r), image_size, bool(f))
                     for c, s, r, f in zip(center, scale, rotation, flip)])


def _upscale(image: np.ndarray, min_side: int) -> Tuple[np.ndarray, np.ndarray]:
    """``image`` enlarged by the smallest integer factor reaching ``min_side`` (bilinear), and the
    (2, 3) matrix taking its pixel coordinates to the enlarged image's."""
    h, w = image.shape[:2]
    f = max(1, -(-int(min_side) // max(1, min(h, w))))
    if f == 1:
        return image, np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    # The whole image as a box: get_affine_transform gives x -> f x + (f - 1) / 2, cv2.resize's mapping.
    mat = get_affine_transform(((w - 1) * 0.5, (h - 1) * 0.5), (w, h), 0.0, (w * f, h * f))
    return cv2.resize(image, (w * f, h * f), interpolation=cv2.INTER_LINEAR), mat


def prediction_grid(images: ImageBatch, preds: np.ndarray, gts: Optional[np.ndarray] = None,
                    visible: Optional[np.ndarray] = None, heatmaps: Optional[ImageBatch] = None,
                    labels: Optional[Sequence[str]] = None, ncols: int = 4, min_side: int = 192) -> np.ndarray:
    """One (H, W, 3) uint8 RGB grid of N crops with predicted and ground-truth hands.

    Args:
        images: N crops, normalised float (N, 3, h, w) as the dataset returns them, or uint8.
        preds: (N, J, 2) predictions in crop-input pixels (NaN rows: no prediction drawn).
        gts: (N, J, 2) or (N, J, 3) ground truth in crop-input pixels (drawn thin and white).
        visible: (N, J) labelled flags of the ground truth (default: the third column of ``gts``).
        heatmaps: optional (N, J, h/4, w/4) predicted heatmaps, summed and overlaid.
        labels: optional text per crop (top-left corner).
        min_side: crops are enlarged by an integer factor to at least this many pixels.
    For ``SummaryWriter.add_image(tag, grid, step, dataformats="HWC")``.
    """
    imgs = to_uint8_images(images)
    preds = np.asarray(preds, dtype=np.float64)
    if gts is not None:
        gts = np.asarray(gts, dtype=np.float64)
        if visible is None and gts.shape[-1] == 3:
            visible = gts[..., 2]
    tiles = []
    for i, img in enumerate(imgs):
        if heatmaps is not None:
            img = heatmap_overlay(img, heatmaps[i])
        img, mat = _upscale(img, min_side)
        img = draw_skeleton(img, transform_points(preds[i], mat), thickness=2, radius=3)
        if gts is not None:
            vis = None if visible is None else np.asarray(visible)[i]
            img = draw_skeleton(img, transform_points(gts[i, :, :2], mat), vis, ground_truth=True)
        if labels is not None:
            img = put_label(img, labels[i])
        tiles.append(img)
    return make_grid(tiles, ncols)


@dataclass(frozen=True)
class GallerySamples:
    """A fixed set of validation crops for :func:`gallery_image`.

    ``inputs`` (N, 3, h, w) float32 normalised crops (for an optional heatmap forward),
    ``images`` (N, h, w, 3) uint8 RGB, ``joints`` (N, J, 3) ground truth in crop-input pixels
    (x, y, v), ``crop_from_img`` (N, 2, 3) original -> crop pixels, ``ann_id`` (N,), ``index``
    (N,) dataset indices.
    """

    inputs: torch.Tensor
    images: np.ndarray
    joints: np.ndarray
    crop_from_img: np.ndarray
    ann_id: np.ndarray
    index: np.ndarray


def gallery_samples(dataset: Any, num_images: int) -> GallerySamples:
    """Read ``num_images`` evenly spaced items of a *test* dataset (``data.build_dataset(cfg,
    False)``: no augmentation, so the crops are the same every epoch) once, for every validation."""
    n = min(int(num_images), len(dataset))
    index = np.unique(np.linspace(0, len(dataset) - 1, n).round().astype(np.int64)) if n > 0 else np.zeros(0, int)
    items = [dataset[int(i)] for i in index]
    inputs = torch.stack([it["image"] for it in items]) if items else torch.zeros(0)
    size = (int(inputs.shape[-1]), int(inputs.shape[-2])) if items else (0, 0)
    meta = {k: np.stack([np.asarray(it["meta"][k]) for it in items]) for k in ("center", "scale", "rotation", "flip")} \
        if items else {}
    mats = crop_affines(meta["center"], meta["scale"], meta["rotation"], meta["flip"], size) if items \
        else np.zeros((0, 2, 3))
    joints = np.stack([np.asarray(it["meta"]["joints"], np.float64) for it in items]) if items else np.zeros((0, 0, 3))
    if items:
        joints = np.concatenate([transform_points(joints[..., :2], mats), joints[..., 2:]], axis=-1)
    return GallerySamples(inputs=inputs, images=to_uint8_images(inputs) if items else np.zeros((0, 0, 0, 3), np.uint8),
                          joints=joints, crop_from_img=mats,
                          ann_id=np.array([int(it["meta"]["ann_id"]) for it in items], dtype=np.int64), index=index)


def gallery_heatmaps(model: torch.nn.Module, samples: GallerySamples, amp) -> torch.Tensor:
    """Heatmaps (N, J, h', w') of ``samples.inputs`` from ``model`` in eval mode under the
    ``hrnet.runtime.device.AmpPolicy`` ``amp`` (on its device), as float32 on the CPU."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), amp.autocast():
            return model(samples.inputs.to(amp.device)).float().cpu()
    finally:
        model.train(was_training)


def gallery_image(samples: GallerySamples, results: Mapping[str, np.ndarray],
                  heatmaps: Optional[ImageBatch] = None, ncols: int = 4) -> np.ndarray:
    """The ``valid/predictions`` grid: ``samples`` with the predictions of ``results``
    (:func:`hrnet.evaluation.evaluate.run_inference` output over the validation set, matched by ``ann_id``;
    a sample missing from it gets no prediction) and, optionally, their heatmaps (N, J, h', w')
    from a forward of ``samples.inputs``. Returns (H, W, 3) uint8 RGB."""
    where = {int(a): i for i, a in enumerate(np.asarray(results["ann_id"]).tolist())}
    preds_img = np.asarray(results["preds"], np.float64)
    j = samples.joints.shape[1]
    preds = np.full((len(samples.ann_id), j, 2), np.nan)
    for k, a in enumerate(samples.ann_id.tolist()):
        if a in where:
            preds[k] = transform_points(preds_img[where[a]], samples.crop_from_img[k])
    return prediction_grid(samples.images, preds, samples.joints, heatmaps=heatmaps, ncols=ncols)
