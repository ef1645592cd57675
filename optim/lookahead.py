"""Lookahead (Zhang, Lucas, Hinton, Ba 2019, "k steps forward, 1 step back", Algorithm 1).

Slow weights ``phi`` are a copy of the parameters ``theta`` taken when the wrapper is built.
The inner optimizer updates ``theta`` as usual; after every ``k`` of its steps::

    phi   <- phi + alpha * (theta - phi)
    theta <- phi

:class:`Lookahead` is a real :class:`torch.optim.Optimizer`: its ``param_groups`` *are* the inner
optimizer's (the same list of the same dicts, also after ``load_state_dict``), so LR schedulers,
``zero_grad``, ``torch.amp.GradScaler`` (a skipped step is not counted), DDP and the step/state-dict
hooks of ``torch.optim.Optimizer`` work unchanged.

Cost: between syncs a step is the inner step plus a Python counter; a sync is one
``torch._foreach_lerp_`` and one ``torch._foreach_copy_`` per parameter group (no Python loop
over parameters; on CPU per cache-sized run of parameters, see ``Lookahead.chunk_bytes``), i.e.
4-5 memory passes over the parameters every ``k`` steps.

The settings checks and the ``state_dict`` format (what a checkpoint holds) are in
``optim/lookahead_state.py``.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from itertools import chain
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import torch
from torch.optim import Optimizer

from . import lookahead_state
from .lookahead_state import PULLBACK_MODES, check_alpha, check_k, check_pullback

__all__ = ["Lookahead", "PULLBACK_MODES", "MOMENTUM_KEYS"]

#: Inner-state entries treated as momentum (first moments): SGD/RMSprop ``momentum_buffer``,
#: Adam/AdamW/RAdam/NAdam/Lamb... ``exp_avg``. Second moments are never touched.
MOMENTUM_KEYS = ("momentum_buffer", "exp_avg")

_HOOK_DICTS = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks",
               "_optimizer_state_dict_pre_hooks", "_optimizer_state_dict_post_hooks",
               "_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks")


class Lookahead(Optimizer):
    """Lookahead around any ``torch.optim.Optimizer`` (Algorithm 1 of the paper, exactly).

    Args:
        optimizer: the inner ("fast") optimizer; build it first, on parameters already on their
            device (the slow weights are copies made here, with the parameters' device/dtype/strides).
        k: inner steps per slow update, an integer >= 1.
        alpha: slow step size, 0 < alpha <= 1. ``alpha == 1`` reproduces the inner optimizer
            bit for bit (the update is ``lerp`` with weight 1, which returns ``theta`` exactly).
        pullback_momentum: what a sync does to the inner momentum (the state entries named in
            ``momentum_keys``; SGD/RMSprop ``momentum_buffer``, Adam ``exp_avg``):

            * ``"none"``: nothing (the paper).
            * ``"reset"``: zero it in place. Adam's step count (bias correction) is not reset, so
              the next steps ramp the first moment up from zero.
            * ``"pullback"``: interpolate it like the weights, ``m <- m_slow + alpha * (m - m_slow)``,
              then ``m_slow <- m``; ``m_slow`` starts at zero (the momentum at ``phi_0``) and is a
              separate buffer (no aliasing of the inner buffer).

            Second moments (Adam ``exp_avg_sq``/``max_exp_avg_sq``, RMSprop ``square_avg`` and
            ``grad_avg``) are left alone in every mode, as in the paper's and the reference
            implementations: they are per-coordinate scale estimates, not a direction, and
            zeroing them would make the next step divide by ~eps.
        momentum_keys: inner-state keys handled as momentum (default :data:`MOMENTUM_KEYS`).

    Counting: only calls of :meth:`step` count; ``GradScaler.step`` skips ``step()`` when it finds
    inf/NaN gradients, so a skipped step never advances the cycle. :meth:`sync` ends a cycle
    early; ``with opt.slow_weights():`` evaluates ``phi`` without touching the trajectory.

    Not supported: CUDA-graph capture of ``step()`` (the cycle counter is a Python int).
    ``torch.compile(opt.step)`` compiles the inner step; the counter and the sync run eagerly.
    BatchNorm running statistics are buffers, not parameters: they belong to the fast weights.
    """

    # GradScaler then unscales the gradients itself and calls step() only when they are finite
    # (also for a fused inner optimizer, which then sees already-unscaled gradients).
    _step_supports_amp_scaling = False
    #: Sync in runs of about this many bytes per device type (cache locality on CPU; 0/absent: one run).
    chunk_bytes: Dict[str, int] = {"cpu": 256 << 10}

    def __init__(self, optimizer: Optimizer, k: int = 5, alpha: float = 0.5, pullback_momentum: str = "none",
                 momentum_keys: Sequence[str] = MOMENTUM_KEYS) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"Lookahead wraps a torch.optim.Optimizer, got {type(optimizer).__name__}")
        # Optimizer.__init__ is not called on purpose: it would build param groups of our own,
        # while ours must be the inner optimizer's. What it sets up besides is done here.
        self.optimizer = optimizer
        self.k = check_k(k)
        self.alpha = check_alpha(alpha)
        self.pullback_momentum = check_pullback(pullback_momentum)
        self.momentum_keys = tuple(momentum_keys)
        if self.pullback_momentum != "none" and optimizer.param_groups and all(
                g.get("momentum", None) == 0 for g in optimizer.param_groups):
            raise ValueError(f"Lookahead pullback_momentum={self.pullback_momentum!r} needs an inner optimizer "
                             f"with momentum, but {type(optimizer).__name__} has momentum=0 in every group")
        for name in _HOOK_DICTS:
            setattr(self, name, OrderedDict())
        self._patch_step_function()  # wraps Lookahead.step with the step pre/post hooks and profiling
        self._num_steps = 0  # inner steps taken through this wrapper
        self._cycle_step = 0  # inner steps since the last sync, in [0, k)
        self._in_slow_weights = False
        with torch.no_grad():
            self._slow: List[List[torch.Tensor]] = [_clone_all(g["params"]) for g in optimizer.param_groups]
        self._slow_momentum: Dict[torch.Tensor, Dict[str, torch.Tensor]] = {}  # param -> {key: m_slow}
        self._chunk_cache: Dict[int, Any] = {}

    # -- the Optimizer surface, delegated ------------------------------------------------------
    @property
    def param_groups(self) -> List[Dict[str, Any]]:  # type: ignore[override]
        """The inner optimizer's ``param_groups`` (the same list object)."""
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: List[Dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def state(self):  # type: ignore[override]
        """The inner optimizer's per-parameter state (the same dict). Slow weights live apart."""
        return self.optimizer.state

    @property
    def defaults(self) -> Dict[str, Any]:  # type: ignore[override]
        """The inner optimizer's defaults (Lookahead's own settings are ``k``, ``alpha``, ``pullback_momentum``)."""
        return self.optimizer.defaults

    @property
    def num_steps(self) -> int:
        """Inner steps taken through :meth:`step` (skipped GradScaler steps excluded)."""
        return self._num_steps

    @property
    def cycle_step(self) -> int:
        """Inner steps since the last sync, in ``[0, k)``; 0 means ``theta == phi``."""
        return self._cycle_step

    def __repr__(self) -> str:
        inner = "\n".join("    " + line for line in repr(self.optimizer).splitlines())
        return (f"Lookahead(k={self.k}, alpha={self.alpha}, pullback_momentum={self.pullback_momentum!r},\n"
                f"{inner}\n)")

    def __getstate__(self) -> Dict[str, Any]:
        # Hooks are not carried (as in torch.optim.Optimizer): they may be unpicklable closures.
        return {k: v for k, v in self.__dict__.items() if k not in _HOOK_DICTS and k != "_chunk_cache"}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._chunk_cache = {}
        for name in _HOOK_DICTS:
            if name not in self.__dict__:
                setattr(self, name, OrderedDict())
        self._patch_step_function()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @torch._disable_dynamo
    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Add a group to the inner optimizer; its slow weights start as copies of its parameters."""
        self.optimizer.add_param_group(param_group)
        self._adopt_new_groups()

    def _adopt_new_groups(self) -> None:
        # Also covers groups added to the inner optimizer directly.
        groups = self.optimizer.param_groups
        if len(groups) < len(self._slow):
            raise RuntimeError(f"Lookahead: the inner optimizer lost parameter groups "
                               f"({len(groups)} now, {len(self._slow)} with slow weights)")
        with torch.no_grad():
            for group in groups[len(self._slow):]:
                self._slow.append(_clone_all(group["params"]))

    # -- stepping -----------------------------------------------------------------------------
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:  # type: ignore[override]
        """One inner step; every ``k``-th one is followed by the slow update. Returns the closure's loss."""
        if self._in_slow_weights:
            raise RuntimeError("Lookahead.step() inside `with optimizer.slow_weights():` would train the slow "
                               "weights and lose the fast ones; step after the block")
        loss = self.optimizer.step() if closure is None else self.optimizer.step(closure)
        self._count_step()
        return loss

    @torch._disable_dynamo  # a Python counter: run eagerly (no recompilation per counter value)
    def _count_step(self) -> None:
        self._num_steps += 1
        self._cycle_step += 1
        if self._cycle_step >= self.k:
            self._sync()

    @torch._disable_dynamo
    def sync(self) -> bool:
        """End the current cycle now: the slow update (and momentum handling) on the steps taken so far.

        Afterwards ``theta == phi`` and a new cycle of ``k`` steps starts, so calling it mid-cycle
        changes the trajectory (use :meth:`slow_weights` to only look at ``phi``). At a cycle
        boundary (``cycle_step == 0``: just built, just synced) it does nothing. Returns whether
        it updated the weights.
        """
        if self._in_slow_weights:
            raise RuntimeError("Lookahead.sync() inside `with optimizer.slow_weights():`")
        if self._cycle_step == 0:
            return False
        self._sync()
        return True

    @torch.no_grad()
    def _sync(self) -> None:
        if len(self._slow) != len(self.optimizer.param_groups):
            self._adopt_new_groups()
        alpha = self.alpha
        for gi, (group, slow) in enumerate(zip(self.optimizer.param_groups, self._slow)):
            for slow_chunk, param_chunk in self._chunks(gi, group["params"], slow):
                # lerp_(phi, theta, alpha) = phi + alpha * (theta - phi); weight 1 gives theta exactly.
                torch._foreach_lerp_(slow_chunk, param_chunk, alpha)
                torch._foreach_copy_(param_chunk, slow_chunk)
        if self.pullback_momentum != "none":
            self._sync_momentum()
        self._cycle_step = 0

    def _chunks(self, gi: int, params: List[torch.Tensor], slow: List[torch.Tensor]):
        """The group's (slow, params) lists, split on CPU into runs of about ``chunk_bytes[device]``.

        On CPU the sync is memory-bound: lerp then copy over one cache-sized run at a time reads
        ``phi`` for the copy from cache (~20% faster on HRNet-W18 than one call over 38 MB).
        Elsewhere (CUDA) one call per group. Cached per group; rebuilt when either list object or
        its length changes (the cache holds the lists, so identity checks are sound).
        """
        cached = self._chunk_cache.get(gi)
        if cached is not None and cached[0] is params and cached[1] is slow and cached[2] == len(params) == len(slow):
            return cached[3]
        if len(params) != len(slow):
            raise RuntimeError(f"Lookahead: parameter group {gi} has {len(params)} parameters but {len(slow)} "
                               f"slow weights (parameters added to a group after the wrapper was built?)")
        limit = self.chunk_bytes.get(params[0].device.type, 0) if params else 0
        runs: List[Any] = []
        start, size = 0, 0
        for i, p in enumerate(params):  # once per group, not per sync
            size += p.numel() * p.element_size()
            if limit and size >= limit:
                runs.append((slow[start:i + 1], params[start:i + 1]))
                start, size = i + 1, 0
        if start < len(params):
            runs.append((slow[start:], params[start:]))
        self._chunk_cache[gi] = (params, slow, len(params), runs)
        return runs

    def _sync_momentum(self) -> None:
        state = self.optimizer.state
        pullback = self.pullback_momentum == "pullback"
        found = False
        for group in self.optimizer.param_groups:
            params = group["params"]
            limit = self.chunk_bytes.get(params[0].device.type, 0) if params else 0
            bufs: List[torch.Tensor] = []
            slows: List[torch.Tensor] = []
            size = 0
            for i, p in enumerate(params):  # bookkeeping only: collects buffers for a few foreach calls
                st = state.get(p)
                if st:
                    for key in self.momentum_keys:
                        buf = st.get(key)
                        if isinstance(buf, torch.Tensor) and buf.shape == p.shape:
                            bufs.append(buf)
                            size += buf.numel() * buf.element_size()
                            if pullback:
                                slow_m = self._slow_momentum.setdefault(p, {})
                                if key not in slow_m:
                                    slow_m[key] = torch.zeros_like(buf)
                                slows.append(slow_m[key])
                if bufs and (i == len(params) - 1 or (limit and size >= limit)):  # cache-sized runs, as _chunks
                    found = True
                    if pullback:  # m <- m_slow + alpha * (m - m_slow); m_slow <- m (a copy, not an alias)
                        torch._foreach_lerp_(slows, bufs, self.alpha)
                        torch._foreach_copy_(bufs, slows)
                    else:
                        torch._foreach_zero_(bufs)
                    bufs, slows, size = [], [], 0
        if not found and any(len(s) for s in state.values()):
            raise RuntimeError(f"Lookahead pullback_momentum={self.pullback_momentum!r}: the state of "
                               f"{type(self.optimizer).__name__} has none of the momentum keys "
                               f"{self.momentum_keys} (pass momentum_keys=... or use pullback_momentum='none')")

    # -- evaluating with the slow weights -------------------------------------------------------
    @contextlib.contextmanager
    def slow_weights(self) -> Iterator[None]:
        """``with opt.slow_weights():`` the parameters hold ``phi``; the fast weights come back exactly after.

        For evaluation or export of the slow weights. The trajectory is unchanged (``step`` and
        ``sync`` inside the block raise). Costs one temporary copy of the parameters.
        """
        if self._in_slow_weights:
            raise RuntimeError("Lookahead.slow_weights() is already active (no nesting)")
        if len(self._slow) != len(self.optimizer.param_groups):
            self._adopt_new_groups()
        groups = [(g["params"], slow) for g, slow in zip(self.optimizer.param_groups, self._slow) if g["params"]]
        with torch.no_grad():
            fast = [_clone_all(params) for params, _ in groups]
            for params, slow in groups:
                torch._foreach_copy_(params, slow)
        self._in_slow_weights = True
        try:
            yield
        finally:
            self._in_slow_weights = False
            with torch.no_grad():
                for (params, _), saved in zip(groups, fast):
                    torch._foreach_copy_(params, saved)

    # -- state dict ---------------------------------------------------------------------------
    def _all_params(self) -> List[torch.Tensor]:
        return list(chain.from_iterable(g["params"] for g in self.optimizer.param_groups))

    @torch._disable_dynamo
    def state_dict(self) -> Dict[str, Any]:
        """The inner ``state_dict()`` plus ``"lookahead"``: settings, counters and slow state.

        ``lookahead["slow_weights"]`` and ``["slow_momentum"]`` are keyed by the parameter index
        in ``param_groups`` order, the same index as the inner ``"state"`` (the format:
        ``optim/lookahead_state.py``). Tensors are references to the live buffers (as in torch):
        save or copy the dict before stepping again.
        """
        for hook in self._optimizer_state_dict_pre_hooks.values():
            hook(self)
        if len(self._slow) != len(self.optimizer.param_groups):
            self._adopt_new_groups()
        state_dict = dict(self.optimizer.state_dict())
        settings = lookahead_state.Settings(self.k, self.alpha, self.pullback_momentum, self._num_steps,
                                            self._cycle_step)
        state_dict["lookahead"] = lookahead_state.pack(settings, self.momentum_keys, self._slow,
                                                       self._slow_momentum, self._all_params())
        for hook in self._optimizer_state_dict_post_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    @torch._disable_dynamo
    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`: inner state, slow weights, counters and settings (k, alpha, mode).

        Like torch's ``load_state_dict`` for the learning rate, the saved ``k``/``alpha``/
        ``pullback_momentum`` win over the constructor's. The tensors are copied (no aliasing of
        the loaded dict). Build LR schedulers before calling this (torch's rule): their
        constructors change the LR that this restores.
        """
        state_dict = dict(state_dict)
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        if "lookahead" not in state_dict:
            raise ValueError("Lookahead.load_state_dict: the state dict has no 'lookahead' entry (saved from a "
                             "plain optimizer?); load it with `opt.optimizer.load_state_dict(sd)` to keep the "
                             "current slow weights")
        state_dict = dict(state_dict)
        la = state_dict.pop("lookahead")
        saved = lookahead_state.check_settings(la)
        if len(self._slow) != len(self.optimizer.param_groups):
            self._adopt_new_groups()
        params = self._all_params()
        lookahead_state.check_slow_weights(la, params)
        self.optimizer.load_state_dict(state_dict)  # validates the groups; may raise before we change anything
        self._slow, self._slow_momentum = lookahead_state.unpack_slow(
            la, params, [len(g["params"]) for g in self.optimizer.param_groups])
        self._chunk_cache = {}
        self.k, self.alpha, self.pullback_momentum = saved.k, saved.alpha, saved.pullback_momentum
        self.momentum_keys = tuple(la.get("momentum_keys", self.momentum_keys))
        self._num_steps, self._cycle_step = saved.num_steps, saved.cycle_step
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)


def _clone_all(tensors: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Detached copies with the same device, dtype and strides (channels_last stays channels_last)."""
    return [t.detach().clone() for t in tensors]
