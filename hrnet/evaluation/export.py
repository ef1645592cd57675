"""Export a heatmap model to ONNX or TorchScript, and check an export against PyTorch.

* ONNX: opset 17 (or newer), input ``image`` (batch, 3, H, W) float32 normalised RGB, output
  ``heatmaps`` (batch, J, H/4, W/4), the batch axis dynamic. Written by the TorchScript-based
  exporter (``dynamo=False``: no onnxscript needed), then ``onnx.checker`` validated.
* TorchScript: ``torch.jit.trace`` of the eval-mode model (any batch size; fixed H, W).

onnx / onnxruntime are the optional ``export`` extra; a missing one raises an ImportError whose
message says ``pip install -e ".[export]"``.
"""
from __future__ import annotations

import inspect
import os
import warnings
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from data.codec import HeatmapCodec

from hrnet.evaluation.inference import EXPORT_EXTRA_HINT, load_onnx_model

__all__ = ["FORMATS", "ONNX_OPSET", "export_model", "load_exported", "compare_outputs"]

FORMATS = ("onnx", "torchscript")
ONNX_OPSET = 17


def _example_input(cfg, batch: int = 2) -> torch.Tensor:
    w, h = (int(v) for v in cfg.MODEL.IMAGE_SIZE)
    return torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(0))


def _prepare(model: nn.Module) -> nn.Module:
    """The model on the CPU, float32, NCHW, eval mode (the exported graph does not depend on the
    memory format the training used)."""
    return model.float().cpu().to(memory_format=torch.contiguous_format).eval()


def export_model(model: nn.Module, cfg, fmt: str, path: str, opset: int = ONNX_OPSET) -> str:
    """Write ``model`` (built for ``cfg.MODEL``) to ``path`` as ``fmt`` (onnx | torchscript).

    The model is moved to the CPU in eval mode first. Returns ``path``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    model = _prepare(model)
    x = _example_input(cfg)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns about the input-size check in forward() (a Python bool, constant for
        # a fixed input size) and newer torch about the legacy exporter: neither matters here.
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            # check_trace re-runs and compares the trace (slow); --check compares on real crops instead.
            torch.jit.save(torch.jit.trace(model, x, check_trace=False), path)
            return path
        try:
            import onnx
        except ImportError as exc:
            raise ImportError(f"ONNX export needs onnx ({exc}): {EXPORT_EXTRA_HINT} installs it") from None
        kwargs = {}
        if "dynamo" in inspect.signature(torch.onnx.export).parameters:
            kwargs["dynamo"] = False  # the TorchScript-based exporter: no onnxscript dependency
        torch.onnx.export(model, (x,), path, input_names=["image"], output_names=["heatmaps"],
                          dynamic_axes={"image": {0: "batch"}, "heatmaps": {0: "batch"}},
                          opset_version=int(opset), do_constant_folding=True, **kwargs)
    onnx.checker.check_model(onnx.load(path))
    return path


def load_exported(path: str, fmt: str, cfg) -> nn.Module:
    """An exported file as a module: TorchScript via ``torch.jit.load`` (CPU), ONNX via
    :func:`hrnet.evaluation.inference.load_onnx_model` (onnxruntime)."""
    if fmt == "onnx":
        return load_onnx_model(path, cfg)
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # newer torch deprecates TorchScript; it still loads
            return torch.jit.load(path, map_location="cpu").eval()
    raise ValueError(f"export format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def compare_outputs(reference: nn.Module, exported: nn.Module, images: torch.Tensor, cfg,
                    hm_to_img: Optional[np.ndarray] = None, batch_sizes: Sequence[int] = (1, 0)
                    ) -> Dict[str, float]:
    """Run ``images`` (N, 3, H, W) through both models and measure the differences.

    The exported model runs at each of ``batch_sizes`` (0 = all N at once), which exercises the
    dynamic batch axis. Keypoints are decoded with ``TEST.DECODE``; with ``hm_to_img`` (N, 2, 3)
    their difference is measured in original-image pixels, otherwise in heatmap pixels.
    Returns ``heatmap_max_abs`` and ``keypoint_max_px`` (the worst over batch sizes) and ``images``.
    """
    from data.transforms import transform_points

    reference = _prepare(reference)
    codec = HeatmapCodec.from_cfg(cfg)
    images = images.float().cpu().contiguous()
    with torch.inference_mode():
        ref = reference(images).float()
        ref_xy = codec.decode(ref)[0].double().numpy()
        hm_err, kp_err = 0.0, 0.0
        for bs in batch_sizes:
            step = len(images) if bs <= 0 else int(bs)
            out = torch.cat([exported(images[i:i + step]).float() for i in range(0, len(images), step)])
            xy = codec.decode(out)[0].double().numpy()
            if hm_to_img is not None:
                ref_px, xy_px = transform_points(ref_xy, hm_to_img), transform_points(xy, hm_to_img)
            else:
                ref_px, xy_px = ref_xy, xy
            hm_err = max(hm_err, float((out - ref).abs().max()))
            kp_err = max(kp_err, float(np.linalg.norm(xy_px - ref_px, axis=-1).max()))
    return {"heatmap_max_abs": hm_err, "keypoint_max_px": kp_err, "images": int(len(images))}

