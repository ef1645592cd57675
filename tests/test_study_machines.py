"""Machines told apart by their numerics, not by the CPU's name; replicate arms and the
machine-to-machine spread; same-machine checks (hrnet/runtime/device.py, hrnet/study/analyse/numerics.py,
machines.py, hrnet/study/render/machines_md.py)."""
from __future__ import annotations

import re

import pytest
import torch

from test_study_analysis import ADAM, LA, _run, _study

from hrnet.runtime import device as dev
from hrnet.study.analyse import stats
from hrnet.study.analyse.numerics import comparison_numerics, pair_numerics

CPU = torch.device("cpu")
OLD, NEW, THIRD = 0.7, 0.7001, 0.7002  # untrained NME of seed s on three machines (+ s / 100)


# ---------------------------------------------------------------------------- the machine record
def test_numerics_fingerprint_is_repeatable_and_hashes_the_kernels_results(monkeypatch):
    state = torch.get_rng_state()
    first = dev.numerics_fingerprint()
    assert re.fullmatch(r"[0-9a-f]{16}", first) and dev.numerics_fingerprint(CPU) == first
    assert torch.equal(torch.get_rng_state(), state)  # training's RNG untouched
    with torch.autocast("cpu", dtype=torch.bfloat16):  # float32 even where the trainer autocasts
        assert dev.numerics_fingerprint() == first
    conv = dev.F.conv2d  # a convolution kernel that rounds one ulp differently: another fingerprint
    monkeypatch.setattr(dev.F, "conv2d", lambda *a, **k: torch.nextafter(conv(*a, **k), torch.tensor(9.0)))
    assert dev.numerics_fingerprint() != first
    monkeypatch.setattr(dev.F, "conv2d", conv)
    mm = torch.mm
    monkeypatch.setattr(torch, "mm", lambda a, b: torch.nextafter(mm(a, b), torch.tensor(9.0)))
    assert dev.numerics_fingerprint() != first


def test_describe_machine_records_cpu_id_caches_and_numerics(monkeypatch, tmp_path):
    info = tmp_path / "cpuinfo"  # "model name" before "model": the keys must match whole
    info.write_text("processor\t: 0\ncpu family\t: 6\nmodel name\t: Intel(R) Xeon(R) Processor\nmodel\t\t: 167\n"
                    "stepping\t: 1\nflags\t\t: avx2 fma\n")
    cache = tmp_path / "cache"
    for i, (level, kind, size) in enumerate((("1", "Data", "48K"), ("1", "Instruction", "64K"),
                                             ("2", "Unified", "4096K"), ("3", "Unified", "480M"))):
        d = cache / f"index{i}"
        d.mkdir(parents=True)
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (d / name).write_text(value + "\n")
    monkeypatch.setattr(dev, "CPUINFO", str(info))
    monkeypatch.setattr(dev, "CPU_CACHE", str(cache))
    got = dev.describe_machine(CPU)
    assert got["cpu"] == "Intel(R) Xeon(R) Processor" and got["cpu_flags"] == ["avx2", "fma"]
    assert got["cpu_id"] == {"family": 6, "model": 167, "stepping": 1}
    assert got["cache_kib"] == {"L2": 4096, "L3": 480 * 1024}
    assert got["numerics"] == dev.numerics_fingerprint() and got["threads"] == torch.get_num_threads()
    monkeypatch.setattr(dev, "CPU_CACHE", str(tmp_path / "none"))
    assert dev.describe_machine(CPU)["cache_kib"] == {}


# ---------------------------------------------------------------------------- numerics of a pair
def _rec(seed, untrained, fingerprint=None, arm="a"):
    return {"arm": arm, "seed": seed, "status": "finished", "final_NME": 0.2,
            "curves": {"epoch": [0, 1], "NME": [untrained, 0.3]},
            "machine": {"cpu": "Intel(R) Xeon(R) Processor", "numerics": fingerprint} if fingerprint else None}


def test_fingerprint_decides_else_the_untrained_nme_of_comparable_arms():
    # The fingerprint decides where both have one, whatever the untrained NME says.
    assert pair_numerics(_rec(0, OLD, "aa"), _rec(0, OLD, "bb"), True) == (False, "fingerprint")
    assert pair_numerics(_rec(0, OLD, "aa"), _rec(0, NEW, "aa"), True) == (True, "fingerprint")
    # Without one on either side: an exactly equal untrained NME, for arms that agree outside TRAIN.*.
    assert pair_numerics(_rec(0, OLD, "aa"), _rec(0, OLD), True) == (True, "epoch-0 NME")
    assert pair_numerics(_rec(0, OLD), _rec(0, NEW), True) == (False, "epoch-0 NME")
    assert pair_numerics(_rec(0, OLD), _rec(0, OLD), False) == (None, None)
    base = {"TRAIN.LR": 1e-4, "TRAIN.OPTIMIZER": "adam", "MODEL.SIGMA": 1.0, "DEVICE": "cpu", "lr": 1e-4}
    arms = {"a": {"setting": base}, "b": {"setting": dict(base, **{"TRAIN.LR": 2e-4, "lr": 2e-4})},
            "c": {"setting": dict(base, **{"MODEL.SIGMA": 2.0})}}
    runs = {"a": [_rec(s, OLD + s / 100) for s in range(3)],
            "b": [_rec(s, (NEW if s == 2 else OLD) + s / 100, arm="b") for s in range(3)],
            "c": [_rec(s, OLD + s / 100, arm="c") for s in range(3)]}
    got = comparison_numerics(runs, arms, "b", "a", [0, 1, 2])
    assert (got["pairs"], got["same"], got["different"], got["crossing_seeds"], got["basis"]) == \
        (3, 2, 1, [2], "epoch-0 NME")  # another optimizer and LR: the untrained model is the same
    got = comparison_numerics(runs, arms, "c", "a", [0, 1, 2])
    assert (got["unknown"], got["same"], got["basis"]) == (3, 0, None)  # another model: not comparable


# ---------------------------------------------------------------------------- replicates in a study
LA2 = dict(LA, lr=0.0002)
FINAL = {"adam": (0.20, 0.21, 0.23), "la": (0.19, 0.215, 0.22), "adam_rerun": (0.202, 0.213, 0.231),
         "la2": (0.195, 0.205, 0.226)}


def _machines_study(tmp_path, rerun_seed2=NEW):
    """adam and la on the old machine; adam_rerun (adam's config) and la2 (Lookahead at 2e-4, an added
    arm and adam's effective-step pair) on the new one, adam_rerun's seed 2 on ``rerun_seed2``."""
    study = _study(tmp_path, [("adam", "hand_adam.yaml", {}), ("la", "hand_lookahead_adam.yaml", {}),
                              ("adam_rerun", "hand_adam.yaml", {}),
                              ("la2", "hand_lookahead_adam.yaml", {"TRAIN.LR": 0.0002})], extra="real_hands: false")
    out = tmp_path / "out"
    hps = {"adam": ADAM, "la": LA, "adam_rerun": ADAM, "la2": LA2}
    for arm, finals in FINAL.items():
        for s, final in enumerate(finals):
            e0 = {"adam": OLD, "la": OLD, "la2": NEW, "adam_rerun": rerun_seed2 if s == 2 else NEW}[arm] + s / 100
            _run(out, arm, s, final, hps[arm], nme_curve=[e0, 0.5, final - 0.02, final])
    from test_study_answer import _analyse

    return _analyse(study, out)


def test_a_replicate_arm_is_no_optimizer_and_measures_the_machine_spread(tmp_path):
    from hrnet.study.render.report import render_markdown

    rep = _machines_study(tmp_path)
    assert rep["replicates"]["adam_rerun"]["replicate_of"] == "adam"
    assert set(rep["arms"]) == {"adam", "la", "la2"} and "adam_rerun" not in rep["comparisons"]
    assert "adam_rerun" not in {o["arm"] for o in rep["ranking"]["order"]}
    assert "adam_rerun" not in {o["arm"] for o in rep["user_ranking"]["order"]}
    user = next(r for r in rep["families"] if r["name"] == "the user's arms vs adam")
    assert user["m"] == 1  # la alone: the replicate (no overrides, as a user arm) is no member
    sp = rep["machine_spread"]["replicates"][0]
    diffs = [a - b for a, b in zip(FINAL["adam_rerun"], FINAL["adam"])]
    assert [r["diff"] for r in sp["per_seed"]] == pytest.approx(diffs)
    assert [r["same_numerics"] for r in sp["per_seed"]] == [False] * 3
    assert [r["untrained_NME_replicate"] for r in sp["per_seed"]] == pytest.approx([NEW, NEW + 0.01, NEW + 0.02])
    want = stats.summarize(diffs)
    assert (sp["diff"]["n"], sp["diff"]["mean"], sp["diff"]["ci_low"]) == (3, pytest.approx(want.mean),
                                                                          pytest.approx(want.ci_low))
    assert sp["seed_std"] == pytest.approx(stats.summarize(FINAL["adam"]).std)
    words = next(s for s in rep["verdict"] if s.startswith("Machine-to-machine spread"))
    assert f"end {want.mean:.4f} higher on average" in words and "numerics equal on 0 of 3 seeds" in words
    md = render_markdown(rep, [])
    section = md[md.index("## Machine-to-machine spread"):]
    assert "| 2 | 0.2310 | 0.2300 | +0.0010 | 0.72010 | 0.72000 | **no** (epoch-0 NME) |" in section
    assert "adam_rerun" not in md[md.index("## Per arm"):md.index("## Machine-to-machine spread")]


def test_a_comparison_across_machines_is_checked_with_the_replicate(tmp_path):
    from hrnet.study.render.report import render_markdown

    rep = _machines_study(tmp_path)
    c = rep["comparisons"]["la2"]["final_NME"]
    assert c["mixed_machines"] is True and c["numerics"]["crossing_seeds"] == [0, 1, 2]
    assert "comparisons.la2.final_NME" in rep["machines"]["mixed"]
    assert rep["comparisons"]["la"]["final_NME"]["mixed_machines"] is False
    checks = {k["comparison"]: k for k in rep["machine_spread"]["checks"]}
    assert set(checks) == {"comparisons.la2.final_NME", "effective_step.pairs[0].difference"}
    k = checks["comparisons.la2.final_NME"]
    assert (k["label"], k["replaced"], k["replicate"], k["seeds_substituted"]) == \
        ("same-machine check", "adam", "adam_rerun", [0, 1, 2])
    assert k["check"]["diffs"] == pytest.approx([a - b for a, b in zip(FINAL["la2"], FINAL["adam_rerun"])])
    assert k["check"]["numerics"]["same"] == 3 and k["check"]["mixed_machines"] is False
    assert k["check"]["p_adjusted"] == pytest.approx(min(1.0, k["check"]["p_value"] * c["family_size"]))
    md = render_markdown(rep, [])
    assert "same-machine checks" in md and "adam -> adam_rerun (0, 1, 2)" in md
    # adam_rerun's seed 2 on a third machine: it shares numerics with neither side, so seed 2 stays.
    rep = _machines_study(tmp_path, rerun_seed2=THIRD)
    k = next(k for k in rep["machine_spread"]["checks"] if k["comparison"] == "comparisons.la2.final_NME")
    assert k["seeds_substituted"] == [0, 1] and k["check"]["numerics"]["crossing_seeds"] == [2]
    assert k["check"]["diffs"][2] == pytest.approx(FINAL["la2"][2] - FINAL["adam"][2])
