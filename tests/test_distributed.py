"""DDP on CPU: a 2-process gloo torchrun run, sharded evaluation, only rank 0 writes."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, make_cfg
from hrnet.runtime.checkpoint import load_checkpoint
from hrnet.engine.distributed import ShardSampler
from hrnet.engine.trainer import Trainer

TINY = ["MODEL.NAME", "hrnet_w18_small", "MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]",
        "DATASET.FORMAT", "coco", "DATASET.TRAINSET", "test_freihand.json", "DATASET.TESTSET", "test_freihand.json",
        "DATASET.MAX_TEST_SAMPLES", "7",  # odd: the two evaluation shards differ in size
        "TEST.BATCH_SIZE_PER_GPU", "4", "WORKERS", "0", "PRINT_FREQ", "1", "TRAIN.END_EPOCH", "1"]
SGD = os.path.join(ROOT, "experiments", "hand_sgd_lr0.01.yaml")
NO_AUG = ["DATASET.COLOR_AUG", "False", "DATASET.SCALE_FACTOR", "0.0", "DATASET.ROT_FACTOR", "0.0",
          "DATASET.FLIP", "False", "TRAIN.SHUFFLE", "False"]


def test_shard_sampler_covers_the_dataset_once():
    shards = [list(ShardSampler(7, r, 3)) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(shards, [])) == list(range(7))
    assert [len(ShardSampler(7, r, 3)) for r in range(3)] == [3, 2, 2]


def _replay_ddp(cfg, world: int, per_rank: int, iterations: int):
    """What 2-process DDP must compute, in one process: per iteration, each rank's forward on its own
    shard (``DistributedSampler`` without shuffling: rank r takes samples r, r + W, ...), BatchNorm
    statistics per rank with rank 0's kept (DDP broadcasts rank 0's buffers), the mean of the ranks'
    gradients, one optimizer step, from rank 0's init (seed SEED, or MODEL.PRETRAINED).
    Returns the state_dict and the optimizer after ``iterations`` steps."""
    from torch.utils.data import default_collate

    from data import build_dataset
    from hrnet import build_model
    from hrnet.models.loss import JointsMSELoss
    from optim import build_optimizer

    dataset = build_dataset(cfg, is_train=True)
    torch.manual_seed(int(cfg.SEED))
    model = build_model(cfg).train()
    opt = build_optimizer(cfg, model)
    criterion = JointsMSELoss(use_target_weight=True)
    fmt = torch.channels_last if cfg.CHANNELS_LAST else torch.contiguous_format
    for it in range(iterations):
        opt.zero_grad(set_to_none=True)
        for rank in reversed(range(world)):  # rank 0 last: its BN statistics are the ones kept
            buffers = {k: v.clone() for k, v in model.named_buffers()}
            shard = list(range(rank, len(dataset), world))[it * per_rank:(it + 1) * per_rank]
            batch = default_collate([dataset[i] for i in shard])
            out = model(batch["image"].contiguous(memory_format=fmt))
            (criterion(out, batch["target"], batch["target_weight"]) / world).backward()
            if rank:
                with torch.no_grad():
                    for k, v in model.named_buffers():
                        v.copy_(buffers[k])
        opt.step()
    return model.state_dict(), opt


#: tools/train.py's run, then each rank saves what it holds (also when the trainer's own check failed).
RANK_DUMP = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from configs import load_config
from hrnet.engine.distributed import cleanup_distributed
from hrnet.engine.trainer import Trainer
trainer = Trainer(load_config(sys.argv[2], sys.argv[4:]))
try:
    trainer.fit()
finally:
    torch.save({"weights": trainer.raw_model.state_dict(), "optimizer": trainer.optimizer.state_dict()},
               f"{sys.argv[3]}/rank{trainer.dist.rank}.pt")
    cleanup_distributed()
"""
LOOKAHEAD = os.path.join(ROOT, "experiments", "hand_lookahead_adam.yaml")
#: (yaml, per-rank batch, iterations, overrides): SGD from a shared init file (one start, whatever the
#: seeding); Lookahead(Adam) from each rank's own random init, 4 steps with k = 3 (a sync, then slow != fast).
CASES = {"sgd": (SGD, 2, 2, ["TRAIN.LR", "0.05"]),
         "lookahead_adam": (LOOKAHEAD, 1, 4, ["TRAIN.LR", "1e-3", "TRAIN.LOOKAHEAD.K", "3"])}


def _torchrun_ranks(tmp_path, yaml, opts):
    """2-process gloo run of ``yaml``; returns each rank's saved state."""
    torchrun = shutil.which("torchrun")
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    script = tmp_path / "rank_dump.py"
    script.write_text(RANK_DUMP)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = launcher + ["--standalone", "--nproc_per_node", "2", str(script), ROOT, yaml, str(tmp_path)] + opts
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return ranks


def _slow(optimizer_state):
    return optimizer_state["lookahead"]["slow_weights"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", sorted(CASES))
def test_two_process_gloo_run_matches_single_process(real_hands, tmp_path, case):
    """A 2-process gloo run equals its single-process replay (per-rank BatchNorm, averaged gradients)
    to 1e-6, both ranks hold the same weights and optimizer state (Lookahead: slow weights too), and its
    sharded evaluation of the untrained model equals a single process's with the same SEED."""
    from hrnet import build_model

    yaml, per_rank, iterations, extra = CASES[case]
    # No augmentation and no shuffling: every rank's samples are known.
    common = TINY + NO_AUG + extra + ["DATASET.ROOT", os.path.join(real_hands, "freihand"), "OUTPUT_DIR",
                                      str(tmp_path)]
    if yaml == SGD:
        init = tmp_path / "init.pth"
        torch.manual_seed(0)
        torch.save(build_model(make_cfg(yaml, TINY)).state_dict(), init)
        common += ["MODEL.PRETRAINED", str(init)]
    ranks = _torchrun_ranks(tmp_path, yaml, common + ["TRAIN.BATCH_SIZE_PER_GPU", str(per_rank), "EXPERIMENT_NAME",
                                                      "ddp"])

    # Same global batch in one process, same SEED.
    single = Trainer(make_cfg(yaml, common + ["TRAIN.BATCH_SIZE_PER_GPU", str(2 * per_rank),
                                              "EXPERIMENT_NAME", "single"])).fit()
    ddp_dir = tmp_path / "ddp"
    ddp = json.loads((ddp_dir / "metrics.json").read_text())
    assert ddp["status"] == "finished" and ddp["world_size"] == 2 and ddp["hparams"]["batch"] == 2 * per_rank
    # Only rank 0 writes: one event file, one log, no per-rank copies.
    assert len([n for n in os.listdir(ddp_dir) if n.startswith("events.out")]) == 1
    assert sorted(n for n in os.listdir(ddp_dir) if not n.startswith(("events.out", "."))) == sorted(
        ["config.yaml", "train.log", "checkpoint_latest.pth", "model_best.pth", "metrics.json"])
    # Step 0 evaluates the same untrained weights (Lookahead: slow ones) on the gathered shards.
    d0, s0 = ddp["history"][0], single["history"][0]
    assert ddp["final"]["num_images"] == single["final"]["num_images"] == 7
    assert d0["NME"] == pytest.approx(s0["NME"], rel=1e-5)
    assert d0["valid_loss"] == pytest.approx(s0["valid_loss"], rel=1e-5)
    # One model: both ranks hold bitwise the same weights and optimizer state.
    for k, v in ranks[0]["weights"].items():
        assert torch.equal(ranks[1]["weights"][k], v), k
    if yaml == LOOKAHEAD:
        assert ranks[0]["optimizer"]["lookahead"]["num_steps"] == iterations > 3  # more than k steps
        slow0, slow1 = _slow(ranks[0]["optimizer"]), _slow(ranks[1]["optimizer"])
        assert all(torch.equal(slow0[i], slow1[i]) for i in slow0)
    # Training: the DDP weights after the epoch equal the replay's.
    cfg = make_cfg(yaml, common + ["TRAIN.BATCH_SIZE_PER_GPU", str(per_rank)])
    torch.manual_seed(int(cfg.SEED))
    start = build_model(cfg).state_dict()  # rank 0's start (SGD: the init file, loaded by build_model)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks ran on one thread each: the same reduction orders
    try:
        ref, opt = _replay_ddp(cfg, 2, per_rank, iterations)
    finally:
        torch.set_num_threads(threads)
    got = load_checkpoint(ddp_dir / "checkpoint_latest.pth")
    moved = max((got["state_dict"][k].double() - start[k].double()).abs().max().item()
                for k in ref if ref[k].is_floating_point())
    assert moved > 1e-3  # the step is far larger than the tolerance
    for k, v in ref.items():
        torch.testing.assert_close(got["state_dict"][k], v, rtol=0, atol=1e-6, msg=k)
    if yaml == LOOKAHEAD:
        assert opt.cycle_step == 1  # one step after the sync: the slow weights are not the fast ones
        want, have = _slow(opt.state_dict()), _slow(got["optimizer"])
        for i in want:
            torch.testing.assert_close(have[i], want[i], rtol=0, atol=1e-6, msg=f"slow weight {i}")
