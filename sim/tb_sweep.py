"""cocotb test module for the compression sweep (scripts/sweep.py) and the benchmarks.

One simulator process runs a list of *steps* read from the JSON file named by
``VELCRO_SWEEP_JOBS``; each step is ``{"frame": <Frame .npz>, "config": bool, "run": bool,
"result": <.json>}``:

* ``config``: send the frame's WEIGHTS/SCHEDULE commands (the deployment constants);
* ``run``: send its FRAME command, collect the output map, compare it with the golden model
  (``==``, through :meth:`AccelTB.run`, which also checks the computed/skipped counters and the
  compute-cycle bound) and write the hardware counters to ``result``.

Streams never stall here: the sweep measures the engine, not the host. A step with
``config`` only is how the sweep isolates the configuration load's switching activity (SAIF
accumulates over a whole process, see scripts/sweep.py).
"""

from __future__ import annotations

import json
import os
import time

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from py_ref.golden import Frame
from sim.tb_accel import CLOCK_NS, AccelTB, config_beats


def _load(path) -> Frame:
    with np.load(path) as arrays:
        return Frame.from_arrays(arrays)


@cocotb.test()
async def sweep_steps(dut):
    """Run every step of $VELCRO_SWEEP_JOBS in this one simulator process."""
    tb = AccelTB(dut, seed=0)
    await tb.reset()
    with open(os.environ["VELCRO_SWEEP_JOBS"]) as f:
        steps = json.load(f)
    for step in steps:
        frame = _load(step["frame"])
        if step.get("run", True):
            t0, s0 = time.perf_counter(), get_sim_time("ns")
            _, counters = await tb.run(frame, load_config=step.get("config", True), check=True)
            counters["wall_s"] = time.perf_counter() - t0     # simulation + golden check
            counters["sim_cycles"] = round((get_sim_time("ns") - s0) / CLOCK_NS)
            counters["golden_ok"] = True   # tb.run asserts ofm == golden before returning
            with open(step["result"], "w") as f:
                json.dump(counters, f)
        elif step.get("config", True):
            await tb.transfer(config_beats(tb.cfg, frame), 0)
            await ReadOnly()
            await RisingEdge(dut.clk)
