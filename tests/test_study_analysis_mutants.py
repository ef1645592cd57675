"""Fast tests of the study's comparison families and trend (``hrnet/study/analyse/comparisons.py``,
``trend.py``), written against mutmut's survivors: the seeds two arms plan, the machines and numerics
each comparison names, a family's planned size and ``provisional``, the trend change's machines, and
the boundaries of the trend's words. Hand-made records only (no run folders)."""
from __future__ import annotations

import math

import pytest
from scipy.stats import ttest_rel

from test_study_analysis import _len_arm, _records

from hrnet.study.analyse import stats

UNTRAINED = {"MODEL.NAME": "hrnet_w18_small", "DATASET.ROOT": "data"}  # the settings that reach epoch 0


def _rec(seed, nme, cpu=None, flags=None, fingerprint=None, e0=None, status="finished"):
    """A run record: final NME ``nme``; its machine (``cpu``, ``flags``, ``fingerprint``) and its
    untrained NME ``e0`` where given."""
    r = {"seed": seed, "status": status, "final_NME": nme}
    if cpu is not None:
        r["machine"] = {"cpu": cpu, "cpu_flags": flags, **({"numerics": fingerprint} if fingerprint else {})}
    if e0 is not None:
        r["curves"] = {"epoch": [0, 3], "NME": [e0, nme]}
    return r


# ---------------------------------------------------------------------------- planned pairs, machine names
@pytest.mark.parametrize("a, b, expected", [
    ("x", "y", 2), ("y", "x", 2), ("x", "x", 3),
    ("x", "none", None), ("none", "x", None),      # an entry without a seed list
    ("x", "missing", None), ("missing", "x", None),  # no entry at all
])
def test_planned_pairs_are_the_seeds_both_arms_plan(a, b, expected):
    from hrnet.study.analyse.comparisons import planned_pairs

    arms = {"x": {"seeds": [0, 1, 2]}, "y": {"seeds": [1, 2, 5]}, "none": {"learned": True}}
    assert planned_pairs(arms, a, b) == expected


@pytest.mark.parametrize("rec, name", [
    ({}, "not recorded"), ({"machine": None}, "not recorded"), ({"machine": {"cpu": ""}}, "not recorded"),
    ({"machine": {"cpu_flags": ["avx2"]}}, "not recorded"),
    ({"machine": {"cpu": "Xeon"}}, "Xeon"), ({"machine": {"cpu": "Xeon", "cpu_flags": None}}, "Xeon"),
    ({"machine": {"cpu": "Xeon", "cpu_flags": []}}, "Xeon"),
    ({"machine": {"cpu": "Xeon", "cpu_flags": ["avx512f", "amx_tile"]}}, "Xeon (amx_tile, avx512f)"),
])
def test_machine_name_is_the_cpu_and_its_sorted_flags(rec, name):
    from hrnet.study.analyse.comparisons import _machine_name

    assert _machine_name(rec) == name


# ---------------------------------------------------------------------------- machines of a comparison
def _machine_runs():
    """Seed 0: fingerprints differ (different numerics); seed 1: no fingerprint, equal untrained NME
    (same numerics where the arms are comparable); seed 2 of a unfinished; seed 3 outside the seeds."""
    return {"a": [_rec(0, 0.2, "Xeon", ["b", "a"], "f1"), _rec(1, 0.2, "Epyc", e0=0.5),
                  _rec(2, 0.2, "Arm", status="partial"), _rec(3, 0.2, "Sparc")],
            "b": [_rec(0, 0.3, "Xeon", fingerprint="f2"), _rec(1, 0.3, "Epyc", e0=0.5), _rec(2, 0.3, "Xeon"),
                  _rec(3, 0.3, "Sparc")]}


def test_machines_name_the_finished_runs_at_the_seeds_and_their_numerics():
    from hrnet.study.analyse.comparisons import machines

    by_arm = _machine_runs()
    arms = {"a": {"setting": dict(UNTRAINED, **{"TRAIN.LR": 0.1})}, "b": {"setting": dict(UNTRAINED)}}
    got = machines(by_arm, "a", "b", [0, 1, 2], arms)
    assert got == {"machines": ["Epyc", "Xeon", "Xeon (a, b)"],
                   "numerics": {"pairs": 2, "same": 1, "different": 1, "unknown": 0, "crossing_seeds": [0],
                                "basis": "fingerprint and epoch-0 NME"},
                   "mixed_machines": True}
    # Without the arms' settings the untrained NME cannot decide: seed 1 is unknown.
    assert machines(by_arm, "a", "b", [0, 1, 2])["numerics"] == {
        "pairs": 2, "same": 0, "different": 1, "unknown": 1, "crossing_seeds": [0], "basis": "fingerprint"}
    one = machines(by_arm, "a", "b", [1], arms)  # one seed, same numerics: not mixed
    assert one["machines"] == ["Epyc"] and one["mixed_machines"] is False and one["numerics"]["same"] == 1
    assert machines(by_arm, "b", "gone", [2], arms) == {
        "machines": ["Xeon"], "mixed_machines": False,
        "numerics": {"pairs": 0, "same": 0, "different": 0, "unknown": 0, "crossing_seeds": [], "basis": None}}


# ---------------------------------------------------------------------------- one family fixed by the plan
def _family_runs():
    """ref and a on seeds 0-2 (seed 2's untrained NME differs: other numerics); b finished seed 0 only."""
    ref = [_rec(s, v, "Xeon", e0=0.5) for s, v in enumerate((0.30, 0.32, 0.33))]
    a = [_rec(0, 0.27, "Xeon", e0=0.5), _rec(1, 0.30, "Xeon", e0=0.5), _rec(2, 0.305, "Xeon", e0=0.51)]
    b = [_rec(0, 0.31, "Xeon", e0=0.5), _rec(1, 0.2, "Xeon", e0=0.5, status="partial")]
    arms = {n: {"seeds": [0, 1, 2], "setting": dict(UNTRAINED)} for n in ("ref", "a", "b")}
    return {"ref": ref, "a": a, "b": b}, arms


def test_compare_family_is_sized_by_the_plan_and_names_its_machines():
    from hrnet.study.analyse.comparisons import compare_family

    by_arm, arms = _family_runs()
    out = compare_family(by_arm, arms, {"a": ("a", "ref"), "b": ("b", "ref")})
    a, b = out["a"], out["b"]
    p = ttest_rel([0.27, 0.30, 0.305], [0.30, 0.32, 0.33]).pvalue
    # b has one pair (no p-value): it still counts in the family of 2, as p = 1.
    assert (a["n"], a["family_size"], b["n"], b["family_size"]) == (3, 2, 1, 2)
    assert a["p_adjusted"] == pytest.approx(min(1.0, 2 * p)) and math.isnan(b["p_adjusted"])
    assert a["provisional"] is True and b["provisional"] is True  # b has 1 of its 3 planned pairs
    assert (a["arms"], a["metric"], b["arms"], b["metric"]) == (["a", "ref"], "final_NME", ["b", "ref"], "final_NME")
    assert a["machines"] == ["Xeon"] and a["mixed_machines"] is True
    assert a["numerics"] == {"pairs": 3, "same": 2, "different": 1, "unknown": 0, "crossing_seeds": [2],
                             "basis": "epoch-0 NME"}
    assert b["numerics"]["pairs"] == 1 and b["numerics"]["same"] == 1 and b["mixed_machines"] is False
    # Every planned pair measured: not provisional; without seed lists nothing is planned, so a member
    # without any run does not make the family provisional either.
    assert compare_family(by_arm, arms, {"a": ("a", "ref")})["a"]["provisional"] is False
    bare = {n: {"setting": dict(UNTRAINED)} for n in ("ref", "a", "c")}
    out = compare_family(dict(by_arm, c=[]), bare, {"a": ("a", "ref"), "c": ("c", "ref")})
    assert out["a"]["provisional"] is False and out["c"]["n"] == 0 and out["c"]["machines"] == []


def test_vs_reference_labels_each_comparison_with_its_family():
    from hrnet.study.analyse.comparisons import vs_reference

    by_arm, arms = _family_runs()
    default = vs_reference("ref", by_arm, arms)
    assert {(a, k, c["family"]) for a, m in default.items() for k, c in m.items()} == {
        (a, k, "all") for a in ("a", "b") for k in ("final_NME", "final_valid_loss", "PCK", "AUC")}
    split = vs_reference("ref", by_arm, arms, {"mine": ["a"], "theirs": ["b"]})
    assert split["a"]["final_NME"]["family"] == "mine" and split["b"]["PCK"]["family"] == "theirs"
    assert split["a"]["final_NME"]["family_size"] == 1 and split["b"]["final_NME"]["family_size"] == 1


def test_slow_fast_without_any_recorded_eval_weights():
    from hrnet.study.analyse.comparisons import lookahead_slow_fast

    runs = [{"seed": s, "status": "finished", "hparams": {"optimizer": "lookahead"}, "eval_weights": None,
             "curves": {"epoch": [0, 1], "NME_slow": [0.9, 0.3 + s / 100], "NME_fast": [0.9, 0.31 + s / 100]}}
            for s in range(3)]
    out = lookahead_slow_fast({"la": runs}, {"la": {"learned": True}})
    assert out["la"]["logged"] is True and out["la"]["eval_weights"] is None


# ---------------------------------------------------------------------------- the trend's words and ends
@pytest.mark.parametrize("verdict, short, long, word", [
    (stats.BETTER, None, 0.01, stats.TOO_FEW), (stats.BETTER, 0.01, None, stats.TOO_FEW),
    (stats.WORSE, 0.01, 0.0, "shrinks"),      # a gap closed to 0 is no sign change
    (stats.WORSE, 0.0, 0.01, "grows"),
    (stats.WORSE, 0.02, 0.02, "shrinks"),     # a detectable change between gaps of one size is no growth
    (stats.BETTER, -0.02, 0.02, "changes sign"),
])
def test_change_word_at_its_boundaries(verdict, short, long, word):
    from hrnet.study.analyse.trend import _change_word

    assert _change_word({"verdict": verdict}, short, long) == word


@pytest.mark.parametrize("low, high, word", [
    (-0.25, 0.25, "holds (no detectable change)"),  # the interval exactly as wide as the shorter gap
    (-0.25, 0.2501, "not measurable at this n"),
    (-0.1, 0.1, "holds (no detectable change)"),
])
def test_no_detectable_change_holds_only_within_the_shorter_gap(low, high, word):
    from hrnet.study.analyse.trend import _change_word

    assert _change_word({"verdict": stats.NO_DIFFERENCE, "ci_low": low, "ci_high": high}, -0.5, 0.3) == word


def test_learned_ends_skip_lengths_where_either_arm_has_not_learned():
    from hrnet.study.analyse.trend import _learned_ends

    line = [("la_e6", "adam_e6"), ("la_e12", "adam_e12"), ("la", "adam")]
    arms = {n: {"learned": True} for pair in line for n in pair}
    assert _learned_ends(line, arms) == (line[0], line[2])
    arms["adam_e6"]["learned"] = None  # unknown counts as learned
    assert _learned_ends(line, arms) == (line[0], line[2])
    arms["adam_e6"]["learned"] = False  # the base arm alone has not learned: that length is out
    assert _learned_ends(line, arms) == (line[1], line[2])
    arms["la"]["learned"] = False
    assert _learned_ends(line, arms) is None


# ---------------------------------------------------------------------------- the trend: provisional, machines
def _trend_case():
    """LR 1e-4 at 6, 12 and 30 epochs (seeds 0-3 planned; la_e12 lacks seed 3: provisional), Adam at
    12 epochs not learned; la's seed 1 (30 epochs) on a machine of another fingerprint, the other seeds
    compared by their untrained NME. LR 1e-3: Lookahead never learned."""
    arms, by_arm = {}, {}
    base = [0.30, 0.31, 0.32, 0.33]
    gap = {6: (0.021, 0.019, 0.022, 0.020), 12: (0.012, 0.010, 0.011, 0.013), 30: (0.005, 0.006, 0.004, 0.007)}
    for lr, tag, la_learned in ((1e-4, "", True), (1e-3, "_lr1e-3", False)):
        for epochs in (6, 12, 30):
            suffix = tag + ("" if epochs == 30 else f"_e{epochs}")
            arms[f"adam{suffix}"] = dict(_len_arm("adam", lr, epochs, learned=not (epochs == 12 and not tag)),
                                         seeds=[0, 1, 2, 3])
            arms[f"la{suffix}"] = dict(_len_arm("lookahead(adam)", lr, epochs, la_learned), seeds=[0, 1, 2, 3])
            seeds = range(3) if suffix == "_e12" else range(4)
            by_arm[f"adam{suffix}"] = [_on_xeon(r, "f") for r in _records({s: base[s] for s in seeds})]
            by_arm[f"la{suffix}"] = [_on_xeon(r, "g" if suffix == "" else "f")
                                     for r in _records({s: base[s] + gap[epochs][s] for s in seeds})]
    return arms, by_arm


def _on_xeon(r, fingerprint):
    """Seed 1 records a numerics fingerprint; the other seeds only their (equal) untrained NME."""
    machine = {"cpu": "Xeon", **({"numerics": fingerprint} if r["seed"] == 1 else {})}
    return dict(r, machine=machine, curves={"epoch": [0, 3], "NME": [0.5, r["final_NME"]]})


def test_trend_change_is_provisional_and_names_its_machines():
    from hrnet.study.analyse.trend import FEWER_LEARNED, SHRINKS, trend

    arms, by_arm = _trend_case()
    got = trend(by_arm, arms, "adam", 250)
    assert got["provisional"] is True and got["family_size"] == 6
    ref, other = got["lines"]
    c = ref["change"]
    assert (c["shortest"], c["longest"], c["trend"]) == ("la_e6", "la", SHRINKS)  # 12 epochs: Adam did not learn
    assert c["provisional"] is True and c["machines"] == ["Xeon"] and c["mixed_machines"] is True
    assert c["numerics"] == {"pairs": 8, "same": 7, "different": 1, "unknown": 0, "crossing_seeds": [1],
                             "basis": "fingerprint and epoch-0 NME"}
    assert [p["both_learned"] for p in ref["points"]] == [True, False, True]
    o = other["change"]
    assert o["trend"] == FEWER_LEARNED and o["n"] == 0 and o["provisional"] is True
    assert o["machines"] == [] and o["mixed_machines"] is False and o["numerics"]["pairs"] == 0
    # Every planned seed finished: no longer provisional.
    arms = {n: dict(e, seeds=[0, 1, 2]) if n.startswith(("la_e12", "adam_e12")) else e for n, e in arms.items()}
    done = trend(by_arm, arms, "adam", 250)
    assert done["provisional"] is False and done["lines"][0]["change"]["provisional"] is False


# ---------------------------------------------------------------------------- report walk, file hash
def test_walk_dicts_yields_every_dict_holding_the_keys_with_its_path():
    from hrnet.study.analyse.comparisons import walk_dicts

    inner = {"a": 1, "b": 2}
    report = {"x": {"a": 0, "b": 1, "y": [inner, {"a": 1}, [{"a": 2, "b": 3}]]}, "z": 3, "w": {"b": 0}}
    got = list(walk_dicts(report, ("a", "b")))
    assert got == [("x", report["x"]), ("x.y[0]", inner), ("x.y[2][0]", {"a": 2, "b": 3})]
    assert got[1][1] is inner  # the report's own dicts: callers mark them in place
    assert [p for p, _ in walk_dicts(report, ("b",))] == ["x", "x.y[0]", "x.y[2][0]", "w"]
    assert list(walk_dicts([{"a": 1}], ("a",), "top")) == [("top[0]", {"a": 1})]
    assert list(walk_dicts({"a": 1}, ())) == [("", {"a": 1})] and list(walk_dicts(5, ("a",))) == []


@pytest.mark.parametrize("size", [0, 1, (1 << 20) + 3])
def test_file_sha256_is_the_hash_of_the_whole_content(tmp_path, size):
    import hashlib

    from hrnet.study.analyse.floors import file_sha256

    data = (bytes(range(251)) * (size // 251 + 1))[:size]  # spans several read blocks
    (tmp_path / "f").write_bytes(data)
    assert file_sha256(str(tmp_path / "f")) == hashlib.sha256(data).hexdigest()
