"""hdl.frontend's CommandFrontEnd on its own, in the Amaranth simulator, against a plain-Python
decoder of the protocol (hdl/protocol.py's text), under random stalls.

Random command sequences (LAYER for random shapes within the design's maxima, WEIGHTS of the
layer's N x G filter records and N quant records, SCHEDULE of random masks including the empty
run, steps = 0, FRAME of B = 0 .. 3 images) are encoded with hdl.protocol's encoders. Every memory
write (addr, data), every change of ``layer``, ``steps`` and ``images``, every ``clear`` and batch
``start``, every FRAME beat forwarded to the dealer and every batch end must come out in the
order the reference predicts; command headers must be taken exactly while ``idle``, and
``batch.active`` must cover each batch. The window dealer and the rest of the engine are played
by the bench: ``accepted`` counts the images whose beats the dealer has taken, ``finished``
follows it at random, ``out_valid`` is random.
"""

import random

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.lib import stream

from conftest import seed_for
from stream_sim import run_streams, simulate
from hdl.config import AccelConfig
from hdl.frontend import CommandFrontEnd
from hdl.protocol import (Opcode, batch_frame_beats, image_beats, layer_beats, layer_fields,
                          layer_values, pixel_fields, schedule_beats, schedule_entry_fields,
                          segments_per_beat, weight_beats)
from py_ref.golden import random_frame
from py_ref.schedule import deal

CONFIGS = {
    # filter records over two 64-bit beats, schedule records in one
    "p2": AccelConfig(height=6, width=7, in_channels=3, lanes=1, instances=2, bus_width=64,
                      out_channels=3),
    # 144-bit filter records over two 128-bit beats
    "p4": AccelConfig(height=5, width=9, in_channels=2, instances=4, bus_width=128,
                      out_channels=5),
    # one-beat filter records, three channel groups
    "p4_l1": AccelConfig(height=6, width=6, in_channels=3, lanes=1, instances=4, bus_width=128,
                         out_channels=2),
    # 72-bit schedule records over two 64-bit beats
    "p8": AccelConfig(height=4, width=17, in_channels=1, instances=8, bus_width=64,
                      out_channels=9),
}


KINDS = ["LAYER", "WEIGHTS", "SCHEDULE", "FRAME"]


def commands(cfg, rng, count):
    """``count`` random commands on design ``cfg``, each kind at least twice: (beats, the image
    beats per image of each FRAME with B > 0). The first SCHEDULE has no entries (steps = 0)."""
    beats, per_image = [], []
    layer = cfg.design
    kinds = KINDS * 2 + list(rng.choice(KINDS, count - 2 * len(KINDS)))
    rng.shuffle(kinds)
    densities = [1.0]
    for kind in kinds:
        if kind == "LAYER":
            layer = cfg.layer(int(rng.integers(4, cfg.max_height + 1)),
                              int(rng.integers(4, cfg.max_width + 1)),
                              int(rng.integers(1, cfg.max_in_channels + 1)),
                              int(rng.integers(1, cfg.max_out_channels + 1)))
            beats += layer_beats(layer)
        elif kind == "WEIGHTS":
            f = random_frame(layer, rng)
            beats += weight_beats(layer, f.weight, f.bias, f.mult, f.shift)
        elif kind == "SCHEDULE":
            # density 1.0: every output compressed, no entries, steps = 0
            density = densities.pop() if densities else float(rng.choice([0.0, 0.5, 0.9, 1.0]))
            beats += schedule_beats(layer, deal(random_frame(layer, rng, density=density).mask,
                                                layer.instances))
        else:
            b = int(rng.integers(0, 4))
            if b:
                ifmaps = rng.integers(-128, 128, (b, layer.in_channels, layer.height,
                                                  layer.width), dtype=np.int8)
                beats += batch_frame_beats(layer, ifmaps)
                per_image.append(image_beats(layer))
            else:
                beats.append(int(Opcode.FRAME))
    return beats, per_image


def _split(value, bits, count):
    return tuple((value >> (bits * p)) & ((1 << bits) - 1) for p in range(count))


def reference(cfg, beats):
    """The protocol decoded in plain Python: the front end's events in order, and its final
    (layer record, steps, images)."""
    d = cfg.design
    fields = layer_fields(d)
    layer = layer_values(d)
    record_value = sum(layer[k] << off for k, off in
                       zip(fields, np.cumsum([0] + list(fields.values()))))
    steps = images = 0
    events, pos = [], 0

    def record(bits):
        nonlocal pos
        n = d.beats(bits)
        value = sum(beats[pos + k] << (d.bus_width * k) for k in range(n)) & ((1 << bits) - 1)
        pos += n
        return value

    entry_bits = sum(schedule_entry_fields(d).values())
    pixel_bits = sum(pixel_fields(d).values())
    while pos < len(beats):
        header = beats[pos]
        pos += 1
        events.append(("header", header))
        op = header & 0xFF
        if op == Opcode.LAYER:
            value = record(sum(fields.values()))
            if value != record_value:
                events.append(("layer", value))
            record_value, shift = value, 0
            for k, w in fields.items():
                layer[k] = (value >> shift) & ((1 << w) - 1)
                shift += w
        elif op == Opcode.WEIGHTS:
            for n in range(layer["out_channels"]):
                for g in range(layer["groups"]):
                    events.append(("weights", n * d.groups + g, record(d.weight_bits)))
            for n in range(layer["out_channels"]):
                events.append(("quant", n, record(d.QUANT_BITS)))
        elif op == Opcode.SCHEDULE:
            events.append(("clear",))
            if (header >> 8) & 0xFF_FFFF != steps:
                steps = (header >> 8) & 0xFF_FFFF
                events.append(("steps", steps))
            for k in range(steps):
                events.append(("entries", k, _split(record(d.instances * entry_bits),
                                                    entry_bits, d.instances)))
            for s in range(layer["segments"]):
                events.append(("pixels", s, _split(record(d.instances * pixel_bits),
                                                   pixel_bits, d.instances)))
        elif op == Opcode.FRAME:
            b = (header >> 8) & 0xFFFF
            if b:
                events.append(("start",))
            if b != images:
                images = b
                events.append(("images", b))
            if b:
                records = layer["segment_records"]         # H * G * J
                per = segments_per_beat(d)
                count = -(-records // per) if per else records * d.beats(d.segment_bits)
                for _ in range(b * count):
                    events.append(("beat", beats[pos]))
                    pos += 1
                events.append(("batch_end",))
        else:
            raise AssertionError(f"no such opcode {op}")
    return events, (record_value, steps, images)


def run_front_end(cfg, beats, per_image, n_frame, *, seed, stall):
    """Stream ``beats`` in (``n_frame`` of them FRAME image beats, ``per_image[f]`` per image of
    FRAME f); returns the front end's events in order and its final (layer, steps, images)."""
    dut = CommandFrontEnd(cfg)
    # The dealer, as registers (the bench's sink must not see a testbench's late write): it
    # counts an image accepted with its ``per``-th beat (``per`` set by the monitor at each
    # batch start) and takes beats only while the batch has images to accept.
    top = Module()
    top.submodules.front = dut
    sink = stream.Signature(cfg.bus_width).flip().create(path=("dealer",))
    per = Signal(16)
    in_image = Signal(16)
    more = dut.accepted < dut.images
    top.d.comb += [dut.taking.eq(more),
                   sink.valid.eq(dut.frame.valid & more), sink.payload.eq(dut.frame.payload),
                   dut.frame.ready.eq(sink.ready & more)]
    with top.If(dut.batch.start):
        top.d.sync += [dut.accepted.eq(0), in_image.eq(0)]
    with top.Elif(dut.frame.valid & dut.frame.ready):
        with top.If(in_image == per - 1):
            top.d.sync += [dut.accepted.eq(dut.accepted + 1), in_image.eq(0)]
        with top.Else():
            top.d.sync += in_image.eq(in_image + 1)
    rng = random.Random(seed + 1)
    events, final = [], []
    writes = [("weights", dut.weights)] + [(f"pixels{p}", w) for p, w in enumerate(dut.pixels)] \
        + [(f"entries{p}", w) for p, w in enumerate(dut.entries)] + [("quant", dut.quant)]
    sampled = [dut.i.valid, dut.i.ready, dut.i.payload, dut.idle, dut.frame.valid,
               dut.frame.ready, dut.frame.payload, dut.layer.as_value(), dut.steps, dut.images,
               dut.clear, dut.batch.start, dut.batch.active, dut.batch.end,
               dut.accepted, dut.finished, dut.out_valid]
    for _, w in writes:
        sampled += [w.en, w.addr, w.data.as_value() if hasattr(w.data, "as_value") else w.data]

    async def bench(ctx):
        await run_streams(ctx, sources=[(dut.i, beats)], sinks=[(sink, n_frame)],
                          rng=random.Random(seed), stall=stall)
        for _ in range(60):     # the last batch ends
            await ctx.tick()
        final.extend([ctx.get(dut.layer.as_value()), ctx.get(dut.steps), ctx.get(dut.images)])
        assert ctx.get(dut.idle) and not ctx.get(dut.batch.active)

    pair_entry = len(dut.entries[0].data.as_value()) // cfg.twins
    lane_mask = (1 << pair_entry) - 1

    async def monitor(ctx):
        queue = list(per_image)
        finished = 0
        prev = None
        in_batch = False
        async for _, _, *v in ctx.tick().sample(*sampled):
            (i_valid, i_ready, i_payload, idle, f_valid, f_ready, f_payload, layer, steps,
             images, clear, start, active, end, s_accepted, s_finished, s_out_valid) = v[:17]
            now = (layer, steps, images)
            if prev is not None:
                for name, a, b in zip(("layer", "steps", "images"), prev, now):
                    if a != b:
                        events.append((name, b))
            prev = now
            if i_valid and i_ready and idle:
                events.append(("header", i_payload))
            if clear:
                events.append(("clear",))
            if start:
                events.append(("start",))
            ports = {}
            for (name, _), k in zip(writes, range(17, len(v), 3)):
                if v[k]:
                    ports[name] = (v[k + 1], v[k + 2], v[k])
            for kind in ("weights", "quant"):
                if kind in ports:
                    events.append((kind, *ports[kind][:2]))
            # per instance p: (addr, data) written; a pair's work-list port carries its twins'
            # entries, twin t where en[t]
            written = {"entries": {}, "pixels": {}}
            for p in range(cfg.instances):
                d, t = divmod(p, 2)
                addr, word, en = ports.get(f"entries{d}", (0, 0, 0))
                if en >> t & 1:
                    written["entries"][p] = (addr, word >> (t * pair_entry) & lane_mask)
                if f"pixels{p}" in ports:
                    written["pixels"][p] = ports[f"pixels{p}"][:2]
            for kind, got in written.items():
                mine = [got.get(p) for p in range(cfg.instances)]
                if any(mine):
                    assert all(mine) and len({a for a, _ in mine}) == 1, mine
                    events.append((kind, mine[0][0], tuple(x for _, x in mine)))
            if f_valid and f_ready:
                events.append(("beat", f_payload))
            # the batch: active from the cycle after start through its end, and it ends as
            # soon as every image is finished and the output is empty
            assert active == in_batch, f"batch.active {active}, expected {in_batch}"
            done = s_accepted == images and s_finished == images and not s_out_valid
            assert end == (active and done), f"batch.end {end}, expected {active and done}"
            if end:
                events.append(("batch_end",))
                in_batch = False
            # the engine behind the dealer: images finish after they are accepted
            if start:
                assert not active
                in_batch = True
                finished = 0
                ctx.set(per, queue.pop(0))
            elif s_finished < s_accepted and rng.random() < 0.4:
                finished += 1
            ctx.set(dut.finished, finished)
            ctx.set(dut.out_valid, rng.random() < 0.3)

    simulate(top, bench, monitors=[monitor])
    return events, tuple(final)


@pytest.mark.parametrize("stall", [0.0, 0.3])
@pytest.mark.parametrize("name", CONFIGS)
def test_front_end_matches_reference_decoder(name, stall):
    cfg = CONFIGS[name]
    seed = seed_for("frontend", name, stall)
    rng = np.random.default_rng(seed)
    beats, per_image = commands(cfg, rng, 20)
    expected, final = reference(cfg, beats)
    n_frame = sum(e[0] == "beat" for e in expected)
    got, got_final = run_front_end(cfg, beats, per_image, n_frame, seed=seed, stall=stall)
    for n, (g, e) in enumerate(zip(got, expected)):
        assert g == e, f"seed={seed}: event {n}: got {g}, expected {e}"
    assert len(got) == len(expected), f"seed={seed}"
    assert got_final == final, f"seed={seed}"
