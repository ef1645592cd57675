"""Procedural hand images: one posed 3D hand, projected and painted over a cluttered scene.

``render_sample(seed, split, index)`` draws one image from its own random stream (seeded by
``(seed, split, index)``), so any worker renders any image identically.

Geometry follows the project's one coordinate convention (``data/transforms.py``): pixel
centres at integer coordinates. OpenCV's drawing functions with ``shift`` fractional bits use
the same convention, so a keypoint at (x, y) lies where the drawn joint is.

Painting (all vectorised OpenCV calls, a few dozen per image, no per-pixel Python):
background (gradient / smooth noise / stripes) + clutter shapes, text and skin-coloured
distractors; a drop shadow; the hand's primitives (forearm, palm slab, thumb web, 15 tapered
finger segments) painted back to front by depth, each with a dark rim, a Lambert shade from a
random light, a highlight towards the light, palmar/dorsal skin tones, nails and palm creases;
a light blur of the hand layer for soft shading; occluders over the hand; blur, noise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple

import cv2
import numpy as np

from .kinematics import NUM_JOINTS, Hand3D, forward_kinematics, sample_pose, sample_rotation, sample_shape

RENDER_VERSION = 1  # bump when the images change for a given seed
SPLITS = {"train": 0, "test": 1}
MIN_SIDE, MAX_SIDE = 160, 400  # image sides in pixels

_SHIFT = 4                      # fractional bits of the sub-pixel drawing coordinates
_ONE = float(1 << _SHIFT)
_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 16, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 16, endpoint=False))], axis=1)
# Skin tones (RGB) from light to dark; a hand's tone is interpolated between neighbours.
_SKIN = np.array([[250, 222, 200], [240, 196, 170], [226, 174, 142], [200, 143, 108],
                  [170, 113, 80], [128, 82, 58], [92, 60, 44]], dtype=np.float64)
_PALM_TINT = np.array([238, 186, 170], dtype=np.float64)
_NAIL_TINT = np.array([240, 212, 205], dtype=np.float64)


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


# ----------------------------------------------------------------------------- drawing helpers
def _fx(points: np.ndarray) -> np.ndarray:
    """Pixel-centre coordinates -> int32 fixed point for OpenCV's ``shift`` argument."""
    return np.round(np.asarray(points) * _ONE).astype(np.int32)


def _col(rgb) -> Tuple[float, float, float]:
    """An OpenCV colour tuple; too bright a colour is scaled down (as an exposure would), not
    clipped per channel, so shading keeps the hue. Plain Python: called ~100 times an image."""
    r, g, b = (max(float(c), 0.0) for c in rgb)
    top = max(r, g, b)
    if top > 255.0:
        r, g, b = r * 255.0 / top, g * 255.0 / top, b * 255.0 / top
    return r, g, b


def _capsule_hulls(p0: np.ndarray, p1: np.ndarray, r0: np.ndarray, r1: np.ndarray) -> list:
    """Convex outlines (fixed point) of tapered capsules: hull of two discs, for (N, 2) ends."""
    pts = np.concatenate([p0[:, None] + r0[:, None, None] * _CIRCLE,
                          p1[:, None] + r1[:, None, None] * _CIRCLE], axis=1)
    return [cv2.convexHull(p) for p in _fx(pts)]


def _random_color(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, 3).astype(np.float64)


def _skin_tone(rng: np.random.Generator) -> np.ndarray:
    t = rng.uniform(0, len(_SKIN) - 1)
    i = min(int(t), len(_SKIN) - 2)
    tone = _SKIN[i] + (t - i) * (_SKIN[i + 1] - _SKIN[i])
    return np.clip(tone + rng.normal(0, 6, 3), 0, 255)


# ----------------------------------------------------------------------------- background
def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB: a gradient, smooth colour noise or stripes as the base."""
    kind = rng.random()
    if kind < 0.35 or kind >= 0.8:
        # Gradient or stripes: a 1-D colour profile along a random direction u = x cos a + y sin a,
        # spread over the image by one warpAffine (dst (x, y) samples the profile at u - u_min).
        c0, c1 = _random_color(rng), _random_color(rng)
        a = rng.uniform(0, 2 * np.pi)
        cos, sin = np.cos(a), np.sin(a)
        u_min = min(0.0, (w - 1) * cos) + min(0.0, (h - 1) * sin)
        length = int(np.ceil(abs((w - 1) * cos) + abs((h - 1) * sin))) + 2
        u = np.arange(length, dtype=np.float64)
        t = u / (length - 1) if kind < 0.35 else 0.5 + 0.5 * np.sin(u * (2 * np.pi / rng.uniform(4, 30)))
        profile = (c0 + t[:, None] * (c1 - c0)).astype(np.uint8)[None]
        img = cv2.warpAffine(profile, np.array([[cos, sin, -u_min], [0.0, 0.0, 0.0]]), (w, h),
                             flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    else:
        gh, gw = rng.integers(2, 14, 2)
        grid = rng.integers(0, 256, (gh, gw, 3)).astype(np.uint8)
        img = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:                                   # fine texture (fabric, paper, wood)
        gh, gw = max(2, h // int(rng.integers(2, 6))), max(2, w // int(rng.integers(2, 6)))
        tex = (rng.integers(-40, 41, (gh, gw)) * rng.uniform(0.2, 1.0)).astype(np.int16)
        tex = cv2.resize(tex, (w, h), interpolation=cv2.INTER_LINEAR)
        img = cv2.add(img, cv2.merge([tex, tex, tex]), dtype=cv2.CV_8U)
    return img


def _clutter(rng: np.random.Generator, img: np.ndarray, count: int, skin: np.ndarray, mask=None) -> None:
    """Random shapes, lines, text and skin-coloured blobs drawn in place (``mask`` gets 255)."""
    h, w = img.shape[:2]
    side = min(h, w)
    for _ in range(count):
        kind = rng.random()
        if rng.random() < 0.12:                              # skin-coloured distractor
            color = _skin_tone(rng) if rng.random() < 0.5 else skin * rng.uniform(0.7, 1.2)
        else:
            color = _random_color(rng)
        c = _col(color)
        cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        size = side * rng.uniform(0.04, 0.45)
        aa = cv2.LINE_AA if rng.random() < 0.6 else cv2.LINE_8
        if kind < 0.25:
            ang = rng.uniform(0, 2 * np.pi)
            hw, hh = size * rng.uniform(0.2, 1.0), size * rng.uniform(0.2, 1.0)
            rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
            pts = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]]) @ rot.T + [cx, cy]
            cv2.fillConvexPoly(img, _fx(pts), c, aa, _SHIFT)
            if mask is not None:
                cv2.fillConvexPoly(mask, _fx(pts), 255, aa, _SHIFT)
        elif kind < 0.5:
            axes = (int(size * rng.uniform(0.2, 1.0)) << _SHIFT, int(size * rng.uniform(0.2, 1.0)) << _SHIFT)
            center = (int(cx * _ONE), int(cy * _ONE))
            ang = float(rng.uniform(0, 180))
            cv2.ellipse(img, center, axes, ang, 0, 360, c, -1, aa, _SHIFT)
            if mask is not None:
                cv2.ellipse(mask, center, axes, ang, 0, 360, 255, -1, aa, _SHIFT)
        elif kind < 0.68:
            n = int(rng.integers(3, 7))
            pts = np.stack([cx, cy]) + rng.normal(0, size * 0.6, (n, 2))
            cv2.fillPoly(img, [_fx(pts)], c, aa, _SHIFT)
            if mask is not None:
                cv2.fillPoly(mask, [_fx(pts)], 255, aa, _SHIFT)
        elif kind < 0.85:                                    # sticks, cables, pens, finger-like rods
            ang = rng.uniform(0, 2 * np.pi)
            d = np.array([np.cos(ang), np.sin(ang)]) * size
            r = max(1.0, side * rng.uniform(0.005, 0.04))
            hull = _capsule_hulls(np.array([[cx, cy]]) - d, np.array([[cx, cy]]) + d,
                                  np.array([r]), np.array([r * rng.uniform(0.6, 1.4)]))[0]
            cv2.fillConvexPoly(img, hull, c, aa, _SHIFT)
            if mask is not None:
                cv2.fillConvexPoly(mask, hull, 255, aa, _SHIFT)
        elif mask is None:                                   # text (background only)
            chars = "ABCDEFGHKLMNPRSTUVWXYZ0123456789 "
            text = "".join(chars[i] for i in rng.integers(0, len(chars), int(rng.integers(2, 9))))
            scale = side * rng.uniform(0.002, 0.008)
            cv2.putText(img, text, (int(cx) - int(side * 0.2), int(cy)), int(rng.integers(0, 8)),
                        scale, c, int(rng.integers(1, 4)), aa)


# ----------------------------------------------------------------------------- the hand
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


def _paint_hand(rng: np.random.Generator, hand: Hand3D, to_image, rot: np.ndarray, focal: float,
                dist: float, h: int, w: int, skin: np.ndarray, palm_tone: np.ndarray
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint the hand's primitives back to front. Returns (color (H, W, 3) uint8, mask (H, W)
    uint8 coverage, radius_px (21,))."""
    color = np.zeros((h, w, 3), np.uint8)
    mask = np.zeros((h, w), np.uint8)
    view = np.array([0.0, 0.0, -1.0])                        # towards the camera
    light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), -rng.uniform(0.3, 1.5)])
    light /= np.linalg.norm(light)
    light2d = light[:2] / max(np.linalg.norm(light[:2]), 1e-6)
    ambient = rng.uniform(0.4, 0.7)
    diffuse = rng.uniform(0.25, 0.5)
    rim = rng.uniform(0.45, 0.7)                             # edge darkening factor

    # --- finger segments: 5 fingers x 3 segments between the 4 finger points -------------
    fingers = hand.joints[1:].reshape(5, 4, 3)
    starts, ends = fingers[:, :3].reshape(15, 3), fingers[:, 1:].copy()
    # The rounded end's centre lies 0.4 radius short of the fingertip keypoint, so the keypoint
    # is 0.6 radius inside the drawn end (annotators click just inside the tip).
    ends[:, 2] -= 0.4 * hand.radii[:, 3:4] * hand.frames[:, 2, :, 0]
    ends = ends.reshape(15, 3)
    r_start, r_end = hand.radii[:, :3].reshape(15), hand.radii[:, 1:].reshape(15)
    p0, z0 = to_image(starts)
    p1, z1 = to_image(ends)
    rp0, rp1 = r_start * focal / z0, r_end * focal / z1
    axis = (hand.frames[:, :, :, 0].reshape(15, 3)) @ rot.T  # bone directions, camera frame
    bend = (hand.frames[:, :, :, 1].reshape(15, 3)) @ rot.T  # palmar directions, camera frame
    # Cylinder shading: the normal of the visible side, turned towards the camera.
    n_vis = view - (axis @ view)[:, None] * axis
    n_vis /= np.maximum(np.linalg.norm(n_vis, axis=1, keepdims=True), 1e-6)
    shade = ambient + diffuse * np.maximum(n_vis @ light, 0.0)
    palmar = np.clip(0.5 + 0.9 * (bend @ view), 0.0, 1.0)
    tones = skin + palmar[:, None] * (palm_tone - skin)
    seg_rgb = tones * shade[:, None]
    hulls_out = _capsule_hulls(p0, p1, rp0 + 0.7 + 0.06 * rp0, rp1 + 0.7 + 0.06 * rp1)
    hulls_in = _capsule_hulls(p0, p1, rp0, rp1)
    hl_off = light2d * 0.3
    hulls_hl = _capsule_hulls(p0 + hl_off * rp0[:, None], p1 + hl_off * rp1[:, None], rp0 * 0.45, rp1 * 0.45)

    prims = []                                               # (depth, kind, index)
    for i in range(15):
        prims.append((0.5 * (z0[i] + z1[i]), "seg", i))

    # --- palm slab and thumb web ------------------------------------------------------------
    palm_uv, palm_z = to_image(hand.palm)
    palm_hull = cv2.convexHull(_fx(palm_uv))
    palm_n = rot @ hand.palm_normal
    palm_front = float(palm_n @ view)
    palm_vis_n = palm_n if palm_front >= 0 else -palm_n
    palm_shade = ambient + diffuse * max(float(palm_vis_n @ light), 0.0)
    palm_rgb = (skin + np.clip(0.5 + 0.9 * palm_front, 0, 1) * (palm_tone - skin)) * palm_shade
    prims.append((float(palm_z.mean()), "palm", 0))
    j = hand.joints
    web3 = np.stack([j[1], j[2], j[2] + 0.4 * (j[3] - j[2]), j[5] + 0.3 * (j[1] - j[5])])
    web_n = hand.palm_normal * 5.0 * (hand.radii[0, 0] / 13.0)
    web_uv, web_z = to_image(np.concatenate([web3 + web_n, web3 - web_n]))
    web_hull = cv2.convexHull(_fx(web_uv))
    prims.append((float(web_z.mean()), "web", 0))

    # Forearm (with a sleeve sometimes) is painted first: it is always behind the hand.
    fa = hand.forearm.copy()
    fa_uv, fa_z = to_image(fa)
    if fa_z[1] < 0.35 * dist:                                # pointing at the camera: shorten it
        t = (fa_z[0] - 0.35 * dist) / max(fa_z[0] - fa_z[1], 1e-6)
        fa[1] = fa[0] + np.clip(t, 0.05, 1.0) * (fa[1] - fa[0])
        fa_uv, fa_z = to_image(fa)
    fa_r = hand.forearm_radius * focal / fa_z
    fa_axis = rot @ (fa[1] - fa[0])
    fa_axis /= max(np.linalg.norm(fa_axis), 1e-6)
    n_fa = view - (fa_axis @ view) * fa_axis
    n_fa /= max(np.linalg.norm(n_fa), 1e-6)
    fa_shade = ambient + diffuse * max(float(n_fa @ light), 0.0)
    sleeve = rng.random() < 0.5
    sleeve_rgb = _random_color(rng) * fa_shade
    sleeve_at = rng.uniform(0.15, 0.5)

    lw_palm = max(1, int(round(1.4 + 0.1 * float(np.median(rp0)))))

    def paint(poly, rgb, thick):
        """A polygon with a dark rim: the rim line first, the fill over its inner half."""
        cv2.polylines(color, [poly], True, _col(rgb * rim), thick, cv2.LINE_AA, _SHIFT)
        cv2.polylines(mask, [poly], True, 255, thick, cv2.LINE_AA, _SHIFT)
        cv2.fillConvexPoly(color, poly, _col(rgb), cv2.LINE_AA, _SHIFT)
        cv2.fillConvexPoly(mask, poly, 255, cv2.LINE_AA, _SHIFT)

    # forearm
    fa_rgb = (skin + 0.3 * (palm_tone - skin) * max(palm_front, 0)) * fa_shade
    for hull in _capsule_hulls(fa_uv[:1], fa_uv[1:], fa_r[:1] + 1.0, fa_r[1:] + 1.0):
        cv2.fillConvexPoly(color, hull, _col(fa_rgb * rim), cv2.LINE_AA, _SHIFT)
        cv2.fillConvexPoly(mask, hull, 255, cv2.LINE_AA, _SHIFT)
    for hull in _capsule_hulls(fa_uv[:1], fa_uv[1:], fa_r[:1], fa_r[1:]):
        cv2.fillConvexPoly(color, hull, _col(fa_rgb), cv2.LINE_AA, _SHIFT)
    if sleeve:
        s0 = fa_uv[0] + sleeve_at * (fa_uv[1] - fa_uv[0])
        rs = fa_r * 1.25
        for hull in _capsule_hulls(s0[None], fa_uv[1:], rs[:1], rs[1:]):
            cv2.fillConvexPoly(color, hull, _col(sleeve_rgb), cv2.LINE_AA, _SHIFT)
            cv2.fillConvexPoly(mask, hull, 255, cv2.LINE_AA, _SHIFT)

    prims.sort(key=lambda p: -p[0])                          # far first
    for _, kind, i in prims:
        if kind == "seg":
            rgb = seg_rgb[i]
            cv2.fillConvexPoly(color, hulls_out[i], _col(rgb * rim), cv2.LINE_AA, _SHIFT)
            cv2.fillConvexPoly(mask, hulls_out[i], 255, cv2.LINE_AA, _SHIFT)
            cv2.fillConvexPoly(color, hulls_in[i], _col(rgb), cv2.LINE_AA, _SHIFT)
            cv2.fillConvexPoly(color, hulls_hl[i], _col(rgb * 1.12), cv2.LINE_AA, _SHIFT)
            f, k = divmod(i, 3)
            dorsal = -float(bend[i] @ view)
            if k == 2 and dorsal > 0.2:                      # nail on the back of the distal segment
                fr = hand.frames[f, 2]
                tip, r_tip, seg_len = hand.joints[4 + 4 * f], hand.radii[f, 3], \
                    np.linalg.norm(hand.joints[4 + 4 * f] - hand.joints[3 + 4 * f])
                n3 = np.stack([tip - (0.2 * seg_len + 0.55 * r_tip) * fr[:, 0],
                               tip - 0.6 * seg_len * fr[:, 0]]) - 0.75 * r_tip * fr[:, 1]
                n_uv, n_z = to_image(n3)
                nr = 0.55 * r_tip * focal / n_z * min(1.0, 0.4 + dorsal)
                nail_rgb = (0.55 * tones[i] + 0.45 * _NAIL_TINT) * shade[i]
                for hull in _capsule_hulls(n_uv[:1], n_uv[1:], nr[:1], nr[1:]):
                    cv2.fillConvexPoly(color, hull, _col(nail_rgb), cv2.LINE_AA, _SHIFT)
        elif kind == "palm":
            paint(palm_hull, palm_rgb, lw_palm)
            # A soft highlight towards the light: nested, slightly brighter copies of the face.
            face = palm_uv[:len(palm_uv) // 2]
            mid = face.mean(0) + light2d * 0.06 * np.ptp(face, axis=0).max()
            for step, scale in enumerate((0.8, 0.6, 0.4)):
                cv2.fillConvexPoly(color, cv2.convexHull(_fx((face - face.mean(0)) * scale + mid)),
                                   _col(palm_rgb * (1.0 + 0.03 * (step + 1))),
                                   cv2.LINE_AA, _SHIFT)
            if palm_front > 0.35:                            # creases of the palm
                lines = [_fx(to_image(c)[0]) for c in hand.creases]
                cv2.polylines(color, lines, False, _col(palm_rgb * 0.72), 1, cv2.LINE_AA, _SHIFT)
        else:
            paint(web_hull, palm_rgb * 0.97, lw_palm)

    radius_px = np.concatenate([[float(np.median(fa_r[:1]))], np.c_[rp0.reshape(5, 3)[:, :1],
                                                                   rp1.reshape(5, 3)].reshape(20)])
    return color, mask, radius_px


def _occlude(rng: np.random.Generator, img: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Draw 0-2 occluders over the hand's keypoint box; returns their (H, W) uint8 mask."""
    h, w = img.shape[:2]
    occ = np.zeros((h, w), np.uint8)
    n = int(rng.choice([0, 1, 2], p=[0.62, 0.28, 0.10]))
    if n == 0:
        return occ
    x0, y0, x1, y1 = box
    size = max(x1 - x0, y1 - y0)
    sub = np.zeros_like(img)
    for _ in range(n):
        # Moderate occluders (an eighth to a third of the hand's size) centred over the hand.
        cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
        s = size * rng.uniform(0.12, 0.35)
        kind = rng.random()
        c = _col(_random_color(rng))
        if kind < 0.35:
            ang = rng.uniform(0, 2 * np.pi)
            d = np.array([np.cos(ang), np.sin(ang)]) * s * rng.uniform(1.0, 3.0)
            r = s * rng.uniform(0.08, 0.25)
            poly = _capsule_hulls(np.array([[cx, cy]]) - d, np.array([[cx, cy]]) + d, np.array([r]), np.array([r]))[0]
        elif kind < 0.7:
            ang = rng.uniform(0, 2 * np.pi)
            hw, hh = s * rng.uniform(0.3, 1.0), s * rng.uniform(0.3, 1.0)
            rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
            poly = _fx(np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]]) @ rot.T + [cx, cy])
        else:
            poly = cv2.convexHull(_fx(np.array([cx, cy]) + rng.normal(0, s * 0.5, (6, 2))))
        cv2.fillConvexPoly(sub, poly, c, cv2.LINE_AA, _SHIFT)
        cv2.fillConvexPoly(occ, poly, 255, cv2.LINE_AA, _SHIFT)
    if rng.random() < 0.5:                                   # textured occluder
        gh, gw = rng.integers(2, 10, 2)
        tex = cv2.resize(rng.integers(0, 256, (gh, gw, 3)).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
        sub = cv2.addWeighted(sub, 0.6, tex, 0.4, 0.0)
    m = occ > 0
    a = (occ[m].astype(np.float32) / 255.0)[:, None]
    img[m] = (img[m] * (1 - a) + sub[m] * a).astype(np.uint8)
    return occ


def _degrade(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Camera effects: defocus / motion blur and sensor noise."""
    r = rng.random()
    if r < 0.25:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.3))
    elif r < 0.35:
        k = int(rng.integers(3, 8))
        kernel = np.zeros((k, k), np.float32)
        ang = rng.uniform(0, np.pi)
        c = (k - 1) / 2
        d = np.array([np.cos(ang), np.sin(ang)]) * c
        cv2.line(kernel, (int(round((c - d[0]) * 16)), int(round((c - d[1]) * 16))),
                 (int(round((c + d[0]) * 16)), int(round((c + d[1]) * 16))), 1.0, 1, cv2.LINE_AA, 4)
        img = cv2.filter2D(img, -1, kernel / kernel.sum())
    if rng.random() < 0.6:
        noise = np.empty(img.shape, np.float32)
        cv2.setRNGSeed(int(rng.integers(0, 2 ** 31 - 1)))
        cv2.randn(noise, 0.0, float(rng.uniform(1.0, 8.0)))
        img = cv2.add(img, noise, dtype=cv2.CV_8U)
    return img


def render_sample(seed: int, split: str, index: int) -> Sample:
    """Render image ``index`` of ``split`` for ``seed`` (deterministic; see ``Sample``)."""
    rng = sample_rng(seed, split, index)
    w, h = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, 2))
    if max(w, h) > 1.8 * min(w, h):                          # keep aspect ratios ordinary
        w = h = min(w, h) + (max(w, h) - min(w, h)) // 3
    skin = _skin_tone(rng)
    palm_tone = skin + 0.35 * (_PALM_TINT - skin) + rng.normal(0, 3, 3)

    shape, pose = sample_shape(rng), sample_pose(rng)
    hand = forward_kinematics(shape, pose)
    to_image, rot, focal, dist = _place_hand(rng, hand, w, h)

    img = _background(rng, h, w)
    _clutter(rng, img, int(rng.integers(2, 25)), skin)
    if rng.random() < 0.7:                                   # photos are rarely this colourful
        grey = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        sat = rng.uniform(0.15, 0.8)
        img = cv2.addWeighted(img, sat, grey, 1.0 - sat, 0.0)
    if rng.random() < 0.4:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 2.0))  # defocused scene
    color, mask, radius_px = _paint_hand(rng, hand, to_image, rot, focal, dist, h, w, skin, palm_tone)

    if rng.random() < 0.5:                                   # drop shadow of the hand
        dx, dy = (float(v) for v in rng.integers(-12, 13, 2))
        sh = cv2.warpAffine(mask, np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]]), (w, h))
        sh = cv2.GaussianBlur(sh, (0, 0), rng.uniform(2.0, 8.0))
        # img * (1 - k * shadow / 255), in OpenCV's saturating uint8 arithmetic.
        img = cv2.subtract(img, cv2.multiply(img, cv2.merge([sh, sh, sh]), scale=rng.uniform(0.2, 0.5) / 255.0))
    # Soft shading: blur the hand's colours a little (edges also darken where they meet black).
    # Only the hand's bounding box (plus the kernel radius) changes, so work there.
    sigma = float(np.clip(0.25 * np.median(radius_px[1:]), 0.5, 3.0))
    x, y, bw, bh = cv2.boundingRect(mask)
    if bw and bh:
        pad = int(np.ceil(4 * sigma)) + 1
        roi = (slice(max(y - pad, 0), min(y + bh + pad, h)), slice(max(x - pad, 0), min(x + bw + pad, w)))
        soft = cv2.GaussianBlur(color[roi], (0, 0), sigma)
        a = mask[roi].astype(np.float32)[..., None] * np.float32(1.0 / 255.0)
        img[roi] = (img[roi] * (1.0 - a) + soft * a + 0.5).astype(np.uint8)

    kp, _ = to_image(hand.joints)
    inside = ((kp[:, 0] >= -0.5) & (kp[:, 0] <= w - 0.5) & (kp[:, 1] >= -0.5) & (kp[:, 1] <= h - 0.5))
    lo, hi = kp[inside].min(0), kp[inside].max(0)
    occ = _occlude(rng, img, np.r_[lo, hi])
    img = _degrade(rng, img)

    px = np.clip(np.round(kp).astype(int), 0, [w - 1, h - 1])
    occluded = (occ[px[:, 1], px[:, 0]] > 0) & inside
    keypoints = np.zeros((NUM_JOINTS, 3))
    keypoints[inside, :2] = kp[inside]
    keypoints[inside, 2] = 1.0
    # Detector-like box: the labelled keypoints' extent plus a random margin per side, in edge
    # coordinates (pixel-centre coordinate + 0.5), clipped to the image.
    margin = (hi - lo).max() * rng.uniform(0.04, 0.15, 4)
    x0, y0 = np.maximum(lo - margin[:2] + 0.5, 0.0)
    x1, y1 = np.minimum(hi + margin[2:] + 0.5, [w, h])
    bbox = np.array([x0, y0, x1 - x0, y1 - y0])
    quality = int(rng.integers(45, 96))
    meta = {"skin_rgb": skin, "palm_rgb": palm_tone, "occluded": occluded, "radius_px": radius_px,
            "projected": kp, "jpeg_quality": quality}
    return Sample(image=img, keypoints=keypoints, bbox=bbox, meta=meta)
