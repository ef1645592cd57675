"""Crop geometry: the one coordinate convention of hrnet-hand, the affine and its inverse.

Coordinate convention (used by the crop, the targets, the decoding and the inverse transform):

* A pixel's **centre** has integer coordinates, as in OpenCV's ``warpAffine``: pixel (i, j)
  of an image covers the square [i - 0.5, i + 0.5] x [j - 0.5, j + 0.5], so an image of width
  W spans x in [-0.5, W - 0.5].
* A crop is a box in the original image (``center`` (x, y), ``scale`` (w, h), both in pixels
  of the original image, rotated by ``rotation`` degrees counter-clockwise about the centre).
  ``get_affine_transform`` maps that box onto the *whole extent* of an output of ``out_size``
  (w, h): box edge to output edge, [-0.5, W - 0.5]. The network input (256x256) and the
  heatmaps (64x64) are both produced by this same mapping with their own ``out_size``, so
  heatmap cell ``h`` and input pixel ``q`` are related by ``q = 4 h + 1.5`` (stride 4) with no
  ad-hoc +-0.5 or +-1 shifts anywhere else.
* A horizontal flip mirrors the output: x -> W - 1 - x (centres stay on integers).

Everything is vectorised: ``transform_points`` takes one matrix or a batch of matrices.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

ArrayLike = Union[np.ndarray, Sequence[float]]


def box_to_center_scale(bbox: ArrayLike, aspect_ratio: float = 1.0, padding: float = 1.25
                        ) -> Tuple[np.ndarray, np.ndarray]:
    """Centre (2,) and crop size (2,) in original pixels for an ``[x, y, w, h]`` box.

    ``x, y`` is the top-left corner *edge* (COCO convention: the box covers [x, x + w]), so the
    centre is ``x + w / 2 - 0.5`` in pixel-centre coordinates. The crop is enlarged to
    ``aspect_ratio`` (width / height of the network input) and multiplied by ``padding``.
    """
    x, y, w, h = (float(v) for v in bbox[:4])
    center = np.array([x + w * 0.5 - 0.5, y + h * 0.5 - 0.5], dtype=np.float64)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return center, np.array([w, h], dtype=np.float64) * padding


def get_affine_transform(center: ArrayLike, scale: ArrayLike, rotation: float, out_size: Sequence[int],
                         flip: bool = False, inverse: bool = False) -> np.ndarray:
    """The 2x3 matrix mapping original-image pixels to ``out_size`` (w, h) output pixels.

    The box (``center``, ``scale`` = (w, h), rotated ``rotation`` degrees counter-clockwise)
    lands on the output's full extent [-0.5, W - 0.5] x [-0.5, H - 0.5]; ``flip`` mirrors the
    output horizontally. ``inverse=True`` gives the output -> original mapping instead.
    """
    cx, cy = float(center[0]), float(center[1])
    sw, sh = float(scale[0]), float(scale[1])
    ow, oh = float(out_size[0]), float(out_size[1])
    theta = np.deg2rad(rotation)
    cos, sin = np.cos(theta), np.sin(theta)
    # Forward: rotate about the box centre so the content turns counter-clockwise on screen
    # (y points down: (x, y) -> (x cos + y sin, -x sin + y cos)), then scale the box to the output.
    sx, sy = ow / sw, oh / sh
    a = np.array([[sx * cos, sx * sin], [-sy * sin, sy * cos]], dtype=np.float64)
    out_c = np.array([(ow - 1) * 0.5, (oh - 1) * 0.5])
    b = out_c - a @ np.array([cx, cy])
    mat = np.concatenate([a, b[:, None]], axis=1)
    if flip:
        mat = np.array([[-1.0, 0.0, ow - 1.0], [0.0, 1.0, 0.0]]) @ np.vstack([mat, [0.0, 0.0, 1.0]])
    if inverse:
        mat = invert_affine(mat)
    return mat


def invert_affine(mat: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix (or a batch ``(N, 2, 3)``)."""
    mat = np.asarray(mat, dtype=np.float64)
    a, b = mat[..., :2], mat[..., 2:]
    a_inv = np.linalg.inv(a)
    return np.concatenate([a_inv, -a_inv @ b], axis=-1)


def transform_points(points: np.ndarray, mat: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to points.

    ``points`` (..., J, 2) with ``mat`` (2, 3), or a batch ``points`` (N, J, 2) with ``mat``
    (N, 2, 3). Returns float64 points of the same shape.
    """
    pts = np.asarray(points, dtype=np.float64)
    mat = np.asarray(mat, dtype=np.float64)
    if mat.ndim == 2:
        return pts @ mat[:, :2].T + mat[:, 2]
    return np.einsum("nij,nkj->nki", mat[:, :, :2], pts) + mat[:, None, :, 2]


# --------------------------------------------------------------------------------------------
# Augmentation and image helpers (training pipeline). Geometry stays in the functions above:
# an augmentation only changes the (center, scale, rotation, flip) handed to them.
# --------------------------------------------------------------------------------------------

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, fraction of 255
IMAGENET_STD = (0.229, 0.224, 0.225)


def sample_augmentation(rng: np.random.Generator, scale_factor: float, rot_factor: float, rot_prob: float,
                        flip_prob: float) -> Tuple[float, float, bool]:
    """Random crop geometry for one training sample.

    Returns ``(scale_mult, rotation_deg, flip)``: ``scale_mult`` uniform in
    [1 - scale_factor, 1 + scale_factor] (multiplies the crop size), ``rotation`` uniform in
    [-rot_factor, rot_factor] degrees with probability ``rot_prob`` (else 0), ``flip`` with
    probability ``flip_prob``. Always draws four numbers, so the stream does not depend on outcomes.
    """
    u = rng.random(4)
    scale_mult = 1.0 + scale_factor * (2.0 * u[0] - 1.0)
    rotation = rot_factor * (2.0 * u[1] - 1.0) if u[2] < rot_prob else 0.0
    return float(scale_mult), float(rotation), bool(u[3] < flip_prob)


def reduced_decode_factor(scale: ArrayLike, out_size: Sequence[int], max_factor: int = 8) -> int:
    """Largest f in {1, 2, 4, 8} (<= max_factor) with the crop still downsampled by >= f.

    A crop of ``scale`` (w, h) original pixels warped to ``out_size`` (w, h) samples the image
    every ``scale / out_size`` pixels; decoding the JPEG at 1/f of its size (libjpeg DCT scaling,
    ``cv2.IMREAD_REDUCED_COLOR_f``) loses nothing the warp would keep, and it is an area
    pre-filter that reduces the warp's aliasing.
    """
    ratio = min(float(scale[0]) / float(out_size[0]), float(scale[1]) / float(out_size[1]))
    f = 1
    while f * 2 <= max_factor and ratio >= f * 2:
        f *= 2
    return f


def reduced_image_affine(mat: np.ndarray, factor: int) -> np.ndarray:
    """``mat`` (2, 3), defined on original pixels, re-expressed on an image decoded at 1/factor.

    Reduced pixel ``r`` averages original pixels ``[f r, f r + f - 1]``, so in the pixel-centre
    convention ``orig = f * r + (f - 1) / 2`` (checked against OpenCV's JPEG and PNG decoders).
    """
    if factor == 1:
        return mat
    f = float(factor)
    out = np.array(mat, dtype=np.float64)
    out[:, 2] += out[:, :2].sum(axis=1) * (f - 1.0) * 0.5
    out[:, :2] *= f
    return out


class Normalize:
    """uint8 (H, W, C >= 3) -> float32 (3, H, W) RGB, ``(x / 255 - mean) / std`` per channel.

    One ``cv2.split`` and one ``cv2.LUT`` per channel (a 256-entry float table) written straight
    into the CHW output: no float arithmetic per pixel, no transposing copy (measured ~8x faster
    than a 3-channel LUT followed by ``transpose``). ``bgr=True`` reads BGR / BGRA input (the
    channel swap costs nothing here); a 4th channel is ignored.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        levels = np.arange(256, dtype=np.float64)[:, None] / 255.0
        table = (levels - np.asarray(mean)[None, :]) / np.asarray(std)[None, :]  # (256, 3) RGB
        self.luts = [np.ascontiguousarray(table[:, c], dtype=np.float32) for c in range(3)]

    def __call__(self, img: np.ndarray, bgr: bool = False) -> np.ndarray:
        planes = cv2.split(img)
        out = np.empty((3,) + img.shape[:2], dtype=np.float32)
        for c in range(3):  # three channels, each one vectorised LUT
            cv2.LUT(planes[2 - c if bgr else c], self.luts[c], dst=out[c])
        return out


def warp_crop(img: np.ndarray, mat: np.ndarray, out_size: Sequence[int]) -> np.ndarray:
    """One bilinear ``cv2.warpAffine`` of a BGR uint8 image (H, W, 3) to ``out_size`` (w, h).

    Returns BGRA uint8 (h, w, 4) (the alpha channel is meaningless), pixels outside the image 0.
    OpenCV's 4-channel bilinear warp is ~2.5x faster than its 3-channel one, so only the source
    region the warp reads (bounding box of the output's preimage, plus a 2-pixel margin so the
    bilinear neighbours are real pixels) is widened to 4 channels. The result equals the
    3-channel warp of the whole image up to +-1 grey level in ~3e-5 of the values (OpenCV's
    fixed-point rounding).
    """
    h, w = img.shape[:2]
    ow, oh = int(out_size[0]), int(out_size[1])
    corners = np.array([[0.0, 0.0], [ow - 1.0, 0.0], [0.0, oh - 1.0], [ow - 1.0, oh - 1.0]])
    src = transform_points(corners, invert_affine(mat))
    x0, y0 = np.maximum(np.floor(src.min(0)).astype(int) - 2, 0)
    x1, y1 = np.minimum(np.floor(src.max(0)).astype(int) + 3, [w, h])
    if x0 >= x1 or y0 >= y1:  # the crop lies entirely outside the image
        return np.zeros((oh, ow, 4), dtype=np.uint8)
    roi = cv2.cvtColor(img[y0:y1, x0:x1], cv2.COLOR_BGR2BGRA)
    m = np.array(mat, dtype=np.float64)
    m[:, 2] += m[:, :2] @ np.array([x0, y0], dtype=np.float64)
    return cv2.warpAffine(roi, m, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=(0, 0, 0, 0))


class PhotometricAug:
    """The photometric augmentation of a uint8 training crop (H, W, 3), in albumentations' order and
    distribution, each effect drawn independently:

    1. brightness/contrast (probability ``color_prob``): ``x * alpha + beta * 255``, alpha - 1 and
       beta uniform in [-brightness, brightness], clipped and truncated to uint8
       (``A.RandomBrightnessContrast``);
    2. hue/saturation (``color_prob``): in OpenCV's HSV, hue + uniform [-hue, hue] modulo 180 and
       saturation + int(uniform [-saturation, saturation]) clipped, grey pixels (S = 0) kept grey
       (``A.HueSaturationValue`` with ``val_shift_limit=0``);
    3. Gaussian blur (``blur_prob``): kernel 3 (probability 1/3) or 5, sigma uniform [0.3, 1.5]
       (``A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.5))``);
    4. Gaussian noise (``noise_prob``): i.i.d. per pixel and channel, std uniform
       [noise_std / 4, noise_std] x 255, the sum clipped and truncated to uint8 (``A.GaussNoise``).

    Each effect is one table lookup or one OpenCV call on the whole crop (no per-channel split,
    no Compose bookkeeping); the noise comes from OpenCV's generator seeded from this object's
    numpy generator, so a seed gives the same output. HSV is channel-order free, so BGR and RGB
    crops take the same path (``bgr`` only picks the conversion). tests/test_transforms.py
    compares every effect with albumentations' own functions at the same parameters.
    """

    def __init__(self, brightness: float, hue: float, saturation: float, color_prob: float, blur_prob: float,
                 noise_prob: float, noise_std: float):
        self.brightness, self.hue, self.saturation = float(brightness), float(hue), float(saturation)
        self.color_prob, self.blur_prob, self.noise_prob = float(color_prob), float(blur_prob), float(noise_prob)
        self.noise_std = float(noise_std)
        self._levels = np.arange(256, dtype=np.float32)
        self._rng = np.random.default_rng()

    def set_random_state(self, rng: np.random.Generator, py_random=None) -> None:
        """Draw from ``rng`` from now on (``py_random`` is accepted for albumentations' signature)."""
        self._rng = rng

    def draw(self) -> Dict[str, Any]:
        """The parameters of one call (an empty dict: no effect).

        Draws 10 uniforms from the generator on every call (whether each of the four effects
        applies, and the colour and blur parameters whether used or not), then 2 more (the noise
        std and the OpenCV noise seed) only when noise applies: 10 or 12 draws, so what follows
        on the stream depends on the noise outcome.
        """
        u = self._rng.random(10)
        p: Dict[str, Any] = {}
        if u[0] < self.color_prob:
            p["alpha"] = 1.0 + self.brightness * (2.0 * u[1] - 1.0)
            p["beta"] = 255.0 * self.brightness * (2.0 * u[2] - 1.0)
        if u[3] < self.color_prob:
            p["hue"] = self.hue * (2.0 * u[4] - 1.0)
            p["sat"] = int(self.saturation * (2.0 * u[5] - 1.0))
        if u[6] < self.blur_prob:
            p["ksize"] = 3 if u[7] < 1.0 / 3.0 else 5
            p["sigma"] = 0.3 + 1.2 * u[8]
        if u[9] < self.noise_prob:
            p["noise"] = 255.0 * self.noise_std * (0.25 + 0.75 * self._rng.random())
            p["seed"] = int(self._rng.integers(0, 2 ** 31 - 1))
        return p

    def apply(self, img: np.ndarray, p: Dict[str, Any], bgr: bool = False) -> np.ndarray:
        """``img`` uint8 (H, W, 3) with the effects of ``p`` (from :meth:`draw`); ``img`` itself when ``p`` is empty."""
        out = img
        if "alpha" in p:
            lut = np.clip(self._levels * np.float32(p["alpha"]) + np.float32(p["beta"]), 0, 255).astype(np.uint8)
            out = cv2.LUT(out, lut)
        if "hue" in p and (p["hue"] != 0 or p["sat"] != 0):
            hsv = cv2.cvtColor(out, cv2.COLOR_BGR2HSV if bgr else cv2.COLOR_RGB2HSV)
            hue = np.mod(np.arange(256, dtype=np.int16) + p["hue"], 180).astype(np.uint8)
            sat = np.clip(np.arange(256) + p["sat"], 0, 255).astype(np.uint8)
            sat[0] = 0  # grey stays grey
            # One 3-channel lookup (V unchanged) instead of split, two LUTs, a mask and merge.
            cv2.LUT(hsv, np.stack([hue, sat, np.arange(256, dtype=np.uint8)], 1)[:, None, :], dst=hsv)
            out = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR if bgr else cv2.COLOR_HSV2RGB)
        if "ksize" in p:
            x = np.arange(p["ksize"], dtype=np.float64) - p["ksize"] // 2
            k = np.exp(-0.5 * (x / p["sigma"]) ** 2)
            k /= k.sum()
            out = cv2.sepFilter2D(out, -1, k, k)
        if "noise" in p:
            noise = np.empty(out.shape, dtype=np.float32)
            cv2.setRNGSeed(p["seed"])
            # mean -0.5: uint8 saturation rounds, so round(x + n - 0.5) = the truncation of clip(x + n)
            cv2.randn(noise.reshape(out.shape[0], -1), -0.5, p["noise"])  # one plane: scalars cover every channel
            out = cv2.add(out, noise, dtype=cv2.CV_8U)
        return out

    def __call__(self, img: np.ndarray, bgr: bool = False) -> np.ndarray:
        """One random draw applied to ``img`` uint8 (H, W, 3) (RGB, or BGR with ``bgr``)."""
        return self.apply(img, self.draw(), bgr)


def build_photometric_aug(cfg) -> Optional[PhotometricAug]:
    """The photometric augmentation of the training crop (:class:`PhotometricAug`), or None if off.

    From ``DATASET``: brightness/contrast (limit ``BRIGHTNESS``) and hue/saturation
    (``HUE``, ``SATURATION``), each with probability ``COLOR_PROB``; Gaussian blur (kernel 3-5 px,
    sigma 0.3-1.5, probability ``BLUR_PROB``); Gaussian noise (std up to ``NOISE_STD`` of 255,
    probability ``NOISE_PROB``). Applied to the uint8 crop (256x256), never the full image.
    Seed it with ``set_random_state`` (the dataset hands it its per-worker generator).
    """
    d = cfg.DATASET
    if not d.COLOR_AUG:
        return None
    return PhotometricAug(d.BRIGHTNESS, d.HUE, d.SATURATION, d.COLOR_PROB, d.BLUR_PROB, d.NOISE_PROB, d.NOISE_STD)
