"""Hand keypoints on your own images or video: annotated pictures and COCO keypoint results.

    python tools/demo.py --cfg FILE --model-file M.pth --input PATH --out DIR
                         [--bbox X Y W H | --boxes COCO.json] [--backend torch|onnxruntime]
                         [--batch N] [KEY VALUE ...]

``PATH`` is an image, a folder of images (not recursive) or a video file. Each hand is a box
``[x, y, w, h]`` in pixels (COCO convention): ``--bbox`` for every image or frame, ``--boxes`` a
COCO json whose ``images[].file_name`` (matched by base name) and ``annotations[].bbox`` give the
hands of each image; without either, or for an image the json does not list, the whole image is
the box. The hand is cropped as the test set's hands (``DATASET.BBOX_PADDING``), and
``TEST.FLIP_TEST`` / ``TEST.DECODE`` apply as in ``tools/test.py``.

Writes into ``DIR``: the annotated images under their own names (a video: ``<name>_keypoints.mp4``)
and ``keypoints.json``: one COCO keypoint result per hand, ``{"image_id", "file_name",
"category_id", "bbox", "keypoints": [x, y, score] * 21, "score"}`` (for a video ``image_id`` is
the frame index). ``--backend onnxruntime`` runs a ``tools/export.py`` ONNX file on the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import _cli
import _paths  # noqa: F401  (repository root on sys.path)

import cv2
import numpy as np
import torch

from configs import load_config

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass
class Frame:
    """One image or video frame: ``name`` (file name / video path), ``image_id``, BGR ``image``."""
    name: str
    image_id: int
    image: np.ndarray


def list_images(folder: str) -> List[str]:
    """The image files of ``folder`` (by extension), sorted by name."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTS))
    if not names:
        raise _cli.UserError(f"{folder}: no image files ({', '.join(IMAGE_EXTS)}) in the folder")
    return [os.path.join(folder, n) for n in names]


def read_image(path: str) -> np.ndarray:
    """BGR uint8 image, or a one-line error naming the file."""
    img = cv2.imread(path, cv2.IMREAD_COLOR) if os.path.isfile(path) else None
    if img is None:
        raise _cli.UserError(f"{path}: cannot read the image (missing, not an image, or damaged)")
    return img


def iter_images(paths: List[str]) -> Iterator[Frame]:
    for i, path in enumerate(paths):
        yield Frame(path, i, read_image(path))


def open_video(path: str) -> Tuple[cv2.VideoCapture, float, int]:
    """An opened capture, its frame rate and its frame count (0 if unknown)."""
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise _cli.UserError(f"{path}: cannot open the video (missing, damaged, or a codec OpenCV lacks)")
    fps = cap.get(cv2.CAP_PROP_FPS)
    return cap, fps if fps and fps > 0 else 25.0, max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))


def iter_video(cap: cv2.VideoCapture, path: str) -> Iterator[Frame]:
    index = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        yield Frame(path, index, frame)
        index += 1
    cap.release()
    if index == 0:
        raise _cli.UserError(f"{path}: the video has no readable frame")


def read_boxes(path: str) -> Dict[str, List[List[float]]]:
    """``--boxes``: base file name -> the ``[x, y, w, h]`` boxes of its annotations."""
    try:
        with open(path) as f:
            data = json.load(f)
        names = {int(im["id"]): os.path.basename(str(im["file_name"])) for im in data["images"]}
        boxes: Dict[str, List[List[float]]] = {}
        for ann in data.get("annotations", []):
            box = [float(v) for v in ann["bbox"]]
            if len(box) != 4:
                raise ValueError(f"annotation id {ann.get('id')}: bbox must be [x, y, w, h], got {ann['bbox']}")
            boxes.setdefault(names[int(ann["image_id"])], []).append(box)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise _cli.UserError(f"{path}: not a usable COCO box file ({type(exc).__name__}: {exc})") from None
    return boxes


def boxes_for(frame: Frame, bbox: Optional[List[float]], boxes: Optional[Dict[str, List[List[float]]]]
              ) -> np.ndarray:
    """The (K, 4) hand boxes of ``frame``, each checked to overlap the image."""
    from hrnet.evaluation.inference import box_in_image

    h, w = frame.image.shape[:2]
    if bbox is not None:
        chosen = [bbox]
    elif boxes is not None and os.path.basename(frame.name) in boxes:
        chosen = boxes[os.path.basename(frame.name)]
    else:
        chosen = [[0.0, 0.0, float(w), float(h)]]
    for box in chosen:
        if not box_in_image(box, w, h):
            where = frame.name if frame.name.lower().endswith(IMAGE_EXTS) else f"{frame.name} frame {frame.image_id}"
            raise _cli.UserError(f"{where}: box {box} (x y w h) is empty or outside the {w}x{h} image")
    return np.asarray(chosen, dtype=np.float64).reshape(-1, 4)


def chunks(frames: Iterator[Frame], batch: int) -> Iterator[List[Frame]]:
    """Frames in groups of ``batch`` (a group of images = one forward of their hands)."""
    group: List[Frame] = []
    for frame in frames:
        group.append(frame)
        if len(group) >= batch:
            yield group
            group = []
    if group:
        yield group


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", default=None, help="experiment yaml (the run's config.yaml)")
    parser.add_argument("--model-file", required=True, help="checkpoint / state_dict, or .onnx with "
                                                            "--backend onnxruntime")
    parser.add_argument("--input", required=True, help="an image, a folder of images or a video file")
    boxes_arg = parser.add_mutually_exclusive_group()
    boxes_arg.add_argument("--bbox", type=float, nargs=4, metavar=("X", "Y", "W", "H"),
                           help="hand box for every image / frame (default: the whole image)")
    boxes_arg.add_argument("--boxes", default=None, help="COCO json with the hand boxes per image")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"))
    parser.add_argument("--batch", type=int, default=16, help="images (frames) per forward pass")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args, opts = _cli.parse_with_overrides(parser, argv)  # KEY VALUE config overrides anywhere
    if args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}")

    cfg = load_config(args.cfg, opts)
    from tqdm import tqdm

    from hrnet.runtime.device import select_device
    from hrnet.evaluation.evaluate import to_coco_results
    from hrnet.evaluation.inference import crop_hands, load_onnx_model, predict_crops
    from hrnet.evaluation.visualize import draw_hand

    path = args.input
    video = os.path.isfile(path) and path.lower().endswith(VIDEO_EXTS)
    if not os.path.exists(path):
        raise _cli.UserError(f"{path}: --input not found")
    if video and args.boxes:
        raise _cli.UserError(f"{path}: --boxes is for images; give a video one --bbox")
    boxes = read_boxes(args.boxes) if args.boxes else None
    if os.path.isdir(path):
        paths = list_images(path)
        if os.path.realpath(args.out) == os.path.realpath(path):
            raise _cli.UserError(f"{args.out}: --out must differ from the --input folder (images would be overwritten)")
        frames, total = iter_images(paths), len(paths)
    elif video:
        cap, fps, total = open_video(path)
        frames = iter_video(cap, path)
    else:
        frames, total = iter_images([path]), 1

    if args.backend == "onnxruntime":
        device = torch.device("cpu")
        try:
            model = load_onnx_model(args.model_file, cfg)
        except ImportError as exc:
            raise _cli.UserError(str(exc)) from None
        print(f"model: {args.model_file} (onnxruntime, CPU)")
    else:
        from hrnet.evaluation.model_file import load_model_file

        device = select_device(cfg.DEVICE)
        model, info = load_model_file(cfg, args.model_file, device)
        print(f"model: {info.describe()} on {device}")

    os.makedirs(args.out, exist_ok=True)
    writer = None
    results: List[dict] = []
    progress = tqdm(total=total or None, unit="frame" if video else "image", disable=args.no_progress,
                    dynamic_ncols=True)
    for group in chunks(frames, args.batch):
        hand_boxes = [boxes_for(f, args.bbox, boxes) for f in group]
        crops = [crop_hands(f.image, b, cfg) for f, b in zip(group, hand_boxes)]
        pred = predict_crops(model, torch.cat([c[0] for c in crops]), np.concatenate([c[1] for c in crops]),
                             cfg, device)
        start = 0
        for frame, fboxes in zip(group, hand_boxes):
            k = len(fboxes)
            p, s = pred["preds"][start:start + k], pred["scores"][start:start + k]
            start += k
            rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
            for box, pts in zip(fboxes, p):
                rgb = draw_hand(rgb, None if args.bbox is None and boxes is None else box, pts)
            out_img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            if video:
                if writer is None:
                    out_path = os.path.join(args.out, os.path.splitext(os.path.basename(path))[0] + "_keypoints.mp4")
                    writer = cv2.VideoWriter(out_path, cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                             (out_img.shape[1], out_img.shape[0]))
                    if not writer.isOpened():
                        raise _cli.UserError(f"{out_path}: cannot write the video")
                writer.write(out_img)
            else:
                out_path = os.path.join(args.out, os.path.basename(frame.name))
                if not cv2.imwrite(out_path, out_img):
                    raise _cli.UserError(f"{out_path}: cannot write the image")
            ids = np.full(k, frame.image_id, dtype=np.int64)
            for entry, box in zip(to_coco_results({"preds": p, "scores": s, "image_id": ids,
                                                   "ann_id": np.arange(len(results), len(results) + k)}), fboxes):
                entry.update({"file_name": os.path.basename(frame.name), "bbox": [float(v) for v in box]})
                results.append(entry)
        progress.update(len(group))
    progress.close()
    if writer is not None:
        writer.release()
    json_path = os.path.join(args.out, "keypoints.json")
    with open(json_path, "w") as f:
        json.dump(results, f)
    what = f"{out_path}" if video else f"{total} annotated image(s) in {args.out}"
    print(f"wrote {what} and {json_path} ({len(results)} hands)")
    return 0


if __name__ == "__main__":
    sys.exit(_cli.run(main))
