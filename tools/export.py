"""Export a trained model to ONNX or TorchScript, and check the export.

    python tools/export.py --cfg FILE --model-file CKPT --format onnx|torchscript --out FILE
                           [--check N] [--opset 17] [KEY VALUE ...]

ONNX: opset 17 or newer, input ``image`` (batch, 3, H, W) float32 RGB normalised with the
ImageNet mean/std, output ``heatmaps`` (batch, J, H/4, W/4); the batch axis is dynamic.
TorchScript: a traced module (any batch size). ``--check N`` runs the first N validation crops
(``DATASET.TESTSET``) through PyTorch and the exported model (onnxruntime for ONNX), at batch 1
and N, and fails (exit 1) unless the heatmaps agree to 1e-4 (max abs) and the decoded keypoints
(``TEST.DECODE``) to 0.05 px of the original images. ONNX needs ``pip install -e ".[export]"``.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

import _cli
import _paths  # noqa: F401  (repository root on sys.path)

import numpy as np
import torch

from configs import load_config

HEATMAP_TOL = 1e-4  # max abs heatmap difference
KEYPOINT_TOL_PX = 0.05  # max keypoint difference, original-image pixels


def validation_crops(cfg, n: int):
    """The first ``n`` test-set crops (N, 3, H, W) and their heatmap -> image matrices (N, 2, 3)."""
    from data import build_dataset

    dataset = build_dataset(cfg, is_train=False)
    items = [dataset[i] for i in range(min(int(n), len(dataset)))]
    return (torch.stack([it["image"] for it in items]),
            np.stack([np.asarray(it["meta"]["hm_to_img"]) for it in items]))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", default=None, help="experiment yaml (the run's config.yaml)")
    parser.add_argument("--model-file", required=True, help="checkpoint (model_best.pth, checkpoint_latest.pth) "
                                                            "or state_dict")
    parser.add_argument("--format", required=True, choices=("onnx", "torchscript"), help="export format")
    parser.add_argument("--out", required=True, help="output file (.onnx / .pt)")
    parser.add_argument("--check", type=int, default=0, metavar="N",
                        help="compare PyTorch and the export on N validation crops (0 = no check)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (17 or newer)")
    args, opts = _cli.parse_with_overrides(parser, argv)  # KEY VALUE config overrides anywhere
    if args.opset < 17:
        parser.error(f"--opset must be 17 or newer, got {args.opset}")
    if args.check < 0:
        parser.error(f"--check must be >= 0, got {args.check}")

    cfg = load_config(args.cfg, opts)
    from hrnet.evaluation.export import compare_outputs, export_model, load_exported
    from hrnet.evaluation.model_file import load_model_file

    if args.format == "onnx":  # fail before the (slow) export when the extra is missing
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            raise _cli.UserError(f"--format onnx needs onnx and onnxruntime ({exc}): "
                                 f'pip install -e ".[export]"') from None
    model, info = load_model_file(cfg, args.model_file, torch.device("cpu"))
    print(f"model: {info.describe()}")
    export_model(model, cfg, args.format, args.out, opset=args.opset)
    print(f"wrote {args.format}: {args.out} ({os.path.getsize(args.out) / 1e6:.1f} MB)")
    if not args.check:
        return 0
    images, hm_to_img = validation_crops(cfg, args.check)
    exported = load_exported(args.out, args.format, cfg)
    diff = compare_outputs(model, exported, images, cfg, hm_to_img)
    ok = diff["heatmap_max_abs"] <= HEATMAP_TOL and diff["keypoint_max_px"] <= KEYPOINT_TOL_PX
    print(f"check on {diff['images']} validation crops (batch 1 and {diff['images']}): heatmaps max abs diff "
          f"{diff['heatmap_max_abs']:.3g} (tolerance {HEATMAP_TOL:g}), keypoints max diff "
          f"{diff['keypoint_max_px']:.3g} px (tolerance {KEYPOINT_TOL_PX:g}): {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(_cli.run(main))
