"""``velcro``: the project's command line.

    velcro sim FRAME.npz --out RESULT.npz [--sim verilator|icarus] [--verbose]
    velcro network --task footwear --uniform 0.3 | --masks M.pt --images K --out NET.npz
    velcro profile | compress | evaluate | export ...   (VELCRO algorithm, see py_ref/)
    velcro --version

Bad input gets a one-line ``velcro: error: ...`` on stderr, exit status 2, and no output file
(see py_ref/errors.py). ``velcro sim`` writes only its result line to stdout; progress, the build
estimate and the simulator's chatter go to stderr, the compiler's output to the build log.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

DIST = "velcro-accel"


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


def _cached_build(cfg, args, say):
    """The simulator build of ``cfg`` for ``args.sim``; a first build estimated beyond this
    machine's memory or ``--max-build-minutes`` is refused before it starts."""
    from py_ref.errors import CliError
    from sim.runner import Build, estimate_build

    build = Build(cfg, args.sim, defer=True, verbose=args.verbose,
                  waves=getattr(args, "waves", None))
    if build.is_current():
        say(f"{cfg.tag} on {args.sim} (cached build)")
        return build
    est = estimate_build(cfg, args.sim, generate=build.needs_generation())
    if est.too_big:
        raise CliError(f"building {cfg.tag} for {args.sim} would take {est}: more than "
                       f"this machine's {est.machine_megabytes / 1024:.1f} GB")
    if est.seconds > args.max_build_minutes * 60:
        raise CliError(f"building {cfg.tag} for {args.sim} would take {est}: over "
                       f"--max-build-minutes={args.max_build_minutes:g} (raise it to "
                       f"build anyway)")
    say(f"building {cfg.tag} for {args.sim} (first time, {est})")
    return build


@contextlib.contextmanager
def _simulator_errors(sim: str):
    """A failed build or simulation, a missing tool: one CliError line."""
    import subprocess

    from py_ref.errors import CliError
    from sim.runner import BuildFailed, SimulationFailed
    from sim.toolchain import ToolchainError

    try:
        yield
    except BuildFailed as exc:
        raise CliError(f"{sim} build failed, see {exc.log or 'the output above'}") from None
    except SimulationFailed as exc:
        raise CliError(f"simulation failed, see {exc.log or 'the output above'}") from None
    except ToolchainError as exc:
        raise CliError(str(exc)) from None
    except (subprocess.CalledProcessError, SystemExit) as exc:   # a cocotb runner path we missed
        raise CliError(f"simulation failed ({exc!r}); run again with --verbose") from None


def _cmd_sim(args) -> int:

    import numpy as np

    from hdl.config import ConfigError
    from py_ref.errors import CliError
    from py_ref.outputs import atomic_write, check_output
    from hdl.contract import config_for_frame
    from py_ref.frame_file import read_batch

    # Everything the user gave is checked before anything is generated, built or simulated.
    out = check_output(args.out, inputs=[args.frame])
    if not os.access(out.parent, os.W_OK):
        raise CliError(f"output folder {out.parent} is not writable")
    waves = None
    if args.waves:                  # RESULT.npz -> RESULT.fst / RESULT.vcd beside it
        if args.sim == "icarus" and args.waves != "fst":
            raise CliError("--sim icarus writes --waves fst only")
        waves = check_output(out.with_suffix(f".{args.waves}"), inputs=[args.frame, out])
    frame, batch = read_batch(args.frame)
    try:
        cfg = config_for_frame(frame, instances=args.instances)
    except ConfigError as exc:
        raise CliError(f"{args.frame}: frame does not fit the generator: {exc}") from None

    from sim.frame_runner import golden_mismatch, run_frame

    from hdl.program import LayerProgram
    from sim.runner import about, estimate_run, run_cycles

    with _simulator_errors(args.sim):
        build = _cached_build(cfg, args, _progress)
        images = 1 if batch is None else len(batch)
        cycles = run_cycles(LayerProgram.for_frame(cfg, frame), images)
        _progress(f"{images} image{'s' * (images != 1)}, about {cycles:,} cycles to simulate: "
                  f"{about(estimate_run(cfg, args.sim, cycles))} once built")
        with _stdout_to_stderr():
            result = run_frame(frame, build=build, progress=_progress, batch=batch,
                               waves_path=waves)

    def write(tmp):
        with open(tmp, "wb") as f:                   # a file object: savez adds no suffix
            np.savez(f, **result.arrays(batched=batch is not None))

    try:
        atomic_write(out, write)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from None
    mismatch = golden_mismatch(frame, result, batch)
    if mismatch:                     # the RTL is wrong, not the input: exit 1, result kept
        print(f"velcro: error: golden check failed: {mismatch} (RTL result in {out})",
              file=sys.stderr)
        return 1
    _progress(f"golden check: bit-exact ({result.images} image"
              f"{'s' if result.images != 1 else ''} against py_ref.golden.golden_ofm)")
    # computed: the outputs the datapaths computed (sum over channels of U_n, per image) of
    # the N*H*W, i.e. 1 - C; golden=bit-exact: every ofm equals the golden model's
    total = frame.mask.size
    computed = int(frame.uncompressed.sum())
    if waves:
        _progress(f"waveform: {waves}")
    print(f"{result.summary()} computed={computed}/{total} C={1 - computed / total:.3f} "
          f"golden=bit-exact -> {out}")
    return 0


#: What NET.npz holds (``velcro network``); per-image arrays first, then per layer.
NET_ARRAYS = ("labels", "logits", "top1", "reference_logits", "top1_float", "top1_float_dense",
              "top1_int8_dense", "top1_torch_int8", "layer_names", "layer_ratio", "layer_cycles",
              "layer_dense_cycles", "layer_mac_utilisation", "layer_image_cycles",
              "layer_stream_cycles")


def _guarded_network(args) -> int:
    from py_ref.commands.common import command
    return command(_cmd_network)(args)


def _network_progress(message: str) -> None:
    print(f"velcro network: {message}", file=sys.stderr, flush=True)


def _cmd_network(args) -> int:
    import numpy as np

    from hdl.config import ConfigError
    from py_ref import commands
    from py_ref.errors import CliError
    from py_ref.outputs import atomic_write, check_output
    from py_ref.models import FMNIST_WEIGHTS

    inputs = [args.weights or FMNIST_WEIGHTS] + ([args.masks] if args.masks else [])
    out = check_output(args.out, inputs=inputs, suffix=".npz")
    if not os.access(out.parent, os.W_OK):
        raise CliError(f"output folder {out.parent} is not writable")
    setup = commands.network_setup(args)

    from sim.network import NETWORK_DESIGN, NetworkMismatch, layer_config, run_network

    qnet = setup["qnet"]
    try:
        configs = [layer_config(NETWORK_DESIGN, layer) for layer in qnet.layers]
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    try:
        with _simulator_errors(args.sim):
            build = _cached_build(NETWORK_DESIGN, args, _network_progress)
            with _stdout_to_stderr():
                result = run_network(qnet, setup["ifmaps"], args.sim, build=build,
                                     progress=_network_progress)
    except NetworkMismatch as exc:
        raise CliError(f"the RTL differs from the golden model: {exc}") from None
    layers = result["layers"]
    labels = setup["labels"]
    arrays = {
        "labels": labels, "logits": result["logits"],
        "top1": result["logits"].argmax(axis=1), "reference_logits": result["reference_logits"],
        "top1_float": setup["top1_float"], "top1_float_dense": setup["top1_float_dense"],
        "top1_int8_dense": setup["top1_int8_dense"],
        "top1_torch_int8": setup["top1_torch_int8"],
        "layer_names": np.array(qnet.names),
        "layer_ratio": np.array([f["ratio"] for f in layers]),
        "layer_cycles": np.array([f["cycles"] for f in layers], np.int64),
        "layer_dense_cycles": np.array([f["dense_cycles"] for f in layers], np.int64),
        "layer_mac_utilisation": np.array([f["mac_utilisation"] for f in layers]),
        "layer_image_cycles": np.stack([f["image_cycles"] for f in layers]),
        "layer_stream_cycles": np.array([f["stream_cycles"] for f in layers], np.int64),
    }
    assert tuple(arrays) == NET_ARRAYS

    def write(tmp):
        with open(tmp, "wb") as f:                   # a file object: savez adds no suffix
            np.savez(f, **arrays)

    try:
        atomic_write(out, write)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from None
    k = len(labels)
    for name, cfg, f in zip(qnet.names, configs, layers):
        print(f"{name}: C_in={cfg.in_channels} N={cfg.out_channels} {cfg.height}x{cfg.width} "
              f"C={100 * f['ratio']:.1f}% {f['cycles']} cycles/image (dense {f['dense_cycles']}, "
              f"speedup {f['dense_cycles'] / f['cycles']:.3f}) MAC utilisation "
              f"{100 * f['mac_utilisation']:.1f}%")
    dense, comp = arrays["layer_dense_cycles"].sum(), arrays["layer_cycles"].sum()

    def acc(pred):
        return f"{100 * float(np.mean(pred == labels)):.2f}%"
    print(f"network ({setup['task']}, {setup['how']}, {k} test images): every layer's ofm == "
          f"golden, logits == int8 reference; {comp} cycles/image (dense {dense}, speedup "
          f"{dense / comp:.3f})")
    print(f"top-1: RTL {acc(arrays['top1'])}, int8 reference "
          f"{acc(result['reference_logits'].argmax(axis=1))}, float {acc(setup['top1_float'])} "
          f"(uncompressed {acc(setup['top1_float_dense'])}), int8 uncompressed "
          f"{acc(setup['top1_int8_dense'])}, PyTorch int8 (uncompressed) "
          f"{acc(setup['top1_torch_int8'])} -> {out}")
    return 0


class PlainHelp(argparse.HelpFormatter):
    """--help without the reStructuredText of the docstrings: ``x`` and `x` print as 'x'."""

    @staticmethod
    def plain(text):
        import re
        return re.sub(r"``([^`]+)``|`([^`]+)`", lambda m: f"'{m.group(1) or m.group(2)}'", text)

    def _format_text(self, text):
        return super()._format_text(self.plain(text))

    def _expand_help(self, action):
        return self.plain(super()._expand_help(action))


#: Descriptions of the algorithm subcommands (py_ref/commands/ registers them).
DESCRIPTIONS = {
    "profile": "VELCRO's preprocessing (py_ref/velcro.py): run the calibration images through the "
               "model and record, for every activation point (conv output after its ReLU), the "
               "per-element mean and variance; the statistics file feeds `velcro compress`.",
    "compress": "Make VELCRO masks (single elements) or S-VELCRO masks (whole channels, "
                "--structured) from the statistics of `velcro profile`: at each activation point "
                "the fraction T of its lowest-variance elements is compressed (replaced by their "
                "calibration means); T per point from --thresholds, --uniform, --preset or "
                "--search.",
    "evaluate": "Top-1 of the original model, and with --masks of the compressed one, on the "
                "task's validation images; with a task, the task-restricted top-1 and the "
                "out-of-task predictions, and the paired McNemar test and 95% interval of the "
                "change against the uncompressed model.",
}


def build_parser() -> argparse.ArgumentParser:
    from py_ref import commands

    from py_ref.errors import one_line_errors
    from py_ref.options import checked_options

    parser = one_line_errors(argparse.ArgumentParser(
        prog="velcro", formatter_class=PlainHelp,
        description="velcro: the project's command line. sim and network run the RTL "
                    "simulation; profile, compress, evaluate and export are the VELCRO algorithm "
                    "(PyTorch). 'velcro COMMAND --help' describes each."))
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    p = one_line_errors(sub.add_parser("sim", help="run one FRAME.npz through the RTL simulation",
                       description="Run one FRAME.npz through the generated Verilog (built once "
                                   "per frame shape, cached in build/sim/), check every output "
                                   "against the golden model (py_ref.golden.golden_ofm) and write "
                                   "its output map and hardware counters. The result line: "
                                   "images, image_cycles (the slowest image's compute cycles), "
                                   "batch_cycles, stream_cycles (first input beat to last output "
                                   "beat), computed=U/NHW (outputs computed, not replaced by "
                                   "their means), C (the compression ratio 1 - U/NHW) and "
                                   "golden=bit-exact. A golden mismatch exits with status 1 "
                                   "(the result is still written)."))
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
    p.add_argument("--waves", choices=("fst", "vcd"), default=None,
                   help="also write the run's waveform, every signal of the design, beside "
                        "--out (RESULT.fst or RESULT.vcd; Icarus: fst only; Verilator's fst needs "
                        "liblz4-dev); a waves build is a "
                        "model of its own, cached in build/sim/<sim>/<tag>-<fst|vcd>/")
    p.set_defaults(func=_cmd_sim)

    p = one_line_errors(sub.add_parser(
        "network", help="run the whole VELCRO-compressed fmnist CNN on the RTL simulation",
        description="Quantise every conv layer of the Fashion-MNIST CNN to the arithmetic "
                    "contract (scales from calibration images), run them layer after layer on "
                    "one generated design (layer shapes set at run time) for held-out test "
                    "images, and compare every layer with the golden model and the logits "
                    "with the int8 reference."))
    p.add_argument("--task", help="footwear (default), tops, shirts, other or all; with --masks, "
                                  "the masks' task")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--masks", metavar="FILE", help="`velcro compress` output (uniform, preset or "
                                                   "searched tuple); scales from its calibration "
                                                   "images")
    g.add_argument("--uniform", type=float, metavar="T",
                   help="profile here and compress every point at fraction 0 <= T < 1")
    p.add_argument("--images", type=int, default=64, metavar="K",
                   help="test images (a seeded subset of the task's test set; default 64)")
    p.add_argument("--calib-images", type=int, metavar="N",
                   help="calibration images with --uniform (default 256)")
    p.add_argument("--seed", type=int, help="seed of the calibration and test subsets (default 0)")
    p.add_argument("--weights", metavar="FILE", help="state_dict of the fmnist CNN (default: the "
                                                     "committed weights)")
    p.add_argument("--out", required=True, metavar="FILE",
                   help="NET.npz to write (" + ", ".join(NET_ARRAYS) + "; written atomically)")
    p.add_argument("--sim", choices=("verilator", "icarus"), default="verilator",
                   help="simulator (default verilator)")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="PyTorch CPU threads")
    p.add_argument("--verbose", action="store_true", help="show the compiler's output live")
    p.add_argument("--max-build-minutes", type=float, default=60, metavar="M",
                   help="refuse a first build estimated to take longer (default 60)")
    p.set_defaults(func=_guarded_network)
    commands.register(sub)
    for name, p in sub.choices.items():
        p.formatter_class = PlainHelp
        if not p.description and name in DESCRIPTIONS:
            p.description = DESCRIPTIONS[name]
    return checked_options(parser)


def _main(argv) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


def main(argv=None) -> int:
    try:
        from py_ref.errors import main_guard
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
