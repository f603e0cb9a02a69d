"""cocotb testbench of the generated accelerator Verilog (Icarus and Verilator).

Every output is compared with the integer golden model with ``==`` (compact beats decoded with
the protocol helpers and expanded with ``Schedule.expand``); every stream runs under seeded random
stalls; every image's compute cycles are checked against the bound
``steps * G + PIPELINE_LATENCY`` (steps: the busiest pair's run of the pixel deal;
exact when nothing stalls). The configuration arrives
as JSON in ``VELCRO_CONFIG``; ``VELCRO_SEED`` (or cocotb's ``COCOTB_RANDOM_SEED``) replays a
run (the seed is logged either way).

Run through pytest (tests/test_sim_accel.py) or ``velcro sim`` (testcase ``run_frame_file``).

Why :meth:`AccelTB.transfer` drives the two streams with its own per-cycle loop instead of
cocotbext-axi's stream models (``cocotbext.axi.stream.define_stream`` fits the engine's
valid/ready/payload ports as they are; testcase ``stream_models_speed`` runs both): not speed.
``python scripts/bench_tb_stream.py --images 2048`` (Verilator, the 16-instance 6x8 layer,
stall probability 0.2 on both streams, the 2-core machine under load, 2026-12-02) measured the
hand loop at 16,005 and 15,805 simulated cycles/s against the models' 15,116 and 15,292: only
3-6 % faster. It stays because the testbenches need what the models do not expose: the cycle at
which every input beat is accepted and every output beat leaves (``stream_cycles``, the
sweep's frame periods), a callback in the ReadOnly phase of the very edge that accepts a given
beat (the SAIF window of sim/tb_sweep.py opens and closes there, to the cycle), stopping after a
given number of cycles (reset mid-frame) and sampling ``image_done``'s counters on the cycle
it pulses.
"""

from __future__ import annotations

import itertools
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from hdl.config import SIM_CLOCK_NS, AccelConfig
from hdl.contract import compute_cycle_bound
from hdl.program import LayerProgram
from hdl.protocol import batch_frame_beats, decode_stream_counters, image_beats
from hdl.results import StreamResult
from py_ref.golden import Frame, golden_mismatch, point_wide_mask, random_batch, random_frame
from py_ref.schedule import deal



def stall_generator(rng: random.Random, probability: float):
    """1 = stall this cycle. probability 0 never stalls."""
    while True:
        yield int(rng.random() < probability)


def config_beats(cfg: AccelConfig, frame, layer: bool = True) -> list[int]:
    """LAYER (unless ``layer`` is false), WEIGHTS and SCHEDULE commands for ``frame``'s
    constants on ``cfg``'s layer."""
    return LayerProgram.for_frame(cfg, frame).config_beats(layer)


def testbench_seed(seed: int | None = None) -> int:
    """The testbench's seed: ``$VELCRO_SEED``, else cocotb's own ``$COCOTB_RANDOM_SEED`` (as
    given, not cocotb's per-test derivation of it), else ``seed``, else a fresh random one."""
    for name in ("VELCRO_SEED", "COCOTB_RANDOM_SEED"):
        if os.environ.get(name, "").strip():
            return int(os.environ[name])
    return seed if seed is not None else random.randrange(2**31)


class SeededTB:
    """Base of the testbenches: the configuration from ``$VELCRO_CONFIG`` and a seed that is
    logged and can be replayed with ``$VELCRO_SEED`` or cocotb's ``$COCOTB_RANDOM_SEED``
    (:func:`testbench_seed`), feeding ``rng`` and ``np_rng``."""

    def __init__(self, dut, cfg: AccelConfig | None = None, seed: int | None = None):
        self.dut = dut
        self.cfg = cfg or AccelConfig.from_json(os.environ["VELCRO_CONFIG"])
        self.seed = testbench_seed(seed)
        dut._log.info("config %s seed %d", self.cfg.to_json(), self.seed)
        self.rng = random.Random(self.seed)
        self.np_rng = np.random.default_rng(self.seed)
        # the layer the engine holds: the design's from power-up; a LAYER command is sent only
        # to change it, so the design-shaped path without one stays tested
        self.engine_layer = self.cfg.design


class AccelTB(SeededTB):
    """Clock, reset, a command-stream source and an output-stream sink with stall generators."""

    def __init__(self, dut, cfg: AccelConfig | None = None, seed: int | None = None):
        super().__init__(dut, cfg, seed)
        self.idle = itertools.repeat(0)
        self.backpressure = itertools.repeat(0)
        cocotb.start_soon(Clock(dut.clk, SIM_CLOCK_NS, unit="ns").start())
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
        """The counters as the engine holds them (per-channel ones for the design's N_max)."""
        return decode_stream_counters(self.cfg, self.dut.counters.value.to_unsigned())

    async def transfer(self, beats, n_out: int, *, stop_after: int | None = None,
                       on_accept=None):
        """Send ``beats`` on ``i`` while collecting ``n_out`` beats from ``o``.

        Returns (output beats as (data, last, cycle), per-image counters sampled at each
        ``image_done``, cycle of every accepted input beat). ``stop_after`` returns early after
        that many cycles (used to reset in the middle of a frame). ``on_accept`` maps input beat
        indices to functions called in the ReadOnly phase of the edge that accepts that beat.
        """
        on_accept = on_accept or {}
        dut = self.dut
        out, pos, cycles, images, taken = [], 0, 0, [], []
        bus_mask, bus_width = (1 << self.cfg.bus_width) - 1, self.cfg.bus_width
        # handles and triggers bound once, and a signal written only when its value changes:
        # this loop runs once per simulated cycle, so it is what a long simulation costs
        i_valid, i_payload, i_ready = dut.i__valid, dut.i__payload, dut.i__ready
        o_ready, o_valid, o_payload, done = dut.o__ready, dut.o__valid, dut.o__payload, dut.image_done
        read_only, edge = ReadOnly(), RisingEdge(dut.clk)
        driven = {"valid": None, "ready": None, "pos": None}
        while len(out) < n_out or pos < len(beats):
            if stop_after is not None and cycles >= stop_after:
                break
            valid = pos < len(beats) and not next(self.idle)
            if valid != driven["valid"]:
                i_valid.value = int(valid)
                driven["valid"] = valid
            if valid and pos != driven["pos"]:
                i_payload.value = beats[pos]
                driven["pos"] = pos
            ready = not next(self.backpressure)
            if ready != driven["ready"]:
                o_ready.value = int(ready)
                driven["ready"] = ready
            await read_only
            if valid and i_ready.value:
                if pos in on_accept:
                    on_accept[pos]()
                pos += 1
                taken.append(cycles)
            if ready and o_valid.value:
                word = o_payload.value.to_unsigned()
                out.append((word & bus_mask, word >> bus_width, cycles))
            if done.value:
                images.append(self.counters())
            await edge
            cycles += 1
        dut.i__valid.value = 0
        dut.o__ready.value = 0
        return out, images, taken

    async def finish(self, images, expected: int, timeout=200):
        """Wait (streams idle) until ``expected`` images have reported their counters and the
        engine is idle."""
        for _ in range(timeout):
            await ReadOnly()
            if self.dut.image_done.value:
                images.append(self.counters())
            if len(images) >= expected and self.dut.idle.value:
                break
            await RisingEdge(self.dut.clk)
        assert len(images) == expected, f"{len(images)} of {expected} images reported"
        counters = self.counters()
        await RisingEdge(self.dut.clk)
        return counters

    async def run_batch(self, frames, *, load_config=True, check=True,
                        on_image=None) -> StreamResult:
        """One FRAME command of ``len(frames)`` images sharing ``frames[0]``'s constants (after
        those constants unless ``load_config`` is false).

        Returns the run's :class:`~hdl.results.StreamResult` (``stream_cycles``: the first image
        beat accepted to the last output beat); with ``check`` asserts ofm == golden and every
        image's counters. ``on_image`` maps image indices to functions called on the edge that
        accepts that image's first input beat (see :meth:`transfer`).
        """
        cfg = self.cfg
        program = LayerProgram.for_frame(cfg, frames[0])
        head = program.config_beats(layer=cfg != self.engine_layer) if load_config else []
        if load_config:
            self.engine_layer = cfg
        beats = head + program.frame_beats(np.stack([f.ifmap for f in frames]))
        n_out = program.output_beats(len(frames))
        first_beat = len(head) + 1                      # after the FRAME header
        on_accept = {first_beat + k * image_beats(cfg): fn for k, fn in (on_image or {}).items()}
        out, images, taken = await self.transfer(beats, n_out, on_accept=on_accept)
        batch = await self.finish(images, len(frames))
        per = program.output_beats()
        lasts = [last for _, last, _ in out]
        assert lasts == ([0] * (per - 1) + [1] if per else []) * len(frames), \
            "TLAST not on the last beat of each image only"
        ofm = program.expand([d for d, _, _ in out], len(frames))
        first = taken[len(head) + 1] if len(taken) > len(head) + 1 else taken[-1]
        end = out[-1][2] if out else taken[-1]
        result = StreamResult.from_samples(cfg, ofm, images, batch, end - first + 1)
        if check:
            for k, f in enumerate(frames):
                self.check(f, result, program.schedule, k)
        return result

    async def run(self, frame: Frame, *, load_config=True, check=True) -> StreamResult:
        """One image: a FRAME command of B = 1."""
        return await self.run_batch([frame], load_config=load_config, check=check)

    def check(self, frame: Frame, result: StreamResult, schedule, k=0):
        counters = result.image(k)
        differs = golden_mismatch(frame, result.ofm[k])
        assert not differs, f"image {k}: {differs} (seed {self.seed})"
        assert counters["image_computed"] == frame.uncompressed.tolist(), f"image {k}"
        assert counters["image_instance"] == schedule.counts.tolist(), f"image {k}"
        bound = compute_cycle_bound(self.cfg, schedule)
        if schedule.total:
            assert counters["image_cycles"] <= bound, (
                f"image {k}: compute took {counters['image_cycles']} cycles, bound {bound}")
        self.dut._log.info("image %d ok: sum U=%d compute=%d (bound %d)", k, schedule.total,
                           counters["image_cycles"], bound)


def _structured_masks(cfg: AccelConfig):
    """Checkerboards, compressed/uncompressed borders and corners."""
    n, h, w = cfg.out_channels, cfg.height, cfg.width
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
    """Mask densities 0, 0.3, 0.9, 1, random ones and channel-skewed masks, under random
    stalls."""
    tb = AccelTB(dut)
    tb.random_stalls(0.3)
    await tb.reset()
    cfg = tb.cfg
    for density in [0.0, 0.3, 0.9, 1.0, None, None]:
        await tb.run(random_frame(cfg, tb.np_rng, density=density))
    shape = (cfg.out_channels, cfg.height, cfg.width)
    for ratio in (0.3, 0.8):
        mask = point_wide_mask(tb.np_rng, shape, ratio, skewed=True)
        await tb.run(random_frame(cfg, tb.np_rng, mask=mask))


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
                  mult=np.full_like(frame.mult, 2**16 - 1), shift=np.arange(cfg.out_channels) % 32)
    await tb.run(worst)
    # the most negative: ReLU clamps to 0 whatever mult and shift
    await tb.run(Frame(ifmap=worst.ifmap, weight=np.full_like(frame.weight, 127),
                       bias=np.full_like(frame.bias, -2**31), mask=frame.mask, means=frame.means,
                       mult=worst.mult, shift=np.zeros_like(frame.shift)))


@cocotb.test()
async def back_to_back(dut):
    """Batches of 1..8 images streamed back to back after one set of constants, stalls on both
    streams in the middle of each batch; then without stalls, where every image's compute
    takes exactly the balance bound."""
    tb = AccelTB(dut)
    tb.random_stalls(0.2)
    await tb.reset()
    cfg = tb.cfg
    first = random_frame(cfg, tb.np_rng, density=0.5)
    loaded = False
    for count in (1, 2, 3, 8):
        await tb.run_batch(random_batch(cfg, tb.np_rng, first, count), load_config=not loaded)
        loaded = True
    tb.set_idle_generator()
    tb.set_backpressure_generator()
    skewed = random_frame(cfg, tb.np_rng, mask=point_wide_mask(
        tb.np_rng, (cfg.out_channels, cfg.height, cfg.width), 0.5, skewed=True))
    result = await tb.run_batch(random_batch(cfg, tb.np_rng, skewed, 5))
    bound = compute_cycle_bound(cfg, deal(skewed.mask, cfg.instances))
    assert result.counters["image_cycles"].tolist() == [bound] * 5, (result.counters, bound)
    assert result.counters["batches"] == 5 and result.counters["images"] == 19


@cocotb.test()
async def reset_mid_frame(dut):
    """Reset while loading, computing and draining a batch; the next batch must be correct.

    The constants survive a reset, so after a reset during a FRAME the next FRAME needs no
    reload; after a reset during a constants load they are sent again.
    """
    tb = AccelTB(dut)
    tb.random_stalls(0.2)
    await tb.reset()
    cfg = tb.cfg
    frame = random_frame(cfg, tb.np_rng, density=0.4)
    await tb.run(frame)
    schedule = deal(frame.mask, cfg.instances)
    batch_len = len(batch_frame_beats(cfg, np.stack([frame.ifmap] * 3)))
    for where in [batch_len // 3, batch_len + 4, batch_len + schedule.steps * cfg.groups]:
        nxt = random_batch(cfg, tb.np_rng, frame, 3)
        await tb.transfer(batch_frame_beats(cfg, np.stack([f.ifmap for f in nxt])), 1 << 30,
                          stop_after=where)
        await tb.reset()
        await tb.run_batch(nxt, load_config=False)
    # reset in the middle of a constants load: reload everything
    new = random_frame(cfg, tb.np_rng, density=0.6)
    await tb.transfer(config_beats(cfg, new), 0, stop_after=len(config_beats(cfg, new)) // 2)
    await tb.reset()
    await tb.run(new)


def _layers(design: AccelConfig):
    """Layers of other shapes within ``design``'s maxima: smaller H, a W that P does not divide
    and one that it does with fewer segments than the design (the ring's column right of the
    last segment holds a wider layer's pixels), C_in = 1 and fewer groups, N = 1, N < P and the
    design's N; then the design itself again."""
    h, w, c, n, p = (design.height, design.width, design.in_channels, design.out_channels,
                     design.instances)
    shapes = [(max(4, h // 2), max(4, w - 3), max(1, c // 2), n),
              (h, max(4, w - p) if w - p >= 4 else w, 1, max(1, n - 1)),
              (4, 4, c, 1),
              (max(4, h - 1), w, max(1, c - 1), max(1, min(n, p - 1))),
              (h, w, c, n)]
    return [design.layer(*s) for s in shapes]


@cocotb.test()
async def runtime_layers(dut):
    """Layers of different shapes back to back on one build (LAYER, WEIGHTS, SCHEDULE, FRAME per
    layer), under random stalls; then the same with a reset between layers, and a reset after
    a layer's load (the layer, like the other constants, survives it)."""
    tb = AccelTB(dut)
    tb.random_stalls(0.2)
    await tb.reset()
    design = tb.cfg.design
    for reset_between in (False, True):
        for layer in _layers(design):
            tb.cfg = layer
            dut._log.info("layer %s (reset between: %s)", layer.to_json(), reset_between)
            frame = random_frame(layer, tb.np_rng, density=0.4)
            await tb.run_batch(random_batch(layer, tb.np_rng, frame, 2))
            if reset_between:
                await tb.reset()
                await tb.run(random_batch(layer, tb.np_rng, frame, 2)[1], load_config=False)
    tb.cfg = design


@cocotb.test()
async def full_frame(dut):
    """One frame at density 0.3 under light stalls (used for the full default configuration)."""
    tb = AccelTB(dut)
    tb.random_stalls(0.1)
    await tb.reset()
    await tb.run(random_frame(tb.cfg, tb.np_rng, density=0.3))


@cocotb.test()
async def run_frame_file(dut):
    """``velcro sim``: run the frame in $VELCRO_FRAME (ifmap [C_in, H, W] or [B, C_in, H, W]),
    save ofm and counters to $VELCRO_RESULT."""
    tb = AccelTB(dut, seed=0)
    await tb.reset()
    with np.load(os.environ["VELCRO_FRAME"]) as arrays:
        arrays = {k: arrays[k] for k in arrays.files}
    ifmaps = arrays["ifmap"]
    frames = [Frame.from_arrays({**arrays, "ifmap": x})
              for x in (ifmaps if ifmaps.ndim == 4 else ifmaps[None])]
    result = await tb.run_batch(frames, check=False)
    np.savez(os.environ["VELCRO_RESULT"], **result.arrays(batched=ifmaps.ndim == 4))


@cocotb.test()
async def stream_models_speed(dut):
    """Benchmark behind scripts/bench_tb_stream.py: one batch of $VELCRO_BENCH_IMAGES images
    streamed twice under the same stall probability, first with :meth:`AccelTB.transfer` (the
    hand loop), then with cocotbext-axi's generic stream models (``define_stream`` source and
    sink on the same ``i``/``o`` valid-ready-payload ports); both outputs checked against the
    golden model; wall seconds and simulated cycles of each written as JSON to $VELCRO_BENCH."""
    import json
    import time

    from cocotb.simtime import get_sim_time
    from cocotbext.axi.stream import define_stream

    tb = AccelTB(dut, seed=1)
    await tb.reset()
    cfg = tb.cfg
    count = int(os.environ.get("VELCRO_BENCH_IMAGES", "16"))
    frames = random_batch(cfg, tb.np_rng, random_frame(cfg, tb.np_rng, density=0.3), count)
    program = LayerProgram.for_frame(cfg, frames[0])
    beats = program.config_beats(layer=False) + program.frame_beats(
        np.stack([f.ifmap for f in frames]))
    n_out = program.output_beats(count)
    bus_mask = (1 << cfg.bus_width) - 1
    report = {"images": count, "beats_in": len(beats), "beats_out": n_out}

    def check(words):
        ofm = program.expand([w & bus_mask for w in words], count)
        for k, f in enumerate(frames):
            assert not golden_mismatch(f, ofm[k]), f"image {k}"

    # the hand loop
    tb.random_stalls(0.2)
    t0, c0 = time.perf_counter(), get_sim_time("ns")
    out, images, _ = await tb.transfer(beats, n_out)
    report["hand"] = {"seconds": time.perf_counter() - t0,
                      "cycles": (get_sim_time("ns") - c0) / SIM_CLOCK_NS}
    await tb.finish(images, count)
    check([d | (last << cfg.bus_width) for d, last, _ in out])

    # cocotbext-axi's stream models on the same ports (prefix i_ + _payload = i__payload)
    Bus, Beat, Source, Sink, _ = define_stream("Engine", signals=["payload", "valid", "ready"])
    source = Source(Bus.from_prefix(dut, "i_"), dut.clk, dut.rst)
    sink = Sink(Bus.from_prefix(dut, "o_"), dut.clk, dut.rst)
    source.set_pause_generator(stall_generator(tb.rng, 0.2))
    sink.set_pause_generator(stall_generator(tb.rng, 0.2))
    t0, c0 = time.perf_counter(), get_sim_time("ns")
    for b in beats:
        source.send_nowait(Beat(payload=b))
    words = [int((await sink.recv()).payload) for _ in range(n_out)]
    report["models"] = {"seconds": time.perf_counter() - t0,
                        "cycles": (get_sim_time("ns") - c0) / SIM_CLOCK_NS}
    source.set_pause_generator(None)
    sink.set_pause_generator(None)
    await tb.finish([None] * count, count)
    check(words)
    for kind in ("hand", "models"):
        r = report[kind]
        r["cycles_per_second"] = r["cycles"] / r["seconds"]
    dut._log.info("stream speed %s", report)
    with open(os.environ["VELCRO_BENCH"], "w") as f:
        json.dump(report, f)
