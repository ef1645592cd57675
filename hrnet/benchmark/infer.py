"""``benchmark infer``: the demo pipeline on the CPU, PyTorch vs onnxruntime."""
from __future__ import annotations

import os
import statistics
import tempfile
from typing import Any, Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np
import torch

from hrnet.benchmark import Options
from hrnet.benchmark.timing import Samples, interleave, loadavg, set_threads
from hrnet.evaluation.export import export_model
from hrnet.evaluation.inference import crop_hands, load_onnx_model, predict_crops
from hrnet.models.hrnet import build_model

__all__ = ["bench_infer", "MODELS", "BATCHES"]

#: (tag, MODEL.NAME, input side in px): the quick-start model and HRNet-W18.
MODELS: Tuple[Tuple[str, str, int], ...] = (("quickstart", "hrnet_w18_small", 128), ("hrnet_w18", "hrnet_w18", 256))
#: Images per forward pass.
BATCHES: Tuple[int, ...] = (1, 32)


def write_images(folder: str, n: int) -> List[str]:
    """``n`` 640x480 JPEGs of blurred noise (seed 0) in ``folder``; their paths."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        img = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
        paths.append(os.path.join(folder, f"{i}.jpg"))
        cv2.imwrite(paths[-1], img)
    return paths


def model_config(cfg, name: str, side: int):
    """``cfg`` for model ``name`` at ``side`` x ``side`` px (heatmaps a quarter), random weights,
    channels_last, float32; frozen."""
    mcfg = cfg.clone()
    mcfg.defrost()
    mcfg.MODEL.NAME, mcfg.MODEL.PRETRAINED = name, ""
    mcfg.MODEL.IMAGE_SIZE, mcfg.MODEL.HEATMAP_SIZE = [side, side], [side // 4, side // 4]
    mcfg.CHANNELS_LAST, mcfg.AMP.MODE = True, "off"
    mcfg.freeze()
    return mcfg


def backends(mcfg, onnx_path: str, threads: int) -> Dict[str, torch.nn.Module]:
    """The model of ``mcfg`` (seed 0) in PyTorch and, exported to ``onnx_path``, in onnxruntime."""
    torch.manual_seed(0)
    model = build_model(mcfg).eval()
    onnx_path = export_model(build_model(mcfg), mcfg, "onnx", onnx_path)
    return {"torch": model, "onnxruntime": load_onnx_model(onnx_path, mcfg, threads=threads)}


def pipeline(net: torch.nn.Module, mcfg, batch: int, paths: Sequence[str]) -> Callable[[int], None]:
    """One timed call: every image of ``paths`` read, cropped (the whole image as the box), run
    through ``net`` ``batch`` at a time and decoded to image pixels (``hrnet.evaluation.inference``)."""
    device = torch.device("cpu")

    def run(_round: int) -> None:
        for start in range(0, len(paths), batch):
            crops = [crop_hands(img, np.array([[0.0, 0.0, img.shape[1], img.shape[0]]]), mcfg)
                     for img in (cv2.imread(p) for p in paths[start:start + batch])]
            predict_crops(net, torch.cat([c[0] for c in crops]), np.concatenate([c[1] for c in crops]),
                          mcfg, device)
    return run


def summarise(samples: Dict[str, Samples], n_images: int) -> Dict[str, float]:
    """Per variant ``tag/bB/backend``: median images/s (wall) and CPU s per image (process time,
    all threads); per ``tag/bB``: onnxruntime / PyTorch ratios of both."""
    out: Dict[str, float] = {}
    for key, s in samples.items():
        out[f"{key}/images_per_s"] = round(statistics.median(n_images / t for t in s.wall), 2)
        out[f"{key}/cpu_s_per_image"] = round(statistics.median(t / n_images for t in s.cpu), 4)
    for key in samples:
        if key.endswith("/onnxruntime"):
            pair = key[: -len("/onnxruntime")]
            out[f"{pair}/ort_vs_torch_speed"] = round(
                out[f"{key}/images_per_s"] / out[f"{pair}/torch/images_per_s"], 3)
            out[f"{pair}/ort_vs_torch_cpu"] = round(
                out[f"{key}/cpu_s_per_image"] / out[f"{pair}/torch/cpu_s_per_image"], 3)
    return out


def bench_infer(cfg, options: Options, models: Sequence[Tuple[str, str, int]] = MODELS,
                batches: Sequence[int] = BATCHES) -> Dict[str, Any]:
    """The demo pipeline (cv2.imread, crop, forward, decode, back to image pixels:
    hrnet.evaluation.inference) on the CPU, PyTorch vs onnxruntime, at each batch of ``batches``
    for each of ``models`` (default: the quick-start model, hrnet_w18_small 128x128, and
    HRNet-W18 256x256), random weights, float32.

    ``options.steps`` images per measurement (default 32) read from 640x480 JPEGs written to a
    temporary folder, the whole image as the box; ``options.warmup`` rounds (default 3), after one
    untimed call each. The variants run interleaved, round after round, so a load change on a
    shared machine hits all of them; :func:`summarise` gives the figures. ``options.threads``
    sets both backends' threads: on a busy machine pass 1, as OpenMP's spin-waiting with more
    threads than free cores makes PyTorch tens of times slower and distorts the comparison.
    ``cfg`` supplies DATASET.BBOX_PADDING, TEST.DECODE and TEST.FLIP_TEST; the models and their
    sizes come from ``models`` (the command line always uses :data:`MODELS`).
    """
    set_threads(options.threads)
    n_images, rounds = options.steps or 32, options.warmup if options.warmup >= 0 else 3
    result: Dict[str, Any] = {"images_per_measurement": n_images, "rounds": rounds, "threads": torch.get_num_threads(),
                              "decode": cfg.TEST.DECODE, "flip_test": bool(cfg.TEST.FLIP_TEST),
                              "loadavg_before": loadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_images(tmp, n_images)
        variants = {}
        for tag, name, side in models:
            mcfg = model_config(cfg, name, side)
            nets = backends(mcfg, os.path.join(tmp, f"{tag}.onnx"), options.threads)
            for batch in batches:
                for backend, net in nets.items():
                    variants[f"{tag}/b{batch}/{backend}"] = pipeline(net, mcfg, batch, paths)
        # warm-up round: first-call allocations, oneDNN primitive caches
        samples = interleave(variants, max(1, rounds), warmup=1)
    result.update(summarise(samples, n_images))
    result["loadavg_after"] = loadavg()
    return result
