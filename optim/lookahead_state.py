"""Lookahead's settings and the ``"lookahead"`` entry of its ``state_dict``: checks, packing, unpacking.

``Lookahead.state_dict()`` is the inner optimizer's ``state_dict()`` plus ``"lookahead"``::

    k, alpha, pullback_momentum, momentum_keys    the settings (saved ones win on load)
    num_steps, cycle_step                         counters (0 <= cycle_step < k)
    slow_weights   {i: tensor}                    phi of parameter i
    slow_momentum  {i: {key: tensor}}             m_slow of parameter i (pullback mode only)

``i`` is the parameter's index in ``param_groups`` order (groups in order, parameters in order
within a group), the same index as the inner ``"state"``. Checkpoints of this format exist: keep
it readable.
"""
from __future__ import annotations

import math
import numbers
from itertools import chain
from typing import Any, Dict, List, Mapping, NamedTuple, Sequence, Tuple

import torch

#: What happens to the inner optimizer's momentum at a sync (see :class:`optim.lookahead.Lookahead`).
PULLBACK_MODES = ("none", "reset", "pullback")


def check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"Lookahead k (fast steps per slow update) must be an integer >= 1, got {k!r}")
    return int(k)


def check_alpha(alpha: Any) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not (0.0 < float(alpha) <= 1.0) \
            or not math.isfinite(float(alpha)):
        raise ValueError(f"Lookahead alpha (slow step size) must satisfy 0 < alpha <= 1, got {alpha!r}")
    return float(alpha)


def check_pullback(mode: Any) -> str:
    if mode not in PULLBACK_MODES:
        raise ValueError(f"Lookahead pullback_momentum must be one of {', '.join(PULLBACK_MODES)}, got {mode!r}")
    return mode


class Settings(NamedTuple):
    """The checked settings and counters of a saved ``"lookahead"`` entry."""

    k: int
    alpha: float
    pullback_momentum: str
    num_steps: int
    cycle_step: int


def pack(settings: Settings, momentum_keys: Sequence[str], slow: Sequence[Sequence[torch.Tensor]],
         slow_momentum: Mapping[torch.Tensor, Mapping[str, torch.Tensor]], params: Sequence[torch.Tensor]
         ) -> Dict[str, Any]:
    """The ``"lookahead"`` entry: ``slow`` holds the slow weights per group, ``slow_momentum`` the
    slow momentum by parameter, ``params`` the flat parameter list. Tensors are references to the
    live buffers (as in torch)."""
    index = {id(p): i for i, p in enumerate(params)}
    return {
        "k": settings.k,
        "alpha": settings.alpha,
        "pullback_momentum": settings.pullback_momentum,
        "momentum_keys": list(momentum_keys),
        "num_steps": settings.num_steps,
        "cycle_step": settings.cycle_step,
        "slow_weights": dict(enumerate(chain.from_iterable(slow))),
        "slow_momentum": {index[id(p)]: dict(m) for p, m in slow_momentum.items() if id(p) in index},
    }


def check_settings(la: Mapping[str, Any]) -> Settings:
    """The settings and counters of a saved entry, each checked (``ValueError`` naming it)."""
    k, alpha = check_k(la["k"]), check_alpha(la["alpha"])
    mode = check_pullback(la["pullback_momentum"])
    num_steps, cycle_step = int(la["num_steps"]), int(la["cycle_step"])
    if not 0 <= cycle_step < k:
        raise ValueError(f"Lookahead.load_state_dict: cycle_step {cycle_step} not in [0, k={k})")
    return Settings(k, alpha, mode, num_steps, cycle_step)


def check_slow_weights(la: Mapping[str, Any], params: Sequence[torch.Tensor]) -> None:
    """``ValueError`` unless the saved slow weights are one per parameter, each of its shape."""
    saved_slow = la["slow_weights"]
    if sorted(saved_slow) != list(range(len(params))):
        raise ValueError(f"Lookahead.load_state_dict: slow weights for {len(saved_slow)} parameters, "
                         f"the optimizer has {len(params)}")
    for i, p in enumerate(params):
        if tuple(saved_slow[i].shape) != tuple(p.shape):
            raise ValueError(f"Lookahead.load_state_dict: slow weight of parameter {i} has shape "
                             f"{tuple(saved_slow[i].shape)}, the parameter {tuple(p.shape)}")


@torch.no_grad()
def unpack_slow(la: Mapping[str, Any], params: Sequence[torch.Tensor], group_sizes: Sequence[int]
                ) -> Tuple[List[List[torch.Tensor]], Dict[torch.Tensor, Dict[str, torch.Tensor]]]:
    """Copies of the saved slow weights, split into groups of ``group_sizes`` parameters (each copy
    like its parameter: device, dtype, strides), and the slow momentum by parameter."""
    saved_slow = la["slow_weights"]
    flat = [torch.empty_like(p).copy_(saved_slow[i]) for i, p in enumerate(params)]
    slow_momentum: Dict[torch.Tensor, Dict[str, torch.Tensor]] = {}
    for i, moms in la.get("slow_momentum", {}).items():
        p = params[int(i)]
        slow_momentum[p] = {key: torch.empty_like(p).copy_(m) for key, m in moms.items()}
    sizes = list(group_sizes)
    return [flat[sum(sizes[:j]):sum(sizes[:j + 1])] for j in range(len(sizes))], slow_momentum
