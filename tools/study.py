"""Run an optimizer study (arms x seeds of tools/train.py runs) and write its report.

    python tools/study.py experiments/studies/NAME.yaml [--out DIR] [KEY VALUE ...]
    python tools/study.py experiments/studies/NAME.yaml --out DIR --report-only
    python tools/study.py experiments/studies/optimizers_gpu.yaml --devices 0,1,2,3
    python tools/study.py STUDY.yaml --devices 0+1,2+3 --launcher "torchrun --standalone --nproc_per_node 2"
    python tools/study.py STUDY.yaml --out /shared/DIR --executor ray --ray-address auto --gpus-per-run 1

Each run trains into DIR/runs/<arm>_seed<s>/ (DIR: --out, else the study file's out, else
output/studies/<study name>), in the plan's order (the arms' priority, then seed). Finished runs
are skipped, partial ones resumed, a diverged or failed run is reported without stopping the
others; Ctrl-C stops the running trainings at a checkpoint (run the same command again to go on).
A run folder trained with another config than the plan (a changed override: "stale") counts for
nothing and is never reused: the study refuses to train until the plan is restored or --move-stale
moves such folders aside. KEY VALUE overrides apply to every arm, after the study file's. Then
DIR/report.md, report.json and the figures (curves, calibration, trend, sensitivity, lookahead
.png) are written (``--report-only``: from the run folders' small records alone, metrics.json,
config.yaml, real_hands.json, study_sessions.json, and DIR/floors.json; no training, no
checkpoint needed; without the photo folder the real-photo results are those real_hands.json
files). ``--devices`` runs one training per entry at a time with that
CUDA_VISIBLE_DEVICES (``0+1``: two GPUs for one DDP run with ``--launcher``); without it, one
at a time; GPU options that do not fit the launcher or the study (``0+1`` without a 2-process
launcher, two ranks on one GPU, torchruns side by side without ``--standalone``) are refused
before anything trains. Each run's OMP_NUM_THREADS is the study's ``threads`` (default 1 for a
CPU study: CPU results depend on it) in every executor. ``--executor ray`` makes each run a Ray task on a Ray cluster instead, with
``--gpus-per-run`` GPUs and ``--cpus-per-run`` CPUs (DIR must be on a filesystem every node sees;
see hrnet/study/execute/ray_cluster.py). See hrnet/study/plan/spec.py for the study file's keys.

Exit status: 0 all runs finished; 1 some runs failed, diverged or are unfinished (the report
covers the others); 2 a bad study file or command line, or run folders of another config (stale)
to train over; 130 interrupted.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from typing import List, Optional, Tuple

import _cli
import _paths  # noqa: F401  (repository root on sys.path)

HERE = os.path.dirname(os.path.abspath(__file__))
_CONFIG_KEY = re.compile(r"[A-Z][A-Z0-9_]*(\.[A-Z0-9_]+)*")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     usage="%(prog)s STUDY.yaml [options] [KEY VALUE ...] (overrides before or after "
                                           "the study file)")
    parser.add_argument("--out", default=None, help="study folder (default: the study file's out, else "
                                                    "output/studies/<study name>)")
    parser.add_argument("--report-only", action="store_true", help="write the report from the run folders; no training")
    parser.add_argument("--devices", default=None,
                        help="GPUs, one concurrent run per comma-separated entry (0,1,2,3; 0+1,2+3 for 2-GPU runs)")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="CPU runs side by side (default: one at a time). Each run's OMP_NUM_THREADS is the "
                             "study's threads (default 1 for a CPU study: the thread count changes the last bits of "
                             "CPU results, so it belongs to the study, not to N); without one, the CPUs this process "
                             "may use // N")
    parser.add_argument("--launcher", default=sys.executable,
                        help='command that runs tools/train.py (default this python; e.g. "torchrun --standalone '
                             '--nproc_per_node 2")')
    parser.add_argument("--real-hands", default=None, metavar="DIR",
                        help="folder of real-photo sets (COCO json + images per sub-folder), relative to the working "
                             "directory; replaces the study file's real_hands")
    parser.add_argument("--no-real-hands", action="store_true",
                        help="skip the evaluation of each run's final model on the real hand photos")
    parser.add_argument("--move-stale", action="store_true",
                        help="move run folders trained with another config than the plan to DIR/stale/<run>-<time>/ "
                             "(kept, never deleted) and train the planned runs in their place")
    _add_executor_options(parser)
    args, words = _cli.parse_with_overrides(parser, argv)
    study_file, opts = _study_and_overrides(words)

    from hrnet.study.analyse.analysis import analyse, collect
    from hrnet.study.execute.runner import execute
    from hrnet.study.plan.spec import load_study, output_dir, plan_runs
    from hrnet.study.render.report import write_report

    study = load_study(study_file, opts, "" if args.no_real_hands else args.real_hands)
    out = output_dir(study, args.out)
    runs = plan_runs(study, out)
    result = None
    if not args.report_only:
        result = execute(runs, _executor(args, out, study), move_stale_runs=args.move_stale)
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


def _study_and_overrides(words: List[str]) -> Tuple[str, List[str]]:
    """The study file and the ``KEY VALUE`` overrides among the words that are not options, in any
    order: a config key is a dotted name in capitals (``TRAIN.LR``, ``SEED``) followed by its value;
    the one other word is the study file."""
    files, opts, i = [], [], 0
    while i < len(words):
        if _CONFIG_KEY.fullmatch(words[i]) and i + 1 < len(words):
            opts += words[i:i + 2]
            i += 2
        else:
            files.append(words[i])
            i += 1
    if len(files) != 1:
        raise _cli.UserError(f"expected one study file and KEY VALUE overrides, got {len(files)} other word(s): "
                             f"{' '.join(files) or 'none'}")
    return files[0], opts


def _cpu_jobs(args: argparse.Namespace, train_command: List[str], out: str, threads: Optional[int]):
    """``--jobs N``: N CPU runs side by side on this machine; each with the study's threads, else
    with its share of the CPUs this process may use (its affinity, not the machine's count)."""
    from hrnet.study.execute.launch import check_rendezvous
    from hrnet.study.execute.select import make_executor

    if args.devices:
        raise _cli.UserError("--jobs runs CPU processes side by side; --devices gives each run a GPU: use one")
    if args.jobs < 1:
        raise _cli.UserError(f"--jobs must be >= 1, got {args.jobs}")
    check_rendezvous(train_command[:-1], args.jobs)
    if threads is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, cpus // args.jobs)
    return make_executor("local", train_command, out, [None] * args.jobs, threads=threads)


def _add_executor_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="local: processes on this machine (--devices); ray: one Ray task per run on a Ray "
                             "cluster (needs pip install -e \".[cluster]\"; README: Many machines)")
    parser.add_argument("--ray-address", default=None,
                        help="Ray cluster to run on (auto: the one this node joined; default: a new local "
                             "instance, whatever RAY_ADDRESS says)")
    parser.add_argument("--gpus-per-run", type=float, default=None,
                        help="GPUs of each run's Ray task (default 0; 0.5 lets two runs share a GPU; 2 for a "
                             "2-process --launcher)")
    parser.add_argument("--cpus-per-run", type=float, default=None,
                        help="CPUs of each run's Ray task (default: the study's threads, else 1); the trainer's "
                             "thread count is the study's threads, else this")


def _executor(args: argparse.Namespace, out: str, study):
    """The executor the options ask for (hrnet/study/execute/executors.py); option mix-ups and GPU
    options that do not fit the launcher or the study are user errors, before anything trains."""
    from hrnet.study.execute.launch import check_ray_gpus, check_rendezvous, device_slots, study_device
    from hrnet.study.execute.select import make_executor

    launcher = shlex.split(args.launcher)
    if not launcher:
        raise _cli.UserError("--launcher is empty")
    train_command = launcher + [os.path.join(HERE, "train.py")]
    ray_options = {"--ray-address": args.ray_address, "--gpus-per-run": args.gpus_per_run,
                   "--cpus-per-run": args.cpus_per_run}
    if args.executor == "local":
        given = [k for k, v in ray_options.items() if v is not None]
        if given:
            raise _cli.UserError(f"{given[0]} is an option of --executor ray")
        if args.jobs is not None:
            return _cpu_jobs(args, train_command, out, study.threads)
        slots: List[Optional[str]] = [None]
        if args.devices:
            slots = list(device_slots(args.devices, launcher, study_device(study)))
        check_rendezvous(launcher, len(slots))
        return make_executor("local", train_command, out, slots, threads=study.threads)
    if args.jobs is not None:
        raise _cli.UserError("--jobs is an option of the local executor; with --executor ray, --cpus-per-run sets "
                             "each run's share")
    if args.devices:
        raise _cli.UserError("--devices is an option of the local executor; with --executor ray, Ray gives each "
                             "run its GPUs (--gpus-per-run)")
    gpus = 0.0 if args.gpus_per_run is None else args.gpus_per_run
    cpus = float(study.threads or 1) if args.cpus_per_run is None else args.cpus_per_run
    if gpus < 0 or cpus <= 0:
        raise _cli.UserError(f"--gpus-per-run {gpus:g} / --cpus-per-run {cpus:g}: expected GPUs >= 0 and CPUs > 0")
    device = study_device(study)
    check_ray_gpus(gpus, launcher, device)
    check_rendezvous(launcher, None)
    return make_executor("ray", train_command, out, address=args.ray_address, gpus_per_run=gpus, cpus_per_run=cpus,
                         threads=study.threads, device=device)


if __name__ == "__main__":
    sys.exit(_cli.run(main))
