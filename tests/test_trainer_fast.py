"""The Trainer's decisions on a tiny in-memory problem (hrnet/engine/trainer.py, validation.py): a two-conv
network on 12 synthetic 32x32 samples trains an epoch in milliseconds, so every behaviour is checked
exactly (the LR of each iteration, which step is best and what model_best.pth holds, resume and
interrupt continuations, metrics.json, Lookahead's evaluated weights). The end-to-end runs of the real
network on real photos, in subprocesses and with signals, are in test_trainer.py."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import signal
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import pytest
import torch
import torch.nn as nn

from conftest import ROOT, make_cfg
from configs import ConfigError
from hrnet.engine import run_record as rr
from hrnet.engine import trainer as trainer_mod
from hrnet.engine.run_lock import holder_pid
from hrnet.engine.trainer import BEST, LATEST, METRICS, NonFiniteLossError, Trainer
from hrnet.engine.validation import ValidationMixin
from hrnet.runtime.checkpoint import load_checkpoint, save_checkpoint

SGD = os.path.join(ROOT, "experiments", "hand_sgd_lr0.01.yaml")
LOOKAHEAD = os.path.join(ROOT, "experiments", "hand_lookahead_adam.yaml")
J, IMG, HM = 21, 32, 8
N_TRAIN, N_VALID, BATCH = 12, 6, 4  # 3 iterations per epoch
pytestmark = pytest.mark.filterwarnings("ignore:.*those LR decays never happen")
CODE = {"git_commit": None, "git_dirty": None, "source_sha256": "c" * 64}


class _Hands(torch.utils.data.Dataset):
    """Items as ``data.build_dataset`` makes them: a fixed random image per index plus noise from torch's
    global RNG (the augmentation stream that exact resume must repeat), one-hot heatmap targets of
    fixed joints, and the meta the evaluation maps back to pixels."""
    skipped = ()

    def __init__(self, n: int, train: bool) -> None:
        self.n, self.train, self.seeds = n, train, []

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Dict[str, Any]:
        g = torch.Generator().manual_seed(i)
        image = torch.randn(3, IMG, IMG, generator=g)
        if self.train:
            self.seeds.append(torch.initial_seed())
            image = image + 0.1 * torch.rand(3, IMG, IMG)
        cells = torch.randint(0, HM, (J, 2), generator=g)
        target = torch.zeros(J, HM, HM)
        target[torch.arange(J), cells[:, 1], cells[:, 0]] = 1.0
        joints = torch.cat([cells.double() * 4 + 1.5, torch.full((J, 1), 2.0, dtype=torch.float64)], 1)
        meta = {"hm_to_img": torch.tensor([[4.0, 0.0, 1.5], [0.0, 4.0, 1.5]], dtype=torch.float64),
                "joints": joints, "bbox": torch.tensor([0.0, 0.0, IMG, IMG]), "image_id": i, "ann_id": i}
        return {"image": image, "target": target, "target_weight": torch.ones(J, 1), "meta": meta}


class _Net(nn.Sequential):
    """32x32 images -> 21 heatmaps of 8x8; records whether each training input was channels_last."""

    def __init__(self) -> None:
        super().__init__(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, J, 3, stride=2, padding=1))
        self.channels_last: List[bool] = []

    def forward(self, x):
        if self.training:
            self.channels_last.append(x.is_contiguous(memory_format=torch.channels_last)
                                      and not x.is_contiguous())
        return super().forward(x)


class Tiny:
    """The tiny problem installed for a test: ``cfg(*opts)``, the datasets built, training-loss hooks."""

    def __init__(self, monkeypatch, tmp_path) -> None:
        import data
        from hrnet.models import hrnet as hrnet_model
        from hrnet.runtime import checkpoint

        self.tmp_path, self.sets = tmp_path, []
        self.losses: List[float] = []  # every training loss, in order
        self.weights: List[Any] = []  # the shape of each training loss's joint weights
        self.on_loss: Optional[Callable[[int, torch.Tensor], torch.Tensor]] = None  # (call number, loss) -> loss
        tiny = self

        def build_dataset(cfg, is_train):
            ds = _Hands(N_TRAIN if is_train else N_VALID, is_train)
            self.sets.append(ds)
            return ds

        class HookedLoss(trainer_mod.JointsMSELoss):
            def forward(self, output, target, target_weight=None):
                loss = super().forward(output, target, target_weight)
                if torch.is_grad_enabled() and not torch.is_inference_mode_enabled():
                    tiny.losses.append(float(loss.detach()))
                    tiny.weights.append(None if target_weight is None else tuple(target_weight.shape))
                    if tiny.on_loss is not None:
                        loss = tiny.on_loss(len(tiny.losses), loss)
                return loss

        monkeypatch.setattr(data, "build_dataset", build_dataset)
        monkeypatch.setattr(hrnet_model, "build_model", lambda cfg: _Net())
        monkeypatch.setattr(trainer_mod, "JointsMSELoss", HookedLoss)
        # what is not the trainer's and costs most of a tiny run (tested in test_run_record / test_device /
        # test_checkpoint): the code hash, the machine's numerics fingerprint, fsync
        monkeypatch.setattr(trainer_mod, "code_version", lambda: dict(CODE))
        monkeypatch.setattr(trainer_mod, "describe_machine", lambda device: {"device": str(device)})
        monkeypatch.setattr(checkpoint.os, "fsync", lambda fd: None)

    def cfg(self, *opts: Any, yaml: str = SGD, out: Optional[str] = None):
        return make_cfg(yaml, ["MODEL.IMAGE_SIZE", f"[{IMG}, {IMG}]", "MODEL.HEATMAP_SIZE", f"[{HM}, {HM}]",
                               "TRAIN.BATCH_SIZE_PER_GPU", str(BATCH), "TEST.BATCH_SIZE_PER_GPU", "4",
                               "WORKERS", "0", "TEST.VIS_IMAGES", "0", "PRINT_FREQ", "1", "DEVICE", "cpu",
                               "TRAIN.LR", "0.05", "TRAIN.LR_STEP", "[1]", "TRAIN.END_EPOCH", "2",
                               "OUTPUT_DIR", str(out or self.tmp_path), *map(str, opts)])

    def run_dir(self, cfg) -> str:
        from configs import experiment_name

        return os.path.join(cfg.OUTPUT_DIR, experiment_name(cfg))


@pytest.fixture
def tiny(monkeypatch, tmp_path) -> Tiny:
    return Tiny(monkeypatch, tmp_path)


def _metrics(cfg, tiny: Tiny) -> Dict[str, Any]:
    with open(os.path.join(tiny.run_dir(cfg), METRICS)) as f:
        return json.load(f)


def _log(cfg, tiny: Tiny) -> str:
    with open(os.path.join(tiny.run_dir(cfg), rr.LOG)) as f:
        return f.read()


def _scripted_nme(monkeypatch, nmes: List[float]) -> List[Dict[str, Any]]:
    """Validation NMEs taken in order from the list ``nmes`` (its last one repeats; the test may refill
    it); returns one record per evaluation: the NME, the weights evaluated and the loss merged."""
    real = ValidationMixin._infer
    calls: List[Dict[str, Any]] = []

    def infer(self, model):
        merged, metrics = real(self, model)
        nme = nmes.pop(0) if len(nmes) > 1 else nmes[0]
        calls.append({"NME": nme, "weights": {k: v.clone() for k, v in model.state_dict().items()},
                      "loss": merged["loss_sum"] / merged["count"]})
        return merged, dict(metrics, NME=nme)

    monkeypatch.setattr(ValidationMixin, "_infer", infer)
    return calls


def _same_weights(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _without_times(history: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [{k: v for k, v in h.items() if k not in ("wall_time", "img_per_s")} for h in history]


# ---------------------------------------------------------------------------- a run and its record
def test_a_run_records_every_step(tiny, monkeypatch):
    monkeypatch.setattr(_Hands, "skipped", ("x.jpg: unreadable",))  # each set left one sample out
    scalars: List[Any] = []
    monkeypatch.setattr(rr, "write_scalars", lambda writer, entry, cfg: scalars.append((entry, cfg)))
    cfg = tiny.cfg()
    trainer = Trainer(cfg)
    result = trainer.fit()
    run = tiny.run_dir(cfg)
    metrics = _metrics(cfg, tiny)
    assert metrics == json.loads(json.dumps(result))
    assert sorted(n for n in os.listdir(run) if not n.startswith("events.out")) == sorted(
        [rr.CONFIG, rr.LOG, LATEST, BEST, METRICS, ".trainer.lock"])
    assert metrics["status"] == "finished" and metrics["epochs_completed"] == 2 and metrics["world_size"] == 1
    assert metrics["machine"] == {"device": "cpu"} and metrics["precision"] == dict(amp="fp32", **trainer.backends)
    assert metrics["skipped"] == ["x.jpg: unreadable"] * 2 and metrics["num_images_skipped"] == 2
    assert [(e["epoch"], c) for e, c in scalars] == [(0, cfg), (1, cfg), (2, cfg)]  # TensorBoard, each step
    # seconds since the run started: increasing over the steps, within this test's own duration
    times = [e["wall_time"] for e in metrics["history"]]
    assert 0 < times[0] <= times[1] <= times[2] <= metrics["wall_time_s"] + 0.01 < 120
    h = metrics["history"]
    assert [e["epoch"] for e in h] == [0, 1, 2] and "train_loss" not in h[0] and "lr" not in h[0]
    # the LR each epoch trained at (recorded before the epoch's scheduler step): LR_STEP [1]
    assert [e["lr"] for e in h[1:]] == pytest.approx([0.05, 0.005], rel=1e-12)
    # the epoch's loss is the exact mean of its iterations' losses
    assert len(tiny.losses) == 6 and tiny.weights == [(BATCH, J, 1)] * 6  # each loss weighs the joints
    assert h[1]["train_loss"] == pytest.approx(np.mean(tiny.losses[:3]), rel=1e-12)
    assert h[2]["train_loss"] == pytest.approx(np.mean(tiny.losses[3:]), rel=1e-12)
    assert all(e["eval_weights"] == "model" and "NME_slow" not in e for e in h)
    assert metrics["best_NME"] == min(e["NME"] for e in h)
    assert metrics["best_epoch"] == [e["NME"] for e in h].index(metrics["best_NME"])
    assert metrics["code_version"] == CODE and metrics["code_versions"] == [{"code_version": CODE, "from_epoch": 0}]
    latest = load_checkpoint(os.path.join(run, LATEST))
    assert (latest["epoch"], latest["global_step"], latest["world_size"]) == (2, 6, 1)
    assert latest["scheduler"]["last_epoch"] == 2
    best = load_checkpoint(os.path.join(run, BEST))
    assert best["epoch"] == metrics["best_epoch"] and best["NME"] == metrics["best_NME"]
    assert best["eval_weights"] == "model" and best["config"] == cfg.dump()
    assert holder_pid(run) is None  # the lock is released at the end


def test_the_run_log_opens_with_the_files_device_and_data_and_ends_with_the_result(tiny):
    """train.log's first lines name the run folder, its files, the device and how to watch it, and the data
    and optimizer; a save killed in an earlier session left a temporary file: removed, and said so."""
    cfg = tiny.cfg()
    run = tiny.run_dir(cfg)
    os.makedirs(run)
    stale = os.path.join(run, ".checkpoint_latest.pth.x1y2.tmp")
    with open(stale, "wb") as f:
        f.write(b"partial")
    start = time.time()
    metrics = Trainer(cfg).fit()
    # this session only: nothing earlier (metrics.json rounds to 0.01 s, so up to 0.005 s above the clock)
    assert 0.0 < metrics["wall_time_s"] <= time.time() - start + 0.005
    assert not os.path.exists(stale)
    assert any(n.startswith("events.out.tfevents.") for n in os.listdir(run))  # TensorBoard's, in the run folder
    lines = [re.sub(r"^\S+ \S+ ", "", line) for line in _log(cfg, tiny).splitlines()]
    name = os.path.basename(run)
    assert lines[:3] == [
        f"INFO run {name} -> {os.path.abspath(run)} ({rr.CONFIG}, {rr.LOG}, TensorBoard events, {LATEST}, {BEST}, "
        f"{METRICS}); device cpu x 1, precision fp32 (AMP.MODE off); watch: tensorboard --logdir {cfg.OUTPUT_DIR}",
        f"WARNING removed {stale}, left by an interrupted save",
        f"INFO train {N_TRAIN} samples ({N_TRAIN // BATCH} iterations/epoch), valid {N_VALID} samples; optimizer sgd, "
        f"lr 0.05, 2 epochs"]
    end = re.fullmatch(rf"INFO finished {name} in (\d+\.\d) min: final NME (\S+), best NME (\S+) at epoch (\d) -> "
                       rf"{re.escape(os.path.abspath(run))}", lines[-1])
    assert end, lines[-1]
    h = metrics["history"]
    assert float(end[1]) == pytest.approx(metrics["wall_time_s"] / 60, abs=0.051)
    assert (end[2], end[3], int(end[4])) == (f"{h[-1]['NME']:.5f}", f"{metrics['best_NME']:.5f}", metrics["best_epoch"])
    evals = [float(t) for t in re.findall(r"\| eval (\S+)s$", "\n".join(lines), re.M)]
    assert len(evals) == 3 and all(0.0 <= t < 60.0 for t in evals)  # seconds each validation took


def test_the_finished_line_gives_the_run_s_minutes_over_all_sessions(tiny):
    cfg = tiny.cfg("TRAIN.END_EPOCH", 1)
    Trainer(cfg).fit()
    path = os.path.join(tiny.run_dir(cfg), LATEST)
    save_checkpoint(dict(load_checkpoint(path), wall_time=5994.0), path)  # earlier sessions: 99.9 min
    metrics = Trainer(cfg, resume=True).fit()
    minutes = re.search(r" INFO finished \S+ in (\S+) min: ", _log(cfg, tiny).splitlines()[-1])[1]
    assert 5994.0 <= metrics["wall_time_s"] < 6000.0 and minutes in ("99.9", "100.0")


def test_unlabelled_joints_weigh_nothing_in_the_loss(tiny, monkeypatch):
    load = _Hands.__getitem__
    monkeypatch.setattr(_Hands, "__getitem__", lambda self, i: dict(load(self, i), target_weight=torch.zeros(J, 1)))
    Trainer(tiny.cfg("TRAIN.END_EPOCH", 1)).fit()
    assert tiny.losses == [0.0] * (N_TRAIN // BATCH)  # the targets' weights: 0 for every joint here


@pytest.mark.parametrize("device, device_ids", [("cpu", None), ("cuda:1", [1])])
def test_under_ddp_rank_0_s_model_is_wrapped_on_this_process_s_device(tiny, monkeypatch, device, device_ids):
    """DistributedDataParallel around the model built from the run's config, after rank 0's weights were
    broadcast (simulated: the wrapper and the broadcast recorded; no process group)."""
    from hrnet.engine.distributed import DistInfo
    from hrnet.models import hrnet as hrnet_model

    built, broadcast, wrapped = [], [], []

    class Net(_Net):
        def to(self, *args, **kwargs):  # no CUDA here: the device is only recorded
            return self

    class DDP(nn.Module):
        def __init__(self, module, device_ids=None):
            super().__init__()
            self.module = module
            wrapped.append((module, device_ids))

    monkeypatch.setattr(hrnet_model, "build_model", lambda cfg: built.append(cfg) or Net())
    monkeypatch.setattr(trainer_mod, "broadcast_module", lambda module: broadcast.append(module))
    monkeypatch.setattr(trainer_mod.nn.parallel, "DistributedDataParallel", DDP)
    t = Trainer(tiny.cfg())
    t.device = torch.device(device)
    t.dist = DistInfo(1, 2, t.device.index or 0, t.device)
    t._build_model_and_optimizer()
    assert built == [t.cfg] and broadcast == [t.raw_model] and wrapped == [(t.raw_model, device_ids)]
    assert isinstance(t.model, DDP) and t.model.module is t.raw_model


def test_each_rank_seeds_its_own_stream(tiny, monkeypatch):
    from hrnet.engine.distributed import DistInfo

    seeds: List[int] = []

    class Stop(Exception):
        pass

    def stop(self):
        raise Stop

    monkeypatch.setattr(trainer_mod, "init_distributed", lambda device: DistInfo(3, 4, 3, torch.device("cpu")))
    monkeypatch.setattr(trainer_mod, "seed_everything", seeds.append)
    monkeypatch.setattr(Trainer, "_build_model_and_optimizer", stop)  # seeded before the model is built
    with pytest.raises(Stop):
        Trainer(tiny.cfg("SEED", 5)).fit()
    assert seeds == [5 + 3]


def test_train_resume_in_the_config_resumes_unless_the_caller_says(tiny):
    Trainer(tiny.cfg("TRAIN.END_EPOCH", 1)).fit()
    assert Trainer(tiny.cfg("TRAIN.RESUME", True)).resume is True
    assert Trainer(tiny.cfg("TRAIN.RESUME", True), resume=False).resume is False
    assert Trainer(tiny.cfg(), resume=True).resume is True
    h = Trainer(tiny.cfg("TRAIN.RESUME", True, "TRAIN.END_EPOCH", 2)).fit()["history"]  # --resume from the config
    assert [e["epoch"] for e in h] == [0, 1, 2]


def test_a_rank_s_log_is_opened_for_its_rank(tiny, monkeypatch):
    """Only rank 0 makes the run folder; each rank's log is opened with its rank (rank 0 writes train.log)."""
    from hrnet.engine.distributed import DistInfo

    opened: List[Any] = []

    @contextlib.contextmanager
    def run_log(run_dir, rank=0):
        opened.append((run_dir, rank))
        yield

    def setup(self):
        self.dist = DistInfo(3, 4, 3, torch.device("cpu"))
        self.device = self.dist.device

    monkeypatch.setattr(rr, "run_log", run_log)
    monkeypatch.setattr(Trainer, "_setup_device", setup)
    monkeypatch.setattr(Trainer, "_build_model_and_optimizer", lambda self: None)
    monkeypatch.setattr(Trainer, "_claim_run_dir", lambda self: None)
    monkeypatch.setattr(Trainer, "_run", lambda self, checkpoint: "ran")
    t = Trainer(tiny.cfg())
    assert t.fit() == "ran"
    assert opened == [(t.run_dir, 3)] and not os.path.exists(t.run_dir)


def test_each_iteration_trains_at_the_warm_up_then_epoch_lr(tiny):
    cfg = tiny.cfg("TRAIN.WARMUP_ITERS", 4, "TRAIN.WARMUP_FACTOR", 0.5)
    trainer = Trainer(cfg)
    lrs: List[float] = []

    def lr_of_step(n, loss):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        return loss

    tiny.on_loss = lr_of_step
    metrics = trainer.fit()
    warm = [0.05 * (0.5 + 0.5 * i / 4) for i in range(4)]
    assert lrs == pytest.approx(warm[:3] + [warm[3] * 0.1, 0.005, 0.005], rel=1e-9)
    assert [e["lr"] for e in metrics["history"][1:]] == pytest.approx([0.05 * (0.5 + 0.5 * 3 / 4), 0.005], rel=1e-9)


def test_the_best_step_is_the_first_strictly_lowest_nme(tiny, monkeypatch, caplog):
    calls = _scripted_nme(monkeypatch, [0.5, 0.3, 0.3, 0.4])
    cfg = tiny.cfg("TRAIN.END_EPOCH", 3)
    metrics = Trainer(cfg).fit()
    h = metrics["history"]
    assert [e["NME"] for e in h] == [0.5, 0.3, 0.3, 0.4]
    assert [e["best_NME"] for e in h] == [0.5, 0.3, 0.3, 0.3]
    assert (metrics["best_epoch"], metrics["best_NME"], metrics["final_NME"], metrics["untrained_NME"]) == (
        1, 0.3, 0.4, 0.5)
    assert [e["valid_loss"] for e in h] == pytest.approx([c["loss"] for c in calls], rel=1e-12)
    best = load_checkpoint(os.path.join(tiny.run_dir(cfg), BEST))
    assert best["epoch"] == 1 and best["NME"] == 0.3 and best["eval_weights"] == "model"
    assert _same_weights(best["state_dict"], calls[1]["weights"])  # the weights evaluated at step 1
    assert not _same_weights(best["state_dict"], calls[2]["weights"])
    log = _log(cfg, tiny)
    assert " INFO epoch 1/3 | train loss " in log and " INFO epoch 3/3 | train loss " in log
    assert "| NME 0.30000 (best 0.30000 @ 1)" in log  # the tie is no new best
    assert "| NME 0.30000 * (best 0.30000 @ 1)" in log and "| NME 0.40000 (best 0.30000 @ 1)" in log
    assert "epoch 0 (untrained) | valid loss" in log and "| NME 0.50000 | model weights | eval " in log
    assert (f"finished {os.path.basename(tiny.run_dir(cfg))} in " in log
            and ": final NME 0.40000, best NME 0.30000 at epoch 1 -> " in log)


def test_a_resumed_run_continues_the_uninterrupted_one(tiny):
    warm = ("TRAIN.WARMUP_ITERS", 5, "TRAIN.WARMUP_FACTOR", 0.5)  # the warm-up spans the resume
    whole = Trainer(tiny.cfg(*warm, out=str(tiny.tmp_path / "a"))).fit()
    whole_weights = load_checkpoint(os.path.join(tiny.tmp_path, "a", "hand_sgd_lr0.01", LATEST))
    first = tiny.cfg("TRAIN.END_EPOCH", 1, *warm, out=str(tiny.tmp_path / "b"))
    Trainer(first).fit()
    status_at_resume: List[str] = []

    def note_status(n, loss):
        if not status_at_resume:
            status_at_resume.append(_metrics(first, tiny)["status"])
        return loss

    tiny.on_loss = note_status
    resumed = Trainer(tiny.cfg(*warm, out=str(tiny.tmp_path / "b")), resume=True).fit()
    assert status_at_resume == ["running"]  # this session trains: metrics.json says so before any step
    assert _without_times(resumed["history"]) == _without_times(whole["history"])
    assert resumed["status"] == "finished" and resumed["epochs_completed"] == 2
    assert resumed["wall_time_s"] >= resumed["history"][1]["wall_time"]
    got = load_checkpoint(os.path.join(tiny.tmp_path, "b", "hand_sgd_lr0.01", LATEST))
    assert _same_weights(got["state_dict"], whole_weights["state_dict"]) and got["global_step"] == 6
    best = min(whole["history"][:2], key=lambda e: e["NME"])
    assert re.search(rf" INFO resumed from {re.escape(str(tiny.tmp_path / 'b' / 'hand_sgd_lr0.01'))}: 1/2 epochs "
                     rf"done, best NME {best['NME']:.5f} at epoch {best['epoch']}\n", _log(first, tiny))
    assert resumed["code_versions"] == [{"code_version": CODE, "from_epoch": 0}]  # the same code: one entry
    # a finished run resumed to the same end: nothing more to train
    n = len(tiny.losses)
    again = Trainer(tiny.cfg(*warm, out=str(tiny.tmp_path / "b")), resume=True).fit()
    assert len(tiny.losses) == n and again["history"] == resumed["history"] and again["status"] == "finished"


def test_a_resume_by_changed_code_adds_a_code_version(tiny, monkeypatch):
    cfg = tiny.cfg("TRAIN.END_EPOCH", 1)
    Trainer(cfg).fit()
    other = dict(CODE, source_sha256="d" * 64)
    monkeypatch.setattr(trainer_mod, "code_version", lambda: dict(other))
    resumed = Trainer(tiny.cfg("TRAIN.END_EPOCH", 2), resume=True).fit()
    assert resumed["code_version"] == other
    assert resumed["code_versions"] == [{"code_version": CODE, "from_epoch": 0}, {"code_version": other, "from_epoch": 1}]
    assert _log(cfg, tiny).count("the training code changed since the run's previous session") == 1


def test_the_step_check_reads_every_rank_s_flags(tiny):
    """``_check_step`` under DDP (all_reduce_sum is the identity without a process group: this rank's flags)."""
    from hrnet.engine.distributed import DistInfo

    t = Trainer(tiny.cfg())
    t.dist, t.epoch, t.global_step = DistInfo(0, 2, 0, torch.device("cpu")), 4, 17
    assert t._check_step(torch.tensor(0.5), 4, 1, 3) is False
    t.stop.signum = signal.SIGTERM
    assert t._check_step(torch.tensor(0.5), 4, 1, 3) is True
    t.stop.signum = None
    with pytest.raises(NonFiniteLossError) as e:
        t._check_step(torch.tensor(float("inf")), 4, 1, 3)
    assert str(e.value) == (  # the loss: the mean over the ranks of what each read
        "non-finite training loss (inf) at epoch 5/2 (0-based 4), iteration 2/3 (global iteration 18); no optimizer "
        "step was taken. checkpoint_latest.pth and model_best.pth keep the state after epoch 4. Lower TRAIN.LR, "
        "set TRAIN.CLIP_GRAD_NORM or TRAIN.WARMUP_ITERS.")


def test_without_workers_each_epoch_seeds_the_augmentation_from_the_loader_generator(tiny):
    cfg = tiny.cfg("SEED", 7)
    Trainer(cfg).fit()
    train_set = tiny.sets[0]
    assert train_set.train and len(train_set.seeds) == 2 * N_TRAIN
    first = int(torch.empty((), dtype=torch.int64).random_(generator=torch.Generator().manual_seed(7)).item())
    epochs = [set(train_set.seeds[:N_TRAIN]), set(train_set.seeds[N_TRAIN:])]
    assert epochs[0] == {first} and len(epochs[1]) == 1 and epochs[1] != epochs[0]


@pytest.mark.parametrize("freq", [1, 2])
def test_the_loss_is_read_back_every_print_freq_iterations(tiny, monkeypatch, freq):
    updates: List[Any] = []

    class Recording(trainer_mod.EpochProgress):
        def update(self, it, global_step, loss=None):
            updates.append((it, global_step, loss))
            super().update(it, global_step, loss)

    monkeypatch.setattr(trainer_mod, "EpochProgress", Recording)
    Trainer(tiny.cfg("PRINT_FREQ", freq)).fit()
    l = tiny.losses
    assert [u[:2] for u in updates] == [(0, 1), (1, 2), (2, 3), (0, 4), (1, 5), (2, 6)]
    if freq == 1:  # every iteration's own loss
        assert [u[2] for u in updates] == pytest.approx(l, rel=1e-6)
    else:  # the window restarts with each epoch: step 4's mean is of its own epoch's one iteration
        assert [u[2] for u in updates] == pytest.approx([None, (l[0] + l[1]) / 2, None, l[3], None, (l[4] + l[5]) / 2],
                                                        rel=1e-6)


class _Writer:
    """A SummaryWriter stand-in: the ``add_scalar`` points."""

    def __init__(self) -> None:
        self.points: List[Any] = []

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.points.append((tag, value, step))


def test_an_epoch_under_ddp_counts_every_rank_s_images_and_averages_their_losses(tiny, monkeypatch):
    """Rank 0 of 2, simulated in one process whose partner reads the same losses (the all-reduce doubles):
    the global batch, the throughput and the progress display count both ranks' images, the losses are
    the means over the ranks, the data wait is within the epoch's time."""
    from hrnet.engine.distributed import DistInfo

    t = Trainer(tiny.cfg("TRAIN.END_EPOCH", 1))
    t.fit()
    made: List[Any] = []

    class Recording(trainer_mod.EpochProgress):
        def __init__(self, *args) -> None:
            made.append(args)
            super().__init__(*args)

    monkeypatch.setattr(trainer_mod, "EpochProgress", Recording)
    monkeypatch.setattr(trainer_mod, "all_reduce_sum", lambda v: v * 2)
    load = _Hands.__getitem__

    def slow(self, i):  # 5 ms a training sample: 20 ms a batch of waiting for data
        if self.train:
            time.sleep(0.005)
        return load(self, i)

    monkeypatch.setattr(_Hands, "__getitem__", slow)
    t.dist, t.writer = DistInfo(0, 2, 0, torch.device("cpu")), _Writer()
    first = len(tiny.losses)
    out = t._train_one_epoch(1)
    losses = tiny.losses[first:]
    assert made == [(t.cfg, 1, N_TRAIN // BATCH, 2 * BATCH, True, t.writer)]
    assert out["train_loss"] == pytest.approx(np.mean(losses), rel=1e-6)
    assert out["img_per_s"] * out["train_time"] == pytest.approx(N_TRAIN // BATCH * 2 * BATCH, rel=1e-9)
    assert 3 * 0.02 <= out["data_time"] <= out["train_time"] < 60.0  # every batch's wait, within the epoch
    assert t.writer.points == [("train/loss_iter", pytest.approx(v, rel=1e-6), step)  # PRINT_FREQ 1
                               for v, step in zip(losses, (4, 5, 6))]
    assert t._mean_over_ranks(torch.tensor(3.0)) == 3.0


@pytest.mark.parametrize("tty", [False, True])
def test_validation_shows_a_progress_bar_on_a_terminal_only(tiny, monkeypatch, capsys, tty):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    Trainer(tiny.cfg("TRAIN.END_EPOCH", 1)).fit()
    assert bool(re.search(r"test:\s+\d+%", capsys.readouterr().err)) == tty  # run_inference's bar


def test_each_validation_first_takes_rank_0_s_bn_statistics(tiny, monkeypatch):
    from hrnet.engine import validation

    synced: List[Any] = []
    monkeypatch.setattr(validation, "broadcast_buffers", lambda module: synced.append(module))
    t = Trainer(tiny.cfg("TRAIN.END_EPOCH", 1))
    t.fit()
    assert synced == [t.raw_model] * 2  # steps 0 and 1: the trained model itself, not a wrapper


def test_validation_metrics_follow_the_test_thresholds(tiny):
    cfg = tiny.cfg("TEST.FAILURE_THRESHOLD", 0.05, "TEST.PCK_THRESHOLD", 0.1, "TRAIN.END_EPOCH", 1)
    trainer = Trainer(cfg)
    final = trainer.fit()["final"]  # the last validation's metrics
    assert all(set(h["metrics"]) == set(final) for h in trainer.history)
    assert "failure_rate@0.05" in final and "PCK@0.1" in final
    assert "failure_rate@0.1" not in final and "PCK@0.2" not in final


@pytest.mark.parametrize("clip", [0.0, 0.25])
def test_gradients_are_clipped_to_clip_grad_norm(tiny, monkeypatch, clip):
    real = torch.nn.utils.clip_grad_norm_
    clipped: List[Any] = []

    def record(params, max_norm, *a, **kw):
        params = list(params)
        clipped.append((len(params), max_norm))
        norm = real(params, max_norm, *a, **kw)
        clipped.append(math.sqrt(sum(float(p.grad.pow(2).sum()) for p in params)))
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", record)
    trainer = Trainer(tiny.cfg("TRAIN.CLIP_GRAD_NORM", clip, "TRAIN.END_EPOCH", 1))
    trainer.fit()
    if clip == 0:
        assert clipped == []
    else:
        n_params = len(list(trainer.raw_model.parameters()))
        assert clipped[0::2] == [(n_params, 0.25)] * 3
        assert all(norm <= 0.25 * (1 + 1e-5) for norm in clipped[1::2])


@pytest.mark.parametrize("channels_last", [True, False])
def test_training_inputs_follow_channels_last(tiny, channels_last):
    trainer = Trainer(tiny.cfg("CHANNELS_LAST", channels_last, "TRAIN.END_EPOCH", 1))
    trainer.fit()
    assert trainer.raw_model.channels_last == [channels_last] * 3


def test_a_ddp_sampler_is_told_the_epoch(tiny, monkeypatch):
    epochs: List[int] = []

    class Sampler:
        def set_epoch(self, epoch):
            epochs.append(epoch)

    real = trainer_mod.build_run_data

    def build(cfg, d):
        rd = real(cfg, d)
        rd.train_sampler = Sampler()
        return rd

    monkeypatch.setattr(trainer_mod, "build_run_data", build)
    Trainer(tiny.cfg("TRAIN.END_EPOCH", 3)).fit()
    assert epochs == [0, 1, 2]


def test_hparams_are_written_at_the_start_and_the_end(tiny, monkeypatch):
    calls: List[Any] = []
    monkeypatch.setattr(rr, "write_hparams", lambda writer, hp, finished=False: calls.append((hp, finished)))
    cfg = tiny.cfg("TRAIN.END_EPOCH", 1)
    trainer = Trainer(cfg)
    trainer.fit()
    hp = rr.hparams(cfg, 1)
    assert calls == [(hp, False), (hp, True)] and trainer.writer is None
    calls.clear()
    Trainer(tiny.cfg("TRAIN.END_EPOCH", 2), resume=True).fit()
    assert calls == [(rr.hparams(tiny.cfg("TRAIN.END_EPOCH", 2), 1), True)]  # a resumed run started earlier


# ---------------------------------------------------------------------------- stops and failures
def test_a_stop_mid_epoch_discards_the_partial_epoch_and_resumes_exactly(tiny, caplog):
    whole = Trainer(tiny.cfg(out=str(tiny.tmp_path / "a"))).fit()
    n_whole = len(tiny.losses)
    cfg = tiny.cfg(out=str(tiny.tmp_path / "b"))
    trainer = Trainer(cfg)

    def stop_at_5(n, loss):
        if n == n_whole + 5:  # epoch 1, iteration 1
            trainer.stop.signum = signal.SIGTERM
        return loss

    tiny.on_loss = stop_at_5
    result = trainer.fit()
    assert len(tiny.losses) == n_whole + 5  # the iteration that saw the request finished, then the run stopped
    assert result["signal"] == signal.SIGTERM and result["status"] == "interrupted"
    assert result["epochs_completed"] == 1 and [e["epoch"] for e in result["history"]] == [0, 1]
    assert _metrics(cfg, tiny) == json.loads(json.dumps({k: v for k, v in result.items() if k != "signal"}))
    latest = load_checkpoint(os.path.join(tiny.run_dir(cfg), LATEST))
    assert (latest["epoch"], latest["global_step"]) == (1, 3)
    assert (f"SIGTERM: stopped during epoch 2; {os.path.join(tiny.run_dir(cfg), LATEST)} holds the state after 1 "
            f"completed epoch(s) (the partial epoch is discarded); continue with --resume") in _log(cfg, tiny)
    tiny.on_loss = None
    resumed = Trainer(cfg, resume=True).fit()
    assert _without_times(resumed["history"]) == _without_times(whole["history"])


def test_a_stop_during_validation_ends_before_the_next_epoch(tiny, monkeypatch):
    real = ValidationMixin._validate

    def validate(self, step):
        val = real(self, step)
        if step == 1:
            self.stop.signum = signal.SIGINT
        return val

    monkeypatch.setattr(ValidationMixin, "_validate", validate)
    result = Trainer(tiny.cfg("TRAIN.END_EPOCH", 3)).fit()
    assert result["signal"] == signal.SIGINT and result["epochs_completed"] == 1 and len(tiny.losses) == 3


def test_a_stop_asked_by_another_rank_is_a_sigterm(tiny, monkeypatch):
    monkeypatch.setattr(Trainer, "_check_step", lambda self, loss, epoch, it, n_iter: True)
    result = Trainer(tiny.cfg()).fit()
    assert result["signal"] == signal.SIGTERM and result["status"] == "interrupted" and len(tiny.losses) == 1


def test_a_non_finite_loss_stops_before_the_step(tiny):
    cfg = tiny.cfg("TRAIN.END_EPOCH", 3)
    trainer = Trainer(cfg)
    before: Dict[str, torch.Tensor] = {}

    def nan_at_5(n, loss):
        if n == 5:
            before.update({k: v.clone() for k, v in trainer.raw_model.state_dict().items()
                           if v.is_floating_point() and "running" not in k})
            return loss * float("nan")
        return loss

    tiny.on_loss = nan_at_5
    with pytest.raises(NonFiniteLossError) as e:
        trainer.fit()
    assert str(e.value) == (
        "non-finite training loss (nan) at epoch 2/3 (0-based 1), iteration 2/3 (global iteration 5); no optimizer "
        "step was taken. checkpoint_latest.pth and model_best.pth keep the state after epoch 1. Lower TRAIN.LR, "
        "set TRAIN.CLIP_GRAD_NORM or TRAIN.WARMUP_ITERS.")
    after = trainer.raw_model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # no optimizer step with the NaN
    metrics = _metrics(cfg, tiny)
    assert metrics["status"] == "diverged" and metrics["epochs_completed"] == 1
    assert load_checkpoint(os.path.join(tiny.run_dir(cfg), LATEST))["global_step"] == 3
    assert f"ERROR {e.value}" in [re.sub(r"^\S+ \S+ ", "", line) for line in _log(cfg, tiny).splitlines()]


@pytest.mark.parametrize("error, status", [(RuntimeError("boom"), "failed"), (KeyboardInterrupt(), "interrupted")])
def test_a_run_that_dies_records_why(tiny, capsys, error, status):
    cfg = tiny.cfg("TRAIN.END_EPOCH", 3)

    def die_at_4(n, loss):
        if n == 4:
            raise error
        return loss

    tiny.on_loss = die_at_4
    with pytest.raises(type(error)):
        Trainer(cfg).fit()
    metrics = _metrics(cfg, tiny)
    assert metrics["status"] == status and metrics["epochs_completed"] == 1
    log = _log(cfg, tiny)
    lines = [re.sub(r"^\S+ \S+ ", "", line) for line in log.splitlines()]
    assert f"ERROR run {status}: {type(error).__name__}: {error}" in lines and "Traceback" in log
    assert f"run {status}:" not in capsys.readouterr().err  # train.log only: the caller prints its one line
    assert holder_pid(tiny.run_dir(cfg)) is None


def test_a_run_that_fails_before_its_data_says_so(tiny, monkeypatch):
    import data

    def missing(cfg, is_train):
        raise FileNotFoundError(2, "No such file", "hands.json")

    monkeypatch.setattr(data, "build_dataset", missing)
    cfg = tiny.cfg()
    with pytest.raises(FileNotFoundError):
        Trainer(cfg).fit()
    metrics = _metrics(cfg, tiny)
    assert (metrics["status"], metrics["epochs_completed"], metrics["skipped"], metrics["history"]) == (
        "failed", 0, [], [])
    assert (metrics["best_epoch"], metrics["best_NME"]) == (-1, None)  # no step validated: no best


def test_a_failing_metrics_write_does_not_hide_the_error(tiny, monkeypatch):
    def die(n, loss):
        monkeypatch.setattr(rr, "write_metrics", lambda run_dir, summary: 1 / 0)
        raise RuntimeError("the real error")

    tiny.on_loss = die
    with pytest.raises(RuntimeError, match="the real error"):
        Trainer(tiny.cfg()).fit()


# ---------------------------------------------------------------------------- the run folder
def test_a_builder_value_error_is_a_config_error_before_any_file(tiny, monkeypatch):
    import optim

    def bad(cfg, model):
        raise ValueError("TRAIN.MOMENTUM must be in [0, 1)")

    monkeypatch.setattr(optim, "build_optimizer", bad)
    cfg = tiny.cfg()
    with pytest.raises(ConfigError, match=r"^TRAIN.MOMENTUM must be in \[0, 1\)$"):
        Trainer(cfg).fit()
    assert not os.path.exists(tiny.run_dir(cfg)) and tiny.sets == []


def test_another_runs_folder_is_refused_and_left_alone(tiny):
    cfg = tiny.cfg("TRAIN.END_EPOCH", 1)
    Trainer(cfg).fit()
    run = tiny.run_dir(cfg)
    before = {n: os.path.getmtime(os.path.join(run, n)) for n in os.listdir(run)}
    with pytest.raises(FileExistsError, match="already holds a run"):
        Trainer(cfg).fit()
    assert {n: os.path.getmtime(os.path.join(run, n)) for n in os.listdir(run)} == before
    assert holder_pid(run) is None  # the refused trainer let the lock go


def test_a_run_that_failed_before_its_first_epoch_is_replaced(tiny, caplog):
    cfg = tiny.cfg("TRAIN.END_EPOCH", 1)

    def die(n, loss):
        raise RuntimeError("bad image")

    tiny.on_loss = die
    with pytest.raises(RuntimeError):
        Trainer(cfg).fit()
    run = tiny.run_dir(cfg)
    left = rr.find_run_files(run)
    assert left and _metrics(cfg, tiny)["epochs_completed"] == 0
    tiny.on_loss = None
    caplog.set_level(logging.WARNING)
    assert Trainer(cfg).fit()["status"] == "finished"
    want = (f"replacing the run in {run}: its run failed before completing an epoch, nothing trained to keep "
            f"(removed {', '.join(left)}; train.log keeps its log)")
    assert any(r.getMessage() == want and r.levelno == logging.WARNING for r in caplog.records), caplog.text


def test_every_rank_takes_rank_0_s_decision(tiny, monkeypatch):
    """DDP, simulated in one process: rank 0 decides to resume (or not); rank 1 loads the checkpoint only
    when rank 0 resumes, and raises rank 0's error."""
    from hrnet.engine.distributed import DistInfo

    monkeypatch.chdir(tiny.tmp_path)  # a checkpoint_latest.pth in the working folder is no run's
    cfg = tiny.cfg("TRAIN.END_EPOCH", 1)
    Trainer(cfg).fit()
    path = os.path.join(tiny.run_dir(cfg), LATEST)
    save_checkpoint(dict(load_checkpoint(path), world_size=2), path)  # as a 2-process run saves it
    sent: List[Any] = []

    def rank(r: int, resume: bool) -> Trainer:
        t = Trainer(tiny.cfg("TRAIN.END_EPOCH", 2), resume=resume)
        t.dist = DistInfo(r, 2, r, torch.device("cpu"))
        return t

    monkeypatch.setattr(trainer_mod, "all_gather_object", lambda obj: sent.append(obj) or [obj])
    main = rank(0, True)
    ck0 = main._claim_run_dir()
    main.lock.release()
    assert ck0["epoch"] == 1 and sent == [(None, True)]
    monkeypatch.setattr(trainer_mod, "all_gather_object", lambda obj: [sent[-1]])  # rank 0's answer
    other = rank(1, False)  # its own flag does not matter: rank 0's does
    ck1 = other._claim_run_dir()
    assert ck1["epoch"] == 1 and _same_weights(ck1["state_dict"], ck0["state_dict"]) and not other.lock.held
    monkeypatch.setattr(trainer_mod, "all_gather_object", lambda obj: [(None, False)])
    assert rank(1, True)._claim_run_dir() is None  # rank 0 starts afresh: nothing to load
    monkeypatch.setattr(trainer_mod, "all_gather_object", lambda obj: [(ConfigError("rank 0 refused"), False)])
    with pytest.raises(ConfigError, match="^rank 0 refused$"):
        rank(1, True)._claim_run_dir()


def test_each_ddp_record_checks_the_replicas(tiny, monkeypatch):
    """Under DDP every record compares the ranks' weights and optimizer state first (simulated: one
    process that calls itself rank 0 of 2)."""
    from hrnet.engine.distributed import DistInfo

    checked: List[Any] = []
    monkeypatch.setattr(trainer_mod, "check_training_replicas", lambda *a: checked.append(a))
    t = Trainer(tiny.cfg("TRAIN.END_EPOCH", 1))
    t.fit()
    assert checked == []  # one process: nothing to compare
    t.dist = DistInfo(0, 2, 0, torch.device("cpu"))
    t._record(2, t._validate(2))
    assert checked == [(t.raw_model, t.optimizer, 2)]


def test_a_resume_by_another_number_of_processes_is_refused(tiny):
    cfg = tiny.cfg("TRAIN.END_EPOCH", 1)
    Trainer(cfg).fit()
    path = os.path.join(tiny.run_dir(cfg), LATEST)
    ck = load_checkpoint(path)
    save_checkpoint(dict(ck, world_size=2), path)
    with pytest.raises(ConfigError, match=f"^cannot resume {re.escape(path)}: trained by 2 process"):
        Trainer(tiny.cfg("TRAIN.END_EPOCH", 2), resume=True).fit()
    assert holder_pid(tiny.run_dir(cfg)) is None


# ---------------------------------------------------------------------------- model_best.pth after a kill
@pytest.mark.parametrize("stored", [None, 0])
def test_a_resume_writes_the_best_file_the_checkpoint_names(tiny, monkeypatch, stored):
    """Killed between checkpoint_latest.pth and model_best.pth: the best file is missing (None) or of
    an earlier step (0); the resume re-validates the checkpoint's step and writes its best file."""
    nmes = [0.5, 0.3]
    calls = _scripted_nme(monkeypatch, nmes)
    cfg = tiny.cfg("TRAIN.END_EPOCH", 1)
    Trainer(cfg).fit()
    best_path = os.path.join(tiny.run_dir(cfg), BEST)
    step1 = calls[1]["weights"]
    if stored is None:
        os.remove(best_path)
    else:
        save_checkpoint({"state_dict": calls[0]["weights"], "epoch": 0, "NME": 0.5}, best_path)
    calls.clear()
    nmes[:] = [0.3]  # the same weights validated again: the same NME
    result = Trainer(cfg, resume=True).fit()
    assert len(calls) == 1  # step 1 again, nothing trained
    best = load_checkpoint(best_path)
    assert best["epoch"] == 1 and best["NME"] == 0.3 and _same_weights(best["state_dict"], step1)
    assert result["best_epoch"] == 1 and result["best_NME"] == 0.3


@pytest.mark.parametrize("nmes, best_epoch", [([0.5, 0.3], 1), ([0.3, 0.5], 0)], ids=["its_own_step", "an_earlier_best"])
def test_a_resume_keeps_a_best_file_that_matches_the_history(tiny, monkeypatch, nmes, best_epoch):
    """A finished run resumed: model_best.pth, of the best step (the last one or an earlier one), is kept."""
    calls = _scripted_nme(monkeypatch, list(nmes))  # a copy: the parameter list outlives a run (mutmut reruns)
    cfg = tiny.cfg("TRAIN.END_EPOCH", 1)
    Trainer(cfg).fit()
    best_path = os.path.join(tiny.run_dir(cfg), BEST)
    mtime = os.path.getmtime(best_path)
    calls.clear()
    Trainer(cfg, resume=True).fit()
    assert calls == [] and os.path.getmtime(best_path) == mtime and load_checkpoint(best_path)["epoch"] == best_epoch


def test_the_valid_loss_is_the_mean_over_the_samples_also_of_one(tiny, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "N_VALID", 1)
    calls = _scripted_nme(monkeypatch, [0.5])
    h = Trainer(tiny.cfg("TRAIN.END_EPOCH", 1)).fit()["history"]
    assert len(calls) == 2 and [e["valid_loss"] for e in h] == pytest.approx([c["loss"] for c in calls], rel=1e-12)


def test_a_resumed_run_without_a_new_best_keeps_the_best_file(tiny, monkeypatch):
    """The resumed session validates no new best: nothing is pending, model_best.pth stays step 0's."""
    _scripted_nme(monkeypatch, [0.3, 0.5, 0.6])
    cfg = tiny.cfg("TRAIN.END_EPOCH", 1)
    Trainer(cfg).fit()
    best_path = os.path.join(tiny.run_dir(cfg), BEST)
    mtime = os.path.getmtime(best_path)
    result = Trainer(tiny.cfg("TRAIN.END_EPOCH", 2), resume=True).fit()
    assert result["status"] == "finished" and [e["NME"] for e in result["history"]] == [0.3, 0.5, 0.6]
    assert os.path.getmtime(best_path) == mtime and load_checkpoint(best_path)["epoch"] == 0


def test_a_resume_without_the_best_file_of_an_earlier_step_rewrites_nothing(tiny, monkeypatch):
    """model_best.pth of an earlier step lost: that step's weights are gone, so nothing is validated again
    and the current step is not made best in its place."""
    calls = _scripted_nme(monkeypatch, [0.3, 0.5])
    cfg = tiny.cfg("TRAIN.END_EPOCH", 1)
    Trainer(cfg).fit()
    best_path = os.path.join(tiny.run_dir(cfg), BEST)
    os.remove(best_path)
    calls.clear()
    result = Trainer(cfg, resume=True).fit()
    assert calls == [] and not os.path.exists(best_path)
    assert (result["best_epoch"], result["best_NME"]) == (0, 0.3)


# ---------------------------------------------------------------------------- Lookahead's evaluated weights
def _lookahead(tiny, *opts):
    return tiny.cfg("TRAIN.LR", 0.01, "TRAIN.LOOKAHEAD.K", 2, *opts, yaml=LOOKAHEAD)


def test_slow_weights_are_evaluated_and_kept_as_best(tiny, monkeypatch):
    calls = _scripted_nme(monkeypatch, [0.5, 0.6, 0.4])
    cfg = _lookahead(tiny, "TRAIN.END_EPOCH", 1)
    trainer = Trainer(cfg)
    metrics = trainer.fit()
    h = metrics["history"]
    assert [e["eval_weights"] for e in h] == ["slow", "slow"]
    # step 0: just synced (slow == fast), one evaluation; step 1 (3 steps, k = 2: one step past a sync):
    # the slow weights (NME), then the fast ones
    assert [c["NME"] for c in calls] == [0.5, 0.6, 0.4]
    assert (h[0]["NME"], h[0]["NME_slow"], h[0]["NME_fast"]) == (0.5, 0.5, 0.5)
    assert (h[1]["NME"], h[1]["NME_slow"], h[1]["NME_fast"]) == (0.6, 0.6, 0.4)
    with trainer.optimizer.slow_weights():
        slow = {k: v.clone() for k, v in trainer.raw_model.state_dict().items()}
    assert _same_weights(calls[1]["weights"], slow) and not _same_weights(slow, trainer.raw_model.state_dict())
    assert _same_weights(calls[2]["weights"], trainer.raw_model.state_dict())  # the fast weights
    best = load_checkpoint(os.path.join(tiny.run_dir(cfg), BEST))
    assert best["epoch"] == 0 and best["eval_weights"] == "slow"


def test_fast_weight_evaluation_scores_the_slow_ones_beside(tiny, monkeypatch):
    calls = _scripted_nme(monkeypatch, [0.5, 0.6, 0.4])
    cfg = _lookahead(tiny, "TRAIN.LOOKAHEAD.EVAL_WEIGHTS", "fast", "TRAIN.END_EPOCH", 1)
    trainer = Trainer(cfg)
    h = trainer.fit()["history"]
    assert [e["eval_weights"] for e in h] == ["fast", "fast"]
    assert (h[1]["NME"], h[1]["NME_fast"], h[1]["NME_slow"]) == (0.6, 0.6, 0.4)
    assert _same_weights(calls[1]["weights"], trainer.raw_model.state_dict())
    assert not _same_weights(calls[2]["weights"], trainer.raw_model.state_dict())
    best = load_checkpoint(os.path.join(tiny.run_dir(cfg), BEST))
    assert best["eval_weights"] == "fast" and _same_weights(best["state_dict"], calls[0]["weights"])


@pytest.mark.parametrize("batches", [1, 2])
def test_slow_weights_with_recalibrated_bn(tiny, monkeypatch, batches):
    from hrnet.evaluation import evaluate

    recal: List[Any] = []
    real = evaluate.recalibrate_bn

    def recalibrate(model, loader, n, cfg, device):
        recal.append((n, len(loader), loader.batch_size))
        return real(model, loader, n, cfg, device)

    monkeypatch.setattr(evaluate, "recalibrate_bn", recalibrate)
    calls = _scripted_nme(monkeypatch, [0.5, 0.45, 0.6, 0.4])
    cfg = _lookahead(tiny, "TRAIN.LOOKAHEAD.BN_RECALIBRATE_BATCHES", batches, "TRAIN.END_EPOCH", 1)
    h = Trainer(cfg).fit()["history"]
    assert recal == [(batches, 3, BATCH), (batches, 3, BATCH)]
    assert [e["eval_weights"] for e in h] == ["slow+bn", "slow+bn"]
    # recalibrated slow weights differ from the fast ones even right after a sync: both evaluated
    assert [(e["NME"], e["NME_slow"], e["NME_fast"]) for e in h] == [(0.5, 0.5, 0.45), (0.6, 0.6, 0.4)]
    assert len(calls) == 4


def test_recalibration_is_for_slow_weights_only(tiny, monkeypatch):
    from hrnet.evaluation import evaluate

    monkeypatch.setattr(evaluate, "recalibrate_bn", lambda *a: pytest.fail("recalibrated"))
    h = Trainer(_lookahead(tiny, "TRAIN.LOOKAHEAD.EVAL_WEIGHTS", "fast", "TRAIN.LOOKAHEAD.BN_RECALIBRATE_BATCHES", 2,
                           "TRAIN.END_EPOCH", 1)).fit()["history"]
    assert [e["eval_weights"] for e in h] == ["fast", "fast"]
    h = Trainer(tiny.cfg("TRAIN.LOOKAHEAD.BN_RECALIBRATE_BATCHES", 2, "TRAIN.END_EPOCH", 1,
                         out=str(tiny.tmp_path / "sgd"))).fit()["history"]
    assert [e["eval_weights"] for e in h] == ["model", "model"]


# ---------------------------------------------------------------------------- the prediction grid
@pytest.mark.parametrize("heatmaps", [True, False])
def test_the_prediction_grid_is_drawn_at_each_validation(tiny, monkeypatch, heatmaps):
    from hrnet.evaluation import visualize
    from torch.utils import tensorboard

    drawn: List[Any] = []
    images: List[Any] = []
    monkeypatch.setattr(visualize, "gallery_samples", lambda ds, n: ("gallery", n))
    monkeypatch.setattr(visualize, "gallery_heatmaps",
                        lambda model, gallery, amp: drawn.append((model, gallery, amp)) or "hm")
    monkeypatch.setattr(visualize, "gallery_image",
                        lambda gallery, merged, hm: (gallery, len(merged["ann_id"]), hm))

    class Writer(tensorboard.SummaryWriter):
        def add_image(self, tag, image, step, dataformats="CHW"):
            images.append((tag, image, step, dataformats))

    monkeypatch.setattr(tensorboard, "SummaryWriter", Writer)
    t = Trainer(tiny.cfg("TEST.VIS_IMAGES", 3, "TEST.VIS_HEATMAP", heatmaps, "TRAIN.END_EPOCH", 1))
    t.fit()
    hm = "hm" if heatmaps else None
    assert images == [(rr.TAG_PREDICTIONS, (("gallery", 3), N_VALID, hm), s, "HWC") for s in (0, 1)]
    # the heatmaps of the model evaluated, under the run's AMP policy
    assert drawn == ([(t.raw_model, ("gallery", 3), t.amp)] * 2 if heatmaps else [])
