"""A planned run's folder read back (hrnet/study/plan/runs.py) and a run's identity
(hrnet/study/plan/identity.py), case by case: the tests of the ``study_runs`` mutation section.

Hand-made folders only (no training): each test runs in milliseconds.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List

import pytest

from conftest import ROOT, write_planned_config

from hrnet.study.plan import identity, runs
from hrnet.study.plan.identity import NOT_RECORDED
from hrnet.study.plan.spec import PlannedRun

ADAM = os.path.join(ROOT, "experiments", "hand_adam.yaml")


def _run(tmp_path, end_epoch: int = 3, config: bool = True) -> PlannedRun:
    """Run ``a_seed0`` of ``end_epoch`` epochs in ``<tmp>/out/runs``; its config.yaml written when ``config``."""
    d = tmp_path / "out" / "runs" / "a_seed0"
    run = PlannedRun("a", 0, ADAM, str(d), ("TRAIN.END_EPOCH", str(end_epoch), "OUTPUT_DIR", str(d.parent),
                                            "EXPERIMENT_NAME", d.name), end_epoch)
    if config:
        write_planned_config(run)
    else:
        os.makedirs(run.run_dir)
    return run


def _write(run_dir: str, name: str, content: Any) -> None:
    with open(os.path.join(run_dir, name), "w", encoding="utf-8") as f:
        f.write(content if isinstance(content, str) else json.dumps(content))


# ---------------------------------------------------------------------------- runs.py: the study's files
@pytest.mark.parametrize("content, expected", [
    (None, []),  # no file
    ([{"exit_status": 0}], [{"exit_status": 0}]),
    ({"exit_status": 0}, []),  # not a list of records
    ("[{not json", []),
])
def test_read_sessions(tmp_path, content, expected):
    if content is not None:
        _write(str(tmp_path), runs.SESSIONS, content)
    assert runs.read_sessions(str(tmp_path)) == expected


@pytest.mark.parametrize("log, expected", [
    (None, ""),  # no stdout.log
    ("\n  \n", ""),
    ("epoch 1\n  last words  \n\n", "last words"),  # the last non-blank line, stripped
    ("an error: x\nfine\n", "an error: x"),  # case-insensitive
    ("Traceback (most recent call last):\nok\n", "Traceback (most recent call last):"),
    ("EXCEPTION raised\nok\n", "EXCEPTION raised"),
    ("loss is non-finite\nok\n", "loss is non-finite"),
    ("ValueError: first\nRuntimeError: second\nbye\n", "RuntimeError: second"),  # the last one
    ('ValueError: real\n  File "error_handling.py", line 3\nbye\n', "ValueError: real"),  # a frame is no error
    ("E" * 400 + " error\n", "E" * 300),
    ("x" * 400 + "\n", "x" * 300),
])
def test_last_error_line(tmp_path, log, expected):
    if log is not None:
        _write(str(tmp_path), runs.CHILD_LOG, log)
    assert runs.last_error_line(str(tmp_path)) == expected


def test_last_error_line_reads_the_last_200_lines_and_bad_bytes(tmp_path):
    _write(str(tmp_path), runs.CHILD_LOG, "RuntimeError: early\n" + "".join(f"line {i}\n" for i in range(199)))
    assert runs.last_error_line(str(tmp_path)) == "RuntimeError: early"
    _write(str(tmp_path), runs.CHILD_LOG, "RuntimeError: early\n" + "".join(f"line {i}\n" for i in range(200)))
    assert runs.last_error_line(str(tmp_path)) == "line 199"  # 201 lines back: out of reach
    with open(os.path.join(tmp_path, runs.CHILD_LOG), "wb") as f:
        f.write(b"bad \xff byte\n")
    assert runs.last_error_line(str(tmp_path)) == "bad \ufffd byte"


@pytest.mark.parametrize("info, done", [({}, 0), ({"epochs_completed": 4}, 4), ({"epochs_completed": True}, 0),
                                        ({"epochs_completed": 2.0}, 0), ({"epochs_completed": None}, 0)])
def test_epochs_done(tmp_path, info, done):
    _write(str(tmp_path), "metrics.json", info)
    assert runs.epochs_done(str(tmp_path)) == done


# ---------------------------------------------------------------------------- runs.py: run_status
def test_run_status_without_config_yaml_is_unverified(tmp_path):
    run = _run(tmp_path, config=False)
    assert runs.run_status(run, {}, []) == ("not run", "")
    assert runs.run_status(run, {"status": "finished", "epochs_completed": 3}, []) == (
        runs.UNVERIFIED, "no config.yaml: cannot be checked against the plan, so it counts for nothing")


def test_run_status_of_a_stale_folder_names_the_keys(tmp_path):
    run = _run(tmp_path)
    other = PlannedRun(run.arm, run.seed, run.config, run.run_dir, run.opts + ("TRAIN.LR", "0.05"), run.end_epoch)
    assert runs.run_status(other, {"status": "finished", "epochs_completed": 3}, []) == (
        runs.STALE, "TRAIN.LR 0.0001 -> 0.05")


@pytest.mark.parametrize("info, sessions, expected", [
    ({"status": "finished", "epochs_completed": 3}, [], ("finished", "")),
    ({"status": "finished", "epochs_completed": 2}, [], ("partial", "2/3 epochs")),
    ({"status": "diverged", "epochs_completed": 1}, [], ("diverged", "RuntimeError: boom")),
    # the outcome decides over the exit status (a launcher's)
    ({"status": "interrupted", "epochs_completed": 1}, [{"exit_status": 1, "outcome": "interrupted"}],
     ("partial", "1/3 epochs")),
    ({"status": "interrupted", "epochs_completed": 1}, [{"exit_status": 0, "outcome": "failed"}],
     ("failed", "exit status 0: RuntimeError: boom")),
    ({"status": "interrupted", "epochs_completed": 1}, [{"exit_status": 1, "outcome": "killed"}],
     ("partial", "1/3 epochs")),
    ({"status": "interrupted", "epochs_completed": 1}, [{"exit_status": 2}],
     ("failed", "exit status 2: RuntimeError: boom")),
    ({"status": "interrupted", "epochs_completed": 1}, [{"exit_status": -9}],
     ("failed", "exit status -9: RuntimeError: boom")),
    ({"status": "interrupted", "epochs_completed": 1}, [{"exit_status": 130}], ("partial", "1/3 epochs")),
    ({"status": "interrupted", "epochs_completed": 1}, [{"exit_status": 143}], ("partial", "1/3 epochs")),
    ({"status": "interrupted", "epochs_completed": 1}, [{}], ("partial", "1/3 epochs")),
    ({}, [], ("not run", "")),
])
def test_run_status_cases(tmp_path, info, sessions, expected):
    run = _run(tmp_path)
    _write(run.run_dir, runs.CHILD_LOG, "epoch 1\nRuntimeError: boom\n")
    assert runs.run_status(run, info, sessions) == expected


def test_run_status_checks_against_the_arms_own_config(tmp_path):
    """The planned config is the arm's yaml (here not the defaults) with the run's overrides."""
    d = tmp_path / "runs" / "la_seed0"
    run = PlannedRun("la", 0, os.path.join(ROOT, "experiments", "hand_lookahead_adam.yaml"), str(d),
                     ("OUTPUT_DIR", str(d.parent), "EXPERIMENT_NAME", d.name), 30)
    write_planned_config(run)
    assert runs.run_status(run, {"status": "finished", "epochs_completed": 30}, []) == ("finished", "")
    assert identity.stored_config_differences(run.run_dir, run.config, run.opts) == []


def test_run_status_with_a_checkpoint_but_no_metrics_is_partial(tmp_path):
    run = _run(tmp_path)
    _write(run.run_dir, "checkpoint_latest.pth", "")
    assert runs.run_status(run, {}, []) == ("partial", "0/3 epochs")


def test_move_stale_never_overwrites(tmp_path, monkeypatch):
    import time

    real = time.strftime
    monkeypatch.setattr(time, "strftime", lambda fmt: real(fmt, time.localtime(1704164645)))  # one second for all
    stamp = real("%Y%m%d-%H%M%S", time.localtime(1704164645))
    dests = []
    for i in range(3):
        run = _run(tmp_path)
        _write(run.run_dir, "mark", str(i))
        dests.append(runs.move_stale(run))
        assert not os.path.exists(run.run_dir)
    stale = tmp_path / "out" / "stale"
    assert len(stamp) == 15 and stamp.startswith("2024010")
    assert dests == [str(stale / f"a_seed0-{stamp}{suffix}") for suffix in ("", "-1", "-2")]
    assert [open(os.path.join(d, "mark")).read() for d in dests] == ["0", "1", "2"]


# ---------------------------------------------------------------------------- identity.py
def test_flat_config_resolves_the_path_keys_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    flat = identity.flat_config({"DATASET": {"ROOT": str(tmp_path / "data" / "x")},
                                 "MODEL": {"PRETRAINED": "~/w.pth"}, "OUTPUT_DIR": str(tmp_path / "o")})
    assert flat == {"DATASET.ROOT": os.path.join("data", "x"), "MODEL.PRETRAINED": os.path.join("home", "w.pth"),
                    "OUTPUT_DIR": str(tmp_path / "o")}
    assert identity.flat_config({"MODEL": {"PRETRAINED": ""}, "DATASET": {"ROOT": None}}) == {
        "MODEL.PRETRAINED": "", "DATASET.ROOT": None}


@pytest.mark.parametrize("stored, planned, expected", [
    (3, 4, []),  # raised by the plan: the same trajectory goes on
    (3, 3, []),
    (4, 3, [("TRAIN.END_EPOCH", 4, 3)]),
    ("3", 4, [("TRAIN.END_EPOCH", "3", 4)]),  # not an epoch count
    (3, "4", [("TRAIN.END_EPOCH", 3, "4")]),
])
def test_config_differences_of_the_end_epoch(stored, planned, expected):
    assert identity.config_differences({"TRAIN.END_EPOCH": stored}, {"TRAIN.END_EPOCH": planned}) == expected


def test_config_differences_ignore_trajectory_free_keys_only():
    assert identity.config_differences({"EXPERIMENT_NAME": "a", "OUTPUT_DIR": "x", "SEED": 1, "TRAIN.LR": 0.1},
                                       {"EXPERIMENT_NAME": "b", "OUTPUT_DIR": "y", "SEED": 2, "TRAIN.LR": 0.1}) == [
        ("SEED", 1, 2)]
    assert identity.config_differences({"TRAIN.LR_STEP": [1]}, {"TRAIN.LR_STEP": [2]}) == [
        ("TRAIN.LR_STEP", [1], [2])]


def test_stored_config_differences_of_a_bad_config_yaml(tmp_path):
    import yaml

    path = tmp_path / "config.yaml"
    path.write_text("[1, 2]\n")
    assert identity.stored_config_differences(str(tmp_path), ADAM, ()) == [
        ("config.yaml", "a list", "the planned config")]
    path.write_text("key: [unclosed\n")
    with pytest.raises(yaml.YAMLError) as exc, open(path) as f:
        yaml.safe_load(f)
    said = " ".join(str(exc.value).split())  # one line, the first 80 characters
    assert len(said) > 80 and "\n" in str(exc.value)
    assert identity.stored_config_differences(str(tmp_path), ADAM, ()) == [
        ("config.yaml", f"unreadable ({said[:80]})", "the planned config")]
    assert identity.stored_config_differences(str(tmp_path / "none"), ADAM, ()) is None


@pytest.mark.parametrize("n, expected", [
    (1, "K0 0 -> 1"),
    (3, "K0 0 -> 1; K1 1 -> 2; K2 2 -> 3"),
    (4, "K0 0 -> 1; K1 1 -> 2; K2 2 -> 3 (+1 more)"),
    (6, "K0 0 -> 1; K1 1 -> 2; K2 2 -> 3 (+3 more)"),
])
def test_describe_differences(n, expected):
    assert identity.describe_differences([(f"K{i}", i, i + 1) for i in range(n)]) == expected


def test_setting_drops_the_seed_and_the_run_folder_only():
    got = identity.setting({"SEED": 3, "OUTPUT_DIR": "o", "EXPERIMENT_NAME": "e", "PRINT_FREQ": 5,
                            "TRAIN": {"LR": 0.1, "END_EPOCH": 3}})
    assert got == {"TRAIN.LR": 0.1, "TRAIN.END_EPOCH": 3}


C = "1a2b3c4d5e6f7a8b9c0d"
S = "ab" * 32


@pytest.mark.parametrize("cv, label, code_id", [
    (None, NOT_RECORDED, NOT_RECORDED),
    ("git 1a2b", NOT_RECORDED, NOT_RECORDED),
    ({}, NOT_RECORDED, NOT_RECORDED),
    ({"git_commit": "", "source_sha256": ""}, NOT_RECORDED, NOT_RECORDED),
    ({"git_commit": 7, "source_sha256": 8}, NOT_RECORDED, NOT_RECORDED),
    ({"git_commit": C, "git_dirty": False}, "git 1a2b3c4d5e", "git 1a2b3c4d5e"),
    ({"git_commit": C, "git_dirty": True}, "git 1a2b3c4d5e (dirty)", "git 1a2b3c4d5e (dirty)"),
    ({"git_commit": C, "source_sha256": S}, f"git 1a2b3c4d5e, source {'ab' * 6}", S),
    ({"source_sha256": S}, f"source {'ab' * 6}", S),
])
def test_code_label_and_id(cv, label, code_id):
    assert identity.code_label(cv) == label
    assert identity._code_id(cv) == code_id


V = {"git_commit": C, "source_sha256": S}
LABEL = f"git 1a2b3c4d5e, source {'ab' * 6}"


@pytest.mark.parametrize("info, expected", [
    ({"code_version": V}, [{"label": LABEL, "id": S, "from_epoch": None}]),
    ({"code_version": V, "code_versions": "x"}, [{"label": LABEL, "id": S, "from_epoch": None}]),
    # entries that are not a session's code version are skipped
    ({"code_versions": ["x", {"code_version": "y"}, {"code_version": V, "from_epoch": 0}]},
     [{"label": LABEL, "id": S, "from_epoch": 0}]),
    # an unknown start: kept, and its epochs not claimed by "not recorded"
    ({"code_versions": [{"code_version": V}]}, [{"label": LABEL, "id": S, "from_epoch": None}]),
    ({"code_versions": [{"code_version": V, "from_epoch": True}]}, [{"label": LABEL, "id": S, "from_epoch": None}]),
    ({"code_versions": [{"code_version": V, "from_epoch": 1}]},
     [{"label": NOT_RECORDED, "id": NOT_RECORDED, "from_epoch": 0}, {"label": LABEL, "id": S, "from_epoch": 1}]),
    ({"code_version": "x"}, [{"label": NOT_RECORDED, "id": NOT_RECORDED, "from_epoch": None}]),
])
def test_run_code_versions(info: Dict[str, Any], expected: List[Dict[str, Any]]):
    assert identity.run_code_versions(info) == expected
