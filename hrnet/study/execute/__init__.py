"""Step 2, training the plan: the bookkeeping (``runner``), how a run's process is started
(``executors``: the interface, the local executor and the child process; ``ray_cluster``: one Ray
task per run) and the choice between them (``select``).

Imports the plan only; ``ray_cluster`` is imported only by ``select`` when Ray is asked for."""
