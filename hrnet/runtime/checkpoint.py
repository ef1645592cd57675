"""Checkpoints: atomic saving (checkpoints and JSON), ``weights_only`` loading, RNG state capture for exact resume.

Everything a checkpoint holds is loadable with ``torch.load(..., weights_only=True)``: tensors,
dicts, lists, tuples, numbers, strings and ``None``. RNG states are stored as tensors/lists and
the config as a yaml string, never as pickled objects.

Files of a run (``OUTPUT_DIR/<experiment>/``):

* ``checkpoint_latest.pth``: ``{"state_dict", "optimizer", "scheduler", "warmup", "scaler",
  "epoch", "global_step", "best_nme", "best_epoch", "history", "rng", "wall_time", "config",
  "code_versions", "format_version"}``; ``epoch`` is the number of *completed* training epochs, so training
  continues with epoch index ``epoch``. ``state_dict`` holds the training (for Lookahead: fast)
  weights; ``slow_state_dict`` (Lookahead runs; None otherwise) the slow weights keyed by
  parameter name, the same tensors as ``optimizer["lookahead"]["slow_weights"]`` (keyed by the
  index in the optimizer's ``param_groups`` order, which only a model and optimizer built the
  same way can decode), stored once.
* ``model_best.pth``: ``{"state_dict", "epoch", "NME", "eval_weights", "config"}``, the weights
  that gave the best validation NME (for Lookahead by default the slow weights, with
  recalibrated BN statistics when that is on). ``tools/test.py --model-file`` reads it.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import tempfile
from typing import IO, Any, Callable, Collection, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from configs import ABSENT, config_differences, flat_config

__all__ = ["save_checkpoint", "load_checkpoint", "extract_state_dict", "get_rng_state", "set_rng_state",
           "seed_everything", "rng_fork", "CheckpointError", "jsonable", "write_json", "write_text", "FORMAT_VERSION",
           "training_state", "slow_state_dict", "load_training_state", "restore_training_state",
           "changed_config_keys", "clean_stale_tmp"]

PathLike = Union[str, "os.PathLike[str]"]


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, unreadable or not in the expected layout (names the file)."""


def clean_stale_tmp(folder: PathLike) -> List[str]:
    """Remove the ``.<name>.*.tmp`` files that :func:`_atomic_write` leaves when a save is killed
    (kill -9, power loss); returns the removed paths. Call only where no save is in flight."""
    folder = os.fspath(folder)
    removed: List[str] = []
    if not os.path.isdir(folder):
        return removed
    for entry in os.listdir(folder):
        path = os.path.join(folder, entry)
        if entry.startswith(".") and entry.endswith(".tmp") and os.path.isfile(path):
            os.unlink(path)
            removed.append(path)
    return removed


def _atomic_write(path: PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a temporary file beside ``path``, fsync it, rename it over ``path``.

    ``os.replace`` is atomic on POSIX and Windows: a crash or a kill at any moment leaves either
    the old file or the new one, never a truncated one; the temporary file is removed on failure.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give it a normal file's mode
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # Persist the rename itself (directory entry); not possible on every platform.
    try:
        dfd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def save_checkpoint(obj: Mapping[str, Any], path: PathLike) -> None:
    """Write ``obj`` to ``path`` atomically (``torch.save`` through :func:`_atomic_write`)."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def jsonable(value: Any) -> Any:
    """numpy scalars/arrays -> Python numbers/lists, NaN and inf -> None (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()  # nested lists; a Python number for a 0-d array
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(obj: Any, path: PathLike, indent: Optional[int] = 2) -> None:
    """Write ``obj`` as strict JSON (:func:`jsonable`) to ``path`` atomically, UTF-8."""
    text = json.dumps(jsonable(obj), indent=indent, allow_nan=False)
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def write_text(text: str, path: PathLike) -> None:
    """Write ``text`` to ``path`` atomically, UTF-8 (a reader never sees half a file)."""
    data = text.encode("utf-8")
    _atomic_write(path, lambda f: f.write(data))


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def load_checkpoint(path: PathLike, map_location: Union[str, torch.device, None] = "cpu") -> Dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with an error that names the file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt zip, non-weights_only content, ...
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


def extract_state_dict(obj: Mapping[str, Any], source: str = "<checkpoint>") -> Dict[str, torch.Tensor]:
    """The model weights of a run checkpoint (``state_dict`` key) or of a plain state_dict.

    A ``module.`` prefix (DDP / DataParallel) is removed.
    """
    sd = obj.get("state_dict", obj) if isinstance(obj, Mapping) else None
    if not isinstance(sd, Mapping) or not sd or not all(torch.is_tensor(v) for v in sd.values()):
        raise CheckpointError(f"{source}: no model state_dict found (expected a 'state_dict' entry "
                              f"or a plain name -> tensor mapping)")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def get_rng_state(generator: Optional[torch.Generator] = None) -> Dict[str, Any]:
    """RNG states of python, numpy, torch (CPU and every CUDA device) and an optional generator.

    Stored as tensors, lists and numbers so the result survives ``weights_only`` loading.
    """
    py_version, py_state, py_gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    state: Dict[str, Any] = {
        "python": {"version": py_version, "state": torch.tensor(py_state, dtype=torch.int64),
                   "gauss": py_gauss},
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]),
                  "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: Mapping[str, Any], generator: Optional[torch.Generator] = None) -> None:
    """Restore what :func:`get_rng_state` captured (CUDA states only when the device count matches)."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state({"bit_generator": nps["bit_generator"],
                         "state": {"key": nps["key"].numpy().astype(np.uint32), "pos": int(nps["pos"])},
                         "has_gauss": int(nps["has_gauss"]), "gauss": float(nps["gauss"])})
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"].cpu())


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def rng_fork(generator: Optional[torch.Generator] = None) -> Iterator[None]:
    """Run the block with the global RNGs (and ``generator``) restored afterwards.

    Evaluation and BN recalibration use random numbers (augmentation, worker seeds); forking keeps
    the training trajectory independent of whether, how often or with which weights they run.
    """
    state = get_rng_state(generator)
    try:
        yield
    finally:
        set_rng_state(state, generator)


# ---------------------------------------------------------------------------- the training-state schema
FORMAT_VERSION = 1


def training_state(*, model: torch.nn.Module, optimizer, scheduler, warmup, scaler, epoch: int, global_step: int,
                   best_nme: float, best_epoch: int, history: list, rng: list, world_size: int, wall_time: float,
                   config: str, code_versions: Sequence[Mapping[str, Any]] = ()) -> Dict[str, Any]:
    """The content of ``checkpoint_latest.pth`` (see the module docstring); ``rng`` holds one
    :func:`get_rng_state` per rank, ``config`` the yaml dump, ``wall_time`` seconds, ``code_versions``
    the run's code so far (``hrnet.runtime.provenance.code_versions_after``)."""
    optimizer_state = optimizer.state_dict()
    return {
        "format_version": FORMAT_VERSION,
        "epoch": int(epoch),
        "global_step": int(global_step),
        "state_dict": model.state_dict(),
        "optimizer": optimizer_state,
        "slow_state_dict": slow_state_dict(model, optimizer, optimizer_state),
        "scheduler": scheduler.state_dict(),
        "warmup": warmup.state_dict() if warmup is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "best_nme": float(best_nme),
        "best_epoch": int(best_epoch),
        "history": history,
        "rng": rng,
        "world_size": int(world_size),
        "wall_time": float(wall_time),
        "config": config,
        "code_versions": [dict(v) for v in code_versions],
    }


def slow_state_dict(model: torch.nn.Module, optimizer, optimizer_state: Mapping[str, Any]
                    ) -> Optional[Dict[str, torch.Tensor]]:
    """Lookahead's slow weights keyed by parameter name (``model.named_parameters()``), or None when
    ``optimizer_state`` (``optimizer.state_dict()``) has no ``lookahead`` entry.

    ``optimizer_state["lookahead"]["slow_weights"][i]`` belongs to the i-th parameter of
    ``optimizer.param_groups`` (``optim.Lookahead.state_dict``); the values are those tensors
    themselves, so a checkpoint holding both stores them once.
    """
    lookahead = optimizer_state.get("lookahead")
    if not isinstance(lookahead, Mapping):
        return None
    names = {id(p): name for name, p in model.named_parameters()}
    order = [p for group in optimizer.param_groups for p in group["params"]]
    slow = lookahead["slow_weights"]
    unnamed = [i for i, p in enumerate(order) if id(p) not in names]
    if unnamed or len(slow) != len(order):
        raise ValueError(f"slow_state_dict: {len(slow)} slow weights for {len(order)} optimizer parameters, "
                         f"{len(unnamed)} of them not parameters of the model")
    return {names[id(p)]: slow[i] for i, p in enumerate(order)}


def load_training_state(path: PathLike, cfg, free_keys: Collection[str] = ()) -> Dict[str, Any]:
    """Read a ``checkpoint_latest.pth`` for resuming with ``cfg``.

    Raises ``CheckpointError`` for another format version or a checkpoint without its config (the
    resume could not check what changed), and ``configs.ConfigError`` (one line listing every
    changed key) when ``cfg`` differs from the checkpoint's config outside ``free_keys`` (the
    trainer's list: ``hrnet.engine.run_record.RESUME_FREE_KEYS``).
    """
    from configs import ConfigError

    ck = load_checkpoint(path, map_location="cpu")
    if ck.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {ck.get('format_version')!r}, expected {FORMAT_VERSION}")
    if not isinstance(ck.get("config"), str) or not ck["config"].strip():
        raise CheckpointError(f"{path}: the checkpoint stores no config, so a resume cannot check that the "
                              f"settings are unchanged; start a new run (EXPERIMENT_NAME) instead of --resume")
    changed = changed_config_keys(ck["config"], cfg, free_keys)
    if changed:
        free = f"only {', '.join(sorted(free_keys))} may change" if free_keys else "no key may change"
        raise ConfigError(f"cannot resume {path} with a changed config ({'; '.join(changed)}); {free}; start a new "
                          f"run (EXPERIMENT_NAME) to change anything else")
    return ck


def restore_training_state(ck: Mapping[str, Any], *, model: torch.nn.Module, optimizer, scheduler, warmup,
                           scaler) -> None:
    """Load the weights and the optimizer / scheduler / warm-up / GradScaler states of :func:`training_state`."""
    model.load_state_dict(ck["state_dict"])
    optimizer.load_state_dict(ck["optimizer"])
    scheduler.load_state_dict(ck["scheduler"])
    if warmup is not None and ck.get("warmup") is not None:
        warmup.load_state_dict(ck["warmup"])
    if scaler is not None and scaler.is_enabled() and ck.get("scaler") is not None:
        scaler.load_state_dict(ck["scaler"])


def changed_config_keys(old_yaml: str, cfg, free_keys: Collection[str] = ()) -> List[str]:
    """``"KEY: old -> new"`` for every key outside ``free_keys`` where ``cfg`` differs from the yaml
    dump ``old_yaml``, by ``configs.config_differences`` (a key added to the defaults since the dump
    and left at its default is not a change)."""
    if not old_yaml:
        return []
    from yacs.config import CfgNode

    diffs = config_differences(flat_config(CfgNode.load_cfg(old_yaml)), flat_config(cfg), free_keys)
    return [f"{k}: {_show(old)} -> {_show(new)}" for k, old, new in diffs]


def _show(value: Any) -> str:
    return value if value == ABSENT else repr(value)