"""Output files: checked before the long work, written atomically.

* :func:`check_output` refuses a path before any work is done (not a folder, not empty, not
  one of the inputs, not an existing non-regular file, its folder exists and takes new files,
  names within the file system's limits), as one :class:`~py_ref.errors.CliError` line;
* :func:`write_atomically` is the project's one atomic write: a temporary name in the same
  folder, then a rename, so no partial or overwritten file is ever left behind, with the
  permissions ``open(path, "w")`` would give (:func:`new_file_mode`); the generated Verilog,
  the simulator's stamps and kept logs use it as they are;
* :func:`atomic_write` is that write for a user's output path, which it checks again;
* :func:`write_folder` is the same for a whole folder (make kernel's, the deploy folder).

It imports nothing from hdl/ (py_ref sits at the bottom of the layers).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from .errors import CliError, one_line

__all__ = ["check_output", "atomic_write", "write_atomically", "write_folder", "new_file_mode",
           "umask"]


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


def write_atomically(path, write, *, before_replace=None) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it into place.

    The temporary file gets the permissions of a new file (mkstemp makes 0600) and a unique
    name, so two writers never share one; on any failure (or interruption) it is removed and
    ``path`` is untouched.  ``before_replace()``, if given, runs just before the rename.
    """
    path = Path(path)
    prefix, suffix = _temp_affixes(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    os.close(fd)
    try:
        os.chmod(tmp, new_file_mode())
        write(tmp)
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write(path, write) -> Path:
    """:func:`write_atomically` to a user's output path (see :func:`check_output`).

    A ``path`` that has become anything but a regular file since :func:`check_output` (a
    device, a FIFO, a folder) is refused, never replaced.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise CliError(f"output folder {path.parent} does not exist")
    _check_name_lengths(path)
    _refuse_non_regular(path)
    return write_atomically(path, write, before_replace=lambda: _refuse_non_regular(path))


def umask() -> int:
    """The process's umask (reading it means setting it: set it back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The permissions ``open(path, "w")`` would give a new file (0666 minus the umask)."""
    return 0o666 & ~umask()


def write_folder(out: Path, write) -> None:
    """``write(tmp)`` fills a temporary folder beside ``out``, which then replaces ``out``; on
    any failure or interruption the temporary folder goes and ``out`` is left as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    old = None
    try:
        os.chmod(tmp, 0o777 & ~umask())
        write(tmp)
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old."))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
        if old is not None:
            shutil.rmtree(old)
