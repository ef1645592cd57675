"""The one device policy and the one mixed-precision (autocast) policy.

Everything that runs the model (the trainer, evaluation, ``tools/test.py``, ``tools/demo.py``,
``tools/benchmark.py``) asks this module which device to use and how to autocast, so the choice
and its reason are made once and logged once.

``AMP.MODE`` (configs/defaults.py):

* ``off``: float32 everywhere.
* ``on``: autocast with ``AMP.DTYPE`` (bf16 or fp16; fp16 only on CUDA, with a GradScaler).
* ``auto``: bf16 where the hardware computes it natively (CUDA devices of compute capability 8.0
  or newer; CPUs with AVX512-BF16 or AMX-BF16), float32 elsewhere. Never emulated bf16: on a CPU
  without it (e.g. AVX2 only) or an older GPU, PyTorch emulates bf16 and a train step is several
  times slower than float32.

The model keeps its last head convolution and the loss in float32 whatever the policy: bf16
heatmaps quantise to about 0.004 and spoil sub-pixel decoding.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
from dataclasses import dataclass
from typing import Any, ContextManager, Dict, Optional

import torch
import torch.nn.functional as F

__all__ = ["configure_backends", "configure_backends_from_cfg", "select_device", "cpu_has_native_bf16", "cuda_has_native_bf16", "AmpPolicy",
           "amp_policy", "amp_policy_from_cfg", "DeviceError"]

_logger = logging.getLogger(__name__)

_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


class DeviceError(ValueError):
    """A device request this machine cannot serve (names the config key)."""


def select_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``DEVICE`` -> a torch device: ``auto`` (CUDA when available) | ``cpu`` | ``cuda``.

    Under torchrun each process takes GPU ``local_rank`` (modulo the visible GPUs).
    Raises ``DeviceError`` for an unknown value or ``cuda`` without CUDA.
    """
    if device not in ("auto", "cpu", "cuda"):
        raise DeviceError(f"DEVICE must be auto|cpu|cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise DeviceError("DEVICE cuda: CUDA is not available on this machine (use DEVICE cpu or auto)")
    if device == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def _bilinear_backward_is_deterministic(device: torch.device) -> bool:
    """Whether the model's bilinear upsampling (branch fusion and head) has a deterministic backward
    on ``device``: asked of torch itself under ``use_deterministic_algorithms(True)`` (CUDA has none in
    torch 2.x; a later torch that adds one passes)."""
    x = torch.zeros(1, 1, 2, 2, device=device, requires_grad=True)
    try:
        F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False).sum().backward()
    except RuntimeError:
        return False
    return True


def configure_backends(deterministic: bool, cudnn_benchmark: bool, tf32: bool = False,
                       device: Optional[torch.device] = None) -> Dict[str, bool]:
    """``DETERMINISTIC``, ``CUDNN.BENCHMARK`` and ``TF32``, process-wide (set both ways, so an earlier
    run in the same process leaves nothing behind). Returns the settings in effect on ``device``.

    ``DETERMINISTIC`` means every kernel deterministic (``warn_only=False``: an op without a
    deterministic kernel raises rather than silently varying) and no autotuner. Raises
    ``DeviceError`` (naming DETERMINISTIC) on a device where the model's bilinear upsampling
    backward has no deterministic kernel (CUDA): such a run could not keep the promise.
    ``TF32`` (CUDA only, Ampere or newer): float32 matmuls and convolutions on TF32 tensor cores;
    False keeps them IEEE float32 (torch's own default lets cuDNN convolutions use TF32).
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    deterministic = bool(deterministic)
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    if deterministic and not _bilinear_backward_is_deterministic(device):
        torch.use_deterministic_algorithms(False)
        raise DeviceError(f"DETERMINISTIC True: the model's bilinear upsampling has no deterministic backward "
                          f"kernel on {device.type} (torch {torch.__version__}); set DETERMINISTIC False, or "
                          f"DEVICE cpu for bitwise-repeatable training")
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = bool(cudnn_benchmark) and not deterministic
    tf32 = bool(tf32) and device.type == "cuda"  # off elsewhere: a CPU run's numerics never depend on it
    # The legacy flags set cuDNN conv and RNN alike (mixing them with fp32_precision makes torch raise).
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    return {"deterministic": deterministic, "tf32": tf32,
            "cudnn_benchmark": torch.backends.cudnn.benchmark and device.type == "cuda"}


def configure_backends_from_cfg(cfg, device: torch.device) -> Dict[str, bool]:
    """:func:`configure_backends` of ``cfg.DETERMINISTIC``, ``cfg.CUDNN.BENCHMARK``, ``cfg.TF32`` on ``device``:
    what training uses (the trainer and ``benchmark train-step`` both call it)."""
    return configure_backends(bool(cfg.DETERMINISTIC), bool(cfg.CUDNN.BENCHMARK), bool(cfg.TF32), device)


#: Where the CPU's feature flags are read (a module attribute so tests can point it elsewhere).
CPUINFO = "/proc/cpuinfo"


@functools.lru_cache(maxsize=None)
def _cpuinfo_field(path: str, name: str) -> Optional[str]:
    """The value of the first ``name`` line of ``path`` (a /proc/cpuinfo), None when absent or unreadable."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_flags(path: str) -> frozenset:
    """The feature flags of the first processor in ``path`` (empty when unreadable)."""
    return frozenset((_cpuinfo_field(path, "flags") or "").split())


#: The CPU features that change speed or numerics here (reported beside every number).
_REPORTED_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")


def describe_machine(device: torch.device) -> Dict[str, Any]:
    """What a run's numbers were measured on: CPU model and its relevant flags, torch version and
    intra-op threads, the device (and the GPU's name on CUDA)."""
    flags = _cpu_flags(CPUINFO)
    out: Dict[str, Any] = {"cpu": _cpuinfo_field(CPUINFO, "model name") or "unknown", "cpu_flags": [f for f in _REPORTED_CPU_FLAGS if f in flags],
                           "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware (AVX512-BF16 or AMX-BF16 in :data:`CPUINFO`)."""
    flags = _cpu_flags(CPUINFO)
    return any(flag in flags for flag in _BF16_CPU_FLAGS)


@dataclass(frozen=True)
class AmpPolicy:
    """How to run the forward pass on ``device``: ``dtype`` None means float32.

    ``reason`` says why (logged once by the caller). ``use_scaler`` is True for fp16 only.
    """
    device: torch.device
    dtype: Optional[torch.dtype]
    reason: str

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def use_scaler(self) -> bool:
        return self.dtype == torch.float16

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> ContextManager:
        """The autocast context of this policy (a no-op for float32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> "torch.amp.GradScaler":
        """A GradScaler that is active for fp16 only (``enabled=False`` is a transparent pass-through)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.use_scaler)


def cuda_has_native_bf16(device: torch.device) -> bool:
    """True when CUDA ``device`` computes bf16 in hardware: compute capability 8.0 (Ampere) or newer,
    or a ROCm device. ``torch.cuda.is_bf16_supported()`` also counts emulation on older GPUs, where
    bf16 is slower than float32, and asks about the current device rather than ``device``."""
    if torch.version.hip:
        return True
    return torch.cuda.get_device_capability(device) >= (8, 0)


def _native_bf16(device: torch.device) -> bool:
    if device.type == "cuda":
        return cuda_has_native_bf16(device)
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def amp_policy(mode: str, dtype: str, device: torch.device) -> AmpPolicy:
    """Resolve ``AMP.MODE`` (off | on | auto) and ``AMP.DTYPE`` (bf16 | fp16) for ``device``."""
    device = torch.device(device)
    if mode == "off":
        return AmpPolicy(device, None, "AMP.MODE off")
    if mode == "auto":
        if _native_bf16(device):
            what = "CUDA device" if device.type == "cuda" else "CPU (AVX512-BF16/AMX)"
            return AmpPolicy(device, torch.bfloat16, f"AMP.MODE auto: bf16, native on this {what}")
        return AmpPolicy(device, None, f"AMP.MODE auto: float32, no native bf16 on this {device.type}")
    if mode != "on":
        raise ValueError(f"AMP.MODE must be off|on|auto, got {mode!r}")
    want = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
    if want is None:
        raise ValueError(f"AMP.DTYPE must be bf16|fp16, got {dtype!r}")
    if want == torch.float16 and device.type != "cuda":
        return AmpPolicy(device, None, "AMP.MODE on with fp16: fp16 autocast is CUDA-only, float32 on CPU")
    note = "" if _native_bf16(device) or want != torch.bfloat16 else " (emulated here: slower than float32)"
    return AmpPolicy(device, want, f"AMP.MODE on: {dtype}{note}")


def amp_policy_from_cfg(cfg, device: torch.device) -> AmpPolicy:
    """:func:`amp_policy` of ``cfg.AMP``."""
    return amp_policy(cfg.AMP.MODE, cfg.AMP.DTYPE, device)

