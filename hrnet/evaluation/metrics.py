"""Hand keypoint metrics: NME, failure rate, per-joint NME, PCK, AUC, EPE, CED (pure numpy).

Every function takes whole arrays (no per-image or per-keypoint Python loops):

* ``preds`` (N, J, 2) predicted (x, y) in pixels of the original image;
* ``joints`` (N, J, 3) ground truth (x, y, v) in pixels of the original image; a joint is
  *labelled* where ``v > 0`` (COCO 1 or 2, as mmpose's ``keypoints_visible``); only labelled
  joints count anywhere;
* ``bbox`` (N, 4) annotation box ``[x, y, w, h]`` in pixels of the original image.

NME (the headline number) is per image the mean over labelled joints of
``||pred - gt|| / max(w, h)``, then the mean over images; images without a labelled joint (or
with an empty box) are excluded and counted. PCK, AUC and EPE follow mmpose's hand benchmarks
(OneHand10K / FreiHAND / RHD configs: ``PCKAccuracy(thr=0.2)``, ``AUC()``, ``EPE()``) exactly,
so the numbers compare with published mmpose tables.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

__all__ = ["labelled_mask", "bbox_size", "normalized_errors", "nme_per_image", "per_joint_nme",
           "failure_rate", "pck_accuracy", "auc", "epe", "ced_curve", "compute_metrics",
           "metric_names"]


def _check(preds: np.ndarray, joints: np.ndarray, bbox: Optional[np.ndarray] = None
           ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    preds = np.asarray(preds, dtype=np.float64)
    joints = np.asarray(joints, dtype=np.float64)
    if preds.ndim != 3 or preds.shape[2] != 2:
        raise ValueError(f"preds must be (N, J, 2), got shape {preds.shape}")
    if joints.shape != preds.shape[:2] + (3,):
        raise ValueError(f"joints must be (N, J, 3) = {preds.shape[:2] + (3,)}, got shape {joints.shape}")
    if bbox is not None:
        bbox = np.asarray(bbox, dtype=np.float64)
        if bbox.shape != (preds.shape[0], 4):
            raise ValueError(f"bbox must be (N, 4) = ({preds.shape[0]}, 4) xywh, got shape {bbox.shape}")
    return preds, joints, bbox


def labelled_mask(joints: np.ndarray) -> np.ndarray:
    """(N, J) bool: the joints that count (visibility flag ``v > 0``)."""
    return np.asarray(joints)[..., 2] > 0


def bbox_size(bbox: np.ndarray) -> np.ndarray:
    """(N,) ``max(w, h)`` of ``[x, y, w, h]`` boxes, in pixels: the NME and PCK normaliser."""
    return np.asarray(bbox, dtype=np.float64)[:, 2:4].max(axis=1)


def normalized_errors(preds: np.ndarray, joints: np.ndarray, bbox: np.ndarray
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """Per-joint errors ``||pred - gt|| / max(w, h)``: (N, J) float64, and the (N, J) mask of
    the entries that count (labelled joint of an image with a non-empty box)."""
    preds, joints, bbox = _check(preds, joints, bbox)
    size = bbox_size(bbox)
    mask = labelled_mask(joints) & (size > 0)[:, None]
    dist = np.linalg.norm(preds - joints[..., :2], axis=-1)
    err = dist / np.where(size > 0, size, 1.0)[:, None]
    return err, mask


def nme_per_image(preds: np.ndarray, joints: np.ndarray, bbox: np.ndarray) -> np.ndarray:
    """(N,) NME of each image: the mean over its labelled joints of ``||pred - gt|| / max(w, h)``.

    NaN for an image with no labelled joint or an empty box (excluded from the mean NME).
    """
    err, mask = normalized_errors(preds, joints, bbox)
    count = mask.sum(axis=1)
    total = np.where(mask, err, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def per_joint_nme(preds: np.ndarray, joints: np.ndarray, bbox: np.ndarray) -> np.ndarray:
    """(J,) mean normalised error of each joint over the images where it is labelled (NaN if never)."""
    err, mask = normalized_errors(preds, joints, bbox)
    count = mask.sum(axis=0)
    total = np.where(mask, err, 0.0).sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def failure_rate(per_image: np.ndarray, threshold: float = 0.1) -> float:
    """Fraction of the evaluated images (finite NME) with NME > ``threshold``; NaN if none."""
    per_image = np.asarray(per_image, dtype=np.float64)
    valid = np.isfinite(per_image)
    if not valid.any():
        return float("nan")
    return float((per_image[valid] > threshold).mean())


def _mmpose_distances(preds: np.ndarray, gts: np.ndarray, mask: np.ndarray, norm_factor: np.ndarray
                      ) -> np.ndarray:
    """(N, J) float32 normalised distances, -1 where not counted.

    Mirrors ``mmpose.evaluation.functional.keypoint_eval._calc_distances`` (returned here as
    (N, K), not transposed): an instance with a zero normaliser on any axis is dropped, a
    negative one becomes 1e6, and the distances are stored in float32 as mmpose does.
    """
    norm = np.array(norm_factor, dtype=np.float64)  # a copy: mmpose edits its argument in place
    mask = mask & ~(norm == 0).any(axis=1)[:, None]
    norm[norm <= 0] = 1e6
    dist = np.linalg.norm((preds - gts) / norm[:, None, :], axis=-1).astype(np.float32)
    return np.where(mask, dist, np.float32(-1))


def _mmpose_pck(distances: np.ndarray, thrs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per-keypoint accuracy (T, J) (-1 where a joint is never labelled) and its average (T,)
    over labelled joints (0 when none) at each threshold: mmpose's ``_distance_acc`` +
    ``keypoint_pck_accuracy``, for T thresholds at once."""
    valid = distances != -1  # (N, J)
    n_valid = valid.sum(axis=0)  # (J,)
    # float32 distance < threshold compares in float32, as numpy does for mmpose's python float.
    hits = ((distances[None] < thrs.astype(np.float32)[:, None, None]) & valid[None]).sum(axis=1)
    acc = np.where(n_valid > 0, hits / np.maximum(n_valid, 1), -1.0)  # (T, J)
    counted = n_valid > 0
    avg = acc[:, counted].mean(axis=1) if counted.any() else np.zeros(len(thrs))
    return acc, avg


def pck_accuracy(preds: np.ndarray, joints: np.ndarray, bbox: np.ndarray, thr: float = 0.2
                 ) -> Tuple[np.ndarray, float, int]:
    """PCK@thr normalised by the box size, as mmpose's ``PCKAccuracy(thr, norm_item='bbox')``.

    mmpose normalises both axes by ``max(w, h)`` of the box (``bbox_size`` in
    ``PCKAccuracy.process``), computes the accuracy of each keypoint over the images where it is
    labelled (``distance < thr``, strict), and averages over the keypoints labelled at least
    once (``keypoint_pck_accuracy``). Returns (per-keypoint accuracy (J,) with -1 for a keypoint
    never labelled, the average, the number of keypoints averaged).
    """
    preds, joints, bbox = _check(preds, joints, bbox)
    size = bbox_size(bbox)
    dist = _mmpose_distances(preds, joints[..., :2], labelled_mask(joints), np.stack([size, size], 1))
    acc, avg = _mmpose_pck(dist, np.array([thr], dtype=np.float64))
    return acc[0], float(avg[0]), int((acc[0] >= 0).sum())


def auc(preds: np.ndarray, joints: np.ndarray, norm_factor: float = 30.0, num_thrs: int = 20) -> float:
    """Area under the PCK curve over pixel thresholds, as mmpose's ``keypoint_auc`` / ``AUC()``.

    Distances are divided by ``norm_factor`` (30 px for hands) and PCK is averaged over the
    thresholds ``i / num_thrs`` for ``i = 0 .. num_thrs - 1`` (0, 1.5, ..., 28.5 px): the lowest
    threshold is 0 and ``d < 0`` never holds, so a perfect prediction scores
    ``(num_thrs - 1) / num_thrs`` = 0.95, as in mmpose.
    """
    preds, joints, _ = _check(preds, joints)
    nor = np.full((preds.shape[0], 2), float(norm_factor))
    dist = _mmpose_distances(preds, joints[..., :2], labelled_mask(joints), nor)
    thrs = np.array([1.0 * i / num_thrs for i in range(num_thrs)])
    _, avg = _mmpose_pck(dist, thrs)
    return float(avg.sum() / num_thrs)


def epe(preds: np.ndarray, joints: np.ndarray) -> float:
    """End-point error: mean pixel distance over all labelled joints of all images, as mmpose's
    ``keypoint_epe`` / ``EPE()`` (0 when nothing is labelled, as mmpose). mmpose sums the
    float32 distances in float32; the mean here is taken in float64 (differs by < 1e-6 relative)."""
    preds, joints, _ = _check(preds, joints)
    dist = _mmpose_distances(preds, joints[..., :2], labelled_mask(joints), np.ones((preds.shape[0], 2)))
    valid = dist[dist != -1]
    return float(valid.astype(np.float64).sum() / max(1, valid.size))


def ced_curve(per_image: np.ndarray, max_error: float, num: int = 201) -> Tuple[np.ndarray, np.ndarray]:
    """Cumulative error distribution: thresholds (num,) from 0 to ``max_error`` and the fraction
    (num,) of the evaluated images (finite NME) with NME <= each threshold."""
    per_image = np.asarray(per_image, dtype=np.float64)
    values = np.sort(per_image[np.isfinite(per_image)])
    thresholds = np.linspace(0.0, float(max_error), num)
    if values.size == 0:
        return thresholds, np.zeros(num)
    return thresholds, np.searchsorted(values, thresholds, side="right") / values.size


def _thresholds(cfg_or_thresholds: Any) -> Tuple[float, float, float]:
    """(failure threshold, PCK threshold, AUC max px) from a config, a mapping or None (defaults)."""
    src = cfg_or_thresholds
    if src is None:
        from configs import get_defaults

        src = get_defaults()
    test = getattr(src, "TEST", src)
    if not isinstance(test, Mapping):
        raise TypeError(f"expected a config (with TEST), a mapping or None, got {type(src).__name__}")
    try:
        return (float(test["FAILURE_THRESHOLD"]), float(test["PCK_THRESHOLD"]), float(test["AUC_MAX_PX"]))
    except KeyError as exc:
        raise KeyError(f"metric thresholds: missing key TEST.{exc.args[0]}") from exc


def metric_names(cfg_or_thresholds: Any = None) -> Tuple[str, str]:
    """The threshold-dependent metric keys, e.g. (``failure_rate@0.1``, ``PCK@0.2``)."""
    fail_thr, pck_thr, _ = _thresholds(cfg_or_thresholds)
    return f"failure_rate@{fail_thr:g}", f"PCK@{pck_thr:g}"


def compute_metrics(preds: np.ndarray, joints: np.ndarray, bbox: np.ndarray,
                    cfg_or_thresholds: Any = None) -> Dict[str, Any]:
    """All evaluation metrics of one set of predictions.

    Args:
        preds: (N, J, 2) predictions in pixels of the original image.
        joints: (N, J, 3) ground truth (x, y, v) in pixels of the original image.
        bbox: (N, 4) annotation boxes xywh in pixels (the normaliser of NME and PCK).
        cfg_or_thresholds: a config (its ``TEST.FAILURE_THRESHOLD``, ``TEST.PCK_THRESHOLD``,
            ``TEST.AUC_MAX_PX`` are used), a mapping with those three keys, or None (defaults).
    Returns:
        ``NME`` (float, NaN if no image counts), ``failure_rate@<thr>``, ``PCK@<thr>``, ``AUC``,
        ``EPE`` (pixels), ``num_images`` (images evaluated), ``num_images_excluded`` (no
        labelled joint or an empty box), ``per_joint_NME`` (J,) and ``per_image_NME`` (N,)
        (NaN for an excluded image).
    """
    fail_thr, pck_thr, auc_px = _thresholds(cfg_or_thresholds)
    fail_key, pck_key = metric_names(cfg_or_thresholds)
    per_image = nme_per_image(preds, joints, bbox)
    counted = np.isfinite(per_image)
    return {
        "NME": float(per_image[counted].mean()) if counted.any() else float("nan"),
        fail_key: failure_rate(per_image, fail_thr),
        pck_key: pck_accuracy(preds, joints, bbox, pck_thr)[1],
        "AUC": auc(preds, joints, auc_px),
        "EPE": epe(preds, joints),
        "num_images": int(counted.sum()),
        "num_images_excluded": int((~counted).sum()),
        "per_joint_NME": per_joint_nme(preds, joints, bbox),
        "per_image_NME": per_image,
    }
