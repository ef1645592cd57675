"""Keypoints of hands in arbitrary images: the pipeline of ``tools/demo.py``, ``tools/export.py
--check`` and ``tools/benchmark.py infer``.

One hand = one box ``[x, y, w, h]`` (COCO edge convention, original pixels). The crop is the
dataset's test crop (``data.transforms``: ``box_to_center_scale`` with ``DATASET.BBOX_PADDING``,
``get_affine_transform``, ``warp_crop``, ``Normalize``); the forward pass, ``TEST.FLIP_TEST``,
``TEST.DECODE`` and the mapping back to original pixels are :func:`hrnet.evaluation.evaluate.run_inference`'s,
so a demo prediction equals the ``tools/test.py`` prediction of the same box.

Backends: a PyTorch model (``hrnet.evaluation.model_file.load_model_file``) or an exported ONNX file run by
onnxruntime (:func:`load_onnx_model`), wrapped as a module so the same code path serves both.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn

from data.transforms import Normalize, box_to_center_scale, get_affine_transform, warp_crop

from hrnet.runtime.checkpoint import CheckpointError

__all__ = ["EXPORT_EXTRA_HINT", "OnnxRuntimeModel", "import_onnxruntime", "load_onnx_model", "box_in_image",
           "crop_hands", "predict_crops"]

EXPORT_EXTRA_HINT = 'pip install -e ".[export]"'


def import_onnxruntime():
    """The onnxruntime module, or an ImportError whose one line says how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ImportError(f"onnxruntime is not installed ({exc}): {EXPORT_EXTRA_HINT} installs it") from None
    return onnxruntime


class OnnxRuntimeModel(nn.Module):
    """An onnxruntime session behind ``nn.Module``'s call: (B, 3, H, W) float32 -> (B, J, h, w)
    float32 on the input's device (inference on the CPU execution provider)."""

    def __init__(self, session: Any, path: str):
        super().__init__()
        self.session, self.path = session, path
        self.input_name = session.get_inputs()[0].name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(images.detach().float().cpu().numpy())
        out = self.session.run(None, {self.input_name: x})[0]
        return torch.from_numpy(out).to(images.device)


def load_onnx_model(path: str, cfg, threads: int = 0) -> OnnxRuntimeModel:
    """An exported ONNX file (``tools/export.py``) as an :class:`OnnxRuntimeModel`.

    Raises CheckpointError naming the file when it is missing, unreadable, or its input/output
    shapes differ from ``MODEL.IMAGE_SIZE`` / ``MODEL.NUM_JOINTS`` / ``MODEL.HEATMAP_SIZE``.
    ``threads`` > 0 sets onnxruntime's intra-op threads (0: its default).
    """
    ort = import_onnxruntime()
    if not os.path.isfile(path):
        raise CheckpointError(f"ONNX model file not found: {path}")
    opts = ort.SessionOptions()
    if threads > 0:
        opts.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for a bad file
        raise CheckpointError(f"{path}: onnxruntime cannot load it ({' '.join(str(exc).split())[:200]})") from exc
    (w, h), (hw, hh), j = cfg.MODEL.IMAGE_SIZE, cfg.MODEL.HEATMAP_SIZE, int(cfg.MODEL.NUM_JOINTS)
    got_in, got_out = list(session.get_inputs()[0].shape), list(session.get_outputs()[0].shape)
    if got_in[1:] != [3, h, w] or got_out[1:] != [j, hh, hw]:
        raise CheckpointError(f"{path}: the ONNX model maps {got_in} to {got_out}, the config wants "
                              f"[batch, 3, {h}, {w}] to [batch, {j}, {hh}, {hw}] (MODEL.IMAGE_SIZE / "
                              f"MODEL.NUM_JOINTS / MODEL.HEATMAP_SIZE): a model of another config")
    return OnnxRuntimeModel(session, path)


def box_in_image(bbox: Sequence[float], width: int, height: int) -> bool:
    """True when the ``[x, y, w, h]`` box has w, h > 0, finite values and overlaps the image."""
    x, y, w, h = (float(v) for v in bbox[:4])
    if not np.isfinite([x, y, w, h]).all() or w <= 0 or h <= 0:
        return False
    return x < width and y < height and x + w > 0 and y + h > 0


_NORMALIZE = Normalize()


def crop_hands(image_bgr: np.ndarray, boxes: np.ndarray, cfg) -> Tuple[torch.Tensor, np.ndarray]:
    """The network inputs of the hands ``boxes`` (K, 4) xywh in one BGR uint8 image (H, W, 3).

    Returns ``images`` (K, 3, h, w) float32 normalised RGB, as the test dataset makes them, and
    ``hm_to_img`` (K, 2, 3) heatmap pixels -> original pixels.
    """
    size = (int(cfg.MODEL.IMAGE_SIZE[0]), int(cfg.MODEL.IMAGE_SIZE[1]))
    hm_size = (int(cfg.MODEL.HEATMAP_SIZE[0]), int(cfg.MODEL.HEATMAP_SIZE[1]))
    crops, mats = [], []
    for box in np.asarray(boxes, np.float64).reshape(-1, 4):
        center, scale = box_to_center_scale(box, size[0] / size[1], float(cfg.DATASET.BBOX_PADDING))
        crop = warp_crop(image_bgr, get_affine_transform(center, scale, 0.0, size), size)
        crops.append(torch.from_numpy(_NORMALIZE(crop, bgr=True)))
        mats.append(get_affine_transform(center, scale, 0.0, hm_size, inverse=True))
    if not crops:
        return torch.zeros((0, 3, size[1], size[0])), np.zeros((0, 2, 3))
    return torch.stack(crops), np.stack(mats)


def predict_crops(model: nn.Module, images: torch.Tensor, hm_to_img: np.ndarray, cfg,
                  device: torch.device) -> Dict[str, np.ndarray]:
    """Keypoints of a batch of crops: :func:`hrnet.evaluation.evaluate.run_inference` on one batch.

    Args:
        images: (K, 3, h, w) from :func:`crop_hands`; hm_to_img: (K, 2, 3).
    Returns:
        ``preds`` (K, J, 2) original-image pixels and ``scores`` (K, J) heatmap peaks.
    """
    from hrnet.evaluation.evaluate import run_inference

    k, j = int(images.shape[0]), int(cfg.MODEL.NUM_JOINTS)
    if k == 0:
        return {"preds": np.zeros((0, j, 2)), "scores": np.zeros((0, j), np.float32)}
    meta = {"hm_to_img": torch.from_numpy(np.asarray(hm_to_img, np.float64)),
            "joints": torch.zeros(k, j, 3), "bbox": torch.zeros(k, 4),
            "image_id": torch.arange(k), "ann_id": torch.arange(k)}
    out = run_inference(model, [{"image": images, "meta": meta}], cfg, device, progress=False)
    return {"preds": out["preds"], "scores": out["scores"]}

