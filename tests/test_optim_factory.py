"""optim.factory: build_optimizer / build_scheduler / build_warmup from the yacs config."""
from __future__ import annotations

import io

import pytest
import torch

from conftest import make_cfg
from optim import Lookahead, build_optimizer, build_scheduler, build_warmup


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
                               torch.nn.Linear(4 * 4 * 4, 2))


def _build(*opts, model=None):
    return build_optimizer(make_cfg(opts=list(opts)), model or _model())


def test_sgd_settings():
    opt = _build("TRAIN.OPTIMIZER", "sgd", "TRAIN.LR", "0.05", "TRAIN.MOMENTUM", "0.8", "TRAIN.NESTEROV", "True",
                 "TRAIN.WD", "0.001")
    assert type(opt) is torch.optim.SGD
    g = opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["nesterov"], g["weight_decay"], g["foreach"]) == (0.05, 0.8, True, 0.001, True)


@pytest.mark.parametrize("name,cls", [("adam", torch.optim.Adam), ("ADAMW", torch.optim.AdamW)])
def test_adam_settings(name, cls):
    opt = _build("TRAIN.OPTIMIZER", name, "TRAIN.ADAM_BETAS", "[0.8, 0.99]", "TRAIN.ADAM_EPS", "1e-6")
    assert type(opt) is cls
    g = opt.param_groups[0]
    assert (g["betas"], g["eps"], g["lr"], g["foreach"]) == ((0.8, 0.99), 1e-6, 1e-4, True)


def test_rmsprop_settings_and_momentum_fallback():
    opt = _build("TRAIN.OPTIMIZER", "rmsprop", "TRAIN.RMSPROP_ALPHA", "0.9", "TRAIN.RMSPROP_EPS", "1e-5")
    g = opt.param_groups[0]
    assert type(opt) is torch.optim.RMSprop and (g["alpha"], g["eps"], g["momentum"]) == (0.9, 1e-5, 0.0)
    opt = _build("TRAIN.OPTIMIZER", "rmsprop", "TRAIN.RMSPROP_MOMENTUM", "-1.0", "TRAIN.MOMENTUM", "0.7")
    assert opt.param_groups[0]["momentum"] == 0.7


def test_no_weight_decay_for_bn_and_bias():
    model = _model()
    opt = _build("TRAIN.OPTIMIZER", "sgd", "TRAIN.WD", "0.01", "TRAIN.NO_WD_BN_BIAS", "True", model=model)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert ids(decay["params"]) == ids([model[0].weight, model[3].weight])
    assert ids(no_decay["params"]) == ids([model[0].bias, model[1].weight, model[1].bias, model[3].bias])
    # Off, or no decay at all: one group with everything.
    for opts in (("TRAIN.WD", "0.01"), ("TRAIN.NO_WD_BN_BIAS", "True")):
        opt = _build("TRAIN.OPTIMIZER", "sgd", *opts, model=model)
        assert len(opt.param_groups) == 1 and len(opt.param_groups[0]["params"]) == 6


def test_frozen_parameters_are_left_out():
    model = _model()
    model[0].weight.requires_grad_(False)
    opt = _build("TRAIN.OPTIMIZER", "adam", model=model)
    assert all(p is not model[0].weight for p in opt.param_groups[0]["params"])


@pytest.mark.parametrize("inner,cls", [("adam", torch.optim.Adam), ("sgd", torch.optim.SGD)])
def test_lookahead(inner, cls):
    opt = _build("TRAIN.OPTIMIZER", "lookahead", "TRAIN.LOOKAHEAD.INNER", inner, "TRAIN.LOOKAHEAD.K", "6",
                 "TRAIN.LOOKAHEAD.ALPHA", "0.8", "TRAIN.LOOKAHEAD.PULLBACK", "reset", "TRAIN.WD", "0.1",
                 "TRAIN.NO_WD_BN_BIAS", "True")
    assert isinstance(opt, Lookahead) and type(opt.optimizer) is cls
    assert (opt.k, opt.alpha, opt.pullback_momentum) == (6, 0.8, "reset")
    assert opt.param_groups is opt.optimizer.param_groups and len(opt.param_groups) == 2
    assert [len(s) for s in opt._slow] == [2, 4]


def test_timm_names_pass_through():
    opt = _build("TRAIN.OPTIMIZER", "lamb", "TRAIN.LR", "0.003", "TRAIN.ADAM_BETAS", "[0.85, 0.98]")
    assert type(opt).__name__ == "Lamb"
    assert opt.param_groups[0]["lr"] == 0.003 and tuple(opt.param_groups[0]["betas"]) == (0.85, 0.98)
    opt = _build("TRAIN.OPTIMIZER", "lookahead", "TRAIN.LOOKAHEAD.INNER", "radam")
    assert isinstance(opt, Lookahead) and "RAdam" in type(opt.optimizer).__name__


@pytest.mark.parametrize("opts,match", [
    (("TRAIN.OPTIMIZER", "adamm"), r"TRAIN.OPTIMIZER='adamm' is not a known optimizer; valid names: sgd, adam, "
                                   r"adamw, rmsprop, lookahead, .*lamb"),
    (("TRAIN.OPTIMIZER", "lookahead_adam"), "TRAIN.OPTIMIZER lookahead with TRAIN.LOOKAHEAD.INNER"),
    (("TRAIN.OPTIMIZER", "lookahead", "TRAIN.LOOKAHEAD.INNER", "lookahead"), "TRAIN.LOOKAHEAD.INNER=.*itself"),
    (("TRAIN.OPTIMIZER", "lookahead", "TRAIN.LOOKAHEAD.INNER", "foo"), "TRAIN.LOOKAHEAD.INNER='foo' is not"),
    (("TRAIN.OPTIMIZER", "lookahead", "TRAIN.LOOKAHEAD.K", "0"), r"TRAIN.LOOKAHEAD.K=0 .*integer >= 1"),
    (("TRAIN.OPTIMIZER", "lookahead", "TRAIN.LOOKAHEAD.ALPHA", "1.5"), r"TRAIN.LOOKAHEAD.K=5 / ALPHA=1.5 .*0 < alpha <= 1"),
    (("TRAIN.OPTIMIZER", "lookahead", "TRAIN.LOOKAHEAD.PULLBACK", "zero"), "TRAIN.LOOKAHEAD.PULLBACK must be"),
    (("TRAIN.OPTIMIZER", "lookahead", "TRAIN.LOOKAHEAD.INNER", "rmsprop", "TRAIN.LOOKAHEAD.PULLBACK", "reset"),
     "TRAIN.LOOKAHEAD.K=5 .*momentum=0"),
    (("TRAIN.OPTIMIZER", "sgd", "TRAIN.NESTEROV", "True", "TRAIN.MOMENTUM", "0.0"), "TRAIN.NESTEROV needs"),
])
def test_bad_config_names_the_key(opts, match):
    with pytest.raises(ValueError, match=match):
        _build(*opts)


# --------------------------------------------------------------------------- schedules
def _run(cfg, epochs: int, iters: int, start_state=None, lookahead=False):
    """LR seen by each iteration; the schedules are stepped as the trainer does. Returns lrs, final states."""
    model = _model()
    opt = build_optimizer(cfg, model)
    warmup, sched = build_warmup(cfg, opt), build_scheduler(cfg, opt)
    first_epoch = 0
    if start_state is not None:
        opt.load_state_dict(start_state["opt"])
        sched.load_state_dict(start_state["sched"])
        if warmup is not None:
            warmup.load_state_dict(start_state["warmup"])
        first_epoch = start_state["epoch"]
    lrs = []
    for epoch in range(first_epoch, epochs):
        for it in range(iters):
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()  # no gradients: only the schedule matters here
            if warmup is not None and epoch * iters + it < cfg.TRAIN.WARMUP_ITERS:
                warmup.step()
        sched.step()
    state = {"opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": epochs,
             "warmup": warmup.state_dict() if warmup is not None else None}
    return lrs, state


def test_multistep_schedule_over_30_epochs():
    cfg = make_cfg(opts=["TRAIN.LR", "0.001"])
    lrs, _ = _run(cfg, 30, 1)
    assert build_warmup(cfg, build_optimizer(cfg, _model())) is None
    assert lrs == pytest.approx([1e-3] * 20 + [1e-4] * 5 + [1e-5] * 5, rel=1e-12)


@pytest.mark.parametrize("optimizer", ["adam", "lookahead"])
def test_warmup_composes_with_multistep_and_survives_state_dict(optimizer):
    # 4 iterations per epoch, warm-up over 6 iterations from 0.1, LR x0.5 after epochs 1 and 3.
    cfg = make_cfg(opts=["TRAIN.OPTIMIZER", optimizer, "TRAIN.LR", "1.0", "TRAIN.WARMUP_ITERS", "6",
                         "TRAIN.WARMUP_FACTOR", "0.1", "TRAIN.LR_STEP", "[1, 3]", "TRAIN.LR_FACTOR", "0.5"])
    lrs, _ = _run(cfg, 4, 4)
    warm = [0.1 + 0.9 * i / 6 for i in range(6)] + [1.0] * 10
    decay = [1.0] * 4 + [0.5] * 8 + [0.25] * 4
    assert lrs == pytest.approx([w * d for w, d in zip(warm, decay)], rel=1e-9)

    for stop in (1, 2):  # save mid warm-up (after epoch 1) and after it (epoch 2)
        first, state = _run(cfg, stop, 4)
        buf = io.BytesIO()
        torch.save(state, buf)
        buf.seek(0)
        rest, _ = _run(cfg, 4, 4, start_state=torch.load(buf, weights_only=True))
        assert first + rest == pytest.approx(lrs, rel=1e-12), f"resumed after epoch {stop}"


def test_bad_schedule_config():
    model = _model()
    for opts, match in [(["TRAIN.WARMUP_ITERS", "5", "TRAIN.WARMUP_FACTOR", "0.0"], "TRAIN.WARMUP_FACTOR"),
                        (["TRAIN.WARMUP_ITERS", "-1"], "TRAIN.WARMUP_ITERS")]:
        cfg = make_cfg(opts=opts)
        with pytest.raises(ValueError, match=match):
            build_warmup(cfg, build_optimizer(cfg, model))
    cfg = make_cfg(opts=["TRAIN.LR_FACTOR", "0.0"])
    with pytest.raises(ValueError, match="TRAIN.LR_FACTOR"):
        build_scheduler(cfg, build_optimizer(cfg, model))


# --- mutation-tested edges (tools/mutation.py optim_factory) ---------------------------------------

def test_param_groups_documented_shape_and_no_trainable_parameters():
    from optim.factory import param_groups

    model = _model()
    decay, no_decay = param_groups(model, 0.01, True)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.01, 0.0)
    assert param_groups(model, 0.01, False) == [{"params": list(model.parameters()), "weight_decay": 0.01}]
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="Sequential has no trainable parameters to optimize"):
        param_groups(model, 0.01, True)


def test_every_torch_optimizer_takes_lr_weight_decay_and_foreach():
    for name in ("sgd", "adam", "adamw", "rmsprop"):
        g = _build("TRAIN.OPTIMIZER", name, "TRAIN.LR", "0.0123", "TRAIN.WD", "0.004").param_groups[0]
        assert (g["lr"], g["weight_decay"], g["foreach"]) == (0.0123, 0.004, True), name
    g = _build("TRAIN.OPTIMIZER", "rmsprop", "TRAIN.RMSPROP_MOMENTUM", "0.3", "TRAIN.MOMENTUM", "0.7").param_groups[0]
    assert g["momentum"] == 0.3  # its own momentum when >= 0


def test_timm_optimizers_get_momentum_and_only_matching_betas():
    opt = _build("TRAIN.OPTIMIZER", "sgdp", "TRAIN.LR", "0.02", "TRAIN.MOMENTUM", "0.7", "TRAIN.WD", "0.003")
    g = opt.param_groups[0]
    assert type(opt).__name__ == "SGDP" and (g["lr"], g["momentum"], g["weight_decay"]) == (0.02, 0.7, 0.003)
    assert "betas" not in g  # no betas for an optimizer without them
    # Adan has 3 betas: our 2 are not passed, timm's defaults stay
    from timm.optim import Adan

    g = _build("TRAIN.OPTIMIZER", "adan", "TRAIN.ADAM_BETAS", "[0.8, 0.9]").param_groups[0]
    assert tuple(g["betas"]) == Adan(torch.nn.Linear(1, 1).parameters()).defaults["betas"]


def test_bad_values_name_the_key_and_the_valid_choices():
    with pytest.raises(ValueError, match=r"TRAIN.ADAM_BETAS must be \[beta1, beta2\], got \[0.9, 0.99, 0.5\]"):
        _build("TRAIN.OPTIMIZER", "adam", "TRAIN.ADAM_BETAS", "[0.9, 0.99, 0.5]")
    with pytest.raises(ValueError, match=r"TRAIN.LOOKAHEAD.INNER='lookahead_adam': Lookahead cannot wrap itself; "
                                         r"use one of sgd, adam, adamw, rmsprop, (?!lookahead)[a-z]"):
        _build("TRAIN.OPTIMIZER", "lookahead", "TRAIN.LOOKAHEAD.INNER", "lookahead_adam")
    with pytest.raises(ValueError, match="PULLBACK must be one of none, reset, pullback, got 'zero'"):
        _build("TRAIN.OPTIMIZER", "lookahead", "TRAIN.LOOKAHEAD.PULLBACK", "zero")


@pytest.mark.parametrize("steps", [[25, 20], [20.5, 25], [True, 25], [-1, 20], [0, 20]])
def test_lr_step_must_be_increasing_epoch_numbers(steps):
    cfg = make_cfg(freeze=False)  # past load_config's own check: the factory checks again (a config built in code)
    cfg.TRAIN.LR_STEP = steps
    with pytest.raises(ValueError, match=r"TRAIN.LR_STEP must be increasing epoch numbers >= 1, got \["):
        build_scheduler(cfg, build_optimizer(cfg, _model()))


def test_lr_step_at_epoch_1_decays_after_the_first_epoch():
    cfg = make_cfg(opts=["TRAIN.LR", "1.0", "TRAIN.LR_STEP", "[1, 2]", "TRAIN.LR_FACTOR", "0.5"])
    lrs, _ = _run(cfg, 3, 1)
    assert lrs == pytest.approx([1.0, 0.5, 0.25])


def test_warmup_factor_bounds():
    model = _model()
    cfg = make_cfg(opts=["TRAIN.WARMUP_ITERS", "3", "TRAIN.WARMUP_FACTOR", "1.0"])  # allowed: no ramp
    assert build_warmup(cfg, build_optimizer(cfg, model)) is not None
    cfg = make_cfg(opts=["TRAIN.WARMUP_ITERS", "3", "TRAIN.WARMUP_FACTOR", "1.5"])
    with pytest.raises(ValueError, match=r"TRAIN.WARMUP_FACTOR must be in \(0, 1\], got 1.5"):
        build_warmup(cfg, build_optimizer(cfg, model))
