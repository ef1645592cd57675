"""The data side of a run (hrnet/engine/loaders.py) on index datasets: loader options, which rank builds
first, the seeded orders (training, validation shards, BN recalibration), the gallery, the errors.
(The partial-batch and recalibration basics: test_survivors.py.)"""
from __future__ import annotations

import logging
from typing import Any, List, Sequence

import pytest
import torch

from conftest import make_cfg
from configs import ConfigError
from hrnet.engine import loaders
from hrnet.engine.distributed import DistInfo, ShardSampler
from hrnet.engine.loaders import build_run_data, loader_kwargs, recalibration_loader
from hrnet.engine.signals import ignore_sigint_in_worker

CPU = torch.device("cpu")


class _Indices(torch.utils.data.Dataset):
    """Items are their indices; ``skipped`` as a dataset reports it."""

    def __init__(self, n: int, skipped: Sequence[str] = (), name: str = "") -> None:
        self.n, self.skipped, self.name = n, tuple(skipped), name

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.tensor(i)


def _cfg(*opts: Any):
    return make_cfg(None, ["TRAIN.BATCH_SIZE_PER_GPU", "4", "TEST.BATCH_SIZE_PER_GPU", "3", "WORKERS", "0",
                           "TEST.VIS_IMAGES", "0", "SEED", "5", *map(str, opts)])


def _datasets(monkeypatch, n_train=10, n_valid=7, train_skipped=(), valid_skipped=()) -> List[Any]:
    """``data.build_dataset`` as index datasets; returns the calls (is_train) and barriers, in order."""
    import data

    events: List[Any] = []

    def build(cfg, is_train):
        assert cfg is not None and cfg.DATASET.TESTSET  # the run's config
        events.append(("build", is_train))
        return (_Indices(n_train, train_skipped, "train") if is_train
                else _Indices(n_valid, valid_skipped, "valid"))

    monkeypatch.setattr(data, "build_dataset", build)
    monkeypatch.setattr(torch.distributed, "barrier", lambda: events.append("barrier"))
    return events


def _batches(loader) -> List[List[int]]:
    return [b.tolist() for b in loader]


def _shuffled(n: int, batch: int, seed: int) -> List[List[int]]:
    """The full batches of a loader over ``n`` indices shuffled by a generator seeded ``seed``."""
    return _batches(torch.utils.data.DataLoader(_Indices(n), batch_size=batch, shuffle=True, drop_last=True,
                                                generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("workers, device, want", [
    (0, "cpu", {"num_workers": 0, "pin_memory": False}),
    (0, "cuda", {"num_workers": 0, "pin_memory": True}),
    (2, "cpu", {"num_workers": 2, "pin_memory": False, "worker_init_fn": ignore_sigint_in_worker,
                "prefetch_factor": 4}),
    (1, "cuda", {"num_workers": 1, "pin_memory": True, "worker_init_fn": ignore_sigint_in_worker,
                 "prefetch_factor": 4}),
])
def test_loader_kwargs(workers, device, want):
    assert loader_kwargs(_cfg("WORKERS", workers), torch.device(device)) == want


def test_a_single_process_run(monkeypatch):
    events = _datasets(monkeypatch)
    rd = build_run_data(_cfg(), DistInfo(0, 1, 0, CPU))
    assert events == [("build", True), ("build", False)]  # no barrier without a process group
    assert (rd.train_set.name, rd.valid_set.name) == ("train", "valid")
    assert rd.train_sampler is None and rd.gallery is None and rd.skipped == []
    # the training order: a shuffle drawn from the generator seeded SEED + rank
    assert rd.generator.initial_seed() == 5
    assert _batches(rd.train_loader) == _shuffled(10, 4, 5)
    assert [len(b) for b in _shuffled(10, 4, 5)] == [4, 4] and _shuffled(10, 4, 5) != _shuffled(10, 4, 6)
    # validation: every item once, in order, in TEST.BATCH_SIZE_PER_GPU batches
    assert _batches(rd.valid_loader) == [[0, 1, 2], [3, 4, 5], [6]]
    assert isinstance(rd.valid_loader.sampler, ShardSampler)
    # the validation loader draws from its own generator, not torch's global RNG (the training stream)
    torch.manual_seed(0)
    want = torch.rand(2)
    torch.manual_seed(0)
    _batches(rd.valid_loader)
    assert torch.equal(torch.rand(2), want)


def test_rank_0_builds_the_training_set_before_the_others(monkeypatch):
    events = _datasets(monkeypatch)
    build_run_data(_cfg(), DistInfo(0, 2, 0, CPU))
    assert events == [("build", True), "barrier", ("build", False)]
    events.clear()
    build_run_data(_cfg(), DistInfo(1, 2, 1, CPU))
    assert events == ["barrier", ("build", True), ("build", False)]


@pytest.mark.parametrize("shuffle", [True, False])
def test_a_rank_of_a_ddp_run(monkeypatch, shuffle):
    _datasets(monkeypatch, n_train=18)
    rd = build_run_data(_cfg("TRAIN.BATCH_SIZE_PER_GPU", 2, "TRAIN.SHUFFLE", shuffle), DistInfo(1, 2, 1, CPU))
    s = rd.train_sampler
    assert isinstance(s, torch.utils.data.DistributedSampler) and rd.train_loader.sampler is s
    assert (s.num_replicas, s.rank, s.shuffle, s.seed, s.drop_last) == (2, 1, shuffle, 5, True)
    assert rd.generator.initial_seed() == 5 + 1
    if shuffle:
        order = torch.randperm(18, generator=torch.Generator().manual_seed(5)).tolist()
    else:
        order = list(range(18))
    mine = order[1::2]
    assert _batches(rd.train_loader) == [mine[0:2], mine[2:4], mine[4:6], mine[6:8]]  # 9 items: 4 full batches
    assert _batches(rd.valid_loader) == [[1, 3, 5]]  # rank 1's shard of the 7 validation items
    assert rd.gallery is None  # the prediction grid is rank 0's


def test_the_batch_error_counts_every_process(monkeypatch):
    _datasets(monkeypatch, n_train=9)
    with pytest.raises(ConfigError) as e:
        build_run_data(_cfg("TRAIN.BATCH_SIZE_PER_GPU", 5), DistInfo(0, 2, 0, CPU))
    assert str(e.value) == ("TRAIN.BATCH_SIZE_PER_GPU 5 x 2 process(es) is larger than the training set "
                            "(9 samples): not one batch per epoch")
    rd = build_run_data(_cfg("TRAIN.BATCH_SIZE_PER_GPU", 4), DistInfo(0, 2, 0, CPU))
    assert len(rd.train_loader) == 1  # exactly one global batch: fine


def test_an_empty_validation_set_is_refused(monkeypatch):
    _datasets(monkeypatch, n_valid=0)
    with pytest.raises(ConfigError) as e:
        build_run_data(_cfg("DATASET.TESTSET", "empty.json"), DistInfo(0, 1, 0, CPU))
    assert str(e.value) == "DATASET.TESTSET empty.json: the validation set is empty"
    _datasets(monkeypatch, n_valid=1)
    assert len(build_run_data(_cfg(), DistInfo(0, 1, 0, CPU)).valid_loader) == 1


def test_skipped_samples_are_logged_and_kept(monkeypatch, caplog):
    _datasets(monkeypatch, train_skipped=["a.jpg: unreadable"], valid_skipped=["b.jpg: no box", "c.jpg: x"])
    caplog.set_level(logging.WARNING, logger=loaders.__name__)
    rd = build_run_data(_cfg(), DistInfo(0, 1, 0, CPU))
    assert rd.skipped == ["a.jpg: unreadable", "b.jpg: no box", "c.jpg: x"]
    assert [r.getMessage() for r in caplog.records if r.name == loaders.__name__] == [
        f"skipped (DATASET.ON_BAD_SAMPLE skip): {line}" for line in rd.skipped]


def test_the_gallery_is_drawn_on_rank_0_without_moving_the_rng(monkeypatch):
    from hrnet.evaluation import visualize

    _datasets(monkeypatch)
    asked = []

    def gallery_samples(dataset, n):
        asked.append((dataset.name, n))
        torch.rand(5)  # a draw that must not reach the training streams
        return "gallery"

    monkeypatch.setattr(visualize, "gallery_samples", gallery_samples)
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    rd = build_run_data(_cfg("TEST.VIS_IMAGES", 1), DistInfo(0, 1, 0, CPU))
    assert rd.gallery == "gallery" and asked == [("valid", 1)]
    assert torch.equal(torch.rand(3), want)
    assert build_run_data(_cfg("TEST.VIS_IMAGES", 6), DistInfo(1, 2, 1, CPU)).gallery is None
    assert asked == [("valid", 1)]


def test_loaders_with_workers_carry_their_options(monkeypatch):
    _datasets(monkeypatch)
    rd = build_run_data(_cfg("WORKERS", 2), DistInfo(0, 1, 0, CPU))
    for loader in (rd.train_loader, rd.valid_loader):
        assert loader.num_workers == 2 and loader.prefetch_factor == 4 and not loader.pin_memory
        assert loader.worker_init_fn is ignore_sigint_in_worker and not loader.persistent_workers
    assert rd.train_loader.drop_last and not rd.valid_loader.drop_last
    assert rd.train_loader.generator is rd.generator


def test_recalibration_batches_are_seeded_by_seed_and_step():
    cfg = _cfg("SEED", 3, "TRAIN.BATCH_SIZE_PER_GPU", 4)
    assert _batches(recalibration_loader(cfg, _Indices(10), 2, CPU)) == _shuffled(10, 4, 3 * 7919 + 2)
    workers = recalibration_loader(_cfg("WORKERS", 2), _Indices(10), 2, torch.device("cuda"))
    assert workers.num_workers == 2 and workers.pin_memory and workers.worker_init_fn is ignore_sigint_in_worker
