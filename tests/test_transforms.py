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
        outs.append(aug(img))
    assert outs[0].shape == img.shape and outs[0].dtype == np.uint8
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])
    assert not np.array_equal(outs[0], img)


def test_photometric_effects_equal_albumentations():
    """Each effect at fixed parameters equals albumentations' own function (the reference the
    augmentation was defined with); BGR input gives the channel-swapped RGB result."""
    import albucore
    from albumentations.augmentations.blur.functional import create_gaussian_kernel_1d
    from albumentations.augmentations.pixel import functional as fpixel

    aug = build_photometric_aug(make_cfg(None, []))
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    img[:5] = img[:5, :, :1]  # some grey pixels (S = 0)
    for _ in range(20):
        alpha, beta = 1 + rng.uniform(-0.2, 0.2), 255 * rng.uniform(-0.2, 0.2)
        np.testing.assert_array_equal(aug.apply(img, {"alpha": alpha, "beta": beta}),
                                      albucore.multiply_add(img, alpha, beta))
        hue, sat = rng.uniform(-10, 10), rng.uniform(-20, 20)
        ref = fpixel.shift_hsv(img, hue, int(sat), 0)
        np.testing.assert_array_equal(aug.apply(img, {"hue": hue, "sat": int(sat)}), ref)
        np.testing.assert_array_equal(aug.apply(img[..., ::-1].copy(), {"hue": hue, "sat": int(sat)}, bgr=True),
                                      ref[..., ::-1])
        ksize, sigma = int(rng.choice([3, 5])), rng.uniform(0.3, 1.5)
        np.testing.assert_array_equal(aug.apply(img, {"ksize": ksize, "sigma": sigma}),
                                      fpixel.separable_convolve(img, create_gaussian_kernel_1d(sigma, ksize)))


def test_photometric_draws_follow_the_albumentations_distribution():
    """Parameter ranges and probabilities; noise: zero-mean i.i.d. normal of the drawn std, then
    clip and truncation (so mid-grey loses 0.5 level on average)."""
    aug = build_photometric_aug(make_cfg(None, ["DATASET.BLUR_PROB", "0.3", "DATASET.NOISE_PROB", "0.2"]))
    aug.set_random_state(np.random.default_rng(0))
    draws = [aug.draw() for _ in range(6000)]
    frac = {k: np.mean([k in d for d in draws]) for k in ("alpha", "hue", "ksize", "noise")}
    assert abs(frac["alpha"] - 0.5) < 0.03 and abs(frac["hue"] - 0.5) < 0.03
    assert abs(frac["ksize"] - 0.3) < 0.03 and abs(frac["noise"] - 0.2) < 0.03
    alpha = np.array([d["alpha"] for d in draws if "alpha" in d])
    hue = np.array([d["hue"] for d in draws if "hue" in d])
    sigma = np.array([d["sigma"] for d in draws if "sigma" in d])
    noise = np.array([d["noise"] for d in draws if "noise" in d]) / 255
    assert 0.8 <= alpha.min() < 0.81 and 1.19 < alpha.max() <= 1.2
    assert -10 <= hue.min() < -9.9 and 9.9 < hue.max() <= 10
    assert 0.3 <= sigma.min() < 0.32 and 1.48 < sigma.max() <= 1.5
    assert 0.01 <= noise.min() < 0.0105 and 0.0395 < noise.max() <= 0.04
    assert abs(np.mean([d["ksize"] == 3 for d in draws if "ksize" in d]) - 1 / 3) < 0.05  # randint(3, 5): 3, 4->5, 5
    grey = np.full((256, 256, 3), 128, np.uint8)
    out = aug.apply(grey, {"noise": 6.0, "seed": 1}).astype(np.float64) - 128
    assert abs(out.mean() + 0.5) < 0.05 and abs(np.sqrt(((out + 0.5) ** 2).mean()) - np.sqrt(36 + 1 / 12)) < 0.05
    assert abs(np.corrcoef(out[..., 0].ravel(), out[..., 1].ravel())[0, 1]) < 0.02

def test_rotation_is_counter_clockwise_on_screen_and_scale_enlarges_the_crop():
    """Hand-computed geometry, independent of get_affine_transform: a crop of size s (square) at
    centre c, rotated by r degrees, maps point p to out_c + (out / s) R(r) (p - c) with R turning
    the image content counter-clockwise on screen (y down): to the right of the centre -> above it."""
    c, s, out = np.array([100.0, 80.0]), 50.0, 64
    right = c + [20.0, 0.0]
    up = transform_points(right[None], get_affine_transform(c, [s, s], 90.0, (out, out)))[0]
    np.testing.assert_allclose(up, [31.5, 31.5 - 20.0 * out / s], atol=1e-9)  # right -> up: CCW on screen
    below = c + [0.0, 10.0]
    t = np.deg2rad(30.0)
    expect = 31.5 + (out / s) * np.array([10.0 * np.sin(t), 10.0 * np.cos(t)])  # below -> below-right
    np.testing.assert_allclose(transform_points(below[None], get_affine_transform(c, [s, s], 30.0, (out, out)))[0],
                               expect, atol=1e-9)


def _one_dot_dataset(tmp_path, dot=(140.0, 100.0)):
    """A 200x200 black PNG with one bright Gaussian dot, annotated as joint 0 (the other 20 unlabelled)."""
    import json

    yy, xx = np.mgrid[0:200, 0:200]
    img = 255.0 * np.exp(-((xx - dot[0]) ** 2 + (yy - dot[1]) ** 2) / (2 * 2.0 ** 2))
    cv2.imwrite(str(tmp_path / "dot.png"), np.repeat(img[..., None], 3, 2).round().astype(np.uint8))
    kpts = [dot[0], dot[1], 2] + [0, 0, 0] * 20
    (tmp_path / "dot.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "dot.png", "width": 200, "height": 200}],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [50, 50, 100, 100],
                         "keypoints": kpts, "num_keypoints": 1}],
        "categories": [{"id": 1, "name": "hand"}]}))


def test_training_sample_rotates_counter_clockwise_and_scales_the_crop(tmp_path, monkeypatch):
    """The dataset applies a drawn (scale 1.2, rotation +90 deg) as documented: the crop is 1.2x the
    padded box (content shrinks) and the content turns counter-clockwise: a dot 40.5 px right of the
    box centre lands above the centre, in the image and in the heatmap target."""
    import data.dataset as dataset_mod
    from data import build_dataset

    _one_dot_dataset(tmp_path)
    cfg = make_cfg(None, ["MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]", "MODEL.SIGMA", "1.0",
                          "DATASET.FORMAT", "coco", "DATASET.ROOT", str(tmp_path), "DATASET.TRAINSET", "dot.json",
                          "DATASET.COLOR_AUG", "False"])
    monkeypatch.setattr(dataset_mod, "sample_augmentation", lambda *a, **k: (1.2, 90.0, False))
    item = build_dataset(cfg, is_train=True)[0]
    # box [50, 50, 100, 100]: centre (99.5, 99.5), crop 100 * 1.25 (padding) * 1.2 = 150 px.
    d = np.array([140.0, 100.0]) - 99.5  # (40.5, 0.5) from the centre
    rotated = np.array([d[1], -d[0]])  # +90 deg counter-clockwise on screen (y down)
    expect_img = 31.5 + 64 / 150 * rotated
    expect_hm = 7.5 + 16 / 150 * rotated
    np.testing.assert_allclose(item["meta"]["scale"], [150.0, 150.0])
    lum = item["image"].numpy()[0]
    lum = np.clip(lum - lum.min() - 0.5 * (lum.max() - lum.min()), 0, None)  # the dot only
    yy, xx = np.mgrid[0:64, 0:64]
    centroid = np.array([(lum * xx).sum(), (lum * yy).sum()]) / lum.sum()
    np.testing.assert_allclose(centroid, expect_img, atol=0.3)
    target = item["target"].numpy()[0]
    assert item["target_weight"][0] == 1 and target.max() > 0.5
    yy, xx = np.mgrid[0:16, 0:16]
    peak = np.array([(target * xx).sum(), (target * yy).sum()]) / target.sum()
    np.testing.assert_allclose(peak, expect_hm, atol=0.05)


# --- mutation-tested edges (tools/mutation.py transforms) ------------------------------------------

def test_box_to_center_scale_default_padding_aspect_and_extra_fields():
    np.testing.assert_allclose(box_to_center_scale([0, 0, 100, 100])[1], [125, 125])  # padding 1.25
    np.testing.assert_allclose(box_to_center_scale([0, 0, 50, 100], padding=1.0)[1], [100, 100])  # tall
    # a non-square input (192 x 256, aspect 0.75): the crop takes the input's shape around the box
    np.testing.assert_allclose(box_to_center_scale([0, 0, 120, 60], 0.75, 1.0)[1], [120, 160])
    np.testing.assert_allclose(box_to_center_scale([0, 0, 30, 100], 0.75, 1.0)[1], [75, 100])
    center, scale = box_to_center_scale([10, 20, 30, 100, 0.9], 0.75)  # [x, y, w, h, score]: score ignored
    np.testing.assert_allclose(center, [24.5, 69.5])
    np.testing.assert_allclose(scale, [93.75, 125])


def test_non_square_input_maps_box_edges_to_output_edges():
    """192 x 256 input and 48 x 64 heatmaps: box edges to output edges on each axis, q = 4 h + 1.5."""
    center, scale = box_to_center_scale([10, 20, 90, 100], 0.75, 1.0)  # crop 90 x 120
    mat = get_affine_transform(center, scale, 0.0, (192, 256))
    edges = np.array([[center[0] - 45, center[1] - 60], [center[0] + 45, center[1] + 60]])
    np.testing.assert_allclose(transform_points(edges, mat), [[-0.5, -0.5], [191.5, 255.5]], atol=1e-9)
    pts = np.random.default_rng(0).uniform(0, 150, (21, 2))
    for rot, flip in ((0.0, False), (25.0, True)):
        inp = get_affine_transform(center, scale, rot, (192, 256), flip)
        hm = get_affine_transform(center, scale, rot, (48, 64), flip)
        np.testing.assert_allclose(transform_points(pts, inp), 4 * transform_points(pts, hm) + 1.5, atol=1e-9)
    flipped = get_affine_transform(center, scale, 0.0, (192, 256), flip=True)
    np.testing.assert_allclose(transform_points(pts, flipped)[:, 0], 191 - transform_points(pts, mat)[:, 0])
    img = cv2.resize(np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8), (300, 200))
    out = warp_crop(img, get_affine_transform(center, scale, 10.0, (192, 256)), (192, 256))
    full = cv2.warpAffine(img, get_affine_transform(center, scale, 10.0, (192, 256)), (192, 256),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    assert out.shape == (256, 192, 4) and np.abs(out[..., :3].astype(int) - full).max() <= 1


def test_batched_transform_equals_one_matrix_at_a_time():
    mats = np.stack([get_affine_transform([50.0, 60.0], [80.0, 120.0], a, (48, 64), f)
                     for a, f in ((0.0, False), (30.0, True), (-70.0, False))])
    pts = np.random.default_rng(0).uniform(0, 100, (3, 5, 2))
    batched = transform_points(pts, mats)
    for n in range(3):
        np.testing.assert_allclose(batched[n], transform_points(pts[n], mats[n]), atol=1e-12)


def test_reduced_decode_factor_takes_each_axis_with_its_own_size():
    assert reduced_decode_factor([600, 5000], (256, 256)) == 2  # the less downsampled axis decides
    assert reduced_decode_factor([600, 2400], (128, 256)) == 4  # 600 / 128 = 4.7 and 2400 / 256 = 9.4


def test_warp_crop_of_a_strongly_downsampled_crop_reads_every_source_pixel():
    """A crop 8x larger than its output: one output pixel spans 8 source pixels, beyond the ROI's
    2-pixel margin, so the ROI must come from all four output corners exactly."""
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (700, 900, 3), dtype=np.uint8)
    for rot, flip in ((0.0, False), (20.0, True), (-35.0, False)):
        mat = get_affine_transform([450.0, 350.0], [512.0, 480.0], rot, (64, 60), flip)
        full = cv2.warpAffine(img, mat, (64, 60), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        diff = np.abs(warp_crop(img, mat, (64, 60))[..., :3].astype(int) - full)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3, (rot, flip)


@pytest.mark.parametrize("center", [(-200.0, 100.0), (600.0, 100.0), (150.0, -200.0), (150.0, 400.0),
                                    # 2 px per output pixel across, 1.5 down: the preimage ends 2.5 px
                                    # before the image (left, top) or starts 2.5 px after it (right, bottom)
                                    (-49.5, 100.0), (349.5, 100.0), (150.0, -49.75), (150.0, 249.75)])
def test_warp_crop_of_a_box_entirely_outside_the_image_is_black(center):
    """Left, right, above, below the 300 x 200 image, far and just outside (a source window of width
    or height zero after the 2-pixel margins): a black uint8 BGRA crop of the (non-square) output size."""
    img = np.full((200, 300, 3), 200, np.uint8)
    mat = get_affine_transform(center, [96.0, 96.0], 0.0, (48, 64))
    out = warp_crop(img, mat, (48, 64))
    assert out.shape == (64, 48, 4) and out.dtype == np.uint8 and not out.any()


def test_the_augmentation_streams_of_a_seed_are_pinned():
    """A seed's geometry and photometric draws are part of a run's reproducibility (a published run
    re-run from its seed): sample_augmentation draws 4 uniforms; PhotometricAug.draw 10, plus 2 when
    noise applies. Changing the stream changes every seeded run, so it is pinned here."""
    rng = np.random.default_rng(0)
    got = [sample_augmentation(rng, 0.25, 30.0, 0.6, 0.5) for _ in range(3)]
    want = [(1.0684808436607272, -13.81279717416778, True), (1.156635119600136, 0.0, False),
            (1.0218124957327115, 0.0, True)]
    np.testing.assert_allclose([g[:2] for g in got], [w[:2] for w in want], rtol=1e-12)
    assert [g[2] for g in got] == [w[2] for w in want]
    assert rng.random() == pytest.approx(0.8574042765875693, rel=1e-15)  # 12 uniforms consumed
    from data.transforms import PhotometricAug

    aug = PhotometricAug(0.2, 10, 20, 0.8, 0.8, 0.6, 0.04)
    rng = np.random.default_rng(6)
    aug.set_random_state(rng)
    first, second = aug.draw(), aug.draw()
    want1 = {"alpha": 0.9373083479253354, "beta": -13.355141540871418, "hue": 9.748899803729332, "sat": 5,
             "ksize": 3, "sigma": 1.1159011933968268, "noise": 2.9457286246758807, "seed": 1902530057}
    want2 = {"alpha": 1.1915070248741186, "beta": 33.35430863354347, "hue": -9.03833025994907, "sat": -11,
             "noise": 3.975472837885396, "seed": 1825772013}
    for got_d, want_d in ((first, want1), (second, want2)):
        assert set(got_d) == set(want_d)
        for k, v in want_d.items():
            assert got_d[k] == pytest.approx(v, rel=1e-12) and type(got_d[k]) is not type(None), k
    assert isinstance(first["seed"], int) and isinstance(first["sat"], int)
    assert rng.random() == pytest.approx(0.49726791274147364, rel=1e-15)
    aug = PhotometricAug(0.2, 10, 20, 0.5, 0.3, 0.5, 0.04)
    aug.set_random_state(np.random.default_rng(0))
    aug.draw()
    assert aug.draw()["seed"] == 11494707  # a small seed: integers(0, 2**31 - 1), not from 1


def test_photometric_draws_cover_their_documented_ranges():
    from data.transforms import PhotometricAug

    aug = PhotometricAug(0.2, 10, 20, 1.0, 1.0, 1.0, 0.04)
    aug.set_random_state(np.random.default_rng(1))
    draws = [aug.draw() for _ in range(3000)]
    beta = np.array([d["beta"] for d in draws]) / 255
    sat = np.array([d["sat"] for d in draws])
    seeds = np.array([d["seed"] for d in draws])
    assert -0.2 <= beta.min() < -0.199 and 0.199 < beta.max() <= 0.2
    assert set(sat.tolist()) == set(range(-19, 20))  # int() of uniform(-20, 20): truncation toward 0
    assert {d["ksize"] for d in draws} == {3, 5}
    assert seeds.min() >= 0 and seeds.max() < 2 ** 31 - 1 and seeds.max() > 2 ** 30  # the full int32 range
    # unseeded, an instance draws from its own fresh generator
    assert PhotometricAug(0.2, 10, 20, 1.0, 0.0, 0.0, 0.04)(np.full((8, 8, 3), 100, np.uint8)).shape == (8, 8, 3)


def test_photometric_hue_and_saturation_apply_each_alone_and_not_at_zero():
    from data.transforms import PhotometricAug

    aug = PhotometricAug(0.2, 10, 20, 1.0, 1.0, 1.0, 0.04)
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert aug.apply(img, {"hue": 0.0, "sat": 0}) is img  # no HSV round trip (it would change pixels)
    assert not np.array_equal(aug.apply(img, {"hue": 5.0, "sat": 0}), img)
    assert not np.array_equal(aug.apply(img, {"hue": 0.0, "sat": 5}), img)


def test_photometric_noise_follows_its_seed_and_rgb_is_the_default():
    from data.transforms import PhotometricAug

    aug = PhotometricAug(0.2, 10, 20, 1.0, 0.0, 1.0, 0.04)
    grey = np.full((32, 32, 3), 128, np.uint8)
    a, b, c = (aug.apply(grey, {"noise": 6.0, "seed": s}) for s in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for seed in range(5):
        aug.set_random_state(np.random.default_rng(seed))
        out = aug(img)
        aug.set_random_state(np.random.default_rng(seed))
        p = aug.draw()
        assert "hue" in p and np.array_equal(out, aug.apply(img, p, bgr=False))
        assert p["hue"] == 0 or not np.array_equal(out, aug.apply(img, p, bgr=True))


def test_brightness_contrast_rounds_in_float32_like_albumentations():
    """Parameters where float32 and float64 arithmetic truncate differently: albumentations' float32 wins."""
    import albucore

    aug = build_photometric_aug(make_cfg(None, []))
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16, 1).repeat(3, axis=2)
    for alpha, beta in ((0.9647986392379301, 30.766545520748664), (1.1528683917785776, -48.9495013863633)):
        np.testing.assert_array_equal(aug.apply(levels, {"alpha": alpha, "beta": beta}),
                                      albucore.multiply_add(levels, alpha, beta))


def _records_dataset(cfg_opts, bbox, keypoints, tmp_path, is_train=False):
    """A HandKeypointDataset of one record on a 300 x 200 grey image with a bright square."""
    from data import HandKeypointDataset, HandRecord

    img = np.full((200, 300, 3), 60, np.uint8)
    img[90:110, 140:160] = 250
    cv2.imwrite(str(tmp_path / "hand.png"), img)
    rec = HandRecord(str(tmp_path / "hand.png"), 1, 1, np.array(bbox, dtype=np.float64),
                     np.array(keypoints, dtype=np.float64))
    opts = ["MODEL.NUM_JOINTS", str(len(keypoints)), "DATASET.COLOR_AUG", "False"] + list(cfg_opts)
    return HandKeypointDataset([rec], make_cfg(None, opts), is_train=is_train)


def test_dataset_nan_coordinates_of_unlabelled_joints(tmp_path):
    """An annotation may leave an unlabelled joint's coordinates as NaN: weight 0, an all-zero finite
    target; the labelled joints are untouched."""
    kpts = [[150.0, 100.0, 2], [np.nan, np.nan, 0], [120.0, 80.0, 1]]
    item = _records_dataset(["MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]"],
                            [100, 50, 100, 100], kpts, tmp_path)[0]
    assert item["target_weight"].tolist() == [1.0, 0.0, 1.0]
    assert np.isfinite(item["target"].numpy()).all() and not item["target"][1].any()
    assert item["target"][0].max() > 0.5 and item["target"][2].max() > 0.5


def test_dataset_box_entirely_outside_the_image(tmp_path):
    """A box beside the image (e.g. a bad annotation kept by ON_BAD_SAMPLE skip upstream): a black crop,
    a finite normalised image and zero weights for joints in it; train mode too (augmented geometry)."""
    kpts = [[-150.0, 100.0, 2], [-120.0, 80.0, 2]]
    for is_train in (False, True):
        ds = _records_dataset(["MODEL.IMAGE_SIZE", "[48, 64]", "MODEL.HEATMAP_SIZE", "[12, 16]"],
                              [-200, 50, 100, 100], kpts, tmp_path, is_train)
        item = ds[0]
        image = item["image"].numpy()
        assert image.shape == (3, 64, 48) and np.isfinite(image).all()
        black = (0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
        np.testing.assert_allclose(image.reshape(3, -1).mean(1), black, atol=1e-5)  # all black
        assert item["target"].shape == (2, 16, 12)


def test_dataset_non_square_input_places_the_joint(tmp_path):
    """192 x 256-like (here 48 x 64) input and 12 x 16 heatmaps: image, target and hm_to_img agree."""
    ds = _records_dataset(["MODEL.IMAGE_SIZE", "[48, 64]", "MODEL.HEATMAP_SIZE", "[12, 16]", "MODEL.SIGMA", "1.0"],
                          [110, 60, 80, 80], [[149.5, 99.5, 2]], tmp_path)
    item = ds[0]
    assert item["image"].shape == (3, 64, 48) and item["target"].shape == (1, 16, 12)
    target = item["target"].numpy()[0]
    yy, xx = np.mgrid[0:16, 0:12]
    peak = np.array([(target * xx).sum(), (target * yy).sum()]) / target.sum()
    back = transform_points(peak[None], item["meta"]["hm_to_img"])[0]
    np.testing.assert_allclose(back, [149.5, 99.5], atol=0.5)
    lum = item["image"].numpy()[0]
    bright = lum > lum.mean()
    iy, ix = np.nonzero(bright)
    np.testing.assert_allclose([ix.mean(), iy.mean()], 4 * peak + 1.5, atol=1.0)  # the square's centre
