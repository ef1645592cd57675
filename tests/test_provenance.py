"""hrnet.runtime.provenance: the sources' hash (its exact format), git's commit and dirty flag, the
log phrase, the code-version list of a resumed run, project-relative paths. Tiny trees in tmp_path."""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Dict

import pytest

from hrnet.runtime import provenance as pv

SHA_A, SHA_B = "5e6f7a8b" + "0" * 56, "99aa" + "1" * 60


def _tree(root: Path, files: Dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout


# ---------------------------------------------------------------------------- the sources and their hash
def test_sources_are_the_py_files_of_the_source_folders_sorted(tmp_path):
    _tree(tmp_path, {"tools/z.py": "", "hrnet/b/a.py": "", "configs/x.py": "", "data/d.py": "", "optim/o.py": "",
                     "hrnet/a.txt": "", "hrnet/__pycache__/c.py": "", "hrnet/.hidden/h.py": "",
                     "tests/t.py": "", "top.py": ""})
    assert list(pv._sources(str(tmp_path))) == ["configs/x.py", "data/d.py", "hrnet/b/a.py", "optim/o.py",
                                                 "tools/z.py"]


def test_source_sha256_hashes_each_path_length_and_content(tmp_path):
    _tree(tmp_path, {"hrnet/a.py": "xy", "tools/b.py": ""})
    expected = hashlib.sha256(b"hrnet/a.py\x002\x00xy" + b"tools/b.py\x000\x00").hexdigest()
    assert pv.source_sha256(str(tmp_path)) == expected
    (tmp_path / "hrnet" / "a.py").write_text("x")  # a byte moved from one file to the next: another hash
    (tmp_path / "tools" / "b.py").write_text("y")
    assert pv.source_sha256(str(tmp_path)) != expected


def test_source_sha256_and_code_version_default_to_the_project(tmp_path, monkeypatch):
    _tree(tmp_path, {"hrnet/a.py": "x = 1\n"})
    monkeypatch.setattr(pv, "PROJECT_ROOT", str(tmp_path))
    assert pv.source_sha256() == pv.source_sha256(str(tmp_path))
    assert pv.code_version() == {"git_commit": None, "git_dirty": None, "source_sha256": pv.source_sha256()}


# ---------------------------------------------------------------------------- git
def test_git_output_or_none(tmp_path, monkeypatch):
    assert pv._git(str(tmp_path), "rev-parse", "HEAD") is None  # not a repository
    _git(tmp_path, "init", "-q")
    assert pv._git(str(tmp_path), "status", "--porcelain") == ""
    _tree(tmp_path, {"a.txt": ""})
    assert pv._git(str(tmp_path), "status", "--porcelain") == "?? a.txt\n"  # stdout, as git wrote it
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))  # no git at all: None, not an exception
    assert pv._git(str(tmp_path), "status") is None


def test_code_version_names_the_commit_and_changes_to_the_sources_only(tmp_path):
    _tree(tmp_path, {"hrnet/a.py": "x = 1\n", "README.md": "text\n"})
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-qm", "one")
    head = _git(tmp_path, "rev-parse", "HEAD").strip()
    clean = pv.code_version(str(tmp_path))
    assert clean == {"git_commit": head, "git_dirty": False, "source_sha256": pv.source_sha256(str(tmp_path))}
    (tmp_path / "README.md").write_text("edited\n")  # outside the source folders: still clean
    _tree(tmp_path, {"notes/n.py": ""})
    assert pv.code_version(str(tmp_path))["git_dirty"] is False
    _tree(tmp_path, {"tools/new.py": ""})  # an untracked source file
    assert pv.code_version(str(tmp_path))["git_dirty"] is True
    os.remove(tmp_path / "tools" / "new.py")
    (tmp_path / "hrnet" / "a.py").write_text("x = 2\n")  # an edited one
    assert pv.code_version(str(tmp_path / "hrnet" / ".."))["git_dirty"] is True  # the root made absolute


def test_a_repository_without_a_commit_has_neither_commit_nor_dirty_flag(tmp_path):
    _tree(tmp_path, {"hrnet/a.py": "x = 1\n"})
    _git(tmp_path, "init", "-q")  # git status works here, but there is no commit to differ from
    assert pv.code_version(str(tmp_path)) == {"git_commit": None, "git_dirty": None,
                                              "source_sha256": pv.source_sha256(str(tmp_path))}


def test_git_never_waits_forever(monkeypatch):
    """A git that hangs (a stale lock, a network filesystem) must not stop training: every call has a
    timeout, and running past it is "no git" (None)."""
    seen = []

    def hanging(cmd, **kw):
        seen.append(kw.get("timeout"))
        raise subprocess.TimeoutExpired(cmd, kw.get("timeout"))

    monkeypatch.setattr(pv.subprocess, "run", hanging)
    assert pv._git("/repo", "rev-parse", "HEAD") is None
    assert len(seen) == 1 and seen[0] is not None and 0 < seen[0] <= 60


# ---------------------------------------------------------------------------- comparing and describing
@pytest.mark.parametrize("a, b, same", [
    ({"source_sha256": SHA_A, "git_commit": "1"}, {"source_sha256": SHA_A, "git_commit": "2"}, True),
    ({"source_sha256": SHA_A}, {"source_sha256": SHA_B}, False),
    (None, {"source_sha256": SHA_A}, False), ({"source_sha256": SHA_A}, None, False), ({}, {}, False),
])
def test_same_code_is_the_same_sources(a, b, same):
    assert pv.same_code(a, b) is same


@pytest.mark.parametrize("version, words", [
    (None, "unknown code"), ({}, "unknown code"),
    ({"git_commit": "1a2b3c4d5e6f", "git_dirty": True, "source_sha256": SHA_A},
     "commit 1a2b3c4d (uncommitted changes), sources 5e6f7a8b"),
    ({"git_commit": "1a2b3c4d5e6f", "git_dirty": False, "source_sha256": SHA_A}, "commit 1a2b3c4d, sources 5e6f7a8b"),
    ({"git_commit": None, "git_dirty": None, "source_sha256": SHA_A}, "no git commit, sources 5e6f7a8b"),
    ({"git_commit": "1a2b3c4d5e6f"}, "commit 1a2b3c4d, sources None"),
])
def test_describe_in_one_phrase(version, words):
    assert pv.describe(version) == words


def test_code_versions_after_adds_an_entry_when_the_code_changed():
    first = {"git_commit": None, "git_dirty": None, "source_sha256": SHA_A}
    second = {"git_commit": "1a2b3c4d5e6f", "git_dirty": True, "source_sha256": SHA_B}
    lines = []
    log = lambda *a: lines.append(a[0] % a[1:])  # noqa: E731  (a logger method: format and args)
    versions = pv.code_versions_after([], first, 0, log=log)
    assert versions == [{"code_version": first, "from_epoch": 0}] and lines == []  # a new run: nothing to say
    previous = [dict(v) for v in versions]
    after = pv.code_versions_after(versions, second, 3.0, log=log)
    assert after == [{"code_version": first, "from_epoch": 0}, {"code_version": second, "from_epoch": 3}]
    assert type(after[1]["from_epoch"]) is int and versions == previous  # the caller's list is not changed
    after[1]["code_version"]["git_dirty"] = False
    assert second["git_dirty"] is True and after[0] is not versions[0]  # copies, not the caller's dicts
    assert lines == ["the training code changed since the run's previous session (no git commit, sources 5e6f7a8b; "
                     "now commit 1a2b3c4d (uncommitted changes), sources 99aa1111): metrics.json code_versions "
                     "records both, this one from epoch 3"]
    assert pv.code_versions_after(versions, second, 3) == after[:1] + [{"code_version": second, "from_epoch": 3}]


# ---------------------------------------------------------------------------- paths in records
@pytest.mark.parametrize("path, expected", [
    ("{root}/docs/study_cpu/runs", "docs/study_cpu/runs"),
    ("{root}", "."), ("{root}/", "."), ("{root}/a/../b", "b"),
    ("{root}x/y", "{root}x/y"),  # a sibling whose name starts like the root is outside
    ("/elsewhere/runs", "/elsewhere/runs"),
])
def test_project_relative(tmp_path, path, expected):
    root = str(tmp_path / "proj")
    assert pv.project_relative(path.format(root=root), root) == expected.format(root=root)
    assert pv.project_relative(path.format(root=root), root + os.sep) == expected.format(root=root)


def test_everything_is_inside_the_filesystem_root():
    assert pv.project_relative("/srv/runs", "/") == "srv/runs"


def test_project_relative_defaults_to_the_project(tmp_path, monkeypatch):
    monkeypatch.setattr(pv, "PROJECT_ROOT", str(tmp_path))
    assert pv.project_relative(str(tmp_path / "docs")) == "docs"
