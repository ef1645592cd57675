"""hrnet.models.hrnet: HRNetV2 heatmap model on timm, official-layout weights, pretrained loading."""
import logging

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import make_cfg
from hrnet import HRNetHeatmap, build_model, load_pretrained, to_official_state_dict

W18_PARAMS = 9_641_661  # trunk 9,562,260 (timm hrnet_w18 without classifier) + head 79,401


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial BN statistics/affine so that a wrongly mapped tensor changes the output."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a loaded 2-core machine OpenMP barriers make 2 threads many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def w18():
    torch.manual_seed(0)
    model = build_model(make_cfg())  # channels_last, the default
    _randomise_bn(model)
    return model.eval()


def test_w18_parameters_and_no_unused_modules(w18):
    assert sum(p.numel() for p in w18.parameters()) == W18_PARAMS
    assert w18.branch_channels == [18, 36, 72, 144] and w18.head[0].in_channels == 270
    names = [n for n, _ in w18.named_parameters()]
    assert not any(n.startswith(f"backbone.{k}") for n in names
                   for k in ("incre_modules", "downsamp_modules", "final_layer", "classifier"))


def test_output_shapes_and_layouts(w18):
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        y256 = w18(torch.randn(1, 3, 256, 256))
        y = w18(x)
    assert y256.shape == (1, 21, 64, 64) and y256.is_contiguous()
    assert y.shape == (1, 21, 32, 32)
    # channels_last (the fixture) and contiguous NCHW give the same heatmaps, both as contiguous NCHW.
    assert w18.head[0].weight.is_contiguous(memory_format=torch.channels_last)
    nchw = build_model(make_cfg(opts=["CHANNELS_LAST", "False"]))
    assert nchw.head[0].weight.is_contiguous()
    nchw.load_state_dict(w18.state_dict())
    with torch.no_grad():
        y_nchw = nchw.eval()(x)
    assert y_nchw.is_contiguous()
    torch.testing.assert_close(y_nchw, y, rtol=1e-4, atol=1e-4 * y.abs().max().item())


def test_fusion_is_bilinear_like_the_official_model():
    """timm's fuse_layers with nearest upsampling replaced: the output equals the official
    HRNet-Facial fusion ``F.interpolate(size=x[i].shape[2:], mode='bilinear')`` of the same layers."""
    torch.manual_seed(0)
    model = HRNetHeatmap("hrnet_w18_small", num_joints=3).eval()
    _randomise_bn(model)
    ups = [m for m in model.modules() if isinstance(m, nn.Upsample)]
    assert ups and all(m.mode == "bilinear" and m.align_corners is False for m in ups)
    module = model.backbone.stage4[0]  # 4 branches
    xs = [torch.randn(1, c, 16 >> i, 16 >> i) for i, c in enumerate(module.num_in_chs)]
    with torch.no_grad():
        branches = [b(x) for b, x in zip(module.branches, xs)]
        ours = module([x.clone() for x in xs])
        for i, fuse in enumerate(module.fuse_layers):
            y = branches[i]
            for j, f in enumerate(fuse):
                if j > i:  # official: conv + BN, then bilinear to the target size
                    z = f[1](f[0](branches[j]))
                    y = y + F.interpolate(z, size=branches[i].shape[2:], mode="bilinear", align_corners=False)
                elif j < i:
                    y = y + f(branches[j])
            torch.testing.assert_close(ours[i], F.relu(y))


def test_head_upsamples_the_branches_bilinearly():
    """The head's input: branch 0 and branches 1-3 upsampled to its size by bilinear interpolation
    (align_corners=False, as F.interpolate of the official head), concatenated: the model's output
    equals the head applied to that reference, and differs from nearest upsampling."""
    torch.manual_seed(0)
    model = HRNetHeatmap("hrnet_w18_small", num_joints=3).eval()
    _randomise_bn(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.backbone(x)
        size = feats[0].shape[-2:]
        ref = model.head(torch.cat([feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                                                 for f in feats[1:]], 1))
        nearest = model.head(torch.cat([feats[0]] + [F.interpolate(f, size=size, mode="nearest")
                                                     for f in feats[1:]], 1))
        out = model(x)
    torch.testing.assert_close(out, ref)
    assert (out - nearest).abs().max() > 100 * (out - ref).abs().max() + 1e-6


def test_every_batchnorm_uses_model_bn_momentum():
    """MODEL.BN_MOMENTUM (an unusual 0.037) reaches every BatchNorm, checked by behaviour: after one
    training forward from zeroed statistics, each running mean is momentum x the batch mean of its input."""
    momentum = 0.037
    torch.manual_seed(0)
    model = build_model(make_cfg(opts=["MODEL.NAME", "hrnet_w18_small", "MODEL.NUM_JOINTS", "3",
                                       "MODEL.BN_MOMENTUM", str(momentum), "CHANNELS_LAST", "False"])).train()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(bns) > 50
    means = {}
    for m in bns:
        m.reset_running_stats()
        m.register_forward_pre_hook(lambda mod, inp: means.__setitem__(mod, inp[0].detach().mean((0, 2, 3))))
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    assert len(means) == len(bns)  # every BN ran once
    for m in bns:
        torch.testing.assert_close(m.running_mean, momentum * means[m], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name, channels", [
    ("hrnet_w18_small", 240), ("hrnet_w18_small_v2", 270), ("hrnet_w32", 480), ("hrnet_w48", 720)])
def test_every_listed_name_builds(name, channels):
    cfg = make_cfg(opts=["MODEL.NAME", name, "MODEL.NUM_JOINTS", "4", "CHANNELS_LAST", "False"])
    model = build_model(cfg)
    assert model.head[0].in_channels == channels and model.head[3].out_channels == 4
    if name.startswith("hrnet_w18_small"):  # forward only the cheap ones (the wide ones share the code)
        with torch.no_grad():
            assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 4, 16, 16)


def test_bad_model_config_names_the_key():
    with pytest.raises(ValueError, match="MODEL.NAME"):
        build_model(make_cfg(opts=["MODEL.NAME", "resnet50"]))
    with pytest.raises(ValueError, match="MODEL.IMAGE_SIZE"):
        build_model(make_cfg(opts=["MODEL.IMAGE_SIZE", "[250, 256]"]))
    with pytest.raises(ValueError, match="MODEL.HEATMAP_SIZE"):
        build_model(make_cfg(opts=["MODEL.HEATMAP_SIZE", "[32, 32]"]))
    with pytest.raises(ValueError, match="multiples of 32"):
        HRNetHeatmap("hrnet_w18_small")(torch.randn(1, 3, 64, 80))


def test_bf16_autocast_train_step():
    torch.manual_seed(0)
    model = HRNetHeatmap("hrnet_w18_small", num_joints=3).to(memory_format=torch.channels_last).train()
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    # the last convolution runs in float32: heatmaps finer than bf16's 8-bit mantissa
    assert y.dtype == torch.float32 and y.shape == (2, 3, 16, 16)
    assert not torch.equal(y, y.to(torch.bfloat16).float())
    F.mse_loss(y.float(), torch.rand(2, 3, 16, 16)).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)  # every parameter is used


def test_official_facial_checkpoint_loads_strictly(w18, tmp_path):
    """HRNet-Facial layout: ``conv1.*`` ... ``stage4.*``, ``head.*``, 'module.' under 'state_dict'."""
    official = {"module." + k: v for k, v in to_official_state_dict(w18).items()}
    assert "module.stage4.2.fuse_layers.0.3.0.weight" in official and "module.head.3.weight" in official
    path = tmp_path / "HR18-hand.pth"
    torch.save({"epoch": 60, "state_dict": official}, path)
    torch.manual_seed(123)  # different init: equal outputs come from the file
    model = build_model(make_cfg(opts=["MODEL.PRETRAINED", str(path)])).eval()
    report = load_pretrained(model, str(path), strict=True)
    assert len(report.loaded) == len(w18.state_dict()) and not report.skipped
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(model(x), w18(x))


def test_other_joint_count_skips_the_final_layer(tmp_path, caplog):
    torch.manual_seed(1)
    face = HRNetHeatmap("hrnet_w18_small", num_joints=98).eval()  # a WFLW-like model
    _randomise_bn(face)
    path = tmp_path / "HR18-WFLW.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in to_official_state_dict(face).items()}}, path)
    model = HRNetHeatmap("hrnet_w18_small", num_joints=21).eval()
    final = model.head[3].weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="hrnet.models.hrnet"):
        report = load_pretrained(model, str(path))
    assert report.skipped == ["head.3.weight", "head.3.bias"] and not report.missing and not report.unexpected
    assert "98" in caplog.text and "head.3.weight" in caplog.text
    assert torch.equal(model.head[3].weight, final)  # left at init
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # everything before the final conv is the file's
        torch.testing.assert_close(model.head[:3](torch.cat(_up(model, x), 1)),
                                   face.head[:3](torch.cat(_up(face, x), 1)))
    with pytest.raises(RuntimeError, match="HR18-WFLW.pth"):
        load_pretrained(model, str(path), strict=True)


def _up(model, x):
    feats = model.backbone(x)
    return [feats[0]] + [F.interpolate(f, size=feats[0].shape[-2:], mode="bilinear", align_corners=False)
                         for f in feats[1:]]


def test_imagenet_classification_weights_load_trunk(tmp_path, caplog):
    """timm / HRNet-Image-Classification layout: trunk + incre/downsamp/final_layer/classifier, top level."""
    torch.manual_seed(2)
    imagenet = timm.create_model("hrnet_w18_small", pretrained=False)  # classification model, official names
    path = tmp_path / "hrnet_w18_small_imagenet.pth"
    torch.save(imagenet.state_dict(), path)
    model = HRNetHeatmap("hrnet_w18_small", num_joints=21)
    with caplog.at_level(logging.WARNING, logger="hrnet.models.hrnet"):
        report = load_pretrained(model, str(path))
    assert report.ignored and all(k.startswith(("incre_modules", "downsamp_modules", "final_layer", "classifier"))
                                  for k in report.ignored)
    assert not report.unexpected and report.missing and all(k.startswith("head.") for k in report.missing)
    assert "head.0.weight" in caplog.text  # missing keys are logged
    assert torch.equal(model.backbone.stage4[0].branches[3][1].conv2.weight,
                       imagenet.stage4[0].branches[3][1].conv2.weight)


def test_bad_weight_files_raise_naming_the_file(tmp_path):
    model = HRNetHeatmap("hrnet_w18_small", num_joints=3)
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_model(make_cfg(opts=["MODEL.PRETRAINED", str(missing)]))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="garbage.pth"):
        load_pretrained(model, str(garbage))
    unrelated = tmp_path / "unrelated.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, unrelated)
    with pytest.raises(RuntimeError, match="unrelated.pth"):
        load_pretrained(model, str(unrelated))
    wider = tmp_path / "w18_v2.pth"  # another width: an error, not a half-loaded model
    torch.save(HRNetHeatmap("hrnet_w18_small_v2", num_joints=3).state_dict(), wider)
    with pytest.raises(RuntimeError, match="w18_v2.pth.*shape"):
        load_pretrained(model, str(wider))
