"""Drawing primitives shared by the scene (``scene.py``) and the hand (``paint.py``).

Geometry follows the project's one coordinate convention (``data/transforms.py``): pixel
centres at integer coordinates. OpenCV's drawing functions with ``shift`` fractional bits use
the same convention, so a point at (x, y) is drawn where (x, y) lies.
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

SHIFT = 4                       # fractional bits of the sub-pixel drawing coordinates
ONE = float(1 << SHIFT)
_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 16, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 16, endpoint=False))], axis=1)
# Skin tones (RGB) from light to dark; a hand's tone is interpolated between neighbours.
_SKIN = np.array([[250, 222, 200], [240, 196, 170], [226, 174, 142], [200, 143, 108],
                  [170, 113, 80], [128, 82, 58], [92, 60, 44]], dtype=np.float64)


def fx(points: np.ndarray) -> np.ndarray:
    """Pixel-centre coordinates -> int32 fixed point for OpenCV's ``shift`` argument."""
    return np.round(np.asarray(points) * ONE).astype(np.int32)


def col(rgb) -> Tuple[float, float, float]:
    """An OpenCV colour tuple; too bright a colour is scaled down (as an exposure would), not
    clipped per channel, so shading keeps the hue. Plain Python: called ~100 times an image."""
    r, g, b = (max(float(c), 0.0) for c in rgb)
    top = max(r, g, b)
    if top > 255.0:
        r, g, b = r * 255.0 / top, g * 255.0 / top, b * 255.0 / top
    return r, g, b


def capsule_hulls(p0: np.ndarray, p1: np.ndarray, r0: np.ndarray, r1: np.ndarray) -> list:
    """Convex outlines (fixed point) of tapered capsules: hull of two discs, for (N, 2) ends."""
    pts = np.concatenate([p0[:, None] + r0[:, None, None] * _CIRCLE,
                          p1[:, None] + r1[:, None, None] * _CIRCLE], axis=1)
    return [cv2.convexHull(p) for p in fx(pts)]


def random_color(rng: np.random.Generator) -> np.ndarray:
    """(3,) float64 RGB, uniform over the colour cube."""
    return rng.integers(0, 256, 3).astype(np.float64)


def skin_tone(rng: np.random.Generator) -> np.ndarray:
    """(3,) float64 RGB between two neighbouring tones of the light-to-dark scale, plus jitter."""
    t = rng.uniform(0, len(_SKIN) - 1)
    i = min(int(t), len(_SKIN) - 2)
    tone = _SKIN[i] + (t - i) * (_SKIN[i + 1] - _SKIN[i])
    return np.clip(tone + rng.normal(0, 6, 3), 0, 255)
