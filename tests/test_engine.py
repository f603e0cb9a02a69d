"""The streaming, balanced engine (hdl/engine.py) in the Amaranth simulator: WEIGHTS,
SCHEDULE and FRAME batches through the protocol encoders, outputs decoded with the protocol's
compact decoder and Schedule.expand, compared with the golden model with ==; every image's
counters checked (outputs per channel and per instance, and the bound
steps * G + PIPELINE_LATENCY, exact without stalls); random stalls on both streams.
"""

import random

import numpy as np
import pytest

from conftest import seed_for
from stream_sim import run_streams, simulate
from hdl.config import DEFAULT, AccelConfig
from hdl.protocol import (batch_frame_beats, compact_beats_per_image, decode_batch,
                          decode_stream_counters, image_beats, schedule_beats, weight_beats)
from hdl.config import PIPELINE_LATENCY
from hdl.engine import VelcroAccelerator
from py_ref.golden import golden_ofm, random_batch, random_frame
from py_ref.schedule import deal
from test_schedule import skewed_mask

CONFIGS = {
    # 16-bit segment records, four per beat; W = 7 not a multiple of P = 2
    "c1p2": AccelConfig(height=5, width=7, in_channels=1, instances=2, bus_width=64),
    # three channel groups, the last half empty; multi-beat filter records
    "c5l2p4": AccelConfig(height=8, width=7, in_channels=5, instances=4, lanes=2, bus_width=64),
    # eight records per beat, a short last segment in every row
    "c1p4": AccelConfig(height=9, width=10, in_channels=1, instances=4, bus_width=256),
    # N independent of P: fewer channels than instances (N = 1, prime N = 3), more (N = 5,
    # N = 9 > 2P), with C_in > 1 and W not a multiple of P
    "n1p4": AccelConfig(height=5, width=9, in_channels=2, instances=4, bus_width=64,
                        out_channels=1),
    "n3p4": AccelConfig(height=6, width=7, in_channels=3, instances=4, lanes=2, bus_width=64,
                        out_channels=3),
    "n5p2": AccelConfig(height=5, width=7, in_channels=1, instances=2, bus_width=64,
                        out_channels=5),
    "n9p4": AccelConfig(height=5, width=6, in_channels=2, instances=4, bus_width=128,
                        out_channels=9),
}


def constants_beats(cfg, frame, schedule):
    return (weight_beats(cfg, frame.weight, frame.bias, frame.mult, frame.shift)
            + schedule_beats(cfg, schedule))


def run_engine(cfg, commands, n_out, *, seed, stall):
    """Stream ``commands`` in, ``n_out`` beats out; returns (beats [(cycle, data, last)],
    per-image counters [dict], final counters)."""
    dut = VelcroAccelerator(cfg)
    beats, images, final = [], [], {}

    async def bench(ctx):
        got, = await run_streams(ctx, sources=[(dut.i, commands)], sinks=[(dut.o, n_out)],
                                 rng=random.Random(seed), stall=stall, drain=40)
        beats.extend((c, b.data, b.last) for c, b in got)
        final.update(decode_stream_counters(cfg, ctx.get(dut.counters.as_value())))
        assert ctx.get(dut.idle)

    async def monitor(ctx):
        while True:
            await ctx.tick()
            if ctx.get(dut.image_done):
                images.append(decode_stream_counters(cfg, ctx.get(dut.counters.as_value())))

    simulate(dut, bench, monitors=[monitor])
    return beats, images, final


def check_batch(cfg, frames, schedule, beats, images, *, stall, seed):
    b_count = len(frames)
    per = compact_beats_per_image(cfg, schedule.stream_length)
    assert len(beats) == per * b_count
    assert [last for _, _, last in beats] == ([0] * (per - 1) + [1] if per else []) * b_count, \
        f"seed={seed}"
    got = decode_batch(cfg, [d for _, d, _ in beats], schedule, frames[0].means, b_count)
    for k, f in enumerate(frames):
        np.testing.assert_array_equal(got[k], golden_ofm(f), err_msg=f"image {k} seed={seed}")
    assert len(images) == b_count, f"seed={seed}"
    bound = schedule.steps * cfg.groups + PIPELINE_LATENCY
    for k, c in enumerate(images):
        assert c["image_computed"] == frames[0].uncompressed.tolist(), f"image {k} seed={seed}"
        assert c["image_instance"] == schedule.counts.tolist(), f"image {k} seed={seed}"
        if schedule.total:
            if stall:
                assert c["image_cycles"] <= bound, f"image {k}: {c['image_cycles']} > {bound}"
            else:
                assert c["image_cycles"] == bound, f"image {k}: {c['image_cycles']} != {bound}"


def batch_of(cfg, rng, first, count):
    return random_batch(cfg, rng, first, count)


@pytest.mark.parametrize("stall", [0.0, 0.3])
@pytest.mark.parametrize("density", [0.0, 0.3, 0.9, 1.0, "skewed"])
@pytest.mark.parametrize("name", CONFIGS)
def test_batch_matches_golden(name, density, stall):
    cfg = CONFIGS[name]
    seed = seed_for("stream-engine", name, density, stall)
    rng = np.random.default_rng(seed)
    shape = (cfg.out_channels, cfg.height, cfg.width)
    if density == "skewed":
        first = random_frame(cfg, rng, mask=skewed_mask(rng, shape, 0.4))
    else:
        first = random_frame(cfg, rng, density=density)
    frames = batch_of(cfg, rng, first, 3)
    s = deal(first.mask, cfg.instances)
    commands = constants_beats(cfg, first, s) + batch_frame_beats(
        cfg, np.stack([f.ifmap for f in frames]))
    n_out = compact_beats_per_image(cfg, s.stream_length) * len(frames)
    beats, images, final = run_engine(cfg, commands, n_out, seed=seed, stall=stall)
    check_batch(cfg, frames, s, beats, images, stall=stall, seed=seed)
    assert final["batches"] == 1 and final["images"] == len(frames)


@pytest.mark.parametrize("name", ["c1p2", "c1p4", "n5p2", "n9p4"])
def test_two_batches_extreme(name):
    """Extreme values; two FRAME commands (B = 1, then B = 4) after one set of constants."""
    cfg = CONFIGS[name]
    seed = seed_for("stream-engine-two", name)
    rng = np.random.default_rng(seed)
    first = random_frame(cfg, rng, density=0.2, extreme=True)
    s = deal(first.mask, cfg.instances)
    frames = batch_of(cfg, rng, first, 5)
    commands = (constants_beats(cfg, first, s) + batch_frame_beats(cfg, frames[0].ifmap)
                + batch_frame_beats(cfg, np.stack([f.ifmap for f in frames[1:]])))
    n_out = compact_beats_per_image(cfg, s.stream_length) * len(frames)
    beats, images, final = run_engine(cfg, commands, n_out, seed=seed, stall=0.2)
    check_batch(cfg, frames, s, beats, images, stall=0.2, seed=seed)
    assert final["batches"] == 2 and final["images"] == 5


def test_image_beats_fill_the_bus():
    """Default design: four 128-bit segment records per 512-bit beat, 64 beats per image, every
    bit a pixel."""
    cfg = AccelConfig()
    assert image_beats(cfg) == 64
    assert cfg.positions * cfg.pixel_bits == image_beats(cfg) * cfg.bus_width


@pytest.mark.parametrize("cfg", [AccelConfig(height=8, width=8, instances=2),
                                 AccelConfig(height=9, width=10, instances=3), DEFAULT,
                                 AccelConfig(height=16, width=16, out_channels=3),
                                 AccelConfig(height=8, width=8, instances=2, out_channels=24)],
                         ids=lambda c: c.tag)
def test_counter_fields_are_the_port_layout(cfg):
    """The testbenches decode the counters in plain Python (no Amaranth in a simulator process):
    the same offsets and widths as the engine's port layout, and a round trip of random values."""
    from hdl.protocol import (SCALAR_COUNTER_KINDS, STREAM_COUNTERS, counter_fields, decode_stream_counters,
                              stream_counter_layout)
    layout = stream_counter_layout(cfg)
    fields = counter_fields(cfg)
    assert [(name, off, w * n) for name, off, w, n in fields] == \
        [(name, f.offset, f.width) for name, f in layout]
    rng = random.Random(seed_for("counter_fields", cfg.tag))
    values, raw = {}, 0
    for (name, off, w, n), (_, kind, _) in zip(fields, STREAM_COUNTERS):
        words = [rng.randrange(1 << w) for _ in range(n)]
        values[name] = words[0] if kind in SCALAR_COUNTER_KINDS else words
        for i, v in enumerate(words):
            raw |= v << (off + i * w)
    assert decode_stream_counters(cfg, raw) == values
