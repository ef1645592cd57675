"""Checkpoints: atomic saving, ``weights_only`` loading, and RNG state capture for exact resume.

Everything a checkpoint holds is loadable with ``torch.load(..., weights_only=True)``: tensors,
dicts, lists, tuples, numbers, strings and ``None``. RNG states are stored as tensors/lists and
the config as a yaml string, never as pickled objects.

Files of a run (``OUTPUT_DIR/<experiment>/``):

* ``checkpoint_latest.pth``: ``{"state_dict", "optimizer", "scheduler", "warmup", "scaler",
  "epoch", "global_step", "best_nme", "best_epoch", "history", "rng", "wall_time", "config",
  "format_version"}``; ``epoch`` is the number of *completed* training epochs, so training
  continues with epoch index ``epoch``. ``state_dict`` holds the training (for Lookahead: fast)
  weights.
* ``model_best.pth``: ``{"state_dict", "epoch", "NME", "eval_weights", "config"}``, the weights
  that gave the best validation NME (for Lookahead by default the slow weights, with
  recalibrated BN statistics when that is on). ``tools/test.py --model-file`` reads it.
"""
from __future__ import annotations

import os
import random
import tempfile
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np
import torch

__all__ = ["save_checkpoint", "load_checkpoint", "extract_state_dict", "get_rng_state",
           "set_rng_state", "CheckpointError"]

PathLike = Union[str, "os.PathLike[str]"]


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, unreadable or not in the expected layout (names the file)."""


def save_checkpoint(obj: Mapping[str, Any], path: PathLike) -> None:
    """Write ``obj`` to ``path`` atomically.

    The data goes to a temporary file in the same directory, is flushed and fsync'ed, then
    ``os.replace`` renames it over ``path`` (atomic on POSIX and Windows): a crash or a kill at
    any moment leaves either the old file or the new one, never a truncated one.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give it a normal file's mode
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
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
