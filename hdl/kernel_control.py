"""The kernel's control: the s_axi_control slave (:class:`ApCtrl`) and the run FSM
(:class:`Launcher`), joined by a :class:`ControlSignature`.

* :class:`ApCtrl`: the register file generated from :data:`hdl.regmap.REGISTERS`
  (:func:`register_file`), the ap_ctrl_hs handshake (ap_start set by the host and cleared at
  ap_ready unless auto_restart; ap_done and ap_ready clear on read; ap_idle) and the interrupt
  (ISR bits set by events their IER bit enables, toggled by host writes of 1; interrupt = GIE
  and ISR != 0, UG1393).
* :class:`Launcher`: ap_start -> check the pointers' alignment (refused: STATUS bits, ap_done at
  once) -> latch the arguments -> one-cycle launch strobe to the datapath parts
  (:class:`LaunchSignature`) -> wait until they and the engine are idle -> ap_done, STATUS and
  KERNEL_CYCLES.
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .protocol import SCALAR_COUNTER_KINDS, STREAM_COUNTERS, counter_elements, counter_words, stream_counter_layout
from .regmap import (ADDR_BITS, ALIGN_BITS, BUFFERS, INPUT_BUFFERS, REGISTER, REGISTERS,
                     STATUS_AXI_ERROR, STATUS_REFUSED, STATUS_UNALIGNED_SHIFT, pointers)

__all__ = ["AXIL_PORTS", "REGISTER_LAYOUT", "ARGUMENTS", "LaunchSignature", "ControlSignature",
           "ApCtrl", "Launcher", "register_file", "check_counters"]

#: AXI4-Lite slave ports as the slave sees them (Vitis' flat names are ``<prefix>_<key>``).
AXIL_PORTS = {"awvalid": In(1), "awready": Out(1), "awaddr": In(ADDR_BITS),
              "wvalid": In(1), "wready": Out(1), "wdata": In(32), "wstrb": In(4),
              "bvalid": Out(1), "bready": In(1), "bresp": Out(2),
              "arvalid": In(1), "arready": Out(1), "araddr": In(ADDR_BITS),
              "rvalid": Out(1), "rready": In(1), "rdata": Out(32), "rresp": Out(2)}

#: The host-written registers (RW, CTRL aside), one field each, named as in the table.
REGISTER_LAYOUT = data.StructLayout({r.name.lower(): r.width for r in REGISTERS
                                     if r.access == "RW" and r.name != "CTRL"})

#: What one run needs, latched at launch: each buffer's address, each input buffer's beats,
#: FLAGS.load_config and B (IMAGES, 0 counting as 1).
ARGUMENTS = data.StructLayout({
    "base": data.StructLayout({b: pointers()[b].width for b in BUFFERS}),
    "beats": data.StructLayout({b: 32 for b in INPUT_BUFFERS}),
    "load_config": 1,
    "images": REGISTER["IMAGES"].width,
})


class LaunchSignature(wiring.Signature):
    """The launcher's side: ``start`` high for one cycle starts a run of ``args`` (held until
    the next start)."""

    def __init__(self):
        super().__init__({"start": Out(1), "args": Out(ARGUMENTS)})


class ControlSignature(wiring.Signature):
    """:class:`ApCtrl`'s side of its link to the :class:`Launcher`: ``start`` is ap_start,
    ``regs`` the host's registers; ``done`` a one-cycle ap_done/ap_ready event, ``idle`` ap_idle,
    ``status`` and ``kernel_cycles`` the read-only registers of those names."""

    def __init__(self):
        super().__init__({"start": Out(1), "regs": Out(REGISTER_LAYOUT),
                          "done": In(1), "idle": In(1), "status": In(32),
                          "kernel_cycles": In(32)})


def _words(register, value) -> list:
    """The 32-bit words the host reads for ``register`` (``value``: a signal or, for an array,
    a list of them)."""
    if register.array:
        return list(value)
    return [value[32 * i:32 * i + 32] for i in range(register.words)]


def register_file(m, s, storage: dict, readback: dict, on_write: dict, on_read: dict):
    """AXI4-Lite slave decode generated from :data:`hdl.regmap.REGISTERS`.

    ``s``: the slave's ports (:data:`AXIL_PORTS`); ``storage``: {name: value} of the plain RW
    registers (host writes merge by byte strobe); ``readback``: {name: value} of the others
    (RO, RTOW, CTRL); ``on_write``: {name: f(wdata, wstrb)} called inside the register's write
    case instead of storing; ``on_read``: {name: strobe} driven high in the cycle the register
    is read. Every register of the table must be in ``storage`` or ``readback``."""
    missing = {r.name for r in REGISTERS} - set(storage) - set(readback)
    if missing:
        raise ValueError(f"registers without a value: {sorted(missing)}")
    # write: take AW and W together, answer on B
    wr = Signal()
    m.d.comb += [s.bresp.eq(0), wr.eq(s.awvalid & s.wvalid & ~s.bvalid),
                 s.awready.eq(wr), s.wready.eq(wr)]
    with m.If(s.bvalid & s.bready):
        m.d.sync += s.bvalid.eq(0)
    strobe = Cat(*(s.wstrb[i].replicate(8) for i in range(4)))
    with m.If(wr):
        m.d.sync += s.bvalid.eq(1)
        with m.Switch(s.awaddr[2:]):
            for r in REGISTERS:
                if r.access == "RO":
                    continue
                for i in range(r.words):
                    with m.Case((r.offset >> 2) + i):
                        if r.name in on_write:
                            on_write[r.name](s.wdata, s.wstrb)
                        else:
                            word = storage[r.name][32 * i:32 * i + 32]
                            m.d.sync += word.eq((word & ~strobe) | (s.wdata & strobe))
    # read: registered data
    m.d.comb += [s.rresp.eq(0), s.arready.eq(~s.rvalid)]
    with m.If(s.rvalid & s.rready):
        m.d.sync += s.rvalid.eq(0)
    with m.If(s.arvalid & s.arready):
        m.d.sync += s.rvalid.eq(1)
        with m.Switch(s.araddr[2:]):
            for r in REGISTERS:
                for i, word in enumerate(_words(r, readback.get(r.name, storage.get(r.name)))):
                    with m.Case((r.offset >> 2) + i):
                        m.d.sync += s.rdata.eq(word)
                        if r.name in on_read:
                            m.d.comb += on_read[r.name].eq(1)
            with m.Default():
                m.d.sync += s.rdata.eq(0)


def check_counters(cfg):
    """Refuse a configuration whose counter registers run past the register map."""
    n_counters = len(counter_words(cfg))
    if REGISTER["COUNTERS"].offset + 4 * n_counters > 1 << ADDR_BITS:
        raise ValueError(f"{n_counters} counters do not fit the {ADDR_BITS}-bit map")


def _fields(m, register, values: dict) -> Signal:
    """A word of ``register`` with each field ``values[field name]`` at its bits."""
    word = Signal(register.width, name=f"{register.name.lower()}_word")
    m.d.comb += [word[f.bit:f.bit + f.width].eq(values[f.name]) for f in register.fields]
    return word


class ApCtrl(wiring.Component):
    """The s_axi_control slave: registers, ap_ctrl_hs handshake and interrupt.

    ``bus``: the AXI4-Lite slave; ``control``: to the :class:`Launcher`; ``out_beats`` and
    ``counters`` (the engine's): read-only registers; ``interrupt``: GIE and ISR != 0."""

    def __init__(self, cfg):
        check_counters(cfg)
        self.cfg = cfg
        super().__init__({"bus": Out(wiring.Signature(AXIL_PORTS)),
                          "control": Out(ControlSignature()),
                          "out_beats": In(32), "counters": In(stream_counter_layout(cfg)),
                          "interrupt": Out(1)})
        #: the handshake's registers, visible so that the formal harness can state invariants
        self.state = Signal(self.STATE)

    #: ap_done, ap_ready, auto_restart (CTRL bits 1, 3, 7) and ISR
    STATE = data.StructLayout({"ap_done": 1, "ap_ready": 1, "auto_restart": 1, "isr": 2})

    def elaborate(self, platform):
        m = Module()
        c = self.control
        st = self.state
        ap_done, ap_ready, auto_restart, isr = st.ap_done, st.ap_ready, st.auto_restart, st.isr
        host_start, read_clears = Signal(), Signal()
        isr_toggle = Signal(2)
        ctrl = REGISTER["CTRL"]

        def write_ctrl(wdata, wstrb):
            with m.If(wstrb[0]):
                m.d.comb += host_start.eq(wdata[ctrl.field("ap_start").bit])
                m.d.sync += auto_restart.eq(wdata[ctrl.field("auto_restart").bit])

        def write_isr(wdata, wstrb):
            with m.If(wstrb[0]):
                m.d.comb += isr_toggle.eq(wdata[:2])

        counters = []
        for name, kind, _ in STREAM_COUNTERS:
            field = self.counters[name]
            counters += ([field] if kind in SCALAR_COUNTER_KINDS else
                         [field[i] for i in range(counter_elements(self.cfg, kind))])
        ctrl_word = _fields(m, ctrl, {"ap_start": c.start, "ap_done": ap_done,
                                      "ap_idle": c.idle, "ap_ready": ap_ready,
                                      "auto_restart": auto_restart})
        regs = {r.name: c.regs[r.name.lower()] for r in REGISTERS
                if r.name.lower() in REGISTER_LAYOUT.members}
        register_file(m, self.bus, regs,
                      readback={"CTRL": ctrl_word, "ISR": isr, "STATUS": c.status,
                                "KERNEL_CYCLES": c.kernel_cycles, "OUT_BEATS": self.out_beats,
                                "COUNTERS": counters},
                      on_write={"CTRL": write_ctrl, "ISR": write_isr},
                      on_read={"CTRL": read_clears})
        # ISR: set by events (if enabled), toggled by host writes of 1
        m.d.sync += isr.eq((isr ^ isr_toggle) | (c.done.replicate(2) & regs["IER"]))
        m.d.comb += self.interrupt.eq(regs["GIE"] & isr.any())
        # ap_start: set by the host, cleared at ap_ready unless auto_restart
        with m.If(host_start):
            m.d.sync += c.start.eq(1)
        with m.Elif(c.done & ~auto_restart):
            m.d.sync += c.start.eq(0)
        with m.If(c.done):
            m.d.sync += [ap_done.eq(1), ap_ready.eq(1)]
        with m.Elif(read_clears):
            m.d.sync += [ap_done.eq(0), ap_ready.eq(0)]
        return m


class Launcher(wiring.Component):
    """ap_start -> check pointers -> latch the arguments -> launch -> wait -> ap_done.

    ``control``: from :class:`ApCtrl`; ``launch``: to the datapath parts; ``busy``: any of
    them or the engine still working; ``axi_error``: a response of this run was not OKAY."""

    def __init__(self):
        super().__init__({"control": In(ControlSignature()), "launch": Out(LaunchSignature()),
                          "busy": In(1), "axi_error": In(1)})
        #: the FSM's RUN and DONE states, visible so that the formal harness can state invariants
        self.state = Signal(data.StructLayout({"run": 1, "done": 1}))

    def elaborate(self, platform):
        m = Module()
        c, args = self.control, self.launch.args
        running = Signal()
        pointers = [c.regs[b] for b in BUFFERS]
        unaligned = Signal(len(BUFFERS))
        m.d.comb += [unaligned.eq(Cat(ptr[:ALIGN_BITS].any() for ptr in pointers)),
                     c.idle.eq(~running)]
        images = c.regs.images
        with m.If(running):
            m.d.sync += c.kernel_cycles.eq(c.kernel_cycles + 1)
        with m.FSM(name="control") as fsm:
            with m.State("IDLE"):
                with m.If(c.start):
                    m.d.sync += c.kernel_cycles.eq(1)
                    with m.If(unaligned.any()):
                        m.d.comb += c.done.eq(1)
                        m.d.sync += c.status.eq(STATUS_REFUSED
                                                | (unaligned << STATUS_UNALIGNED_SHIFT))
                        m.next = "DONE"
                    with m.Else():
                        load_config = REGISTER["FLAGS"].field("load_config").bit
                        m.d.sync += [c.status.eq(0), running.eq(1),
                                     args.load_config.eq(c.regs.flags[load_config]),
                                     args.images.eq(Mux(images == 0, 1, images))]
                        m.d.sync += [args.base[b].eq(ptr) for b, ptr in zip(BUFFERS, pointers)]
                        m.d.sync += [args.beats[b].eq(c.regs[f"{b}_beats"])
                                     for b in INPUT_BUFFERS]
                        m.next = "LAUNCH"
            with m.State("LAUNCH"):
                m.d.comb += self.launch.start.eq(1)
                m.next = "RUN"
            with m.State("RUN"):
                with m.If(~self.busy):
                    m.d.comb += c.done.eq(1)
                    m.d.sync += [running.eq(0),
                                 c.status.eq(Mux(self.axi_error, STATUS_AXI_ERROR, 0))]
                    m.next = "DONE"
            with m.State("DONE"):
                # one cycle so ap_start (cleared at done) is seen low before a restart
                m.next = "IDLE"
        m.d.comb += [self.state.run.eq(fsm.ongoing("RUN")), self.state.done.eq(fsm.ongoing("DONE"))]
        return m
