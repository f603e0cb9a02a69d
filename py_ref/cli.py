"""The one command-line layer of ``velcro``: user errors, output paths, atomic writes, signals.

Every subcommand (``velcro sim`` in velcro_cli.py, the algorithm commands in
py_ref/commands.py) uses these, so the contract holds in one place:

* bad input raises :class:`CliError`; :func:`main_guard` prints it as one line
  ``velcro: error: ...`` on stderr and returns exit status 2 (never a traceback);
* output paths are checked with :func:`check_output` *before* any long work (not a folder,
  not empty, not one of the inputs, not an existing non-regular file, its folder exists and
  takes new files, names within the file system's limits);
* outputs are written with :func:`atomic_write`: a temporary name in the same folder, then a
  rename, so no partial or overwritten file is ever left behind;
* SIGTERM and SIGHUP are turned into the same clean exit as Ctrl-C (status 143 / 130), so
  ``finally`` blocks remove temporary files and folders;
* option values are checked by their class (:func:`checked_options`);
* a result line that cannot be written (stdout closed, a broken pipe) is a quiet exit 141 with
  every output file kept (:func:`main_guard`).

It imports nothing from hdl/ (py_ref sits at the bottom of the layers).
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import tempfile
from pathlib import Path

__all__ = ["one_line_errors", "CliError", "check_output", "atomic_write", "main_guard", "Terminated", "one_line",
           "new_file_mode", "checked_options", "EXIT_STDOUT_GONE", "MAX_SEED"]


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


#: Options whose value is a file name: their readers and check_output report an empty one.
_PATH_OPTIONS = {"out", "stats", "masks", "weights", "data", "config", "frame"}
#: The largest seed: what numpy's, torch's and Python's generators all take (32 bits).
MAX_SEED = 2**32 - 1


def _seed(value):
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"must be 0..{MAX_SEED} (32 bits), not {value}")
    return value


def _threads(value):
    cores = os.cpu_count() or 1
    if value > cores:
        raise ValueError(f"must be at most this machine's {cores} cores, not {value}")
    return value


def _finite(value):
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"must be a finite number, not {value}")
    return value


def _not_negative(value):
    if not value >= 0:
        raise ValueError(f"must be at least 0, not {value:g}")
    return value


def _not_empty(value):
    if value.strip() == "":
        raise ValueError("must not be empty (leave the option out for its default)")
    return value


#: dest -> extra checks of an option's value, beyond its type: one table for every command.
_VALUE_CHECKS = {"seed": (_seed,), "threads": (_threads,), "max_build_minutes": (_not_negative,)}


def checked_options(parser):
    """Give every option of ``parser`` and its subcommands the checks of its value class, as
    argparse types (so a bad value is a one-line usage error before anything runs): a float is
    finite (no nan, no inf), a string option not empty (unless a file name, refused by its own
    reader), and by name: ``--seed`` 0..2**32-1, ``--threads`` at most the machine's cores,
    ``--max-build-minutes`` at least 0 (0: no first build).  Returns the parser."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                checked_options(sub)
            continue
        if not action.option_strings or action.nargs == 0 or action.const is not None:
            continue
        checks = list(_VALUE_CHECKS.get(action.dest, ()))
        if action.type is float:
            checks.insert(0, _finite)
        if action.type is None and action.dest not in _PATH_OPTIONS and not action.choices:
            checks.insert(0, _not_empty)
        if checks:
            action.type = _checked_type(action.type or str, checks)
    return parser


def _checked_type(base, checks):
    def convert(text):
        import argparse

        value = base(text)                      # ValueError: argparse's "invalid int value"
        try:
            for check in checks:
                value = check(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value
    convert.__name__ = getattr(base, "__name__", "value")
    return convert


def check_output(path, *, inputs=(), suffix: str | None = None) -> Path:
    """Validate an output path before any work is done; return it as a Path.

    Refuses an empty path, a path ending in a slash (a folder's name, whether or not it
    exists), an existing folder or any other existing thing that is not a regular file (a
    device, a FIFO, a socket: ``os.replace`` would put a file in its place), a path equal to one
    of ``inputs`` (same file after resolving links), a missing parent folder, a name whose
    temporary sibling (see :func:`atomic_write`) would exceed the file system's name or path
    limits, and a folder where no file can be created: the temporary file is created and
    removed here, so /proc, /sys, read-only mounts and permission problems fail before the
    long work, whatever ``os.access`` says (root).  ``suffix`` is appended when the name lacks
    it (numpy's savez does the same, so the checked path is the written one).  Every OSError
    of the checks (a too-long input name, a loop of links) is one CliError line.
    """
    if path is None or str(path).strip() == "":
        raise CliError("output path is empty")
    raw = os.fspath(path)
    if raw.endswith(("/", os.sep)) or Path(raw).name in ("", ".", ".."):
        raise CliError(f"output path {raw} is a folder name (it ends with a slash or is . or "
                       "..), expected a file name")
    out = Path(raw)
    if suffix and out.suffix != suffix:
        out = out.with_name(out.name + suffix)
    try:
        _check_name_lengths(out)
        if out.is_dir():
            raise CliError(f"output path {out} is a folder, expected a file name")
        if not out.parent.is_dir():
            raise CliError(f"output folder {out.parent} does not exist")
        _refuse_non_regular(out)
        resolved = out.resolve()
        for inp in inputs:
            if inp is None or str(inp) == "":
                continue
            p = Path(inp)
            try:
                same = p.resolve() == resolved
                if not same and p.exists() and out.exists():
                    same = os.path.samefile(p, out)
            except OSError:              # an unreadable input (too long a name, ...) is
                same = False             # refused by its reader, in its own words
            if same:
                raise CliError(f"output path {out} is also an input file; refusing to overwrite it")
        _probe_folder(out)
    except OSError as exc:
        raise CliError(f"output path {out}: {exc.strerror or one_line(exc)}") from None
    return out


#: mkstemp's random part is this long (tempfile._RandomNameSequence); checked in the tests.
_TEMP_RANDOM = 8


def _temp_affixes(path: Path) -> tuple[str, str]:
    """The prefix and suffix of ``path``'s temporary sibling (atomic_write and its checks)."""
    return f".{path.name}.", path.suffix or ".tmp"


def _check_name_lengths(path: Path) -> None:
    """Refuse a path whose temporary sibling would be too long for the file system, before
    anything is done (not as ``OSError: File name too long`` after the work)."""
    prefix, suffix = _temp_affixes(path)
    parent = path.parent
    try:
        name_max = os.pathconf(parent if parent.is_dir() else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    try:
        path_max = os.pathconf(parent if parent.is_dir() else ".", "PC_PATH_MAX")
    except (OSError, ValueError):
        path_max = 4096
    temp_name = len(os.fsencode(prefix + suffix)) + _TEMP_RANDOM
    if len(os.fsencode(path.name)) > name_max or temp_name > name_max:
        raise CliError(f"output name {path.name[:40]}... is too long: its temporary file name "
                       f"would be {temp_name} bytes, the file system allows {name_max}")
    full = len(os.fsencode(os.path.abspath(parent))) + 1 + temp_name
    if full >= path_max:
        raise CliError(f"output path {str(path)[:40]}... is too long ({full} bytes with its "
                       f"temporary name, the limit is {path_max - 1})")


def _refuse_non_regular(path: Path) -> None:
    """Refuse an existing ``path`` (after links) that is not a regular file or a folder."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return                                       # a new name, or a dangling link
    if stat.S_ISDIR(st.st_mode):
        raise CliError(f"output path {path} is a folder, expected a file name")
    if not stat.S_ISREG(st.st_mode):
        raise CliError(f"output path {path} exists and is not a regular file ({_kind(st)}); "
                       "refusing to replace it")


def _kind(st) -> str:
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(st.st_mode):
            return name
    return "a special file"


def _probe_folder(path: Path) -> None:
    """Create and remove ``path``'s temporary sibling: the folder really takes new files."""
    prefix, suffix = _temp_affixes(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    except OSError as exc:
        raise CliError(f"cannot create files in output folder {path.parent} "
                       f"({exc.strerror or one_line(exc)})") from None
    os.close(fd)
    os.unlink(tmp)


def atomic_write(path, write) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    On any failure (or interruption) the temporary file is removed and ``path`` is untouched.
    A ``path`` that has become anything but a regular file since :func:`check_output` (a
    device, a FIFO, a folder) is refused, never replaced.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise CliError(f"output folder {path.parent} does not exist")
    _check_name_lengths(path)
    _refuse_non_regular(path)
    prefix, suffix = _temp_affixes(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    os.close(fd)
    try:
        os.chmod(tmp, new_file_mode())  # mkstemp makes 0600; the result is an ordinary file
        write(tmp)
        _refuse_non_regular(path)
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
        print(f"velcro: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("velcro: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("velcro: terminated", file=sys.stderr)
        return 143
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
