"""Mutation-test one module against its own fast tests (mutmut; not in CI: minutes per module).

    python tools/mutation.py MODULE [--max-children N]

MODULE is a ``[mutation:MODULE]`` section of setup.cfg (the files to mutate and their tests: test
files, or ``file::test`` for the fast tests of a slow file). The
run starts from a fresh ``mutants/`` (mutmut's copy of the tree), uses one worker by default
(the machine is shared), then prints the counts and the mutants not killed; ``mutmut show NAME``
prints one's diff. The raw score counts equivalent mutants as not killed (docs/mutation_testing.md
lists them).
"""
from __future__ import annotations

import argparse
import configparser
import json
import os
import shutil
import sys
import time
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules(setup_cfg: str = os.path.join(ROOT, "setup.cfg")) -> Dict[str, Tuple[List[str], List[str]]]:
    """``{MODULE: ([files to mutate], [test files])}`` from setup.cfg's ``[mutation:MODULE]`` sections."""
    parser = configparser.ConfigParser()
    parser.read(setup_cfg)
    return {s.split(":", 1)[1]: (parser[s]["mutate"].split(), parser[s]["tests"].split())
            for s in parser.sections() if s.startswith("mutation:")}


def main(argv: Optional[List[str]] = None) -> int:
    table = modules()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("module", choices=sorted(table))
    ap.add_argument("--max-children", type=int, default=1, help="parallel mutant workers (default 1)")
    args = ap.parse_args(argv)
    targets, tests = table[args.module]
    missing = [p for p in targets + [t.split("::")[0] for t in tests] if not os.path.exists(os.path.join(ROOT, p))]
    if missing:  # a moved module or test file: say which section to mend, before mutmut copies the tree
        print(f"error: setup.cfg [mutation:{args.module}] names {missing[0]}, which does not exist", file=sys.stderr)
        return 2

    os.chdir(ROOT)
    shutil.rmtree("mutants", ignore_errors=True)  # results depend on the test selection: start clean
    # The tests run inside mutants/, so the real hand photos beside the checkout are named here.
    os.environ.setdefault("HRNET_REAL_HANDS", os.path.join(os.path.dirname(ROOT), "shared", "data", "real-hands"))
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core per worker on a shared machine

    from mutmut.configuration import config
    from mutmut.__main__ import cli

    cfg = config()  # setup.cfg's [mutmut], narrowed to this module and its tests
    cfg.only_mutate = targets
    cfg.pytest_add_cli_args_test_selection = tests

    start = time.time()
    cli.main(["run", "--max-children", str(args.max_children)], standalone_mode=False)
    elapsed = time.time() - start
    cli.main(["export-cicd-stats"], standalone_mode=False)
    with open(os.path.join("mutants", "mutmut-cicd-stats.json")) as f:
        s = json.load(f)
    print(f"\n{args.module} ({' '.join(targets)}; tests: {' '.join(tests)})")
    print(f"mutants {s['total']}  killed {s['killed']}  survived {s['survived']}  timeout {s['timeout']}  "
          f"no tests {s['no_tests']}  suspicious {s['suspicious']}  raw score "
          f"{(s['killed'] + s['timeout']) / max(1, s['total']):.1%}  ({elapsed:.0f} s)")
    cli.main(["results"], standalone_mode=False)  # the survivors (and any not killed), by name
    return 0


if __name__ == "__main__":
    sys.exit(main())
