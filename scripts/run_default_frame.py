"""Run one default frame (16 x 64x64 3x3 conv2d+ReLU, C_in 1, random mask at C = 0.3) on
Verilator, check it against the golden model and print the hardware counters.

    python scripts/run_default_frame.py [--sim icarus] [--ratio 0.3] [--seed 1]
"""

import argparse
import sys
import time

import numpy as np

from hdl.config import AccelConfig
from hdl.contract import compute_cycle_bound
from py_ref.errors import error_line
from py_ref.golden import golden_ofm, random_frame
from py_ref.schedule import deal
from sim.frame_runner import run_frame


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sim", choices=("verilator", "icarus"), default="verilator")
    ap.add_argument("--ratio", type=float, default=0.3, help="mask density C (0..1)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if not 0.0 <= args.ratio <= 1.0:
        print(error_line(f"--ratio {args.ratio} is outside 0..1", "run_default_frame"), file=sys.stderr)
        return 2
    cfg = AccelConfig()
    frame = random_frame(cfg, np.random.default_rng(args.seed), density=args.ratio)
    print(f"config {cfg.tag}, C={args.ratio}, seed={args.seed}, simulator {args.sim}")
    t0 = time.perf_counter()
    res = run_frame(frame, args.sim)
    wall = time.perf_counter() - t0
    ok = np.array_equal(res.ofm[0], golden_ofm(frame))
    for key, value in res.image(0).items():
        print(f"{key:>18}: {value}")
    print(f"{'sum U':>18}: {int(frame.uncompressed.sum())}, bound steps*G + latency = "
          f"{compute_cycle_bound(cfg, deal(frame.mask, cfg.instances))}")
    print(f"{'golden check':>18}: {'bit-exact' if ok else 'MISMATCH'} ({wall:.1f} s wall incl. build)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
