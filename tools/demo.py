"""Hand keypoints on your own images or video: annotated pictures and COCO keypoint results.

    python tools/demo.py --cfg FILE --model-file M.pth --input PATH --out DIR
                         [--bbox X Y W H | --boxes COCO.json] [--backend torch|onnxruntime]
                         [--batch N] [KEY VALUE ...]

``PATH`` is an image, a folder of images (not recursive) or a video file. Each hand is a box
``[x, y, w, h]`` in pixels (COCO convention): ``--bbox`` for every image or frame, ``--boxes`` a
COCO json whose ``images[].file_name`` (matched by base name) and ``annotations[].bbox`` give the
hands of each image; without either, the whole image is the box. With ``--boxes`` an image the
json gives no box is skipped: it is named on a ``skipped:`` line and counted in the summary
(never given an invented box); none left is an error. The hand is cropped as the test set's
hands (``DATASET.BBOX_PADDING``), and ``TEST.FLIP_TEST`` / ``TEST.DECODE`` apply as in
``tools/test.py``.

Writes into ``DIR``: the annotated images under their own names (a video: ``<name>_keypoints.mp4``)
and ``keypoints.json``: one COCO keypoint result per hand, ``{"image_id", "file_name",
"category_id", "bbox", "keypoints": [x, y, score] * 21, "score"}`` (``image_id``: the image's
index among the input's images, or the frame index of a video). ``--backend onnxruntime`` runs a ``tools/export.py`` ONNX file on the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

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


@dataclass
class Source:
    """The opened ``--input``: its ``frames``, their count ``total`` (0: unknown), whether it is a
    ``video`` (and its ``fps``), and the images ``skipped`` for want of a box in ``--boxes``."""
    frames: Iterator[Frame]
    total: int
    video: bool = False
    fps: float = 25.0
    skipped: List[str] = field(default_factory=list)


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


def iter_images(paths: List[str], image_ids: Optional[List[int]] = None) -> Iterator[Frame]:
    """The images of ``paths`` as frames, with ``image_ids`` (default: 0, 1, ...), read one by one."""
    for i, path in zip(range(len(paths)) if image_ids is None else image_ids, paths):
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


def open_input(path: str, out_dir: str, boxes: Optional[Dict[str, List[List[float]]]],
               boxes_file: Optional[str]) -> Source:
    """``--input`` as frames. With ``boxes`` (from ``boxes_file``) the images it gives no box are
    left out into ``Source.skipped``; an error when that leaves none."""
    if not os.path.exists(path):
        raise _cli.UserError(f"{path}: --input not found")
    if os.path.isfile(path) and path.lower().endswith(VIDEO_EXTS):
        if boxes is not None:
            raise _cli.UserError(f"{path}: --boxes is for images; give a video one --bbox")
        cap, fps, total = open_video(path)
        return Source(iter_video(cap, path), total, video=True, fps=fps)
    if os.path.isdir(path):
        paths = list_images(path)
        if os.path.realpath(out_dir) == os.path.realpath(path):
            raise _cli.UserError(f"{out_dir}: --out must differ from the --input folder (images would be overwritten)")
    else:
        paths = [path]
    ids = list(range(len(paths)))
    skipped: List[str] = []
    if boxes is not None:
        skipped = [p for p in paths if os.path.basename(p) not in boxes]
        ids = [i for i, p in zip(ids, paths) if os.path.basename(p) in boxes]
        paths = [paths[i] for i in ids]
        if not paths:
            raise _cli.UserError(f"{boxes_file}: no box for any of the {len(skipped)} image(s) of {path} "
                                 f"(images are matched by base file name)")
    return Source(iter_images(paths, ids), len(paths), skipped=skipped)


def boxes_for(frame: Frame, bbox: Optional[List[float]], boxes: Optional[Dict[str, List[List[float]]]]
              ) -> np.ndarray:
    """The (K, 4) hand boxes of ``frame``: ``bbox``, else its boxes in ``boxes`` (``open_input``
    keeps only images listed there), else the whole image. Each is checked to overlap the image."""
    from hrnet.evaluation.inference import box_in_image

    h, w = frame.image.shape[:2]
    if bbox is not None:
        chosen = [bbox]
    elif boxes is not None:
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


def load_model(cfg, model_file: str, backend: str) -> Tuple[Any, torch.device]:
    """The model (PyTorch, or an ONNX file under onnxruntime on the CPU) and its device; prints which."""
    from hrnet.evaluation.inference import load_onnx_model

    if backend == "onnxruntime":
        try:
            model = load_onnx_model(model_file, cfg)
        except ImportError as exc:
            raise _cli.UserError(str(exc)) from None
        print(f"model: {model_file} (onnxruntime, CPU)")
        return model, torch.device("cpu")
    from hrnet.evaluation.model_file import load_model_file
    from hrnet.runtime.device import select_device

    device = select_device(cfg.DEVICE)
    model, info = load_model_file(cfg, model_file, device)
    print(f"model: {info.describe()} on {device}")
    return model, device


class AnnotatedOutput:
    """Writes annotated frames into ``out_dir``: images under their own names, or the frames of
    ``video`` (a path) into ``<name>_keypoints.mp4`` at ``fps``. ``path``: what was written."""

    def __init__(self, out_dir: str, video: Optional[str] = None, fps: float = 25.0):
        os.makedirs(out_dir, exist_ok=True)
        self.out_dir, self.fps = out_dir, fps
        self.path = os.path.join(out_dir, os.path.splitext(os.path.basename(video))[0] + "_keypoints.mp4") \
            if video else out_dir
        self._writer: Optional[cv2.VideoWriter] = None
        self._video = bool(video)

    def write(self, frame: Frame, image_bgr: np.ndarray) -> None:
        if not self._video:
            path = os.path.join(self.out_dir, os.path.basename(frame.name))
            if not cv2.imwrite(path, image_bgr):
                raise _cli.UserError(f"{path}: cannot write the image")
            return
        if self._writer is None:  # the frame size is known at the first frame
            self._writer = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                           (image_bgr.shape[1], image_bgr.shape[0]))
            if not self._writer.isOpened():
                raise _cli.UserError(f"{self.path}: cannot write the video")
        self._writer.write(image_bgr)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


def annotate(frame: Frame, boxes: np.ndarray, preds: np.ndarray, draw_boxes: bool) -> np.ndarray:
    """``frame``'s image (BGR) with each hand's prediction (K, J, 2) and, with ``draw_boxes``, its box."""
    from hrnet.evaluation.visualize import draw_hand

    rgb = cv2.cvtColor(frame.image, cv2.COLOR_BGR2RGB)
    for box, pts in zip(boxes, preds):
        rgb = draw_hand(rgb, box if draw_boxes else None, pts)
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def coco_entries(frame: Frame, boxes: np.ndarray, preds: np.ndarray, scores: np.ndarray, first_id: int) -> List[dict]:
    """COCO keypoint results of ``frame``'s K hands (``preds`` (K, J, 2), ``scores`` (K, J)), ids from ``first_id``."""
    from hrnet.evaluation.evaluate import to_coco_results

    k = len(boxes)
    entries = to_coco_results({"preds": preds, "scores": scores, "image_id": np.full(k, frame.image_id, np.int64),
                               "ann_id": np.arange(first_id, first_id + k)})
    for entry, box in zip(entries, boxes):
        entry.update({"file_name": os.path.basename(frame.name), "bbox": [float(v) for v in box]})
    return entries


def run_demo(model, device: torch.device, cfg, frames: Iterator[Frame], output: AnnotatedOutput,
             bbox: Optional[List[float]], boxes: Optional[Dict[str, List[List[float]]]], batch: int,
             progress) -> List[dict]:
    """Predict the hands of ``frames`` ``batch`` frames per forward, write each annotated frame to
    ``output``; returns the COCO keypoint results of all hands. ``progress``: a tqdm bar."""
    from hrnet.evaluation.inference import crop_hands, predict_crops

    results: List[dict] = []
    for group in chunks(frames, batch):
        hand_boxes = [boxes_for(f, bbox, boxes) for f in group]
        crops = [crop_hands(f.image, b, cfg) for f, b in zip(group, hand_boxes)]
        pred = predict_crops(model, torch.cat([c[0] for c in crops]), np.concatenate([c[1] for c in crops]),
                             cfg, device)
        start = 0
        for frame, fboxes in zip(group, hand_boxes):
            p, s = pred["preds"][start:start + len(fboxes)], pred["scores"][start:start + len(fboxes)]
            start += len(fboxes)
            output.write(frame, annotate(frame, fboxes, p, draw_boxes=bbox is not None or boxes is not None))
            results += coco_entries(frame, fboxes, p, s, len(results))
        progress.update(len(group))
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", default=None, help="experiment yaml (the run's config.yaml)")
    parser.add_argument("--model-file", required=True, help="checkpoint / state_dict, or .onnx with "
                                                            "--backend onnxruntime")
    parser.add_argument("--input", required=True, help="an image, a folder of images or a video file")
    boxes_arg = parser.add_mutually_exclusive_group()
    boxes_arg.add_argument("--bbox", type=float, nargs=4, metavar=("X", "Y", "W", "H"),
                           help="hand box for every image / frame (default: the whole image)")
    boxes_arg.add_argument("--boxes", default=None, help="COCO json with the hand boxes per image "
                                                         "(images without a box are skipped)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--backend", default="torch", choices=("torch", "onnxruntime"))
    parser.add_argument("--batch", type=int, default=16, help="images (frames) per forward pass")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, opts = _cli.parse_with_overrides(parser, argv)  # KEY VALUE config overrides anywhere
    if args.batch < 1:
        parser.error(f"--batch must be >= 1, got {args.batch}")
    cfg = load_config(args.cfg, opts)
    boxes = read_boxes(args.boxes) if args.boxes else None
    source = open_input(args.input, args.out, boxes, args.boxes)
    model, device = load_model(cfg, args.model_file, args.backend)

    from tqdm import tqdm

    output = AnnotatedOutput(args.out, args.input if source.video else None, source.fps)
    progress = tqdm(total=source.total or None, unit="frame" if source.video else "image",
                    disable=args.no_progress, dynamic_ncols=True)
    try:
        results = run_demo(model, device, cfg, source.frames, output, args.bbox, boxes, args.batch, progress)
    finally:
        progress.close()
        output.close()
    json_path = os.path.join(args.out, "keypoints.json")
    with open(json_path, "w") as f:
        json.dump(results, f)
    for path in source.skipped:
        print(f"skipped: {path}: no box in {args.boxes}")
    what = output.path if source.video else f"{source.total} annotated image(s) in {args.out}"
    skipped = f"; skipped {len(source.skipped)} image(s) with no box in {args.boxes}" if source.skipped else ""
    print(f"wrote {what} and {json_path} ({len(results)} hands){skipped}")
    return 0


if __name__ == "__main__":
    sys.exit(_cli.run(main))
