"""cocotb testbench of the generated accelerator Verilog (Icarus and Verilator).

Every output is compared with the integer golden model with ``==``; every stream runs under
seeded random stalls; every frame's compute phase is checked against the cycle bound
``max_n(U_n) * ceil(C_in/L) + 64``. The configuration arrives as JSON in ``VELCRO_CONFIG``;
``VELCRO_SEED`` replays a run (the seed is logged either way).

Run through pytest (tests/test_sim_accel.py) or ``velcro sim`` (testcase ``run_frame_file``).
"""

from __future__ import annotations

import itertools
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from hdl.config import AccelConfig
from hdl.engine import decode_counters
from hdl.protocol import config_beats, decode_ofm, frame_beats, output_beats
from py_ref.golden import Frame, compute_cycle_bound, golden_ofm, random_frame

CLOCK_NS = 10


def stall_generator(rng: random.Random, probability: float):
    """1 = stall this cycle. probability 0 never stalls."""
    while True:
        yield int(rng.random() < probability)


class SeededTB:
    """Base of the testbenches: the configuration from ``$VELCRO_CONFIG`` and a seed that is
    logged and can be replayed with ``$VELCRO_SEED``, feeding ``rng`` and ``np_rng``."""

    def __init__(self, dut, cfg: AccelConfig | None = None, seed: int | None = None):
        self.dut = dut
        self.cfg = cfg or AccelConfig.from_json(os.environ["VELCRO_CONFIG"])
        self.seed = int(os.environ.get("VELCRO_SEED", seed if seed is not None else random.randrange(2**31)))
        dut._log.info("config %s seed %d", self.cfg.to_json(), self.seed)
        self.rng = random.Random(self.seed)
        self.np_rng = np.random.default_rng(self.seed)


class AccelTB(SeededTB):
    """Clock, reset, a command-stream source and an output-stream sink with stall generators."""

    def __init__(self, dut, cfg: AccelConfig | None = None, seed: int | None = None):
        super().__init__(dut, cfg, seed)
        self.idle = itertools.repeat(0)
        self.backpressure = itertools.repeat(0)
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
        dut.i__valid.value = 0
        dut.i__payload.value = 0
        dut.o__ready.value = 0
        dut.rst.value = 0

    def set_idle_generator(self, gen=None):
        self.idle = gen if gen is not None else itertools.repeat(0)

    def set_backpressure_generator(self, gen=None):
        self.backpressure = gen if gen is not None else itertools.repeat(0)

    def random_stalls(self, probability=0.3):
        self.set_idle_generator(stall_generator(self.rng, probability))
        self.set_backpressure_generator(stall_generator(self.rng, probability))

    async def reset(self, cycles=2):
        self.dut.rst.value = 1
        self.dut.i__valid.value = 0
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    def counters(self) -> dict:
        return decode_counters(self.cfg, self.dut.counters.value.to_unsigned())

    async def transfer(self, beats, n_out: int, *, stop_after: int | None = None):
        """Send ``beats`` on ``i`` while collecting ``n_out`` beats from ``o``.

        Returns the output beats as (data, last) pairs. ``stop_after`` returns early after
        that many cycles (used to reset in the middle of a frame).
        """
        dut = self.dut
        out, pos, cycles = [], 0, 0
        bus_mask = (1 << self.cfg.bus_width) - 1
        while len(out) < n_out or pos < len(beats):
            if stop_after is not None and cycles >= stop_after:
                break
            valid = pos < len(beats) and not next(self.idle)
            dut.i__valid.value = int(valid)
            if valid:
                dut.i__payload.value = beats[pos]
            ready = not next(self.backpressure)
            dut.o__ready.value = int(ready)
            await ReadOnly()
            if valid and dut.i__ready.value:
                pos += 1
            if ready and dut.o__valid.value:
                word = dut.o__payload.value.to_unsigned()
                out.append((word & bus_mask, word >> self.cfg.bus_width))
            await RisingEdge(dut.clk)
            cycles += 1
        dut.i__valid.value = 0
        dut.o__ready.value = 0
        return out

    async def run(self, frame: Frame, *, load_config=True, check=True):
        """One FRAME (after its configuration unless ``load_config`` is false).

        Returns (ofm, counters); with ``check`` asserts ofm == golden and the cycle bound.
        """
        cfg = self.cfg
        beats = (config_beats(cfg, frame) if load_config else []) + frame_beats(cfg, frame.ifmap)
        out = await self.transfer(beats, output_beats(cfg))
        assert [last for _, last in out] == [0] * (len(out) - 1) + [1], "TLAST not on the last beat only"
        await ReadOnly()
        counters = self.counters()
        await RisingEdge(self.dut.clk)
        ofm = decode_ofm(cfg, [d for d, _ in out])
        if check:
            self.check(frame, ofm, counters)
        return ofm, counters

    def check(self, frame: Frame, ofm, counters):
        expected = golden_ofm(frame)
        mismatches = np.argwhere(ofm != expected)
        assert len(mismatches) == 0, (
            f"{len(mismatches)} outputs differ from the golden model, first at [n,i,j]="
            f"{mismatches[0].tolist()}: got {ofm[tuple(mismatches[0])]} expected "
            f"{expected[tuple(mismatches[0])]} (seed {self.seed})")
        assert counters["computed"] == frame.uncompressed.tolist()
        assert counters["skipped"] == (self.cfg.positions - frame.uncompressed).tolist()
        bound = compute_cycle_bound(self.cfg, frame)
        assert counters["compute_cycles"] <= bound, (
            f"compute phase took {counters['compute_cycles']} cycles, bound {bound}")
        self.dut._log.info("frame ok: max U_n=%d compute=%d (bound %d) load=%d drain=%d total=%d",
                           frame.uncompressed.max(), counters["compute_cycles"], bound,
                           counters["load_cycles"], counters["drain_cycles"],
                           counters["total_cycles"])


def _structured_masks(cfg: AccelConfig):
    """Checkerboards, compressed/uncompressed borders and corners."""
    n, h, w = cfg.instances, cfg.height, cfg.width
    yy, xx = np.mgrid[0:h, 0:w]
    border = (yy == 0) | (yy == h - 1) | (xx == 0) | (xx == w - 1)
    corners = ((yy == 0) | (yy == h - 1)) & ((xx == 0) | (xx == w - 1))
    patterns = {
        "checkerboard": (yy + xx) % 2 == 0,
        "checkerboard_inv": (yy + xx) % 2 == 1,
        "border_compressed": border,
        "border_uncompressed": ~border,
        "corners_compressed": corners,
        "corners_uncompressed": ~corners,
    }
    for name, p in patterns.items():
        yield name, np.broadcast_to(p, (n, h, w)).copy()


@cocotb.test()
async def densities(dut):
    """Mask densities 0, 0.3, 0.9, 1 and random ones, under random stalls."""
    tb = AccelTB(dut)
    tb.random_stalls(0.3)
    await tb.reset()
    for density in [0.0, 0.3, 0.9, 1.0, None, None]:
        frame = random_frame(tb.cfg, tb.np_rng, density=density)
        await tb.run(frame)


@cocotb.test()
async def structured_masks(dut):
    """Checkerboards and compressed/uncompressed borders and corners (stall pattern 1,1,1,0)."""
    tb = AccelTB(dut)
    tb.set_idle_generator(itertools.cycle([0, 0, 0, 1]))
    tb.set_backpressure_generator(itertools.cycle([0, 1, 0, 0]))
    await tb.reset()
    for name, mask in _structured_masks(tb.cfg):
        dut._log.info("mask pattern %s", name)
        await tb.run(random_frame(tb.cfg, tb.np_rng, mask=mask))


@cocotb.test()
async def extreme_values(dut):
    """-128 x -128 products, bias extremes, saturation at 255, shift 0 and 31."""
    tb = AccelTB(dut)
    tb.random_stalls(0.2)
    await tb.reset()
    cfg = tb.cfg
    for _ in range(3):
        await tb.run(random_frame(cfg, tb.np_rng, density=0.2, extreme=True))
    # every product -128 * -128 at full fan-in, largest bias: the accumulator's worst case
    frame = random_frame(cfg, tb.np_rng, density=0.0)
    worst = Frame(ifmap=np.full_like(frame.ifmap, -128), weight=np.full_like(frame.weight, -128),
                  bias=np.full_like(frame.bias, 2**31 - 1), mask=frame.mask, means=frame.means,
                  mult=np.full_like(frame.mult, 2**16 - 1), shift=np.arange(cfg.instances) % 32)
    await tb.run(worst)
    # the most negative: ReLU clamps to 0 whatever mult and shift
    await tb.run(Frame(ifmap=worst.ifmap, weight=np.full_like(frame.weight, 127),
                       bias=np.full_like(frame.bias, -2**31), mask=frame.mask, means=frame.means,
                       mult=worst.mult, shift=np.zeros_like(frame.shift)))


@cocotb.test()
async def back_to_back(dut):
    """Several frames with no idle cycle between them; the configuration is loaded once."""
    tb = AccelTB(dut)
    tb.set_backpressure_generator(stall_generator(tb.rng, 0.1))
    await tb.reset()
    cfg = tb.cfg
    first = random_frame(cfg, tb.np_rng, density=0.5)
    frames = [first] + [Frame(**{**first.__dict__, "ifmap": random_frame(cfg, tb.np_rng).ifmap})
                        for _ in range(2)]
    beats = config_beats(cfg, first) + [b for f in frames for b in frame_beats(cfg, f.ifmap)]
    out = await tb.transfer(beats, len(frames) * output_beats(cfg))
    per = output_beats(cfg)
    for k, f in enumerate(frames):
        chunk = out[k * per:(k + 1) * per]
        assert chunk[-1][1] == 1 and all(last == 0 for _, last in chunk[:-1])
        assert np.array_equal(decode_ofm(cfg, [d for d, _ in chunk]), golden_ofm(f)), f"frame {k}"
    await ReadOnly()
    assert tb.counters()["frames"] == len(frames)


@cocotb.test()
async def reset_mid_frame(dut):
    """Reset while loading, computing and draining; the next frame must be correct.

    The configuration survives a reset, so after a reset during a FRAME the next FRAME needs
    no reload; after a reset during a configuration load the configuration is sent again.
    """
    tb = AccelTB(dut)
    tb.random_stalls(0.2)
    await tb.reset()
    cfg = tb.cfg
    frame = random_frame(cfg, tb.np_rng, density=0.4)
    await tb.run(frame)
    frame_len = len(frame_beats(cfg, frame.ifmap))
    for where in [frame_len // 2, frame_len + 8, frame_len + int(frame.uncompressed.max()) + 40]:
        nxt = Frame(**{**frame.__dict__, "ifmap": random_frame(cfg, tb.np_rng).ifmap})
        await tb.transfer(frame_beats(cfg, nxt.ifmap), output_beats(cfg), stop_after=where)
        await tb.reset()
        await tb.run(nxt, load_config=False)
    # reset in the middle of a configuration load: reload everything
    new = random_frame(cfg, tb.np_rng, density=0.6)
    await tb.transfer(config_beats(cfg, new), 0, stop_after=len(config_beats(cfg, new)) // 2)
    await tb.reset()
    await tb.run(new)


@cocotb.test()
async def full_frame(dut):
    """One frame at density 0.3 under light stalls (used for the full default configuration)."""
    tb = AccelTB(dut)
    tb.random_stalls(0.1)
    await tb.reset()
    await tb.run(random_frame(tb.cfg, tb.np_rng, density=0.3))


@cocotb.test()
async def run_frame_file(dut):
    """``velcro sim``: run the frame in $VELCRO_FRAME, save ofm and counters to $VELCRO_RESULT."""
    tb = AccelTB(dut, seed=0)
    await tb.reset()
    with np.load(os.environ["VELCRO_FRAME"]) as arrays:
        frame = Frame.from_arrays(arrays)
    ofm, counters = await tb.run(frame, check=False)
    np.savez(os.environ["VELCRO_RESULT"], ofm=ofm,
             **{k: np.asarray(v) for k, v in counters.items()})
