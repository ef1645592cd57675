"""hrnet.engine.run_record and run_reader on hand-made run folders and entries (no training): which
folder a run may take, the log, hparams, history entries, metrics.json, the TensorBoard scalars and
how the readers take a damaged or partial folder."""
from __future__ import annotations

import json
import logging
import math
import os
import re

import numpy as np
import pytest

from conftest import make_cfg
from hrnet.engine import run_reader
from hrnet.engine import run_record as rr


def _touch(folder, *names):
    os.makedirs(folder, exist_ok=True)
    for n in names:
        with open(os.path.join(folder, n), "w") as f:
            f.write("x")


def _metrics(folder, **info):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, rr.METRICS), "w") as f:
        json.dump(info, f)


# ---------------------------------------------------------------------------- run folders
def test_find_run_files(tmp_path):
    assert rr.find_run_files(str(tmp_path / "missing")) == []
    _touch(tmp_path, rr.LOG, "notes.txt", rr.BEST, rr.CONFIG, "events.out.tfevents.1.host", rr.LATEST, rr.METRICS)
    assert rr.find_run_files(str(tmp_path)) == [rr.LATEST, rr.CONFIG, "events.out.tfevents.1.host", rr.METRICS,
                                                rr.BEST]  # train.log and other files make no run
    assert rr.valid_tag("AUC") == "valid/AUC" and rr.TAG_VALID_NME == "valid/NME"


def test_a_new_or_resumed_run_takes_its_folder(tmp_path):
    for resume in (False, True):
        assert rr.check_run_dir(str(tmp_path / "none"), resume) == (rr.NEW, "")
        _touch(tmp_path / "log_only", rr.LOG)  # a log alone is no run
        assert rr.check_run_dir(str(tmp_path / "log_only"), resume) == (rr.NEW, "")
    _touch(tmp_path / "run", rr.CONFIG, rr.LATEST, rr.BEST)
    assert rr.check_run_dir(str(tmp_path / "run"), True) == (rr.RESUME, "")


@pytest.mark.parametrize("status", ["failed", "interrupted", "diverged"])
def test_a_run_stopped_before_its_first_epoch_is_replaced(tmp_path, status):
    run = str(tmp_path / "run")
    _touch(run, rr.CONFIG)
    _metrics(run, status=status, epochs_completed=0)
    for resume in (False, True):
        assert rr.check_run_dir(run, resume) == (rr.REPLACE, f"its run {status} before completing an epoch")


def test_a_run_with_results_is_never_overwritten(tmp_path):
    run = str(tmp_path / "run")
    _touch(run, rr.CONFIG)
    _metrics(run, status="failed", epochs_completed=1)  # one epoch trained: something to keep
    tail = ", or remove the folder, or set EXPERIMENT_NAME / OUTPUT_DIR to start a new one"
    with pytest.raises(FileExistsError) as e:
        rr.check_run_dir(run, False)
    assert str(e.value) == (f"{run} already holds a run (config.yaml, metrics.json); continue it with --resume "
                            f"(or TRAIN.RESUME True){tail}")
    # A run at epoch 0 may still be running (status running): not replaced either.
    _metrics(run, status="running", epochs_completed=0)
    with pytest.raises(FileExistsError):
        rr.check_run_dir(run, False)
    # --resume without checkpoint_latest.pth: a fresh start only when no model was ever saved.
    assert rr.check_run_dir(run, True) == (rr.REPLACE, "resume requested but checkpoint_latest.pth does not exist, "
                                                       "nor any model")
    _touch(run, rr.BEST)
    with pytest.raises(FileExistsError) as e:
        rr.check_run_dir(run, True)
    assert str(e.value) == (f"{run} already holds a run (config.yaml, metrics.json, model_best.pth); its checkpoint "
                            f"is gone, so it cannot be resumed{tail}")


def test_replace_run_keeps_the_log(tmp_path):
    _touch(tmp_path, rr.CONFIG, rr.METRICS, rr.LOG, "events.out.tfevents.2", "notes.txt")
    assert rr.replace_run(str(tmp_path)) == [rr.CONFIG, "events.out.tfevents.2", rr.METRICS]
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", rr.LOG]


# ---------------------------------------------------------------------------- the log
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"


@pytest.fixture
def root_logger():
    """The root logger at WARNING with its handlers as they were, restored afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.setLevel(logging.WARNING)
    yield root
    root.setLevel(level)
    assert root.handlers == handlers


def test_run_log_on_rank_0(tmp_path, capsys, root_logger):
    log = logging.getLogger("hrnet.test")
    with rr.run_log(str(tmp_path)):
        assert root_logger.level == logging.INFO
        log.info("epoch %d", 1)
        log.error("traceback", extra=rr.FILE_ONLY)
    assert root_logger.level == logging.WARNING and len(root_logger.handlers) == len(logging.getLogger().handlers)
    log.warning("after the block")  # no longer in train.log
    lines = (tmp_path / rr.LOG).read_text().splitlines()
    assert [re.fullmatch(f"{STAMP} (INFO epoch 1|ERROR traceback)", ln) is not None for ln in lines] == [True, True]
    err = capsys.readouterr().err
    assert re.search(f"^{STAMP} INFO epoch 1$", err, re.M) and "traceback" not in err


def test_run_log_on_other_ranks(tmp_path, capsys, root_logger):
    log = logging.getLogger("hrnet.test")
    with rr.run_log(str(tmp_path), rank=2):
        log.info("quiet")
        log.warning("loud")
    assert os.listdir(tmp_path) == []  # only rank 0 writes train.log
    assert capsys.readouterr().err.splitlines() == ["[rank 2] WARNING loud"]


# ---------------------------------------------------------------------------- writer side
def _cfg(*opts):
    return make_cfg(None, ["EXPERIMENT_NAME", "hand_x", "TRAIN.LR", "0.01", "SEED", "4", "TRAIN.WD", "0.001",
                           "TRAIN.END_EPOCH", "3", "TRAIN.LR_STEP", "[1, 2]", "MODEL.NAME", "hrnet_w18_small",
                           "TRAIN.BATCH_SIZE_PER_GPU", "8", *opts])


def test_hparams():
    assert rr.hparams(_cfg("TRAIN.OPTIMIZER", "SGD"), 2) == {  # inner: the optimizer itself, not LOOKAHEAD.INNER
        "optimizer": "sgd", "lr": 0.01, "inner": "sgd", "batch": 16, "seed": 4, "wd": 0.001, "epochs": 3,
        "model": "hrnet_w18_small"}
    la = rr.hparams(_cfg("TRAIN.OPTIMIZER", "LookAhead", "TRAIN.LOOKAHEAD.INNER", "SGD", "TRAIN.LOOKAHEAD.K", "7",
                         "TRAIN.LOOKAHEAD.ALPHA", "0.25"), 1)
    assert (la["optimizer"], la["inner"], la["batch"], la["k"], la["alpha"]) == ("lookahead", "sgd", 8, 7, 0.25)


VAL = {"NME": 0.25, "valid_loss": 0.0123, "eval_weights": "slow", "time": 1.26, "is_best": True,
       "metrics": {"PCK@0.2": np.float32(0.5), "AUC": np.float64(0.75), "per_image_NME": np.zeros(65),
                   "per_joint": np.arange(64.0), "scalar": np.array(2.0)},
       "NME_slow": 0.25, "NME_fast": 0.26}
TRAIN = {"train_loss": 0.00042, "img_per_s": 123.456, "train_time": 8.0, "data_time": 6.0}


def test_history_entry():
    entry = rr.history_entry(4, VAL, 0.2, 99.5, TRAIN, lr=1e-3)
    assert entry == {"epoch": 4, "NME": 0.25, "valid_loss": 0.0123, "best_NME": 0.2, "eval_weights": "slow",
                     "metrics": {"PCK@0.2": 0.5, "AUC": 0.75, "per_joint": list(np.arange(64.0)), "scalar": 2.0},
                     "NME_slow": 0.25, "NME_fast": 0.26, "train_loss": 0.00042, "lr": 1e-3, "img_per_s": 123.456,
                     "wall_time": 99.5}  # per-image arrays (over 64 items) stay out
    plain = {k: v for k, v in VAL.items() if k not in ("NME_slow", "NME_fast")}
    assert set(rr.history_entry(0, plain, 0.25, 3.0)) == {"epoch", "NME", "valid_loss", "best_NME", "eval_weights",
                                                          "metrics", "wall_time"}


def test_epoch_lines():
    untrained = rr.history_entry(0, VAL, 0.25, 3.0)
    assert rr.epoch_line(untrained, 30, 0, VAL) == (
        "epoch 0 (untrained) | valid loss 1.2300e-02 | NME 0.25000 | slow weights | eval 1.3s")
    entry = rr.history_entry(4, VAL, 0.2, 99.5, TRAIN, lr=1e-3)
    assert rr.epoch_line(entry, 30, 4, VAL, TRAIN) == (
        "epoch 4/30 | train loss 4.2000e-04 | valid loss 1.2300e-02 | NME 0.25000 * (best 0.20000 @ 4) | "
        "NME_slow 0.25000 | NME_fast 0.26000 | lr 1.00e-03 | train 8.0s 123.5 img/s (data wait 75%) | eval 1.3s")
    plain = {k: v for k, v in VAL.items() if k not in ("NME_slow", "NME_fast")}
    entry = rr.history_entry(5, plain, 0.2, 99.5, TRAIN, lr=1e-3)
    line = rr.epoch_line(entry, 30, 4, dict(plain, is_best=False), dict(TRAIN, train_time=0.0, data_time=0.0))
    assert line == ("epoch 5/30 | train loss 4.2000e-04 | valid loss 1.2300e-02 | NME 0.25000 (best 0.20000 @ 4) | "
                    "lr 1.00e-03 | train 0.0s 123.5 img/s (data wait 0%) | eval 1.3s")
    short = rr.epoch_line(entry, 30, 4, plain, dict(TRAIN, train_time=0.5, data_time=0.2))
    assert short.endswith("| train 0.5s 123.5 img/s (data wait 40%) | eval 1.3s")


def test_metrics_summary_and_write(tmp_path):
    cfg = _cfg()
    h0 = rr.history_entry(0, VAL, 0.25, 3.0)
    h1 = rr.history_entry(1, dict(VAL, NME=0.2, valid_loss=0.01), 0.2, 9.0, TRAIN, lr=1e-3)
    h2 = rr.history_entry(2, dict(VAL, NME=0.22, valid_loss=0.02, metrics={"AUC": 0.7}), 0.2, 15.0,
                          dict(TRAIN, train_loss=0.0003), lr=1e-4)
    machine = {"cpu": "fake", "threads": 2}
    s = rr.metrics_summary(cfg, 2, status="finished", epochs_completed=2, best_nme=0.2, best_epoch=1,
                           wall_time=12.3456, history=[h0, h1, h2], skipped=["a.jpg: no keypoints"], machine=machine)
    assert s == {"experiment": "hand_x", "status": "finished", "epochs_completed": 2, "end_epoch": 3,
                 "final_NME": 0.22, "best_NME": 0.2, "best_epoch": 1, "untrained_NME": 0.25, "final_valid_loss": 0.02,
                 "final_train_loss": 0.0003, "wall_time_s": 12.35, "final": {"AUC": 0.7},
                 "hparams": rr.hparams(cfg, 2), "world_size": 2, "num_images_skipped": 1,
                 "skipped": ["a.jpg: no keypoints"], "machine": machine,
                 "history": [{k: v for k, v in h.items() if k != "metrics"} for h in (h0, h1, h2)]}
    empty = rr.metrics_summary(cfg, 1, status="failed", epochs_completed=0, best_nme=math.inf, best_epoch=-1,
                               wall_time=0.0, history=[])
    assert (empty["final_NME"], empty["best_NME"], empty["untrained_NME"], empty["final_valid_loss"],
            empty["final_train_loss"], empty["final"], empty["machine"], empty["skipped"], empty["history"]) == (
        None, None, None, None, None, {}, {}, [], [])
    assert "precision" not in empty and "code_version" not in empty
    precision = {"amp": "bf16", "tf32": False, "deterministic": True}
    with_precision = rr.metrics_summary(cfg, 1, status="running", epochs_completed=0, best_nme=math.inf,
                                        best_epoch=-1, wall_time=0.0, history=[], precision=precision)
    assert with_precision["precision"] == precision and with_precision["precision"] is not precision
    rr.write_metrics(str(tmp_path), dict(empty, final_NME=float("nan")))
    back, problems = rr.read_metrics(str(tmp_path))
    assert problems == [] and back["final_NME"] is None and back["best_epoch"] == -1 and back["status"] == "failed"


class _Writer:
    """Records ``add_scalar`` calls and flushes, and the hparams summaries written to its file writer."""

    def __init__(self):
        self.calls, self.summaries = [], []
        self.file_writer = self

    def add_scalar(self, tag, value, step):
        self.calls.append((tag, value, step))

    def flush(self):
        self.calls.append("flush")

    def add_summary(self, summary):
        self.summaries.append(summary)


def test_write_scalars():
    cfg = _cfg("TEST.PCK_THRESHOLD", "0.1")
    w = _Writer()
    val = dict(VAL, metrics={"PCK@0.1": 0.5, "failure_rate@0.1": None, "AUC": np.float32(0.75), "EPE": 3,
                             "other": 1.0})
    rr.write_scalars(w, rr.history_entry(2, val, 0.2, 9.0, TRAIN, lr=1e-3), cfg)
    assert w.calls == [("valid/NME", 0.25, 2), ("valid/loss", 0.0123, 2), ("hparam/best_NME", 0.2, 2),
                       ("valid/NME_slow", 0.25, 2), ("valid/NME_fast", 0.26, 2), ("valid/PCK@0.1", 0.5, 2),
                       ("valid/AUC", 0.75, 2), ("valid/EPE", 3.0, 2), ("train/loss", 0.00042, 2),
                       ("train/lr", 1e-3, 2), ("train/img_per_s", 123.456, 2), "flush"]
    assert all(type(c[1]) is float for c in w.calls[5:8])
    w = _Writer()
    plain = {k: v for k, v in VAL.items() if k not in ("NME_slow", "NME_fast")}
    rr.write_scalars(w, rr.history_entry(0, dict(plain, metrics={}), 0.25, 3.0), cfg)
    assert w.calls == [("valid/NME", 0.25, 0), ("valid/loss", 0.0123, 0), ("hparam/best_NME", 0.25, 0), "flush"]


def test_write_hparams():
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    def content(summary):
        (value,) = summary.value
        return value.tag, HParamsPluginData.FromString(value.metadata.plugin_data.content)

    w = _Writer()
    rr.write_hparams(w, {"optimizer": "adam", "lr": 0.01})
    (t1, experiment), (t2, start) = map(content, w.summaries)
    assert (t1, t2) == ("_hparams_/experiment", "_hparams_/session_start_info")
    assert [m.name.tag for m in experiment.experiment.metric_infos] == ["valid/NME", "hparam/best_NME", "valid/loss",
                                                                         "train/loss"]
    assert start.session_start_info.hparams["optimizer"].string_value == "adam"
    assert start.session_start_info.hparams["lr"].number_value == 0.01
    w = _Writer()
    rr.write_hparams(w, {"optimizer": "adam"}, finished=True)
    ((tag, end),) = map(content, w.summaries)
    assert tag == "_hparams_/session_end_info" and end.session_end_info.status == 1  # STATUS_SUCCESS


# ---------------------------------------------------------------------------- reader side
def test_is_number():
    assert [rr.is_number(v) for v in (1, 2.5, float("nan"), True, "1", None, [1])] == [
        True, True, True, False, False, False, False]


def test_read_metrics_reports_what_it_leaves_out(tmp_path):
    assert rr.read_metrics(str(tmp_path)) == ({}, [])
    (tmp_path / rr.METRICS).write_text("{oops")
    info, problems = rr.read_metrics(str(tmp_path))
    assert info == {} and len(problems) == 1 and problems[0].startswith("unreadable metrics.json (Expecting ")
    (tmp_path / rr.METRICS).write_text('"finished"')
    assert rr.read_metrics(str(tmp_path)) == ({}, ["metrics.json holds a str, not an object"])
    good = {"status": "finished", "end_epoch": 3, "epochs_completed": 3, "wall_time_s": 7, "hparams": {"lr": 0.1},
            "final_NME": 0.2}
    _metrics(tmp_path, **good)
    assert rr.read_metrics(str(tmp_path)) == (good, [])
    _metrics(tmp_path, status=3, end_epoch="3", epochs_completed=2.0, wall_time_s=True, hparams=None, final_NME=0.2)
    assert rr.read_metrics(str(tmp_path)) == ({"final_NME": 0.2}, [
        "metrics.json: bad status (3)", "metrics.json: bad end_epoch ('3')", "metrics.json: bad epochs_completed (2.0)",
        "metrics.json: bad wall_time_s (True)", "metrics.json: bad hparams (None)"])


def _events(folder, scalars):
    """Event files of ``(tag, value, step, wall_time)`` in this order."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(folder)) as w:
        for tag, value, step, wall in scalars:
            w.add_scalar(tag, value, step, walltime=wall)


def test_run_properties():
    r = run_reader.Run(path="x/adam_lr0.01_seed12", name="adam_lr0.01_seed12")
    assert r.group == "adam_lr0.01_seed12"[:-7] and run_reader.Run("p", "adam_seedX").group == "adam_seedX"
    assert (r.nme, r.status, r.best, r.final, r.epochs, r.wall_time) == (None, "missing", (None, None), None, None,
                                                                         None)
    r.curves["valid/NME"] = (np.array([0, 1, 2, 3]), np.array([0.5, np.nan, 0.3, 0.4]))
    assert r.status == "partial (no metrics.json)" and r.best == (0.3, 2) and (r.final, r.epochs) == (0.4, 3)
    assert isinstance(r.best[1], int) and isinstance(r.epochs, int)
    r.info = {"status": "finished", "wall_time_s": 12, "_event_span": 5.0}
    assert r.status == "finished" and r.wall_time == 12.0 and isinstance(r.wall_time, float)
    r.info = {"status": None, "wall_time_s": None, "_event_span": 5.0}
    assert r.status == "partial (no metrics.json)" and r.wall_time == 5.0
    r.curves["valid/NME"] = (np.array([], dtype=np.int64), np.array([]))
    assert (r.best, r.final, r.epochs) == ((None, None), None, None)


def test_expand_run_dirs(tmp_path):
    _touch(tmp_path / "out" / "b", "events.out.tfevents.1")
    _touch(tmp_path / "out" / "a", "events.out.tfevents.1")
    _touch(tmp_path / "out" / "empty")
    _touch(tmp_path / "out", "notes.txt")
    _touch(tmp_path / "run", rr.CONFIG)
    _touch(tmp_path / "run" / "sub", "events.out.tfevents.1")  # a run folder is never expanded
    _touch(tmp_path / "nothing" / "sub")
    paths = [str(tmp_path / p) for p in ("out", "run", "nothing", "missing", "out/notes.txt")]
    assert run_reader.expand_run_dirs(paths) == [str(tmp_path / "out" / "a"), str(tmp_path / "out" / "b")] + paths[1:]
    assert run_reader.expand_run_dirs([str(tmp_path / "out" / "a")]) == [str(tmp_path / "out" / "a")]


def test_read_scalars_keeps_the_latest_value_of_a_step(tmp_path):
    _events(tmp_path, [("valid/NME", 0.5, 0, 100.0), ("valid/NME", 0.4, 1, 110.0), ("valid/NME", 0.3, 1, 112.0),
                       ("valid/NME", 0.9, 1, 111.0),  # older than the value above: a stale write
                       ("valid/NME", 0.2, 2, 120.0), ("valid/NME", 0.1, 2, 120.0),  # the same time: the later one
                       ("train/loss", 1.0, 1, 95.5)])
    curves, span = run_reader.read_scalars(str(tmp_path))
    steps, values = curves["valid/NME"]
    assert steps.tolist() == [0, 1, 2] and steps.dtype == np.int64
    np.testing.assert_allclose(values, [0.5, 0.3, 0.1], rtol=1e-6)  # events store float32
    assert values.dtype == np.float64 and curves["train/loss"][0].tolist() == [1]
    assert span == pytest.approx(120.0 - 95.5)
    (tmp_path / "empty").mkdir()
    assert run_reader.read_scalars(str(tmp_path / "empty")) == ({}, None)  # no events: no span
    _events(tmp_path / "one", [("valid/NME", 0.5, 0, 100.0)])
    assert run_reader.read_scalars(str(tmp_path / "one"))[1] == 0.0  # one event: a span of 0 s


def test_read_scalars_keeps_every_point_of_a_long_curve(tmp_path):
    # TensorBoard keeps a random 10,000-point sample of a tag by default; a long run's loss curve has more.
    _events(tmp_path, [("train/loss_iter", 1.0 / (1 + i), i, 1.0 + i) for i in range(10_001)])
    steps, values = run_reader.read_scalars(str(tmp_path))[0]["train/loss_iter"]
    assert steps.tolist() == list(range(10_001)) and values[-1] == pytest.approx(1 / 10_001, rel=1e-6)


def test_load_run(tmp_path, monkeypatch):
    missing = run_reader.load_run(str(tmp_path / "gone" / "adam_seed0") + os.sep)
    assert (missing.name, missing.problems, missing.status) == ("adam_seed0", ["folder not found"], "missing")

    run = tmp_path / "adam_seed1"
    _events(run, [("valid/NME", 0.5, 0, 10.0), ("valid/NME", 0.4, 1, 30.0)])
    _metrics(run, status="interrupted", end_epoch=3, hparams={"optimizer": "adam", "lr": 0.001})
    r = run_reader.load_run(str(run))
    assert (r.optimizer, r.lr, r.status, r.epochs, r.problems) == ("adam", 0.001, "interrupted", 1, ["1/3 epochs"])
    assert (r.path, r.name, r.group) == (str(run), "adam_seed1", "adam")
    assert r.wall_time == 20.0 and r.info["_event_span"] == 20.0
    _metrics(run, status="finished", end_epoch=1, wall_time_s=99.0, _event_span=1.0, hparams={"lr": "fast"})
    (run / rr.CONFIG).write_text("TRAIN:\n  OPTIMIZER: sgd\n  LR: 0.1\n")
    r = run_reader.load_run(str(run))
    assert (r.optimizer, r.lr, r.problems, r.wall_time, r.info["_event_span"]) == ("sgd", 0.1, [], 99.0, 1.0)
    (run / rr.CONFIG).write_text("TRAIN: [unclosed\n")
    r = run_reader.load_run(str(run))
    assert (r.optimizer, r.lr) == ("", None) and len(r.problems) == 1
    assert r.problems[0].startswith("unreadable config.yaml (")

    other = tmp_path / "no_nme"
    _events(other, [("train/loss", 0.5, 1, 10.0)])
    _metrics(other, hparams={"optimizer": 3, "lr": True})
    r = run_reader.load_run(str(other))
    assert (r.optimizer, r.lr, r.problems, r.status) == ("", None, ["no valid/NME points"], "missing")

    bare = tmp_path / "bare"
    _metrics(bare, status="failed", end_epoch=3)
    r = run_reader.load_run(str(bare))
    assert r.problems == ["no TensorBoard event files"] and r.info == {"status": "failed", "end_epoch": 3}
    (bare / rr.METRICS).write_text("[]")
    assert run_reader.load_run(str(bare)).problems == ["metrics.json holds a list, not an object",
                                                       "no TensorBoard event files"]

    def broken(path):
        raise ValueError("truncated record")

    monkeypatch.setattr(run_reader, "read_scalars", broken)
    _metrics(run, status="finished", end_epoch=1)
    (run / rr.CONFIG).unlink()
    r = run_reader.load_run(str(run))
    assert r.problems == ["unreadable event files (truncated record)"] and r.curves == {}
    assert "_event_span" not in r.info and r.status == "missing"


# ---------------------------------------------------------------------------- records a trainer writes (tiny runs)
TINY = ["MODEL.NAME", "hrnet_w18_small", "MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]",
        "MODEL.SIGMA", "1.0", "DATASET.FORMAT", "coco", "DATASET.TRAINSET", "test_freihand.json",
        "DATASET.TESTSET", "test_freihand.json", "TRAIN.BATCH_SIZE_PER_GPU", "4", "TEST.BATCH_SIZE_PER_GPU", "4",
        "WORKERS", "0", "TEST.VIS_IMAGES", "0"]


def _tiny(real_hands, out, *opts):
    from conftest import ROOT

    return make_cfg(os.path.join(ROOT, "experiments", "hand_lookahead_adam.yaml"),
                    TINY + ["DATASET.ROOT", os.path.join(real_hands, "freihand"), "OUTPUT_DIR", str(out)]
                    + [str(o) for o in opts])


def test_metrics_name_the_code_version_and_a_changed_resume_adds_one(real_hands, tmp_path, monkeypatch):
    from hrnet.engine import trainer as trainer_mod
    from hrnet.runtime.provenance import code_version

    here = code_version()
    result = trainer_mod.Trainer(_tiny(real_hands, tmp_path, "TRAIN.END_EPOCH", 1)).fit()
    run = tmp_path / "hand_lookahead_adam"
    metrics = json.loads((run / rr.METRICS).read_text())
    assert metrics["code_version"] == here == result["code_version"]
    assert set(here) == {"git_commit", "git_dirty", "source_sha256"} and len(here["source_sha256"]) == 64
    assert metrics["code_versions"] == [{"code_version": here, "from_epoch": 0}]
    # A resume by the same code adds nothing; one by changed sources adds an entry and says so.
    trainer_mod.Trainer(_tiny(real_hands, tmp_path, "TRAIN.END_EPOCH", 2), resume=True).fit()
    assert json.loads((run / rr.METRICS).read_text())["code_versions"] == [{"code_version": here, "from_epoch": 0}]
    other = dict(here, source_sha256="0" * 64)
    monkeypatch.setattr(trainer_mod, "code_version", lambda: other)
    trainer_mod.Trainer(_tiny(real_hands, tmp_path, "TRAIN.END_EPOCH", 3), resume=True).fit()
    metrics = json.loads((run / rr.METRICS).read_text())
    assert metrics["code_version"] == other
    assert metrics["code_versions"] == [{"code_version": here, "from_epoch": 0},
                                        {"code_version": other, "from_epoch": 2}]
    log = (run / rr.LOG).read_text()
    assert log.count("the training code changed since the run's previous session") == 1
    assert "sources 00000000" in log


def test_a_kill_between_the_two_checkpoints_leaves_a_best_file_the_history_describes(real_hands, tmp_path,
                                                                                      monkeypatch):
    """The second checkpoint write of epoch 1 fails (as a kill there would stop it): model_best.pth is
    one the checkpoint's history describes, and the resume writes the best file of epoch 1."""
    from hrnet.engine import trainer as trainer_mod
    from hrnet.engine import validation
    from hrnet.runtime.checkpoint import load_checkpoint, save_checkpoint

    calls = []

    def failing_second_write_of_epoch_1(obj, path):
        calls.append(os.path.basename(str(path)))
        if len(calls) == 4:  # epoch 0: 2 writes; epoch 1: the second of its two
            raise OSError(28, "No space left on device", str(path))
        save_checkpoint(obj, path)

    monkeypatch.setattr(trainer_mod, "save_checkpoint", failing_second_write_of_epoch_1)
    monkeypatch.setattr(validation, "save_checkpoint", failing_second_write_of_epoch_1)
    cfg = _tiny(real_hands, tmp_path, "TRAIN.END_EPOCH", 2, "TRAIN.LR", 1e-3)
    with pytest.raises(OSError, match="No space left"):
        trainer_mod.Trainer(cfg).fit()
    run = tmp_path / "hand_lookahead_adam"
    latest, best = load_checkpoint(run / rr.LATEST), load_checkpoint(run / rr.BEST)
    described = {h["epoch"]: h["NME"] for h in latest["history"]}
    assert best["epoch"] in described and best["NME"] == described[best["epoch"]]
    assert calls == [rr.LATEST, rr.BEST, rr.LATEST, rr.BEST] and latest["epoch"] == 1  # latest first, then best
    assert latest["best_epoch"] == 1 != best["epoch"]  # epoch 1 was better; its file was not written
    monkeypatch.undo()
    trainer_mod.Trainer(cfg, resume=True).fit()
    metrics = json.loads((run / rr.METRICS).read_text())
    best = load_checkpoint(run / rr.BEST)
    assert metrics["status"] == "finished" and best["epoch"] == metrics["best_epoch"]
    assert best["NME"] == metrics["best_NME"] == metrics["history"][best["epoch"]]["NME"]


def test_config_yaml_names_output_dir_relative_to_the_project(monkeypatch, tmp_path):
    from hrnet.runtime import provenance

    monkeypatch.setattr(provenance, "PROJECT_ROOT", str(tmp_path))
    inside = make_cfg(None, ["OUTPUT_DIR", str(tmp_path / "docs" / "study_cpu" / "runs")])
    assert "OUTPUT_DIR: docs/study_cpu/runs\n" in rr.config_text(inside)
    assert inside.OUTPUT_DIR == str(tmp_path / "docs" / "study_cpu" / "runs")  # the config itself unchanged
    outside = make_cfg(None, ["OUTPUT_DIR", "/data/runs"])
    assert rr.config_text(outside) == outside.dump()  # a folder outside the project stays absolute
    assert provenance.project_relative(str(tmp_path)) == "."
    assert provenance.project_relative(str(tmp_path) + "x/y") == str(tmp_path) + "x/y"  # a sibling is outside


def test_code_version_hashes_the_sources_without_git(tmp_path):
    from hrnet.runtime.provenance import code_version, code_versions_after, same_code

    for folder in ("hrnet", "tools", "data/__pycache__"):
        os.makedirs(tmp_path / folder)
    (tmp_path / "hrnet" / "a.py").write_text("x = 1\n")
    (tmp_path / "tools" / "t.py").write_text("y = 2\n")
    (tmp_path / "data" / "__pycache__" / "c.py").write_text("cached")
    (tmp_path / "README.md").write_text("not code")
    first = code_version(str(tmp_path))
    assert first["git_commit"] is None and first["git_dirty"] is None  # no repository here
    (tmp_path / "README.md").write_text("still not code")
    (tmp_path / "data" / "__pycache__" / "c.py").write_text("other")
    assert code_version(str(tmp_path)) == first
    (tmp_path / "hrnet" / "a.py").write_text("x = 2\n")
    second = code_version(str(tmp_path))
    assert not same_code(first, second)
    os.rename(tmp_path / "hrnet" / "a.py", tmp_path / "hrnet" / "b.py")  # names count, not only contents
    assert code_version(str(tmp_path))["source_sha256"] != second["source_sha256"]
    lines = []
    versions = code_versions_after([], first, 0, log=lambda *a: lines.append(a[0] % a[1:]))
    assert code_versions_after(versions, dict(first), 3, log=lines.append) == versions and not lines
    assert code_versions_after(versions, second, 3, log=lambda *a: lines.append(a[0] % a[1:])) == \
        versions + [{"code_version": second, "from_epoch": 3}]
    assert len(lines) == 1 and "no git commit" in lines[0]
