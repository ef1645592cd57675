"""Optimizer studies: arms x seeds of ordinary training runs, their statistics and report.

Four rooms, one per step, each importing only the rooms before it (``tests/test_layout.py``):

- ``plan/``: the study file and its plan (``spec``), the scale and each arm's config (``scale``),
  a planned run's folder read back, with the one "is this run finished" (``runs``);
- ``execute/``: training the plan (``runner``) through an executor (``executors``: local processes;
  ``ray_cluster``: Ray tasks; ``select``: the choice);
- ``analyse/``: the run folders read back into the report dict (``analysis``) from pure parts
  (``stats``, ``floors``, ``calibration``, ``comparisons``, ``trend``, ``rankings``, ``verdict``) and
  the real-photo evaluation (``real_photos``);
- ``render/``: ``report.md`` / ``report.json`` (``report``) and the figures (``figures``).

May import everything below it: ``hrnet.engine``, ``hrnet.evaluation``, ``hrnet.runtime``,
``configs``, ``data``. Nothing in ``hrnet`` imports the study.
"""
