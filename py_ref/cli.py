"""The one command-line layer of ``velcro``: user errors, output paths, atomic writes, signals.

Every subcommand (``velcro sim`` in velcro_cli.py, the algorithm commands in
py_ref/commands.py) uses these, so the contract holds in one place:

* bad input raises :class:`CliError`; :func:`main_guard` prints it as one line
  ``velcro: error: ...`` on stderr and returns exit status 2 (never a traceback);
* output paths are checked with :func:`check_output` *before* any long work (not a folder,
  not empty, not one of the inputs, its folder exists);
* outputs are written with :func:`atomic_write`: a temporary name in the same folder, then a
  rename, so no partial or overwritten file is ever left behind;
* SIGTERM is turned into the same clean exit as Ctrl-C (status 130 / 143), so ``finally``
  blocks remove temporary files and folders.

It imports nothing from hdl/ (py_ref sits at the bottom of the layers).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
from pathlib import Path

__all__ = ["one_line_errors", "CliError", "check_output", "atomic_write", "main_guard", "Terminated", "one_line",
           "new_file_mode"]


class CliError(Exception):
    """A user-facing error: printed as one line ``velcro: error: ...``, exit status 2."""


class Terminated(BaseException):
    """SIGTERM arrived: unwinds like KeyboardInterrupt so cleanup code runs."""


def one_line(text) -> str:
    """First non-empty line of ``text`` (errors from libraries can span many lines)."""
    for line in str(text).splitlines():
        if line.strip():
            return line.strip()
    return ""


def one_line_errors(parser):
    """Make ``parser``'s own errors (bad int, missing option, unknown argument) one line
    ``velcro: error: ...`` with exit status 2, like every other error; returns the parser."""
    def error(message):
        name = parser.prog.split()[-1]
        where = "" if name == "velcro" else f"{name}: "
        print(f"velcro: error: {where}{one_line(message)} (see {parser.prog} --help)",
              file=sys.stderr)
        sys.exit(2)
    parser.error = error
    return parser


def check_output(path, *, inputs=(), suffix: str | None = None) -> Path:
    """Validate an output path before any work is done; return it as a Path.

    Refuses an empty path, an existing folder, a path equal to one of ``inputs`` (same file
    after resolving links), and a missing parent folder.  ``suffix`` is appended when the
    name lacks it (numpy's savez does the same, so the checked path is the written one).
    """
    if path is None or str(path).strip() == "":
        raise CliError("output path is empty")
    out = Path(path)
    if suffix and out.suffix != suffix:
        out = out.with_name(out.name + suffix)
    if out.is_dir():
        raise CliError(f"output path {out} is a folder, expected a file name")
    if not out.parent.is_dir():
        raise CliError(f"output folder {out.parent} does not exist")
    resolved = out.resolve()
    for inp in inputs:
        if inp is None or str(inp) == "":
            continue
        p = Path(inp)
        same = p.resolve() == resolved
        if not same and p.exists() and out.exists():
            with contextlib.suppress(OSError):
                same = os.path.samefile(p, out)
        if same:
            raise CliError(f"output path {out} is also an input file; refusing to overwrite it")
    return out


def atomic_write(path, write) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    On any failure (or interruption) the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise CliError(f"output folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix or ".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, new_file_mode())  # mkstemp makes 0600; the result is an ordinary file
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def new_file_mode() -> int:
    """The permissions ``open(path, "w")`` would give a new file (0666 minus the umask)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _on_sigterm(signum, frame):
    raise Terminated()


def main_guard(func, *args) -> int:
    """Run ``func(*args)``; map user errors and signals to the CLI's exit statuses.

    CliError -> 2 with one line; Ctrl-C -> 130; SIGTERM -> 143.  Cleanup (``finally``
    blocks, temporary folders) runs in every case because both signals unwind the stack.
    """
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return func(*args)
    except CliError as exc:
        print(f"velcro: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("velcro: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("velcro: terminated", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)
