"""tools/export.py: ONNX (dynamic batch) and TorchScript round trips within the tolerances."""
from __future__ import annotations

import os
import sys

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import _cli  # noqa: E402
import export  # noqa: E402

TINY = ["CHANNELS_LAST", "False", "MODEL.NAME", "hrnet_w18_small", "MODEL.IMAGE_SIZE", "[64, 64]",
        "MODEL.HEATMAP_SIZE", "[16, 16]", "DATASET.FORMAT", "coco", "DATASET.TESTSET", "test_freihand.json"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, real_hands):
    from configs import load_config
    from hrnet import build_model
    from hrnet.runtime.checkpoint import save_checkpoint

    folder = tmp_path_factory.mktemp("tiny")
    cfg = load_config(None, TINY + ["DATASET.ROOT", os.path.join(real_hands, "freihand")])
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():  # a non-flat head: distinct peaks, so decoding is a real comparison
        model.head[3].weight.normal_(0, 0.05)
    ckpt = str(folder / "model.pth")
    save_checkpoint({"state_dict": model.state_dict(), "config": cfg.dump()}, ckpt)
    yaml = str(folder / "tiny.yaml")
    with open(yaml, "w") as f:
        f.write(cfg.dump())
    return {"cfg": cfg, "model": model.eval(), "ckpt": ckpt, "yaml": yaml}


def run(tiny, *args):
    return _cli.run(export.main, ["--cfg", tiny["yaml"], "--model-file", tiny["ckpt"], *args])


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_round_trip_within_tolerance(tiny, tmp_path, fmt, capsys):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    out = str(tmp_path / f"m.{fmt}")
    assert run(tiny, "--format", fmt, "--out", out, "--check", "5") == 0
    assert "ok" in capsys.readouterr().out
    from hrnet.evaluation.export import load_exported

    exported = load_exported(out, fmt, tiny["cfg"])
    x = torch.randn(3, 3, 64, 64)  # a batch size the export never saw: the batch axis is dynamic
    with torch.no_grad():
        ref = tiny["model"](x)
    with torch.no_grad():
        got = exported(x)
    assert got.shape == (3, 21, 16, 16)
    assert float((got - ref).abs().max()) < 1e-4
    if fmt == "onnx":
        import onnx

        model = onnx.load(out)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_check_fails_on_a_different_model(tiny):
    """The comparison must catch a model that is not the checkpoint's (another net's weights)."""
    from hrnet import build_model
    from hrnet.evaluation.export import compare_outputs

    other = build_model(tiny["cfg"])
    with torch.no_grad():
        other.head[3].weight.normal_(0, 0.05)
    diff = compare_outputs(tiny["model"], other.eval(), torch.randn(4, 3, 64, 64), tiny["cfg"])
    assert diff["heatmap_max_abs"] > 1e-4 and diff["keypoint_max_px"] > 0.05


def test_missing_onnx_is_one_line_with_the_install_command(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    code = run(tiny, "--format", "onnx", "--out", str(tmp_path / "m.onnx"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and 'pip install -e ".[export]"' in err


def test_checkpoint_of_another_model_is_one_line(tiny, tmp_path, capsys):
    code = run(tiny, "--format", "torchscript", "--out", str(tmp_path / "m.pt"), "MODEL.NAME", "hrnet_w18_small_v2")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and tiny["ckpt"] in err
