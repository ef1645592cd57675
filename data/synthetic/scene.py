"""The scene around the hand: background, clutter, occluders and the camera's blur and noise.

Each function draws from the image's random stream in a fixed order (``render.render_sample``
calls them in order); changing a draw changes every image after it, so bump
``render.RENDER_VERSION`` when these change.
"""
from __future__ import annotations

import cv2
import numpy as np

from .draw import ONE, SHIFT, capsule_hulls, col, fx, random_color, skin_tone


def backdrop(rng: np.random.Generator, h: int, w: int, skin: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB scene behind the hand: :func:`background` with 2-24 :func:`clutter`
    shapes (skin-coloured ones near ``skin`` among them), mostly desaturated, sometimes defocused."""
    img = background(rng, h, w)
    clutter(rng, img, int(rng.integers(2, 25)), skin)
    if rng.random() < 0.7:                                   # photos are rarely this colourful
        grey = cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        sat = rng.uniform(0.15, 0.8)
        img = cv2.addWeighted(img, sat, grey, 1.0 - sat, 0.0)
    if rng.random() < 0.4:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 2.0))  # defocused scene
    return img


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB: a gradient, smooth colour noise or stripes as the base."""
    kind = rng.random()
    if kind < 0.35 or kind >= 0.8:
        # Gradient or stripes: a 1-D colour profile along a random direction u = x cos a + y sin a,
        # spread over the image by one warpAffine (dst (x, y) samples the profile at u - u_min).
        c0, c1 = random_color(rng), random_color(rng)
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


def clutter(rng: np.random.Generator, img: np.ndarray, count: int, skin: np.ndarray, mask=None) -> None:
    """Random shapes, lines, text and skin-coloured blobs drawn in place (``mask`` gets 255)."""
    h, w = img.shape[:2]
    side = min(h, w)
    for _ in range(count):
        kind = rng.random()
        if rng.random() < 0.12:                              # skin-coloured distractor
            color = skin_tone(rng) if rng.random() < 0.5 else skin * rng.uniform(0.7, 1.2)
        else:
            color = random_color(rng)
        c = col(color)
        cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        size = side * rng.uniform(0.04, 0.45)
        aa = cv2.LINE_AA if rng.random() < 0.6 else cv2.LINE_8
        if kind < 0.25:
            ang = rng.uniform(0, 2 * np.pi)
            hw, hh = size * rng.uniform(0.2, 1.0), size * rng.uniform(0.2, 1.0)
            rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
            pts = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]]) @ rot.T + [cx, cy]
            cv2.fillConvexPoly(img, fx(pts), c, aa, SHIFT)
            if mask is not None:
                cv2.fillConvexPoly(mask, fx(pts), 255, aa, SHIFT)
        elif kind < 0.5:
            axes = (int(size * rng.uniform(0.2, 1.0)) << SHIFT, int(size * rng.uniform(0.2, 1.0)) << SHIFT)
            center = (int(cx * ONE), int(cy * ONE))
            ang = float(rng.uniform(0, 180))
            cv2.ellipse(img, center, axes, ang, 0, 360, c, -1, aa, SHIFT)
            if mask is not None:
                cv2.ellipse(mask, center, axes, ang, 0, 360, 255, -1, aa, SHIFT)
        elif kind < 0.68:
            n = int(rng.integers(3, 7))
            pts = np.stack([cx, cy]) + rng.normal(0, size * 0.6, (n, 2))
            cv2.fillPoly(img, [fx(pts)], c, aa, SHIFT)
            if mask is not None:
                cv2.fillPoly(mask, [fx(pts)], 255, aa, SHIFT)
        elif kind < 0.85:                                    # sticks, cables, pens, finger-like rods
            ang = rng.uniform(0, 2 * np.pi)
            d = np.array([np.cos(ang), np.sin(ang)]) * size
            r = max(1.0, side * rng.uniform(0.005, 0.04))
            hull = capsule_hulls(np.array([[cx, cy]]) - d, np.array([[cx, cy]]) + d,
                                  np.array([r]), np.array([r * rng.uniform(0.6, 1.4)]))[0]
            cv2.fillConvexPoly(img, hull, c, aa, SHIFT)
            if mask is not None:
                cv2.fillConvexPoly(mask, hull, 255, aa, SHIFT)
        elif mask is None:                                   # text (background only)
            chars = "ABCDEFGHKLMNPRSTUVWXYZ0123456789 "
            text = "".join(chars[i] for i in rng.integers(0, len(chars), int(rng.integers(2, 9))))
            scale = side * rng.uniform(0.002, 0.008)
            cv2.putText(img, text, (int(cx) - int(side * 0.2), int(cy)), int(rng.integers(0, 8)),
                        scale, c, int(rng.integers(1, 4)), aa)


def occlude(rng: np.random.Generator, img: np.ndarray, box: np.ndarray) -> np.ndarray:
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
        c = col(random_color(rng))
        if kind < 0.35:
            ang = rng.uniform(0, 2 * np.pi)
            d = np.array([np.cos(ang), np.sin(ang)]) * s * rng.uniform(1.0, 3.0)
            r = s * rng.uniform(0.08, 0.25)
            poly = capsule_hulls(np.array([[cx, cy]]) - d, np.array([[cx, cy]]) + d, np.array([r]), np.array([r]))[0]
        elif kind < 0.7:
            ang = rng.uniform(0, 2 * np.pi)
            hw, hh = s * rng.uniform(0.3, 1.0), s * rng.uniform(0.3, 1.0)
            rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
            poly = fx(np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]]) @ rot.T + [cx, cy])
        else:
            poly = cv2.convexHull(fx(np.array([cx, cy]) + rng.normal(0, s * 0.5, (6, 2))))
        cv2.fillConvexPoly(sub, poly, c, cv2.LINE_AA, SHIFT)
        cv2.fillConvexPoly(occ, poly, 255, cv2.LINE_AA, SHIFT)
    if rng.random() < 0.5:                                   # textured occluder
        gh, gw = rng.integers(2, 10, 2)
        tex = cv2.resize(rng.integers(0, 256, (gh, gw, 3)).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
        sub = cv2.addWeighted(sub, 0.6, tex, 0.4, 0.0)
    m = occ > 0
    a = (occ[m].astype(np.float32) / 255.0)[:, None]
    img[m] = (img[m] * (1 - a) + sub[m] * a).astype(np.uint8)
    return occ


def degrade(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
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
