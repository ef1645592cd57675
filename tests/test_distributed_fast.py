"""hrnet/engine/distributed.py without training: the process-group set-up (faked), fingerprints, the
replica check, the resume world-size check, merging evaluation shards, and the collectives in two
spawned gloo ranks (seconds). The 2-process torchrun training run: test_distributed.py."""
from __future__ import annotations

import datetime
import hashlib
import logging
import multiprocessing
import os
import socket
import traceback
from typing import Any, Callable, Dict, List

import numpy as np
import pytest
import torch
import torch.distributed as dist

from configs import ConfigError
from conftest import make_cfg
from hrnet.engine import distributed
from hrnet.engine.distributed import (DistInfo, ReplicaMismatchError, all_gather_object, all_reduce_sum,
                                      broadcast_buffers, broadcast_module, check_replicas_agree,
                                      check_resume_world_size, check_training_replicas, cleanup_distributed,
                                      fingerprint, init_distributed, merge_shards)

CPU = torch.device("cpu")


# ---------------------------------------------------------------------------- DistInfo and the set-up
@pytest.mark.parametrize("rank, world, distributed_, main", [(0, 1, False, True), (0, 2, True, True),
                                                              (1, 2, True, False), (3, 4, True, False)])
def test_dist_info(rank, world, distributed_, main):
    d = DistInfo(rank, world, 0, CPU)
    assert d.distributed is distributed_ and d.is_main is main


class _FakeGroup:
    """``torch.distributed``'s set-up calls, recorded."""

    def __init__(self, monkeypatch, initialized=False):
        self.initialized, self.calls = initialized, []
        monkeypatch.setattr(dist, "is_initialized", lambda: self.initialized)
        monkeypatch.setattr(dist, "init_process_group", lambda **kw: self.calls.append(("init", kw)))
        monkeypatch.setattr(dist, "destroy_process_group", lambda: self.calls.append(("destroy",)))
        monkeypatch.setattr(torch.cuda, "set_device", lambda dev: self.calls.append(("set_device", dev)))


def _torchrun_env(monkeypatch, rank=None, world=None, local=None):
    for key, value in (("RANK", rank), ("WORLD_SIZE", world), ("LOCAL_RANK", local)):
        if value is None:
            monkeypatch.delenv(key, raising=False)
        else:
            monkeypatch.setenv(key, str(value))


def test_without_torchrun_a_single_process(monkeypatch):
    group = _FakeGroup(monkeypatch)
    _torchrun_env(monkeypatch)
    assert init_distributed("cpu") == DistInfo(0, 1, 0, CPU)
    assert group.calls == []


def test_a_cpu_rank_joins_a_gloo_group(monkeypatch):
    group = _FakeGroup(monkeypatch)
    _torchrun_env(monkeypatch, 3, 4, 1)
    assert init_distributed("cpu") == DistInfo(3, 4, 1, CPU)
    assert group.calls == [("init", {"backend": "gloo", "timeout": datetime.timedelta(minutes=30)})]
    group.calls.clear()
    init_distributed("cpu", timeout_min=2.5)
    assert group.calls == [("init", {"backend": "gloo", "timeout": datetime.timedelta(minutes=2.5)})]
    group.calls.clear()
    group.initialized = True  # a second call: the same description, no second group
    assert init_distributed("cpu") == DistInfo(3, 4, 1, CPU) and group.calls == []


def test_a_cuda_rank_takes_its_local_gpu_and_nccl(monkeypatch):
    group = _FakeGroup(monkeypatch)
    asked = []

    def select_device(device, local_rank):
        asked.append((device, local_rank))
        return torch.device("cuda", local_rank)

    monkeypatch.setattr(distributed, "select_device", select_device)
    _torchrun_env(monkeypatch, 1, 2, 1)
    assert init_distributed() == DistInfo(1, 2, 1, torch.device("cuda", 1))
    assert asked == [("auto", 1)]
    assert group.calls == [("set_device", torch.device("cuda", 1)),
                           ("init", {"backend": "nccl", "timeout": datetime.timedelta(minutes=30)})]
    group.calls.clear()
    _torchrun_env(monkeypatch, local=0)  # one process on a GPU: its device, no group
    assert init_distributed("cuda") == DistInfo(0, 1, 0, torch.device("cuda", 0))
    assert group.calls == [("set_device", torch.device("cuda", 0))]


@pytest.mark.parametrize("available, initialized, destroyed", [(True, True, True), (True, False, False),
                                                                (False, True, False)])
def test_cleanup_destroys_only_an_existing_group(monkeypatch, available, initialized, destroyed):
    group = _FakeGroup(monkeypatch, initialized)
    monkeypatch.setattr(dist, "is_available", lambda: available)
    cleanup_distributed()
    assert group.calls == ([("destroy",)] if destroyed else [])


def test_a_group_of_one_needs_no_collective(monkeypatch):
    """Initialised with one process (or torch.distributed unavailable): the collectives are the identity."""
    def refused(*a, **kw):
        raise AssertionError("a collective in a group of one")

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: 1)
    for name in ("all_gather_object", "all_reduce", "broadcast"):
        monkeypatch.setattr(dist, name, refused)
    bn = torch.nn.BatchNorm1d(2)
    t = torch.ones(2)
    assert all_gather_object(5) == [5] and all_reduce_sum(t) is t
    broadcast_buffers(bn)
    broadcast_module(bn)
    monkeypatch.setattr(dist, "is_available", lambda: False)
    monkeypatch.setattr(dist, "get_world_size", refused)
    assert all_gather_object(5) == [5] and all_reduce_sum(t) is t
    broadcast_buffers(bn)
    broadcast_module(bn)


# ---------------------------------------------------------------------------- fingerprints
def test_fingerprint_is_the_sha1_of_shapes_dtypes_and_bytes():
    a, b = torch.tensor([1.0, 2.0]), torch.arange(3, dtype=torch.int16).reshape(3, 1)
    want = hashlib.sha1(b"(2,)torch.float32;" + a.numpy().tobytes() + b"(3, 1)torch.int16;" + b.numpy().tobytes())
    assert fingerprint([a, b]) == want.hexdigest()
    assert fingerprint([]) == hashlib.sha1().hexdigest()


def test_fingerprint_tells_what_differs_and_only_that():
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    base = fingerprint([x, torch.zeros(2)])
    assert fingerprint([x.clone().requires_grad_(), torch.zeros(2)]) == base  # grad-tracking: detached
    assert fingerprint([x.t().contiguous().t(), torch.zeros(2)]) == base  # strides do not matter
    assert fingerprint([x.t(), torch.zeros(2)]) != base  # another layout of values
    assert fingerprint([x.reshape(3, 2), torch.zeros(2)]) != base  # same bytes, another shape
    assert fingerprint([x.view(torch.int32), torch.zeros(2)]) != base  # same bytes, another dtype
    assert fingerprint([torch.zeros(2), x]) != base  # order
    assert fingerprint([x, torch.tensor([0.0, -0.0])]) != base  # bitwise, not numerically


def test_a_single_process_agrees_with_itself():
    groups = {"weights": [torch.ones(2)], "optimizer state": []}
    assert check_replicas_agree(groups) == {"weights": fingerprint([torch.ones(2)]),
                                            "optimizer state": fingerprint([])}


# ---------------------------------------------------------------------------- resume world size
@pytest.mark.parametrize("checkpoint", [{"world_size": 2, "rng": [{}]}, {"rng": [{}, {}]}])
def test_a_resume_by_another_number_of_processes_is_refused(checkpoint):
    cfg = make_cfg(None, ["TRAIN.BATCH_SIZE_PER_GPU", "8"])
    check_resume_world_size(checkpoint, 2, cfg, "run/checkpoint_latest.pth")
    with pytest.raises(ConfigError) as e:
        check_resume_world_size(checkpoint, 3, cfg, "run/checkpoint_latest.pth")
    assert str(e.value) == ("cannot resume run/checkpoint_latest.pth: trained by 2 process(es) (global batch 16), "
                            "resumed by 3 (24); resume with 2 process(es) or start a new run (EXPERIMENT_NAME)")


# ---------------------------------------------------------------------------- merging evaluation shards
def _shard(ids: List[int], **extra) -> Dict[str, Any]:
    n = len(ids)
    return dict(ann_id=np.array(ids, dtype=np.int64), preds=np.array(ids, dtype=np.float32)[:, None] * np.array([1, -1], dtype=np.float32),
                loss_sum=float(sum(ids)), count=n, **extra)


def test_merge_shards_interleaves_the_items_and_sums_the_loss():
    # 7 items over 3 ranks (ShardSampler): rank r holds items r, r + 3, ...
    shards = [_shard([0, 3, 6], name="r0", scale=np.float64(2.0), meta=np.zeros(5)),
              _shard([1, 4], name="r1", scale=np.float64(3.0), meta=np.ones(5)),
              _shard([2, 5], name="r2", scale=np.float64(4.0), meta=np.ones(5))]
    merged = merge_shards(shards)
    assert merged["ann_id"].tolist() == list(range(7)) and merged["ann_id"].dtype == np.int64
    assert merged["preds"].shape == (7, 2) and merged["preds"].dtype == np.float32
    assert merged["preds"][:, 0].tolist() == list(range(7)) and merged["preds"][:, 1].tolist() == [-i for i in range(7)]
    assert merged["loss_sum"] == 21.0 and merged["count"] == 7
    # not per item (another length, 0-d, not an array): rank 0's
    assert merged["name"] == "r0" and merged["scale"] == 2.0 and merged["meta"].tolist() == [0.0] * 5


def test_merge_shards_of_one_rank_is_that_rank():
    one = _shard([4, 2])
    assert merge_shards([one]) is one


def test_merge_shards_warns_of_repeated_annotation_ids(caplog):
    caplog.set_level(logging.WARNING, logger=distributed.__name__)
    merge_shards([_shard([0, 1]), _shard([5, 6])])
    assert caplog.records == []
    merged = merge_shards([_shard([0, 1]), _shard([0, 2])])
    assert merged["ann_id"].tolist() == [0, 0, 1, 2]
    assert [r.getMessage() for r in caplog.records] == [
        "validation: 4 predictions but only 3 distinct annotation ids"]


# ---------------------------------------------------------------------------- two gloo ranks
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, body: Callable[[DistInfo], Any], queue) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    try:
        d = init_distributed("cpu", timeout_min=1.0)
        try:
            queue.put((rank, body(d)))
        finally:
            cleanup_distributed()
    except BaseException:
        queue.put((rank, traceback.format_exc()))


def _two_ranks(body: Callable[[DistInfo], Any]) -> List[Any]:
    """``body(d)``'s results on two gloo ranks, by rank. Spawned, not forked: a fork of a process that
    has run a gloo group (its threads may hold locks) can hang in the child's rendezvous."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, port, body, queue)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        results = dict(queue.get(timeout=300) for _ in procs)  # a loaded CI machine starts torch slowly
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    for r in range(2):
        assert not isinstance(results[r], str) or not results[r].startswith("Traceback"), results[r]
    return [results[0], results[1]]


def _collectives(d: DistInfo) -> Dict[str, Any]:
    out: Dict[str, Any] = {"info": d, "backend": dist.get_backend(), "again": init_distributed("cpu") == d}
    out["gathered"] = all_gather_object({"rank": d.rank})
    t = torch.tensor([d.rank + 1.0])
    out["reduced_in_place"] = all_reduce_sum(t) is t
    out["reduced"] = t.item()
    bn = torch.nn.BatchNorm1d(2)
    with torch.no_grad():
        bn.weight.fill_(d.rank + 1.0)
        bn.running_mean.fill_(d.rank + 10.0)
    broadcast_buffers(bn)
    out["after_buffers"] = (bn.weight.tolist(), bn.running_mean.tolist())
    bn.running_mean.fill_(d.rank + 20.0)
    broadcast_module(bn)
    out["after_module"] = (bn.weight.tolist(), bn.running_mean.tolist(), bn.weight.requires_grad)
    return out


def test_collectives_of_two_ranks():
    # the same calls in this single process first: identities
    bn = torch.nn.BatchNorm1d(2)
    assert all_gather_object(3) == [3]
    broadcast_buffers(bn)
    broadcast_module(bn)
    t = torch.ones(1)
    assert all_reduce_sum(t) is t and t.item() == 1.0
    r0, r1 = _two_ranks(_collectives)
    for rank, r in enumerate((r0, r1)):
        assert r["info"] == DistInfo(rank, 2, rank, CPU) and r["backend"] == "gloo" and r["again"]
        assert r["gathered"] == [{"rank": 0}, {"rank": 1}]
        assert r["reduced_in_place"] and r["reduced"] == 3.0
        assert r["after_buffers"] == ([rank + 1.0] * 2, [10.0, 10.0])  # rank 0's buffers, each rank's weights
        assert r["after_module"] == ([1.0, 1.0], [20.0, 20.0], True)  # rank 0's parameters and buffers


def _replica_checks(d: DistInfo) -> Dict[str, Any]:
    from optim.lookahead import Lookahead

    records: List[Any] = []

    class ToList(logging.Handler):
        def emit(self, record):
            records.append((record.getMessage(), getattr(record, "file_only", False)))

    distributed._logger.addHandler(ToList())
    distributed._logger.setLevel(logging.INFO)
    out: Dict[str, Any] = {}
    same = {"a": [torch.ones(2)], "b": [torch.zeros(3)]}
    out["agree"] = check_replicas_agree(same) == {k: fingerprint(v) for k, v in same.items()}
    mine = {"a": [torch.ones(2)], "b": [torch.full((3,), float(d.rank))], "c": [torch.tensor([d.rank])]}
    out["prints"] = {k: fingerprint(v) for k, v in mine.items()}
    try:
        check_replicas_agree(mine)
    except ReplicaMismatchError as exc:
        out["differ"] = str(exc)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    opt = Lookahead(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), k=2)
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    state = opt.state_dict()
    want = {"weights": fingerprint(model.state_dict().values()),
            "optimizer state": fingerprint([state["state"][i]["momentum_buffer"] for i in sorted(state["state"])]),
            "slow weights": fingerprint([state["lookahead"]["slow_weights"][i]
                                         for i in sorted(state["lookahead"]["slow_weights"])])}
    out["training"] = check_training_replicas(model, opt, 7) == want
    out["want"] = want
    out["log"] = list(records)
    if d.rank == 1:
        opt.optimizer.state[model[0].bias]["momentum_buffer"].add_(1.0)
    try:
        check_training_replicas(model, opt, 8)
    except ReplicaMismatchError as exc:
        out["optimizer differs"] = str(exc).split(":")[0]
    plain = torch.optim.SGD(model.parameters(), lr=0.1)
    out["plain"] = sorted(check_training_replicas(model, plain, 9))
    return out


def test_replica_checks_of_two_ranks(tmp_path):
    # a group of one in this process first: it agrees with itself
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        model = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        assert check_training_replicas(model, opt, 0) == {"weights": fingerprint(model.state_dict().values()),
                                                          "optimizer state": fingerprint([])}
    finally:
        dist.destroy_process_group()
    r0, r1 = _two_ranks(_replica_checks)
    fp = [r0["prints"], r1["prints"]]
    assert fp[0]["a"] == fp[1]["a"] and fp[0]["b"] != fp[1]["b"] and fp[0]["c"] != fp[1]["c"]
    for r in (r0, r1):
        assert r["agree"] and r["training"]
        assert r["differ"] == (f"DDP replicas differ in b, c: rank 0 {fp[0]['b'][:12]}, {fp[0]['c'][:12]}; "
                               f"rank 1 {fp[1]['b'][:12]}, {fp[1]['c'][:12]}")
        w = r["want"]
        # train.log only (run_record.FILE_ONLY), not the console
        assert r["log"] == [(f"step 7: the 2 DDP replicas agree: weights sha1 {w['weights'][:12]}, optimizer state "
                             f"sha1 {w['optimizer state'][:12]}, slow weights sha1 {w['slow weights'][:12]}", True)]
        assert r["optimizer differs"] == "DDP replicas differ in optimizer state"
        assert r["plain"] == ["optimizer state", "weights"]  # no slow weights without Lookahead
