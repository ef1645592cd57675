"""Ctrl-C / SIGTERM as a request to stop at the next safe point, not an exception mid-step.

The trainer checks :attr:`StopRequest.signum` after each iteration (and shares it with the other
ranks), so a stopped run leaves a complete checkpoint of its last finished epoch.
"""
from __future__ import annotations

import signal
import threading
from typing import Any, Dict, Optional

__all__ = ["StopRequest", "TrainingInterrupted", "ignore_sigint_in_worker"]


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
