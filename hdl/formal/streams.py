"""Formal harnesses of the engine's internal streams, one per producing part, compositionally.

Each on the smallest configuration (:data:`hdl.formal.control.SMALL`), each part alone: its
inputs free, those that are streams obeying valid/ready (assumed: payload stable while valid and
not ready); the stream it produces must obey valid/ready (asserted: valid and payload held
until ready), with no valid after reset. Covers: a stalled beat, a completed one.

:class:`WalkerHarness`: :class:`~hdl.walker.WorkWalker` ``work``.
:class:`PackerHarness`: :class:`~hdl.packer.OutputPacker` ``o``.
:class:`DatapathHarness`: :class:`~hdl.datapath.Datapath` ``result`` (the arithmetic kept: the
induction needs only k = 2, so it is not slow).
:class:`FrontEndHarness`: :class:`~hdl.frontend.CommandFrontEnd` ``frame`` (the FRAME beats to
the dealer). The dealer's ``accepted`` is a ghost count as the dealer keeps it: 0 after the
batch's ``start``, up by at most one per cycle and only in a cycle a ``frame`` beat is taken.
"""

from __future__ import annotations

from amaranth import ResetSignal, Signal
from amaranth.hdl import Assert, Assume, Cover

from ..config import AccelConfig
from ..datapath import Datapath
from ..frontend import CommandFrontEnd
from ..packer import OutputPacker
from ..walker import WorkWalker
from .control import SMALL
from .props import Harness, held, past, quiet_after_reset

__all__ = ["WalkerHarness", "PackerHarness", "FrontEndHarness", "DatapathHarness"]


def _covers(m, h, s, name):
    after = past(m, ~ResetSignal()) & h.started
    m.d.comb += [
        Cover(after & s.valid & ~s.ready, f"{name} stalled"),
        Cover(after & past(m, s.valid & ~s.ready) & s.valid & s.ready,
              f"{name}: a stalled beat then taken"),
    ]
    return after


class WalkerHarness(Harness):
    """:class:`~hdl.walker.WorkWalker` (instance 0): ``work`` valid and payload held until
    ready, whatever ``write``, ``clear``, ``start`` and ``buf`` do; no valid after reset."""

    def __init__(self, cfg: AccelConfig = SMALL):
        super().__init__()
        self.cfg = cfg

    def elaborate(self, platform):
        m = self.module()
        m.submodules.dut = dut = WorkWalker(self.cfg, 0)
        self.drive_inputs(m, dut, "env")
        w = dut.work
        held(m, self, w.valid, w.ready, w.payload, Assert, "work")
        quiet_after_reset(m, self, w.valid, name="work")
        after = _covers(m, self, w, "work")
        m.d.comb += Cover(after & w.valid & w.ready & (w.payload.index == 2),
                          "work: a third entry taken")
        return m


class PackerHarness(Harness):
    """:class:`~hdl.packer.OutputPacker`: ``o`` valid and payload held until ready, the P result
    streams obeying valid/ready, ``steps`` and ``counts`` free; no valid after reset."""

    def __init__(self, cfg: AccelConfig = SMALL):
        super().__init__()
        self.cfg = cfg

    def elaborate(self, platform):
        m = self.module()
        m.submodules.dut = dut = OutputPacker(self.cfg)
        self.drive_inputs(m, dut, "env")
        for p, r in enumerate(dut.results):
            held(m, self, r.valid, r.ready, r.payload, Assume, f"results{p}")
        o = dut.o
        held(m, self, o.valid, o.ready, o.payload, Assert, "o")
        quiet_after_reset(m, self, o.valid, name="o")
        after = _covers(m, self, o, "o")
        m.d.comb += Cover(after & o.valid & o.ready & o.payload.last & (o.payload.data != 0),
                          "o: a last beat with data taken")
        return m


class FrontEndHarness(Harness):
    """:class:`~hdl.frontend.CommandFrontEnd`: ``frame`` valid and payload held until ready, the
    command stream ``i`` obeying valid/ready (its content free), ``finished`` and ``out_valid``
    free, ``accepted`` the dealer's count and ``taking`` its accepted < images (module docstring);
    no valid after reset."""

    def __init__(self, cfg: AccelConfig = SMALL):
        super().__init__()
        self.cfg = cfg

    def elaborate(self, platform):
        m = self.module()
        m.submodules.dut = dut = CommandFrontEnd(self.cfg)
        self.drive_inputs(m, dut, "env")
        i, f = dut.i, dut.frame
        # the dealer's accepted: reset by the batch's start, +1 only with a taken beat
        acc = Signal.like(dut.accepted, name="ghost_accepted")
        with m.If(dut.batch.start):
            m.d.sync += acc.eq(0)
        with m.Elif(f.valid & f.ready & self.free(1, "env_image_end")):
            m.d.sync += acc.eq(acc + 1)
        m.d.comb += Assume(dut.accepted == acc, "accepted: the dealer's count")
        m.d.comb += Assume(dut.taking == (acc < dut.images), "taking: the dealer's accepted < images")
        held(m, self, i.valid, i.ready, i.payload, Assume, "i")
        held(m, self, f.valid, f.ready, f.payload, Assert, "frame")
        quiet_after_reset(m, self, f.valid, name="frame")
        after = _covers(m, self, f, "frame")
        m.d.comb += Cover(after & past(m, f.valid & f.ready) & dut.batch.end,
                          "frame: a batch's beats taken, the batch ended")
        return m


class DatapathHarness(Harness):
    """:class:`~hdl.datapath.Datapath` (N slots): ``result`` valid and payload held until ready,
    ``work`` obeying valid/ready, ``load`` and ``groups`` free (the arithmetic is in the model,
    not abstracted); no valid after reset."""

    def __init__(self, cfg: AccelConfig = SMALL):
        super().__init__()
        self.cfg = cfg

    def elaborate(self, platform):
        m = self.module()
        m.submodules.dut = dut = Datapath(self.cfg, self.cfg.out_channels)
        self.drive_inputs(m, dut, "env")
        held(m, self, dut.work.valid, dut.work.ready, dut.work.payload, Assume, "work")
        r = dut.result
        held(m, self, r.valid, r.ready, r.payload, Assert, "result")
        quiet_after_reset(m, self, r.valid, name="result")
        _covers(m, self, r, "result")
        return m
