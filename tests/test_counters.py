"""hdl.counters' EngineCounters on its own, in the Amaranth simulator, against a plain-Python model
of every counter of hdl.protocol.STREAM_COUNTERS, on random event traces.

A trace is what the rest of the engine would report: batches (``start``, ``active``, ``end``) of
B images, each image started (``go``) in buffer j % 2, its steps taken by the pairs at random
(pair 0 the busiest, as the deal makes it; each twin of a step with or without an entry), two images in flight when image j + 1
starts before image j's last result, and batches whose schedule is empty (every image ends at its
``go``, all its counts zero); the status bits (loading, computing, mac active, output valid, the
stall of pair 0's result) are random every cycle, in and out of batches, and the entry fields
of cycles without a transfer are random too. The model counts from the trace's own record of each
batch and each image (not from the component's registers), and every cycle every counter and
``image_done`` must match it.
"""

import random

import pytest

from conftest import seed_for
from stream_sim import simulate
from hdl.config import AccelConfig
from hdl.counters import EngineCounters
from hdl.datapath import entries_per_instance
from hdl.protocol import SCALAR_COUNTER_KINDS, STREAM_COUNTERS, decode_stream_counters

CONFIGS = {
    "p2n3": AccelConfig(height=4, width=5, in_channels=1, instances=2, bus_width=64,
                        out_channels=3),
    "p4n1": AccelConfig(height=4, width=8, in_channels=1, instances=4, bus_width=64,
                        out_channels=1),
}
STATUS = ("loading", "computing", "mac_active", "out_valid", "stalled")


def trace(cfg, rng, batches, pace):
    """(cycles: [dict of inputs], images: [dict per image], starts: [cycle of each batch start])."""
    n = cfg.out_channels
    cycles, images, starts = [], [], []

    def cycle(**kw):
        c = {k: int(rng.random() < 0.5) for k in STATUS}
        c.update(start=0, active=0, end=0, go=0, buf=0, empty=0, iend=0, open=0, ended=0)
        c["work"] = [dict(taken=0, slot=rng.randrange(max(n, 2)), seg=[0] * cfg.twins,
                          valid=[rng.randrange(2) for _ in range(cfg.twins)],
                          index=rng.randrange(entries_per_instance(cfg)), buf=rng.randrange(2))
                     for _ in range(cfg.pairs)]
        c.update(kw)
        cycles.append(c)
        return c

    for b_count, empty in batches:
        for _ in range(rng.randint(0, 3)):
            cycle()
        starts.append(len(cycles))
        cycle(start=1)
        ended = 0
        flight = []          # images started, not ended, oldest first
        todo = list(range(b_count))
        walking = None       # image whose entries are being taken
        wait = rng.randint(0, 4)
        while todo or flight or walking is not None:
            c = cycle(active=1, ended=ended % 2,
                      open=sum(1 << im["buf"] for im in flight if not im["empty"]))
            t = len(cycles) - 1
            # the oldest image in flight ends some time after its entries are all taken (its
            # results drain; meanwhile the next image may start)
            if flight and flight[0] is not walking and flight[0]["end_at"] <= t:
                im = flight.pop(0)
                im["end"] = t
                c["iend"] = 1
                ended += 1
            # the next image starts once the walkers are done with the last one
            if walking is None and todo and wait <= 0 and len(flight) < 2:
                j = todo.pop(0)
                im = dict(buf=j % 2, empty=empty, go=t, t0=None, left=[], taken=[])
                images.append(im)
                c.update(go=1, buf=im["buf"], empty=int(empty))
                if empty:
                    im["end"] = t
                    c["iend"] = 1
                    ended += 1
                else:
                    steps = rng.randint(1, entries_per_instance(cfg))
                    counts = [steps] + [rng.randint(0, steps) for _ in range(cfg.pairs - 1)]
                    im["left"] = [[(rng.randrange(n), k, [rng.randrange(2) for _ in
                                                          range(cfg.twins)])
                                   for k in range(cnt)] for cnt in counts]
                    im["start_at"] = t + 2          # a walker offers two cycles after go
                    flight.append(im)
                    walking = im
                wait = rng.randint(0, 3)
            elif walking is None:
                wait -= 1
            elif t >= walking["start_at"]:
                for d, left in enumerate(walking["left"]):
                    if left and rng.random() < pace:
                        slot, k, valid = left.pop(0)
                        c["work"][d] = dict(taken=1, slot=slot, valid=valid, index=k,
                                            seg=[rng.randrange(cfg.segments)
                                                 for _ in range(cfg.twins)],
                                            buf=walking["buf"])
                        walking["taken"] += [(2 * d + t, slot) for t in range(cfg.twins)
                                             if valid[t]]
                        if d == 0 and k == 0:
                            walking["t0"] = t
                if not any(walking["left"]):
                    walking["end_at"] = t + rng.choice([1, 2, 4, 8, 16])
                    walking = None
        for _ in range(rng.randint(0, 3)):      # the last beats leave
            cycle(active=1, ended=ended % 2)
        cycles[-1]["end"] = 1
    for _ in range(3):
        cycle()
    return cycles, images, starts


def expected(cfg, cycles, images, t):
    """Every counter as the component must show it in cycle ``t`` (counts of cycles < t)."""
    n, p_count = cfg.out_channels, cfg.instances
    out = {name: 0 if kind in SCALAR_COUNTER_KINDS else [0] * (n if kind == "channel" else p_count)
           for name, kind, _ in STREAM_COUNTERS}
    past = cycles[:t]
    out["batches"] = sum(c["end"] for c in past)
    out["images"] = sum(c["iend"] for c in past)
    starts = [u for u, c in enumerate(past) if c["start"]]
    if starts:
        batch = [c for c in past[starts[-1] + 1:] if c["active"]]
        out["batch_cycles"] = 1 + len(batch)
        out["load_cycles"] = sum(c["loading"] for c in batch)
        out["datapath_cycles"] = sum(c["computing"] for c in batch)
        out["overlap_cycles"] = sum(c["loading"] & c["computing"] for c in batch)
        out["drain_cycles"] = sum(c["out_valid"] & (1 - c["computing"]) for c in batch)
        out["mac_active_cycles"] = sum(c["mac_active"] for c in batch)
    done = [im for im in images if im.get("end", t) < t]
    if done:
        im = max(done, key=lambda im: im["end"])
        if not im["empty"]:
            between = cycles[im["t0"] + 1:im["end"]]
            out["image_cycles"] = im["end"] - im["t0"] + 1 - sum(c["stalled"] for c in between)
            out["image_computed"] = [sum(s == c for _, s in im["taken"]) for c in range(n)]
            out["image_instance"] = [sum(q == p for q, _ in im["taken"]) for p in range(p_count)]
    return out


@pytest.mark.parametrize("pace", [0.3, 0.8])
@pytest.mark.parametrize("name", CONFIGS)
def test_counters_match_model(name, pace):
    cfg = CONFIGS[name]
    seed = seed_for("counters", name, pace)
    rng = random.Random(seed)
    batches = [(rng.randint(1, 5), rng.random() < 0.25) for _ in range(5)] + [(2, True), (4, False)]
    cycles, images, _ = trace(cfg, rng, batches, pace)
    dut = EngineCounters(cfg)
    # the trace has what the counters must handle: two images computing at once, empty images
    assert any(c["open"] == 3 for c in cycles) and any(im["empty"] for im in images), \
        f"seed={seed}"

    async def bench(ctx):
        for t, c in enumerate(cycles):
            for k in ("start", "active", "end"):
                ctx.set(getattr(dut.batch, k), c[k])
            for k, v in (("go", "go"), ("buf", "buf"), ("empty", "empty"), ("end", "iend"),
                         ("open", "open"), ("ended", "ended")):
                ctx.set(getattr(dut.image, k), c[v])
            for k in STATUS:
                ctx.set(getattr(dut.events, k), c[k])
            for port, w in zip(dut.work, c["work"]):
                ctx.set(port.taken, w["taken"])
                ctx.set(port.entry, {k: w[k] for k in ("slot", "seg", "valid", "index", "buf")})
            # the counters show cycle t's events LATENCY + 1 cycles on (registered inputs)
            lag = EngineCounters.LATENCY
            got = decode_stream_counters(cfg, ctx.get(dut.counters.as_value()))
            want = expected(cfg, cycles, images, max(t - lag, 0))
            assert got == want, f"seed={seed} cycle {t}: got {got}, expected {want}"
            assert ctx.get(dut.image_done) == (t > lag and cycles[t - 1 - lag]["iend"]), \
                f"seed={seed} cycle {t}"
            await ctx.tick()

    simulate(dut, bench)


@pytest.mark.parametrize("down", [False, True])
@pytest.mark.parametrize("width,chunk", [(10, 3), (32, 16)])
def test_chunked_counter_is_a_plain_counter(width, chunk, down):
    """hdl.counters.ChunkedCounter against a plain counter modulo 2**width: random loads (often
    of values next to a piece's wrap, so carries run through every piece) and steps, every
    cycle."""
    from amaranth import Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out
    from hdl.counters import ChunkedCounter

    class Dut(wiring.Component):
        step: In(1)
        load: In(1)
        load_value: In(width)
        value: Out(width)

        def elaborate(self, platform):
            m = Module()
            c = ChunkedCounter(width, chunk=chunk, down=down)
            c.update(m, step=self.step, load=self.load, load_value=self.load_value)
            m.d.comb += self.value.eq(c.value)
            return m

    seed = seed_for("counters", "chunked", width, chunk, down)
    rng = random.Random(seed)
    dut = Dut()
    mask = (1 << width) - 1

    def near_wrap():
        k = rng.randrange(0, width, chunk)
        edge = (1 << k) if not down else (1 << k) * rng.randrange(1, 4)
        return (edge * rng.randrange(1, 1 << max(width - k, 1)) - rng.randrange(-3, 4)) & mask

    async def bench(ctx):
        want = 0
        for t in range(3000):
            assert ctx.get(dut.value) == want, f"seed={seed} cycle {t}"
            load = rng.random() < 0.02
            step = rng.random() < 0.8
            value = near_wrap() if rng.random() < 0.7 else rng.getrandbits(width)
            ctx.set(dut.load, load)
            ctx.set(dut.step, step)
            ctx.set(dut.load_value, value)
            await ctx.tick()
            want = value if load else (want + (-1 if down else 1) * step) & mask

    simulate(dut, bench)
