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


def _replay_ddp_sgd(cfg, world: int, per_rank: int, iterations: int):
    """What 2-process DDP must compute, in one process: per iteration, each rank's forward on its own
    shard (``DistributedSampler`` without shuffling: rank r takes samples r, r + W, ...), BatchNorm
    statistics per rank with rank 0's kept (DDP broadcasts rank 0's buffers), the mean of the ranks'
    gradients, one optimizer step. Returns the state_dict after ``iterations`` steps."""
    from torch.utils.data import default_collate

    from data import build_dataset
    from hrnet import build_model
    from hrnet.models.loss import JointsMSELoss
    from optim import build_optimizer

    dataset = build_dataset(cfg, is_train=True)
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
    return model.state_dict()


@pytest.mark.timeout(300)
def test_two_process_gloo_run_matches_single_process(real_hands, tmp_path):
    """A 2-process gloo run of SGD equals its single-process replay (per-rank BatchNorm, averaged
    gradients) to 1e-6, and its sharded evaluation equals a single process's."""
    from hrnet import build_model

    torchrun = shutil.which("torchrun")
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    # No augmentation and no shuffling: every rank's samples are known; one weights file: one start.
    init = tmp_path / "init.pth"
    torch.manual_seed(0)
    torch.save(build_model(make_cfg(SGD, TINY)).state_dict(), init)
    common = TINY + NO_AUG + ["DATASET.ROOT", os.path.join(real_hands, "freihand"), "OUTPUT_DIR", str(tmp_path),
                              "MODEL.PRETRAINED", str(init), "TRAIN.LR", "0.05"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = launcher + ["--standalone", "--nproc_per_node", "2", os.path.join(ROOT, "tools", "train.py"),
                      "--cfg", SGD] + common + ["TRAIN.BATCH_SIZE_PER_GPU", "2", "EXPERIMENT_NAME", "ddp"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # Same global batch (2 x 2) in one process.
    single = Trainer(make_cfg(SGD, common + ["TRAIN.BATCH_SIZE_PER_GPU", "4", "EXPERIMENT_NAME", "single"])).fit()
    ddp_dir = tmp_path / "ddp"
    ddp = json.loads((ddp_dir / "metrics.json").read_text())
    assert ddp["status"] == "finished" and ddp["world_size"] == 2 and ddp["hparams"]["batch"] == 4
    # Only rank 0 writes: one event file, one log, no per-rank copies.
    assert len([n for n in os.listdir(ddp_dir) if n.startswith("events.out")]) == 1
    assert sorted(n for n in os.listdir(ddp_dir) if not n.startswith("events.out")) == sorted(
        ["config.yaml", "train.log", "checkpoint_latest.pth", "model_best.pth", "metrics.json"])
    # Step 0 evaluates the same untrained weights on the gathered shards: every image once, same NME and loss.
    d0, s0 = ddp["history"][0], single["history"][0]
    assert ddp["final"]["num_images"] == single["final"]["num_images"] == 7
    assert d0["NME"] == pytest.approx(s0["NME"], rel=1e-5)
    assert d0["valid_loss"] == pytest.approx(s0["valid_loss"], rel=1e-5)
    # Training: the DDP weights after one epoch (2 iterations) equal the replay's.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks ran on one thread each: the same reduction orders
    try:
        ref = _replay_ddp_sgd(make_cfg(SGD, common + ["TRAIN.BATCH_SIZE_PER_GPU", "2"]), 2, 2, 2)
    finally:
        torch.set_num_threads(threads)
    got = load_checkpoint(ddp_dir / "checkpoint_latest.pth")["state_dict"]
    init_sd = torch.load(init, weights_only=True)
    moved = max((got[k].double() - init_sd[k].double()).abs().max().item() for k in ref if ref[k].is_floating_point())
    assert moved > 1e-3  # the step is far larger than the tolerance
    for k, v in ref.items():
        torch.testing.assert_close(got[k], v, rtol=0, atol=1e-6, msg=k)
