"""Building blocks of the formal harnesses: free inputs, past values, and the valid/ready rule.

A harness is an ``Elaboratable`` that instantiates the part under proof, drives each of its
inputs from a free signal (a port of the harness, so the solver picks it every cycle), states
the other side's protocol as ``Assume`` and the part's as ``Assert``, and reaches the states
that matter with ``Cover``. The harness has its own ``sync`` domain whose reset is free too, so
every property also holds across a reset at any cycle.
"""

from __future__ import annotations

from amaranth import ClockDomain, Elaboratable, Module, ResetSignal, Signal, Value
from amaranth.hdl import Assert, Assume
from amaranth.lib import wiring

__all__ = ["Harness", "past", "held", "quiet_after_reset"]


class Harness(Elaboratable):
    """Base of the harnesses: :meth:`module` gives the module with its clock domain and the
    ``started`` flag (low in the first cycle only, which has no past); :meth:`free` a free input;
    :meth:`drive_inputs` frees every input port of a component; :meth:`ports` the ports."""

    def __init__(self):
        self._free = []
        self._domain = ClockDomain("sync")

    def free(self, shape, name: str) -> Signal:
        sig = Signal(shape, name=name)
        self._free.append(sig)
        return sig

    def drive_inputs(self, m, dut, prefix: str) -> None:
        for path, member, value in dut.signature.flatten(dut):
            if member.flow == wiring.In:
                name = "_".join([prefix, *(str(p) for p in path)])
                m.d.comb += value.eq(self.free(Value.cast(value).shape(), name))

    def module(self) -> Module:
        m = Module()
        m.domains.sync = self._domain
        self.started = Signal(reset_less=True)
        m.d.sync += self.started.eq(1)
        return m

    def ports(self) -> list:
        return [self._domain.clk, self._domain.rst, *self._free]


def past(m, value, name: str | None = None) -> Signal:
    """``value`` one cycle ago (untouched by reset; meaningless in the first cycle)."""
    value = Value.cast(value)
    prev = Signal(value.shape(), reset_less=True, name=name)
    m.d.sync += prev.eq(value)
    return prev


def held(m, harness, valid, ready, payload, check=Assert, name: str = "") -> None:
    """The valid/ready rule (AXI, amaranth.lib.stream): once ``valid`` and not ``ready``, ``valid``
    and ``payload`` stay as they were next cycle, reset aside. ``check``: ``Assert`` on the
    part's sources, ``Assume`` on the other side's."""
    rst = ResetSignal()
    waited = Signal(name=f"{name}_waited")
    m.d.comb += waited.eq(harness.started & past(m, valid & ~ready & ~rst))
    m.d.comb += check(~waited | rst | (valid & (Value.cast(payload) == past(m, payload))),
                      f"{name}: valid and payload held until ready")


def quiet_after_reset(m, harness, *valids, name: str = "") -> None:
    """No ``valid`` in the cycle after a reset cycle (the reset is synchronous, so that is the
    first cycle the registers show it)."""
    after = harness.started & past(m, ResetSignal())
    for valid in valids:
        m.d.comb += Assert(~after | ~valid, f"{name}: no valid after reset")
