"""Performance measurements behind ``tools/benchmark.py`` (never part of the timed test suite).

One module per measurement, each with one public ``bench_*(cfg, options) -> dict`` function:

- ``train_step.py``: fwd + bwd + optimizer step throughput, per precision and memory format;
- ``data_loading.py``: the training data pipeline in one process (and the albumentations baseline);
- ``optimizer.py``: ``step()`` cost of the inner optimizer alone and wrapped in Lookahead;
- ``decode.py``: evaluation post-processing (heatmap decoding, metrics);
- ``infer.py``: the demo pipeline, PyTorch vs onnxruntime;
- ``timing.py``: what they share: interleaved timing of variants (A, B, A, B ...) on both clocks,
  device sync, thread count, paired ratios.

May import everything in ``hrnet`` below the study (``hrnet.engine``, ``hrnet.evaluation``,
``hrnet.models``, ``hrnet.runtime``) and ``data``, ``optim``, ``configs``. Nothing imports it but
``tools/benchmark.py``. The modules are imported on first use (:func:`get_benchmark`): most pull in
timm (seconds), which ``tools/benchmark.py --help`` and the other subcommands do not need.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Dict

__all__ = ["BENCHMARKS", "Options", "get_benchmark"]


@dataclass(frozen=True)
class Options:
    """The knobs every benchmark reads (``tools/benchmark.py``'s options); each says what it uses.

    ``steps``: timed iterations, 0 = the benchmark's default; ``warmup``: untimed iterations,
    -1 = the benchmark's default; ``compare``: also time a baseline; ``threads``:
    ``torch.set_num_threads``, 0 = torch's default; ``amp``: ``fp32|bf16|fp16|auto``, '' = the
    config's AMP.MODE / AMP.DTYPE (train-step only).
    """
    steps: int = 0
    warmup: int = -1
    compare: bool = False
    threads: int = 0
    amp: str = ""


#: Subcommand -> ``module:function`` in this package.
BENCHMARKS: Dict[str, str] = {
    "train-step": "train_step:bench_train_step",
    "data": "data_loading:bench_data",
    "optimizer": "optimizer:bench_optimizer",
    "decode": "decode:bench_decode",
    "infer": "infer:bench_infer",
}


def get_benchmark(name: str) -> Callable[[Any, Options], Dict[str, Any]]:
    """The ``bench_*`` function of subcommand ``name`` (a key of :data:`BENCHMARKS`)."""
    module, function = BENCHMARKS[name].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)
