"""Render the synthetic hand set (JPEGs + COCO-style train.json / test.json).

    python tools/make_synthetic_hands.py --out datasets/synthetic_hands --train 21120 --test 3000 --seed 0
    python tools/make_synthetic_hands.py --out /tmp/hands --train 40 --test 10 --preview /tmp/sheet.png

The same seed gives byte-identical files whatever ``--workers`` is. A folder that already holds
the same set (counts, seed, renderer version) is kept as it is; a different one needs
``--overwrite``. ``--preview`` writes a contact sheet of the first 16 training images with their
keypoints, skeleton and box. A mistake (an unwritable folder, a full disk) ends in one
``error:`` line and exit 2; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import _cli
import _paths  # noqa: F401  (repository root on sys.path)

from data.synthetic import RENDER_VERSION, generate, make_preview, read_info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--train", type=int, default=21120, help="training images")
    parser.add_argument("--test", type=int, default=3000, help="test images")
    parser.add_argument("--seed", type=int, default=0, help="renderer seed")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)")
    parser.add_argument("--preview", default="", help="write a 16-image contact sheet PNG here")
    parser.add_argument("--overwrite", action="store_true", help="replace a different set in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    out = args.out
    try:
        infos = read_info(out) if os.path.isdir(out) else None
    except RuntimeError:
        infos = {"broken": {}}
    same = infos is not None and all(
        i.get("num_train") == args.train and i.get("num_test") == args.test and i.get("seed") == args.seed
        and i.get("renderer_version") == RENDER_VERSION for i in infos.values())
    if same:
        print(f"{out} already holds this set (train {args.train}, test {args.test}, seed {args.seed}); "
              "not rendered again")
    else:
        if os.path.isdir(out) and os.listdir(out):
            if not args.overwrite:
                print(f"error: {out} is not empty and holds another set; pass --overwrite or choose another --out",
                      file=sys.stderr)
                return 2
            for name in ("train.json", "test.json"):
                if os.path.exists(os.path.join(out, name)):
                    os.remove(os.path.join(out, name))
            shutil.rmtree(os.path.join(out, "images"), ignore_errors=True)
        start = time.perf_counter()
        generate(out, args.train, args.test, args.seed, workers=max(1, args.workers), progress=not args.no_progress)
        took = time.perf_counter() - start
        total = args.train + args.test
        print(f"rendered {total} images into {out} in {took:.1f} s ({total / max(took, 1e-9):.1f} images/s, "
              f"{max(1, args.workers)} processes)")
    if args.preview:
        split = "train" if args.train > 0 else "test"
        print(f"preview: {make_preview(out, args.preview, split=split)}")
    return 0


if __name__ == "__main__":
    sys.exit(_cli.run(main))
