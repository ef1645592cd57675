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
from data.csv import read_csv
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


def damage_png(path) -> None:
    """Overwrite a PNG's pixel data behind its intact header: it opens, but does not decode."""
    png = bytearray(open(path, "rb").read())
    i = png.index(b"IDAT")
    length = int.from_bytes(png[i - 4:i], "big")
    png[i + 4:i + 4 + length] = b"\x55" * length
    with open(path, "wb") as f:
        f.write(png)


def test_a_test_sample_that_stops_decoding_is_never_substituted(tmp_path):
    """Damaged after the build-time check: even with ON_BAD_SAMPLE skip a test set raises rather than
    scoring the next hand twice."""
    write_set(tmp_path, n=4)
    test = build_dataset(coco_cfg(tmp_path, "ann.json", "DATASET.ON_BAD_SAMPLE", "skip"), is_train=False)
    damage_png(tmp_path / "img2.png")
    with pytest.raises(BadSampleError, match=r"img2\.png: cannot read or decode the image \(annotation id 502"):
        test[2]
    assert test[3]["meta"]["ann_id"] == 503


def test_corrupt_at_load_time_clear_error_in_workers(tmp_path):
    write_set(tmp_path, n=4)
    ds = build_dataset(coco_cfg(tmp_path, "ann.json"), is_train=True)
    # Damaged pixel data behind an intact header (passes the build-time check): decoding fails.
    damage_png(tmp_path / "img2.png")
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


# ------------------------------------------------------------------ COCO reader: what each check decides
# (written against the mutants test_data let through, docs/mutation_testing.md)

def _hand(x0=100.0, y0=80.0):
    kp = np.ones((J, 3))
    kp[:, 0], kp[:, 1] = x0 + np.arange(J), y0 + np.arange(J) % 5
    return kp


def _coco_json(tmp_path, images, anns, name="c.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "annotations": anns}))
    return str(path)


def _ann(i, image_id=1, **kw):
    return dict({"id": i, "image_id": image_id, "bbox": [90, 70, 60, 40], "keypoints": _hand().ravel().tolist()}, **kw)


@pytest.mark.parametrize("doc, words", [
    ([], "a COCO-style file needs 'images' and 'annotations' lists"),
    ({"images": []}, "needs 'images' and 'annotations' lists"),
    ({"annotations": []}, "needs 'images' and 'annotations' lists"),
    ({"images": [{"file_name": "a.png"}], "annotations": []}, "images[0] needs 'id' and 'file_name'"),
    ({"images": ["a.png"], "annotations": []}, "images[0] needs 'id'"),
    ({"images": [{"id": "7", "file_name": "a.png"}], "annotations": []}, "images[0] id must be an integer, got '7'"),
    ({"images": [{"id": True, "file_name": "a.png"}], "annotations": []}, "images[0] id must be an integer, got True"),
], ids=["list", "no annotations", "no images", "image without id", "image not an object", "string id", "bool id"])
def test_coco_file_structure_errors_name_the_file(tmp_path, doc, words):
    from data.records import AnnotationFileError

    path = tmp_path / "c.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(AnnotationFileError) as err:
        read_coco(str(path), str(tmp_path))
    assert str(err.value).startswith(f"{path}: ") and words in str(err.value)


def test_coco_file_not_utf8_names_the_file(tmp_path):
    from data.records import AnnotationFileError

    path = tmp_path / "c.json"
    path.write_bytes(b'{"images": [], "annotations": [], "x": "\xff\xfe"}')
    with pytest.raises(AnnotationFileError, match=rf"^{path}: not UTF-8 text"):
        read_coco(str(path), str(tmp_path))


def test_coco_stated_image_size_only_when_it_is_a_positive_int(tmp_path):
    """width / height become the record's image_size (checked against the file) only when both
    are positive integers; otherwise the size is unknown, never a bad sample."""
    images = [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png", "width": 0, "height": 240},
              {"id": 3, "file_name": "c.png", "width": True, "height": 240},
              {"id": 4, "file_name": "d.png", "width": 320.5, "height": 240},
              {"id": 5, "file_name": "e.png", "width": 320, "height": 240}]
    recs = read_coco(_coco_json(tmp_path, images, [_ann(10 + i, i) for i in range(1, 6)]), str(tmp_path))
    assert [r.image_size for r in recs] == [None, None, None, None, (320, 240)]
    tiny = _coco_json(tmp_path, [{"id": 1, "file_name": "a.png", "width": 1, "height": 1}], [_ann(1)], "tiny.json")
    with pytest.raises(BadSampleError, match="outside the 1x1 image"):  # a stated 1x1 size is checked
        read_coco(tiny, str(tmp_path))


def test_coco_image_listed_twice_with_the_same_file(tmp_path):
    """The same id and file twice: one image, its size from whichever entry states it; a different
    size is a conflict (bad samples)."""
    sized = {"id": 1, "file_name": "a.png", "width": 320, "height": 240}
    bare = {"id": 1, "file_name": "a.png"}
    for images in ([sized, bare], [bare, sized], [sized, dict(sized)]):
        (rec,) = read_coco(_coco_json(tmp_path, images, [_ann(1)]), str(tmp_path))
        assert rec.image_size == (320, 240), images
    other = dict(sized, width=640)
    with pytest.raises(BadSampleError, match=r"image id 1 is listed twice in images\[\]"):
        read_coco(_coco_json(tmp_path, [sized, other], [_ann(1)]), str(tmp_path))


def test_coco_annotation_ids_and_entries(tmp_path):
    """A missing id is the annotation's index; a string or bool id, or an entry that is not an object, is
    a bad sample naming the file and the index / id; so is an annotation without keypoints."""
    img = [{"id": 1, "file_name": "a.png"}]
    no_id = {k: v for k, v in _ann(0).items() if k != "id"}
    recs = read_coco(_coco_json(tmp_path, img, [_ann(5), no_id]), str(tmp_path))
    assert [r.ann_id for r in recs] == [5, 1]
    for entry, words in (([1, 2], "annotation index 0: not an object"),
                         (_ann("5"), "annotation id 5: image_id and id must be integers"),
                         (_ann(True), "annotation id True: image_id and id must be integers"),
                         ({k: v for k, v in _ann(3).items() if k != "keypoints"}, "annotation id 3: no 'keypoints'")):
        path = _coco_json(tmp_path, img, [entry])
        with pytest.raises(BadSampleError) as err:
            read_coco(path, str(tmp_path))
        assert str(err.value).startswith(path) and words in str(err.value), str(err.value)


def test_coco_wholebody_one_hand_and_a_bad_hand_beside_a_good_one(tmp_path):
    """An annotation with only one hand's keypoints is a WholeBody sample (its body keypoints
    ignored); in skip mode a bad left hand leaves its right hand in, and the message names the hand."""
    img = [{"id": 1, "file_name": "a.png"}]
    body = {"id": 4, "image_id": 1, "keypoints": [0] * 51}
    left = dict(body, lefthand_kpts=_hand().ravel().tolist(), lefthand_box=[90, 70, 60, 40])
    right = dict(body, id=5, righthand_kpts=_hand(60.0).ravel().tolist(), righthand_box=[50, 70, 60, 40])
    recs = read_coco(_coco_json(tmp_path, img, [left, right]), str(tmp_path))
    assert [r.ann_id for r in recs] == [8, 11]
    np.testing.assert_allclose(recs[1].bbox, [50, 70, 60, 40])
    both = dict(body, lefthand_kpts=[0.0] * 9, lefthand_box=[90, 70, 60, 40],
                righthand_kpts=_hand(60.0).ravel().tolist(), righthand_box=[50, 70, 60, 40])
    bad_right = dict(body, id=6, lefthand_kpts=_hand().ravel().tolist(), lefthand_box=[90, 70, 60, 40],
                     righthand_kpts=[0.0] * 9, righthand_box=[50, 70, 60, 40])
    path = _coco_json(tmp_path, img, [both, bad_right])
    skipped = []
    with pytest.warns(UserWarning, match=rf"^{path}: skipped 2 bad sample"):
        recs = read_coco(path, str(tmp_path), on_bad="skip", skipped=skipped)
    assert [r.ann_id for r in recs] == [9, 12]
    assert "annotation id 4 (left hand, sample id 8)" in skipped[0], skipped
    assert "annotation id 6 (right hand, sample id 13)" in skipped[1], skipped


def test_coco_default_is_21_joints(tmp_path):
    (rec,) = read_coco(_coco_json(tmp_path, [{"id": 1, "file_name": "a.png"}], [_ann(1)]), str(tmp_path))
    assert rec.keypoints.shape == (J, 3)


# ------------------------------------------------------------------ CSV reader: header, visibility, ids, messages

def _csv_rows(tmp_path, rows, name="h.csv", prefix=b""):
    path = tmp_path / name
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    if prefix:
        path.write_bytes(prefix + path.read_bytes())
    return str(path)


def _csv_row(name="a.png", scale=1.0, cx=0.0, cy=0.0, xy=None):
    """A hand of side 200 px centred at (cx, cy), its joints 10 px from the centre unless ``xy`` says."""
    xy = np.tile([cx + 10.0, cy + 10.0], (J, 1)) if xy is None else np.asarray(xy, float)
    return [name, scale, cx, cy] + xy.reshape(-1).tolist()


def test_csv_unlabelled_is_x_and_y_both_negative(tmp_path):
    xy = np.full((J, 2), 10.0)
    xy[:7] = [(-1, 5), (5, -1), (0, -1), (0.5, -1), (-1, 0), (-1, 0.5), (-1, -1)]
    (rec,) = read_csv(_csv_rows(tmp_path, [_csv_row(xy=xy)]), str(tmp_path))
    assert rec.keypoints[:, 2].tolist() == [1, 1, 1, 1, 1, 1, 0] + [1] * (J - 7)
    np.testing.assert_allclose(rec.bbox, [-99.5, -99.5, 200, 200])


def test_csv_header_is_a_row_without_numbers_after_the_name(tmp_path):
    """Only a first row of two cells or more none of whose cells after the first is a number is a header."""
    data = _csv_row()
    assert len(read_csv(_csv_rows(tmp_path, [["image_name", "scale"], data]), str(tmp_path))) == 1
    for first in (["hands"], ["a.png", "0.8"] + ["x"] * (2 * J + 2)):
        with pytest.raises(BadSampleError, match=r"h\.csv line 1 annotation id 0: "):
            read_csv(_csv_rows(tmp_path, [first, data]), str(tmp_path))


def test_csv_image_ids_bom_and_quoted_names(tmp_path):
    """Image ids by first appearance of the name; a BOM is not part of the first name; a quoted name keeps its bytes."""
    rows = [_csv_row("a.png"), _csv_row("b.png"), _csv_row("a.png"), _csv_row("c\r\nd.png")]
    recs = read_csv(_csv_rows(tmp_path, rows, prefix=b"\xef\xbb\xbf"), str(tmp_path))
    assert [r.image_id for r in recs] == [0, 1, 0, 2] and [r.ann_id for r in recs] == [0, 1, 2, 3]
    assert recs[0].image_path == os.path.join(str(tmp_path), "a.png")
    assert recs[3].image_path.endswith("c\r\nd.png")


def test_csv_defaults_messages_and_skipped_list(tmp_path):
    """21 joints and on_bad error by default; a wrong column count names the columns for J joints;
    skip mode appends to the caller's list and warns naming the file; notes (a derived box) reach the warning."""
    from data import read_csv as read

    good, short = _csv_row(), _csv_row()[:-2]
    path = _csv_rows(tmp_path, [good, short])
    with pytest.raises(BadSampleError) as err:
        read(path, str(tmp_path))
    assert str(err.value) == (f"{path} line 2 annotation id 1: expected 46 columns (image_name, scale, center_w, "
                              "center_h, x0, y0 ... x20, y20), got 44")
    skipped = []
    with pytest.warns(UserWarning, match=rf"^{path}: skipped 1 bad sample"):
        assert len(read(path, str(tmp_path), on_bad="skip", skipped=skipped)) == 1
    assert skipped == [str(err.value)]
    far = _csv_row(xy=np.full((J, 2), 5000.0))
    with pytest.raises(BadSampleError, match=rf"^{path} line 1 annotation id 0: labelled keypoint\(s\) far outside"):
        read(_csv_rows(tmp_path, [far]), str(tmp_path))
    with pytest.warns(UserWarning, match=r"derived from the labelled keypoints"):
        spread = np.stack([np.arange(J) * 2.0, np.arange(J) % 4 * 3.0], axis=1)
        (rec,) = read(_csv_rows(tmp_path, [_csv_row(scale=0.0, xy=spread)]), str(tmp_path))
    np.testing.assert_allclose(rec.bbox, [0, 0, 41, 10])


def test_csv_not_utf8_names_the_file(tmp_path):
    from data.records import AnnotationFileError

    path = tmp_path / "h.csv"
    path.write_bytes(b"a.png,1,\xff\xfe\n")
    with pytest.raises(AnnotationFileError, match=rf"^{path}: not a readable UTF-8 CSV file"):
        read_csv(str(path), str(tmp_path))


# ------------------------------------------------------------------ the dataset: what each setting decides

def _solid(folder, n=3, size=(320, 240), bgr=(0, 0, 255), ext="png"):
    """``write_set`` with every image painted one colour (keypoints and boxes unchanged)."""
    ann_file, data = write_set(folder, n=n, size=size, ext=ext)
    for im in data["images"]:
        cv2.imwrite(os.path.join(folder, im["file_name"]), np.full((size[1], size[0], 3), bgr, np.uint8))
    return ann_file, data


def test_dataset_image_is_rgb_normalised_and_meta_types(tmp_path):
    """A red picture gives a high R channel (channel 0) after ImageNet normalisation; meta types as documented."""
    _solid(tmp_path)
    item = build_dataset(coco_cfg(tmp_path, "ann.json"), is_train=False)[0]
    means = item["image"].mean(dim=(1, 2)).numpy()
    np.testing.assert_allclose(means, [(1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0], -IMAGENET_MEAN[1] / IMAGENET_STD[1],
                                       -IMAGENET_MEAN[2] / IMAGENET_STD[2]], atol=1e-3)
    meta = item["meta"]
    assert meta["joints"].dtype == np.float32 and meta["bbox"].dtype == np.float32
    assert meta["scale"].dtype == np.float64 and meta["hm_to_img"].dtype == np.float64


def test_dataset_crop_follows_the_input_aspect_and_the_padding(tmp_path):
    """A 48 x 64 input: the crop box keeps that aspect around the padded hand box."""
    write_set(tmp_path, n=2)  # boxes 160 x 120
    ds = build_dataset(coco_cfg(tmp_path, "ann.json", "MODEL.IMAGE_SIZE", "[48, 64]", "MODEL.HEATMAP_SIZE", "[12, 16]",
                                "DATASET.BBOX_PADDING", "1.5"), is_train=False)
    item = ds[0]
    assert item["image"].shape == (3, 64, 48) and item["target"].shape == (J, 16, 12)
    np.testing.assert_allclose(item["meta"]["scale"], [1.5 * 160, 1.5 * 160 * 64 / 48])


def test_training_flip_only_when_flip_is_on(tmp_path):
    write_set(tmp_path, n=2)
    for flip in ("True", "False"):
        ds = build_dataset(coco_cfg(tmp_path, "ann.json", "DATASET.FLIP", flip, "DATASET.FLIP_PROB", "1.0"),
                           is_train=True)
        assert [ds[i]["meta"]["flip"] for i in range(2)] == [flip == "True"] * 2


def test_training_photometric_augmentation_on_the_bgr_crop(tmp_path):
    """Training crops get the photometric augmentation, drawn from the process's generator and applied
    to the BGR crop (hue shifts show a channel mix-up); with COLOR_AUG off the training crop is the test crop."""
    import random

    from data.transforms import Normalize, build_photometric_aug, get_affine_transform, warp_crop

    write_set(tmp_path, n=2)
    img = cv2.imread(str(tmp_path / "img0.png"))
    img[..., 0] = 40  # a colour: hue and saturation change it
    cv2.imwrite(str(tmp_path / "img0.png"), img)
    still = ["DATASET.SCALE_FACTOR", "0", "DATASET.ROT_PROB", "0", "DATASET.FLIP", "False"]
    color = ["DATASET.COLOR_PROB", "1.0", "DATASET.HUE", "40", "DATASET.SATURATION", "40", "DATASET.BLUR_PROB", "0",
             "DATASET.NOISE_PROB", "0"]
    test = build_dataset(coco_cfg(tmp_path, "ann.json", *still), is_train=False)[0]
    plain = build_dataset(coco_cfg(tmp_path, "ann.json", *still, "DATASET.COLOR_AUG", "False"), is_train=True)[0]
    assert torch.equal(plain["image"], test["image"])
    cfg = coco_cfg(tmp_path, "ann.json", *still, *color)
    ds = build_dataset(cfg, is_train=True)
    torch.manual_seed(3)
    got = ds[0]
    torch.testing.assert_close(got["target"], test["target"])
    _, photometric, py = np.random.SeedSequence(3).spawn(3)
    aug = build_photometric_aug(cfg)
    aug.set_random_state(np.random.default_rng(photometric), random.Random(int(py.generate_state(1)[0])))
    mat = get_affine_transform(got["meta"]["center"], got["meta"]["scale"], 0.0, (256, 256))
    crop = cv2.cvtColor(warp_crop(img, mat, (256, 256)), cv2.COLOR_BGRA2BGR)
    effects = aug.draw()
    assert effects
    expected = Normalize()(aug.apply(crop, effects, bgr=True), bgr=True)
    assert torch.equal(got["image"], torch.from_numpy(expected))
    assert not torch.equal(got["image"], test["image"])


def test_reduced_decode_reads_only_jpegs_at_a_reduced_size(tmp_path, monkeypatch):
    """The flag passed to cv2.imread: reduced for a large JPEG with REDUCED_DECODE on, full otherwise
    (a PNG, or the option off)."""
    import data.dataset as dataset_module

    flags = []
    imread = cv2.imread
    monkeypatch.setattr(dataset_module.cv2, "imread", lambda path, flag: flags.append(flag) or imread(path, flag))
    write_set(tmp_path / "jpg", n=1, size=(1600, 1200), box=(300, 200, 900, 800), radius=16.0, ext="jpg")
    write_set(tmp_path / "png", n=1, size=(1600, 1200), box=(300, 200, 900, 800), radius=16.0)
    cases = (("jpg", "True", True), ("jpg", "False", False), ("png", "True", False))
    for folder, reduced, expect_reduced in cases:
        ds = build_dataset(coco_cfg(tmp_path / folder, "ann.json", "DATASET.REDUCED_DECODE", reduced), is_train=False)
        flags.clear()
        ds[0]
        assert len(flags) == 1 and (flags[0] != cv2.IMREAD_COLOR) == expect_reduced, (folder, reduced, flags)


def test_dataset_records_indexing_and_sources(tmp_path):
    """record(i) is the annotation; indices -n .. n-1 are valid; messages name the annotation file."""
    from data.dataset import HandKeypointDataset

    ann_file, data = write_set(tmp_path, n=3)
    ds = build_dataset(coco_cfg(tmp_path, "ann.json"), is_train=False)
    assert ds.source == ann_file
    rec = ds.record(1)
    assert (rec.image_id, rec.ann_id) == (101, 501)
    np.testing.assert_allclose(rec.keypoints, np.reshape(data["annotations"][1]["keypoints"], (J, 3)))
    assert ds[-3]["meta"]["ann_id"] == 500
    for bad in (3, -4):
        with pytest.raises(IndexError, match=rf"^sample index {bad} out of range for 3 samples$"):
            ds[bad]
    with pytest.raises(ValueError, match="^dataset: no usable samples$"):
        HandKeypointDataset([], coco_cfg(tmp_path, "ann.json"), False)
    with pytest.raises(ValueError, match=r"^src: records have keypoints \(21, 3\), MODEL.NUM_JOINTS is 3$"):
        HandKeypointDataset([rec], coco_cfg(tmp_path, "ann.json", "MODEL.NUM_JOINTS", "3"), False, source="src")


def test_dataset_opencv_threads_and_pickling(tmp_path):
    """One OpenCV thread in the building process and in a process that unpickles the dataset (spawn workers)."""
    import pickle

    write_set(tmp_path, n=2)
    ds = build_dataset(coco_cfg(tmp_path, "ann.json"), is_train=False)
    assert cv2.getNumThreads() == 1
    cv2.setNumThreads(3)
    copy = pickle.loads(pickle.dumps(ds))
    assert cv2.getNumThreads() == 1 and copy.source == ds.source
    assert torch.equal(copy[1]["image"], ds[1]["image"])


def test_dataset_read_errors_and_consecutive_failures(tmp_path, monkeypatch):
    import data.dataset as dataset_module

    write_set(tmp_path, n=3)
    ds = build_dataset(coco_cfg(tmp_path, "ann.json", "DATASET.ON_BAD_SAMPLE", "skip"), is_train=True)

    def broken(path, flag):
        raise cv2.error("boom")

    monkeypatch.setattr(dataset_module.cv2, "imread", broken)
    with pytest.warns(UserWarning, match=r"img0\.png: cannot read or decode the image \(boom\) \(annotation id 500"):
        with pytest.raises(BadSampleError, match=rf"^{ds.source}: 10 consecutive samples from index 0 could not be "
                                                 "loaded$"):
            ds[0]


def test_check_images_defaults_and_the_image_check(tmp_path):
    """check_images keeps every record by default (limit 0) without a full decode, and checks the
    keypoints against the image size read from the file when the annotation file states none."""
    from data.dataset import check_images

    ann_file, data = write_set(tmp_path, n=3)
    for im in data["images"]:
        del im["width"], im["height"]
    data["annotations"][2]["keypoints"][:2] = [1000.0, 100.0]  # far right of the 320 px image
    del data["annotations"][2]["bbox"]
    rewrite(ann_file, data)
    recs = read_coco(ann_file, str(tmp_path), J)
    png = bytearray(open(tmp_path / "img1.png", "rb").read())
    i = png.index(b"IDAT")
    png[i + 4:i + 12] = b"\x55" * 8  # damaged pixel data: only a full decode finds it
    (tmp_path / "img1.png").write_bytes(bytes(png))
    skipped = []
    with pytest.warns(UserWarning, match=r"^src: skipped 1 bad sample"):
        kept = check_images(recs, "skip", "src", skipped=skipped)
    assert [r.ann_id for r in kept] == [500, 501]
    assert "img2.png: labelled keypoint(s) far outside the 320x240 image" in skipped[0] and "in src)" in skipped[0]


def test_build_dataset_messages(tmp_path, monkeypatch):
    import sys

    ann_file, data = write_set(tmp_path, n=2)
    cfg = coco_cfg(tmp_path, "ann.json")
    cfg.defrost()
    cfg.DATASET.FORMAT = "yaml"
    with pytest.raises(ValueError, match=r"^DATASET.FORMAT must be synthetic\|coco\|csv, got 'yaml'$"):
        build_dataset(cfg, is_train=False)
    rewrite(ann_file, dict(data, annotations=[]))
    with pytest.raises(BadSampleError, match=rf"^{ann_file}: no usable samples$"):
        build_dataset(coco_cfg(tmp_path, "ann.json"), is_train=False)
    for im in data["images"]:
        os.remove(tmp_path / im["file_name"])
    rewrite(ann_file, data)
    with pytest.warns(UserWarning, match="skipped 2 bad sample"):
        with pytest.raises(BadSampleError, match=rf"^{ann_file}: no usable samples \(2 skipped, "
                                                 r"DATASET.ON_BAD_SAMPLE skip\)$"):
            build_dataset(coco_cfg(tmp_path, "ann.json", "DATASET.ON_BAD_SAMPLE", "skip"), is_train=False)
    monkeypatch.setitem(sys.modules, "data.synthetic", None)
    with pytest.raises(ImportError, match=r"^DATASET.FORMAT synthetic needs data.synthetic.ensure_dataset \(the "
                                          r"synthetic hand renderer\), which could not be imported; use DATASET.FORMAT "
                                          r"coco\|csv for a real dataset \("):
        build_dataset(coco_cfg(tmp_path, "ann.json", fmt="synthetic"), is_train=False)
