"""tools/_cli.py: a user mistake is one ``error:`` line and exit 2; ``--debug`` shows the traceback."""
import errno
import os
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import _cli  # noqa: E402


def _raiser(exc):
    seen = []

    def main(argv):
        seen.append(argv)
        raise exc
    return main, seen


@pytest.mark.parametrize("exc,line", [
    (OSError(errno.ENOSPC, "No space left on device", "/runs/a/checkpoint_latest.pth"),
     "error: /runs/a/checkpoint_latest.pth: No space left on device (disk full: free space and run again)"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "x.yaml"), "error: x.yaml: No such file or directory"),
    (_cli.UserError("bad\n  thing"), "error: bad thing"),
])
def test_user_error_is_one_line_exit_2(capsys, exc, line):
    main, seen = _raiser(exc)
    assert _cli.run(main, ["--cfg", "a.yaml"]) == 2
    err = capsys.readouterr().err
    assert err == line + "\n"
    assert seen == [["--cfg", "a.yaml"]]


def test_debug_is_removed_and_reraises():
    from configs import ConfigError

    main, seen = _raiser(ConfigError("x.yaml: TRAIN.LR must be positive"))
    with pytest.raises(ConfigError):
        _cli.run(main, ["--cfg", "x.yaml", "--debug"])
    assert seen == [["--cfg", "x.yaml"]]


def test_bugs_keep_their_traceback():
    main, _ = _raiser(ZeroDivisionError("a bug"))
    with pytest.raises(ZeroDivisionError):
        _cli.run(main, [])


def test_return_code_passes_through():
    assert _cli.run(lambda argv: 7, []) == 7
