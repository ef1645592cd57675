"""hrnet.evaluation.visualize (skeleton drawing, the TensorBoard grid) and error_analysis (the sheets)."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch

from data.transforms import Normalize, get_affine_transform, transform_points
from hrnet.evaluation.error_analysis import select_random, select_worst, write_error_analysis
from hrnet.evaluation.visualize import (FINGER_COLORS, HAND_BONES, draw_skeleton, gallery_image, gallery_samples,
                                        make_grid, prediction_grid, to_uint8_images)

from conftest import make_cfg


def test_hand_bones_form_a_tree_over_21_joints():
    assert len(HAND_BONES) == 20
    parents = {b: a for a, b in HAND_BONES}
    assert sorted(parents) == list(range(1, 21))  # every joint but the wrist has one parent
    for j in range(1, 21):  # every joint reaches the wrist
        k = j
        for _ in range(5):
            k = parents.get(k, 0)
        assert k == 0


def test_to_uint8_inverts_the_dataset_normalisation():
    rgb = np.random.default_rng(0).integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)
    norm = np.stack([Normalize()(im) for im in rgb])  # (2, 3, 16, 24) float, as the dataset makes it
    np.testing.assert_array_equal(to_uint8_images(torch.from_numpy(norm)), rgb)
    np.testing.assert_array_equal(to_uint8_images(rgb.transpose(0, 3, 1, 2)), rgb)


def test_skeleton_colours_sit_at_the_joints():
    img = np.zeros((64, 64, 3), np.uint8)
    pts = np.stack([np.linspace(5, 58, 21), np.linspace(8, 55, 21)], 1)
    pts[:, 0] = np.where(np.arange(21) % 2, 10, 50)  # zig-zag so the dots do not overlap much
    out = draw_skeleton(img, pts, radius=2)
    assert img.sum() == 0  # the input is untouched
    # The tip of the thumb (joint 4) carries the thumb's colour, the little tip (20) the little finger's.
    for j, color in ((4, FINGER_COLORS[0]), (20, FINGER_COLORS[4])):
        x, y = np.round(pts[j]).astype(int)
        np.testing.assert_allclose(out[y, x], color, atol=40)
    vis = np.ones(21)
    vis[20] = 0  # an unlabelled joint is not drawn (its dot, its bone)
    hidden = draw_skeleton(img, pts, vis, radius=2)
    x, y = np.round(pts[20]).astype(int)
    assert hidden[y, x].sum() < out[y, x].sum()


def test_prediction_grid_logged_and_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(1)
    images = torch.randn(6, 3, 64, 64)
    gts = np.concatenate([rng.uniform(5, 58, (6, 21, 2)), np.ones((6, 21, 1))], axis=2)
    preds = gts[..., :2] + rng.normal(0, 2, (6, 21, 2))
    grid = prediction_grid(images, preds, gts, heatmaps=torch.rand(6, 21, 16, 16) * 0.1, ncols=3)
    # 6 crops enlarged 3x (64 -> 192), 3 columns, 2 px gaps
    assert grid.dtype == np.uint8 and grid.shape == (2 * 192 + 3 * 2, 3 * 192 + 4 * 2, 3)
    writer = SummaryWriter(log_dir=str(tmp_path))
    writer.add_image("valid/predictions", grid, 3, dataformats="HWC")
    writer.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    acc.Reload()
    (event,) = acc.Images("valid/predictions")
    assert event.step == 3 and (event.height, event.width) == grid.shape[:2]
    decoded = cv2.imdecode(np.frombuffer(event.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(decoded, grid)  # PNG: lossless


def test_gallery_maps_predictions_into_the_fixed_crops(real_hands):
    from data import build_dataset

    cfg = make_cfg(None, ["DATASET.FORMAT", "coco", "DATASET.ROOT", os.path.join(real_hands, "freihand"),
                          "DATASET.TESTSET", "test_freihand.json", "MODEL.IMAGE_SIZE", "[64, 64]",
                          "MODEL.HEATMAP_SIZE", "[16, 16]"])
    ds = build_dataset(cfg, is_train=False)
    samples = gallery_samples(ds, 4)
    assert len(samples.index) == 4 and samples.images.shape == (4, 64, 64, 3)
    # Independent reference: the crop affine of each item's meta applied to its joints.
    for k, i in enumerate(samples.index):
        meta = ds[int(i)]["meta"]
        mat = get_affine_transform(meta["center"], meta["scale"], meta["rotation"], (64, 64), meta["flip"])
        np.testing.assert_allclose(samples.joints[k, :, :2], transform_points(meta["joints"][:, :2], mat), atol=1e-9)
    # Perfect predictions (the ground truth) land on the ground truth: the grid with predictions
    # equals itself regardless of order of the results, and differs from a grid without them.
    n = len(ds)
    joints = np.stack([ds[i]["meta"]["joints"] for i in range(n)])
    ann = np.array([ds[i]["meta"]["ann_id"] for i in range(n)])
    order = np.arange(n)[::-1]
    a = gallery_image(samples, {"preds": joints[..., :2], "ann_id": ann})
    b = gallery_image(samples, {"preds": joints[order, :, :2], "ann_id": ann[order]})
    none = gallery_image(samples, {"preds": np.zeros((0, 21, 2)), "ann_id": np.zeros(0, int)})
    np.testing.assert_array_equal(a, b)
    assert (a != none).any()


def test_gallery_drawing_is_cheap(real_hands):
    """Drawing the 8-crop grid must stay far below 5% of a 300-image validation (seconds)."""
    import time

    images = torch.randn(8, 3, 128, 128)
    pts = np.random.default_rng(0).uniform(0, 127, (8, 21, 2))
    prediction_grid(images, pts, np.concatenate([pts, np.ones((8, 21, 1))], 2))  # warm-up
    t0 = time.perf_counter()
    prediction_grid(images, pts, np.concatenate([pts, np.ones((8, 21, 1))], 2), heatmaps=torch.rand(8, 21, 32, 32))
    assert time.perf_counter() - t0 < 0.5


def test_select_worst_and_random():
    nme = np.array([0.1, np.nan, 0.5, 0.3, 0.5, 0.05])
    np.testing.assert_array_equal(select_worst(nme, 3), [2, 4, 3])
    r = select_random(nme, 4, seed=3)
    assert len(set(r.tolist())) == 4 and 1 not in r and (np.diff(r) > 0).all()
    np.testing.assert_array_equal(r, select_random(nme, 4, seed=3))


def test_worst_sheet_is_ordered_by_nme(tmp_path):
    """20 one-colour images, NME known; the worst sheet's tiles, read row by row, must show the
    colours of the images sorted by decreasing NME (reference: argsort here)."""
    rng = np.random.default_rng(0)
    n, tile = 20, 256
    colors = rng.permutation(np.arange(20, 240, 11))[:n]  # distinct grey levels
    paths = []
    for i in range(n):
        p = str(tmp_path / f"im{i}.png")
        cv2.imwrite(p, np.full((100, 120, 3), colors[i], np.uint8))
        paths.append(p)
    bbox = np.tile([30.0, 20.0, 40.0, 40.0], (n, 1))
    joints = np.zeros((n, 21, 3))  # nothing labelled: no skeleton over the colour
    nme = rng.uniform(0.0, 1.0, n)
    results = {"preds": np.full((n, 21, 2), np.nan), "joints": joints, "bbox": bbox}
    out = write_error_analysis(str(tmp_path / "vis"), paths, results, nme, rng.uniform(0, 1, 21), k=16)
    expected = np.argsort(-nme)[:16]
    np.testing.assert_array_equal(out["worst_index"], expected)
    sheet = cv2.imread(out["paths"]["worst"], cv2.IMREAD_GRAYSCALE)
    assert sheet.shape == (28 + 4 * tile + 5 * 2, 4 * tile + 5 * 2)
    for rank, i in enumerate(expected):
        r, c = divmod(rank, 4)
        y, x = 28 + 2 + r * (tile + 2) + tile - 30, 2 + c * (tile + 2) + 20  # inside the image, off the box/label
        assert abs(int(sheet[y, x]) - int(colors[i])) <= 1, (rank, i)
    for name in ("random", "per_joint_nme"):
        assert cv2.imread(out["paths"][name]) is not None


def test_make_grid_rejects_mixed_sizes():
    with pytest.raises(ValueError, match="tile 1"):
        make_grid([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)])
