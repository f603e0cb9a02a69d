"""The host's two records: hdl.program.LayerProgram (a layer's configuration, constants and
schedule, encoded to the engine's commands and decoded back) and hdl.results.StreamResult (one
run's outputs and counters, named by hdl.protocol.STREAM_COUNTERS, and its RESULT.npz form)."""

import dataclasses

import numpy as np
import pytest

from conftest import seed_for
from hdl.config import AccelConfig
from hdl.kernel_host import buffer_beats, pack_frame, read_counters, unpack_ofm
from hdl.program import LayerProgram, ProgramError
from hdl.protocol import (SCALAR_COUNTER_KINDS, STREAM_COUNTERS, counter_words, decode_counter_words,
                          decode_stream_counters, counter_fields)
from hdl.results import BATCH_COUNTERS, IMAGE_COUNTERS, RESULT_ARRAYS, StreamResult
from py_ref.golden import golden_ofm, random_frame

#: a design with maxima above its own shape, and layers on it: W not a multiple of P, C_in not
#: a multiple of L, N < P, N = 1, N > P, the design itself
DESIGN = AccelConfig(height=8, width=10, in_channels=3, out_channels=5, instances=4, lanes=2,
                     bus_width=64, max_height=12, max_width=13, max_in_channels=5,
                     max_out_channels=7)
LAYERS = [(8, 10, 3, 5), (12, 13, 5, 7), (4, 4, 1, 1), (5, 9, 4, 3), (12, 5, 2, 6)]
KERNEL_DESIGN = AccelConfig(height=6, width=9, in_channels=2, out_channels=3, instances=4,
                            max_height=8, max_width=12, max_in_channels=4, max_out_channels=6)


def _program(shape, density, seed):
    cfg = DESIGN.layer(*shape)
    frame = random_frame(cfg, np.random.default_rng(seed), density=density, extreme=seed % 2 == 1)
    return cfg, frame, LayerProgram.for_frame(cfg, frame)


@pytest.mark.parametrize("shape", LAYERS)
@pytest.mark.parametrize("density", [0.0, 0.4, 1.0])
def test_program_round_trip(shape, density):
    """decode(encode) gives the program back, with or without LAYER; the mask it serves is the
    frame's."""
    seed = seed_for("program", shape, density)
    cfg, frame, program = _program(shape, density, seed)
    for layer in (True, False):
        back = LayerProgram.decode(cfg, program.config_beats(layer), frame.means)
        assert back == program, f"seed {seed}"
        assert np.array_equal(back.weight, frame.weight) and back.weight.dtype == np.int8
        assert np.array_equal(back.bias, frame.bias)
        assert np.array_equal(back.mask, frame.mask)
    assert program.config_beats()[:len(program.layer_beats())] == program.layer_beats()
    assert program.params_beats() + program.schedule_beats() == program.config_beats()


def test_program_refuses_what_the_encoder_never_writes():
    cfg, frame, program = _program((5, 9, 4, 3), 0.4, 7)
    beats = program.config_beats()
    with pytest.raises(ProgramError, match="ends after"):
        LayerProgram.decode(cfg, beats[:-1], frame.means)
    with pytest.raises(ProgramError, match="after the SCHEDULE"):
        LayerProgram.decode(cfg, beats + [0], frame.means)
    with pytest.raises(ProgramError, match="is not the layer"):        # another layer's LAYER
        LayerProgram.decode(DESIGN.layer(5, 9, 4, 4), beats, frame.means)
    n_layer = len(program.layer_beats())
    bad = list(beats)
    bad[n_layer] = 4                                                   # FRAME, not WEIGHTS
    with pytest.raises(ProgramError, match="expected a WEIGHTS command"):
        LayerProgram.decode(cfg, bad, frame.means)
    # a filter weight on the padding channel of C_in = 3 on two groups of L = 2: channel 3 is
    # lane 1 of group 1, byte 1 of filter record (n 0, g 1), which starts at beat 1 + 3
    cfg3, frame3, program3 = _program((5, 9, 3, 3), 0.4, 8)
    bad = program3.config_beats(layer=False)
    assert cfg3.beats(cfg3.weight_bits) == 3
    bad[4] |= 0xFF << 8
    with pytest.raises(ProgramError, match="beyond the layer's C_in"):
        LayerProgram.decode(cfg3, bad, frame3.means)
    # a work list that is not the dealing of its mask: swap two instances' first entries
    sched = program.schedule_beats()
    head = len(program.params_beats())
    bad = list(beats)
    bad[head + 1], bad[head + 2] = bad[head + 2], bad[head + 1]
    with pytest.raises(ProgramError):
        LayerProgram.decode(cfg, bad, frame.means)
    assert len(sched) > 3


def test_program_refuses_another_shape():
    cfg = DESIGN.layer(5, 9, 4, 3)
    frame = random_frame(DESIGN.layer(5, 9, 4, 4), np.random.default_rng(1))
    with pytest.raises(ValueError, match="is not the layer"):
        LayerProgram.for_frame(cfg, frame)


@pytest.mark.parametrize("shape", [(6, 9, 2, 3), (8, 12, 4, 6), (4, 5, 1, 1)])
def test_kernel_buffers_from_the_program(shape):
    """The kernel's buffers are the program's commands (params: LAYER + WEIGHTS, schedule:
    SCHEDULE, ifmap: the FRAME's beats after its header), and unpack_ofm expands what the
    kernel writes (the golden outputs in compact order) back to the golden ofm."""
    cfg = KERNEL_DESIGN.layer(*shape)
    rng = np.random.default_rng(seed_for("kernel-program", shape))
    frame = random_frame(cfg, rng, density=0.5)
    program = LayerProgram.for_frame(cfg, frame)
    ifmaps = np.stack([frame.ifmap, random_frame(cfg, rng).ifmap])
    data = pack_frame(program, ifmaps)
    sizes = buffer_beats(cfg, program.schedule, 2)
    assert {k: len(v) // 64 for k, v in data.items()} == {k: sizes[k] for k in data}
    beats = [int.from_bytes(data["params"][i:i + 64], "little")
             for i in range(0, len(data["params"]), 64)]
    beats += [int.from_bytes(data["schedule"][i:i + 64], "little")
              for i in range(0, len(data["schedule"]), 64)]
    assert LayerProgram.decode(cfg, beats, frame.means) == program
    expected = [golden_ofm(dataclasses.replace(frame, ifmap=x)) for x in ifmaps]
    raw = b"".join(e.reshape(-1)[program.schedule.compact_flat].tobytes().ljust(
        64 * program.output_beats(), b"\0") for e in expected)
    assert np.array_equal(unpack_ofm(program, raw, 2), np.stack(expected))


def _random_counters(cfg, rng):
    """A raw ``counters`` port value with random fields, and the fields."""
    value, fields = 0, {}
    for (name, offset, width, count), (_, kind, _) in zip(counter_fields(cfg), STREAM_COUNTERS):
        words = [int(rng.integers(0, 1 << width)) for _ in range(count)]
        fields[name] = words[0] if kind in SCALAR_COUNTER_KINDS else words
        for i, w in enumerate(words):
            value |= w << (offset + width * i)
    return value, fields


def test_counter_words_decode_as_the_port():
    """The kernel's counter registers and the engine's port decode to the same names."""
    cfg = KERNEL_DESIGN
    value, fields = _random_counters(cfg, np.random.default_rng(seed_for("counter-words")))
    assert decode_stream_counters(cfg, value) == fields
    words = []
    for name, _, _ in STREAM_COUNTERS:
        words += fields[name] if isinstance(fields[name], list) else [fields[name]]
    assert len(words) == len(counter_words(cfg))
    assert decode_counter_words(cfg, words) == fields
    regs = dict(zip(range(0x80, 0x80 + 4 * len(words), 4), words))
    assert read_counters(cfg, regs.__getitem__) == fields
    with pytest.raises(ValueError, match="counter words expected"):
        decode_counter_words(cfg, words[:-1])


def test_result_record_and_its_file_form():
    """StreamResult: per-channel counters cut to the layer's N (refused if a channel beyond
    counted), image_skipped derived, RESULT.npz members in RESULT_ARRAYS order, batched and
    one-image forms read back equal."""
    design = KERNEL_DESIGN
    cfg = design.layer(5, 7, 2, 4)
    rng = np.random.default_rng(seed_for("result-record"))
    images = []
    for _ in range(3):
        _, fields = _random_counters(design, rng)
        fields["image_computed"] = [int(v) for v in rng.integers(0, 36, 4)] + [0, 0]
        images.append(fields)
    batch = _random_counters(design, rng)[1]
    ofm = rng.integers(0, 256, (3, 4, 5, 7), dtype=np.uint8)
    r = StreamResult.from_samples(cfg, ofm, images, batch, stream_cycles=1234)
    assert set(BATCH_COUNTERS) | set(IMAGE_COUNTERS) == {n for n, _, _ in STREAM_COUNTERS}
    assert r.counters["image_computed"].shape == (3, 4)
    assert r.counters["image_instance"].shape == (3, design.instances)
    assert r.image_skipped.tolist() == (35 - r.counters["image_computed"]).tolist()
    assert r.image(1)["image_cycles"] == images[1]["image_cycles"]
    assert r.image(1)["batch_cycles"] == batch["batch_cycles"]
    arrays = r.arrays()
    assert tuple(arrays) == RESULT_ARRAYS
    back = StreamResult.from_arrays(arrays)
    assert np.array_equal(back.ofm, r.ofm) and back.stream_cycles == 1234
    assert all(np.array_equal(back.counters[k], r.counters[k]) for k in r.counters)
    one = StreamResult.from_samples(cfg, ofm[:1], images[:1], batch, 99)
    single = one.arrays(batched=False)
    assert single["ofm"].shape == (4, 5, 7) and single["image_computed"].shape == (4,)
    assert StreamResult.from_arrays(single).image(0) == one.image(0)
    with pytest.raises(ValueError, match="keeps its batch axis"):
        r.arrays(batched=False)
    images[2]["image_computed"][5] = 1
    with pytest.raises(ValueError, match="beyond the layer's N"):
        StreamResult.from_samples(cfg, ofm, images, batch, 1)
    with pytest.raises(ValueError, match="needs the arrays"):
        StreamResult.from_arrays({k: v for k, v in arrays.items() if k != "stream_cycles"})


def test_run_estimate():
    """velcro sim's estimate: the constants, the images at their stream period, the drain;
    wall time from the measured speed, slower on Icarus and on designs with more multipliers,
    said in units a person reads."""
    from hdl.config import DEFAULT, PIPELINE_LATENCY
    from hdl.protocol import image_beats
    from sim.runner import about, estimate_run, run_cycles
    frame = random_frame(DEFAULT, np.random.default_rng(3), density=0.0)
    program = LayerProgram.for_frame(DEFAULT, frame)
    one, many = run_cycles(program, 1), run_cycles(program, 65535)
    assert many - one == 65534 * max(image_beats(DEFAULT), 4097)           # dense: 4097 / image
    assert one == len(program.config_beats()) + 4097 + PIPELINE_LATENCY
    assert estimate_run(DEFAULT, "icarus", many) > estimate_run(DEFAULT, "verilator", many)
    bigger = dataclasses.replace(DEFAULT, instances=32)
    assert estimate_run(bigger, "verilator", many) > estimate_run(DEFAULT, "verilator", many)
    assert about(40) == "about 40 s" and about(720) == "about 12 min"
    assert about(estimate_run(DEFAULT, "verilator", many)).endswith(" h")   # hours: said first
