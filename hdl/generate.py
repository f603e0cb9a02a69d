"""Generate the accelerator's Verilog for one configuration.

    python -m hdl.generate                       # default: 16 x (64x64, 3x3, C_in 1)
    python -m hdl.generate --instances 4 --height 32 --width 32 --in-channels 8 --out build/x.v

Each configuration is generated once into ``build/rtl/<tag>/`` (``velcro_accel.v`` plus
``config.json``) and reused until the generator's sources change.  Generation is safe to run
from several processes at once: one file lock per folder, and every file is written under a
unique temporary name and renamed into place.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat
import sys
import tempfile
from pathlib import Path

from py_ref.errors import error_line
from py_ref.outputs import write_atomically

from .config import AccelConfig, ConfigError
from .synthesis import merge_identical_modules, strip_uram_init

TOP = "velcro_accel"
REPO = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("VELCRO_BUILD", REPO / "build"))


def _generator_digest() -> str:
    h = hashlib.sha1()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.read_bytes())
    return h.hexdigest()


def content_stamp(inputs: str, files) -> str:
    """A cache entry's stamp: the digest of what it was made from (``inputs``) and the SHA-256
    of every file it consists of.  Written last, after the files are complete; an entry is
    valid only while :func:`stamp_is_valid` finds every file with its recorded content, so a
    truncated, emptied or half-written file is rebuilt instead of used."""
    return json.dumps({"inputs": inputs,
                       "files": {Path(f).name: _file_digest(Path(f)) for f in files}},
                      sort_keys=True)


def stamp_is_valid(stamp: Path, inputs: str, files) -> bool:
    """True if ``stamp`` (:func:`content_stamp`) records ``inputs`` and every one of ``files``
    exists as a regular file with the recorded content.  Any problem (a missing, unreadable or
    old-format stamp, a file changed since) means False: rebuild."""
    try:
        record = json.loads(Path(stamp).read_text())
        if not isinstance(record, dict) or record.get("inputs") != inputs:
            return False
        recorded = record.get("files")
        return (isinstance(recorded, dict) and len(recorded) == len(files)
                and all(recorded.get(Path(f).name) == _file_digest(Path(f)) for f in files))
    except (OSError, ValueError, RecursionError):
        return False


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise OSError(f"{path} is not a regular file")
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_build_folder(folder: Path) -> None:
    """Refuse, before anything is made, a cache folder that cannot be one: ``folder`` or the
    nearest of its existing parents is not a folder (a file, a device), or no file can be
    created in it (/proc, /sys, read-only).  Creates nothing (a refused run leaves no build
    root behind).  Raises NotADirectoryError / PermissionError-like OSError with a message."""
    folder = Path(folder)
    for p in (folder, *folder.parents):
        try:
            st = os.stat(p)
        except (FileNotFoundError, NotADirectoryError):    # a parent decides (maybe a file)
            continue
        except OSError as exc:
            raise OSError(exc.errno, f"build folder {folder}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(f"build folder {folder}: {p} is not a folder "
                                     "(set VELCRO_BUILD to a folder)")
        try:
            fd, tmp = tempfile.mkstemp(dir=p, prefix=".velcro-probe.")
        except OSError as exc:
            raise OSError(exc.errno, f"build folder {folder}: cannot create files in {p} "
                                     f"({exc.strerror}); set VELCRO_BUILD to a writable "
                                     "folder") from None
        os.close(fd)
        os.unlink(tmp)
        return


def write_verilog(cfg: AccelConfig, path: Path, component=None, name: str = TOP) -> Path:
    """Convert ``component`` (default: the accelerator for ``cfg``) to Verilog at ``path``,
    without the zero initialisation of the UltraRAM memories (:func:`hdl.synthesis.
    strip_uram_init`: Vivado cannot initialise URAM; they are written before they are read)
    and with identical sibling modules merged into one (:func:`hdl.synthesis.
    merge_identical_modules`: the P datapaths are one module ``velcro_datapath`` instantiated
    as ``datapath0`` .. ``datapath<P-1>``, the walkers one ``velcro_walker``). Every
    simulation, lint, ``make synth`` and ``make kernel`` use this text."""
    from amaranth.back import verilog
    from .engine import VelcroAccelerator

    component = component if component is not None else VelcroAccelerator(cfg)
    text = merge_identical_modules(strip_uram_init(
        verilog.convert(component, name=name, emit_src=False)))
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, text)
    return path


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (py_ref.outputs.write_atomically)."""
    write_atomically(path, lambda tmp: Path(tmp).write_text(text))


def rtl_is_current(cfg: AccelConfig, name: str = TOP) -> bool:
    """True if ``generated_rtl(cfg, ..., name)`` would reuse its cached file (no generation)."""
    folder = BUILD / "rtl" / cfg.tag
    stamp = folder / f"{name}.sha1"
    return stamp_is_valid(stamp, _generator_digest(), [folder / f"{name}.v"])


def generated_rtl(cfg: AccelConfig, component_factory=None, name: str = TOP) -> Path:
    """Path of the cached Verilog of ``component_factory(cfg)`` (default: the accelerator),
    ``build/rtl/<tag>/<name>.v``, generated if missing or stale."""
    from filelock import FileLock

    folder = BUILD / "rtl" / cfg.tag
    path = folder / f"{name}.v"
    stamp = folder / f"{name}.sha1"
    digest = _generator_digest()
    folder.mkdir(parents=True, exist_ok=True)
    # One generator per folder at a time; a second process waits, then finds the stamp fresh.
    with FileLock(str(folder / ".lock")):
        if not stamp_is_valid(stamp, digest, [path]):
            stamp.unlink(missing_ok=True)          # an interrupted generation is never "fresh"
            component = component_factory(cfg) if component_factory is not None else None
            write_verilog(cfg, path, component=component, name=name)
            _write_atomic(folder / "config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
            _write_atomic(stamp, content_stamp(digest, [path]))     # last: the entry is complete
    return path


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    d = AccelConfig()
    parser.add_argument("--height", type=int, default=d.height, help="largest ifmap/ofm height of a layer (4..256); "
                        "every smaller layer runs on the design")
    parser.add_argument("--width", type=int, default=d.width, help="largest ifmap/ofm width (4..256)")
    parser.add_argument("--in-channels", type=int, default=d.in_channels, help="largest C_in (1..64)")
    parser.add_argument("--instances", type=int, default=d.instances,
                        help="P conv2d+ReLU instances sharing the layer's work (1..64)")
    parser.add_argument("--out-channels", type=int, default=None,
                        help="largest N, output channels of a layer (1..256, default P)")
    parser.add_argument("--lanes", type=int, default=None,
                        help="input channels consumed per cycle (default min(C_in, 16))")
    parser.add_argument("--bus-width", type=int, default=d.bus_width, help="stream width in bits")


def config_from_args(args) -> AccelConfig:
    """The design the options of :func:`add_config_arguments` describe; ConfigError if it is
    out of range or one the engine cannot be built for (hdl.engine.check_buildable)."""
    from .engine import check_buildable     # Amaranth, loaded as write_verilog loads it: late

    cfg = AccelConfig(height=args.height, width=args.width, in_channels=args.in_channels,
                      instances=args.instances, lanes=args.lanes, bus_width=args.bus_width,
                      out_channels=args.out_channels)
    check_buildable(cfg)
    return cfg


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hdl.generate", description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--out", type=Path, default=None,
                        help="output .v file (default build/velcro_accel.v for the default "
                             "configuration, build/rtl/<tag>/velcro_accel.v otherwise)")
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args)
    except ConfigError as exc:
        print(error_line(exc, "generate"), file=sys.stderr)
        return 2
    out = args.out or (BUILD / f"{TOP}.v" if cfg == AccelConfig() else BUILD / "rtl" / cfg.tag / f"{TOP}.v")
    write_verilog(cfg, out)
    _write_atomic(out.with_suffix(".json"), json.dumps(cfg.to_dict(), indent=2) + "\n")
    print(f"wrote {out} ({cfg.tag})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
