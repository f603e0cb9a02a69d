"""Formal harnesses of the kernel's data movers (:mod:`hdl.kernel_dma`).

The environment (assumed): the Launcher starts a run only with the part idle and holds the
run's arguments until the next start (it refuses unaligned pointers, so bases are 64-byte
aligned); the AXI slave and the streams' other ends obey valid/ready; memory returns R beats
only for beats asked for; B comes only after a burst's last W beat. Ghost counters (beats
asked, fed, written) state what the part must have done, so "each byte once, in order" is a
counter per segment rather than a list.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, ResetSignal, Signal
from amaranth.hdl import Assert, Assume, Cover

from ..regmap import INPUT_BUFFERS
from ..kernel_control import ARGUMENTS
from ..kernel_dma import BEAT_SHIFT, BURST_BEATS, PAGE_BITS, Feeder, ReadSequencer, WriteBack
from ..protocol import Opcode
from .props import Harness, held, past, quiet_after_reset

__all__ = ["FeederHarness", "ReadSequencerHarness", "WriteBackHarness"]

PAGE_BYTES = 1 << PAGE_BITS


def _run(m, h, dut):
    """The Launcher as environment: start only when ``dut`` is idle, the arguments held
    through the run; returns the run's arguments and a flag: a run was launched since reset."""
    args = Signal(ARGUMENTS, name="run_args")
    launched = Signal(name="launched")
    with m.If(dut.launch.start):
        m.d.sync += [args.eq(dut.launch.args), launched.eq(1)]
    m.d.comb += Assume(~dut.launch.start | ~dut.busy, "start only when idle")
    # the ghost `args` is the run's: the part's copy must not change while it works
    m.d.comb += Assume(~launched | dut.launch.start | (dut.launch.args == args),
                       "arguments held until the next start")
    # the Launcher refuses unaligned pointers
    m.d.comb += [Assume(dut.launch.args.base[b][:BEAT_SHIFT] == 0, f"{b} aligned")
                 for b in ARGUMENTS.members["base"].members]
    return args, launched


def _segments(args):
    """{buffer: beats this run reads} (params and schedule only with load_config)."""
    return {b: Mux(args.load_config | (b == "ifmap"), args.beats[b], 0) for b in INPUT_BUFFERS}


class FeederHarness(Harness):
    """:class:`~hdl.kernel_dma.Feeder`: ``o`` obeys valid/ready given ``i`` does; ``i`` gives up
    exactly the run's beats; ``o`` is params, schedule, the FRAME header (only if the ifmap has
    beats) and the ifmap beats, each passed through unchanged; ``busy`` until the last."""

    def elaborate(self, platform):
        m = self.module()
        m.submodules.dut = dut = Feeder()
        self.drive_inputs(m, dut, "env")
        i, o = dut.i, dut.o
        args, launched = _run(m, self, dut)
        seg = _segments(args)
        pre = Signal(34)                    # beats before the header
        total = Signal(34)
        header = Signal()
        m.d.comb += [pre.eq(seg["params"] + seg["schedule"]), total.eq(pre + seg["ifmap"]),
                     header.eq(seg["ifmap"] != 0)]
        taken, fed = Signal(34), Signal(35)
        with m.If(dut.launch.start):
            m.d.sync += [taken.eq(0), fed.eq(0)]
        with m.Else():
            m.d.sync += [taken.eq(taken + (i.valid & i.ready)), fed.eq(fed + (o.valid & o.ready))]

        held(m, self, i.valid, i.ready, i.payload, Assume, "i")
        held(m, self, o.valid, o.ready, o.payload, Assert, "o")
        quiet_after_reset(m, self, o.valid, name="o")
        at_header = header & (fed == pre)
        frame = Const(int(Opcode.FRAME), 32) | (args.images << 8)
        m.d.comb += [
            Assert(dut.busy == (launched & (fed < total + header)), "busy until the last beat"),
            Assert(fed == taken + (header & (fed > pre)), "every beat out came in, or is the header"),
            Assert(~(i.valid & i.ready) | (dut.busy & (taken < total)), "only the run's beats taken"),
            Assert(~o.valid | ~at_header | ((o.payload == frame) & ~i.ready), "the FRAME header"),
            Assert(~o.valid | at_header | ((o.payload == i.payload) & i.valid),
                   "a beat passed through"),
            Assert(~(o.valid & o.ready) | at_header | i.ready, "a beat out is a beat taken"),
        ]
        # the invariants that make k-induction close: the registers agree with the ghost counts
        st = dut.state
        idx = {b: k for k, b in enumerate(INPUT_BUFFERS)}
        before = Signal(34)
        m.d.comb += before.eq(Mux(st.seg == idx["ifmap"], pre,
                                  Mux(st.seg == idx["schedule"], seg["params"], 0)))
        seg_now = Signal(32)
        m.d.comb += seg_now.eq(Mux(st.seg == idx["ifmap"], seg["ifmap"],
                                   Mux(st.seg == idx["schedule"], seg["schedule"], seg["params"])))
        m.d.comb += [
            Assert(~dut.busy | ((st.left != 0) & (st.left <= seg_now) & (st.seg != 3)),
                   "inv: beats left in the segment"),
            Assert(~dut.busy | (taken == before + seg_now - st.left), "inv: beats taken"),
            Assert(~dut.busy | (st.last == (st.left == 1)), "inv: last beat of the segment"),
            *[Assert(dut.count.wrap[k] == (piece == 0), f"inv: left's piece {k} at zero")
              for k, piece in enumerate(dut.count.pieces)],
            *[Assert(~launched | (after.as_value() == Feeder.first_from(args, k + 1)),
                     f"inv: the segment after {k}") for k, after in enumerate(dut.after)],
            Assert(~st.head | (dut.busy & (st.seg == idx["ifmap"]) & (st.left == seg_now)),
                   "inv: the header opens the ifmap"),
            Assert(~dut.busy | (fed == taken + (header & (st.seg == idx["ifmap"]) & ~st.head)),
                   "inv: fed while busy"),
            Assert(dut.busy | ~launched | ((taken == total) & (fed == total + header)),
                   "inv: a run ended"),
            Assert(launched | ((fed == 0) & (taken == 0)), "inv: before a run"),
        ]
        ended = past(m, dut.busy) & ~dut.busy & ~past(m, ResetSignal()) & self.started
        all_there = Cat(args.beats[b] != 0 for b in INPUT_BUFFERS).all()
        m.d.comb += [
            Cover(o.valid & ~o.ready & dut.busy & (fed > 0), "o stalled mid-run"),
            Cover(o.valid & at_header & o.ready, "the header goes out"),
            Cover(ended & args.load_config & all_there, "a run with all three segments ends"),
            Cover(ended & args.load_config & (args.beats.params == 0) & (args.beats.ifmap != 0),
                  "params empty: skipped"),
            Cover(ended & args.load_config & (args.beats.schedule == 0) & (args.beats.params != 0)
                  & (args.beats.ifmap != 0), "schedule empty: skipped"),
            Cover(ended & (args.beats.ifmap == 0) & (fed == pre) & (pre != 0),
                  "ifmap empty: no header, nothing fed for it"),
            Cover(past(m, dut.launch.start) & ~dut.busy & launched & (total == 0),
                  "everything empty: never busy"),
        ]
        return m


def _segment_sums(m, args, seg_index):
    """(beats of the run's segments before ``seg_index``, beats of segment ``seg_index``)."""
    seg = _segments(args)
    idx = {b: k for k, b in enumerate(INPUT_BUFFERS)}
    before, now = Signal(34), Signal(32)
    m.d.comb += [
        before.eq(Mux(seg_index == idx["ifmap"], seg["params"] + seg["schedule"],
                      Mux(seg_index == idx["schedule"], seg["params"], 0))),
        now.eq(Mux(seg_index == idx["ifmap"], seg["ifmap"],
                   Mux(seg_index == idx["schedule"], seg["schedule"], seg["params"])))]
    return before, now


class ReadSequencerHarness(Harness):
    """:class:`~hdl.kernel_dma.ReadSequencer` with a ``depth``-beat FIFO: AR held until ready;
    bursts of 1..64 beats, 64-byte aligned, inside one 4 KB page; the bursts cover each segment
    of the run once, in order (the address of each is the segment's base plus the beats asked
    so far), nothing more; R is never refused (every response consumed) and the beats asked and
    not yet out of ``o`` never exceed the FIFO; ``o`` held until ready; no VALID after reset."""

    def __init__(self, depth: int = BURST_BEATS):
        super().__init__()
        self.depth = depth

    def elaborate(self, platform):
        m = self.module()
        m.submodules.dut = dut = ReadSequencer(self.depth)
        self.drive_inputs(m, dut, "env")
        ar, r, o, st = dut.ar, dut.r, dut.o, dut.state
        args, launched = _run(m, self, dut)
        seg = _segments(args)
        total = Signal(34)
        m.d.comb += total.eq(seg["params"] + seg["schedule"] + seg["ifmap"])
        asked, got, taken = Signal(34), Signal(34), Signal(34)
        ar_done, r_done, o_done = ar.valid & ar.ready, r.valid & r.ready, o.valid & o.ready
        beats = ar.payload.len + 1
        m.d.sync += [asked.eq(asked + Mux(ar_done, beats, 0)), got.eq(got + r_done),
                     taken.eq(taken + o_done)]
        with m.If(dut.launch.start):
            m.d.sync += asked.eq(0)

        held(m, self, ar.valid, ar.ready, ar.payload, Assert, "ar")
        held(m, self, r.valid, r.ready, r.payload, Assume, "r")
        held(m, self, o.valid, o.ready, o.payload, Assert, "o")
        quiet_after_reset(m, self, ar.valid, o.valid, name="ar/o")
        # memory answers only what was asked for (across runs: beats still in flight count)
        m.d.comb += Assume(~r.valid | ((got - taken)[:34] < st.credits), "R only for beats asked")

        before, now = _segment_sums(m, args, st.seg)
        page_beats = 1 << (PAGE_BITS - BEAT_SHIFT)
        # a segment is open (LEN, CHECK, OFFER) or SEEK looks for the next one
        open_seg = dut.busy & (st.phase != ReadSequencer.SEEK)
        seek = st.phase == ReadSequencer.SEEK
        before_look, _ = _segment_sums(m, args, st.look)
        m.d.comb += [
            Assert(~ar.valid | dut.busy, "AR only while busy"),
            Assert(~ar.valid | (ar.payload.addr[:BEAT_SHIFT] == 0), "AR aligned"),
            Assert(~ar.valid | (beats <= BURST_BEATS), "ARLEN within 64 beats (AXI4: 256)"),
            Assert(~ar.valid | (ar.payload.addr[BEAT_SHIFT:PAGE_BITS] + beats <= page_beats),
                   "no burst crosses 4 KB"),
            Assert(~ar.valid | (ar.payload.addr == st.addr), "AR address is the sequencer's"),
            Assert(~ar.valid | (beats <= st.left), "a burst stays inside its segment"),
            Assert(~open_seg | (asked == before + now - st.left), "each beat asked once, in order"),
            Assert(~seek | (asked == Mux(st.look == len(INPUT_BUFFERS), total, before_look)),
                   "each segment before the next asked whole"),
            Assert(dut.busy | ~launched | (asked == total), "a run asks for all its beats"),
            Assert(~r.valid | r.ready, "R never refused"),
            Assert(st.credits <= self.depth, "no more asked than the FIFO holds"),
            Assert(dut.level <= st.credits, "the FIFO holds only beats asked for"),
            Assert((got - taken)[:34] <= st.credits, "inv: R beats were asked for"),
            Assert((dut.level + taken)[:34] == got, "inv: FIFO level"),
            Assert(dut.space == self.depth - st.credits, "inv: space is depth - credits"),
            Assert(~launched | (dut.empty == Cat(args.beats[b] == 0 for b in INPUT_BUFFERS)),
                   "inv: the empty segments"),
        ]
        # the address: the segment's base plus the beats asked in it so far
        base = Signal(64)
        idx = {b: k for k, b in enumerate(INPUT_BUFFERS)}
        m.d.comb += base.eq(Mux(st.seg == idx["ifmap"], args.base.ifmap,
                                Mux(st.seg == idx["schedule"], args.base.schedule, args.base.params)))
        m.d.comb += [
            Assert(~open_seg | (st.addr == (base + ((now - st.left) << BEAT_SHIFT))[:64]),
                   "the address covers the segment from its base"),
            Assert(~open_seg | ((st.left != 0) & (st.left <= now) & (st.seg != 3)),
                   "inv: beats left in the segment"),
            Assert(st.phase <= ReadSequencer.OFFER, "inv: a phase"),
            Assert(st.look <= len(INPUT_BUFFERS), "inv: the segment looked at"),
            Assert(~seek | args.load_config | (st.look == len(INPUT_BUFFERS) - 1)
                   | (st.look == len(INPUT_BUFFERS)), "inv: without load_config, the ifmap only"),
            *_page_invariants(dut.page),
            Assert(~(st.phase == ReadSequencer.CHECK) & ~ar.valid
                   | _read_burst_ok(st, page_beats), "inv: the burst sized"),
            Assert(~ar.valid | ((st.left_after == st.left - st.length)
                                & (st.beat_after == (st.addr[BEAT_SHIFT:PAGE_BITS] + st.length)[:6])
                                & (st.credits + st.length <= self.depth)),
                   "inv: where the burst leaves the segment and the address"),
            Assert(launched | ((asked == 0) & ~dut.busy), "inv: before a run"),
        ]
        ended = past(m, dut.busy) & ~dut.busy & ~past(m, ResetSignal()) & self.started
        m.d.comb += [
            Cover(ar.valid & ~ar.ready, "AR stalled"),
            Cover(ar_done & (ar.payload.addr[BEAT_SHIFT:PAGE_BITS] + beats == page_beats)
                  & (beats < BURST_BEATS), "a burst cut at a page end"),
            Cover(dut.busy & ~ar.valid & (st.credits != 0), "AR waits for credits"),
            Cover(o.valid & ~o.ready, "o stalled"),
            Cover(r.valid & (dut.level != 0), "R beat into a non-empty FIFO"),
            Cover(ended & args.load_config & (args.beats.params == 0) & (asked != 0),
                  "params empty: skipped"),
            Cover(ended & (args.beats.ifmap == 0) & (asked != 0), "ifmap empty: skipped"),
            Cover(ended & args.load_config & (seg["params"] != 0) & (seg["schedule"] != 0)
                  & (seg["ifmap"] != 0), "a run over three segments ends"),
        ]
        return m


def _page_invariants(page) -> list:
    """Each chunk's all-ones flag of a :class:`~hdl.kernel_dma.PageAddress` is right."""
    return [Assert(page.ones[k] == chunk.all(), f"inv: page chunk {k} all ones")
            for k, chunk in enumerate(page.chunks)]


def _read_burst_ok(st, page_beats):
    """A burst LEN sized: 1..64 beats, within the segment and the page; ``last`` if it ends the
    segment, ``cross`` if it ends the page."""
    end = st.addr[BEAT_SHIFT:PAGE_BITS] + st.length
    return ((st.length != 0) & (st.length <= st.left) & (end <= page_beats)
            & (st.last == (st.length == st.left)) & (st.cross == (end == page_beats)))


def _burst_ok(st, level):
    """A sized burst: 1..64 beats, in the FIFO, not past the page end."""
    return ((st.length != 0) & (st.length <= level)
            & (st.addr[BEAT_SHIFT:PAGE_BITS] + st.length <= 1 << (PAGE_BITS - BEAT_SHIFT)))


def _burst_end_ok(st):
    """Where the sized burst ends: the beat in the page after it, and whether it is the next
    page's first."""
    end = st.addr[BEAT_SHIFT:PAGE_BITS] + st.length
    return (st.beat_after == end[:PAGE_BITS - BEAT_SHIFT]) & (st.cross == end[PAGE_BITS - BEAT_SHIFT])


#: write bursts the interconnect lets be outstanding (assumed: it holds AWREADY low beyond)
MAX_OUTSTANDING = 255


class WriteBackHarness(Harness):
    """:class:`~hdl.kernel_dma.WriteBack`: AW and W held until ready; bursts of 1..64 beats,
    aligned, inside one 4 KB page, at consecutive addresses from the ofm base; an address only
    once its beats are in the FIFO and one burst's W at a time; WLAST exactly on each burst's
    last beat; W beats = the AW bursts' sum = the engine's beats at the end; every B consumed
    and ``busy`` until the last; no VALID after reset."""

    def __init__(self, depth: int = BURST_BEATS):
        super().__init__()
        self.depth = depth

    def elaborate(self, platform):
        m = self.module()
        m.submodules.dut = dut = WriteBack(self.depth)
        self.drive_inputs(m, dut, "env")
        i, aw, w, b, st = dut.i, dut.aw, dut.w, dut.b, dut.state
        args, launched = _run(m, self, dut)
        rst = ResetSignal()
        i_done, aw_done = i.valid & i.ready, aw.valid & aw.ready
        w_done, b_done = w.valid & w.ready, b.valid & b.ready
        beats = aw.payload.len + 1
        # beat counts as wide as the beat address (64 - 6 bits), so they wrap where the address
        # does: a narrower count lets k-induction start from a wrapped, unreachable-looking state
        cw = 64 - BEAT_SHIFT
        pushed, aw_beats, w_beats = Signal(cw), Signal(cw), Signal(cw)
        aw_bursts, w_lasts, b_got = Signal(16), Signal(16), Signal(16)
        with m.If(dut.launch.start):
            m.d.sync += [pushed.eq(0), aw_beats.eq(0), w_beats.eq(0)]
        with m.Else():
            m.d.sync += [pushed.eq(pushed + i_done), aw_beats.eq(aw_beats + Mux(aw_done, beats, 0)),
                         w_beats.eq(w_beats + w_done)]
        m.d.sync += [aw_bursts.eq(aw_bursts + aw_done), w_lasts.eq(w_lasts + (w_done & w.payload.last)),
                     b_got.eq(b_got + b_done)]
        # the engine: output only in a run until drain, which then holds until the next start
        open_ = Signal()
        with m.If(dut.launch.start):
            m.d.sync += open_.eq(1)
        with m.Elif(dut.drain):
            m.d.sync += open_.eq(0)
        m.d.comb += [
            Assume(~i.valid | (open_ & ~dut.drain), "engine output only in a run, before drain"),
            Assume(~self.started | ~past(m, dut.drain & ~dut.launch.start & ~rst) | dut.drain,
                   "drain holds"),
            Assume(~b.valid | (w_lasts != b_got), "B only after a burst's last W"),
            Assume(~aw.ready | ((aw_bursts - b_got)[:16] < MAX_OUTSTANDING),
                   "the interconnect bounds outstanding writes"),
        ]
        held(m, self, i.valid, i.ready, i.payload, Assume, "i")
        held(m, self, b.valid, b.ready, b.payload, Assume, "b")
        held(m, self, aw.valid, aw.ready, aw.payload, Assert, "aw")
        held(m, self, w.valid, w.ready, w.payload, Assert, "w")
        quiet_after_reset(m, self, aw.valid, w.valid, name="aw/w")
        w_left = Signal(cw)
        m.d.comb += w_left.eq(aw_beats - w_beats)
        page_beats = 1 << (PAGE_BITS - BEAT_SHIFT)
        m.d.comb += [
            Assert(~aw.valid | (aw.payload.addr[:BEAT_SHIFT] == 0), "AW aligned"),
            Assert(~aw.valid | (beats <= BURST_BEATS), "AWLEN within 64 beats (AXI4: 256)"),
            Assert(~aw.valid | (aw.payload.addr[BEAT_SHIFT:PAGE_BITS] + beats <= page_beats),
                   "no burst crosses 4 KB"),
            Assert(~aw.valid | (aw.payload.addr == (args.base.ofm + (aw_beats << BEAT_SHIFT))[:64]),
                   "bursts at consecutive addresses from the ofm base"),
            Assert(~aw.valid | (dut.level >= beats), "an address only once its data is in"),
            Assert(~aw.valid | (w_left == 0), "one burst's W at a time"),
            Assert(~w.valid | (w_left != 0), "no W without its address"),
            Assert(~w.valid | (w.payload.last == (w_left == 1)), "WLAST on each burst's last beat"),
            Assert(~b.valid | b.ready, "every B consumed"),
            Assert((aw_bursts - b_got)[:16] <= MAX_OUTSTANDING, "outstanding writes bounded"),
            Assert(dut.busy | ~launched | ((w_beats == aw_beats) & (aw_beats == pushed)
                                           & (aw_bursts == b_got)),
                   "at the end: W beats = AW beats = engine beats, every B back"),
            Assert(dut.out_beats == w_beats[:32], "OUT_BEATS"),
            # invariants for the induction
            Assert(st.data_phase == (w_left != 0), "inv: data phase"),
            Assert(~st.data_phase | (st.count == w_left), "inv: count"),
            Assert(st.b_pending == (aw_bursts - b_got)[:16], "inv: B pending"),
            Assert((w_lasts - b_got)[:16] <= st.b_pending, "inv: B owed"),
            Assert((aw_bursts - w_lasts)[:16] == st.data_phase, "inv: WLAST per burst"),
            Assert((dut.level + w_beats)[:cw] == pushed, "inv: FIFO level"),
            Assert(dut.level <= self.depth, "inv: FIFO bound"),
            Assert(~st.running | (st.addr == (args.base.ofm + (aw_beats << BEAT_SHIFT))[:64]),
                   "inv: address"),
            Assert(st.running | ~launched | ~st.data_phase, "inv: done means no burst open"),
            Assert(st.running | (dut.level == 0) | ~launched, "inv: done means FIFO empty"),
            Assert(launched | (~st.running & (pushed == 0) & (aw_beats == 0)), "inv: before a run"),
            Assert(~open_ | st.running, "inv: running while the engine may send"),
            # the phases that size a burst before AW (hdl.kernel_dma.WriteBack)
            *_page_invariants(dut.page),
            Assert(st.phase <= WriteBack.DATA, "inv: a phase"),
            Assert(~st.drained | ~open_, "inv: drained, nothing more comes"),
            Assert(~((st.phase == WriteBack.OFFER) | ((st.phase == WriteBack.DECIDE) & st.ok))
                   | _burst_ok(st, dut.level), "inv: the burst sized"),
            Assert(~(st.phase == WriteBack.OFFER) | _burst_end_ok(st), "inv: the burst's end"),
            Assert(~((st.phase == WriteBack.DECIDE) & st.done) | (~open_ & (dut.level == 0)),
                   "inv: done only when drained and empty"),
        ]
        ended = past(m, dut.busy) & ~dut.busy & ~past(m, rst) & self.started
        m.d.comb += [
            Cover(aw.valid & ~aw.ready, "AW stalled"),
            Cover(w.valid & ~w.ready & w.payload.last, "the last W stalled"),
            Cover(aw_done & ~dut.drain & (beats > 1), "a burst to the page end before drain"),
            Cover(aw_done & dut.drain & (beats > 1) & (beats < BURST_BEATS), "a short burst at drain"),
            Cover(b.valid & (st.b_pending > 1), "two bursts awaiting B"),
            Cover(ended & (w_beats > 1), "a run with data ends"),
            Cover(ended & (w_beats == 0), "a run without output ends"),
        ]
        return m
