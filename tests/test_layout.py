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
    """``hrnet/study/spec.py`` -> ``hrnet.study``; ``data/synthetic/render.py`` -> ``data``."""
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
            out += [(node.lineno, f"{mod}.{a.name}") for a in node.names if mod == "hrnet"]
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
