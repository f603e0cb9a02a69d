"""Per-pair work-list walker of the streaming engine.

The SCHEDULE command writes the twins' entries of pair d's run (:meth:`py_ref.schedule.Schedule.
table`: instances 2d and 2d + 1) into the walker's memory, step k at address k, one word per step
holding both twins' entries (one UltraRAM per pair; each twin's entry written where its ``en`` bit
is set); ``count`` is the run's length: ``clear``, pulsed at every SCHEDULE header, empties it,
and every write with a valid entry sets it to its address + 1 (records come in step order, so a
schedule with no entries leaves it empty). For every image the engine pulses ``start``; the
walker then offers steps k = 0 .. count - 1, each the twins' entries (a twin without one in step
k: ``valid`` 0) tagged with its index k and the image's window buffer ``buf``. The channel is twin
A's, or twin B's when A has none (a step's valid entries share their channel). The memory is read
one step ahead (a synchronous read port enabled when the output register moves), so steps leave
back to back, one per cycle at most.

Timing: ``start`` in cycle t, the first step is offered in cycle t + 2; ``running`` falls once
the last step has been read (it may still sit in the output register).
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig
from .datapath import WriteSignature, entries_per_instance, work_layout
from .protocol import schedule_entry_layout

__all__ = ["WorkWalker", "entry_write_signature", "step_layout"]


def step_layout(cfg: AccelConfig) -> data.ArrayLayout:
    """A word of a pair's work-list memory: the twins' entries of one step
    (:func:`hdl.protocol.schedule_entry_layout`), twin t at element t."""
    cfg = cfg.design
    return data.ArrayLayout(schedule_entry_layout(cfg), cfg.twins)


def entry_write_signature(cfg: AccelConfig) -> WriteSignature:
    """The write port of a pair's work-list memory, seen from the writer: the twins' entries of
    step ``addr``, twin t's written where ``en[t]``."""
    cfg = cfg.design
    return WriteSignature(range(entries_per_instance(cfg)), step_layout(cfg), lanes=cfg.twins)


class WorkWalker(wiring.Component):
    """Pair ``pair``'s run: ``write`` stores the twins' entries, ``work`` streams the steps."""

    def __init__(self, cfg: AccelConfig, pair: int):
        if isinstance(pair, bool) or not isinstance(pair, int) or not 0 <= pair < cfg.pairs:
            raise ValueError(f"pair must be an integer in 0..{cfg.pairs - 1}, not {pair!r}")
        cfg = cfg.design
        self.cfg, self.pair = cfg, pair
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
        # deployment constants survive a reset, like the memories
        count = Signal.like(self.count, reset_less=True)
        m.d.comb += self.count.eq(count)
        k = Signal(range(entries_per_instance(cfg) + 1))
        wk = self.work
        adv = Signal()
        m.d.comb += adv.eq(~wk.valid | wk.ready)
        # UltraRAM (4K x 72): the U280 has 960 of them and nothing else uses them, while block
        # RAM holds the window memories (issue 10: block RAM must not bound the instance count);
        # the twins share one word, so a pair takes one
        mem = memory.Memory(shape=step_layout(cfg), depth=entries_per_instance(cfg), init=[],
                            attrs={"ram_style": "ultra"})
        m.submodules.entries = mem
        write = self.write
        wp, rp = mem.write_port(granularity=1), mem.read_port()
        m.d.comb += [wp.en.eq(write.en), wp.addr.eq(write.addr), wp.data.eq(write.data),
                     rp.en.eq(adv), rp.addr.eq(k)]
        for t in range(cfg.twins):
            m.d.comb += [wk.payload.seg[t].eq(rp.data[t].seg),
                         wk.payload.valid[t].eq(rp.data[t].valid)]
        with m.If(Cat(write.en[t] & write.data[t].valid for t in range(cfg.twins)).any()):
            m.d.sync += count.eq(write.addr + 1)
        channel = rp.data[0].channel
        if cfg.twins > 1:
            channel = Mux(rp.data[0].valid, channel, rp.data[1].channel)
        m.d.comb += wk.payload.slot.eq(channel)
        with m.If(self.clear):
            m.d.sync += count.eq(0)

        buf = Signal()
        running = self.running
        with m.If(adv):
            m.d.sync += [wk.valid.eq(running & (k < count)),
                         wk.payload.index.eq(k), wk.payload.buf.eq(buf), k.eq(k + 1)]
            with m.If(k + 1 >= count):
                m.d.sync += running.eq(0)
        with m.If(self.start):
            m.d.sync += [running.eq(1), k.eq(0), buf.eq(self.buf)]
        return m
