"""Choosing the executor (``tools/study.py --executor``): the one module that knows both kinds, so
that neither executor module imports the other."""
from __future__ import annotations

from typing import Any, Optional, Sequence

from hrnet.study.execute.executors import CLUSTER_INSTALL, Executor, ExecutorError, LocalExecutor

__all__ = ["make_executor"]


def make_executor(kind: str, train_command: Sequence[str], out_dir: str, slots: Sequence[Optional[str]] = (None,),
                  threads: Optional[int] = None, **ray_options: Any) -> Executor:
    """``local`` (``slots``, ``threads``) or ``ray`` (``threads``, ``ray_options``: see
    ``ray_cluster.RayExecutor``); a missing Ray names the install command."""
    if kind == "local":
        return LocalExecutor(train_command, slots, threads)
    try:
        import ray  # noqa: F401  (the optional dependency, before the module that needs it)
    except ImportError as exc:
        raise ExecutorError(f"--executor ray needs Ray: {CLUSTER_INSTALL} (import ray: {exc})") from exc
    from hrnet.study.execute.ray_cluster import RayExecutor

    return RayExecutor(train_command, out_dir, threads=threads, **ray_options)
