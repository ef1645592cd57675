"""Procedural hand images: one posed 3D hand, projected and painted over a cluttered scene.

``render_sample(seed, split, index)`` draws one image from its own random stream (seeded by
``(seed, split, index)``), so any worker renders any image identically.

Geometry follows the project's one coordinate convention (``data/transforms.py``): pixel
centres at integer coordinates (see ``draw.py``), so a keypoint at (x, y) lies where the drawn
joint is.

The steps of an image, in the order they draw from its stream: size and skin tones; the hand's
shape and pose (``kinematics``); the camera (:func:`_place_hand`); the scene behind the hand
(``scene.backdrop``: background, clutter, text, skin-coloured distractors); the hand
(``paint.paint_hand``); a drop shadow; the hand layer blended in, lightly blurred for soft
shading; occluders over the hand and the camera's blur and noise (``scene``); the annotation's
box margin and JPEG quality. All vectorised OpenCV calls, a few dozen per image.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple

import cv2
import numpy as np

from .draw import skin_tone
from .kinematics import NUM_JOINTS, Hand3D, forward_kinematics, sample_pose, sample_rotation, sample_shape
from .paint import paint_hand
from .scene import backdrop, degrade, occlude

RENDER_VERSION = 1  # bump when the images change for a given seed
SPLITS = {"train": 0, "test": 1}
MIN_SIDE, MAX_SIDE = 160, 400  # image sides in pixels

_PALM_TINT = np.array([238, 186, 170], dtype=np.float64)


@dataclass
class Sample:
    """One rendered image and its annotation.

    image: (H, W, 3) uint8 RGB. keypoints: (21, 3) float64 (x, y, v) in pixels of this image,
    v = 1 labelled (also when hidden by the hand itself), v = 0 and x = y = 0 outside the image.
    bbox: (4,) [x, y, w, h], COCO edges (the box covers [x, x + w]). meta: renderer facts for
    tests and previews: ``skin_rgb`` (3,) dorsal tone, ``palm_rgb`` (3,) palmar tone,
    ``occluded`` (21,) bool (an occluder covers the keypoint's pixel), ``radius_px`` (21,) finger
    radius at each keypoint, ``projected`` (21, 2) all keypoints' projections (also those outside
    the image), ``jpeg_quality`` int (of the JPEG the writer saves).
    """

    image: np.ndarray
    keypoints: np.ndarray
    bbox: np.ndarray
    meta: Dict = field(default_factory=dict)


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The image's own random stream: independent of which worker renders it or in what order."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), SPLITS[split], int(index)])))


# ----------------------------------------------------------------------------- the camera
def _place_hand(rng: np.random.Generator, hand: Hand3D, w: int, h: int):
    """Choose the camera: rotation, distance, focal length and principal point.

    Returns ``to_image`` (projects (N, 3) hand-frame points (mm) to (N, 2) pixels and (N,) camera
    depths), ``rot`` (3, 3) hand -> camera rotation (with the mirror for left hands), the focal
    length (pixels) and the camera distance (mm).
    """
    rot = sample_rotation(rng)
    if rng.random() < 0.5:                                   # a left hand: mirror the right one
        rot = rot @ np.diag([-1.0, 1.0, 1.0])
    centre = hand.joints.mean(axis=0)
    hand_len = float(np.linalg.norm(hand.joints[12]))       # wrist to middle fingertip (mm)
    dist = hand_len * rng.uniform(1.8, 7.0)                  # strong to mild perspective

    def to_cam(p: np.ndarray) -> np.ndarray:
        return (p - centre) @ rot.T + np.array([0.0, 0.0, dist])

    cam = to_cam(hand.joints)
    uv1 = cam[:, :2] / cam[:, 2:]
    lo, hi = uv1.min(0), uv1.max(0)
    ext = max(float((hi - lo).max()), 1e-6)
    crop = rng.random() < 0.2                                # partly outside the image
    target = min(w, h) * (rng.uniform(0.8, 1.4) if crop else rng.uniform(0.25, 0.9))
    focal = target / ext
    span = (hi - lo) * focal
    for _ in range(10):
        if crop:
            pos = rng.uniform([0.0, 0.0], [w - 1.0, h - 1.0])
        else:
            margin = 0.05 * min(w, h)
            lo_c = span / 2 + margin
            hi_c = np.array([w - 1.0, h - 1.0]) - span / 2 - margin
            pos = np.where(lo_c < hi_c, rng.uniform(np.minimum(lo_c, hi_c), np.maximum(lo_c, hi_c)),
                           np.array([w - 1.0, h - 1.0]) / 2)
        offset = pos - (lo + hi) / 2 * focal
        kp = uv1 * focal + offset
        inside = ((kp >= -0.5) & (kp <= np.array([w, h]) - 0.5)).all(1)
        if inside.sum() >= 12:
            break
    else:                                                    # fall back to a centred hand
        offset = np.array([w - 1.0, h - 1.0]) / 2 - (lo + hi) / 2 * focal

    def to_image(p: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        c = to_cam(p)
        z = np.maximum(c[:, 2], 1e-3 * dist)
        return c[:, :2] / z[:, None] * focal + offset, z

    return to_image, rot, focal, dist


# ----------------------------------------------------------------------------- composition
def _image_size(rng: np.random.Generator) -> Tuple[int, int]:
    """(width, height) in [MIN_SIDE, MAX_SIDE] pixels, aspect ratio at most 1.8."""
    w, h = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, 2))
    if max(w, h) > 1.8 * min(w, h):                          # keep aspect ratios ordinary
        w = h = min(w, h) + (max(w, h) - min(w, h)) // 3
    return w, h


def _drop_shadow(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``img`` darkened by the hand's blurred, shifted ``mask`` (half of the images)."""
    if rng.random() >= 0.5:
        return img
    h, w = mask.shape
    dx, dy = (float(v) for v in rng.integers(-12, 13, 2))
    sh = cv2.warpAffine(mask, np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]]), (w, h))
    sh = cv2.GaussianBlur(sh, (0, 0), rng.uniform(2.0, 8.0))
    # img * (1 - k * shadow / 255), in OpenCV's saturating uint8 arithmetic.
    return cv2.subtract(img, cv2.multiply(img, cv2.merge([sh, sh, sh]), scale=rng.uniform(0.2, 0.5) / 255.0))


def _blend_hand(img: np.ndarray, color: np.ndarray, mask: np.ndarray, radius_px: np.ndarray) -> None:
    """Blend the hand layer into ``img`` in place by its coverage ``mask``, its colours blurred a
    little for soft shading (edges also darken where they meet black)."""
    h, w = mask.shape
    sigma = float(np.clip(0.25 * np.median(radius_px[1:]), 0.5, 3.0))
    x, y, bw, bh = cv2.boundingRect(mask)
    if bw and bh:  # only the hand's bounding box (plus the kernel radius) changes, so work there
        pad = int(np.ceil(4 * sigma)) + 1
        roi = (slice(max(y - pad, 0), min(y + bh + pad, h)), slice(max(x - pad, 0), min(x + bw + pad, w)))
        soft = cv2.GaussianBlur(color[roi], (0, 0), sigma)
        a = mask[roi].astype(np.float32)[..., None] * np.float32(1.0 / 255.0)
        img[roi] = (img[roi] * (1.0 - a) + soft * a + 0.5).astype(np.uint8)


def _detector_box(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, w: int, h: int) -> np.ndarray:
    """(4,) [x, y, w, h] like a detector's: the labelled keypoints' extent ``lo``..``hi`` (pixel
    centres) plus a random margin per side, in edge coordinates (centre + 0.5), clipped to the image."""
    margin = (hi - lo).max() * rng.uniform(0.04, 0.15, 4)
    x0, y0 = np.maximum(lo - margin[:2] + 0.5, 0.0)
    x1, y1 = np.minimum(hi + margin[2:] + 0.5, [w, h])
    return np.array([x0, y0, x1 - x0, y1 - y0])


def render_sample(seed: int, split: str, index: int) -> Sample:
    """Render image ``index`` of ``split`` for ``seed`` (deterministic; see ``Sample``)."""
    rng = sample_rng(seed, split, index)
    w, h = _image_size(rng)
    skin = skin_tone(rng)
    palm_tone = skin + 0.35 * (_PALM_TINT - skin) + rng.normal(0, 3, 3)

    shape, pose = sample_shape(rng), sample_pose(rng)
    hand = forward_kinematics(shape, pose)
    to_image, rot, focal, dist = _place_hand(rng, hand, w, h)

    img = backdrop(rng, h, w, skin)
    color, mask, radius_px = paint_hand(rng, hand, to_image, rot, focal, dist, h, w, skin, palm_tone)
    img = _drop_shadow(rng, img, mask)
    _blend_hand(img, color, mask, radius_px)

    kp, _ = to_image(hand.joints)
    inside = ((kp[:, 0] >= -0.5) & (kp[:, 0] <= w - 0.5) & (kp[:, 1] >= -0.5) & (kp[:, 1] <= h - 0.5))
    lo, hi = kp[inside].min(0), kp[inside].max(0)
    occ = occlude(rng, img, np.r_[lo, hi])
    img = degrade(rng, img)

    px = np.clip(np.round(kp).astype(int), 0, [w - 1, h - 1])
    keypoints = np.zeros((NUM_JOINTS, 3))
    keypoints[inside, :2] = kp[inside]
    keypoints[inside, 2] = 1.0
    bbox = _detector_box(rng, lo, hi, w, h)
    meta = {"skin_rgb": skin, "palm_rgb": palm_tone, "occluded": (occ[px[:, 1], px[:, 0]] > 0) & inside,
            "radius_px": radius_px, "projected": kp, "jpeg_quality": int(rng.integers(45, 96))}
    return Sample(image=img, keypoints=keypoints, bbox=bbox, meta=meta)
