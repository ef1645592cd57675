"""Train one experiment.

    python tools/train.py --cfg experiments/hand_lookahead_adam.yaml [--resume] [KEY VALUE ...]
    torchrun --nproc_per_node N tools/train.py --cfg ...           # DDP (nccl on GPU, gloo on CPU)

Writes OUTPUT_DIR/<EXPERIMENT_NAME>/ (EXPERIMENT_NAME defaults to the yaml file's stem):
config.yaml, train.log, TensorBoard events, checkpoint_latest.pth, model_best.pth, metrics.json.
Watch it with ``tensorboard --logdir OUTPUT_DIR``.

A config typo (optimizer, Lookahead, model name ...) fails in about a second, before anything is
written. A new run refuses a folder that holds another run's files; ``--resume`` refuses a changed
config except for the keys listed in ``hrnet.runtime.checkpoint.RESUME_FREE_KEYS`` (END_EPOCH, WORKERS ...).

Exit status: 0 finished; 1 a non-finite loss (the last good checkpoint is kept); 2 a user mistake
(one ``error:`` line; ``--debug`` shows the traceback, train.log always holds it); 128 + signal
number when stopped by Ctrl-C (130) or SIGTERM (143), after leaving a checkpoint that ``--resume``
continues from. A run that fails ends with status "failed" in metrics.json.
"""
from __future__ import annotations

import argparse
import sys

import _cli
import _paths  # noqa: F401  (repository root on sys.path)

from configs import load_config
from hrnet.runtime.perf import tune_cpu_allocator
from hrnet.engine.trainer import NonFiniteLossError, Trainer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cfg", required=True, help="experiment yaml")
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUTPUT_DIR/<experiment>/checkpoint_latest.pth (same as TRAIN.RESUME True)")
    args, opts = _cli.parse_with_overrides(parser, argv)  # KEY VALUE config overrides anywhere
    cfg = load_config(args.cfg, opts)
    # Reuse freed activation memory instead of page-faulting fresh mmaps every step (CPU speed,
    # no effect on results; see hrnet/runtime/perf.py). Harmless on GPU runs.
    tune_cpu_allocator()
    try:
        result = Trainer(cfg, resume=args.resume or None).fit()
    except NonFiniteLossError:
        return 1  # the trainer has logged the epoch / iteration and what was kept
    finally:
        from hrnet.engine.distributed import cleanup_distributed

        cleanup_distributed()
    if result.get("status") == "interrupted":
        return 128 + int(result["signal"])
    return 0


if __name__ == "__main__":
    sys.exit(_cli.run(main))
