"""The tree's promises: imports run downward only, no module over 400 lines, no function over 60."""
from __future__ import annotations

import ast
import os
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from conftest import ROOT

# What each layer may import of the project (besides itself). Lower layers never import upper ones.
ALLOWED: Dict[str, Set[str]] = {
    "configs": set(),
    "data": {"configs"},
    "optim": {"configs"},
    "hrnet.runtime": {"configs"},
    "hrnet.models": {"configs"},
    "hrnet.evaluation": {"hrnet.models", "hrnet.runtime", "data", "optim", "configs"},
    "hrnet.engine": {"hrnet.evaluation", "hrnet.models", "hrnet.runtime", "data", "optim", "configs"},
    "hrnet.study": {"hrnet.engine", "hrnet.evaluation", "hrnet.models", "hrnet.runtime", "data", "optim", "configs"},
    "hrnet.benchmark": {"hrnet.engine", "hrnet.evaluation", "hrnet.models", "hrnet.runtime", "data", "optim",
                        "configs"},
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
SOURCE_DIRS = ("configs", "data", "optim", "hrnet", "tools")


def _modules(*dirs: str) -> Iterator[str]:
    for d in dirs:
        for base, _, files in os.walk(os.path.join(ROOT, d)):
            for f in sorted(files):
                if f.endswith(".py"):
                    yield os.path.join(base, f)


def _layer(path: str) -> str:
    """``hrnet/study/plan/spec.py`` -> ``hrnet.study``; ``data/synthetic/render.py`` -> ``data``."""
    parts = os.path.relpath(path, ROOT).split(os.sep)
    return ".".join(parts[:2]) if parts[0] == "hrnet" and len(parts) > 2 else parts[0]


def _imported(path: str) -> List[Tuple[int, str]]:
    """Every project module a file imports, at any depth (function-level imports included)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    pkg = os.path.relpath(os.path.dirname(path), ROOT).replace(os.sep, ".")
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the file's package
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names]  # the name may be a module
    return out


def _target_layer(mod: str) -> str:
    parts = mod.split(".")
    if parts[0] == "hrnet" and len(parts) > 1 and f"hrnet.{parts[1]}" in ALLOWED:
        return f"hrnet.{parts[1]}"
    return parts[0]


def test_imports_run_downward_only():
    bad = []
    for path in _modules("configs", "data", "optim", "hrnet"):
        layer = _layer(path)
        if layer == "hrnet":  # hrnet/__init__.py: lazy re-export of the network's names only
            allowed = {"hrnet.models"}
        else:
            allowed = ALLOWED[layer]
        for line, mod in _imported(path):
            target = _target_layer(mod)
            if target in ("tools", "hrnet") or target in ALLOWED:
                if target != layer and target not in allowed:
                    bad.append(f"{os.path.relpath(path, ROOT)}:{line} ({layer}) imports {mod}")
    assert not bad, "upward or sideways imports:\n" + "\n".join(bad)


def test_the_layering_check_can_fail(tmp_path):
    """The checker sees a function-level upward import (the kind that hides best)."""
    path = os.path.join(ROOT, "hrnet", "evaluation", "_probe_upward.py")
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write("def f():\n    from hrnet.engine.trainer import Trainer\n    from ..study import stats\n")
        with pytest.raises(AssertionError, match="_probe_upward.py:2.*hrnet.engine.trainer"):
            test_imports_run_downward_only()
    finally:
        os.remove(path)


def _long_functions(path: str) -> List[str]:
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > MAX_FUNCTION_LINES:
                out.append(f"{os.path.relpath(path, ROOT)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_module_over_400_lines():
    long = [f"{os.path.relpath(p, ROOT)} ({n} lines)" for p in _modules(*SOURCE_DIRS)
            if (n := sum(1 for _ in open(p, encoding="utf-8"))) > MAX_MODULE_LINES]
    assert not long, "split by concern: " + ", ".join(long)


def test_no_function_over_60_lines():
    long = [x for p in _modules(*SOURCE_DIRS) for x in _long_functions(p)]
    assert not long, "split by step: " + ", ".join(long)


# The study's rooms (hrnet/study/<room>/): what each may import of the study besides itself.
STUDY_ROOMS: Dict[str, Set[str]] = {
    "plan": set(),
    "execute": {"plan"},
    "analyse": {"plan"},
    "render": {"analyse", "plan"},
}


def _study_room(mod_or_path: str) -> str:
    parts = mod_or_path.replace(os.sep, ".").split(".")
    i = parts.index("study")
    return parts[i + 1] if len(parts) > i + 2 or (len(parts) > i + 1 and parts[i + 1] in STUDY_ROOMS) else ""


def test_study_rooms_import_in_step_order():
    """plan <- execute, plan <- analyse <- render; the execution and the analysis never meet."""
    bad = []
    study = os.path.join(ROOT, "hrnet", "study")
    for path in _modules(os.path.join("hrnet", "study")):
        rel = os.path.relpath(path, ROOT)
        room = _study_room(os.path.relpath(path, ROOT)[:-3])
        if room not in STUDY_ROOMS:
            assert os.path.dirname(path) == study and os.path.basename(path) == "__init__.py", \
                f"{rel}: every study module lives in one of the rooms {sorted(STUDY_ROOMS)}"
            continue
        for line, mod in _imported(path):
            if mod.startswith("hrnet.study."):
                target = mod.split(".")[2]
                if target != room and target not in STUDY_ROOMS[room]:
                    bad.append(f"{rel}:{line} ({room}) imports {mod}")
    assert not bad, "study rooms out of step order:\n" + "\n".join(bad)


def test_no_import_cycle_between_modules():
    """Module-level import graph of the project (function-level imports included) has no cycle."""
    graph: Dict[str, Set[str]] = {}
    for path in _modules("configs", "data", "optim", "hrnet"):
        name = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
        graph[name] = {m for _, m in _imported(path)}
    known = set(graph)
    # an edge to one's own package (its __init__ re-exports) is how packages work, not a cycle
    edges = {a: {b for b in bs if b in known and b != a and not a.startswith(b + ".")} for a, bs in graph.items()}
    state: Dict[str, int] = {}
    cycle: List[str] = []

    def visit(node: str, stack: List[str]) -> bool:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle.extend((stack + [node])[(stack + [node]).index(nxt):] + [nxt])
                return True
            if nxt not in state and visit(nxt, stack + [node]):
                return True
        state[node] = 2
        return False

    for n in sorted(edges):
        if n not in state and visit(n, []):
            break
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_can_fail():
    """A planted circle (the executors <-> ray executor kind) is caught."""
    probe = os.path.join(ROOT, "hrnet", "study", "execute", "_probe_cycle.py")
    target = os.path.join(ROOT, "hrnet", "study", "execute", "_probe_cycle_b.py")
    try:
        with open(probe, "w", encoding="utf-8") as f:
            f.write("def f():\n    from hrnet.study.execute import _probe_cycle_b\n")
        with open(target, "w", encoding="utf-8") as f:
            f.write("from hrnet.study.execute._probe_cycle import f\n")
        with pytest.raises(AssertionError, match="import cycle: .*_probe_cycle"):
            test_no_import_cycle_between_modules()
    finally:
        os.remove(probe)
        os.remove(target)
