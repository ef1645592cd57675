"""Which code produced a record: :func:`code_version` (git commit, uncommitted changes, a hash of the sources).

A run is identified by its config, its code and its machine; ``metrics.json`` (``code_version``,
``code_versions``) and ``study_sessions.json`` record the code. ``source_sha256`` needs no git: it
hashes the ``*.py`` files of the project's packages and tools (the code that trains and evaluates),
so two checkouts with the same sources give the same value, committed or not.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

__all__ = ["PROJECT_ROOT", "SOURCE_DIRS", "code_version", "source_sha256", "same_code", "describe",
           "code_versions_after", "project_relative"]

#: The folder holding ``tools/train.py`` (this file is ``<root>/hrnet/runtime/provenance.py``).
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: The folders whose ``*.py`` files are the training code.
SOURCE_DIRS = ("configs", "data", "optim", "hrnet", "tools")


def _sources(root: str) -> Iterator[str]:
    """Relative paths (``/``-separated) of the ``*.py`` files under :data:`SOURCE_DIRS`, sorted."""
    found: List[str] = []
    for top in SOURCE_DIRS:
        for folder, dirs, files in os.walk(os.path.join(root, top)):
            dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
            found += [os.path.relpath(os.path.join(folder, f), root).replace(os.sep, "/")
                      for f in files if f.endswith(".py")]
    return iter(sorted(found))


def source_sha256(root: Optional[str] = None) -> str:
    """sha256 over the sorted source files of ``root``: each one's relative path and contents."""
    root = root or PROJECT_ROOT
    h = hashlib.sha256()
    for rel in _sources(root):
        with open(os.path.join(root, rel), "rb") as f:
            content = f.read()
        h.update(rel.encode("utf-8") + b"\0" + str(len(content)).encode() + b"\0" + content)
    return h.hexdigest()


def _git(root: str, *args: str) -> Optional[str]:
    """``git -C root args`` output, or None (no git, not a repository, an error)."""
    try:
        res = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


def code_version(root: Optional[str] = None) -> Dict[str, Any]:
    """``{"git_commit": str|None, "git_dirty": bool|None, "source_sha256": str}`` of the checkout at
    ``root`` (default: this project). ``git_dirty``: the source folders differ from the commit
    (uncommitted or untracked files); both git fields are None without git or a repository."""
    root = os.path.abspath(root or PROJECT_ROOT)
    commit = _git(root, "rev-parse", "HEAD")
    status = _git(root, "status", "--porcelain", "--", *SOURCE_DIRS) if commit is not None else None
    return {"git_commit": commit.strip() if commit else None,
            "git_dirty": None if status is None else bool(status.strip()),
            "source_sha256": source_sha256(root)}


def same_code(a: Optional[Mapping[str, Any]], b: Optional[Mapping[str, Any]]) -> bool:
    """Whether two :func:`code_version` records name the same training code (the sources decide;
    a commit of unchanged sources is the same code)."""
    return bool(a) and bool(b) and a.get("source_sha256") == b.get("source_sha256")


def describe(version: Optional[Mapping[str, Any]]) -> str:
    """One short phrase for logs: ``commit 1a2b3c4d (uncommitted changes), sources 5e6f7a8b``."""
    if not version:
        return "unknown code"
    commit = version.get("git_commit")
    head = f"commit {commit[:8]}" + (" (uncommitted changes)" if version.get("git_dirty") else "") if commit \
        else "no git commit"
    return f"{head}, sources {str(version.get('source_sha256'))[:8]}"


def code_versions_after(previous: Sequence[Mapping[str, Any]], current: Mapping[str, Any], epoch: int,
                        log: Optional[Callable[..., Any]] = None) -> List[Dict[str, Any]]:
    """metrics.json's ``code_versions`` for a session starting at ``epoch`` with ``current`` code:
    ``previous`` (the run's list so far) plus ``{"code_version": current, "from_epoch": epoch}``
    when the code differs from the last entry's (or the list is empty). ``log`` (a logger method)
    gets one line when a resumed run's code changed."""
    out = [dict(v) for v in previous]
    if not out or not same_code(out[-1].get("code_version"), current):
        if out and log is not None:
            log("the training code changed since the run's previous session (%s; now %s): metrics.json "
                "code_versions records both, this one from epoch %d", describe(out[-1].get("code_version")),
                describe(current), epoch)
        out.append({"code_version": dict(current), "from_epoch": int(epoch)})
    return out


def project_relative(path: str, root: Optional[str] = None) -> str:
    """``path`` relative to the project ``root`` when it lies inside it (``docs/study_cpu/runs``), else
    absolute: records that travel with the repository name no machine's folders."""
    root = os.path.abspath(root or PROJECT_ROOT)
    full = os.path.abspath(path)
    inside = full == root or full.startswith(root.rstrip(os.sep) + os.sep)
    return os.path.relpath(full, root).replace(os.sep, "/") if inside else full
