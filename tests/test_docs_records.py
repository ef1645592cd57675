"""The committed study records (docs/): no machine's paths, every committed run counts for its arm
under the study file that made it, and the report can be rebuilt from them on a machine without the photos."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

from conftest import ROOT

STUDY = os.path.join(ROOT, "experiments", "studies", "optimizers_cpu.yaml")
RECORDS = os.path.join(ROOT, "docs", "study_cpu")
#: An absolute path of a machine: a home, temporary or work folder (POSIX) or a drive (Windows).
MACHINE_PATH = re.compile(rb"(?<![\w.~-])/(?:work|tmp|root|home|Users|mnt|scratch|private|var/folders)/|"
                          rb"\b[A-Za-z]:\\\\?(?:Users|work)")


def _docs_files():
    """The files under docs/ the repository holds (git ls-files; every file under docs/ without git)."""
    try:
        out = subprocess.run(["git", "-C", ROOT, "ls-files", "docs"], capture_output=True, text=True, check=True,
                             timeout=60).stdout.split("\n")
        files = [f for f in out if f]
    except (OSError, subprocess.SubprocessError):
        files = []
    if not files:
        files = [os.path.relpath(os.path.join(d, f), ROOT) for d, _, fs in os.walk(os.path.join(ROOT, "docs"))
                 for f in fs]
    return files


def test_no_committed_file_under_docs_holds_a_machine_path():
    files = _docs_files()
    assert any(f.endswith("config.yaml") for f in files)
    bad = []
    for f in files:
        path = os.path.join(ROOT, f)
        if not os.path.isfile(path):  # deleted in the working tree, not yet committed
            continue
        with open(path, "rb") as fh:
            m = MACHINE_PATH.search(fh.read())
        if m:
            bad.append(f"{f}: {m.group(0).decode(errors='replace')}")
    assert not bad, f"{len(bad)} file(s) name a machine's folder, e.g. {bad[:3]}"


def test_the_pattern_finds_machine_paths():
    for text in (b"OUTPUT_DIR: /work/main/docs", b'"python /tmp/study_wt/tools/train.py"', b"/root/.pyenv/bin/python",
                 b"/home/me/x", b"C:\\Users\\me"):
        assert MACHINE_PATH.search(text), text
    for text in (b"OUTPUT_DIR: docs/study_cpu/runs", b"python tools/train.py --cfg experiments/hand_adam.yaml",
                 b"datasets/tmp/x", b"a/work/b"):
        assert not MACHINE_PATH.search(text), text


def test_every_committed_run_counts_for_its_arm():
    """Each committed run folder is a planned run of optimizers_cpu.yaml whose stored config is the
    planned one (hrnet/study/plan/identity.py), so it counts as finished."""
    from hrnet.study.plan.runs import run_status
    from hrnet.study.plan.spec import load_study, plan_runs

    runs = {r.name: r for r in plan_runs(load_study(STUDY), RECORDS)}
    committed = sorted(d for d in os.listdir(os.path.join(RECORDS, "runs")))
    assert len(committed) >= 34 and not [d for d in committed if d not in runs]
    statuses = {d: run_status(runs[d]) for d in committed}
    assert {d: s for d, s in statuses.items() if s != ("finished", "")} == {}


def test_real_photo_results_from_the_committed_records_without_the_photos(tmp_path):
    """A copy of the study folder and a study file whose photo folder does not exist (a fresh clone):
    the real-photo section comes from each run's committed real_hands.json, labelled as such."""
    from hrnet.study.analyse.analysis import analyse, collect
    from hrnet.study.analyse.real_photos import FROM_RECORDS
    from hrnet.study.plan.spec import load_study
    from hrnet.runtime.checkpoint import jsonable
    from hrnet.study.render.report import render_markdown

    out = tmp_path / "study_cpu"
    shutil.copytree(RECORDS, out, ignore=shutil.ignore_patterns("*.png"))
    text = open(STUDY).read().replace("config: ../", f"config: {ROOT}/experiments/")
    text = re.sub(r"(?m)^real_hands: .*$", f"real_hands: {tmp_path / 'no_photos_here'}", text)
    text = re.sub(r"(?m)^out: .*$", "out: study_cpu", text)
    (tmp_path / "study.yaml").write_text(text)
    study = load_study(str(tmp_path / "study.yaml"))
    assert not os.path.exists(study.real_hands)
    rep = analyse(study, collect(study, str(out)), str(out))
    rh = rep["real_hands"]
    assert rh["available"] and rh["source"] == FROM_RECORDS and rh["errors"] == {}
    committed = json.load(open(os.path.join(RECORDS, "report.json")))["real_hands"]
    assert rh["sets"] == committed["sets"]
    for arm, values in committed["per_arm"].items():
        assert jsonable(rh["per_arm"][arm]) == values, arm  # as report.json holds it (NaN: null)
    for run in rep["runs"]:
        if run["status"] == "finished":
            with open(os.path.join(RECORDS, "runs", run["name"], "real_hands.json")) as f:
                assert run["real_hands"] == json.load(f)["results"], run["name"]
    assert f"({FROM_RECORDS})" in render_markdown(rep, [])
    # --no-real-hands: nothing is read from the caches either.
    none = load_study(str(tmp_path / "study.yaml"), real_hands="")
    assert not analyse(none, collect(none, str(out), evaluate_real=False), str(out))["real_hands"]["available"]


def test_the_readmes_answer_quotes_the_committed_report():
    """Every number the README's Lookahead section sets in bold is in the committed report.md, as the
    report writes it: the README quotes the report, never an older run of it."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text[text.index('## "Did I use Lookahead wrongly?"'):]
    section = section[:section.index("\n## ", 3)]
    quoted = re.findall(r"\*\*([+-]?\d+\.\d+)\*\*", section)
    report = open(os.path.join(RECORDS, "report.md"), encoding="utf-8").read()
    assert len(quoted) >= 10, "the section's numbers are no longer bold"
    assert not [q for q in quoted if q not in report], "README quotes numbers report.md does not hold"
