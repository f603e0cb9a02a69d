#!/usr/bin/env python3
"""Compute-cycle benchmark of the default design on Verilator: compute_cycles against the
balanced work ceil(sum U / P) * G.

The engine's contract is compute = ceil(sum U / P) * G + IMAGE_LATENCY (G = 1 on the default
configuration), so the ratio should be just above 1 at every compression ratio.
One simulator process runs one random frame per ratio; every output map is checked against
the golden model.

    python scripts/bench_compute.py [--ratios 0,0.3,0.6,0.9]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep import REPO, locked_build, random_frames, run_frames  # noqa: E402

from hdl.config import DEFAULT  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ratios", default="0,0.3,0.6,0.9")
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args(argv)
    ratios = [float(c) for c in args.ratios.split(",")]
    cfg = DEFAULT
    t0 = time.perf_counter()
    build = locked_build(cfg, "verilator")
    frames = random_frames(cfg, ratios, args.seed)
    counters = run_frames(build, [frames[c] for c in ratios], REPO / "build" / "bench_compute" / cfg.tag)
    print(f"default config {cfg.tag}, Verilator, G = {cfg.groups}; outputs checked against the golden model")
    print(f"{'C':>5} {'work':>6} {'compute':>8} {'compute/work':>13} {'latency':>8}")
    for c, k in zip(ratios, counters):
        work = -(-int(np.sum(k["computed"])) // cfg.instances) * cfg.groups
        print(f"{c:5.2f} {work:6d} {k['compute_cycles']:8d} "
              f"{k['compute_cycles'] / max(work, 1):13.4f} {k['compute_cycles'] - work:8d}")
    print(f"({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
