"""cocotb test module of the measurement library (sim/measure.py): many batches, one process.

One simulator process runs a list of *steps* read from the JSON file named by
``VELCRO_SWEEP_JOBS``; each step is ``{"frame": <Frame .npz>, "images": <.npy int8
[B, C_in, H, W]> (optional: the frame's own ifmap), "config": bool, "run": bool,
"result": <.json>}``:

* ``config``: send the frame's WEIGHTS/SCHEDULE commands (the deployment constants);
* ``run``: send one FRAME command of the B images, collect every output beat, expand the compact
  output and compare every image with the golden model (``==``, :meth:`AccelTB.run_batch`, which
  also checks each image's computed counts and its compute-cycle bound), then write the
  counters to ``result``: the batch's :class:`~hdl.results.StreamResult` (``stream_cycles``:
  first image beat to last output beat, the batch counters, each image's counters), the
  batch's output beats and the simulator's own cycle count;
* ``saif_windows`` (with ``run``, on a SAIF build run without whole-run tracing): a list of
  ``{"path": <.saif>, "from": k, "to": m}``, each traced from the edge that accepts image k's
  first input beat to the edge that accepts image m's (:mod:`sim.saif_window`); ``m == k``
  records only the state at that edge. Windows must not share an edge otherwise.
  ``window_cycles`` in the result lists their spans.

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
from hdl.config import SIM_CLOCK_NS
from py_ref.golden import Frame
from sim.saif_window import SaifWindow
from sim.tb_accel import AccelTB, config_beats


def _load(path) -> Frame:
    with np.load(path) as arrays:
        return Frame.from_arrays(arrays)


def _saif_windows(windows, images):
    """``on_image`` callbacks opening and closing the SAIF ``windows`` ({"path", "from", "to"}:
    from the edge accepting image ``from``'s first beat to the one accepting image ``to``'s;
    ``to == from`` records the state at that edge only) and the list their (start, end) times
    go to."""
    on_image, marks = {}, []
    if not windows:
        return on_image, marks
    window = SaifWindow()
    for w in windows:
        if not 0 <= w["from"] <= w["to"] < images:
            raise ValueError(f"SAIF window {w} is outside the batch of {images} images")
    for i, w in enumerate(windows):
        mark = [None, None]
        marks.append(mark)

        def opening(path=w["path"], mark=mark):
            window.open(path)
            mark[0] = get_sim_time("ns")

        def closing(mark=mark):
            window.close()
            mark[1] = get_sim_time("ns")

        on_image.setdefault(w["from"], []).append(opening)
        on_image.setdefault(w["to"], []).append(closing)
    return {k: (lambda fns=fns: [f() for f in fns]) for k, fns in on_image.items()}, marks


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
            frames = frame.batch(ifmaps)
            t0, s0 = time.perf_counter(), get_sim_time("ns")
            on_image, marks = _saif_windows(step.get("saif_windows", []), len(frames))
            run = await tb.run_batch(
                frames, load_config=step.get("config", True), check=True, on_image=on_image)
            total = int(frame.uncompressed.sum())
            result = {"images": len(frames), "stream_cycles": run.stream_cycles,
                      "per_image": [run.image(k) for k in range(run.images)],
                      "out_beats": compact_beats_per_image(tb.cfg, total) * len(frames),
                      "wall_s": time.perf_counter() - t0,      # simulation + golden checks
                      "sim_cycles": round((get_sim_time("ns") - s0) / SIM_CLOCK_NS),
                      "golden_ok": True}   # run_batch asserts every image == golden first
            if marks:
                result["window_cycles"] = [round((b - a) / SIM_CLOCK_NS) for a, b in marks]
                result["clock_ns"] = SIM_CLOCK_NS         # the kept SAIF's rescaling reads it
            with open(step["result"], "w") as f:
                json.dump(result, f)
        elif step.get("config", True):
            await tb.transfer(config_beats(tb.cfg, frame), 0)
            await ReadOnly()
            await RisingEdge(dut.clk)
