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
