"""The training engine:

- ``trainer.py``: the loop (``Trainer``): epochs, validation, checkpoints, logging;
- ``run_record.py``: the run folder's files (names, TensorBoard tags, metrics.json, history) and
  their reader (``Run``, ``load_run``) used by ``tools/compare.py`` and the study;
- ``distributed.py``: torchrun process groups, the shard sampler and gathering of results;
- ``signals.py``: Ctrl-C / SIGTERM turned into a stop at the next checkpoint.

May import: ``hrnet.evaluation`` (validation), ``hrnet.models``, ``hrnet.runtime``, ``data``,
``optim``, ``configs``. Not the study.
"""
