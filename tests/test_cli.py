"""tools/_cli.py: a user mistake is one ``error:`` line and exit 2; ``--debug`` shows the traceback."""
import errno
import os
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))  # _cli imports _paths, as every tool does
from tools import _cli  # noqa: E402  (by its path: mutmut's mutants are named tools._cli.*)


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


def test_ctrl_c_is_interrupted_and_130(capsys):
    main, seen = _raiser(KeyboardInterrupt())
    assert _cli.run(main, ["--cfg", "a.yaml"]) == 130 == _cli.EXIT_INTERRUPTED
    assert capsys.readouterr().err == "interrupted\n"
    assert seen == [["--cfg", "a.yaml"]]
    with pytest.raises(KeyboardInterrupt):  # --debug: the traceback of where it stopped
        _cli.run(main, ["--debug"])


def test_user_errors_exit_2_and_bugs_do_not():
    from configs import ConfigError
    from data.records import BadSampleError
    from hrnet.runtime.checkpoint import CheckpointError
    from hrnet.runtime.device import DeviceError

    assert _cli.EXIT_USER_ERROR == 2
    for exc in (ConfigError("c"), CheckpointError("k"), BadSampleError("b"), DeviceError("d"), PermissionError("p")):
        assert _cli.run(_raiser(exc)[0], []) == 2, exc
    for bug in (ValueError("v"), KeyError("k"), RuntimeError("r")):
        with pytest.raises(type(bug)):
            _cli.run(_raiser(bug)[0], [])


@pytest.mark.parametrize("exc,line", [
    (OSError(errno.EACCES, "Permission denied", "a.pth", None, "b.pth"), "a.pth: Permission denied (-> b.pth)"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "q"), "q: Disk quota exceeded (disk full: free space and run again)"),
    (OSError(errno.ENOSPC, "No space left on device"), "[Errno 28] No space left on device "
                                                         "(disk full: free space and run again)"),
    (OSError("no errno"), "no errno"),
    (_cli.UserError(), "UserError"),
])
def test_one_line_names_paths_and_the_disk(exc, line):
    assert _cli.one_line(exc) == line


def test_argv_defaults_to_sys_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["tool.py", "--cfg", "x.yaml", "--debug"])
    main, seen = _raiser(ConnectionError(errno.ECONNRESET, "reset"))  # an OSError, no filename
    with pytest.raises(ConnectionError):
        _cli.run(main)
    assert seen == [["--cfg", "x.yaml"]]


def test_overrides_anywhere_and_negative_values_are_values(capsys):
    """``TRAIN.RMSPROP_MOMENTUM -1`` (a documented setting: take TRAIN.MOMENTUM) is a KEY VALUE pair,
    not an option, before or after the options; an unknown --option is still an error."""
    import argparse

    from conftest import make_cfg

    parser = argparse.ArgumentParser()
    parser.add_argument("--cfg", required=True)
    parser.add_argument("--resume", action="store_true")
    for argv in (["--cfg", "a.yaml", "TRAIN.RMSPROP_MOMENTUM", "-1", "--resume"],
                 ["TRAIN.RMSPROP_MOMENTUM", "-1", "--cfg", "a.yaml", "--resume"]):
        args, opts = _cli.parse_with_overrides(parser, argv)
        assert (args.cfg, args.resume, opts) == ("a.yaml", True, ["TRAIN.RMSPROP_MOMENTUM", "-1"])
        assert make_cfg(None, opts).TRAIN.RMSPROP_MOMENTUM == -1.0
    args, opts = _cli.parse_with_overrides(parser, ["--cfg", "a.yaml", "TRAIN.LR", "-1e-3", "AMP.MODE", "-off"])
    assert opts == ["TRAIN.LR", "-1e-3", "AMP.MODE", "-off"]
    with pytest.raises(SystemExit) as exc:
        _cli.parse_with_overrides(parser, ["--cfg", "a.yaml", "--lr", "1", "--bogus"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.endswith("error: unrecognised arguments: --lr --bogus\n")
