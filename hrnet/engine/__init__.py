"""The training engine:

- ``trainer.py``: the loop (``Trainer``): set-up, epochs, checkpoints, the run's outcome;
- ``validation.py``: validation inside a run (which weights, BN recalibration, model_best.pth);
- ``loaders.py``: the run's data sets and loaders, seeded for exact resume;
- ``progress.py``: an epoch's progress bar, log lines and per-iteration loss;
- ``run_record.py``: the run folder's files (names, TensorBoard tags, metrics.json, history), how
  the trainer writes them and whether a folder may take a new run;
- ``run_reader.py``: run folders read back (``Run``, ``load_run``) for ``tools/compare.py``;
- ``distributed.py``: torchrun process groups, the shard sampler and gathering of results;
- ``signals.py``: Ctrl-C / SIGTERM turned into a stop at the next checkpoint.

May import: ``hrnet.evaluation`` (validation), ``hrnet.models``, ``hrnet.runtime``, ``data``,
``optim``, ``configs``. Not the study.
"""
