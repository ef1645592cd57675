"""``benchmark optimizer``: ``step()`` cost of the inner optimizer alone and wrapped in Lookahead."""
from __future__ import annotations

import math
import statistics
from typing import Any, Callable, Dict, List

import torch
from torch.optim import Optimizer

from hrnet.benchmark import Options
from hrnet.benchmark.timing import Samples, device_sync, interleave, loadavg, paired_ratios, set_threads
from hrnet.models.hrnet import build_model
from hrnet.runtime.device import select_device
from optim import Lookahead, build_optimizer

__all__ = ["bench_optimizer", "build_variants", "inner_name"]


def inner_name(cfg) -> str:
    """The optimizer Lookahead wraps: TRAIN.LOOKAHEAD.INNER when TRAIN.OPTIMIZER is lookahead, else TRAIN.OPTIMIZER."""
    return cfg.TRAIN.LOOKAHEAD.INNER if cfg.TRAIN.OPTIMIZER == "lookahead" else cfg.TRAIN.OPTIMIZER


def build_variants(cfg, model: torch.nn.Module) -> Dict[str, Optimizer]:
    """Three optimizers with their own state over ``model``'s parameters: ``inner``
    (:func:`inner_name`, from ``optim.build_optimizer``), ``lookahead``
    (``optim.Lookahead`` around another instance, TRAIN.LOOKAHEAD.K/ALPHA/PULLBACK) and, when timm
    is installed, ``timm_lookahead`` (``timm.optim.Lookahead``, same k and alpha) around a third."""
    la = cfg.TRAIN.LOOKAHEAD
    inner_cfg = cfg.clone()
    inner_cfg.defrost()
    inner_cfg.TRAIN.OPTIMIZER = inner_name(cfg)
    variants = {"inner": build_optimizer(inner_cfg, model),
                "lookahead": Lookahead(build_optimizer(inner_cfg, model), k=la.K, alpha=la.ALPHA,
                                       pullback_momentum=la.PULLBACK)}
    try:
        from timm.optim import Lookahead as TimmLookahead

        variants["timm_lookahead"] = TimmLookahead(build_optimizer(inner_cfg, model), alpha=la.ALPHA, k=la.K)
    except ImportError:
        pass
    return variants


def time_isolated(variants: Dict[str, Optimizer], rounds: int, sync) -> Dict[str, Samples]:
    """Single inner steps and bare syncs (ours; timm's when present), interleaved, ``rounds`` each:
    the stable part of Lookahead's overhead."""
    ours = variants["lookahead"]

    def ensure_mid_cycle() -> None:  # the public sync() is a no-op at a cycle boundary
        if ours.cycle_step == 0:
            ours.step()

    isolated = {"inner_step": lambda _: variants["inner"].step(), "lookahead_sync": lambda _: ours.sync()}
    if "timm_lookahead" in variants:
        isolated["timm_sync"] = lambda _: variants["timm_lookahead"].sync_lookahead()
    return interleave(isolated, rounds, sync=sync, prepare={"lookahead_sync": ensure_mid_cycle})


def _ms(samples: Dict[str, Samples], clock: str, per: int = 1) -> Dict[str, List[float]]:
    """Milliseconds per step of each variant's timings on ``clock`` ('wall' or 'cpu'), ``per`` steps a call."""
    return {n: [1000.0 * t / per for t in getattr(s, clock)] for n, s in samples.items()}


def _steps(opt: Optimizer, n: int) -> Callable[[int], None]:
    """One timed call: ``n`` steps of ``opt``."""
    def run(_round: int) -> None:
        for _ in range(n):
            opt.step()
    return run


def _block_figures(wall: Dict[str, List[float]]) -> Dict[str, Any]:
    """The interleaved blocks' wall-time figures (``wall``: per-step ms of each block, per variant)."""
    med = {n: statistics.median(t) for n, t in wall.items()}
    out = {"inner_ms_per_step": round(med["inner"], 3), "lookahead_ms_per_step": round(med["lookahead"], 3),
           "ratio": round(med["lookahead"] / med["inner"], 4),
           "ratio_paired": round(statistics.median(paired_ratios(wall["lookahead"], wall["inner"])), 4)}
    if "timm_lookahead" in med:
        out["timm_lookahead_ms_per_step"] = round(med["timm_lookahead"], 3)
        out["timm_ratio"] = round(med["timm_lookahead"] / med["inner"], 4)
    return out


def _block_cpu_figures(cpu: Dict[str, List[float]]) -> Dict[str, Any]:
    """The same from process CPU time: robust to being descheduled on a loaded machine (use --threads 1)."""
    med = {n: statistics.median(t) for n, t in cpu.items()}
    out: Dict[str, Any] = {"cpu_ms_per_step": {n: round(t, 3) for n, t in med.items()},
                           "ratio_cpu": round(med["lookahead"] / med["inner"], 4)}
    if "timm_lookahead" in med:
        out["timm_ratio_cpu"] = round(med["timm_lookahead"] / med["inner"], 4)
    return out


def _from_sync(iso: Dict[str, float], k: int) -> Dict[str, float]:
    """``ratio_from_sync = 1 + sync / (k * inner step)`` from the isolated medians ``iso`` (ms)."""
    out = {"ratio_from_sync": round(1 + iso["lookahead_sync"] / (k * iso["inner_step"]), 4)}
    if "timm_sync" in iso:
        out["timm_ratio_from_sync"] = round(1 + iso["timm_sync"] / (k * iso["inner_step"]), 4)
    return out


def bench_optimizer(cfg, options: Options) -> Dict[str, Any]:
    """``step()`` time of the inner optimizer alone and wrapped in Lookahead on HRNet-W18 parameters.

    The parameters of ``build_model(cfg)`` get fixed synthetic gradients (N(0, 1e-3)); the three
    optimizers of :func:`build_variants` step them. After untimed cycles (``options.warmup``,
    default 1), rounds of blocks of 2 whole k-cycles are timed, the three interleaved in a rotating
    order so that load changes on a shared machine hit all alike. ``*_ms_per_step`` are medians
    over rounds of the block mean (a sync included in every block); ``ratio`` = lookahead / inner
    of those medians, ``ratio_paired`` the median of the per-round ratios. On CPU the same from
    process CPU time (``cpu_ms_per_step``, ``ratio_cpu``), which a loaded machine disturbs less
    than wall time (with ``--threads 1``; with more threads OpenMP spin-waits count too).
    ``options.steps``: timed steps per optimizer (default 90, rounded up to whole blocks).
    Last, single inner steps and bare syncs are timed interleaved (:func:`time_isolated`;
    ``isolated_ms``, CPU time on CPU): ``ratio_from_sync = 1 + sync / (k * inner step)``, the
    cycle-averaged overhead with the least noise, is the headline.
    """
    set_threads(options.threads)
    device = select_device(cfg.DEVICE)
    la = cfg.TRAIN.LOOKAHEAD
    torch.manual_seed(cfg.SEED)
    model = build_model(cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p).mul_(1e-3)  # randn_like keeps channels_last strides
    variants = build_variants(cfg, model)
    block = 2 * la.K
    rounds = max(1, math.ceil((options.steps or 90) / block))
    warmup_cycles = 1 if options.warmup < 0 else options.warmup
    sync = device_sync(device)
    load_before = loadavg()
    for opt in variants.values():  # creates the optimizer state (and timm's lazy slow buffers)
        _steps(opt, warmup_cycles * la.K)(0)
    blocks = interleave({n: _steps(opt, block) for n, opt in variants.items()}, rounds, rotate=True, sync=sync)
    clock = "cpu" if device.type == "cpu" else "wall"  # for the isolated timings
    iso = {n: statistics.median(v) for n, v in _ms(time_isolated(variants, rounds * 2, sync), clock).items()}
    from_sync = _from_sync(iso, la.K)
    wall = _ms(blocks, "wall", block)
    result: Dict[str, Any] = {
        # Headline: the cycle-averaged overhead from the isolated sync cost (process CPU time on
        # CPU), the figure least disturbed by other load; the raw interleaved figures follow.
        "headline_ratio": from_sync["ratio_from_sync"],
        "headline": "ratio_from_sync (isolated sync / (k x inner step), %s)" % (
            "process CPU time" if clock == "cpu" else "wall time"),
        **_block_figures(wall),
        **(_block_cpu_figures(_ms(blocks, "cpu", block)) if clock == "cpu" else {}),
        "isolated_ms": {n: round(v, 3) for n, v in iso.items()},
        "isolated_clock": "process_cpu" if clock == "cpu" else "wall",
        **from_sync,
    }
    inner = variants["inner"]
    result.update(
        inner=inner_name(cfg),
        inner_class=type(inner).__name__, foreach=inner.defaults.get("foreach"), k=la.K, alpha=la.ALPHA,
        pullback=la.PULLBACK, num_tensors=len(params), num_params=sum(p.numel() for p in params),
        model=cfg.MODEL.NAME, device=str(device), threads=torch.get_num_threads(), rounds=rounds,
        steps_per_block=block, block_ms_per_step={n: [round(t, 2) for t in ts] for n, ts in wall.items()},
        loadavg_before=load_before, loadavg_after=loadavg(), torch=torch.__version__)
    return result
