"""DDP on CPU: a 2-process gloo torchrun run, sharded evaluation, only rank 0 writes."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, make_cfg
from hrnet.distributed import ShardSampler
from hrnet.trainer import Trainer

TINY = ["MODEL.NAME", "hrnet_w18_small", "MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]",
        "DATASET.FORMAT", "coco", "DATASET.TRAINSET", "test_freihand.json", "DATASET.TESTSET", "test_freihand.json",
        "DATASET.MAX_TEST_SAMPLES", "7",  # odd: the two evaluation shards differ in size
        "TEST.BATCH_SIZE_PER_GPU", "4", "WORKERS", "0", "PRINT_FREQ", "1", "TRAIN.END_EPOCH", "1"]
ADAM = os.path.join(ROOT, "experiments", "hand_adam.yaml")


def test_shard_sampler_covers_the_dataset_once():
    shards = [list(ShardSampler(7, r, 3)) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(sum(shards, [])) == list(range(7))
    assert [len(ShardSampler(7, r, 3)) for r in range(3)] == [3, 2, 2]


@pytest.mark.timeout(300)
def test_two_process_gloo_run_matches_single_process(real_hands, tmp_path):
    torchrun = shutil.which("torchrun")
    launcher = [torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]
    common = TINY + ["DATASET.ROOT", os.path.join(real_hands, "freihand"), "OUTPUT_DIR", str(tmp_path)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = launcher + ["--standalone", "--nproc_per_node", "2", os.path.join(ROOT, "tools", "train.py"),
                      "--cfg", ADAM] + common + ["TRAIN.BATCH_SIZE_PER_GPU", "2", "EXPERIMENT_NAME", "ddp"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    # Same global batch (2 x 2) in one process.
    single = Trainer(make_cfg(ADAM, common + ["TRAIN.BATCH_SIZE_PER_GPU", "4", "EXPERIMENT_NAME", "single"])).fit()
    ddp_dir = tmp_path / "ddp"
    ddp = json.loads((ddp_dir / "metrics.json").read_text())
    assert ddp["status"] == "finished" and ddp["world_size"] == 2 and ddp["hparams"]["batch"] == 4
    # Only rank 0 writes: one event file, one log, no per-rank copies.
    assert len([n for n in os.listdir(ddp_dir) if n.startswith("events.out")]) == 1
    assert sorted(n for n in os.listdir(ddp_dir) if not n.startswith("events.out")) == sorted(
        ["config.yaml", "train.log", "checkpoint_latest.pth", "model_best.pth", "metrics.json"])
    # Step 0 evaluates the same untrained weights (rank 0 is seeded like the single process) on the
    # gathered shards: every image once, same NME and loss.
    d0, s0 = ddp["history"][0], single["history"][0]
    assert ddp["final"]["num_images"] == single["final"]["num_images"] == 7
    assert d0["NME"] == pytest.approx(s0["NME"], rel=1e-5)
    assert d0["valid_loss"] == pytest.approx(s0["valid_loss"], rel=1e-5)
    # After an epoch the runs differ (per-rank BatchNorm statistics, augmentation streams), but
    # only a little: the same data, LR and global batch.
    assert ddp["history"][1]["train_loss"] == pytest.approx(single["history"][1]["train_loss"], rel=0.1)
    assert ddp["history"][1]["valid_loss"] == pytest.approx(single["history"][1]["valid_loss"], rel=0.1)
