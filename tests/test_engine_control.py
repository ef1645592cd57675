"""The trainer's control plumbing, unit by unit (no training): the stop request on SIGINT / SIGTERM and the
launcher-death signal (hrnet/engine/signals.py), the epoch progress display (progress.py) and the run-folder
lock's corners (run_lock.py; its two-process behaviour is in test_run_lock.py)."""
from __future__ import annotations

import io
import logging
import os
import signal
import threading
from typing import Any, List, Optional

import pytest

from hrnet.engine import progress, run_lock, signals
from hrnet.engine.progress import EpochProgress, fmt_duration
from hrnet.engine.run_lock import LOCK_FILE, RunFolderBusy, RunLock, holder_pid
from hrnet.engine.run_record import TAG_LOSS_ITER
from hrnet.engine.signals import StopRequest, TrainingInterrupted

from conftest import make_cfg


# ---------------------------------------------------------------------------- signals
@pytest.fixture
def saved_handlers():
    """SIGINT / SIGTERM handlers as they were, restored after the test."""
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield old
    for s, h in old.items():
        signal.signal(s, h)


def test_training_interrupted_names_its_signal():
    exc = TrainingInterrupted(signal.SIGTERM)
    assert str(exc) == "SIGTERM" and exc.signum == signal.SIGTERM
    assert str(TrainingInterrupted(signal.SIGINT)) == "SIGINT"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_first_signal_is_a_flag_a_second_acts_at_once(saved_handlers, sig):
    stop = StopRequest()
    assert stop.signum is None
    stop.install()
    assert signal.getsignal(signal.SIGINT) == stop._on_signal and signal.getsignal(signal.SIGTERM) == stop._on_signal
    signal.raise_signal(sig)  # handled: the process goes on, with the flag set
    assert stop.signum == sig
    # the next one takes the default path: KeyboardInterrupt for Ctrl-C, the end of the process for SIGTERM
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    stop.restore()
    assert {s: signal.getsignal(s) for s in saved_handlers} == saved_handlers
    assert stop._old == {}


def test_restore_puts_back_the_handlers_found_at_install(saved_handlers):
    def mine(signum, frame):
        pass

    signal.signal(signal.SIGTERM, mine)
    stop = StopRequest()
    stop.install()
    stop.restore()
    assert signal.getsignal(signal.SIGTERM) is mine
    assert signal.getsignal(signal.SIGINT) == saved_handlers[signal.SIGINT]
    stop.restore()  # nothing left to restore: a no-op
    assert signal.getsignal(signal.SIGTERM) is mine


def test_install_outside_the_main_thread_is_a_no_op(saved_handlers):
    stop = StopRequest()
    errors: List[BaseException] = []

    def run():
        try:
            stop.install()
        except BaseException as exc:  # signal.signal raises ValueError outside the main thread
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert errors == [] and stop._old == {}
    assert {s: signal.getsignal(s) for s in saved_handlers} == saved_handlers


def test_dataloader_workers_ignore_ctrl_c(saved_handlers):
    signals.ignore_sigint_in_worker(3)
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) == saved_handlers[signal.SIGTERM]


def _pdeathsig() -> int:
    """This process's parent-death signal (prctl PR_GET_PDEATHSIG)."""
    import ctypes

    value = ctypes.c_int(-1)
    assert signals.load_libc().prctl(2, ctypes.byref(value), 0, 0, 0) == 0
    return value.value


@pytest.mark.skipif(not os.path.exists("/proc/self"), reason="Linux prctl")
def test_the_parent_death_signal_is_set_in_the_kernel(monkeypatch):
    monkeypatch.setattr(signals, "_LIBC", None)  # loaded by this test, not an earlier one
    try:
        assert signals.set_parent_death_signal(signal.SIGUSR2) is True
        assert _pdeathsig() == signal.SIGUSR2
    finally:
        assert signals.set_parent_death_signal(0) is True  # cleared again: this process outlives nothing
    assert _pdeathsig() == 0


def test_libc_is_loaded_once_and_none_without_prctl(monkeypatch):
    calls: List[Optional[str]] = []

    class NoPrctl:
        pass

    def cdll(name):
        calls.append(name)
        return NoPrctl()

    monkeypatch.setattr(signals, "_LIBC", None)
    monkeypatch.setattr(signals.ctypes, "CDLL", cdll)
    assert signals.load_libc() is None and signals.load_libc() is None
    assert calls == [None]  # the process's own C library, looked up once
    assert signals.set_parent_death_signal(signal.SIGKILL) is False


def test_no_c_library_means_no_parent_death_signal(monkeypatch):
    def cdll(name):
        raise OSError("no libc")

    monkeypatch.setattr(signals, "_LIBC", None)
    monkeypatch.setattr(signals.ctypes, "CDLL", cdll)
    assert signals.load_libc() is None
    assert signals._LIBC is False  # the failure is remembered
    assert signals.set_parent_death_signal(signal.SIGKILL) is False


def test_a_loaded_libc_is_kept(monkeypatch):
    monkeypatch.setattr(signals, "_LIBC", None)
    first = signals.load_libc()
    assert first is not None and hasattr(first, "prctl") and signals.load_libc() is first


class _Launcher:
    """Fakes of os.getppid / os.kill / set_parent_death_signal for end_with_launcher."""

    def __init__(self, monkeypatch, ppids, armed=True):
        self.ppids, self.armed, self.kills, self.asked = list(ppids), armed, [], []
        monkeypatch.setattr(signals.os, "getppid", lambda: self.ppids.pop(0))
        monkeypatch.setattr(signals.os, "kill", lambda pid, sig: self.kills.append((pid, sig)))
        monkeypatch.setattr(signals, "set_parent_death_signal", lambda s: self.asked.append(s) or self.armed)


def test_outside_torchrun_nothing_is_armed(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    fake = _Launcher(monkeypatch, [10, 10])
    signals.end_with_launcher()
    assert fake.asked == [] and fake.kills == []


@pytest.mark.parametrize("ppids, armed, killed", [
    ([10, 10], True, False),   # armed while the launcher lives
    ([10, 1], True, True),     # the launcher died before the signal was armed: end now
    ([10, 1], False, False),   # prctl unavailable: nothing to check
])
def test_a_torchrun_rank_ends_with_its_launcher(monkeypatch, ppids, armed, killed):
    monkeypatch.setenv("LOCAL_RANK", "0")
    fake = _Launcher(monkeypatch, ppids, armed)
    signals.end_with_launcher()
    assert fake.asked == [signal.SIGKILL]
    assert fake.kills == ([(os.getpid(), signal.SIGKILL)] if killed else [])


# ---------------------------------------------------------------------------- progress
@pytest.mark.parametrize("seconds, text", [
    (None, "-"), (float("nan"), "-"), (float("inf"), "-"), (-float("inf"), "-"),
    (0, "0 s"), (42.4, "42 s"), (59.4, "59 s"), (60, "1.0 min"), (210, "3.5 min"), (3599, "60.0 min"),
    (3600, "1.0 h"), (3781, "1.1 h"), (7560, "2.1 h"),
])
def test_fmt_duration(seconds, text):
    assert fmt_duration(seconds) == text


class _Writer:
    def __init__(self):
        self.points = []

    def add_scalar(self, tag, value, step):
        self.points.append((tag, value, step))


class _Clock:
    def __init__(self, now: float):
        self.now = now

    def time(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Bar:
    """tqdm as EpochProgress drives it: its options, the images counted, the postfix, closed or not.
    (A real bar is not drawn here: it is tqdm's, and mutmut's runs hang on enabled bars.)"""

    def __init__(self, **options: Any) -> None:
        self.options, self.n, self.postfix, self.closed = options, 0, None, False

    def update(self, n: int) -> None:
        self.n += n

    def set_postfix(self, refresh: bool = True, **kw: Any) -> None:
        assert refresh is False  # drawn with the next update, not twice
        self.postfix = kw

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def bars(monkeypatch):
    import tqdm

    monkeypatch.setattr(tqdm, "tqdm", _Bar)


def _cfg(end_epoch=5, print_freq=2):
    return make_cfg(None, ["TRAIN.END_EPOCH", str(end_epoch), "TRAIN.LR_STEP", "[1]", "PRINT_FREQ", str(print_freq)])


@pytest.mark.parametrize("is_main, tty, shown", [(True, True, True), (True, False, False), (False, True, False),
                                                 (False, False, False)])
def test_the_bar_is_shown_on_rank_0_on_a_terminal(monkeypatch, bars, is_main, tty, shown):
    term = _Terminal() if tty else io.StringIO()
    monkeypatch.setattr(progress.sys, "stderr", term)
    with EpochProgress(_cfg(), 2, 10, 8, is_main) as p:
        assert p.tty is tty
        assert p.bar.options == {"total": 80, "unit": "img", "disable": not shown, "leave": False,
                                 "dynamic_ncols": True, "desc": "epoch 3/5", "file": term}
        assert not p.bar.closed
    assert p.bar.closed


def test_progress_counts_images_and_writes_each_given_loss(monkeypatch, bars):
    monkeypatch.setattr(progress.sys, "stderr", io.StringIO())
    writer = _Writer()
    p = EpochProgress(_cfg(), 2, 10, 8, True, writer)
    assert (p.epoch, p.end_epoch, p.n_iter, p.global_batch, p.print_freq) == (2, 5, 10, 8, 2)
    p.update(0, 21)
    assert p.loss is None and writer.points == [] and p.bar.postfix is None and p.bar.n == 8
    p.update(1, 22, 0.00125)
    assert p.loss == 0.00125 and writer.points == [(TAG_LOSS_ITER, 0.00125, 22)]
    assert p.bar.postfix == {"loss": "1.250e-03"}
    p.update(2, 23)
    assert p.loss == 0.00125 and len(writer.points) == 1 and p.bar.n == 3 * 8  # images, not iterations
    assert EpochProgress(make_cfg(None, ["PRINT_FREQ", "0"]), 0, 1, 1, True).print_freq == 1  # at least 1
    without = EpochProgress(_cfg(), 0, 4, 2, False, None)  # another rank: no writer
    without.update(0, 1, 0.5)
    assert without.loss == 0.5


def _logged(caplog) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.name == progress.__name__]


def test_progress_line_every_minute_in_a_log_file(monkeypatch, caplog, bars):
    monkeypatch.setattr(progress.sys, "stderr", io.StringIO())  # a log file, not a terminal
    clock = _Clock(1000.0)
    monkeypatch.setattr(progress, "time", clock)
    caplog.set_level(logging.INFO, logger=progress.__name__)
    p = EpochProgress(_cfg(), 2, 10, 8, True)
    assert p.t0 == 1000.0 and p.next_report == 1060.0
    clock.now = 1070.0
    p.update(0, 21)  # no loss read back yet: nothing to report
    assert _logged(caplog) == []
    p.update(1, 22, 0.5)
    # 16 images in 70 s; 8 iterations of 8 images left
    assert _logged(caplog) == ["epoch 3/5: 2/10 iterations | loss 5.0000e-01 | 0.2 img/s | epoch ETA 4.7 min"]
    assert p.next_report == 1120.0
    clock.now = 1119.0
    p.update(2, 23)
    assert len(_logged(caplog)) == 1
    clock.now = 1120.0  # exactly the next minute
    p.update(3, 24)
    assert _logged(caplog)[1] == "epoch 3/5: 4/10 iterations | loss 5.0000e-01 | 0.3 img/s | epoch ETA 3.0 min"


@pytest.mark.parametrize("is_main, tty", [(False, False), (True, True)])
def test_no_progress_line_on_other_ranks_or_a_terminal(monkeypatch, caplog, bars, is_main, tty):
    clock = _Clock(1000.0)
    monkeypatch.setattr(progress, "time", clock)
    monkeypatch.setattr(progress.sys, "stderr", _Terminal() if tty else io.StringIO())
    caplog.set_level(logging.INFO, logger=progress.__name__)
    p = EpochProgress(_cfg(), 0, 10, 8, is_main)
    clock.now = 2000.0
    p.update(0, 1, 0.5)
    assert _logged(caplog) == []


# ---------------------------------------------------------------------------- run_lock corners
def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_acquire_creates_the_folder_and_a_world_writable_lock_file(tmp_path):
    run = str(tmp_path / "a" / "run")
    lock = RunLock(run)
    assert not lock.held and lock.path == os.path.join(run, LOCK_FILE)
    old = os.umask(0)
    try:
        lock.acquire()
    finally:
        os.umask(old)
    try:
        assert lock.held and os.stat(lock.path).st_mode & 0o777 == 0o666  # any user's trainer may lock it
        fd = lock._fd
        lock.acquire()  # already held: the same lock
        assert lock._fd == fd
    finally:
        lock.release()
    assert not lock.held


def test_acquire_in_an_existing_folder_keeps_its_files(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    lock = RunLock(str(tmp_path))
    lock.acquire()
    lock.release()
    assert sorted(os.listdir(tmp_path)) == [LOCK_FILE, "metrics.json"]


def test_a_busy_folder_whose_holder_is_unknown(tmp_path, monkeypatch):
    first = RunLock(str(tmp_path))
    first.acquire()
    try:
        monkeypatch.setattr(run_lock, "_lock_holder", lambda fd: None)
        before = _open_fds()
        with pytest.raises(RunFolderBusy) as e:
            RunLock(str(tmp_path)).acquire()
        assert str(e.value) == (f"{tmp_path} is being trained by another trainer (PID unknown); wait for it to end "
                                f"or stop it (kill -TERM unknown stops it at a checkpoint), then run again")
        assert e.value.__suppress_context__ and e.value.__cause__ is None  # one line, no BlockingIOError chain
        assert _open_fds() == before  # the refused attempt closed its file
        assert holder_pid(str(tmp_path)) == -1  # held, by a process /proc/locks does not name
    finally:
        first.release()


def test_a_failing_lock_call_closes_the_file(tmp_path, monkeypatch):
    def flock(fd, op):
        raise OSError(22, "Invalid argument")

    before = _open_fds()
    monkeypatch.setattr(run_lock.fcntl, "flock", flock)
    lock = RunLock(str(tmp_path))
    with pytest.raises(OSError, match="Invalid argument"):
        lock.acquire()
    assert _open_fds() == before and not lock.held


def test_without_fcntl_there_is_no_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(run_lock, "fcntl", None)
    run = tmp_path / "run"
    lock = RunLock(str(run))
    lock.acquire()
    assert not lock.held and not run.exists()
    run.mkdir()
    (run / LOCK_FILE).write_text("")
    assert holder_pid(str(run)) is None


def test_holder_pid_of_a_folder_without_a_lock_file(tmp_path):
    assert holder_pid(str(tmp_path)) is None
    (tmp_path / LOCK_FILE).mkdir()  # not a file: no trainer
    assert holder_pid(str(tmp_path)) is None


def test_a_shared_reader_is_not_a_trainer(tmp_path):
    """Two ``holder_pid`` calls at once (study status readers) take shared locks: neither sees a trainer,
    and the probe leaves the file unlocked."""
    import fcntl

    lock = RunLock(str(tmp_path))
    lock.acquire()
    lock.release()
    fd = os.open(os.path.join(tmp_path, LOCK_FILE), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        before = _open_fds()
        assert holder_pid(str(tmp_path)) is None
        assert _open_fds() == before
    finally:
        os.close(fd)
    again = RunLock(str(tmp_path))
    again.acquire()  # holder_pid released its shared lock
    again.release()


def _proc_locks(monkeypatch, text: Optional[str]):
    """/proc/locks as ``text`` (None: unreadable) for run_lock."""
    real_open = open

    def fake_open(path, *a, **kw):
        if path != "/proc/locks":
            return real_open(path, *a, **kw)
        assert a == () and kw == {"encoding": "ascii", "errors": "replace"}
        if text is None:
            raise PermissionError(13, "Permission denied", path)
        return io.StringIO(text)

    monkeypatch.setattr(run_lock, "open", fake_open, raising=False)


def test_lock_holder_reads_the_flock_line_of_the_file(tmp_path, monkeypatch):
    path = tmp_path / LOCK_FILE
    path.write_text("")
    st = os.stat(path)
    major, minor, ino = os.major(st.st_dev), os.minor(st.st_dev), st.st_ino
    dev = f"{major:02x}:{minor:02x}"
    lines = [
        "1: POSIX  ADVISORY  WRITE 111 %s:%d 0 EOF" % (dev, ino),        # not a flock
        "2: FLOCK  ADVISORY  WRITE 222 %s:%d 0 EOF" % (dev, ino + 1),    # another file
        "3: FLOCK  ADVISORY  WRITE 333 %02x:%02x:%d 0 EOF" % (major + 1, minor, ino),  # another device
        "4: FLOCK  ADVISORY  WRITE 444 %02x:%02x:%d 0 EOF" % (major, minor + 1, ino),
        "5: FLOCK  ADVISORY  WRITE 555 zz:%d 0 EOF" % ino,               # unparsable device: skipped
        "6: FLOCK  ADVISORY  WRITE 666",                                 # short line
        "7: -> FLOCK  ADVISORY  WRITE 777 %s:%d 0 EOF" % (dev, ino),     # a waiter, not the holder
        "8: FLOCK  ADVISORY  WRITE 888 %s:%d 0 EOF" % (dev, ino),        # the holder
        "9: FLOCK  ADVISORY  WRITE 999 %s:%d 0 EOF" % (dev, ino),
    ]
    fd = os.open(path, os.O_RDONLY)
    try:
        _proc_locks(monkeypatch, "\n".join(lines) + "\n")
        assert run_lock._lock_holder(fd) == 888
        _proc_locks(monkeypatch, "\n".join(lines[:7]) + "\n")
        assert run_lock._lock_holder(fd) is None
        _proc_locks(monkeypatch, "8: FLOCK ADVISORY WRITE 888 %s:%d\n" % (dev, ino))  # exactly 6 fields
        assert run_lock._lock_holder(fd) == 888
        _proc_locks(monkeypatch, "8: FLOCK ADVISORY WRITE x88 %s:%d 0 EOF\n"
                                 "9: FLOCK ADVISORY WRITE 999 %s:%d 0 EOF\n" % (dev, ino, dev, ino))
        assert run_lock._lock_holder(fd) == 999  # an unparsable PID: the next line
        _proc_locks(monkeypatch, None)
        assert run_lock._lock_holder(fd) is None
    finally:
        os.close(fd)


def test_lock_holder_reads_hex_device_numbers(tmp_path, monkeypatch):
    """/proc/locks writes the device's major and minor in hex, the inode in decimal."""
    path = tmp_path / LOCK_FILE
    path.write_text("")
    st = os.stat(path)
    fake_dev = os.makedev(0x103, 0x1a)
    monkeypatch.setattr(run_lock.os, "fstat", lambda fd: os.stat_result(
        (st.st_mode, st.st_ino, fake_dev) + tuple(st)[3:]))
    _proc_locks(monkeypatch, "1: FLOCK  ADVISORY  WRITE 4321 103:1a:%d 0 EOF\n" % st.st_ino)
    assert run_lock._lock_holder(0) == 4321
