"""The engine's performance counters (:data:`hdl.protocol.STREAM_COUNTERS`): batch counters over
each FRAME command, and per-image counters latched as each image ends.

The counters only count; what they count comes in as events: the batch
(:class:`~hdl.frontend.BatchSignature`), the images' progress
(:class:`~hdl.image_control.ImageSignature`) and the engine's status bits
(:class:`EventSignature`) and the instances' work transfers (``work``, one
:class:`WorkTakenSignature` each).

* Batch counters: ``batch.start`` sets ``batch_cycles`` to 1 and the other cycle counts to 0;
  every cycle of ``batch.active`` adds one to ``batch_cycles`` and to each count whose condition
  holds; ``batch.end`` adds one to ``batches``.
* Per-image counters: two images can be in flight (j finishing, j + 1 starting), so there is one
  set of running counts per window buffer. ``image.go`` clears the started buffer's outputs per
  channel and per instance; while ``image.open[b]`` every work entry taken for buffer b counts for
  its channel (``slot``) and its instance, and the cycle count restarts at 1 with instance 0's
  first entry (index 0), then adds every cycle in which instance 0's result is not held by
  output backpressure (``stalled``). ``image.end`` latches buffer ``image.ended``'s counts (all
  zero for an ``empty`` image) into ``counters.image_*``, the cycle count including the end
  cycle, and adds one to ``images``; ``image_done`` is high the next cycle, with the new values.
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig
from .datapath import entries_per_instance, work_layout
from .frontend import BatchSignature
from .image_control import ImageSignature
from .protocol import stream_counter_layout

__all__ = ["EngineCounters", "EventSignature", "WorkTakenSignature"]


class WorkTakenSignature(wiring.Signature):
    """One instance's work stream as the counters see it: ``taken`` when the datapath takes the
    work ``entry`` this cycle."""

    def __init__(self, cfg: AccelConfig):
        cfg = cfg.design
        super().__init__({"taken": Out(1), "entry": Out(work_layout(cfg, cfg.out_channels))})


class EventSignature(wiring.Signature):
    """The engine's status bits each cycle, seen from the engine: ``loading`` (the window dealer
    accepts, writes or deals), ``computing`` (work in flight in any walker, datapath or image),
    ``mac_active`` (an instance multiplies), ``out_valid`` (an output beat waits or leaves),
    ``stalled`` (output backpressure holds instance 0's result)."""

    def __init__(self, cfg: AccelConfig):
        cfg = cfg.design
        super().__init__({"loading": Out(1), "computing": Out(1), "mac_active": Out(1),
                          "out_valid": Out(1), "stalled": Out(1)})


def _popcount(bits):
    bits = list(bits)
    while len(bits) > 1:
        bits = [bits[i] + bits[i + 1] if i + 1 < len(bits) else bits[i]
                for i in range(0, len(bits), 2)]
    return bits[0] if bits else 0


class EngineCounters(wiring.Component):
    """``batch``, ``image``, ``events`` and ``work`` in; ``counters`` (:func:`hdl.protocol.
    stream_counter_layout`) and ``image_done`` out."""

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg = cfg.design
        super().__init__({
            "batch": In(BatchSignature()),
            "image": In(ImageSignature()),
            "events": In(EventSignature(cfg)),
            # a member of its own: Amaranth 0.5 cannot flip an array inside a flipped interface
            "work": In(WorkTakenSignature(cfg)).array(cfg.instances),
            "counters": Out(stream_counter_layout(cfg)),
            "image_done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        self._batch(m)
        self._image(m)
        return m

    def _batch(self, m):
        cnt, ev, batch = self.counters, self.events, self.batch
        with m.If(batch.start):
            m.d.sync += [cnt.batch_cycles.eq(1), cnt.load_cycles.eq(0), cnt.datapath_cycles.eq(0),
                         cnt.overlap_cycles.eq(0), cnt.drain_cycles.eq(0),
                         cnt.mac_active_cycles.eq(0)]
        with m.Elif(batch.active):
            m.d.sync += [cnt.batch_cycles.eq(cnt.batch_cycles + 1),
                         cnt.load_cycles.eq(cnt.load_cycles + ev.loading),
                         cnt.datapath_cycles.eq(cnt.datapath_cycles + ev.computing),
                         cnt.overlap_cycles.eq(cnt.overlap_cycles + (ev.loading & ev.computing)),
                         cnt.drain_cycles.eq(cnt.drain_cycles + (ev.out_valid & ~ev.computing)),
                         cnt.mac_active_cycles.eq(cnt.mac_active_cycles + ev.mac_active)]
        with m.If(batch.end):
            m.d.sync += cnt.batches.eq(cnt.batches + 1)

    def _image(self, m):
        cfg, cnt, img, work = self.cfg, self.counters, self.image, self.work
        n, p_count = cfg.out_channels, cfg.instances
        cycles = [Signal(32, name=f"cycles{b}") for b in range(2)]
        chan = [[Signal(range(cfg.positions + 1), name=f"chan{b}_{c}") for c in range(n)]
                for b in range(2)]
        inst = [[Signal(range(entries_per_instance(cfg) + 1), name=f"inst{b}_{p}")
                 for p in range(p_count)]
                for b in range(2)]
        for b in range(2):
            taken = [w.taken & (w.entry.buf == b) for w in work]
            first = taken[0] & (work[0].entry.index == 0)
            with m.If(img.go & (img.buf == b)):
                m.d.sync += [s.eq(0) for s in chan[b] + inst[b]]
            with m.Elif(img.open[b]):
                m.d.sync += cycles[b].eq(Mux(first, 1, cycles[b] + ~self.events.stalled))
                m.d.sync += [inst[b][p].eq(inst[b][p] + t) for p, t in enumerate(taken)]
                for c in range(n):
                    hits = [t & (w.entry.slot == c) for t, w in zip(taken, work)]
                    m.d.sync += chan[b][c].eq(chan[b][c] + _popcount(hits))
        m.d.sync += self.image_done.eq(img.end)
        with m.If(img.end):
            def done(pair):
                return Mux(img.empty, 0, Mux(img.ended, pair[1], pair[0]))
            m.d.sync += [cnt.images.eq(cnt.images + 1),
                         cnt.image_cycles.eq(Mux(img.empty, 0, done(cycles) + 1))]
            m.d.sync += [cnt.image_computed[c].eq(done([chan[0][c], chan[1][c]]))
                         for c in range(n)]
            m.d.sync += [cnt.image_instance[p].eq(done([inst[0][p], inst[1][p]]))
                         for p in range(p_count)]
