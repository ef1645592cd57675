"""data.transforms: the coordinate convention, the reduced-decode affine, augmentation helpers."""
import random

import cv2
import numpy as np
import pytest

from conftest import make_cfg
from data.transforms import (IMAGENET_MEAN, IMAGENET_STD, Normalize, box_to_center_scale, build_photometric_aug,
                             get_affine_transform, invert_affine, reduced_decode_factor, reduced_image_affine,
                             sample_augmentation, transform_points, warp_crop)


def test_convention_box_edges_to_output_edges():
    center, scale = box_to_center_scale([10, 20, 100, 50], padding=1.0)
    np.testing.assert_allclose(center, [59.5, 44.5])
    np.testing.assert_allclose(scale, [100, 100])  # square for aspect 1
    mat = get_affine_transform(center, scale, 0.0, (256, 256))
    # Box edges (pixel-centre coords x - 0.5 .. x + w - 0.5) land on the output edges -0.5 .. 255.5.
    np.testing.assert_allclose(transform_points(np.array([[9.5, -5.5], [109.5, 94.5]]), mat),
                               [[-0.5, -0.5], [255.5, 255.5]], atol=1e-9)
    # Input pixel q and heatmap cell h of the same crop: q = 4 h + 1.5.
    hm = get_affine_transform(center, scale, 17.0, (64, 64), flip=True)
    inp = get_affine_transform(center, scale, 17.0, (256, 256), flip=True)
    pts = np.random.default_rng(0).uniform(0, 200, (21, 2))
    np.testing.assert_allclose(transform_points(pts, inp), 4 * transform_points(pts, hm) + 1.5, atol=1e-9)
    # Flip mirrors the output; inverse undoes the forward map.
    plain = get_affine_transform(center, scale, 17.0, (64, 64))
    np.testing.assert_allclose(transform_points(pts, hm)[:, 0], 63 - transform_points(pts, plain)[:, 0], atol=1e-9)
    back = transform_points(transform_points(pts, hm), get_affine_transform(center, scale, 17.0, (64, 64), True, True))
    np.testing.assert_allclose(back, pts, atol=1e-9)


@pytest.mark.parametrize("factor,flag", [(2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4)])
def test_reduced_image_affine_matches_opencv_decoder(tmp_path, factor, flag):
    """A blob at a known sub-pixel spot, decoded at 1/f, maps back within 0.1 px (the shift is (f-1)/2)."""
    h, w = 1000, 1200
    yy, xx = np.mgrid[0:h, 0:w]
    truth = np.array([[400.3, 500.7], [801.6, 233.2]])
    img = sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 12.0 ** 2)) for x, y in truth) * 220
    path = str(tmp_path / "blob.jpg")
    cv2.imwrite(path, np.repeat(img[..., None], 3, 2).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 98])
    red = cv2.imread(path, flag)[..., 0].astype(np.float64)
    assert red.shape == (h // factor, w // factor)
    ident = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    for x, y in truth:
        rx, ry, half = int(x / factor), int(y / factor), 40 // factor  # window around the blob, reduced pixels
        y0, y1, x0, x1 = ry - half, ry + half, rx - half, rx + half
        win = np.clip(red[y0:y1, x0:x1] - 10, 0, None)
        gy, gx = np.mgrid[y0:y1, x0:x1]
        centroid = np.array([(win * gx).sum(), (win * gy).sum()]) / win.sum()
        orig = transform_points(centroid[None], reduced_image_affine(ident, factor))[0]
        assert np.abs(orig - [x, y]).max() < 0.1, (orig, x, y)


def test_reduced_image_affine_composes():
    mat = get_affine_transform([300.0, 200.0], [500.0, 500.0], 20.0, (256, 256))
    pts_red = np.random.default_rng(1).uniform(0, 150, (10, 2))
    for f in (1, 2, 4, 8):
        orig = pts_red * f + (f - 1) / 2
        np.testing.assert_allclose(transform_points(pts_red, reduced_image_affine(mat, f)),
                                   transform_points(orig, mat), atol=1e-9)


def test_reduced_decode_factor():
    assert reduced_decode_factor([256, 256], (256, 256)) == 1
    assert reduced_decode_factor([511, 511], (256, 256)) == 1
    assert reduced_decode_factor([512, 600], (256, 256)) == 2
    assert reduced_decode_factor([1100, 1100], (256, 256)) == 4
    assert reduced_decode_factor([5000, 5000], (256, 256)) == 8
    assert reduced_decode_factor([5000, 600], (256, 256)) == 2  # the less downsampled axis decides
    assert reduced_decode_factor([5000, 5000], (256, 256), max_factor=2) == 2


def test_sample_augmentation_ranges_and_probabilities():
    rng = np.random.default_rng(0)
    draws = [sample_augmentation(rng, 0.25, 30.0, 0.6, 0.5) for _ in range(4000)]
    s, r, f = (np.array(v) for v in zip(*draws))
    assert s.min() >= 0.75 and s.max() <= 1.25 and s.min() < 0.76 and s.max() > 1.24
    assert np.abs(r).max() <= 30 and np.abs(r).max() > 29
    assert abs((r != 0).mean() - 0.6) < 0.03 and abs(f.mean() - 0.5) < 0.03
    rng = np.random.default_rng(0)
    assert {sample_augmentation(rng, 0.0, 30.0, 0.0, 0.0) for _ in range(50)} == {(1.0, 0.0, False)}


def test_normalize_matches_reference():
    img = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    ref = (img.astype(np.float64) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    out = Normalize()(img)
    assert out.shape == (3, 37, 53) and out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, ref.transpose(2, 0, 1), atol=1e-6)
    bgra = np.concatenate([img[..., ::-1], np.full((37, 53, 1), 7, np.uint8)], axis=2)
    np.testing.assert_allclose(Normalize()(bgra, bgr=True), ref.transpose(2, 0, 1), atol=1e-6)


def test_warp_crop_equals_whole_image_warp():
    rng = np.random.default_rng(0)
    img = cv2.resize(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), (400, 300), interpolation=cv2.INTER_CUBIC)
    for _ in range(20):
        c = rng.uniform([-60, -60], [460, 360])
        mat = get_affine_transform(c, [rng.uniform(30, 500)] * 2, rng.uniform(-45, 45), (256, 256), rng.random() < 0.5)
        full = cv2.warpAffine(img, mat, (256, 256), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        out = warp_crop(img, mat, (256, 256))
        assert out.shape == (256, 256, 4)
        diff = np.abs(out[..., :3].astype(int) - full)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    far = get_affine_transform([5000.0, 5000.0], [100.0, 100.0], 0.0, (256, 256))
    assert not warp_crop(img, far, (256, 256)).any()


def test_invert_affine_batch():
    mats = np.stack([get_affine_transform([50.0, 60.0], [80.0, 80.0], a, (64, 64)) for a in (0.0, 30.0)])
    inv = invert_affine(mats)
    pts = np.random.default_rng(0).uniform(0, 64, (2, 5, 2))
    np.testing.assert_allclose(transform_points(transform_points(pts, mats), inv), pts, atol=1e-9)


def test_photometric_aug_config_and_seeding():
    assert build_photometric_aug(make_cfg(None, ["DATASET.COLOR_AUG", "False"])) is None
    cfg = make_cfg(None, ["DATASET.COLOR_PROB", "1.0", "DATASET.NOISE_PROB", "1.0", "DATASET.BLUR_PROB", "1.0"])
    img = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    outs = []
    for seed in (1, 1, 2):
        aug = build_photometric_aug(cfg)
        aug.set_random_state(np.random.default_rng(seed), random.Random(seed))
        outs.append(aug(image=img)["image"])
    assert outs[0].shape == img.shape and outs[0].dtype == np.uint8
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])
    assert not np.array_equal(outs[0], img)
