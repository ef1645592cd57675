"""hrnet.evaluation.evaluate (inference loop, flip test, COCO results) and tools/test.py (oracle, checkpoints)."""
import copy
import importlib.util
import json
import os
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from conftest import ROOT, make_cfg
from test_inference import _PoolHead, _wide_cfg
from data.transforms import get_affine_transform, transform_points
from hrnet.evaluation.evaluate import flip_back, run_inference, to_coco_results

TINY = ["MODEL.NAME", "hrnet_w18_small", "MODEL.IMAGE_SIZE", "[128,128]", "MODEL.HEATMAP_SIZE", "[32,32]"]
METRIC_KEYS = {"NME", "failure_rate@0.1", "PCK@0.2", "AUC", "EPE", "num_images", "per_joint_NME"}


def _load_test_tool():
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    spec = importlib.util.spec_from_file_location("hrnet_test_tool", os.path.join(ROOT, "tools", "test.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def test_tool():
    return _load_test_tool()


class BlobModel(nn.Module):
    """Heatmap j = channel j of the input, 4x4 average-pooled: pooling cell h averages input
    pixels 4h .. 4h+3, centred on 4h + 1.5 as the project's convention, and it commutes with
    the horizontal flip. A Gaussian blob drawn at input pixel q comes out centred on (q - 1.5) / 4."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return F.avg_pool2d(x, 4) + self.bias


def _blob_samples(cfg, n=6, seed=0):
    """Samples as data.build_dataset makes them, with a 3-joint hand drawn as Gaussian blobs."""
    rng = np.random.default_rng(seed)
    size, hm_size = cfg.MODEL.IMAGE_SIZE, cfg.MODEL.HEATMAP_SIZE
    grid = np.arange(size[0], dtype=np.float64)
    items = []
    for i in range(n):
        center = rng.uniform(150, 250, 2)
        scale = np.array([200.0, 200.0]) * rng.uniform(0.8, 1.2)
        joints = np.concatenate([center + rng.uniform(-50, 50, (3, 2)), np.full((3, 1), 2.0)], 1)
        q = transform_points(joints[:, :2], get_affine_transform(center, scale, 0.0, size))
        sig = 4.0 * cfg.MODEL.SIGMA  # input pixels
        img = (np.exp(-((grid[None, :, None] - q[:, None, None, 1]) ** 2
                        + (grid[None, None, :] - q[:, None, None, 0]) ** 2) / (2 * sig ** 2)))
        items.append({
            "image": torch.from_numpy(img.astype(np.float32)),
            "target": torch.zeros(3, hm_size[1], hm_size[0]),
            "target_weight": torch.ones(3),
            "meta": {"image_id": 100 + i, "ann_id": 200 + i, "joints": joints.astype(np.float32),
                     "bbox": np.array([*(center - 60), 120, 100], dtype=np.float32),
                     "hm_to_img": get_affine_transform(center, scale, 0.0, hm_size, inverse=True)},
        })
    return items


@pytest.mark.parametrize("decode", ["argmax", "dark"])
def test_run_inference_maps_back_to_image_pixels_and_flip_test_is_unbiased(decode):
    opts = TINY + ["MODEL.NUM_JOINTS", "3", "TEST.DECODE", decode]
    cfg = make_cfg(opts=opts)
    cfg_flip = make_cfg(opts=opts + ["TEST.FLIP_TEST", "True"])
    items = _blob_samples(cfg)
    loader = DataLoader(items, batch_size=4)
    model = BlobModel().train()
    out = run_inference(model, loader, cfg, torch.device("cpu"), progress=False)
    out_flip = run_inference(model, loader, cfg_flip, torch.device("cpu"), progress=False)
    assert model.training  # mode restored
    gt = np.stack([it["meta"]["joints"] for it in items])
    assert out["preds"].shape == (6, 3, 2) and out["scores"].shape == (6, 3)
    np.testing.assert_array_equal(out["ann_id"], np.arange(200, 206))
    np.testing.assert_array_equal(out["image_id"], np.arange(100, 106))
    np.testing.assert_array_equal(out["joints"], gt)
    # 1 heatmap px = scale / 32 ~ 6 original px; argmax is within a quarter of it, DARK far closer.
    err = np.linalg.norm(out["preds"] - gt[..., :2], axis=-1)
    px = 240.0 / 32
    assert err.max() < (0.36 * px if decode == "argmax" else 0.05 * px)
    # The model commutes with the flip, so an exact flip-back leaves the prediction unchanged;
    # a one-pixel shift (official HRNet's convention) would move it by half a heatmap pixel.
    np.testing.assert_allclose(out_flip["preds"], out["preds"], atol=1e-3)
    assert "loss_sum" not in out


def test_run_inference_is_eval_mode_and_leaves_batchnorm_statistics_alone():
    """A real HRNet in train mode: run_inference predicts with the running statistics (eval mode),
    leaves every BN buffer bit-identical and the model in train mode. The reference decodes the
    heatmaps of an independent eval-mode forward."""
    from hrnet import build_model
    from data.codec import decode_heatmaps

    cfg = make_cfg(opts=["MODEL.NAME", "hrnet_w18_small", "MODEL.IMAGE_SIZE", "[64,64]", "MODEL.HEATMAP_SIZE",
                         "[16,16]", "MODEL.NUM_JOINTS", "3", "MODEL.BN_MOMENTUM", "0.5"])
    items = _blob_samples(cfg, n=4)
    torch.manual_seed(0)
    model = build_model(cfg)
    g = torch.Generator().manual_seed(1)
    for m in model.modules():  # running statistics far from any batch's: train and eval mode differ
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    images = torch.stack([it["image"] for it in items])  # 3 blob channels: an RGB-shaped input
    with torch.no_grad():
        ref_hm = copy.deepcopy(model).eval()(images)
        train_hm = copy.deepcopy(model).train()(images)
    assert (ref_hm - train_hm).abs().max() > 1e-3  # the two modes are distinguishable here
    out = run_inference(model.train(), DataLoader(items, batch_size=2), cfg, torch.device("cpu"), progress=False)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, buffers[k]), k
    xy, maxvals = decode_heatmaps(ref_hm, cfg.TEST.DECODE)
    mats = np.stack([it["meta"]["hm_to_img"] for it in items])
    np.testing.assert_allclose(out["scores"], maxvals.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["preds"], transform_points(xy.double().numpy(), mats), atol=1e-3)


def test_flip_back_is_the_mirror_of_the_input_flip():
    """Input x -> W-1-x equals heatmap x -> w-1-x for the 4h + 1.5 convention (average pooling)."""
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(flip_back(F.avg_pool2d(torch.flip(x, dims=[3]), 4)), F.avg_pool2d(x, 4))


def test_run_inference_sums_the_loss_and_uses_channels_last():
    cfg = make_cfg(opts=TINY + ["MODEL.NUM_JOINTS", "3", "CHANNELS_LAST", "True"])
    items = _blob_samples(cfg, n=5)
    seen = []

    class Probe(BlobModel):
        def forward(self, x):
            seen.append(x.is_contiguous(memory_format=torch.channels_last))
            return super().forward(x)

    def criterion(out, target, weight):
        return ((out - target) ** 2 * weight[..., None, None]).mean()

    out = run_inference(Probe(), DataLoader(items, batch_size=2), cfg, "cpu", criterion=criterion, progress=False)
    assert all(seen) and len(seen) == 3
    pooled = torch.stack([F.avg_pool2d(it["image"], 4) for it in items])
    assert out["count"] == 5
    assert out["loss_sum"] / out["count"] == pytest.approx(float((pooled ** 2).mean()), rel=1e-5)


def test_heatmap_size_mismatch_names_the_key():
    cfg = make_cfg(opts=TINY + ["MODEL.NUM_JOINTS", "3", "MODEL.HEATMAP_SIZE", "[16,16]"])
    items = _blob_samples(make_cfg(opts=TINY + ["MODEL.NUM_JOINTS", "3"]), n=2)
    with pytest.raises(ValueError, match="MODEL.HEATMAP_SIZE"):
        run_inference(BlobModel(), DataLoader(items, batch_size=2), cfg, "cpu", progress=False)


def test_coco_results_format():
    res = {"preds": np.arange(2 * 21 * 2, dtype=np.float64).reshape(2, 21, 2),
           "scores": np.linspace(0, 1, 42).reshape(2, 21), "image_id": np.array([7, 7]),
           "ann_id": np.array([70, 71])}
    out = to_coco_results(res)
    assert [r["id"] for r in out] == [70, 71] and all(r["image_id"] == 7 and r["category_id"] == 1 for r in out)
    assert len(out[0]["keypoints"]) == 63
    assert out[1]["keypoints"][:3] == [42.0, 43.0, pytest.approx(res["scores"][1, 0])]
    assert out[1]["score"] == pytest.approx(res["scores"][1].mean())
    json.dumps(out)  # plain Python types


def _real(real_hands, which):
    folder, ann = {"onehand10k": ("onehand10k", "test_onehand10k.json"),
                   "freihand": ("freihand", "test_freihand.json")}[which]
    return ["DATASET.FORMAT", "coco", "DATASET.ROOT", os.path.join(real_hands, folder),
            "DATASET.TESTSET", ann, "WORKERS", "0"]


@pytest.mark.parametrize("which", ["onehand10k", "freihand"])
@pytest.mark.parametrize("decode", ["argmax", "dark"])
def test_oracle_floor_on_real_hands(test_tool, real_hands, tmp_path, which, decode):
    out = tmp_path / "oracle"
    assert test_tool.main(["--oracle", "--no-progress", "--out", str(out), "TEST.DECODE", decode]
                          + _real(real_hands, which)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == {"onehand10k": 4, "freihand": 8}[which]
    assert metrics["NME"] < 0.01
    if decode == "dark":  # DARK inverts a Gaussian target exactly: the conventions agree
        assert metrics["NME"] < 1e-4
    assert metrics["PCK@0.2"] == 1.0


def test_test_tool_writes_both_json_files_for_a_checkpoint(test_tool, real_hands, tmp_path):
    from hrnet import build_model

    cfg = make_cfg(opts=TINY)
    torch.manual_seed(0)
    model = build_model(cfg)
    ckpt = tmp_path / "model_best.pth"
    torch.save({"state_dict": model.state_dict(), "epoch": 3, "NME": 0.5}, ckpt)
    out = tmp_path / "eval"
    assert test_tool.main(["--model-file", str(ckpt), "--out", str(out), "--no-progress",
                           "TEST.FLIP_TEST", "True"] + TINY + _real(real_hands, "freihand")) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert metrics["num_images"] == 8 and len(metrics["per_joint_NME"]) == 21
    preds = json.loads((out / "predictions.json").read_text())
    assert len(preds) == 8
    # NME and failure rate recomputed from predictions.json and the annotation file (numpy reference).
    ann = json.loads((open(os.path.join(real_hands, "freihand", "test_freihand.json"))).read())
    gt = {a["id"]: a for a in ann["annotations"]}
    per_image = []
    for p in preds:
        a = gt[p["id"]]
        kp = np.asarray(a["keypoints"], dtype=np.float64).reshape(-1, 3)
        xy = np.asarray(p["keypoints"], dtype=np.float64).reshape(-1, 3)[:, :2]
        lab = kp[:, 2] > 0
        per_image.append(np.linalg.norm(xy[lab] - kp[lab, :2], axis=1).mean() / max(a["bbox"][2:4]))
    per_image = np.asarray(per_image)
    assert metrics["NME"] == pytest.approx(per_image.mean(), rel=1e-6)
    assert metrics["failure_rate@0.1"] == pytest.approx((per_image > 0.1).mean())
    assert set(preds[0]) == {"image_id", "category_id", "keypoints", "score", "id"}
    assert len(preds[0]["keypoints"]) == 63
    with open(out / "ced.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------- survivors of the evaluate mutation run
def test_recalibrate_bn_averages_the_first_batches_of_a_copy():
    """BN statistics recomputed as the plain average over the first ``num_batches`` batches (momentum
    None), in training mode, on a copy returned in eval mode (channels_last per the config); the
    model passed in keeps its statistics, momentum and mode."""
    from hrnet.evaluation.evaluate import recalibrate_bn

    seen = []

    class Probe(torch.nn.Module):
        def forward(self, x):
            seen.append(x.is_contiguous(memory_format=torch.channels_last))
            return x

    model = torch.nn.Sequential(Probe(), torch.nn.BatchNorm2d(3, momentum=0.3)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    batches = [{"image": torch.randn(4, 3, 5, 5, generator=g) * (i + 1) + i} for i in range(3)]
    cfg = make_cfg(None, ["CHANNELS_LAST", "True", "DEVICE", "cpu"])
    copy = recalibrate_bn(model, batches, 2, cfg, torch.device("cpu"))
    bn = copy[1]
    x = [b["image"] for b in batches[:2]]
    torch.testing.assert_close(bn.running_mean, torch.stack([b.mean((0, 2, 3)) for b in x]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([b.var((0, 2, 3), unbiased=True) for b in x]).mean(0))
    assert int(bn.num_batches_tracked) == 2 and not copy.training and seen == [True, True]
    recalibrate_bn(model, batches, 1, make_cfg(None, ["CHANNELS_LAST", "False", "DEVICE", "cpu"]), torch.device("cpu"))
    assert seen == [True, True, False]
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert model.training and model[1].momentum == 0.3


def _numpy_batches(n_batches=2, b=2, j=21, size=(48, 64), seed=0):
    """Batches as a list (no collate): tensors for the image, numpy float64 / int32 meta arrays."""
    from data.transforms import get_affine_transform

    g = torch.Generator().manual_seed(seed)
    out = []
    for k in range(n_batches):
        mats = np.stack([get_affine_transform(np.array([100.0 + 10 * i, 90.0]), np.array([120.0, 160.0]), 0.0,
                                              (size[0] // 4, size[1] // 4), inverse=True) for i in range(b)])
        out.append({"image": torch.randn(b, 3, size[1], size[0], generator=g),
                    "target": torch.rand(b, j, size[1] // 4, size[0] // 4, generator=g),
                    "target_weight": torch.ones(b, j),
                    "meta": {"hm_to_img": mats, "joints": np.zeros((b, j, 3)), "bbox": np.ones((b, 4)),
                             "image_id": np.arange(b, dtype=np.int32) + 10 * k,
                             "ann_id": np.arange(b, dtype=np.int32) + 100 * k}})
    return out


def test_run_inference_flip_test_and_output_types(real_hands, capsys):
    """Flip test: the mean of the heatmaps of the image and of the mirrored image mapped back (scores
    too); numpy meta accepted; outputs cast to float32 / int64; channels_last only when asked; the
    progress bar named ``test`` only with ``progress`` (its default), erased at the end."""
    from data.codec import HeatmapCodec
    from data.transforms import transform_points
    from hrnet.evaluation.evaluate import flip_back, run_inference

    cfg = _wide_cfg(real_hands, "TEST.FLIP_TEST", "True")
    seen = []

    class Probe(_PoolHead):
        def forward(self, x):
            seen.append(x.is_contiguous(memory_format=torch.channels_last))
            return super().forward(x)

    model, batches = Probe().eval(), _numpy_batches()
    out = run_inference(model, batches, cfg, torch.device("cpu"), progress=False)
    assert capsys.readouterr().err == "" and seen == [False, False]
    images = torch.cat([b["image"] for b in batches])
    with torch.no_grad():
        plain = model(images)
        hm = 0.5 * (plain + flip_back(model(torch.flip(images, dims=[3]))))
    assert not torch.allclose(hm, plain, atol=1e-3)  # the flip test changes the heatmaps here
    xy, scores = HeatmapCodec.from_cfg(cfg).decode(hm)
    mats = np.concatenate([b["meta"]["hm_to_img"] for b in batches])
    np.testing.assert_allclose(out["scores"], scores.numpy(), rtol=1e-5)
    np.testing.assert_allclose(out["preds"], transform_points(xy.double().numpy(), mats), atol=1e-4)
    assert [out[k].dtype for k in ("joints", "bbox", "image_id", "ann_id")] == [np.float32, np.float32, np.int64,
                                                                                np.int64]
    assert out["ann_id"].tolist() == [0, 1, 100, 101]
    run_inference(model, batches[:1], cfg, torch.device("cpu"))
    err = capsys.readouterr().err
    assert err.startswith("\rtest: ") and err.endswith("\r") and "\n" not in err, repr(err)


def test_run_inference_sums_the_loss_in_float64():
    """The loss of many batches is summed in float64: 2**24 + 1 survives (float32 would round it away)."""
    from hrnet.evaluation.evaluate import run_inference

    cfg = make_cfg(None, ["MODEL.IMAGE_SIZE", "[48, 64]", "MODEL.HEATMAP_SIZE", "[12, 16]", "CHANNELS_LAST", "False"])
    losses = iter([2.0 ** 24, 1.0])
    out = run_inference(_PoolHead().eval(), _numpy_batches(b=1), cfg, torch.device("cpu"),
                        criterion=lambda *args: torch.tensor(next(losses)), progress=False)
    assert out["loss_sum"] == 2.0 ** 24 + 1 and out["count"] == 2


def test_run_inference_and_oracle_of_an_empty_loader(capsys):
    from hrnet.evaluation.evaluate import run_inference, run_oracle

    cfg = make_cfg(None, ["MODEL.NUM_JOINTS", "5"])
    for out in (run_inference(_PoolHead(5), [], cfg, torch.device("cpu"), progress=False), run_oracle([], cfg, False)):
        got = {k: (v.shape, v.dtype) for k, v in out.items()}
        assert got == {"preds": ((0, 5, 2), np.float64), "scores": ((0, 5), np.float32),
                       "joints": ((0, 5, 3), np.float32), "bbox": ((0, 4), np.float32),
                       "image_id": ((0,), np.int64), "ann_id": ((0,), np.int64)}
    run_oracle(_numpy_batches(1, j=21), make_cfg(None, ["MODEL.IMAGE_SIZE", "[48, 64]", "MODEL.HEATMAP_SIZE",
                                                        "[12, 16]"]))  # progress by default
    assert capsys.readouterr().err.startswith("\roracle: ")


def test_coco_results_score_is_the_float64_mean_and_zero_without_joints():
    from hrnet.evaluation.evaluate import to_coco_results

    scores = np.full((1, 21), 0.1, np.float32)
    scores[0, :3] = [0.3, 0.7, 0.9]
    res = {"preds": np.zeros((1, 21, 2), np.float32), "scores": scores, "image_id": np.array([1]),
           "ann_id": np.array([2])}
    assert to_coco_results(res)[0]["score"] == float(scores.astype(np.float64).mean())
    none = {"preds": np.zeros((2, 0, 2)), "scores": np.zeros((2, 0)), "image_id": np.array([1, 1]),
            "ann_id": np.array([3, 4])}
    assert [(r["score"], r["keypoints"]) for r in to_coco_results(none)] == [(0.0, []), (0.0, [])]


def test_save_evaluation_files(tmp_path, monkeypatch):
    """metrics.json: every metric but the per-image array, plus ``extra``; predictions.json on one
    line; ced.png drawn with the failure threshold and title given (0.1 and the default title by
    default); an existing folder is fine."""
    from hrnet.evaluation import evaluate

    drawn = []
    monkeypatch.setattr(evaluate, "save_ced_plot", lambda *a: drawn.append(a))
    res = {"preds": np.zeros((1, 21, 2)), "scores": np.ones((1, 21), np.float32), "image_id": np.array([1]),
           "ann_id": np.array([2])}
    metrics = {"NME": 0.25, "per_image_NME": np.array([0.25])}
    out = tmp_path / "ev"
    out.mkdir()
    paths = evaluate.save_evaluation(str(out), metrics, res, extra={"weights": "slow"})
    assert json.loads((out / "metrics.json").read_text()) == {"NME": 0.25, "weights": "slow"}
    assert (out / "predictions.json").read_text().count("\n") == 0
    assert drawn == [(metrics["per_image_NME"], paths["ced"], 0.1, "")]
    evaluate.save_evaluation(str(out), metrics, res, 0.2, None, "run")
    assert drawn[-1][2:] == (0.2, "run") and json.loads((out / "metrics.json").read_text()) == {"NME": 0.25}


def test_ced_plot_draws_the_curve_the_threshold_and_the_numbers(tmp_path, monkeypatch):
    """ced.png: a 500 x 400 picture of the CED curve (401 thresholds up to twice the failure
    threshold), the threshold as a dashed grey line, NME / failures / n in the legend, the axes
    labelled; an all-NaN input still draws (NaN legend)."""
    from matplotlib.figure import Figure

    from hrnet.evaluation.evaluate import save_ced_plot
    from hrnet.evaluation.metrics import ced_curve

    figures = []
    savefig = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: figures.append(self) or savefig(self, *a, **k))
    per_image = np.array([0.05, 0.1, 0.3, np.nan])
    path = save_ced_plot(per_image, str(tmp_path / "sub" / "ced.png"))
    assert path == str(tmp_path / "sub" / "ced.png")
    import cv2

    assert cv2.imread(path).shape == (400, 500, 3)
    (ax,) = figures[-1].axes
    assert ax.get_subplotspec().get_geometry() == (1, 1, 0, 0)
    (line,) = ax.get_lines()[:1]
    x, y = ced_curve(per_image, 0.2, num=401)
    np.testing.assert_array_equal(line.get_xdata(), x)
    np.testing.assert_array_equal(line.get_ydata(), y)
    assert line.get_linewidth() == 2 and line.get_label() == "NME 0.1500, failures 33.3% (n=3)"
    vline = ax.get_lines()[1]
    assert list(vline.get_xdata()) == [0.1, 0.1] and vline.get_color() == "gray"
    assert vline.get_linestyle() == "--" and vline.get_linewidth() == 1
    assert ax.get_xlim() == (0.0, 0.2) and ax.get_ylim() == (0.0, 1.0)
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == (
        "NME (error / max(bbox w, h))", "fraction of images", "Cumulative error distribution")
    assert ax.xaxis.get_gridlines()[0].get_alpha() == 0.3 and ax.get_legend()._loc == 4  # lower right
    save_ced_plot(np.array([np.nan]), str(tmp_path / "nan.png"), 0.2, "run")
    ax = figures[-1].axes[0]
    assert ax.get_lines()[0].get_label() == "NME nan, failures nan% (n=0)" and ax.get_title() == "run"
    save_ced_plot(np.array([0.2, 0.3]), str(tmp_path / "edge.png"), 0.2)
    assert figures[-1].axes[0].get_lines()[0].get_label() == "NME 0.2500, failures 50.0% (n=2)"  # 0.2 is no failure
