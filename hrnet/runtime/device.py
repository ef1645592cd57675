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
import glob
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Any, ContextManager, Dict, List, Optional

import torch
import torch.nn.functional as F

__all__ = ["configure_backends", "configure_backends_from_cfg", "select_device", "cpu_has_native_bf16", "cuda_has_native_bf16", "AmpPolicy",
           "describe_machine", "numerics_fingerprint",
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
    """The value of the first ``name`` line of ``path`` (a /proc/cpuinfo), None when absent or unreadable.
    The key must match whole: ``model`` is not ``model name``."""
    try:
        with open(path) as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == name:
                    return value.strip()
    except OSError:
        pass
    return None


def _cpu_flags(path: str) -> frozenset:
    """The feature flags of the first processor in ``path`` (empty when unreadable)."""
    return frozenset((_cpuinfo_field(path, "flags") or "").split())


#: The CPU features that change speed or numerics here (reported beside every number).
_REPORTED_CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma")


#: Where the CPU's cache levels are read (``index*/level``, ``type``, ``size``; patchable by tests).
CPU_CACHE = "/sys/devices/system/cpu/cpu0/cache"


def _cpu_id(path: str) -> Dict[str, Optional[int]]:
    """``family``, ``model``, ``stepping`` of the first processor in ``path`` (None where absent)."""
    out: Dict[str, Optional[int]] = {}
    for key, name in (("family", "cpu family"), ("model", "model"), ("stepping", "stepping")):
        value = _cpuinfo_field(path, name)
        out[key] = int(value) if value is not None and value.isdigit() else None
    return out


def _cache_kib(folder: str) -> Dict[str, int]:
    """``{"L2": KiB, "L3": KiB}`` of the data/unified caches under ``folder`` (sysfs); empty when unreadable."""
    out: Dict[str, int] = {}
    for entry in sorted(glob.glob(os.path.join(folder, "index*"))):
        try:
            with open(os.path.join(entry, "level")) as f:
                level = f.read().strip()
            with open(os.path.join(entry, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(entry, "size")) as f:
                size = f.read().strip()
        except OSError:
            continue
        scale = {"K": 1, "M": 1024, "G": 1024 * 1024}.get(size[-1:].upper())
        number = size[:-1] if scale else size
        if level in ("2", "3") and kind != "Instruction" and number.isdigit():
            out[f"L{level}"] = int(number) * (scale or 1)
    return out


#: The convolutions of :func:`numerics_fingerprint`: (in, out channels, kernel, stride, input size), as
#: in HRNet (the stem's stride-2 3x3, a branch's 3x3 at 18 channels, a 1x1 fuse, a 3x3 at 32): oneDNN
#: blocks channels by 8 or 16, so the odd widths take other kernels than the even ones.
_FINGERPRINT_CONVS = ((3, 64, 3, 2, 32), (18, 18, 3, 1, 16), (36, 18, 1, 1, 8), (32, 32, 3, 1, 16))


def _fingerprint_tensors(device: torch.device) -> List[torch.Tensor]:
    """The float32 results :func:`numerics_fingerprint` hashes: each convolution's output and its
    input and weight gradients, and a matmul."""
    gen = torch.Generator().manual_seed(20240611)  # private: the global RNG (training's) is untouched
    out: List[torch.Tensor] = []
    for cin, cout, k, stride, size in _FINGERPRINT_CONVS:
        x = torch.randn(4, cin, size, size, generator=gen).to(device).requires_grad_(True)
        w = (0.1 * torch.randn(cout, cin, k, k, generator=gen)).to(device).requires_grad_(True)
        # float32 whatever the caller's context (the trainer may be inside an autocast region)
        with torch.enable_grad(), torch.autocast(device.type, enabled=False):
            y = F.conv2d(x, w, stride=stride, padding=k // 2)
            grad = torch.randn(y.shape, generator=gen).to(device)
            out += [y.detach(), *torch.autograd.grad(y, (x, w), grad)]
    a, b = torch.randn(128, 192, generator=gen).to(device), torch.randn(192, 96, generator=gen).to(device)
    with torch.no_grad(), torch.autocast(device.type, enabled=False):
        out.append(torch.mm(a, b))
    return out


def numerics_fingerprint(device: Optional[torch.device] = None) -> Optional[str]:
    """sha256 (first 16 hex digits) of the float32 results of a small fixed computation through the
    kernels training uses (:data:`_FINGERPRINT_CONVS` forward and backward, batch 4: oneDNN's path on
    a CPU, cuDNN's on a GPU; and a matmul), on seeded inputs from a private generator, at the current
    thread count and backend flags. About 10 ms once the kernels are loaded.

    Equal fingerprints: the machines compute these kernels bitwise alike (the same training run gives
    the same numbers, as far as these kernels tell). Different: they do not, so the same run may end
    elsewhere (oneDNN picks kernels and blocking by microarchitecture and cache sizes; the CPU's name
    does not decide it). None where the device cannot run it."""
    device = torch.device("cpu") if device is None else torch.device(device)
    try:
        tensors = _fingerprint_tensors(device)
    except (RuntimeError, AssertionError):  # e.g. a CUDA device this process cannot use
        return None
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def describe_machine(device: torch.device) -> Dict[str, Any]:
    """What a run's numbers were measured on: CPU model, family/model/stepping, L2/L3 cache (KiB) and
    its relevant flags, torch version and intra-op threads, the device (and the GPU's name on CUDA),
    and ``numerics`` (:func:`numerics_fingerprint` on ``device``: equal fingerprints, bitwise-alike
    kernels; the CPU's name alone does not tell)."""
    flags = _cpu_flags(CPUINFO)
    out: Dict[str, Any] = {"cpu": _cpuinfo_field(CPUINFO, "model name") or "unknown",
                           "cpu_flags": [f for f in _REPORTED_CPU_FLAGS if f in flags], "cpu_id": _cpu_id(CPUINFO),
                           "cache_kib": _cache_kib(CPU_CACHE),
                           "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device)}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    out["numerics"] = numerics_fingerprint(device)
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

