#!/usr/bin/env python3
"""Testbench stream drivers: sim/tb_accel.py's per-cycle hand loop against cocotbext-axi's
stream models, on one cached Verilator model (testcase ``stream_models_speed``).

Streams one batch with each under the same stall probability (0.2 on both streams), checks both
outputs against the golden model, and prints simulated cycles per wall second of each and
their ratio (the figure quoted in sim/tb_accel.py). Not a timed test: run it by hand.

    python scripts/bench_tb_stream.py [--sim verilator] [--images 64]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


from hdl.config import AccelConfig
from sim.runner import Build

#: tests/test_cli.py's CFG: 16 instances (the default design's), a small layer, so its model
#: builds in about a minute; the per-cycle cost of the driver is what this compares.
CFG = AccelConfig(height=6, width=8, in_channels=2, instances=16, out_channels=2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sim", choices=("verilator", "icarus"), default="verilator")
    ap.add_argument("--images", type=int, default=64)
    args = ap.parse_args(argv)
    build = Build(CFG, args.sim, defer=True)
    build.build(progress=lambda m: print(f"bench_tb_stream: {m}", file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="bench-tb-stream-") as tmp:
        out = Path(tmp) / "bench.json"
        build.run("sim.tb_accel", ["stream_models_speed"], test_dir=Path(tmp) / "run",
                  quiet=True, env={"VELCRO_BENCH": str(out),
                                   "VELCRO_BENCH_IMAGES": str(args.images)})
        r = json.loads(out.read_text())
    print(f"{CFG.tag} on {args.sim}, {r['images']} images, {r['beats_in']} beats in, "
          f"{r['beats_out']} out, stall probability 0.2 on both streams:")
    for kind, what in (("hand", "hand loop (AccelTB.transfer)"),
                       ("models", "cocotbext-axi stream models")):
        k = r[kind]
        print(f"  {what:30s} {k['cycles']:8.0f} cycles in {k['seconds']:6.2f} s: "
              f"{k['cycles_per_second']:8.0f} cycles/s")
    print(f"  hand loop / models: {r['hand']['cycles_per_second'] / r['models']['cycles_per_second']:.2f}x "
          "the simulated cycles per second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
