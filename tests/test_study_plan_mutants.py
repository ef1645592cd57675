"""The study file and its plan (hrnet/study/plan/spec.py) and the study's scale against the user's
setting (hrnet/study/plan/scale.py), case by case: the tests of the ``study_plan`` mutation section.

Every refusal is checked word for word (it names the file and the key or arm); no training.
"""
from __future__ import annotations

import os
from typing import List

import pytest

from conftest import ROOT, make_cfg

from hrnet.study.plan import scale, spec
from hrnet.study.plan.spec import StudyError, load_study, plan_runs

CFG = os.path.join(ROOT, "experiments", "hand_adam.yaml")
ARM = "arms:\n  - {name: a, config: CFG}\n"


def _write(tmp_path, text: str, name: str = "s.yaml") -> str:
    p = tmp_path / name
    p.write_text(text.replace("CFG", CFG))
    return str(p)


KNOWN = "name, description, out, reference, seeds, overrides, nme_levels, real_hands, arms, threads"
ARM_KEYS = "name, config, overrides, seeds, priority, seed_priority"


@pytest.mark.parametrize("text, message", [
    ("[1]\n", f"{{p}}: a study file is a mapping with the keys {KNOWN}"),
    ("arms: [\n", "{p}: not valid yaml (while parsing a flow node expected the node content, but found "
                  "'<stream end>' in \"{p}\", line 2, column 1)"),
    ("zz: 1\nbb: 2\n" + ARM, f"{{p}}: unknown key(s) bb, zz (known: {KNOWN})"),
    ("overrides: [1]\n" + ARM, "{p}: overrides: overrides must be a mapping KEY: VALUE, got list"),
    ("overrides: {TRAIN.LR: null}\n" + ARM,
     "{p}: overrides: override TRAIN.LR must be a number, string, boolean or list, got None"),
    ("overrides: {TRAIN.LR: {a: 1}}\n" + ARM,
     "{p}: overrides: override TRAIN.LR must be a number, string, boolean or list, got {'a': 1}"),
    ("seeds: true\n" + ARM, "{p}: seeds: seeds must be a list of integers or a count, got True"),
    ("seeds: null\n" + ARM, "{p}: seeds: seeds must be a list of integers or a count, got None"),
    ("seeds: 0\n" + ARM, "{p}: seeds: seeds must be >= 1, got 0"),
    ("seeds: []\n" + ARM, "{p}: seeds: seeds must be a non-empty list of integers >= 0 or a count, got []"),
    ("seeds: [0, -1]\n" + ARM, "{p}: seeds: seeds must be a non-empty list of integers >= 0 or a count, got [0, -1]"),
    ("seeds: [0, true]\n" + ARM,
     "{p}: seeds: seeds must be a non-empty list of integers >= 0 or a count, got [0, True]"),
    ("seeds: '3'\n" + ARM, "{p}: seeds: seeds must be a non-empty list of integers >= 0 or a count, got '3'"),
    ("seeds: [2, 0, 2]\n" + ARM, "{p}: seeds: seeds repeat: [2, 0, 2]"),
    ("arms: []\n", "{p}: arms must be a non-empty list"),
    ("arms: {a: 1}\n", "{p}: arms must be a non-empty list"),
    ("arms:\n  - a\n", f"{{p}}: arms[0] must be a mapping with the keys {ARM_KEYS}"),
    ("arms:\n  - {name: a, config: CFG, zz: 1}\n", f"{{p}}: arms[0]: unknown key(s) zz (known: {ARM_KEYS})"),
    ("arms:\n  - {name: -a, config: CFG}\n",
     "{p}: arms[0]: name must be letters, digits, _ . + - (not ending in _seed<N>), got '-a'"),
    ("arms:\n  - {name: a b, config: CFG}\n",
     "{p}: arms[0]: name must be letters, digits, _ . + - (not ending in _seed<N>), got 'a b'"),
    ("arms:\n  - {name: 3, config: CFG}\n",
     "{p}: arms[0]: name must be letters, digits, _ . + - (not ending in _seed<N>), got 3"),
    ("arms:\n  - {name: a_seed12, config: CFG}\n",
     "{p}: arms[0]: name must be letters, digits, _ . + - (not ending in _seed<N>), got 'a_seed12'"),
    ("arms:\n  - {name: a, config: CFG}\n  - {name: a, config: CFG}\n", "{p}: arm a: the name is used twice"),
    ("arms:\n  - {name: a}\n", "{p}: arm a: config (an experiment yaml) is required"),
    ("arms:\n  - {name: a, config: 3}\n", "{p}: arm a: config (an experiment yaml) is required"),
    ("arms:\n  - {name: a, config: no.yaml}\n", "{p}: arm a: config file not found: {d}/no.yaml"),
    ("arms:\n  - {name: a, config: CFG, priority: x}\n",
     "{p}: arm a: priority must be an integer (lower runs first), got 'x'"),
    ("arms:\n  - {name: a, config: CFG, priority: true}\n",
     "{p}: arm a: priority must be an integer (lower runs first), got True"),
    ("arms:\n  - {name: a, config: CFG, seeds: 0}\n", "{p}: arm a: seeds: seeds must be >= 1, got 0"),
    ("arms:\n  - {name: a, config: CFG, overrides: 3}\n",
     "{p}: arm a: overrides must be a mapping KEY: VALUE, got int"),
    ("arms:\n  - {name: a, config: CFG, seed_priority: {5: 1}}\n",
     "{p}: arm a: seed_priority must map seeds of the arm ([0]) to integer priorities, got {5: 1}"),
    ("arms:\n  - {name: a, config: CFG, seed_priority: {0: x}}\n",
     "{p}: arm a: seed_priority must map seeds of the arm ([0]) to integer priorities, got {0: 'x'}"),
    ("arms:\n  - {name: a, config: CFG, seed_priority: {0: true}}\n",
     "{p}: arm a: seed_priority must map seeds of the arm ([0]) to integer priorities, got {0: True}"),
    ("arms:\n  - {name: a, config: CFG, seed_priority: [0]}\n",
     "{p}: arm a: seed_priority must map seeds of the arm ([0]) to integer priorities, got [0]"),
    ("reference: z\narms:\n  - {name: a, config: CFG}\n  - {name: b, config: CFG}\n",
     "{p}: reference 'z' is not an arm (a, b)"),
    ("nme_levels: [0.3, 0]\n" + ARM, "{p}: nme_levels must be a list of positive numbers, got [0.3, 0]"),
    ("nme_levels: [true]\n" + ARM, "{p}: nme_levels must be a list of positive numbers, got [True]"),
    ("nme_levels: 0.3\n" + ARM, "{p}: nme_levels must be a list of positive numbers, got 0.3"),
    ("name: a b\n" + ARM, "{p}: name must be letters, digits, _ . + -, got 'a b'"),
    ("name: 3\n" + ARM, "{p}: name must be letters, digits, _ . + -, got 3"),
    ("description: [1]\n" + ARM, "{p}: description must be text"),
    ("real_hands: 3\n" + ARM, "{p}: real_hands must be a folder or false, got 3"),
    ("real_hands: true\n" + ARM, "{p}: real_hands must be a folder or false, got True"),
    ("out: ' '\n" + ARM, "{p}: out must be a folder (relative to the study file), got ' '"),
    ("out: 3\n" + ARM, "{p}: out must be a folder (relative to the study file), got 3"),
    ("threads: 0\n" + ARM, "{p}: threads must be an integer >= 1 (each run's OMP_NUM_THREADS), got 0"),
    ("threads: true\n" + ARM, "{p}: threads must be an integer >= 1 (each run's OMP_NUM_THREADS), got True"),
    ("threads: '2'\n" + ARM, "{p}: threads must be an integer >= 1 (each run's OMP_NUM_THREADS), got '2'"),
])
def test_a_bad_study_file_is_refused_word_for_word(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(StudyError) as exc:
        load_study(path)
    assert str(exc.value) == message.replace("{p}", path).replace("{d}", str(tmp_path))


def test_a_missing_study_file_and_a_bad_override(tmp_path):
    with pytest.raises(StudyError) as exc:
        load_study(str(tmp_path / "none.yaml"))
    assert str(exc.value) == f"study file not found: {tmp_path / 'none.yaml'}"
    path = _write(tmp_path, ARM)
    with pytest.raises(StudyError) as exc:
        load_study(path, ["TRAIN.LR"])
    assert str(exc.value) == "command-line overrides must be KEY VALUE pairs, got ['TRAIN.LR']"
    with pytest.raises(StudyError) as exc:
        load_study(path, ["TRAIN.NO_SUCH", "1"])
    assert str(exc.value).startswith(f"{path}: arm a: ") and "TRAIN.NO_SUCH" in str(exc.value)


def test_a_study_file_read_back(tmp_path):
    (tmp_path / "sub").mkdir()
    path = _write(tmp_path / "sub", "name: my.study\ndescription: '  two words \n'\nseeds: 2\nnme_levels: [1, 0.2]\n"
                                    "overrides: {TRAIN.LR: 0.01, MODEL.IMAGE_SIZE: [64, 64], TF32: true}\n"
                                    "real_hands: ../photos\nout: ../o\nthreads: 2\n"
                                    "arms:\n  - {name: a, config: CFG}\n  - {name: b.1, config: ../sub/../sub/CFG_"
                                    ", seeds: [3, 1], priority: -2, seed_priority: {3: 5},"
                                    " overrides: {TRAIN.WD: 0.1, TRAIN.LR_STEP: [1, 2]}}\n"
                                    .replace("../sub/../sub/CFG_", os.path.relpath(CFG, tmp_path / "sub")))
    study = load_study(path, ["TRAIN.END_EPOCH", 3])
    assert study.path == path and study.name == "my.study" and study.description == "two words"
    assert study.reference == "a" and study.nme_levels == (1.0, 0.2) and isinstance(study.nme_levels[0], float)
    assert study.overrides == ("TRAIN.LR", "0.01", "MODEL.IMAGE_SIZE", "[64, 64]", "TF32", "True")
    assert study.cli_overrides == ("TRAIN.END_EPOCH", "3")
    assert study.real_hands == str(tmp_path / "photos") and study.out == str(tmp_path / "o") and study.threads == 2
    a, b = study.arms
    assert (a.name, a.config, a.overrides, a.seeds, a.priority, a.seed_priority) == ("a", CFG, (), (0, 1), 0, ())
    assert (b.name, b.config, b.seeds, b.priority, b.seed_priority) == ("b.1", CFG, (3, 1), -2, ((3, 5),))
    assert b.overrides == ("TRAIN.WD", "0.1", "TRAIN.LR_STEP", "[1, 2]")
    assert study.arm("b.1") is b and (b.run_priority(3), b.run_priority(1)) == (5, -2)


def test_study_file_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, ARM, name="plain.yaml")
    study = load_study(path)
    assert (study.name, study.description, study.reference, study.nme_levels, study.overrides) == (
        "plain", "", "a", (), ())
    assert study.arms[0].seeds == (0,) and study.real_hands is None and study.out is None
    assert study.threads is None  # hand_adam.yaml: DEVICE auto
    assert spec.output_dir(study) == os.path.join("output", "studies", "plain")
    assert spec.output_dir(study, "x") == "x"
    no_photos = load_study(_write(tmp_path, "real_hands: false\n" + ARM))
    assert no_photos.real_hands is None
    # --real-hands (against the working directory) replaces the file's; "" means none
    photos = load_study(_write(tmp_path, "real_hands: p\n" + ARM), real_hands="q")
    assert photos.real_hands == str(tmp_path / "q")
    assert load_study(_write(tmp_path, "real_hands: p\n" + ARM), real_hands="").real_hands is None
    assert load_study(_write(tmp_path, "real_hands: p\n" + ARM)).real_hands == str(tmp_path / "p")
    cpu = load_study(_write(tmp_path, "overrides: {DEVICE: cpu}\narms:\n  - {name: a, config: CFG}\n"
                                      "  - {name: b, config: CFG, overrides: {DEVICE: auto}}\n"))
    assert cpu.threads is None  # one arm may use a GPU
    assert load_study(_write(tmp_path, ARM), ["DEVICE", "cpu"]).threads == 1


def test_an_arm_is_named_after_the_file_even_in_a_folder_with_a_colon(tmp_path):
    (tmp_path / "x: y").mkdir()
    path = _write(tmp_path / "x: y", "arms:\n  - {name: a, config: CFG, priority: x}\n")
    with pytest.raises(StudyError) as exc:
        load_study(path)
    assert str(exc.value) == f"{path}: arm a: priority must be an integer (lower runs first), got 'x'"


def test_the_plan_reads_each_arms_own_config(tmp_path):
    """A run's end epoch is its arm's (here 7, not the defaults' 30)."""
    (tmp_path / "short.yaml").write_text("TRAIN:\n  END_EPOCH: 7\n  LR_STEP: [5]\n")
    runs = plan_runs(load_study(_write(tmp_path, "arms:\n  - {name: s, config: short.yaml}\n")), str(tmp_path))
    assert [(r.name, r.config, r.end_epoch) for r in runs] == [("s_seed0", str(tmp_path / "short.yaml"), 7)]


def test_an_arms_own_yaml_is_checked_and_sets_the_threads(tmp_path):
    """A bad key in the arm's yaml names the arm; a yaml's DEVICE cpu makes a CPU study (threads 1)."""
    (tmp_path / "bad.yaml").write_text("TRAIN:\n  NO_SUCH: 1\n")
    path = _write(tmp_path, "threads: 1\narms:\n  - {name: b, config: bad.yaml}\n")
    with pytest.raises(StudyError) as exc:
        load_study(path)
    assert str(exc.value).startswith(f"{path}: arm b: ") and "TRAIN.NO_SUCH" in str(exc.value)
    (tmp_path / "cpu.yaml").write_text("DEVICE: cpu\nTRAIN:\n  END_EPOCH: 7\n  LR_STEP: [5]\n")
    study = load_study(_write(tmp_path, "arms:\n  - {name: c, config: cpu.yaml, seeds: 2, "
                                        "seed_priority: {0: 3, 1: 4}}\n"))
    assert study.threads == 1 and study.arms[0].seed_priority == ((0, 3), (1, 4))
    assert scale.arm_config(study, study.arms[0]).TRAIN.END_EPOCH == 7
    assert load_study(_write(tmp_path, "threads: 1\n" + ARM)).threads == 1


def test_plan_order_by_priority_then_seed_then_arm(tmp_path):
    path = _write(tmp_path, "seeds: [0, 1, 2]\narms:\n  - {name: a, config: CFG, seed_priority: {2: -1}}\n"
                            "  - {name: b, config: CFG, priority: 1}\n  - {name: c, config: CFG}\n")
    runs = plan_runs(load_study(path, ["TRAIN.END_EPOCH", "4"]), "o")
    assert [r.name for r in runs] == ["a_seed2", "a_seed0", "c_seed0", "a_seed1", "c_seed1", "c_seed2",
                                      "b_seed0", "b_seed1", "b_seed2"]
    first = runs[0]
    runs_dir = os.path.join(os.path.abspath("o"), "runs")
    assert (first.arm, first.seed, first.config, first.run_dir, first.end_epoch) == (
        "a", 2, CFG, os.path.join(runs_dir, "a_seed2"), 4)
    assert first.opts == ("TRAIN.END_EPOCH", "4", "SEED", "2", "OUTPUT_DIR", runs_dir, "EXPERIMENT_NAME", "a_seed2")


# ---------------------------------------------------------------------------- scale.py
@pytest.mark.parametrize("opts, world, expected", [
    ([], 1, 30 * 660),  # the user's setting
    (["DATASET.SYNTHETIC.NUM_TRAIN", "100", "TRAIN.BATCH_SIZE_PER_GPU", "16", "TRAIN.END_EPOCH", "3"], 1, 3 * 6),
    (["DATASET.SYNTHETIC.NUM_TRAIN", "100", "TRAIN.BATCH_SIZE_PER_GPU", "16", "TRAIN.END_EPOCH", "3"], 2, 3 * 3),
    (["DATASET.SYNTHETIC.NUM_TRAIN", "100", "TRAIN.BATCH_SIZE_PER_GPU", "16", "TRAIN.END_EPOCH", "3"], 0, 3 * 6),
    (["DATASET.SYNTHETIC.NUM_TRAIN", "100", "DATASET.MAX_TRAIN_SAMPLES", "40", "TRAIN.BATCH_SIZE_PER_GPU", "16",
      "TRAIN.END_EPOCH", "3"], 1, 3 * 2),
    (["DATASET.SYNTHETIC.NUM_TRAIN", "30", "DATASET.MAX_TRAIN_SAMPLES", "40", "TRAIN.BATCH_SIZE_PER_GPU", "16",
      "TRAIN.END_EPOCH", "3"], 1, 3 * 1),
    (["DATASET.SYNTHETIC.NUM_TRAIN", "100", "DATASET.MAX_TRAIN_SAMPLES", "1", "TRAIN.BATCH_SIZE_PER_GPU", "1",
      "TRAIN.END_EPOCH", "3"], 1, 3 * 1),
    (["DATASET.FORMAT", "coco", "TRAIN.BATCH_SIZE_PER_GPU", "16"], 1, None),
    (["DATASET.FORMAT", "coco", "DATASET.MAX_TRAIN_SAMPLES", "1", "TRAIN.BATCH_SIZE_PER_GPU", "1",
      "TRAIN.END_EPOCH", "2"], 1, 2 * 1),
    (["DATASET.FORMAT", "coco", "DATASET.MAX_TRAIN_SAMPLES", "64", "TRAIN.BATCH_SIZE_PER_GPU", "16",
      "TRAIN.END_EPOCH", "2"], 1, 2 * 4),
])
def test_training_iterations(opts: List[str], world: int, expected):
    got = scale.training_iterations(make_cfg(None, opts), world)
    assert got == expected and type(got) is type(expected)  # a count: never 9.0


def test_user_iterations():
    assert scale.user_iterations() == 19800


def test_scale_rows_against_the_user_setting(tmp_path):
    path = _write(tmp_path, "overrides: {TRAIN.END_EPOCH: 3, DATASET.SYNTHETIC.NUM_TRAIN: 64}\n"
                            "arms:\n  - {name: a, config: CFG}\n  - {name: b, config: CFG, overrides: "
                            "{TRAIN.BATCH_SIZE_PER_GPU: 16}}\n  - {name: c, config: CFG, overrides: "
                            "{TRAIN.BATCH_SIZE_PER_GPU: 16}}\n")
    rows = {r["key"]: r for r in scale.scale_rows(load_study(path, ["MODEL.SIGMA", "3.0"]))}
    assert list(rows) == list(spec.SCALE_KEYS) + ["iterations"]
    assert rows["TRAIN.END_EPOCH"] == {"key": "TRAIN.END_EPOCH", "user": 30, "study": 3, "scaled": True}
    assert rows["MODEL.NAME"] == {"key": "MODEL.NAME", "user": "hrnet_w18", "study": "hrnet_w18", "scaled": False}
    assert rows["TRAIN.BATCH_SIZE_PER_GPU"] == {"key": "TRAIN.BATCH_SIZE_PER_GPU", "user": 32, "study": [32, 16],
                                                "scaled": True}
    assert rows["iterations"] == {"key": "iterations", "user": 19800, "study": [3 * 2, 3 * 4], "scaled": True}


def test_arm_config_and_setting(tmp_path):
    path = _write(tmp_path, "overrides: {TRAIN.LR: 0.01}\narms:\n  - {name: a, config: CFG, overrides: "
                            "{TRAIN.LR: 0.02, TRAIN.WD: 0.1}}\n")
    study = load_study(path, ["TRAIN.WD", "0.3", "SEED", "5"])
    cfg = scale.arm_config(study, study.arms[0])
    assert (cfg.TRAIN.LR, cfg.TRAIN.WD, cfg.SEED) == (0.02, 0.3, 5)
    got = scale.arm_setting(cfg)
    assert got["iterations"] == 19800 and got["TRAIN.LR"] == 0.02 and got["lr"] == 0.02
    assert "seed" not in got and "SEED" not in got and got["optimizer"] == "adam"
    assert got["batch"] == 32  # one process's batch: the setting, not a world size's


def test_iteration_summary():
    got = scale.iteration_summary([{"name": "a_seed0", "iterations": 360}, {"name": "b_seed0", "iterations": 990},
                                   {"name": "c_seed0", "iterations": None}], {"a": {"iterations": 360}})
    assert got == {"user": 19800, "per_run": {"a_seed0": 360, "b_seed0": 990, "c_seed0": None},
                   "per_arm": {"a": 360}, "fraction_of_user": 990 / 19800,
                   "formula": "END_EPOCH x floor(training images / (batch per GPU x processes)) (the last "
                              "incomplete batch is dropped)"}
    assert scale.iteration_summary([{"name": "a", "iterations": None}], {})["fraction_of_user"] is None
