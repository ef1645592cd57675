"""The one place where a tool turns a user mistake into one line on stderr and a non-zero exit.

Every tool ends with::

    if __name__ == "__main__":
        sys.exit(_cli.run(main))

``run`` calls ``main(argv)``; an exception of :data:`USER_ERRORS` (a bad config, checkpoint,
annotation, device request, a missing or existing file, a full disk, ...) prints
``error: <one line>`` to stderr and returns 2. ``--debug`` anywhere in the command line is removed
before ``main`` sees it and lets the exception through with its traceback. Anything else (a bug)
keeps its traceback. Ctrl-C prints ``interrupted`` and returns 130.
"""
from __future__ import annotations

import argparse
import errno
import sys
from typing import Callable, List, Optional, Sequence, Tuple, Type

import _paths  # noqa: F401  (repository root on sys.path)

from configs import ConfigError
from data.records import BadSampleError
from hrnet.runtime.checkpoint import CheckpointError
from hrnet.runtime.device import DeviceError

__all__ = ["UserError", "USER_ERRORS", "EXIT_USER_ERROR", "run", "one_line", "parse_with_overrides"]

#: Exit status of a user mistake (argparse uses 2 for a bad command line as well).
EXIT_USER_ERROR = 2
#: 128 + SIGINT, as a shell reports a Ctrl-C.
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """A mistake a tool detects itself (a bad option combination, an unusable input); names the culprit."""


#: What counts as a user mistake rather than a bug. OSError covers missing files and folders,
#: permissions and a full disk; its message is rebuilt to name the path (see :func:`one_line`).
USER_ERRORS: Tuple[Type[BaseException], ...] = (
    UserError, ConfigError, CheckpointError, BadSampleError, DeviceError, OSError)


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line, naming the path of an OSError.

    ``OSError(errno, strerror, filename)`` prints as ``[Errno 28] No space left on device: 'x'``;
    this gives ``x: No space left on device (disk full)``.
    """
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror}"
        if exc.filename2 is not None:
            text += f" (-> {exc.filename2})"
    else:
        text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        text += " (disk full: free space and run again)"
    # A multi-line message (e.g. a wrapped yaml parser error) becomes one line.
    return " ".join(text.split())


def parse_with_overrides(parser: argparse.ArgumentParser,
                         argv: Optional[Sequence[str]] = None) -> Tuple[argparse.Namespace, List[str]]:
    """``parser``'s options plus the config's ``KEY VALUE`` overrides, which may come before,
    between or after the options; an unknown ``--option`` is still an error."""
    args, opts = parser.parse_known_args(argv)
    unknown = [o for o in opts if o.startswith("--")]
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)}")
    return args, opts


def _split_debug(argv: Optional[Sequence[str]]) -> Tuple[List[str], bool]:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    return [a for a in args if a != "--debug"], debug


def run(main: Callable[[Optional[List[str]]], int], argv: Optional[Sequence[str]] = None) -> int:
    """``main(argv)`` with user mistakes reported as ``error: <one line>`` (exit 2).

    ``argv`` defaults to ``sys.argv[1:]``; ``--debug`` in it re-raises with the traceback.
    Returns ``main``'s exit status otherwise (``SystemExit`` from argparse passes through).
    """
    args, debug = _split_debug(argv)
    try:
        return main(args)
    except USER_ERRORS as exc:
        if debug:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
