"""Write a synthetic hand set to disk (JPEGs + COCO-style JSON), in parallel, and render it on demand.

Layout of a set in ``DIR``::

    DIR/train.json, DIR/test.json          COCO-style, like the real OneHand10K/FreiHAND samples
    DIR/images/train/000000.jpg ...        file_name in the JSON is relative to DIR
    DIR/images/test/000000.jpg ...

Each JSON's ``info`` records ``generator``, ``renderer_version``, ``seed``, ``num_train`` and
``num_test``, which ``ensure_dataset`` compares with ``DATASET.SYNTHETIC``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
import time
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from configs import ConfigError

from .kinematics import KEYPOINT_NAMES, SKELETON
from .render import RENDER_VERSION, render_sample

logger = logging.getLogger(__name__)

GENERATOR = "hrnet-hand data.synthetic"
CATEGORIES = [{"supercategory": "hand", "id": 1, "name": "hand", "keypoints": list(KEYPOINT_NAMES),
               "skeleton": [list(p) for p in SKELETON]}]
_Task = Tuple[str, str, int, int, int]  # (out_dir, split, seed, start, stop)


class SyntheticSetError(ConfigError, RuntimeError):
    """A folder that holds no usable synthetic set for the config (another set, other files, a
    broken set); the message names the folder or file. A :class:`configs.ConfigError`, so a tool
    prints it as one ``error:`` line; a ``RuntimeError`` for callers of :func:`read_info`."""


def image_file_name(split: str, index: int) -> str:
    """``file_name`` of image ``index`` of ``split``, relative to the set's folder."""
    return f"images/{split}/{index:06d}.jpg"


def _round(v: float) -> float:
    return round(float(v), 2)


def _records(split: str, index: int, sample) -> Tuple[Dict, Dict]:
    """COCO image and annotation records (ids are ``index + 1``) for one rendered sample."""
    h, w = sample.image.shape[:2]
    kps: List = []
    for x, y, v in sample.keypoints:
        kps += [_round(x), _round(y), 1] if v > 0 else [0, 0, 0]
    x, y, bw, bh = (_round(v) for v in sample.bbox)
    image = {"id": index + 1, "file_name": image_file_name(split, index), "width": w, "height": h}
    ann = {"id": index + 1, "image_id": index + 1, "category_id": 1, "bbox": [x, y, bw, bh],
           "keypoints": kps, "num_keypoints": int((sample.keypoints[:, 2] > 0).sum()),
           "area": _round(bw * bh), "iscrowd": 0}
    return image, ann


def _render_chunk(task: _Task) -> List[Tuple[Dict, Dict]]:
    """Render and write images ``start..stop-1`` of a split; returns their COCO records."""
    out_dir, split, seed, start, stop = task
    folder = os.path.join(out_dir, "images", split)
    records = []
    for index in range(start, stop):
        sample = render_sample(seed, split, index)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, sample.meta["jpeg_quality"]])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {split} image {index}")
        with open(os.path.join(folder, f"{index:06d}.jpg"), "wb") as fh:
            fh.write(buf.tobytes())
        records.append(_records(split, index, sample))
    return records


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would oversubscribe


def _mp_context():
    """Worker processes that never inherit the caller's threads.

    Not ``fork``: the caller may hold threads (torch, OpenCV's pool) that a forked child would
    deadlock on. ``forkserver`` (POSIX) forks workers from a clean server process that imports
    the renderer once (this package pulls in torch through ``data``: seconds per import);
    ``spawn`` elsewhere.
    """
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])  # no effect once the server runs; then workers import it
        return ctx
    return mp.get_context("spawn")


def _write_json(path: str, data: Dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh, separators=(",", ":"))
    os.replace(tmp, path)


def dataset_info(split: str, num_train: int, num_test: int, seed: int) -> Dict:
    """The JSON ``info`` block that identifies a rendered set."""
    return {"description": "hrnet-hand synthetic hands", "generator": GENERATOR,
            "renderer_version": RENDER_VERSION, "split": split, "seed": int(seed),
            "num_train": int(num_train), "num_test": int(num_test)}


def generate(out_dir: str, num_train: int = 21120, num_test: int = 3000, seed: int = 0,
             workers: int = 1, progress: bool = True, chunk_size: int = 64) -> Dict[str, str]:
    """Render ``num_train`` + ``num_test`` images into ``out_dir`` (see the module docstring).

    Byte-identical output for the same arguments, whatever ``workers`` is: every image draws
    from its own ``(seed, split, index)`` random stream. ``workers > 1`` renders chunks of
    ``chunk_size`` images in that many spawned processes. The JSON files are written last
    (atomically), so a set with both JSON files is complete. Returns {split: json path}.
    """
    if num_train < 0 or num_test < 0:
        raise ValueError(f"image counts must be >= 0, got train={num_train} test={num_test}")
    counts = {"train": int(num_train), "test": int(num_test)}
    tasks: List[_Task] = []
    for split, n in counts.items():
        os.makedirs(os.path.join(out_dir, "images", split), exist_ok=True)
        tasks += [(out_dir, split, int(seed), s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]
    from tqdm import tqdm

    records: Dict[str, List] = {"train": [], "test": []}
    bar = tqdm(total=sum(counts.values()), desc="rendering synthetic hands", unit="img",
               disable=not progress, dynamic_ncols=True)
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(tasks) > 1:
            pool = stack.enter_context(_mp_context().Pool(min(workers, len(tasks)), _init_worker))
            results: Iterator = pool.imap(_render_chunk, tasks)
        else:
            results = map(_render_chunk, tasks)
        for task, recs in zip(tasks, results):
            records[task[1]] += recs
            bar.update(len(recs))
    bar.close()
    paths = {}
    for split in counts:
        data = {"info": dataset_info(split, num_train, num_test, seed), "licenses": "",
                "images": [r[0] for r in records[split]], "annotations": [r[1] for r in records[split]],
                "categories": CATEGORIES}
        paths[split] = os.path.join(out_dir, f"{split}.json")
        _write_json(paths[split], data)
    return paths


# ----------------------------------------------------------------------------- on-demand rendering
def read_info(root: str) -> Optional[Dict[str, Dict]]:
    """``{split: info}`` of the set in ``root``, or None when neither JSON file exists.

    Raises :class:`SyntheticSetError` naming the file when only one exists or one is unreadable.
    """
    paths = {s: os.path.join(root, f"{s}.json") for s in ("train", "test")}
    present = {s: os.path.isfile(p) for s, p in paths.items()}
    if not any(present.values()):
        return None
    if not all(present.values()):
        missing = [p for s, p in paths.items() if not present[s]]
        raise SyntheticSetError(f"incomplete synthetic hand set in {root}: {missing[0]} is missing; "
                                f"delete {root} to render it again")
    infos = {}
    for split, path in paths.items():
        info = _json_info(path, root)
        if not isinstance(info, dict) or info.get("generator") != GENERATOR:
            raise SyntheticSetError(f"{path} was not written by the synthetic renderer (no info.generator "
                                    f"{GENERATOR!r}); for your own data set DATASET.FORMAT coco")
        infos[split] = info
    return infos


def _json_info(path: str, root: str):
    """The ``info`` object of a COCO file. ``generate`` writes it first, so reading the head of the
    file suffices (train.json is ~11 MB: a full parse takes ~0.5 s); other files are parsed whole."""
    try:
        with open(path) as fh:
            head = fh.read(1 << 16)
            if head.startswith('{"info":'):
                try:
                    return json.JSONDecoder().raw_decode(head, len('{"info":'))[0]
                except ValueError:
                    pass
            fh.seek(0)
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise SyntheticSetError(f"{path}: unreadable annotation file ({exc}); delete {root} to render it again") from exc
    return data.get("info") if isinstance(data, dict) else None


@contextlib.contextmanager
def _file_lock(path: str):
    """An exclusive ``fcntl`` lock on ``path`` (blocks); a no-op where fcntl is missing."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no concurrent-render protection
        yield
        return
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process rendering the synthetic hands (lock %s)", path)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _check(root: str, want: Dict[str, int]) -> bool:
    """True when ``root`` holds the wanted set, False when it holds none; raises on a mismatch."""
    infos = read_info(root)
    if infos is None:
        return False
    keys = {"num_train": "NUM_TRAIN", "num_test": "NUM_TEST", "seed": "SEED"}
    for split, info in infos.items():
        diff = [f"DATASET.SYNTHETIC.{keys[k]} {want[k]} (the set has {info.get(k)})"
                for k in keys if info.get(k) != want[k]]
        if diff:
            raise SyntheticSetError(f"the synthetic hand set in {root} does not match the config: "
                                    + ", ".join(diff) + ". Point DATASET.ROOT at another folder (it will be "
                                    "rendered there), delete this one, or use DATASET.MAX_TRAIN_SAMPLES / "
                                    "MAX_TEST_SAMPLES for a subset")
        if info.get("renderer_version") != RENDER_VERSION:
            logger.warning("%s/%s.json was rendered by renderer version %s (current %s); images of "
                           "the same seed differ between versions", root, split,
                           info.get("renderer_version"), RENDER_VERSION)
    return True


def _remove_stale_renders(parent: str, name: str) -> None:
    """Delete ``.<name>.tmp-*`` folders of renders that were killed (20-33 MB each).

    Call with the render lock held: only the lock holder renders, so any such folder is dead.
    """
    prefix = f".{name}.tmp-"
    for entry in os.listdir(parent):
        path = os.path.join(parent, entry)
        if entry.startswith(prefix) and os.path.isdir(path) and not os.path.islink(path):
            logger.warning("removing %s, left by an interrupted render", path)
            shutil.rmtree(path, ignore_errors=True)


def ensure_dataset(cfg) -> str:
    """The absolute path of the synthetic set for ``cfg``, rendering it first if it is missing.

    Reads ``DATASET.ROOT`` (relative to the working directory), ``DATASET.SYNTHETIC.NUM_TRAIN``,
    ``NUM_TEST``, ``SEED`` and uses ``WORKERS`` processes (at most the CPU count). Policy:
    a set that exists with other counts or seed is an error, never silently replaced (it may
    be the set other runs use). Safe when several processes (DDP ranks) call it together: one
    renders under an ``fcntl`` lock beside ROOT into a temporary folder renamed to ROOT when
    complete; the others wait for the lock and then find the set.
    """
    syn = cfg.DATASET.SYNTHETIC
    root = os.path.abspath(cfg.DATASET.ROOT)
    want = {"num_train": int(syn.NUM_TRAIN), "num_test": int(syn.NUM_TEST), "seed": int(syn.SEED)}
    if want["num_train"] <= 0 or want["num_test"] <= 0:
        raise ConfigError(f"DATASET.SYNTHETIC.NUM_TRAIN and NUM_TEST must be positive, got "
                          f"{want['num_train']} and {want['num_test']}")
    if _check(root, want):
        return root
    parent, name = os.path.split(root)
    os.makedirs(parent, exist_ok=True)
    with _file_lock(os.path.join(parent, f".{name}.lock")):
        if _check(root, want):                               # another process rendered it meanwhile
            return root
        if os.path.isdir(root) and os.listdir(root):
            raise SyntheticSetError(f"DATASET.ROOT {root} exists and is not empty but holds no train.json/"
                                    "test.json; choose an empty or new folder for the synthetic hands")
        if os.path.exists(root) and not os.path.isdir(root):
            raise SyntheticSetError(f"DATASET.ROOT {root} is a file, not a folder")
        _remove_stale_renders(parent, name)
        workers = max(1, min(int(cfg.WORKERS), os.cpu_count() or 1))
        logger.info("rendering %d + %d synthetic hand images (seed %d, %d processes) into %s",
                    want["num_train"], want["num_test"], want["seed"], workers, root)
        tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
        start = time.perf_counter()
        try:
            generate(tmp, want["num_train"], want["num_test"], want["seed"], workers=workers)
            if os.path.isdir(root):
                os.rmdir(root)                               # empty (checked above)
            os.rename(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        logger.info("wrote the synthetic hand set to %s in %.1f s", root, time.perf_counter() - start)
    return root


# ----------------------------------------------------------------------------- preview
_FINGER_BGR = [(0, 0, 255), (0, 165, 255), (0, 220, 0), (255, 128, 0), (255, 0, 200)]


def draw_annotation(image: np.ndarray, keypoints: np.ndarray, bbox: Sequence[float]) -> np.ndarray:
    """A BGR copy of ``image`` with the skeleton (one colour per finger), keypoints and bbox."""
    out = image.copy()
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
    one = 16
    side = max(out.shape[:2])
    thick, rad = max(1, side // 200), max(2, side // 120) * one
    for a, b in SKELETON:
        if kp[a - 1, 2] > 0 and kp[b - 1, 2] > 0:
            cv2.line(out, tuple(int(v) for v in np.round(kp[a - 1, :2] * one)),
                     tuple(int(v) for v in np.round(kp[b - 1, :2] * one)),
                     _FINGER_BGR[(b - 2) // 4], thick, cv2.LINE_AA, 4)
    for j, (x, y, v) in enumerate(kp):
        if v > 0:
            cv2.circle(out, (int(round(x * one)), int(round(y * one))), rad,
                       (255, 255, 255) if j == 0 else _FINGER_BGR[(j - 1) // 4], -1, cv2.LINE_AA, 4)
    x, y, w, h = bbox
    # COCO edges -> pixel-centre coordinates (edge e lies at centre coordinate e - 0.5).
    cv2.rectangle(out, (int(round((x - 0.5) * one)), int(round((y - 0.5) * one))),
                  (int(round((x + w - 0.5) * one)), int(round((y + h - 0.5) * one))),
                  (255, 255, 0), 1, cv2.LINE_AA, 4)
    return out


def make_preview(root: str, out_png: str, split: str = "train", count: int = 16, tile: int = 256) -> str:
    """A contact sheet (PNG) of the first ``count`` images of ``split`` with their annotations."""
    with open(os.path.join(root, f"{split}.json")) as fh:
        data = json.load(fh)
    anns = {a["image_id"]: a for a in data["annotations"]}
    tiles = []
    for rec in data["images"][:count]:
        img = cv2.imread(os.path.join(root, rec["file_name"]), cv2.IMREAD_COLOR)
        if img is None:
            raise FileNotFoundError(f"cannot read {os.path.join(root, rec['file_name'])}")
        ann = anns[rec["id"]]
        img = draw_annotation(img, ann["keypoints"], ann["bbox"])
        scale = tile / max(img.shape[:2])
        img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)), interpolation=cv2.INTER_AREA)
        canvas = np.full((tile, tile, 3), 32, np.uint8)
        canvas[:img.shape[0], :img.shape[1]] = img
        tiles.append(canvas)
    cols = int(np.ceil(np.sqrt(len(tiles))))
    tiles += [np.full((tile, tile, 3), 32, np.uint8)] * (cols * int(np.ceil(len(tiles) / cols)) - len(tiles))
    rows = [np.concatenate(tiles[r:r + cols], axis=1) for r in range(0, len(tiles), cols)]
    sheet = np.concatenate(rows, axis=0)
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    if not cv2.imwrite(out_png, sheet):
        raise RuntimeError(f"cannot write {out_png}")
    return out_png
