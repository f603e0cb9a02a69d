"""Read a FRAME.npz from a user: any unreadable or wrong file becomes one :class:`CliError` line.

    frame = read_frame(path)          # py_ref.golden.Frame, validated
    frame, ifmaps = read_batch(path)  # ifmap [C_in,H,W] or a batch [B,C_in,H,W]: frame + [B,...]

Used by ``velcro sim`` and the U280 host example.  A missing file, a folder, a .npy file, a text
file, a truncated or bit-flipped archive (zip, CRC and zlib errors), an array of Python objects:
each gets its own message, never numpy's advice about ``allow_pickle`` (pickles are never
loaded).  Validation (and the conversion of big-endian arrays) is :meth:`Frame.from_arrays`'s.
"""

from __future__ import annotations

import os
import re
import stat
import zipfile
from pathlib import Path

import numpy as np

from .errors import CliError, one_line
from .golden import FRAME_ARRAYS, Frame, FrameError

__all__ = ["read_frame", "read_batch", "read_frame_arrays"]

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")     # a zip member, an empty zip
_NPY_MAGIC = b"\x93NUMPY"
_EXPECTED = "expected a .npz archive of the arrays " + ", ".join(FRAME_ARRAYS)


def read_frame(path) -> Frame:
    """Load and validate the frame in ``path``; raise CliError (one line) on any problem."""
    arrays = read_frame_arrays(path)
    try:
        return Frame.from_arrays(arrays)
    except FrameError as exc:
        raise CliError(f"{path}: {exc}") from None


def read_batch(path) -> tuple[Frame, np.ndarray | None]:
    """Load a frame whose ``ifmap`` may be one image [C_in, H, W] or a batch [B, C_in, H, W]
    sharing the other arrays.  Returns the validated frame of the first image and the batch
    (int8 [B, C_in, H, W], every image validated), or ``(frame, None)`` for one image."""
    arrays = read_frame_arrays(path)
    ifmap = arrays.get("ifmap")
    if ifmap is None or ifmap.ndim != 4:
        try:
            return Frame.from_arrays(arrays), None
        except FrameError as exc:
            raise CliError(f"{path}: {exc}") from None
    if len(ifmap) == 0:
        raise CliError(f"{path}: array 'ifmap' holds a batch of no image, expected [B, C_in, H, W] "
                       "with B at least 1")
    try:
        frames = [Frame.from_arrays({**arrays, "ifmap": image}) for image in ifmap]
    except FrameError as exc:
        raise CliError(f"{path}: {exc} (in the batch [B, C_in, H, W])") from None
    return frames[0], np.stack([f.ifmap for f in frames])


#: The largest shape of every member (the generator's maxima, hdl/config.py: H, W <= 256,
#: C_in <= 64, N <= 256; a batch of at most 65535 images, hdl.protocol.MAX_BATCH).  Checked
#: from the npy headers before anything is inflated; tests/test_hostile.py keeps them equal to
#: hdl's.
MAX_HEIGHT = MAX_WIDTH = 256
MAX_IN_CHANNELS = 64
MAX_OUT_CHANNELS = 256
MAX_BATCH = (1 << 16) - 1
MAX_SHAPES = {
    "ifmap": ((("in_channels", MAX_IN_CHANNELS), ("height", MAX_HEIGHT), ("width", MAX_WIDTH)),
              (("images", MAX_BATCH), ("in_channels", MAX_IN_CHANNELS), ("height", MAX_HEIGHT),
               ("width", MAX_WIDTH))),
    "weight": ((("out_channels", MAX_OUT_CHANNELS), ("in_channels", MAX_IN_CHANNELS),
                ("kernel height", 3), ("kernel width", 3)),),
    "bias": ((("out_channels", MAX_OUT_CHANNELS),),),
    "mult": ((("out_channels", MAX_OUT_CHANNELS),),),
    "shift": ((("out_channels", MAX_OUT_CHANNELS),),),
    "mask": ((("out_channels", MAX_OUT_CHANNELS), ("height", MAX_HEIGHT), ("width", MAX_WIDTH)),),
    "means": ((("out_channels", MAX_OUT_CHANNELS), ("height", MAX_HEIGHT), ("width", MAX_WIDTH)),),
}


def _shape_limit(name: str, shape: tuple, itemsize: int) -> str | None:
    """Why ``shape`` of member ``name`` is beyond the maxima (None if it is not).  A shape of
    another rank is left to the frame's validation unless it holds more than the largest
    allowed shape would."""
    limits = MAX_SHAPES[name]
    for lim in limits:
        if len(lim) == len(shape):
            for (axis, most), d in zip(lim, shape):
                if d > most:
                    return (f"{axis}={d} is out of range (the generator's maximum is {most}) in "
                            f"array '{name}' {list(shape)}")
            return None
    most = max(int(np.prod([m for _, m in lim], dtype=object)) for lim in limits)
    if int(np.prod(shape, dtype=object)) > most:
        return f"array '{name}' has shape {list(shape)}, more elements than any frame's"
    return None


def memory_budget() -> int:
    """Bytes a frame's arrays may take once inflated: half the memory available now
    (``$VELCRO_MAX_FRAME_BYTES`` overrides it)."""
    env = os.environ.get("VELCRO_MAX_FRAME_BYTES")
    if env:
        return int(env)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (OSError, ValueError):
        return 4 << 30


def _open_regular(path: Path):
    """Open ``path`` for reading without blocking (a FIFO or a device never hangs ``open``) and
    refuse anything that is not a regular file; return the binary file object."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CliError(f"cannot read {path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"cannot read {path}: it is a folder; {_EXPECTED}") from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or one_line(exc)}") from None
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        os.close(fd)
        raise CliError(f"cannot read {path}: it is a folder; {_EXPECTED}")
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise CliError(f"cannot read {path}: not a regular file (a FIFO, device or socket); "
                       f"{_EXPECTED}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _npy_header(member) -> tuple[tuple, np.dtype, int]:
    """(shape, dtype, header length) of an opened .npy member, reading its header only."""
    fmt = np.lib.format
    version = fmt.read_magic(member)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, _, dtype = fmt.read_array_header_2_0(member)
    else:
        shape, _, dtype = fmt._read_array_header(member, version)    # 3.0: utf8 names
    return shape, dtype, member.tell()


def _check_members(path: Path, archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The frame's members by array name, every one checked from its header before anything is
    inflated: no name twice (``ifmap.npy`` twice, or ``ifmap`` next to ``ifmap.npy``), no
    Python objects, no shape beyond :data:`MAX_SHAPES`, a declared size that is the header's,
    and all of them together within :func:`memory_budget`."""
    members, total = {}, 0
    for info in archive.infolist():
        name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if name in members:
            raise CliError(f"cannot read {path}: array '{name}' is stored twice "
                           f"({members[name].filename} and {info.filename})")
        members[name] = info
    budget = memory_budget()
    for name, info in members.items():
        if name not in FRAME_ARRAYS:
            continue
        with archive.open(info) as member:
            shape, dtype, offset = _npy_header(member)
        if dtype.hasobject:
            raise CliError(f"cannot read {path}: array '{name}' holds Python objects, which are "
                           "never loaded; store numeric arrays")
        why = _shape_limit(name, shape, dtype.itemsize)
        if why:
            raise CliError(f"cannot read {path}: {why}; refused before loading")
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if info.file_size != offset + nbytes:
            raise CliError(f"cannot read {path}: damaged .npz archive (array '{name}' holds "
                           f"{info.file_size} bytes, its header says {offset + nbytes})")
        total += nbytes
    if total > budget:
        raise CliError(f"cannot read {path}: its arrays would take {total / 2**30:.1f} GB, more "
                       f"than the {budget / 2**30:.1f} GB this machine has free for them "
                       "(refused before loading)")
    return members


def read_frame_arrays(path) -> dict[str, np.ndarray]:
    """The frame arrays stored in ``path`` (those of FRAME_ARRAYS that are present); raise
    CliError if the file cannot be read as a .npz archive.  Nothing is inflated before every
    member's header has been checked (:func:`_check_members`), and nothing blocks (a FIFO)."""
    if path is None or str(path) == "":
        raise CliError("the frame path is empty")
    path = Path(path)
    f = _open_regular(path)
    with f:
        try:
            head = f.read(len(_NPY_MAGIC))
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror or one_line(exc)}") from None
        if head.startswith(_NPY_MAGIC):
            raise CliError(f"cannot read {path}: it is a .npy file (a single array); {_EXPECTED}")
        if not head.startswith(_ZIP_MAGIC):
            raise CliError(f"cannot read {path}: not a .npz archive; {_EXPECTED}")
        f.seek(0)
        name = None
        try:
            arrays = {}
            with zipfile.ZipFile(f) as archive:
                members = _check_members(path, archive)
                for name, info in members.items():     # every CRC, before any parsing
                    if name in FRAME_ARRAYS:
                        with archive.open(info) as member:
                            try:
                                while member.read(1 << 20):
                                    pass
                            except zipfile.BadZipFile:
                                raise CliError(f"cannot read {path}: damaged .npz archive "
                                               f"(checksum error in {info.filename})") from None
                name = None
                f.seek(0)
                with np.load(f, allow_pickle=False) as npz:
                    for name in npz.files:
                        if name in FRAME_ARRAYS:
                            arrays[name] = npz[name]
        except CliError:
            raise
        except zipfile.BadZipFile as exc:
            bad = re.search(r"Bad CRC-32 for file '(.*)'", str(exc))
            if not bad:
                raise CliError(f"cannot read {path}: damaged or unsupported .npz archive"
                               f"{_where(name)} ({_reason(exc)})") from None
            raise CliError(f"cannot read {path}: damaged .npz archive (checksum error in "
                           f"{bad.group(1)})") from None
        except MemoryError:
            raise CliError(f"cannot read {path}: damaged .npz archive "
                           f"(array '{name}' claims more memory than there is)") from None
        # The file is untrusted input: zipfile, zlib and numpy's header parser raise many kinds
        # of error for a damaged archive (BadZipFile, zlib.error, ValueError, EOFError,
        # KeyError, SyntaxError, OverflowError, NotImplementedError, ...): all "cannot read".
        except Exception as exc:                         # noqa: BLE001
            raise CliError(f"cannot read {path}: damaged or unsupported .npz archive"
                           f"{_where(name)} ({_reason(exc)})") from None
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray):
            raise CliError(f"cannot read {path}: member '{name}' is not a numpy array")
    return arrays


def _where(name) -> str:
    return f" in array '{name}'" if name else ""


def _reason(exc: BaseException) -> str:
    text = one_line(exc)
    if "pickle" in text:          # numpy's advice to pass allow_pickle=True: never followed here
        return "it holds Python objects, which are never loaded; store numeric arrays"
    text = text[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
