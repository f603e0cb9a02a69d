"""Vitis RTL kernel (Alveo U280) around :class:`~hdl.engine.VelcroAccelerator`.

Ports (named as Vitis expects; ``scripts/make_kernel.py`` (``make kernel``) writes the Verilog):

* ``ap_clk``, ``ap_rst_n`` (active low, synchronous), ``interrupt`` (level, active high).
* ``s_axi_control_*``: AXI4-Lite slave, 12-bit addresses, 32-bit data, the register map below.
* ``m_axi_gmem_*``: AXI4 master, 64-bit addresses, 512-bit data, 1-bit IDs (always 0). All four
  buffers go through this one port: INCR bursts of at most 64 beats that never cross a 4 KB
  boundary, fully-strobed writes, one read and one write stream in flight at a time.

Register map (byte offsets; all registers 32 bits)
==================================================

======  ===============  ====  =============================================================
offset  name             acc.  bits
======  ===============  ====  =============================================================
0x00    CTRL             RW    0 ap_start (W1 starts; cleared by the kernel at ap_ready),
                               1 ap_done (RO, clear on read), 2 ap_idle (RO),
                               3 ap_ready (RO, clear on read), 7 auto_restart (RW)
0x04    GIE              RW    0 global interrupt enable
0x08    IER              RW    0 ap_done interrupt enable, 1 ap_ready interrupt enable
0x0C    ISR              RTOW  0 ap_done, 1 ap_ready (set when the event happens and its IER
                               bit is set; writing 1 toggles the bit).
                               interrupt = GIE & (ISR != 0)
0x10    ifmap            RW    64-bit pointer (low word at 0x10, high word at 0x14): B images
0x18    params           RW    64-bit pointer: every channel's filters + bias/mult/shift
0x20    schedule         RW    64-bit pointer: the SCHEDULE command (host-dealt work lists)
0x28    ofm              RW    64-bit pointer (output: B images of compact output)
0x38    flags            RW    0 load_config: fetch params and schedule before the ifmap. 0
                               reuses the ones loaded by an earlier run (they survive
                               ap_rst_n unless the reset hit a run that was loading them)
0x40    STATUS           RO    of the last start: 0 refused (an unaligned pointer, nothing
                               was read or written, ap_done raised at once), 1 AXI error (a
                               response was not OKAY), 8+i pointer i was unaligned (i: 0
                               ifmap, 1 params, 2 schedule, 3 ofm)
0x44    CYCLES           RO    ap_clk cycles from ap_start to ap_done of the last run
0x48    FRAMES           RW    B, images per start (0 counts as 1)
0x4C    SCHEDULE_BEATS   RW    beats of the schedule buffer
0x50    OUT_BEATS        RO    ofm beats written by the last run
0x80..  counters         RO    the engine's counters (hdl.protocol.STREAM_COUNTERS), one
                               32-bit word each, arrays element by element
                               (hdl.kernel_buffers.counter_names)
======  ===============  ====  =============================================================

Every pointer must be 64-byte aligned; above 4 GB is fine (64-bit addresses). The buffer
formats are in :mod:`hdl.kernel_buffers`.

Datapath: a read sequencer issues bursts for params, schedule (if load_config) and ifmap in
that order into a 256-beat FIFO (it only asks for data the FIFO has room for, so R never
backs up into the interconnect); a header inserter feeds the engine the WEIGHTS and FRAME
headers (the schedule buffer carries its own), then that buffer's beats. The engine's compact
output goes through a 128-beat FIFO; a write burst's address is issued only once its data is in
the FIFO, so W never stalls mid-burst: full bursts up to the next 4 KB page while the engine
runs, then whatever is left once it is idle (the output length depends on the schedule).
ap_done rises once every write response is back.
"""

from __future__ import annotations

from pathlib import Path

from amaranth import Array, C, Cat, ClockDomain, Module, Mux, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig
from .engine import VelcroAccelerator
from .kernel_buffers import (ALIGN, BEAT_BYTES, BUFFERS, INPUT_BUFFERS, Reg,
                             STATUS_AXI_ERROR, STATUS_REFUSED, STATUS_UNALIGNED_SHIFT)
from .protocol import STREAM_COUNTERS, Opcode, counter_words, image_beats

__all__ = ["VelcroKernel", "KERNEL_NAME", "kernel_rtl", "axil_members", "axi_members"]

KERNEL_NAME = "velcro_kernel"
AXIL_ADDR_BITS = 12
AXI_ADDR_BITS = 64
AXI_DATA_BITS = 8 * BEAT_BYTES
BURST_BEATS = 64            # AXI4 allows 256; 64 x 64 B = 4 KB, one page
READ_FIFO_DEPTH = 256
WRITE_FIFO_DEPTH = 128


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


class VelcroKernel(wiring.Component):
    """The accelerator as a Vitis RTL kernel (ap_ctrl_hs); see the module docstring for the map."""

    def __init__(self, cfg: AccelConfig = AccelConfig()):
        if cfg.bus_width != AXI_DATA_BITS:
            raise ValueError(f"the kernel streams {AXI_DATA_BITS}-bit AXI beats into the engine: "
                             f"bus_width must be {AXI_DATA_BITS}, not {cfg.bus_width}")
        self.cfg = cfg
        n_counters = len(counter_words(cfg))
        if Reg.COUNTERS + 4 * n_counters > 1 << AXIL_ADDR_BITS:
            raise ValueError(f"{n_counters} counters do not fit the {AXIL_ADDR_BITS}-bit map")
        super().__init__({
            "ap_clk": In(1),
            "ap_rst_n": In(1),
            **axil_members("s_axi_control"),
            **axi_members("m_axi_gmem"),
            "interrupt": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        m.domains.sync = cd = ClockDomain("sync")
        m.d.comb += [cd.clk.eq(self.ap_clk), cd.rst.eq(~self.ap_rst_n)]
        m.submodules.engine = engine = VelcroAccelerator(cfg)
        m.submodules.rfifo = rfifo = fifo.SyncFIFOBuffered(width=AXI_DATA_BITS, depth=READ_FIFO_DEPTH)
        m.submodules.wfifo = wfifo = fifo.SyncFIFOBuffered(width=AXI_DATA_BITS, depth=WRITE_FIFO_DEPTH)
        s = _Prefixed(self, "s_axi_control")
        g = _Prefixed(self, "m_axi_gmem")

        # -- registers ---------------------------------------------------------------------------
        ap_start = Signal()
        ap_done = Signal()
        ap_ready = Signal()
        auto_restart = Signal()
        gie = Signal()
        ier = Signal(2)
        isr = Signal(2)
        pointers = [Signal(64, name=f"arg_{b}") for b in BUFFERS]
        flags = Signal(32)
        frames = Signal(16)
        schedule_beats = Signal(32)
        out_beats = Signal(32)
        status = Signal(32)
        kernel_cycles = Signal(32)
        running = Signal()
        idle = Signal()
        done_event = Signal()
        m.d.comb += [idle.eq(~running), self.interrupt.eq(gie & isr.any())]

        # -- AXI4-Lite write: take AW and W together, answer on B --------------------------------
        m.d.comb += s.bresp.eq(0)
        wr = Signal()
        m.d.comb += wr.eq(s.awvalid & s.wvalid & ~s.bvalid)
        m.d.comb += [s.awready.eq(wr), s.wready.eq(wr)]
        with m.If(s.bvalid & s.bready):
            m.d.sync += s.bvalid.eq(0)
        with m.If(wr):
            m.d.sync += s.bvalid.eq(1)
        waddr = s.awaddr[2:]
        strobe = Cat(*(s.wstrb[i].replicate(8) for i in range(4)))

        def merge(old):
            return (old & ~strobe) | (s.wdata & strobe)

        host_start = Signal()
        with m.If(wr):
            with m.Switch(waddr):
                with m.Case(Reg.CTRL >> 2):
                    with m.If(s.wstrb[0]):
                        m.d.comb += host_start.eq(s.wdata[0])
                        m.d.sync += auto_restart.eq(s.wdata[7])
                with m.Case(Reg.GIE >> 2):
                    with m.If(s.wstrb[0]):
                        m.d.sync += gie.eq(s.wdata[0])
                with m.Case(Reg.IER >> 2):
                    with m.If(s.wstrb[0]):
                        m.d.sync += ier.eq(s.wdata[:2])
                with m.Case(Reg.FLAGS >> 2):
                    m.d.sync += flags.eq(merge(flags))
                with m.Case(Reg.FRAMES >> 2):
                    m.d.sync += frames.eq(merge(frames))
                with m.Case(Reg.SCHEDULE_BEATS >> 2):
                    m.d.sync += schedule_beats.eq(merge(schedule_beats))
                for i, ptr in enumerate(pointers):
                    for half in range(2):
                        with m.Case((Reg.IFMAP >> 2) + 2 * i + half):
                            word = ptr[32 * half:32 * half + 32]
                            m.d.sync += word.eq(merge(word))

        # ISR: set by events (if enabled), toggled by host writes of 1
        isr_toggle = Signal(2)
        with m.If(wr & (waddr == Reg.ISR >> 2) & s.wstrb[0]):
            m.d.comb += isr_toggle.eq(s.wdata[:2])
        isr_set = Signal(2)
        m.d.comb += isr_set.eq(Cat(done_event, done_event) & ier)
        m.d.sync += isr.eq((isr ^ isr_toggle) | isr_set)

        # -- AXI4-Lite read: registered data, clear-on-read of ap_done/ap_ready -----------------
        m.d.comb += [s.rresp.eq(0), s.arready.eq(~s.rvalid)]
        with m.If(s.rvalid & s.rready):
            m.d.sync += s.rvalid.eq(0)
        rd = Signal()
        m.d.comb += rd.eq(s.arvalid & s.arready)
        counter_words = []
        for name, kind, _ in STREAM_COUNTERS:
            field = engine.counters[name]
            counter_words += [field] if kind == "cycles" else [field[i] for i in range(cfg.instances)]
        read_clears = Signal()
        with m.If(rd):
            m.d.sync += s.rvalid.eq(1)
            with m.Switch(s.araddr[2:]):
                with m.Case(Reg.CTRL >> 2):
                    m.d.sync += s.rdata.eq(Cat(ap_start, ap_done, idle, ap_ready, C(0, 3),
                                               auto_restart))
                    m.d.comb += read_clears.eq(1)
                with m.Case(Reg.GIE >> 2):
                    m.d.sync += s.rdata.eq(gie)
                with m.Case(Reg.IER >> 2):
                    m.d.sync += s.rdata.eq(ier)
                with m.Case(Reg.ISR >> 2):
                    m.d.sync += s.rdata.eq(isr)
                with m.Case(Reg.FLAGS >> 2):
                    m.d.sync += s.rdata.eq(flags)
                with m.Case(Reg.STATUS >> 2):
                    m.d.sync += s.rdata.eq(status)
                with m.Case(Reg.KERNEL_CYCLES >> 2):
                    m.d.sync += s.rdata.eq(kernel_cycles)
                with m.Case(Reg.FRAMES >> 2):
                    m.d.sync += s.rdata.eq(frames)
                with m.Case(Reg.SCHEDULE_BEATS >> 2):
                    m.d.sync += s.rdata.eq(schedule_beats)
                with m.Case(Reg.OUT_BEATS >> 2):
                    m.d.sync += s.rdata.eq(out_beats)
                for i, ptr in enumerate(pointers):
                    for half in range(2):
                        with m.Case((Reg.IFMAP >> 2) + 2 * i + half):
                            m.d.sync += s.rdata.eq(ptr[32 * half:32 * half + 32])
                for i, word in enumerate(counter_words):
                    with m.Case((Reg.COUNTERS >> 2) + i):
                        m.d.sync += s.rdata.eq(word)
                with m.Default():
                    m.d.sync += s.rdata.eq(0)

        # ap_start: set by the host, cleared at ap_ready unless auto_restart
        with m.If(host_start):
            m.d.sync += ap_start.eq(1)
        with m.Elif(done_event & ~auto_restart):
            m.d.sync += ap_start.eq(0)
        with m.If(done_event):
            m.d.sync += [ap_done.eq(1), ap_ready.eq(1)]
        with m.Elif(read_clears):
            m.d.sync += [ap_done.eq(0), ap_ready.eq(0)]

        # -- the run's arguments, latched at start ----------------------------------------------
        base = {b: Signal(64, name=f"base_{b}") for b in BUFFERS}
        load_config = Signal()
        images = Signal(16)                       # B of this run
        n_params = cfg.instances * cfg.groups * cfg.beats(cfg.weight_bits) + cfg.instances
        run_sched_beats = Signal(32)
        seg_base = Array(base[b] for b in INPUT_BUFFERS)
        seg_beats = Array([C(n_params, 32), run_sched_beats, images * image_beats(cfg)])
        # the schedule buffer carries its own header; WEIGHTS and FRAME get one inserted
        seg_head = Array([C(1, 1), C(0, 1), C(1, 1)])
        seg_opcode = Array([C(int(Opcode.WEIGHTS), 32), C(0, 32),
                            C(int(Opcode.FRAME), 32) | (images << 8)])
        assert INPUT_BUFFERS == ("params", "schedule", "ifmap")
        first_seg = Mux(load_config, 0, len(INPUT_BUFFERS) - 1)
        last_seg = len(INPUT_BUFFERS) - 1
        launch = Signal()   # one cycle: start the read, feed and write sequencers

        # -- read sequencer: bursts over params, mask, means, ifmap -------------------------------
        r_busy = Signal()
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
        with m.If(launch):
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

        axi_error = Signal()
        m.d.comb += [rfifo.w_data.eq(g.rdata), rfifo.w_en.eq(g.rvalid), g.rready.eq(rfifo.w_rdy)]
        with m.If(g.rvalid & g.rready & (g.rresp != 0)):
            m.d.sync += axi_error.eq(1)

        # -- feed: opcode header, then the segment's beats from the read FIFO --------------------
        f_busy = Signal()
        f_seg = Signal(range(len(INPUT_BUFFERS)))
        f_head = Signal()
        f_left = Signal(32)
        m.d.comb += [engine.i.valid.eq(f_busy & (f_head | rfifo.r_rdy)),
                     engine.i.payload.eq(Mux(f_head, seg_opcode[f_seg], rfifo.r_data)),
                     rfifo.r_en.eq(f_busy & ~f_head & engine.i.ready)]
        fed = engine.i.valid & engine.i.ready
        popped = fed & ~f_head
        m.d.sync += credits.eq(credits + Mux(ar_done, r_len, 0) - popped)
        with m.If(launch):
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

        # -- write: engine output -> FIFO -> bursts ----------------------------------------------
        m.d.comb += [wfifo.w_data.eq(engine.o.payload.data), wfifo.w_en.eq(engine.o.valid),
                     engine.o.ready.eq(wfifo.w_rdy)]
        # The output length depends on the schedule: full bursts (to the next 4 KB page) while
        # the engine runs, the rest once it is idle with its input all fed.
        w_busy = Signal()
        w_addr = Signal(64)
        w_len = Signal(range(BURST_BEATS + 1))
        w_count = Signal(range(BURST_BEATS + 1))
        w_data_phase = Signal()
        b_pending = Signal(16)
        out_done = Signal()
        to_page = Signal(range(BURST_BEATS + 1))
        m.d.comb += [out_done.eq(~f_busy & engine.idle),
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
        w_beat = g.wvalid & g.wready
        b_done = g.bvalid & g.bready
        m.d.sync += b_pending.eq(b_pending + aw_done - b_done)
        with m.If(b_done & (g.bresp != 0)):
            m.d.sync += axi_error.eq(1)
        with m.If(launch):
            m.d.sync += [w_busy.eq(1), w_data_phase.eq(0), w_addr.eq(base["ofm"]),
                         out_beats.eq(0)]
        with m.Elif(aw_done):
            m.d.sync += [w_data_phase.eq(1), w_count.eq(w_len), w_addr.eq(w_addr + (w_len << 6))]
        with m.Elif(w_beat):
            m.d.sync += [w_count.eq(w_count - 1), out_beats.eq(out_beats + 1)]
            with m.If(w_count == 1):
                m.d.sync += w_data_phase.eq(0)
        with m.Elif(w_busy & ~w_data_phase & out_done & (wfifo.level == 0)):
            m.d.sync += w_busy.eq(0)

        # -- control: ap_start -> check pointers -> run -> ap_done -------------------------------
        unaligned = Signal(len(BUFFERS))
        m.d.comb += unaligned.eq(Cat(ptr[:6].any() for ptr in pointers))
        assert ALIGN == 64
        with m.If(running):
            m.d.sync += kernel_cycles.eq(kernel_cycles + 1)
        with m.FSM(name="control"):
            with m.State("IDLE"):
                with m.If(ap_start):
                    m.d.sync += kernel_cycles.eq(1)
                    with m.If(unaligned.any()):
                        m.d.comb += done_event.eq(1)
                        m.d.sync += status.eq(STATUS_REFUSED | (unaligned << STATUS_UNALIGNED_SHIFT))
                        m.next = "DONE"
                    with m.Else():
                        m.d.sync += [status.eq(0), axi_error.eq(0), running.eq(1),
                                     load_config.eq(flags[0]), run_sched_beats.eq(schedule_beats),
                                     images.eq(Mux(frames == 0, 1, frames))]
                        m.d.sync += [base[b].eq(ptr) for b, ptr in zip(BUFFERS, pointers)]
                        m.next = "LAUNCH"
            with m.State("LAUNCH"):
                m.d.comb += launch.eq(1)
                m.next = "RUN"
            with m.State("RUN"):
                with m.If(~r_busy & ~f_busy & ~w_busy & (b_pending == 0) & engine.idle):
                    m.d.comb += done_event.eq(1)
                    m.d.sync += [running.eq(0), status.eq(Mux(axi_error, STATUS_AXI_ERROR, 0))]
                    m.next = "DONE"
            with m.State("DONE"):
                # one cycle so ap_start (cleared at done_event) is seen low before a restart
                m.next = "IDLE"
        return m


# -- generation ------------------------------------------------------------------------------

def kernel_rtl(cfg: AccelConfig) -> Path:
    """Cached Verilog of the kernel for ``cfg`` (build/rtl/<tag>/velcro_kernel.v)."""
    from .generate import generated_rtl

    return generated_rtl(cfg, VelcroKernel, KERNEL_NAME)
