"""The engine's window dealer and work-list walker on their own, in the Amaranth simulator,
against plain-Python references, under random stalls.

* WindowDealer: a batch of B images of packed beats in; the strips must leave in order, each
  equal to the reference (tests/window_ref.py), image j tagged with buffer ``j % 2``, and an
  image may only be dealt once ``released`` allows it (double buffering).
* WorkWalker: a pair's dealt run written record by record, twin by twin, then walked for two
  images: the steps of ``Schedule.pair_run(d)`` in order, index k, the image's buffer bit.
"""

import random

import numpy as np
import pytest
from amaranth import Module, Mux

import window_ref
from conftest import seed_for
from stream_sim import run_streams, simulate
from hdl.config import AccelConfig
from hdl.contract import input_cycles
from hdl.dealer import WindowDealer
from hdl.protocol import batch_frame_beats
from hdl.walker import WorkWalker
from py_ref.schedule import deal
from test_schedule import skewed_mask

CONFIGS = {
    # a 96-bit record over two 64-bit beats; W = 7 not a multiple of P = 4
    "two_beats_per_record": AccelConfig(height=5, width=7, in_channels=3, instances=4,
                                        bus_width=64),
    # eight 32-bit records per beat
    "eight_records_per_beat": AccelConfig(height=9, width=10, in_channels=1, instances=4,
                                          bus_width=256),
    # three channel groups, 16 records per beat
    "three_groups": AccelConfig(height=8, width=13, in_channels=3, instances=4, lanes=1),
}


def run_dealer(cfg, ifmaps, *, seed, stall, hold=0):
    """Stream ``ifmaps`` through a dealer whose images are released ``hold`` cycles after they
    are loaded; returns the strips as (cycle, buf, seg, g, data) and the cycle each image
    count was first ``loaded``."""
    images = len(ifmaps)
    beats = batch_frame_beats(cfg, ifmaps)[1:]
    dut = WindowDealer(cfg)
    top = Module()
    top.submodules.dealer = dut
    # the engine's side, played by a register: image j is released one image after it loaded
    top.d.sync += dut.released.eq(Mux(dut.loaded > 0, dut.loaded - 1, 0))
    got, loaded_at = [], {}

    async def bench(ctx):
        ctx.set(dut.images, images)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        await run_streams(ctx, sources=[(dut.i, beats)], rng=random.Random(seed), stall=stall)
        for _ in range(cfg.height * cfg.groups * cfg.row_segments * 3 + 16):
            await ctx.tick()

    async def monitor(ctx):
        cycle, dealt = 0, set()
        while True:
            if ctx.get(dut.strip.en):
                got.append((cycle, ctx.get(dut.strip.buf), ctx.get(dut.strip.seg),
                            ctx.get(dut.strip.g), ctx.get(dut.strip.data.as_value())))
            loaded_at.setdefault(ctx.get(dut.loaded), cycle)
            assert ctx.get(dut.accepted) <= images
            if ctx.get(dut.accepted) == images:     # the batch is in: no beat beyond it taken
                assert not ctx.get(dut.i.ready), f"seed={seed}"
            await ctx.tick()
            cycle += 1

    simulate(top, bench, monitors=[monitor])
    return got, loaded_at


@pytest.mark.parametrize("stall", [0.0, 0.3])
@pytest.mark.parametrize("name", CONFIGS)
def test_dealer_sends_every_strip(name, stall):
    cfg = CONFIGS[name]
    seed = seed_for("dealer", name, stall)
    rng = np.random.default_rng(seed)
    images = 3
    ifmaps = rng.integers(-128, 128, (images, cfg.in_channels, cfg.height, cfg.width),
                          dtype=np.int8)
    got, loaded_at = run_dealer(cfg, ifmaps, seed=seed, stall=stall)
    expected = [(k % 2, seg, g, window_ref.strip_value(cfg, pixels))
                for k in range(images) for seg, g, pixels in window_ref.strips(cfg, ifmaps[k])]
    assert len(got) == len(expected), f"seed={seed}"
    for n, (g_, e) in enumerate(zip([t[1:] for t in got], expected)):
        assert g_ == e, f"seed={seed}: strip {n}: got (buf, seg, g) {g_[:3]}, expected {e[:3]}"
    per = len(expected) // images
    # image k + 2 is dealt only once image k is released (one image after k + 1 loaded)
    for k in range(images - 2):
        first = got[(k + 2) * per][0]
        assert loaded_at[k + 2] < first, f"seed={seed}: image {k + 2} dealt too early"
    assert images in loaded_at and loaded_at[images] > got[-1][0], f"seed={seed}"
    if not stall:
        # without stalls the dealer streams one strip per cycle, H*G*J cycles per image,
        # once the first two rows are in
        cycles = [c for c, *_ in got]
        assert cycles[-1] - cycles[0] + 1 <= images * input_cycles(cfg) + 2 * per, f"seed={seed}"


@pytest.mark.parametrize("stall", [0.0, 0.3])
@pytest.mark.parametrize("mask_kind", ["random", "skewed", "empty"])
def test_walker_streams_its_run(mask_kind, stall):
    cfg = AccelConfig(height=6, width=7, in_channels=1, instances=4, bus_width=64)
    seed = seed_for("walker", mask_kind, stall)
    rng = np.random.default_rng(seed)
    shape = (cfg.instances, cfg.height, cfg.width)
    mask = {"random": lambda: rng.random(shape) < 0.5,
            "skewed": lambda: skewed_mask(rng, shape, 0.5),
            "empty": lambda: np.ones(shape, bool)}[mask_kind]()
    s = deal(mask, cfg.instances)
    channel, seg, valid = s.table()
    for d in range(cfg.pairs):
        dut = WorkWalker(cfg, d)
        ch, sgs, vs = s.pair_run(d)
        run = [(int(c), sg.tolist(), v.tolist()) for c, sg, v in zip(ch, sgs, vs)]
        expected = [(c, sg, v, k, buf) for buf in (1, 0) for k, (c, sg, v) in enumerate(run)]
        got = []

        async def bench(ctx):
            # SCHEDULE: the header's clear, then every record (a short run's are zero past it;
            # a twin without an entry in a step: zero); the front end writes both twins' lanes
            # in one cycle, here each twin's lane in a cycle of its own, the other lane's data
            # a valid entry its en bit (low) must keep out of the memory
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            for k in range(s.steps):
                for t in range(cfg.twins):
                    p = 2 * d + t
                    ctx.set(dut.write.en, 1 << t)
                    ctx.set(dut.write.addr, k)
                    ctx.set(dut.write.data[t], {"channel": int(channel[k, p]),
                                                "seg": int(seg[k, p]),
                                                "valid": int(valid[k, p])})
                    ctx.set(dut.write.data[1 - t], {"channel": 1, "seg": 1, "valid": 1})
                    await ctx.tick()
                    ctx.set(dut.write.en, 0)
            assert ctx.get(dut.count) == len(run)
            for buf in (1, 0):
                while ctx.get(dut.running):
                    await ctx.tick()
                ctx.set(dut.start, 1)
                ctx.set(dut.buf, buf)
                await ctx.tick()
                ctx.set(dut.start, 0)
                out, = await run_streams(ctx, sinks=[(dut.work, len(run))],
                                         rng=random.Random(seed + d), stall=stall)
                got.extend((w.slot, [int(x) for x in w.seg], [int(x) for x in w.valid],
                            w.index, w.buf) for _, w in out)

        simulate(dut, bench)
        assert got == expected, f"pair {d} seed={seed}"
