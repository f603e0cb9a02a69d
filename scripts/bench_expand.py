#!/usr/bin/env python3
"""Host cost of the compact output format: Schedule.expand per default image (target < 1 ms).

The balanced engine streams only the computed outputs; the host scatters them over the means
to rebuild the dense [N, H, W] map. This times that expansion on the default 16 x 64x64 image
with 16 instances, random masks at each compression ratio C (min over repeats, one image per
call), and, for reference, deal() itself, which runs once per MASK and not per frame.

    python scripts/bench_expand.py [--ratios 0,0.3,0.6,0.9] [--repeats 200]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from hdl.config import DEFAULT
from py_ref.schedule import deal
from sim.host_timing import best_of, expand_seconds

SHAPE = (DEFAULT.out_channels, DEFAULT.height, DEFAULT.width)
INSTANCES = DEFAULT.instances
TARGET_MS = 1.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ratios", default="0,0.3,0.6,0.9")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    print(f"{SHAPE[0]} x {SHAPE[1]}x{SHAPE[2]}, P = {INSTANCES}, min of {args.repeats} runs")
    print(f"{'C':>5} {'sum U':>6} {'expand ms':>10} {'deal ms':>8}")
    worst = 0.0
    for c in (float(v) for v in args.ratios.split(",")):
        mask = rng.random(SHAPE) < c
        means = rng.integers(0, 256, SHAPE, dtype=np.uint8)
        sched = deal(mask, INSTANCES)
        t_expand = expand_seconds(mask, means, INSTANCES, repeats=args.repeats, seed=args.seed)
        t_deal = best_of(lambda: deal(mask, INSTANCES), max(3, args.repeats // 20))
        worst = max(worst, t_expand)
        print(f"{c:5.2f} {sched.total:6d} {t_expand * 1e3:10.3f} {t_deal * 1e3:8.3f}")
    verdict = "met" if worst * 1e3 < TARGET_MS else "MISSED"
    print(f"worst expansion {worst * 1e3:.3f} ms per image: target < {TARGET_MS} ms {verdict}")
    return 0 if worst * 1e3 < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
