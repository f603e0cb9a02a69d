"""The streaming engine's input loader and work-list walker on their own, in the Amaranth
simulator, against plain-Python references, under random stalls.

* InputLoader: a batch of B images of packed beats in; every tile written (two per cycle at
  most, consecutive addresses) must land at ``buf*buffer_tiles + tile`` with buffer ``image % 2``,
  and an image may only start once ``released`` allows it (double buffering).
* WorkWalker: the dealt run written entry by entry, then walked for two images: the entries of
  ``Schedule.entries(p)`` in order, index k, the image's buffer bit.
"""

import random

import numpy as np
import pytest
from amaranth import Module, Mux

from conftest import seed_for
from stream_sim import run_streams, simulate
from hdl.config import AccelConfig
from hdl.datapath import buffer_tiles
from hdl.loader import InputLoader
from hdl.protocol import batch_frame_beats, tile_records
from hdl.walker import WorkWalker
from py_ref.schedule import deal
from test_schedule import skewed_mask

CONFIGS = {
    "two_beats_per_tile": AccelConfig(height=5, width=7, in_channels=1, instances=2,
                                      bus_width=64, mask_lanes=4),
    "three_tiles_per_beat": AccelConfig(height=9, width=10, in_channels=1, instances=4,
                                        bus_width=256),
    "seven_tiles_per_beat": AccelConfig(height=8, width=13, in_channels=3, instances=4, lanes=1),
}


@pytest.mark.parametrize("stall", [0.0, 0.3])
@pytest.mark.parametrize("name", CONFIGS)
def test_loader_writes_every_tile_to_its_buffer(name, stall):
    cfg = CONFIGS[name]
    seed = seed_for("loader", name, stall)
    rng = np.random.default_rng(seed)
    images = 3
    ifmaps = rng.integers(-128, 128, (images, cfg.in_channels, cfg.height, cfg.width),
                          dtype=np.int8)
    beats = batch_frame_beats(cfg, ifmaps)[1:]
    n_tiles = cfg.groups * cfg.tiles
    dut = InputLoader(cfg)
    # the engine's side, played by a register: image j is released one image after it loaded
    top = Module()
    top.submodules.loader = dut
    top.d.sync += dut.released.eq(Mux(dut.loaded > 0, dut.loaded - 1, 0))
    writes = []          # (cycle, address, tile value)
    loaded_at = {}

    async def bench(ctx):
        ctx.set(dut.images, images)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        await run_streams(ctx, sources=[(dut.i, beats)], rng=random.Random(seed), stall=stall)
        for _ in range(8):
            await ctx.tick()

    async def monitor(ctx):
        cycle = 0
        while True:
            en, addr = ctx.get(dut.write.en), ctx.get(dut.write.addr)
            for i in range(2):
                if en >> i & 1:
                    writes.append((cycle, addr + i, ctx.get(dut.write.data[i])))
            loaded = ctx.get(dut.loaded)
            loaded_at.setdefault(loaded, cycle)
            assert ctx.get(dut.accepted) <= ctx.get(dut.released) + 2, "buffer overwritten"
            await ctx.tick()
            cycle += 1

    simulate(top, bench, monitors=[monitor])
    expected = []
    for k in range(images):
        base = (k % 2) * buffer_tiles(cfg)
        expected += [(base + t, int.from_bytes(rec.tobytes(), "little"))
                     for t, rec in enumerate(tile_records(cfg, ifmaps[k]))]
    assert [(a, v) for _, a, v in writes] == expected, f"seed={seed}"
    assert loaded_at.get(images) is not None, f"seed={seed}"


@pytest.mark.parametrize("stall", [0.0, 0.3])
@pytest.mark.parametrize("mask_kind", ["random", "skewed", "empty"])
def test_walker_streams_its_run(mask_kind, stall):
    cfg = AccelConfig(height=6, width=7, in_channels=1, instances=4, bus_width=64,
                      mask_lanes=4)
    seed = seed_for("walker", mask_kind, stall)
    rng = np.random.default_rng(seed)
    shape = (cfg.instances, cfg.height, cfg.width)
    mask = {"random": lambda: rng.random(shape) < 0.5,
            "skewed": lambda: skewed_mask(rng, shape, 0.5),
            "empty": lambda: np.ones(shape, bool)}[mask_kind]()
    s = deal(mask, cfg.instances)
    for p in range(cfg.instances):
        dut = WorkWalker(cfg, p)
        ch, y, x = s.entries(p)
        expected = [(int(c), int(yy), int(xx), k, buf) for buf in (1, 0)
                    for k, (c, yy, xx) in enumerate(zip(ch, y, x))]
        got = []

        async def bench(ctx):
            for k, (c, yy, xx) in enumerate(zip(ch.tolist(), y.tolist(), x.tolist())):
                ctx.set(dut.write.en, 1)
                ctx.set(dut.write.addr, k)
                ctx.set(dut.write.data, {"channel": c, "y": yy, "x": xx})
                await ctx.tick()
            ctx.set(dut.write.en, 0)
            ctx.set(dut.total, s.total)
            for buf in (1, 0):
                while ctx.get(dut.running):
                    await ctx.tick()
                ctx.set(dut.start, 1)
                ctx.set(dut.buf, buf)
                await ctx.tick()
                ctx.set(dut.start, 0)
                out, = await run_streams(ctx, sinks=[(dut.work, int(s.counts[p]))],
                                         rng=random.Random(seed + p), stall=stall)
                got.extend((w.slot, w.y, w.x, w.index, w.buf) for _, w in out)

        simulate(dut, bench)
        assert got == expected, f"instance {p} seed={seed}"
