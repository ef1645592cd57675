"""Performance measurements (never part of the timed test suite).

    python tools/benchmark.py train-step --cfg FILE [--json] [KEY VALUE ...]
    python tools/benchmark.py data       --cfg FILE [--json] [KEY VALUE ...]
    python tools/benchmark.py optimizer  --cfg FILE [--json] [KEY VALUE ...]

Each subcommand prints a human-readable summary, or one JSON object with ``--json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Dict

import _paths  # noqa: F401  (repository root on sys.path)

from configs import load_config


def bench_train_step(cfg, args: argparse.Namespace) -> Dict[str, Any]:
    """fwd + bwd + optimizer step throughput; ``images_per_s`` is the median over timed steps."""
    raise NotImplementedError("train-step benchmark: issue 2")


def bench_data(cfg, args: argparse.Namespace) -> Dict[str, Any]:
    """Training data pipeline throughput in one process; ``samples_per_s``."""
    raise NotImplementedError("data benchmark: issue 3")


def bench_optimizer(cfg, args: argparse.Namespace) -> Dict[str, Any]:
    """``step()`` time of the inner optimizer alone and wrapped in Lookahead on HRNet-W18 parameters."""
    raise NotImplementedError("optimizer benchmark: issue 5")


BENCHMARKS: Dict[str, Callable[[Any, argparse.Namespace], Dict[str, Any]]] = {
    "train-step": bench_train_step,
    "data": bench_data,
    "optimizer": bench_optimizer,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=sorted(BENCHMARKS), help="what to measure")
    parser.add_argument("--cfg", default=None, help="experiment yaml (defaults when omitted)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--steps", type=int, default=0, help="timed iterations (0 = the benchmark's default)")
    parser.add_argument("--warmup", type=int, default=-1, help="untimed warm-up iterations (-1 = default)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    cfg = load_config(args.cfg, args.opts)
    result = BENCHMARKS[args.which](cfg, args)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
