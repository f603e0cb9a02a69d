"""Read a FRAME.npz from a user: any unreadable or wrong file becomes one :class:`CliError` line.

    frame = read_frame(path)          # py_ref.golden.Frame, validated
    frame, ifmaps = read_batch(path)  # ifmap [C_in,H,W] or a batch [B,C_in,H,W]: frame + [B,...]

Used by ``velcro sim`` and the U280 host example.  A missing file, a folder, a .npy file, a text
file, a truncated or bit-flipped archive (zip, CRC and zlib errors), an array of Python objects:
each gets its own message, never numpy's advice about ``allow_pickle`` (pickles are never
loaded).  Validation (and the conversion of big-endian arrays) is :meth:`Frame.from_arrays`'s.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .cli import CliError, one_line
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


def read_frame_arrays(path) -> dict[str, np.ndarray]:
    """The frame arrays stored in ``path`` (those of FRAME_ARRAYS that are present); raise
    CliError if the file cannot be read as a .npz archive."""
    if path is None or str(path) == "":
        raise CliError("the frame path is empty")
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(len(_NPY_MAGIC))
    except FileNotFoundError:
        raise CliError(f"cannot read {path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"cannot read {path}: it is a folder; {_EXPECTED}") from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or one_line(exc)}") from None
    if head.startswith(_NPY_MAGIC):
        raise CliError(f"cannot read {path}: it is a .npy file (a single array); {_EXPECTED}")
    if not head.startswith(_ZIP_MAGIC):
        raise CliError(f"cannot read {path}: not a .npz archive; {_EXPECTED}")
    name = None
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()                  # every member's CRC, before any parsing
        if bad is not None:
            raise CliError(f"cannot read {path}: damaged .npz archive (checksum error in {bad})")
        arrays = {}
        with np.load(path, allow_pickle=False) as npz:
            for name in npz.files:
                if name in FRAME_ARRAYS:
                    arrays[name] = npz[name]
    except CliError:
        raise
    except MemoryError:
        raise CliError(f"cannot read {path}: damaged .npz archive "
                       f"(array '{name}' claims more memory than there is)") from None
    # The file is untrusted input: zipfile, zlib and numpy's header parser raise many kinds of
    # error for a damaged archive (BadZipFile, zlib.error, ValueError, EOFError, KeyError,
    # SyntaxError, OverflowError, NotImplementedError, ...); all of them mean "cannot read".
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
