"""The kernel's data movers (hdl/kernel_dma.py) on their own, in the Amaranth simulator, against
plain-Python references, under random stalls on every stream and AXI channel.

* ReadSequencer: the AR bursts cover each input segment's bytes exactly once, in order, each
  at most 64 beats and inside one 4 KB page; never more beats asked for than the FIFO has room
  for (so R is never refused); ``o`` gives the memory's beats in that order; RRESP errors
  are flagged and cleared at the next launch; load_config=0 reads the ifmap only.
* Feeder: the engine's command stream is params, schedule (if load_config), the FRAME header
  with B and the ifmap beats, and nothing more is taken from the read stream.
* WriteBack: exactly the engine's beats at consecutive addresses from the ofm base, legal
  bursts with WLAST on each last beat, an address only once its data is in the FIFO, full
  bursts to a page end until ``drain``, OUT_BEATS right, BRESP errors flagged, and ``busy``
  until every response is back.
"""

import hashlib
import random
from collections import deque

import pytest

from conftest import seed_for
from stream_sim import run_streams, simulate
from hdl.regmap import BUFFERS, INPUT_BUFFERS
from hdl.kernel_dma import (BURST_BEATS, PAGE_BITS, PAGE_CHUNK_BITS, Feeder, ReadSequencer,
                            RegisterSlice, WriteBack)
from hdl.protocol import Opcode

PAGE = 4096
BEAT = 64
TIMEOUT = 50_000


def memory(addr: int) -> int:
    """The 512-bit beat the model's memory holds at byte address ``addr``."""
    return int.from_bytes(hashlib.blake2b(addr.to_bytes(8, "little"), digest_size=64).digest(),
                          "little")


def random_base(rng) -> int:
    """A 64-byte-aligned address, often a few beats before a 4 KB page end, up to 2**48, or a
    few beats to pages before a carry into a higher chunk of the movers' page number
    (hdl.kernel_dma.PageAddress: bits 25, 38 and 51)."""
    if rng.random() < 0.3:
        k = rng.randrange(1, 4)
        top = (1 << (PAGE_BITS + PAGE_CHUNK_BITS * k)) * rng.randrange(1, 4)
        return top - BEAT * rng.randrange(1, 3 * PAGE // BEAT)
    base = rng.randrange(0, 1 << 48) & ~(BEAT - 1)
    if rng.random() < 0.6:
        base = (base & ~(PAGE - 1)) + PAGE - BEAT * rng.randrange(1, 6)
    return base


def random_args(rng, *, load_config, lengths=None):
    lengths = lengths or {"params": rng.randrange(1, 150), "schedule": rng.randrange(1, 40),
                          "ifmap": rng.randrange(1, 200)}
    return {"base": {b: random_base(rng) for b in BUFFERS}, "beats": lengths,
            "load_config": load_config, "images": rng.randrange(1, 1 << 16)}


def segments(args):
    """The input buffers a run reads, in order (an empty one is skipped)."""
    return [b for b in INPUT_BUFFERS
            if (args["load_config"] or b == "ifmap") and args["beats"][b]]


async def launch(ctx, dut, args):
    ctx.set(dut.launch.args, args)
    ctx.set(dut.launch.start, 1)
    await ctx.tick()
    ctx.set(dut.launch.start, 0)


class Held:
    """The AXI rule on one channel: once ``valid``, it and the payload stay until ``ready``."""

    def __init__(self, name):
        self.name, self.waiting = name, None

    def check(self, valid, ready, payload):
        if self.waiting is not None:
            assert valid and payload == self.waiting, \
                f"{self.name}: {self.waiting!r} withdrawn or changed before ready"
        self.waiting = payload if valid and not ready else None


# -- ReadSequencer ---------------------------------------------------------------------------

def run_reader(depth, runs, *, seed, stall):
    """Launch each of ``runs`` [(args, bad_beat or None)] in turn, playing memory (R beats in
    AR order, RRESP = SLVERR on beat number ``bad_beat``) and a consumer; return per run the
    bursts [(addr, beats)], the beats out of ``o`` and the error flag at its end."""
    rng = random.Random(seed)
    dut = ReadSequencer(depth)
    results = []

    async def bench(ctx):
        for args, bad_beat in runs:
            total = sum(args["beats"][b] for b in segments(args))
            await launch(ctx, dut, args)
            bursts, out = [], []
            to_deliver = deque()
            offer = None
            asked = taken = delivered = 0
            held = Held("AR")
            for cycle in range(TIMEOUT):
                if len(out) == total:
                    break
                ar_ready = rng.random() >= stall
                ctx.set(dut.ar.ready, ar_ready)
                if offer is None and to_deliver and rng.random() >= stall:
                    offer = to_deliver.popleft()
                ctx.set(dut.r.valid, offer is not None)
                if offer is not None:
                    ctx.set(dut.r.payload, {"data": memory(offer),
                                            "resp": 2 if delivered == bad_beat else 0})
                o_ready = rng.random() >= stall
                ctx.set(dut.o.ready, o_ready)

                ar_valid = ctx.get(dut.ar.valid)
                ar = ctx.get(dut.ar.payload)
                held.check(ar_valid, ar_ready, (ar.addr, ar.len) if ar_valid else None)
                if ar_valid and ar_ready:
                    beats = ar.len + 1
                    bursts.append((ar.addr, beats))
                    to_deliver.extend(ar.addr + BEAT * k for k in range(beats))
                    asked += beats
                    assert asked - taken <= depth, \
                        f"cycle {cycle}: {asked - taken} beats asked for, FIFO of {depth}"
                if offer is not None:
                    assert ctx.get(dut.r.ready), f"cycle {cycle}: R refused a beat asked for"
                    offer = None
                    delivered += 1
                if o_ready and ctx.get(dut.o.valid):
                    out.append(ctx.get(dut.o.payload))
                    taken += 1
                await ctx.tick()
            else:
                raise AssertionError(f"stuck: {len(out)} of {total} beats, bursts {bursts}")
            ctx.set(dut.ar.ready, 1)
            ctx.set(dut.o.ready, 1)
            for _ in range(4):
                assert not ctx.get(dut.ar.valid) and not ctx.get(dut.o.valid), "more than asked"
                await ctx.tick()
            results.append((bursts, out, ctx.get(dut.error), ctx.get(dut.busy)))

    simulate(dut, bench)
    return results


READER_CASES = [(depth, i) for depth in (BURST_BEATS, 256) for i in range(3)]


@pytest.mark.parametrize("depth,case", READER_CASES)
def test_read_sequencer(depth, case):
    seed = seed_for("kernel_dma", "reader", depth, case)
    rng = random.Random(seed)
    first = random_args(rng, load_config=1)
    # load_config=0: the params and schedule lengths are not looked at
    second = random_args(rng, load_config=0,
                         lengths={"params": 0, "schedule": rng.randrange(1 << 32),
                                  "ifmap": rng.randrange(1, 200)})
    total = sum(first["beats"].values())
    bad = rng.randrange(total) if case % 2 == 0 else None
    results = run_reader(depth, [(first, bad), (second, None)], seed=seed, stall=0.5)
    for (args, bad_beat), (bursts, out, error, busy) in zip([(first, bad), (second, None)],
                                                            results):
        want = [args["base"][b] + BEAT * k for b in segments(args)
                for k in range(args["beats"][b])]
        got = [addr + BEAT * k for addr, beats in bursts for k in range(beats)]
        assert got == want, f"seed={seed}: burst addresses"
        for addr, beats in bursts:
            assert 1 <= beats <= BURST_BEATS and addr % BEAT == 0, f"seed={seed}: {addr:#x}"
            assert addr % PAGE + beats * BEAT <= PAGE, f"seed={seed}: {addr:#x} x {beats}"
        assert out == [memory(a) for a in want], f"seed={seed}: data"
        assert error == (bad_beat is not None), f"seed={seed}: error flag"
        assert not busy


#: Zero-length segments: each is skipped (no burst, nothing fed), the others unchanged.
EMPTY_SEGMENTS = [{"params": 0, "schedule": 3, "ifmap": 70}, {"params": 5, "schedule": 0, "ifmap": 2},
                  {"params": 0, "schedule": 0, "ifmap": 1}, {"params": 66, "schedule": 1, "ifmap": 0},
                  {"params": 0, "schedule": 0, "ifmap": 0}]


def test_read_sequencer_skips_empty_segments():
    seed = seed_for("kernel_dma", "reader", "empty")
    rng = random.Random(seed)
    runs = [(random_args(rng, load_config=1, lengths=lengths), None) for lengths in EMPTY_SEGMENTS]
    runs.append((random_args(rng, load_config=0, lengths={"params": 4, "schedule": 4, "ifmap": 0}),
                 None))
    for (args, _), (bursts, out, error, busy) in zip(runs, run_reader(BURST_BEATS, runs, seed=seed,
                                                                      stall=0.3)):
        want = [args["base"][b] + BEAT * k for b in segments(args)
                for k in range(args["beats"][b])]
        got = [addr + BEAT * k for addr, beats in bursts for k in range(beats)]
        assert got == want and all(beats <= BURST_BEATS for _, beats in bursts), \
            f"seed={seed}: {args['beats']}: bursts {bursts}"
        assert out == [memory(a) for a in want] and not error and not busy


@pytest.mark.filterwarnings("ignore::amaranth.UnusedElaboratable")
def test_read_sequencer_rejects_small_fifo():
    with pytest.raises(ValueError, match="depth must be at least a burst, 64 beats, not 32"):
        ReadSequencer(32)
    with pytest.raises(TypeError, match="depth must be an int"):
        WriteBack(128.0)


# -- Feeder ----------------------------------------------------------------------------------

def feeder_reference(args, data):
    """The engine's commands for one run: ``data`` {buffer: beats} as read, the FRAME header
    before the ifmap."""
    out = []
    for b in segments(args):
        if b == "ifmap":        # an empty ifmap is skipped with its header
            out.append(int(Opcode.FRAME) | args["images"] << 8)
        out += data[b]
    return out


@pytest.mark.parametrize("case", range(5))
def test_feeder(case):
    seed = seed_for("kernel_dma", "feeder", case)
    rng = random.Random(seed)
    stall = 0.5 if case else 0.0
    if case == 4:       # zero-length segments are skipped
        runs = [random_args(rng, load_config=1, lengths=lengths) for lengths in EMPTY_SEGMENTS]
    else:
        runs = [random_args(rng, load_config=1),
                random_args(rng, load_config=0, lengths={"params": 0, "schedule": 0,
                                                         "ifmap": rng.randrange(1, 100)}),
                random_args(rng, load_config=1, lengths={"params": 1, "schedule": 1, "ifmap": 1})]
    dut = Feeder()
    got = []

    async def bench(ctx):
        for args in runs:
            data = {b: [rng.getrandbits(512) for _ in range(args["beats"][b])]
                    for b in INPUT_BUFFERS}
            want = feeder_reference(args, data)
            await launch(ctx, dut, args)
            assert ctx.get(dut.busy) == bool(want), f"seed={seed}: busy {args['beats']}"
            read = [beat for b in segments(args) for beat in data[b]]
            out, = await run_streams(ctx, sources=[(dut.i, read)], sinks=[(dut.o, len(want))],
                                     rng=rng, stall=stall)
            got.append(([p for _, p in out], want))
            assert not ctx.get(dut.busy), f"seed={seed}: busy after the last beat"
            ctx.set(dut.i.valid, 1)           # a stray beat is not taken, nor anything sent
            ctx.set(dut.o.ready, 1)
            assert not ctx.get(dut.i.ready) and not ctx.get(dut.o.valid)
            ctx.set(dut.i.valid, 0)
            ctx.set(dut.o.ready, 0)

    simulate(dut, bench)
    for n, (out, want) in enumerate(got):
        assert out == want, f"seed={seed} run {n}"


# -- WriteBack -------------------------------------------------------------------------------

def run_writer(depth, beats, base, *, seed, stall, bad_burst=None):
    """Push ``beats`` into ``i`` under stalls, raise ``drain`` a random while after the last,
    play AW/W/B (BRESP = SLVERR for burst number ``bad_burst``). Returns the bursts
    [(addr, beats, before_drain)], the W beats [(data, last)], OUT_BEATS and the error flag."""
    rng = random.Random(seed)
    dut = WriteBack(depth)
    result = {}

    async def bench(ctx):
        await launch(ctx, dut, {"base": {b: base if b == "ofm" else 0 for b in BUFFERS},
                                "beats": {b: 0 for b in INPUT_BUFFERS},
                                "load_config": 0, "images": 1})
        bursts, written, responses = [], [], deque()
        pushed, offered, drain_in = 0, False, rng.randrange(0, 30)
        b_offer, b_sent, w_in_burst, w_bursts = None, 0, 0, 0
        held = {c: Held(c) for c in ("AW", "W", "B")}
        for cycle in range(TIMEOUT):
            drain = pushed == len(beats) and drain_in == 0
            ctx.set(dut.drain, drain)
            offered = pushed < len(beats) and (offered or rng.random() >= stall)
            ctx.set(dut.i.valid, offered)
            if offered:
                ctx.set(dut.i.payload, beats[pushed])
            aw_ready, w_ready = rng.random() >= stall, rng.random() >= stall
            ctx.set(dut.aw.ready, aw_ready)
            ctx.set(dut.w.ready, w_ready)
            if b_offer is None and responses and rng.random() >= stall:
                b_offer = responses.popleft()
            ctx.set(dut.b.valid, b_offer is not None)
            ctx.set(dut.b.payload, b_offer or 0)

            if not ctx.get(dut.busy):
                assert len(written) == len(beats) and b_sent == len(bursts) and drain, \
                    f"cycle {cycle}: idle with {len(written)} of {len(beats)} beats written"
                break
            aw_valid, w_valid = ctx.get(dut.aw.valid), ctx.get(dut.w.valid)
            aw, w = ctx.get(dut.aw.payload), ctx.get(dut.w.payload)
            held["AW"].check(aw_valid, aw_ready, (aw.addr, aw.len) if aw_valid else None)
            held["W"].check(w_valid, w_ready, (w.data, w.last) if w_valid else None)
            if aw_valid and aw_ready:
                assert pushed - len(written) >= aw.len + 1, \
                    f"cycle {cycle}: address of {aw.len + 1} beats, {pushed - len(written)} held"
                bursts.append((aw.addr, aw.len + 1, not drain))
            if w_valid and w_ready:
                assert bursts and sum(n for _, n, _ in bursts) > len(written), "W before AW"
                written.append((w.data, w.last))
                w_in_burst += 1
                if w_in_burst == bursts[w_bursts][1]:     # B only after the burst's last W
                    responses.append(2 if w_bursts == bad_burst else 0)
                    w_in_burst, w_bursts = 0, w_bursts + 1
            if b_offer is not None:
                assert ctx.get(dut.b.ready)
                b_offer = None
                b_sent += 1
            took = offered and ctx.get(dut.i.ready)
            await ctx.tick()
            if took:
                pushed += 1
                offered = False
            if pushed == len(beats) and drain_in:
                drain_in -= 1
        else:
            raise AssertionError(f"stuck: {len(written)} of {len(beats)} beats written")
        result.update(bursts=bursts, written=written, out_beats=ctx.get(dut.out_beats),
                      error=ctx.get(dut.error))

    simulate(dut, bench)
    return result


@pytest.mark.parametrize("depth,case", [(d, i) for d in (BURST_BEATS, 128) for i in range(4)])
def test_write_back(depth, case):
    seed = seed_for("kernel_dma", "writer", depth, case)
    rng = random.Random(seed)
    n = [0, 1, rng.randrange(2, 300), rng.randrange(100, 300)][case]
    beats = [rng.getrandbits(512) for _ in range(n)]
    base = random_base(rng)
    bad = rng.randrange(n // BURST_BEATS + 1) if case == 3 else None
    r = run_writer(depth, beats, base, seed=seed, stall=0.5 if case != 2 else 0.0,
                   bad_burst=bad)
    addr = base
    for start, length, before_drain in r["bursts"]:
        assert start == addr and 1 <= length <= BURST_BEATS, f"seed={seed}: {r['bursts']}"
        assert start % PAGE + length * BEAT <= PAGE, f"seed={seed}: crosses a page"
        if before_drain:      # while the engine runs: full bursts to the page end
            assert (start + length * BEAT) % PAGE == 0, f"seed={seed}: short burst"
        addr += length * BEAT
    assert addr == base + n * BEAT
    assert [d for d, _ in r["written"]] == beats, f"seed={seed}: data"
    lasts = [k == length - 1 for _, length, _ in r["bursts"] for k in range(length)]
    assert [bool(last) for _, last in r["written"]] == lasts, f"seed={seed}: WLAST"
    assert r["out_beats"] == n
    assert r["error"] == (bad is not None)


# -- RegisterSlice ---------------------------------------------------------------------------

@pytest.mark.parametrize("stall", [0.0, 0.5])
def test_register_slice_passes_every_beat_in_order(stall):
    """Every beat once, in order, under random stalls on both sides; with neither side stalling,
    one beat a cycle after one cycle of latency."""
    seed = seed_for("kernel_dma", "register_slice", stall)
    rng = random.Random(seed)
    dut = RegisterSlice(16)
    beats = [rng.getrandbits(16) for _ in range(300)]

    async def bench(ctx):
        got, = await run_streams(ctx, sources=[(dut.i, beats)], sinks=[(dut.o, len(beats))],
                                 rng=rng, stall=stall)
        assert [p for _, p in got] == beats, f"seed={seed}"
        if not stall:
            assert [c for c, _ in got] == list(range(1, len(beats) + 1)), f"seed={seed}"

    simulate(dut, bench)
