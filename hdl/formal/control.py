"""Formal harnesses of the kernel's control (:mod:`hdl.kernel_control`).

:class:`ApCtrlHarness`: the s_axi_control slave. The environment (assumed): the host obeys
AXI4-Lite (VALID held until READY, address, data and strobes stable); the Launcher's side
(``done``, ``idle``, ``status``, ``kernel_cycles``) and the engine's read-only values are free.
A ghost model written from the register table (:data:`hdl.regmap.REGISTERS`) and UG1393's
ap_ctrl_hs rules (a shadow of every plain RW register, merged by byte strobe; ap_start,
ap_done, ap_ready, auto_restart, ISR) gives the word each read must return.

:class:`LauncherHarness`: the run FSM. The environment: ``start`` is ApCtrl's ap_start (set
by the host, cleared at done); the registers and ``busy`` are free, ``busy`` low before a
launch (the parts are idle when a run starts).
"""

from __future__ import annotations

from amaranth import Cat, Mux, ResetSignal, Signal
from amaranth.hdl import Assert, Assume, Cover

from ..config import AccelConfig
from ..regmap import (ALIGN, BUFFERS, INPUT_BUFFERS, STATUS_REFUSED,
                      STATUS_UNALIGNED_SHIFT)
from ..kernel_control import ApCtrl, Launcher
from ..protocol import counter_words
from ..regmap import REGISTER, REGISTERS
from .props import Harness, held, past, quiet_after_reset

__all__ = ["ApCtrlHarness", "LauncherHarness", "SMALL"]

#: the smallest configuration of tests/test_engine.py's kind (its counters size the map)
SMALL = AccelConfig(height=4, width=4, in_channels=1, out_channels=1, instances=2, bus_width=64)


def _owed(m, name, asked, answered):
    """A ghost count of requests not yet answered (two bits: an overflow shows as 2 or 3)."""
    owed = Signal(2, name=f"{name}_owed")
    m.d.sync += owed.eq(owed + asked - answered)
    return owed


class ApCtrlHarness(Harness):
    """:class:`~hdl.kernel_control.ApCtrl`: one B per accepted AW+W and one R per accepted AR,
    never one unasked; OKAY; B and R held until ready with their data stable; every read
    returns the word the register table says (RW registers: the last write under the byte
    strobes; CTRL: ap_start, ap_done, ap_idle, ap_ready, auto_restart as UG1393 states them;
    ISR; the read-only inputs; 0 off the map); ``interrupt`` = GIE and any ISR bit; no VALID
    after reset."""

    def __init__(self, cfg: AccelConfig = SMALL):
        super().__init__()
        self.cfg = cfg.design

    def elaborate(self, platform):
        m = self.module()
        m.submodules.dut = dut = ApCtrl(self.cfg)
        self.drive_inputs(m, dut, "env")
        s, c, st = dut.bus, dut.control, dut.state

        held(m, self, s.awvalid, s.awready, s.awaddr, Assume, "aw")
        held(m, self, s.wvalid, s.wready, Cat(s.wdata, s.wstrb), Assume, "w")
        held(m, self, s.arvalid, s.arready, s.araddr, Assume, "ar")
        held(m, self, s.bvalid, s.bready, s.bresp, Assert, "b")
        held(m, self, s.rvalid, s.rready, Cat(s.rdata, s.rresp), Assert, "r")
        quiet_after_reset(m, self, s.bvalid, s.rvalid, name="b/r")

        # one response per request
        aw_hs, w_hs, b_hs = (s.awvalid & s.awready), (s.wvalid & s.wready), (s.bvalid & s.bready)
        ar_hs, r_hs = s.arvalid & s.arready, s.rvalid & s.rready
        b_owed = _owed(m, "b", aw_hs, b_hs)
        r_owed = _owed(m, "r", ar_hs, r_hs)
        m.d.comb += [
            Assert(s.awready == s.wready, "AW and W taken together"),
            Assert(b_owed <= 1, "at most one write unanswered"),
            Assert(s.bvalid == (b_owed == 1), "B only for an accepted write, until taken"),
            Assert(r_owed <= 1, "at most one read unanswered"),
            Assert(s.rvalid == (r_owed == 1), "R only for an accepted read, until taken"),
            Assert(~s.bvalid | (s.bresp == 0), "BRESP OKAY"),
            Assert(~s.rvalid | (s.rresp == 0), "RRESP OKAY"),
        ]

        # the ghost register file, from the table
        wword, rword = s.awaddr[2:], s.araddr[2:]
        strobe = Cat(s.wstrb[i].replicate(8) for i in range(4))
        ctrl, isr_reg = REGISTER["CTRL"], REGISTER["ISR"]
        shadow = {}
        for r in REGISTERS:
            if r.access == "RW" and r.name != "CTRL":
                sh = shadow[r.name] = Signal(r.width, name=f"shadow_{r.name.lower()}")
                for i in range(r.words):
                    word = sh[32 * i:32 * i + 32]
                    with m.If(aw_hs & (wword == (r.offset >> 2) + i)):
                        m.d.sync += word.eq((word & ~strobe) | (s.wdata & strobe))
                m.d.comb += Assert(c.regs[r.name.lower()] == sh, f"inv: {r.name} as written")
        gie, ier = shadow["GIE"], shadow["IER"]
        byte0 = aw_hs & s.wstrb[0]
        host_start = Signal()
        m.d.comb += host_start.eq(byte0 & (wword == ctrl.offset >> 2)
                                  & s.wdata[ctrl.field("ap_start").bit])
        ctrl_read = ar_hs & (rword == ctrl.offset >> 2)
        g_start, g_done, g_ready, g_auto = (Signal(name=f"g_{n}") for n in
                                            ("start", "done", "ready", "auto"))
        g_isr = Signal(2, name="g_isr")
        with m.If(byte0 & (wword == ctrl.offset >> 2)):
            m.d.sync += g_auto.eq(s.wdata[ctrl.field("auto_restart").bit])
        m.d.sync += [
            g_start.eq(host_start | (g_start & ~(c.done & ~g_auto))),
            g_done.eq(c.done | (g_done & ~ctrl_read)),
            g_ready.eq(c.done | (g_ready & ~ctrl_read)),
            g_isr.eq((g_isr ^ Mux(byte0 & (wword == isr_reg.offset >> 2), s.wdata[:2], 0))
                     | (c.done.replicate(2) & ier)),
        ]
        m.d.comb += [
            Assert(c.start == g_start, "ap_start: set by a write of 1, cleared at done unless "
                   "auto_restart"),
            Assert(st.ap_done == g_done, "inv: ap_done"),
            Assert(st.ap_ready == g_ready, "inv: ap_ready"),
            Assert(st.auto_restart == g_auto, "inv: auto_restart"),
            Assert(st.isr == g_isr, "inv: ISR"),
            Assert(dut.interrupt == (gie[0] & g_isr.any()), "interrupt = GIE and ISR any"),
        ]
        # the word a read must return, taken when AR is accepted
        ctrl_word = Signal(32)
        m.d.comb += [ctrl_word[ctrl.field("ap_start").bit].eq(g_start),
                     ctrl_word[ctrl.field("ap_done").bit].eq(g_done),
                     ctrl_word[ctrl.field("ap_idle").bit].eq(c.idle),
                     ctrl_word[ctrl.field("ap_ready").bit].eq(g_ready),
                     ctrl_word[ctrl.field("auto_restart").bit].eq(g_auto)]
        readback = {"CTRL": ctrl_word, "ISR": g_isr, "STATUS": c.status,
                    "KERNEL_CYCLES": c.kernel_cycles, "OUT_BEATS": dut.out_beats}
        want, any_word = Signal(32), Signal()
        n_counters = len(counter_words(self.cfg))
        with m.Switch(rword):
            for r in REGISTERS:
                if r.name == "COUNTERS":
                    for i in range(n_counters):
                        with m.Case((r.offset >> 2) + i):
                            m.d.comb += any_word.eq(1)      # the engine's: not modelled here
                    continue
                value = shadow.get(r.name, readback.get(r.name))
                for i in range(r.words):
                    with m.Case((r.offset >> 2) + i):
                        m.d.comb += want.eq(value[32 * i:32 * i + 32])
            with m.Default():
                m.d.comb += want.eq(0)
        want_q, any_q = Signal(32), Signal()
        with m.If(ar_hs):
            m.d.sync += [want_q.eq(want), any_q.eq(any_word)]
        m.d.comb += Assert(~s.rvalid | any_q | (s.rdata == want_q),
                           "a read returns what the register table says")

        after = past(m, ~ResetSignal()) & self.started
        done_bit = ctrl.field("ap_done").bit
        m.d.comb += [
            Cover(b_hs & after, "a write answered"),
            Cover(s.bvalid & ~s.bready & after, "B stalled"),
            Cover(r_hs & ~any_q & (s.rdata != 0) & after, "a read answered, non-zero"),
            Cover(s.rvalid & ~s.rready & after, "R stalled"),
            Cover(after & past(m, aw_hs & (s.wstrb == 0b0101)) & ar_hs
                  & (rword == REGISTER["IFMAP_BEATS"].offset >> 2) & (want != 0),
                  "a partial-strobe write read back"),
            Cover(after & past(m, ctrl_read & g_done & ~c.done) & ~st.ap_done & s.rvalid
                  & s.rdata[done_bit], "ap_done read as 1, cleared by that read"),
            Cover(after & past(m, dut.interrupt) & ~dut.interrupt & past(m, aw_hs)
                  & (past(m, wword) == isr_reg.offset >> 2), "an interrupt raised and cleared"),
            Cover(after & g_auto & past(m, c.done) & c.start, "auto_restart keeps ap_start"),
        ]
        return m


class LauncherHarness(Harness):
    """:class:`~hdl.kernel_control.Launcher`: per accepted ap_start exactly one launch strobe if
    every pointer is aligned, with the arguments the registers held at the start (IMAGES 0 as
    1), and none otherwise; an unaligned start gives done at once and STATUS refused with the
    unaligned pointers' bits; a launched run's done only after ``busy`` falls; done only for
    an accepted start; ap_idle low from the start to the done of a launched run."""

    def elaborate(self, platform):
        m = self.module()
        m.submodules.dut = dut = Launcher()
        self.drive_inputs(m, dut, "env")
        c, launch = dut.control, dut.launch
        rst = ResetSignal()
        # the environment: ap_start as ApCtrl drives it, falling only at a done
        m.d.comb += Assume(rst | ~self.started | ~past(m, c.start) | c.start | past(m, c.done),
                           "ap_start held until done")
        # the harness's view of a run: accepted when ap_start is seen with no run served and
        # not in the cycle after a done (ap_start is seen low there before a restart)
        served, cool, launches, aligned_q = (Signal(name=n) for n in
                                             ("served", "cool", "launches", "aligned_q"))
        regs_q = Signal.like(c.regs, name="regs_q")
        accept = Signal()
        unaligned = Cat(c.regs[b][:ALIGN.bit_length() - 1].any() for b in BUFFERS)
        m.d.comb += accept.eq(c.start & ~served & ~cool)
        m.d.sync += cool.eq(c.done)
        with m.If(accept):
            m.d.sync += [served.eq(~c.done), launches.eq(0), aligned_q.eq(~unaligned.any()),
                         regs_q.eq(c.regs)]
        with m.Else():
            with m.If(launch.start):
                m.d.sync += launches.eq(1)
            with m.If(c.done):
                m.d.sync += served.eq(0)
        images = regs_q.images
        args = launch.args
        m.d.comb += [
            Assert(~c.done | accept | served, "done only for an accepted start"),
            Assert(~launch.start | (served & aligned_q & ~launches & ~accept),
                   "a launch only for an accepted, aligned start, once"),
            Assert(~(accept & unaligned.any()) | c.done, "an unaligned start: done at once"),
            Assert(~(accept & ~unaligned.any()) | ~c.done, "an aligned start: not done at once"),
            Assert(~(served & c.done & ~accept) | (aligned_q & (launches | launch.start)
                                                   & ~dut.busy),
                   "a launched run is done only after its launch, once busy is low"),
            Assert(~(served & aligned_q & ~accept) | ~c.idle, "not idle while a run is served"),
            Assert(~(served & launch.start) |
                   ((args.base.as_value() == Cat(regs_q[b] for b in BUFFERS))
                    & (args.beats.as_value() == Cat(regs_q[f"{b}_beats"] for b in INPUT_BUFFERS))
                    & (args.load_config == regs_q.flags[REGISTER["FLAGS"].field(
                        "load_config").bit])
                    & (args.images == Mux(images == 0, 1, images))),
                   "launched with the registers of the start"),
        ]
        st = dut.state
        m.d.comb += [
            Assert(~self.started | (st.done == cool), "inv: DONE is the cycle after a done"),
            Assert(st.run == (served & aligned_q & launches & ~accept), "inv: RUN"),
            Assert(~served | accept | launch.start | st.run, "inv: a served run is on"),
            Assert(c.idle == ~(launch.start | st.run), "inv: idle"),
        ]
        refused = past(m, accept & unaligned.any() & ~rst) & self.started
        refused_status = STATUS_REFUSED | (past(m, unaligned) << STATUS_UNALIGNED_SHIFT)
        m.d.comb += Assert(~refused | rst | (c.status == refused_status),
                           "STATUS: refused, the unaligned pointers")
        after = past(m, ~rst) & self.started
        m.d.comb += [
            Cover(after & launch.start, "a launch"),
            Cover(after & c.done & served & launches & past(m, dut.busy), "a run done after busy"),
            Cover(after & refused, "an unaligned start refused"),
            Cover(after & accept & past(m, cool) & ~unaligned.any(),
                  "a restart right after a done"),
        ]
        return m
