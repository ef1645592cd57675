"""Each finished run's final model evaluated on the real hand photos (COCO sets in one folder), cached.

The model is the run's **final** one, ``checkpoint_latest.pth`` with the weights training
validated at its end (for Lookahead the slow weights, ``TRAIN.LOOKAHEAD.EVAL_WEIGHTS``), the same
checkpoint as the synthetic headline (final NME): comparing a ranking of final models with one of
validation-selected models would mix two questions.

On a machine without the photo folder (a fresh clone) the results come from each run's committed
``real_hands.json`` (:func:`study_real_sets`): the sets they were evaluated on are read from those
caches, and the report says where the numbers come from (:data:`FROM_RECORDS`).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from configs import load_config
from hrnet.engine.run_record import CONFIG, LATEST
from hrnet.runtime.checkpoint import write_json
from hrnet.study.analyse.floors import file_sha256

__all__ = ["real_hand_sets", "evaluate_real_hands", "cache_key", "REAL_HANDS_CACHE", "EVALUATED_CHECKPOINT",
           "study_real_sets", "committed_sets", "FROM_RECORDS"]

REAL_HANDS_CACHE = "real_hands.json"
#: The checkpoint evaluated on the real photos: the final one (as the synthetic final NME).
EVALUATED_CHECKPOINT = LATEST
_CACHE_VERSION = 2
#: Where the real-photo numbers come from when the photo folder is not on this machine.
FROM_RECORDS = "from the committed records; photos not present on this machine"


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


def committed_sets(run_dirs: Sequence[str], folder: str) -> Tuple[Dict[str, Tuple[str, str]], Dict[str, str]]:
    """The real-photo sets the runs' cached results (``real_hands.json``) were evaluated on, the one
    most caches share: ``(name -> (folder/name, annotation file), name -> annotation sha256)``; the
    folders need not exist. Empty without a cache."""
    seen: Counter = Counter()
    for run_dir in run_dirs:
        key = _read_cache(os.path.join(run_dir, REAL_HANDS_CACHE)).get("key", {})
        if key.get("version") == _CACHE_VERSION and isinstance(key.get("sets"), dict) and key["sets"]:
            seen[json.dumps(key["sets"], sort_keys=True)] += 1
    if not seen:
        return {}, {}
    sets = json.loads(seen.most_common(1)[0][0])
    return ({k: (os.path.join(folder, k), v["annotations"]) for k, v in sorted(sets.items())},
            {k: v["sha256"] for k, v in sets.items()})


def study_real_sets(folder: Optional[str], run_dirs: Sequence[str]
                    ) -> Tuple[Dict[str, Tuple[str, str]], Optional[Dict[str, str]]]:
    """The real-photo sets of a study: ``(sets, None)`` from ``folder`` when it is here; when it is
    not, ``(sets, annotation sha256 per set)`` from the runs' committed caches (:func:`committed_sets`),
    for :func:`evaluate_real_hands` ``committed``; ``({}, None)`` without a folder (none asked for)."""
    if not folder:
        return {}, None
    if os.path.isdir(folder):
        return real_hand_sets(folder), None
    sets, shas = committed_sets(run_dirs, folder)
    return sets, (shas if sets else None)


def cache_key(cfg, sets: Mapping[str, Tuple[str, str]], model_sha256: Optional[str],
              set_sha256: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Everything that changes a real-photo result: the model file's content, which of its weights,
    the input geometry, decoding, flip test, autocast, the metric thresholds and each set's
    annotation content (no machine paths, so a cache travels with committed run records).
    ``set_sha256``: the annotations' sha256 per set where the files are not here (committed records)."""
    t = cfg.TEST
    return {"version": _CACHE_VERSION, "checkpoint": EVALUATED_CHECKPOINT, "model_sha256": model_sha256,
            "eval_weights": cfg.TRAIN.LOOKAHEAD.EVAL_WEIGHTS, "image_size": list(cfg.MODEL.IMAGE_SIZE),
            "heatmap_size": list(cfg.MODEL.HEATMAP_SIZE), "bbox_padding": float(cfg.DATASET.BBOX_PADDING),
            "decode": t.DECODE, "flip_test": bool(t.FLIP_TEST), "amp": cfg.AMP.MODE,
            "thresholds": [float(t.FAILURE_THRESHOLD), float(t.PCK_THRESHOLD), float(t.AUC_MAX_PX)],
            "sets": {k: {"annotations": ann, "sha256": set_sha256[k] if set_sha256 is not None
                         else file_sha256(os.path.join(folder, ann))} for k, (folder, ann) in sorted(sets.items())}}


def _read_cache(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            cached = json.load(f)
        return cached if isinstance(cached, dict) and isinstance(cached.get("key"), dict) else {}
    except (OSError, ValueError):
        return {}


def evaluate_real_hands(run_dir: str, sets: Mapping[str, Tuple[str, str]], pck_key: str,
                        committed: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """NME and PCK of the run's final model on each real hand set and on all of them pooled.

    The model runs at the run's own ``config.yaml`` (input size, decoding) on the CPU or the
    device ``DEVICE`` selects. Cached in ``run_dir/real_hands.json`` under :func:`cache_key`; when
    the checkpoint is gone (a folder of committed records), a cached result with the same settings
    and sets is used as it is. ``committed`` (the photos are not here, :func:`study_real_sets`): only
    a cached result for those annotations (sha256 per set) and this model, if present, is used.
    Returns ``{set name or "all": {"NME", pck_key, "num_images"}, "evaluated": {"checkpoint",
    "weights", "epoch"}}``, or ``{"error": text}``.
    """
    model_file = os.path.join(run_dir, EVALUATED_CHECKPOINT)
    cache_file = os.path.join(run_dir, REAL_HANDS_CACHE)
    try:
        cfg = load_config(os.path.join(run_dir, CONFIG))
        cached = _read_cache(cache_file)
        if committed is not None or not os.path.isfile(model_file):
            model = (file_sha256(model_file) if os.path.isfile(model_file)
                     else cached.get("key", {}).get("model_sha256"))
            if cached and cached["key"] == cache_key(cfg, sets, model, committed):
                return cached["results"]
            missing = "the photos are not here" if committed is not None else f"no {EVALUATED_CHECKPOINT}"
            return {"error": f"{missing} and no cached result for these settings"}
        key = cache_key(cfg, sets, file_sha256(model_file))
        if cached.get("key") == key:
            return cached["results"]
        results = _evaluate_real_hands(os.path.join(run_dir, CONFIG), model_file, sets, pck_key)
    except Exception as exc:  # one unreadable model must not stop the report
        return {"error": " ".join(f"{type(exc).__name__}: {exc}".split())[:300]}
    write_json({"key": key, "results": results}, cache_file)
    return results


def _evaluate_real_hands(run_config: str, model_file: str, sets: Mapping[str, Tuple[str, str]], pck_key: str
                         ) -> Dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    from data import build_dataset

    from hrnet.evaluation.evaluate import run_inference
    from hrnet.evaluation.metrics import compute_metrics
    from hrnet.evaluation.model_file import load_model_file
    from hrnet.runtime.device import select_device

    results: Dict[str, Any] = {}
    pooled: Dict[str, List[np.ndarray]] = {"preds": [], "joints": [], "bbox": []}
    model, device, info, cfg = None, None, None, None
    for name, (root, ann) in sets.items():
        cfg = load_config(run_config, ["DATASET.FORMAT", "coco", "DATASET.ROOT", root, "DATASET.TESTSET", ann,
                                       "DATASET.MAX_TEST_SAMPLES", "0", "WORKERS", "0",
                                       "TEST.BATCH_SIZE_PER_GPU", "16"])
        if model is None:
            device = select_device(cfg.DEVICE)
            model, info = load_model_file(cfg, model_file, device)
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
    if info is not None:
        results["evaluated"] = {"checkpoint": EVALUATED_CHECKPOINT, "weights": info.weights, "epoch": info.epoch,
                                "notes": list(info.notes)}
    return results
