"""The issue-9 pieces composed: the pairs' Datapaths fed their dealt runs, their results joined by the
OutputPacker (``wiring.connect``), checked end to end against the golden model through
Schedule.expand, and the frame's cycle count against hdl.contract.compute_cycle_bound.

The composite here is test scaffolding only (the engine feeds the work lists from memory and
the windows through the window dealer); it shows the pieces fit as they are.
"""

import random

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from conftest import seed_for
from stream_sim import run_streams, simulate
from test_datapath import load
from hdl.config import AccelConfig
from hdl.datapath import Datapath, entries_per_instance, work_layout
from hdl.packer import OutputPacker, beat_layout
from hdl.protocol import compact_beats_per_image, decode_compact
from hdl.contract import compute_cycle_bound
from py_ref.compact import golden_compact
from py_ref.golden import golden_ofm, random_frame
from py_ref.schedule import deal
from test_schedule import skewed_mask


class Core(wiring.Component):
    """Pair datapaths -> packer; each datapath's ports exposed as ``dp[d]``."""

    def __init__(self, cfg, slots):
        self.cfg, self.slots = cfg, slots
        self.dps = [Datapath(cfg, slots) for _ in range(cfg.pairs)]
        super().__init__({
            "work": In(stream.Signature(work_layout(cfg, slots))).array(cfg.pairs),
            "steps": In(range(entries_per_instance(cfg) + 1)),
            "counts": In(range(entries_per_instance(cfg) + 1)).array(cfg.pairs),
            "o": Out(stream.Signature(beat_layout(cfg))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.packer = packer = OutputPacker(self.cfg)
        m.d.comb += packer.steps.eq(self.steps)
        m.d.comb += [packer.counts[d].eq(self.counts[d]) for d in range(self.cfg.pairs)]
        wiring.connect(m, packer.o, wiring.flipped(self.o))
        for d, dp in enumerate(self.dps):
            m.submodules[f"datapath{d}"] = dp
            wiring.connect(m, wiring.flipped(self.work[d]), dp.work)
            wiring.connect(m, dp.result, packer.results[d])
        return m


CONFIGS = {
    "c1p2": AccelConfig(height=5, width=7, in_channels=1, instances=2, bus_width=64),
    "c5l2p4": AccelConfig(height=5, width=7, in_channels=5, instances=4, lanes=2, bus_width=64),
}


def run_frame(cfg, frame, *, seed, stall):
    s = deal(frame.mask, cfg.instances)
    dut = Core(cfg, slots=cfg.instances)
    beats = []

    async def bench(ctx):
        for d, dp in enumerate(dut.dps):
            await load(ctx, dp, cfg, frame, [s.offsets[p].tolist() if p < cfg.instances
                                             else [-1] * cfg.segments
                                             for p in range(2 * d, 2 * d + cfg.twins)])
        ctx.set(dut.steps, s.steps)
        for d in range(cfg.pairs):
            ctx.set(dut.counts[d], int(s.pair_steps[d]))
        sources = []
        for d in range(cfg.pairs):
            ch, seg, valid = s.pair_run(d)
            sources.append((dut.work[d], [dict(slot=int(c), seg=sg.tolist(), valid=v.tolist(),
                                               index=k, buf=0)
                                          for k, (c, sg, v) in enumerate(zip(ch, seg, valid))]))
        got, = await run_streams(ctx, sources=sources,
                                 sinks=[(dut.o, compact_beats_per_image(cfg, s.stream_length))],
                                 rng=random.Random(seed), stall=stall)
        beats.extend((c, b.data, b.last) for c, b in got)

    simulate(dut, bench)
    return s, beats


@pytest.mark.parametrize("stall", [0.0, 0.3])
@pytest.mark.parametrize("mask_kind", ["random", "skewed"])
@pytest.mark.parametrize("name", CONFIGS)
def test_core_frame(name, mask_kind, stall):
    cfg = CONFIGS[name]
    seed = seed_for("core", name, mask_kind, stall)
    rng = np.random.default_rng(seed)
    shape = (cfg.instances, cfg.height, cfg.width)
    mask = rng.random(shape) < 0.4 if mask_kind == "random" else skewed_mask(rng, shape, 0.4)
    frame = random_frame(cfg, rng, mask=mask)
    s, beats = run_frame(cfg, frame, seed=seed, stall=stall)
    got, = decode_compact(cfg, [d for _, d, _ in beats], s.stream_length)
    assert got.tolist() == golden_compact(frame, s).tolist(), f"seed={seed}"
    np.testing.assert_array_equal(s.expand(got, frame.means), golden_ofm(frame),
                                  err_msg=f"seed={seed}")
    assert [last for _, _, last in beats][-1] == 1
    if not stall:
        # work offered in cycle 0; the last beat leaves one cycle after the last result
        cycles = beats[-1][0] + 1
        assert cycles == compute_cycle_bound(cfg, s) + 1, f"seed={seed}"
