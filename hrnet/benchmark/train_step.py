"""``benchmark train-step``: fwd + bwd + optimizer step throughput on a fixed batch (no data loading)."""
from __future__ import annotations

import statistics
from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F

from hrnet.benchmark import Options
from hrnet.benchmark.timing import device_sync, interleave, set_threads
from hrnet.models.hrnet import build_model
from hrnet.runtime.device import AmpPolicy, amp_policy, amp_policy_from_cfg, configure_backends_from_cfg, select_device
from hrnet.runtime.perf import tune_cpu_allocator
from optim import build_optimizer

__all__ = ["bench_train_step", "amp_for"]


def amp_for(mode: str, cfg, device: torch.device) -> AmpPolicy:
    """The policy of ``--amp fp32|bf16|fp16|auto``; '' = the config's AMP.MODE / AMP.DTYPE."""
    if not mode:
        return amp_policy_from_cfg(cfg, device)
    return amp_policy({"fp32": "off", "auto": "auto"}.get(mode, "on"),
                      mode if mode in ("bf16", "fp16") else cfg.AMP.DTYPE, device)


def fixed_batch(cfg, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random images (B, 3, H, W) and heatmap targets (B, J, h, w) in [0, 1), seed 0: B =
    TRAIN.BATCH_SIZE_PER_GPU, (W, H) = MODEL.IMAGE_SIZE, (w, h) = MODEL.HEATMAP_SIZE."""
    gen = torch.Generator().manual_seed(0)
    (w, h), (hw, hh) = cfg.MODEL.IMAGE_SIZE, cfg.MODEL.HEATMAP_SIZE
    batch = cfg.TRAIN.BATCH_SIZE_PER_GPU
    images = torch.randn(batch, 3, h, w, generator=gen).to(device)
    target = torch.rand(batch, cfg.MODEL.NUM_JOINTS, hh, hw, generator=gen).to(device)
    return images, target


class TrainStep:
    """A fresh model (seed ``cfg.SEED``) and optimizer (``optim.build_optimizer``) in one memory
    format and precision; a call is one training step on the fixed batch: zero_grad, forward under
    ``amp``'s autocast, MSE loss, backward (GradScaler for fp16), optimizer step."""

    def __init__(self, cfg, images: torch.Tensor, target: torch.Tensor, channels_last: bool,
                 amp: AmpPolicy) -> None:
        torch.manual_seed(cfg.SEED)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = build_model(cfg).to(images.device).to(memory_format=fmt).train()
        self.optimizer = build_optimizer(cfg, self.model)
        self.images, self.target = images.contiguous(memory_format=fmt), target
        self.amp, self.scaler = amp, amp.grad_scaler()

    def __call__(self, _round: int = 0) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with self.amp.autocast():
            out = self.model(self.images)
        self.scaler.scale(F.mse_loss(out.float(), self.target)).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()


def _speedups(result: Dict[str, Any]) -> Dict[str, float]:
    """The configured setting against the official code's two fp32 baselines (``--compare``)."""
    nchw, cl = result["baseline_images_per_s_nchw"], result["baseline_images_per_s_channels_last"]
    return {"speedup_vs_baseline_best": round(result["images_per_s"] / max(nchw, cl), 3),
            "speedup_vs_nchw": round(result["images_per_s"] / nchw, 3),
            "speedup_channels_last": round(cl / nchw, 3)}


def bench_train_step(cfg, options: Options) -> Dict[str, Any]:
    """fwd + bwd + optimizer step throughput; ``images_per_s`` is the median over timed steps.

    One step is a :class:`TrainStep` call (autocast per ``hrnet.runtime.device``'s policy:
    ``options.amp``, else the config's AMP.MODE / AMP.DTYPE) on a fixed random batch of
    TRAIN.BATCH_SIZE_PER_GPU images of MODEL.IMAGE_SIZE, on ``select_device(DEVICE)``;
    ``options.steps`` timed steps (default 5) after ``options.warmup`` (default 2).
    ``images_per_s`` is the setting training uses: memory format per CHANNELS_LAST, the backends as
    training sets them (``configure_backends_from_cfg``: CUDNN.BENCHMARK, TF32, DETERMINISTIC;
    ``backends``), glibc allocator tuned (``hrnet.runtime.perf.tune_cpu_allocator``) on CPU. With mixed
    precision the same setting in float32 is timed interleaved with it: ``images_per_s_fp32``, ``speedup_vs_fp32``.

    ``options.compare`` first times the official HRNet-Facial code's two settings on the same model
    (same ops, same heatmaps): fp32 with glibc's default allocator, contiguous NCHW and
    channels_last, interleaved step by step so that a load change on a shared machine hits both
    alike; then tunes the allocator (process-wide, so this phase comes after) and times the
    configured setting. Ratios: ``speedup_vs_baseline_best`` (over the faster baseline),
    ``speedup_vs_nchw`` and ``speedup_channels_last`` (baseline channels_last over NCHW).
    """
    set_threads(options.threads)
    device = select_device(cfg.DEVICE)
    backends = configure_backends_from_cfg(cfg, device)  # as training sets them: cuDNN autotuner, TF32
    policy, fp32 = amp_for(options.amp, cfg, device), amp_policy("off", cfg.AMP.DTYPE, device)
    batch = cfg.TRAIN.BATCH_SIZE_PER_GPU
    steps = options.steps or 5
    warmup = options.warmup if options.warmup >= 0 else 2
    images, target = fixed_batch(cfg, device)

    def step_seconds(variants: Dict[str, TrainStep]) -> Dict[str, float]:
        """Median wall seconds per step of each variant, interleaved step by step."""
        samples = interleave(variants, steps, warmup=warmup, sync=device_sync(device))
        return {name: statistics.median(s.wall) for name, s in samples.items()}

    result: Dict[str, Any] = {}
    if options.compare:  # fp32, glibc's default allocator: before tune_cpu_allocator
        base = step_seconds({name: TrainStep(cfg, images, target, name == "channels_last", fp32)
                             for name in ("nchw", "channels_last")})
        result.update({f"baseline_images_per_s_{name}": round(batch / sec, 3) for name, sec in base.items()})
    tuned = tune_cpu_allocator() if device.type == "cpu" else False
    final = "channels_last" if cfg.CHANNELS_LAST else "nchw"
    variants = {final: TrainStep(cfg, images, target, cfg.CHANNELS_LAST, policy)}
    if policy.enabled:  # the same setting in float32, interleaved: the mixed-precision gain on this machine
        variants["fp32"] = TrainStep(cfg, images, target, cfg.CHANNELS_LAST, fp32)
    secs = step_seconds(variants)
    result.update(images_per_s=round(batch / secs[final], 3), step_s=round(secs[final], 4))
    if policy.enabled:
        result.update(images_per_s_fp32=round(batch / secs["fp32"], 3),
                      speedup_vs_fp32=round(secs["fp32"] / secs[final], 3))
    if options.compare:
        result.update(_speedups(result))
    result.update(model=cfg.MODEL.NAME, batch=batch, image_size=list(cfg.MODEL.IMAGE_SIZE),
                  channels_last=bool(cfg.CHANNELS_LAST), amp=policy.name, amp_reason=policy.reason,
                  allocator_tuned=tuned, device=str(device), backends=backends,
                  gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                  threads=torch.get_num_threads(), optimizer=type(variants[final].optimizer).__name__,
                  warmup=warmup, steps=steps, torch=torch.__version__)
    return result
