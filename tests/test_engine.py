"""Fast Amaranth-simulator tests of the engine against the golden model (small configurations).

The cocotb regressions in tests/test_sim_accel.py run the generated Verilog on Icarus and
Verilator; these run the same Python model of the hardware in seconds and are the first stop
when changing hdl/engine.py.
"""

import random

import numpy as np
import pytest

from conftest import seed_for
from amaranth.sim import Simulator

from hdl.config import AccelConfig
from hdl.engine import VelcroAccelerator
from hdl.protocol import config_beats, decode_ofm, frame_beats, output_beats
from py_ref.golden import compute_cycle_bound, golden_ofm, random_frame


class EngineTB:
    """Drives command beats into ``i`` and collects ``o``, with seeded random stalls on both."""

    def __init__(self, cfg, seed, stall=0.0):
        self.cfg = cfg
        self.dut = VelcroAccelerator(cfg)
        self.rng = random.Random(seed)
        self.stall = stall

    def run(self, beats, frames):
        dut, rng, stall = self.dut, self.rng, self.stall
        out = []
        counters = []

        async def bench(ctx):
            pos = 0
            while len(out) < frames * output_beats(self.cfg):
                valid = pos < len(beats) and rng.random() >= stall
                ready = rng.random() >= stall
                ctx.set(dut.i.valid, valid)
                if valid:
                    ctx.set(dut.i.payload, beats[pos])
                ctx.set(dut.o.ready, ready)
                took = valid and ctx.get(dut.i.ready)
                gave = ready and ctx.get(dut.o.valid)
                if gave:
                    out.append((ctx.get(dut.o.payload.data), ctx.get(dut.o.payload.last)))
                await ctx.tick()
                pos += took
                if gave and out[-1][1]:
                    counters.append(ctx.get(dut.counters))
            await ctx.tick()

        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_testbench(bench)
        sim.run()
        return out, counters


CONFIGS = {
    "tiny": AccelConfig(height=5, width=7, in_channels=1, instances=2, bus_width=64, mask_lanes=4),
    "multichannel": AccelConfig(height=6, width=4, in_channels=5, instances=3, lanes=2,
                                bus_width=128, mask_lanes=8),
}


@pytest.mark.parametrize("density", [0.0, 0.3, 0.9, 1.0])
@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("stall", [0.0, 0.4])
def test_engine_matches_golden(name, density, stall):
    cfg = CONFIGS[name]
    seed = seed_for("engine", name, density, stall)
    rng = np.random.default_rng(seed)
    frame = random_frame(cfg, rng, density=density)
    tb = EngineTB(cfg, seed, stall)
    out, counters = tb.run(config_beats(cfg, frame) + frame_beats(cfg, frame.ifmap), frames=1)
    assert [last for _, last in out] == [0] * (len(out) - 1) + [1]
    got = decode_ofm(cfg, [d for d, _ in out])
    np.testing.assert_array_equal(got, golden_ofm(frame))
    c = counters[0]
    assert list(c["computed"]) == list(frame.uncompressed)
    assert list(c["skipped"]) == list(cfg.positions - frame.uncompressed)
    assert c["compute_cycles"] <= compute_cycle_bound(cfg, frame)
