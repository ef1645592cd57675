"""The one record type every annotation reader produces, and the checks they share.

A :class:`HandRecord` is one hand: ``image_path``, ``image_id``, ``ann_id``, ``bbox`` (4,)
``[x, y, w, h]`` and ``keypoints`` (J, 3) ``(x, y, v)``. Everything after the reader
(crops, targets, metrics) is format-free.

Units: pixels of the original image. ``bbox`` uses the COCO *edge* convention (it covers
``[x, x + w] x [y, y + h]``); keypoints use the pixel-centre convention of
``data/transforms.py`` (pixel ``i`` is centred at ``i``). ``v > 0`` means labelled (COCO's 1 and 2
alike), ``v == 0`` unlabelled (weight 0, excluded from metrics; its x, y are set to 0).

Bad annotations raise :class:`BadSampleError` naming the file and the annotation id;
:class:`BadSamples` turns them into an error or a warning-and-skip (``DATASET.ON_BAD_SAMPLE``).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

__all__ = ["HandRecord", "BadSampleError", "BadSamples", "make_record", "box_from_keypoints",
           "check_image_file"]


class BadSampleError(ValueError):
    """An annotation or image that cannot be used; the message names the file and the annotation id."""


@dataclass(frozen=True)
class HandRecord:
    """One hand sample. ``bbox`` (4,) float64 xywh; ``keypoints`` (J, 3) float64 (x, y, v)."""

    image_path: str
    image_id: int
    ann_id: int
    bbox: np.ndarray
    keypoints: np.ndarray


class BadSamples:
    """Collects :class:`BadSampleError` s: re-raises (``on_bad='error'``) or records them for one
    summary warning (``on_bad='skip'``). Also counts informational notes (boxes derived, ...)."""

    MAX_LISTED = 20

    def __init__(self, on_bad: str, source: str):
        if on_bad not in ("error", "skip"):
            raise ValueError(f"DATASET.ON_BAD_SAMPLE must be error|skip, got {on_bad!r}")
        self.on_bad, self.source = on_bad, source
        self.skipped: List[str] = []
        self.notes: dict = {}

    def __call__(self, exc: BadSampleError) -> None:
        if self.on_bad == "error":
            raise exc
        self.skipped.append(str(exc))

    def note(self, what: str) -> None:
        self.notes[what] = self.notes.get(what, 0) + 1

    def report(self) -> None:
        """One warning for everything skipped, one for each kind of note."""
        if self.skipped:
            listed = "\n  ".join(self.skipped[: self.MAX_LISTED])
            more = len(self.skipped) - self.MAX_LISTED
            tail = f"\n  ... and {more} more" if more > 0 else ""
            warnings.warn(f"{self.source}: skipped {len(self.skipped)} bad sample(s) "
                          f"(DATASET.ON_BAD_SAMPLE skip):\n  {listed}{tail}", stacklevel=3)
        for what, count in self.notes.items():
            warnings.warn(f"{self.source}: {count} annotation(s) {what}", stacklevel=3)


def box_from_keypoints(keypoints: np.ndarray) -> Optional[np.ndarray]:
    """The tight xywh box (edge convention) around the labelled keypoints (J, 3), or None if none.

    The pixel centred at ``k`` covers the edge interval ``[k, k + 1]`` (edge = centre + 0.5, see
    ``box_to_center_scale``), so the box spans ``[min, max + 1]``: w, h >= 1 and its centre is the
    keypoints' midpoint.
    """
    lab = keypoints[keypoints[:, 2] > 0, :2]
    if len(lab) == 0:
        return None
    lo, hi = lab.min(0), lab.max(0)
    return np.array([lo[0], lo[1], hi[0] - lo[0] + 1.0, hi[1] - lo[1] + 1.0], dtype=np.float64)


def make_record(image_path: str, image_id: int, ann_id: int, bbox: Optional[Sequence[float]],
                keypoints, num_joints: int, where: str, bad: Optional[BadSamples] = None) -> Optional[HandRecord]:
    """Validate one annotation and build its record.

    Args:
        keypoints: flat ``3 * num_joints`` numbers or ``num_joints`` ``[x, y, v]`` triples.
        bbox: ``[x, y, w, h]`` or None. A missing box, or one with w or h <= 0 or a non-finite
            value, is replaced by the labelled keypoints' extent (noted in ``bad``).
        where: ``"<file> annotation id <id>"``, the prefix of every error message.
    Returns:
        The record, or None when the annotation has no labelled keypoint but a valid box
        (nothing to learn or measure; noted in ``bad``).
    Raises:
        BadSampleError: wrong keypoint count, non-numeric or NaN/inf values in a labelled
        keypoint, a malformed box, or an invalid box with no labelled keypoint to derive one from.
    """
    try:
        kpts = np.asarray(keypoints, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BadSampleError(f"{where}: keypoints are not a list of numbers ({exc})") from None
    if kpts.size != 3 * num_joints or kpts.ndim not in (1, 2) or (kpts.ndim == 2 and kpts.shape[1] != 3):
        raise BadSampleError(
            f"{where}: expected {num_joints} keypoints ({3 * num_joints} numbers or {num_joints} "
            f"[x, y, v] triples), got shape {list(kpts.shape)}")
    kpts = kpts.reshape(num_joints, 3).copy()
    v = kpts[:, 2]
    if not np.isfinite(v).all():
        raise BadSampleError(f"{where}: keypoint visibility is NaN/inf at index "
                             f"{np.flatnonzero(~np.isfinite(v)).tolist()}")
    labelled = v > 0
    bad_xy = labelled & ~np.isfinite(kpts[:, :2]).all(1)
    if bad_xy.any():
        raise BadSampleError(f"{where}: NaN/inf coordinates in labelled keypoint(s) {np.flatnonzero(bad_xy).tolist()}")
    kpts[~labelled] = 0.0  # unlabelled coordinates carry no meaning (OneHand10K stores 0, 0, 0)

    box = None
    if bbox is not None:
        try:
            box = np.asarray(bbox, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            box = np.empty(0)
        if box.size != 4:
            raise BadSampleError(f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
        if not (np.isfinite(box).all() and box[2] > 0 and box[3] > 0):
            box, why = None, "had a box with w or h <= 0 (or NaN)"
    else:
        why = "had no box"
    if box is None:
        box = box_from_keypoints(kpts)
        if box is None:
            raise BadSampleError(f"{where}: no valid box (w and h must be > 0) and no labelled keypoint "
                                 f"to derive one from")
        if bad is not None:
            bad.note(f"{why}: derived from the labelled keypoints")
    elif not labelled.any():
        if bad is not None:
            bad.note("without any labelled keypoint were left out")
        return None
    return HandRecord(image_path=image_path, image_id=int(image_id), ann_id=int(ann_id), bbox=box, keypoints=kpts)


_JPEG_EXT = (".jpg", ".jpeg", ".jpe", ".jfif")
_TAIL_BYTES = 4096


def check_image_file(path: str) -> Optional[str]:
    """Cheap build-time check of an image file; returns a reason it is unusable, or None.

    Checks (about 0.1 ms per file): it exists and is a file, PIL parses its header (known format,
    a size), and a JPEG / PNG ends with its end marker within the last 4 KiB (catches truncated
    copies, which OpenCV would otherwise decode silently with a grey bottom). Damage inside
    the compressed data is only found when the image is decoded, at load time.
    """
    if not os.path.exists(path):
        return "image file not found"
    if not os.path.isfile(path):
        return "image path is not a file"
    from PIL import Image, UnidentifiedImageError  # lazy: only the build needs it

    try:
        with open(path, "rb") as f:
            with Image.open(f) as im:  # parses the header only
                fmt, (w, h) = im.format, im.size
            marker = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}.get(fmt)
            if marker is not None:
                f.seek(max(0, os.fstat(f.fileno()).st_size - _TAIL_BYTES))
                if marker not in f.read():
                    return f"truncated {fmt} file (no end marker)"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"unreadable image ({type(exc).__name__}: {exc})"
    if w <= 0 or h <= 0:
        return f"image has size {w}x{h}"
    return None


def is_jpeg_path(path: str) -> bool:
    """True for a JPEG file name (the formats OpenCV can decode at 1/2, 1/4, 1/8 size cheaply)."""
    return path.lower().endswith(_JPEG_EXT)
