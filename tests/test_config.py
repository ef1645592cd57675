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
