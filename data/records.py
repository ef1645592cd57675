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
The checks every reader shares live here, so COCO and CSV files are judged alike:
:func:`make_record` (keypoint count, finite values, a box of at least :data:`MIN_BOX_SIDE`
pixels, no labelled keypoint :data:`FAR_OUTSIDE` box sides beyond the box) and
:func:`check_record_image` (the same against the image, once its size is known).
A file that cannot be read as a whole raises :class:`AnnotationFileError`.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["HandRecord", "BadSampleError", "AnnotationFileError", "BadSamples", "make_record",
           "box_from_keypoints", "check_record_image", "check_image_file", "inspect_image", "decode_problem",
           "MIN_BOX_SIDE", "FAR_OUTSIDE", "MAX_IMAGE_PIXELS"]

#: A box whose longer side is below this (pixels) is an error: nothing to crop, NME divides by it.
MIN_BOX_SIDE = 4.0
#: A labelled keypoint further than this many box (or image) sides beyond the box (or image)
#: is an error: a unit or coordinate-order mistake, not a hand (a keypoint at (1e5, 1e5) would
#: otherwise dominate the mean NME).
FAR_OUTSIDE = 1.0
#: Images with more pixels than this are refused before decoding (a decompression bomb, or not a
#: photo): 100 MP is twice a 50 MP camera frame.
MAX_IMAGE_PIXELS = 100_000_000


class BadSampleError(ValueError):
    """An annotation or image that cannot be used; the message names the file and the annotation id."""


class AnnotationFileError(BadSampleError):
    """An annotation file that cannot be read as a whole (not JSON, wrong layout); names the file.

    Raised whatever ``DATASET.ON_BAD_SAMPLE`` says: there is no sample to skip.
    """


@dataclass(frozen=True)
class HandRecord:
    """One hand sample. ``bbox`` (4,) float64 xywh; ``keypoints`` (J, 3) float64 (x, y, v).

    ``image_size`` ``(width, height)`` as the annotation file states it (None when it does not):
    checked against the image file by ``data.dataset.check_images``.
    """

    image_path: str
    image_id: int
    ann_id: int
    bbox: np.ndarray
    keypoints: np.ndarray
    image_size: Optional[Tuple[int, int]] = None


class BadSamples:
    """Collects :class:`BadSampleError` s: re-raises (``on_bad='error'``) or records them for one
    summary warning (``on_bad='skip'``). Also counts informational notes (boxes derived, ...)."""

    MAX_LISTED = 20

    def __init__(self, on_bad: str, source: str, skipped: Optional[List[str]] = None):
        """``skipped``: a caller's list that every skipped sample's message is appended to."""
        if on_bad not in ("error", "skip"):
            raise ValueError(f"DATASET.ON_BAD_SAMPLE must be error|skip, got {on_bad!r}")
        self.on_bad, self.source = on_bad, source
        self.skipped: List[str] = [] if skipped is None else skipped
        self._first = len(self.skipped)  # the caller's list may hold earlier stages' skips
        self.notes: dict = {}

    def __call__(self, exc: BadSampleError) -> None:
        if self.on_bad == "error":
            raise exc
        self.skipped.append(str(exc))

    def note(self, what: str) -> None:
        self.notes[what] = self.notes.get(what, 0) + 1

    def report(self) -> None:
        """One warning for everything skipped, one for each kind of note."""
        mine = self.skipped[self._first:]
        if mine:
            listed = "\n  ".join(mine[: self.MAX_LISTED])
            more = len(mine) - self.MAX_LISTED
            tail = f"\n  ... and {more} more" if more > 0 else ""
            warnings.warn(f"{self.source}: skipped {len(mine)} bad sample(s) "
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


def _far_outside(kpts: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Indices of labelled keypoints (J, 3) more than ``FAR_OUTSIDE`` region sides beyond ``region`` (xywh)."""
    x, y, w, h = region
    m = FAR_OUTSIDE * max(w, h)
    xy = kpts[:, :2]
    out = (xy[:, 0] < x - m) | (xy[:, 0] > x + w + m) | (xy[:, 1] < y - m) | (xy[:, 1] > y + h + m)
    return np.flatnonzero(out & (kpts[:, 2] > 0))


def _listed(kpts: np.ndarray, idx: np.ndarray) -> str:
    shown = ", ".join(f"{i} at ({kpts[i, 0]:.6g}, {kpts[i, 1]:.6g})" for i in idx[:3])
    return shown + (" ..." if len(idx) > 3 else "")


def check_record_image(rec: HandRecord, width: int, height: int) -> Optional[str]:
    """Why ``rec`` does not fit an image of ``width`` x ``height`` pixels, or None.

    Refused: a box entirely outside the image, a labelled keypoint ``FAR_OUTSIDE`` image sides
    beyond it.
    """
    x, y, w, h = rec.bbox
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return f"bbox {np.round(rec.bbox, 2).tolist()} lies outside the {width}x{height} image"
    far = _far_outside(rec.keypoints, np.array([0.0, 0.0, width, height]))
    if len(far):
        return f"labelled keypoint(s) far outside the {width}x{height} image: {_listed(rec.keypoints, far)}"
    return None


def _parse_keypoints(keypoints, num_joints: int, where: str) -> np.ndarray:
    """(J, 3) float64 copy of flat ``3 J`` numbers or ``J`` triples; unlabelled rows zeroed.

    Raises :class:`BadSampleError` for non-numbers, a wrong count, a NaN/inf visibility or NaN/inf
    coordinates of a labelled keypoint.
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
    return kpts


def _parse_box(bbox: Optional[Sequence[float]], where: str) -> Tuple[Optional[np.ndarray], str]:
    """``(box (4,) float64, "")``, or ``(None, why)`` for a missing box or one with w or h <= 0 or a
    non-finite value (the caller derives one). Raises :class:`BadSampleError` unless 4 numbers."""
    if bbox is None:
        return None, "had no box"
    try:
        box = np.asarray(bbox, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        box = np.empty(0)
    if box.size != 4:
        raise BadSampleError(f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
    if not (np.isfinite(box).all() and box[2] > 0 and box[3] > 0):
        return None, "had a box with w or h <= 0 (or NaN)"
    return box, ""


def make_record(image_path: str, image_id: int, ann_id: int, bbox: Optional[Sequence[float]],
                keypoints, num_joints: int, where: str, bad: Optional[BadSamples] = None,
                image_size: Optional[Tuple[int, int]] = None) -> Optional[HandRecord]:
    """Validate one annotation and build its record.

    Args:
        keypoints: flat ``3 * num_joints`` numbers or ``num_joints`` ``[x, y, v]`` triples.
        bbox: ``[x, y, w, h]`` or None. A missing box, or one with w or h <= 0 or a non-finite
            value, is replaced by the labelled keypoints' extent (noted in ``bad``).
        where: ``"<file> annotation id <id>"``, the prefix of every error message.
        image_size: ``(width, height)`` stated by the annotation file, or None; when given the
            record is also checked with :func:`check_record_image`.
    Returns:
        The record, or None when the annotation has no labelled keypoint but a valid box
        (nothing to learn or measure; noted in ``bad``).
    Raises:
        BadSampleError: wrong keypoint count, non-numeric or NaN/inf values in a labelled
        keypoint, a malformed box, an invalid box with no labelled keypoint to derive one from,
        a box smaller than ``MIN_BOX_SIDE``, a labelled keypoint ``FAR_OUTSIDE`` box sides beyond
        the box (or the image).
    """
    kpts = _parse_keypoints(keypoints, num_joints, where)
    labelled = kpts[:, 2] > 0
    box, why = _parse_box(bbox, where)
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
    if max(box[2], box[3]) < MIN_BOX_SIDE:
        raise BadSampleError(f"{where}: the box is {box[2]:.3g}x{box[3]:.3g} pixels, smaller than "
                             f"{MIN_BOX_SIDE:g} (a hand needs a box of a few pixels at least)")
    far = _far_outside(kpts, box)
    if len(far):
        raise BadSampleError(f"{where}: labelled keypoint(s) far outside the box "
                             f"{np.round(box, 2).tolist()}: {_listed(kpts, far)}")
    rec = HandRecord(image_path=image_path, image_id=int(image_id), ann_id=int(ann_id), bbox=box, keypoints=kpts,
                     image_size=None if image_size is None else (int(image_size[0]), int(image_size[1])))
    if image_size is not None:
        reason = check_record_image(rec, *rec.image_size)
        if reason is not None:
            raise BadSampleError(f"{where}: {reason}")
    return rec


_JPEG_EXT = (".jpg", ".jpeg", ".jpe", ".jfif")
_TAIL_BYTES = 4096


def inspect_image(path: str) -> Tuple[Optional[Tuple[int, int]], Optional[str]]:
    """Cheap build-time check of an image file: ``((width, height), None)`` or ``(size or None, reason)``.

    Checks (about 0.1 ms per file): it exists and is a file, PIL parses its header (known format,
    a size of at most ``MAX_IMAGE_PIXELS``), and a JPEG / PNG ends with its end marker within the
    last 4 KiB (catches truncated copies, which OpenCV would otherwise decode silently with a grey
    bottom). Damage inside the compressed data is only found when the image is decoded
    (:func:`decode_problem`).
    """
    if not os.path.exists(path):
        return None, "image file not found"
    if not os.path.isfile(path):
        return None, "image path is not a file"
    from PIL import Image, UnidentifiedImageError  # lazy: only the build needs it

    try:
        with open(path, "rb") as f, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we judge the size below
            with Image.open(f) as im:  # parses the header only
                fmt, (w, h) = im.format, im.size
            if w * h > MAX_IMAGE_PIXELS:
                return (w, h), (f"image of {w}x{h} pixels is larger than the {MAX_IMAGE_PIXELS // 10**6} MP "
                                f"limit (records.MAX_IMAGE_PIXELS; a decompression bomb?)")
            marker = {"JPEG": b"\xff\xd9", "PNG": b"IEND"}.get(fmt)
            if marker is not None:
                f.seek(max(0, os.fstat(f.fileno()).st_size - _TAIL_BYTES))
                if marker not in f.read():
                    return (w, h), f"truncated {fmt} file (no end marker)"
    except Image.DecompressionBombError as exc:  # PIL refuses > 2x its own limit before we can
        return None, f"image larger than the {MAX_IMAGE_PIXELS // 10**6} MP limit ({exc})"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return None, f"unreadable image ({type(exc).__name__}: {exc})"
    if w <= 0 or h <= 0:
        return (w, h), f"image has size {w}x{h}"
    return (w, h), None


def check_image_file(path: str) -> Optional[str]:
    """Why the image file ``path`` is unusable (see :func:`inspect_image`), or None."""
    return inspect_image(path)[1]


def decode_problem(path: str) -> Optional[str]:
    """Decode ``path`` fully (a JPEG at 1/8 scale, which still reads all its compressed data) and
    return why it fails, or None. About 1-3 ms per photo: for test sets, where a sample that
    fails later cannot be replaced without scoring another hand twice.

    Catches the damage libjpeg reports only as "Corrupt JPEG data" on stderr (without a file name)
    while OpenCV returns a partly grey image.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
            im.load()
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error ...
        return f"the image does not decode cleanly ({type(exc).__name__}: {exc})"
    return None


def is_jpeg_path(path: str) -> bool:
    """True for a JPEG file name (the formats OpenCV can decode at 1/2, 1/4, 1/8 size cheaply)."""
    return path.lower().endswith(_JPEG_EXT)
