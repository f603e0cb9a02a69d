"""User-facing errors, the one way they are printed, and the guard every command runs under.

Every command of the project (``velcro`` and its subcommands, the scripts, the U280 host
example) reports a problem it can name as one line on stderr, ``velcro: error: WHERE: ...``
(:func:`error_line`; WHERE names the subcommand or script, left out for ``velcro`` itself),
with exit status 2 and never a traceback:

* :class:`CliError` is a user-facing error; :class:`InputError`, one of its kind, is what
  py_ref's readers of data, weights, model names and presets raise for a file or value the
  user gave (py_ref.velcro's :class:`~py_ref.velcro.VelcroError` stays the algorithm's own);
* :func:`main_guard`, applied once at a command's entry point, prints a CliError as that line
  and returns 2, turns SIGTERM and SIGHUP into the same clean exit as Ctrl-C (status 143 /
  130; ``finally`` blocks remove temporary files and folders) and makes a result line that
  cannot be written (stdout closed, a broken pipe) a quiet exit 141 with every output kept;
* :func:`one_line_errors` gives an argparse parser's own errors the same one line.

It imports nothing from hdl/ (py_ref sits at the bottom of the layers), nor numpy or torch:
the host example runs on a machine without them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

__all__ = ["CliError", "InputError", "Terminated", "one_line", "error_line", "one_line_errors",
           "main_guard", "EXIT_STDOUT_GONE"]

#: The program name every error line starts with.
PROGRAM = "velcro"


class CliError(Exception):
    """A user-facing error: printed as one line ``velcro: error: ...``, exit status 2."""


class InputError(CliError, ValueError):
    """A data file, weights file, model name, task or preset the user gave is wrong or missing
    (py_ref/data.py, models.py, presets.py, photos.py); the message names it."""


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like KeyboardInterrupt so cleanup code runs."""


def one_line(text) -> str:
    """First non-empty line of ``text`` (errors from libraries can span many lines)."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def error_line(message, where: str = "") -> str:
    """The one error line of every command: ``velcro: error: [WHERE: ]MESSAGE``."""
    return f"{PROGRAM}: error: {f'{where}: ' if where else ''}{one_line(message)}"


def one_line_errors(parser):
    """Make ``parser``'s own errors (bad int, missing option, unknown argument) one line
    ``velcro: error: ...`` with exit status 2, like every other error; returns the parser."""
    def error(message):
        name = parser.prog.split()[-1]
        print(f"{error_line(message, '' if name == PROGRAM else name)} (see {parser.prog} --help)",
              file=sys.stderr)
        sys.exit(2)
    parser.error = error
    return parser


def _on_sigterm(signum, frame):
    raise Terminated()


#: Exit status when the result line cannot be written (stdout closed or a broken pipe): what a
#: shell shows for a program killed by SIGPIPE, as ``seq 100000 | head -1`` does for seq.
EXIT_STDOUT_GONE = 128 + signal.SIGPIPE


def _stdout_gone() -> None:
    """stdout cannot take the result line: point fd 1 at /dev/null so nothing else (the
    interpreter's final flush) complains; the output files already written stay."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    sys.stdout = open(os.devnull, "w")


def _stdout_is_closed() -> bool:
    try:
        os.fstat(1)
    except OSError:
        return True
    return sys.stdout is None


def main_guard(func, *args) -> int:
    """Run ``func(*args)``; map user errors and signals to the CLI's exit statuses.

    CliError -> 2 with one line; Ctrl-C -> 130; SIGTERM and SIGHUP -> 143 (SIGHUP: the
    terminal went away, the same clean exit).  Cleanup (``finally`` blocks, temporary folders)
    runs in every case because the signals unwind the stack.  stdout closed (``>&-``) or a
    broken pipe (``| head -1``): the result line is dropped without a message, what was written
    stays, exit status 141 (:data:`EXIT_STDOUT_GONE`), the same for every command.
    """
    closed = _stdout_is_closed()
    if closed:                      # fd 1 free: the next open() would take it; hold /dev/null
        _stdout_gone()
    previous = {sig: signal.signal(sig, _on_sigterm) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        status = func(*args)
        sys.stdout.flush()          # a pipe's buffered result line fails here, not at exit
        return EXIT_STDOUT_GONE if closed and status == 0 else status
    except BrokenPipeError:
        _stdout_gone()
        return EXIT_STDOUT_GONE
    except CliError as exc:
        print(error_line(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROGRAM}: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print(f"{PROGRAM}: terminated", file=sys.stderr)
        return 143
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
