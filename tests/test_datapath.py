"""hdl.datapath in the Amaranth simulator: a pair datapath's two outputs of one channel, one at any
pixel of each twin instance (or none), from one step, bit-exact against the golden model, under
random stalls on both streams, and its exact cycle count.

Filters and quant parameters are loaded from the records hdl.protocol encodes for the engine,
the windows from the strips of the dealer's reference (tests/window_ref.py), so the datapath is
tested against the one definition of those formats.
"""

import random
import re

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
    # P = 1: a datapath of twin A alone
    "p1": AccelConfig(height=4, width=5, in_channels=2, instances=1, bus_width=64,
                      out_channels=3),
    # P = 9: offsets 0..8 take all three coarse cuts of the window store (hdl.datapath.CUT),
    # the last one past the strip's end; W = 11 over P = 9: a short last segment
    # (N * S = 6 * 8 entries hold the 40 random steps' indices)
    "p9": AccelConfig(height=4, width=11, in_channels=1, instances=9, bus_width=128,
                      out_channels=6),
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


async def load(ctx, dut, cfg, frame, tables):
    """Write every channel's filters and quant parameters, twin t's pixel table ``tables[t]``
    (per segment, -1 for none) and the strips of ``frame``'s image (buffer 0) through the
    datapath's ``load`` and ``pixels`` ports."""
    port = dut.load
    n = cfg.out_channels
    wb = weight_beats(cfg, frame.weight, frame.bias, frame.mult, frame.shift)[1:]
    n_filters = n * cfg.groups
    filters = records(wb, cfg.weight_bits, cfg.bus_width, n_filters)
    quant = wb[n_filters * cfg.beats(cfg.weight_bits):]
    writes = [(port.weights, a, f) for a, f in enumerate(filters)]
    writes += [(port.quant, c, quant[c]) for c in range(n)]
    writes += [(dut.pixels[t], sg, {"offset": max(o, 0), "valid": int(o >= 0)})
               for t, offsets in enumerate(tables) for sg, o in enumerate(offsets)]
    for w, addr, value in writes:
        ctx.set(w.en, 1)
        ctx.set(w.addr, addr)
        ctx.set(w.data.as_value() if hasattr(w.data, "as_value") and isinstance(value, int)
                else w.data, value)
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


def simulate(cfg, frame, tables, steps, *, seed, stall):
    """Load the datapath (:func:`load`), then stream ``steps`` (slot, segs, valids, index)
    through it; return results as (cycle, values, index), cycle 0 being the first cycle steps
    are offered."""
    dut = Datapath(cfg, slots=cfg.out_channels)
    out = []

    async def bench(ctx):
        await load(ctx, dut, cfg, frame, tables)
        payloads = [dict(slot=c, seg=list(sg), valid=list(v), index=i, buf=0)
                    for c, sg, v, i in steps]
        got, = await run_streams(ctx, sources=[(dut.work, payloads)],
                                 sinks=[(dut.result, len(steps))],
                                 rng=random.Random(seed), stall=stall)
        out.extend((c, [int(v) for v in p.value], p.index) for c, p in got)

    run_simulator(dut, bench)
    return out


def expect(cfg, golden, tables, steps):
    """(values, index) of each step: the golden output of its channel at each valid twin's
    pixel, 0 for a twin without an entry."""
    return [([int(golden[(c, *pixel_of(cfg, sg[t], tables[t][sg[t]]))]) if v[t] else 0
              for t in range(cfg.twins)], i) for c, sg, v, i in steps]


def check(results, expected, seed):
    """Results in step order, each equal to the golden values."""
    got = [(v, i) for _, v, i in results]
    for k, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"seed={seed}: result {k}: got (values, index) {g}, expected {e}"
    assert len(got) == len(expected)


def random_offsets(cfg, rng):
    """A pixel table with a random pixel of every segment (its present pixels only)."""
    return [int(rng.integers(min(cfg.instances, cfg.width - (sg % cfg.row_segments)
                                 * cfg.instances)))
            for sg in range(cfg.segments)]


@pytest.mark.parametrize("stall", [0.0, 0.5])
@pytest.mark.parametrize("name", CONFIGS)
def test_random_steps(name, stall):
    """Any slot at any pixel of each twin (the corners included, repeats allowed), each twin
    with or without an entry."""
    cfg = CONFIGS[name]
    seed = seed_for("datapath-random", name, stall)
    rng = np.random.default_rng(seed)
    frame = random_frame(cfg, rng, density=0.0)
    golden = golden_ofm(frame)
    tables = [random_offsets(cfg, rng) for _ in range(cfg.twins)]
    j_last = cfg.row_segments - 1
    corners = {0: 0, j_last: cfg.width - 1 - j_last * cfg.instances}
    corners.update({cfg.segments - cfg.row_segments: 0,
                    cfg.segments - 1: cfg.width - 1 - j_last * cfg.instances})
    for offsets in tables:
        for sg, o in corners.items():
            offsets[sg] = o
    n, twins = cfg.out_channels, cfg.twins
    steps = [(int(rng.integers(n)), [int(v) for v in rng.integers(cfg.segments, size=twins)],
              [int(v) for v in rng.integers(2, size=twins)], i) for i in range(40)]
    for k, sg in enumerate(corners):
        steps[k] = (k % n, [sg, list(corners)[-1 - k]][:twins], [1] * twins, k)
    results = simulate(cfg, frame, tables, steps, seed=seed, stall=stall)
    check(results, expect(cfg, golden, tables, steps), seed)


@pytest.mark.parametrize("extreme", [False, True])
@pytest.mark.parametrize("name", CONFIGS)
def test_schedule_runs(name, extreme):
    """Each pair's dealt run of a random mask with its twins' pixel tables; extreme values (-128
    x -128 at full fan-in, bias extremes, shift 0 and 31, saturation) included."""
    cfg = CONFIGS[name]
    seed = seed_for("datapath-schedule", name, extreme)
    rng = np.random.default_rng(seed)
    frame = random_frame(cfg, rng, density=0.4, extreme=extreme)
    golden = golden_ofm(frame)
    s = deal(frame.mask, cfg.instances)
    channel, seg, valid = s.table()
    for d in range(s.pairs):
        twins = [p for p in (2 * d, 2 * d + 1) if p < cfg.instances]
        tables = [s.offsets[p].tolist() for p in twins]
        if len(twins) < cfg.twins:          # an odd P's last pair: twin B has nothing
            tables.append([-1] * cfg.segments)
        steps = []
        for k in range(int(s.pair_steps[d])):
            v = [int(valid[k, p]) for p in twins] + [0] * (cfg.twins - len(twins))
            c = next(int(channel[k, p]) for p in twins if valid[k, p])
            steps.append((c, [int(seg[k, p]) for p in twins] + [0] * (cfg.twins - len(twins)),
                          v, k))
        results = simulate(cfg, frame, tables, steps, seed=seed + d, stall=0.3)
        # the results are the stream bytes of the pair's instances
        want = [([int(golden.reshape(-1)[s.compact_flat[k * cfg.instances + p]])
                  if s.compact_flat[k * cfg.instances + p] >= 0 else 0 for p in twins]
                 + [0] * (cfg.twins - len(twins)), k) for k in range(int(s.pair_steps[d]))]
        assert want == expect(cfg, golden, tables, steps)
        check(results, want, seed)


@pytest.mark.parametrize("name", CONFIGS)
def test_throughput(name):
    """No stalls: one step per G cycles after the pipeline latency, E steps in exactly
    E*G + PIPELINE_LATENCY cycles (step e's results in cycle (e+1)*G + PIPELINE_LATENCY - 1)."""
    cfg = CONFIGS[name]
    seed = seed_for("datapath-throughput", name)
    rng = np.random.default_rng(seed)
    frame = random_frame(cfg, rng, density=0.0)
    golden = golden_ofm(frame)
    tables = [random_offsets(cfg, rng) for _ in range(cfg.twins)]
    n = cfg.out_channels
    steps = [(i % n, [(i // n + t) % cfg.segments for t in range(cfg.twins)], [1] * cfg.twins, i)
             for i in range(n * cfg.segments)]
    results = simulate(cfg, frame, tables, steps, seed=seed, stall=0.0)
    check(results, expect(cfg, golden, tables, steps), seed)
    g = cfg.groups
    assert [c for c, _, _ in results] == [(e + 1) * g + PIPELINE_LATENCY - 1
                                          for e in range(len(steps))]
    assert results[-1][0] + 1 == len(steps) * g + PIPELINE_LATENCY


def test_rejects_bad_slots():
    cfg = CONFIGS["c1"]
    with pytest.raises(ValueError, match="slots must be at least 1, not 0"):
        Datapath(cfg, 0)
    with pytest.raises(TypeError, match="slots must be an integer, not 2.0"):
        Datapath(cfg, 2.0)


def test_window_memories_split_between_block_ram_and_ultraram():
    """A window memory deeper than one RAMB36 column (512) puts twin 0's in UltraRAM, twin 1's
    in block RAM; a shallower one keeps both in block RAM. The Verilog carries the attribute
    (Yosys and Vivado map ``ram_style = "ultra"`` to URAM288) and, UltraRAM having no initial
    contents, no initial block for it (hdl.synthesis.strip_uram_init)."""
    from amaranth.back import verilog
    from hdl.datapath import buffer_windows, window_ram_style
    from hdl.synthesis import strip_uram_init, uram_memories
    from sim.network import NETWORK_DESIGN
    shallow = AccelConfig()                       # the default design: 2 x 256 windows
    assert 2 * buffer_windows(shallow) == 512
    assert [window_ram_style(shallow, t) for t in range(2)] == [None, None]
    assert 2 * buffer_windows(NETWORK_DESIGN) == 1024
    assert [window_ram_style(NETWORK_DESIGN, t) for t in range(2)] == ["ultra", None]
    # W = 4 over P = 2: J = 2; H = 65: S = 130, 2 x 256 windows; H = 130: 2 x 512
    for height, expect_ultra in ((65, False), (130, True)):
        cfg = AccelConfig(height=height, width=4, in_channels=1, instances=2, bus_width=64,
                          out_channels=2)
        text = strip_uram_init(verilog.convert(Datapath(cfg, 2), name="dp", emit_src=False))
        assert uram_memories(text) == ({"windows": False} if expect_ultra else {})
        # both stores keep their block-RAM twin (and pixel tables, weights) initialised
        assert re.search(r"^    windows\[0\] = ", text, re.M)
