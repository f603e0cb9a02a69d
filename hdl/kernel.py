"""Vitis RTL kernel (Alveo U280) around :class:`~hdl.engine.VelcroAccelerator`.

Ports (named as Vitis expects; ``scripts/make_kernel.py`` (``make kernel``) writes the Verilog):

* ``ap_clk``, ``ap_rst_n`` (active low, synchronous), ``interrupt`` (level, active high).
* ``s_axi_control_*``: AXI4-Lite slave, 12-bit addresses, 32-bit data. The register map is the
  table in :mod:`hdl.regmap`; the read and write decode below is generated from it.
* ``m_axi_gmem_in_*``: AXI4 master, 64-bit addresses, 512-bit data, 1-bit IDs (always 0), that
  reads the input buffers (params, schedule, ifmap); its write channels are tied off (AWVALID
  and WVALID low, BREADY high).
* ``m_axi_gmem_out_*``: the same for the ofm, write channels only used (ARVALID low, RREADY
  high). Two masters let v++ put inputs and output on different HBM pseudo-channels.

Both masters issue INCR bursts of at most 64 beats that never cross a 4 KB boundary; writes
are fully strobed; one read and one write stream in flight at a time.

Every pointer must be 64-byte aligned; above 4 GB is fine (64-bit addresses). The buffer
formats are in :mod:`hdl.kernel_buffers`.

Datapath: a read sequencer issues bursts for params, schedule (if load_config) and ifmap in
that order into a 256-beat FIFO (it only asks for data the FIFO has room for, so R never
backs up into the interconnect); the feed passes the params buffer (the layer's LAYER and
WEIGHTS commands, PARAMS_BEATS beats) and the schedule buffer (its SCHEDULE command,
SCHEDULE_BEATS beats) to the engine as they are, then a FRAME header with the FRAMES
register's B and the ifmap buffer's IFMAP_BEATS beats. The layer's shape travels in its
commands, so one xclbin runs every layer within its design's maxima. The engine's compact
output goes through a 128-beat FIFO; a write burst's address is issued only once its data is in
the FIFO, so W never stalls mid-burst: full bursts up to the next 4 KB page while the engine
runs, then whatever is left once it is idle (the output length depends on the schedule).
ap_done rises once every write response is back.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from amaranth import Array, C, Cat, ClockDomain, Module, Mux, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig
from .engine import VelcroAccelerator
from .kernel_buffers import (ALIGN, BEAT_BYTES, BUFFERS, INPUT_BUFFERS, KERNEL_NAME,
                             STATUS_AXI_ERROR, STATUS_REFUSED, STATUS_UNALIGNED_SHIFT)
from .protocol import STREAM_COUNTERS, Opcode, counter_elements, counter_words
from .regmap import ADDR_BITS as AXIL_ADDR_BITS, GMEM_IN, GMEM_OUT, REGISTER, REGISTERS

__all__ = ["VelcroKernel", "KERNEL_NAME", "kernel_rtl", "kernel_members", "axil_members",
           "axi_members"]

AXI_ADDR_BITS = 64
AXI_DATA_BITS = 8 * BEAT_BYTES
BURST_BEATS = 64            # AXI4 allows 256; 64 x 64 B = 4 KB, one page
READ_FIFO_DEPTH = 256
WRITE_FIFO_DEPTH = 128
LOAD_CONFIG_BIT = REGISTER["FLAGS"].field("load_config").bit


def axil_members(prefix: str, addr_bits: int = AXIL_ADDR_BITS) -> dict:
    """AXI4-Lite slave ports with Vitis' flat names (``<prefix>_awvalid`` ...)."""
    ports = {"awvalid": In(1), "awready": Out(1), "awaddr": In(addr_bits),
             "wvalid": In(1), "wready": Out(1), "wdata": In(32), "wstrb": In(4),
             "bvalid": Out(1), "bready": In(1), "bresp": Out(2),
             "arvalid": In(1), "arready": Out(1), "araddr": In(addr_bits),
             "rvalid": Out(1), "rready": In(1), "rdata": Out(32), "rresp": Out(2)}
    return {f"{prefix}_{k}": v for k, v in ports.items()}


def axi_members(prefix: str, addr_bits: int = AXI_ADDR_BITS, data_bits: int = AXI_DATA_BITS) -> dict:
    """AXI4 master ports with Vitis' flat names (``<prefix>_awaddr`` ...)."""
    ports = {"awvalid": Out(1), "awready": In(1), "awaddr": Out(addr_bits), "awid": Out(1),
             "awlen": Out(8), "awsize": Out(3), "awburst": Out(2),
             "wvalid": Out(1), "wready": In(1), "wdata": Out(data_bits),
             "wstrb": Out(data_bits // 8), "wlast": Out(1),
             "bvalid": In(1), "bready": Out(1), "bresp": In(2), "bid": In(1),
             "arvalid": Out(1), "arready": In(1), "araddr": Out(addr_bits), "arid": Out(1),
             "arlen": Out(8), "arsize": Out(3), "arburst": Out(2),
             "rvalid": In(1), "rready": Out(1), "rdata": In(data_bits), "rlast": In(1),
             "rresp": In(2), "rid": In(1)}
    return {f"{prefix}_{k}": v for k, v in ports.items()}


def kernel_members() -> dict:
    """The kernel's ports, with Vitis' flat names: {name: In(width) / Out(width)}."""
    return {
        "ap_clk": In(1),
        "ap_rst_n": In(1),
        **axil_members("s_axi_control"),
        **axi_members(GMEM_IN),
        **axi_members(GMEM_OUT),
        "interrupt": Out(1),
    }


class _Prefixed:
    """``bus.awvalid`` for the component's flat port ``<prefix>_awvalid``."""

    def __init__(self, component, prefix):
        self._component, self._prefix = component, prefix

    def __getattr__(self, name):
        return getattr(self._component, f"{self._prefix}_{name}")


def _burst_len(addr, left):
    """Beats of the next burst from ``addr``: at most 64 and never past the next 4 KB page."""
    to_page = BURST_BEATS - addr[6:12]
    return Mux(left < to_page, left, to_page)


def _words(register, value) -> list:
    """The 32-bit words the host reads for ``register`` (``value``: a signal or, for an array,
    a list of them)."""
    if register.array:
        return list(value)
    return [value[32 * i:32 * i + 32] for i in range(register.words)]


def register_file(m, s, storage: dict, readback: dict, on_write: dict, on_read: dict):
    """AXI4-Lite slave decode generated from :data:`hdl.regmap.REGISTERS`.

    ``storage``: {name: Signal} of the plain RW registers (host writes merge by byte strobe);
    ``readback``: {name: value} of the others (RO, RTOW, CTRL); ``on_write``: {name: f(wdata,
    wstrb)} called inside the register's write case instead of storing; ``on_read``: {name:
    strobe} driven high in the cycle the register is read. Every register of the table must
    be in ``storage`` or ``readback``."""
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


def _fields(m, register, values: dict) -> Signal:
    """A word of ``register`` with each field ``values[field name]`` at its bits."""
    word = Signal(register.width, name=f"{register.name.lower()}_word")
    m.d.comb += [word[f.bit:f.bit + f.width].eq(values[f.name]) for f in register.fields]
    return word


class VelcroKernel(wiring.Component):
    """The accelerator as a Vitis RTL kernel (ap_ctrl_hs); see the module docstring."""

    def __init__(self, cfg: AccelConfig = AccelConfig()):
        if cfg.bus_width != AXI_DATA_BITS:
            raise ValueError(f"the kernel streams {AXI_DATA_BITS}-bit AXI beats into the engine: "
                             f"bus_width must be {AXI_DATA_BITS}, not {cfg.bus_width}")
        self.cfg = cfg = cfg.design
        n_counters = len(counter_words(cfg))
        if REGISTER["COUNTERS"].offset + 4 * n_counters > 1 << AXIL_ADDR_BITS:
            raise ValueError(f"{n_counters} counters do not fit the {AXIL_ADDR_BITS}-bit map")
        super().__init__(kernel_members())

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd = ClockDomain("sync")
        m.d.comb += [cd.clk.eq(self.ap_clk), cd.rst.eq(~self.ap_rst_n)]
        m.submodules.engine = engine = VelcroAccelerator(self.cfg)
        k = SimpleNamespace(
            regs={r.name: Signal(r.width, name=f"reg_{r.name.lower()}")
                  for r in REGISTERS if r.access == "RW" and r.name != "CTRL"},
            status=Signal(32), kernel_cycles=Signal(32), out_beats=Signal(32),
            running=Signal(), done_event=Signal(), launch=Signal(), axi_error=Signal(),
            base={b: Signal(64, name=f"base_{b}") for b in BUFFERS},
            load_config=Signal(), images=Signal(16), sched_beats=Signal(32),
            params_beats=Signal(32), ifmap_beats=Signal(32))
        self._registers(m, k, engine)
        self._read_and_feed(m, k, engine)
        self._write(m, k, engine)
        self._control(m, k, engine)
        return m

    def _registers(self, m, k, engine):
        """The s_axi_control registers, ap_ctrl_hs handshake and interrupt."""
        ap_start, ap_done, ap_ready, auto_restart = Signal(), Signal(), Signal(), Signal()
        isr = Signal(2)
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
            field = engine.counters[name]
            counters += ([field] if kind == "cycles" else
                         [field[i] for i in range(counter_elements(self.cfg, kind))])
        ctrl_word = _fields(m, ctrl, {"ap_start": ap_start, "ap_done": ap_done,
                                      "ap_idle": ~k.running, "ap_ready": ap_ready,
                                      "auto_restart": auto_restart})
        register_file(m, _Prefixed(self, "s_axi_control"), k.regs,
                      readback={"CTRL": ctrl_word, "ISR": isr, "STATUS": k.status,
                                "KERNEL_CYCLES": k.kernel_cycles, "OUT_BEATS": k.out_beats,
                                "COUNTERS": counters},
                      on_write={"CTRL": write_ctrl, "ISR": write_isr},
                      on_read={"CTRL": read_clears})
        # ISR: set by events (if enabled), toggled by host writes of 1
        m.d.sync += isr.eq((isr ^ isr_toggle) | (k.done_event.replicate(2) & k.regs["IER"]))
        m.d.comb += self.interrupt.eq(k.regs["GIE"] & isr.any())
        # ap_start: set by the host, cleared at ap_ready unless auto_restart
        k.ap_start = ap_start
        with m.If(host_start):
            m.d.sync += ap_start.eq(1)
        with m.Elif(k.done_event & ~auto_restart):
            m.d.sync += ap_start.eq(0)
        with m.If(k.done_event):
            m.d.sync += [ap_done.eq(1), ap_ready.eq(1)]
        with m.Elif(read_clears):
            m.d.sync += [ap_done.eq(0), ap_ready.eq(0)]

    def _read_and_feed(self, m, k, engine):
        """Bursts over params, schedule, ifmap on m_axi_gmem_in into a FIFO; the feed puts
        the WEIGHTS/FRAME headers and then each segment's beats into the engine."""
        cfg = self.cfg
        g = _Prefixed(self, GMEM_IN)
        m.d.comb += [g.awvalid.eq(0), g.wvalid.eq(0), g.bready.eq(1)]     # never writes
        m.submodules.rfifo = rfifo = fifo.SyncFIFOBuffered(width=AXI_DATA_BITS,
                                                           depth=READ_FIFO_DEPTH)
        seg_base = Array(k.base[b] for b in INPUT_BUFFERS)
        seg_beats = Array([k.params_beats, k.sched_beats, k.ifmap_beats])
        # the params and schedule buffers carry their commands whole (the layer's shape sets
        # their lengths, PARAMS_BEATS and SCHEDULE_BEATS); FRAME gets its header inserted
        seg_head = Array([C(0, 1), C(0, 1), C(1, 1)])
        seg_opcode = Array([C(0, 32), C(0, 32), C(int(Opcode.FRAME), 32) | (k.images << 8)])
        assert INPUT_BUFFERS == ("params", "schedule", "ifmap")
        first_seg = Mux(k.load_config, 0, len(INPUT_BUFFERS) - 1)
        last_seg = len(INPUT_BUFFERS) - 1

        # read sequencer
        k.r_busy = r_busy = Signal()
        r_seg = Signal(range(len(INPUT_BUFFERS)))
        r_addr = Signal(64)
        r_left = Signal(32)
        r_len = Signal(range(BURST_BEATS + 1))
        credits = Signal(range(READ_FIFO_DEPTH + 1))   # beats asked for and not yet fed to the engine
        m.d.comb += [r_len.eq(_burst_len(r_addr, r_left)),
                     g.araddr.eq(r_addr), g.arlen.eq(r_len - 1), g.arid.eq(0),
                     g.arsize.eq(6), g.arburst.eq(1),
                     g.arvalid.eq(r_busy & (credits + r_len <= READ_FIFO_DEPTH))]
        ar_done = g.arvalid & g.arready
        with m.If(k.launch):
            m.d.sync += [r_busy.eq(1), r_seg.eq(first_seg), r_addr.eq(seg_base[first_seg]),
                         r_left.eq(seg_beats[first_seg])]
        with m.Elif(ar_done):
            m.d.sync += [r_addr.eq(r_addr + (r_len << 6)), r_left.eq(r_left - r_len)]
            with m.If(r_left == r_len):
                with m.If(r_seg == last_seg):
                    m.d.sync += r_busy.eq(0)
                with m.Else():
                    m.d.sync += [r_seg.eq(r_seg + 1), r_addr.eq(seg_base[r_seg + 1]),
                                 r_left.eq(seg_beats[r_seg + 1])]
        m.d.comb += [rfifo.w_data.eq(g.rdata), rfifo.w_en.eq(g.rvalid), g.rready.eq(rfifo.w_rdy)]
        with m.If(g.rvalid & g.rready & (g.rresp != 0)):
            m.d.sync += k.axi_error.eq(1)

        # feed: opcode header, then the segment's beats from the read FIFO
        k.f_busy = f_busy = Signal()
        f_seg = Signal(range(len(INPUT_BUFFERS)))
        f_head = Signal()
        f_left = Signal(32)
        m.d.comb += [engine.i.valid.eq(f_busy & (f_head | rfifo.r_rdy)),
                     engine.i.payload.eq(Mux(f_head, seg_opcode[f_seg], rfifo.r_data)),
                     rfifo.r_en.eq(f_busy & ~f_head & engine.i.ready)]
        fed = engine.i.valid & engine.i.ready
        m.d.sync += credits.eq(credits + Mux(ar_done, r_len, 0) - (fed & ~f_head))
        with m.If(k.launch):
            m.d.sync += [f_busy.eq(1), f_seg.eq(first_seg), f_head.eq(seg_head[first_seg]),
                         f_left.eq(seg_beats[first_seg])]
        with m.Elif(fed):
            with m.If(f_head):
                m.d.sync += f_head.eq(0)
            with m.Else():
                m.d.sync += f_left.eq(f_left - 1)
                with m.If(f_left == 1):
                    with m.If(f_seg == last_seg):
                        m.d.sync += f_busy.eq(0)
                    with m.Else():
                        m.d.sync += [f_seg.eq(f_seg + 1), f_head.eq(seg_head[f_seg + 1]),
                                     f_left.eq(seg_beats[f_seg + 1])]

    def _write(self, m, k, engine):
        """Engine output -> FIFO -> bursts on m_axi_gmem_out. The output length depends on the
        schedule: full bursts (to the next 4 KB page) while the engine runs, the rest once it
        is idle with its input all fed."""
        g = _Prefixed(self, GMEM_OUT)
        m.d.comb += [g.arvalid.eq(0), g.rready.eq(1)]                    # never reads
        m.submodules.wfifo = wfifo = fifo.SyncFIFOBuffered(width=AXI_DATA_BITS,
                                                           depth=WRITE_FIFO_DEPTH)
        m.d.comb += [wfifo.w_data.eq(engine.o.payload.data), wfifo.w_en.eq(engine.o.valid),
                     engine.o.ready.eq(wfifo.w_rdy)]
        k.w_busy = w_busy = Signal()
        w_addr = Signal(64)
        w_len = Signal(range(BURST_BEATS + 1))
        w_count = Signal(range(BURST_BEATS + 1))
        w_data_phase = Signal()
        k.b_pending = b_pending = Signal(16)
        out_done = Signal()
        to_page = Signal(range(BURST_BEATS + 1))
        m.d.comb += [out_done.eq(~k.f_busy & engine.idle),
                     to_page.eq(BURST_BEATS - w_addr[6:12]),
                     w_len.eq(Mux(out_done & (wfifo.level < to_page), wfifo.level, to_page)),
                     g.awaddr.eq(w_addr), g.awlen.eq(w_len - 1), g.awid.eq(0),
                     g.awsize.eq(6), g.awburst.eq(1),
                     g.awvalid.eq(w_busy & ~w_data_phase & (w_len != 0) & (wfifo.level >= w_len)),
                     g.wdata.eq(wfifo.r_data), g.wstrb.eq(C(-1, AXI_DATA_BITS // 8)),
                     g.wlast.eq(w_count == 1),
                     g.wvalid.eq(w_data_phase & wfifo.r_rdy),
                     wfifo.r_en.eq(w_data_phase & g.wready),
                     g.bready.eq(1)]
        aw_done = g.awvalid & g.awready
        b_done = g.bvalid & g.bready
        m.d.sync += b_pending.eq(b_pending + aw_done - b_done)
        with m.If(b_done & (g.bresp != 0)):
            m.d.sync += k.axi_error.eq(1)
        with m.If(k.launch):
            m.d.sync += [w_busy.eq(1), w_data_phase.eq(0), w_addr.eq(k.base["ofm"]),
                         k.out_beats.eq(0)]
        with m.Elif(aw_done):
            m.d.sync += [w_data_phase.eq(1), w_count.eq(w_len), w_addr.eq(w_addr + (w_len << 6))]
        with m.Elif(g.wvalid & g.wready):
            m.d.sync += [w_count.eq(w_count - 1), k.out_beats.eq(k.out_beats + 1)]
            with m.If(w_count == 1):
                m.d.sync += w_data_phase.eq(0)
        with m.Elif(w_busy & ~w_data_phase & out_done & (wfifo.level == 0)):
            m.d.sync += w_busy.eq(0)

    def _control(self, m, k, engine):
        """ap_start -> check pointers -> latch the arguments -> run -> ap_done."""
        pointers = [k.regs[b.upper()] for b in BUFFERS]
        unaligned = Signal(len(BUFFERS))
        m.d.comb += unaligned.eq(Cat(ptr[:6].any() for ptr in pointers))
        assert ALIGN == 64
        frames = k.regs["FRAMES"]
        with m.If(k.running):
            m.d.sync += k.kernel_cycles.eq(k.kernel_cycles + 1)
        with m.FSM(name="control"):
            with m.State("IDLE"):
                with m.If(k.ap_start):
                    m.d.sync += k.kernel_cycles.eq(1)
                    with m.If(unaligned.any()):
                        m.d.comb += k.done_event.eq(1)
                        m.d.sync += k.status.eq(STATUS_REFUSED
                                                | (unaligned << STATUS_UNALIGNED_SHIFT))
                        m.next = "DONE"
                    with m.Else():
                        m.d.sync += [k.status.eq(0), k.axi_error.eq(0), k.running.eq(1),
                                     k.load_config.eq(k.regs["FLAGS"][LOAD_CONFIG_BIT]),
                                     k.sched_beats.eq(k.regs["SCHEDULE_BEATS"]),
                                     k.params_beats.eq(k.regs["PARAMS_BEATS"]),
                                     k.ifmap_beats.eq(k.regs["IFMAP_BEATS"]),
                                     k.images.eq(Mux(frames == 0, 1, frames))]
                        m.d.sync += [k.base[b].eq(ptr) for b, ptr in zip(BUFFERS, pointers)]
                        m.next = "LAUNCH"
            with m.State("LAUNCH"):
                m.d.comb += k.launch.eq(1)
                m.next = "RUN"
            with m.State("RUN"):
                with m.If(~k.r_busy & ~k.f_busy & ~k.w_busy & (k.b_pending == 0) & engine.idle):
                    m.d.comb += k.done_event.eq(1)
                    m.d.sync += [k.running.eq(0),
                                 k.status.eq(Mux(k.axi_error, STATUS_AXI_ERROR, 0))]
                    m.next = "DONE"
            with m.State("DONE"):
                # one cycle so ap_start (cleared at done_event) is seen low before a restart
                m.next = "IDLE"


# -- generation ------------------------------------------------------------------------------

def kernel_rtl(cfg: AccelConfig) -> Path:
    """Cached Verilog of the kernel for ``cfg`` (build/rtl/<tag>/velcro_kernel.v)."""
    from .generate import generated_rtl

    return generated_rtl(cfg, VelcroKernel, KERNEL_NAME)
