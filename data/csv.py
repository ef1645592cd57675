"""HRNet-Facial-Landmark-Detection CSV annotations -> :class:`HandRecord` s.

Layout, one hand per row, with an optional header row (a first row none of whose cells after
the first is a number; a data row with one bad number is a bad sample, never a header)::

    image_name, scale, center_w, center_h, x0, y0, x1, y1, ..., x20, y20

* ``image_name`` is relative to the image root.
* ``scale`` = box side / 200 (HRNet-Facial's convention): the hand box is the square of side
  ``200 * scale`` centred at ``(center_w, center_h)``. The centre and the keypoints are in the
  pixel-centre convention of ``data/transforms.py`` (no +1 shift, unlike HRNet-Facial's code), so
  the record's edge-convention box is ``[cx + 0.5 - s/2, cy + 0.5 - s/2, s, s]``. A scale <= 0 or a
  non-finite centre derives the box from the keypoints instead, as for COCO.
* There is no visibility column: a keypoint whose x and y are both negative (e.g. ``-1, -1``)
  is unlabelled; every other keypoint is labelled. NaN is an error.
* Ids: the annotation id is the row's 0-based index among data rows; the image id is the index of
  the row's ``image_name`` in order of first appearance.
"""
from __future__ import annotations

import csv
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from .records import AnnotationFileError, BadSampleError, BadSamples, HandRecord, make_record

__all__ = ["read_csv"]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _is_header(row: Sequence[str]) -> bool:
    """A header names its columns: no cell after the image name is a number."""
    return len(row) > 1 and not any(_is_number(c) for c in row[1:])


def read_csv(ann_file: str, image_root: str, num_joints: int = 21, on_bad: str = "error",
             skipped: Optional[List[str]] = None) -> List[HandRecord]:
    """All hand samples of an HRNet-Facial-style CSV file, in file order.

    Args and returns as :func:`data.coco.read_coco`; error messages name the file, the line and
    the annotation id.
    """
    bad = BadSamples(on_bad, ann_file, skipped)
    ncols = 4 + 2 * num_joints
    image_ids: Dict[str, int] = {}
    records: List[HandRecord] = []
    try:
        with open(ann_file, "r", encoding="utf-8-sig", newline="") as f:  # -sig: a BOM is skipped
            rows = [(n, row) for n, row in enumerate(csv.reader(f), start=1) if any(c.strip() for c in row)]
    except (UnicodeDecodeError, csv.Error) as exc:
        raise AnnotationFileError(f"{ann_file}: not a readable UTF-8 CSV file ({exc})") from None
    if rows and _is_header(rows[0][1]):
        rows = rows[1:]
    for ann_id, (line, row) in enumerate(rows):
        where = f"{ann_file} line {line} annotation id {ann_id}"
        try:
            if len(row) != ncols:
                raise BadSampleError(f"{where}: expected {ncols} columns (image_name, scale, center_w, "
                                     f"center_h, x0, y0 ... x{num_joints - 1}, y{num_joints - 1}), got {len(row)}")
            try:
                values = np.array([float(c) for c in row[1:]], dtype=np.float64)
            except ValueError as exc:
                raise BadSampleError(f"{where}: not a number ({exc})") from None
            name = row[0].strip()
            image_id = image_ids.setdefault(name, len(image_ids))
            scale, cx, cy = values[:3]
            xy = values[3:].reshape(num_joints, 2)
            v = (~((xy[:, 0] < 0) & (xy[:, 1] < 0))).astype(np.float64)
            side = 200.0 * scale
            box = [cx + 0.5 - side / 2, cy + 0.5 - side / 2, side, side] if np.isfinite([cx, cy]).all() else None
            rec = make_record(os.path.join(image_root, name), image_id, ann_id, box,
                              np.concatenate([xy, v[:, None]], axis=1), num_joints, where, bad)
        except BadSampleError as exc:
            bad(exc)
            continue
        if rec is not None:
            records.append(rec)
    bad.report()
    return records
