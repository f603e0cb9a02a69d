"""The kernel's data movers between the AXI4 masters and the engine, each started by the
:class:`~hdl.kernel_control.Launcher`'s launch strobe and reporting ``busy``.

* :class:`ReadSequencer`: INCR bursts (at most 64 beats, never across a 4 KB page) over the
  input segments params, schedule (if load_config) and ifmap, in that order, on the AR
  channel (a segment of 0 beats is skipped); the R beats go through its FIFO to ``o``. It only asks for data the FIFO has room
  for (credits), so R never backs up into the interconnect.
* :class:`Feeder`: the read stream to the engine's command stream: the params and schedule
  buffers as they are (they hold whole commands), then a FRAME header (``Opcode.FRAME |
  images << 8``) and the ifmap beats; an empty segment is skipped (no FRAME for 0 ifmap beats).
* :class:`WriteBack`: engine output -> FIFO -> AW/W/B. A burst's address goes out only once its
  data is in the FIFO, so W never stalls mid-burst: full bursts up to the next 4 KB page while
  the engine runs, the remainder once ``drain`` says the output is complete.

The AXI channels are :mod:`amaranth.lib.stream` ports (AR/AW payload :data:`BURST`: address and
AXI length, beats - 1); :class:`hdl.kernel.VelcroKernel` maps them onto Vitis' flat ports.
"""

from __future__ import annotations

from amaranth import Array, C, Cat, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .counters import ChunkedCounter
from .regmap import BEAT_BYTES, INPUT_BUFFERS
from .kernel_control import LaunchSignature
from .protocol import Opcode

__all__ = ["AXI_ADDR_BITS", "AXI_DATA_BITS", "BURST_BEATS", "BEAT_SHIFT", "BURST", "READ_BEAT", "WRITE_BEAT",
           "PageAddress", "ReadSequencer", "Feeder", "WriteBack", "RegisterSlice"]

AXI_ADDR_BITS = 64
AXI_DATA_BITS = 8 * BEAT_BYTES
BEAT_SHIFT = BEAT_BYTES.bit_length() - 1     # AxSIZE: log2 of the bytes per beat
PAGE_BITS = 12                               # bursts never cross a 4 KB page
BURST_BEATS = (1 << PAGE_BITS) // BEAT_BYTES  # AXI4 allows 256; 64 x 64 B = 4 KB, one page

#: AR / AW payload: byte address and AXI length (beats - 1)
BURST = data.StructLayout({"addr": AXI_ADDR_BITS, "len": 8})
#: R payload
READ_BEAT = data.StructLayout({"data": AXI_DATA_BITS, "resp": 2})
#: W payload (fully strobed)
WRITE_BEAT = data.StructLayout({"data": AXI_DATA_BITS, "last": 1})


#: bits of each chunk of the page number (:class:`PageAddress`): a 13-bit increment is two
#: CARRY8 levels, so a chunk's update stays within the 6 logic levels of a 300 MHz stage
PAGE_CHUNK_BITS = 13


def _to_page(addr):
    """Beats from ``addr`` to the next 4 KB page."""
    return BURST_BEATS - addr[BEAT_SHIFT:PAGE_BITS]


def _burst_len(addr, left):
    """Beats of the next burst from ``addr``: at most 64 and never past the next 4 KB page."""
    to_page = _to_page(addr)
    return Mux(left < to_page, left, to_page)


class PageAddress:
    """A 64-byte aligned AXI byte address that moves by bursts that never cross a 4 KB page,
    kept so that no carry runs through all 64 bits in one cycle: ``beat`` (the beat in the
    page, 6 bits) and the page number in 13-bit chunks, each with a register ``ones`` that says
    it is all ones. Moving onto the next page adds one to chunk k when every chunk below is all
    ones: a 13-bit increment and an AND of registered flags, exact in the same cycle (no carry
    is deferred). ``value`` is the address (64 bits, the low 6 zero)."""

    def __init__(self, name: str):
        hi_bits = AXI_ADDR_BITS - PAGE_BITS
        self.chunks = [Signal(min(PAGE_CHUNK_BITS, hi_bits - lo), name=f"{name}_page{k}")
                       for k, lo in enumerate(range(0, hi_bits, PAGE_CHUNK_BITS))]
        self.ones = Signal(len(self.chunks), name=f"{name}_ones")
        self.beat = Signal(PAGE_BITS - BEAT_SHIFT, name=f"{name}_beat")
        self.value = Cat(C(0, BEAT_SHIFT), self.beat, *self.chunks)

    def load(self, m, addr):
        """Set to ``addr`` (aligned; its chunks' all-ones flags computed from it)."""
        m.d.sync += [self.beat.eq(addr[BEAT_SHIFT:PAGE_BITS])]
        lo = PAGE_BITS
        for k, ch in enumerate(self.chunks):
            part = addr[lo:lo + len(ch)]
            m.d.sync += [ch.eq(part), self.ones[k].eq(part.all())]
            lo += len(ch)

    def advance(self, m, beat_after, next_page):
        """Move to beat ``beat_after`` of this page, or of the next one when ``next_page``
        (both registered by the caller a cycle ahead: the burst's end)."""
        m.d.sync += self.beat.eq(beat_after)
        for k, ch in enumerate(self.chunks):
            carry = next_page & self.ones[:k].all() if k else next_page
            with m.If(carry):
                m.d.sync += [ch.eq(ch + 1), self.ones[k].eq(ch == (1 << len(ch)) - 2)]


def _first_nonempty(beats, start):
    """(any, index): the first of the segments ``start`` .. end whose ``beats`` is not 0, so a
    zero-length segment is skipped (no burst, nothing fed); ``start`` may be one past the end."""
    found, index = C(0, 1), C(0, range(len(beats)))
    for k in reversed(range(len(beats))):
        take = (start <= k) & (beats[k] != 0)
        found, index = Mux(take, 1, found), Mux(take, k, index)
    return found, index


def _check_depth(depth):
    if not isinstance(depth, int):
        raise TypeError(f"depth must be an int, not {depth!r}")
    if depth < BURST_BEATS:
        raise ValueError(f"depth must be at least a burst, {BURST_BEATS} beats, not {depth}")


class ReadSequencer(wiring.Component):
    """Bursts over the input segments on ``ar``; ``r``'s beats through a ``depth``-beat FIFO to
    ``o``. ``busy`` while bursts are left to ask for; ``error`` once an R beat of the run was
    not OKAY.

    Each burst takes its own cycles, so that every register-to-register path is short (at
    most 6 logic levels at 300 MHz): SEEK finds the next segment with beats (one segment a
    cycle), LEN sizes the burst (to the page end or the segment's end), CHECK waits until the
    FIFO has room for it (and works out where the burst leaves the segment and the address),
    OFFER holds it on AR. A burst of 64 beats takes 64 cycles on R, so three cycles per burst
    cost nothing but for segments of a few beats."""

    #: the sequencer's phases (``state.phase``)
    IDLE, SEEK, LEN, CHECK, OFFER = range(5)

    def __init__(self, depth: int):
        _check_depth(depth)
        self.depth = depth
        super().__init__({"launch": In(LaunchSignature()),
                          "ar": Out(stream.Signature(BURST)),
                          "r": In(stream.Signature(READ_BEAT)),
                          "o": Out(stream.Signature(AXI_DATA_BITS)),
                          "busy": Out(1), "error": Out(1)})
        #: the registers, for the formal harness's invariants (as :attr:`Feeder.state`); credits:
        #: beats asked for and not yet out of ``o``; ``level``: the FIFO's; ``look``: the
        #: segment SEEK looks at; ``length``, ``last``: the burst LEN sized
        self.state = Signal(data.StructLayout({
            "seg": range(len(INPUT_BUFFERS)), "addr": AXI_ADDR_BITS, "left": 32,
            "credits": range(depth + 1), "phase": range(5),
            "look": range(len(INPUT_BUFFERS) + 1), "length": range(BURST_BEATS + 1),
            "last": 1, "cross": 1, "left_after": 32, "beat_after": PAGE_BITS - BEAT_SHIFT}))
        self.level = Signal(range(depth + 1))
        #: ``depth - credits``, kept as a register of its own so that CHECK compares the burst
        #: with it directly (no adder in front of the comparison); ``empty[k]``: segment k has
        #: no beats (registered from the run's arguments, which hold from ``launch.start``)
        self.space = Signal(range(depth + 1), init=depth)
        self.empty = Signal(len(INPUT_BUFFERS))
        #: the read address (``state.addr``)
        self.page = PageAddress("addr")

    def elaborate(self, platform):
        m = Module()
        args, ar = self.launch.args, self.ar
        m.submodules.fifo = buf = fifo.SyncFIFOBuffered(width=AXI_DATA_BITS, depth=self.depth)
        m.d.comb += [buf.w_data.eq(self.r.payload.data), buf.w_en.eq(self.r.valid),
                     self.r.ready.eq(buf.w_rdy)]
        wiring.connect(m, buf.r_stream, wiring.flipped(self.o))
        with m.If(self.launch.start):
            m.d.sync += self.error.eq(0)
        with m.If(self.r.valid & self.r.ready & (self.r.payload.resp != 0)):
            m.d.sync += self.error.eq(1)

        n_seg = len(INPUT_BUFFERS)
        seg_base = Array(args.base[b] for b in INPUT_BUFFERS)
        seg_beats = Array(args.beats[b] for b in INPUT_BUFFERS)
        assert INPUT_BUFFERS[-1] == "ifmap"     # load_config=0 skips all but the ifmap
        phase = Signal(range(5))
        seg, look = Signal(range(n_seg)), Signal(range(n_seg + 1))
        left, credits = Signal(32), Signal(range(self.depth + 1))
        addr = self.page
        length = Signal(range(BURST_BEATS + 1))
        last, cross = Signal(), Signal()
        left_after, beat_after = Signal(32), Signal(PAGE_BITS - BEAT_SHIFT)
        m.d.comb += [self.state.eq(Cat(seg, addr.value, left, credits, phase, look, length,
                                       last, cross, left_after, beat_after)),
                     self.level.eq(buf.level), self.busy.eq(phase != self.IDLE),
                     ar.payload.addr.eq(addr.value), ar.payload.len.eq(length - 1),
                     ar.valid.eq(phase == self.OFFER)]
        asked = ar.valid & ar.ready
        taken = self.o.valid & self.o.ready
        m.d.sync += [credits.eq(credits + Mux(asked, length, 0) - taken),
                     self.space.eq(self.space - Mux(asked, length, 0) + taken),
                     self.empty.eq(Cat(args.beats[b] == 0 for b in INPUT_BUFFERS))]
        with m.If(self.launch.start):
            m.d.sync += [phase.eq(self.SEEK), look.eq(Mux(args.load_config, 0, n_seg - 1))]
        with m.Switch(phase):
            with m.Case(self.SEEK):
                with m.If(look == n_seg):
                    m.d.sync += phase.eq(self.IDLE)
                with m.Elif(self.empty.bit_select(look, 1)):
                    m.d.sync += look.eq(look + 1)       # an empty segment: no burst
                with m.Else():
                    m.d.sync += [seg.eq(look), left.eq(seg_beats[look]), phase.eq(self.LEN)]
                    addr.load(m, seg_base[look])
            with m.Case(self.LEN):
                # left < 128 and left + beat <= 64: the segment ends in this page
                small = left[BURST_BEATS.bit_length():] == 0
                room = Signal(BURST_BEATS.bit_length() + 1)
                m.d.comb += room.eq(left[:BURST_BEATS.bit_length()] + addr.beat)
                ends = small & (room <= BURST_BEATS)
                m.d.sync += [last.eq(ends), cross.eq(~small | (room >= BURST_BEATS)),
                             length.eq(Mux(ends, left, BURST_BEATS - addr.beat)),
                             phase.eq(self.CHECK)]
            with m.Case(self.CHECK):
                m.d.sync += [left_after.eq(left - length), beat_after.eq(addr.beat + length)]
                with m.If(length <= self.space):
                    m.d.sync += phase.eq(self.OFFER)
            with m.Case(self.OFFER):
                with m.If(ar.ready):
                    m.d.sync += [left.eq(left_after),
                                 phase.eq(Mux(last, self.SEEK, self.LEN)), look.eq(seg + 1)]
                    addr.advance(m, beat_after, cross)
        return m


class Feeder(wiring.Component):
    """``i`` (the read stream) to ``o`` (the engine's commands): each segment's beats, the
    ifmap's after a FRAME header inserted with the run's B. ``busy`` until the last beat."""

    #: The registers besides ``busy``, visible as ``self.state`` so that the formal harness
    #: (hdl/formal) can state its invariants over them: the segment, header to send, beats left.
    #: ``last``: ``left`` is 1 (registered, so that the segment's end needs no 32-bit compare
    #: in the cycle a beat goes out)
    STATE = data.StructLayout({"seg": range(len(INPUT_BUFFERS)), "head": 1, "left": 32,
                               "last": 1})

    def __init__(self):
        super().__init__({"launch": In(LaunchSignature()),
                          "i": In(stream.Signature(AXI_DATA_BITS)),
                          "o": Out(stream.Signature(AXI_DATA_BITS)),
                          "busy": Out(1)})
        self.state = Signal(self.STATE)
        #: beats left in the segment (``state.left``)
        self.count = ChunkedCounter(32, down=True, name="left")
        #: what follows segment k: :meth:`first_from` (k + 1), registered
        self.after = [Signal(self.SEGMENT, name=f"after{k}") for k in range(len(INPUT_BUFFERS))]

    #: a segment as the feeder switches to it: found (any left), index, beats, beats == 1, and
    #: whether a FRAME header opens it
    SEGMENT = data.StructLayout({"found": 1, "seg": range(len(INPUT_BUFFERS)), "beats": 32,
                                 "one": 1, "head": 1})

    @classmethod
    def first_from(cls, args, k: int):
        """The first segment from ``k`` on with beats (found = 0 if none), of the run ``args``.

        An empty segment is skipped, header and all: no FRAME without images. It is a chain of
        2:1 muxes on "has beats" flags (no index to decode); the feeder registers it per
        segment (the run's arguments hold from its start on), so a segment switch is a 3:1 mux
        of registers."""
        assert INPUT_BUFFERS == ("params", "schedule", "ifmap")
        beats = [args.beats[b] for b in INPUT_BUFFERS]
        value = C(0, cls.SEGMENT.size)
        for j in reversed(range(k, len(INPUT_BUFFERS))):
            value = Mux(beats[j] != 0, Cat(C(1, 1), C(j, range(len(INPUT_BUFFERS))), beats[j],
                                           beats[j] == 1, C(int(j == 2), 1)), value)
        return value

    def elaborate(self, platform):
        m = Module()
        args, i, o = self.launch.args, self.i, self.o
        beats = [args.beats[b] for b in INPUT_BUFFERS]
        seg_beats = Array(beats)
        # the params and schedule buffers carry their commands whole (the layer's shape sets
        # their lengths, PARAMS_BEATS and SCHEDULE_BEATS); FRAME gets its header inserted
        assert INPUT_BUFFERS == ("params", "schedule", "ifmap")
        seg_head = Array([C(0, 1), C(0, 1), C(1, 1)])
        seg_opcode = Array([C(0, 32), C(0, 32), C(int(Opcode.FRAME), 32) | (args.images << 8)])
        seg, head, left, last = (self.state.seg, self.state.head, self.state.left,
                                 self.state.last)
        count = self.count
        n_seg = len(INPUT_BUFFERS)
        rec = self.SEGMENT

        def first_from(k):
            return self.first_from(args, k)

        first = Signal(rec)
        m.d.comb += first.eq(Mux(args.load_config, first_from(0), first_from(n_seg - 1)))
        after = self.after
        m.d.sync += [after[k].eq(first_from(k + 1)) for k in range(n_seg)]
        nxt = Array(after)[seg]
        m.d.comb += [o.valid.eq(self.busy & (head | i.valid)),
                     o.payload.eq(Mux(head, seg_opcode[seg], i.payload)),
                     i.ready.eq(self.busy & ~head & o.ready)]
        # a segment's first beat count is loaded at the start or at the previous segment's last
        # beat; otherwise a beat out counts down: one 2:1 mux after the 32-bit decrement
        take = o.valid & o.ready & ~head
        load = Signal()
        load_rec = Signal(rec)
        m.d.comb += [load.eq(self.launch.start | (take & last)),
                     load_rec.eq(Mux(self.launch.start, first, nxt)),
                     left.eq(count.value)]
        count.update(m, step=take, load=load, load_value=load_rec.beats)
        with m.If(self.launch.start | take):
            m.d.sync += last.eq(Mux(load, load_rec.one, count.value == 2))
        with m.If(self.launch.start):
            m.d.sync += [self.busy.eq(first.found), seg.eq(first.seg), head.eq(first.head)]
        with m.Elif(o.valid & o.ready):
            with m.If(head):
                m.d.sync += head.eq(0)
            with m.Elif(last):
                with m.If(~nxt.found):
                    m.d.sync += self.busy.eq(0)
                with m.Else():
                    m.d.sync += [seg.eq(nxt.seg), head.eq(nxt.head)]
        return m


class WriteBack(wiring.Component):
    """``i`` (the engine's output beats) through a ``depth``-beat FIFO to bursts on ``aw`` /
    ``w`` from ``args.base.ofm``; ``drain``: the engine is idle with its input all fed, so
    what the FIFO holds is the rest. ``busy`` until the last write response is back;
    ``out_beats`` counts the beats written; ``error`` once a write response was not OKAY.

    As in :class:`ReadSequencer`, each burst takes its own cycles so that every path is short:
    PREP sizes the burst from the FIFO level (``drain`` is registered first: it comes from the
    engine), DECIDE offers it, ends the run (drained, FIFO empty) or sizes again, OFFER holds
    it on AW, DATA sends its beats on W. The FIFO only fills between PREP and OFFER (nothing
    reads it), so a burst sized in PREP still has its beats in at OFFER."""

    IDLE, PREP, DECIDE, OFFER, DATA = range(5)

    def __init__(self, depth: int):
        _check_depth(depth)
        self.depth = depth
        super().__init__({"launch": In(LaunchSignature()),
                          "i": In(stream.Signature(AXI_DATA_BITS)),
                          "drain": In(1),
                          "aw": Out(stream.Signature(BURST)),
                          "w": Out(stream.Signature(WRITE_BEAT)),
                          "b": In(stream.Signature(2)),
                          "busy": Out(1), "out_beats": Out(32), "error": Out(1)})
        #: the registers and the FIFO level, for the formal harness (as :attr:`Feeder.state`)
        self.state = Signal(data.StructLayout({
            "running": 1, "addr": AXI_ADDR_BITS, "count": range(BURST_BEATS + 1),
            "data_phase": 1, "b_pending": 16, "phase": range(5), "length": range(BURST_BEATS + 1),
            "ok": 1, "done": 1, "cross": 1, "beat_after": PAGE_BITS - BEAT_SHIFT, "drained": 1}))
        self.level = Signal(range(depth + 1))
        #: the write address (``state.addr``)
        self.page = PageAddress("addr")

    def elaborate(self, platform):
        m = Module()
        aw, w, b = self.aw, self.w, self.b
        m.submodules.fifo = buf = fifo.SyncFIFOBuffered(width=AXI_DATA_BITS, depth=self.depth)
        wiring.connect(m, wiring.flipped(self.i), buf.w_stream)
        phase = Signal(range(5))
        addr = self.page
        count, length = Signal(range(BURST_BEATS + 1)), Signal(range(BURST_BEATS + 1))
        b_pending = Signal(16)
        ok, done, cross, drained = Signal(), Signal(), Signal(), Signal()
        beat_after = Signal(PAGE_BITS - BEAT_SHIFT)
        running, data_phase = phase != self.IDLE, phase == self.DATA
        m.d.comb += [self.state.eq(Cat(running, addr.value, count, data_phase, b_pending, phase,
                                       length, ok, done, cross, beat_after, drained)),
                     self.level.eq(buf.level),
                     aw.payload.addr.eq(addr.value), aw.payload.len.eq(length - 1),
                     aw.valid.eq(phase == self.OFFER),
                     w.payload.data.eq(buf.r_data), w.payload.last.eq(count == 1),
                     w.valid.eq(data_phase & buf.r_rdy),
                     buf.r_en.eq(data_phase & w.ready),
                     b.ready.eq(1),
                     self.busy.eq(running | (b_pending != 0))]
        # drain comes from deep in the engine; a cycle late is as good: it holds once set, and
        # a beat the engine hands over in the cycle drain rises is in the FIFO level a cycle on
        m.d.sync += drained.eq(self.drain & ~self.launch.start)
        aw_done = aw.valid & aw.ready
        b_done = b.valid & b.ready
        m.d.sync += b_pending.eq(b_pending + aw_done - b_done)
        with m.If(self.launch.start):
            m.d.sync += self.error.eq(0)
        with m.If(b_done & (b.payload != 0)):
            m.d.sync += self.error.eq(1)
        to_page = BURST_BEATS - addr.beat
        with m.If(self.launch.start):
            m.d.sync += [phase.eq(self.PREP), self.out_beats.eq(0)]
            addr.load(m, self.launch.args.base.ofm)
        with m.Switch(phase):
            with m.Case(self.PREP):
                m.d.sync += [length.eq(Mux(drained & (buf.level < to_page), buf.level, to_page)),
                             ok.eq(Mux(drained, buf.level != 0, buf.level >= to_page)),
                             done.eq(drained & (buf.level == 0)), phase.eq(self.DECIDE)]
            with m.Case(self.DECIDE):
                end = Signal(PAGE_BITS - BEAT_SHIFT + 1)
                m.d.comb += end.eq(addr.beat + length)
                m.d.sync += [beat_after.eq(end), cross.eq(end[-1]),
                             phase.eq(Mux(ok, self.OFFER, Mux(done, self.IDLE, self.PREP)))]
            with m.Case(self.OFFER):
                with m.If(aw.ready):
                    m.d.sync += [count.eq(length), phase.eq(self.DATA)]
                    addr.advance(m, beat_after, cross)
            with m.Case(self.DATA):
                with m.If(w.valid & w.ready):
                    m.d.sync += [count.eq(count - 1), self.out_beats.eq(self.out_beats + 1)]
                    with m.If(count == 1):
                        m.d.sync += phase.eq(self.PREP)
        return m


class RegisterSlice(wiring.Component):
    """``i`` to ``o`` through registers, at one beat a cycle: ``o``'s valid and payload and
    ``i``'s ready are flip-flops, so no combinational path runs through (a skid register holds
    the beat that arrives in the cycle ``o`` stalls). One cycle of latency."""

    def __init__(self, width: int):
        self.width = width
        super().__init__({"i": In(stream.Signature(width)), "o": Out(stream.Signature(width))})

    def elaborate(self, platform):
        m = Module()
        i, o = self.i, self.o
        skid, skid_valid = Signal(self.width), Signal()
        m.d.comb += i.ready.eq(~skid_valid)
        with m.If(o.ready | ~o.valid):
            with m.If(skid_valid):
                m.d.sync += [o.payload.eq(skid), o.valid.eq(1), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [o.payload.eq(i.payload), o.valid.eq(i.valid)]
        with m.Elif(i.valid & i.ready):
            m.d.sync += [skid.eq(i.payload), skid_valid.eq(1)]
        return m
