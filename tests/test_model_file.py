"""hrnet.evaluation.model_file: Lookahead slow weights read by parameter name, and the checkpoints
written before they were (a committed fixture, read by the optimizer index)."""
import json
import lzma
import os

import pytest
import torch

from conftest import ROOT, make_cfg
from hrnet.evaluation.model_file import load_model_file
from hrnet.runtime.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, training_state

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
TINY = ["MODEL.NAME", "hrnet_w18_small", "MODEL.IMAGE_SIZE", "[64, 64]", "MODEL.HEATMAP_SIZE", "[16, 16]"]
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def legacy(tmp_path_factory):
    """The fixture checkpoint (see tests/fixtures/make_legacy_lookahead.py), unpacked."""
    path = tmp_path_factory.mktemp("legacy") / "checkpoint_latest.pth"
    with lzma.open(os.path.join(FIXTURES, "legacy_lookahead_latest.pth.xz")) as f:
        path.write_bytes(f.read())
    with open(os.path.join(FIXTURES, "legacy_lookahead_init.json")) as f:
        init = json.load(f)
    return str(path), load_checkpoint(path), init


def _slow_by_old_index_logic(ck, model):
    """name -> slow weight as the code of 9b8b2cc matched them: index i of slow_weights is the i-th
    parameter of optim.factory.param_groups(model, TRAIN.WD, TRAIN.NO_WD_BN_BIAS)."""
    from optim.factory import param_groups

    groups = param_groups(model, 1e-4, True)  # the fixture's TRAIN.WD / TRAIN.NO_WD_BN_BIAS
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in groups for p in g["params"]]
    slow = ck["optimizer"]["lookahead"]["slow_weights"]
    return {name: slow[i] for i, name in enumerate(order)}


def test_legacy_checkpoint_loads_its_slow_weights_by_index(legacy):
    path, ck, init = legacy
    assert "slow_state_dict" not in ck and len(ck["optimizer"]["param_groups"]) == 2  # the old layout
    cfg = make_cfg(None, TINY)
    from hrnet import build_model

    expected = _slow_by_old_index_logic(ck, build_model(cfg))
    model, info = load_model_file(cfg, path, CPU, weights="slow")
    assert info.weights == "slow" and info.kind == "latest" and any("index" in n for n in info.notes)
    state = model.state_dict()
    for name, value in init.items():
        # one step into a cycle: the slow weights are still the initial ones, a constant per tensor
        assert torch.equal(state[name], expected[name]), name
        assert torch.equal(state[name], torch.full_like(state[name], value)), name
    for name, tensor in ck["state_dict"].items():  # buffers (BN statistics): the fast model's
        if name not in init:
            assert torch.equal(state[name], tensor), name
    fast, info = load_model_file(cfg, path, CPU, weights="fast")
    assert info.weights == "fast"
    differ = [n for n in init if not torch.equal(fast.state_dict()[n], state[n])]
    assert len(differ) > 50  # the fixture can tell slow from fast (every weight-decayed tensor moved)
    assert all(torch.equal(fast.state_dict()[n], ck["state_dict"][n]) for n in init)
    # auto: the run's TRAIN.LOOKAHEAD.EVAL_WEIGHTS (slow)
    auto, info = load_model_file(cfg, path, CPU)
    assert info.weights == "slow" and all(torch.equal(auto.state_dict()[n], state[n]) for n in init)


def _mid_cycle_lookahead(cfg, order):
    """A model and Lookahead(Adam) over ``order(params)``, 4 steps with k 3: fast != slow."""
    from hrnet import build_model
    from optim import Lookahead

    torch.manual_seed(0)
    model = build_model(cfg)
    opt = Lookahead(torch.optim.Adam(order(list(model.parameters())), lr=1e-2), k=3)
    x = torch.randn(2, 3, 32, 32)
    for _ in range(4):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    with opt.slow_weights():
        slow = {n: p.detach().clone() for n, p in model.named_parameters()}
    return model, opt, slow


def _save_latest(path, cfg, model, opt):
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [5])
    save_checkpoint(training_state(model=model, optimizer=opt, scheduler=sched, warmup=None, scaler=None, epoch=1,
                                   global_step=4, best_nme=1.0, best_epoch=0, history=[], rng=[], world_size=1,
                                   wall_time=0.0, config=cfg.dump()), path)


@pytest.fixture(scope="module")
def swapped(tmp_path_factory):
    """A checkpoint_latest.pth (the current writer) of an optimizer whose parameter order is not the
    model's: two same-shape tensors, ``names[i]`` and ``names[j]``, swapped (a timm update, a frozen
    layer); the live slow weights by name."""
    cfg = make_cfg(os.path.join(ROOT, "experiments", "hand_lookahead_adam.yaml"), TINY)
    from hrnet import build_model

    named = list(build_model(cfg).named_parameters())
    names, shapes = [n for n, _ in named], [tuple(p.shape) for _, p in named]
    i = next(i for i in range(len(shapes)) if shapes.index(shapes[i]) != i)  # a shape seen before
    j = shapes.index(shapes[i])

    def swap(params):
        params[i], params[j] = params[j], params[i]
        return params

    model, opt, slow = _mid_cycle_lookahead(cfg, swap)
    path = str(tmp_path_factory.mktemp("swapped") / "checkpoint_latest.pth")
    _save_latest(path, cfg, model, opt)
    return cfg, path, slow, names[i], names[j]


def test_slow_weights_are_read_by_name_whatever_the_optimizer_order(swapped, tmp_path):
    cfg, path, slow, a, b = swapped
    assert not torch.equal(slow[a], slow[b]) and slow[a].shape == slow[b].shape
    assert set(load_checkpoint(path)["slow_state_dict"]) == set(slow)
    loaded, info = load_model_file(cfg, path, CPU)
    assert info.weights == "slow" and not info.notes
    for name, value in slow.items():
        assert torch.equal(loaded.state_dict()[name], value), name
    # The same file read by the optimizer index (the old way) swaps the two tensors, silently.
    ck = load_checkpoint(path)
    del ck["slow_state_dict"]
    save_checkpoint(ck, tmp_path / "by_index.pth")
    by_index, _ = load_model_file(cfg, str(tmp_path / "by_index.pth"), CPU)
    assert torch.equal(by_index.state_dict()[a], slow[b])


def test_slow_state_dict_naming_another_model_is_refused(swapped, tmp_path):
    cfg, path, _, _, _ = swapped
    ck = load_checkpoint(path)
    path = str(tmp_path / "checkpoint_latest.pth")
    ck["slow_state_dict"]["backbone.extra.weight"] = ck["slow_state_dict"].pop("head.3.weight")
    save_checkpoint(ck, path)
    with pytest.raises(CheckpointError, match=r"checkpoint_latest.pth: slow weights for 1 names .*backbone.extra"):
        load_model_file(cfg, path, CPU)
    ck["slow_state_dict"]["head.3.weight"] = ck["slow_state_dict"].pop("backbone.extra.weight")[:, :5]
    save_checkpoint(ck, path)
    with pytest.raises(CheckpointError, match=r"slow weight head.3.weight has shape \(21, 5, 1, 1\)"):
        load_model_file(cfg, path, CPU)


def test_auto_reads_the_slow_weights_of_a_lookahead_file_without_a_config(swapped, tmp_path):
    """No stored config (so no TRAIN.LOOKAHEAD.EVAL_WEIGHTS): auto falls back to the slow weights, what
    Lookahead evaluates, never the fast ones."""
    cfg, path, slow, a, _ = swapped
    ck = load_checkpoint(path)
    del ck["config"]
    save_checkpoint(ck, tmp_path / "no_config.pth")
    model, info = load_model_file(cfg, str(tmp_path / "no_config.pth"), CPU)
    assert info.weights == "slow" and info.config is None
    assert torch.equal(model.state_dict()[a], slow[a])


def test_a_heatmap_size_the_file_was_not_trained_at_is_refused(swapped):
    """MODEL.HEATMAP_SIZE is an architecture key: decoding at another size misplaces every joint."""
    from hrnet.evaluation.model_file import ConfigMismatchError

    cfg, path, _, _, _ = swapped
    other = cfg.clone()
    other.defrost()
    other.MODEL.HEATMAP_SIZE = [32, 32]
    other.freeze()
    with pytest.raises(ConfigMismatchError, match=r"checkpoint_latest\.pth was trained with another model than the "
                                                  r"config: MODEL\.HEATMAP_SIZE: \[16, 16\] -> \[32, 32\] \(use the"):
        load_model_file(other, path, CPU)


def test_model_best_of_recalibrated_slow_weights_answers_to_slow(swapped, tmp_path):
    """A model_best.pth validated on ``slow+bn`` weights holds slow weights: ``--weights slow`` takes it,
    ``--weights fast`` is refused naming what the file holds."""
    cfg, path, slow, a, _ = swapped
    best = str(tmp_path / "model_best.pth")
    save_checkpoint({"state_dict": slow | {k: v for k, v in load_checkpoint(path)["state_dict"].items()
                                           if k not in slow},
                     "epoch": 1, "NME": 0.2, "eval_weights": "slow+bn", "config": cfg.dump()}, best)
    model, info = load_model_file(cfg, best, CPU, weights="slow")
    assert (info.kind, info.weights, info.epoch, info.nme) == ("best", "slow+bn", 1, 0.2)
    assert torch.equal(model.state_dict()[a], slow[a])
    with pytest.raises(CheckpointError, match=r"model_best\.pth holds only the slow\+bn weights \(asked for fast\); "
                                              r"use checkpoint_latest\.pth for the fast weights"):
        load_model_file(cfg, best, CPU, weights="fast")
