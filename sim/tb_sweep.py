"""cocotb test module of the measurement library (sim/measure.py): many batches, one process.

One simulator process runs a list of *steps* read from the JSON file named by
``VELCRO_SWEEP_JOBS``; each step is ``{"frame": <Frame .npz>, "images": <.npy int8
[B, C_in, H, W]> (optional: the frame's own ifmap), "config": bool, "run": bool,
"result": <.json>}``:

* ``config``: send the frame's WEIGHTS/SCHEDULE commands (the deployment constants);
* ``run``: send one FRAME command of the B images, collect every output beat, expand the compact
  output and compare every image with the golden model (``==``, :meth:`AccelTB.run_batch`, which
  also checks each image's computed counts and its compute-cycle bound), then write the
  counters to ``result``: ``batch_cycles`` (first image beat to last output beat), the batch
  counters, each image's counters, the batch's output beats and the simulator's own cycle count.

Streams never stall here: the library measures the engine, not the host. A step with
``config`` only is how a run isolates the configuration load (SAIF accumulates over a whole
process).
"""

from __future__ import annotations

import json
import os
import time

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from hdl.protocol import compact_beats_per_image
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
            ifmaps = np.load(step["images"]) if step.get("images") else frame.ifmap[None]
            frames = [Frame(**{**frame.__dict__, "ifmap": x}) for x in ifmaps]
            t0, s0 = time.perf_counter(), get_sim_time("ns")
            _, images, batch, cycles = await tb.run_batch(
                frames, load_config=step.get("config", True), check=True)
            total = int(frame.uncompressed.sum())
            result = {"images": len(frames), "batch_cycles": cycles, "batch": batch,
                      "per_image": images,
                      "out_beats": compact_beats_per_image(tb.cfg, total) * len(frames),
                      "wall_s": time.perf_counter() - t0,      # simulation + golden checks
                      "sim_cycles": round((get_sim_time("ns") - s0) / CLOCK_NS),
                      "golden_ok": True}   # run_batch asserts every image == golden first
            with open(step["result"], "w") as f:
                json.dump(result, f)
        elif step.get("config", True):
            await tb.transfer(config_beats(tb.cfg, frame), 0)
            await ReadOnly()
            await RisingEdge(dut.clk)
