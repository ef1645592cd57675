"""Optimizer studies: arms x seeds of ordinary training runs, their statistics and report.

- ``spec.py``: the study file (``load_study``) and the plan (``plan_runs``);
- ``runner.py``: training the planned runs (skip finished, resume partial, one process per slot);
- ``real_photos.py``: each run's model on the real hand photos, cached by what changes the result;
- ``analysis.py``: every run folder read back (``collect``) and the report dict (``analyse``);
- ``stats.py``: paired statistics (pure functions);
- ``report.py``: ``report.md``, ``report.json`` and the figures.

May import everything below it: ``hrnet.engine``, ``hrnet.evaluation``, ``hrnet.runtime``,
``configs``, ``data``. Nothing in ``hrnet`` imports the study.
"""
