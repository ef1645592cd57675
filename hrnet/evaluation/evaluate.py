"""Inference over a test loader: heatmaps -> sub-pixel coordinates -> original-image pixels.

Used by ``tools/test.py`` and by the trainer's per-epoch validation. The loop only runs the
model and decodes (``data.codec.HeatmapCodec``); the mapping back to the original image
is the data package's inverse transform (``meta['hm_to_img']`` through
``data.transforms.transform_points``), and the metrics are ``hrnet.evaluation.metrics.compute_metrics``.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

import numpy as np
import torch
import torch.nn as nn

from data.codec import HeatmapCodec
from data.transforms import transform_points

from hrnet.runtime.checkpoint import write_json
from hrnet.runtime.device import amp_policy_from_cfg
from hrnet.evaluation.metrics import ced_curve

__all__ = ["run_inference", "recalibrate_bn", "run_oracle", "flip_back", "to_coco_results", "save_ced_plot",
           "save_evaluation"]

HeatmapFn = Callable[[Mapping[str, Any]], torch.Tensor]


def flip_back(heatmaps: torch.Tensor) -> torch.Tensor:
    """Heatmaps (B, J, h, w) of a horizontally flipped input, mapped back to the unflipped frame.

    The input flip is x -> W - 1 - x and heatmap cell ``h`` sits at input pixel ``4 h + 1.5``
    (``data/transforms.py``), so the flip is exactly x -> w - 1 - x on the heatmap: a plain
    mirror, without the one-pixel shift of official HRNet. Hands have no left/right joint pairs
    to swap.
    """
    return torch.flip(heatmaps, dims=[3])


def _np(x: Any) -> np.ndarray:
    return x.numpy() if torch.is_tensor(x) else np.asarray(x)


def _loop(loader: Iterable, cfg, device: torch.device, heatmaps_of: HeatmapFn,
          criterion: Optional[nn.Module], progress: bool, desc: str) -> Dict[str, Any]:
    """Decode ``heatmaps_of(batch)`` for every batch and map the joints to original pixels."""
    from tqdm import tqdm

    codec = HeatmapCodec.from_cfg(cfg)
    hw, hh = (int(v) for v in cfg.MODEL.HEATMAP_SIZE)
    num_joints = int(cfg.MODEL.NUM_JOINTS)
    coords, scores, mats, joints, bboxes, image_ids, ann_ids = [], [], [], [], [], [], []
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    count = 0
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        heatmaps = heatmaps_of(batch)
        if heatmaps.dim() != 4 or tuple(heatmaps.shape[1:]) != (num_joints, hh, hw):
            raise ValueError(f"heatmaps of shape {tuple(heatmaps.shape)} do not match MODEL.NUM_JOINTS "
                             f"{num_joints} and MODEL.HEATMAP_SIZE [{hw}, {hh}] (expected (B, {num_joints}, "
                             f"{hh}, {hw}))")
        heatmaps = heatmaps.float()  # decode in float32 whatever the autocast dtype
        if criterion is not None:
            target = batch["target"].to(heatmaps.device, non_blocking=True)
            weight = batch["target_weight"].to(heatmaps.device, non_blocking=True)
            loss_sum += criterion(heatmaps, target, weight).double() * heatmaps.shape[0]
            count += int(heatmaps.shape[0])
        xy, maxvals = codec.decode(heatmaps)
        # Stay on the device until the end: one synchronisation for the whole loader.
        coords.append(xy)
        scores.append(maxvals)
        meta = batch["meta"]
        mats.append(_np(meta["hm_to_img"]))
        joints.append(_np(meta["joints"]))
        bboxes.append(_np(meta["bbox"]))
        image_ids.append(_np(meta["image_id"]))
        ann_ids.append(_np(meta["ann_id"]))
    if coords:
        hm_xy = torch.cat(coords).cpu().double().numpy()
        out = {
            # The data package's inverse affine, per sample: heatmap pixels -> original pixels.
            "preds": transform_points(hm_xy, np.concatenate(mats)),
            "scores": torch.cat(scores).cpu().numpy(),
            "joints": np.concatenate(joints).astype(np.float32, copy=False),
            "bbox": np.concatenate(bboxes).astype(np.float32, copy=False),
            "image_id": np.concatenate(image_ids).astype(np.int64, copy=False),
            "ann_id": np.concatenate(ann_ids).astype(np.int64, copy=False),
        }
    else:
        out = {"preds": np.zeros((0, num_joints, 2)), "scores": np.zeros((0, num_joints), np.float32),
               "joints": np.zeros((0, num_joints, 3), np.float32), "bbox": np.zeros((0, 4), np.float32),
               "image_id": np.zeros(0, np.int64), "ann_id": np.zeros(0, np.int64)}
    if criterion is not None:
        out["loss_sum"] = float(loss_sum.item())
        out["count"] = count
    return out


def run_inference(model: nn.Module, loader: Iterable, cfg, device: torch.device,
                  criterion: Optional[nn.Module] = None, progress: bool = True) -> Dict[str, Any]:
    """Predict every sample of ``loader`` (items as ``data.build_dataset`` makes them).

    ``model.eval()``, ``torch.inference_mode``, inputs in channels_last when
    ``cfg.CHANNELS_LAST``, autocast per ``cfg.AMP`` (``hrnet.runtime.device``); ``TEST.FLIP_TEST`` averages the heatmaps
    with those of the mirrored input (one forward of 2B images, :func:`flip_back`);
    ``TEST.DECODE`` picks argmax (quarter shift) or DARK. With a ``criterion`` (``(heatmaps,
    target, target_weight) -> mean loss``) the loss of the decoded heatmaps is summed.

    Returns numpy arrays over the loader, in its order: ``preds`` (N, J, 2) in pixels of the
    original image, ``scores`` (N, J) heatmap peaks, ``joints`` (N, J, 3) and ``bbox`` (N, 4)
    from ``meta``, ``image_id`` (N,), ``ann_id`` (N,); plus ``loss_sum`` (float, the sum of
    per-batch mean losses times batch sizes) and ``count`` (int) with a criterion.
    """
    device = torch.device(device)
    amp = amp_policy_from_cfg(cfg, device)
    flip = bool(cfg.TEST.FLIP_TEST)
    memory_format = torch.channels_last if cfg.CHANNELS_LAST else torch.contiguous_format

    def heatmaps_of(batch: Mapping[str, Any]) -> torch.Tensor:
        images = batch["image"].to(device, non_blocking=True).contiguous(memory_format=memory_format)
        b = images.shape[0]
        if flip:
            images = torch.cat([images, torch.flip(images, dims=[3])])
        with amp.autocast():
            out = model(images)
        if flip:
            out = 0.5 * (out[:b].float() + flip_back(out[b:].float()))
        return out

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return _loop(loader, cfg, device, heatmaps_of, criterion, progress, "test")
    finally:
        model.train(was_training)


def recalibrate_bn(model: nn.Module, loader: Iterable, num_batches: int, cfg, device: torch.device) -> nn.Module:
    """A copy of ``model`` in eval mode whose BatchNorm statistics are recomputed on ``loader``.

    Cumulative averages (``momentum=None``) over the first ``num_batches`` batches, forwarded in
    training mode without gradients (autocast per ``cfg.AMP``, channels_last per ``cfg``). Used
    for Lookahead's slow weights, whose statistics the fast weights' running averages do not fit.
    ``model`` is untouched.
    """
    device = torch.device(device)
    memory_format = torch.channels_last if cfg.CHANNELS_LAST else torch.contiguous_format
    copy_model = copy.deepcopy(model)
    for m in copy_model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    copy_model.train()
    with torch.no_grad(), amp_policy_from_cfg(cfg, device).autocast():
        for i, batch in enumerate(loader):
            if i >= num_batches:
                break
            copy_model(batch["image"].to(device, non_blocking=True).contiguous(memory_format=memory_format))
    return copy_model.eval()


def run_oracle(loader: Iterable, cfg, progress: bool = True) -> Dict[str, Any]:
    """:func:`run_inference` with the encoded ground truth (``batch['target']``) as the heatmaps.

    The error of these predictions is the floor of crop + heatmap encoding + decoding + inverse
    transform: it tests that the coordinate conventions agree (NME far below 0.01).
    """
    with torch.inference_mode():
        return _loop(loader, cfg, torch.device("cpu"), lambda batch: batch["target"], None, progress, "oracle")


def to_coco_results(results: Mapping[str, np.ndarray], category_id: int = 1) -> List[Dict[str, Any]]:
    """COCO keypoint results of :func:`run_inference` output, one per annotation.

    ``{"image_id", "category_id", "keypoints": [x, y, score] * J (original pixels), "score"
    (the mean joint score), "id" (the annotation id)}``.
    """
    preds = np.asarray(results["preds"], dtype=np.float64)
    scores = np.asarray(results["scores"], dtype=np.float64)
    kpts = np.concatenate([preds, scores[..., None]], axis=2).reshape(len(preds), -1).tolist()
    mean = scores.mean(axis=1).tolist() if scores.size else [0.0] * len(preds)
    return [{"image_id": int(i), "category_id": int(category_id), "keypoints": k, "score": float(s),
             "id": int(a)}
            for i, k, s, a in zip(results["image_id"].tolist(), kpts, mean, results["ann_id"].tolist())]


def save_ced_plot(per_image_nme: np.ndarray, path: str, failure_threshold: float = 0.1,
                  title: str = "") -> str:
    """PNG of the cumulative error distribution of the per-image NME (x: NME, y: fraction of
    images with NME <= x), up to 2x the failure threshold, which is marked. Returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    per_image = np.asarray(per_image_nme, dtype=np.float64)
    finite = per_image[np.isfinite(per_image)]
    x, y = ced_curve(per_image, 2.0 * failure_threshold, num=401)
    fig = Figure(figsize=(5, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    nme = finite.mean() if finite.size else float("nan")
    fail = (finite > failure_threshold).mean() if finite.size else float("nan")
    ax.plot(x, y, lw=2, label=f"NME {nme:.4f}, failures {100 * fail:.1f}% (n={finite.size})")
    ax.axvline(failure_threshold, color="gray", ls="--", lw=1)
    ax.set(xlim=(0, x[-1]), ylim=(0, 1.0), xlabel="NME (error / max(bbox w, h))",
           ylabel="fraction of images", title=title or "Cumulative error distribution")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return path


def save_evaluation(out_dir: str, metrics: Mapping[str, Any], results: Mapping[str, np.ndarray],
                    failure_threshold: float = 0.1, extra: Optional[Mapping[str, Any]] = None,
                    title: str = "") -> Dict[str, str]:
    """Write ``metrics.json`` (every metric but the per-image array, plus ``extra``),
    ``predictions.json`` (:func:`to_coco_results`) and ``ced.png`` into ``out_dir``.
    Returns the written paths by name."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {"metrics": os.path.join(out_dir, "metrics.json"),
             "predictions": os.path.join(out_dir, "predictions.json"),
             "ced": os.path.join(out_dir, "ced.png")}
    summary = {k: v for k, v in metrics.items() if k != "per_image_NME"}
    summary.update(extra or {})
    write_json(summary, paths["metrics"])
    write_json(to_coco_results(results), paths["predictions"], indent=None)
    save_ced_plot(metrics["per_image_NME"], paths["ced"], failure_threshold, title)
    return paths
