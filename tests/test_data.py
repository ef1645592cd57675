"""data: readers (COCO, COCO-WholeBody, CSV), validation, crops, augmentation, targets, loaders."""
import csv
import json
import os
import shutil

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import make_cfg
from data import BadSampleError, build_dataset, read_coco
from data.records import box_from_keypoints
from data.transforms import IMAGENET_MEAN, IMAGENET_STD, get_affine_transform, transform_points
from data.codec import decode_heatmaps

J = 21
REAL = [("onehand10k", "test_onehand10k.json"), ("freihand", "test_freihand.json")]


def coco_cfg(root, ann, *opts, fmt="coco"):
    return make_cfg(None, ["DATASET.FORMAT", fmt, "DATASET.ROOT", str(root), "DATASET.TRAINSET", str(ann),
                           "DATASET.TESTSET", str(ann), *opts])


def to_unit(image: torch.Tensor) -> np.ndarray:
    """Normalised (3, H, W) -> RGB (H, W, 3) in [0, 1]."""
    x = image.numpy().transpose(1, 2, 0) * np.array(IMAGENET_STD) + np.array(IMAGENET_MEAN)
    return x


# ------------------------------------------------------------------ tiny synthetic sets on disk

def draw_dots(size, kpts, radius):
    """Black image (h, w, 3) with a white disc of ``radius`` at each keypoint (sub-pixel centre)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w), np.uint8)
    for x, y in kpts[:, :2]:
        img[(xx - x) ** 2 + (yy - y) ** 2 <= radius ** 2] = 255
    return np.repeat(img[..., None], 3, axis=2)


def write_set(folder, n=4, size=(320, 240), box=(80, 60, 160, 120), radius=4.0, ext="png", seed=0, **ann_extra):
    """n images with 21 white dots (the keypoints) inside ``box``; returns (ann_file, annotations)."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    images, anns = [], []
    x, y, bw, bh = box
    for i in range(n):
        kpts = np.ones((J, 3))
        kpts[:, 0] = rng.uniform(x + radius, x + bw - radius, J)
        kpts[:, 1] = rng.uniform(y + radius, y + bh - radius, J)
        name = f"img{i}.{ext}"
        cv2.imwrite(os.path.join(folder, name), draw_dots(size, kpts, radius), [cv2.IMWRITE_JPEG_QUALITY, 97])
        images.append({"id": 100 + i, "file_name": name, "width": size[0], "height": size[1]})
        anns.append({"id": 500 + i, "image_id": 100 + i, "bbox": list(box), "keypoints": kpts.reshape(-1).tolist(),
                     **ann_extra})
    ann_file = os.path.join(folder, "ann.json")
    with open(ann_file, "w") as f:
        json.dump({"images": images, "annotations": anns}, f)
    return ann_file, {"images": images, "annotations": anns}


def rewrite(ann_file, data):
    with open(ann_file, "w") as f:
        json.dump(data, f)


# ------------------------------------------------------------------ real samples

@pytest.mark.parametrize("sub,ann", REAL)
def test_coco_real_samples_items(real_hands, sub, ann):
    with open(os.path.join(real_hands, sub, ann)) as f:
        raw = json.load(f)
    cfg = coco_cfg(os.path.join(real_hands, sub), ann)
    ds = build_dataset(cfg, is_train=False)
    assert len(ds) == len(raw["annotations"])
    item = ds[0]
    assert item["image"].shape == (3, 256, 256) and item["image"].dtype == torch.float32
    assert item["target"].shape == (J, 64, 64) and item["target"].dtype == torch.float32
    assert item["target_weight"].shape == (J,) and item["target_weight"].dtype == torch.float32
    meta = item["meta"]
    a = raw["annotations"][0]
    assert meta["image_id"] == a["image_id"] and meta["ann_id"] == a["id"]
    assert meta["rotation"] == 0.0 and meta["flip"] is False
    kp = np.array(a["keypoints"], dtype=np.float64).reshape(J, 3)
    np.testing.assert_allclose(meta["joints"][:, :2][kp[:, 2] > 0], kp[kp[:, 2] > 0, :2], atol=1e-4)
    np.testing.assert_array_equal(meta["joints"][:, 2] > 0, kp[:, 2] > 0)
    np.testing.assert_allclose(meta["bbox"], a["bbox"])
    # Test crop: the padded square around the box, no augmentation.
    x, y, w, h = a["bbox"]
    np.testing.assert_allclose(meta["center"], [x + w / 2 - 0.5, y + h / 2 - 0.5])
    np.testing.assert_allclose(meta["scale"], [1.25 * max(w, h)] * 2)
    np.testing.assert_allclose(meta["hm_to_img"], get_affine_transform(meta["center"], meta["scale"], 0.0,
                                                                       (64, 64), inverse=True))
    # OneHand10K stores unlabelled joints as 0, 0, 0: weight 0.
    assert (item["target_weight"].numpy()[kp[:, 2] == 0] == 0).all()
    assert np.isfinite(item["image"].numpy()).all()


@pytest.mark.parametrize("sub,ann", REAL)
def test_round_trip_dark_within_half_pixel(real_hands, sub, ann):
    """encode -> DARK decode -> hm_to_img lands within 0.5 px of the annotation (original pixels)."""
    ds = build_dataset(coco_cfg(os.path.join(real_hands, sub), ann), is_train=False)
    checked = labelled = 0
    for i in range(len(ds)):
        item = ds[i]
        coords, _ = decode_heatmaps(item["target"][None], "dark")
        pred = transform_points(coords[0].double().numpy(), item["meta"]["hm_to_img"])
        w = item["target_weight"].numpy() > 0
        err = np.abs(pred - item["meta"]["joints"][:, :2])[w]
        assert err.max() < 0.5, (sub, i, err.max())
        checked += w.sum()
        labelled += (item["meta"]["joints"][:, 2] > 0).sum()
    assert checked == labelled > 0.7 * len(ds) * J  # every labelled joint lies inside its test crop


def test_csv_reader_matches_coco(real_hands, tmp_path):
    """The OneHand10K sample written as HRNet-Facial CSV gives the same crops and targets."""
    root = os.path.join(real_hands, "onehand10k")
    with open(os.path.join(root, "test_onehand10k.json")) as f:
        raw = json.load(f)
    names = {im["id"]: im["file_name"] for im in raw["images"]}
    path = tmp_path / "hands.csv"
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["image_name", "scale", "center_w", "center_h"] + [f"{c}{k}" for k in range(J) for c in "xy"])
        for a in raw["annotations"]:
            x, y, w, h = a["bbox"]
            kp = np.array(a["keypoints"], dtype=np.float64).reshape(J, 3)
            kp[kp[:, 2] == 0, :2] = -1  # the CSV layout's unlabelled marker
            wr.writerow([names[a["image_id"]], max(w, h) / 200, x + w / 2 - 0.5, y + h / 2 - 0.5]
                        + kp[:, :2].reshape(-1).tolist())
    coco = build_dataset(coco_cfg(root, "test_onehand10k.json"), is_train=False)
    csvd = build_dataset(coco_cfg(root, str(path), fmt="csv"), is_train=False)
    assert len(csvd) == len(coco) == 4
    for i in range(len(coco)):
        a, b = coco[i], csvd[i]
        assert b["meta"]["ann_id"] == i
        np.testing.assert_allclose(b["meta"]["center"], a["meta"]["center"], atol=1e-9)
        np.testing.assert_allclose(b["meta"]["scale"], a["meta"]["scale"], atol=1e-9)
        np.testing.assert_allclose(b["meta"]["joints"], a["meta"]["joints"], atol=1e-4)
        assert torch.equal(a["image"], b["image"])
        torch.testing.assert_close(a["target"], b["target"])
        assert torch.equal(a["target_weight"], b["target_weight"])


def test_csv_bad_rows(tmp_path):
    ann_file, _ = write_set(tmp_path, n=1)
    path = tmp_path / "bad.csv"
    row = ["img0.png", "1.0", "150", "120"] + ["100"] * (2 * J)
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["image_name", "scale", "center_w", "center_h"])
        wr.writerow(row)
        wr.writerow(row[:-2])  # a keypoint short
        wr.writerow(row[:4] + ["nan"] + row[5:])
    with pytest.raises(BadSampleError, match=r"bad\.csv line 3 annotation id 1: expected 46 columns"):
        build_dataset(coco_cfg(tmp_path, str(path), fmt="csv"), is_train=False)
    with pytest.warns(UserWarning, match="skipped 2 bad sample"):
        ds = build_dataset(coco_cfg(tmp_path, str(path), "DATASET.ON_BAD_SAMPLE", "skip", fmt="csv"), False)
    assert len(ds) == 1
    np.testing.assert_allclose(ds.record(0).bbox, [150.5 - 100, 120.5 - 100, 200, 200])


# ------------------------------------------------------------------ annotation variants

def test_coco_nested_triples_float_v_and_wholebody(tmp_path):
    ann_file, data = write_set(tmp_path, n=2)
    a0, a1 = data["annotations"]
    kp = np.array(a0["keypoints"]).reshape(J, 3)
    kp[:, 2] = 2.0
    kp[3] = [0.0, 0.0, 0.0]
    a0["keypoints"] = kp.tolist()  # 21 [x, y, v] triples, float v, one unlabelled
    # COCO-WholeBody: body keypoints ignored; each valid hand is a sample, id 2*id (+1 for right).
    hand = np.array(a1["keypoints"])
    data["annotations"][1] = {"id": 7, "image_id": a1["image_id"], "bbox": [0, 0, 300, 200],
                              "keypoints": [0] * 51, "lefthand_kpts": hand.tolist(), "lefthand_box": a1["bbox"],
                              "lefthand_valid": True, "righthand_kpts": (hand + 1).tolist(),
                              "righthand_box": [90, 70, 150, 100], "righthand_valid": True,
                              "face_kpts": [0] * 204, "face_valid": False}
    data["annotations"].append({"id": 8, "image_id": a1["image_id"], "keypoints": [0] * 51,
                                "lefthand_kpts": hand.tolist(), "lefthand_box": a1["bbox"], "lefthand_valid": False,
                                "righthand_kpts": [0] * 63, "righthand_box": [0, 0, 0, 0], "righthand_valid": False})
    rewrite(ann_file, data)
    recs = read_coco(ann_file, str(tmp_path), J)
    assert [r.ann_id for r in recs] == [500, 14, 15]
    assert recs[0].keypoints[3, 2] == 0 and (recs[0].keypoints[np.arange(J) != 3, 2] == 2).all()
    np.testing.assert_allclose(recs[1].keypoints[:, :2], hand.reshape(J, 3)[:, :2])
    np.testing.assert_allclose(recs[2].bbox, [90, 70, 150, 100])
    ds = build_dataset(coco_cfg(tmp_path, "ann.json"), is_train=False)
    assert len(ds) == 3 and ds[0]["target_weight"][3] == 0 and ds[0]["target_weight"].sum() == J - 1


def test_box_derived_from_keypoints(tmp_path):
    ann_file, data = write_set(tmp_path, n=2)
    data["annotations"][0]["bbox"] = [10, 10, 0, 50]
    del data["annotations"][1]["bbox"]
    rewrite(ann_file, data)
    with pytest.warns(UserWarning, match="derived from the labelled keypoints"):
        recs = read_coco(ann_file, str(tmp_path), J)
    for rec, a in zip(recs, data["annotations"]):
        kp = np.array(a["keypoints"]).reshape(J, 3)
        lo, hi = kp[:, :2].min(0), kp[:, :2].max(0)
        np.testing.assert_allclose(rec.bbox, [lo[0], lo[1], hi[0] - lo[0] + 1, hi[1] - lo[1] + 1])
    assert box_from_keypoints(np.zeros((J, 3))) is None


# ------------------------------------------------------------------ bad input

BAD_CASES = {
    "missing image": (lambda d, folder: os.remove(os.path.join(folder, "img1.png")),
                      r"img1\.png: image file not found \(annotation id 501"),
    "corrupt image": (lambda d, folder: open(os.path.join(folder, "img1.png"), "wb").write(b"not an image" * 9),
                      r"img1\.png: unreadable image .*annotation id 501"),
    "truncated image": (lambda d, folder: open(os.path.join(folder, "img1.png"), "r+b").truncate(300),
                        r"img1\.png: truncated PNG file .*annotation id 501"),
    "wrong keypoint count": (lambda d, folder: d["annotations"][1].update(keypoints=[1.0] * 60),
                             r"ann\.json annotation id 501: expected 21 keypoints"),
    "nan coordinates": (lambda d, folder: d["annotations"][1]["keypoints"].__setitem__(3, float("nan")),
                        r"ann\.json annotation id 501: NaN/inf coordinates in labelled keypoint\(s\) \[1\]"),
    "bad box, nothing labelled": (lambda d, folder: d["annotations"][1].update(
        bbox=[5, 5, -3, 10], keypoints=[0.0] * 63), r"ann\.json annotation id 501: no valid box"),
    "image id without image": (lambda d, folder: d["annotations"][1].update(image_id=999),
                               r"ann\.json annotation id 501: image_id 999 has no entry in images"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_errors_and_skip(tmp_path, case):
    ann_file, data = write_set(tmp_path, n=3)
    mutate, message = BAD_CASES[case]
    mutate(data, str(tmp_path))
    rewrite(ann_file, data)
    with pytest.raises(BadSampleError, match=message):
        build_dataset(coco_cfg(tmp_path, "ann.json"), is_train=True)
    with pytest.warns(UserWarning, match=r"skipped 1 bad sample.*\n.*annotation id 501"):
        ds = build_dataset(coco_cfg(tmp_path, "ann.json", "DATASET.ON_BAD_SAMPLE", "skip"), is_train=True)
    assert [ds.record(i).ann_id for i in range(len(ds))] == [500, 502]


def test_missing_annotation_file_and_synthetic_guard(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"DATASET.TESTSET: annotation file not found: .*nope\.json"):
        build_dataset(coco_cfg(tmp_path, "nope.json"), is_train=False)
    with open(tmp_path / "broken.json", "w") as f:
        f.write("{\"images\": [")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON"):
        build_dataset(coco_cfg(tmp_path, "broken.json"), is_train=False)


def test_max_samples_keeps_first_n(tmp_path):
    write_set(tmp_path, n=4)
    ds = build_dataset(coco_cfg(tmp_path, "ann.json", "DATASET.MAX_TRAIN_SAMPLES", "3",
                                "DATASET.MAX_TEST_SAMPLES", "2"), is_train=True)
    assert [ds.record(i).ann_id for i in range(len(ds))] == [500, 501, 502]
    ds = build_dataset(coco_cfg(tmp_path, "ann.json", "DATASET.MAX_TEST_SAMPLES", "2"), is_train=False)
    assert len(ds) == 2


def test_corrupt_at_load_time_clear_error_in_workers(tmp_path):
    write_set(tmp_path, n=4)
    ds = build_dataset(coco_cfg(tmp_path, "ann.json"), is_train=True)
    # Damaged pixel data behind an intact header (passes the build-time check): decoding fails.
    png = bytearray(open(tmp_path / "img2.png", "rb").read())
    i = png.index(b"IDAT")
    png[i + 4:i + 4 + int.from_bytes(png[i - 4:i], "big")] = b"\x55" * int.from_bytes(png[i - 4:i], "big")
    with open(tmp_path / "img2.png", "wb") as f:
        f.write(png)
    with pytest.raises(BadSampleError, match=r"img2\.png: cannot read or decode the image \(annotation id 502"):
        ds[2]
    loader = DataLoader(ds, batch_size=2, num_workers=2, timeout=60)
    with pytest.raises(BadSampleError, match=r"img2\.png: cannot read or decode the image \(annotation id 502"):
        list(loader)
    # Training tolerates it at load time: another sample takes its place.
    skip = build_dataset(coco_cfg(tmp_path, "ann.json", "DATASET.ON_BAD_SAMPLE", "skip"), is_train=True)
    with pytest.warns(UserWarning, match=r"img2\.png.*returning sample 3 instead"):
        assert skip[2]["meta"]["ann_id"] == 503
    # A test set is decoded at build time: the hand is left out and named, never replaced by
    # another one (which would be scored twice).
    with pytest.warns(UserWarning, match=r"skipped 1 bad sample"):
        test = build_dataset(coco_cfg(tmp_path, "ann.json", "DATASET.ON_BAD_SAMPLE", "skip"), is_train=False)
    assert [test.record(i).ann_id for i in range(len(test))] == [500, 501, 503]
    assert len(test.skipped) == 1 and "img2.png" in test.skipped[0] and "annotation id 502" in test.skipped[0]
    with pytest.raises(BadSampleError, match=r"img2\.png: the image does not decode cleanly"):
        build_dataset(coco_cfg(tmp_path, "ann.json"), is_train=False)


# ------------------------------------------------------------------ augmentation geometry

def dots_hit(item, size=(256, 256)):
    """Per labelled-and-inside joint: the un-normalised pixel at its transformed position."""
    meta = item["meta"]
    mat = get_affine_transform(meta["center"], meta["scale"], meta["rotation"], size, meta["flip"])
    pts = transform_points(meta["joints"][:, :2], mat)
    img = to_unit(item["image"]).mean(2)
    keep = item["target_weight"].numpy() > 0
    px = np.round(pts[keep]).astype(int)
    return img[px[:, 1], px[:, 0]], img


@pytest.mark.parametrize("color", [False, True])
def test_augmentation_keeps_keypoints_on_the_dots(tmp_path, color):
    """Rotation + flip + scale (+ photometric): every keypoint still lands on its white dot."""
    write_set(tmp_path, n=3)
    cfg = coco_cfg(tmp_path, "ann.json", "DATASET.ROT_PROB", "1.0", "DATASET.FLIP_PROB", "0.5",
                   "DATASET.SCALE_FACTOR", "0.25", "DATASET.ROT_FACTOR", "45.0", "DATASET.COLOR_AUG", str(color))
    ds = build_dataset(cfg, is_train=True)
    torch.manual_seed(3)
    seen_flip, seen_rot, seen_scale = set(), [], []
    for k in range(12):
        item = ds[k % 3]
        values, img = dots_hit(item)
        assert len(values) >= 15
        assert values.min() > 0.5, (k, values.min())
        assert (img > 0.5).mean() < 0.1  # mostly dark: a wrong mapping would land on black
        # The target peaks are on the dots too (heatmap cell h -> input pixel 4 h + 1.5).
        coords, _ = decode_heatmaps(item["target"][None], "dark")
        q = np.round(4 * coords[0].numpy() + 1.5).astype(int)[item["target_weight"].numpy() > 0]
        assert img[q[:, 1], q[:, 0]].min() > 0.5
        seen_flip.add(item["meta"]["flip"])
        seen_rot.append(item["meta"]["rotation"])
        seen_scale.append(item["meta"]["scale"][0] / (1.25 * 160))
    assert seen_flip == {False, True}
    assert max(np.abs(seen_rot)) > 10 and min(np.abs(seen_rot)) > 0
    assert min(seen_scale) >= 0.75 and max(seen_scale) <= 1.25 and np.ptp(seen_scale) > 0.1


def test_reduced_decode_large_jpeg(tmp_path):
    """A large JPEG is decoded at 1/2 or 1/4 size; the crop matches the full decode and the dots."""
    write_set(tmp_path, n=2, size=(1600, 1200), box=(300, 200, 900, 800), radius=16.0, ext="jpg")
    opts = ["DATASET.COLOR_AUG", "False", "DATASET.ROT_PROB", "1.0"]
    fast = build_dataset(coco_cfg(tmp_path, "ann.json", *opts), is_train=True)
    full = build_dataset(coco_cfg(tmp_path, "ann.json", *opts, "DATASET.REDUCED_DECODE", "False"), is_train=True)
    for k in range(4):
        torch.manual_seed(k)
        a = fast[k % 2]
        torch.manual_seed(k)
        b = full[k % 2]
        assert a["meta"]["rotation"] == b["meta"]["rotation"] and a["meta"]["rotation"] != 0
        torch.testing.assert_close(a["target"], b["target"])
        # Same picture; the reduced decode is an area pre-filter, so edges differ slightly.
        diff = np.abs(to_unit(a["image"]) - to_unit(b["image"]))
        assert diff.mean() < 0.02
        values, _ = dots_hit(a)
        assert values.min() > 0.5


def test_test_mode_is_deterministic_and_unaugmented(real_hands):
    cfg = coco_cfg(os.path.join(real_hands, "freihand"), "test_freihand.json")
    ds = build_dataset(cfg, is_train=False)
    torch.manual_seed(0)
    a = ds[1]
    torch.manual_seed(1)
    b = ds[1]
    assert torch.equal(a["image"], b["image"]) and a["meta"]["rotation"] == 0 and not a["meta"]["flip"]


# ------------------------------------------------------------------ loaders and seeding

def test_dataloader_workers_collate_and_repeatable(tmp_path):
    write_set(tmp_path, n=8)
    ds = build_dataset(coco_cfg(tmp_path, "ann.json"), is_train=True)

    def epoch(seed):
        loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=True, timeout=60,  # a hang fails
                            generator=torch.Generator().manual_seed(seed))
        return list(loader)

    first, again, other = epoch(0), epoch(0), epoch(1)
    batch = first[0]
    assert batch["image"].shape == (4, 3, 256, 256) and batch["target"].shape == (4, J, 64, 64)
    assert batch["target_weight"].shape == (4, J)
    m = batch["meta"]
    assert m["center"].shape == (4, 2) and m["center"].dtype == torch.float64
    assert m["hm_to_img"].shape == (4, 2, 3) and m["joints"].shape == (4, J, 3) and m["bbox"].shape == (4, 4)
    assert m["flip"].dtype == torch.bool and m["image_id"].dtype == torch.int64
    for x, y in zip(first, again):  # same seed: identical samples
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["meta"]["rotation"], y["meta"]["rotation"])
    # Each worker and each seed draws its own stream: no repeated augmentation parameters.
    rots = torch.cat([b["meta"]["rotation"] for b in first + other])
    scales = torch.cat([b["meta"]["scale"][:, 0] for b in first + other])
    assert len(set(scales.tolist())) == len(scales)
    assert len(set(rots[rots != 0].tolist())) == int((rots != 0).sum())


def test_rng_follows_torch_seed(tmp_path):
    write_set(tmp_path, n=1)
    ds = build_dataset(coco_cfg(tmp_path, "ann.json"), is_train=True)
    torch.manual_seed(5)
    a = [ds[0] for _ in range(3)]
    torch.manual_seed(6)  # a new torch seed (a new worker, a new epoch's seed) restarts the stream
    c = ds[0]
    torch.manual_seed(5)
    b = [ds[0] for _ in range(3)]
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and x["meta"]["scale"][0] == y["meta"]["scale"][0]
    assert a[0]["meta"]["scale"][0] != a[1]["meta"]["scale"][0]  # the stream advances
    assert c["meta"]["scale"][0] != a[0]["meta"]["scale"][0]


def test_synthetic_format_reads_what_ensure_dataset_returns(tmp_path, monkeypatch):
    """FORMAT synthetic: ensure_dataset(cfg) gives the root; its train.json / test.json are read as COCO."""
    import sys
    import types

    write_set(tmp_path / "synth", n=3)
    shutil.copy(tmp_path / "synth" / "ann.json", tmp_path / "synth" / "train.json")
    shutil.copy(tmp_path / "synth" / "ann.json", tmp_path / "synth" / "test.json")
    calls = []
    fake = types.ModuleType("data.synthetic")
    fake.ensure_dataset = lambda cfg: calls.append(cfg.DATASET.ROOT) or str(tmp_path / "synth")
    monkeypatch.setitem(sys.modules, "data.synthetic", fake)
    cfg = make_cfg(None, ["DATASET.FORMAT", "synthetic", "DATASET.ROOT", "somewhere", "DATASET.MAX_TEST_SAMPLES", "2"])
    assert len(build_dataset(cfg, is_train=True)) == 3 and len(build_dataset(cfg, is_train=False)) == 2
    assert calls == ["somewhere", "somewhere"]


# ------------------------------------------------------------------ bad annotations caught where they enter

def _expect_bad(tmp_path, data, match, is_train=False):
    """``error`` mode raises naming the file and id; ``skip`` leaves the sample out and names it."""
    ann_file = str(tmp_path / "ann.json")
    rewrite(ann_file, data)
    with pytest.raises(BadSampleError, match=match):
        build_dataset(coco_cfg(tmp_path, "ann.json"), is_train=is_train)
    with pytest.warns(UserWarning, match="skipped"):
        ds = build_dataset(coco_cfg(tmp_path, "ann.json", "DATASET.ON_BAD_SAMPLE", "skip"), is_train=is_train)
    assert len(ds.skipped) >= 1 and all(ann_file in line or "ann.json" in line for line in ds.skipped)
    return ds


def test_keypoint_far_outside_the_box(tmp_path):
    _, data = write_set(tmp_path, n=3)
    data["annotations"][1]["keypoints"][:2] = [1e5, 1e5]  # would give an oracle NME of ~8 otherwise
    ds = _expect_bad(tmp_path, data, r"ann\.json annotation id 501: labelled keypoint\(s\) far outside the box")
    assert [ds.record(i).ann_id for i in range(len(ds))] == [500, 502]
    assert "annotation id 501" in ds.skipped[0]


def test_keypoint_far_outside_the_image_when_the_box_is_derived(tmp_path):
    _, data = write_set(tmp_path, n=2)
    ann = data["annotations"][0]
    del ann["bbox"]  # the box comes from the keypoints, so only the image can tell
    ann["keypoints"][:2] = [5000.0, 5000.0]
    _expect_bad(tmp_path, data, r"annotation id 500: labelled keypoint\(s\) far outside the 320x240 image")


def test_tiny_box(tmp_path):
    _, data = write_set(tmp_path, n=2)
    ann = data["annotations"][0]
    ann["bbox"] = [100, 100, 2, 2]
    ann["keypoints"] = [v for _ in range(J) for v in (101.0, 101.0, 1)]
    _expect_bad(tmp_path, data, r"annotation id 500: the box is 2x2 pixels")


def test_duplicate_image_id_with_another_file(tmp_path):
    _, data = write_set(tmp_path, n=3)
    data["images"][2]["id"] = 101  # img1.png and img2.png both claim id 101
    data["annotations"][2]["image_id"] = 101
    _expect_bad(tmp_path, data, r"image id 101 is listed twice in images\[\] \('img1\.png' and 'img2\.png'\)")


def test_duplicate_annotation_id(tmp_path):
    _, data = write_set(tmp_path, n=3)
    data["annotations"][2]["id"] = 500
    ds = _expect_bad(tmp_path, data, r"annotation id 500: the id is used already by annotations\[0\]")
    assert [ds.record(i).image_path.endswith(f"img{k}.png") for i, k in enumerate([0, 1])] == [True, True]


def test_image_size_differs_from_the_json(tmp_path):
    _, data = write_set(tmp_path, n=2)
    data["images"][1]["width"] = 640
    _expect_bad(tmp_path, data, r"img1\.png: the image is 320x240 pixels, the annotation file says 640x240")


def test_file_name_null(tmp_path):
    _, data = write_set(tmp_path, n=2)
    data["images"][0]["file_name"] = None
    _expect_bad(tmp_path, data, r"annotation id 500: images\[0\] file_name is None")


def test_decompression_bomb_refused_before_decoding(tmp_path):
    import struct
    import zlib

    _, data = write_set(tmp_path, n=2)
    png = bytearray(open(tmp_path / "img1.png", "rb").read())
    # IHDR claims 20000 x 20000 (400 MP); the pixel data stays small
    png[16:24] = struct.pack(">II", 20000, 20000)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    (tmp_path / "img1.png").write_bytes(bytes(png))
    _expect_bad(tmp_path, data, r"img1\.png: image (of 20000x20000 pixels is )?larger than the 100 MP limit")


def test_json_with_utf8_bom_is_accepted(tmp_path):
    ann_file, data = write_set(tmp_path, n=2)
    with open(ann_file, "wb") as f:
        f.write(b"\xef\xbb\xbf" + json.dumps(data).encode())
    assert len(build_dataset(coco_cfg(tmp_path, "ann.json"), is_train=False)) == 2


def test_bad_json_is_one_error_naming_the_file(tmp_path):
    (tmp_path / "ann.json").write_text('{"images": [')
    with pytest.raises(BadSampleError, match=r"ann\.json: not valid JSON"):
        build_dataset(coco_cfg(tmp_path, "ann.json"), is_train=False)


def test_csv_first_data_row_is_not_swallowed(tmp_path):
    _, data = write_set(tmp_path, n=2)
    path = tmp_path / "hands.csv"
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)  # no header; the first row has a broken scale cell
        for k, ann in enumerate(data["annotations"]):
            xy = np.asarray(ann["keypoints"]).reshape(J, 3)[:, :2].reshape(-1).tolist()
            wr.writerow([f"img{k}.png", "oops" if k == 0 else 0.8, 160, 120] + xy)
    with pytest.raises(BadSampleError, match=r"hands\.csv line 1 annotation id 0: not a number"):
        build_dataset(coco_cfg(tmp_path, str(path), fmt="csv"), is_train=False)
