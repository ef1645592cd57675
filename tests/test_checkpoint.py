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
    from hrnet.engine.run_record import RESUME_FREE_KEYS

    old = make_cfg(None, ["TRAIN.LR", "0.001", "MODEL.IMAGE_SIZE", "[128, 128]", "MODEL.HEATMAP_SIZE", "[32, 32]"])
    new = make_cfg(None, ["TRAIN.LR", "0.01", "MODEL.IMAGE_SIZE", "[128, 128]", "MODEL.HEATMAP_SIZE", "[32, 32]",
                          "TRAIN.ADAM_BETAS", "[0.8, 0.99]", "TRAIN.END_EPOCH", "99", "WORKERS", "7",
                          "OUTPUT_DIR", "elsewhere"])
    assert ck.changed_config_keys(old.dump(), old, RESUME_FREE_KEYS) == []
    changed = ck.changed_config_keys(old.dump(), new, RESUME_FREE_KEYS)
    # WORKERS changes how batches are drawn and augmentation is seeded: not a free key
    assert changed == ["TRAIN.ADAM_BETAS: [0.9, 0.999] -> [0.8, 0.99]", "TRAIN.LR: 0.001 -> 0.01", "WORKERS: 4 -> 7"]
    # without a list of free keys every change counts
    assert len(ck.changed_config_keys(old.dump(), new)) == 5
    # a key the checkpoint's config does not know (an older schema) is a change, unless the new config
    # leaves it at its default (a key added since must default to the old behaviour); a key gone is one
    old_yaml = old.dump().replace("  MODE: 'off'\n", "  ENABLED: false\n")
    assert ck.changed_config_keys(old_yaml, old) == ["AMP.ENABLED: False -> <absent>"]
    amp_on = make_cfg(None, ["TRAIN.LR", "0.001", "MODEL.IMAGE_SIZE", "[128, 128]", "MODEL.HEATMAP_SIZE", "[32, 32]",
                             "AMP.MODE", "on"])
    assert ck.changed_config_keys(old_yaml, amp_on) == ["AMP.ENABLED: False -> <absent>", "AMP.MODE: <absent> -> 'on'"]


def test_clean_stale_tmp_removes_only_hidden_tmp_files(tmp_path):
    assert ck.clean_stale_tmp(tmp_path / "missing") == []
    for name in (".c.pth.abc.tmp", ".m.json.x.tmp", "c.tmp", ".c.tmpl", "x.pth"):
        (tmp_path / name).write_text("x")
    (tmp_path / ".dir.tmp").mkdir()  # a folder is never removed
    assert sorted(ck.clean_stale_tmp(str(tmp_path))) == [str(tmp_path / ".c.pth.abc.tmp"),
                                                         str(tmp_path / ".m.json.x.tmp")]
    assert sorted(os.listdir(tmp_path)) == [".c.tmpl", ".dir.tmp", "c.tmp", "x.pth"]


def test_save_creates_the_folder_and_tolerates_a_folder_without_fsync(tmp_path, monkeypatch):
    path = tmp_path / "new" / "sub" / "c.pth"
    ck.save_checkpoint({"epoch": 1}, path)  # a new run's folder does not exist yet
    ck.save_checkpoint({"epoch": 2}, path)  # ... and then it does
    assert ck.load_checkpoint(path)["epoch"] == 2
    # Where a folder cannot be opened or fsynced (Windows, some network file systems) the save still succeeds.
    real_open, real_fsync, closed = os.open, os.fsync, []

    def no_dir_fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            closed.append(fd)
            raise OSError(22, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(ck.os, "fsync", no_dir_fsync)
    ck.save_checkpoint({"epoch": 3}, path)
    assert ck.load_checkpoint(path)["epoch"] == 3 and len(closed) == 1
    with pytest.raises(OSError):
        os.fstat(closed[0])  # the folder's descriptor was closed all the same
    def no_dir_open(path, flags, *args):
        if os.path.isdir(path):
            raise PermissionError(13, "denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr(ck.os, "open", no_dir_open)
    ck.write_json({"epoch": 4}, tmp_path / "new" / "m.json")
    monkeypatch.setattr(ck.os, "open", real_open)
    assert (tmp_path / "new" / "m.json").read_text() == '{\n  "epoch": 4\n}'
    assert sorted(os.listdir(tmp_path / "new")) == ["m.json", "sub"]


def test_jsonable_and_write_json_layout(tmp_path):
    assert ck.jsonable({1: np.array(2.5), "a": [np.float32(np.nan), (np.int64(1), np.inf)], "b": {"c": -np.inf},
                        "d": np.arange(4).reshape(2, 2), "e": "text", "f": None, "g": True}) == {
        "1": 2.5, "a": [None, [1, None]], "b": {"c": None}, "d": [[0, 1], [2, 3]], "e": "text", "f": None, "g": True}
    assert type(ck.jsonable(np.float32(0.5))) is float and type(ck.jsonable(np.int64(3))) is int
    ck.write_json({"a": [1, 2], "b": "é"}, tmp_path / "m.json")
    assert (tmp_path / "m.json").read_text(encoding="utf-8") == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": "\\u00e9"\n}'
    ck.write_json({"a": [1, 2]}, tmp_path / "m.json", indent=None)
    assert (tmp_path / "m.json").read_text() == '{"a": [1, 2]}'


def test_load_onto_the_cpu_by_default_and_its_errors(tmp_path, monkeypatch):
    seen = []
    real_load = torch.load

    def load(*args, **kwargs):
        seen.append((kwargs["map_location"], kwargs["weights_only"]))
        return real_load(*args, **kwargs)

    torch.save([1, 2], tmp_path / "list.pth")
    torch.save({"a": 1}, tmp_path / "dict.pth")
    monkeypatch.setattr(ck.torch, "load", load)
    assert ck.load_checkpoint(tmp_path / "dict.pth") == {"a": 1}
    assert ck.load_checkpoint(str(tmp_path / "dict.pth"), map_location="meta") == {"a": 1}
    assert seen == [("cpu", True), ("meta", True)]  # a checkpoint saved on a GPU opens on a CPU-only machine
    with pytest.raises(ck.CheckpointError) as e:
        ck.load_checkpoint(tmp_path / "list.pth")
    assert str(e.value) == f"checkpoint {tmp_path / 'list.pth'} holds a list, expected a dict"
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ck.CheckpointError) as e:
        ck.load_checkpoint(tmp_path / "bad.pth")
    assert str(e.value).startswith(f"cannot read checkpoint {tmp_path / 'bad.pth'}: ") and len(str(e.value)) > 60
    with pytest.raises(ck.CheckpointError) as e:
        ck.load_checkpoint(tmp_path / "gone.pth")
    assert str(e.value) == f"checkpoint not found: {tmp_path / 'gone.pth'}"
    (tmp_path / "folder.pth").mkdir()  # not a file
    with pytest.raises(ck.CheckpointError, match="^checkpoint not found"):
        ck.load_checkpoint(tmp_path / "folder.pth")


def test_extract_state_dict_refuses_what_holds_no_weights():
    w = torch.zeros(2)
    assert ck.extract_state_dict({"state_dict": {"module.a": w, "b.module.c": w}}) == {"a": w, "b.module.c": w}
    message = ("x.pth: no model state_dict found (expected a 'state_dict' entry or a plain name -> tensor mapping)")
    for bad in ({"state_dict": {}}, {"state_dict": {"a": w, "n": 3}}, [w], {"state_dict": [w]}):
        with pytest.raises(ck.CheckpointError) as e:
            ck.extract_state_dict(bad, "x.pth")
        assert str(e.value) == message
    with pytest.raises(ck.CheckpointError, match="^<checkpoint>: no model"):
        ck.extract_state_dict({})


def test_rng_state_layout_and_the_cuda_streams(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("CUDA state read without CUDA"))
    state = ck.get_rng_state()
    assert state["cuda"] == [] and "generator" not in state  # CPU only, no generator
    assert state["numpy"]["bit_generator"] == "MT19937" and state["python"]["version"] == 3
    assert state["numpy"]["key"].dtype == torch.int64 and state["numpy"]["key"].shape == (624,)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.arange(3, dtype=torch.uint8)])
    assert ck.get_rng_state()["cuda"][0].tolist() == [0, 1, 2]
    # CUDA states are restored only onto as many devices as were saved.
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.append(states))
    cuda = [torch.arange(4, dtype=torch.uint8), torch.arange(4, 8, dtype=torch.uint8)]
    for count, expected in ((2, [cuda]), (1, [])):
        restored.clear()
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        ck.set_rng_state(dict(state, cuda=cuda))
        assert [[s.tolist() for s in call] for call in restored] == [[s.tolist() for s in c] for c in expected]
    gen = torch.Generator().manual_seed(5)
    before = gen.get_state()
    ck.set_rng_state(state, gen)  # a state without a generator leaves the generator alone
    assert torch.equal(gen.get_state(), before)


def test_seed_everything_seeds_every_stream():
    seed = 2 ** 32 + 7  # numpy takes 32 bits
    ck.seed_everything(seed)
    got = (random.random(), float(np.random.rand()), torch.rand(2).tolist())
    random.seed(seed)
    np.random.seed(7)
    torch.manual_seed(seed)
    assert got == (random.random(), float(np.random.rand()), torch.rand(2).tolist())


def test_rng_fork_restores_the_streams_even_after_an_error():
    gen = torch.Generator().manual_seed(3)
    ck.seed_everything(1)
    expected = _draws(gen)
    ck.seed_everything(1)
    gen.manual_seed(3)
    with pytest.raises(RuntimeError):
        with ck.rng_fork(gen):
            _draws(gen)
            raise RuntimeError("evaluation failed")
    assert _draws(gen) == expected


def _lookahead_setup():
    from optim import Lookahead

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    opt = Lookahead(torch.optim.Adam(model.parameters(), lr=0.1), k=2, alpha=0.5)
    model(torch.rand(4, 3)).sum().backward()
    opt.step()
    return model, opt


def test_training_state_holds_everything_a_resume_needs(tmp_path):
    model, opt = _lookahead_setup()
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [2])
    warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=3)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    state = ck.training_state(model=model, optimizer=opt, scheduler=sched, warmup=warmup, scaler=scaler,
                              epoch=np.int64(3), global_step=12.0, best_nme=np.float32(0.25), best_epoch=2,
                              history=[{"NME": 0.3}], rng=[{"r": 1}], world_size=1, wall_time=5, config="SEED: 1\n")
    assert set(state) == {"format_version", "epoch", "global_step", "state_dict", "optimizer", "slow_state_dict",
                          "scheduler", "warmup", "scaler", "best_nme", "best_epoch", "history", "rng", "world_size",
                          "wall_time", "config", "code_versions"}
    assert state["code_versions"] == []
    assert (state["format_version"], state["epoch"], state["global_step"], state["best_nme"], state["best_epoch"],
            state["world_size"], state["wall_time"], state["config"]) == (1, 3, 12, 0.25, 2, 1, 5.0, "SEED: 1\n")
    assert [type(state[k]) for k in ("epoch", "global_step", "best_nme", "best_epoch", "world_size", "wall_time")] \
        == [int, int, float, int, int, float]
    assert (state["history"], state["rng"]) == ([{"NME": 0.3}], [{"r": 1}])
    assert state["scheduler"] == sched.state_dict() and state["warmup"] == warmup.state_dict()
    assert state["scaler"] == scaler.state_dict() and "lookahead" in state["optimizer"]
    slow = opt.state_dict()["lookahead"]["slow_weights"]
    assert list(state["slow_state_dict"]) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    for i, name in enumerate(state["slow_state_dict"]):
        assert state["slow_state_dict"][name] is state["optimizer"]["lookahead"]["slow_weights"][i]
        assert torch.equal(state["slow_state_dict"][name], slow[i])
    plain = torch.optim.SGD(model.parameters(), lr=0.1)
    bare = ck.training_state(model=model, optimizer=plain, scheduler=torch.optim.lr_scheduler.MultiStepLR(plain, [2]),
                             warmup=None, scaler=torch.amp.GradScaler("cpu", enabled=False), epoch=0, global_step=0,
                             best_nme=float("inf"), best_epoch=-1, history=[], rng=[], world_size=2, wall_time=0.0,
                             config="")
    assert (bare["slow_state_dict"], bare["warmup"], bare["scaler"]) == (None, None, None)
    assert ck.training_state(model=model, optimizer=plain, scheduler=torch.optim.lr_scheduler.MultiStepLR(plain, [2]),
                             warmup=None, scaler=None, epoch=0, global_step=0, best_nme=1.0, best_epoch=-1,
                             history=[], rng=[], world_size=1, wall_time=0.0, config="")["scaler"] is None


def test_slow_state_dict_refuses_weights_it_cannot_name():
    model, opt = _lookahead_setup()
    state = opt.state_dict()
    slow = state["lookahead"]["slow_weights"]  # parameter index -> tensor
    short = dict(state, lookahead=dict(state["lookahead"], slow_weights={i: slow[i] for i in range(3)}))
    with pytest.raises(ValueError) as e:
        ck.slow_state_dict(model, opt, short)
    assert str(e.value) == ("slow_state_dict: 3 slow weights for 4 optimizer parameters, 0 of them not parameters "
                            "of the model")
    other = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    with pytest.raises(ValueError, match="4 slow weights for 4 optimizer parameters, 4 of them not parameters"):
        ck.slow_state_dict(other, opt, state)
    assert ck.slow_state_dict(model, opt, dict(state, lookahead=None)) is None


def test_resume_reads_back_the_training_state(tmp_path, monkeypatch):
    from configs import ConfigError
    from conftest import make_cfg

    cfg = make_cfg(None, ["TRAIN.LR", "0.001"])
    model, opt = _lookahead_setup()
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [2])
    warmup = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.5, total_iters=3)
    scaler = torch.amp.GradScaler("cpu", enabled=True, init_scale=8.0)
    state = ck.training_state(model=model, optimizer=opt, scheduler=sched, warmup=warmup, scaler=scaler, epoch=2,
                              global_step=8, best_nme=0.2, best_epoch=1, history=[], rng=[], world_size=1,
                              wall_time=1.0, config=cfg.dump())
    path = tmp_path / "checkpoint_latest.pth"
    ck.save_checkpoint(state, path)
    seen, real_load = [], torch.load
    monkeypatch.setattr(ck.torch, "load", lambda *a, **kw: seen.append(kw["map_location"]) or real_load(*a, **kw))
    from hrnet.engine.run_record import RESUME_FREE_KEYS

    loaded = ck.load_training_state(path, make_cfg(None, ["TRAIN.LR", "0.001", "TRAIN.END_EPOCH", "60"]),
                                    RESUME_FREE_KEYS)
    assert seen == ["cpu"]  # a run saved on a GPU resumes from the CPU copy
    assert loaded["epoch"] == 2 and loaded["global_step"] == 8
    with pytest.raises(ConfigError) as e:
        ck.load_training_state(path, make_cfg(None, ["TRAIN.LR", "0.01", "SEED", "3"]), RESUME_FREE_KEYS)
    assert str(e.value) == (f"cannot resume {path} with a changed config (SEED: 0 -> 3; TRAIN.LR: 0.001 -> 0.01); "
                            "only OUTPUT_DIR, PRINT_FREQ, TRAIN.BEGIN_EPOCH, TRAIN.END_EPOCH, TRAIN.RESUME "
                            "may change; start a new run (EXPERIMENT_NAME) to change anything else")
    with pytest.raises(ConfigError, match=r"changed config \(WORKERS: 4 -> 0\)"):  # another batch order
        ck.load_training_state(path, make_cfg(None, ["TRAIN.LR", "0.001", "WORKERS", "0"]), RESUME_FREE_KEYS)
    with pytest.raises(ConfigError, match="no key may change"):
        ck.load_training_state(path, make_cfg(None, ["TRAIN.LR", "0.001", "TRAIN.END_EPOCH", "60"]))
    for bad, message in (({"format_version": 0}, f"{path}: checkpoint format 0, expected 1"),
                         ({"format_version": None}, f"{path}: checkpoint format None, expected 1"),
                         ({"config": "  \n"}, f"{path}: the checkpoint stores no config, so a resume cannot check"),
                         ({"config": None}, f"{path}: the checkpoint stores no config")):
        ck.save_checkpoint(dict(state, **bad), path)
        with pytest.raises(ck.CheckpointError) as e:
            ck.load_training_state(path, cfg)
        assert str(e.value).startswith(message), str(e.value)
    ck.save_checkpoint({k: v for k, v in state.items() if k != "format_version"}, path)
    with pytest.raises(ck.CheckpointError, match="checkpoint format None"):
        ck.load_training_state(path, cfg)

    # Restoring into freshly built objects gives the saved states back.
    model2, opt2 = _lookahead_setup()
    with torch.no_grad():
        for p in model2.parameters():
            p.add_(1.0)
    sched2 = torch.optim.lr_scheduler.MultiStepLR(opt2, [5])
    warmup2 = torch.optim.lr_scheduler.LinearLR(opt2, start_factor=0.1, total_iters=9)
    scaler2 = torch.amp.GradScaler("cpu", enabled=True)
    ck.restore_training_state(loaded, model=model2, optimizer=opt2, scheduler=sched2, warmup=warmup2, scaler=scaler2)
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert sched2.state_dict() == sched.state_dict() and warmup2.state_dict() == warmup.state_dict()
    assert scaler2.get_scale() == 8.0
    assert opt2.state_dict()["lookahead"]["slow_weights"][0].tolist() == state["slow_state_dict"]["0.weight"].tolist()
    # A run without warm-up or GradScaler, or a checkpoint without them, restores the rest.
    scaler3 = torch.amp.GradScaler("cpu", enabled=True)
    warmup3 = torch.optim.lr_scheduler.LinearLR(opt2, start_factor=0.1, total_iters=9)
    ck.restore_training_state(dict(loaded, warmup=None, scaler=None), model=model2, optimizer=opt2, scheduler=sched2,
                              warmup=warmup3, scaler=scaler3)
    assert scaler3.get_scale() == 65536.0 and warmup3.state_dict()["total_iters"] == 9
    off = torch.amp.GradScaler("cpu", enabled=False)
    ck.restore_training_state(loaded, model=model2, optimizer=opt2, scheduler=sched2, warmup=None, scaler=off)
    assert not off.is_enabled()


def test_changed_config_keys_without_an_old_config_and_with_tuples():
    from conftest import make_cfg

    cfg = make_cfg(None)
    assert ck.changed_config_keys("", cfg) == []
    from configs import flat_config

    assert flat_config({"A": {"B": (1, 2), "C": {"D": "x"}}, "E": 3}) == {"A.B": [1, 2], "A.C.D": "x", "E": 3}
    new_key = cfg.dump() + "EXTRA:\n  KEY: 1\n"
    assert ck.changed_config_keys(new_key, cfg) == ["EXTRA.KEY: 1 -> <absent>"]


def test_write_text_is_utf8_and_atomic(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "report.md"  # the folder is made
    ck.write_text("# Hände\nNME 0.25\n", path)
    assert path.read_bytes() == "# Hände\nNME 0.25\n".encode("utf-8")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~ck._umask()  # a normal file's mode, not mkstemp's
    ck.write_text("second\n", str(path))  # replaces, from a str path too
    assert path.read_text() == "second\n"
    monkeypatch.setattr(ck.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError, match="No space left"):
        ck.write_text("third\n", path)
    assert path.read_text() == "second\n" and os.listdir(tmp_path / "sub") == ["report.md"]


def test_training_state_copies_the_code_versions():
    model, opt = _lookahead_setup()
    versions = [{"code_version": {"source_sha256": "a"}, "from_epoch": 0},
                {"code_version": {"source_sha256": "b"}, "from_epoch": 3}]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [2])
    state = ck.training_state(model=model, optimizer=opt, scheduler=sched, warmup=None, scaler=None, epoch=4,
                              global_step=8, best_nme=0.2, best_epoch=1, history=[], rng=[], world_size=1,
                              wall_time=1.0, config="", code_versions=tuple(versions))
    assert state["code_versions"] == versions and type(state["code_versions"]) is list
    assert all(type(v) is dict and v is not o for v, o in zip(state["code_versions"], versions))


def test_a_resume_without_free_keys_says_no_key_may_change(tmp_path):
    from configs import ConfigError
    from conftest import make_cfg

    path = tmp_path / "checkpoint_latest.pth"
    ck.save_checkpoint({"format_version": ck.FORMAT_VERSION, "config": make_cfg(None).dump()}, path)
    with pytest.raises(ConfigError) as e:
        ck.load_training_state(path, make_cfg(None, ["TRAIN.END_EPOCH", "60"]))
    assert str(e.value) == (f"cannot resume {path} with a changed config (TRAIN.END_EPOCH: 30 -> 60); no key may "
                            "change; start a new run (EXPERIMENT_NAME) to change anything else")
