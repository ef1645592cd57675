"""Invariants of the study's analysis on generated inputs (hypothesis), each property in a few seconds:
the trend's wording under negated gaps, a report that does not depend on the order the runs are
read in, and the real-photo cache key against every input of the evaluation."""
from __future__ import annotations

import glob
import json
import os

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from conftest import make_cfg, write_planned_configs
from test_study_analysis import ADAM, LA, _len_arm, _records, _run, _study

from hrnet.study.analyse import stats

FAST = settings(max_examples=30, deadline=None)
SLOW = settings(max_examples=5, deadline=None)  # a whole study's analysis per example
SWAP = {stats.BETTER: stats.WORSE, stats.WORSE: stats.BETTER}
DIRECTION = {"against Lookahead": "in Lookahead's favour", "in Lookahead's favour": "against Lookahead", None: None}


# ---------------------------------------------------------------------------- the trend under negated gaps
# Dyadic values: base + gap - base is exactly gap, so a gap and its negation give exactly negated
# differences (the same p-values): the property holds exactly, with no rounding near p = 0.05.
_dyadic = st.integers(-80, 80).map(lambda i: i / 1024.0)
_noise = st.integers(-2, 2).map(lambda i: i / 1024.0)


@st.composite
def _two_lengths(draw):
    """Per-seed gaps Lookahead(Adam) - Adam at a short and a long length, on 2 to 6 seeds: a gap per
    length plus a little per-seed noise (so that many changes are detectable, some not)."""
    n = draw(st.integers(2, 6))
    short, long = draw(_dyadic), draw(_dyadic)
    return ([draw(st.integers(200, 400)) / 1024.0 for _ in range(n)],
            [short + draw(_noise) for _ in range(n)], [long + draw(_noise) for _ in range(n)])


def _trend_line(base, short, long, sign):
    from hrnet.study.analyse.trend import trend

    arms, by_arm = {}, {}
    for epochs, gaps in ((6, short), (30, long)):
        suffix = "" if epochs == 30 else "_e6"
        arms[f"adam{suffix}"] = _len_arm("adam", 1e-4, epochs)
        arms[f"la{suffix}"] = _len_arm("lookahead(adam)", 1e-4, epochs)
        by_arm[f"adam{suffix}"] = _records(dict(enumerate(base)))
        by_arm[f"la{suffix}"] = _records({s: b + sign * g for s, (b, g) in enumerate(zip(base, gaps))})
    (line,) = trend(by_arm, arms, "adam", 250)["lines"]
    return line


@FAST
@given(_two_lengths())
def test_trend_wording_is_symmetric_under_negated_gaps(case):
    """Negating every gap swaps better <-> worse (points and change) and the change's direction, and
    keeps grows / shrinks / holds: the gap's size, not its sign, decides the word."""
    from hrnet.study.analyse.trend import GROWS, REVERSES, SHRINKS

    line, neg = _trend_line(*case, 1), _trend_line(*case, -1)
    for p, q in zip(line["points"], neg["points"]):
        assert q["comparison"]["verdict"] == SWAP.get(p["comparison"]["verdict"], p["comparison"]["verdict"])
    c, d = line["change"], neg["change"]
    assert d["trend"] == c["trend"] and d["direction"] == DIRECTION[c["direction"]]
    assert d["verdict"] == SWAP.get(c["verdict"], c["verdict"])
    if c["gap_shortest"] is not None:
        assert (d["gap_shortest"], d["gap_longest"]) == (-c["gap_shortest"], -c["gap_longest"])
    # Consistent wording: grows means a larger gap at the longer length, and the direction follows the change.
    if c["trend"] in (GROWS, SHRINKS, REVERSES):
        assert (c["gap_shortest"] * c["gap_longest"] < 0) == (c["trend"] == REVERSES)
        if c["trend"] != REVERSES:
            assert (abs(c["gap_longest"]) > abs(c["gap_shortest"])) == (c["trend"] == GROWS)
        assert (c["direction"] == "against Lookahead") == (c["mean_diff"] > 0)
    else:
        assert c["direction"] is None


# ---------------------------------------------------------------------------- the report against the run order
@pytest.fixture(scope="module")
def hand_study(tmp_path_factory):
    """Three arms x 4 seeds with a partial, a failed and a missing run; the folder to analyse it in."""
    tmp = tmp_path_factory.mktemp("order")
    here = os.getcwd()
    os.chdir(tmp)
    try:
        study = _study(tmp, [("adam", "hand_adam.yaml", {}), ("sgd", "hand_sgd_lr0.01.yaml", {}),
                             ("la", "hand_lookahead_adam.yaml", {})], seeds=(0, 1, 2, 3))
        sgd = {"optimizer": "sgd", "inner": "sgd", "lr": 0.01, "batch": 32, "wd": 0.0, "epochs": 3}
        out = tmp / "out"
        for s in range(4):
            _run(out, "adam", s, 0.30 + 0.011 * s, ADAM)
            _run(out, "la", s, 0.25 + 0.013 * s * s, LA, status="interrupted" if s == 1 else "finished")
            if s != 2:
                _run(out, "sgd", s, 0.38 - 0.007 * s, sgd)
        with open(out / "runs" / "la_seed1" / "study_sessions.json", "w") as f:
            json.dump([{"exit_status": 1}], f)
        write_planned_configs(study, out)  # each with its config.yaml, as the trainer leaves it
    finally:
        os.chdir(here)
    return tmp, study, str(out)


def _canonical(report):
    """The report as a JSON-ready dict, less its time stamp, with the run records ordered by name."""
    rep = dict(report, study={k: v for k, v in report["study"].items() if k != "generated"},
               runs=sorted(report["runs"], key=lambda r: r["name"]))
    return json.loads(json.dumps(rep, sort_keys=True, default=str))


def _differences(a, b, path=""):
    """The paths at which two JSON values differ (NaN equal to NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{path}/{k}")]
    return [] if json.dumps(a) == json.dumps(b) else [f"{path}: {json.dumps(a)[:60]} vs {json.dumps(b)[:60]}"]


@pytest.fixture(scope="module")
def reference_report(hand_study):
    from hrnet.study.analyse.analysis import analyse, collect

    tmp, study, out = hand_study
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        return _canonical(analyse(study, collect(study, out), out))


NO_SHRINK = settings(SLOW, phases=(Phase.explicit, Phase.reuse, Phase.generate))  # one analysis ~1 s: no shrinking


@NO_SHRINK
@given(st.randoms(use_true_random=False))
def test_the_analysis_does_not_depend_on_the_order_of_the_run_folders(hand_study, reference_report, rnd):
    """The folder listings in any order while the runs are read (os.listdir, glob): the same report.
    ``collect`` reads the folders the plan names and lists none today, so this guards against a
    listing creeping in (the records' order is the next test's)."""
    from hrnet.study.analyse.analysis import analyse, collect

    tmp, study, out = hand_study
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        listdir, glob_ = os.listdir, glob.glob
        mp.setattr(os, "listdir", lambda p=".": rnd.sample(listdir(p), len(listdir(p))))
        mp.setattr(glob, "glob", lambda *a, **k: rnd.sample(glob_(*a, **k), len(glob_(*a, **k))))
        got = _canonical(analyse(study, collect(study, out), out))
    assert not _differences(reference_report, got), _differences(reference_report, got)


@NO_SHRINK
@given(st.randoms(use_true_random=False))
def test_the_analysis_does_not_depend_on_the_order_of_the_run_records(hand_study, reference_report, rnd):
    """``analyse`` given the run records in any order writes the same report (its per-seed lists
    in seed order, an arm's settings not those of whichever run came first)."""
    from hrnet.study.analyse.analysis import analyse, collect

    tmp, study, out = hand_study
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        records = collect(study, out)
        rnd.shuffle(records)
        diffs = _differences(reference_report, _canonical(analyse(study, records, out)))
    assert not diffs, "BUG (hrnet/study/analyse): the report depends on the order of the run records: " + "; ".join(
        diffs)


# ---------------------------------------------------------------------------- the real-photo cache key
#: Every config input of a real-photo evaluation, with values to change it to (the first is the default's kind).
EVALUATED = {
    "MODEL.IMAGE_SIZE": st.lists(st.integers(32, 512), min_size=2, max_size=2),
    "MODEL.HEATMAP_SIZE": st.lists(st.integers(8, 128), min_size=2, max_size=2),
    "DATASET.BBOX_PADDING": st.floats(1.0, 2.0),
    "TEST.DECODE": st.sampled_from(["argmax", "dark"]),
    "TEST.FLIP_TEST": st.booleans(),
    "AMP.MODE": st.sampled_from(["off", "on", "auto"]),
    "TEST.FAILURE_THRESHOLD": st.floats(0.01, 0.5),
    "TEST.PCK_THRESHOLD": st.floats(0.01, 0.5),
    "TEST.AUC_MAX_PX": st.floats(1.0, 60.0),
    "TRAIN.LOOKAHEAD.EVAL_WEIGHTS": st.sampled_from(["slow", "fast"]),
}
#: Inputs that do not change what is evaluated (training settings, where the photos lie).
IGNORED = {"TRAIN.LR": st.floats(1e-5, 1e-1), "SEED": st.integers(0, 100), "TRAIN.END_EPOCH": st.integers(1, 99)}


def _set(cfg, key, value):
    *path, leaf = key.split(".")
    for p in path:
        cfg = getattr(cfg, p)
    setattr(cfg, leaf, value)


@pytest.fixture(scope="module")
def photo_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    sets = {}
    for name in ("freihand", "onehand10k"):
        (root / name).mkdir()
        (root / name / "ann.json").write_bytes(b'{"images": [], "annotations": []}')
        sets[name] = (str(root / name), "ann.json")
    return sets


@FAST
@given(values=st.fixed_dictionaries(EVALUATED), ignored=st.fixed_dictionaries(IGNORED))
def test_cache_key_changes_with_every_evaluated_setting(photo_sets, values, ignored):
    """Each evaluated setting changed alone changes the key exactly when its value differs; the
    training-only settings, changed with it, never do."""
    from configs import config_value
    from hrnet.study.analyse.real_photos import cache_key

    base = make_cfg(None, freeze=False)
    key = cache_key(base, photo_sets, "m")
    for name, value in [(None, None)] + list(values.items()):
        cfg = base.clone()
        for k, v in ignored.items():
            _set(cfg, k, v)
        if name is not None:
            _set(cfg, name, value)
        changed = name is not None and config_value(base, name, None) != value
        assert (cache_key(cfg, photo_sets, "m") != key) == changed, (name, value, ignored)


@FAST
@given(model=st.text(min_size=1, max_size=8), content=st.binary(max_size=40), drop=st.booleans(),
       rename=st.booleans(), moved=st.booleans())
def test_cache_key_changes_with_the_model_and_the_annotations(photo_sets, tmp_path_factory, model, content, drop,
                                                              rename, moved):
    """Another model file, other annotation bytes, a set dropped or renamed change the key; the
    photos moved to another folder (same names, same bytes) do not (no machine path in the key)."""
    from hrnet.study.analyse.real_photos import cache_key

    cfg = make_cfg(None)
    key = cache_key(cfg, photo_sets, "m")
    assert (cache_key(cfg, photo_sets, model) != key) == (model != "m")
    original = b'{"images": [], "annotations": []}'
    path = os.path.join(*photo_sets["freihand"])
    try:
        with open(path, "wb") as f:
            f.write(content)
        assert (cache_key(cfg, photo_sets, "m") != key) == (content != original)
    finally:
        with open(path, "wb") as f:
            f.write(original)
    sets = dict(photo_sets)
    if drop:
        del sets["onehand10k"]
    if rename:
        sets["freihand2"] = sets.pop("freihand")
    assert (cache_key(cfg, sets, "m") != key) == (drop or rename)
    if moved:
        elsewhere = tmp_path_factory.mktemp("moved")
        for name, (folder, ann) in photo_sets.items():
            os.makedirs(elsewhere / name, exist_ok=True)
            (elsewhere / name / ann).write_bytes(original)
        assert cache_key(cfg, {n: (str(elsewhere / n), a) for n, (_, a) in photo_sets.items()}, "m") == key
