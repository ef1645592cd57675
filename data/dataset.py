"""``build_dataset(cfg, is_train)``: hand records -> cropped, augmented samples with heatmap targets.

Item (a dict the default collate batches)::

    image          float32 (3, H, W)  RGB, ImageNet mean/std, H, W = MODEL.IMAGE_SIZE (w, h)
    target         float32 (J, h, w)  Gaussian heatmaps (sigma MODEL.SIGMA), h, w = MODEL.HEATMAP_SIZE
    target_weight  float32 (J,)       0 for unlabelled joints and joints outside the heatmap
    meta           image_id int, ann_id int, center float64 (2,), scale float64 (2,) (crop box
                   (w, h), original pixels), rotation float (deg), flip bool, joints float32
                   (J, 3) original keypoints (x, y, v), bbox float32 (4,) annotation xywh,
                   hm_to_img float64 (2, 3) heatmap pixels -> original pixels

One sample = one ``cv2.imread`` (a JPEG at 1/2, 1/4 or 1/8 size when the crop is downsampled that
much anyway; ``DATASET.REDUCED_DECODE``), one ``cv2.warpAffine`` to the input size
(``transforms.warp_crop``), BGR->RGB and the photometric augmentation on the small crop, one LUT
normalisation per channel, and heatmap targets from the keypoints mapped by the heatmap affine of
the same (center, scale, rotation, flip).

Validation: at build time the readers check every annotation, and every image file is checked
cheaply (exists, PIL parses its header, a JPEG/PNG is not truncated; ~0.1 ms per file, a few
seconds for 24k files; a full decode would take a minute). Damage inside the compressed data is
found only when the sample is loaded: a file that fails to decode then raises
:class:`BadSampleError` naming the file and annotation id (inside a DataLoader
worker too), or with ``DATASET.ON_BAD_SAMPLE skip`` warns and returns the next sample instead.

Randomness: training augmentation draws from a numpy Generator seeded from
``torch.initial_seed()`` of the process using the dataset, which PyTorch's DataLoader sets to
``base_seed + worker_id`` in each worker (``base_seed`` comes from the main process's seeded
torch generator). Seeding torch (``SEED``) therefore makes a run repeatable, for any number of
workers, and each worker/epoch gets its own stream. Building a dataset sets OpenCV to one thread
in the building process (the workers inherit it): the loader's workers are the parallelism.
"""
from __future__ import annotations

import os
import random
import warnings
from typing import Any, Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from .codec import HeatmapCodec
from .coco import read_coco
from .csv import read_csv
from .records import (BadSampleError, BadSamples, HandRecord, check_record_image, decode_problem, inspect_image,
                      is_jpeg_path)
from .transforms import (Normalize, box_to_center_scale, build_photometric_aug, get_affine_transform,
                         invert_affine, reduced_decode_factor, reduced_image_affine, sample_augmentation,
                         transform_points, warp_crop)

__all__ = ["HandKeypointDataset", "build_dataset", "check_images"]

_IMREAD_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}
_MAX_SUBSTITUTES = 10  # skip mode: consecutive undecodable samples tolerated before giving up


class HandKeypointDataset(Dataset):
    """Top-down hand crops with heatmap targets over a list of :class:`HandRecord` s.

    Records are stored as numpy arrays (not Python objects) so forked DataLoader workers share
    them without copy-on-access growth.
    """

    def __init__(self, records: Sequence[HandRecord], cfg, is_train: bool, source: str = ""):
        if len(records) == 0:
            raise ValueError(f"{source or 'dataset'}: no usable samples")
        self.source = source
        self.is_train = bool(is_train)
        self.num_joints = int(cfg.MODEL.NUM_JOINTS)
        self._paths = np.array([r.image_path for r in records])
        self._image_ids = np.array([r.image_id for r in records], dtype=np.int64)
        self._ann_ids = np.array([r.ann_id for r in records], dtype=np.int64)
        self._bboxes = np.stack([r.bbox for r in records]).astype(np.float64)
        self._keypoints = np.stack([r.keypoints for r in records]).astype(np.float64)
        if self._keypoints.shape[1:] != (self.num_joints, 3):
            raise ValueError(f"{source}: records have keypoints {self._keypoints.shape[1:]}, "
                             f"MODEL.NUM_JOINTS is {self.num_joints}")
        self.image_size = (int(cfg.MODEL.IMAGE_SIZE[0]), int(cfg.MODEL.IMAGE_SIZE[1]))
        self.heatmap_size = (int(cfg.MODEL.HEATMAP_SIZE[0]), int(cfg.MODEL.HEATMAP_SIZE[1]))
        self.codec = HeatmapCodec.from_cfg(cfg)
        d = cfg.DATASET
        self.padding = float(d.BBOX_PADDING)
        self.aspect = self.image_size[0] / self.image_size[1]
        self.scale_factor, self.rot_factor = float(d.SCALE_FACTOR), float(d.ROT_FACTOR)
        self.rot_prob = float(d.ROT_PROB)
        self.flip_prob = float(d.FLIP_PROB) if d.FLIP else 0.0
        self.reduced_decode = bool(d.REDUCED_DECODE)
        self.on_bad = d.ON_BAD_SAMPLE
        self._normalize = Normalize()
        self._photometric = build_photometric_aug(cfg) if self.is_train else None
        self._rng: Optional[np.random.Generator] = None
        self._rng_seed: Optional[int] = None
        # One OpenCV thread, set here in the parent: loader workers are the parallelism, and
        # calling cv2.setNumThreads inside a forked worker can deadlock on the inherited pool.
        cv2.setNumThreads(1)

    def __setstate__(self, state: Dict[str, Any]) -> None:
        # Unpickled in a spawn/forkserver worker (a fresh process, no OpenCV pool yet): one thread too.
        self.__dict__.update(state)
        cv2.setNumThreads(1)

    def __len__(self) -> int:
        return len(self._paths)

    def record(self, index: int) -> HandRecord:
        """The annotation behind sample ``index``."""
        return HandRecord(str(self._paths[index]), int(self._image_ids[index]), int(self._ann_ids[index]),
                          self._bboxes[index].copy(), self._keypoints[index].copy())

    def _process_rng(self) -> np.random.Generator:
        """This process's generator, (re)seeded whenever ``torch.initial_seed()`` changes (a new worker)."""
        seed = torch.initial_seed()
        if self._rng is None or seed != self._rng_seed:
            geometry, photometric, py = np.random.SeedSequence(seed).spawn(3)
            self._rng = np.random.default_rng(geometry)
            if self._photometric is not None:
                self._photometric.set_random_state(np.random.default_rng(photometric),
                                                   random.Random(int(py.generate_state(1)[0])))
            self._rng_seed = seed
        return self._rng

    def __getitem__(self, index: int) -> Dict[str, Any]:
        index = int(index)
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"sample index {index} out of range for {n} samples")
        index %= n
        for attempt in range(_MAX_SUBSTITUTES):
            j = (index + attempt) % n
            try:
                return self._load(j)
            except BadSampleError as exc:
                # A test sample is never substituted: the substitute's hand would be scored twice.
                if self.on_bad == "error" or not self.is_train:
                    raise
                warnings.warn(f"{exc}; returning sample {(j + 1) % n} instead (DATASET.ON_BAD_SAMPLE skip)")
        raise BadSampleError(f"{self.source}: {_MAX_SUBSTITUTES} consecutive samples from index {index} "
                             f"could not be loaded")

    def _read(self, index: int, factor: int) -> np.ndarray:
        path = str(self._paths[index])
        try:
            img = cv2.imread(path, _IMREAD_FLAGS[factor])
        except cv2.error as exc:
            img, why = None, f" ({str(exc).strip()})"
        else:
            why = ""
        if img is None:
            raise BadSampleError(f"{path}: cannot read or decode the image{why} (annotation id "
                                 f"{int(self._ann_ids[index])}, sample index {index} of {self.source})")
        return img

    def _load(self, index: int) -> Dict[str, Any]:
        bbox, kpts = self._bboxes[index], self._keypoints[index]
        center, scale = box_to_center_scale(bbox, self.aspect, self.padding)
        rotation, flip = 0.0, False
        if self.is_train:
            scale_mult, rotation, flip = sample_augmentation(self._process_rng(), self.scale_factor,
                                                             self.rot_factor, self.rot_prob, self.flip_prob)
            scale = scale * scale_mult
        factor = 1
        if self.reduced_decode and is_jpeg_path(str(self._paths[index])):
            factor = reduced_decode_factor(scale, self.image_size)
        img = self._read(index, factor)

        mat = get_affine_transform(center, scale, rotation, self.image_size, flip)
        crop = warp_crop(img, reduced_image_affine(mat, factor), self.image_size)  # BGRA (H, W, 4)
        if self._photometric is not None:
            effects = self._photometric.draw()
            if effects:  # on the small crop, not the full image; BGR throughout (no channel swap)
                crop = self._photometric.apply(cv2.cvtColor(crop, cv2.COLOR_BGRA2BGR), effects, bgr=True)
        image = self._normalize(crop, bgr=True)

        hm_mat = get_affine_transform(center, scale, rotation, self.heatmap_size, flip)
        target, target_weight = self.codec.encode(transform_points(kpts[:, :2], hm_mat), kpts[:, 2])
        meta = {
            "image_id": int(self._image_ids[index]),
            "ann_id": int(self._ann_ids[index]),
            "center": center,
            "scale": np.asarray(scale, dtype=np.float64),
            "rotation": float(rotation),
            "flip": bool(flip),
            "joints": kpts.astype(np.float32),
            "bbox": bbox.astype(np.float32),
            "hm_to_img": invert_affine(hm_mat),
        }
        return {"image": torch.from_numpy(image), "target": torch.from_numpy(target),
                "target_weight": torch.from_numpy(target_weight), "meta": meta}


def check_images(records: Sequence[HandRecord], on_bad: str, source: str, limit: int = 0,
                 decode: bool = False, skipped: Optional[List[str]] = None) -> List[HandRecord]:
    """Records whose image passes the checks, in order, at most ``limit`` (0 = all).

    Each file is checked once however many hands it holds: :func:`data.records.inspect_image`
    (exists, header, size limit, not truncated), its size against the ``width`` / ``height`` the
    annotation file states, :func:`data.records.check_record_image` (box and keypoints inside
    the image), and with ``decode`` a full decode (:func:`data.records.decode_problem`).
    Messages of skipped samples (``on_bad='skip'``) are appended to ``skipped``.
    """
    bad = BadSamples(on_bad, source, skipped)
    seen: Dict[str, Any] = {}
    out: List[HandRecord] = []
    for rec in records:
        if limit and len(out) >= limit:
            break
        if rec.image_path not in seen:
            size, reason = inspect_image(rec.image_path)
            if reason is None and decode:
                reason = decode_problem(rec.image_path)
            seen[rec.image_path] = (size, reason)
        size, reason = seen[rec.image_path]
        if reason is None and rec.image_size is not None and tuple(rec.image_size) != tuple(size):
            reason = (f"the image is {size[0]}x{size[1]} pixels, the annotation file says "
                      f"{rec.image_size[0]}x{rec.image_size[1]} (width x height)")
        if reason is None:
            reason = check_record_image(rec, *size)
        if reason is not None:
            bad(BadSampleError(f"{rec.image_path}: {reason} (annotation id {rec.ann_id} in {source})"))
            continue
        out.append(rec)
    bad.report()
    return out


def _ensure_synthetic(cfg) -> str:
    try:
        from .synthetic import ensure_dataset
    except ImportError as exc:
        raise ImportError("DATASET.FORMAT synthetic needs data.synthetic.ensure_dataset (the synthetic hand "
                          "renderer), which could not be imported; use DATASET.FORMAT coco|csv for a real "
                          f"dataset ({exc})") from exc
    return ensure_dataset(cfg)


def build_dataset(cfg, is_train: bool) -> HandKeypointDataset:
    """The training (``is_train``) or test dataset the config describes.

    ``DATASET.FORMAT``: ``coco`` / ``csv`` read ``DATASET.TRAINSET`` or ``DATASET.TESTSET``
    (absolute, or relative to ``DATASET.ROOT``; image names relative to ``DATASET.ROOT``);
    ``synthetic`` first renders the set into ``DATASET.ROOT`` if missing
    (``data.synthetic.ensure_dataset``), then reads it as COCO. ``DATASET.MAX_TRAIN_SAMPLES`` /
    ``MAX_TEST_SAMPLES`` keep the first N usable samples. Training samples are augmented per the
    ``DATASET`` factors; test samples are not.

    The returned dataset's ``skipped`` lists one line (file, annotation id, reason) per sample
    left out under ``DATASET.ON_BAD_SAMPLE skip``; it is empty with ``error`` (a bad sample raises).
    """
    fmt = cfg.DATASET.FORMAT
    root = cfg.DATASET.ROOT
    if fmt == "synthetic":
        root = _ensure_synthetic(cfg)
    elif fmt not in ("coco", "csv"):
        raise ValueError(f"DATASET.FORMAT must be synthetic|coco|csv, got {fmt!r}")
    key = "TRAINSET" if is_train else "TESTSET"
    ann_file = os.path.join(root, cfg.DATASET[key])
    if not os.path.isfile(ann_file):
        raise FileNotFoundError(f"DATASET.{key}: annotation file not found: {ann_file} "
                                f"(absolute, or relative to DATASET.ROOT {root!r})")
    reader = read_csv if fmt == "csv" else read_coco
    skipped: List[str] = []
    records = reader(ann_file, root, int(cfg.MODEL.NUM_JOINTS), cfg.DATASET.ON_BAD_SAMPLE, skipped=skipped)
    limit = int(cfg.DATASET.MAX_TRAIN_SAMPLES if is_train else cfg.DATASET.MAX_TEST_SAMPLES)
    # A test image that failed to decode at load time could only be replaced by another hand
    # (scored twice): decode test images fully now, so every bad one is left out and counted here.
    records = check_images(records, cfg.DATASET.ON_BAD_SAMPLE, ann_file, limit, decode=not is_train,
                           skipped=skipped)
    if not records:
        raise BadSampleError(f"{ann_file}: no usable samples"
                             + (f" ({len(skipped)} skipped, DATASET.ON_BAD_SAMPLE skip)" if skipped else ""))
    dataset = HandKeypointDataset(records, cfg, is_train, source=ann_file)
    dataset.skipped = skipped  # one line per skipped sample, for train.log / metrics.json
    return dataset
