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
        self.runner = get_runner(self.sim)
        # Yosys' Verilog wakes its `always @*` blocks at time 0 through a declaration
        # initialiser, which Icarus honours as an event in Verilog-2005 mode only.
        build_args = ["-g2005"] if self.sim == "icarus" else []
        if self.sim == "verilator":
            build_args = [str(LINT_WAIVERS), "-Wno-fatal", "-O3", "--x-assign", "fast",
                          "--x-initial", "fast", "-j", str(os.cpu_count() or 1)]
            if self.saif:
                build_args += ["--trace-saif"]
        fresh = stamp.exists() and stamp.read_text() == digest
        self.runner.build(sources=self.sources, hdl_toplevel=self.toplevel,
                          build_dir=self.build_dir, timescale=("1ns", "1ps"),
                          build_args=build_args, waves=self.saif, always=not fresh)
        stamp.write_text(digest)

    def run(self, test_module: str, testcases=None, env=None, test_dir=None) -> Path:
        """Run cocotb ``testcases`` of ``test_module``; raise SimulationFailed if any fails."""
        from cocotb_tools.runner import get_results

        test_dir = Path(test_dir or self.build_dir / "run")
        test_dir.mkdir(parents=True, exist_ok=True)
        results = test_dir / "results.xml"
        extra_env = {"VELCRO_CONFIG": self.cfg.to_json(), **(env or {})}
        try:
            self.runner.test(test_module=test_module, hdl_toplevel=self.toplevel,
                             testcase=testcases, build_dir=self.build_dir, test_dir=test_dir,
                             extra_env=extra_env, results_xml=str(results.resolve()),
                             waves=self.saif, timescale=("1ns", "1ps"))
        except SystemExit as exc:
            raise SimulationFailed(f"{self.sim}: cocotb run of {test_module} failed ({exc.code})") from None
        tests, failed = get_results(results)
        if tests == 0 or failed:
            raise SimulationFailed(f"{self.sim}: {failed} of {tests} cocotb tests failed "
                                   f"(log above, results in {results})")
        return test_dir
