"""Ctrl-C / SIGTERM as a request to stop at the next safe point, not an exception mid-step.

The trainer checks :attr:`StopRequest.signum` after each iteration (and shares it with the other
ranks), so a stopped run leaves a complete checkpoint of its last finished epoch.
"""
from __future__ import annotations

import ctypes
import os
import signal
import threading
from typing import Any, Dict, Optional

__all__ = ["StopRequest", "TrainingInterrupted", "ignore_sigint_in_worker", "set_parent_death_signal",
           "end_with_launcher"]

_PR_SET_PDEATHSIG = 1
_LIBC: Any = None


class TrainingInterrupted(Exception):
    """Raised inside the epoch loop when SIGINT/SIGTERM asked the run to stop."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopRequest:
    """While installed, SIGINT / SIGTERM set ``signum`` instead of stopping the process.

    A second signal acts at once (default handlers): the checkpoint on disk is complete, since
    saves are atomic. Installing is a no-op outside the main thread (signals cannot be caught there).
    """

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._old: Dict[int, Any] = {}

    def _on_signal(self, signum: int, frame) -> None:
        # Only set a flag (no I/O in a signal handler).
        self.signum = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}


def ignore_sigint_in_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a terminal's Ctrl-C reaches the whole process group; workers
    must survive it so the main process can finish its iteration and write a clean checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def set_parent_death_signal(signum: int) -> bool:
    """Linux: have the kernel send ``signum`` to this process when its parent ends (``PR_SET_PDEATHSIG``),
    however the parent dies (SIGKILL included); False where that is not available. Safe in a
    ``preexec_fn`` once :func:`load_libc` ran in the parent (no import or allocation after a fork)."""
    libc = load_libc()
    return libc is not None and libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0


def load_libc() -> Any:
    """The C library with ``prctl`` (Linux), loaded once; None elsewhere."""
    global _LIBC
    if _LIBC is None:
        try:
            libc = ctypes.CDLL(None)
        except OSError:
            libc = False
        _LIBC = libc if libc and hasattr(libc, "prctl") else False
    return _LIBC or None


def end_with_launcher() -> None:
    """A ``torchrun`` rank ends with its launcher. torchrun starts each rank in a session of its own, so
    a signal for the launcher (the study driver's stop, a dying Ray worker's SIGKILL) reaches the
    launcher only; if it dies without stopping its ranks (SIGKILL), the ranks would train on. No-op
    outside torchrun (``LOCAL_RANK`` unset)."""
    if "LOCAL_RANK" not in os.environ:
        return
    parent = os.getppid()
    if set_parent_death_signal(signal.SIGKILL) and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)  # the launcher died before the death signal was set
