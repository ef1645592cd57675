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

from typing import Sequence, Tuple, Union

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
