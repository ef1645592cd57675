"""tools/demo.py: images, folders and videos in; annotated pictures and COCO keypoints out."""
from __future__ import annotations

import json
import os
import shutil
import sys

import cv2
import numpy as np
import pytest
import torch

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import _cli  # noqa: E402
import demo  # noqa: E402

TINY = ["CHANNELS_LAST", "False", "MODEL.NAME", "hrnet_w18_small", "MODEL.IMAGE_SIZE", "[64, 64]",
        "MODEL.HEATMAP_SIZE", "[16, 16]"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random-weight hrnet_w18_small checkpoint (with its config) and that config's yaml."""
    from configs import load_config
    from hrnet import build_model
    from hrnet.runtime.checkpoint import save_checkpoint

    folder = tmp_path_factory.mktemp("tiny")
    cfg = load_config(None, TINY)
    torch.manual_seed(0)
    model = build_model(cfg)
    ckpt = str(folder / "model.pth")
    save_checkpoint({"state_dict": model.state_dict(), "config": cfg.dump()}, ckpt)
    yaml = str(folder / "tiny.yaml")
    with open(yaml, "w") as f:
        f.write(cfg.dump())
    return {"cfg": cfg, "model": model.eval(), "ckpt": ckpt, "yaml": yaml, "dir": folder}


def run(tiny, *args):
    return _cli.run(demo.main, ["--cfg", tiny["yaml"], "--model-file", tiny["ckpt"], "--no-progress", *args])


def reference(tiny, image_bgr, box):
    """Independent reference: the test dataset's crop of the same box through the model and codec."""
    from data.codec import HeatmapCodec
    from data.transforms import Normalize, box_to_center_scale, get_affine_transform, transform_points, warp_crop

    center, scale = box_to_center_scale(box, 1.0, 1.25)
    crop = warp_crop(image_bgr, get_affine_transform(center, scale, 0, (64, 64)), (64, 64))
    x = torch.from_numpy(Normalize()(crop, bgr=True))[None]
    with torch.no_grad():
        hm = tiny["model"](x)
    xy, score = HeatmapCodec.from_cfg(tiny["cfg"]).decode(hm)
    return transform_points(xy[0].double().numpy(), get_affine_transform(center, scale, 0, (16, 16), inverse=True)), \
        score[0].numpy()


def test_image_with_and_without_box(tiny, real_hands, tmp_path):
    src = os.path.join(real_hands, "onehand10k", "33.jpg")
    img = cv2.imread(src)
    h, w = img.shape[:2]
    for box, sub in (([30.0, 120.0, 90.0, 110.0], "box"), (None, "whole")):
        out = tmp_path / sub
        assert run(tiny, "--input", src, "--out", str(out), *(["--bbox", *map(str, box)] if box else [])) == 0
        (res,) = json.load(open(out / "keypoints.json"))
        expect_box = box or [0.0, 0.0, float(w), float(h)]
        assert res["bbox"] == expect_box and res["file_name"] == "33.jpg" and res["category_id"] == 1
        kp = np.array(res["keypoints"]).reshape(21, 3)
        ref_xy, ref_s = reference(tiny, img, expect_box)
        np.testing.assert_allclose(kp[:, :2], ref_xy, atol=1e-3)
        np.testing.assert_allclose(kp[:, 2], ref_s, atol=1e-6)
        annotated = cv2.imread(str(out / "33.jpg"))
        assert annotated.shape == img.shape and np.abs(annotated.astype(int) - img).max() > 100


def test_folder_with_coco_boxes_and_batches(tiny, real_hands, tmp_path):
    root = os.path.join(real_hands, "freihand")
    ann = json.load(open(os.path.join(root, "test_freihand.json")))
    names = {im["id"]: im["file_name"] for im in ann["images"]}
    out = tmp_path / "out"
    assert run(tiny, "--input", root, "--out", str(out), "--boxes", os.path.join(root, "test_freihand.json"),
               "--batch", "3") == 0
    res = json.load(open(out / "keypoints.json"))
    assert len(res) == len(ann["annotations"])
    by_name = {r["file_name"]: r for r in res}
    for a in ann["annotations"]:
        r = by_name[os.path.basename(names[a["image_id"]])]
        assert r["bbox"] == [float(v) for v in a["bbox"]]
    first = sorted(by_name)[0]
    ref_xy, _ = reference(tiny, cv2.imread(os.path.join(root, first)), by_name[first]["bbox"])
    np.testing.assert_allclose(np.array(by_name[first]["keypoints"]).reshape(21, 3)[:, :2], ref_xy, atol=1e-3)
    assert sorted(os.listdir(out)) == sorted(list(by_name) + ["keypoints.json"])


def test_boxes_file_skips_and_names_images_it_gives_no_box(tiny, real_hands, tmp_path, capsys):
    """--boxes covering one of two images: the other is skipped and named, never given the whole
    image as an invented box; keypoints.json holds only the boxed image's hands."""
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("33.jpg", "9.jpg"):
        shutil.copy(os.path.join(real_hands, "onehand10k", name), folder / name)
    box = [30.0, 120.0, 90.0, 110.0]
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"images": [{"id": 7, "file_name": "photos/33.jpg"}],
                                 "annotations": [{"id": 1, "image_id": 7, "bbox": box}]}))
    out = tmp_path / "out"
    assert run(tiny, "--input", str(folder), "--out", str(out), "--boxes", str(boxes)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"skipped: {folder / '9.jpg'}: no box in {boxes}" in lines
    assert "skipped 1 image(s) with no box" in lines[-1] and "1 annotated image(s)" in lines[-1]
    res = json.load(open(out / "keypoints.json"))
    assert [(r["file_name"], r["bbox"]) for r in res] == [("33.jpg", box)]
    assert sorted(os.listdir(out)) == ["33.jpg", "keypoints.json"]


def test_video_in_annotated_video_out(tiny, tmp_path):
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 80))
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for _ in range(5):
        writer.write(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8))
    writer.release()
    out = tmp_path / "out"
    assert run(tiny, "--input", path, "--out", str(out), "--batch", "2", "--bbox", "10", "10", "60", "50") == 0
    res = json.load(open(out / "keypoints.json"))
    assert [r["image_id"] for r in res] == [0, 1, 2, 3, 4]
    cap = cv2.VideoCapture(str(out / "clip_keypoints.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    assert frames == 5


@pytest.mark.parametrize("case", ["unreadable", "video", "box", "other_model", "missing_folder_images",
                                  "no_image_boxed"])
def test_bad_input_is_one_line_naming_the_file(tiny, real_hands, tmp_path, capsys, case):
    src = os.path.join(real_hands, "onehand10k", "33.jpg")
    args, name = ["--input", src], src
    if case == "unreadable":
        name = str(tmp_path / "broken.jpg")
        with open(name, "wb") as f:
            f.write(b"not a jpeg at all")
        args = ["--input", name]
    elif case == "video":
        name = str(tmp_path / "broken.mp4")
        with open(name, "wb") as f:
            f.write(b"\x00" * 100)
        args = ["--input", name]
    elif case == "box":
        args += ["--bbox", "5000", "10", "40", "40"]
    elif case == "other_model":
        from configs import load_config
        from hrnet import build_model
        from hrnet.runtime.checkpoint import save_checkpoint

        cfg = load_config(None, TINY[:2] + ["MODEL.NAME", "hrnet_w18_small_v2"] + TINY[4:])
        name = str(tmp_path / "other.pth")
        save_checkpoint({"state_dict": build_model(cfg).state_dict()}, name)
        args += ["--model-file", name]
    elif case == "missing_folder_images":
        name = str(tmp_path / "empty")
        os.makedirs(name)
        args = ["--input", name]
    elif case == "no_image_boxed":  # --boxes names no image of --input: nothing to do
        name = str(tmp_path / "boxes.json")
        with open(name, "w") as f:
            json.dump({"images": [{"id": 1, "file_name": "other.jpg"}],
                       "annotations": [{"id": 1, "image_id": 1, "bbox": [0, 0, 10, 10]}]}, f)
        args += ["--boxes", name]
    code = run(tiny, *args, "--out", str(tmp_path / "out"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and name in err, err


def test_onnxruntime_backend_matches_torch(tiny, real_hands, tmp_path):
    pytest.importorskip("onnxruntime")
    from hrnet.evaluation.export import export_model

    onnx_path = str(tmp_path / "m.onnx")
    export_model(tiny["model"], tiny["cfg"], "onnx", onnx_path)
    src = os.path.join(real_hands, "onehand10k", "9.jpg")
    assert _cli.run(demo.main, ["--cfg", tiny["yaml"], "--model-file", onnx_path, "--backend", "onnxruntime",
                                "--input", src, "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert run(tiny, "--input", src, "--out", str(tmp_path / "t")) == 0
    a = np.array(json.load(open(tmp_path / "o" / "keypoints.json"))[0]["keypoints"])
    b = np.array(json.load(open(tmp_path / "t" / "keypoints.json"))[0]["keypoints"])
    np.testing.assert_allclose(a, b, atol=1e-3)
    # an ONNX file of another input size is refused, naming the file
    cfg128 = ["MODEL.IMAGE_SIZE", "[128, 128]", "MODEL.HEATMAP_SIZE", "[32, 32]"]
    code = _cli.run(demo.main, ["--cfg", tiny["yaml"], "--model-file", onnx_path, "--backend", "onnxruntime",
                                "--input", src, "--out", str(tmp_path / "x"), "--no-progress", *cfg128])
    assert code == 2
    shutil.rmtree(tmp_path / "o")
