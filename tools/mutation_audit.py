"""Plant hand-written one-line bugs, one at a time, and see whether their tests catch them.

    python tools/mutation_audit.py docs/mutation_audit/round7.json [--only ID ...] [--timeout S]

The input is a JSON list of ``{"id", "file", "old", "new", "why", "tests"}``: ``old`` must occur
exactly once in ``file`` (the mutant replaces it with ``new``); ``tests`` are test files or
``file::test`` selections, the ones a developer would expect to cover that code. The tree (git's
tracked and untracked, non-ignored files, as they are now) is copied beside the checkout, so that
``../shared`` resolves as it does from the checkout, and the checkout itself is never touched. A
baseline run of all the selections, unmutated, comes first: a test that fails without a mutant would
make every mutant look caught. Each mutant then runs ``python -m pytest -x -q -p no:cacheprovider
TESTS`` with ``OMP_NUM_THREADS=1`` under a time limit; a time-out counts as caught and is reported
apart. One line per mutant, a summary, and ``<input>_results.json`` beside the input; exit 0 (2 when
the input is refused or the baseline fails).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTEST = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
FIELDS = ("id", "file", "old", "new", "why", "tests")
# pytest's own failures to run (usage error, no tests collected): neither caught nor survived.
PYTEST_USAGE_ERROR, PYTEST_NO_TESTS = 4, 5


class AuditError(Exception):
    """An input the audit refuses (its message is one line naming the mutant)."""


def load(path: str, root: str = ROOT) -> List[Dict]:
    """The mutants of ``path``, each checked against the tree at ``root``."""
    with open(path, encoding="utf-8") as f:
        mutants = json.load(f)
    if not isinstance(mutants, list):
        raise AuditError(f"{path}: expected a JSON list of mutants")
    seen = set()
    for i, m in enumerate(mutants):
        name = m.get("id", f"#{i}") if isinstance(m, dict) else f"#{i}"
        missing = [k for k in FIELDS if not isinstance(m, dict) or k not in m]
        if missing:
            raise AuditError(f"mutant {name}: missing field(s) {', '.join(missing)}")
        if name in seen:
            raise AuditError(f"mutant {name}: duplicate id")
        seen.add(name)
        check(m, root)
    return mutants


def check(m: Dict, root: str) -> None:
    """Refuse a mutant that cannot be planted exactly as written."""
    source = os.path.join(root, m["file"])
    if not os.path.isfile(source):
        raise AuditError(f"mutant {m['id']}: file {m['file']} does not exist")
    if m["old"] == m["new"]:
        raise AuditError(f"mutant {m['id']}: 'new' is the same as 'old'")
    with open(source, encoding="utf-8") as f:
        count = f.read().count(m["old"])
    if count != 1:
        raise AuditError(f"mutant {m['id']}: 'old' occurs {count} times in {m['file']} (needs exactly 1)")
    if not m["tests"]:
        raise AuditError(f"mutant {m['id']}: no tests")
    for t in m["tests"]:
        if not os.path.isfile(os.path.join(root, t.split("::")[0])):
            raise AuditError(f"mutant {m['id']}: test file {t.split('::')[0]} does not exist")


def tree_files(root: str) -> List[str]:
    """The files to copy: git's tracked and untracked non-ignored files, else everything but caches."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=root,
                             capture_output=True, check=True).stdout
        return [p for p in out.decode().split("\0") if p and os.path.isfile(os.path.join(root, p))]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", "__pycache__", ".pytest_cache", "mutants", ".hypothesis"}
        files = []
        for d, dirs, names in os.walk(root):
            dirs[:] = [x for x in dirs if x not in skip]
            files += [os.path.relpath(os.path.join(d, n), root) for n in names if not n.endswith(".pyc")]
        return files


def copy_tree(root: str) -> str:
    """A copy of the tree in a new folder beside ``root`` (same parent, so ``../shared`` resolves)."""
    dest = tempfile.mkdtemp(prefix=".mutation_audit_", dir=os.path.dirname(os.path.abspath(root)))
    for rel in tree_files(root):
        target = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(root, rel), target)
    return dest


def run_tests(tree: str, tests: Sequence[str], timeout: float, root: str,
              command: Sequence[str] = PYTEST) -> Dict:
    """Run ``command + tests`` in ``tree``: ``{"rc", "timed_out", "seconds", "failed"}``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")  # no stale .pyc of a mutant
    # tests/conftest.py finds the real hand photos beside the checkout; the copy sits beside it too,
    # but say so explicitly (as tools/mutation.py does for mutants/).
    env.setdefault("HRNET_REAL_HANDS", os.path.join(os.path.dirname(os.path.abspath(root)), "shared", "data",
                                                    "real-hands"))
    start = time.time()
    try:
        proc = subprocess.run(list(command) + list(tests), cwd=tree, env=env, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"rc": None, "timed_out": True, "seconds": round(time.time() - start, 1), "failed": []}
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout + proc.stderr, flags=re.M)
    return {"rc": proc.returncode, "timed_out": False, "seconds": round(time.time() - start, 1),
            "failed": failed, "tail": (proc.stdout + proc.stderr).strip().splitlines()[-3:]}


def status(result: Dict) -> str:
    """caught / timeout / survived / error (pytest could not run the selection) for one run."""
    if result["timed_out"]:
        return "timeout"
    if result["rc"] == 0:
        return "survived"
    if result["rc"] in (PYTEST_USAGE_ERROR, PYTEST_NO_TESTS):
        return "error"
    return "caught"  # 1: a test failed; 2: interrupted by a collection error (the module broke on import)


def plant(tree: str, m: Dict) -> str:
    """Write the mutant into the copy; the original text (to restore)."""
    path = os.path.join(tree, m["file"])
    with open(path, encoding="utf-8") as f:
        original = f.read()
    with open(path, "w", encoding="utf-8") as f:
        f.write(original.replace(m["old"], m["new"], 1))
    return original


def audit(mutants: List[Dict], root: str = ROOT, timeout: float = 120.0, baseline: bool = True,
          command: Sequence[str] = PYTEST, echo=print) -> Dict:
    """Run every mutant in a copy of ``root``; the results (see the module doc)."""
    start = time.time()
    tree = copy_tree(root)
    try:
        if baseline:
            selections = list(dict.fromkeys(t for m in mutants for t in m["tests"]))
            base = run_tests(tree, selections, timeout * max(1, len(selections)), root, command)
            if status(base) != "survived":  # "survived" here: every test passed unmutated
                detail = ", ".join(base["failed"]) or " / ".join(base.get("tail", [])) or "timed out"
                raise AuditError(f"baseline: the tests fail without any mutant ({detail})")
            echo(f"baseline   {base['seconds']:6.1f}s  {len(selections)} selection(s) pass unmutated")
        results = []
        for m in mutants:
            path = os.path.join(tree, m["file"])
            original = plant(tree, m)
            try:
                r = run_tests(tree, m["tests"], timeout, root, command)
            finally:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(original)
            row = {"id": m["id"], "file": m["file"], "status": status(r), "seconds": r["seconds"],
                   "caught_by": r["failed"][:3], "tests": m["tests"], "why": m["why"]}
            results.append(row)
            echo(f"{row['status']:<9}  {row['seconds']:6.1f}s  {m['id']}  ({m['file']})")
    finally:
        shutil.rmtree(tree, ignore_errors=True)
    counts = {s: sum(r["status"] == s for r in results) for s in ("caught", "timeout", "survived", "error")}
    caught = counts["caught"] + counts["timeout"]
    total = len(results)
    summary = {"total": total, "caught": caught, "timeouts": counts["timeout"], "survived": counts["survived"],
               "errors": counts["error"], "score_pct": round(100.0 * caught / total, 1) if total else 0.0,
               "seconds": round(time.time() - start, 1), "timeout_s": timeout, "results": results}
    echo(f"caught {caught} / {total} ({summary['score_pct']}%; {counts['timeout']} by time-out), "
         f"survived {counts['survived']}, errors {counts['error']}, {summary['seconds']:.0f}s")
    for r in results:
        if r["status"] in ("survived", "error"):
            echo(f"  {r['status']}: {r['id']}  {r['why']}")
    return summary


def results_path(path: str) -> str:
    """``docs/mutation_audit/round7.json`` -> ``docs/mutation_audit/round7_results.json``."""
    stem, ext = os.path.splitext(path)
    return f"{stem}_results{ext or '.json'}"


def main(argv: Optional[List[str]] = None, root: str = ROOT, command: Sequence[str] = PYTEST) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mutants", help="JSON list of mutants")
    ap.add_argument("--only", nargs="+", metavar="ID", help="run only these mutants")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per mutant (default 120)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the tests")
    args = ap.parse_args(argv)
    try:
        mutants = load(args.mutants, root)
        if args.only:
            unknown = [i for i in args.only if i not in {m["id"] for m in mutants}]
            if unknown:
                raise AuditError(f"mutant {unknown[0]}: no such id in {args.mutants}")
            mutants = [m for m in mutants if m["id"] in args.only]
        # flushed: the lines are the progress of a run of many minutes, often redirected to a file
        summary = audit(mutants, root, args.timeout, not args.no_baseline, command,
                        echo=lambda line: print(line, flush=True))
    except AuditError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary["input"] = args.mutants
    summary["only"] = args.only
    with open(results_path(args.mutants), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
