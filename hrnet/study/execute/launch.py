"""The launcher of a study's trainers and the GPUs it gives them, checked before anything trains.

Each run's ``tools/train.py`` starts through a launcher: this python (one process) or ``torchrun``
(``--nproc_per_node N`` processes, one GPU each, for one DDP run). A mismatch between the GPUs a
run is given and the processes that use them fails late or silently: two ranks on one GPU, a
run's second GPU idle, two torchruns meeting on one rendezvous port, a CUDA study on a GPU it does
not have. Each is refused here in one line naming the option (``ExecutorError``).
"""
from __future__ import annotations

import os
import shlex
from typing import List, Optional, Sequence

from hrnet.study.execute.executors import ExecutorError
from hrnet.study.plan.scale import arm_config
from hrnet.study.plan.spec import Study

__all__ = ["is_torchrun", "processes_per_run", "study_device", "device_slots", "check_rendezvous",
           "check_ray_gpus"]

_TORCHRUN_MODULES = ("torch.distributed.run", "torch.distributed.launch")


def is_torchrun(launcher: Sequence[str]) -> bool:
    """``torchrun ...`` or ``python -m torch.distributed.run ...``."""
    if not launcher:
        return False
    if os.path.basename(launcher[0]) == "torchrun":
        return True
    return any(w == "-m" and launcher[i + 1:i + 2] and launcher[i + 1] in _TORCHRUN_MODULES
               for i, w in enumerate(launcher))


def _option(words: Sequence[str], *names: str) -> Optional[str]:
    """The value of the first of ``names`` among ``words`` (``--name V`` or ``--name=V``)."""
    for i, w in enumerate(words):
        for name in names:
            if w == name and i + 1 < len(words):
                return words[i + 1]
            if w.startswith(name + "="):
                return w.split("=", 1)[1]
    return None


def processes_per_run(launcher: Sequence[str]) -> Optional[int]:
    """Processes the launcher starts for one run: torchrun's ``--nproc_per_node`` (default 1), 1 for
    any other launcher; None when torchrun decides (``gpu``, ``auto``)."""
    if not is_torchrun(launcher):
        return 1
    value = _option(launcher, "--nproc_per_node", "--nproc-per-node")
    if value is None:
        return 1
    return int(value) if value.isdigit() else None


def study_device(study: Study) -> str:
    """The study's DEVICE: ``cpu`` or ``cuda`` when every arm trains there, else ``auto``."""
    devices = {str(arm_config(study, arm).DEVICE).lower() for arm in study.arms}
    return devices.pop() if len(devices) == 1 and devices <= {"cpu", "cuda"} else "auto"


def _visible_gpus() -> Optional[int]:
    """GPUs this machine has (None where this process sees a subset: CUDA_VISIBLE_DEVICES is set)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        return None
    import torch

    return torch.cuda.device_count()


def device_slots(devices: str, launcher: Sequence[str], device: str) -> List[str]:
    """The ``CUDA_VISIBLE_DEVICES`` value of each ``--devices`` entry (``0,1`` -> ``["0", "1"]``,
    ``0+1,2+3`` -> ``["0,1", "2,3"]``), checked against the launcher's processes per run, the
    study's ``device`` and this machine's GPUs."""
    entries = [d.strip() for d in devices.split(",")]
    slots = [e.replace("+", ",") for e in entries]
    if not all(s and all(p.isdigit() for p in s.split(",")) for s in slots):
        raise ExecutorError(f"--devices {devices!r}: expected GPU indices such as 0,1,2,3 or 0+1,2+3")
    gpus = [g for s in slots for g in s.split(",")]
    twice = next((g for i, g in enumerate(gpus) if g in gpus[:i]), None)
    if twice is not None:
        raise ExecutorError(f"--devices {devices}: GPU {twice} is given twice (two processes would share it)")
    n, shown = processes_per_run(launcher), shlex.join(launcher)
    for entry, slot in zip(entries, slots):
        k = len(slot.split(","))
        if n is not None and k < n:
            raise ExecutorError(f"--devices {devices}: entry {entry} gives a run {k} GPU(s) but --launcher starts {n} "
                                f"processes per run ({shown}): two ranks would share a GPU; give each entry {n} "
                                f"GPUs ({'+'.join(str(i) for i in range(n))},...)")
        if n is not None and k > n:
            raise ExecutorError(f"--devices {devices}: entry {entry} gives a run {k} GPUs but --launcher starts {n} "
                                f"process(es) per run ({shown}), so {k - n} would stay idle; pass --launcher "
                                f"\"torchrun --standalone --nproc_per_node {k}\", or one GPU per entry")
    if device == "cpu":
        raise ExecutorError(f"--devices {devices}: the study trains on the CPU (DEVICE cpu); --jobs N trains CPU runs "
                            f"side by side")
    have = _visible_gpus()
    missing = next((g for g in gpus if have is not None and int(g) >= have), None)
    if missing is not None:
        raise ExecutorError(f"--devices {devices}: GPU {missing} is not on this machine ({have} GPU(s))")
    return slots


def check_rendezvous(launcher: Sequence[str], parallel: Optional[int]) -> None:
    """torchruns side by side (``parallel`` > 1; None: the cluster decides) need a rendezvous each:
    ``--standalone`` picks a free port per run; anything else shares one (the default port 29500 or
    the endpoint given), so the second run fails to start or joins the first."""
    if is_torchrun(launcher) and (parallel is None or parallel > 1) and "--standalone" not in launcher:
        many = "runs on one node" if parallel is None else f"{parallel} runs at a time"
        raise ExecutorError(f"--launcher {shlex.join(launcher)}: {many} would share one torchrun rendezvous (its "
                            f"default port, or the endpoint given); add --standalone (each run picks a free port)")


def check_ray_gpus(gpus_per_run: float, launcher: Sequence[str], device: str) -> None:
    """A DDP run on Ray asks for one GPU per process: fewer puts two ranks on one GPU, more leaves some idle."""
    n = processes_per_run(launcher)
    if device == "cpu" or n is None or n == 1 or gpus_per_run == 0 or gpus_per_run == n:
        return
    what = "two ranks would share a GPU" if gpus_per_run < n else f"{gpus_per_run - n:g} would stay idle"
    raise ExecutorError(f"--gpus-per-run {gpus_per_run:g}: --launcher starts {n} processes per run "
                        f"({shlex.join(launcher)}): {what}; pass --gpus-per-run {n}")
