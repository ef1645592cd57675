"""One trainer per run folder: an OS lock on ``<run>/.trainer.lock``, held for the trainer's life.

Two trainers in one folder (a study started twice, a retried Ray task meeting its predecessor, a
hand-typed ``--resume`` beside a running study) would overwrite each other's checkpoints and
metrics. The trainer takes the lock before it looks at, or removes, anything in the folder; a
second trainer is refused in one line naming the folder and the holder's PID.

``fcntl.flock`` locks belong to the open file: the kernel releases them when the holder exits,
however it dies, so a lock left by a dead process never blocks (the file itself stays; it is never
removed, since removing a locked file lets two processes lock two different files of one name).
"""
from __future__ import annotations

import os
from typing import Optional

try:
    import fcntl
except ImportError:  # not POSIX: no lock (the project trains on Linux)
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_FILE", "RunFolderBusy", "RunLock", "holder_pid"]

LOCK_FILE = ".trainer.lock"


class RunFolderBusy(FileExistsError):
    """Another live trainer holds the run folder (the message names the folder and its PID)."""


class RunLock:
    """The lock of run folder ``run_dir``: :meth:`acquire` (creates the folder) and :meth:`release`
    (idempotent; also done by the kernel when the process ends)."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_FILE)
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`RunFolderBusy` (the lock file is created once and never written:
        the holder's PID comes from the kernel's lock table, /proc/locks)."""
        if self._fd is not None or fcntl is None:
            return
        os.makedirs(self.run_dir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd) or "unknown"
            os.close(fd)
            raise RunFolderBusy(f"{self.run_dir} is being trained by another trainer (PID {holder}); wait for it to "
                                f"end or stop it (kill -TERM {holder} stops it at a checkpoint), then run again") \
                from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the file releases the lock


def _lock_holder(fd: int) -> Optional[int]:
    """The PID holding a flock on the file open as ``fd``, from /proc/locks (Linux); None if unknown."""
    st = os.fstat(fd)
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":  # "N: -> FLOCK ..." lines are waiters
            continue
        try:
            major, minor, inode = fields[5].split(":")
            if (int(major, 16), int(minor, 16), int(inode)) == want:
                return int(fields[4])
        except ValueError:
            continue
    return None


def holder_pid(run_dir: str) -> Optional[int]:
    """The PID of the live trainer holding ``run_dir`` (None: no trainer holds it)."""
    path = os.path.join(run_dir, LOCK_FILE)
    if fcntl is None or not os.path.isfile(path):
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _lock_holder(fd) or -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
