"""hdl.datapath in the Amaranth simulator: any channel's output from a work entry, bit-exact
against the golden model, under random stalls on both streams, and its exact cycle count.

Filters, quant parameters and ifmap tiles are loaded from the records hdl.protocol encodes for
the engine, so the datapath is tested against the one definition of those formats.
"""

import random

import numpy as np
import pytest

from conftest import seed_for
from stream_sim import run_streams
from stream_sim import simulate as run_simulator
from hdl.config import AccelConfig
from hdl.datapath import LATENCY, Datapath
from hdl.protocol import tile_records, weight_beats
from py_ref.golden import golden_ofm, random_frame
from py_ref.schedule import deal

CONFIGS = {
    # C_in 1: one group, one entry per cycle
    "c1": AccelConfig(height=5, width=7, in_channels=1, instances=3, bus_width=64, mask_lanes=4),
    # C_in 5 over lanes 2: three groups, the last one half empty
    "c5l2": AccelConfig(height=5, width=7, in_channels=5, instances=3, lanes=2, bus_width=64,
                        mask_lanes=4),
}


def records(beats, bits, bus_width, count):
    """Reassemble ``count`` records of ``bits`` bits, each sent little-endian over whole beats."""
    per = -(-bits // bus_width)
    out = []
    for r in range(count):
        value = sum(beats[r * per + i] << (bus_width * i) for i in range(per))
        out.append(value & ((1 << bits) - 1))
    return out


def load_ports(cfg, frame, channels):
    """(port name, address, data) writes loading ``frame``'s ifmap and the filters and quant
    parameters of ``channels`` into slots 0, 1, ..."""
    tiles = [int.from_bytes(t.tobytes(), "little") for t in tile_records(cfg, frame.ifmap)]
    wb = weight_beats(cfg, frame.weight, frame.bias, frame.mult, frame.shift)[1:]
    n_filters = cfg.instances * cfg.groups
    filters = records(wb, cfg.weight_bits, cfg.bus_width, n_filters)
    quant = wb[n_filters * cfg.beats(cfg.weight_bits):]
    writes = [("ifmap", a, t) for a, t in enumerate(tiles)]
    for slot, n in enumerate(channels):
        writes += [("weights", slot * cfg.groups + g, filters[n * cfg.groups + g])
                   for g in range(cfg.groups)]
        writes.append(("quant", slot, quant[n]))
    return writes


def simulate(cfg, frame, channels, entries, *, seed, stall):
    """Load the datapath, stream ``entries`` (slot, y, x, index) through it; return results as
    (cycle, value, index), cycle 0 being the first cycle entries are offered."""
    dut = Datapath(cfg, slots=max(1, len(channels)))
    writes = load_ports(cfg, frame, channels)
    out = []

    async def bench(ctx):
        for name, addr, value in writes:
            port = getattr(dut.load, name)
            ctx.set(port.en, 1)
            ctx.set(port.addr, addr)
            ctx.set(port.data.as_value() if name in ("quant", "ifmap") else port.data, value)
            await ctx.tick()
            ctx.set(port.en, 0)
        payloads = [dict(slot=s, y=y, x=x, index=i, buf=0) for s, y, x, i in entries]
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


@pytest.mark.parametrize("stall", [0.0, 0.5])
@pytest.mark.parametrize("name", CONFIGS)
def test_random_entries(name, stall):
    """Any slot, any position (borders and corners included, repeats allowed), all channels."""
    cfg = CONFIGS[name]
    seed = seed_for("datapath-random", name, stall)
    rng = np.random.default_rng(seed)
    frame = random_frame(cfg, rng, density=0.0)
    golden = golden_ofm(frame)
    count = 40
    entries = [(int(rng.integers(cfg.instances)), int(rng.integers(cfg.height)),
                int(rng.integers(cfg.width)), i) for i in range(count)]
    entries[:4] = [(0, 0, 0, 0), (1, cfg.height - 1, cfg.width - 1, 1),
                   (2, 0, cfg.width - 1, 2), (0, cfg.height - 1, 0, 3)]
    results = simulate(cfg, frame, list(range(cfg.instances)), entries, seed=seed, stall=stall)
    check(results, [(int(golden[s, y, x]), i) for s, y, x, i in entries], seed)


@pytest.mark.parametrize("extreme", [False, True])
@pytest.mark.parametrize("name", CONFIGS)
def test_schedule_runs(name, extreme):
    """Each instance's dealt run of a random mask, its share of channels in its slots; extreme
    values (-128 x -128 at full fan-in, bias extremes, shift 0 and 31, saturation) included."""
    cfg = CONFIGS[name]
    seed = seed_for("datapath-schedule", name, extreme)
    rng = np.random.default_rng(seed)
    frame = random_frame(cfg, rng, density=0.4, extreme=extreme)
    golden = golden_ofm(frame)
    s = deal(frame.mask, cfg.instances)
    for p in range(cfg.instances):
        ch, y, x = s.entries(p)
        entries = list(zip(s.slots(p).tolist(), y.tolist(), x.tolist(), range(len(ch))))
        results = simulate(cfg, frame, list(s.channels(p)), entries, seed=seed + p, stall=0.3)
        check(results, [(int(golden[c, i, j]), k)
                        for k, (c, i, j) in enumerate(zip(ch, y, x))], seed)


@pytest.mark.parametrize("name", CONFIGS)
def test_throughput(name):
    """No stalls: one result per G cycles after the pipeline latency, E entries in exactly
    E*G + LATENCY cycles (entry e's result in cycle (e+1)*G + LATENCY - 1)."""
    cfg = CONFIGS[name]
    seed = seed_for("datapath-throughput", name)
    rng = np.random.default_rng(seed)
    frame = random_frame(cfg, rng, density=0.0)
    golden = golden_ofm(frame)
    entries = [(i % cfg.instances, (i // cfg.width) % cfg.height, i % cfg.width, i)
               for i in range(cfg.positions)]
    results = simulate(cfg, frame, list(range(cfg.instances)), entries, seed=seed, stall=0.0)
    check(results, [(int(golden[s, y, x]), i) for s, y, x, i in entries], seed)
    g = cfg.groups
    assert [c for c, _, _ in results] == [(e + 1) * g + LATENCY - 1 for e in range(len(entries))]
    assert results[-1][0] + 1 == len(entries) * g + LATENCY


def test_rejects_bad_slots():
    cfg = CONFIGS["c1"]
    with pytest.raises(ValueError, match="slots must be at least 1, not 0"):
        Datapath(cfg, 0)
    with pytest.raises(TypeError, match="slots must be an integer, not 2.0"):
        Datapath(cfg, 2.0)
