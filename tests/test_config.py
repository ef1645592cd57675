"""configs.load_config: defaults, yaml file, KEY VALUE overrides, errors naming the key and the file."""
import re
import pytest

from configs import ConfigError, load_config
from conftest import make_cfg


def _yaml(tmp_path, text: str, name: str = "exp.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_load_frozen():
    cfg = make_cfg()
    assert cfg.MODEL.NAME == "hrnet_w18"
    assert cfg.MODEL.NUM_JOINTS == 21
    assert list(cfg.MODEL.IMAGE_SIZE) == [256, 256] and list(cfg.MODEL.HEATMAP_SIZE) == [64, 64]
    assert cfg.EXPERIMENT_NAME == "default"
    assert cfg.is_frozen()
    with pytest.raises(AttributeError):
        cfg.TRAIN.LR = 1.0


def test_yaml_then_overrides(tmp_path):
    path = _yaml(tmp_path, "MODEL:\n  NUM_JOINTS: 5\n  NAME: hrnet_w18_small\nTRAIN:\n  LR: 0.01\n  LR_STEP: [3, 4]\n",
                 "hand_sgd.yaml")
    cfg = load_config(path, ["TRAIN.LR", "0.002", "TRAIN.OPTIMIZER", "sgd"])
    assert cfg.MODEL.NUM_JOINTS == 5 and cfg.MODEL.NAME == "hrnet_w18_small"  # from the yaml
    assert cfg.TRAIN.LR == pytest.approx(0.002)  # the override wins over the yaml
    assert cfg.TRAIN.OPTIMIZER == "sgd" and list(cfg.TRAIN.LR_STEP) == [3, 4]
    assert cfg.TRAIN.MOMENTUM == pytest.approx(0.9)  # untouched default
    assert cfg.EXPERIMENT_NAME == "hand_sgd"  # yaml stem


@pytest.mark.parametrize("text, key", [
    ("TRAIN:\n  LRR: 0.1\n", "TRAIN.LRR"),  # typo in a key
    ("TRAIN:\n  LR: fast\n", "TRAIN.LR"),  # wrong type (str for float)
    ("MODEL:\n  NUM_JOINTS: [21]\n", "MODEL.NUM_JOINTS"),  # wrong type (list for int)
])
def test_bad_yaml_names_key_and_file(tmp_path, text, key):
    path = _yaml(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert key in str(err.value) and path in str(err.value)


def test_bad_override_names_key():
    with pytest.raises(ConfigError, match="TRAIN.BATCH_SIZE"):
        load_config(None, ["TRAIN.BATCH_SIZE", "8"])
    with pytest.raises(ConfigError, match="TRAIN.LR"):
        load_config(None, ["TRAIN.LR", "fast"])


def test_bad_value_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="TEST.DECODE"):
        load_config(_yaml(tmp_path, "TEST:\n  DECODE: mean\n"))
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(missing)


@pytest.mark.parametrize("key,value,message", [
    ("TRAIN.END_EPOCH", "0", "TRAIN.END_EPOCH must be >= 1"),
    ("DATASET.BBOX_PADDING", "0.0", "DATASET.BBOX_PADDING must be positive"),
    ("TEST.AUC_MAX_PX", "-5", "TEST.AUC_MAX_PX must be positive"),
    ("DATASET.MAX_TRAIN_SAMPLES", "-1", "DATASET.MAX_TRAIN_SAMPLES must be >= 0"),
    ("DATASET.MAX_TEST_SAMPLES", "-3", "DATASET.MAX_TEST_SAMPLES must be >= 0"),
    ("MODEL.HEATMAP_SIZE", "[0, 64]", "MODEL.IMAGE_SIZE/HEATMAP_SIZE must be positive"),
])
def test_values_that_make_no_sense_are_errors(key, value, message):
    from configs import ConfigError, load_config

    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [key, value])


def test_lr_step_beyond_end_epoch_warns():
    from configs import load_config

    with pytest.warns(UserWarning, match=r"TRAIN\.LR_STEP \[20, 25\] at or beyond TRAIN\.END_EPOCH 10"):
        load_config(None, ["TRAIN.END_EPOCH", "10"])


def test_integer_for_a_float_key_is_accepted(tmp_path):
    from configs import load_config

    path = tmp_path / "e.yaml"
    path.write_text("TRAIN:\n  LR: 1\n")
    cfg = load_config(str(path), ["TEST.AUC_MAX_PX", "20"])
    assert cfg.TRAIN.LR == 1.0 and isinstance(cfg.TRAIN.LR, float) and cfg.TEST.AUC_MAX_PX == 20.0


def test_yaml_syntax_error_names_the_file(tmp_path):
    from configs import ConfigError, load_config

    path = tmp_path / "broken.yaml"
    path.write_text("TRAIN:\n  LR: [0.1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: not valid yaml (line")):
        load_config(str(path))


@pytest.mark.parametrize("text, message", [
    ("- TRAIN\n- LR\n", "a config file is a mapping of KEY: value lines, this one holds a list"),
    ("hand_sgd\n", "a config file is a mapping of KEY: value lines, this one holds a str"),
    ("TRAIN: 0.1\n", "TRAIN is a section (KEY: value lines under it), got float 0.1"),
    ("TRAIN:\n  LOOKAHEAD: [5, 0.5]\n", "TRAIN.LOOKAHEAD is a section (KEY: value lines under it), got list"),
])
def test_yaml_that_is_not_a_mapping_is_one_line_naming_the_file(tmp_path, capsys, text, message):
    import os
    import sys

    from conftest import ROOT

    path = _yaml(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: {message}")):
        load_config(path)
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import _cli
        import train

        assert _cli.run(train.main, ["--cfg", path]) == 2
    finally:
        sys.path.remove(os.path.join(ROOT, "tools"))
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {path}: {message}" + err[0].split(message, 1)[1]] and len(err[0]) < 200, err


def test_empty_yaml_is_the_defaults(tmp_path):
    defaults = load_config(None, ["EXPERIMENT_NAME", "exp"])
    assert load_config(_yaml(tmp_path, "# nothing set yet\n")).dump() == defaults.dump()


# ---------------------------------------------------------------------------- every value check, exactly
# One override per check of configs._validate: the exact message (the source, the key, the rule, the value),
# then the boundary values the rule accepts (a check off by one, or with `and` for `or`, fails one of them).
@pytest.mark.parametrize("opts, message", [
    (["DEVICE", "gpu"], "DEVICE must be auto|cpu|cuda, got 'gpu'"),
    (["AMP.MODE", "maybe"], "AMP.MODE must be off|on|auto, got 'maybe'"),
    (["AMP.DTYPE", "fp32"], "AMP.DTYPE must be bf16|fp16, got 'fp32'"),
    (["MODEL.IMAGE_SIZE", "[256]"], "MODEL.IMAGE_SIZE/HEATMAP_SIZE must be [width, height]"),
    (["MODEL.HEATMAP_SIZE", "[64, 64, 1]"], "MODEL.IMAGE_SIZE/HEATMAP_SIZE must be [width, height]"),
    (["MODEL.IMAGE_SIZE", "[256, 0]"], "MODEL.IMAGE_SIZE/HEATMAP_SIZE must be positive"),
    (["MODEL.HEATMAP_SIZE", "[64, -1]"], "MODEL.IMAGE_SIZE/HEATMAP_SIZE must be positive"),
    (["MODEL.NUM_JOINTS", "0"], "MODEL.NUM_JOINTS must be positive"),
    (["MODEL.SIGMA", "0.0"], "MODEL.SIGMA must be positive"),
    (["DATASET.FORMAT", "yolo"], "DATASET.FORMAT must be synthetic|coco|csv, got 'yolo'"),
    (["DATASET.ON_BAD_SAMPLE", "warn"], "DATASET.ON_BAD_SAMPLE must be error|skip, got 'warn'"),
    (["WORKERS", "-1"], "WORKERS must be >= 0, got -1"),
    (["DATASET.BBOX_PADDING", "0.0"], "DATASET.BBOX_PADDING must be positive, got 0.0"),
    (["DATASET.MAX_TRAIN_SAMPLES", "-1"], "DATASET.MAX_TRAIN_SAMPLES must be >= 0 (0 = all), got -1"),
    (["DATASET.MAX_TEST_SAMPLES", "-3"], "DATASET.MAX_TEST_SAMPLES must be >= 0 (0 = all), got -3"),
    (["DATASET.SYNTHETIC.NUM_TRAIN", "-1"], "DATASET.SYNTHETIC.NUM_TRAIN/NUM_TEST must be >= 0"),
    (["DATASET.SYNTHETIC.NUM_TEST", "-1"], "DATASET.SYNTHETIC.NUM_TRAIN/NUM_TEST must be >= 0"),
    (["DATASET.SCALE_FACTOR", "-0.1"], "DATASET.SCALE_FACTOR must be in [0, 1) (scales 1 -/+ f), got -0.1"),
    (["DATASET.SCALE_FACTOR", "1.0"], "DATASET.SCALE_FACTOR must be in [0, 1) (scales 1 -/+ f), got 1.0"),
    *[([f"DATASET.{key}", value], f"DATASET.{key} is a probability in [0, 1], got {value}")
      for key in ("FLIP_PROB", "ROT_PROB", "COLOR_PROB", "BLUR_PROB", "NOISE_PROB") for value in ("-0.1", "1.1")],
    (["TRAIN.END_EPOCH", "0", "TRAIN.LR_STEP", "[]"], "TRAIN.END_EPOCH must be >= 1, got 0"),
    (["TRAIN.BEGIN_EPOCH", "-1"], "TRAIN.BEGIN_EPOCH must be >= 0, got -1"),
    (["TRAIN.BATCH_SIZE_PER_GPU", "0"], "TRAIN.BATCH_SIZE_PER_GPU must be positive"),
    (["TEST.BATCH_SIZE_PER_GPU", "0"], "TEST.BATCH_SIZE_PER_GPU must be positive"),
    (["TRAIN.LR", "0.0"], "TRAIN.LR must be positive"),
    (["TRAIN.LR_STEP", "[25, 20]"], "TRAIN.LR_STEP must be increasing"),
    (["TRAIN.LR_STEP", "[0, 5]"], "TRAIN.LR_STEP epochs must be positive, got [0, 5]"),
    (["TRAIN.WD", "-0.1"], "TRAIN.WD must be >= 0, got -0.1"),
    (["TRAIN.CLIP_GRAD_NORM", "-1.0"], "TRAIN.CLIP_GRAD_NORM must be >= 0 (0 = off), got -1.0"),
    (["TRAIN.LOOKAHEAD.BN_RECALIBRATE_BATCHES", "-1"],
     "TRAIN.LOOKAHEAD.BN_RECALIBRATE_BATCHES must be >= 0 (0 = off), got -1"),
    (["TRAIN.LOOKAHEAD.EVAL_WEIGHTS", "mean"], "TRAIN.LOOKAHEAD.EVAL_WEIGHTS must be slow|fast, got 'mean'"),
    (["TEST.DECODE", "mean"], "TEST.DECODE must be argmax|dark, got 'mean'"),
    *[([f"TEST.{key}", "0.0"], f"TEST.{key} must be positive, got 0.0")
      for key in ("FAILURE_THRESHOLD", "PCK_THRESHOLD", "AUC_MAX_PX")],
])
def test_each_value_check_is_one_exact_message(opts, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, opts)
    assert str(err.value) == f"<defaults>: {message}"


def test_a_value_check_names_the_yaml_file(tmp_path):
    path = _yaml(tmp_path, "WORKERS: -2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: WORKERS must be >= 0, got -2"


@pytest.mark.parametrize("opts", [
    *[["DEVICE", v] for v in ("auto", "cpu", "cuda")],
    *[["AMP.MODE", v] for v in ("off", "on", "auto")],
    *[["AMP.DTYPE", v] for v in ("bf16", "fp16")],
    *[["DATASET.FORMAT", v] for v in ("synthetic", "coco", "csv")],
    *[["DATASET.ON_BAD_SAMPLE", v] for v in ("error", "skip")],
    *[["TRAIN.LOOKAHEAD.EVAL_WEIGHTS", v] for v in ("slow", "fast")],
    *[["TEST.DECODE", v] for v in ("argmax", "dark")],
    ["MODEL.IMAGE_SIZE", "[1, 1]", "MODEL.HEATMAP_SIZE", "[1, 1]"],
    ["MODEL.NUM_JOINTS", "1"], ["MODEL.SIGMA", "0.5"], ["WORKERS", "0"], ["DATASET.BBOX_PADDING", "0.5"],
    ["DATASET.MAX_TRAIN_SAMPLES", "0", "DATASET.MAX_TEST_SAMPLES", "0"],
    ["DATASET.SYNTHETIC.NUM_TRAIN", "0", "DATASET.SYNTHETIC.NUM_TEST", "0"],
    ["DATASET.SCALE_FACTOR", "0.0"], ["DATASET.SCALE_FACTOR", "0.999"],
    *[[f"DATASET.{key}", value] for key in ("FLIP_PROB", "ROT_PROB", "COLOR_PROB", "BLUR_PROB", "NOISE_PROB")
      for value in ("0.0", "1.0")],
    ["TRAIN.END_EPOCH", "1", "TRAIN.LR_STEP", "[]"],
    ["TRAIN.BATCH_SIZE_PER_GPU", "1", "TEST.BATCH_SIZE_PER_GPU", "1"], ["TRAIN.LR", "0.5"],
    ["TRAIN.LR_STEP", "[1, 1, 2]"], ["TRAIN.WD", "0.0", "TRAIN.CLIP_GRAD_NORM", "0.0"],
    ["TRAIN.LOOKAHEAD.BN_RECALIBRATE_BATCHES", "0"],
    ["TEST.FAILURE_THRESHOLD", "0.5", "TEST.PCK_THRESHOLD", "0.5", "TEST.AUC_MAX_PX", "0.5"],
])
def test_the_boundary_values_each_check_accepts(opts):
    import warnings
    from ast import literal_eval

    from configs import config_value

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none of these is even worth a warning
        cfg = load_config(None, opts)
    for key, value in zip(opts[::2], opts[1::2]):  # set as given (an int of a float key as that float)
        assert config_value(cfg, key) == (literal_eval(value) if value[0] in "-0123456789[" else value)


@pytest.mark.parametrize("opts, message", [
    (["TRAIN.END_EPOCH", "10", "TRAIN.LR_STEP", "[5, 10]"],  # an epoch equal to END_EPOCH is already late
     "<defaults>: TRAIN.LR_STEP [10] at or beyond TRAIN.END_EPOCH 10: those LR decays never happen"),
    (["TRAIN.BEGIN_EPOCH", "1"], "<defaults>: TRAIN.BEGIN_EPOCH 1 is ignored: a fresh run starts at epoch 0 and "
                                 "--resume at its checkpoint's epoch"),
])
def test_legal_but_suspicious_values_warn_in_one_exact_line(opts, message):
    with pytest.warns(UserWarning) as caught:
        load_config(None, opts)
    assert [str(w.message) for w in caught] == [message]


def test_lr_steps_before_the_end_do_not_warn():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(None, ["TRAIN.END_EPOCH", "11", "TRAIN.LR_STEP", "[5, 10]"])


# ---------------------------------------------------------------------------- the file and the overrides
def test_missing_file_message(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(FileNotFoundError) as err:
        load_config(missing)
    assert str(err.value) == f"config file not found: {missing}"


def test_a_config_that_is_not_utf8_names_the_file_and_the_byte(tmp_path):
    from configs import ConfigError, load_config

    path = tmp_path / "latin1.yaml"
    path.write_bytes(("TRAIN:\n" + "#" * 3000 + "\n  LR: 0.001  # d\xe9croissance\n").encode("latin-1"))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: not UTF-8 text (line 3, byte 3024: b'\\xe9')")):
        load_config(str(path))


def test_a_utf8_file_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "bom.yaml"  # Windows editors write one; plain utf-8 would read a key "\ufeffTRAIN"
    path.write_bytes("TRAIN:\n  LR: 0.5\n".encode("utf-8-sig"))
    assert load_config(str(path)).TRAIN.LR == 0.5


@pytest.mark.parametrize("text, message", [
    ("TRAIN:\n  LR: [0.1\n", "not valid yaml (line 3, column 1): expected ',' or ']', but got '<stream end>'"),
    ("TRAIN:\n  LR: 0.1\n  WD: [0, \t1]\n",
     "not valid yaml (line 3, column 11): found character '\\t' that cannot start any token"),
    ("TRAIN: \x07\n", "not valid yaml: ReaderError"),  # the reader's error has neither position nor problem
    # yacs' errors behind the file's name
    ("TRAIN:\n  LRR: 0.1\n", "Non-existent config key: TRAIN.LRR"),
    ("TRAIN:\n  LR: true\n", "Type mismatch (<class 'float'> vs. <class 'bool'>) with values (0.0001 vs. True) "
                             "for config key: TRAIN.LR"),  # a bool is no number here (not made 1.0)
    ("FOO:\n  BAR: 1\n", "Non-existent config key: FOO"),  # a section the defaults lack
])
def test_bad_config_files_are_one_exact_line(tmp_path, text, message):
    path = _yaml(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: {message}"


def test_a_long_non_mapping_is_cut_at_60_characters(tmp_path):
    path = _yaml(tmp_path, "x" * 70 + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (f"{path}: a config file is a mapping of KEY: value lines, this one holds a str "
                              f"({'x' * 60!r})")


def test_integers_for_nested_float_keys_become_floats(tmp_path):
    cfg = load_config(_yaml(tmp_path, "TRAIN:\n  LOOKAHEAD:\n    ALPHA: 1\n  END_EPOCH: 40\n"))
    assert type(cfg.TRAIN.LOOKAHEAD.ALPHA) is float and cfg.TRAIN.LOOKAHEAD.ALPHA == 1.0
    assert type(cfg.TRAIN.END_EPOCH) is int and cfg.TRAIN.END_EPOCH == 40  # an int key keeps its int


def test_coerce_opts_turns_integers_of_float_keys_into_floats_only():
    from configs import _coerce_opts, get_defaults

    opts = ["TRAIN.LR", "fast", "TEST.AUC_MAX_PX", "20", "TRAIN.WD", "a b", "TRAIN.LR_FACTOR", "True",
            "TRAIN.END_EPOCH", "5", "NOT.A_KEY", "3", "TEST.PCK_THRESHOLD", "1"]
    assert _coerce_opts(opts, get_defaults()) == [
        "TRAIN.LR", "fast",  # not a literal (ValueError): left for yacs to refuse
        "TEST.AUC_MAX_PX", "20.0",
        "TRAIN.WD", "a b",  # a SyntaxError: left alone, and the next pairs are still read
        "TRAIN.LR_FACTOR", "True",  # a bool is not an integer here
        "TRAIN.END_EPOCH", "5", "NOT.A_KEY", "3",  # an int key, an unknown key: unchanged
        "TEST.PCK_THRESHOLD", "1.0"]  # the last pair too
    assert opts[3] == "20"  # the caller's list is not changed


def test_an_odd_override_list_and_a_bad_override_are_one_exact_line():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["TRAIN.LR", "1", "TRAIN.WD"])
    assert str(err.value) == ("command-line overrides must be KEY VALUE pairs, got an odd list: "
                              "['TRAIN.LR', '1.0', 'TRAIN.WD']")
    with pytest.raises(ConfigError) as err:  # pairs start at even positions: the value "TRAIN.LR" is no key
        load_config(None, ["EXPERIMENT_NAME", "TRAIN.LR", "1"])
    assert str(err.value).endswith("odd list: ['EXPERIMENT_NAME', 'TRAIN.LR', '1']")
    with pytest.raises(ConfigError) as err:
        load_config(None, ["TRAIN.LRR", "1"])
    assert str(err.value) == "command-line override: Non-existent key: TRAIN.LRR"


@pytest.mark.parametrize("text, opts, name", [
    ("EXPERIMENT_NAME: mine\n", [], "mine"),  # set in the file: kept
    ("TRAIN:\n  LR: 0.5\n", [], "exp"),  # else the file's stem
    ("TRAIN:\n  LR: 0.5\n", ["EXPERIMENT_NAME", "cli"], "cli"),
])
def test_experiment_name_from_the_file_or_the_overrides(tmp_path, text, opts, name):
    assert load_config(_yaml(tmp_path, text, "exp.yaml"), opts).EXPERIMENT_NAME == name


def test_a_yacs_error_without_words_is_its_repr():
    from configs import _explain

    assert _explain(KeyError("Non-existent key: X")) == "Non-existent key: X"
    assert _explain(AttributeError()) == "AttributeError()"


def test_configs_are_frozen_unless_asked_not_to_be():
    assert load_config(None).is_frozen()


def test_unfrozen_config_can_be_edited():
    cfg = load_config(None, freeze=False)
    assert not cfg.is_frozen()
    cfg.TRAIN.LR = 0.5  # a frozen one raises
    assert cfg.TRAIN.LR == 0.5


# ---------------------------------------------------------------------------- reading and comparing configs
def test_experiment_name_of_a_config_without_one_is_default():
    from configs import CfgNode, experiment_name

    assert experiment_name(CfgNode({"EXPERIMENT_NAME": ""})) == "default"
    assert experiment_name(CfgNode({"EXPERIMENT_NAME": "hand_sgd"})) == "hand_sgd"


def test_config_value_reads_dotted_keys():
    from configs import config_value

    cfg = {"TRAIN": {"LR": 0.1, "LR_STEP": (3, 4), "LOOKAHEAD": {"K": 5}}, "SEED": 0}
    assert config_value(cfg, "TRAIN.LOOKAHEAD.K") == 5 and config_value(cfg, "SEED") == 0
    assert config_value(cfg, "TRAIN.LR_STEP") == [3, 4] and type(config_value(cfg, "TRAIN.LR_STEP")) is list
    assert config_value(cfg, "TRAIN.LR.X", "none") == "none"  # through a value, not a section
    assert config_value(cfg, "TRAIN.MISSING", None) is None
    with pytest.raises(KeyError) as err:
        config_value(cfg, "TRAIN.LOOKAHEAD.ALPHA")
    assert err.value.args == ("TRAIN.LOOKAHEAD.ALPHA",)


def test_flat_config_joins_keys_with_dots():
    from configs import flat_config

    assert flat_config({"A": {"B": (1, 2), "C": {"D": "x"}}, "E": 3}) == {"A.B": [1, 2], "A.C.D": "x", "E": 3}
    assert flat_config({"E": [1]}, "P.") == {"P.E": [1]}


def test_config_differences_one_rule():
    from configs import ABSENT, config_differences

    old = {"TRAIN.LR": 0.1, "TRAIN.WD": 0.0, "SEED": 1, "OUTPUT_DIR": "a"}
    new = {"TRAIN.LR": 0.2, "TRAIN.WD": 0.0, "OUTPUT_DIR": "b", "TRAIN.CLIP_GRAD_NORM": 0.0,
           "TRAIN.NESTEROV": True, "NEW.KEY": 1}
    assert ABSENT == "<absent>"
    assert config_differences(old, new, free_keys=("OUTPUT_DIR",)) == [
        ("NEW.KEY", ABSENT, 1),  # absent from old and not a default key
        ("SEED", 1, ABSENT),  # absent from new
        ("TRAIN.LR", 0.1, 0.2),
        ("TRAIN.NESTEROV", ABSENT, True),  # absent from old, new is not its default (False)
    ]  # sorted by key; OUTPUT_DIR free; CLIP_GRAD_NORM absent from old but new is its default
    assert config_differences(old, new) == [("NEW.KEY", ABSENT, 1), ("OUTPUT_DIR", "a", "b"), ("SEED", 1, ABSENT),
                                            ("TRAIN.LR", 0.1, 0.2), ("TRAIN.NESTEROV", ABSENT, True)]
