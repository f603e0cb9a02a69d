"""``make xo``, ``make xclbin``, ``make deploy``: the Vitis flow after ``make kernel``.

    python scripts/vitis_flow.py xo      [--kernel build/kernel]
    python scripts/vitis_flow.py xclbin  --target hw_emu|hw --platform PLATFORM [--kernel DIR]
    python scripts/vitis_flow.py deploy  [--kernel DIR] [--xclbin FILE]

* ``xo``: ``vivado -mode batch -source package_kernel.tcl -tclargs velcro_kernel.xo`` in the
  kernel folder (the Tcl packages the IP and calls ``package_xo``).
* ``xclbin``: for ``hw_emu`` first ``emconfigutil --platform P --od .`` (emconfig.json, which
  XRT's emulation reads), then ``v++ --link -t T --platform P --config connectivity.cfg
  --kernel_frequency 300 -o velcro_kernel.T.xclbin velcro_kernel.xo``; then ``deploy``.
  connectivity.cfg's ``nk=velcro_kernel:k`` names no compute units, the syntax every Vitis
  accepts (UG1393 separates listed names with ``.``, UG1702 with ``,``; both number unnamed CUs
  ``velcro_kernel_1`` .. ``_k``, the names its ``sp=`` lines and the host use), so no
  ``v++ --version`` decides anything; the version is printed for the log.
* ``deploy``: ``<kernel>/deploy/``, everything the FPGA host needs and no checkout: the
  xclbin (and emconfig.json for hw_emu), config.json, host_velcro.py and the project's Python
  it imports (:func:`host_modules`: hdl.config, hdl.kernel_host, hdl.program, ... found by
  modulefinder; the host needs numpy and pyxrt besides, never Amaranth or torch).
  ``cd deploy && python3 host_velcro.py velcro_kernel.hw.xclbin``.

A tool missing from PATH stops the flow before anything runs, with one line naming it (exit
status 2); so does a missing input (the kernel folder, the .xo). Every command is printed
before it runs; a failing one stops the flow with its exit status.
"""

from __future__ import annotations

import argparse
import modulefinder
import shutil
import subprocess
import sys
from pathlib import Path

from hdl.config import KERNEL_CLOCK_MHZ
from hdl.generate import BUILD
from hdl.regmap import KERNEL_NAME
from py_ref.errors import error_line

REPO = Path(__file__).resolve().parent.parent

HOST = "host_velcro.py"
TARGETS = ("hw_emu", "hw")
DEFAULT_PLATFORM = "xilinx_u280_gen3x16_xdma_1_202211_1"
#: Where each tool comes from, for the one-line message when it is missing.
TOOL_SOURCE = {"vivado": "Vivado (source <Vivado>/settings64.sh)",
               "v++": "Vitis (source <Vitis>/settings64.sh)",
               "emconfigutil": "Vitis (source <Vitis>/settings64.sh)"}


class FlowError(Exception):
    """A missing tool or input: one line, exit status 2."""


def xo_name() -> str:
    return f"{KERNEL_NAME}.xo"


def xclbin_name(target: str) -> str:
    return f"{KERNEL_NAME}.{target}.xclbin"


def xo_commands() -> list[list[str]]:
    """The commands of ``make xo``, run in the kernel folder."""
    return [["vivado", "-mode", "batch", "-source", "package_kernel.tcl", "-tclargs", xo_name()]]


def xclbin_commands(target: str, platform: str, mhz: int = KERNEL_CLOCK_MHZ) -> list[list[str]]:
    """The commands of ``make xclbin``, run in the kernel folder."""
    if target not in TARGETS:
        raise FlowError(f"TARGET must be one of {', '.join(TARGETS)}, not {target!r}")
    if not platform:
        raise FlowError("PLATFORM is empty: name the Vitis platform, e.g. " + DEFAULT_PLATFORM)
    cmds = [["emconfigutil", "--platform", platform, "--od", "."]] if target == "hw_emu" else []
    return cmds + [["v++", "--link", "-t", target, "--platform", platform,
                    "--config", "connectivity.cfg", "--kernel_frequency", str(mhz),
                    "-o", xclbin_name(target), xo_name()]]


def check_tools(cmds) -> None:
    """FlowError naming the first tool of ``cmds`` not on PATH."""
    order = ["vivado", "v++", "emconfigutil"]
    for tool in sorted(dict.fromkeys(c[0] for c in cmds), key=lambda t: (
            order.index(t) if t in order else len(order), t)):
        if shutil.which(tool) is None:
            raise FlowError(f"{tool} is not on PATH: it comes with {TOOL_SOURCE.get(tool, tool)}")


def check_inputs(kernel: Path, names) -> None:
    if not (kernel / "config.json").exists():
        raise FlowError(f"{kernel} is not a kernel folder: run `make kernel` first")
    for name in names:
        if not (kernel / name).exists():
            hint = "`make xo`" if name.endswith(".xo") else "`make kernel`"
            raise FlowError(f"{kernel / name} not found: run {hint} first")


def run_commands(cmds, cwd: Path, log=print) -> None:
    for cmd in cmds:
        log("vitis_flow: " + " ".join(cmd) + f"   (in {cwd})")
        proc = subprocess.run(cmd, cwd=cwd)
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, cmd)


def host_modules() -> list[str]:
    """The project's modules host_velcro.py imports, directly or not (every import statement,
    also inside functions), as paths relative to the repository: hdl/config.py, ..."""
    finder = modulefinder.ModuleFinder(path=[str(REPO)],
                                       excludes=["numpy", "pyxrt", "amaranth", "torch"])
    finder.run_script(str(REPO / "hdl" / "kernel_files" / HOST))
    files = []
    for mod in finder.modules.values():
        f = getattr(mod, "__file__", None)
        if f and Path(f).resolve().is_relative_to(REPO) and mod.__name__ != "__main__":
            files.append(Path(f).resolve().relative_to(REPO).as_posix())
    return sorted(files)


def write_deploy(kernel: Path, xclbin: Path | None = None, extra=()) -> Path:
    """``kernel``/deploy/: config.json, host_velcro.py, the Python it needs, the xclbin and
    ``extra`` files (emconfig.json), replaced whole. Returns the folder."""
    from py_ref.outputs import write_folder

    def write(tmp: Path):
        shutil.copy(kernel / "config.json", tmp / "config.json")
        shutil.copy(kernel / HOST, tmp / HOST)
        for rel in host_modules():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / rel, tmp / rel)
        for f in ([xclbin] if xclbin else []) + list(extra):
            shutil.copy(f, tmp / Path(f).name)

    out = kernel / "deploy"
    write_folder(out, write)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="vitis_flow.py", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True)
    for name in ("xo", "xclbin", "deploy"):
        p = sub.add_parser(name)
        p.add_argument("--kernel", type=Path, default=BUILD / "kernel",
                       help="the folder make kernel wrote (default build/kernel)")
        if name == "xclbin":
            p.add_argument("--target", default="hw", help="hw_emu or hw (make TARGET=)")
            p.add_argument("--platform", default=DEFAULT_PLATFORM, help="Vitis platform "
                           "(make PLATFORM=)")
        if name == "deploy":
            p.add_argument("--xclbin", type=Path, default=None, help="xclbin to ship with it")
    args = parser.parse_args(argv)
    kernel = args.kernel
    try:
        if args.step == "xo":
            cmds = xo_commands()
            check_tools(cmds)
            check_inputs(kernel, [f"{KERNEL_NAME}.v", "package_kernel.tcl", "kernel.xml"])
            run_commands(cmds, kernel)
            print(f"wrote {kernel / xo_name()}")
        elif args.step == "xclbin":
            cmds = xclbin_commands(args.target, args.platform)
            check_tools(cmds)
            check_inputs(kernel, [xo_name(), "connectivity.cfg"])
            version = subprocess.run(["v++", "--version"], capture_output=True, text=True,
                                     cwd=kernel)
            print("vitis_flow: " + (version.stdout.strip().splitlines() or ["v++ --version: ?"])[0])
            run_commands(cmds, kernel)
            extra = [kernel / "emconfig.json"] if args.target == "hw_emu" else []
            out = write_deploy(kernel, kernel / xclbin_name(args.target), extra)
            print(f"wrote {kernel / xclbin_name(args.target)} and {out}"
                  + (" (run with XCL_EMULATION_MODE=hw_emu)" if args.target == "hw_emu" else ""))
        else:
            check_inputs(kernel, [HOST])
            if args.xclbin is not None and not args.xclbin.exists():
                raise FlowError(f"{args.xclbin} not found")
            print(f"wrote {write_deploy(kernel, args.xclbin)}")
    except FlowError as exc:
        print(error_line(exc, f"make {args.step}"), file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as exc:
        print(error_line(f"{exc.cmd[0]} failed (exit status {exc.returncode})", f"make {args.step}"),
              file=sys.stderr)
        return exc.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
