"""HRNetV2 heatmap model on timm's HRNet backbones, and pretrained-weight loading.

The architecture is the one of HRNet-Facial-Landmark-Detection (``lib/models/hrnet.py``):

* the HRNet trunk (stem, ``layer1``, ``transition1..3``, ``stage2..4``) comes from timm
  (``features_only=True, feature_location=''``: the raw branch outputs, no classification head,
  no ``incre_modules``);
* inside every branch fusion the lower-resolution branches are upsampled **bilinearly**
  (``align_corners=False``) instead of timm's nearest upsampling, as in the official landmark
  model, so that its weights give the same heatmaps;
* the head upsamples the branches (bilinear, ``align_corners=False``) to the highest resolution
  (stride 4), concatenates them (270 channels for W18) and applies
  Conv1x1 + BN + ReLU + Conv(k x k) to the joints.

Parameter names: ``backbone.<official trunk name>`` and ``head.{0,1,3}.*``. timm uses the same
trunk names as the official HRNet code (``conv1``, ``layer1.0.conv1``, ``stage2.0.branches.0.0.conv1``,
``stage2.0.fuse_layers.0.1.0`` ...), so official checkpoints map by adding ``backbone.``.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SUPPORTED_MODELS", "HRNetHeatmap", "LoadReport", "build_model", "load_pretrained",
           "to_official_state_dict"]

_logger = logging.getLogger(__name__)

#: ``MODEL.NAME`` values: timm HRNet architectures (the ``_ssld`` variants only differ in the
#: classification head, which is not built here).
SUPPORTED_MODELS = ("hrnet_w18", "hrnet_w18_small", "hrnet_w18_small_v2", "hrnet_w30", "hrnet_w32",
                    "hrnet_w40", "hrnet_w44", "hrnet_w48", "hrnet_w64")

# Classification-head modules of HRNet-Image-Classification / timm checkpoints: not part of this model.
_CLASSIFIER_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")
# Containers a checkpoint may nest its state_dict under (HRNet tools, our trainer, timm train scripts).
_NESTED_KEYS = ("state_dict", "model", "state_dict_ema")
_STRIDE = 32  # total stride of the lowest-resolution branch; input sides must be multiples of it


def _bilinear_fusion(backbone: nn.Module, inplace_act: bool = True) -> int:
    """Swap timm's nearest ``nn.Upsample`` in the branch fusion for bilinear (``align_corners=False``).

    Branch sizes are exact powers of two apart (input sides are multiples of 32), so
    ``scale_factor`` upsampling equals the official ``F.interpolate(size=x[i].shape[2:])``.
    Also makes the fusion ReLU in-place (timm: ``ReLU(False)``; its input is always a fresh sum).
    Returns the number of swapped upsampling modules.
    """
    swapped = 0
    for module in backbone.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.Upsample):
                setattr(module, name, nn.Upsample(scale_factor=child.scale_factor, mode="bilinear",
                                                  align_corners=False))
                swapped += 1
        if inplace_act and isinstance(getattr(module, "fuse_act", None), nn.ReLU):
            module.fuse_act.inplace = True
    return swapped


class HRNetHeatmap(nn.Module):
    """HRNetV2 heatmap regressor (the HRNet-Facial-Landmark-Detection model on a timm trunk).

    Input (B, 3, H, W) RGB normalised with the ImageNet mean/std, H and W multiples of 32.
    Output (B, J, H/4, W/4) heatmaps, float32 and contiguous NCHW. Under autocast the head's last
    convolution still runs in float32: bf16 heatmaps would quantise to steps of about 0.004 and
    spoil sub-pixel decoding.
    """

    def __init__(self, name: str = "hrnet_w18", num_joints: int = 21, final_conv_kernel: int = 1,
                 bn_momentum: Optional[float] = 0.01):
        super().__init__()
        if name not in SUPPORTED_MODELS:
            raise ValueError(f"MODEL.NAME {name!r} is not one of {', '.join(SUPPORTED_MODELS)}")
        if final_conv_kernel not in (1, 3):
            raise ValueError(f"MODEL.FINAL_CONV_KERNEL must be 1 or 3, got {final_conv_kernel}")
        self.backbone = timm.create_model(name, pretrained=False, features_only=True,
                                          feature_location="", out_indices=(1, 2, 3, 4))
        _bilinear_fusion(self.backbone)
        self.branch_channels: List[int] = list(self.backbone.feature_info.channels())
        channels = sum(self.branch_channels)  # 18 + 36 + 72 + 144 = 270 for W18
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_joints, kernel_size=final_conv_kernel, padding=final_conv_kernel // 2),
        )
        for m in self.head.modules():  # official init of the head: N(0, 0.001) weights
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
                nn.init.zeros_(m.bias)
        if bn_momentum is not None:  # official HRNet-Facial: 0.01 (timm: 0.1)
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.momentum = bn_momentum
        self.num_joints = num_joints

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % _STRIDE or x.shape[-2] % _STRIDE:  # else a cryptic size mismatch in the fusion
            raise ValueError(f"input size {tuple(x.shape[-2:])} (H, W) must be multiples of {_STRIDE}")
        feats = self.backbone(x)  # 4 branches, strides 4, 8, 16, 32
        size = feats[0].shape[-2:]
        feats[1:] = [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        x = torch.cat(feats, dim=1)
        for layer in self.head[:-1]:
            x = layer(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            out = self.head[-1](x.float())
        # Contiguous NCHW out: the J-channel heatmaps are small, and losses/decoders may .view() them.
        return out.contiguous()


def build_model(cfg) -> HRNetHeatmap:
    """The heatmap model of ``cfg.MODEL`` (random init, then ``MODEL.PRETRAINED`` if set).

    In channels_last memory format when ``cfg.CHANNELS_LAST`` (moving it to a device keeps it).
    Raises ``ValueError`` naming the config key for an unsupported name or sizes.
    """
    m = cfg.MODEL
    (w, h), (hw, hh) = m.IMAGE_SIZE, m.HEATMAP_SIZE
    if w % _STRIDE or h % _STRIDE:
        raise ValueError(f"MODEL.IMAGE_SIZE {list(m.IMAGE_SIZE)} must be multiples of {_STRIDE}")
    if (hw * 4, hh * 4) != (w, h):
        raise ValueError(f"MODEL.HEATMAP_SIZE {list(m.HEATMAP_SIZE)} must be MODEL.IMAGE_SIZE / 4 "
                         f"({w // 4}, {h // 4}): the heatmaps come from the stride-4 branch")
    model = HRNetHeatmap(m.NAME, m.NUM_JOINTS, m.FINAL_CONV_KERNEL, m.BN_MOMENTUM)
    if m.PRETRAINED:
        load_pretrained(model, m.PRETRAINED)
    if cfg.get("CHANNELS_LAST", False):
        model = model.to(memory_format=torch.channels_last)
    return model


@dataclass
class LoadReport:
    """What ``load_pretrained`` did, by our parameter/buffer names."""

    loaded: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)  # ours, absent from the file (left at init)
    unexpected: List[str] = field(default_factory=list)  # file keys that match nothing of ours
    skipped: List[str] = field(default_factory=list)  # final layer with another joint count
    ignored: List[str] = field(default_factory=list)  # the file's classification head


def _read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"MODEL.PRETRAINED: weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-weights pickles
        raise RuntimeError(f"MODEL.PRETRAINED: cannot read weights file {path}: {exc}") from exc
    while isinstance(obj, Mapping):  # run checkpoints: {"state_dict": {...}, "epoch": ..., "optimizer": ...}
        inner = next((obj[k] for k in _NESTED_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise RuntimeError(f"MODEL.PRETRAINED: no state_dict of tensors in {path} "
                           f"(looked at the top level and under {', '.join(_NESTED_KEYS)})")
    state = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel/DDP
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_pretrained(model: HRNetHeatmap, path: str, strict: bool = False) -> LoadReport:
    """Load a local weights file into ``model`` (``torch.load(weights_only=True)``).

    Accepts (a) ImageNet HRNetV2 weights (``hrnetv2_w18_imagenet_pretrained.pth`` of
    HRNet-Image-Classification, or timm's ``hrnet_w18`` state_dict): the trunk loads, the
    classification head (``incre_modules``, ``downsamp_modules``, ``final_layer``, ``classifier``)
    is ignored; (b) HRNet-Facial-Landmark-Detection checkpoints (``conv1.*`` ... ``stage4.*``,
    ``head.*``), and our own state_dicts; either possibly under ``state_dict``/``model`` and/or
    with a ``module.`` prefix. The final conv is skipped (left at init) when the joint count
    differs. Missing/unexpected keys are logged; ``strict`` makes them (and a skipped final layer)
    an error. A missing/unreadable file, a file matching none of the model's weights, or a shape
    mismatch outside the final layer raise an error naming the file.
    """
    state = _read_state_dict(path)
    own = model.state_dict()
    final = [k for k in own if k.startswith("head.") and k.split(".")[1] == str(len(model.head) - 1)]
    report, mapped, wrong_shape = LoadReport(), {}, []
    for key, value in state.items():
        ours = key if key in own else f"backbone.{key}"
        if ours not in own:
            (report.ignored if key.startswith(_CLASSIFIER_PREFIXES) else report.unexpected).append(key)
        elif value.shape != own[ours].shape:
            (report.skipped if ours in final else wrong_shape).append((ours, tuple(value.shape)))
        else:
            mapped[ours] = value
    if wrong_shape:
        k, shape = wrong_shape[0]
        raise RuntimeError(f"MODEL.PRETRAINED {path}: {len(wrong_shape)} tensors have another shape than "
                           f"in the model built from MODEL.NAME, e.g. {k}: file {shape} vs model "
                           f"{tuple(own[k].shape)} (another HRNet width?)")
    file_joints = report.skipped[0][1][0] if report.skipped else model.num_joints
    report.skipped = [k for k, _ in report.skipped]
    if not mapped:
        raise RuntimeError(f"MODEL.PRETRAINED {path}: none of its {len(state)} tensors match the model "
                           f"(first keys: {list(state)[:3]})")
    model.load_state_dict(mapped, strict=False)
    report.loaded = list(mapped)
    # BN's num_batches_tracked is absent from old (PyTorch < 0.4.1) checkpoints; it only matters for momentum=None.
    report.missing = [k for k in own if k not in mapped and k not in report.skipped
                      and not k.endswith("num_batches_tracked")]
    _logger.info("loaded %d/%d tensors from %s", len(mapped), len(own), path)
    if report.ignored:
        _logger.info("ignored %d classification-head tensors of %s", len(report.ignored), path)
    if report.skipped:
        _logger.warning("final layer of %s skipped (joint count %d in the file, %d in the model): %s",
                        path, file_joints, model.num_joints, report.skipped)
    if report.missing:
        _logger.warning("%d model tensors missing from %s (left at init): %s", len(report.missing), path,
                        _short(report.missing))
    if report.unexpected:
        _logger.warning("%d unexpected tensors in %s (not loaded): %s", len(report.unexpected), path,
                        _short(report.unexpected))
    if strict and (report.missing or report.unexpected or report.skipped):
        raise RuntimeError(f"MODEL.PRETRAINED {path} does not match the model exactly: missing "
                           f"{_short(report.missing)}, unexpected {_short(report.unexpected)}, "
                           f"skipped {_short(report.skipped)}")
    return report


def to_official_state_dict(model: HRNetHeatmap) -> Dict[str, torch.Tensor]:
    """Our state_dict under the HRNet-Facial-Landmark-Detection names (``conv1.*`` ... ``head.*``)."""
    return {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in model.state_dict().items()}


def _short(keys: Sequence[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f" ... (+{len(keys) - n})" if len(keys) > n else "")
