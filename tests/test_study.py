"""tools/study.py and hrnet.study.analyse.analysis: the smoke study end to end (interrupted once, then resumed),
the report against the run folders, a failing arm, --report-only; the study file's checks."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, write_planned_configs
from hrnet.study.analyse import stats

SMOKE = os.path.join(ROOT, "experiments", "studies", "smoke.yaml")
STUDY = os.path.join(ROOT, "tools", "study.py")
ARMS = ("adam", "lookahead_adam")
SEEDS = (0, 1)


def _study(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, STUDY, *args], capture_output=True, text=True, cwd=ROOT, timeout=600, **kw)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("data") / "smoke_hands")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, data_root):
    """The smoke study, stopped by SIGINT (as a terminal's Ctrl-C) during its first run, then run again."""
    out = str(tmp_path_factory.mktemp("study") / "smoke")
    # Relative paths, as a user types them in the repository: the report must not hold the machine's.
    cmd = [sys.executable, STUDY, SMOKE, "--out", out, "DATASET.ROOT", os.path.relpath(data_root, ROOT)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    first = os.path.join(out, "runs", "adam_seed0", "checkpoint_latest.pth")
    deadline = time.time() + 300
    while not os.path.exists(first) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    interrupted_out, _ = proc.communicate(timeout=300)
    runs = os.path.join(out, "runs")
    state_after_stop = {a: json.load(open(os.path.join(runs, a, "metrics.json")))["status"]
                        for a in os.listdir(runs) if os.path.isfile(os.path.join(runs, a, "metrics.json"))}
    rerun = _study(SMOKE, "--out", out, "DATASET.ROOT", os.path.relpath(data_root, ROOT))
    return {"out": out, "rc_stop": proc.returncode, "stop_output": interrupted_out, "state_after_stop": state_after_stop,
            "rerun": rerun, "report": json.load(open(os.path.join(out, "report.json")))}


def test_interrupted_study_resumes(smoke):
    assert smoke["rc_stop"] == 130, smoke["stop_output"]
    assert "run the same command again" in smoke["stop_output"]
    # The trainer received the signal once and left a resumable state; no other run was started.
    assert smoke["state_after_stop"] == {"adam_seed0": "interrupted"}, smoke["stop_output"]
    assert smoke["rerun"].returncode == 0, smoke["rerun"].stdout + smoke["rerun"].stderr
    sessions = json.load(open(os.path.join(smoke["out"], "runs", "adam_seed0", "study_sessions.json")))
    assert [s["exit_status"] for s in sessions] == [130, 0]
    assert [s["resumed"] for s in sessions] == [False, True]
    assert "--resume" in sessions[1]["command"]
    assert "resumed from" in open(os.path.join(smoke["out"], "runs", "adam_seed0", "train.log")).read()
    # One progress line per run trained in the second invocation, each with an ETA.
    lines = [ln for ln in smoke["rerun"].stdout.splitlines() if ln.startswith("[study] ") and "final NME" in ln
             and "ETA" in ln]
    assert len(lines) == 4


def test_report_files(smoke):
    out = smoke["out"]
    for name in ("report.md", "report.json", "curves.png", "calibration.png"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    md = open(os.path.join(out, "report.md")).read()
    for section in ("## Verdict", "## Protocol", "## Paired comparisons with the reference (adam)",
                    "## Same-LR pairs: Lookahead(X) - X", "## Lookahead: slow vs fast weights", "## Real hand photos"):
        assert section in md
    # The scale table states what was changed from the user's setting, iterations included (4 x 2 epochs).
    assert "| `MODEL.IMAGE_SIZE` | [256, 256] | **[64, 64]** |" in md
    assert "| `iterations` | 19800 | **8** |" in md
    rep = smoke["report"]
    assert rep["iterations"]["user"] == 19800 and set(rep["iterations"]["per_run"].values()) == {8}
    # Floors in the protocol, the verdict and the per-arm table; censored reach counts; same-LR pair.
    assert rep["verdict"][0].startswith("No-learning floors on the validation set (32 images)")
    assert "| validation set (synthetic) | 32 | 32 |" in md and "| real: freihand | 8 | 2 |" in md
    assert "final NME / box-centre floor" in md and "**has not learned**" in md
    assert re.search(r"\| [0-2]/2 reached; median ", md)
    pair = rep["same_lr"]["pairs"]
    assert [(p["lookahead_arm"], p["base_arm"], p["lr"]) for p in pair] == [("lookahead_adam", "adam", 0.001)]
    assert pair[0]["comparison"]["verdict"] in (stats.TOO_FEW, stats.NOT_LEARNED)  # 2 seeds: no verdict
    assert rep["comparisons"]["lookahead_adam"]["final_NME"]["p_adjusted"] is not None
    # No absolute path of this machine in the report.
    strings = re.findall(r'"((?:[^"\\]|\\.)*)"', open(os.path.join(out, "report.json")).read())
    assert not [t for t in strings if t.startswith("/") or ROOT in t]
    assert not re.search(r"[`( ]/(work|tmp|home)/", md)


def test_report_numbers_equal_the_run_folders(smoke):
    from scipy import stats as sps

    rep, out = smoke["report"], smoke["out"]
    metrics = {(a, s): json.load(open(os.path.join(out, "runs", f"{a}_seed{s}", "metrics.json")))
               for a in ARMS for s in SEEDS}
    assert all(m["status"] == "finished" for m in metrics.values())
    for arm in ARMS:
        for key in ("final_NME", "best_NME", "final_valid_loss"):
            vals = np.array([metrics[arm, s][key] for s in SEEDS])
            got = rep["arms"][arm][key]
            assert got["n"] == 2
            assert got["mean"] == pytest.approx(vals.mean(), rel=1e-12)
            assert got["std"] == pytest.approx(vals.std(ddof=1), rel=1e-9)
            assert got["per_seed"] == {str(s): pytest.approx(metrics[arm, s][key]) for s in SEEDS}
        pck = np.array([metrics[arm, s]["final"]["PCK@0.2"] for s in SEEDS])
        assert rep["arms"][arm]["PCK"]["mean"] == pytest.approx(pck.mean())
        run = next(r for r in rep["runs"] if r["name"] == f"{arm}_seed0")
        assert run["curves"]["NME"] == pytest.approx([h["NME"] for h in metrics[arm, 0]["history"]])
    comp = rep["comparisons"]["lookahead_adam"]["final_NME"]
    diffs = [metrics["lookahead_adam", s]["final_NME"] - metrics["adam", s]["final_NME"] for s in SEEDS]
    ci = sps.ttest_rel([metrics["lookahead_adam", s]["final_NME"] for s in SEEDS],
                       [metrics["adam", s]["final_NME"] for s in SEEDS]).confidence_interval(0.95)
    assert comp["diffs"] == pytest.approx(diffs)
    assert (comp["ci_low"], comp["ci_high"]) == (pytest.approx(ci.low), pytest.approx(ci.high))
    # Real photos: every finished run's final model (Lookahead: its slow weights, as validated), per set
    # and pooled, cached in its folder.
    rh = rep["real_hands"]
    assert rh["available"] and set(rh["sets"]) == {"freihand", "onehand10k", "all"}
    assert rh["set_sizes"]["all"] == {"num_images": 12, "num_hands": 6}
    assert rh["evaluated"] == {"checkpoint": "checkpoint_latest.pth",
                               "weights": {"model": ["adam"], "slow": ["lookahead_adam"]}}
    for arm in ARMS:
        cached = {s: json.load(open(os.path.join(out, "runs", f"{arm}_seed{s}", "real_hands.json")))["results"]
                  for s in SEEDS}
        assert cached[0]["all"]["num_images"] == 12
        assert cached[0]["evaluated"]["checkpoint"] == "checkpoint_latest.pth"
        assert cached[0]["evaluated"]["weights"] == ("slow" if arm.startswith("lookahead") else "model")
        assert rh["per_arm"][arm]["all"]["NME"]["mean"] == pytest.approx(np.mean([cached[s]["all"]["NME"]
                                                                                  for s in SEEDS]))


def test_floors_equal_the_metric_on_the_annotation_file(smoke, data_root):
    from hrnet.evaluation.metrics import compute_metrics

    test = json.load(open(os.path.join(data_root, "test.json")))
    bbox = np.array([a["bbox"] for a in test["annotations"]], dtype=float)
    joints = np.array([a["keypoints"] for a in test["annotations"]], dtype=float).reshape(len(bbox), 21, 3)
    centre = bbox[:, :2] + bbox[:, 2:] / 2 - 0.5  # edge-convention box -> pixel-centre coordinates
    nme = compute_metrics(np.repeat(centre[:, None], 21, axis=1), joints, bbox)["NME"]
    floors = smoke["report"]["floors"]
    assert floors["valid"]["box_centre"]["NME"] == pytest.approx(nme)
    arm = smoke["report"]["arms"]["adam"]
    assert arm["final_NME_over_floor"] == pytest.approx(arm["final_NME"]["mean"] / nme)
    assert arm["learned"] == (arm["final_NME"]["mean"] <= 0.8 * nme)


def test_report_only_needs_no_training(smoke, tmp_path, data_root):
    # Only the small records of each run (no checkpoint, log or event file), as a repository holds them.
    out = str(tmp_path / "records")
    for a in ARMS:
        for s in SEEDS:
            os.makedirs(os.path.join(out, "runs", f"{a}_seed{s}"))
            for f in ("metrics.json", "config.yaml", "real_hands.json", "study_sessions.json"):
                shutil.copy(os.path.join(smoke["out"], "runs", f"{a}_seed{s}", f),
                            os.path.join(out, "runs", f"{a}_seed{s}", f))
    # KEY VALUE overrides may stand before the study file too.
    res = _study("DATASET.ROOT", os.path.relpath(data_root, ROOT), SMOKE, "--out", out, "--report-only")
    assert res.returncode == 0, res.stdout + res.stderr
    rep = json.load(open(os.path.join(out, "report.json")))
    assert not [f for a in ARMS for s in SEEDS for f in os.listdir(os.path.join(out, "runs", f"{a}_seed{s}"))
                if f.endswith(".pth")]  # nothing trained
    # The same numbers, from those records alone.
    for key in ("arms", "comparisons", "same_lr", "trend", "calibration", "ranking", "iterations"):
        assert rep[key] == smoke["report"][key], key
    assert rep["real_hands"]["per_arm"] == smoke["report"]["real_hands"]["per_arm"]  # from the caches
    assert rep["floors"]["valid"] == smoke["report"]["floors"]["valid"]
    # An empty folder: every run "not run", no run folder created, exit 1.
    empty = str(tmp_path / "empty")
    res = _study(SMOKE, "--out", empty, "--report-only", "DATASET.ROOT", data_root)
    assert res.returncode == 1
    rep = json.load(open(os.path.join(empty, "report.json")))
    assert [r["status"] for r in rep["runs"]] == ["not run"] * 4
    assert sorted(os.listdir(empty)) == ["floors.json", "report.json", "report.md"]


def test_failed_arm_is_reported_not_fatal(smoke, tmp_path, data_root):
    out = str(tmp_path / "out")
    os.makedirs(out)
    for arm in ARMS:  # finished runs: skipped
        shutil.copytree(os.path.join(smoke["out"], "runs", f"{arm}_seed0"), os.path.join(out, "runs", f"{arm}_seed0"))
    study = tmp_path / "broken.yaml"
    study.write_text(open(SMOKE).read().replace("config: ../", f"config: {ROOT}/experiments/")
                     .replace("seeds: [0, 1]", "seeds: [0]")
                     + "  - name: broken\n    config: " + f"{ROOT}/experiments/hand_adam.yaml\n"
                     + "    overrides: {TRAIN.OPTIMIZER: no_such_optimizer}\n")
    res = _study(str(study), "--out", out, "--no-real-hands", "DATASET.ROOT", data_root)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "broken seed 0: failed (exit status" in res.stdout
    rep = json.load(open(os.path.join(out, "report.json")))
    status = {r["name"]: r["status"] for r in rep["runs"]}
    assert status == {"adam_seed0": "finished", "lookahead_adam_seed0": "finished", "broken_seed0": "failed"}
    broken = next(r for r in rep["runs"] if r["name"] == "broken_seed0")
    assert "no_such_optimizer" in broken["reason"]
    assert rep["arms"]["lookahead_adam"]["final_NME"]["n"] == 1
    assert rep["arms"]["broken"]["n_finished"] == 0
    assert any("broken_seed0 (failed)" in s for s in rep["verdict"])
    assert "| broken_seed0 | failed |" in open(os.path.join(out, "report.md")).read()


def test_session_records_name_the_code_threads_and_outcome(smoke):
    from hrnet.runtime.provenance import code_version

    sessions = json.load(open(os.path.join(smoke["out"], "runs", "adam_seed0", "study_sessions.json")))
    here = code_version()
    assert [s["code_version"] for s in sessions] == [here, here]
    assert [s["outcome"] for s in sessions] == ["interrupted", "finished"]
    assert {s["threads"] for s in sessions} == {1}  # the smoke study's DEVICE is cpu: threads 1
    # The interpreter by its name, paths inside the project relative to it (the study folder is outside).
    command = sessions[1]["command"]
    assert command.startswith("python tools/train.py --cfg experiments/hand_adam.yaml --resume "), command
    assert f"OUTPUT_DIR {smoke['out']}/runs " in command  # outside the project: stays absolute


# ---------------------------------------------------------------------------- a dead driver leaves no trainer
SMALL = ("DATASET.SYNTHETIC.NUM_TRAIN", "32", "DATASET.SYNTHETIC.NUM_TEST", "16", "TRAIN.END_EPOCH", "4",
         "TRAIN.LR_STEP", "[3]")


def _trainers(out: str) -> list:
    """PIDs of the tools/train.py processes training into the study folder ``out``."""
    train, found = os.path.join(ROOT, "tools", "train.py"), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            args = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if train in args and any(a.startswith(out) for a in args):
            found.append(int(pid))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the trainers through /proc")
@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGKILL])
def test_a_study_driver_that_dies_leaves_no_trainer(tmp_path, signum):
    """A closed terminal (SIGHUP) or a SIGKILL of the study: its trainer stops too (SIGHUP: the driver
    forwards a stop; SIGKILL: the kernel's parent-death signal), instead of training on unwatched."""
    out = str(tmp_path / "smoke")
    cmd = [sys.executable, STUDY, SMOKE, "--out", out, "--no-real-hands", "DATASET.ROOT",
           str(tmp_path / "hands"), *SMALL]
    driver = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)  # the signal reaches the driver alone, as from outside
    metrics = os.path.join(out, "runs", "adam_seed0", "metrics.json")
    deadline = time.time() + 240
    while not (os.path.exists(metrics) and _trainers(out)) and driver.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    trainers = _trainers(out)
    assert trainers and driver.poll() is None, driver.communicate()[0]
    os.kill(driver.pid, signum)
    output, _ = driver.communicate(timeout=120)
    deadline = time.time() + 60
    while _trainers(out) and time.time() < deadline:
        time.sleep(0.1)
    assert not _trainers(out), output
    info = json.load(open(metrics))
    assert info["status"] == "interrupted" and info["epochs_completed"] < 4  # stopped, at a checkpoint
    if signum == signal.SIGHUP:
        assert "stopped by SIGHUP" in output
        sessions = json.load(open(os.path.join(out, "runs", "adam_seed0", "study_sessions.json")))
        assert [s["outcome"] for s in sessions] == ["interrupted"]


def test_report_md_is_written_atomically(tmp_path, monkeypatch):
    from hrnet.runtime import checkpoint
    from hrnet.study.render import report

    (tmp_path / "report.md").write_text("the previous report\n")
    monkeypatch.setattr(report, "FIGURES", [])
    monkeypatch.setattr(report, "render_markdown", lambda rep, figures: "the new report\n")
    monkeypatch.setattr(report, "write_json", lambda obj, path: None)

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        report.write_report({}, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["report.md"]
    assert (tmp_path / "report.md").read_text() == "the previous report\n"  # never half written


# ---------------------------------------------------------------------------- the study file (no training)
def _write(tmp_path, text: str) -> str:
    p = tmp_path / "s.yaml"
    p.write_text(text.replace("CFG", os.path.join(ROOT, "experiments", "hand_adam.yaml")))
    return str(p)


def test_plan_is_seed_major_with_overrides_in_order(tmp_path):
    from hrnet.study.plan.spec import load_study, plan_runs

    study = load_study(_write(tmp_path, "reference: a\nseeds: 2\noverrides: {TRAIN.LR: 0.01, MODEL.IMAGE_SIZE: [64, 64]}\n"
                                        "arms:\n  - {name: a, config: CFG}\n  - {name: b, config: CFG, seeds: [1],"
                                        " overrides: {TRAIN.LR: 0.02}}\n"), ["TRAIN.END_EPOCH", "3"])
    runs = plan_runs(study, str(tmp_path / "out"))
    assert [r.name for r in runs] == ["a_seed0", "a_seed1", "b_seed1"]
    opts = list(runs[2].opts)
    assert opts[:4] == ["TRAIN.LR", "0.01", "MODEL.IMAGE_SIZE", "[64, 64]"]
    assert opts.index("0.02") > opts.index("0.01") and opts.index("TRAIN.END_EPOCH") > opts.index("0.02")
    assert runs[2].end_epoch == 3 and opts[-6:-4] == ["SEED", "1"]


@pytest.mark.parametrize("text, words", [
    ("arms:\n  - {name: a, config: CFG}\nreference: z\n", ["reference 'z'"]),
    ("arms:\n  - {name: a, config: nowhere.yaml}\n", ["arm a", "config file not found"]),
    ("arms:\n  - {name: a, config: CFG, overrides: {TRAIN.NO_SUCH: 1}}\n", ["arm a", "TRAIN.NO_SUCH"]),
    ("arms:\n  - {name: a_seed1, config: CFG}\n", ["arms[0]", "_seed"]),
    ("arms:\n  - {name: a, config: CFG}\n  - {name: a, config: CFG}\n", ["arm a", "twice"]),
    ("seeds: [1, 1]\narms:\n  - {name: a, config: CFG}\n", ["seeds repeat"]),
    ("arm:\n  - {name: a, config: CFG}\n", ["unknown key(s) arm"]),
])
def test_bad_study_files_name_the_key(tmp_path, text, words):
    from hrnet.study.plan.spec import StudyError, load_study

    with pytest.raises(StudyError) as exc:
        load_study(_write(tmp_path, text))
    assert all(w in str(exc.value) for w in words), str(exc.value)
    assert "s.yaml" in str(exc.value)


def test_threads_belong_to_the_study(tmp_path, monkeypatch):
    """``threads`` (each run's OMP_NUM_THREADS) defaults to 1 for a CPU study and applies whatever the
    executor and --jobs; without it, --jobs splits the CPUs this process may use."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import study as study_tool
    from hrnet.study.plan.spec import StudyError, load_study

    cpu = load_study(_write(tmp_path, "overrides: {DEVICE: cpu}\narms:\n  - {name: a, config: CFG}\n"))
    auto = load_study(_write(tmp_path, "arms:\n  - {name: a, config: CFG}\n"))
    four = load_study(_write(tmp_path, "threads: 4\narms:\n  - {name: a, config: CFG}\n"))
    assert (cpu.threads, auto.threads, four.threads) == (1, None, 4)
    assert load_study(SMOKE).threads == 1
    with pytest.raises(StudyError, match="threads must be an integer >= 1"):
        load_study(_write(tmp_path, "threads: 0\narms:\n  - {name: a, config: CFG}\n"))

    def executor(study, *options):
        parser_args = study_tool.argparse.Namespace(
            launcher=sys.executable, executor="local", ray_address=None, gpus_per_run=None, cpus_per_run=None,
            devices=None, jobs=None)
        for k, v in zip(options[::2], options[1::2]):
            setattr(parser_args, k, v)
        return study_tool._executor(parser_args, str(tmp_path / "out"), study)

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert [executor(cpu).threads, executor(cpu, "jobs", 2).threads, executor(four, "jobs", 3).threads] == [1, 1, 4]
    assert [executor(auto).threads, executor(auto, "jobs", 2).threads, executor(auto, "jobs", 4).threads] == \
        [None, 3, 1]  # the CPUs this process may use (6), not the machine's (64)
    ray = executor(cpu, "executor", "ray")
    assert (ray.cpus, ray.threads) == (1.0, 1)
    ray = executor(four, "executor", "ray", "cpus_per_run", 2.0)
    assert (ray.cpus, ray.threads) == (2.0, 4)  # the study's threads, whatever the share of the node


def test_cli_bad_study_is_one_line(tmp_path):
    res = _study(_write(tmp_path, "arms:\n  - {name: a, config: CFG}\nreference: z\n"))
    assert res.returncode == 2
    assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1


def test_report_from_hand_made_run_folders(tmp_path):
    """Sensitivity, k/alpha grid and Lookahead slow-vs-fast statistics on run folders written by hand."""
    from hrnet.study.analyse.analysis import analyse, collect
    from hrnet.study.plan.spec import load_study
    from hrnet.study.render.report import write_report

    cfg = os.path.join(ROOT, "experiments")
    study_file = tmp_path / "hand.yaml"
    study_file.write_text(
        "reference: adam\nseeds: [0, 1, 2]\nreal_hands: false\nnme_levels: [0.3]\narms:\n"
        f"  - {{name: adam, config: {cfg}/hand_adam.yaml}}\n"
        f"  - {{name: adam_lr1e-3, config: {cfg}/hand_adam.yaml, overrides: {{TRAIN.LR: 0.001}}}}\n"
        f"  - {{name: la, config: {cfg}/hand_lookahead_adam.yaml}}\n"
        f"  - {{name: la_k10, config: {cfg}/hand_lookahead_adam.yaml, overrides: {{TRAIN.LOOKAHEAD.K: 10}}}}\n")
    study = load_study(str(study_file))
    out = tmp_path / "out"
    final = {"adam": 0.20, "adam_lr1e-3": 0.25, "la": 0.22, "la_k10": 0.21}
    for arm, base in final.items():
        la = arm.startswith("la")
        for seed in (0, 1, 2):
            nme = [0.7, 0.4, 0.3 - 0.01 * seed, base + 0.001 * seed]
            hist = [{"epoch": e, "NME": v, "valid_loss": v / 100, "wall_time": 10.0 * e + 5} for e, v in enumerate(nme)]
            for h in hist[1:]:
                h["train_loss"] = h["valid_loss"] * 1.1
            if la:  # the fast weights 0.01 worse at epochs 1 and 2, equal at the last (a sync)
                for h in hist:
                    h["NME_slow"], h["NME_fast"] = h["NME"], h["NME"] + (0.01 if h["epoch"] in (1, 2) else 0.0)
            hp = {"optimizer": "lookahead" if la else "adam", "inner": "adam", "seed": seed,
                  "lr": 0.001 if arm == "adam_lr1e-3" else 0.0001}
            if la:
                hp.update(k=10 if arm == "la_k10" else 5, alpha=0.5)
            d = out / "runs" / f"{arm}_seed{seed}"
            d.mkdir(parents=True)
            (d / "metrics.json").write_text(json.dumps({
                "status": "finished", "epochs_completed": 30, "end_epoch": 30, "final_NME": nme[-1],
                "best_NME": min(nme), "final_valid_loss": nme[-1] / 100, "wall_time_s": 35.0,
                "final": {"PCK@0.2": 0.5, "AUC": 0.4, "EPE": 3.0}, "hparams": hp, "history": hist}))
    write_planned_configs(study, out)  # each with its config.yaml, as the trainer leaves it
    rep = analyse(study, collect(study, str(out)), str(out))
    assert rep["arms"]["la"]["final_NME"]["mean"] == pytest.approx(0.221)
    c = rep["comparisons"]["adam_lr1e-3"]["final_NME"]
    assert c["diffs"] == pytest.approx([0.05] * 3) and c["verdict"] == "worse"
    assert rep["arms"]["adam"]["epochs_to_reach"]["0.3"] == {"n": 3, "n_reached": 3, "median": 2.0,
                                                              "per_seed": {"0": 2, "1": 2, "2": 2}}
    lines = rep["sensitivity"]["lr_lines"]
    assert [p["lr"] for p in lines["adam"]] == [0.0001, 0.001]
    assert rep["sensitivity"]["lr_spread"]["adam"]["range"] == pytest.approx(0.05)
    grid = rep["sensitivity"]["k_alpha"]
    assert grid["k"] == [5, 10] and grid["alpha"] == [0.5] and grid["range"] == pytest.approx(0.01)
    la = rep["lookahead"]["la"]
    assert la["slow_vs_fast"]["diffs"] == pytest.approx([0.0] * 3)  # the final validation is at a sync
    assert la["epoch_mean_slow_vs_fast"]["diffs"] == pytest.approx([-0.02 / 3] * 3)
    assert la["epoch_mean_slow_vs_fast"]["verdict"] == "better"
    assert la["epochs_where_they_differ"] == {"0": 2, "1": 2, "2": 2}
    paths = write_report(rep, str(out))
    assert {os.path.basename(p) for p in paths} == {"report.json", "report.md", "curves.png", "sensitivity.png",
                                                    "lookahead.png", "calibration.png"}
    md = open(out / "report.md").read()
    assert "Lookahead k x alpha at LR 0.0001" in md and "Not evaluated: no real_hands in the study file" in md
