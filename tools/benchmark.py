"""Performance measurements (never part of the timed test suite).

    python tools/benchmark.py train-step --cfg FILE [--json] [KEY VALUE ...]
    python tools/benchmark.py data       --cfg FILE [--json] [KEY VALUE ...]
    python tools/benchmark.py optimizer  --cfg FILE [--json] [KEY VALUE ...]
    python tools/benchmark.py decode     --cfg FILE [--json] [KEY VALUE ...]
    python tools/benchmark.py infer      [--steps N] [--warmup R] [--json]

Each subcommand prints a human-readable summary, or one JSON object with ``--json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Dict

import _paths  # noqa: F401  (repository root on sys.path)
import _cli

from configs import load_config


def bench_train_step(cfg, args: argparse.Namespace) -> Dict[str, Any]:
    """fwd + bwd + optimizer step throughput; ``images_per_s`` is the median over timed steps.

    One step = zero_grad, forward (autocast per ``hrnet.runtime.device``'s policy: ``--amp fp32|bf16|fp16|auto``,
    else the config's AMP.MODE / AMP.DTYPE), MSE loss, backward (GradScaler for fp16), optimizer
    step (``optim.build_optimizer``) on a fixed random batch of TRAIN.BATCH_SIZE_PER_GPU images of
    MODEL.IMAGE_SIZE (no data loading), on ``select_device(DEVICE)``. ``images_per_s`` is the
    setting training uses: memory format per CHANNELS_LAST, glibc allocator tuned
    (``hrnet.runtime.perf.tune_cpu_allocator``) on CPU. With mixed precision the same setting in float32
    is timed interleaved with it: ``images_per_s_fp32``, ``speedup_vs_fp32``.

    ``--compare`` first times the official HRNet-Facial code's two settings on the same model
    (same ops, same heatmaps): fp32 with glibc's default allocator, contiguous NCHW and
    channels_last, interleaved step by step so that a load change on a shared machine hits both
    alike; then tunes the allocator (process-wide, so this phase comes after) and times the
    configured setting. Ratios: ``speedup_vs_baseline_best`` (over the faster baseline),
    ``speedup_vs_nchw`` and ``speedup_channels_last`` (baseline channels_last over NCHW).
    """
    import statistics
    import time

    import torch
    import torch.nn.functional as F

    from hrnet import build_model
    from hrnet.runtime.device import amp_policy, amp_policy_from_cfg, select_device
    from hrnet.runtime.perf import tune_cpu_allocator
    from optim import build_optimizer

    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    device = select_device(cfg.DEVICE)
    mode = getattr(args, "amp", "") or ""
    policy = (amp_policy({"fp32": "off", "auto": "auto"}.get(mode, "on"), mode if mode in ("bf16", "fp16")
                         else cfg.AMP.DTYPE, device) if mode else amp_policy_from_cfg(cfg, device))
    fp32 = amp_policy("off", cfg.AMP.DTYPE, device)
    batch = cfg.TRAIN.BATCH_SIZE_PER_GPU
    w, h = cfg.MODEL.IMAGE_SIZE
    hw, hh = cfg.MODEL.HEATMAP_SIZE
    steps = args.steps or 5
    warmup = args.warmup if args.warmup >= 0 else 2
    compare = bool(getattr(args, "compare", False))

    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, h, w, generator=gen).to(device)
    target = torch.rand(batch, cfg.MODEL.NUM_JOINTS, hh, hw, generator=gen).to(device)

    opt_names = []

    def make(channels_last: bool, amp):
        torch.manual_seed(cfg.SEED)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        model = build_model(cfg).to(device).to(memory_format=fmt).train()
        opt = build_optimizer(cfg, model)
        opt_names.append(type(opt).__name__)
        return model, opt, images.contiguous(memory_format=fmt), amp, amp.grad_scaler()

    def step(model, opt, x, amp, scaler) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with amp.autocast():
            out = model(x)
        scaler.scale(F.mse_loss(out.float(), target)).backward()
        scaler.step(opt)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    def timed(variants: Dict[str, Any]) -> Dict[str, float]:
        """Median step seconds per variant, interleaved: A, B, A, B ..."""
        times: Dict[str, list] = {name: [] for name in variants}
        for i in range(warmup + steps):
            for name, v in variants.items():
                dt = step(*v)
                if i >= warmup:
                    times[name].append(dt)
        return {name: statistics.median(t) for name, t in times.items()}

    result: Dict[str, Any] = {}
    final = "channels_last" if cfg.CHANNELS_LAST else "nchw"
    if compare:
        base = timed({"nchw": make(False, fp32), "channels_last": make(True, fp32)})
        for name, sec in base.items():
            result[f"baseline_images_per_s_{name}"] = round(batch / sec, 3)  # fp32, default allocator
    tuned = tune_cpu_allocator() if device.type == "cpu" else False
    variants = {final: make(cfg.CHANNELS_LAST, policy)}
    if policy.enabled:  # the same setting in float32, interleaved: the mixed-precision gain on this machine
        variants["fp32"] = make(cfg.CHANNELS_LAST, fp32)
    secs = timed(variants)
    sec = secs[final]
    result["images_per_s"] = round(batch / sec, 3)
    result["step_s"] = round(sec, 4)
    if policy.enabled:
        result["images_per_s_fp32"] = round(batch / secs["fp32"], 3)
        result["speedup_vs_fp32"] = round(secs["fp32"] / sec, 3)
    if compare:
        nchw, cl = result["baseline_images_per_s_nchw"], result["baseline_images_per_s_channels_last"]
        result["speedup_vs_baseline_best"] = round(result["images_per_s"] / max(nchw, cl), 3)
        result["speedup_vs_nchw"] = round(result["images_per_s"] / nchw, 3)
        result["speedup_channels_last"] = round(cl / nchw, 3)
    result.update(model=cfg.MODEL.NAME, batch=batch, image_size=[w, h], channels_last=bool(cfg.CHANNELS_LAST),
                  amp=policy.name, amp_reason=policy.reason, allocator_tuned=tuned, device=str(device),
                  gpu=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                  threads=torch.get_num_threads(), optimizer=opt_names[-1],
                  warmup=warmup, steps=steps, torch=torch.__version__)
    return result


class _AlbumentationsReference:
    """The photometric augmentation as albumentations' Compose (the pipeline before
    ``data.transforms.PhotometricAug``), behind PhotometricAug's ``draw``/``apply`` interface: the
    ``data --compare`` baseline. It converts BGR -> RGB -> BGR around the Compose (the old path read
    the crop as RGB directly: ~0.02 ms per sample more here)."""

    def __init__(self, cfg, rng) -> None:
        import random

        import albumentations as A
        import numpy as np

        d = cfg.DATASET
        self.compose = A.Compose([
            A.RandomBrightnessContrast(brightness_limit=d.BRIGHTNESS, contrast_limit=d.BRIGHTNESS, p=d.COLOR_PROB),
            A.HueSaturationValue(hue_shift_limit=d.HUE, sat_shift_limit=d.SATURATION, val_shift_limit=0,
                                 p=d.COLOR_PROB),
            A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.5), p=d.BLUR_PROB),
            A.GaussNoise(std_range=(0.25 * d.NOISE_STD, d.NOISE_STD), p=d.NOISE_PROB),
        ])
        self.compose.set_random_state(np.random.default_rng(rng.integers(2 ** 31)), random.Random(0))

    def draw(self):
        return {"albumentations": True}  # the old path always converted and called the Compose

    def apply(self, img, effects, bgr: bool = True):
        import cv2

        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        return cv2.cvtColor(self.compose(image=rgb)["image"], cv2.COLOR_RGB2BGR)


def bench_data(cfg, args: argparse.Namespace) -> Dict[str, Any]:
    """Training data pipeline throughput in one process; ``samples_per_s``.

    Builds the training dataset (``build_s``: annotation parsing and image header checks), then
    times ``dataset[i]`` (read, decode, crop, augment, targets, normalised tensor) for ``--steps``
    samples (default 1000, cycling through the set in order) after ``--warmup`` (default 20), with
    OpenCV and torch on one thread, as in one DataLoader worker. No collation, no pinning.
    ``samples_per_cpu_s`` divides by the process's CPU time instead of wall time.

    ``--compare`` (needs DATASET.COLOR_AUG) times the same samples with the photometric
    augmentation as albumentations' Compose (the previous pipeline) against the project's
    ``PhotometricAug``, interleaved in blocks of 50 samples (A, B, A, B ...: a load change on a
    shared machine hits both alike); ``speedup_cpu`` is the median over rounds of the per-round
    ratio of process CPU time per sample (one thread: the figure least disturbed by other load),
    with its spread (min, max) and the wall-time ratio beside it.
    """
    import statistics
    import time

    import cv2
    import numpy as np
    import torch

    from data import build_dataset

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    torch.manual_seed(cfg.SEED)
    t0 = time.perf_counter()
    dataset = build_dataset(cfg, is_train=True)
    build_s = time.perf_counter() - t0
    n = len(dataset)
    steps = args.steps or 1000
    warmup = 20 if args.warmup < 0 else args.warmup
    for i in range(warmup):
        dataset[i % n]
    result: Dict[str, Any] = {}
    if getattr(args, "compare", False):
        if dataset._photometric is None:
            raise SystemExit("benchmark data --compare: DATASET.COLOR_AUG is off, nothing to compare")
        ours = dataset._photometric
        variants = {"albumentations": _AlbumentationsReference(cfg, np.random.default_rng(cfg.SEED)), "ours": ours}
        block = 50
        rounds = max(1, -(-steps // block))
        cpu: Dict[str, list] = {k: [] for k in variants}
        wall: Dict[str, list] = {k: [] for k in variants}
        for r in range(rounds):
            for name in (list(variants) if r % 2 == 0 else list(variants)[::-1]):
                dataset._photometric = variants[name]
                t0, c0 = time.perf_counter(), time.process_time()
                for i in range(r * block, (r + 1) * block):
                    dataset[i % n]
                wall[name].append((time.perf_counter() - t0) / block)
                cpu[name].append((time.process_time() - c0) / block)
        dataset._photometric = ours
        ratios = [a / b for a, b in zip(cpu["albumentations"], cpu["ours"])]
        result.update(
            speedup_cpu=round(statistics.median(ratios), 3),
            speedup_cpu_spread=[round(min(ratios), 3), round(max(ratios), 3)],
            speedup_wall=round(statistics.median(a / b for a, b in zip(wall["albumentations"], wall["ours"])), 3),
            cpu_ms_per_sample={k: round(1000 * statistics.median(v), 4) for k, v in cpu.items()},
            samples_per_cpu_s_compared={k: round(1 / statistics.median(v), 1) for k, v in cpu.items()},
            rounds=rounds, block=block)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(warmup, warmup + steps):
        dataset[i % n]
    elapsed, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    result.update({
        "samples_per_s": steps / elapsed,
        "ms_per_sample": 1000.0 * elapsed / steps,
        # CPU time of this process: less sensitive than wall time to other jobs on a shared machine.
        "samples_per_cpu_s": steps / cpu_s,
        "steps": steps,
        "num_samples": n,
        "format": cfg.DATASET.FORMAT,
        "annotations": dataset.source,
        "build_s": build_s,
        "color_aug": bool(cfg.DATASET.COLOR_AUG),
        "reduced_decode": bool(cfg.DATASET.REDUCED_DECODE),
        "threads": 1,
    })
    return result


def bench_optimizer(cfg, args: argparse.Namespace) -> Dict[str, Any]:
    """``step()`` time of the inner optimizer alone and wrapped in Lookahead on HRNet-W18 parameters.

    The parameters of ``hrnet.build_model(cfg)`` get fixed synthetic gradients (N(0, 1e-3)); three
    optimizers with their own state step them: the inner one (``TRAIN.LOOKAHEAD.INNER`` when
    ``TRAIN.OPTIMIZER`` is lookahead, else ``TRAIN.OPTIMIZER``, from ``optim.build_optimizer``),
    ``optim.Lookahead`` around another instance (``TRAIN.LOOKAHEAD.K/ALPHA/PULLBACK``), and
    ``timm.optim.Lookahead`` (same k, alpha) around a third. After one untimed cycle each, rounds of
    blocks of 2 whole k-cycles are timed, the three interleaved in a rotating order so that load
    changes on a shared machine hit all alike. ``*_ms_per_step`` are medians over rounds of the
    block mean (a sync included in every block); ``ratio`` = lookahead / inner of those medians,
    ``ratio_paired`` the median of the per-round ratios. On CPU the same from process CPU time
    (``cpu_ms_per_step``, ``ratio_cpu``), which a loaded machine disturbs less than wall time
    (with ``--threads 1``; with more threads OpenMP spin-waits count too). ``--steps``: timed
    steps per optimizer (default 90, rounded up to whole blocks); ``--warmup``: untimed cycles (1).
    Last, single inner steps and bare syncs (ours, timm's) are timed interleaved
    (``isolated_ms``; CPU time on CPU): ``ratio_from_sync = 1 + sync / (k * inner step)``, the
    cycle-averaged overhead with the least noise.
    """
    import math
    import os
    import statistics
    import time

    import torch

    from hrnet import build_model
    from hrnet.runtime.device import select_device
    from optim import Lookahead, build_optimizer

    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    device = select_device(cfg.DEVICE)
    la = cfg.TRAIN.LOOKAHEAD
    inner_name = la.INNER if cfg.TRAIN.OPTIMIZER == "lookahead" else cfg.TRAIN.OPTIMIZER
    inner_cfg = cfg.clone()
    inner_cfg.defrost()
    inner_cfg.TRAIN.OPTIMIZER = inner_name

    torch.manual_seed(cfg.SEED)
    model = build_model(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p).mul_(1e-3)  # randn_like keeps channels_last strides

    variants = {"inner": build_optimizer(inner_cfg, model),
                "lookahead": Lookahead(build_optimizer(inner_cfg, model), k=la.K, alpha=la.ALPHA,
                                       pullback_momentum=la.PULLBACK)}
    try:
        from timm.optim import Lookahead as TimmLookahead

        variants["timm_lookahead"] = TimmLookahead(build_optimizer(inner_cfg, model), alpha=la.ALPHA, k=la.K)
    except ImportError:
        pass

    block = 2 * la.K
    rounds = max(1, math.ceil((args.steps or 90) / block))
    warmup_cycles = 1 if args.warmup < 0 else args.warmup

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def run(opt, steps: int):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            opt.step()
        sync()
        return 1000.0 * (time.perf_counter() - t0) / steps, 1000.0 * (time.process_time() - c0) / steps

    load_before = os.getloadavg()
    for opt in variants.values():
        if warmup_cycles:
            run(opt, warmup_cycles * la.K)  # creates the optimizer state (and timm's lazy slow buffers)
    names = list(variants)
    times: Dict[str, list] = {n: [] for n in names}
    cpu_times: Dict[str, list] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            wall, cpu = run(variants[n], block)
            times[n].append(wall)
            cpu_times[n].append(cpu)
    med = {n: statistics.median(t) for n, t in times.items()}
    cpu_med = {n: statistics.median(t) for n, t in cpu_times.items()}

    # The sync alone, interleaved with single inner steps: the stable part of the overhead.
    ours = variants["lookahead"]

    def ensure_mid_cycle() -> None:  # the public sync() is a no-op at a cycle boundary
        if ours.cycle_step == 0:
            ours.step()

    isolated = {"inner_step": variants["inner"].step, "lookahead_sync": ours.sync}
    prepare = {"lookahead_sync": ensure_mid_cycle}
    if "timm_lookahead" in variants:
        isolated["timm_sync"] = variants["timm_lookahead"].sync_lookahead
    iso: Dict[str, list] = {n: [] for n in isolated}
    for _ in range(rounds * 2):
        for n, fn in isolated.items():
            prepare.get(n, lambda: None)()
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync()
            iso[n].append((1000.0 * (time.perf_counter() - t0), 1000.0 * (time.process_time() - c0)))
    clock = 1 if device.type == "cpu" else 0  # CPU time on CPU, wall time on CUDA
    iso_med = {n: statistics.median(v[clock] for v in vals) for n, vals in iso.items()}
    headline = round(1 + iso_med["lookahead_sync"] / (la.K * iso_med["inner_step"]), 4)
    result: Dict[str, Any] = {
        # Headline: the cycle-averaged overhead from the isolated sync cost (process CPU time on
        # CPU), the figure least disturbed by other load; the raw interleaved figures follow.
        "headline_ratio": headline,
        "headline": "ratio_from_sync (isolated sync / (k x inner step), %s)" % (
            "process CPU time" if device.type == "cpu" else "wall time"),
        "inner_ms_per_step": round(med["inner"], 3),
        "lookahead_ms_per_step": round(med["lookahead"], 3),
        "ratio": round(med["lookahead"] / med["inner"], 4),
        "ratio_paired": round(statistics.median(a / b for a, b in zip(times["lookahead"], times["inner"])), 4),
    }
    if "timm_lookahead" in med:
        result["timm_lookahead_ms_per_step"] = round(med["timm_lookahead"], 3)
        result["timm_ratio"] = round(med["timm_lookahead"] / med["inner"], 4)
    if device.type == "cpu":  # process CPU time: robust to being descheduled on a loaded machine (use --threads 1)
        result["cpu_ms_per_step"] = {n: round(t, 3) for n, t in cpu_med.items()}
        result["ratio_cpu"] = round(cpu_med["lookahead"] / cpu_med["inner"], 4)
        if "timm_lookahead" in cpu_med:
            result["timm_ratio_cpu"] = round(cpu_med["timm_lookahead"] / cpu_med["inner"], 4)
    result["isolated_ms"] = {n: round(v, 3) for n, v in iso_med.items()}
    result["isolated_clock"] = "process_cpu" if clock else "wall"
    result["ratio_from_sync"] = headline
    if "timm_sync" in iso_med:
        result["timm_ratio_from_sync"] = round(1 + iso_med["timm_sync"] / (la.K * iso_med["inner_step"]), 4)
    result.update(
        inner=inner_name, inner_class=type(variants["inner"]).__name__,
        foreach=variants["inner"].defaults.get("foreach"), k=la.K, alpha=la.ALPHA, pullback=la.PULLBACK,
        num_tensors=len(params), num_params=sum(p.numel() for p in params), model=cfg.MODEL.NAME,
        device=str(device), threads=torch.get_num_threads(), rounds=rounds, steps_per_block=block,
        block_ms_per_step={n: [round(t, 2) for t in ts] for n, ts in times.items()},
        loadavg_before=[round(x, 2) for x in load_before], loadavg_after=[round(x, 2) for x in os.getloadavg()],
        torch=torch.__version__)
    return result


def bench_decode(cfg, args: argparse.Namespace) -> Dict[str, Any]:
    """Evaluation post-processing of 3000 images (``--steps`` overrides): decode random
    (B, J, h, w) heatmaps in TEST.BATCH_SIZE_PER_GPU chunks (argmax and DARK), map them to
    image pixels, then ``compute_metrics``. Heatmap generation is not timed."""
    import os
    import time

    import numpy as np
    import torch

    from data.codec import HeatmapCodec
    from data.transforms import transform_points
    from hrnet.runtime.device import select_device
    from hrnet.evaluation.metrics import compute_metrics

    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    n, chunk = args.steps or 3000, int(cfg.TEST.BATCH_SIZE_PER_GPU)
    j, (w, h) = int(cfg.MODEL.NUM_JOINTS), cfg.MODEL.HEATMAP_SIZE
    gen = torch.Generator().manual_seed(0)
    rng = np.random.default_rng(0)
    mats = np.tile(np.array([[4.0, 0.0, 10.0], [0.0, 4.0, 20.0]]), (chunk, 1, 1))
    joints = np.concatenate([rng.uniform(0, 256, (n, j, 2)), np.full((n, j, 1), 2.0)], axis=2)
    bbox = np.tile([0.0, 0.0, 200.0, 180.0], (n, 1))
    device = select_device(cfg.DEVICE)
    cuda = device.type == "cuda"
    result: Dict[str, Any] = {"images": n, "joints": j, "heatmap": [w, h], "chunk": chunk, "device": str(device),
                              "threads": torch.get_num_threads(), "loadavg_before": list(os.getloadavg())}
    for method in ("argmax", "dark"):
        codec = HeatmapCodec((int(w), int(h)), float(cfg.MODEL.SIGMA), method)
        spent, preds = 0.0, []
        for start in range(0, n, chunk):
            b = min(chunk, n - start)
            hm = torch.rand(b, j, h, w, generator=gen).to(device)
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            xy, _ = codec.decode(hm)
            preds.append(transform_points(xy.double().cpu().numpy(), mats[:b]))
            spent += time.perf_counter() - t0
        result[f"decode_{method}_s"] = round(spent, 3)
    t0 = time.perf_counter()
    compute_metrics(np.concatenate(preds), joints, bbox, cfg)
    result["metrics_s"] = round(time.perf_counter() - t0, 3)
    result["loadavg_after"] = list(os.getloadavg())
    return result


def bench_infer(cfg, args: argparse.Namespace) -> Dict[str, Any]:
    """The demo pipeline (cv2.imread, crop, forward, decode, back to image pixels: hrnet.evaluation.inference)
    on the CPU, PyTorch vs onnxruntime, at batch 1 and 32, for the quick-start model
    (hrnet_w18_small, 128x128) and HRNet-W18 (256x256), random weights, float32.

    ``--steps`` images per measurement (default 32) read from 640x480 JPEGs written to a temporary
    folder, the whole image as the box; ``--warmup`` rounds (default 3). The variants run
    interleaved, round after round, so a load change on a shared machine hits all of them; the
    median over rounds of images/s (wall) and of CPU seconds per image (process time, all
    threads) are reported, with the onnxruntime / PyTorch ratios. ``--threads N`` sets both
    backends' threads: on a busy machine pass 1, as OpenMP's spin-waiting with more threads than
    free cores makes PyTorch tens of times slower and distorts the comparison. ``cfg`` supplies DATASET.BBOX_PADDING,
    TEST.DECODE and TEST.FLIP_TEST; the models' sizes are fixed here.
    """
    import os
    import statistics
    import tempfile
    import time

    import cv2
    import numpy as np
    import torch

    from hrnet import build_model
    from hrnet.evaluation.export import export_model
    from hrnet.evaluation.inference import crop_hands, load_onnx_model, predict_crops

    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)
    n_images, rounds = args.steps or 32, args.warmup if args.warmup >= 0 else 3
    device = torch.device("cpu")
    result: Dict[str, Any] = {"images_per_measurement": n_images, "rounds": rounds, "threads": torch.get_num_threads(),
                              "decode": cfg.TEST.DECODE, "flip_test": bool(cfg.TEST.FLIP_TEST),
                              "loadavg_before": list(os.getloadavg())}
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        paths = []
        for i in range(n_images):
            img = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
            paths.append(os.path.join(tmp, f"{i}.jpg"))
            cv2.imwrite(paths[-1], img)
        variants = {}
        for tag, name, side in (("quickstart", "hrnet_w18_small", 128), ("hrnet_w18", "hrnet_w18", 256)):
            mcfg = cfg.clone()
            mcfg.defrost()
            mcfg.MODEL.NAME, mcfg.MODEL.PRETRAINED = name, ""
            mcfg.MODEL.IMAGE_SIZE, mcfg.MODEL.HEATMAP_SIZE = [side, side], [side // 4, side // 4]
            mcfg.CHANNELS_LAST, mcfg.AMP.MODE = True, "off"
            mcfg.freeze()
            torch.manual_seed(0)
            model = build_model(mcfg).eval()
            onnx_path = export_model(build_model(mcfg), mcfg, "onnx", os.path.join(tmp, f"{tag}.onnx"))
            backends = {"torch": model,
                        "onnxruntime": load_onnx_model(onnx_path, mcfg, threads=getattr(args, "threads", 0))}
            for batch in (1, 32):
                for backend, net in backends.items():
                    variants[f"{tag}/b{batch}/{backend}"] = (net, mcfg, batch)

        def pipeline(net, mcfg, batch: int) -> None:
            for start in range(0, n_images, batch):
                crops = [crop_hands(img, np.array([[0.0, 0.0, img.shape[1], img.shape[0]]]), mcfg)
                         for img in (cv2.imread(p) for p in paths[start:start + batch])]
                predict_crops(net, torch.cat([c[0] for c in crops]), np.concatenate([c[1] for c in crops]),
                              mcfg, device)

        for variant in variants.values():  # warm-up: first-call allocations, oneDNN primitive caches
            pipeline(*variant)
        wall = {k: [] for k in variants}
        cpu = {k: [] for k in variants}
        for _ in range(max(1, rounds)):
            for key, variant in variants.items():
                t0, c0 = time.perf_counter(), time.process_time()
                pipeline(*variant)
                wall[key].append(n_images / (time.perf_counter() - t0))
                cpu[key].append((time.process_time() - c0) / n_images)
    for key in variants:
        result[f"{key}/images_per_s"] = round(statistics.median(wall[key]), 2)
        result[f"{key}/cpu_s_per_image"] = round(statistics.median(cpu[key]), 4)
    for key in variants:
        if key.endswith("/onnxruntime"):
            base = key[: -len("onnxruntime")] + "torch"
            result[f"{key[: -len('/onnxruntime')]}/ort_vs_torch_speed"] = round(
                result[f"{key}/images_per_s"] / result[f"{base}/images_per_s"], 3)
            result[f"{key[: -len('/onnxruntime')]}/ort_vs_torch_cpu"] = round(
                result[f"{key}/cpu_s_per_image"] / result[f"{base}/cpu_s_per_image"], 3)
    result["loadavg_after"] = list(os.getloadavg())
    return result


BENCHMARKS: Dict[str, Callable[[Any, argparse.Namespace], Dict[str, Any]]] = {
    "train-step": bench_train_step,
    "data": bench_data,
    "optimizer": bench_optimizer,
    "decode": bench_decode,
    "infer": bench_infer,
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=sorted(BENCHMARKS), help="what to measure")
    parser.add_argument("--cfg", default=None, help="experiment yaml (defaults when omitted)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--steps", type=int, default=0, help="timed iterations (0 = the benchmark's default)")
    parser.add_argument("--warmup", type=int, default=-1, help="untimed warm-up iterations (-1 = default)")
    parser.add_argument("--compare", action="store_true",
                        help="train-step: also time the official code's fp32 settings; data: also time albumentations")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = torch's default)")
    parser.add_argument("--amp", choices=["fp32", "bf16", "fp16", "auto"], default="",
                        help="train-step: precision (default: the config's AMP.MODE / AMP.DTYPE)")
    parser.add_argument("opts", nargs="*", help="KEY VALUE config overrides")
    # intermixed: options may follow the subcommand (REMAINDER would swallow them as overrides)
    args = parser.parse_intermixed_args(argv)
    cfg = load_config(args.cfg, args.opts)
    result = BENCHMARKS[args.which](cfg, args)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>28}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(_cli.run(main))
