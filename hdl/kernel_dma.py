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

from amaranth import Array, C, Module, Mux, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .regmap import BEAT_BYTES, INPUT_BUFFERS
from .kernel_control import LaunchSignature
from .protocol import Opcode

__all__ = ["AXI_ADDR_BITS", "AXI_DATA_BITS", "BURST_BEATS", "BEAT_SHIFT", "BURST", "READ_BEAT", "WRITE_BEAT",
           "ReadSequencer", "Feeder", "WriteBack"]

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


def _to_page(addr):
    """Beats from ``addr`` to the next 4 KB page."""
    return BURST_BEATS - addr[BEAT_SHIFT:PAGE_BITS]


def _burst_len(addr, left):
    """Beats of the next burst from ``addr``: at most 64 and never past the next 4 KB page."""
    to_page = _to_page(addr)
    return Mux(left < to_page, left, to_page)


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
    not OKAY."""

    def __init__(self, depth: int):
        _check_depth(depth)
        self.depth = depth
        super().__init__({"launch": In(LaunchSignature()),
                          "ar": Out(stream.Signature(BURST)),
                          "r": In(stream.Signature(READ_BEAT)),
                          "o": Out(stream.Signature(AXI_DATA_BITS)),
                          "busy": Out(1), "error": Out(1)})
        #: the registers, for the formal harness's invariants (as :attr:`Feeder.state`); credits:
        #: beats asked for and not yet out of ``o``; ``level``: the FIFO's
        self.state = Signal(data.StructLayout({
            "seg": range(len(INPUT_BUFFERS)), "addr": AXI_ADDR_BITS, "left": 32,
            "credits": range(depth + 1)}))
        self.level = Signal(range(depth + 1))

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

        beats = [args.beats[b] for b in INPUT_BUFFERS]
        seg_base = Array(args.base[b] for b in INPUT_BUFFERS)
        seg_beats = Array(beats)
        assert INPUT_BUFFERS[-1] == "ifmap"     # load_config=0 skips all but the ifmap
        seg, addr, left = self.state.seg, self.state.addr, self.state.left
        credits = self.state.credits
        m.d.comb += self.level.eq(buf.level)
        any_first, first_seg = _first_nonempty(
            beats, Mux(args.load_config, 0, len(INPUT_BUFFERS) - 1))
        any_next, next_seg = _first_nonempty(beats, seg + 1)
        length = Signal(range(BURST_BEATS + 1))
        m.d.comb += [length.eq(_burst_len(addr, left)),
                     ar.payload.addr.eq(addr), ar.payload.len.eq(length - 1),
                     ar.valid.eq(self.busy & (credits + length <= self.depth))]
        asked = ar.valid & ar.ready
        m.d.sync += credits.eq(credits + Mux(asked, length, 0) - (self.o.valid & self.o.ready))
        with m.If(self.launch.start):
            m.d.sync += [self.busy.eq(any_first), seg.eq(first_seg),
                         addr.eq(seg_base[first_seg]), left.eq(seg_beats[first_seg])]
        with m.Elif(asked):
            m.d.sync += [addr.eq(addr + (length << BEAT_SHIFT)), left.eq(left - length)]
            with m.If(left == length):
                with m.If(~any_next):
                    m.d.sync += self.busy.eq(0)
                with m.Else():
                    m.d.sync += [seg.eq(next_seg), addr.eq(seg_base[next_seg]),
                                 left.eq(seg_beats[next_seg])]
        return m


class Feeder(wiring.Component):
    """``i`` (the read stream) to ``o`` (the engine's commands): each segment's beats, the
    ifmap's after a FRAME header inserted with the run's B. ``busy`` until the last beat."""

    #: The registers besides ``busy``, visible as ``self.state`` so that the formal harness
    #: (hdl/formal) can state its invariants over them: the segment, header to send, beats left.
    STATE = data.StructLayout({"seg": range(len(INPUT_BUFFERS)), "head": 1, "left": 32})

    def __init__(self):
        super().__init__({"launch": In(LaunchSignature()),
                          "i": In(stream.Signature(AXI_DATA_BITS)),
                          "o": Out(stream.Signature(AXI_DATA_BITS)),
                          "busy": Out(1)})
        self.state = Signal(self.STATE)

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
        seg, head, left = self.state.seg, self.state.head, self.state.left
        # an empty segment is skipped, header and all: no FRAME without images
        any_first, first_seg = _first_nonempty(
            beats, Mux(args.load_config, 0, len(INPUT_BUFFERS) - 1))
        any_next, next_seg = _first_nonempty(beats, seg + 1)
        m.d.comb += [o.valid.eq(self.busy & (head | i.valid)),
                     o.payload.eq(Mux(head, seg_opcode[seg], i.payload)),
                     i.ready.eq(self.busy & ~head & o.ready)]
        with m.If(self.launch.start):
            m.d.sync += [self.busy.eq(any_first), seg.eq(first_seg),
                         head.eq(seg_head[first_seg]), left.eq(seg_beats[first_seg])]
        with m.Elif(o.valid & o.ready):
            with m.If(head):
                m.d.sync += head.eq(0)
            with m.Else():
                m.d.sync += left.eq(left - 1)
                with m.If(left == 1):
                    with m.If(~any_next):
                        m.d.sync += self.busy.eq(0)
                    with m.Else():
                        m.d.sync += [seg.eq(next_seg), head.eq(seg_head[next_seg]),
                                     left.eq(seg_beats[next_seg])]
        return m


class WriteBack(wiring.Component):
    """``i`` (the engine's output beats) through a ``depth``-beat FIFO to bursts on ``aw`` /
    ``w`` from ``args.base.ofm``; ``drain``: the engine is idle with its input all fed, so
    what the FIFO holds is the rest. ``busy`` until the last write response is back;
    ``out_beats`` counts the beats written; ``error`` once a write response was not OKAY."""

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
            "data_phase": 1, "b_pending": 16}))
        self.level = Signal(range(depth + 1))

    def elaborate(self, platform):
        m = Module()
        aw, w, b = self.aw, self.w, self.b
        m.submodules.fifo = buf = fifo.SyncFIFOBuffered(width=AXI_DATA_BITS, depth=self.depth)
        wiring.connect(m, wiring.flipped(self.i), buf.w_stream)
        st = self.state
        running, addr, count, data_phase, b_pending = (st.running, st.addr, st.count,
                                                       st.data_phase, st.b_pending)
        length = Signal(range(BURST_BEATS + 1))
        m.d.comb += self.level.eq(buf.level)
        m.d.comb += [length.eq(Mux(self.drain, _burst_len(addr, buf.level), _to_page(addr))),
                     aw.payload.addr.eq(addr), aw.payload.len.eq(length - 1),
                     aw.valid.eq(running & ~data_phase & (length != 0) & (buf.level >= length)),
                     w.payload.data.eq(buf.r_data), w.payload.last.eq(count == 1),
                     w.valid.eq(data_phase & buf.r_rdy),
                     buf.r_en.eq(data_phase & w.ready),
                     b.ready.eq(1),
                     self.busy.eq(running | (b_pending != 0))]
        aw_done = aw.valid & aw.ready
        b_done = b.valid & b.ready
        m.d.sync += b_pending.eq(b_pending + aw_done - b_done)
        with m.If(self.launch.start):
            m.d.sync += self.error.eq(0)
        with m.If(b_done & (b.payload != 0)):
            m.d.sync += self.error.eq(1)
        with m.If(self.launch.start):
            m.d.sync += [running.eq(1), data_phase.eq(0), addr.eq(self.launch.args.base.ofm),
                         self.out_beats.eq(0)]
        with m.Elif(aw_done):
            m.d.sync += [data_phase.eq(1), count.eq(length),
                         addr.eq(addr + (length << BEAT_SHIFT))]
        with m.Elif(w.valid & w.ready):
            m.d.sync += [count.eq(count - 1), self.out_beats.eq(self.out_beats + 1)]
            with m.If(count == 1):
                m.d.sync += data_phase.eq(0)
        with m.Elif(running & ~data_phase & self.drain & (buf.level == 0)):
            m.d.sync += running.eq(0)
        return m
