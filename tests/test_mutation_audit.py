"""tools/mutation_audit.py: plants hand-written mutants in a copy of a tiny tree (no real test suite)."""
from __future__ import annotations

import json
import os
import sys
from typing import List

import pytest

from tools import mutation_audit as ma

# A stand-in for pytest (its start-up costs seconds here): the "test" is a script that exits 1 on a failure.
CHECK = [sys.executable, "check.py"]


def make_tree(root) -> None:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("def add(a, b):\n    return a + b\n\n\ndef unused(a):\n    return a * 2\n")
    (root / "check.py").write_text("import sys\nfrom pkg.mod import add\nsys.exit(0 if add(2, 3) == 5 else 1)\n")


def write_mutants(path, mutants: List[dict]) -> str:
    full = [dict({"why": "test", "tests": ["check.py"]}, **m) for m in mutants]
    path.write_text(json.dumps(full))
    return str(path)


def test_caught_and_survived_and_the_tree_is_left_alone(tmp_path, capsys):
    root = tmp_path / "repo"
    make_tree(root)
    spec = write_mutants(tmp_path / "round.json", [
        {"id": "plus-minus", "file": "pkg/mod.py", "old": "a + b", "new": "a - b"},
        {"id": "untested", "file": "pkg/mod.py", "old": "a * 2", "new": "a * 3"},
    ])
    # The "test" takes its own command line, so the test selection is not passed on: CHECK only.
    assert ma.main([spec, "--timeout", "30"], root=str(root), command=CHECK) == 0
    out = capsys.readouterr().out
    assert "caught" in out.splitlines()[1] and "plus-minus" in out.splitlines()[1]
    assert "survived" in out.splitlines()[2] and "untested" in out.splitlines()[2]
    assert "caught 1 / 2 (50.0%; 0 by time-out), survived 1" in out
    results = json.loads((tmp_path / "round_results.json").read_text())
    assert [(r["id"], r["status"]) for r in results["results"]] == [("plus-minus", "caught"), ("untested", "survived")]
    assert (results["total"], results["caught"], results["score_pct"]) == (2, 1, 50.0)
    assert (root / "pkg" / "mod.py").read_text().count("a + b") == 1  # the checkout is never planted
    assert [p for p in os.listdir(tmp_path) if p.startswith(".mutation_audit_")] == []  # the copy is removed


def test_only_and_a_timeout_counts_as_caught(tmp_path, capsys):
    root = tmp_path / "repo"
    make_tree(root)
    spec = write_mutants(tmp_path / "r.json", [
        {"id": "hang", "file": "pkg/mod.py", "old": "return a + b", "new": "while True: pass"},
        {"id": "other", "file": "pkg/mod.py", "old": "a * 2", "new": "a * 3"},
    ])
    assert ma.main([spec, "--only", "hang", "--timeout", "0.5", "--no-baseline"], root=str(root), command=CHECK) == 0
    results = json.loads((tmp_path / "r_results.json").read_text())
    assert [(r["id"], r["status"]) for r in results["results"]] == [("hang", "timeout")]
    assert (results["caught"], results["timeouts"]) == (1, 1)


@pytest.mark.parametrize("old, message", [
    ("a / b", "error: mutant bad: 'old' occurs 0 times in pkg/mod.py (needs exactly 1)"),
    ("a", "error: mutant bad: 'old' occurs 5 times in pkg/mod.py (needs exactly 1)"),
])
def test_refuses_an_old_not_found_exactly_once(tmp_path, capsys, old, message):
    root = tmp_path / "repo"
    make_tree(root)
    spec = write_mutants(tmp_path / "r.json", [
        {"id": "fine", "file": "pkg/mod.py", "old": "a + b", "new": "a - b"},
        {"id": "bad", "file": "pkg/mod.py", "old": old, "new": "x"},
    ])
    assert ma.main([spec], root=str(root), command=CHECK) == 2
    assert capsys.readouterr().err.strip() == message
    assert not (tmp_path / "r_results.json").exists()  # refused before anything runs


def test_a_failing_baseline_is_refused(tmp_path, capsys):
    root = tmp_path / "repo"
    make_tree(root)
    (root / "check.py").write_text("import sys\nsys.exit(1)\n")
    spec = write_mutants(tmp_path / "r.json", [{"id": "m", "file": "pkg/mod.py", "old": "a + b", "new": "a - b"}])
    assert ma.main([spec], root=str(root), command=CHECK) == 2
    assert capsys.readouterr().err.startswith("error: baseline: the tests fail without any mutant")


def test_results_path():
    assert ma.results_path("docs/mutation_audit/round7.json") == "docs/mutation_audit/round7_results.json"
