"""hrnet.evaluation.inference: the demo's crops and predictions equal the test-set path, boxes inside
the image, the ONNX loader's checks (tests written against the survivors of its mutation run)."""
from __future__ import annotations

import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import make_cfg


class _PoolHead(torch.nn.Module):
    """A stand-in network: (B, 3, H, W) -> (B, J, H / 4, W / 4) heatmaps, a fixed function of the pixels
    plus a left-to-right ramp (so that the heatmaps of a mirrored image are not the mirrored heatmaps)."""

    def __init__(self, joints=21):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(joints, 3, 1, 1, generator=g))
        self.bn = torch.nn.BatchNorm2d(joints)

    def forward(self, x):
        out = self.bn(torch.nn.functional.conv2d(torch.nn.functional.avg_pool2d(x, 4), self.weight))
        return out + torch.linspace(0.0, 2.0, out.shape[-1])


def _wide_cfg(real_hands, *opts):
    """A non-square input (48 x 64) so that width / height mix-ups show."""
    return make_cfg(None, ["MODEL.IMAGE_SIZE", "[48, 64]", "MODEL.HEATMAP_SIZE", "[12, 16]", "DATASET.FORMAT",
                           "coco", "DATASET.ROOT", os.path.join(real_hands, "freihand"), "DATASET.TESTSET",
                           "test_freihand.json", "WORKERS", "0", "DEVICE", "cpu", "CHANNELS_LAST", "False", *opts])


def test_crop_hands_and_predict_crops_equal_the_test_set_path(real_hands, capsys):
    """The demo's crops of the annotated boxes are the test dataset's crops, and its predictions
    ``run_inference``'s on that dataset (flip test on), whatever the box padding."""
    import cv2
    from torch.utils.data import DataLoader

    from data import build_dataset
    from hrnet.evaluation.evaluate import run_inference
    from hrnet.evaluation.inference import crop_hands, predict_crops

    cfg = _wide_cfg(real_hands, "DATASET.BBOX_PADDING", "1.5", "TEST.FLIP_TEST", "True", "DATASET.REDUCED_DECODE",
                    "False")  # the demo decodes the whole image
    ds = build_dataset(cfg, is_train=False)
    model = _PoolHead().eval()
    ref = run_inference(model, DataLoader(ds, batch_size=4), cfg, torch.device("cpu"), progress=False)
    for i in (0, 3):
        rec = ds.record(i)
        images, mats = crop_hands(cv2.imread(rec.image_path), rec.bbox[None], cfg)
        assert images.shape == (1, 3, 64, 48) and mats.shape == (1, 2, 3)
        assert torch.equal(images[0], ds[i]["image"])
        np.testing.assert_allclose(mats[0], ds[i]["meta"]["hm_to_img"], atol=1e-9)
        got = predict_crops(model, images, mats, cfg, torch.device("cpu"))
        np.testing.assert_allclose(got["preds"][0], ref["preds"][i], atol=1e-6)
        np.testing.assert_allclose(got["scores"][0], ref["scores"][i], atol=1e-6)
    two, two_mats = crop_hands(cv2.imread(rec.image_path), [list(ds.record(0).bbox), list(rec.bbox)], cfg)
    assert two.shape == (2, 3, 64, 48) and torch.equal(two[1], images[0]) and np.array_equal(two_mats[1], mats[0])
    none, mats = crop_hands(np.zeros((10, 10, 3), np.uint8), np.zeros((0, 4)), cfg)
    assert none.shape == (0, 3, 64, 48) and mats.shape == (0, 2, 3)
    empty = predict_crops(model, none, mats, cfg, torch.device("cpu"))
    assert empty["preds"].shape == (0, 21, 2) and empty["scores"].shape == (0, 21)
    assert empty["scores"].dtype == np.float32
    assert capsys.readouterr().err == ""  # no progress bar: the demo prints its own lines


@pytest.mark.parametrize("box, inside", [
    ([10, 10, 5, 5], True), ([0, 0, 0, 5], False), ([0, 0, 5, 0], False), ([0, 0, -1, 5], False),
    ([np.nan, 0, 5, 5], False), ([0, 0, np.inf, 5], False), ([100, 10, 5, 5], False), ([99.5, 10, 5, 5], True),
    ([10, 50, 5, 5], False), ([10, 49.9, 5, 5], True), ([-5, 10, 5, 5], False), ([-4.9, 10, 5, 5], True),
    ([10, -5, 5, 5], False), ([10, -4.9, 5, 5], True), ([10, 10, 5, 5, 0.9], True),
    ([10, 10, 0, 5], False), ([10, 10, 5, 0], False), ([10, 10, 0.5, 5], True), ([10, 10, 5, 0.5], True),
])
def test_box_in_image(box, inside):
    from hrnet.evaluation.inference import box_in_image

    assert box_in_image(box, 100, 50) is inside


class _FakeOrt:
    """Just enough of onnxruntime for ``load_onnx_model``: records the options and the providers."""

    def __init__(self, in_shape, out_shape, fail=False):
        self.in_shape, self.out_shape, self.fail, self.calls = in_shape, out_shape, fail, []
        ort = self

        class SessionOptions:
            pass

        class InferenceSession:
            def __init__(self, path, sess_options=None, providers=None):
                if ort.fail:
                    raise RuntimeError("[ONNXRuntimeError] : 7 : INVALID_PROTOBUF :\n  bad file" + " x" * 200)
                ort.calls.append((path, sess_options, providers))

            def get_inputs(self):
                return [SimpleNamespace(name="input", shape=ort.in_shape)]

            def get_outputs(self):
                return [SimpleNamespace(name="heatmaps", shape=ort.out_shape)]

            def run(self, names, feeds):
                (x,) = feeds.values()
                assert names is None and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
                ort.calls.append(("run", list(feeds)))
                return [np.ones((x.shape[0],) + tuple(ort.out_shape[1:]), np.float32) * x.mean()]

        self.SessionOptions, self.InferenceSession = SessionOptions, InferenceSession


def test_load_onnx_model_checks_the_file_and_its_shapes(tmp_path, monkeypatch, real_hands):
    from hrnet.evaluation import inference
    from hrnet.runtime.checkpoint import CheckpointError

    cfg = _wide_cfg(real_hands)
    path = tmp_path / "m.onnx"
    with pytest.raises(CheckpointError, match=rf"^ONNX model file not found: {path}$"):
        inference.load_onnx_model(str(path), cfg)
    path.write_bytes(b"onnx")
    ort = _FakeOrt(["batch", 3, 64, 48], ["batch", 21, 16, 12])
    monkeypatch.setattr(inference, "import_onnxruntime", lambda: ort)
    model = inference.load_onnx_model(str(path), cfg, threads=3)
    (p, opts, providers), = ort.calls
    assert (p, opts.intra_op_num_threads, providers) == (str(path), 3, ["CPUExecutionProvider"])
    assert model.path == str(path) and model.input_name == "input"
    x = torch.arange(2 * 3 * 64 * 48, dtype=torch.float64).reshape(2, 3, 64, 48).permute(0, 1, 3, 2)  # not contiguous
    out = model(x.transpose(2, 3))
    assert out.shape == (2, 21, 16, 12) and out.dtype == torch.float32 and ort.calls[-1] == ("run", ["input"])
    assert out[0, 0, 0, 0].item() == pytest.approx(x.float().mean().item())
    inference.load_onnx_model(str(path), cfg, threads=1)
    assert ort.calls[-1][1].intra_op_num_threads == 1
    inference.load_onnx_model(str(path), cfg)
    assert not hasattr(ort.calls[-1][1], "intra_op_num_threads")  # threads 0: onnxruntime's default
    for shapes in ((["b", 3, 48, 64], ["b", 21, 16, 12]), (["b", 3, 64, 48], ["b", 21, 12, 16]),
                   (["b", 3, 64, 48], ["b", 14, 16, 12])):
        ort.in_shape, ort.out_shape = shapes
        with pytest.raises(CheckpointError, match=r"the config wants \[batch, 3, 64, 48\] to \[batch, 21, 16, 12\]"):
            inference.load_onnx_model(str(path), cfg)
    ort.fail = True
    with pytest.raises(CheckpointError, match=r"m\.onnx: onnxruntime cannot load it \(\[ONNXRuntimeError\] : 7 : "
                                              r"INVALID_PROTOBUF : bad file( x)*\)$") as err:
        inference.load_onnx_model(str(path), cfg)
    assert len(str(err.value)) == len(f"{path}: onnxruntime cannot load it ()") + 200  # its first 200 characters


def test_missing_onnxruntime_says_how_to_install_it(monkeypatch):
    from hrnet.evaluation.inference import import_onnxruntime

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r'onnxruntime is not installed \(.*\): pip install -e "\.\[export\]" '
                                          r"installs it"):
        import_onnxruntime()
