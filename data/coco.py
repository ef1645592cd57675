"""COCO-style hand keypoint annotations -> :class:`HandRecord` s.

Reads the layouts hand datasets ship in (OneHand10K, RHD, FreiHAND, CMU Panoptic hand,
COCO-WholeBody-Hand as laid out by mmpose, and this project's synthetic set):

* ``images[]``: ``id``, ``file_name`` (relative to the image root), optional ``width`` /
  ``height`` (checked against the image file); other fields ignored. An id listed twice with
  different file names makes its annotations bad samples (which file is meant is unknown).
* ``annotations[]``: ``image_id``, ``id``, ``bbox`` ``[x, y, w, h]`` and ``keypoints``, either a
  flat list of ``3 J`` numbers or ``J`` ``[x, y, v]`` triples (``v`` int or float, 0 = unlabelled).
  A missing ``id`` falls back to the annotation's index in the list; an id seen before is a
  bad sample (the first one is kept).
* COCO-WholeBody: an annotation with ``lefthand_kpts`` / ``righthand_kpts`` gives one sample per
  hand whose ``*hand_valid`` is true (absent = true), boxed by ``*hand_box``; its body
  ``keypoints`` are ignored. Annotation id of a hand: ``2 * id`` (left) and ``2 * id + 1``
  (right), unique across the file.

Extra fields (``categories``, ``segmentation``, ``num_keypoints`` ...) are ignored. A UTF-8
byte order mark is accepted.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple

from .records import AnnotationFileError, BadSampleError, BadSamples, HandRecord, make_record

__all__ = ["read_coco"]

_HANDS = (("left", 0), ("right", 1))


def _load_json(ann_file: str) -> Dict[str, Any]:
    try:
        with open(ann_file, "r", encoding="utf-8-sig") as f:  # -sig: a BOM (Windows editors) is skipped
            data = json.load(f)
    except json.JSONDecodeError as exc:
        raise AnnotationFileError(f"{ann_file}: not valid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise AnnotationFileError(f"{ann_file}: not UTF-8 text ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) \
            or not isinstance(data.get("annotations"), list):
        raise AnnotationFileError(f"{ann_file}: a COCO-style file needs 'images' and 'annotations' lists")
    return data


def _image_table(ann_file: str, images: List[Any]) -> Dict[int, Tuple[Optional[str], Optional[Tuple[int, int]], str]]:
    """image id -> (file_name or None, (width, height) or None, why the entry is unusable or "")."""
    table: Dict[int, Tuple[Optional[str], Optional[Tuple[int, int]], str]] = {}
    for i, img in enumerate(images):
        if not isinstance(img, dict) or "id" not in img:
            raise AnnotationFileError(f"{ann_file}: images[{i}] needs 'id' and 'file_name'")
        image_id = img["id"]
        if not isinstance(image_id, int) or isinstance(image_id, bool):
            raise AnnotationFileError(f"{ann_file}: images[{i}] id must be an integer, got {image_id!r}")
        name = img.get("file_name")
        why = "" if isinstance(name, str) and name.strip() else f"images[{i}] file_name is {name!r}"
        w, h = img.get("width"), img.get("height")
        size = (w, h) if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (w, h)) else None
        if image_id in table:
            old_name, old_size, old_why = table[image_id]
            if old_why or why or old_name != name or (old_size and size and old_size != size):
                why = f"image id {image_id} is listed twice in images[] ({old_name!r} and {name!r})"
            size = old_size or size
        table[image_id] = (name, size, why)
    return table


def _hand_samples(ann_file: str, index: int, ann: Any, image_root: str,
                  images: Dict[int, Tuple[Optional[str], Optional[Tuple[int, int]], str]]
                  ) -> Tuple[str, int, Optional[Tuple[int, int]], List[Tuple[str, int, Any, Any]]]:
    """One ``annotations[index]`` entry -> (image path, image id, stated image size, its hands:
    ``(where, sample id, box, keypoints)`` each; two for a COCO-WholeBody annotation with both hands).

    Raises :class:`BadSampleError` for an entry that is not an object, an image id missing from
    ``images[]`` or unusable there, non-integer ids, or no keypoints.
    """
    ann_id = ann.get("id", index) if isinstance(ann, dict) else index
    if not isinstance(ann, dict):
        raise BadSampleError(f"{ann_file} annotation index {index}: not an object")
    where = f"{ann_file} annotation id {ann_id}"
    image_id = ann.get("image_id")
    if not isinstance(image_id, (int, str)) or image_id not in images:
        raise BadSampleError(f"{where}: image_id {image_id!r} has no entry in images[]")
    if not isinstance(image_id, int) or not isinstance(ann_id, int) or isinstance(ann_id, bool):
        raise BadSampleError(f"{where}: image_id and id must be integers")
    name, size, why = images[image_id]
    if why:
        raise BadSampleError(f"{where}: {why}")
    if "lefthand_kpts" in ann or "righthand_kpts" in ann:
        hands = [(f"{where} ({side} hand, sample id {2 * ann_id + k})", 2 * ann_id + k,
                  ann.get(f"{side}hand_box"), ann[f"{side}hand_kpts"])
                 for side, k in _HANDS
                 if f"{side}hand_kpts" in ann and ann.get(f"{side}hand_valid", True)]
    else:
        if "keypoints" not in ann:
            raise BadSampleError(f"{where}: no 'keypoints'")
        hands = [(where, ann_id, ann.get("bbox"), ann["keypoints"])]
    return os.path.join(image_root, name), image_id, size, hands


def read_coco(ann_file: str, image_root: str, num_joints: int = 21, on_bad: str = "error",
              skipped: Optional[List[str]] = None) -> List[HandRecord]:
    """All hand samples of a COCO-style keypoint file, in file order.

    Args:
        ann_file: the JSON file.
        image_root: folder the ``file_name`` s are relative to.
        num_joints: keypoints per hand (J).
        on_bad: ``error`` raises :class:`BadSampleError` at the first bad annotation (naming the
            file and annotation id); ``skip`` leaves bad ones out with one summary warning.
        skipped: a list the messages of skipped samples are appended to.
    Returns:
        Records with ``bbox`` (4,) and ``keypoints`` (J, 3) in original image pixels. Image files
        are not opened here (``data.dataset`` checks them).
    """
    data = _load_json(ann_file)
    bad = BadSamples(on_bad, ann_file, skipped)
    images = _image_table(ann_file, data["images"])
    seen_ids: Dict[int, int] = {}  # annotation (or hand sample) id -> index of its first use

    records: List[HandRecord] = []
    for index, ann in enumerate(data["annotations"]):
        try:
            path, image_id, size, hands = _hand_samples(ann_file, index, ann, image_root, images)
        except BadSampleError as exc:
            bad(exc)
            continue
        for hand_where, hand_id, box, kpts in hands:
            try:
                if hand_id in seen_ids:
                    raise BadSampleError(f"{hand_where}: the id is used already by annotations[{seen_ids[hand_id]}] "
                                         f"(ids must be unique; predictions are matched by id)")
                seen_ids[hand_id] = index
                rec = make_record(path, image_id, hand_id, box, kpts, num_joints, hand_where, bad, image_size=size)
            except BadSampleError as exc:
                bad(exc)
                continue
            if rec is not None:
                records.append(rec)
    bad.report()
    return records
