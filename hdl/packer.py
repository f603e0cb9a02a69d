"""The output packer of the balanced engine: P instances' results -> compact-stream bus beats.

The output stream carries the computed outputs in the schedule's compact order
(:mod:`py_ref.schedule`): step k takes every instance's output of step k, instances 0..P-1, so
stream byte ``k*P + p`` is instance p's result of step k, or a zero byte when it has none. The
results come from the ceil(P/2) pair datapaths, twins' bytes side by side (a twin without an
entry yields 0); pair d's run has ``counts[d]`` steps, and the steps past it are zero bytes. The
packer joins the pairs' result streams one step at a time (all P bytes in one cycle, so pairs
that each produce one step per G cycles never wait on it),
and packs the bytes little-endian into ``bus_width``-bit beats: byte ``c`` of the frame is byte
``c % (bus_width/8)`` of beat ``c // (bus_width/8)``. The last beat carries ``last`` and is zero
past the final byte. A frame is ``steps * P`` bytes (``Schedule.stream_length``),
``ceil(steps * P / (bus_width/8))`` beats; a frame with nothing computed sends no beat.

P must divide ``bus_width / 8`` (with a power-of-two bus: P a power of two up to bus_width/8),
so a step never straddles two beats and each byte lane chooses among ``bus_width/8/P`` sources.

``steps`` and ``counts`` are deployment constants (set with the schedule); the packer counts
steps and starts the next frame by itself after the last beat.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig, OFM_BITS
from .datapath import entries_per_instance, result_layout

__all__ = ["OutputPacker", "beat_layout"]


def beat_layout(cfg: AccelConfig) -> data.StructLayout:
    return data.StructLayout({"data": cfg.bus_width, "last": 1})


class OutputPacker(wiring.Component):
    """``results[d]``: pair d's steps in its run order; ``o``: the compact stream's beats.
    ``steps``: steps per frame (the busiest pair's run), ``counts[d]``: pair d's run; held
    constant while a frame is packed.

    ``SETUP``: cycles from ``steps`` and ``counts`` being set to the first step the packer can
    take (they are read through registers)."""

    SETUP = 1

    def __init__(self, cfg: AccelConfig):
        self._MustUse__silence = True   # a refused configuration is not an unused design
        if cfg.bus_bytes % cfg.instances:
            raise ValueError(f"instances must divide bus_width/8 = {cfg.bus_bytes}, "
                             f"not {cfg.instances!r}")
        self._MustUse__silence = False
        self.cfg = cfg = cfg.design
        super().__init__({
            "results": In(stream.Signature(result_layout(cfg))).array(cfg.pairs),
            "steps": In(range(entries_per_instance(cfg) + 1)),
            "counts": In(range(entries_per_instance(cfg) + 1)).array(cfg.pairs),
            "o": Out(stream.Signature(beat_layout(cfg))),
            "image_end": Out(1),   # the last step of an image is taken this cycle
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        p_count = cfg.instances
        steps_per_beat = cfg.bus_bytes // p_count

        # Steps of this frame already packed, k, and what depends on it, all registers, so that
        # the step decision is a few gates on registers and valids: ``kp1``, ``kp2`` = k + 1,
        # k + 2, ``present[d]`` = pair d's run has step k (counts[d] > k), ``final`` = k is the
        # last step (k + 1 == steps). Each cycle they are computed for the k of the next cycle:
        # k itself while no step is taken (which also follows a SCHEDULE's new steps and counts
        # one cycle later; the packer is still then), k + 1 (or 0 after the final step) when one
        # is.
        top = entries_per_instance(cfg)
        k = Signal(range(top + 1))
        kp1 = Signal(range(top + 2), init=1)
        kp2 = Signal(range(top + 3), init=2)
        present = Signal(cfg.pairs)
        final = Signal()

        slot = Signal(range(steps_per_beat))   # step's position within the beat
        completes = (slot == steps_per_beat - 1) | final
        joined = Cat(r.valid | ~present[d] for d, r in enumerate(self.results)).all()
        step = Signal()
        # every step of a consistent schedule has a pair present (steps = max counts); the
        # test also keeps the packer still while SCHEDULE rewrites steps and counts
        m.d.comb += step.eq(joined & present.any()
                            & (~completes | ~self.o.valid | self.o.ready))
        for d, r in enumerate(self.results):
            m.d.comb += r.ready.eq(step & present[d])
        new = Cat(Mux(present[d], r.payload.value, 0) for d, r in enumerate(self.results))
        new = new[:p_count * OFM_BITS]

        m.d.comb += self.image_end.eq(step & final)
        counts = self.counts
        with m.If(step):
            m.d.sync += [k.eq(Mux(final, 0, kp1)), kp1.eq(Mux(final, 1, kp2)),
                         kp2.eq(Mux(final, 2, kp2 + 1)),
                         slot.eq(Mux(completes, 0, slot + 1)),
                         present.eq(Cat(Mux(final, counts[d] != 0, counts[d] > kp1)
                                        for d in range(cfg.pairs))),
                         final.eq(Mux(final, self.steps == 1, kp2 == self.steps))]
        with m.Else():
            m.d.sync += [present.eq(Cat(counts[d] > k for d in range(cfg.pairs))),
                         final.eq(kp1 == self.steps)]
        self._beat(m, step, completes, final, slot, new)
        return m

    def _beat(self, m, step, completes, final, slot, new):
        """Fill buffer for the steps of a beat; the beat register takes the completing step."""
        cfg = self.cfg
        width = cfg.instances * OFM_BITS
        lanes = cfg.bus_bytes // cfg.instances
        fill = Signal(cfg.bus_width)
        with m.If(step):
            m.d.sync += fill.word_select(slot, width).eq(new)
        # Step lane j of the beat: earlier steps from the buffer, this one new, later ones zero.
        # (no `slot > lanes - 1` term: it is constant, and lint rejects constant comparisons)
        beat = Cat(Mux(slot > j, fill.word_select(j, width), Mux(slot == j, new, 0))
                   if j < lanes - 1 else Mux(slot == j, new, 0) for j in range(lanes))
        with m.If(step & completes):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.data.eq(beat),
                         self.o.payload.last.eq(final)]
        with m.Elif(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
