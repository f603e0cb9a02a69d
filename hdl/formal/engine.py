"""Formal harness of the engine's streams (:class:`hdl.engine.VelcroAccelerator`).

On the smallest configuration (:data:`hdl.formal.control.SMALL`): the environment's command
stream ``i`` obeys valid/ready (assumed); the engine's output stream ``o`` must too (asserted),
with no VALID after reset. Liveness is stated as covers: an image completes (``image_done``),
an output beat with ``last`` is taken. The datapath's arithmetic makes the SMT problem large,
yet k-induction closes at k = 4 (the covers need a whole frame: 44 cycles).
"""

from __future__ import annotations

from amaranth import ResetSignal
from amaranth.hdl import Assert, Assume, Cover

from ..config import AccelConfig
from ..engine import VelcroAccelerator
from .control import SMALL
from .props import Harness, held, past, quiet_after_reset

__all__ = ["EngineHarness"]


class EngineHarness(Harness):
    """:class:`~hdl.engine.VelcroAccelerator`: ``o`` held until ready (valid and payload);
    no ``o.valid`` after reset; covers: an input beat taken, ``o`` stalled, an image done, a
    ``last`` beat out."""

    def __init__(self, cfg: AccelConfig = SMALL):
        super().__init__()
        self.cfg = cfg

    def elaborate(self, platform):
        m = self.module()
        m.submodules.dut = dut = VelcroAccelerator(self.cfg)
        self.drive_inputs(m, dut, "env")
        i, o = dut.i, dut.o
        held(m, self, i.valid, i.ready, i.payload, Assume, "i")
        held(m, self, o.valid, o.ready, o.payload, Assert, "o")
        quiet_after_reset(m, self, o.valid, name="o")
        after = past(m, ~ResetSignal()) & self.started
        m.d.comb += [
            Cover(after & i.valid & i.ready, "a command beat taken"),
            Cover(after & o.valid & ~o.ready, "o stalled"),
            Cover(after & dut.image_done, "an image done"),
            Cover(after & o.valid & o.ready & o.payload.last, "a last beat out"),
        ]
        return m
