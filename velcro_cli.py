"""``velcro``: the project's command line.

    velcro sim FRAME.npz --out RESULT.npz [--sim verilator|icarus] [--verbose]
    velcro profile | compress | evaluate | export ...   (VELCRO algorithm, see py_ref/)
    velcro --version

Bad input gets a one-line ``velcro: error: ...`` on stderr, exit status 2, and no output file
(see py_ref/cli.py). ``velcro sim`` writes only its result line to stdout; progress, the build
estimate and the simulator's chatter go to stderr, the compiler's output to the build log.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

DIST = "velcro-accel"
RESULT_ARRAYS = ("ofm", "compute_cycles", "total_cycles", "batch_cycles", "load_cycles",
                 "drain_cycles", "mac_active_cycles", "computed", "skipped",
                 "computed_per_instance")


def version() -> str:
    """The installed distribution's version, else pyproject.toml's (a checkout run in place)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(DIST)
    except PackageNotFoundError:
        pass
    try:
        import tomllib

        pyproject = Path(__file__).resolve().parent / "pyproject.toml"
        return tomllib.loads(pyproject.read_text())["project"]["version"]
    except (OSError, KeyError, ValueError):
        return "0.1.0"


@contextlib.contextmanager
def _stdout_to_stderr():
    """Send file descriptor 1 to stderr meanwhile: whatever the simulator, cocotb or a library
    prints while building or simulating cannot mix with the result line on stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _progress(message: str) -> None:
    print(f"velcro sim: {message}", file=sys.stderr, flush=True)


def _cmd_sim(args) -> int:
    import subprocess

    import numpy as np

    from hdl.config import ConfigError
    from py_ref.cli import CliError, atomic_write, check_output
    from hdl.contract import config_for_frame
    from py_ref.frame_file import read_batch

    # Everything the user gave is checked before anything is generated, built or simulated.
    out = check_output(args.out, inputs=[args.frame])
    if not os.access(out.parent, os.W_OK):
        raise CliError(f"output folder {out.parent} is not writable")
    frame, batch = read_batch(args.frame)
    try:
        cfg = config_for_frame(frame, instances=args.instances)
    except ConfigError as exc:
        raise CliError(f"{args.frame}: frame does not fit the generator: {exc}") from None

    from sim.frame_runner import run_frame
    from sim.runner import Build, BuildFailed, SimulationFailed, estimate_build
    from sim.toolchain import ToolchainError

    try:
        build = Build(cfg, args.sim, defer=True, verbose=args.verbose)
        if build.is_current():
            _progress(f"{cfg.tag} on {args.sim} (cached build)")
        else:
            est = estimate_build(cfg, args.sim, generate=build.needs_generation())
            if est.too_big:
                raise CliError(f"building {cfg.tag} for {args.sim} would take {est}: more than "
                               f"this machine's {est.machine_megabytes / 1024:.1f} GB")
            if est.seconds > args.max_build_minutes * 60:
                raise CliError(f"building {cfg.tag} for {args.sim} would take {est}: over "
                               f"--max-build-minutes={args.max_build_minutes:g} (raise it to "
                               f"build anyway)")
            _progress(f"building {cfg.tag} for {args.sim} (first time, {est})")
        with _stdout_to_stderr():
            result = run_frame(frame, build=build, progress=_progress, batch=batch)
    except BuildFailed as exc:
        raise CliError(f"{args.sim} build failed, see {exc.log or 'the output above'}") from None
    except SimulationFailed as exc:
        raise CliError(f"simulation failed, see {exc.log or 'the output above'}") from None
    except ToolchainError as exc:
        raise CliError(str(exc)) from None
    except (subprocess.CalledProcessError, SystemExit) as exc:   # a cocotb runner path we missed
        raise CliError(f"simulation failed ({exc!r}); run again with --verbose") from None

    def write(tmp):
        with open(tmp, "wb") as f:                   # a file object: savez adds no suffix
            np.savez(f, **{k: result[k] for k in RESULT_ARRAYS})

    try:
        atomic_write(out, write)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from None
    images = "" if batch is None else f"images={len(batch)} batch_cycles={int(result['batch_cycles'])} "
    print(f"{images}compute_cycles={int(np.max(result['compute_cycles']))} "
          f"total_cycles={int(result['total_cycles'])} "
          f"max_uncompressed={int(frame.uncompressed.max())} -> {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from py_ref import commands

    from py_ref.cli import one_line_errors

    parser = one_line_errors(argparse.ArgumentParser(prog="velcro",
                                                     description=__doc__.splitlines()[0]))
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    p = one_line_errors(sub.add_parser("sim", help="run one FRAME.npz through the RTL simulation",
                       description="Run one FRAME.npz through the generated Verilog (built once "
                                   "per frame shape, cached in build/sim/) and write its output "
                                   "map and hardware counters."))
    p.add_argument("frame", help="FRAME.npz with ifmap, weight, bias, mask, means, mult, shift "
                                 "(np.savez or `velcro export` writes one)")
    p.add_argument("--out", required=True,
                   help="RESULT.npz to write: ofm and the hardware counters (written atomically; "
                        "must not be the input file)")
    p.add_argument("--sim", choices=("verilator", "icarus"), default="verilator",
                   help="simulator (default verilator: slower to build, much faster to run)")
    p.add_argument("--verbose", action="store_true",
                   help="show the compiler's output live on stderr instead of writing it to "
                        "the build log (build/sim/<sim>/<tag>/build.log)")
    p.add_argument("--instances", type=int, default=None, metavar="P",
                   help="datapaths of the design that runs the frame (default 16); any number "
                        "of output channels N runs on them")
    p.add_argument("--max-build-minutes", type=float, default=60, metavar="M",
                   help="refuse a first build estimated to take longer than M minutes "
                        "(default 60)")
    p.set_defaults(func=_cmd_sim)
    commands.register(sub)
    return parser


def _main(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


def main(argv=None) -> int:
    try:
        from py_ref.cli import main_guard
    except ModuleNotFoundError as exc:
        return _broken_install(exc)
    try:
        return main_guard(_main, argv)
    except ModuleNotFoundError as exc:      # numpy, torch, amaranth, a project module, ...
        return _broken_install(exc)


def _broken_install(exc: ModuleNotFoundError) -> int:
    missing = getattr(exc, "name", None) or str(exc)
    print(f"velcro: error: broken install: {missing} is missing (run make venv)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
