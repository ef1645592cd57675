"""End-to-end training on tiny data: run files, TensorBoard tags, exact resume, NaN stop, SIGTERM."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, make_cfg
from hrnet.engine import trainer as trainer_mod
from hrnet.runtime.checkpoint import load_checkpoint
from hrnet.engine.trainer import BEST, LATEST, METRICS, NonFiniteLossError, Trainer

# A tiny model on the 8 real FreiHAND samples (train = test): a whole epoch takes well under a second.
TINY = ["MODEL.NAME", "hrnet_w18_small", "MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]",
        "MODEL.SIGMA", "1.0", "DATASET.FORMAT", "coco", "DATASET.TRAINSET", "test_freihand.json",
        "DATASET.TESTSET", "test_freihand.json", "TRAIN.BATCH_SIZE_PER_GPU", "4", "TEST.BATCH_SIZE_PER_GPU", "4",
        "WORKERS", "0", "PRINT_FREQ", "1"]
LOOKAHEAD = os.path.join(ROOT, "experiments", "hand_lookahead_adam.yaml")
pytestmark = pytest.mark.timeout(240)  # a hang (e.g. a stuck DataLoader worker) fails instead of blocking


def tiny_cfg(real_hands, out, *opts, yaml=LOOKAHEAD):
    return make_cfg(yaml, TINY + ["DATASET.ROOT", os.path.join(real_hands, "freihand"), "OUTPUT_DIR", str(out)]
                    + [str(o) for o in opts])


def scalars(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return acc, {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


class HookedLoss(trainer_mod.JointsMSELoss):
    """The training loss, with an action at the n-th training call (validation calls do not count)."""
    calls = 0
    at = -1
    action = None

    def forward(self, output, target, target_weight=None):
        loss = super().forward(output, target, target_weight)
        if torch.is_grad_enabled() and not torch.is_inference_mode_enabled():
            type(self).calls += 1
            if type(self).calls == type(self).at:
                loss = type(self).action(loss)
        return loss


@pytest.fixture
def hooked_loss(monkeypatch):
    HookedLoss.calls, HookedLoss.at, HookedLoss.action = 0, -1, None
    monkeypatch.setattr(trainer_mod, "JointsMSELoss", HookedLoss)
    return HookedLoss


def test_end_to_end_run_writes_everything(real_hands, tmp_path):
    # Lookahead with slow-weight validation and BN recalibration on one batch: the most moving parts.
    cfg = tiny_cfg(real_hands, tmp_path, "TRAIN.END_EPOCH", 2, "TRAIN.LOOKAHEAD.BN_RECALIBRATE_BATCHES", 1,
                   "TRAIN.LR", 1e-3)
    result = Trainer(cfg).fit()
    run = tmp_path / "hand_lookahead_adam"
    for name in ("config.yaml", "train.log", LATEST, BEST, METRICS):
        assert (run / name).is_file(), name
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(run))
    # config.yaml is the resolved config and loads back to the same tree
    assert make_cfg(str(run / "config.yaml")).dump() == cfg.dump()

    metrics = json.loads((run / METRICS).read_text())
    assert metrics == json.loads(json.dumps(result))
    assert metrics["status"] == "finished" and metrics["epochs_completed"] == 2
    assert [h["epoch"] for h in metrics["history"]] == [0, 1, 2]
    assert metrics["best_NME"] == min(h["NME"] for h in metrics["history"])
    assert metrics["history"][metrics["best_epoch"]]["NME"] == metrics["best_NME"]
    assert metrics["final_NME"] == metrics["history"][-1]["NME"] == metrics["final"]["NME"]
    assert metrics["final"]["num_images"] == 8 and len(metrics["final"]["per_joint_NME"]) == 21
    assert metrics["machine"]["threads"] == torch.get_num_threads() and metrics["machine"]["device"] == "cpu"
    assert metrics["machine"]["cpu"]  # the CPU model, reported beside every number
    assert metrics["wall_time_s"] > 0 and metrics["history"][-1]["eval_weights"] == "slow+bn"

    acc, tb = scalars(str(run))
    assert [s for s, _ in tb["valid/NME"]] == [0, 1, 2]
    assert [s for s, _ in tb["valid/loss"]] == [0, 1, 2]
    assert [s for s, _ in tb["train/loss"]] == [1, 2]
    assert [s for s, _ in tb["train/lr"]] == [1, 2]
    assert [s for s, _ in tb["train/loss_iter"]] == [1, 2, 3, 4]  # 2 iterations/epoch, PRINT_FREQ 1
    assert [v for _, v in tb["valid/NME"]] == pytest.approx([h["NME"] for h in metrics["history"]])
    assert tb["train/lr"][0][1] == pytest.approx(1e-3)
    hp = acc.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"} <= set(hp)
    assert b"lookahead" in hp["_hparams_/session_start_info"] and b"valid/NME" in hp["_hparams_/experiment"]

    best = load_checkpoint(run / BEST)
    assert best["epoch"] == metrics["best_epoch"] and best["NME"] == pytest.approx(metrics["best_NME"])
    assert best["eval_weights"] == "slow+bn"
    latest = load_checkpoint(run / LATEST)
    assert latest["epoch"] == 2 and latest["global_step"] == 4
    assert set(best["state_dict"]) == set(latest["state_dict"])
    # the training weights are the fast ones; the best (evaluated) weights are the slow ones
    assert any(not torch.equal(best["state_dict"][k], latest["state_dict"][k]) for k in latest["state_dict"])
    # Lookahead diagnostics: NME of both weight sets at every validation; the evaluated one is NME
    for h in metrics["history"]:
        assert h["NME_slow"] == h["NME"] and "NME_fast" in h
    assert [v for _, v in tb["valid/NME_fast"]] == pytest.approx([h["NME_fast"] for h in metrics["history"]])
    # ... and NME_fast is the NME of the fast (training) weights, evaluated independently here
    from data import build_dataset
    from hrnet import build_model
    from hrnet.evaluation.evaluate import run_inference
    from hrnet.evaluation.metrics import compute_metrics

    fast = build_model(cfg)
    fast.load_state_dict(latest["state_dict"])
    loader = torch.utils.data.DataLoader(build_dataset(cfg, is_train=False), batch_size=4)
    out = run_inference(fast, loader, cfg, torch.device("cpu"), progress=False)
    fast_nme = compute_metrics(out["preds"], out["joints"], out["bbox"], cfg)["NME"]
    assert metrics["history"][-1]["NME_fast"] == pytest.approx(fast_nme, rel=1e-6)
    assert fast_nme != pytest.approx(metrics["history"][-1]["NME"], rel=1e-6)
    # the prediction grid of the fixed validation crops, at every validation
    images = acc.Images("valid/predictions")
    assert [e.step for e in images] == [0, 1, 2] and images[0].width > 64 and images[0].height >= 64
    # the finished run is not silently overwritten by a fresh one
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(cfg).fit()


def _comparable(metrics):
    drop = {"wall_time", "img_per_s"}
    return [{k: v for k, v in h.items() if k not in drop} for h in metrics["history"]]


@pytest.mark.parametrize("workers", [0, 2])
def test_interrupt_and_resume_equals_uninterrupted(real_hands, tmp_path, hooked_loss, workers):
    # LR steps after epoch 1 and a warm-up across the epoch boundary: the scheduler states matter too.
    opts = ["TRAIN.END_EPOCH", 3, "TRAIN.LR_STEP", "[1]", "TRAIN.WARMUP_ITERS", 3, "WORKERS", workers]
    full = Trainer(tiny_cfg(real_hands, tmp_path / "full", *opts)).fit()
    assert full["status"] == "finished"

    # Ctrl-C during the first iteration of epoch 2 (training call 3): that epoch is discarded.
    hooked_loss.calls, hooked_loss.at = 0, 3
    hooked_loss.action = lambda loss: (os.kill(os.getpid(), signal.SIGINT), loss)[1]
    cfg = tiny_cfg(real_hands, tmp_path / "split", *opts)
    stopped = Trainer(cfg).fit()
    assert stopped["status"] == "interrupted" and stopped["signal"] == signal.SIGINT
    assert stopped["epochs_completed"] == 1
    run = tmp_path / "split" / "hand_lookahead_adam"
    assert load_checkpoint(run / LATEST)["epoch"] == 1
    assert json.loads((run / METRICS).read_text())["status"] == "interrupted"

    hooked_loss.at = -1
    resumed = Trainer(cfg, resume=True).fit()
    assert resumed["status"] == "finished"
    assert _comparable(resumed) == _comparable(full)
    assert resumed["untrained_NME"] == full["untrained_NME"] == full["history"][0]["NME"]
    a = load_checkpoint(tmp_path / "full" / "hand_lookahead_adam" / LATEST)
    b = load_checkpoint(run / LATEST)
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    slow_a, slow_b = a["optimizer"]["lookahead"]["slow_weights"], b["optimizer"]["lookahead"]["slow_weights"]
    assert all(torch.equal(slow_a[i], slow_b[i]) for i in slow_a)
    # the resumed run's events replace the discarded partial epoch: one point per step
    _, tb = scalars(str(run))
    assert [s for s, _ in tb["valid/NME"]] == [0, 1, 2, 3]


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(real_hands, tmp_path, hooked_loss):
    hooked_loss.at = 4  # second iteration of epoch 2
    hooked_loss.action = lambda loss: loss * float("nan")
    cfg = tiny_cfg(real_hands, tmp_path, "TRAIN.END_EPOCH", 3, yaml=os.path.join(ROOT, "experiments",
                                                                                   "hand_sgd_lr0.01.yaml"))
    with pytest.raises(NonFiniteLossError, match=r"epoch 2/3 .*iteration 2/2"):
        Trainer(cfg).fit()
    run = tmp_path / "hand_sgd_lr0.01"
    latest = load_checkpoint(run / LATEST)
    assert latest["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in latest["state_dict"].values() if v.is_floating_point())
    assert load_checkpoint(run / BEST)["epoch"] in (0, 1)
    metrics = json.loads((run / METRICS).read_text())
    assert metrics["status"] == "diverged" and metrics["epochs_completed"] == 1
    assert "non-finite training loss" in (run / "train.log").read_text()


def test_sigterm_leaves_a_valid_checkpoint(real_hands, tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "--cfg", LOOKAHEAD] + TINY + [
        "DATASET.ROOT", os.path.join(real_hands, "freihand"), "OUTPUT_DIR", str(tmp_path),
        "TRAIN.END_EPOCH", "1000", "WORKERS", "1"]
    run = tmp_path / "hand_lookahead_adam"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            log = (run / "train.log").read_text() if (run / "train.log").exists() else ""
            if "epoch 2/1000" in log:  # two epochs done: training is under way
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    ck = load_checkpoint(run / LATEST)
    metrics = json.loads((run / METRICS).read_text())
    assert metrics["status"] == "interrupted" and ck["epoch"] == metrics["epochs_completed"] >= 2
    assert "SIGTERM" in (run / "train.log").read_text()
    assert not [n for n in os.listdir(run) if n.endswith(".tmp")]


def test_lr_is_stepped_once_per_epoch_on_the_multistep_schedule(real_hands, tmp_path):
    """The trainer's LR cadence, against the documented schedule written out by hand:
    epoch e (0-based) trains at LR * LR_FACTOR ** (milestones <= e). A scheduler stepped per
    iteration (2 per epoch here) would already pass milestone 1 inside epoch 0."""
    cfg = tiny_cfg(real_hands, tmp_path, "TRAIN.END_EPOCH", 4, "TRAIN.LR", 0.01, "TRAIN.LR_STEP", "[1, 3]",
                   "TRAIN.LR_FACTOR", 0.5, yaml=os.path.join(ROOT, "experiments", "hand_sgd_lr0.01.yaml"))
    result = Trainer(cfg).fit()
    expected = [0.01, 0.005, 0.005, 0.0025]
    assert [h["lr"] for h in result["history"][1:]] == pytest.approx(expected, rel=1e-9)
    _, tb = scalars(str(tmp_path / "hand_sgd_lr0.01"))
    assert tb["train/lr"] == [(e + 1, pytest.approx(lr, rel=1e-6)) for e, lr in enumerate(expected)]


def test_untrained_nme_is_the_model_as_built_before_any_step(real_hands, tmp_path):
    """metrics.json's untrained_NME is epoch 0's validation: the model the run's SEED builds."""
    from hrnet import build_model
    from hrnet.runtime.checkpoint import seed_everything

    cfg = tiny_cfg(real_hands, tmp_path, "TRAIN.END_EPOCH", 2, "TRAIN.LR", 0.05, "TEST.VIS_IMAGES", 0,
                   yaml=os.path.join(ROOT, "experiments", "hand_sgd_lr0.01.yaml"))
    result = Trainer(cfg).fit()
    seed_everything(int(cfg.SEED))
    untrained = _evaluate(cfg, build_model(cfg))
    assert result["history"][0]["epoch"] == 0 and result["history"][0]["NME"] == untrained
    assert result["untrained_NME"] == untrained
    assert untrained not in (result["final_NME"], result["best_NME"])  # the test can tell them apart


def test_lookahead_model_best_holds_the_slow_weights_of_its_epoch(real_hands, tmp_path):
    """model_best.pth of a Lookahead run evaluated with the slow weights holds, at a best epoch after
    0 (when slow and fast weights differ), the optimizer's slow weights of that epoch, read from the
    checkpoint of a replay that stops there, and the fast model's BN buffers of that epoch."""
    # Batch 1: 8 iterations per epoch, k = 3: epochs 1 and 2 both end between two syncs.
    opts = ["TRAIN.BATCH_SIZE_PER_GPU", 1, "TRAIN.LR", 1e-3, "TRAIN.LOOKAHEAD.K", 3, "TRAIN.SHUFFLE", "False"]
    result = Trainer(tiny_cfg(real_hands, tmp_path / "run", "TRAIN.END_EPOCH", 2, *opts)).fit()
    best_epoch = result["best_epoch"]
    assert best_epoch > 0, result["history"]  # the case this test is about: trained slow weights
    best = load_checkpoint(tmp_path / "run" / "hand_lookahead_adam" / BEST)
    assert best["epoch"] == best_epoch and best["eval_weights"] == "slow"
    if best_epoch == 2:
        replay = tmp_path / "run"
    else:  # the same seed and config, stopped at the best epoch (CPU training is bitwise repeatable)
        replay = tmp_path / "replay"
        Trainer(tiny_cfg(real_hands, replay, "TRAIN.END_EPOCH", best_epoch, *opts)).fit()
    latest = load_checkpoint(replay / "hand_lookahead_adam" / LATEST)
    assert latest["epoch"] == best_epoch
    slow = latest["optimizer"]["lookahead"]["slow_weights"]
    fast = latest["state_dict"]
    # slow_weights are indexed in param_groups order: the model's parameters in order (one group here)
    from hrnet import build_model

    names = [n for n, _ in build_model(tiny_cfg(real_hands, tmp_path / "x")).named_parameters()]
    assert len(slow) == len(names)
    assert any(not torch.equal(slow[i], fast[n]) for i, n in enumerate(names))  # slow != fast here
    for i, n in enumerate(names):
        assert torch.equal(best["state_dict"][n], slow[i]), n
    for k, v in fast.items():
        if k not in names:  # BN buffers: the fast model's (no recalibration)
            assert torch.equal(best["state_dict"][k], v), k


# ---------------------------------------------------------------------------- from the user's side: tools/train.py
@pytest.fixture
def train_tool():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import _cli
        import train

        yield lambda argv: _cli.run(train.main, [str(a) for a in argv])
    finally:
        sys.path.remove(os.path.join(ROOT, "tools"))


def _error_line(capsys, started=False):
    """The one ``error:`` line on stderr; before that only the log lines of a run that had ``started``."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err), err
    assert len(err) == 1 or (started and not any(e.startswith("error") or " ERROR " in e for e in err[:-1])), err
    return err[-1]


@pytest.mark.parametrize("key, value", [("TRAIN.OPTIMIZER", "adamm"), ("TRAIN.LOOKAHEAD.INNER", "sgdd"),
                                        ("TRAIN.LOOKAHEAD.K", 0), ("MODEL.NAME", "hrnet_w81")])
def test_config_typo_fails_fast_before_any_file(train_tool, tmp_path, capsys, key, value):
    """A synthetic-data run (the default data set, rendered on first use) with a typo: it fails in
    seconds with one line naming the key, before rendering the data or creating the run folder."""
    data, out = tmp_path / "synthetic", tmp_path / "out"
    t0 = time.time()
    rc = train_tool(["--cfg", LOOKAHEAD, "MODEL.NAME", "hrnet_w18_small", "DATASET.FORMAT", "synthetic",
                     "DATASET.ROOT", data, "OUTPUT_DIR", out, key, value])
    assert rc == 2 and key in _error_line(capsys)
    assert time.time() - t0 < 30
    assert not data.exists() and not out.exists()


def test_run_folder_is_never_reused_silently(train_tool, real_hands, tmp_path, capsys):
    base = ["--cfg", LOOKAHEAD] + TINY + ["DATASET.ROOT", os.path.join(real_hands, "freihand"), "OUTPUT_DIR", tmp_path,
                                          "TRAIN.END_EPOCH", 1]
    assert train_tool(base) == 0
    run = tmp_path / "hand_lookahead_adam"
    capsys.readouterr()
    config = (run / "config.yaml").read_text()
    # resume with a changed hyperparameter: refused, naming every changed key; config.yaml untouched
    assert train_tool(["--resume"] + base + ["TRAIN.LR", 0.01, "TRAIN.WD", 0.5]) == 2
    line = _error_line(capsys)
    assert "TRAIN.LR: 0.0001 -> 0.01" in line and "TRAIN.WD" in line and "changed config" in line
    assert (run / "config.yaml").read_text() == config
    # another SEED is another trajectory: refused too, naming the key
    assert train_tool(["--resume"] + base + ["SEED", 7]) == 2
    assert "changed config (SEED: 0 -> 7)" in _error_line(capsys)
    # a checkpoint without its config cannot tell what changed: refused, naming the file
    latest = load_checkpoint(run / LATEST)
    del latest["config"]
    torch.save(latest, run / LATEST)
    assert train_tool(["--resume"] + base) == 2
    assert f"{run / LATEST}: the checkpoint stores no config" in _error_line(capsys)
    assert (run / "config.yaml").read_text() == config
    # a fresh run into the finished run's folder: refused
    assert train_tool(base) == 2 and "--resume" in _error_line(capsys)
    # without the checkpoint, neither a fresh run nor a resume may overwrite model_best.pth and the events
    os.remove(run / LATEST)
    before = {n: (run / n).stat().st_mtime_ns for n in os.listdir(run)}
    assert train_tool(base) == 2
    line = _error_line(capsys)
    assert "model_best.pth" in line and "config.yaml" in line and "events.out.tfevents" in line
    assert train_tool(["--resume"] + base) == 2 and "checkpoint is gone" in _error_line(capsys)
    assert {n: (run / n).stat().st_mtime_ns for n in os.listdir(run)} == before


def test_a_run_that_dies_says_failed(train_tool, real_hands, tmp_path, hooked_loss, capsys):
    def boom(loss):
        raise RuntimeError("boom in the loss")

    hooked_loss.at, hooked_loss.action = 2, boom  # second iteration of epoch 1
    argv = ["--cfg", LOOKAHEAD] + TINY + ["DATASET.ROOT", os.path.join(real_hands, "freihand"), "OUTPUT_DIR",
                                          tmp_path, "TRAIN.END_EPOCH", 2]
    with pytest.raises(RuntimeError, match="boom"):  # a bug, not a user mistake: the traceback stays
        train_tool(argv)
    capsys.readouterr()
    run = tmp_path / "hand_lookahead_adam"
    metrics = json.loads((run / METRICS).read_text())
    assert metrics["status"] == "failed" and metrics["epochs_completed"] == 0
    log = (run / "train.log").read_text()
    assert "run failed: RuntimeError: boom in the loss" in log and "Traceback" in log
    # a user mistake met during the run (a missing annotation file): one line, status failed as well;
    # --resume of a run without checkpoints starts afresh in its folder
    for name in (LATEST, BEST):
        if (run / name).exists():
            os.remove(run / name)
    rc = train_tool(["--resume"] + argv + ["DATASET.TRAINSET", "missing.json"])
    line = _error_line(capsys, started=True)
    assert rc == 2 and "missing.json" in line and "DATASET.TRAINSET" in line
    assert json.loads((run / METRICS).read_text())["status"] == "failed"
    assert "run failed: FileNotFoundError" in (run / "train.log").read_text().split("boom in the loss")[-1]


# ---------------------------------------------------------------------------- what a run validates and keeps
@pytest.fixture(scope="module")
def recal_run(real_hands, tmp_path_factory):
    """Lookahead(Adam), slow weights validated with BN recalibrated on one batch, k 3 with 2 iterations
    per epoch: epochs 1 and 2 end mid-cycle (slow != fast), epoch 3 at a sync. Records, for every
    training step, whether every module of the model was in training mode."""
    out = tmp_path_factory.mktemp("recal")
    cfg = tiny_cfg(real_hands, out, "TRAIN.END_EPOCH", 3, "TRAIN.LR", 1e-3, "TRAIN.LOOKAHEAD.K", 3,
                   "TRAIN.LOOKAHEAD.BN_RECALIBRATE_BATCHES", 1, "TEST.VIS_IMAGES", 4, "TEST.VIS_HEATMAP", True)
    modes = []
    step = trainer_mod.Trainer._train_step

    def recording_step(self, *args, **kwargs):
        modes.append(all(m.training for m in self.raw_model.modules()))
        return step(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(trainer_mod.Trainer, "_train_step", recording_step)
        result = Trainer(cfg).fit()
    return cfg, out / "hand_lookahead_adam", result, modes


def _evaluate(cfg, model):
    """NME of ``model`` on the validation set, as the trainer's validation computes it."""
    from data import build_dataset
    from hrnet.evaluation.evaluate import run_inference
    from hrnet.evaluation.metrics import compute_metrics

    loader = torch.utils.data.DataLoader(build_dataset(cfg, is_train=False),
                                         batch_size=int(cfg.TEST.BATCH_SIZE_PER_GPU))
    out = run_inference(model, loader, cfg, torch.device("cpu"), progress=False)
    return float(compute_metrics(out["preds"], out["joints"], out["bbox"], cfg)["NME"])


def test_every_training_step_runs_in_train_mode(recal_run):
    """Validation (with BN recalibration and the prediction grid) between epochs must not leave the
    model, or any of its BatchNorm layers, in eval mode for the next epoch's steps."""
    _, _, result, modes = recal_run
    assert result["status"] == "finished" and len(modes) == 6  # 3 epochs x 2 iterations
    assert all(modes), modes


def test_model_best_re_evaluated_gives_the_recorded_best_nme(recal_run):
    """model_best.pth holds the weights and the BN statistics that scored the best NME (here the slow
    weights with recalibrated statistics): evaluated again, it scores exactly that NME."""
    from hrnet.evaluation.model_file import load_model_file

    cfg, run, result, _ = recal_run
    model, info = load_model_file(cfg, str(run / BEST), torch.device("cpu"))
    assert info.weights == "slow+bn" and info.epoch == result["best_epoch"]
    assert info.nme == result["best_NME"] == result["history"][result["best_epoch"]]["NME"]
    assert _evaluate(cfg, model) == result["best_NME"]


def test_nme_fast_is_the_fast_weights_own_nme_at_a_sync_with_bn_recalibration(recal_run):
    """At a sync the fast weights equal the slow ones, but NME (slow weights, recalibrated BN) is not
    their NME: NME_fast is the fast model's own, with its running BN statistics."""
    from hrnet import build_model

    cfg, run, result, _ = recal_run
    latest = load_checkpoint(run / LATEST)
    assert latest["epoch"] == 3 and latest["optimizer"]["lookahead"]["cycle_step"] == 0  # the case at hand
    fast = build_model(cfg)
    fast.load_state_dict(latest["state_dict"])
    last = result["history"][-1]
    assert last["NME_fast"] == pytest.approx(_evaluate(cfg, fast), rel=1e-6)
    assert last["NME_fast"] != pytest.approx(last["NME"], rel=1e-6)  # the test can tell them apart
    assert last["NME_slow"] == last["NME"] and last["eval_weights"] == "slow+bn"


def test_a_run_validated_on_its_fast_weights_is_evaluated_on_them_by_test_py(real_hands, tmp_path, capsys):
    """TRAIN.LOOKAHEAD.EVAL_WEIGHTS fast: tools/test.py on checkpoint_latest.pth (no --weights) takes
    the fast weights, as the run's validation did, and measures the run's final NME."""
    cfg = tiny_cfg(real_hands, tmp_path, "TRAIN.END_EPOCH", 1, "TRAIN.LR", 1e-3,
                   "TRAIN.LOOKAHEAD.EVAL_WEIGHTS", "fast", "TEST.VIS_IMAGES", 0)
    result = Trainer(cfg).fit()
    run = tmp_path / "hand_lookahead_adam"
    latest = load_checkpoint(run / LATEST)
    slow = latest["slow_state_dict"]
    assert any(not torch.equal(slow[k], latest["state_dict"][k]) for k in slow)  # mid-cycle: they differ
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import _cli
        import test as test_tool

        capsys.readouterr()
        argv = ["--cfg", str(run / "config.yaml"), "--model-file", str(run / LATEST), "--no-progress",
                "--out", str(tmp_path / "ev")]
        assert _cli.run(test_tool.main, argv) == 0
    finally:
        sys.path.remove(os.path.join(ROOT, "tools"))
    assert f"evaluating {run / LATEST}: fast weights (Lookahead)" in capsys.readouterr().out
    evaluated = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert evaluated["weights"] == "fast"
    assert evaluated["NME"] == pytest.approx(result["final_NME"], rel=1e-6)
    assert result["history"][-1]["eval_weights"] == "fast"


def test_a_run_that_fails_before_its_first_epoch_does_not_block_the_fixed_command(train_tool, real_hands, tmp_path,
                                                                                  capsys):
    """A missing image stops the run in its set-up; once it is back the same command (no --resume)
    replaces that run, and says so. A run with a completed epoch is never replaced that way, also
    after a resume of it failed in its set-up."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(os.path.join(real_hands, "freihand"), data)
    image = sorted(data.glob("*.jpg"))[0]
    aside = tmp_path / image.name
    argv = ["--cfg", LOOKAHEAD] + TINY + ["DATASET.ROOT", data, "OUTPUT_DIR", tmp_path / "out", "TRAIN.END_EPOCH", 1,
                                          "TEST.VIS_IMAGES", 0]
    run = tmp_path / "out" / "hand_lookahead_adam"
    image.rename(aside)
    assert train_tool(argv) == 2 and image.name in _error_line(capsys, started=True)
    failed = json.loads((run / METRICS).read_text())
    assert failed["status"] == "failed" and failed["epochs_completed"] == 0
    aside.rename(image)
    assert train_tool(argv) == 0
    log = (run / "train.log").read_text()
    assert f"replacing the run in {run}: its run failed before completing an epoch" in log
    assert log.index("run failed: BadSampleError") < log.index("replacing the run")  # the old log is kept
    done = json.loads((run / METRICS).read_text())
    assert done["status"] == "finished" and [h["epoch"] for h in done["history"]] == [0, 1]
    _, tb = scalars(str(run))
    assert [s for s, _ in tb["valid/NME"]] == [0, 1]  # the failed run's events went with it
    capsys.readouterr()
    # the data breaks again under a resume: its set-up fails, and the run keeps its completed epoch
    image.rename(aside)
    assert train_tool(["--resume"] + argv + ["TRAIN.END_EPOCH", 2]) == 2
    capsys.readouterr()
    after = json.loads((run / METRICS).read_text())
    assert after["status"] == "failed" and after["epochs_completed"] == 1 and len(after["history"]) == 2
    aside.rename(image)
    assert train_tool(argv) == 2 and "already holds a run" in _error_line(capsys)
    assert load_checkpoint(run / LATEST)["epoch"] == 1


def test_a_resume_by_another_number_of_processes_is_refused(train_tool, real_hands, tmp_path, capsys):
    """A checkpoint of 2 DDP processes resumed by 1: another global batch, another run: one error line
    naming the process counts, exit 2, and the run's files untouched."""
    from hrnet.runtime.checkpoint import save_checkpoint

    argv = ["--cfg", LOOKAHEAD] + TINY + ["DATASET.ROOT", os.path.join(real_hands, "freihand"), "OUTPUT_DIR",
                                          tmp_path, "TRAIN.END_EPOCH", 1, "TEST.VIS_IMAGES", 0]
    assert train_tool(argv) == 0
    run = tmp_path / "hand_lookahead_adam"
    ck = load_checkpoint(run / LATEST)
    save_checkpoint(dict(ck, world_size=2, rng=ck["rng"] * 2), run / LATEST)  # as a 2-process run leaves it
    before = {n: (run / n).read_bytes() for n in (LATEST, METRICS)}
    capsys.readouterr()
    assert train_tool(["--resume"] + argv + ["TRAIN.END_EPOCH", 2]) == 2
    line = _error_line(capsys)
    assert "trained by 2 process(es) (global batch 8), resumed by 1 (4)" in line and str(run / LATEST) in line
    assert {n: (run / n).read_bytes() for n in (LATEST, METRICS)} == before


def test_loss_is_read_back_every_print_freq_and_its_means_are_exact(real_hands, tmp_path, hooked_loss, monkeypatch):
    """The losses stay on the device between PRINT_FREQ points: train/loss_iter is the mean since the
    last point, train_loss the epoch's exact mean, each read back once; metrics.json records the numerics."""
    losses, reads = [], []
    hooked_loss.at, hooked_loss.action = 0, None
    real_forward = trainer_mod.JointsMSELoss.forward

    def forward(self, output, target, target_weight=None):
        loss = real_forward(self, output, target, target_weight)
        if torch.is_grad_enabled() and not torch.is_inference_mode_enabled():
            losses.append(float(loss.detach()))
        return loss
    monkeypatch.setattr(hooked_loss, "forward", forward)
    real_mean = Trainer._mean_over_ranks
    monkeypatch.setattr(Trainer, "_mean_over_ranks", lambda self, v: reads.append(1) or real_mean(self, v))
    cfg = tiny_cfg(real_hands, tmp_path, "TRAIN.END_EPOCH", 2, "TRAIN.BATCH_SIZE_PER_GPU", 2, "PRINT_FREQ", 3,
                   "TEST.VIS_IMAGES", 0)
    result = Trainer(cfg).fit()
    assert len(losses) == 8  # 4 iterations per epoch
    assert [h["train_loss"] for h in result["history"][1:]] == [sum(losses[:4]) / 4, sum(losses[4:]) / 4]
    _, tb = scalars(str(tmp_path / "hand_lookahead_adam"))
    # steps 3 and 6; a window does not cross an epoch's end (step 6: the 2 iterations of epoch 2 so far)
    assert [s for s, _ in tb["train/loss_iter"]] == [3, 6]
    assert [v for _, v in tb["train/loss_iter"]] == pytest.approx([sum(losses[:3]) / 3, sum(losses[4:6]) / 2])
    assert len(reads) == 4  # per epoch: one PRINT_FREQ point and the epoch's end, never per iteration
    assert result["precision"] == {"amp": "fp32", "deterministic": False, "tf32": False, "cudnn_benchmark": False}


def test_deterministic_on_cpu_trains_and_is_recorded(real_hands, tmp_path):
    """DETERMINISTIC True on the CPU: every kernel the run uses has a deterministic CPU version (torch
    raises otherwise), and the run equals the default one bit for bit."""
    try:
        det = Trainer(tiny_cfg(real_hands, tmp_path / "det", "TRAIN.END_EPOCH", 1, "DETERMINISTIC", True,
                               "TEST.VIS_IMAGES", 0)).fit()
    finally:
        torch.use_deterministic_algorithms(False)  # process-wide: leave the other tests as they were
    assert det["status"] == "finished" and det["precision"]["deterministic"] is True
    default = Trainer(tiny_cfg(real_hands, tmp_path / "default", "TRAIN.END_EPOCH", 1, "TEST.VIS_IMAGES", 0)).fit()
    assert [h["NME"] for h in det["history"]] == [h["NME"] for h in default["history"]]
