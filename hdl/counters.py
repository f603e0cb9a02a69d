"""The engine's performance counters (:data:`hdl.protocol.STREAM_COUNTERS`): batch counters over
each FRAME command, and per-image counters latched as each image ends.

The counters only count; what they count comes in as events: the batch
(:class:`~hdl.frontend.BatchSignature`), the images' progress
(:class:`~hdl.image_control.ImageSignature`) and the engine's status bits
(:class:`EventSignature`) and the pairs' work transfers (``work``, one
:class:`WorkTakenSignature` per pair of twin instances).

* Batch counters: ``batch.start`` sets ``batch_cycles`` to 1 and the other cycle counts to 0;
  every cycle of ``batch.active`` adds one to ``batch_cycles`` and to each count whose condition
  holds; ``batch.end`` adds one to ``batches``.
* Per-image counters: two images can be in flight (j finishing, j + 1 starting), so there is one
  set of running counts per window buffer. ``image.go`` clears the started buffer's outputs per
  channel and per instance; while ``image.open[b]`` every work entry taken for buffer b counts for
  its channel (``slot``) and its instance (each twin with ``valid``), and the cycle count
  restarts at 1 with pair 0's first step (index 0), then adds every cycle in which pair 0's
  result is not held by output backpressure (``stalled``). ``image.end`` latches buffer ``image.ended``'s counts (all
  zero for an ``empty`` image) into ``counters.image_*``, the cycle count including the end
  cycle, and adds one to ``images``; ``image_done`` is high the next cycle, with the new values.

All of this happens :data:`EngineCounters.LATENCY` (2) cycles after the events: the inputs are
registered, then what each buffer's image takes per channel (a popcount over the instances) and
per instance is registered with the rest delayed to match, so that no path from the engine's
handshakes into a count is deeper than a 300 MHz stage (6 logic levels); the counts are exact,
only later. The engine stays ``idle``-low until they show the last batch.
"""

from __future__ import annotations

from amaranth import C, Cat, Module, Mux, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig
from .datapath import entries_per_instance, work_layout
from .frontend import BatchSignature
from .image_control import ImageSignature
from .protocol import stream_counter_layout

__all__ = ["EngineCounters", "EventSignature", "WorkTakenSignature"]


class WorkTakenSignature(wiring.Signature):
    """One pair's work stream as the counters see it: ``taken`` when the datapath takes the
    step ``entry`` this cycle (its twins' entries: ``entry.valid[t]``)."""

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


class ChunkedCounter:
    """A ``width``-bit counter that counts up (or ``down``) by one without a carry through all its
    bits in one cycle: ``chunk``-bit pieces, each with a register that says it sits at its wrap
    value (all ones counting up, zero counting down). Piece k steps when a step is asked and
    every piece below is at its wrap value: a ``chunk``-bit increment after an AND of
    registered flags. Exact in every cycle (no carry is deferred), so it reads like a plain
    counter; a 16-bit piece is 2 CARRY8 levels, which keeps a step, a load and the enable
    within the 6 logic levels of a 300 MHz stage."""

    def __init__(self, width: int, *, chunk: int = 16, down: bool = False, name: str = "count"):
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive int, not {width!r}")
        self.down = down
        self.pieces = [Signal(min(chunk, width - lo), name=f"{name}_{k}")
                       for k, lo in enumerate(range(0, width, chunk))]
        # at reset the count is 0: every piece of a down counter sits at its wrap value
        self.wrap = Signal(len(self.pieces), name=f"{name}_wrap",
                           init=(1 << len(self.pieces)) - 1 if down else 0)
        #: the count
        self.value = Cat(*self.pieces)

    def _wrap_value(self, piece):
        return 0 if self.down else (1 << len(piece)) - 1

    def update(self, m, *, step, load=C(0, 1), load_value=0):
        """In every cycle: ``load`` sets the count to ``load_value`` (an int or a value), else
        ``step`` counts one."""
        load_value = Value.cast(load_value)
        lo = 0
        for k, piece in enumerate(self.pieces):
            part = load_value[lo:lo + len(piece)] if lo < len(load_value) else C(0, len(piece))
            lo += len(piece)
            carry = step & self.wrap[:k].all() if k else step
            before = (self._wrap_value(piece) + (1 if self.down else -1)) % (1 << len(piece))
            stepped = piece - 1 if self.down else piece + 1
            with m.If(load | carry):
                m.d.sync += [piece.eq(Mux(load, part, stepped)),
                             self.wrap[k].eq(Mux(load, part == self._wrap_value(piece),
                                                 piece == before))]


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
            "work": In(WorkTakenSignature(cfg)).array(cfg.pairs),
            "counters": Out(stream_counter_layout(cfg)),
            "image_done": Out(1),
        })

    #: cycles from an event at the inputs to the counters showing it (the inputs are
    #: registered once, then each counter steps: a path from the engine's handshakes into a
    #: 32-bit count would be deeper than a 300 MHz stage)
    LATENCY = 2

    def elaborate(self, platform):
        m = Module()
        # the inputs, a cycle late: every counter and image_done move together, one cycle
        # later than the events they count
        batch = Signal.like(self.batch.start, name="batch_start_r"), \
            Signal.like(self.batch.active, name="batch_active_r"), \
            Signal.like(self.batch.end, name="batch_end_r")
        m.d.sync += [batch[0].eq(self.batch.start), batch[1].eq(self.batch.active),
                     batch[2].eq(self.batch.end)]
        image = {k: Signal.like(getattr(self.image, k), name=f"image_{k}_r")
                 for k in ("go", "buf", "empty", "end", "open", "ended")}
        m.d.sync += [v.eq(getattr(self.image, k)) for k, v in image.items()]
        events = {k: Signal(name=f"{k}_r")
                  for k in ("loading", "computing", "mac_active", "out_valid", "stalled")}
        m.d.sync += [v.eq(getattr(self.events, k)) for k, v in events.items()]
        work = []
        for p, w in enumerate(self.work):
            taken = Signal(name=f"taken{p}_r")
            entry = Signal.like(w.entry, name=f"entry{p}_r")
            m.d.sync += [taken.eq(w.taken), entry.eq(w.entry)]
            work.append((taken, entry))
        # second stage: what each buffer's image takes this cycle, per channel (a popcount over
        # the instances) and per instance, registered; everything else a cycle later to match
        cfg = self.cfg
        n = cfg.out_channels
        takes = [[Signal(range(cfg.instances + 1), name=f"takes{b}_{c}") for c in range(n)]
                 for b in range(2)]
        took = [[Signal(name=f"took{b}_{p}") for p in range(cfg.instances)] for b in range(2)]
        first = [Signal(name=f"first{b}") for b in range(2)]
        for b in range(2):
            mine = [t & (e.buf == b) for t, e in work]
            # instance p = twin p % 2 of pair p // 2
            inst = [mine[p // 2] & work[p // 2][1].valid[p % 2] for p in range(cfg.instances)]
            m.d.sync += [took[b][p].eq(t) for p, t in enumerate(inst)]
            m.d.sync += first[b].eq(mine[0] & (work[0][1].index == 0))
            for c in range(n):
                m.d.sync += takes[b][c].eq(_popcount([t & (work[p // 2][1].slot == c)
                                                      for p, t in enumerate(inst)]))
        batch, image, events = (self._delay(m, batch), self._delay(m, image),
                                self._delay(m, events))
        self._batch(m, *batch, events)
        self._image(m, image, events, takes, took, first)
        return m

    @staticmethod
    def _delay(m, signals):
        """``signals`` (a tuple or a dict of signals) one cycle later."""
        items = signals.items() if isinstance(signals, dict) else enumerate(signals)
        out = {}
        for k, v in items:
            d = Signal.like(v, name=f"{v.name}_d")
            m.d.sync += d.eq(v)
            out[k] = d
        return out if isinstance(signals, dict) else tuple(out[k] for k in range(len(signals)))

    def _batch(self, m, start, active, end, ev):
        cnt = self.counters
        steps = {"batch_cycles": active,
                 "load_cycles": active & ev["loading"],
                 "datapath_cycles": active & ev["computing"],
                 "overlap_cycles": active & ev["loading"] & ev["computing"],
                 "drain_cycles": active & ev["out_valid"] & ~ev["computing"],
                 "mac_active_cycles": active & ev["mac_active"]}
        for name, step in steps.items():
            c = ChunkedCounter(len(cnt[name]), name=name)
            c.update(m, step=step, load=start, load_value=int(name == "batch_cycles"))
            m.d.comb += cnt[name].eq(c.value)
        batches = ChunkedCounter(len(cnt.batches), name="batches")
        batches.update(m, step=end)
        m.d.comb += cnt.batches.eq(batches.value)

    def _image(self, m, img, ev, takes, took, first):
        cfg, cnt = self.cfg, self.counters
        n, p_count = cfg.out_channels, cfg.instances
        # the running count of each buffer's image, plus one: the end cycle counts too, so the
        # latch takes it as it is
        cycles = [ChunkedCounter(len(cnt.image_cycles), name=f"cycles{b}") for b in range(2)]
        chan = [[Signal(range(cfg.positions + 1), name=f"chan{b}_{c}") for c in range(n)]
                for b in range(2)]
        inst = [[Signal(range(entries_per_instance(cfg) + 1), name=f"inst{b}_{p}")
                 for p in range(p_count)]
                for b in range(2)]
        for b in range(2):
            go = img["go"] & (img["buf"] == b)
            counting = ~go & img["open"][b]
            cycles[b].update(m, step=counting & ~first[b] & ~ev["stalled"],
                             load=counting & first[b], load_value=2)
            with m.If(go):
                m.d.sync += [s.eq(0) for s in chan[b] + inst[b]]
            with m.Elif(img["open"][b]):
                m.d.sync += [inst[b][p].eq(inst[b][p] + t) for p, t in enumerate(took[b])]
                m.d.sync += [chan[b][c].eq(chan[b][c] + takes[b][c]) for c in range(n)]
        m.d.sync += self.image_done.eq(img["end"])
        images = ChunkedCounter(len(cnt.images), name="images")
        images.update(m, step=img["end"])
        m.d.comb += cnt.images.eq(images.value)
        with m.If(img["end"]):
            def done(pair):
                return Mux(img["empty"], 0, Mux(img["ended"], pair[1], pair[0]))
            m.d.sync += cnt.image_cycles.eq(done([c.value for c in cycles]))
            m.d.sync += [cnt.image_computed[c].eq(done([chan[0][c], chan[1][c]]))
                         for c in range(n)]
            m.d.sync += [cnt.image_instance[p].eq(done([inst[0][p], inst[1][p]]))
                         for p in range(p_count)]
