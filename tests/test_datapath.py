"""hdl.datapath in the Amaranth simulator: any channel's output at any of the instance's pixels
from a work entry, bit-exact against the golden model, under random stalls on both streams, and
its exact cycle count.

Filters and quant parameters are loaded from the records hdl.protocol encodes for the engine,
the windows from the strips of the dealer's reference (tests/window_ref.py), so the datapath is
tested against the one definition of those formats.
"""

import random

import numpy as np
import pytest

import window_ref
from conftest import seed_for
from stream_sim import run_streams
from stream_sim import simulate as run_simulator
from hdl.config import PIPELINE_LATENCY, AccelConfig
from hdl.datapath import Datapath
from hdl.protocol import weight_beats
from py_ref.golden import golden_ofm, random_frame
from py_ref.schedule import deal

CONFIGS = {
    # C_in 1: one group, one entry per cycle; W = 7 over P = 3: a short last segment
    "c1": AccelConfig(height=5, width=7, in_channels=1, instances=3, bus_width=64),
    # C_in 5 over lanes 2: three groups, the last one half empty
    "c5l2": AccelConfig(height=5, width=7, in_channels=5, instances=3, lanes=2, bus_width=64),
}


def records(beats, bits, bus_width, count):
    """Reassemble ``count`` records of ``bits`` bits, each sent little-endian over whole beats."""
    per = -(-bits // bus_width)
    out = []
    for r in range(count):
        value = sum(beats[r * per + i] << (bus_width * i) for i in range(per))
        out.append(value & ((1 << bits) - 1))
    return out


def pixel_of(cfg, seg, offset):
    """(y, x) of the pixel at ``offset`` in segment ``seg``."""
    y, j = divmod(seg, cfg.row_segments)
    return y, j * cfg.instances + offset


async def load(ctx, port, cfg, frame, offsets):
    """Write every channel's filters and quant parameters, the pixel table ``offsets`` (per
    segment, -1 for none) and the strips of ``frame``'s image (buffer 0) through the datapath's
    ``load`` port ``port``."""
    wb = weight_beats(cfg, frame.weight, frame.bias, frame.mult, frame.shift)[1:]
    n_filters = cfg.instances * cfg.groups
    filters = records(wb, cfg.weight_bits, cfg.bus_width, n_filters)
    quant = wb[n_filters * cfg.beats(cfg.weight_bits):]
    writes = [("weights", a, f) for a, f in enumerate(filters)]
    writes += [("quant", n, quant[n]) for n in range(cfg.instances)]
    writes += [("pixels", sg, {"offset": max(o, 0), "valid": int(o >= 0)})
               for sg, o in enumerate(offsets)]
    for name, addr, value in writes:
        w = getattr(port, name)
        ctx.set(w.en, 1)
        ctx.set(w.addr, addr)
        ctx.set(w.data.as_value() if name == "quant" else w.data, value)
        await ctx.tick()
        ctx.set(w.en, 0)
    strip = port.strip
    for seg, g, pixels in window_ref.strips(cfg, frame.ifmap):
        ctx.set(strip.en, 1)
        ctx.set(strip.buf, 0)
        ctx.set(strip.seg, seg)
        ctx.set(strip.g, g)
        ctx.set(strip.data.as_value(), window_ref.strip_value(cfg, pixels))
        await ctx.tick()
    ctx.set(strip.en, 0)
    await ctx.tick().repeat(2)


def simulate(cfg, frame, offsets, entries, *, seed, stall):
    """Load the datapath (:func:`load`), then stream ``entries`` (slot, seg, index) through it;
    return results as (cycle, value, index), cycle 0 being the first cycle entries are
    offered."""
    dut = Datapath(cfg, slots=cfg.instances)
    out = []

    async def bench(ctx):
        await load(ctx, dut.load, cfg, frame, offsets)
        payloads = [dict(slot=s, seg=sg, index=i, buf=0) for s, sg, i in entries]
        got, = await run_streams(ctx, sources=[(dut.work, payloads)],
                                 sinks=[(dut.result, len(entries))],
                                 rng=random.Random(seed), stall=stall)
        out.extend((c, p.value, p.index) for c, p in got)

    run_simulator(dut, bench)
    return out


def check(results, expected, seed):
    """Results in entry order, each equal to the golden value."""
    got = [(v, i) for _, v, i in results]
    for k, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"seed={seed}: result {k}: got (value, index) {g}, expected {e}"
    assert len(got) == len(expected)


def random_offsets(cfg, rng):
    """A pixel table with a random pixel of every segment (its present pixels only)."""
    return [int(rng.integers(min(cfg.instances, cfg.width - (sg % cfg.row_segments)
                                 * cfg.instances)))
            for sg in range(cfg.segments)]


@pytest.mark.parametrize("stall", [0.0, 0.5])
@pytest.mark.parametrize("name", CONFIGS)
def test_random_entries(name, stall):
    """Any slot at any of the instance's pixels (the corners included, repeats allowed)."""
    cfg = CONFIGS[name]
    seed = seed_for("datapath-random", name, stall)
    rng = np.random.default_rng(seed)
    frame = random_frame(cfg, rng, density=0.0)
    golden = golden_ofm(frame)
    offsets = random_offsets(cfg, rng)
    j_last = cfg.row_segments - 1
    corners = {0: 0, j_last: cfg.width - 1 - j_last * cfg.instances}
    corners.update({cfg.segments - cfg.row_segments: 0,
                    cfg.segments - 1: cfg.width - 1 - j_last * cfg.instances})
    for sg, o in corners.items():
        offsets[sg] = o
    count = 40
    entries = [(int(rng.integers(cfg.instances)), int(rng.integers(cfg.segments)), i)
               for i in range(count)]
    entries[:4] = [(n % cfg.instances, sg, n) for n, sg in enumerate(corners)]
    results = simulate(cfg, frame, offsets, entries, seed=seed, stall=stall)
    check(results, [(int(golden[(s, *pixel_of(cfg, sg, offsets[sg]))]), i)
                    for s, sg, i in entries], seed)


@pytest.mark.parametrize("extreme", [False, True])
@pytest.mark.parametrize("name", CONFIGS)
def test_schedule_runs(name, extreme):
    """Each instance's dealt run of a random mask with its pixel table; extreme values (-128 x
    -128 at full fan-in, bias extremes, shift 0 and 31, saturation) included."""
    cfg = CONFIGS[name]
    seed = seed_for("datapath-schedule", name, extreme)
    rng = np.random.default_rng(seed)
    frame = random_frame(cfg, rng, density=0.4, extreme=extreme)
    golden = golden_ofm(frame)
    s = deal(frame.mask, cfg.instances)
    for p in range(cfg.instances):
        ch, y, x = s.entries(p)
        entries = list(zip(ch.tolist(), s.segments(p).tolist(), range(len(ch))))
        results = simulate(cfg, frame, s.offsets[p].tolist(), entries, seed=seed + p, stall=0.3)
        check(results, [(int(golden[c, i, j]), k)
                        for k, (c, i, j) in enumerate(zip(ch, y, x))], seed)


@pytest.mark.parametrize("name", CONFIGS)
def test_throughput(name):
    """No stalls: one result per G cycles after the pipeline latency, E entries in exactly
    E*G + PIPELINE_LATENCY cycles (entry e's result in cycle (e+1)*G + PIPELINE_LATENCY - 1)."""
    cfg = CONFIGS[name]
    seed = seed_for("datapath-throughput", name)
    rng = np.random.default_rng(seed)
    frame = random_frame(cfg, rng, density=0.0)
    golden = golden_ofm(frame)
    offsets = random_offsets(cfg, rng)
    entries = [(i % cfg.instances, (i // cfg.instances) % cfg.segments, i)
               for i in range(cfg.instances * cfg.segments)]
    results = simulate(cfg, frame, offsets, entries, seed=seed, stall=0.0)
    check(results, [(int(golden[(s, *pixel_of(cfg, sg, offsets[sg]))]), i)
                    for s, sg, i in entries], seed)
    g = cfg.groups
    assert [c for c, _, _ in results] == [(e + 1) * g + PIPELINE_LATENCY - 1 for e in range(len(entries))]
    assert results[-1][0] + 1 == len(entries) * g + PIPELINE_LATENCY


def test_rejects_bad_slots():
    cfg = CONFIGS["c1"]
    with pytest.raises(ValueError, match="slots must be at least 1, not 0"):
        Datapath(cfg, 0)
    with pytest.raises(TypeError, match="slots must be an integer, not 2.0"):
        Datapath(cfg, 2.0)
