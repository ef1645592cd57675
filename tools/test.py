"""Evaluate a checkpoint (or the ground-truth oracle) on the test set.

    python tools/test.py --cfg FILE --model-file CKPT [--out DIR] [KEY VALUE ...]
    python tools/test.py --cfg FILE --oracle [--out DIR] [KEY VALUE ...]

``--model-file`` takes a run checkpoint (``model_best.pth`` / ``checkpoint_latest.pth``, whose
weights are under ``state_dict``; ``model`` is accepted too) or a plain state_dict; without it,
``TEST.MODEL_FILE``. ``--oracle`` evaluates the encoded ground-truth heatmaps (the dataset's
``target``) through the same decoding and inverse transform instead of a model: the error floor
of crop + encoding + decoding. Decoding follows ``TEST.DECODE`` (argmax | dark) and
``TEST.FLIP_TEST``. ``--out DIR`` writes ``metrics.json``, ``predictions.json`` (COCO keypoint
results) and ``ced.png``. ``KEY VALUE`` overrides may come before or after the options.

The config stored in the checkpoint must agree with ``--cfg`` on MODEL.NAME, IMAGE_SIZE,
HEATMAP_SIZE and NUM_JOINTS (``--allow-config-mismatch`` warns instead). A Lookahead
``checkpoint_latest.pth`` is evaluated with the weights training validated (slow by default;
``--weights slow|fast`` to choose); the first line printed says which weights were used.
Predictions with NaN/inf (a diverged model) are an error. Hands skipped while building the data
set (``DATASET.ON_BAD_SAMPLE skip``) are listed and counted as ``num_images_skipped``.

Exit status: 0 done; 2 a user mistake (one ``error:`` line; ``--debug`` shows the traceback).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from typing import Any, Dict, List, Optional

import _cli
import _paths  # noqa: F401  (repository root on sys.path)

import numpy as np
import torch

from configs import load_config


def format_table(metrics: Dict[str, Any]) -> str:
    """The scalar metrics as an aligned two-column table."""
    rows = [(k, v) for k, v in metrics.items() if not hasattr(v, "shape")]
    width = max(len(k) for k, _ in rows)
    lines = []
    for key, value in rows:
        text = f"{value:.6f}" if isinstance(value, float) else str(value)
        lines.append(f"  {key:<{width}}  {text}")
    return "\n".join(lines)


def check_finite(results: Dict[str, Any], what: str) -> None:
    """Refuse predictions with NaN/inf (a diverged model): they would be excluded from NME
    silently and written as NaN into predictions.json."""
    # argmax of a NaN heatmap is a finite index: the peak values (scores) carry the NaN.
    bad = ~np.isfinite(results["preds"]).all(axis=(1, 2)) | ~np.isfinite(results["scores"]).all(axis=1)
    if bad.any():
        ids = results["ann_id"][bad][:5].tolist()
        raise _cli.UserError(f"{what}: non-finite predictions (NaN/inf heatmaps) for {int(bad.sum())} of "
                             f"{len(bad)} hands (annotation ids {ids}{' ...' if bad.sum() > 5 else ''}): "
                             f"the model diverged; evaluate an earlier checkpoint")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage="%(prog)s [--cfg FILE] [--model-file CKPT | --oracle] [options] "
                                           "[KEY VALUE ...]")
    parser.add_argument("--cfg", default=None, help="experiment yaml (defaults when omitted)")
    parser.add_argument("--model-file", default="", help="checkpoint or state_dict (default TEST.MODEL_FILE)")
    parser.add_argument("--out", default="", help="folder for metrics.json, predictions.json, ced.png")
    parser.add_argument("--oracle", action="store_true",
                        help="evaluate the encoded ground-truth heatmaps instead of a model")
    parser.add_argument("--weights", choices=("auto", "slow", "fast"), default="auto",
                        help="Lookahead checkpoint_latest.pth: slow or fast weights (auto: what training "
                             "validated, TRAIN.LOOKAHEAD.EVAL_WEIGHTS of the run)")
    parser.add_argument("--allow-config-mismatch", action="store_true",
                        help="warn instead of refusing when MODEL.NAME / IMAGE_SIZE / HEATMAP_SIZE / "
                             "NUM_JOINTS differ from the checkpoint's config")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--vis", default="", metavar="DIR",
                        help="error analysis PNGs: worst.png / random.png (16 hands each) and per_joint_nme.png")
    return parser


def load_model(cfg, model_file: str, device: torch.device, weights: str, check_config: bool):
    """The model and its ``ModelFileInfo``; prints which weights, the notes, and the warnings
    (config mismatches allowed by ``--allow-config-mismatch``) as ``warning:`` lines on stderr."""
    from hrnet.evaluation.model_file import load_model_file

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, info = load_model_file(cfg, model_file, device, weights=weights, check_config=check_config)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(f"evaluating {info.describe()}")
    for note in info.notes:
        print(f"note: {note}")
    return model, info


def predict(cfg, dataset, model, device: torch.device, what: str, progress: bool) -> Dict[str, Any]:
    """Predictions over ``dataset`` in its order: of ``model``, or of the oracle when it is None
    (``what`` names the model file in the error for non-finite predictions)."""
    from torch.utils.data import DataLoader

    from hrnet.evaluation.evaluate import run_inference, run_oracle

    loader = DataLoader(dataset, batch_size=int(cfg.TEST.BATCH_SIZE_PER_GPU), shuffle=False,
                        num_workers=int(cfg.WORKERS), pin_memory=device.type == "cuda")
    if model is None:
        return run_oracle(loader, cfg, progress=progress)
    results = run_inference(model, loader, cfg, device, progress=progress)
    check_finite(results, what)
    return results


def save_outputs(out_dir: str, cfg, args: argparse.Namespace, model_file: str, info, metrics: Dict[str, Any],
                 results: Dict[str, Any], skipped: List[str], testset: str) -> None:
    """``--out DIR``: metrics.json (with how it was evaluated), predictions.json and ced.png."""
    from hrnet.evaluation.evaluate import save_evaluation

    extra = {"decode": cfg.TEST.DECODE, "flip_test": bool(cfg.TEST.FLIP_TEST) and not args.oracle,
             "oracle": bool(args.oracle), "model_file": "" if args.oracle else model_file,
             "weights": "" if info is None else info.weights,
             "checkpoint_epoch": None if info is None else info.epoch,
             "config_mismatches": [] if info is None else info.mismatches,
             "skipped": skipped, "testset": testset, "experiment": cfg.EXPERIMENT_NAME}
    paths = save_evaluation(out_dir, metrics, results, cfg.TEST.FAILURE_THRESHOLD, extra,
                            title=f"{cfg.EXPERIMENT_NAME}: {'oracle' if args.oracle else 'model'}")
    for name, path in paths.items():
        print(f"wrote {name}: {path}")


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, opts = _cli.parse_with_overrides(parser, argv)  # KEY VALUE overrides before, between or after options
    cfg = load_config(args.cfg, opts)
    model_file = args.model_file or cfg.TEST.MODEL_FILE
    if not args.oracle and not model_file:
        parser.error("--model-file (or TEST.MODEL_FILE) is required unless --oracle is given")

    from data import build_dataset
    from hrnet.evaluation.metrics import compute_metrics
    from hrnet.runtime.device import select_device

    device = torch.device("cpu") if args.oracle else select_device(cfg.DEVICE)
    model = info = None
    if not args.oracle:  # before the data: a wrong file fails in a second, not after the build
        model, info = load_model(cfg, model_file, device, args.weights, not args.allow_config_mismatch)
    dataset = build_dataset(cfg, is_train=False)
    skipped = list(getattr(dataset, "skipped", []))
    t0 = time.time()
    results = predict(cfg, dataset, model, device, model_file, progress=not args.no_progress)
    elapsed = time.time() - t0
    metrics = compute_metrics(results["preds"], results["joints"], results["bbox"], cfg)
    # Hands left out when the data set was built (DATASET.ON_BAD_SAMPLE skip) are not in
    # num_images / num_images_excluded: count them beside those.
    metrics["num_images_skipped"] = len(skipped)

    testset = os.path.join(cfg.DATASET.ROOT, cfg.DATASET.TESTSET)
    what = "oracle (encoded ground-truth heatmaps)" if args.oracle else model_file
    flip = " + flip test" if cfg.TEST.FLIP_TEST and not args.oracle else ""
    print(f"{what} on {testset}: {len(results['ann_id'])} hands, decode {cfg.TEST.DECODE}{flip}, "
          f"{elapsed:.1f}s on {device.type}")
    for line in skipped:
        print(f"skipped: {line}")
    print(format_table(metrics))
    if args.out:
        save_outputs(args.out, cfg, args, model_file, info, metrics, results, skipped, testset)
    else:
        print("(no --out: nothing written)")
    if args.vis:
        write_vis(args.vis, args.out, dataset, results, metrics, cfg)
    return 0


def write_vis(vis_dir: str, out_dir: str, dataset, results: Dict[str, Any], metrics: Dict[str, Any], cfg) -> None:
    """``--vis DIR``: hrnet.evaluation.error_analysis's sheets (and ced.png when DIR is not ``--out``)."""
    from hrnet.evaluation.error_analysis import write_error_analysis
    from hrnet.evaluation.evaluate import save_ced_plot

    # The loader kept the dataset's order (shuffle=False): result i is dataset.record(i).
    records = [dataset.record(i) for i in range(len(dataset))]
    if [r.ann_id for r in records] != results["ann_id"].tolist():
        raise RuntimeError("--vis: the predictions are not in the dataset's order")
    vis = write_error_analysis(vis_dir, [r.image_path for r in records], results, metrics["per_image_NME"],
                               metrics["per_joint_NME"], title=cfg.EXPERIMENT_NAME)
    if not out_dir or os.path.abspath(vis_dir) != os.path.abspath(out_dir):
        vis["paths"]["ced"] = save_ced_plot(metrics["per_image_NME"], os.path.join(vis_dir, "ced.png"),
                                            cfg.TEST.FAILURE_THRESHOLD, cfg.EXPERIMENT_NAME)
    for name, path in vis["paths"].items():
        print(f"wrote {name}: {path}")


if __name__ == "__main__":
    sys.exit(_cli.run(main))
