"""Painting the posed hand: its primitives, lit and shaded, into a colour layer and a coverage mask.

Primitives: the forearm (sometimes in a sleeve), the palm slab, the thumb web and 15 tapered
finger segments. The forearm is painted first (it is always behind the hand); the others back to
front by depth, each with a dark rim, a Lambert shade from a random light, a highlight towards the
light and a tone between the dorsal and palmar skin; nails on the back of the fingertips and
creases on a palm that faces the camera. All vectorised OpenCV calls, no per-pixel Python.

Random draws, in order: the light (:func:`_draw_lighting`), then the sleeve (:func:`_paint_forearm`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

import cv2
import numpy as np

from .draw import SHIFT, capsule_hulls, col, fx, random_color
from .kinematics import Hand3D

_NAIL_TINT = np.array([240, 212, 205], dtype=np.float64)
_VIEW = np.array([0.0, 0.0, -1.0])                          # towards the camera

#: (N, 3) hand-frame points (mm) -> ((N, 2) pixels, (N,) camera depths); see ``render._place_hand``.
ToImage = Callable[[np.ndarray], Tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class _Lighting:
    """One directional light: ``light`` (3,) unit vector in the camera frame, ``light2d`` (2,) its
    image-plane direction; shade = ``ambient + diffuse * max(n . light, 0)``; rims are the fill
    colour times ``rim``."""

    light: np.ndarray
    light2d: np.ndarray
    ambient: float
    diffuse: float
    rim: float


def _draw_lighting(rng: np.random.Generator) -> _Lighting:
    light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), -rng.uniform(0.3, 1.5)])
    light /= np.linalg.norm(light)
    light2d = light[:2] / max(np.linalg.norm(light[:2]), 1e-6)
    ambient = rng.uniform(0.4, 0.7)
    diffuse = rng.uniform(0.25, 0.5)
    rim = rng.uniform(0.45, 0.7)                             # edge darkening factor
    return _Lighting(light, light2d, ambient, diffuse, rim)


class _Layer:
    """The hand's colour (H, W, 3) uint8 and coverage mask (H, W) uint8, painted together."""

    def __init__(self, h: int, w: int):
        self.color = np.zeros((h, w, 3), np.uint8)
        self.mask = np.zeros((h, w), np.uint8)

    def fill(self, poly: np.ndarray, rgb, cover: bool = True) -> None:
        """A convex polygon; ``cover=False`` for details inside painted skin (the mask has them)."""
        cv2.fillConvexPoly(self.color, poly, col(rgb), cv2.LINE_AA, SHIFT)
        if cover:
            cv2.fillConvexPoly(self.mask, poly, 255, cv2.LINE_AA, SHIFT)

    def rimmed(self, poly: np.ndarray, rgb: np.ndarray, rim: float, thick: int) -> None:
        """A polygon with a dark rim: the rim line first, the fill over its inner half."""
        cv2.polylines(self.color, [poly], True, col(rgb * rim), thick, cv2.LINE_AA, SHIFT)
        cv2.polylines(self.mask, [poly], True, 255, thick, cv2.LINE_AA, SHIFT)
        self.fill(poly, rgb)


@dataclass
class _Fingers:
    """The 15 finger segments (5 fingers x 3, base to tip) in image space: ends ``p0``/``p1`` (15, 2)
    pixels, radii ``rp0``/``rp1`` (15,) pixels, depths ``z0``/``z1`` (15,) mm, palmar directions
    ``bend`` (15, 3) camera frame, ``tones``/``shade``/``rgb`` their colours and the outlines:
    ``outer`` (with the rim), ``inner`` (the fill), ``highlight``."""

    p0: np.ndarray
    p1: np.ndarray
    rp0: np.ndarray
    rp1: np.ndarray
    z0: np.ndarray
    z1: np.ndarray
    bend: np.ndarray
    tones: np.ndarray
    shade: np.ndarray
    rgb: np.ndarray
    outer: list
    inner: list
    highlight: list


def _fingers(hand: Hand3D, to_image: ToImage, rot: np.ndarray, focal: float, skin: np.ndarray,
             palm_tone: np.ndarray, lit: _Lighting) -> _Fingers:
    """Project, shade and outline the 15 tapered segments between the 4 points of each finger."""
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
    n_vis = _VIEW - (axis @ _VIEW)[:, None] * axis
    n_vis /= np.maximum(np.linalg.norm(n_vis, axis=1, keepdims=True), 1e-6)
    shade = lit.ambient + lit.diffuse * np.maximum(n_vis @ lit.light, 0.0)
    palmar = np.clip(0.5 + 0.9 * (bend @ _VIEW), 0.0, 1.0)
    tones = skin + palmar[:, None] * (palm_tone - skin)
    hl_off = lit.light2d * 0.3
    return _Fingers(
        p0=p0, p1=p1, rp0=rp0, rp1=rp1, z0=z0, z1=z1, bend=bend, tones=tones, shade=shade,
        rgb=tones * shade[:, None],
        outer=capsule_hulls(p0, p1, rp0 + 0.7 + 0.06 * rp0, rp1 + 0.7 + 0.06 * rp1),
        inner=capsule_hulls(p0, p1, rp0, rp1),
        highlight=capsule_hulls(p0 + hl_off * rp0[:, None], p1 + hl_off * rp1[:, None], rp0 * 0.45, rp1 * 0.45))


def _paint_segment(layer: _Layer, seg: _Fingers, i: int, hand: Hand3D, to_image: ToImage, focal: float,
                   lit: _Lighting) -> None:
    """Segment ``i``: rim, fill, highlight, and a nail when it is a fingertip seen from the back."""
    rgb = seg.rgb[i]
    layer.fill(seg.outer[i], rgb * lit.rim)
    layer.fill(seg.inner[i], rgb, cover=False)
    layer.fill(seg.highlight[i], rgb * 1.12, cover=False)
    f, k = divmod(i, 3)
    dorsal = -float(seg.bend[i] @ _VIEW)
    if k == 2 and dorsal > 0.2:                              # nail on the back of the distal segment
        fr = hand.frames[f, 2]
        tip, r_tip, seg_len = hand.joints[4 + 4 * f], hand.radii[f, 3], \
            np.linalg.norm(hand.joints[4 + 4 * f] - hand.joints[3 + 4 * f])
        n3 = np.stack([tip - (0.2 * seg_len + 0.55 * r_tip) * fr[:, 0],
                       tip - 0.6 * seg_len * fr[:, 0]]) - 0.75 * r_tip * fr[:, 1]
        n_uv, n_z = to_image(n3)
        nr = 0.55 * r_tip * focal / n_z * min(1.0, 0.4 + dorsal)
        nail_rgb = (0.55 * seg.tones[i] + 0.45 * _NAIL_TINT) * seg.shade[i]
        for hull in capsule_hulls(n_uv[:1], n_uv[1:], nr[:1], nr[1:]):
            layer.fill(hull, nail_rgb, cover=False)


@dataclass
class _Palm:
    """The palm slab: ``uv`` (N, 2) its projected corners (front face first), ``z`` (N,) depths,
    ``hull`` its outline, ``front`` how much the palm faces the camera (-1..1), ``rgb`` its colour."""

    uv: np.ndarray
    z: np.ndarray
    hull: np.ndarray
    front: float
    rgb: np.ndarray


def _palm(hand: Hand3D, to_image: ToImage, rot: np.ndarray, skin: np.ndarray, palm_tone: np.ndarray,
          lit: _Lighting) -> _Palm:
    palm_uv, palm_z = to_image(hand.palm)
    palm_n = rot @ hand.palm_normal
    palm_front = float(palm_n @ _VIEW)
    palm_vis_n = palm_n if palm_front >= 0 else -palm_n
    palm_shade = lit.ambient + lit.diffuse * max(float(palm_vis_n @ lit.light), 0.0)
    palm_rgb = (skin + np.clip(0.5 + 0.9 * palm_front, 0, 1) * (palm_tone - skin)) * palm_shade
    return _Palm(palm_uv, palm_z, cv2.convexHull(fx(palm_uv)), palm_front, palm_rgb)


def _paint_palm(layer: _Layer, palm: _Palm, hand: Hand3D, to_image: ToImage, lit: _Lighting, thick: int) -> None:
    """The palm with its rim, a soft highlight towards the light and, facing the camera, its creases."""
    layer.rimmed(palm.hull, palm.rgb, lit.rim, thick)
    # The highlight: nested, slightly brighter copies of the face.
    face = palm.uv[:len(palm.uv) // 2]
    mid = face.mean(0) + lit.light2d * 0.06 * np.ptp(face, axis=0).max()
    for step, scale in enumerate((0.8, 0.6, 0.4)):
        layer.fill(cv2.convexHull(fx((face - face.mean(0)) * scale + mid)), palm.rgb * (1.0 + 0.03 * (step + 1)),
                   cover=False)
    if palm.front > 0.35:                                    # creases of the palm
        lines = [fx(to_image(c)[0]) for c in hand.creases]
        cv2.polylines(layer.color, lines, False, col(palm.rgb * 0.72), 1, cv2.LINE_AA, SHIFT)


def _thumb_web(hand: Hand3D, to_image: ToImage) -> Tuple[np.ndarray, float]:
    """The skin between thumb and index base: its outline and its mean depth (mm)."""
    j = hand.joints
    web3 = np.stack([j[1], j[2], j[2] + 0.4 * (j[3] - j[2]), j[5] + 0.3 * (j[1] - j[5])])
    web_n = hand.palm_normal * 5.0 * (hand.radii[0, 0] / 13.0)
    web_uv, web_z = to_image(np.concatenate([web3 + web_n, web3 - web_n]))
    return cv2.convexHull(fx(web_uv)), float(web_z.mean())


def _paint_forearm(rng: np.random.Generator, layer: _Layer, hand: Hand3D, to_image: ToImage, rot: np.ndarray,
                   focal: float, dist: float, skin: np.ndarray, palm_tone: np.ndarray, palm_front: float,
                   lit: _Lighting) -> np.ndarray:
    """The forearm, in a sleeve half of the time; returns its radius (2,) in pixels at both ends."""
    fa = hand.forearm.copy()
    fa_uv, fa_z = to_image(fa)
    if fa_z[1] < 0.35 * dist:                                # pointing at the camera: shorten it
        t = (fa_z[0] - 0.35 * dist) / max(fa_z[0] - fa_z[1], 1e-6)
        fa[1] = fa[0] + np.clip(t, 0.05, 1.0) * (fa[1] - fa[0])
        fa_uv, fa_z = to_image(fa)
    fa_r = hand.forearm_radius * focal / fa_z
    fa_axis = rot @ (fa[1] - fa[0])
    fa_axis /= max(np.linalg.norm(fa_axis), 1e-6)
    n_fa = _VIEW - (fa_axis @ _VIEW) * fa_axis
    n_fa /= max(np.linalg.norm(n_fa), 1e-6)
    fa_shade = lit.ambient + lit.diffuse * max(float(n_fa @ lit.light), 0.0)
    sleeve = rng.random() < 0.5
    sleeve_rgb = random_color(rng) * fa_shade
    sleeve_at = rng.uniform(0.15, 0.5)

    fa_rgb = (skin + 0.3 * (palm_tone - skin) * max(palm_front, 0)) * fa_shade
    for hull in capsule_hulls(fa_uv[:1], fa_uv[1:], fa_r[:1] + 1.0, fa_r[1:] + 1.0):
        layer.fill(hull, fa_rgb * lit.rim)
    for hull in capsule_hulls(fa_uv[:1], fa_uv[1:], fa_r[:1], fa_r[1:]):
        layer.fill(hull, fa_rgb, cover=False)
    if sleeve:
        s0 = fa_uv[0] + sleeve_at * (fa_uv[1] - fa_uv[0])
        rs = fa_r * 1.25
        for hull in capsule_hulls(s0[None], fa_uv[1:], rs[:1], rs[1:]):
            layer.fill(hull, sleeve_rgb)
    return fa_r


def paint_hand(rng: np.random.Generator, hand: Hand3D, to_image: ToImage, rot: np.ndarray, focal: float,
               dist: float, h: int, w: int, skin: np.ndarray, palm_tone: np.ndarray
               ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint the hand seen through ``to_image`` (``rot`` (3, 3) hand -> camera, ``focal`` pixels,
    ``dist`` camera distance mm) with dorsal tone ``skin`` and palmar tone ``palm_tone`` (3,) RGB.

    Returns (color (H, W, 3) uint8, mask (H, W) uint8 coverage, radius_px (21,) finger radius in
    pixels at each keypoint, the forearm's at the wrist).
    """
    layer = _Layer(h, w)
    lit = _draw_lighting(rng)
    seg = _fingers(hand, to_image, rot, focal, skin, palm_tone, lit)
    palm = _palm(hand, to_image, rot, skin, palm_tone, lit)
    web_hull, web_depth = _thumb_web(hand, to_image)
    # (depth, kind, index), painted far first; the list order breaks ties.
    prims = [(0.5 * (seg.z0[i] + seg.z1[i]), "seg", i) for i in range(15)]
    prims += [(float(palm.z.mean()), "palm", 0), (web_depth, "web", 0)]
    lw_palm = max(1, int(round(1.4 + 0.1 * float(np.median(seg.rp0)))))

    fa_r = _paint_forearm(rng, layer, hand, to_image, rot, focal, dist, skin, palm_tone, palm.front, lit)
    prims.sort(key=lambda p: -p[0])
    for _, kind, i in prims:
        if kind == "seg":
            _paint_segment(layer, seg, i, hand, to_image, focal, lit)
        elif kind == "palm":
            _paint_palm(layer, palm, hand, to_image, lit, lw_palm)
        else:
            layer.rimmed(web_hull, palm.rgb * 0.97, lit.rim, lw_palm)

    radius_px = np.concatenate([[float(np.median(fa_r[:1]))], np.c_[seg.rp0.reshape(5, 3)[:, :1],
                                                                   seg.rp1.reshape(5, 3)].reshape(20)])
    return layer.color, layer.mask, radius_px
