"""No-learning floors: the NME of predictions that use the box but never look at the image.

A model that has learned nothing about fingers can still place every joint at the centre of
the annotation box, or at the average hand layout of the training set scaled to the box. Those
two predictions give the floors a report compares every NME with:

* **box centre**: every joint at the box centre (``data.transforms.box_to_center_scale``);
* **constant layout**: one layout in box coordinates (per joint ``u = (x - cx) / w``,
  ``v = (y - cy) / h``), fitted on the *training* annotations to minimise their NME exactly
  (:func:`fit_constant_layout`), placed in each evaluated box.

Both are scored with the project's own metric (``hrnet.evaluation.metrics.compute_metrics``,
NME normalised by ``max(w, h)`` of the box), on the study's validation set and on each real-photo
set. An arm whose mean final NME is above :data:`LEARNED_FRACTION` x the box-centre floor "has
not learned". The floors are written to ``<out>/floors.json`` and read back from it when the
annotation files are not on the machine (a report regenerated from committed run records).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np

from hrnet.runtime.checkpoint import write_json

__all__ = ["LEARNED_FRACTION", "FLOORS_JSON", "box_centres", "box_coordinates", "fit_constant_layout",
           "layout_predictions", "distinct_hands", "read_annotations", "set_floors", "study_floors",
           "has_learned", "file_sha256"]

#: An NME above this fraction of the box-centre floor counts as "has not learned".
LEARNED_FRACTION = 0.8
FLOORS_JSON = "floors.json"


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file's content (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def box_centres(bbox: np.ndarray) -> np.ndarray:
    """(N, 2) centres of (N, 4) xywh boxes in pixel-centre coordinates (``box_to_center_scale``)."""
    from data.transforms import box_to_center_scale

    return np.array([box_to_center_scale(b)[0] for b in np.asarray(bbox, dtype=np.float64)]).reshape(-1, 2)


def box_coordinates(keypoints: np.ndarray, bbox: np.ndarray) -> np.ndarray:
    """(N, J, 2) keypoints relative to their box: ``((x - cx) / w, (y - cy) / h)``."""
    bbox = np.asarray(bbox, dtype=np.float64)
    wh = np.maximum(bbox[:, None, 2:4], 1e-12)
    return (np.asarray(keypoints, dtype=np.float64)[..., :2] - box_centres(bbox)[:, None, :]) / wh


def layout_predictions(layout: np.ndarray, bbox: np.ndarray) -> np.ndarray:
    """(N, J, 2) pixel predictions of a (J, 2) box-coordinate layout placed in each (N, 4) box."""
    bbox = np.asarray(bbox, dtype=np.float64)
    return box_centres(bbox)[:, None, :] + np.asarray(layout, dtype=np.float64)[None] * bbox[:, None, 2:4]


def fit_constant_layout(keypoints: np.ndarray, bbox: np.ndarray, iterations: int = 200) -> np.ndarray:
    """The (J, 2) box-coordinate layout with the lowest NME on these annotations.

    NME averages ``||pred - gt|| / max(w, h)`` over each image's labelled joints, then over images,
    so joint ``j`` contributes ``sum_i c_ij ||D_i (p_j - q_ij)||`` with ``c_ij = 1 / (labelled
    joints of image i)``, ``q_ij`` its box coordinates and ``D_i = diag(w_i, h_i) / max(w_i, h_i)``:
    a weighted geometric median, minimised by iteratively reweighted least squares (Weiszfeld),
    started from the weighted mean. NaN for a joint never labelled.
    """
    kpts = np.asarray(keypoints, dtype=np.float64)
    bbox = np.asarray(bbox, dtype=np.float64)
    q = box_coordinates(kpts, bbox)                                        # (N, J, 2)
    lab = kpts[..., 2] > 0
    c = lab / np.maximum(lab.sum(axis=1, keepdims=True), 1)                 # (N, J)
    d2 = (bbox[:, 2:4] / np.maximum(bbox[:, 2:4].max(axis=1, keepdims=True), 1e-12)) ** 2  # (N, 2)
    weights = c
    layout = np.zeros(q.shape[1:])
    for _ in range(iterations + 1):
        wx = weights[..., None] * d2[:, None, :]                            # (N, J, 2)
        total = wx.sum(axis=0)
        layout = np.where(total > 0, (wx * q).sum(axis=0) / np.where(total > 0, total, 1.0), np.nan)
        dist = np.sqrt((((layout[None] - q) ** 2) * d2[:, None, :]).sum(axis=-1))
        weights = c / np.maximum(dist, 1e-12)
    return layout


def distinct_hands(keypoints: np.ndarray, bbox: np.ndarray) -> int:
    """Annotations with identical boxes and keypoints (to 0.01 px) counted once: the hands a set
    holds (FreiHAND ships each hand in several versions of one photo, all annotated alike)."""
    rows = np.concatenate([np.asarray(bbox, dtype=np.float64).reshape(len(bbox), -1),
                           np.asarray(keypoints, dtype=np.float64).reshape(len(keypoints), -1)], axis=1)
    return len({tuple(r) for r in np.round(rows, 2)})


def read_annotations(ann_file: str, root: str, num_joints: int, limit: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """``(keypoints (N, J, 3), bbox (N, 4))`` of a COCO or CSV annotation file (the first ``limit``
    samples when ``limit > 0``, as ``DATASET.MAX_*_SAMPLES``); bad samples skipped silently."""
    import warnings

    from data.coco import read_coco
    from data.csv import read_csv

    reader = read_csv if ann_file.endswith(".csv") else read_coco
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = reader(ann_file, root, num_joints, "skip")
    if limit > 0:
        records = records[:limit]
    if not records:
        return np.zeros((0, num_joints, 3)), np.zeros((0, 4))
    return np.stack([r.keypoints for r in records]), np.stack([r.bbox for r in records])


def set_floors(keypoints: np.ndarray, bbox: np.ndarray, layout: np.ndarray, cfg_or_thresholds: Any) -> Dict[str, Any]:
    """Both floors of one evaluated set: ``{"box_centre": {NME, PCK key}, "constant_layout": {...},
    "num_images", "num_hands"}``, scored by ``compute_metrics`` with the given thresholds."""
    from hrnet.evaluation.metrics import compute_metrics, metric_names

    pck_key = metric_names(cfg_or_thresholds)[1]
    centre = np.repeat(box_centres(bbox)[:, None, :], keypoints.shape[1], axis=1)
    out: Dict[str, Any] = {}
    for name, preds in (("box_centre", centre), ("constant_layout", layout_predictions(np.nan_to_num(layout), bbox))):
        m = compute_metrics(preds, keypoints, bbox, cfg_or_thresholds)
        out[name] = {"NME": m["NME"], pck_key: m[pck_key]}
    out["num_images"] = int(len(bbox))
    out["num_hands"] = distinct_hands(keypoints, bbox)
    return out


def has_learned(nme: Optional[float], floor: Optional[float]) -> Optional[bool]:
    """Whether ``nme`` is at or below :data:`LEARNED_FRACTION` x ``floor`` (None when either is unknown)."""
    if nme is None or floor is None or not np.isfinite(nme) or not np.isfinite(floor):
        return None
    return bool(nme <= LEARNED_FRACTION * floor)


def _dataset_files(cfg) -> Tuple[str, str, str]:
    """(image root, training annotation file, validation annotation file) of ``cfg``'s data set,
    as ``data.dataset.build_dataset`` resolves them (a synthetic ROOT against the working directory)."""
    root = os.path.abspath(cfg.DATASET.ROOT) if cfg.DATASET.FORMAT == "synthetic" else cfg.DATASET.ROOT
    return root, os.path.join(root, cfg.DATASET.TRAINSET), os.path.join(root, cfg.DATASET.TESTSET)


def _identity(cfg) -> Dict[str, Any]:
    """What the floors depend on, as the config states it (comparable on a machine without the files)."""
    d = cfg.DATASET
    return {"format": d.FORMAT, "root": d.ROOT, "trainset": d.TRAINSET, "testset": d.TESTSET,
            "synthetic": [int(d.SYNTHETIC.NUM_TRAIN), int(d.SYNTHETIC.NUM_TEST), int(d.SYNTHETIC.SEED)],
            "max_samples": [int(d.MAX_TRAIN_SAMPLES), int(d.MAX_TEST_SAMPLES)], "num_joints": int(cfg.MODEL.NUM_JOINTS),
            "thresholds": [float(cfg.TEST.FAILURE_THRESHOLD), float(cfg.TEST.PCK_THRESHOLD),
                           float(cfg.TEST.AUC_MAX_PX)]}


def _read_cache(out_dir: str, identity: Mapping[str, Any]) -> Dict[str, Any]:
    try:
        with open(os.path.join(out_dir, FLOORS_JSON), encoding="utf-8") as f:
            cached = json.load(f)
        return cached if cached.get("identity") == identity else {}
    except (OSError, ValueError, AttributeError):
        return {}


def study_floors(cfg, real_sets: Mapping[str, Tuple[str, str]], out_dir: str) -> Dict[str, Any]:
    """The floors of a study whose data set ``cfg`` describes, on its validation set (``valid``) and
    on each real-photo set (``real``: per set and pooled as ``all``), with the fitted ``layout``.

    Computed from the annotation files when they are here (and written to ``out_dir/floors.json``);
    otherwise the parts in that file for the same data set are used (``source`` says which).
    """
    identity = _identity(cfg)
    cache = _read_cache(out_dir, identity)
    root, train_file, valid_file = _dataset_files(cfg)
    n_j = int(cfg.MODEL.NUM_JOINTS)
    if not (os.path.isfile(train_file) and os.path.isfile(valid_file)):
        if cache:
            return dict(cache["floors"], source=f"{FLOORS_JSON} (the annotation files are not on this machine)")
        return {"available": False, "note": f"no floors: {os.path.relpath(valid_file)} is missing and there is no "
                                            f"{FLOORS_JSON} for this data set in the output folder"}
    layout = fit_constant_layout(*read_annotations(train_file, root, n_j, int(cfg.DATASET.MAX_TRAIN_SAMPLES)))
    valid = set_floors(*read_annotations(valid_file, root, n_j, int(cfg.DATASET.MAX_TEST_SAMPLES)), layout, cfg)
    floors: Dict[str, Any] = {"available": True, "valid": valid, "real": _real_floors(real_sets, layout, cfg, cache),
                              "layout": np.round(layout, 6).tolist()}
    write_json({"identity": identity, "floors": floors}, os.path.join(out_dir, FLOORS_JSON))
    return dict(floors, source="the annotation files")


def _real_floors(real_sets: Mapping[str, Tuple[str, str]], layout: np.ndarray, cfg,
                 cache: Mapping[str, Any]) -> Dict[str, Any]:
    """Floors per real-photo set and pooled (``all``); a set whose file is absent comes from ``cache``."""
    n_j = int(cfg.MODEL.NUM_JOINTS)
    out: Dict[str, Any] = {}
    pooled = []
    for name, (folder, ann) in real_sets.items():
        path = os.path.join(folder, ann)
        if not os.path.isfile(path):
            if name in cache.get("floors", {}).get("real", {}):
                out[name] = cache["floors"]["real"][name]
            continue
        kb = read_annotations(path, folder, n_j)
        out[name] = set_floors(*kb, layout, cfg)
        pooled.append(kb)
    if pooled and len(pooled) == len(real_sets):
        out["all"] = set_floors(np.concatenate([k for k, _ in pooled]), np.concatenate([b for _, b in pooled]),
                                layout, cfg)
    elif "all" in cache.get("floors", {}).get("real", {}):
        out["all"] = cache["floors"]["real"]["all"]
    return out
