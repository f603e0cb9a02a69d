"""``make synth``: Yosys UltraScale+ synthesis of the default engine and its instance, what fits
the U280, and the card projection -> results/synth/{summary.json, REPORT.md}.

    python scripts/synth.py

Stages (each printed as it starts):

1. the kernel's Verilog (:class:`hdl.kernel.VelcroKernel` around the default 16-instance
   engine, cached in build/rtl/<tag>/), split into modules: the engine's ``datapath0`` module
   (the instance datapath exactly as the engine instantiates it) and the kernel with its 16
   datapath modules as black boxes (sim/synth_report.hierarchical_sources);
2. that datapath, ``synth_xilinx -family xcup``: per-instance resources, logic levels, DSP48E2s
   between flip-flops;
3. the same datapath with ``-family xc7``: the DSP cascade as Yosys' ``xilinx_dsp`` infers it
   (Yosys 0.70 packs DSP registers and PCIN cascades only for DSP48E1, see hdl/synthesis.py);
4. the kernel with the datapaths black-boxed and the engine and walkers kept as modules,
   ``-family xcup``: the engine's shared logic, the walkers and the kernel shell, so the real
   16-instance engine and kernel are shared + 16 x datapath + walkers (+ shell), nothing
   extrapolated; logic levels per module and across every boundary;
5. summary.json and REPORT.md (:func:`sim.synth_report.run`), and README's synthesis summary
   block (:func:`sim.synth_report.update_readme`): logic depth per part, ``kernel_lut_levels``,
   the clock it supports (``clock_mhz_supported``) and the card per SLR at that clock.

Wall times go to results/synth/timing.log (untracked), so tracked files are deterministic.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sim import synth_report

REPO = Path(__file__).resolve().parent.parent

_T0 = time.monotonic()


def stage(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:5.0f} s] {msg}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    out = REPO / "results" / "synth"
    times = synth_report.run(out, stage=stage, readme=REPO / "README.md")
    (out / "timing.log").write_text(
        "".join(f"{name}: {sec:.0f} s\n" for name, sec in times.items())
        + f"total: {time.monotonic() - _T0:.0f} s\n")
    stage(f"wrote {out / 'summary.json'}, {out / 'REPORT.md'} and README.md's summary "
          f"(wall times in {out / 'timing.log'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
