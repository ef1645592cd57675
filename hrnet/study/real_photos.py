"""Each finished run's model evaluated on the real hand photos (COCO sets in one folder), cached."""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np

from configs import load_config
from hrnet.engine.run_record import BEST, CONFIG
from hrnet.runtime.checkpoint import write_json

__all__ = ["real_hand_sets", "evaluate_real_hands", "REAL_HANDS_CACHE"]

REAL_HANDS_CACHE = "real_hands.json"


def real_hand_sets(folder: Optional[str]) -> Dict[str, Tuple[str, str]]:
    """``name -> (image folder, annotation json)``: each sub-folder of ``folder`` with one ``*.json``."""
    sets: Dict[str, Tuple[str, str]] = {}
    if not folder or not os.path.isdir(folder):
        return sets
    for name in sorted(os.listdir(folder)):
        sub = os.path.join(folder, name)
        jsons = sorted(f for f in os.listdir(sub) if f.endswith(".json")) if os.path.isdir(sub) else []
        if len(jsons) == 1:
            sets[name] = (sub, jsons[0])
    return sets


def evaluate_real_hands(run_dir: str, sets: Mapping[str, Tuple[str, str]], pck_key: str) -> Dict[str, Any]:
    """NME and PCK of ``run_dir/model_best.pth`` on each real hand set and on all of them pooled.

    The model runs at the run's own ``config.yaml`` (input size, decoding) on the CPU or the
    device ``DEVICE`` selects. Cached in ``run_dir/real_hands.json``, keyed by the model file's size
    and modification time and by the sets, so a report regenerated later does not evaluate again.
    Returns ``{set name or "all": {"NME", pck_key, "num_images"}}``, or ``{"error": text}``.
    """
    best = os.path.join(run_dir, BEST)
    if not os.path.isfile(best):
        return {"error": f"no {BEST}"}
    st = os.stat(best)
    key = {"model_size": st.st_size, "model_mtime_ns": st.st_mtime_ns,
           "sets": {k: list(v) for k, v in sorted(sets.items())}}
    cache = os.path.join(run_dir, REAL_HANDS_CACHE)
    try:
        with open(cache, encoding="utf-8") as f:
            cached = json.load(f)
        if cached.get("key") == key:
            return cached["results"]
    except (OSError, ValueError, AttributeError):
        pass
    try:
        results = _evaluate_real_hands(run_dir, best, sets, pck_key)
    except Exception as exc:  # one unreadable model must not stop the report
        return {"error": " ".join(f"{type(exc).__name__}: {exc}".split())[:300]}
    write_json({"key": key, "results": results}, cache)
    return results


def _evaluate_real_hands(run_dir: str, best: str, sets: Mapping[str, Tuple[str, str]], pck_key: str
                         ) -> Dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    from data import build_dataset

    from hrnet.runtime.device import select_device
    from hrnet.evaluation.evaluate import run_inference
    from hrnet.evaluation.metrics import compute_metrics
    from hrnet.evaluation.model_file import load_model_file

    results: Dict[str, Any] = {}
    pooled: Dict[str, List[np.ndarray]] = {"preds": [], "joints": [], "bbox": []}
    model, device, cfg = None, None, None
    for name, (root, ann) in sets.items():
        cfg = load_config(os.path.join(run_dir, CONFIG),
                          ["DATASET.FORMAT", "coco", "DATASET.ROOT", root, "DATASET.TESTSET", ann,
                           "DATASET.MAX_TEST_SAMPLES", "0", "WORKERS", "0", "TEST.BATCH_SIZE_PER_GPU", "16"])
        if model is None:
            device = select_device(cfg.DEVICE)
            model, _ = load_model_file(cfg, best, device)
        loader = DataLoader(build_dataset(cfg, is_train=False), batch_size=16, shuffle=False, num_workers=0)
        with torch.inference_mode():
            out = run_inference(model, loader, cfg, device, progress=False)
        m = compute_metrics(out["preds"], out["joints"], out["bbox"], cfg)
        results[name] = {"NME": m["NME"], pck_key: m[pck_key], "num_images": m["num_images"]}
        for k in pooled:
            pooled[k].append(out[k])
    if cfg is not None:
        m = compute_metrics(*(np.concatenate(pooled[k]) for k in ("preds", "joints", "bbox")), cfg)
        results["all"] = {"NME": m["NME"], pck_key: m[pck_key], "num_images": m["num_images"]}
    return results
