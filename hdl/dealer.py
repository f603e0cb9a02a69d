"""The window dealer: one image stream in, the 3x3 windows of every pixel out to the instances.

The work is dealt by pixel (:func:`py_ref.schedule.deal`): every segment of P consecutive pixels
of a row gives one pixel to each instance, so an instance needs the windows of S = H * J pixels
per image, not a copy of the image. The dealer is shared by the P instances of an engine:

* **Input.** The segment records of a FRAME image (:func:`hdl.protocol.batch_frame_beats`: rows
  y, then channel groups g, then segments j, ``segments_per_beat`` records per beat, or one
  record over ``beats_per_segment`` beats) are written one per cycle into a ring of four rows
  (LUT RAMs of 4 x G x J records, read asynchronously: :class:`_Ring`).
* **Dealing.** Once rows y - 1 .. y + 1 are in the ring, the dealer steps through (g, j) of row
  y, one per cycle, and broadcasts the *strip* of segment (y, j), group g: the 3 x (P + 2) pixels
  of rows y - 1 .. y + 1, columns jP - 1 .. jP + P, zero outside the image. Each instance cuts its
  own pixel's window out of the strip and writes it into its window memory
  (:class:`hdl.datapath.Datapath`), image j in buffer ``j % 2``.
* **Flow.** The ring holds four rows, so the input side writes row r only once the dealer has
  moved on to row r - 2; the dealer deals row y once row y + 1 is in (the last row of an image:
  once it is in). Image j is dealt only once image j - 2 no longer needs its buffer
  (``j < released + 2``); ``loaded`` counts the images whose windows are all written.

Both sides move one record per cycle, so a steady stream of images loads in
``H * G * J`` cycles per image (:func:`hdl.contract.input_cycles`).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig
from .protocol import (MAX_BATCH, beats_per_segment, layer_layout, layer_values,
                       segments_per_beat)

__all__ = ["WindowDealer", "StripSignature", "strip_layout", "RING_ROWS", "WRITE_DELAY"]

#: Rows the ring holds: the dealer reads three while the input side fills the fourth.
RING_ROWS = 4
#: Cycles from a strip on the ``strip`` port to its window being readable in every instance's
#: window memory (the instance's strip register, then the memory write): ``loaded`` counts an
#: image this much after its last strip.
WRITE_DELAY = 2


def strip_layout(cfg: AccelConfig) -> data.ArrayLayout:
    """3 rows x (P + 2) columns of pixels, row-major: element ``r*(P+2) + c`` is pixel
    (y - 1 + r, jP - 1 + c) of the strip's channel group."""
    return data.ArrayLayout(cfg.pixel_bits, 3 * (cfg.instances + 2))  # P and L: no maxima


class StripSignature(wiring.Signature):
    """A strip broadcast to the instances, seen from the dealer: ``en`` when a strip is offered
    this cycle; ``seg`` = y*J + j, group ``g``, window buffer ``buf``, the pixels ``data``."""

    def __init__(self, cfg: AccelConfig):
        cfg = cfg.design
        super().__init__({"en": Out(1), "buf": Out(1), "seg": Out(range(max(cfg.segments, 2))),
                          "g": Out(range(max(cfg.groups, 2))), "data": Out(strip_layout(cfg))})


class WindowDealer(wiring.Component):
    """``i``: the image beats of a FRAME command; ``strip``: the strips of each image in order.

    ``start`` (a pulse at the FRAME header) begins a batch of ``images`` >= 1 images (``images``
    valid from the cycle after ``start``, held until the batch is accepted: the front end
    latches it with the header); ``accepted`` counts the images whose beats have all arrived,
    ``loaded`` the images whose windows are all written, ``released`` (input) the images the
    instances are done with. ``taking`` (a register) is ``accepted < images``; ``i.ready`` is low
    without it."""

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg = cfg.design
        super().__init__({
            "i": In(stream.Signature(cfg.bus_width)),
            # the layer's shape (hdl.protocol.LAYER); undriven, the design's
            "layer": In(layer_layout(cfg), init=layer_values(cfg)),
            "start": In(1),
            "images": In(range(MAX_BATCH + 1)),
            "released": In(range(MAX_BATCH + 1)),
            "accepted": Out(range(MAX_BATCH + 1)),
            "taking": Out(1),           # accepted < images: the batch's beats are still taken
            "loaded": Out(range(MAX_BATCH + 1)),
            "busy": Out(1),             # a record waits to be written, or a strip is dealt
            "strip": Out(StripSignature(cfg)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        ring = _Ring(m, cfg)
        # rows written minus rows dealt (completed): the input side may write while it is <= 2
        lead = Signal(range(RING_ROWS + 1))
        row_loaded, row_dealt = Signal(), Signal()
        # lead + 1 and lead - 1 are formed from the register alone, the events only choose
        with m.If(row_loaded & ~row_dealt):
            m.d.sync += lead.eq(lead + 1)
        with m.Elif(row_dealt & ~row_loaded):
            m.d.sync += lead.eq(lead - 1)
        # the layer's last row, group and segment, latched at the FRAME header (the layer is
        # set before it and held), so the counters compare with registers, not through a
        # subtractor on the layer's fields
        lay = self.layer
        last = {name: Signal(len(lay[name]), name=f"{name}_last")
                for name in ("height", "groups", "row_segments")}
        with m.If(self.start):
            m.d.sync += [last[name].eq(lay[name] - 1) for name in last]
        writing = self._load(m, ring, lead, row_loaded, last)
        dealing = self._deal(m, ring, lead, row_dealt, last)
        m.d.comb += self.busy.eq(writing | dealing)
        with m.If(self.start):
            m.d.sync += lead.eq(0)
        return m

    def _load(self, m, ring, lead, row_loaded, last):
        """Beats -> records -> the ring, one record per cycle."""
        cfg = self.cfg
        rb = cfg.segment_bits
        lay = self.layer
        n_records = lay.segment_records
        per_unit = max(segments_per_beat(cfg), 1)
        unit_beats = 1 if segments_per_beat(cfg) else beats_per_segment(cfg)

        unit = Signal(per_unit * rb)
        left = Signal(range(per_unit + 1))          # records of the unit not yet written
        j = Signal(range(max(cfg.row_segments, 2)))
        g = Signal(range(max(cfg.groups, 2)))
        slot = Signal(range(RING_ROWS))
        write = Signal()
        m.d.comb += write.eq((left != 0) & (lead <= 2))
        j_end, g_end = j == last["row_segments"], g == last["groups"]
        row_end = j_end & g_end
        m.d.comb += row_loaded.eq(write & row_end)
        ring.write(m, write, slot, g, j, unit[:rb])
        with m.If(write):
            m.d.sync += [unit.eq(unit >> rb), left.eq(left - 1),
                         j.eq(Mux(j_end, 0, j + 1))]
            with m.If(j_end):
                m.d.sync += g.eq(Mux(g_end, 0, g + 1))
            with m.If(row_end):
                m.d.sync += slot.eq(slot + 1)

        # accept: a unit is complete with its last beat, taken as the unit register empties.
        # ``remaining`` counts the image's records not yet taken down from n_records (a register
        # compared with the constant per_unit, where n_records - taken took a subtractor, a
        # comparator and an adder in series)
        remaining = Signal(range(cfg.height * cfg.groups * cfg.row_segments + 1))
        part = Signal(range(max(unit_beats, 2)))
        held = Signal(cfg.bus_width * max(unit_beats - 1, 1))
        final = part == unit_beats - 1
        empties = (left == 0) | ((left == 1) & write)
        # ``taking``: accepted < images, kept as a register (set at start, updated as an image
        # completes) so that ready, which the front end's state and counters wait on, starts at
        # a flip-flop
        m.d.comb += self.i.ready.eq(self.taking & (~final | empties))
        take = self.i.valid & self.i.ready
        last_unit = remaining <= per_unit           # this unit ends the image
        count = Signal(range(per_unit + 1))
        m.d.comb += count.eq(Mux(last_unit, remaining, per_unit))
        with m.If(take):
            if unit_beats > 1:
                m.d.sync += part.eq(Mux(final, 0, part + 1))
                with m.If(~final):
                    m.d.sync += held.word_select(part, cfg.bus_width).eq(self.i.payload)
            with m.If(final):
                value = (Cat(held[:cfg.bus_width * (unit_beats - 1)], self.i.payload)
                         if unit_beats > 1 else self.i.payload)
                m.d.sync += [unit.eq(value[:per_unit * rb]), left.eq(count)]
                with m.If(last_unit):
                    m.d.sync += [remaining.eq(n_records), self.accepted.eq(self.accepted + 1),
                                 self.taking.eq(self.accepted + 1 < self.images)]
                with m.Else():
                    m.d.sync += remaining.eq(remaining - per_unit)
        with m.If(self.start):
            m.d.sync += [self.accepted.eq(0), self.taking.eq(1), remaining.eq(n_records),
                         part.eq(0), left.eq(0), j.eq(0), g.eq(0), slot.eq(0)]
        return write

    def _deal(self, m, ring, lead, row_dealt, last):
        """Step through (row, group, segment) of each image, one strip per cycle."""
        cfg = self.cfg
        y = Signal(range(cfg.height))
        g = Signal(range(max(cfg.groups, 2)))
        j = Signal(range(max(cfg.row_segments, 2)))
        slot = Signal(range(RING_ROWS))             # ring slot of row y
        seg_base = Signal(range(cfg.segments + 1))  # y * J
        image = Signal(range(MAX_BATCH + 1))
        # image - 1 (-1 at image 0), so that image < released + 2 is image - 1 <= released: one
        # comparator, no adder in front of it
        image_m1 = Signal(range(-1, MAX_BATCH + 1), init=-1)
        lay = self.layer
        last_row = y == last["height"]
        step = Signal()
        m.d.comb += step.eq((image < self.images) & (image_m1 <= self.released)
                            & ((lead >= 2) | (last_row & (lead >= 1))))
        seg_end = j == last["row_segments"]
        g_end = g == last["groups"]
        row_end = seg_end & g_end
        image_end = row_end & last_row
        m.d.comb += row_dealt.eq(step & row_end)
        with m.If(step):
            m.d.sync += j.eq(Mux(seg_end, 0, j + 1))
            with m.If(seg_end):
                m.d.sync += g.eq(Mux(g_end, 0, g + 1))
            with m.If(row_end):
                m.d.sync += [slot.eq(slot + 1), y.eq(Mux(last_row, 0, y + 1)),
                             seg_base.eq(Mux(last_row, 0, seg_base + lay.row_segments))]
            with m.If(image_end):
                m.d.sync += [image.eq(image + 1), image_m1.eq(image_m1 + 1)]

        # the strip: rows y-1, y, y+1 from their ring slots (zero off the map), columns
        # jP-1 .. jP+P: the segment, the last pixel of segment j-1 (zero at j = 0) and the first
        # of segment j+1 (zero right of the layer's last segment, whatever a wider layer left in
        # the ring there)
        strip = []
        for r in range(3):
            seg_px, left, right = ring.read(m, r, (slot + r - 1)[:2], g, j)
            row = Cat(Mux(j == 0, 0, left), seg_px, Mux(seg_end, 0, right))
            off_map = (y == 0) if r == 0 else (last_row if r == 2 else Const(0))
            strip.append(Mux(off_map, 0, row))
        out = self.strip
        m.d.sync += [out.en.eq(step), out.buf.eq(image[0]), out.seg.eq(seg_base + j),
                     out.g.eq(g), out.data.eq(Cat(strip))]

        # an image is loaded WRITE_DELAY cycles after its last strip left the dealer
        done = Signal(WRITE_DELAY + 1)
        m.d.sync += done.eq(Cat(step & image_end, done[:-1]))
        with m.If(done[-1]):
            m.d.sync += self.loaded.eq(self.loaded + 1)
        with m.If(self.start):
            m.d.sync += [y.eq(0), g.eq(0), j.eq(0), slot.eq(0), seg_base.eq(0), image.eq(0),
                         image_m1.eq(-1), self.loaded.eq(0), done.eq(0)]
        return step


class _Ring:
    """The ring of RING_ROWS rows as LUT RAMs written one segment record per cycle and read
    asynchronously three times per cycle (rows y - 1 .. y + 1 of the strip): per record its P
    pixels, and apart its first and its last pixel (the right and left neighbours of the
    segments beside it), so a strip's three words are one read each at (slot, g, j), (slot, g,
    j + 1) and (slot, g, j - 1). The address is ``Cat(j, g, slot)`` in the design's widths."""

    def __init__(self, m, cfg: AccelConfig):
        self.jb = max(cfg.row_segments - 1, 0).bit_length()
        self.gb = max(cfg.groups - 1, 0).bit_length()
        depth = RING_ROWS << (self.jb + self.gb)
        px = cfg.pixel_bits
        self.px, self.rb = px, cfg.segment_bits
        self.mems = {}
        for name, shape in (("pixels", self.rb), ("first", px), ("last", px)):
            mem = self.mems[name] = memory.Memory(shape=shape, depth=depth, init=[])
            m.submodules[f"ring_{name}"] = mem
        self.reads = {name: [mem.read_port(domain="comb") for _ in range(3)]
                      for name, mem in self.mems.items()}

    def _addr(self, slot, g, j):
        return Cat(j[:self.jb], g[:self.gb], slot[:2])

    def write(self, m, en, slot, g, j, record):
        px, rb = self.px, self.rb
        for name, value in (("pixels", record), ("first", record[:px]),
                            ("last", record[rb - px:rb])):
            wp = self.mems[name].write_port()
            m.d.comb += [wp.en.eq(en), wp.addr.eq(self._addr(slot, g, j)), wp.data.eq(value)]

    def read(self, m, r, slot, g, j):
        """Strip row r's record at (slot, g, j), the last pixel of j - 1, the first of j + 1."""
        out = []
        for name, jj in (("pixels", j), ("last", j - 1), ("first", j + 1)):
            rp = self.reads[name][r]
            m.d.comb += rp.addr.eq(self._addr(slot, g, jj[:max(self.jb, 1)]))
            out.append(rp.data)
        return out
