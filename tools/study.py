"""Run an optimizer study (arms x seeds of tools/train.py runs) and write its report.

    python tools/study.py experiments/studies/NAME.yaml [--out DIR] [KEY VALUE ...]
    python tools/study.py experiments/studies/NAME.yaml --out DIR --report-only
    python tools/study.py experiments/studies/optimizers_gpu.yaml --devices 0,1,2,3
    python tools/study.py STUDY.yaml --devices 0+1,2+3 --launcher "torchrun --standalone --nproc_per_node 2"

Each run trains into DIR/<arm>_seed<s>/ (default DIR: output/studies/<study name>). Finished runs
are skipped, partial ones resumed, a diverged or failed run is reported without stopping the
others; Ctrl-C stops the running trainings at a checkpoint (run the same command again to go on).
KEY VALUE overrides apply to every arm, after the study file's. Then DIR/report.md, report.json,
curves.png, sensitivity.png and lookahead.png are written (``--report-only``: from the run
folders alone, no training). ``--devices`` runs one training per entry at a time with that
CUDA_VISIBLE_DEVICES (``0+1``: two GPUs for one DDP run with ``--launcher``); without it, one
at a time. See hrnet/study/spec.py for the study file's keys.

Exit status: 0 all runs finished; 1 some runs failed, diverged or are unfinished (the report
covers the others); 2 a bad study file or command line; 130 interrupted.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import List, Optional

import _cli
import _paths  # noqa: F401  (repository root on sys.path)

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", help="study file (experiments/studies/*.yaml)")
    parser.add_argument("--out", default=None, help="output folder (default output/studies/<study name>)")
    parser.add_argument("--report-only", action="store_true", help="write the report from the run folders; no training")
    parser.add_argument("--devices", default=None,
                        help="GPUs, one concurrent run per comma-separated entry (0,1,2,3; 0+1,2+3 for 2-GPU runs)")
    parser.add_argument("--launcher", default=sys.executable,
                        help='command that runs tools/train.py (default this python; e.g. "torchrun --standalone '
                             '--nproc_per_node 2")')
    parser.add_argument("--no-real-hands", action="store_true",
                        help="skip the evaluation of each run's best model on the real hand photos")
    args, opts = _cli.parse_with_overrides(parser, argv)

    from hrnet.study.analysis import analyse, collect
    from hrnet.study.runner import execute
    from hrnet.study.spec import load_study, plan_runs
    from hrnet.study.report import write_report

    study = load_study(args.study, opts)
    out = args.out or os.path.join("output", "studies", study.name)
    slots: List[Optional[str]] = [None]
    if args.devices:
        slots = [d.strip().replace("+", ",") for d in args.devices.split(",")]
        if not all(s and all(p.isdigit() for p in s.split(",")) for s in slots):
            raise _cli.UserError(f"--devices {args.devices!r}: expected GPU indices such as 0,1,2,3 or 0+1,2+3")
    launcher = shlex.split(args.launcher)
    if not launcher:
        raise _cli.UserError("--launcher is empty")

    runs = plan_runs(study, out)
    result = None
    if not args.report_only:
        result = execute(runs, launcher + [os.path.join(HERE, "train.py")], slots)
        if result.interrupted:
            return _cli.EXIT_INTERRUPTED
    report = analyse(study, collect(study, out, evaluate_real=not args.no_real_hands), out)
    paths = write_report(report, out)
    print("\n".join(f"[study] {s}" for s in report["verdict"]))
    print(f"[study] wrote {', '.join(paths)}")
    unfinished = [r["name"] for r in report["runs"] if r["status"] != "finished"]
    if unfinished:
        print(f"[study] {len(unfinished)} run(s) not finished: {', '.join(unfinished)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_cli.run(main))
