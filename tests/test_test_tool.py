"""tools/test.py and hrnet/evaluation/model_file.py from the user's side: the command, its exit code, its one
line, what it wrote. Checkpoints are built directly (a tiny model, a few Lookahead steps)."""
import json
import os
import sys

import pytest
import torch

from conftest import ROOT, make_cfg
from hrnet.runtime.checkpoint import save_checkpoint
from hrnet.evaluation.model_file import ConfigMismatchError, load_model_file

sys.path.insert(0, os.path.join(ROOT, "tools"))
import test as test_tool  # noqa: E402  (tools/test.py)

TINY = ["MODEL.NAME", "hrnet_w18_small", "MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]",
        "DATASET.FORMAT", "coco", "DATASET.TESTSET", "test_freihand.json", "TEST.BATCH_SIZE_PER_GPU", "8",
        "WORKERS", "0", "DEVICE", "cpu"]


def _opts(real_hands):
    return TINY + ["DATASET.ROOT", os.path.join(real_hands, "freihand")]


def _cfg(real_hands, *extra):
    return make_cfg(None, _opts(real_hands) + list(extra))


@pytest.fixture(scope="module")
def lookahead_run(tmp_path_factory, real_hands):
    """A Lookahead checkpoint_latest.pth mid-cycle (fast != slow) and the live optimizer's weights."""
    from hrnet import build_model
    from optim.factory import build_optimizer

    cfg = _cfg(real_hands, "TRAIN.OPTIMIZER", "lookahead", "TRAIN.LOOKAHEAD.K", "3", "TRAIN.LR", "0.01",
               "TRAIN.WD", "0.0001", "TRAIN.NO_WD_BN_BIAS", "True")  # two parameter groups
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = build_optimizer(cfg, model)
    x = torch.randn(2, 3, 64, 64)
    for _ in range(4):  # one sync after 3 steps, then one more fast step: fast != slow
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    fast = {k: v.clone() for k, v in model.state_dict().items()}
    with opt.slow_weights():
        slow = {k: v.clone() for k, v in model.state_dict().items()}
    folder = tmp_path_factory.mktemp("run")
    path = str(folder / "checkpoint_latest.pth")
    save_checkpoint({"state_dict": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1,
                     "config": cfg.dump()}, path)
    return path, fast, slow


def _run(capsys, argv):
    import _cli

    code = _cli.run(test_tool.main, argv)
    out, err = capsys.readouterr()
    return code, out, err


def _best(tmp_path, cfg, state=None, name="model_best.pth"):
    from hrnet import build_model

    torch.manual_seed(1)
    model = build_model(cfg)
    path = str(tmp_path / name)
    save_checkpoint({"state_dict": state if state is not None else model.state_dict(), "epoch": 2, "NME": 0.25,
                     "eval_weights": "model", "config": cfg.dump()}, path)
    return path, model


def test_lookahead_latest_evaluates_slow_weights_by_default(lookahead_run, real_hands):
    path, fast, slow = lookahead_run
    assert any(not torch.equal(fast[k], slow[k]) for k in fast)  # the test can tell them apart
    cfg = _cfg(real_hands)
    model, info = load_model_file(cfg, path, torch.device("cpu"))
    assert info.weights == "slow" and info.kind == "latest" and "slow weights" in info.describe()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, slow[k], rtol=0, atol=0)
    model, info = load_model_file(cfg, path, torch.device("cpu"), weights="fast")
    assert info.weights == "fast"
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, fast[k], rtol=0, atol=0)
    assert not model.training


def test_test_tool_prints_which_weights(lookahead_run, real_hands, capsys, tmp_path):
    path, _, _ = lookahead_run
    # KEY VALUE overrides before and after the options
    code, out, err = _run(capsys, _opts(real_hands)[:4] + ["--model-file", path, "--no-progress"]
                          + _opts(real_hands)[4:] + ["--out", str(tmp_path / "ev"), "TEST.DECODE", "dark"])
    assert code == 0, err
    assert f"evaluating {path}: slow weights (Lookahead)" in out
    metrics = json.load(open(tmp_path / "ev" / "metrics.json"))
    assert metrics["weights"] == "slow" and metrics["decode"] == "dark" and metrics["num_images"] == 8
    assert metrics["num_images_skipped"] == 0


def test_config_mismatch_refused_then_allowed(tmp_path, real_hands, capsys):
    path, _ = _best(tmp_path, _cfg(real_hands))
    big = ["MODEL.IMAGE_SIZE", "[128, 128]", "MODEL.HEATMAP_SIZE", "[32, 32]"]
    code, out, err = _run(capsys, _opts(real_hands) + big + ["--model-file", path, "--out", str(tmp_path / "ev")])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and path in lines[0]
    assert "MODEL.IMAGE_SIZE: [64, 64] -> [128, 128]" in lines[0] and "MODEL.HEATMAP_SIZE" in lines[0]
    assert "MODEL.NAME" not in lines[0]
    assert not (tmp_path / "ev").exists()
    code, out, err = _run(capsys, _opts(real_hands) + big + ["--model-file", path, "--allow-config-mismatch",
                                                             "--no-progress"])
    assert code == 0
    assert "warning:" in err and "MODEL.IMAGE_SIZE: [64, 64] -> [128, 128]" in err


def test_model_file_mismatch_error_type(tmp_path, real_hands):
    path, _ = _best(tmp_path, _cfg(real_hands))
    with pytest.raises(ConfigMismatchError, match="MODEL.NUM_JOINTS: 21 -> 14"):
        load_model_file(_cfg(real_hands, "MODEL.NUM_JOINTS", "14"), path, torch.device("cpu"))


def test_diverged_model_is_an_error_and_writes_nothing(tmp_path, real_hands, capsys):
    cfg = _cfg(real_hands)
    _, model = _best(tmp_path, cfg)
    state = model.state_dict()
    head = [k for k in state if k.endswith("weight") and state[k].ndim == 4][-1]
    state[head] = torch.full_like(state[head], float("nan"))
    path, _ = _best(tmp_path, cfg, state=state, name="diverged.pth")
    code, out, err = _run(capsys, _opts(real_hands) + ["--model-file", path, "--out", str(tmp_path / "ev"),
                                                       "--no-progress"])
    assert code == 2
    assert err.count("\n") == 1 and "non-finite predictions" in err and "8 of 8 hands" in err
    assert not (tmp_path / "ev" / "predictions.json").exists()


@pytest.mark.parametrize("argv_tail,expect", [
    (["--model-file", "/nonexistent/model.pth"], "checkpoint not found: /nonexistent/model.pth"),
    (["--model-file", "x.pth", "MODEL.NOPE", "1"], "MODEL.NOPE"),
    (["--oracle", "DATASET.TESTSET", "missing.json"], "DATASET.TESTSET: annotation file not found"),
    (["--oracle", "TEST.AUC_MAX_PX", "0"], "TEST.AUC_MAX_PX must be positive"),
])
def test_user_mistakes_are_one_line(real_hands, capsys, argv_tail, expect):
    code, out, err = _run(capsys, _opts(real_hands) + argv_tail)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and expect in err, err


def test_bad_yaml_names_the_file(tmp_path, capsys):
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("MODEL:\n  NAME: [hrnet_w18\n")
    code, out, err = _run(capsys, ["--cfg", str(cfg), "--oracle"])
    assert code == 2 and err.count("\n") == 1
    assert f"{cfg}: not valid yaml (line" in err


def test_plain_state_dict_and_weights_choice(tmp_path, real_hands):
    cfg = _cfg(real_hands)
    _, model = _best(tmp_path, cfg)
    path = str(tmp_path / "plain.pth")
    torch.save(model.state_dict(), path)
    loaded, info = load_model_file(cfg, path, torch.device("cpu"))
    assert info.kind == "state_dict" and info.weights == "model" and info.config is None
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(v, model.state_dict()[k], rtol=0, atol=0)
    from hrnet.runtime.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="plain state_dict: it has no slow weights"):
        load_model_file(cfg, path, torch.device("cpu"), weights="slow")


def test_checkpoint_layouts_and_bad_files(tmp_path, real_hands):
    """The layouts tools/test.py accepted before (ported from test_evaluate.py's load_model test)."""
    from hrnet import build_model
    from hrnet.runtime.checkpoint import CheckpointError

    cfg3 = _cfg(real_hands, "MODEL.NUM_JOINTS", "3")
    torch.manual_seed(1)
    sd = build_model(cfg3).state_dict()
    layouts = {"run.pth": {"state_dict": sd}, "model.pth": {"model": sd},
               "plain.pth": {"module." + k: v for k, v in sd.items()}}
    for name, obj in layouts.items():
        torch.save(obj, tmp_path / name)
        loaded, info = load_model_file(cfg3, str(tmp_path / name), torch.device("cpu"))
        assert not loaded.training and info.weights == "model"
        for k, v in loaded.state_dict().items():
            assert torch.equal(v, sd[k]), (name, k)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_model_file(_cfg(real_hands), str(tmp_path / "junk.pth"), torch.device("cpu"))
    with pytest.raises(CheckpointError, match="run.pth.*MODEL.NUM_JOINTS 21"):  # 3-joint weights, 21-joint model
        load_model_file(_cfg(real_hands), str(tmp_path / "run.pth"), torch.device("cpu"))
    with pytest.raises(SystemExit):
        test_tool.main(["--no-progress"])  # neither --model-file nor --oracle


# ------------------------------------------------------------------ model_file: each decision on its own
# (written against the mutants the tests above let through, docs/mutation_testing.md)

class _Net(torch.nn.Module):
    """A small stand-in for the network: a conv (4-D weight), a BN (1-D weight and bias, buffers)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)


def _states(seed):
    torch.manual_seed(seed)
    return _Net().state_dict()


def test_model_file_info_describes_the_weights():
    from hrnet.evaluation.model_file import ModelFileInfo

    words = {"model": "weights", "fast": "fast weights (Lookahead)", "slow": "slow weights (Lookahead)",
             "slow+bn": "slow weights (Lookahead) with recalibrated BN", "odd": "odd"}
    for weights, text in words.items():
        assert ModelFileInfo("r/m.pth", "best", weights).describe() == f"r/m.pth: {text}"
    assert ModelFileInfo("m.pth", "best", "model", epoch=3, nme=0.123456).describe() == (
        "m.pth: weights, epoch 3, validation NME 0.12346")
    assert ModelFileInfo("m.pth", "best", "model", epoch=0, nme=0.0).describe() == (
        "m.pth: weights, epoch 0, validation NME 0.00000")


def test_checkpoint_config_and_mismatches():
    from configs import CfgNode
    from hrnet.evaluation.model_file import ARCH_KEYS, checkpoint_config, config_mismatches
    from hrnet.runtime.checkpoint import CheckpointError

    assert checkpoint_config({}, "m.pth") is None and checkpoint_config({"config": ""}, "m.pth") is None
    assert checkpoint_config([], "m.pth") is None
    with pytest.raises(CheckpointError, match=r"^m\.pth: 'config' is a dict, expected yaml text$"):
        checkpoint_config({"config": {"MODEL": {}}}, "m.pth")
    with pytest.raises(CheckpointError, match=r"^m\.pth: the stored config is not valid yaml \("):
        checkpoint_config({"config": "MODEL: [unclosed\n"}, "m.pth")
    ck = checkpoint_config({"config": "MODEL:\n  NAME: hrnet_w18_small\n  NUM_JOINTS: 21\n"}, "m.pth")
    cfg = make_cfg(None, ["MODEL.NAME", "hrnet_w18", "MODEL.NUM_JOINTS", "21"])
    assert config_mismatches(ck, cfg) == ["MODEL.NAME: 'hrnet_w18_small' -> 'hrnet_w18'"]  # sizes not stored: skipped
    assert config_mismatches(ck, cfg, keys=("MODEL.NUM_JOINTS",)) == []
    assert ARCH_KEYS == ("MODEL.NAME", "MODEL.IMAGE_SIZE", "MODEL.HEATMAP_SIZE", "MODEL.NUM_JOINTS")
    assert isinstance(ck, CfgNode)


def test_slow_weights_by_name_checks_and_keeps_unnamed_parameters():
    from hrnet.evaluation.model_file import _slow_by_name
    from hrnet.runtime.checkpoint import CheckpointError

    model, fast, slow = _Net(), _states(0), _states(1)
    got = _slow_by_name(fast, {"conv.weight": slow["conv.weight"]}, model, "p.pth")
    assert torch.equal(got["conv.weight"], slow["conv.weight"]) and torch.equal(got["conv.bias"], fast["conv.bias"])
    assert torch.equal(got["bn.running_mean"], fast["bn.running_mean"]) and got is not fast
    for bad in ({}, [], {"conv.weight": 1.0}, {"conv.weight": slow["conv.weight"], "conv.bias": None}):
        with pytest.raises(CheckpointError, match=r"^p\.pth: slow_state_dict is not a mapping of parameter names to "
                                                  r"tensors$"):
            _slow_by_name(fast, bad, model, "p.pth")
    with pytest.raises(CheckpointError, match=r"^p\.pth: slow weights for 1 names the model of MODEL\.NAME does not "
                                              r"have as parameters, e\.g\. \['bn\.running_mean'\]$"):
        _slow_by_name(fast, {"bn.running_mean": slow["bn.running_mean"]}, model, "p.pth")
    four = {f"x{i}": slow["conv.bias"] for i in range(4)}
    with pytest.raises(CheckpointError, match=r"slow weights for 4 names .* e\.g\. \['x0', 'x1', 'x2'\]$"):
        _slow_by_name(fast, four, model, "p.pth")


def test_slow_weights_by_index_checks_the_groups_and_the_count():
    from hrnet.evaluation.model_file import _slow_by_index
    from hrnet.runtime.checkpoint import CheckpointError

    model, fast, slow = _Net(), _states(0), _states(1)
    wd = make_cfg(None, ["TRAIN.WD", "0.0001", "TRAIN.NO_WD_BN_BIAS", "True"])
    # Two groups (weights with decay: conv.weight; the rest: conv.bias, bn.weight, bn.bias), in that order.
    order = ["conv.weight", "conv.bias", "bn.weight", "bn.bias"]
    opt = {"lookahead": {"slow_weights": {i: slow[n] for i, n in enumerate(order)}},
           "param_groups": [{"params": [0]}, {"params": [1, 2, 3]}]}
    got = _slow_by_index(fast, opt, model, wd, "p.pth")
    assert all(torch.equal(got[n], slow[n]) for n in order)
    one_group = {"lookahead": opt["lookahead"], "param_groups": [{"params": [0, 1, 2, 3]}]}
    with pytest.raises(CheckpointError, match=r"^p\.pth: the optimizer's parameter groups \[4\] do not match the "
                                              r"model's \[1, 3\] \(TRAIN\.WD / TRAIN\.NO_WD_BN_BIAS changed\?\)$"):
        _slow_by_index(fast, one_group, model, wd, "p.pth")
    got = _slow_by_index(fast, one_group, model, None, "p.pth")  # no stored config: one group, no decay
    model_order = ["conv.weight", "conv.bias", "bn.weight", "bn.bias"]
    assert all(torch.equal(got[n], slow[model_order[i]]) for i, n in enumerate(model_order))
    assert _slow_by_index(fast, {"lookahead": opt["lookahead"]}, model, wd, "p.pth").keys() == fast.keys()
    with pytest.raises(CheckpointError, match=r"^p\.pth: slow weights for 3 parameters, the model has 4$"):
        _slow_by_index(fast, {"lookahead": {"slow_weights": {i: slow[n] for i, n in enumerate(order[:3])}}},
                       model, None, "p.pth")
    no_decay = make_cfg(None, ["TRAIN.WD", "0.0", "TRAIN.NO_WD_BN_BIAS", "True"])  # no decay: one group
    assert _slow_by_index(fast, one_group, model, no_decay, "p.pth").keys() == fast.keys()
    from configs import CfgNode

    old_cfg = CfgNode.load_cfg("MODEL:\n  NAME: x\n")  # a stored config without TRAIN.WD / NO_WD_BN_BIAS
    assert _slow_by_index(fast, one_group, model, old_cfg, "p.pth").keys() == fast.keys()
    for lookahead in ({}, {"slow_weights": [1]}, "x"):
        with pytest.raises(CheckpointError, match=r"^p\.pth: optimizer\['lookahead'\] has no slow_weights$"):
            _slow_by_index(fast, {"lookahead": lookahead}, model, None, "p.pth")


def test_latest_and_best_weights_choices():
    from configs import CfgNode
    from hrnet.evaluation.model_file import _choose_weights, _latest_weights
    from hrnet.runtime.checkpoint import CheckpointError

    model, fast, slow = _Net(), _states(0), _states(1)
    plain = {"optimizer": {"state": {}}}
    assert _latest_weights(plain, fast, model, None, "auto", "p.pth") == ("model", fast, [])
    for w in ("slow", "fast"):
        with pytest.raises(CheckpointError, match=rf"^p\.pth is not a Lookahead run: it has no {w} weights$"):
            _latest_weights(plain, fast, model, None, w, "p.pth")
    la = {"optimizer": {"lookahead": {}}, "slow_state_dict": {k: slow[k] for k in ("conv.weight", "conv.bias")}}

    def ck(weights="slow", bn=0):
        return CfgNode.load_cfg(f"TRAIN:\n  LOOKAHEAD:\n    EVAL_WEIGHTS: {weights}\n"
                                f"    BN_RECALIBRATE_BATCHES: {bn}\n")

    used, state, notes = _latest_weights(la, fast, model, ck("fast"), "auto", "p.pth")
    assert (used, notes) == ("fast", []) and state is fast
    used, state, notes = _latest_weights(la, fast, model, ck("model"), "auto", "p.pth")  # not slow|fast: slow
    assert used == "slow" and torch.equal(state["conv.weight"], slow["conv.weight"]) and notes == []
    assert _latest_weights(la, fast, model, None, "auto", "p.pth")[0] == "slow"
    assert _latest_weights(la, fast, model, ck("slow"), "fast", "p.pth")[0] == "fast"
    for bn in (1, 2):
        _, _, notes = _latest_weights(la, fast, model, ck("slow", bn=bn), "auto", "p.pth")
        assert notes == ["slow weights with the fast weights' BN statistics (training validated with recalibrated "
                         "BN; model_best.pth holds those)"], bn
    minimal = CfgNode.load_cfg("MODEL:\n  NAME: x\n")  # a stored config of an older version: keys missing
    assert _latest_weights(la, fast, model, minimal, "auto", "p.pth")[::2] == ("slow", [])
    legacy = {"optimizer": {"lookahead": {"slow_weights": {i: slow[n] for i, n in enumerate(
        ["conv.weight", "conv.bias", "bn.weight", "bn.bias"])}}}}
    used, state, notes = _latest_weights(legacy, fast, model, None, "auto", "p.pth")
    assert used == "slow" and torch.equal(state["bn.bias"], slow["bn.bias"])
    assert notes == ["slow weights matched by their index in the optimizer (a checkpoint written before they were "
                     "stored by name)"]
    with pytest.raises(CheckpointError, match=r"^p\.pth: optimizer\['lookahead'\] has no slow_weights$"):
        _latest_weights({"optimizer": {"lookahead": {}}}, fast, model, None, "auto", "p.pth")
    legacy["optimizer"]["lookahead"]["slow_weights"][0] = slow["conv.weight"][:2]
    with pytest.raises(CheckpointError, match=r"^p\.pth: slow weight conv\.weight has shape \(2, 3, 3, 3\)"):
        _latest_weights(legacy, fast, model, None, "auto", "p.pth")
    best = {"eval_weights": "slow+bn", "state_dict": fast}
    assert _choose_weights(best, fast, model, None, "slow", "b.pth") == ("best", "slow+bn", fast, [])
    with pytest.raises(CheckpointError, match=r"^b\.pth holds only the slow\+bn weights \(asked for fast\); use "
                                              r"checkpoint_latest\.pth for the fast weights$"):
        _choose_weights(best, fast, model, None, "fast", "b.pth")
    assert _choose_weights({}, fast, model, None, "auto", "s.pth") == ("state_dict", "model", fast, [])
    assert _choose_weights(la, fast, model, None, "auto", "l.pth")[:2] == ("latest", "slow")


def test_load_model_file_options(tmp_path, real_hands):
    """The weights choice is checked; MODEL.PRETRAINED is ignored (the file holds every weight);
    channels_last per the config; epoch / NME read as numbers."""
    cfg = _cfg(real_hands)
    path, model = _best(tmp_path, cfg)
    with pytest.raises(ValueError, match=r"^weights must be one of \('auto', 'slow', 'fast'\), got 'best'$"):
        load_model_file(cfg, path, torch.device("cpu"), weights="best")
    pre = _cfg(real_hands, "MODEL.PRETRAINED", str(tmp_path / "missing.pth"), "CHANNELS_LAST", "True")
    loaded, info = load_model_file(pre, path, torch.device("cpu"))
    conv = next(p for p in loaded.parameters() if p.ndim == 4)
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert (info.epoch, info.nme, info.kind, info.path) == (2, 0.25, "best", path)
    assert isinstance(info.epoch, int) and isinstance(info.nme, float)
    loaded, _ = load_model_file(_cfg(real_hands, "CHANNELS_LAST", "False"), path, torch.device("cpu"))
    assert next(p for p in loaded.parameters() if p.ndim == 4).is_contiguous()
    save_checkpoint({"state_dict": model.state_dict(), "epoch": 2.0, "NME": 1, "eval_weights": "model"},
                    str(tmp_path / "n.pth"))
    _, info = load_model_file(cfg, str(tmp_path / "n.pth"), torch.device("cpu"))
    assert (info.epoch, info.nme) == (2, 1.0) and isinstance(info.epoch, int) and isinstance(info.nme, float)
    assert info.config is None and info.mismatches == []
    save_checkpoint({"state_dict": model.state_dict(), "epoch": "2", "NME": None}, str(tmp_path / "s.pth"))
    _, info = load_model_file(cfg, str(tmp_path / "s.pth"), torch.device("cpu"))
    assert (info.epoch, info.nme) == (None, None)


def test_model_file_errors_name_the_file(tmp_path, real_hands):
    """Each refusal names the file: no state_dict, a broken stored config, weights that do not fit
    (a key missing: strict loading, the first line of torch's error), a model of another config
    (each differing key, then what to do); a ``model`` entry beside ``state_dict`` is not the weights."""
    from hrnet.runtime.checkpoint import CheckpointError

    cfg = _cfg(real_hands)
    path, model = _best(tmp_path, cfg)
    sd = model.state_dict()
    cases = {"empty.pth": ({"state_dict": {}}, r"empty\.pth: no model state_dict found"),
             "yaml.pth": ({"state_dict": sd, "config": "MODEL: [x\n"},
                          r"yaml\.pth: the stored config is not valid yaml"),
             "missing.pth": ({"state_dict": {k: v for k, v in list(sd.items())[1:]}},
                             r"missing\.pth: the weights do not fit the model of MODEL\.NAME 'hrnet_w18_small' / "
                             r"MODEL\.NUM_JOINTS 21 \(Error\(s\) in loading state_dict for \w+:\)$")}
    for name, (obj, words) in cases.items():
        save_checkpoint(obj, str(tmp_path / name))
        with pytest.raises(CheckpointError, match=words) as err:
            load_model_file(cfg, str(tmp_path / name), torch.device("cpu"))
        assert str(err.value).startswith(str(tmp_path / name)), str(err.value)
    both = str(tmp_path / "both.pth")
    save_checkpoint({"state_dict": sd, "model": {"note": 1}, "eval_weights": "model"}, both)
    loaded, info = load_model_file(cfg, both, torch.device("cpu"))
    assert info.kind == "best" and all(torch.equal(v, sd[k]) for k, v in loaded.state_dict().items())
    big = _cfg(real_hands, "MODEL.IMAGE_SIZE", "[128, 128]", "MODEL.HEATMAP_SIZE", "[32, 32]")
    with pytest.raises(ConfigMismatchError) as err:
        load_model_file(big, path, torch.device("cpu"))
    assert str(err.value) == (f"{path} was trained with another model than the config: MODEL.IMAGE_SIZE: [64, 64] -> "
                              "[128, 128]; MODEL.HEATMAP_SIZE: [16, 16] -> [32, 32] (use the run's config.yaml, or "
                              "allow the mismatch)")
    _, info = load_model_file(cfg, path, torch.device("cpu"))
    assert info.config is not None and info.config.MODEL.NAME == "hrnet_w18_small" and info.mismatches == []
    with pytest.warns(UserWarning, match="was trained with another model than the config"):
        _, info = load_model_file(big, path, torch.device("cpu"), check_config=False)  # the weights fit: sizes only
    assert info.mismatches == ["MODEL.IMAGE_SIZE: [64, 64] -> [128, 128]", "MODEL.HEATMAP_SIZE: [16, 16] -> [32, 32]"]


def test_an_unknown_model_name_is_a_config_error_with_the_builders_words(tmp_path, real_hands):
    from configs import ConfigError
    from hrnet import build_model

    path, _ = _best(tmp_path, _cfg(real_hands))
    bad = make_cfg(None, _opts(real_hands), freeze=False)
    bad.MODEL.NAME = "resnet_nope"
    with pytest.raises(ValueError) as built:
        build_model(bad)
    with pytest.raises(ConfigError) as err:
        load_model_file(bad, path, torch.device("cpu"), check_config=False)
    assert str(err.value) == str(built.value) and str(err.value)
