"""Performance measurements (never part of the timed test suite); the code is in ``hrnet/benchmark/``.

    python tools/benchmark.py train-step --cfg FILE [--amp fp32|bf16|fp16|auto] [--compare] [--json] [KEY VALUE ...]
    python tools/benchmark.py data       --cfg FILE [--compare] [--json] [KEY VALUE ...]
    python tools/benchmark.py optimizer  --cfg FILE [--threads N] [--json] [KEY VALUE ...]
    python tools/benchmark.py decode     --cfg FILE [--json] [KEY VALUE ...]
    python tools/benchmark.py infer      [--steps N] [--warmup R] [--threads N] [--json]

Each subcommand prints a human-readable summary, or one JSON object with ``--json``. What each
measures, and what ``--steps`` / ``--warmup`` mean for it: the ``bench_*`` function's docstring in
``hrnet/benchmark/<module>.py``.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

import _paths  # noqa: F401  (repository root on sys.path)
import _cli

from configs import load_config
from hrnet.benchmark import BENCHMARKS, Options, get_benchmark


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=sorted(BENCHMARKS), help="what to measure")
    parser.add_argument("--cfg", default=None, help="experiment yaml (defaults when omitted)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--steps", type=int, default=0, help="timed iterations (0 = the benchmark's default)")
    parser.add_argument("--warmup", type=int, default=-1, help="untimed warm-up iterations (-1 = default)")
    parser.add_argument("--compare", action="store_true",
                        help="train-step: also time the official code's fp32 settings; data: also time albumentations")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    parser.add_argument("--amp", choices=["fp32", "bf16", "fp16", "auto"], default="",
                        help="train-step: precision (default: the config's AMP.MODE / AMP.DTYPE)")
    parser.add_argument("opts", nargs="*", help="KEY VALUE config overrides")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    # intermixed: options may follow the subcommand (REMAINDER would swallow them as overrides)
    args = build_parser().parse_intermixed_args(argv)
    cfg = load_config(args.cfg, args.opts)
    options = Options(steps=args.steps, warmup=args.warmup, compare=args.compare, threads=args.threads,
                      amp=args.amp)
    result = get_benchmark(args.which)(cfg, options)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(_cli.run(main))
