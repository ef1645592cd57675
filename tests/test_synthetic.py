"""The synthetic hand renderer: determinism, the COCO files, keypoints on the drawn hand, ensure_dataset."""
import filecmp
import json
import os
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from conftest import ROOT, make_cfg
from data.synthetic import RENDER_VERSION, ensure_dataset, generate, render_sample
from data.synthetic import kinematics as kin
from data.synthetic import draw

sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_synthetic_hands  # noqa: E402

TIPS = (4, 8, 12, 16, 20)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    """A 40 / 10 set rendered by the command-line tool in one process, with its preview; and the time."""
    out = tmp_path_factory.mktemp("hands") / "set"
    sheet = out.parent / "sheet.png"
    start = time.perf_counter()
    rc = make_synthetic_hands.main(["--out", str(out), "--train", "40", "--test", "10", "--seed", "0",
                                    "--workers", "1", "--no-progress", "--preview", str(sheet)])
    took = time.perf_counter() - start
    assert rc == 0
    return out, sheet, took


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_small_split_renders_in_seconds_with_a_preview(small_set):
    out, sheet, took = small_set
    assert took < 20.0, f"40 + 10 images took {took:.1f} s"
    assert len(os.listdir(out / "images" / "train")) == 40 and len(os.listdir(out / "images" / "test")) == 10
    img = cv2.imread(str(sheet))
    assert img is not None and img.shape == (1024, 1024, 3)      # 4 x 4 tiles of 256 pixels
    assert img.std() > 20                                        # drawn, not blank


def test_same_seed_same_bytes_whatever_the_workers(small_set, tmp_path):
    out, _, _ = small_set
    other = tmp_path / "two_workers"
    generate(str(other), 40, 10, seed=0, workers=2, progress=False, chunk_size=7)
    names = _files(out)
    assert names == _files(other) and len(names) == 52
    _, mismatch, errors = filecmp.cmpfiles(out, other, names, shallow=False)
    assert not mismatch and not errors
    # A different seed gives different images (so the comparison above can fail).
    third = tmp_path / "seed1"
    generate(str(third), 2, 1, seed=1, progress=False)
    assert not filecmp.cmp(out / "images" / "train" / "000000.jpg", third / "images" / "train" / "000000.jpg",
                           shallow=False)


def test_json_schema_matches_the_real_samples(small_set, real_hands):
    out, _, _ = small_set
    with open(os.path.join(real_hands, "onehand10k", "test_onehand10k.json")) as fh:
        real = json.load(fh)
    for split, n in (("train", 40), ("test", 10)):
        with open(out / f"{split}.json") as fh:
            data = json.load(fh)
        info = data["info"]
        assert (info["num_train"], info["num_test"], info["seed"]) == (40, 10, 0)
        assert info["renderer_version"] == RENDER_VERSION and info["split"] == split
        cat = data["categories"][0]
        assert cat["id"] == 1 and cat["keypoints"] == real["categories"][0]["keypoints"]
        assert cat["skeleton"] == real["categories"][0]["skeleton"]
        assert len(data["images"]) == len(data["annotations"]) == n
        assert len({im["id"] for im in data["images"]}) == n
        for im, ann in zip(data["images"], data["annotations"]):
            assert set(im) == {"id", "file_name", "width", "height"}
            assert {"id", "image_id", "category_id", "bbox", "keypoints", "num_keypoints", "area",
                    "iscrowd"} <= set(ann)
            assert ann["image_id"] == im["id"] and ann["category_id"] == 1 and ann["iscrowd"] == 0
            jpg = cv2.imread(str(out / im["file_name"]))
            assert jpg.shape[:2] == (im["height"], im["width"])
            assert 160 <= min(jpg.shape[:2]) and max(jpg.shape[:2]) <= 400
            kp = np.array(ann["keypoints"], dtype=np.float64).reshape(21, 3)
            lab = kp[:, 2] > 0
            assert set(kp[:, 2]) <= {0.0, 1.0} and ann["num_keypoints"] == lab.sum() >= 12
            assert (kp[~lab, :2] == 0).all()
            x, y, w, h = ann["bbox"]
            assert w > 0 and h > 0 and ann["area"] == pytest.approx(w * h, abs=0.05)
            assert 0 <= x and 0 <= y and x + w <= im["width"] + 1e-6 and y + h <= im["height"] + 1e-6
            # The box holds the labelled keypoints (edges = centres + 0.5) with a small margin.
            lo, hi = kp[lab, :2].min(0) + 0.5, kp[lab, :2].max(0) + 0.5
            assert x <= lo[0] and y <= lo[1] and hi[0] <= x + w and hi[1] <= y + h
            assert max(w, h) <= (hi - lo).max() * 1.31 + 0.1


def test_files_hold_the_rendered_samples(small_set):
    """JSON keypoints are the renderer's (to 0.01 px) and each JPEG is its rendered image."""
    out, _, _ = small_set
    with open(out / "test.json") as fh:
        anns = json.load(fh)["annotations"]
    for i in (0, 3, 9):
        s = render_sample(0, "test", i)
        np.testing.assert_allclose(np.array(anns[i]["keypoints"]).reshape(21, 3), s.keypoints, atol=0.005)
        jpg = cv2.cvtColor(cv2.imread(str(out / "images" / "test" / f"{i:06d}.jpg")), cv2.COLOR_BGR2RGB)
        mse = np.mean((jpg.astype(np.float64) - s.image) ** 2)
        assert 10 * np.log10(255 ** 2 / mse) > 25                # JPEG of the very same image


def test_loads_through_build_dataset(small_set):
    from data import build_dataset

    out, _, _ = small_set
    stamp = os.path.getmtime(out / "train.json")
    cfg = make_cfg(None, ["DATASET.ROOT", str(out), "DATASET.SYNTHETIC.NUM_TRAIN", "40",
                          "DATASET.SYNTHETIC.NUM_TEST", "10", "WORKERS", "1"])
    assert cfg.DATASET.FORMAT == "synthetic"
    train, test = build_dataset(cfg, True), build_dataset(cfg, False)
    assert (len(train), len(test)) == (40, 10)
    assert os.path.getmtime(out / "train.json") == stamp        # found, not rendered again
    with open(out / "test.json") as fh:
        ann = json.load(fh)["annotations"][2]
    item = test[2]
    assert tuple(item["image"].shape) == (3, 256, 256)
    np.testing.assert_allclose(item["meta"]["joints"], np.array(ann["keypoints"]).reshape(21, 3), atol=1e-3)
    assert int(item["meta"]["ann_id"]) == ann["id"]


def _skin_residual(pixel: np.ndarray, tones) -> float:
    """Distance (0-255 units) from ``pixel`` to the nearest shaded skin tone k * tone, k in [0.3, 1.35]."""
    best = np.inf
    for t in tones:
        k = float(pixel @ t / (t @ t))
        if 0.3 <= k <= 1.35:
            best = min(best, float(np.linalg.norm(pixel - k * t)))
    return best


def test_visible_fingertips_are_skin_coloured():
    """Keypoints land on the drawn hand: an unoccluded fingertip's pixel has the hand's skin colour
    (a shade of the dorsal or palmar tone); 3 finger widths beyond the tip, mostly it has not."""
    on_tip, beyond = [], []
    for i in range(60):
        s = render_sample(0, "test", i)
        img, kp, meta = s.image.astype(np.float64), s.keypoints, s.meta
        h, w = img.shape[:2]
        tones = (meta["skin_rgb"], meta["palm_rgb"])
        for j in TIPS:
            # Tips thinner than 2.5 px are mostly anti-aliased edge; occluders cover the others.
            if kp[j, 2] == 0 or meta["occluded"][j] or meta["radius_px"][j] < 2.5:
                continue
            x, y = np.round(kp[j, :2]).astype(int)
            on_tip.append((i, j, _skin_residual(img[y, x], tones)))
            d = kp[j, :2] - kp[j - 1, :2]
            q = np.round(kp[j, :2] + d / max(np.linalg.norm(d), 1e-6) * 3 * meta["radius_px"][j]).astype(int)
            if 0 <= q[0] < w and 0 <= q[1] < h:
                beyond.append(_skin_residual(img[q[1], q[0]], tones))
    assert len(on_tip) >= 100
    bad = [(i, j, round(r, 1)) for i, j, r in on_tip if r > 30]
    assert not bad, f"fingertips not skin-coloured (image, keypoint, residual): {bad}"
    assert np.mean(np.array(beyond) <= 30) < 0.7                 # the check tells hand from scene


def test_v0_exactly_outside_the_image():
    seen_outside = 0
    for i in range(80):
        s = render_sample(0, "train", i)
        h, w = s.image.shape[:2]
        proj = s.meta["projected"]
        inside = (proj[:, 0] >= -0.5) & (proj[:, 0] <= w - 0.5) & (proj[:, 1] >= -0.5) & (proj[:, 1] <= h - 0.5)
        assert ((s.keypoints[:, 2] > 0) == inside).all()
        np.testing.assert_array_equal(s.keypoints[inside, :2], proj[inside])
        assert (s.keypoints[~inside] == 0).all()
        seen_outside += int((~inside).any())
    assert seen_outside >= 3                                     # crops happen (about 1 in 10)


def test_kinematics_within_joint_limits_and_bone_lengths():
    rng = np.random.default_rng(0)
    for _ in range(200):
        shape, pose = kin.sample_shape(rng), kin.sample_pose(rng)
        assert ((pose["flex"] >= kin.FLEX_LIMIT[..., 0]) & (pose["flex"] <= kin.FLEX_LIMIT[..., 1])).all()
        assert ((pose["abd"] >= kin.ABD_LIMIT[:, 0]) & (pose["abd"] <= kin.ABD_LIMIT[:, 1])).all()
        hand = kin.forward_kinematics(shape, pose)
        fingers = hand.joints[1:].reshape(5, 4, 3)
        bones = np.linalg.norm(np.diff(fingers, axis=1), axis=2)
        np.testing.assert_allclose(bones, kin._LENGTH * shape["finger_len"] * shape["size"], rtol=1e-9)
    # Flexion bends towards the palm (+z), abduction fans the fingers in the palm plane.
    shape = kin.sample_shape(rng)
    flat = {"abd": np.zeros(5), "flex": np.zeros((5, 3)), "wrist": np.zeros(2), "cup": 0.0}
    bent = dict(flat, flex=np.full((5, 3), 40.0))
    spread = dict(flat, abd=np.array([0.0, 10.0, 0.0, 0.0, -10.0]))
    tips = lambda pose: kin.forward_kinematics(shape, pose).joints[[8, 12, 16, 20]]  # noqa: E731
    np.testing.assert_allclose(tips(flat)[:, 2], 0.0, atol=1e-9)
    assert (tips(bent)[:, 2] > 20.0).all()
    gap = lambda pose: tips(pose)[0, 0] - tips(pose)[3, 0]  # noqa: E731  (index tip x - pinky tip x)
    assert gap(spread) > gap(flat) + 20.0
    rot = kin.sample_rotation(rng)
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)


def test_ensure_dataset_renders_once_even_when_called_concurrently(tmp_path):
    root = tmp_path / "data" / "hands"
    opts = ["DATASET.ROOT", str(root), "DATASET.SYNTHETIC.NUM_TRAIN", "3", "DATASET.SYNTHETIC.NUM_TEST", "2",
            "DATASET.SYNTHETIC.SEED", "5", "WORKERS", "1"]
    cfg = make_cfg(None, opts)
    results, errors = [], []

    def call():
        try:
            results.append(ensure_dataset(cfg))
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    # Separate open() calls take separate flock locks, so threads contend like DDP ranks would.
    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [str(root)] * 3
    assert sorted(os.listdir(root.parent)) == [".hands.lock", "hands"]   # no temporary folders left
    assert len(os.listdir(root / "images" / "train")) == 3 and len(os.listdir(root / "images" / "test")) == 2
    stamp = os.path.getmtime(root / "train.json")
    assert ensure_dataset(cfg) == str(root) and os.path.getmtime(root / "train.json") == stamp

    # Each identity field of the rendered set is checked, the seed too: a set of another seed is
    # other images, never reused silently.
    for key, value, has in (("NUM_TRAIN", "4", "3"), ("NUM_TEST", "1", "2"), ("SEED", "6", "5")):
        other = list(opts)
        other[other.index(f"DATASET.SYNTHETIC.{key}") + 1] = value
        with pytest.raises(RuntimeError, match=rf"^the synthetic hand set in {root} does not match the config: "
                                               rf"DATASET.SYNTHETIC.{key} {value} \(the set has {has}\)\. "):
            ensure_dataset(make_cfg(None, other))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("x")
    with pytest.raises(RuntimeError, match="not empty"):
        ensure_dataset(make_cfg(None, ["DATASET.ROOT", str(busy)] + opts[2:]))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for name in ("train.json", "test.json"):
        (foreign / name).write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(RuntimeError, match="not written by the synthetic renderer"):
        ensure_dataset(make_cfg(None, ["DATASET.ROOT", str(foreign)] + opts[2:]))
    os.remove(root / "test.json")
    with pytest.raises(RuntimeError, match="test.json is missing"):
        ensure_dataset(cfg)


@pytest.mark.parametrize("case", ["other_set", "not_empty", "foreign_json"])
def test_a_folder_without_the_wanted_set_is_one_error_line_naming_it(tmp_path, capsys, case):
    """tools/test.py --oracle on DATASET.FORMAT synthetic: a DATASET.ROOT holding another set, other
    files or another program's COCO files ends in one ``error:`` line naming the folder / file."""
    import _cli
    import test as test_tool  # tools/test.py

    root = tmp_path / "hands"
    named = str(root)
    if case == "other_set":
        generate(str(root), 1, 1, seed=0, progress=False)    # the config below wants 2 + 1 images
    elif case == "not_empty":
        root.mkdir()
        (root / "notes.txt").write_text("x")
    else:
        root.mkdir()
        for name in ("train.json", "test.json"):
            (root / name).write_text(json.dumps({"images": [], "annotations": []}))
        named = str(root / "train.json")
    before = _files(root)
    code = _cli.run(test_tool.main, ["--oracle", "--no-progress", "DATASET.FORMAT", "synthetic",
                                     "DATASET.ROOT", str(root), "DATASET.SYNTHETIC.NUM_TRAIN", "2",
                                     "DATASET.SYNTHETIC.NUM_TEST", "1", "WORKERS", "0"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and named in err, err
    assert _files(root) == before                                 # never replaced nor rendered into


def test_drawing_uses_the_pixel_centre_convention():
    """A shape drawn around (x, y) by the renderer's sub-pixel drawing has its centroid at (x, y):
    integer coordinates are pixel centres, as in data/transforms.py."""
    for centre in ((10.25, 12.5), (20.0, 19.0), (15.75, 9.3)):
        c = np.array([centre])
        hull = draw.capsule_hulls(c, c, np.array([6.0]), np.array([6.0]))[0]
        canvas = np.zeros((40, 40), np.uint8)
        cv2.fillConvexPoly(canvas, hull, 255, cv2.LINE_AA, draw.SHIFT)
        ys, xs = np.mgrid[:40, :40]
        wsum = canvas.sum(dtype=np.float64)
        got = ((canvas * xs).sum() / wsum, (canvas * ys).sum() / wsum)
        np.testing.assert_allclose(got, centre, atol=0.05)


def test_interrupted_render_leftovers_are_removed_at_the_next_start(tmp_path):
    root = tmp_path / "hands"
    stale = tmp_path / ".hands.tmp-abc123"  # what a kill -9 during a render leaves
    (stale / "images" / "train").mkdir(parents=True)
    (stale / "images" / "train" / "000000.jpg").write_bytes(b"x" * 1000)
    other = tmp_path / ".other.tmp-zzz"  # another set's render: not ours to delete
    other.mkdir()
    cfg = make_cfg(None, ["DATASET.ROOT", str(root), "DATASET.SYNTHETIC.NUM_TRAIN", "2",
                          "DATASET.SYNTHETIC.NUM_TEST", "1", "WORKERS", "1"])
    assert ensure_dataset(cfg) == str(root)
    assert sorted(os.listdir(tmp_path)) == [".hands.lock", ".other.tmp-zzz", "hands"]
