"""Per-instance work-list walker of the streaming engine.

The SCHEDULE command writes instance p's dealt run (:func:`py_ref.schedule.deal`) into the
walker's memory, entry k at address k; ``count`` counts the valid entries written (a run is
written from address 0; ``clear``, pulsed at every SCHEDULE header, empties it first, so a
schedule with no entries leaves it empty). For every image the engine pulses ``start``; the
walker then offers entries k = 0 .. count - 1, each tagged with its index k and the image's
window buffer ``buf``. The memory is read one entry ahead (synchronous read port enabled when
the output register moves), so entries leave back to back, one per cycle at most.

Timing: ``start`` in cycle t, the first entry is offered in cycle t + 2; ``running`` falls once
the last entry has been read (it may still sit in the output register).
"""

from __future__ import annotations

from amaranth import Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig
from .datapath import WriteSignature, entries_per_instance, work_layout
from .protocol import schedule_entry_layout

__all__ = ["WorkWalker", "entry_write_signature"]


def entry_write_signature(cfg: AccelConfig) -> WriteSignature:
    """The write port of an instance's work-list memory, seen from the writer: entry ``addr`` of
    the run (:func:`hdl.protocol.schedule_entry_layout`)."""
    cfg = cfg.design
    return WriteSignature(range(entries_per_instance(cfg)), schedule_entry_layout(cfg))


class WorkWalker(wiring.Component):
    """Instance ``instance``'s work list: ``write`` stores entries, ``work`` streams them."""

    def __init__(self, cfg: AccelConfig, instance: int):
        if not isinstance(instance, int) or not 0 <= instance < cfg.instances:
            raise ValueError(f"instance must be an integer in 0..{cfg.instances - 1}, "
                             f"not {instance!r}")
        cfg = cfg.design
        self.cfg, self.instance = cfg, instance
        super().__init__({
            "write": In(entry_write_signature(cfg)),
            "count": Out(range(entries_per_instance(cfg) + 1)),
            "clear": In(1),             # a new schedule begins: count = 0
            "start": In(1),
            "buf": In(1),
            "running": Out(1),
            "work": Out(stream.Signature(work_layout(cfg, cfg.out_channels))),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        # UltraRAM (4K x 72): the U280 has 960 of them and nothing else uses them, while block
        # RAM holds the window memories (issue 10: block RAM must not bound the instance count)
        mem = memory.Memory(shape=schedule_entry_layout(cfg), depth=entries_per_instance(cfg),
                            init=[], attrs={"ram_style": "ultra"})
        m.submodules.entries = mem
        wp, rp = mem.write_port(), mem.read_port()
        m.d.comb += [wp.en.eq(self.write.en), wp.addr.eq(self.write.addr),
                     wp.data.eq(self.write.data)]
        # deployment constants survive a reset, like the memory
        count = Signal.like(self.count, reset_less=True)
        m.d.comb += self.count.eq(count)
        with m.If(self.write.en):
            m.d.sync += count.eq(Mux(self.write.addr == 0, 0, count) + self.write.data.valid)
        with m.If(self.clear):
            m.d.sync += count.eq(0)

        k = Signal(range(entries_per_instance(cfg) + 1))
        buf = Signal()
        wk = self.work
        adv = Signal()
        m.d.comb += [adv.eq(~wk.valid | wk.ready), rp.en.eq(adv), rp.addr.eq(k),
                     wk.payload.slot.eq(rp.data.channel), wk.payload.seg.eq(rp.data.seg)]
        with m.If(adv):
            m.d.sync += [wk.valid.eq(self.running & (k < count)),
                         wk.payload.index.eq(k), wk.payload.buf.eq(buf), k.eq(k + 1)]
            with m.If(k + 1 >= count):
                m.d.sync += self.running.eq(0)
        with m.If(self.start):
            m.d.sync += [self.running.eq(1), k.eq(0), buf.eq(self.buf)]
        return m
