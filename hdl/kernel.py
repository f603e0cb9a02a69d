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
formats are in :mod:`hdl.kernel_host`.

Parts (each a ``wiring.Component`` with its own test), joined below with ``wiring.connect``:

* control (:mod:`hdl.kernel_control`): :class:`~hdl.kernel_control.ApCtrl`, the s_axi_control
  slave (registers, ap_ctrl_hs, interrupt), hands ap_start and the host's registers to the
  :class:`~hdl.kernel_control.Launcher`, which checks the pointers, latches the arguments and
  strobes ``launch`` to the three movers, then raises ap_done once they and the engine are idle.
* movers (:mod:`hdl.kernel_dma`), every link an ``amaranth.lib.stream``: the
  :class:`~hdl.kernel_dma.ReadSequencer` issues bursts for params, schedule (if load_config)
  and ifmap in that order into a 256-beat FIFO (it only asks for data the FIFO has room for, so
  R never backs up into the interconnect); the :class:`~hdl.kernel_dma.Feeder` passes the
  params buffer (the layer's LAYER and WEIGHTS commands, PARAMS_BEATS beats) and the schedule
  buffer (its SCHEDULE command, SCHEDULE_BEATS beats) to the engine as they are, then a FRAME
  header with the IMAGES register's B and the ifmap buffer's IFMAP_BEATS beats. The layer's
  shape travels in its commands, so one xclbin runs every layer within its design's maxima.
  The :class:`~hdl.kernel_dma.WriteBack` takes the engine's compact output through a 128-beat
  FIFO; a write burst's address is issued only once its data is in the FIFO, so W never stalls
  mid-burst: full bursts up to the next 4 KB page while the engine runs, then whatever is left
  once it is idle with its input all fed (the output length depends on the schedule). ap_done
  rises once every write response is back.

This module keeps only the Vitis port names (:func:`kernel_members`) and the mapping of the
parts' streams onto them.
"""

from __future__ import annotations

from pathlib import Path

from amaranth import C, ClockDomain, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig
from .engine import VelcroAccelerator
from .kernel_control import AXIL_PORTS, ApCtrl, Launcher, check_counters
from .kernel_dma import (AXI_ADDR_BITS, AXI_DATA_BITS, BEAT_SHIFT, Feeder, ReadSequencer,
                         RegisterSlice, WriteBack)
from .regmap import ENGINE_INSTANCE, GMEM_IN, GMEM_OUT, KERNEL_NAME

__all__ = ["VelcroKernel", "KERNEL_NAME", "kernel_rtl", "kernel_members", "axil_members",
           "axi_members"]

READ_FIFO_DEPTH = 256
WRITE_FIFO_DEPTH = 128


def axil_members(prefix: str) -> dict:
    """AXI4-Lite slave ports with Vitis' flat names (``<prefix>_awvalid`` ...)."""
    return {f"{prefix}_{k}": v for k, v in AXIL_PORTS.items()}


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


def _bind(m, flat, iface):
    """Join ``iface`` (a component's ports) to the same-named flat ports ``flat`` of the top,
    whose members flow the same way."""
    for name, member in iface.signature.members.items():
        outer, inner = getattr(flat, name), getattr(iface, name)
        m.d.comb += (outer.eq(inner) if member.flow == Out else inner.eq(outer))


def _burst(m, g, channel, burst):
    """AR or AW (``channel`` "ar" / "aw") of master ``g`` from a :data:`~hdl.kernel_dma.BURST`
    stream: INCR, full-width beats, ID 0."""
    def port(name):
        return getattr(g, channel + name)

    m.d.comb += [port("valid").eq(burst.valid), burst.ready.eq(port("ready")),
                 port("addr").eq(burst.payload.addr), port("len").eq(burst.payload.len),
                 port("id").eq(0), port("size").eq(BEAT_SHIFT), port("burst").eq(1)]


class VelcroKernel(wiring.Component):
    """The accelerator as a Vitis RTL kernel (ap_ctrl_hs); see the module docstring."""

    def __init__(self, cfg: AccelConfig = AccelConfig()):
        if cfg.bus_width != AXI_DATA_BITS:
            raise ValueError(f"the kernel streams {AXI_DATA_BITS}-bit AXI beats into the engine: "
                             f"bus_width must be {AXI_DATA_BITS}, not {cfg.bus_width}")
        self.cfg = cfg = cfg.design
        check_counters(cfg)
        super().__init__(kernel_members())

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = cd = ClockDomain("sync")
        m.d.comb += [cd.clk.eq(self.ap_clk), cd.rst.eq(~self.ap_rst_n)]
        m.submodules[ENGINE_INSTANCE] = engine = VelcroAccelerator(self.cfg)
        m.submodules.ap_ctrl = ap_ctrl = ApCtrl(self.cfg)
        m.submodules.launcher = launcher = Launcher()
        m.submodules.reader = reader = ReadSequencer(READ_FIFO_DEPTH)
        m.submodules.feeder = feeder = Feeder()
        m.submodules.writer = writer = WriteBack(WRITE_FIFO_DEPTH)

        _bind(m, _Prefixed(self, "s_axi_control"), ap_ctrl.bus)
        wiring.connect(m, ap_ctrl.control, launcher.control)
        wiring.connect(m, launcher.launch, reader.launch, feeder.launch, writer.launch)
        wiring.connect(m, reader.o, feeder.i)
        # registers between the shell and the engine, both ways: neither's handshake logic
        # runs into the other's in one cycle (300 MHz; the write FIFO's ready into the packer's
        # step was the kernel's last 7-level path); busy a cycle late, held high from the launch
        m.submodules.to_engine = to_engine = RegisterSlice(AXI_DATA_BITS)
        wiring.connect(m, feeder.o, to_engine.i)
        wiring.connect(m, to_engine.o, engine.i)
        m.submodules.from_engine = from_engine = RegisterSlice(AXI_DATA_BITS)
        busy = Signal()
        m.d.comb += [from_engine.i.payload.eq(engine.o.payload.data),
                     from_engine.i.valid.eq(engine.o.valid),
                     engine.o.ready.eq(from_engine.i.ready)]
        wiring.connect(m, from_engine.o, writer.i)
        m.d.comb += [writer.drain.eq(~feeder.busy & ~to_engine.o.valid & engine.idle
                                     & ~from_engine.o.valid),
                     launcher.busy.eq(busy),
                     launcher.axi_error.eq(reader.error | writer.error),
                     ap_ctrl.out_beats.eq(writer.out_beats),
                     ap_ctrl.counters.eq(engine.counters),
                     self.interrupt.eq(ap_ctrl.interrupt)]

        # the engine's idle comes from deep in it: taken a cycle late, with the shell's terms
        # also held a cycle, so that busy has no gap when the work passes from the shell to
        # the engine (and falls at most one cycle later)
        shell_busy, engine_busy, shell_was = Signal(), Signal(), Signal()
        m.d.comb += shell_busy.eq(launcher.launch.start | reader.busy | feeder.busy | writer.busy
                                  | to_engine.o.valid | from_engine.o.valid)
        m.d.sync += [shell_was.eq(shell_busy), engine_busy.eq(~engine.idle),
                     busy.eq(shell_busy | shell_was | engine_busy)]
        # m_axi_gmem_in: reads only
        g = _Prefixed(self, GMEM_IN)
        _burst(m, g, "ar", reader.ar)
        m.d.comb += [reader.r.valid.eq(g.rvalid), g.rready.eq(reader.r.ready),
                     reader.r.payload.data.eq(g.rdata), reader.r.payload.resp.eq(g.rresp),
                     g.awvalid.eq(0), g.wvalid.eq(0), g.bready.eq(1)]
        # m_axi_gmem_out: writes only
        g = _Prefixed(self, GMEM_OUT)
        _burst(m, g, "aw", writer.aw)
        m.d.comb += [g.wvalid.eq(writer.w.valid), writer.w.ready.eq(g.wready),
                     g.wdata.eq(writer.w.payload.data), g.wlast.eq(writer.w.payload.last),
                     g.wstrb.eq(C(-1, AXI_DATA_BITS // 8)),
                     writer.b.valid.eq(g.bvalid), g.bready.eq(writer.b.ready),
                     writer.b.payload.eq(g.bresp),
                     g.arvalid.eq(0), g.rready.eq(1)]
        return m


# -- generation ------------------------------------------------------------------------------

def kernel_rtl(cfg: AccelConfig) -> Path:
    """Cached Verilog of the kernel for ``cfg`` (build/rtl/<tag>/velcro_kernel.v)."""
    from .generate import generated_rtl

    return generated_rtl(cfg, VelcroKernel, KERNEL_NAME)
