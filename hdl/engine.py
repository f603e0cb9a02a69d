"""The streaming, balanced compression-skip engine (issue 9).

Pieces, each a component with its own test, joined here:

* command front end (this module): WEIGHTS (every instance holds every one of the N channels,
  slot = channel; N is independent of the P instances),
  SCHEDULE (the host-dealt work lists and pixel tables, :func:`py_ref.schedule.deal`), FRAME
  with B images;
* :class:`~hdl.dealer.WindowDealer`: segment records in, one strip per cycle broadcast to every
  datapath, which keeps the windows of its own pixels, image j in window buffer j % 2;
* per instance a :class:`~hdl.walker.WorkWalker` (its dealt run, walked once per image) feeding a
  :class:`~hdl.datapath.Datapath`;
* :class:`~hdl.packer.OutputPacker`: the P result streams -> compact-order output beats, ``last``
  on each image's final beat.

Images stream back to back: image j + 1 loads while image j computes, and the walkers start image
j + 1 as soon as they have offered image j's last entry (and j + 1 is loaded), so the datapaths
never drain between images. An image's buffer is released when the packer has taken its last
result. Without stalls image j takes exactly ``steps * G + PIPELINE_LATENCY`` cycles
(hdl.config; between images the walkers add one idle cycle when G = 1, none when G > 1) from
its first work entry to its last result (counter ``image_cycles``, which leaves out cycles in
which output backpressure holds instance 0's result).

Formats: :mod:`hdl.protocol`. Counters: :func:`hdl.protocol.stream_counter_layout`; ``image_done``
is high for one cycle whenever the per-image counters hold a newly completed image.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig
from .datapath import Datapath, _times, entries_per_instance
from .dealer import WindowDealer
from .packer import OutputPacker, beat_layout
from .protocol import (MAX_BATCH, Opcode, layer_fields, layer_layout, layer_values, pixel_layout,
                       schedule_entry_layout, stream_counter_layout)
from .walker import WorkWalker

__all__ = ["VelcroAccelerator"]


def _popcount(bits):
    bits = list(bits)
    while len(bits) > 1:
        bits = [bits[i] + bits[i + 1] if i + 1 < len(bits) else bits[i]
                for i in range(0, len(bits), 2)]
    return bits[0] if bits else 0


class VelcroAccelerator(wiring.Component):
    """``i``: commands; ``o``: compact output beats; ``counters``, ``image_done``, ``idle``."""

    def __init__(self, cfg: AccelConfig = AccelConfig()):
        self.cfg = cfg = cfg.design
        super().__init__({
            "i": In(stream.Signature(cfg.bus_width)),
            "o": Out(stream.Signature(beat_layout(cfg))),
            "counters": Out(stream_counter_layout(cfg)),
            "image_done": Out(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        m.submodules.dealer = dealer = WindowDealer(cfg)
        m.submodules.packer = packer = OutputPacker(cfg)
        wiring.connect(m, packer.o, wiring.flipped(self.o))
        dps, walkers = [], []
        for p in range(cfg.instances):
            dp = m.submodules[f"datapath{p}"] = Datapath(cfg, cfg.out_channels)
            wk = m.submodules[f"walker{p}"] = WorkWalker(cfg, p)
            wiring.connect(m, wk.work, dp.work)
            wiring.connect(m, dp.result, packer.results[p])
            m.d.comb += [getattr(dp.load.strip, k).eq(getattr(dealer.strip, k))
                         for k in ("en", "buf", "seg", "g", "data")]
            m.d.comb += packer.counts[p].eq(wk.count)
            dps.append(dp)
            walkers.append(wk)
        # Deployment constants survive a reset, like the memories that hold the rest of them.
        steps = Signal(range(entries_per_instance(cfg) + 1), reset_less=True)
        m.d.comb += packer.steps.eq(steps)
        images = Signal(range(MAX_BATCH + 1))
        m.d.comb += dealer.images.eq(images)
        # the layer's shape (LAYER command); until the first one, the design's
        layer = Signal(layer_layout(cfg), init=layer_values(cfg), reset_less=True)
        m.d.comb += dealer.layer.eq(layer)
        m.d.comb += [dp.groups.eq(layer.groups) for dp in dps]
        self._layer = layer
        go, finished = self._control(m, dealer, packer, walkers, steps, images)
        in_batch = self._front(m, dealer, dps, walkers, steps, images, finished)
        self._counters(m, dealer, packer, dps, walkers, steps, go, in_batch)
        return m

    def _control(self, m, dealer, packer, walkers, steps, images):
        """Start the walkers on each loaded image; release buffers as images complete."""
        started = Signal(range(MAX_BATCH + 1))
        finished = Signal(range(MAX_BATCH + 1))
        go = Signal()
        m.d.comb += go.eq(~Cat(wk.running for wk in walkers).any() & (started < dealer.loaded)
                          & ~dealer.start)
        for wk in walkers:
            m.d.comb += [wk.start.eq(go & (steps != 0)), wk.buf.eq(started[0])]
        with m.If(go):
            m.d.sync += started.eq(started + 1)
        with m.If(packer.image_end | (go & (steps == 0))):
            m.d.sync += finished.eq(finished + 1)
        # images in flight per buffer; the next image to end is in buffer ``ended``
        self._open, self._ended, self._steps = Signal(2), Signal(), steps
        self._go, self._image_end = go, packer.image_end | (go & (steps == 0))
        for b in range(2):
            with m.If(go & (started[0] == b) & (steps != 0)):
                m.d.sync += self._open[b].eq(1)
            with m.Elif(packer.image_end & (self._ended == b)):
                m.d.sync += self._open[b].eq(0)
        with m.If(self._image_end):
            m.d.sync += self._ended.eq(~self._ended)
        with m.If(dealer.start):
            m.d.sync += [started.eq(0), finished.eq(0), self._ended.eq(0), self._open.eq(0)]
        m.d.comb += dealer.released.eq(finished)
        return go, finished

    def _front(self, m, dealer, dps, walkers, steps, images, finished):
        """Command FSM: headers, WEIGHTS and SCHEDULE records, FRAME beats to the window dealer."""
        cfg = self.cfg
        entry_bits = schedule_entry_layout(cfg).size
        pixel_bits = pixel_layout(cfg).size
        layer = self._layer
        layer_bits = sum(layer_fields(cfg).values())
        rec = _Records(m, self.i, cfg, max(cfg.weight_bits, cfg.QUANT_BITS, layer_bits,
                                           cfg.instances * entry_bits,
                                           cfg.instances * pixel_bits))
        in_batch = Signal()
        # filter address slot * G + g of the design's G; (slot, g) walk the layer's N x G
        w_slot = Signal(range(cfg.out_channels))
        w_g = Signal(range(max(cfg.groups, 2)))
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.i.ready.eq(1), self.idle.eq(1)]
                rec.reset()
                m.d.sync += [w_slot.eq(0), w_g.eq(0)]
                with m.If(self.i.valid):
                    with m.Switch(self.i.payload[:8]):
                        with m.Case(Opcode.LAYER):
                            m.next = "LAYER"
                        with m.Case(Opcode.WEIGHTS):
                            m.next = "WEIGHTS"
                        with m.Case(Opcode.SCHEDULE):
                            m.d.sync += steps.eq(self.i.payload[8:32])
                            m.d.comb += [wk.clear.eq(1) for wk in walkers]
                            with m.If(self.i.payload[8:32] != 0):
                                m.next = "SCHEDULE"
                            with m.Else():
                                m.next = "PIXELS"
                        with m.Case(Opcode.FRAME):
                            m.d.sync += images.eq(self.i.payload[8:24])
                            with m.If(self.i.payload[8:24] != 0):
                                m.d.comb += dealer.start.eq(1)
                                m.d.sync += in_batch.eq(1)
                                m.next = "LOAD"
            with m.State("LAYER"):
                value, done = rec.take(layer_bits)
                with m.If(done):
                    m.d.sync += layer.eq(value)
                    m.next = "IDLE"
            with m.State("WEIGHTS"):
                value, done = rec.take(cfg.weight_bits)
                for dp in dps:
                    m.d.comb += [dp.load.weights.data.eq(value), dp.load.weights.en.eq(done),
                                 dp.load.weights.addr.eq(_times(w_slot, cfg.groups) + w_g)]
                with m.If(done):
                    g_end = w_g == layer.groups - 1
                    m.d.sync += [w_g.eq(Mux(g_end, 0, w_g + 1)), w_slot.eq(w_slot + g_end)]
                with m.If(rec.next(done, layer.weight_records)):
                    m.next = "QUANT"
            with m.State("QUANT"):
                value, done = rec.take(cfg.QUANT_BITS)
                for dp in dps:
                    m.d.comb += [dp.load.quant.data.eq(value), dp.load.quant.en.eq(done),
                                 dp.load.quant.addr.eq(rec.idx)]
                with m.If(rec.next(done, layer.out_channels)):
                    m.next = "IDLE"
            with m.State("SCHEDULE"):
                value, done = rec.take(cfg.instances * entry_bits)
                for p, wk in enumerate(walkers):
                    m.d.comb += [wk.write.data.eq(value[p * entry_bits:(p + 1) * entry_bits]),
                                 wk.write.en.eq(done), wk.write.addr.eq(rec.idx)]
                with m.If(rec.next(done, steps)):
                    m.next = "PIXELS"
            with m.State("PIXELS"):
                value, done = rec.take(cfg.instances * pixel_bits)
                for p, dp in enumerate(dps):
                    m.d.comb += [dp.load.pixels.data.eq(value[p * pixel_bits:(p + 1) * pixel_bits]),
                                 dp.load.pixels.en.eq(done), dp.load.pixels.addr.eq(rec.idx)]
                with m.If(rec.next(done, layer.segments)):
                    m.next = "IDLE"
            with m.State("LOAD"):
                wiring.connect(m, wiring.flipped(self.i), dealer.i)
                with m.If(dealer.accepted == images):
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If((finished == images) & ~self.o.valid):
                    m.d.sync += in_batch.eq(0)
                    m.next = "IDLE"
        self._batch_end = Signal()
        m.d.comb += self._batch_end.eq(in_batch & (finished == images) & ~self.o.valid
                                       & (dealer.accepted == images))
        return in_batch

    def _counters(self, m, dealer, packer, dps, walkers, steps, go, in_batch):
        """Batch counters, and per-image counters latched as each image completes."""
        cfg, cnt = self.cfg, self.counters
        computing = Signal()
        m.d.comb += computing.eq(Cat(wk.running for wk in walkers).any()
                                 | Cat(r.valid for r in packer.results).any()
                                 | Cat(dp.active for dp in dps).any() | self._open.any())
        loading = Signal()
        m.d.comb += loading.eq(dealer.busy | (dealer.i.valid & dealer.i.ready))
        with m.If(dealer.start):
            m.d.sync += [cnt.batch_cycles.eq(1), cnt.load_cycles.eq(0), cnt.datapath_cycles.eq(0),
                         cnt.overlap_cycles.eq(0), cnt.drain_cycles.eq(0),
                         cnt.mac_active_cycles.eq(0)]
        with m.Elif(in_batch):
            m.d.sync += [cnt.batch_cycles.eq(cnt.batch_cycles + 1),
                         cnt.load_cycles.eq(cnt.load_cycles + loading),
                         cnt.datapath_cycles.eq(cnt.datapath_cycles + computing),
                         cnt.overlap_cycles.eq(cnt.overlap_cycles + (loading & computing)),
                         cnt.drain_cycles.eq(cnt.drain_cycles + (self.o.valid & ~computing)),
                         cnt.mac_active_cycles.eq(cnt.mac_active_cycles
                                                  + Cat(dp.active for dp in dps).any())]
        with m.If(self._batch_end):
            m.d.sync += cnt.batches.eq(cnt.batches + 1)
        self._image_counters(m, dps, walkers)

    def _image_counters(self, m, dps, walkers):
        """Two images can be in flight (j finishing, j + 1 starting): one set of running counts
        per buffer, latched into ``counters.image_*`` when the image ends."""
        cfg, cnt = self.cfg, self.counters
        n, p_count = cfg.out_channels, cfg.instances
        ended = self._ended
        cycles = [Signal(32, name=f"cycles{b}") for b in range(2)]
        chan = [[Signal(range(cfg.positions + 1), name=f"chan{b}_{c}") for c in range(n)]
                for b in range(2)]
        inst = [[Signal(range(entries_per_instance(cfg) + 1), name=f"inst{b}_{p}")
                 for p in range(p_count)]
                for b in range(2)]
        stalled = dps[0].result.valid & ~dps[0].result.ready
        starting = Signal()     # buffer being started by go
        m.d.comb += starting.eq(walkers[0].buf)
        for b in range(2):
            taken = [dp.work.valid & dp.work.ready & (dp.work.payload.buf == b) for dp in dps]
            first = taken[0] & (dps[0].work.payload.index == 0)
            with m.If(self._go & (starting == b)):
                m.d.sync += [s.eq(0) for s in chan[b] + inst[b]]
            with m.Elif(self._open[b]):
                m.d.sync += cycles[b].eq(Mux(first, 1, cycles[b] + ~stalled))
                m.d.sync += [inst[b][p].eq(inst[b][p] + t) for p, t in enumerate(taken)]
                for c in range(n):
                    hits = [t & (dp.work.payload.slot == c) for t, dp in zip(taken, dps)]
                    m.d.sync += chan[b][c].eq(chan[b][c] + _popcount(hits))
        m.d.sync += self.image_done.eq(self._image_end)
        with m.If(self._image_end):
            # an image with nothing to compute ends at its start: all its counts are zero
            empty = self._go & (self._steps == 0)

            def done(pair):
                return Mux(empty, 0, Mux(ended, pair[1], pair[0]))
            m.d.sync += [cnt.images.eq(cnt.images + 1),
                         cnt.image_cycles.eq(Mux(empty, 0, done(cycles) + 1))]
            m.d.sync += [cnt.image_computed[c].eq(done([chan[0][c], chan[1][c]]))
                         for c in range(n)]
            m.d.sync += [cnt.image_instance[p].eq(done([inst[0][p], inst[1][p]]))
                         for p in range(p_count)]

class _Records:
    """Record assembly on the command stream: a record of R bits arrives over ceil(R/bus) beats;
    ``idx`` counts records of the current command."""

    def __init__(self, m, i, cfg, max_bits):
        self.m, self.i, self.cfg = m, i, cfg
        max_beats = cfg.beats(max_bits)
        self.held = Signal(cfg.bus_width * max(max_beats - 1, 1))
        self.beat = Signal(range(max(max_beats, 2)))
        self.idx = Signal(range(max(cfg.out_channels * cfg.groups, entries_per_instance(cfg),
                                    cfg.segments) + 1))

    def reset(self):
        self.m.d.sync += [self.idx.eq(0), self.beat.eq(0)]

    def take(self, bits):
        """Accept beats; returns (record value, record-complete strobe)."""
        m, i, cfg = self.m, self.i, self.cfg
        beats = cfg.beats(bits)
        m.d.comb += i.ready.eq(1)
        beat_in = i.valid & i.ready
        if beats == 1:
            return i.payload[:bits], beat_in
        with m.If(beat_in):
            m.d.sync += [self.held.word_select(self.beat, cfg.bus_width).eq(i.payload),
                         self.beat.eq(Mux(self.beat == beats - 1, 0, self.beat + 1))]
        value = Cat(self.held[:cfg.bus_width * (beats - 1)], i.payload)[:bits]
        return value, beat_in & (self.beat == beats - 1)

    def next(self, done, count):
        """Count a completed record; true in the cycle the ``count``-th completes (then idx = 0)."""
        last = done & (self.idx == count - 1)
        with self.m.If(done):
            self.m.d.sync += self.idx.eq(Mux(last, 0, self.idx + 1))
        return last
