"""Checkpoints: atomic save, weights_only load, clear errors, RNG capture/restore."""
import os
import random
import stat

import numpy as np
import pytest
import torch

from hrnet.runtime import checkpoint as ck


def _draws(gen):
    return (random.random(), random.gauss(0, 1), float(np.random.rand()), float(np.random.randn()),
            torch.rand(3).tolist(), torch.randint(0, 1000, (2,), generator=gen).tolist())


def test_roundtrip_is_weights_only_loadable(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.Adam(model.parameters())
    model(torch.rand(2, 3, 8, 8)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [2, 3])
    gen = torch.Generator().manual_seed(1)
    state = {"state_dict": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "rng": [ck.get_rng_state(gen)], "epoch": 3, "best_nme": float("inf"), "history": [{"NME": 0.1}],
             "config": "TRAIN:\n  LR: 0.001\n"}
    path = tmp_path / "c.pth"
    ck.save_checkpoint(state, path)
    loaded = ck.load_checkpoint(path)  # weights_only=True inside
    assert loaded["epoch"] == 3 and loaded["config"] == state["config"] and loaded["best_nme"] == float("inf")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded["state_dict"][k], v)
    torch.optim.Adam(model.parameters()).load_state_dict(loaded["optimizer"])
    assert os.listdir(tmp_path) == ["c.pth"]  # no temporary file left behind


def test_rng_state_restores_every_stream(tmp_path):
    gen = torch.Generator().manual_seed(7)
    random.seed(3)
    np.random.seed(4)
    random.gauss(0, 1)  # leaves a cached gaussian in python's state
    np.random.randn()  # and one in numpy's legacy state
    ck.save_checkpoint({"rng": ck.get_rng_state(gen)}, tmp_path / "r.pth")
    first = _draws(gen)
    ck.set_rng_state(ck.load_checkpoint(tmp_path / "r.pth")["rng"], gen)
    assert _draws(gen) == first


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch, error):
    """A save that fails half-way (a full disk; Ctrl-C, which is no Exception) leaves the previous
    checkpoint byte for byte and no temporary file, and the error goes on to the caller."""
    path = tmp_path / "checkpoint_latest.pth"
    ck.save_checkpoint({"epoch": 1, "w": torch.arange(1000.0)}, path)
    before = path.read_bytes()
    real_save = torch.save

    def broken_save(obj, f):
        real_save(obj, f)  # the whole new checkpoint is in the temporary file ...
        f.seek(len(before) // 2)
        f.truncate()  # ... then half of it is lost and the write fails
        raise error

    monkeypatch.setattr(ck.torch, "save", broken_save)
    with pytest.raises(type(error)):
        ck.save_checkpoint({"epoch": 2, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and ck.load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["checkpoint_latest.pth"]


def test_save_is_durable_before_it_replaces_the_file(tmp_path, monkeypatch):
    """The new content is flushed and fsynced in a temporary file beside the target, renamed over it,
    and the folder fsynced after the rename (the rename itself survives a power loss)."""
    path = tmp_path / "model_best.pth"
    ck.save_checkpoint({"epoch": 1}, path)
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        events.append(("fsync dir",) if stat.S_ISDIR(st.st_mode) else ("fsync file", st.st_size))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.path.dirname(src), os.path.basename(src), os.path.getsize(src), dst))
        real_replace(src, dst)

    monkeypatch.setattr(ck.os, "fsync", fsync)
    monkeypatch.setattr(ck.os, "replace", replace)
    ck.save_checkpoint({"epoch": 2, "w": torch.arange(5000.0)}, path)
    monkeypatch.undo()
    size = path.stat().st_size
    assert [e[0] for e in events] == ["fsync file", "replace", "fsync dir"], events
    assert events[0][1] == size  # everything written (flushed) before the fsync
    _, folder, tmp_name, tmp_size, dst = events[1]
    assert folder == str(tmp_path) and os.fspath(dst) == str(path) and tmp_size == size
    assert tmp_name.startswith(".model_best.pth.") and tmp_name.endswith(".tmp")
    assert ck.load_checkpoint(path)["epoch"] == 2
    assert path.stat().st_mode & 0o777 == 0o666 & ~ck._umask()  # a normal file's mode, not mkstemp's 0600


def test_a_killed_save_leaves_a_temporary_file_that_clean_stale_tmp_removes(tmp_path, monkeypatch):
    """kill -9 during a save runs no clean-up: the half-written temporary file stays, beside the
    intact checkpoint, under a name that clean_stale_tmp (run when a run starts) recognises."""
    path = tmp_path / "checkpoint_latest.pth"
    ck.save_checkpoint({"epoch": 1}, path)
    (tmp_path / "notes.tmp").write_text("not ours")  # not a hidden .<name>.*.tmp file: kept

    def killed(obj, f):
        f.write(b"partial")
        f.flush()
        monkeypatch.setattr(ck.os, "unlink", lambda p: None)  # the process dies: nothing is cleaned up
        raise SystemExit(137)

    monkeypatch.setattr(ck.torch, "save", killed)
    with pytest.raises(SystemExit):
        ck.save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    stale = [n for n in os.listdir(tmp_path) if n not in ("checkpoint_latest.pth", "notes.tmp")]
    assert len(stale) == 1 and ck.load_checkpoint(path)["epoch"] == 1
    assert ck.clean_stale_tmp(tmp_path) == [str(tmp_path / stale[0])]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint_latest.pth", "notes.tmp"]


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ck.CheckpointError, match="not found: .*missing.pth"):
        ck.load_checkpoint(tmp_path / "missing.pth")
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ck.CheckpointError, match="corrupt.pth"):
        ck.load_checkpoint(bad)
    unsafe = tmp_path / "unsafe.pth"
    torch.save({"obj": ck.CheckpointError("pickled object")}, unsafe)  # not weights_only-loadable
    with pytest.raises(ck.CheckpointError, match="unsafe.pth"):
        ck.load_checkpoint(unsafe)


def test_extract_state_dict():
    w = torch.zeros(2)
    assert list(ck.extract_state_dict({"state_dict": {"module.a": w}})) == ["a"]
    assert list(ck.extract_state_dict({"a": w})) == ["a"]
    with pytest.raises(ck.CheckpointError, match="no model state_dict"):
        ck.extract_state_dict({"epoch": 3}, "x.pth")


def test_write_json_is_strict_and_atomic(tmp_path, monkeypatch):
    import json

    path = tmp_path / "m.json"
    ck.write_json({"a": np.float32(0.5), "b": np.array([1, 2]), "c": float("nan"), "d": (np.int64(3), float("inf"))},
                  path)
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [1, 2], "c": None, "d": [3, None]}
    before = path.read_bytes()
    # a failure at the last step before the rename (the new text is complete in the temporary file)
    # leaves the previous file and no temporary file
    seen = []

    def full_disk(fd):
        seen.append(os.pread(fd, 1 << 16, 0))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        ck.write_json({"new": 1}, path)
    monkeypatch.undo()
    assert seen and json.loads(seen[0]) == {"new": 1}  # the failure came after the whole text was written
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_changed_config_keys_lists_every_change_but_the_free_ones():
    from conftest import make_cfg

    old = make_cfg(None, ["TRAIN.LR", "0.001", "MODEL.IMAGE_SIZE", "[128, 128]", "MODEL.HEATMAP_SIZE", "[32, 32]"])
    new = make_cfg(None, ["TRAIN.LR", "0.01", "MODEL.IMAGE_SIZE", "[128, 128]", "MODEL.HEATMAP_SIZE", "[32, 32]",
                          "TRAIN.ADAM_BETAS", "[0.8, 0.99]", "TRAIN.END_EPOCH", "99", "WORKERS", "7",
                          "OUTPUT_DIR", "elsewhere"])
    assert ck.changed_config_keys(old.dump(), old) == []
    changed = ck.changed_config_keys(old.dump(), new)
    assert changed == ["TRAIN.ADAM_BETAS: [0.9, 0.999] -> [0.8, 0.99]", "TRAIN.LR: 0.001 -> 0.01"]
    # a key the checkpoint's config does not know (an older schema) is a change too
    old_yaml = old.dump().replace("  MODE: 'off'\n", "  ENABLED: false\n")
    assert {c.split(":")[0] for c in ck.changed_config_keys(old_yaml, old)} == {"AMP.ENABLED", "AMP.MODE"}
