"""Shared fixtures: the real hand samples beside the checkout, tiny configs."""
from __future__ import annotations

import os
import sys
from typing import List, Sequence

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
# HRNET_REAL_HANDS overrides the folder for a copy of the tree elsewhere (tools/mutation.py's mutants/).
REAL_HANDS = os.environ.get("HRNET_REAL_HANDS") or os.path.join(os.path.dirname(ROOT), "shared", "data", "real-hands")


@pytest.fixture(scope="session")
def real_hands() -> str:
    """Folder of the real OneHand10K / FreiHAND samples (../shared/data/real-hands)."""
    if not os.path.isdir(REAL_HANDS):
        pytest.fail(f"real hand samples not found at {REAL_HANDS} (../shared beside the checkout)")
    return REAL_HANDS


@pytest.fixture(autouse=True)
def _no_cpuinfo_from_an_earlier_test():
    """/proc/cpuinfo reads are cached by path (hrnet/runtime/device.py), and a passing test's tmp_path is
    deleted (setup.cfg), so a later test's fake cpuinfo can have the same path: every test starts empty."""
    from hrnet.runtime import device

    device._cpuinfo_field.cache_clear()


def make_cfg(path: str = None, opts: Sequence[str] = (), freeze: bool = True):
    """``configs.load_config`` with overrides; a helper for tests."""
    from configs import load_config

    return load_config(path, list(opts), freeze=freeze)


# ---------------------------------------------------------------------------- run folders made by hand
# The study counts a run folder only with its config.yaml (hrnet/study/plan/runs.py: records without
# one are "unverified"), which tools/train.py writes before anything else. Hand-made run folders and
# fake trainers write it too, through these.
def planned_config_text(config: str, opts: Sequence[str]) -> str:
    """``config.yaml``'s content for a run of ``config`` with ``opts``: the resolved config."""
    from configs import load_config

    return load_config(config, list(opts)).dump()


def write_planned_config(run) -> str:
    """``<run>/config.yaml`` of a ``PlannedRun`` (its planned config), the folder made if needed; its path."""
    os.makedirs(run.run_dir, exist_ok=True)
    path = os.path.join(run.run_dir, "config.yaml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(planned_config_text(run.config, run.opts))
    return path


def write_planned_configs(study, out_dir: str) -> List[str]:
    """:func:`write_planned_config` for each planned run of ``study`` in ``out_dir`` whose folder
    exists and has no config.yaml yet (one a test wrote, a stale one say, is kept); their names."""
    from hrnet.study.plan.spec import plan_runs

    done = []
    for run in plan_runs(study, str(out_dir)):
        if os.path.isdir(run.run_dir) and not os.path.exists(os.path.join(run.run_dir, "config.yaml")):
            write_planned_config(run)
            done.append(run.name)
    return done


#: The opening of a fake trainer, a script standing in for tools/train.py that an executor starts as
#: ``SCRIPT [ARGS] --cfg CONFIG [--resume] KEY VALUE ...`` (``executors.run_command``): as the real
#: trainer, it resolves the config and writes it to its run folder (``OUTPUT_DIR/EXPERIMENT_NAME``)
#: first. Leaves ``cfg`` (the resolved config), ``run_dir`` and ``argv`` to the rest of the script.
FAKE_TRAINER_START = f"""
import os, sys
sys.path.insert(0, {ROOT!r})
from configs import load_config
argv = sys.argv[1:]
_at = argv.index("--cfg")
cfg = load_config(argv[_at + 1], [a for a in argv[_at + 2:] if a != "--resume"])  # the overrides follow
run_dir = os.path.join(cfg.OUTPUT_DIR, cfg.EXPERIMENT_NAME)
os.makedirs(run_dir, exist_ok=True)
with open(os.path.join(run_dir, "config.yaml"), "w") as _f:
    _f.write(cfg.dump())
"""
