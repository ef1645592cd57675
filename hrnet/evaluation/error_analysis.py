"""Error analysis of a test set (``tools/test.py --vis DIR``): the worst and random hands as
contact sheets, and the per-joint NME as a bar chart.

Tiles show each hand in its original image (box, prediction, thin white ground truth, label),
drawn with ``visualize``'s functions; images are RGB uint8 ``(H, W, 3)``, points pixels of the
original image. :func:`write_error_analysis` reads images and writes PNGs; the others are pure.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import cv2
import numpy as np

from data.transforms import box_to_center_scale, get_affine_transform, transform_points, warp_crop

from .visualize import JOINT_NAMES, box_corners, draw_box, draw_skeleton, joint_colors, make_grid, put_label

__all__ = ["select_worst", "select_random", "annotate_hand", "contact_sheet", "save_per_joint_nme_plot",
           "write_error_analysis"]


def select_worst(per_image_nme: np.ndarray, k: int = 16) -> np.ndarray:
    """Indices of the ``k`` images with the highest NME, worst first (NaN: never selected;
    ties keep the lower index first)."""
    nme = np.asarray(per_image_nme, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(nme))
    order = finite[np.argsort(-nme[finite], kind="stable")]
    return order[:k]


def select_random(per_image_nme: np.ndarray, k: int = 16, seed: int = 0) -> np.ndarray:
    """``k`` distinct images with a finite NME drawn with ``seed``, in increasing index order."""
    finite = np.flatnonzero(np.isfinite(np.asarray(per_image_nme, dtype=np.float64)))
    pick = np.random.default_rng(seed).choice(finite, size=min(k, finite.size), replace=False)
    return np.sort(pick)


def annotate_hand(image_bgr: np.ndarray, bbox: Sequence[float], pred: Optional[np.ndarray],
                  joints: Optional[np.ndarray] = None, label: str = "", tile: int = 256,
                  context: float = 1.6) -> np.ndarray:
    """A square (tile, tile, 3) RGB view of one hand in an original BGR image: the box enlarged
    ``context`` times around its centre, with the box (cyan), the prediction (J, 2) and the
    ground truth (J, 3) (thin white) in original-image pixels, and ``label`` in the corner."""
    center, scale = box_to_center_scale(bbox, 1.0, context)
    mat = get_affine_transform(center, scale, 0.0, (tile, tile))
    view = cv2.cvtColor(warp_crop(image_bgr, mat, (tile, tile)), cv2.COLOR_BGRA2RGB)
    view = draw_box(view, transform_points(box_corners(bbox), mat))
    if pred is not None:
        view = draw_skeleton(view, transform_points(np.asarray(pred, np.float64)[:, :2], mat))
    if joints is not None:
        joints = np.asarray(joints, np.float64)
        view = draw_skeleton(view, transform_points(joints[:, :2], mat), joints[:, 2], ground_truth=True)
    return put_label(view, label) if label else view


def contact_sheet(tiles: Sequence[np.ndarray], title: str, ncols: int = 4) -> np.ndarray:
    """:func:`make_grid` of ``tiles`` under a title bar. Returns (H, W, 3) uint8 RGB."""
    grid = make_grid(tiles, ncols)
    bar = np.full((28, grid.shape[1], 3), 24, np.uint8)
    cv2.putText(bar, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, grid], axis=0)


def save_per_joint_nme_plot(per_joint_nme: np.ndarray, path: str, title: str = "") -> str:
    """PNG bar chart of the per-joint NME (J,), bars in the finger colours. Returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    values = np.asarray(per_joint_nme, dtype=np.float64)
    j = len(values)
    names = list(JOINT_NAMES[:j]) + [str(i) for i in range(len(JOINT_NAMES), j)]
    fig = Figure(figsize=(8, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colors = [tuple(c / 255.0 for c in rgb) for rgb in joint_colors(j)]
    ax.bar(np.arange(j), np.nan_to_num(values, nan=0.0), color=colors, edgecolor="black", linewidth=0.5)
    finite = values[np.isfinite(values)]
    if finite.size:
        ax.axhline(finite.mean(), color="gray", ls="--", lw=1, label=f"mean {finite.mean():.4f}")
        ax.set_ylim(0, max(1.2 * float(finite.max()), 1e-6))  # head room for the legend
        ax.legend(loc="upper left")
    ax.set_xticks(np.arange(j))
    ax.set_xticklabels(names, fontsize=8)
    ax.set(xlabel="joint (W wrist; T thumb, I index, M middle, R ring, L little; 1 base .. 4 tip)",
           ylabel="NME (error / max(bbox w, h))", title=title or "Per-joint NME")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return path


def _write_png(path: str, rgb: np.ndarray) -> str:
    if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: cannot write the PNG")
    return path


def write_error_analysis(out_dir: str, image_paths: Sequence[str], results: Mapping[str, np.ndarray],
                         per_image_nme: np.ndarray, per_joint_nme: np.ndarray, k: int = 16, seed: int = 0,
                         title: str = "") -> Dict[str, Any]:
    """Write ``worst.png`` (the ``k`` highest-NME images, worst first, row by row),
    ``random.png`` (``k`` images drawn with ``seed``) and ``per_joint_nme.png`` into ``out_dir``.

    ``image_paths`` (N,) and ``results`` (:func:`hrnet.evaluation.evaluate.run_inference` output: ``preds``,
    ``joints``, ``bbox``) and ``per_image_nme`` (N,) are in the same order. Each tile shows the hand
    in its original image with the box, the prediction, the ground truth and ``#index NME x``.
    Returns the paths by name and the selected indices (``worst_index``, ``random_index``).
    """
    os.makedirs(out_dir, exist_ok=True)
    nme = np.asarray(per_image_nme, dtype=np.float64)
    cache: Dict[str, np.ndarray] = {}

    def tiles(indices: np.ndarray) -> List[np.ndarray]:
        out = []
        for i in indices.tolist():
            path = str(image_paths[i])
            if path not in cache:
                img = cv2.imread(path, cv2.IMREAD_COLOR)
                if img is None:
                    raise OSError(f"{path}: cannot read the image")
                cache[path] = img
            out.append(annotate_hand(cache[path], results["bbox"][i], results["preds"][i], results["joints"][i],
                                     label=f"#{i} NME {nme[i]:.3f}"))
        return out

    worst, rand = select_worst(nme, k), select_random(nme, k, seed)
    prefix = f"{title}: " if title else ""
    paths = {"per_joint_nme": save_per_joint_nme_plot(per_joint_nme, os.path.join(out_dir, "per_joint_nme.png"),
                                                      f"{prefix}per-joint NME")}
    if worst.size:
        paths["worst"] = _write_png(os.path.join(out_dir, "worst.png"), contact_sheet(
            tiles(worst), f"{prefix}worst {len(worst)} of {np.isfinite(nme).sum()} by NME (worst first)"))
        paths["random"] = _write_png(os.path.join(out_dir, "random.png"), contact_sheet(
            tiles(rand), f"{prefix}{len(rand)} random images (seed {seed})"))
    return {"paths": paths, "worst_index": worst, "random_index": rand}
