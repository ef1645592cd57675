"""Shared fixtures: the real hand samples beside the checkout, tiny configs."""
from __future__ import annotations

import os
import sys
from typing import Sequence

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


def make_cfg(path: str = None, opts: Sequence[str] = (), freeze: bool = True):
    """``configs.load_config`` with overrides; a helper for tests."""
    from configs import load_config

    return load_config(path, list(opts), freeze=freeze)
