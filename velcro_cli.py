"""``velcro``: the project's command line.

    velcro sim FRAME.npz --out RESULT.npz [--sim verilator|icarus]
    velcro profile | compress | evaluate | export ...   (VELCRO algorithm, see py_ref/)

Bad input gets a one-line ``velcro: error: ...`` on stderr, exit status 2, and no output file.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _cmd_sim(args) -> int:
    import numpy as np

    from hdl.config import ConfigError
    from hdl.contract import config_for_frame
    from py_ref.golden import Frame, FrameError

    path = Path(args.frame)
    try:
        with np.load(path, allow_pickle=False) as arrays:
            arrays = {k: arrays[k] for k in arrays.files}
        # ifmap [B, C_in, H, W]: a batch of B images sharing the other arrays
        batch = arrays["ifmap"] if getattr(arrays.get("ifmap"), "ndim", 0) == 4 else None
        if batch is not None and len(batch) == 0:
            raise FrameError("array 'ifmap' holds no image")
        for image in (batch if batch is not None else [None]):
            frame = Frame.from_arrays(arrays if image is None else {**arrays, "ifmap": image})
    except FrameError as exc:
        raise CliError(f"{path}: {exc}") from None
    except (OSError, ValueError, EOFError) as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    try:
        cfg = config_for_frame(frame)
    except ConfigError as exc:
        raise CliError(f"{path}: frame does not fit the generator: {exc}") from None
    out = Path(args.out)
    if not out.parent.exists():
        raise CliError(f"output folder {out.parent} does not exist")

    from sim.frame_runner import run_frame
    from sim.toolchain import ToolchainError

    print(f"velcro sim: {cfg.tag} on {args.sim}", file=sys.stderr)
    try:
        result = run_frame(frame, args.sim, batch=batch)
    except ToolchainError as exc:
        raise CliError(str(exc)) from None
    keep = ("ofm", "compute_cycles", "total_cycles", "batch_cycles", "load_cycles",
            "drain_cycles", "mac_active_cycles", "computed", "skipped")
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{k: result[k] for k in keep})
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"compute_cycles={np.max(result['compute_cycles'])} total_cycles={int(result['total_cycles'])} "
          f"max_uncompressed={int(frame.uncompressed.max())} -> {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="velcro", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("sim", help="run one FRAME.npz through the RTL simulation")
    p.add_argument("frame", help="FRAME.npz with ifmap, weight, bias, mask, means, mult, shift")
    p.add_argument("--out", required=True, help="RESULT.npz to write")
    p.add_argument("--sim", choices=("verilator", "icarus"), default="verilator")
    p.set_defaults(func=_cmd_sim)
    try:
        from py_ref import commands
    except ImportError:
        commands = None
    if commands is not None:
        commands.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        print(f"velcro: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("velcro: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
