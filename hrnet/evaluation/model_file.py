"""Load a model file for evaluation, demo or export, and say which weights it holds.

Accepted files (see ``hrnet.runtime.checkpoint`` for the run checkpoint layouts):

* ``model_best.pth``: ``{"state_dict", "epoch", "NME", "eval_weights", "config"}``; the weights
  training validated (``eval_weights``: model | fast | slow | slow+bn).
* ``checkpoint_latest.pth``: ``state_dict`` holds the training weights; for a Lookahead run those
  are the *fast* weights and the slow ones are read by parameter name from ``slow_state_dict``.
  Checkpoints written before that key existed hold them only in
  ``optimizer["lookahead"]["slow_weights"]``, keyed by the parameter index in the optimizer's
  ``param_groups`` order, which is rebuilt from the model (``optim.factory.param_groups`` of the
  run's ``TRAIN.WD`` / ``TRAIN.NO_WD_BN_BIAS``; a note says so).
* a plain state_dict (name -> tensor), or ``{"model": state_dict}``.

The config stored in a run checkpoint (yaml text under ``config``) is compared with the
caller's on :data:`ARCH_KEYS`: a model trained at 64 px and evaluated at 128 px runs without an
error but measures something else, so a difference is refused unless ``check_config=False``
(then it is a warning and listed in ``ModelFileInfo.mismatches``).
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from configs import CfgNode, ConfigError, config_value

from hrnet.runtime.checkpoint import CheckpointError, extract_state_dict, load_checkpoint

__all__ = ["ARCH_KEYS", "WEIGHT_CHOICES", "ConfigMismatchError", "ModelFileInfo", "load_model_file",
           "checkpoint_config", "config_mismatches"]

#: Config keys that must agree between the checkpoint and the evaluation config.
ARCH_KEYS = ("MODEL.NAME", "MODEL.IMAGE_SIZE", "MODEL.HEATMAP_SIZE", "MODEL.NUM_JOINTS")
#: ``weights=`` choices of :func:`load_model_file`.
WEIGHT_CHOICES = ("auto", "slow", "fast")


class ConfigMismatchError(ConfigError):
    """The evaluation config differs from the checkpoint's on :data:`ARCH_KEYS` (names file and keys)."""


@dataclass(frozen=True)
class ModelFileInfo:
    """What :func:`load_model_file` loaded.

    ``kind``: best | latest | state_dict. ``weights``: model (no Lookahead) | fast | slow |
    slow+bn. ``epoch`` / ``nme``: as stored (None when absent). ``config``: the checkpoint's
    config (None for a plain state_dict). ``mismatches``: ``"KEY: checkpoint -> cfg"`` lines
    accepted with ``check_config=False``. ``notes``: caveats worth printing.
    """

    path: str
    kind: str
    weights: str
    epoch: Optional[int] = None
    nme: Optional[float] = None
    config: Optional[CfgNode] = None
    mismatches: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line, e.g. ``run/checkpoint_latest.pth: slow weights (Lookahead), epoch 3``."""
        what = {"model": "weights", "fast": "fast weights (Lookahead)", "slow": "slow weights (Lookahead)",
                "slow+bn": "slow weights (Lookahead) with recalibrated BN"}.get(self.weights, self.weights)
        parts = [f"{self.path}: {what}"]
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch}")
        if self.nme is not None:
            parts.append(f"validation NME {self.nme:.5f}")
        return ", ".join(parts)


def checkpoint_config(obj: Mapping, path: str) -> Optional[CfgNode]:
    """The config stored under ``config`` (yaml text), or None when there is none."""
    text = obj.get("config") if isinstance(obj, Mapping) else None
    if not text:
        return None
    if not isinstance(text, str):
        raise CheckpointError(f"{path}: 'config' is a {type(text).__name__}, expected yaml text")
    try:
        return CfgNode.load_cfg(text)
    except Exception as exc:  # yaml errors come in several types
        raise CheckpointError(f"{path}: the stored config is not valid yaml ({exc})") from exc


def config_mismatches(ck_cfg: CfgNode, cfg: CfgNode, keys=ARCH_KEYS) -> List[str]:
    """``"KEY: <checkpoint value> -> <cfg value>"`` for each of ``keys`` that differs (missing keys skip)."""
    out = []
    for key in keys:
        old, new = config_value(ck_cfg, key, None), config_value(cfg, key, None)
        if old is not None and old != new:
            out.append(f"{key}: {old!r} -> {new!r}")
    return out


def _slow_by_name(fast: Dict[str, torch.Tensor], slow: Any, model: nn.Module,
                  path: str) -> Dict[str, torch.Tensor]:
    """``fast`` with the parameters named in ``slow`` (the checkpoint's ``slow_state_dict``) replaced.

    Parameters it does not name (frozen in training: no slow copy) keep their fast values.
    """
    params = dict(model.named_parameters())
    if not isinstance(slow, Mapping) or not slow or not all(torch.is_tensor(v) for v in slow.values()):
        raise CheckpointError(f"{path}: slow_state_dict is not a mapping of parameter names to tensors")
    unknown = [name for name in slow if name not in params]
    if unknown:
        raise CheckpointError(f"{path}: slow weights for {len(unknown)} names the model of MODEL.NAME does not "
                              f"have as parameters, e.g. {unknown[:3]}")
    state = dict(fast)
    for name, tensor in slow.items():
        if tuple(tensor.shape) != tuple(params[name].shape):
            raise CheckpointError(f"{path}: slow weight {name} has shape {tuple(tensor.shape)}, the model's "
                                  f"{tuple(params[name].shape)}")
        state[name] = tensor
    return state


def _slow_by_index(fast: Dict[str, torch.Tensor], optimizer: Mapping, model: nn.Module,
                   ck_cfg: Optional[CfgNode], path: str) -> Dict[str, torch.Tensor]:
    """Checkpoints written before ``slow_state_dict`` existed: the slow weights are keyed by the index
    in the ``param_groups`` order of ``optim.factory.param_groups(model, TRAIN.WD, TRAIN.NO_WD_BN_BIAS)``
    of the run's config, rebuilt here (group sizes and shapes checked)."""
    from optim.factory import param_groups

    lookahead = optimizer["lookahead"]
    slow = lookahead.get("slow_weights") if isinstance(lookahead, Mapping) else None
    if not isinstance(slow, Mapping):
        raise CheckpointError(f"{path}: optimizer['lookahead'] has no slow_weights")
    wd = float(config_value(ck_cfg, "TRAIN.WD", None) or 0.0) if ck_cfg is not None else 0.0
    no_wd = bool(config_value(ck_cfg, "TRAIN.NO_WD_BN_BIAS", None)) if ck_cfg is not None else False
    groups = param_groups(model, wd, no_wd)
    order = [p for g in groups for p in g["params"]]
    saved_groups = [len(g.get("params", ())) for g in optimizer.get("param_groups", [])]
    if saved_groups and saved_groups != [len(g["params"]) for g in groups]:
        raise CheckpointError(f"{path}: the optimizer's parameter groups {saved_groups} do not match the model's "
                              f"{[len(g['params']) for g in groups]} (TRAIN.WD / TRAIN.NO_WD_BN_BIAS changed?)")
    if sorted(slow) != list(range(len(order))):
        raise CheckpointError(f"{path}: slow weights for {len(slow)} parameters, the model has {len(order)}")
    names = {id(p): n for n, p in model.named_parameters()}
    return _slow_by_name(fast, {names[id(p)]: slow[i] for i, p in enumerate(order)}, model, path)


def _latest_weights(obj: Mapping, fast: Dict[str, torch.Tensor], model: nn.Module, ck_cfg: Optional[CfgNode],
                    weights: str, path: str) -> Tuple[str, Dict[str, torch.Tensor], List[str]]:
    """(weights used, state_dict, notes) of a ``checkpoint_latest.pth`` for the ``weights`` choice."""
    optimizer = obj["optimizer"]
    if "lookahead" not in optimizer:
        if weights != "auto":
            raise CheckpointError(f"{path} is not a Lookahead run: it has no {weights} weights")
        return "model", fast, []
    default = config_value(ck_cfg, "TRAIN.LOOKAHEAD.EVAL_WEIGHTS", None) if ck_cfg is not None else None
    used = weights if weights != "auto" else (default if default in ("slow", "fast") else "slow")
    if used == "fast":
        return used, fast, []
    notes = []
    if obj.get("slow_state_dict") is not None:
        state = _slow_by_name(fast, obj["slow_state_dict"], model, path)
    else:
        state = _slow_by_index(fast, optimizer, model, ck_cfg, path)
        notes.append("slow weights matched by their index in the optimizer (a checkpoint written before "
                     "they were stored by name)")
    if ck_cfg is not None and int(config_value(ck_cfg, "TRAIN.LOOKAHEAD.BN_RECALIBRATE_BATCHES", None) or 0) > 0:
        notes.append("slow weights with the fast weights' BN statistics (training validated "
                     "with recalibrated BN; model_best.pth holds those)")
    return used, state, notes


def _choose_weights(obj: Mapping, fast: Dict[str, torch.Tensor], model: nn.Module, ck_cfg: Optional[CfgNode],
                    weights: str, path: str) -> Tuple[str, str, Dict[str, torch.Tensor], List[str]]:
    """(kind, weights used, state_dict, notes): which weights of the file ``weights`` selects."""
    if "eval_weights" in obj:  # model_best.pth: one set of weights, the validated one
        used = str(obj["eval_weights"])
        if weights != "auto" and not used.startswith(weights):
            raise CheckpointError(f"{path} holds only the {used} weights (asked for {weights}); "
                                  f"use checkpoint_latest.pth for the {weights} weights")
        return "best", used, fast, []
    if isinstance(obj.get("optimizer"), Mapping):  # checkpoint_latest.pth
        return ("latest",) + _latest_weights(obj, fast, model, ck_cfg, weights, path)
    if weights != "auto":
        raise CheckpointError(f"{path} is a plain state_dict: it has no {weights} weights")
    return "state_dict", "model", fast, []


def _read(path: str) -> Tuple[Mapping, Dict[str, torch.Tensor], Optional[CfgNode]]:
    """(checkpoint dict, its model weights, its config or None)."""
    obj = load_checkpoint(path)  # weights_only=True; names the file when missing or unreadable
    if isinstance(obj.get("model"), Mapping) and "state_dict" not in obj:
        obj = obj["model"]
    return obj, extract_state_dict(obj, source=path), checkpoint_config(obj, path)


def _check_architecture(ck_cfg: Optional[CfgNode], cfg: CfgNode, path: str, check_config: bool) -> List[str]:
    """The :data:`ARCH_KEYS` differences: refused (``check_config``) or warned about and returned."""
    mismatches = config_mismatches(ck_cfg, cfg) if ck_cfg is not None else []
    if mismatches:
        text = f"{path} was trained with another model than the config: {'; '.join(mismatches)}"
        if check_config:
            raise ConfigMismatchError(text + " (use the run's config.yaml, or allow the mismatch)")
        warnings.warn(text, stacklevel=3)
    return mismatches


def _build(cfg: CfgNode) -> nn.Module:
    """``build_model(cfg)`` without ``MODEL.PRETRAINED`` (the file replaces every weight)."""
    from hrnet.models.hrnet import build_model

    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.PRETRAINED = ""
    cfg.freeze()
    try:
        return build_model(cfg)
    except ValueError as exc:  # unsupported name / sizes, worded with the config key
        raise ConfigError(str(exc)) from exc


def _load_weights(model: nn.Module, state: Dict[str, torch.Tensor], cfg: CfgNode, device: torch.device,
                  path: str) -> nn.Module:
    """``state`` into ``model`` (strict), moved to ``device``, channels_last per ``cfg``, in eval mode."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: the weights do not fit the model of MODEL.NAME {cfg.MODEL.NAME!r} / "
                              f"MODEL.NUM_JOINTS {cfg.MODEL.NUM_JOINTS} ({first})") from exc
    model.to(device)
    if cfg.CHANNELS_LAST:
        model.to(memory_format=torch.channels_last)
    return model.eval()


def load_model_file(cfg: CfgNode, path: str, device: torch.device, weights: str = "auto",
                    check_config: bool = True) -> Tuple[nn.Module, ModelFileInfo]:
    """``hrnet.build_model(cfg)`` with the weights of ``path``, in eval mode on ``device``.

    Args:
        cfg: the evaluation config; its ``MODEL`` builds the network (``MODEL.PRETRAINED`` is
            ignored: the file replaces every weight). Channels_last when ``cfg.CHANNELS_LAST``.
        weights: ``auto``: what training validated (``model_best.pth``: its weights; a Lookahead
            ``checkpoint_latest.pth``: ``TRAIN.LOOKAHEAD.EVAL_WEIGHTS`` of its config, slow by
            default); ``slow`` / ``fast``: those Lookahead weights (an error when the file lacks them).
        check_config: refuse a file whose stored config differs from ``cfg`` on :data:`ARCH_KEYS`
            (False: warn and list them in ``info.mismatches``).
    Returns:
        ``(model, info)``.
    Raises:
        CheckpointError: missing / unreadable file, weights that do not fit, unavailable ``weights``.
        ConfigMismatchError: a differing architecture key (``check_config=True``).
    """
    if weights not in WEIGHT_CHOICES:
        raise ValueError(f"weights must be one of {WEIGHT_CHOICES}, got {weights!r}")
    path = os.fspath(path)
    obj, fast, ck_cfg = _read(path)
    mismatches = _check_architecture(ck_cfg, cfg, path, check_config)
    model = _build(cfg)
    kind, used, state, notes = _choose_weights(obj, fast, model, ck_cfg, weights, path)
    model = _load_weights(model, state, cfg, device, path)
    epoch, nme = obj.get("epoch"), obj.get("NME")
    info = ModelFileInfo(path=path, kind=kind, weights=used,
                         epoch=int(epoch) if isinstance(epoch, (int, float)) else None,
                         nme=float(nme) if isinstance(nme, (int, float)) else None,
                         config=ck_cfg, mismatches=mismatches, notes=notes)
    return model, info
