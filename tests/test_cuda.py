"""The CUDA paths (skipped without CUDA): mixed-precision training steps with Lookahead,
channels_last, a tiny end-to-end run with resume, evaluation equal to the CPU's."""
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from conftest import ROOT, make_cfg

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available"),
              pytest.mark.timeout(300)]

TINY = ["MODEL.NAME", "hrnet_w18_small", "MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]",
        "MODEL.NUM_JOINTS", "3", "DEVICE", "cuda"]
LOOKAHEAD = os.path.join(ROOT, "experiments", "hand_lookahead_adam.yaml")


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_lookahead_training_steps_in_each_precision(precision):
    """Seven steps (one Lookahead sync at k = 5) of Lookahead(Adam) under hrnet.runtime.device's policy:
    finite, the loss goes down on a fixed batch, the slow weights moved, GradScaler only for fp16."""
    from hrnet import build_model
    from hrnet.runtime.device import amp_policy_from_cfg, select_device
    from optim import build_optimizer

    mode = ["AMP.MODE", "off"] if precision == "fp32" else ["AMP.MODE", "on", "AMP.DTYPE", precision]
    cfg = make_cfg(LOOKAHEAD, TINY + mode + ["TRAIN.LR", "1e-3"])
    device = select_device(cfg.DEVICE)
    policy = amp_policy_from_cfg(cfg, device)
    assert policy.name == precision and policy.use_scaler == (precision == "fp16")
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    opt = build_optimizer(cfg, model)
    scaler = policy.grad_scaler()
    assert scaler.is_enabled() == (precision == "fp16")
    x = torch.randn(4, 3, 64, 64, device=device).contiguous(memory_format=torch.channels_last)
    target = torch.rand(4, 3, 16, 16, device=device)
    start = [p.detach().clone() for p in model.parameters()]
    losses = []
    for _ in range(7):
        opt.zero_grad(set_to_none=True)
        with policy.autocast():
            out = model(x)
        if precision != "fp32":
            assert out.dtype in (torch.float32, getattr(torch, {"bf16": "bfloat16", "fp16": "float16"}[precision]))
        loss = F.mse_loss(out.float(), target)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    slow = opt.state_dict()["lookahead"]["slow_weights"]
    assert any(not torch.equal(slow[i], s) for i, s in enumerate(start))


def test_channels_last_equals_contiguous_on_cuda():
    from hrnet import build_model

    torch.manual_seed(0)
    nchw = build_model(make_cfg(opts=TINY + ["CHANNELS_LAST", "False"])).cuda().eval()
    cl = build_model(make_cfg(opts=TINY + ["CHANNELS_LAST", "True"])).cuda().eval()
    cl.load_state_dict(nchw.state_dict())
    assert cl.head[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64, device="cuda")
    with torch.no_grad():
        a, b = nchw(x), cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3 * a.abs().max().item())


def _run_cfg(real_hands, out, *opts):
    return make_cfg(LOOKAHEAD, TINY[:-4] + ["DEVICE", "cuda", "DATASET.FORMAT", "coco", "DATASET.ROOT",
                                            os.path.join(real_hands, "freihand"), "DATASET.TRAINSET",
                                            "test_freihand.json", "DATASET.TESTSET", "test_freihand.json",
                                            "TRAIN.BATCH_SIZE_PER_GPU", "4", "TEST.BATCH_SIZE_PER_GPU", "4",
                                            "WORKERS", "0", "TRAIN.LR", "1e-3", "OUTPUT_DIR", str(out)]
                    + [str(o) for o in opts])


def test_end_to_end_run_with_resume_on_cuda(real_hands, tmp_path):
    """3 epochs in one go vs 2 epochs then --resume to 3, on CUDA (validation, checkpoints, Lookahead):
    equal within tolerance (cuDNN kernels need not be bitwise repeatable)."""
    from hrnet.runtime.checkpoint import load_checkpoint
    from hrnet.engine.trainer import Trainer

    full = Trainer(_run_cfg(real_hands, tmp_path / "full", "TRAIN.END_EPOCH", 3)).fit()
    Trainer(_run_cfg(real_hands, tmp_path / "split", "TRAIN.END_EPOCH", 2)).fit()
    resumed = Trainer(_run_cfg(real_hands, tmp_path / "split", "TRAIN.END_EPOCH", 3), resume=True).fit()
    assert full["status"] == resumed["status"] == "finished"
    assert [h["epoch"] for h in resumed["history"]] == [0, 1, 2, 3]
    for a, b in zip(full["history"], resumed["history"]):
        assert b["NME"] == pytest.approx(a["NME"], rel=1e-2, abs=1e-4)
    run = "hand_lookahead_adam"
    sa = load_checkpoint(tmp_path / "full" / run / "checkpoint_latest.pth")["state_dict"]
    sb = load_checkpoint(tmp_path / "split" / run / "checkpoint_latest.pth")["state_dict"]
    for k, v in sa.items():
        if v.is_floating_point():
            torch.testing.assert_close(sb[k], v, rtol=1e-3, atol=1e-4, msg=k)
    assert os.path.isfile(tmp_path / "split" / run / "model_best.pth")


def test_evaluation_on_cuda_equals_cpu(real_hands):
    from data import build_dataset
    from hrnet import build_model
    from hrnet.evaluation.evaluate import run_inference

    cfg = make_cfg(opts=["MODEL.NAME", "hrnet_w18_small", "MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE",
                         "[16, 16]", "DATASET.FORMAT", "coco", "DATASET.ROOT", os.path.join(real_hands, "freihand"),
                         "DATASET.TESTSET", "test_freihand.json", "WORKERS", "0", "TEST.DECODE", "dark",
                         "AMP.MODE", "off"])
    loader = DataLoader(build_dataset(cfg, is_train=False), batch_size=4)
    torch.manual_seed(0)
    model = build_model(cfg)
    cpu = run_inference(model, loader, cfg, torch.device("cpu"), progress=False)
    gpu = run_inference(model.cuda(), loader, cfg, torch.device("cuda"), progress=False)
    np.testing.assert_allclose(gpu["scores"], cpu["scores"], rtol=1e-3, atol=1e-5)
    # 1 heatmap px is ~ 224 * 1.25 / 16 original px: agree to a small fraction of it where the peak is clear
    err = np.abs(gpu["preds"] - cpu["preds"]).max(-1)
    assert np.median(err) < 0.05 and (err < 0.5).mean() > 0.95
