"""cocotb host-flow testbench of the Vitis RTL kernel (hdl/kernel.py), Icarus and Verilator.

The host is an AXI4-Lite master on ``s_axi_control``; HBM is one sparse 1 TB memory (addresses
above 4 GB are real) behind two AXI RAM front ends, one on each master: ``m_axi_gmem_in``
(inputs, read only) and ``m_axi_gmem_out`` (the ofm, write only). A run writes the buffers
(packed with :mod:`hdl.kernel_host`), sets the pointer arguments, writes ap_start, waits for
ap_done (polled, or by interrupt), reads the ofm buffer and compares it with ``golden_ofm``
with ``==``. Every channel of the three buses runs
under seeded random stalls; a monitor on both masters checks every burst (64-byte aligned, at
most 64 beats, never across 4 KB, INCR, 64-byte beats), that the input master never writes and
the output master never reads, and that nothing outside the ofm buffer is written.
The configuration arrives as JSON in ``VELCRO_CONFIG``; ``VELCRO_SEED`` replays a run.
"""

from __future__ import annotations

import logging
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, with_timeout
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from hdl.config import SIM_CLOCK_NS, AccelConfig
from hdl.kernel_dma import BEAT_SHIFT, BURST_BEATS, PAGE_BITS
from hdl.regmap import (ALIGN, BEAT_BYTES, BUFFERS, CTRL_DONE, CTRL_IDLE, CTRL_READY,
                        CTRL_START, FLAG_LOAD_CONFIG, GMEM_IN, GMEM_OUT, INPUT_BUFFERS,
                        REGISTERS, STATUS_REFUSED, STATUS_UNALIGNED_SHIFT, Reg)
from hdl.kernel_host import buffer_bytes, counter_names, pack_frame, unpack_ofm
from hdl.program import LayerProgram
from hdl.protocol import decode_counter_words
from py_ref.golden import Frame, golden_mismatch, random_batch, random_frame
from py_ref.schedule import deal

from .tb_accel import SeededTB, stall_generator

PAGE = 1 << PAGE_BITS        # AXI4: a burst never crosses a 4 KB page
SENTINEL = 0xA5
GB4 = 1 << 32
MAX_IMAGES = 4


class KernelTB(SeededTB):
    """Clock, AXI RAM (HBM) on both masters, AXI4-Lite host, burst monitor and the host flow.

    ``prefix`` names one compute unit of a multi-CU top (sim/multi_cu.py: ``velcro_kernel_1_``
    ...), whose ports are the kernel's with that prefix; ``clock=False`` leaves the shared clock
    to the first CU's testbench, ``mem`` shares one HBM memory between CUs. ``windows``
    ({master: (lo, hi)}) makes the monitor check that every burst of a master stays in its
    address range (its HBM pseudo-channel)."""

    def __init__(self, dut, cfg: AccelConfig | None = None, seed: int | None = None, *,
                 prefix: str = "", clock: bool = True, mem=None, max_images: int = MAX_IMAGES):
        super().__init__(dut, cfg, seed)
        cfg = self.cfg
        self.prefix = prefix
        # room for the largest schedule and output (nothing compressed) of max_images images
        everything = deal(np.zeros((cfg.out_channels, cfg.height, cfg.width), bool), cfg.instances)
        self.room = buffer_bytes(cfg, everything, max_images)
        self.sizes = dict(self.room)
        self.windows = {}
        if clock:
            cocotb.start_soon(Clock(dut.ap_clk, SIM_CLOCK_NS, unit="ns").start())
            dut.ap_rst_n.value = 0
        self.interrupt = getattr(dut, f"{prefix}interrupt")
        self.host = AxiLiteMaster(AxiLiteBus.from_prefix(dut, f"{prefix}s_axi_control"),
                                  dut.ap_clk, dut.ap_rst_n, reset_active_level=False)
        # one memory (self.hbm.mem) seen through both masters
        memory = {"size": 2**40} if mem is None else {"mem": mem}
        self.hbm = AxiRam(AxiBus.from_prefix(dut, f"{prefix}{GMEM_IN}"), dut.ap_clk,
                          dut.ap_rst_n, reset_active_level=False, **memory)
        self.hbm_out = AxiRam(AxiBus.from_prefix(dut, f"{prefix}{GMEM_OUT}"), dut.ap_clk,
                              dut.ap_rst_n, reset_active_level=False, mem=self.hbm.mem)
        for bus in ("s_axi_control", GMEM_IN, GMEM_OUT):   # one INFO line per transfer otherwise
            logging.getLogger(f"{dut._log.name}.{prefix}{bus}").setLevel(logging.WARNING)
        self.reads, self.writes = [], []      # (addr, beats) of every AR / AW burst
        cocotb.start_soon(self._monitor())

    # -- stalls ---------------------------------------------------------------------------------

    def _channels(self):
        channels = []
        for bus in (self.hbm, self.hbm_out, self.host):
            channels += [bus.write_if.aw_channel, bus.write_if.w_channel, bus.write_if.b_channel,
                         bus.read_if.ar_channel, bus.read_if.r_channel]
        return channels

    def random_stalls(self, probability=0.3):
        """Seeded random pauses on all fifteen channels of the three buses."""
        for ch in self._channels():
            ch.set_pause_generator(stall_generator(random.Random(self.rng.random()), probability))

    # -- bus monitor ----------------------------------------------------------------------------

    async def _monitor(self):
        dut = self.dut

        def sig(port, name):
            return getattr(dut, f"{self.prefix}{port}_{name}").value

        while True:
            await RisingEdge(dut.ap_clk)
            await ReadOnly()
            if not dut.ap_rst_n.value:
                continue
            assert not sig(GMEM_IN, "awvalid") and not sig(GMEM_IN, "wvalid"), \
                f"{GMEM_IN} must never write"
            assert not sig(GMEM_OUT, "arvalid"), f"{GMEM_OUT} must never read"
            for port, kind, log in ((GMEM_IN, "ar", self.reads), (GMEM_OUT, "aw", self.writes)):
                if sig(port, f"{kind}valid") and sig(port, f"{kind}ready"):
                    addr = sig(port, f"{kind}addr").to_unsigned()
                    n = sig(port, f"{kind}len").to_unsigned() + 1
                    size = sig(port, f"{kind}size").to_unsigned()
                    burst = sig(port, f"{kind}burst").to_unsigned()
                    where = f"{port} {kind}"
                    assert addr % ALIGN == 0, f"{where} burst at unaligned {addr:#x}"
                    assert n <= BURST_BEATS, f"{where} burst of {n} beats"
                    assert addr // PAGE == (addr + BEAT_BYTES * n - 1) // PAGE, \
                        f"{where} burst {addr:#x}+{n} beats crosses a 4 KB boundary"
                    assert size == BEAT_SHIFT and burst == 1, f"{where} size {size} burst {burst}"
                    if port in self.windows:
                        lo, hi = self.windows[port]
                        assert lo <= addr and addr + BEAT_BYTES * n <= hi, \
                            f"{self.prefix}{where} burst {addr:#x}+{n} beats outside its HBM " \
                            f"pseudo-channel [{lo:#x}, {hi:#x})"
                    log.append((addr, n))

    # -- host operations ------------------------------------------------------------------------

    async def reset(self, cycles=4):
        self.dut.ap_rst_n.value = 0
        await ClockCycles(self.dut.ap_clk, cycles)
        self.dut.ap_rst_n.value = 1
        await ClockCycles(self.dut.ap_clk, 2)

    async def write_reg(self, offset, value):
        await self.host.write_dword(offset, value)

    async def read_reg(self, offset) -> int:
        return await self.host.read_dword(offset)

    async def set_pointer(self, name, addr):
        await self.write_reg(Reg.pointer(name), addr & 0xFFFF_FFFF)
        await self.write_reg(Reg.pointer(name) + 4, addr >> 32)

    def place(self, base: int, out_base: int | None = None) -> dict:
        """Buffer addresses from ``base`` (page-aligned; the ofm from ``out_base`` if given):
        each buffer of more than one beat starts a random 1..beats-1 beats before a 4 KB
        boundary, so its bursts must split."""
        addrs, pages = {}, {"in": base & -PAGE, "out": (out_base or 0) & -PAGE}
        for name in BUFFERS:
            side = "out" if name == "ofm" and out_base is not None else "in"
            beats = self.room[name] // BEAT_BYTES
            k = self.rng.randrange(1, min(beats, BURST_BEATS)) if beats > 1 else 1
            addrs[name] = pages[side] + PAGE - BEAT_BYTES * k
            pages[side] += (self.room[name] + PAGE - 1) // PAGE * PAGE + 2 * PAGE
        return addrs

    def load(self, frames, addrs: dict, *, ifmap_only=False):
        """Write the buffers of a batch (``frames`` share ``frames[0]``'s constants)."""
        self.program = LayerProgram.for_frame(self.cfg, frames[0])
        self.images = len(frames)
        self.sizes = buffer_bytes(self.cfg, self.program.schedule, self.images)
        data = pack_frame(self.program, np.stack([f.ifmap for f in frames]))
        for name, raw in data.items():
            if not ifmap_only or name == "ifmap":
                self.hbm.write(addrs[name], raw)
        # sentinel around and in the ofm buffer: catch missing and stray writes
        self.hbm.write(addrs["ofm"] - PAGE, bytes([SENTINEL]) * (self.room["ofm"] + 2 * PAGE))

    async def start(self, addrs: dict, *, load_config=True, interrupt=False):
        for name in BUFFERS:
            await self.set_pointer(name, addrs[name])
        await self.write_reg(Reg.FLAGS, FLAG_LOAD_CONFIG if load_config else 0)
        await self.write_reg(Reg.IMAGES, getattr(self, "images", 1))
        for name in INPUT_BUFFERS:        # the *_BEATS registers
            await self.write_reg(getattr(Reg, f"{name.upper()}_BEATS"),
                                 self.sizes[name] // BEAT_BYTES)
        await self.write_reg(Reg.GIE, int(interrupt))
        await self.write_reg(Reg.IER, 1 if interrupt else 0)
        assert await self.read_reg(Reg.CTRL) & CTRL_IDLE, "kernel not idle before ap_start"
        self.reads.clear()
        self.writes.clear()
        await self.write_reg(Reg.CTRL, CTRL_START)

    async def wait_done(self, *, interrupt=False, timeout_us=2000):
        if interrupt:
            if not self.interrupt.value:
                await with_timeout(RisingEdge(self.interrupt), timeout_us, "us")
            assert await self.read_reg(Reg.ISR) == 1, "ISR must show ap_done"
            await self.write_reg(Reg.ISR, 1)                 # toggle-on-write clears it
            assert await self.read_reg(Reg.ISR) == 0
            await ReadOnly()
            assert not self.interrupt.value, "interrupt still high after clearing ISR"
            await RisingEdge(self.dut.ap_clk)
            ctrl = await self.read_reg(Reg.CTRL)
            assert ctrl & CTRL_DONE, f"interrupt without ap_done (CTRL={ctrl:#x})"
        else:
            async def poll():
                while True:
                    ctrl = await self.read_reg(Reg.CTRL)
                    if ctrl & CTRL_DONE:
                        return ctrl
            ctrl = await with_timeout(poll(), timeout_us, "us")
        assert ctrl & CTRL_READY and ctrl & CTRL_IDLE and not ctrl & CTRL_START, f"CTRL={ctrl:#x}"
        after = await self.read_reg(Reg.CTRL)
        assert not after & (CTRL_DONE | CTRL_READY), f"ap_done/ap_ready not cleared on read ({after:#x})"

    async def counters(self) -> dict:
        """The engine's counters by name (hdl.protocol.STREAM_COUNTERS; the image_* ones of
        the last completed image)."""
        words = [await self.read_reg(Reg.COUNTERS + 4 * i)
                 for i in range(len(counter_names(self.cfg)))]
        return decode_counter_words(self.cfg, words)

    async def run(self, frame: Frame, addrs: dict, *, load_config=True, interrupt=False,
                  images=1, frames=None):
        """One kernel invocation on a batch of ``images`` images sharing ``frame``'s constants
        (``frame`` first), or on the given ``frames`` (which share ``frame``'s constants);
        checks the ofm, counters, bursts and status. Returns the ofm [images, N, H, W]."""
        cfg = self.cfg
        if frames is None:
            frames = random_batch(cfg, self.np_rng, frame, images)
        images = len(frames)
        self.load(frames, addrs, ifmap_only=not load_config)
        await self.start(addrs, load_config=load_config, interrupt=interrupt)
        await self.wait_done(interrupt=interrupt)
        status = await self.read_reg(Reg.STATUS)
        assert status == 0, f"STATUS={status:#x}"
        raw = self.hbm.read(addrs["ofm"], self.sizes["ofm"])
        ofm = unpack_ofm(self.program, raw, images)
        for k, f in enumerate(frames):
            differs = golden_mismatch(f, ofm[k])
            assert not differs, f"image {k}: {differs} (seed {self.seed})"
        around = (self.hbm.read(addrs["ofm"] - PAGE, PAGE)
                  + self.hbm.read(addrs["ofm"] + self.sizes["ofm"], PAGE))
        assert set(around) == {SENTINEL}, "the kernel wrote outside the ofm buffer"
        assert await self.read_reg(Reg.OUT_BEATS) * BEAT_BYTES == self.sizes["ofm"]
        # every input byte fetched exactly once, every output byte written exactly once
        inputs = INPUT_BUFFERS if load_config else ("ifmap",)
        fetched = sum(n for _, n in self.reads) * BEAT_BYTES
        wanted = sum(self.sizes[b] for b in inputs)
        assert fetched == wanted, f"read {fetched} bytes, expected {wanted}"
        assert sum(n for _, n in self.writes) * BEAT_BYTES == self.sizes["ofm"]
        if self.writes:
            assert min(a for a, _ in self.writes) == addrs["ofm"]
        for name in inputs:
            lo, hi = addrs[name], addrs[name] + self.sizes[name]
            got = sum(n * BEAT_BYTES for a, n in self.reads if lo <= a < hi)
            assert got == self.sizes[name], f"{name}: read {got} of {self.sizes[name]} bytes"
        counters = await self.counters()
        n = cfg.out_channels
        assert counters["image_computed"][:n] == frame.uncompressed.tolist()
        assert not any(counters["image_computed"][n:]), "a channel beyond the layer's N counted"
        assert counters["image_instance"] == self.program.schedule.counts.tolist()
        cycles = await self.read_reg(Reg.KERNEL_CYCLES)
        self.dut._log.info("run ok: %d images, %d read bursts, %d write bursts, kernel %d cycles, "
                           "engine compute %d cycles per image", images, len(self.reads),
                           len(self.writes), cycles, counters["image_cycles"])
        return ofm


@cocotb.test()
async def host_flow(dut):
    """Two runs back to back with different data (polled; then 3 images by interrupt), buffers
    above 4 GB and mid-page; then 2 images reusing the loaded configuration (load_config = 0)."""
    tb = KernelTB(dut)
    tb.random_stalls(0.3)
    await tb.reset()
    cfg = tb.cfg
    first = random_frame(cfg, tb.np_rng, density=0.4)
    await tb.run(first, tb.place(0x1000))
    second = random_frame(cfg, tb.np_rng, density=0.7)
    high = tb.place(0x3_2000_0000)                # above 4 GB
    await tb.run(second, high, interrupt=True, images=3)
    assert all(a >= GB4 for a, _ in tb.reads + tb.writes)
    await tb.run(second.with_ifmap(random_frame(cfg, tb.np_rng).ifmap), high, load_config=False,
                 interrupt=True, images=2)
    counters = await tb.counters()
    assert counters["batches"] == 3 and counters["images"] == 6


@cocotb.test()
async def unaligned_refused(dut):
    """A start with any pointer not 64-byte aligned: STATUS.refused, ap_done at once, no AXI
    traffic, ofm untouched. Then a correct run."""
    tb = KernelTB(dut)
    tb.random_stalls(0.2)
    await tb.reset()
    cfg = tb.cfg
    frame = random_frame(cfg, tb.np_rng, density=0.5)
    addrs = tb.place(GB4 - 0x4000)             # the buffers straddle the 4 GB line
    for i, name in enumerate(BUFFERS):
        bad = dict(addrs, **{name: addrs[name] + tb.rng.choice([1, 8, 32, 63])})
        tb.load([frame], addrs)
        await tb.start(bad, interrupt=(i % 2 == 1))
        await tb.wait_done(interrupt=(i % 2 == 1))
        status = await tb.read_reg(Reg.STATUS)
        assert status == STATUS_REFUSED | (1 << (STATUS_UNALIGNED_SHIFT + i)), f"{name}: STATUS={status:#x}"
        assert tb.reads == [] and tb.writes == [], f"{name}: AXI traffic on a refused start"
        assert set(tb.hbm.read(addrs["ofm"], tb.room["ofm"])) == {SENTINEL}
    await tb.run(frame, addrs)


@cocotb.test()
async def reset_mid_run(dut):
    """ap_rst_n while fetching, computing and writing back; the next run must be correct."""
    tb = KernelTB(dut)
    tb.random_stalls(0.2)
    await tb.reset()
    cfg = tb.cfg
    frame = random_frame(cfg, tb.np_rng, density=0.3)
    addrs = tb.place(0x10_0000)
    # how long a run takes under these stalls, to place the resets inside it
    await tb.run(frame, addrs)
    length = await tb.read_reg(Reg.KERNEL_CYCLES)
    for where in (length // 5, length // 2, length * 9 // 10):
        nxt = random_frame(cfg, tb.np_rng, density=tb.rng.random())
        tb.load([nxt], addrs)
        await tb.start(addrs)
        await ClockCycles(dut.ap_clk, where)
        dut._log.info("ap_rst_n at cycle %d of ~%d", where, length)
        await tb.reset(cycles=tb.rng.randrange(1, 8))
        assert await tb.read_reg(Reg.CTRL) == CTRL_IDLE, "CTRL after reset"
        await tb.run(nxt, addrs)


def network_layers(design: AccelConfig) -> list:
    """Five layers shaped like the Fashion-MNIST CNN's, scaled into ``design``'s maxima: C_in = 1
    at full size, two at full C_in, then half the map with twice the channels, a quarter with
    the design's C_in and N (a W that P does not divide where the maxima allow it)."""
    h, w, c, n = design.height, design.width, design.in_channels, design.out_channels
    half = lambda v: max(4, v // 2)       # noqa: E731
    return [design.layer(h, w, 1, max(1, n // 2)),
            design.layer(h, w, max(1, c // 2), max(1, n // 2)),
            design.layer(h, w - 1, max(1, c // 2), max(1, n // 2)),
            design.layer(half(h), half(w), max(1, c // 2), n),
            design.layer(half(half(h)), half(half(w)) + 1, c, n)]


@cocotb.test()
async def network_layers_flow(dut):
    """The host's per-layer flow on one build: each layer loads its constants (LAYER + WEIGHTS,
    SCHEDULE), streams a batch of 2 images, and the next layer follows on the same kernel;
    random stalls; first back to back, then with ap_rst_n between layers."""
    tb = KernelTB(dut)
    tb.random_stalls(0.2)
    await tb.reset()
    design = tb.cfg.design
    addrs = tb.place(0x4_0000)
    for reset_between in (False, True):
        for layer in network_layers(design):
            tb.cfg = layer
            dut._log.info("layer %s (reset between: %s)", layer.to_json(), reset_between)
            await tb.run(random_frame(layer, tb.np_rng, density=0.4), addrs, images=2)
            if reset_between:
                await tb.reset(cycles=tb.rng.randrange(1, 8))
    tb.cfg = design


@cocotb.test()
async def full_frame(dut):
    """One run under light stalls (used for the default 16 x 64x64 configuration)."""
    tb = KernelTB(dut)
    tb.random_stalls(0.1)
    await tb.reset()
    await tb.run(random_frame(tb.cfg, tb.np_rng, density=0.3), tb.place(0x1_0000_0000),
                 interrupt=True)


@cocotb.test()
async def register_map(dut):
    """Every register of hdl.regmap's table behaves as its access says: RW registers hold what
    is written (their width's bits, byte strobes honoured), RO ones ignore writes, ISR toggles,
    offsets outside the table read 0. Then a run."""
    tb = KernelTB(dut)
    tb.random_stalls(0.2)
    await tb.reset()
    used = set()
    for r in REGISTERS:
        words = len(counter_names(tb.cfg)) if r.array else r.words
        used |= {r.offset + 4 * i for i in range(words)}
        for i in range(words):
            at = r.offset + 4 * i
            mask = (1 << min(32, r.width - 32 * i)) - 1 if not r.array else 0xFFFF_FFFF
            before = await tb.read_reg(at)
            if r.name == "CTRL":            # writing ap_start would start a run
                assert before == CTRL_IDLE, f"CTRL={before:#x}"
            elif r.access == "RW":
                value = tb.rng.getrandbits(32)
                await tb.write_reg(at, value)
                got = await tb.read_reg(at)
                assert got == value & mask, f"{r.name}+{4 * i}: wrote {value:#x}, read {got:#x}"
                await tb.host.write(at, bytes([0x5A]))          # one byte: strobe 0001
                expect = (value & ~0xFF | 0x5A) & mask
                got = await tb.read_reg(at)
                assert got == expect, f"{r.name}+{4 * i}: byte write -> {got:#x}, not {expect:#x}"
            elif r.access == "RO":
                await tb.write_reg(at, ~before & 0xFFFF_FFFF)
                assert await tb.read_reg(at) == before, f"{r.name}+{4 * i} took a write"
            else:                             # RTOW: ISR
                assert before == 0
                await tb.write_reg(at, 0b11)
                assert await tb.read_reg(at) == 0b11, "ISR did not toggle to 1"
                await tb.write_reg(at, 0b11)
                assert await tb.read_reg(at) == 0, "ISR did not toggle back"
    for at in sorted(set(range(0, 0x100, 4)) - used):
        assert await tb.read_reg(at) == 0, f"{at:#x} is not in the map but reads non-zero"
    await tb.run(random_frame(tb.cfg, tb.np_rng, density=0.5), tb.place(0x2000))
