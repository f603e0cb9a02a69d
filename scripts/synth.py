"""``make synth``: Yosys UltraScale+ synthesis of the default engine and its instance, what fits
the U280, and the card projection -> results/synth/{summary.json, REPORT.md}.

    python scripts/synth.py [--full]

Stages (each printed as it starts):

1. one instance = :class:`hdl.datapath.Datapath` (slots = N) + :class:`hdl.walker.WorkWalker`
   of the default configuration, ``synth_xilinx -family xcup``: per-instance resources, logic
   levels, DSP48E2s between flip-flops;
2. the same Datapath with ``-family xc7``: the DSP cascade as Yosys' ``xilinx_dsp`` infers it
   (Yosys 0.70 packs DSP registers and PCIN cascades only for DSP48E1, see hdl/synthesis.py);
3. a 2-instance engine, ``-family xcup``, for the shared logic (loader, packer, front end); the
   16-instance engine is extrapolated as shared + 16 x instance, because its synthesis takes far
   longer than 5 minutes here (``--full`` synthesises it);
4. summary.json and REPORT.md (:func:`hdl.synth_report.write`).

Wall times go to results/synth/timing.log (untracked), so tracked files are deterministic.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hdl import synth_report  # noqa: E402

_T0 = time.monotonic()


def stage(msg: str) -> None:
    print(f"[{time.monotonic() - _T0:5.0f} s] {msg}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true",
                        help="synthesise the 16-instance engine itself (slow: well over 5 min)")
    args = parser.parse_args(argv)
    out = REPO / "results" / "synth"
    times = synth_report.run(out, stage=stage, **(
        {"engine_instances": 16} if args.full else {}))
    (out / "timing.log").write_text(
        "".join(f"{name}: {sec:.0f} s\n" for name, sec in times.items())
        + f"total: {time.monotonic() - _T0:.0f} s\n")
    stage(f"wrote {out / 'summary.json'} and {out / 'REPORT.md'} "
          f"(wall times in {out / 'timing.log'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
