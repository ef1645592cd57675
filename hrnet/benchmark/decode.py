"""``benchmark decode``: evaluation post-processing (heatmap decoding to image pixels, metrics)."""
from __future__ import annotations

import time
from typing import Any, Dict

import numpy as np
import torch

from data.codec import HeatmapCodec
from data.transforms import transform_points
from hrnet.benchmark import Options
from hrnet.benchmark.timing import device_sync, loadavg, set_threads
from hrnet.evaluation.metrics import compute_metrics
from hrnet.runtime.device import select_device

__all__ = ["bench_decode"]


def bench_decode(cfg, options: Options) -> Dict[str, Any]:
    """Evaluation post-processing of 3000 images (``options.steps`` overrides): decode random
    (B, J, h, w) heatmaps in TEST.BATCH_SIZE_PER_GPU chunks (argmax and DARK), map them to
    image pixels, then ``compute_metrics``. Heatmap generation is not timed. Seconds in
    ``decode_argmax_s``, ``decode_dark_s`` (all chunks) and ``metrics_s``."""
    set_threads(options.threads)
    n, chunk = options.steps or 3000, int(cfg.TEST.BATCH_SIZE_PER_GPU)
    j, (w, h) = int(cfg.MODEL.NUM_JOINTS), cfg.MODEL.HEATMAP_SIZE
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    mats = np.tile(np.array([[4.0, 0.0, 10.0], [0.0, 4.0, 20.0]]), (chunk, 1, 1))
    joints = np.concatenate([rng.uniform(0, 256, (n, j, 2)), np.full((n, j, 1), 2.0)], axis=2)
    bbox = np.tile([0.0, 0.0, 200.0, 180.0], (n, 1))
    device = select_device(cfg.DEVICE)
    sync = device_sync(device)
    result: Dict[str, Any] = {"images": n, "joints": j, "heatmap": [w, h], "chunk": chunk, "device": str(device),
                              "threads": torch.get_num_threads(), "loadavg_before": loadavg()}
    for method in ("argmax", "dark"):
        codec = HeatmapCodec((int(w), int(h)), float(cfg.MODEL.SIGMA), method)
        spent, preds = 0.0, []
        for start in range(0, n, chunk):
            b = min(chunk, n - start)
            hm = torch.rand(b, j, h, w, generator=gen).to(device)
            sync()
            t0 = time.perf_counter()
            xy, _ = codec.decode(hm)
            preds.append(transform_points(xy.double().cpu().numpy(), mats[:b]))
            spent += time.perf_counter() - t0
        result[f"decode_{method}_s"] = round(spent, 3)
    t0 = time.perf_counter()
    compute_metrics(np.concatenate(preds), joints, bbox, cfg)
    result["metrics_s"] = round(time.perf_counter() - t0, 3)
    result["loadavg_after"] = loadavg()
    return result
