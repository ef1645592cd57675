"""Unit tests of hrnet/study/analyse/numerics.py and machines.py on hand-made run records (no run
folders, no analysis): which pairs share numerics and on what basis, replicate arms, the spread of a
replicate against its original, the same-machine checks and their sentence. Fast: the mutation
section ``study_machines`` runs them for every mutant."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import pytest

from hrnet.study.analyse import machines as mach
from hrnet.study.analyse import numerics as num
from hrnet.study.analyse import stats

UNKNOWN = {"pairs": 0, "same": 0, "different": 0, "unknown": 0, "crossing_seeds": [], "basis": None}


def rec(seed: int, final: Optional[float] = 0.2, e0: Optional[float] = 0.7, fp: Optional[str] = None,
        status: str = "finished", arm: str = "a") -> Dict[str, Any]:
    """A run record: its final NME, its untrained (epoch-0) NME, its numerics fingerprint."""
    return {"arm": arm, "seed": seed, "status": status, "final_NME": final,
            "curves": {"epoch": [0, 1], "NME": [e0, 0.3]}, "machine": {"cpu": "x", "numerics": fp} if fp else None}


# ---------------------------------------------------------------------------- numerics.py
def test_untrained_nme_is_the_value_at_epoch_0_wherever_it_is():
    assert num.untrained_nme({"curves": {"epoch": [1, 0, 2], "NME": [0.5, 0.7, 0.3]}}) == 0.7
    assert num.untrained_nme({"curves": {"epoch": [1, 2], "NME": [0.5, 0.3]}}) is None
    assert num.untrained_nme({"curves": {"epoch": None, "NME": [0.5]}}) is None
    assert num.untrained_nme({"curves": {"epoch": [0], "NME": None}}) is None
    assert num.untrained_nme({"curves": None}) is None and num.untrained_nme({}) is None


def test_untrained_setting_keeps_the_config_keys_outside_train():
    setting = {"MODEL.SIGMA": 2.0, "DEVICE": "cpu", "TRAIN.LR": 1e-3, "TRAIN": 1, "lr": 1e-3, "k": 5,
               "model.width": 18, "Mixed": 3}
    assert num.untrained_setting(setting) == {"MODEL.SIGMA": 2.0, "DEVICE": "cpu", "TRAIN": 1, "model.width": 18}
    assert num.untrained_setting(None) is None
    assert num.untrained_setting({}) == {}


@pytest.mark.parametrize("a, b, comparable, want", [
    (rec(0, fp="f1"), rec(0, fp="f1", e0=0.9), False, (True, num.FINGERPRINT)),  # the fingerprint decides
    (rec(0, fp="f1"), rec(0, fp="f2"), True, (False, num.FINGERPRINT)),
    (rec(0, fp="f1"), rec(0), True, (True, num.EPOCH0)),  # one fingerprint only: the untrained NME
    (rec(0), rec(0, fp="f2"), True, (True, num.EPOCH0)),
    (rec(0, e0=0.7), rec(0, e0=0.7001), True, (False, num.EPOCH0)),
    (rec(0), rec(0), False, (None, None)),  # arms that differ outside TRAIN.*: unknown
    (rec(0, e0=None), rec(0), True, (None, None)),
    (rec(0), rec(0, e0=None), True, (None, None)),
])
def test_pair_numerics(a, b, comparable, want):
    assert num.pair_numerics(a, b, comparable) == want


def test_finished_by_seed_keeps_the_finished_runs():
    runs = [rec(0), rec(1, status="failed"), rec(2, status="running"), rec(3)]
    assert num.finished_by_seed(runs) == {0: runs[0], 3: runs[3]}


SETTING = {"MODEL.SIGMA": 2.0, "TRAIN.LR": 1e-3}


@pytest.mark.parametrize("arms, want", [
    ({"a": {"setting": SETTING}, "b": {"setting": dict(SETTING, **{"TRAIN.LR": 2e-3})}}, True),
    ({"a": {"setting": SETTING}, "b": {"setting": dict(SETTING, **{"MODEL.SIGMA": 3.0})}}, False),
    ({"a": {"setting": SETTING}, "b": {}}, False),  # one setting unknown: not comparable
    ({"a": {"setting": SETTING}}, False),
    ({"b": {"setting": SETTING}}, False),
    ({}, False),
])
def test_comparable_needs_both_settings_equal_outside_train(arms, want):
    assert num._comparable(arms, "a", "b") is want


def test_comparison_numerics_counts_each_pair_once_by_its_basis():
    arms = {"a": {"setting": SETTING}, "b": {"setting": SETTING}}
    by_arm = {"a": [rec(0, fp="f1"), rec(1), rec(2, e0=0.71), rec(3, e0=None), rec(5, fp="f1"), rec(6)],
              "b": [rec(0, fp="f1"), rec(1), rec(2), rec(3), rec(4), rec(5, fp="f2"), rec(6, status="failed")]}
    got = num.comparison_numerics(by_arm, arms, "a", "b", [9, 0, 1, 2, 3, 4, 5, 6])
    # seed 9 in neither, 4 only in b, 6 not finished in b: skipped; 3: no untrained NME on a's side.
    assert got == {"pairs": 5, "same": 2, "different": 2, "unknown": 1, "crossing_seeds": [2, 5],
                   "basis": "fingerprint and epoch-0 NME"}
    assert list(got) == ["pairs", "same", "different", "unknown", "crossing_seeds", "basis"]
    # Only the epoch-0 NME decides, seeds in the order given; the bases listed in a fixed order.
    got = num.comparison_numerics(by_arm, arms, "a", "b", [2, 1])
    assert got == {"pairs": 2, "same": 1, "different": 1, "unknown": 0, "crossing_seeds": [2], "basis": "epoch-0 NME"}
    assert num.comparison_numerics(by_arm, arms, "a", "b", [5, 0, 1])["basis"] == "fingerprint and epoch-0 NME"
    assert num.comparison_numerics(by_arm, arms, "a", "b", [1, 5])["basis"] == "fingerprint and epoch-0 NME"
    # Not comparable and no fingerprints: every pair unknown, no basis.
    assert num.comparison_numerics(by_arm, {}, "a", "b", [1, 2]) == dict(UNKNOWN, pairs=2, unknown=2)
    assert num.comparison_numerics({}, arms, "a", "b", [0, 1]) == UNKNOWN


def test_merge_numerics_sums_the_counts_and_unites_the_seeds_and_bases():
    p1 = {"pairs": 3, "same": 1, "different": 1, "unknown": 1, "crossing_seeds": [4, 1], "basis": "epoch-0 NME"}
    p2 = {"pairs": 2, "same": 0, "different": 2, "unknown": 0, "crossing_seeds": [1, 2],
          "basis": "fingerprint and epoch-0 NME"}
    p3 = {"pairs": 1, "same": 0, "different": 0, "unknown": 1, "crossing_seeds": [], "basis": None}
    assert num.merge_numerics([p1, p2, p3]) == {"pairs": 6, "same": 1, "different": 3, "unknown": 2,
                                                "crossing_seeds": [1, 2, 4], "basis": "fingerprint and epoch-0 NME"}
    assert num.merge_numerics([p3, p1]) == {"pairs": 4, "same": 1, "different": 1, "unknown": 2,
                                            "crossing_seeds": [1, 4], "basis": "epoch-0 NME"}
    assert num.merge_numerics([dict(p3, basis="fingerprint")])["basis"] == "fingerprint"
    assert num.merge_numerics([]) == UNKNOWN
    assert num.merge_numerics([p3]) == dict(UNKNOWN, pairs=1, unknown=1)


# ---------------------------------------------------------------------------- machines.py: replicates
def test_replicate_arms_map_each_repeated_setting_to_its_first_arm_reference_first():
    s1, s2 = {"setting": {"X": 1}}, {"setting": {"X": 2}}
    arms = {"a": s1, "ref": s1, "b": s2, "c": s1, "d": s2}
    got = mach.replicate_arms(arms, "ref")
    assert list(got.items()) == [("a", "ref"), ("c", "ref"), ("d", "b")]
    got = mach.replicate_arms(arms, "other")  # a reference not among the arms: the file order
    assert list(got.items()) == [("ref", "a"), ("c", "a"), ("d", "b")]
    assert mach.replicate_arms({"a": s1, "b": s2}, "a") == {}


def _spread_arms() -> Dict[str, Dict[str, Any]]:
    return {"orig": {"setting": SETTING, "final_NME": {"std": 0.012, "n": 4}, "seeds": [0, 1, 2, 3]},
            "rep": {"setting": SETTING, "seeds": [0, 1, 2, 4], "config": "hand_adam.yaml",
                    "overrides": ["TRAIN.X=1"]}}


def test_spread_entry_pairs_the_common_finished_seeds():
    by_arm = {"orig": [rec(0, 0.20, fp="f1"), rec(1, 0.21), rec(2, 0.22, e0=0.71), rec(3, 0.23)],
              "rep": [rec(4, 0.5), rec(2, 0.25), rec(1, 0.21), rec(0, 0.20, fp="f1", status="failed"),
                      rec(3, None, e0=None)]}
    e = mach._spread_entry("rep", "orig", by_arm, _spread_arms())
    rows = e.pop("per_seed")
    assert [r["seed"] for r in rows] == [1, 2, 3]
    assert rows[0] == {"seed": 1, "final_NME_replicate": 0.21, "final_NME_original": 0.21, "diff": 0.0,
                       "untrained_NME_replicate": 0.7, "untrained_NME_original": 0.7, "same_numerics": True,
                       "basis": num.EPOCH0, "fingerprint_replicate": None, "fingerprint_original": None}
    assert rows[1]["diff"] == pytest.approx(0.03) and rows[1]["same_numerics"] is False
    assert (rows[1]["untrained_NME_replicate"], rows[1]["untrained_NME_original"]) == (0.7, 0.71)
    assert (rows[2]["diff"], rows[2]["final_NME_replicate"], rows[2]["same_numerics"], rows[2]["basis"]) == \
        (None, None, None, None)
    want = stats.summarize([0.0, 0.25 - 0.22]).to_dict()
    assert e == {"arm": "rep", "of": "orig", "seeds": [0, 1, 2, 4], "diff": want, "seed_std": 0.012, "seed_std_n": 4,
                 "same_numerics": 1, "reproduced": 1, "config": "hand_adam.yaml", "overrides": ["TRAIN.X=1"]}


def test_seed_row_records_both_fingerprints_and_a_missing_original_value():
    r = mach._seed_row(rec(0, 0.3, fp="f1"), rec(0, None, fp="f2"))
    assert (r["diff"], r["final_NME_original"], r["same_numerics"], r["basis"]) == (None, None, False, num.FINGERPRINT)
    assert (r["fingerprint_replicate"], r["fingerprint_original"]) == ("f1", "f2")


def test_spread_entry_of_a_replicate_without_runs_or_optional_keys():
    arms = _spread_arms()
    arms["rep"] = {"setting": SETTING}
    by_arm = {"orig": [rec(0, 0.2, fp="f1"), rec(1, 0.2, fp="f1")], "rep": [rec(0, 0.2, fp="f1"), rec(1, 0.21, fp="f1")]}
    e = mach._spread_entry("rep", "orig", by_arm, arms)
    # Both seeds share numerics; only seed 0 ends bitwise equal.
    assert (e["seeds"], e["config"], e["overrides"], e["same_numerics"], e["reproduced"]) == ([], None, [], 2, 1)
    e = mach._spread_entry("rep", "orig", {}, arms)
    assert (e["per_seed"], e["diff"]["n"], e["same_numerics"], e["reproduced"]) == ([], 0, 0, 0)


# ---------------------------------------------------------------------------- same-machine checks
def _check_study(lower: bool = True, verdict: str = stats.WORSE, family_size: Any = 3):
    """``la - base`` crossing machines on seeds 0-2 (la on f2, base on f1); ``base_rerun`` (a replicate
    of base) on f2 at seeds 0, 1 and on f3 at seed 2; seed 3 paired on one machine."""
    arms = {"base": {"setting": SETTING}, "la": {"setting": dict(SETTING, **{"TRAIN.LR": 2e-3})},
            "base_rerun": {"setting": SETTING}}
    by_arm = {"base": [rec(s, 0.20 + s / 100, fp="f1") for s in range(3)] + [rec(3, 0.24, fp="f2")],
              "la": [rec(s, 0.22 + s / 50, fp="f2", arm="la") for s in range(4)],
              "base_rerun": [rec(0, 0.19, fp="f2"), rec(1, 0.215, fp="f2"), rec(2, 0.23, fp="f3"),
                             rec(3, 0.5, fp="f2")]}
    cmp = stats.paired_comparison(mach.per_seed(by_arm["la"], "final_NME"), mach.per_seed(by_arm["base"], "final_NME"),
                                  lower).to_dict()
    cmp.update(arms=["la", "base"], metric="final_NME", verdict=verdict, family_size=family_size,
               lower_is_better=lower, numerics={"different": 3, "crossing_seeds": [0, 1, 2]}, family="f")
    return arms, by_arm, cmp


def test_substitutes_are_the_crossing_seeds_where_the_replicate_shares_the_others_numerics():
    arms, by_arm, _ = _check_study()
    assert mach._substitutes("base", "la", "base_rerun", [0, 1, 2, 3, 7], by_arm, arms) == [0, 1]
    assert mach._substitutes("base", "la", "base_rerun", [1, 0], by_arm, arms) == [1, 0]
    # Without fingerprints the epoch-0 NME decides, only for arms that agree outside TRAIN.*.
    plain = {k: [dict(r, machine=None) for r in v] for k, v in by_arm.items()}
    plain["la"] = [dict(r, curves={"epoch": [0], "NME": [0.8]}) for r in plain["la"]]
    plain["base_rerun"][1]["curves"] = {"epoch": [0], "NME": [0.8]}
    assert mach._substitutes("base", "la", "base_rerun", [0, 1, 2], plain, arms) == [1]
    assert mach._substitutes("base", "la", "base_rerun", [0, 1, 2], plain, {"base": arms["base"]}) == []
    assert mach._substitutes("base", "la", "base_rerun", [0, 1, 2], plain, {"la": arms["la"]}) == []
    # A seed missing on any of the three sides is no substitute.
    for side in ("base", "la", "base_rerun"):
        gone = dict(by_arm, **{side: [r for r in by_arm[side] if r["seed"] != 0]})
        assert mach._substitutes("base", "la", "base_rerun", [0, 1], gone, arms) == [1]
        # An arm without any run (absent from by_arm): no seed to substitute, no error.
        assert mach._substitutes("base", "la", "base_rerun", [0, 1], {k: v for k, v in by_arm.items() if k != side},
                                 arms) == []


def _paired(by_arm, a: str, b: str, lower: bool = True):
    return stats.paired_comparison(mach.per_seed(by_arm[a], "final_NME"), mach.per_seed(by_arm[b], "final_NME"), lower)


@pytest.mark.parametrize("lower", [True, False])
def test_check_redoes_the_comparison_with_the_replicate_on_the_seeds(lower):
    arms, by_arm, c = _check_study(lower)
    got = mach._check(c, "base", "base_rerun", [0, 1], by_arm, arms)
    swapped = dict(by_arm, base=[by_arm["base"][2], by_arm["base"][3], by_arm["base_rerun"][0], by_arm["base_rerun"][1]])
    want = stats.adjust_family({"check": _paired(swapped, "la", "base", lower)}, [], 3)["check"].to_dict()
    num_want = num.comparison_numerics(swapped, arms, "la", "base", [0, 1, 2, 3])
    assert got == dict(want, arms=["la", "base"], metric="final_NME", machines=["x"], numerics=num_want,
                       mixed_machines=True)
    assert got["diffs"] == pytest.approx([0.22 - 0.19, 0.24 - 0.215, 0.26 - 0.22, 0.28 - 0.24])
    assert got["numerics"]["crossing_seeds"] == [2] and got["family_size"] == 3
    assert got["p_adjusted"] == pytest.approx(min(1.0, 3 * got["p_value"]))


@pytest.mark.parametrize("family_size, m", [(None, 1), (0, 1), (2, 2), ("4", 4)])
def test_check_is_holm_adjusted_as_the_strictest_member_of_its_planned_family(family_size, m):
    arms, by_arm, c = _check_study(family_size=family_size)
    got = mach._check(c, "base", "base_rerun", [0, 1], by_arm, arms)
    assert got["family_size"] == m and got["p_adjusted"] == pytest.approx(min(1.0, m * got["p_value"]))
    del c["family_size"], c["lower_is_better"]
    got = mach._check(c, "base", "base_rerun", [0, 1], by_arm, arms)
    assert got["family_size"] == 1 and got["lower_is_better"] is True


def test_check_of_a_comparison_neither_side_learned_stays_not_learned():
    arms, by_arm, c = _check_study(verdict=stats.NOT_LEARNED)
    assert mach._check(c, "base", "base_rerun", [0, 1], by_arm, arms)["verdict"] == stats.NOT_LEARNED
    arms, by_arm, c = _check_study(verdict=stats.WORSE)
    assert mach._check(c, "base", "base_rerun", [0, 1], by_arm, arms)["verdict"] != stats.NOT_LEARNED


def _report(c: Dict[str, Any]) -> Dict[str, Any]:
    other = dict(c, metric="PCK")  # another metric: never checked
    same = dict(c, numerics={"different": 0, "crossing_seeds": []})
    return {"comparisons": {"la": {"final_NME": c, "PCK": other}, "lb": {"final_NME": same}},
            "runs": [c], "arms": {"x": c}, "families": [c], "machines": {"x": c}, "machine_spread": {"x": c},
            "replicates": {"x": c}}


def test_same_machine_checks_redo_the_crossing_final_nme_comparisons():
    arms, by_arm, c = _check_study()
    got = mach.same_machine_checks(_report(c), by_arm, arms, {"base_rerun": "base"})
    assert len(got) == 1
    k = got[0]
    assert list(k) == ["label", "comparison", "arms", "replaced", "replicate", "seeds_substituted", "original", "check"]
    assert (k["label"], k["comparison"], k["arms"], k["replaced"], k["replicate"], k["seeds_substituted"]) == \
        ("same-machine check", "comparisons.la.final_NME", ["la", "base"], "base", "base_rerun", [0, 1])
    assert k["original"] == {key: c[key] for key in ("n", "seeds", "mean_diff", "ci_low", "ci_high", "p_value",
                                                      "p_adjusted", "family_size", "verdict", "numerics",
                                                      "lower_is_better")}
    assert k["check"] == mach._check(c, "base", "base_rerun", [0, 1], by_arm, arms)


def test_same_machine_checks_replace_either_side_and_only_by_its_replicates():
    arms, by_arm, c = _check_study()
    # The replicate of the first side (la): la_rerun shares base's numerics on seeds 1 and 2.
    arms["la_rerun"] = arms["la"]
    by_arm["la_rerun"] = [rec(1, 0.3, fp="f1"), rec(2, 0.3, fp="f1")]
    got = mach.same_machine_checks(_report(c), by_arm, arms, {"la_rerun": "la", "base_rerun": "base"})
    assert [(k["replaced"], k["replicate"], k["seeds_substituted"]) for k in got] == \
        [("la", "la_rerun", [1, 2]), ("base", "base_rerun", [0, 1])]
    # A replicate of another arm, or one sharing numerics on no crossing seed: no check.
    assert mach.same_machine_checks(_report(c), by_arm, arms, {"base_rerun": "zz"}) == []
    by_arm["base_rerun"] = [rec(s, 0.2, fp="f1") for s in range(3)]
    assert mach.same_machine_checks(_report(c), by_arm, arms, {"base_rerun": "base"}) == []


def test_machine_spread_lists_every_replicate_and_the_checks():
    arms, by_arm, c = _check_study()
    arms["base"]["final_NME"] = {"std": 0.01, "n": 4}
    got = mach.machine_spread(_report(c), by_arm, arms, {"base_rerun": "base"})
    assert got == {"replicates": [mach._spread_entry("base_rerun", "base", by_arm, arms)],
                   "checks": mach.same_machine_checks(_report(c), by_arm, arms, {"base_rerun": "base"})}
    assert got["replicates"][0]["arm"] == "base_rerun" and len(got["checks"]) == 1


# ---------------------------------------------------------------------------- the sentence
def _entry(mean: float, n: int = 3, same: int = 2, reproduced: int = 1) -> Dict[str, Any]:
    return {"arm": "rep", "of": "orig", "per_seed": [{}] * 4, "seed_std": 0.0123, "seed_std_n": 5,
            "same_numerics": same, "reproduced": reproduced,
            "diff": {"n": n, "mean": mean, "ci_low": mean - 0.001, "ci_high": mean + 0.002}}


@pytest.mark.parametrize("mean, how", [
    (0.0025, "end 0.0025 higher on average (95% CI [+0.0015, +0.0045], n=3)"),
    (-0.0025, "end 0.0025 lower on average (95% CI [-0.0035, -0.0005], n=3)"),
    (0.0, "end exactly where orig's did on average (95% CI [-0.0010, +0.0020], n=3)"),
])
def test_spread_sentence(mean, how):
    assert mach.spread_sentence(_entry(mean)) == (
        f"Machine-to-machine spread: rep reruns orig's config; the same runs on the replicate's machine {how}, "
        "against a seed std of orig of 0.0123 (n=5); numerics equal on 2 of 4 seeds (1 of them end bitwise equal, "
        "as they must).")


def test_spread_sentence_without_pairs_or_shared_numerics():
    assert mach.spread_sentence(_entry(0.0, n=0)) is None
    assert mach.spread_sentence(_entry(0.001, same=0, reproduced=0)).endswith("numerics equal on 0 of 4 seeds.")
