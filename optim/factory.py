"""Optimizer and LR-schedule factories from the yacs config (``TRAIN.*``).

    opt = build_optimizer(cfg, model)        # TRAIN.OPTIMIZER, TRAIN.LOOKAHEAD.*, TRAIN.LR/WD/...
    warmup = build_warmup(cfg, opt)          # None, or step() after each of the first WARMUP_ITERS iterations
    sched = build_scheduler(cfg, opt)        # MultiStepLR, step() once after each epoch

Both schedulers are chainable on the same optimizer: the LR is
``TRAIN.LR * warmup_factor(iteration) * TRAIN.LR_FACTOR ** (milestones passed)``.
On resume, build the optimizer and both schedulers first, then load their state dicts
(a scheduler's constructor changes the LR the optimizer state restores).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LinearLR, LRScheduler, MultiStepLR

from .lookahead import PULLBACK_MODES, Lookahead

__all__ = ["OPTIMIZERS", "build_optimizer", "build_scheduler", "build_warmup", "param_groups",
           "valid_optimizer_names"]

#: Names built here with torch.optim (foreach implementations); anything else timm knows passes through.
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "lookahead")


def _timm_names() -> List[str]:
    try:
        from timm.optim import list_optimizers
    except ImportError:  # timm too old for the optimizer registry
        return []
    return [n for n in list_optimizers() if not n.startswith("lookahead")]


def valid_optimizer_names() -> List[str]:
    """Every accepted ``TRAIN.OPTIMIZER``: ours first, then timm's other names."""
    return list(OPTIMIZERS) + sorted(set(_timm_names()) - set(OPTIMIZERS))


def param_groups(model: nn.Module, weight_decay: float, no_wd_bn_bias: bool) -> List[Dict[str, Any]]:
    """Trainable parameters in model order; with ``no_wd_bn_bias`` and ``weight_decay > 0`` two groups:
    ``{"params": ndim > 1, "weight_decay": wd}`` and ``{"params": ndim <= 1 (BN, biases), "weight_decay": 0}``.
    Empty groups are dropped.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(model).__name__} has no trainable parameters to optimize")
    if not (no_wd_bn_bias and weight_decay > 0):
        return [{"params": params, "weight_decay": weight_decay}]
    groups = [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def _build_base(name: str, key: str, train, groups: List[Dict[str, Any]]) -> Optimizer:
    """One non-Lookahead optimizer ``name`` (the config key it came from is ``key``)."""
    lr, wd = float(train.LR), float(train.WD)
    betas = tuple(float(b) for b in train.ADAM_BETAS)
    if name == "sgd":
        if train.NESTEROV and train.MOMENTUM <= 0:
            raise ValueError(f"TRAIN.NESTEROV needs TRAIN.MOMENTUM > 0, got {train.MOMENTUM}")
        return torch.optim.SGD(groups, lr=lr, momentum=float(train.MOMENTUM), weight_decay=wd,
                               nesterov=bool(train.NESTEROV), foreach=True)
    if name in ("adam", "adamw"):
        if len(betas) != 2:
            raise ValueError(f"TRAIN.ADAM_BETAS must be [beta1, beta2], got {list(train.ADAM_BETAS)}")
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(groups, lr=lr, betas=betas, eps=float(train.ADAM_EPS), weight_decay=wd, foreach=True)
    if name == "rmsprop":
        momentum = train.RMSPROP_MOMENTUM if train.RMSPROP_MOMENTUM >= 0 else train.MOMENTUM
        return torch.optim.RMSprop(groups, lr=lr, alpha=float(train.RMSPROP_ALPHA), eps=float(train.RMSPROP_EPS),
                                   momentum=float(momentum), weight_decay=wd, foreach=True)
    if name.startswith("lookahead"):
        raise ValueError(f"{key}={name!r}: Lookahead is TRAIN.OPTIMIZER lookahead with TRAIN.LOOKAHEAD.INNER "
                         f"<name> (timm's lookahead_* wrappers are not used)")
    if name in _timm_names():
        from timm.optim import create_optimizer_v2, get_optimizer_info

        info = get_optimizer_info(name)
        extra: Dict[str, Any] = {}
        if info.has_betas and info.num_betas == len(betas):
            extra["betas"] = betas
        # timm's own eps defaults are kept (they differ per optimizer, e.g. Adafactor's 1e-30).
        return create_optimizer_v2(groups, opt=name, lr=lr, weight_decay=wd, momentum=float(train.MOMENTUM),
                                   **extra)
    raise ValueError(f"{key}={name!r} is not a known optimizer; valid names: "
                     f"{', '.join(valid_optimizer_names())}")


def build_optimizer(cfg, model: nn.Module) -> Optimizer:
    """The optimizer of ``cfg.TRAIN`` over ``model``'s trainable parameters.

    ``TRAIN.OPTIMIZER``: ``sgd`` (``MOMENTUM``, ``NESTEROV``), ``adam``/``adamw`` (``ADAM_BETAS``,
    ``ADAM_EPS``), ``rmsprop`` (``RMSPROP_ALPHA``, ``RMSPROP_EPS``, ``RMSPROP_MOMENTUM``; a negative
    value takes ``MOMENTUM``), ``lookahead`` (:class:`Lookahead` around ``TRAIN.LOOKAHEAD.INNER``
    with ``K``, ``ALPHA``, ``PULLBACK``), or any other name of ``timm.optim.list_optimizers()``
    (lr, weight decay, momentum and 2-tuple betas passed on; timm's eps defaults kept).
    ``TRAIN.LR`` and ``TRAIN.WD`` apply to all; ``TRAIN.NO_WD_BN_BIAS`` exempts ndim <= 1
    parameters (BN weights/biases, conv biases) from weight decay. The torch optimizers use
    their foreach (multi-tensor) implementations. Build it after moving the model to its device.
    Raises ``ValueError`` naming the config key for a bad name or value.
    """
    train = cfg.TRAIN
    name = str(train.OPTIMIZER).lower()
    groups = param_groups(model, float(train.WD), bool(train.NO_WD_BN_BIAS))
    if name != "lookahead":
        return _build_base(name, "TRAIN.OPTIMIZER", train, groups)
    la = train.LOOKAHEAD
    inner = str(la.INNER).lower()
    if inner == "lookahead" or inner.startswith("lookahead_"):
        raise ValueError(f"TRAIN.LOOKAHEAD.INNER={la.INNER!r}: Lookahead cannot wrap itself; use one of "
                         f"{', '.join(n for n in valid_optimizer_names() if n != 'lookahead')}")
    base = _build_base(inner, "TRAIN.LOOKAHEAD.INNER", train, groups)
    if la.PULLBACK not in PULLBACK_MODES:
        raise ValueError(f"TRAIN.LOOKAHEAD.PULLBACK must be one of {', '.join(PULLBACK_MODES)}, got {la.PULLBACK!r}")
    try:
        return Lookahead(base, k=la.K, alpha=la.ALPHA, pullback_momentum=la.PULLBACK)
    except ValueError as exc:
        raise ValueError(f"TRAIN.LOOKAHEAD.K={la.K} / ALPHA={la.ALPHA} / PULLBACK={la.PULLBACK!r}: {exc}") from exc


def build_scheduler(cfg, optimizer: Optimizer) -> MultiStepLR:
    """``MultiStepLR(milestones=TRAIN.LR_STEP, gamma=TRAIN.LR_FACTOR)``; call ``step()`` once after each epoch.

    After epoch ``e`` (0-based) has been trained and ``step()`` called ``e + 1`` times, the LR is
    ``TRAIN.LR * LR_FACTOR ** (number of milestones <= e + 1)``: with [20, 25] epochs 0..19 train at
    ``LR``, 20..24 at ``LR * 0.1``, 25.. at ``LR * 0.01``.
    """
    steps = list(cfg.TRAIN.LR_STEP)
    # >= 1 as load_config requires: a milestone 0 would decay the LR before the first epoch
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in steps) or steps != sorted(steps):
        raise ValueError(f"TRAIN.LR_STEP must be increasing epoch numbers >= 1, got {steps}")
    if not cfg.TRAIN.LR_FACTOR > 0:
        raise ValueError(f"TRAIN.LR_FACTOR must be positive, got {cfg.TRAIN.LR_FACTOR}")
    return MultiStepLR(optimizer, milestones=steps, gamma=float(cfg.TRAIN.LR_FACTOR))


def build_warmup(cfg, optimizer: Optimizer) -> Optional[LRScheduler]:
    """Linear warm-up over ``TRAIN.WARMUP_ITERS`` iterations, or ``None`` when it is 0.

    The LR of iteration ``i`` (0-based) is ``LR * (f + (1 - f) * i / WARMUP_ITERS)`` for
    ``i < WARMUP_ITERS`` (``f = TRAIN.WARMUP_FACTOR``), then ``LR``: call ``step()`` after each of the
    first ``WARMUP_ITERS`` optimizer steps (further calls change nothing). Chainable with
    :func:`build_scheduler` (the factors multiply).
    """
    iters, factor = int(cfg.TRAIN.WARMUP_ITERS), float(cfg.TRAIN.WARMUP_FACTOR)
    if iters < 0:
        raise ValueError(f"TRAIN.WARMUP_ITERS must be >= 0, got {iters}")
    if iters == 0:
        return None
    if not 0 < factor <= 1:
        raise ValueError(f"TRAIN.WARMUP_FACTOR must be in (0, 1], got {factor}")
    return LinearLR(optimizer, start_factor=factor, end_factor=1.0, total_iters=iters)
