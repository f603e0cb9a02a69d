#!/usr/bin/env python3
"""Compute-cycle benchmark of the default design on Verilator: image_cycles against the
work steps * G (steps: the busiest instance's entries of the pixel deal).

The engine's contract is compute = steps * G + PIPELINE_LATENCY (G = 1 on the default
configuration), so the ratio should be just above 1 at every compression ratio.
One simulator process per ratio streams batches of 1 and 2 random images (sim/measure.py; "frame"
is the steady-state cycles per image); every output map is checked against
the golden model.

    python scripts/bench_compute.py [--ratios 0,0.3,0.6,0.9]
"""

from __future__ import annotations

import argparse
import sys
import time


from hdl.config import DEFAULT
from hdl.contract import work_cycles
from hdl.generate import BUILD
from sim.measure import measure
from sim.runner import Build
from sim.workloads import random_workloads


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ratios", default="0,0.3,0.6,0.9")
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args(argv)
    ratios = [float(c) for c in args.ratios.split(",")]
    cfg = DEFAULT
    t0 = time.perf_counter()
    build = Build(cfg, "verilator")
    print(f"default config {cfg.tag}, Verilator, G = {cfg.groups}; outputs checked against the golden model")
    print(f"{'C':>5} {'work':>6} {'compute':>8} {'compute/work':>13} {'latency':>8} {'frame':>6}")
    for w in random_workloads(cfg, ratios, images=2, seed=args.seed):
        m = measure(build, w, BUILD / "bench_compute" / cfg.tag / f"c{round(100 * w.ratio):03d}",
                    batches=(1, 2))
        work = work_cycles(cfg, m.steps)
        print(f"{w.ratio:5.2f} {work:6d} {m.image_cycles:8d} {m.image_cycles / max(work, 1):13.4f} "
              f"{m.image_cycles - work:8d} {m.frame_cycles:6g}")
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
