"""Evaluate a checkpoint (or the ground-truth oracle) on the test set.

    python tools/test.py --cfg FILE --model-file CKPT [--out DIR] [KEY VALUE ...]
    python tools/test.py --cfg FILE --oracle [--out DIR] [KEY VALUE ...]

``--model-file`` takes a run checkpoint (``model_best.pth`` / ``checkpoint_latest.pth``, whose
weights are under ``state_dict``; ``model`` is accepted too) or a plain state_dict; without it,
``TEST.MODEL_FILE``. ``--oracle`` evaluates the encoded ground-truth heatmaps (the dataset's
``target``) through the same decoding and inverse transform instead of a model: the error floor
of crop + encoding + decoding. Decoding follows ``TEST.DECODE`` (argmax | dark) and
``TEST.FLIP_TEST``. ``--out DIR`` writes ``metrics.json``, ``predictions.json`` (COCO keypoint
results) and ``ced.png``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping
from typing import Any, Dict, Optional

import _paths  # noqa: F401  (repository root on sys.path)

import torch

from configs import load_config


def select_device(cfg) -> torch.device:
    """``DEVICE``: auto (cuda if available) | cpu | cuda (an error if CUDA is missing)."""
    if cfg.DEVICE == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("DEVICE cuda: CUDA is not available on this machine (use DEVICE cpu or auto)")
    if cfg.DEVICE == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def load_model(cfg, path: str, device: torch.device) -> torch.nn.Module:
    """``hrnet.build_model(cfg)`` with the weights of ``path`` (strict), in eval mode on ``device``."""
    from hrnet import build_model
    from hrnet.checkpoint import CheckpointError, extract_state_dict, load_checkpoint

    obj = load_checkpoint(path)  # weights_only=True; names the file when missing or unreadable
    if isinstance(obj.get("model"), Mapping) and "state_dict" not in obj:
        obj = obj["model"]
    state = extract_state_dict(obj, source=path)
    cfg.defrost()
    cfg.MODEL.PRETRAINED = ""  # the checkpoint replaces every weight: no need for the init file
    cfg.freeze()
    model = build_model(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the weights do not fit the model of MODEL.NAME "
                              f"{cfg.MODEL.NAME!r} / MODEL.NUM_JOINTS {cfg.MODEL.NUM_JOINTS}: {exc}") from exc
    model.to(device)
    if cfg.CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)
    return model.eval()


def format_table(metrics: Dict[str, Any]) -> str:
    """The scalar metrics as an aligned two-column table."""
    rows = [(k, v) for k, v in metrics.items() if not hasattr(v, "shape")]
    width = max(len(k) for k, _ in rows)
    lines = []
    for key, value in rows:
        text = f"{value:.6f}" if isinstance(value, float) else str(value)
        lines.append(f"  {key:<{width}}  {text}")
    return "\n".join(lines)


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", default=None, help="experiment yaml (defaults when omitted)")
    parser.add_argument("--model-file", default="", help="checkpoint or state_dict (default TEST.MODEL_FILE)")
    parser.add_argument("--out", default="", help="folder for metrics.json, predictions.json, ced.png")
    parser.add_argument("--oracle", action="store_true",
                        help="evaluate the encoded ground-truth heatmaps instead of a model")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)

    cfg = load_config(args.cfg, args.opts)
    model_file = args.model_file or cfg.TEST.MODEL_FILE
    if not args.oracle and not model_file:
        parser.error("--model-file (or TEST.MODEL_FILE) is required unless --oracle is given")

    from torch.utils.data import DataLoader

    from data import build_dataset
    from hrnet.evaluate import run_inference, run_oracle, save_evaluation
    from hrnet.metrics import compute_metrics

    device = torch.device("cpu") if args.oracle else select_device(cfg)
    dataset = build_dataset(cfg, is_train=False)
    loader = DataLoader(dataset, batch_size=int(cfg.TEST.BATCH_SIZE_PER_GPU), shuffle=False,
                        num_workers=int(cfg.WORKERS), pin_memory=device.type == "cuda")
    t0 = time.time()
    if args.oracle:
        results = run_oracle(loader, cfg, progress=not args.no_progress)
        what = "oracle (encoded ground-truth heatmaps)"
    else:
        model = load_model(cfg, model_file, device)
        results = run_inference(model, loader, cfg, device, progress=not args.no_progress)
        what = model_file
    elapsed = time.time() - t0
    metrics = compute_metrics(results["preds"], results["joints"], results["bbox"], cfg)

    testset = os.path.join(cfg.DATASET.ROOT, cfg.DATASET.TESTSET)
    flip = " + flip test" if cfg.TEST.FLIP_TEST and not args.oracle else ""
    print(f"{what} on {testset}: {len(results['ann_id'])} hands, decode {cfg.TEST.DECODE}{flip}, "
          f"{elapsed:.1f}s on {device.type}")
    print(format_table(metrics))
    if args.out:
        extra = {"decode": cfg.TEST.DECODE, "flip_test": bool(cfg.TEST.FLIP_TEST) and not args.oracle,
                 "oracle": bool(args.oracle), "model_file": "" if args.oracle else model_file,
                 "testset": testset, "experiment": cfg.EXPERIMENT_NAME}
        paths = save_evaluation(args.out, metrics, results, cfg.TEST.FAILURE_THRESHOLD, extra,
                                title=f"{cfg.EXPERIMENT_NAME}: {'oracle' if args.oracle else 'model'}")
        for name, path in paths.items():
            print(f"wrote {name}: {path}")
    else:
        print("(no --out: nothing written)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
