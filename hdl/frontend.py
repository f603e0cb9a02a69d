"""The engine's command front end: the command stream in, the deployment's memory writes and the
FRAME batches out.

It decodes the commands of :mod:`hdl.protocol` one after the other (a header beat in ``idle``,
then the command's records, a record of R bits over ceil(R / bus_width) beats):

* LAYER: the layer record into ``layer`` (reset-less; until the first LAYER, the design's);
* WEIGHTS: the layer's N x G filter records to ``weights`` at ``slot * G + g`` of the design's G,
  then N quant records to ``quant`` at ``slot``;
* SCHEDULE: ``steps`` (reset-less) from the header, a ``clear`` pulse for the walkers, ``steps``
  records of P work entries to ``entries[d]`` at k (instances 2d and 2d + 1, the twins of pair
  d, in one write), then the layer's S pixel records to
  ``pixels[p]`` at s;
* FRAME: ``images`` from the header; with B > 0, ``batch.start`` pulses and the image beats go
  out on ``frame`` (to the window dealer) until it has ``accepted`` all B images; the front end
  then waits until every image is ``finished`` and the output is empty (``batch.end``) before it
  takes the next command. ``batch.active`` is high from the cycle after the header through
  ``batch.end``.

Each memory write is one cycle of ``en`` with its ``addr`` and ``data``, in the cycle the record's
last beat is taken; the ports are those of :class:`~hdl.datapath.LoadSignature` and
:func:`~hdl.walker.entry_write_signature`, so they connect to the datapaths and walkers.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig
from .datapath import LoadSignature, _times, entries_per_instance, pixels_signature
from .protocol import (MAX_BATCH, Opcode, layer_fields, layer_layout, layer_values, pixel_layout,
                       schedule_entry_layout)
from .walker import entry_write_signature

__all__ = ["CommandFrontEnd", "BatchSignature"]


class BatchSignature(wiring.Signature):
    """A FRAME command's batch, seen from the front end: ``start`` pulses with a header of B > 0
    images, ``active`` is high from the next cycle until the batch's last cycle ``end`` (every
    image finished, the output empty), inclusive."""

    def __init__(self):
        super().__init__({"start": Out(1), "active": Out(1), "end": Out(1)})


class CommandFrontEnd(wiring.Component):
    """``i``: commands; ``frame``: the FRAME image beats; the memory writes of the deployment;
    ``layer``, ``steps``, ``images``; ``batch`` (:class:`BatchSignature`); ``idle`` while it
    waits for a command header. ``accepted`` (the dealer's), ``taking`` (the dealer's register
    ``accepted < images``), ``finished`` (images completed) and ``out_valid`` (an output beat
    waits) tell it when a batch is over."""

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg = cfg.design
        load = LoadSignature(cfg, cfg.out_channels).members
        super().__init__({
            "i": In(stream.Signature(cfg.bus_width)),
            "frame": Out(stream.Signature(cfg.bus_width)),
            "layer": Out(layer_layout(cfg), init=layer_values(cfg)),
            "steps": Out(range(entries_per_instance(cfg) + 1)),
            "images": Out(range(MAX_BATCH + 1)),
            "weights": Out(load["weights"].signature),      # every instance's, shared
            "quant": Out(load["quant"].signature),
            "pixels": Out(pixels_signature(cfg)).array(cfg.instances),
            "entries": Out(entry_write_signature(cfg)).array(cfg.pairs),
            "clear": Out(1),        # a SCHEDULE header: the walkers' runs restart empty
            "batch": Out(BatchSignature()),
            "accepted": In(range(MAX_BATCH + 1)),
            "taking": In(1),
            "finished": In(range(MAX_BATCH + 1)),
            "out_valid": In(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        entry_bits = schedule_entry_layout(cfg).size
        pixel_bits = pixel_layout(cfg).size
        layer_bits = sum(layer_fields(cfg).values())
        # Deployment constants survive a reset, like the memories that hold the rest of them.
        layer = Signal(layer_layout(cfg), init=layer_values(cfg), reset_less=True)
        steps = Signal.like(self.steps, reset_less=True)
        m.d.comb += [self.layer.eq(layer), self.steps.eq(steps)]
        images, batch = self.images, self.batch
        # each command's last record index, registered: a record's end is then an equality of
        # registers (idx == last), not a subtract and compare in the cycle it completes. The
        # layer's change in LAYER, and IDLE comes between it and any command that counts by it;
        # steps' is set with steps, from the SCHEDULE header.
        def last_of(value, name):
            r = Signal(len(value), name=name, reset_less=True)
            m.d.sync += r.eq(value - 1)
            return r
        last = {"weights": last_of(layer.weight_records, "weights_last"),
                "quant": last_of(layer.out_channels, "quant_last"),
                "pixels": last_of(layer.segments, "pixels_last"),
                "steps": Signal(len(steps), name="steps_last", reset_less=True)}
        rec = _Records(m, self.i, cfg, max(cfg.weight_bits, cfg.QUANT_BITS, layer_bits,
                                           cfg.instances * entry_bits,
                                           cfg.instances * pixel_bits))
        # filter address slot * G + g of the design's G; (slot, g) walk the layer's N x G
        w_slot = Signal(range(cfg.out_channels))
        w_g = Signal(range(max(cfg.groups, 2)))
        header = self.i.payload
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.i.ready.eq(1), self.idle.eq(1)]
                rec.reset()
                m.d.sync += [w_slot.eq(0), w_g.eq(0)]
                with m.If(self.i.valid):
                    with m.Switch(header[:8]):
                        with m.Case(Opcode.LAYER):
                            m.next = "LAYER"
                        with m.Case(Opcode.WEIGHTS):
                            m.next = "WEIGHTS"
                        with m.Case(Opcode.SCHEDULE):
                            m.d.sync += [steps.eq(header[8:32]),
                                         last["steps"].eq(header[8:32] - 1)]
                            m.d.comb += self.clear.eq(1)
                            with m.If(header[8:32] != 0):
                                m.next = "SCHEDULE"
                            with m.Else():
                                m.next = "PIXELS"
                        with m.Case(Opcode.FRAME):
                            m.d.sync += images.eq(header[8:24])
                            with m.If(header[8:24] != 0):
                                m.d.comb += batch.start.eq(1)
                                m.d.sync += batch.active.eq(1)
                                m.next = "LOAD"
            with m.State("LAYER"):
                value, done = rec.take(layer_bits)
                with m.If(done):
                    m.d.sync += layer.eq(value)
                    m.next = "IDLE"
            with m.State("WEIGHTS"):
                value, done = rec.take(cfg.weight_bits)
                m.d.comb += [self.weights.data.eq(value), self.weights.en.eq(done),
                             self.weights.addr.eq(_times(w_slot, cfg.groups) + w_g)]
                with m.If(done):
                    g_end = w_g == layer.groups - 1
                    m.d.sync += [w_g.eq(Mux(g_end, 0, w_g + 1)), w_slot.eq(w_slot + g_end)]
                with m.If(rec.next(done, last["weights"])):
                    m.next = "QUANT"
            with m.State("QUANT"):
                value, done = rec.take(cfg.QUANT_BITS)
                m.d.comb += [self.quant.data.eq(value), self.quant.en.eq(done),
                             self.quant.addr.eq(rec.idx)]
                with m.If(rec.next(done, last["quant"])):
                    m.next = "IDLE"
            with m.State("SCHEDULE"):
                done = rec.take_per_pair(self.entries, entry_bits)
                with m.If(rec.next(done, last["steps"])):
                    m.next = "PIXELS"
            with m.State("PIXELS"):
                done = rec.take_per_instance(self.pixels, pixel_bits)
                with m.If(rec.next(done, last["pixels"])):
                    m.next = "IDLE"
            with m.State("LOAD"):
                # no beat offered once the batch is accepted: the next command's header would
                # show on ``frame`` for the cycle before WAIT and be withdrawn (valid/ready);
                # the dealer's register, not a comparison of the counts, so that the command
                # stream's ready starts at a flip-flop
                more = self.taking
                m.d.comb += [self.frame.valid.eq(self.i.valid & more),
                             self.frame.payload.eq(self.i.payload),
                             self.i.ready.eq(self.frame.ready & more)]
                with m.If(~more):
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If((self.finished == images) & ~self.out_valid):
                    m.d.sync += batch.active.eq(0)
                    m.next = "IDLE"
        m.d.comb += batch.end.eq(batch.active & (self.finished == images) & ~self.out_valid
                                 & (self.accepted == images))
        return m


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

    def take_per_instance(self, ports, bits):
        """A record of one ``bits``-wide field per instance, field p written to ``ports[p]`` at
        address ``idx``; returns the record-complete strobe."""
        value, done = self.take(len(ports) * bits)
        for p, port in enumerate(ports):
            self.m.d.comb += [port.data.eq(value[p * bits:(p + 1) * bits]), port.en.eq(done),
                              port.addr.eq(self.idx)]
        return done

    def take_per_pair(self, ports, bits):
        """A record of one ``bits``-wide field per instance, instances 2d and 2d + 1 written to
        ``ports[d]``'s twin lanes at address ``idx`` (an odd P's last pair: lane 0 only);
        returns the record-complete strobe."""
        cfg = self.cfg
        value, done = self.take(cfg.instances * bits)
        for d, port in enumerate(ports):
            lanes = range(2 * d, min(2 * d + cfg.twins, cfg.instances))
            self.m.d.comb += [port.addr.eq(self.idx)]
            for t, p in enumerate(lanes):
                self.m.d.comb += [port.data[t].eq(value[p * bits:(p + 1) * bits]),
                                  port.en[t].eq(done)]
        return done

    def next(self, done, last_index):
        """Count a completed record; true in the cycle record ``last_index`` (the count - 1)
        completes (then idx = 0)."""
        last = done & (self.idx == last_index)
        with self.m.If(done):
            self.m.d.sync += self.idx.eq(Mux(last, 0, self.idx + 1))
        return last
