"""`make formal`: every proof of hdl.formal.PROOFS (properties, then covers) -> build/formal/.

    python scripts/formal.py [--quick] [NAME ...]

One stage line per job: name, mode, depth, time, PASS/FAIL. Exit status 1 if any failed.
"""

import argparse
import sys
from pathlib import Path

from hdl.formal import PROOFS, run_job


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="proofs to run (default: all)")
    ap.add_argument("--quick", action="store_true", help="leave out the proofs marked slow")
    ap.add_argument("--out", type=Path, default=Path("build/formal"))
    args = ap.parse_args(argv)
    known = {p.name for p in PROOFS}
    unknown = set(args.names) - known
    if unknown:
        ap.error(f"unknown proofs {sorted(unknown)}; known: {sorted(known)}")
    failed = []
    for proof in PROOFS:
        if (args.names and proof.name not in args.names) or (args.quick and proof.slow):
            continue
        for mode in (proof.mode, "cover"):
            o = run_job(proof, mode, args.out)
            print(f"[formal] {o.proof:16s} {o.mode:5s} depth {o.depth:3d} {o.seconds:7.1f} s  "
                  f"{'PASS' if o.passed else 'FAIL'}  ({o.log})", flush=True)
            if not o.passed:
                failed.append(f"{o.proof}/{o.mode}")
                print(o.summary)
    print(f"[formal] {'all passed' if not failed else 'FAILED: ' + ', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
