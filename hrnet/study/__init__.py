"""Optimizer studies: arms x seeds of ordinary training runs, their statistics and report.

- ``spec.py``: the study file (``load_study``), its folder (``output_dir``: the report, and
  ``runs/<arm>_seed<s>/``) and the plan (``plan_runs``, by priority then seed);
- ``runner.py``: training the planned runs (skip finished, resume partial, progress, failures);
- ``executors.py``: how the runner starts a run: local processes, one per slot; or
  ``ray_executor.py``: one Ray task per run on a cluster (imported only when asked for);
- ``real_photos.py``: each run's final model on the real hand photos, cached by what changes the result;
- ``analysis.py``: every run folder read back (``collect``) and the report dict (``analyse``);
- ``scale.py``: the scaled config keys and training iterations beside the user's setting;
- ``floors.py``: no-learning floors (box centre, constant layout) and "has not learned";
- ``calibration.py``: the reference arm's final NME against the floor (does the scale learn?);
- ``comparisons.py``: the families of paired comparisons (vs the reference, same-LR pairs,
  Lookahead slow vs fast) with Holm-adjusted verdicts;
- ``trend.py``: Lookahead(X) - X against training length (arms that differ only in length);
- ``rankings.py``: ranking, sensitivity and real-photo results on common seeds;
- ``stats.py``: paired statistics, Holm, censoring, common seeds (pure functions);
- ``verdict.py``: the verdict sentences; ``report.py``: ``report.md`` and ``report.json``;
  ``figures.py``: the figures.

May import everything below it: ``hrnet.engine``, ``hrnet.evaluation``, ``hrnet.runtime``,
``configs``, ``data``. Nothing in ``hrnet`` imports the study.
"""
