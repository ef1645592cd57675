"""The checks behind ``tools/gpu_check.sh``; each runs on any device (``--device cpu`` in the tests).

    python tools/gpu_check.py policy      [--device cuda]                       # precisions to check
    python tools/gpu_check.py resume      --amp fp32|bf16|fp16 --out DIR [--device cuda] [KEY VALUE ...]
    python tools/gpu_check.py ddp         --out DIR [--device cuda] [--nproc N] [KEY VALUE ...]
    python tools/gpu_check.py epoch-slice --out DIR [--device cuda] [--iters N] [KEY VALUE ...]

``resume``: a Lookahead(Adam) run in one precision is SIGKILLed after its second epoch, resumed with
``--resume``, and compared epoch by epoch with an uninterrupted run (bitwise on CPU; within ``--tol``
on CUDA, whose bilinear-upsampling backward is not deterministic). ``ddp``: a Lookahead run over
``--nproc`` processes (default: every visible GPU; gloo on CPU); each rank hashes its weights, BN
statistics, optimizer state and slow weights after training, and all hashes must agree. ``epoch-slice``:
HRNet-W18, 256 px, batch 32 (the user's setting) for ``--iters`` iterations: images/s, data wait vs
train time, peak memory. The small runs use a tiny model on a rendered synthetic set in ``--out``;
KEY VALUE overrides come last.

Each check prints its numbers and one ``PASS``/``FAIL``/``SKIP`` line; exit status 0, 1, or 77 (skipped).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import _cli
import _paths  # noqa: F401  (repository root on sys.path)

import torch

ROOT = _paths.ROOT
TRAIN = os.path.join(ROOT, "tools", "train.py")
LOOKAHEAD = os.path.join(ROOT, "experiments", "hand_lookahead_adam.yaml")
PASS, FAIL, SKIP = 0, 1, 77
AMP = {"fp32": ["AMP.MODE", "off"], "bf16": ["AMP.MODE", "on", "AMP.DTYPE", "bf16"],
       "fp16": ["AMP.MODE", "on", "AMP.DTYPE", "fp16"]}


def tiny(out: str, n_train: int = 64) -> List[str]:
    """A tiny Lookahead run (k 3) on a synthetic set rendered into ``out`` (one folder per set size)."""
    return ["MODEL.NAME", "hrnet_w18_small", "MODEL.IMAGE_SIZE", "[64,64]", "MODEL.HEATMAP_SIZE", "[16,16]",
            "MODEL.SIGMA", "1.0", "DATASET.ROOT", os.path.join(out, f"synthetic_{n_train}"),
            "DATASET.SYNTHETIC.NUM_TRAIN", str(n_train), "DATASET.SYNTHETIC.NUM_TEST", "32",
            "TRAIN.BATCH_SIZE_PER_GPU", "16", "TRAIN.LR", "1e-3", "TRAIN.LOOKAHEAD.K", "3",
            "TEST.BATCH_SIZE_PER_GPU", "32", "TEST.VIS_IMAGES", "0", "WORKERS", "0", "OUTPUT_DIR", out]


def native_precisions(device: torch.device) -> List[str]:
    """fp32, plus bf16 where the project's policy (``AMP.MODE auto``) takes it, plus fp16 on CUDA GPUs
    with fp16 tensor cores (compute capability 7.0+; fp16 autocast is CUDA-only here)."""
    from hrnet.runtime.device import amp_policy

    out = ["fp32"]
    if amp_policy("auto", "bf16", device).name == "bf16":
        out.append("bf16")
    if device.type == "cuda" and (torch.version.hip or torch.cuda.get_device_capability(device) >= (7, 0)):
        out.append("fp16")
    return out


def cmd_policy(args: argparse.Namespace) -> int:
    from hrnet.runtime.device import amp_policy, select_device

    device = select_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    cap = f", compute capability {torch.cuda.get_device_capability(device)}" if device.type == "cuda" else ""
    print(f"device {device} ({name}{cap}), torch {torch.__version__}, CUDA {torch.version.cuda}")
    print(f"project bf16 policy (AMP.MODE auto): {amp_policy('auto', 'bf16', device).reason}")
    print("precisions: " + " ".join(native_precisions(device)))
    return PASS


def _train(opts: Sequence[str], log: str, resume: bool = False) -> subprocess.Popen:
    """tools/train.py in the background, its console output appended to ``log``."""
    cmd = [sys.executable, TRAIN, "--cfg", LOOKAHEAD] + (["--resume"] if resume else []) + [str(o) for o in opts]
    with open(log, "a") as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)


def _metrics(run_dir: str) -> Dict:
    try:
        with open(os.path.join(run_dir, "metrics.json")) as f:
            return json.load(f)
    except (OSError, ValueError):  # not written yet, or being replaced
        return {}


def _kill_after(opts: Sequence[str], run_dir: str, epochs: int, timeout: float = 600.0) -> int:
    """Start a long run, SIGKILL it once ``epochs`` epochs are checkpointed; returns its checkpointed epoch."""
    from hrnet.runtime.checkpoint import load_checkpoint

    proc = _train(list(opts) + ["TRAIN.END_EPOCH", "1000"], run_dir + ".console.log")
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline and _metrics(run_dir).get("epochs_completed", 0) < epochs:
        time.sleep(0.05)
    if proc.poll() is not None:
        raise RuntimeError(f"the run to kill ended by itself (exit {proc.returncode})")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    latest = os.path.join(run_dir, "checkpoint_latest.pth")
    if not os.path.isfile(latest):
        raise RuntimeError(f"no checkpoint after {timeout:.0f} s")
    return int(load_checkpoint(latest)["epoch"])


def _fresh(*paths: str) -> None:
    """Remove an earlier check's run folders and logs (the rendered data sets are kept)."""
    for path in paths:
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def cmd_resume(args: argparse.Namespace) -> int:
    """Uninterrupted vs killed-and-resumed, same config: the same history (CPU: bitwise)."""
    base = tiny(args.out) + ["DEVICE", args.device] + AMP[args.amp] + list(args.opts)
    name = f"resume_{args.amp}"
    killed = os.path.join(args.out, name)
    _fresh(killed, killed + "_full", killed + ".console.log", killed + "_full.console.log")
    try:
        epoch = _kill_after(base + ["EXPERIMENT_NAME", name], killed, epochs=2)
    except RuntimeError as exc:
        print(f"FAIL: resume {args.amp}: {exc} (console output: {killed}.console.log)")
        return FAIL
    end = ["TRAIN.END_EPOCH", str(epoch + 2)]
    rc_resume = _train(base + ["EXPERIMENT_NAME", name] + end, killed + ".console.log", resume=True).wait()
    rc_full = _train(base + ["EXPERIMENT_NAME", name + "_full"] + end, killed + "_full.console.log").wait()
    a, b = _metrics(killed), _metrics(killed + "_full")
    print(f"{args.amp}: killed after epoch {epoch}, resumed (exit {rc_resume}) to {epoch + 2}; uninterrupted "
          f"(exit {rc_full}); precision {a.get('precision')}")
    if rc_resume or rc_full or a.get("status") != "finished" or b.get("status") != "finished":
        print(f"FAIL: resume {args.amp}: a run did not finish (console output: {killed}*.console.log)")
        return FAIL
    nme_a, nme_b = [h["NME"] for h in a["history"]], [h["NME"] for h in b["history"]]
    worst = max(abs(x - y) / max(abs(y), 1e-12) for x, y in zip(nme_a, nme_b))
    print(f"NME per epoch, resumed:       {[round(x, 5) for x in nme_a]}\n"
          f"NME per epoch, uninterrupted: {[round(x, 5) for x in nme_b]}  (max relative difference {worst:.2e})")
    tol = 0.0 if args.device == "cpu" else args.tol
    ok = len(nme_a) == len(nme_b) == epoch + 3 and worst <= tol and a["precision"]["amp"] == args.amp
    print(f"{'PASS' if ok else 'FAIL'}: resume {args.amp} (tolerance {tol:g})")
    return PASS if ok else FAIL


def cmd_ddp(args: argparse.Namespace) -> int:
    """torchrun over ``nproc`` processes; each rank's hashes (``ddp-rank``) compared here."""
    n = args.nproc or (torch.cuda.device_count() if args.device == "cuda" else 2)
    if n < 2:
        print(f"SKIP: ddp needs 2 or more devices, {n} visible")
        return SKIP
    out = os.path.join(args.out, f"ddp{n}")
    _fresh(out)
    opts = tiny(args.out, 4 * n * 4) + ["TRAIN.BATCH_SIZE_PER_GPU", "4", "TRAIN.END_EPOCH", "2", "DEVICE",
                                        args.device, "OUTPUT_DIR", out, "EXPERIMENT_NAME", "ddp"] + list(args.opts)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
           os.path.abspath(__file__), "ddp-rank", "--out", out] + opts
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "console.log"), "w") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1")).returncode
    ranks = []
    for r in range(n):
        try:
            with open(os.path.join(out, f"rank{r}.json")) as f:
                ranks.append(json.load(f))
        except (OSError, ValueError):
            ranks.append({})
    for r, h in enumerate(ranks):
        print(f"rank {r}: " + ", ".join(f"{k} {v[:16]}" for k, v in sorted(h.items())))
    agree = all(h and h == ranks[0] for h in ranks)
    print(f"{'PASS' if rc == 0 and agree else 'FAIL'}: ddp over {n} processes (exit {rc}), "
          f"per-rank hashes {'identical' if agree else 'DIFFER'} (console output: {out}/console.log)")
    return PASS if rc == 0 and agree else FAIL


def _rank_hashes(trainer) -> Dict[str, str]:
    """What this rank holds: weights and BN statistics, optimizer state, Lookahead slow weights."""
    from hrnet.engine.distributed import fingerprint

    if not hasattr(trainer, "optimizer"):  # failed before it was built: nothing to hash
        return {}
    opt = trainer.optimizer.state_dict()
    slow = opt["lookahead"]["slow_weights"]
    return {"weights": fingerprint(trainer.raw_model.state_dict().values()),
            "slow_weights": fingerprint(slow[i] for i in sorted(slow)),
            "optimizer": fingerprint(t for _, st in sorted(opt["state"].items())
                                     for _, t in sorted(st.items()) if torch.is_tensor(t))}


def cmd_ddp_rank(args: argparse.Namespace) -> int:
    """One torchrun rank: train, then write this rank's hashes (also after a failure: that is the point)."""
    from configs import load_config
    from hrnet.engine.distributed import cleanup_distributed
    from hrnet.engine.trainer import Trainer

    trainer = Trainer(load_config(LOOKAHEAD, list(args.opts)))
    try:
        trainer.fit()
    finally:
        rank = int(os.environ.get("RANK", "0"))
        with open(os.path.join(args.out, f"rank{rank}.json"), "w") as f:
            json.dump(_rank_hashes(trainer), f)
        cleanup_distributed()
    return PASS


def cmd_epoch_slice(args: argparse.Namespace) -> int:
    """The user's setting (HRNet-W18, 256 px, batch 32, Lookahead) for ``--iters`` iterations, in process."""
    from configs import load_config
    from hrnet.engine.trainer import Trainer

    class Timed(Trainer):
        def _train_one_epoch(self, epoch: int) -> Dict[str, float]:
            self.epoch_stats = super()._train_one_epoch(epoch)
            return self.epoch_stats

    n = args.iters * 32
    opts = ["MODEL.NAME", "hrnet_w18", "MODEL.IMAGE_SIZE", "[256,256]", "MODEL.HEATMAP_SIZE", "[64,64]",
            "TRAIN.BATCH_SIZE_PER_GPU", "32", "DATASET.ROOT", os.path.join(args.out, f"synthetic_slice_{n}"),
            "DATASET.SYNTHETIC.NUM_TRAIN", str(n), "DATASET.SYNTHETIC.NUM_TEST", "64", "TRAIN.END_EPOCH", "1",
            "WORKERS", str(min(8, os.cpu_count() or 1)), "TEST.VIS_IMAGES", "0", "DEVICE", args.device,
            "OUTPUT_DIR", args.out, "EXPERIMENT_NAME", "epoch_slice"] + AMP[args.amp] + list(args.opts)
    cfg = load_config(LOOKAHEAD, opts)
    _fresh(os.path.join(args.out, "epoch_slice"))
    if torch.cuda.is_available() and args.device != "cpu":
        torch.cuda.reset_peak_memory_stats()
    trainer = Timed(cfg)
    result = trainer.fit()
    s = trainer.epoch_stats
    if trainer.device.type == "cuda":
        peak = f"peak GPU memory {torch.cuda.max_memory_allocated(trainer.device) / 2 ** 30:.2f} GiB allocated, " \
               f"{torch.cuda.max_memory_reserved(trainer.device) / 2 ** 30:.2f} GiB reserved"
    else:
        import resource

        peak = f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GiB"
    print(f"epoch slice {cfg.MODEL.NAME} {list(cfg.MODEL.IMAGE_SIZE)} batch {cfg.TRAIN.BATCH_SIZE_PER_GPU}, "
          f"{len(trainer.data.train_loader)} iterations, {result['precision']}: {s['img_per_s']:.1f} images/s, train {s['train_time']:.1f} s "
          f"of which data wait {s['data_time']:.1f} s ({100 * s['data_time'] / max(s['train_time'], 1e-9):.0f}%), "
          f"{peak}, WORKERS {cfg.WORKERS}")
    ok = result["status"] == "finished" and result["final_train_loss"] is not None
    print(f"{'PASS' if ok else 'FAIL'}: epoch slice")
    return PASS if ok else FAIL


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["policy", "resume", "ddp", "ddp-rank", "epoch-slice"])
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--out", default="/tmp/gpu_check", help="folder for the runs and their data")
    parser.add_argument("--amp", default="fp32", choices=sorted(AMP), help="resume, epoch-slice: the precision")
    parser.add_argument("--tol", type=float, default=0.02, help="resume on CUDA: max relative NME difference")
    parser.add_argument("--nproc", type=int, default=0, help="ddp: processes (0: every visible GPU; 2 on CPU)")
    parser.add_argument("--iters", type=int, default=60, help="epoch-slice: iterations of batch 32")
    parser.add_argument("opts", nargs="*", help="KEY VALUE config overrides")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    os.makedirs(args.out, exist_ok=True)
    return {"policy": cmd_policy, "resume": cmd_resume, "ddp": cmd_ddp, "ddp-rank": cmd_ddp_rank,
            "epoch-slice": cmd_epoch_slice}[args.which](args)


if __name__ == "__main__":
    sys.exit(_cli.run(main))
