"""hdl.packer in the Amaranth simulator: the pairs' results packed into compact-stream beats,
checked against the golden compact values and Schedule.expand, under random stalls on every
stream, back-to-back frames, and its cycle count without stalls."""

import random

import numpy as np
import pytest

from conftest import seed_for
from stream_sim import run_streams
from stream_sim import simulate as run_simulator
from hdl.config import AccelConfig
from hdl.packer import OutputPacker
from hdl.protocol import ProtocolError, compact_beats_per_image, decode_compact
from py_ref.compact import golden_compact
from py_ref.golden import golden_ofm, random_frame
from py_ref.schedule import deal

CONFIGS = {
    # 8-byte beats: 2 instances -> 4 steps per beat; 8 instances -> one step per beat
    "p2": AccelConfig(height=5, width=7, in_channels=1, instances=2, bus_width=64),
    "p8": AccelConfig(height=5, width=7, in_channels=1, instances=8, bus_width=64),
    "p4": AccelConfig(height=6, width=5, in_channels=1, instances=4, bus_width=128),
}


def simulate(cfg, schedule, compact, frames, *, seed, stall):
    """Feed each pair its steps' results (the twins' values, index) for ``frames`` frames;
    return the beats as (cycle, data, last)."""
    dut = OutputPacker(cfg)
    length = schedule.stream_length
    p_count = cfg.instances
    sources = []
    for d in range(cfg.pairs):
        one = [dict(value=[int(compact[k * p_count + 2 * d + t]) if 2 * d + t < p_count else 0
                           for t in range(cfg.twins)], index=k)
               for k in range(int(schedule.pair_steps[d]))]
        sources.append((dut.results[d], one * frames))
    count = compact_beats_per_image(cfg, length) * frames
    out = []

    async def bench(ctx):
        ctx.set(dut.steps, schedule.steps)
        for d in range(cfg.pairs):
            ctx.set(dut.counts[d], int(schedule.pair_steps[d]))
        got, = await run_streams(ctx, sources=sources, sinks=[(dut.o, count)],
                                 rng=random.Random(seed), stall=stall)
        out.extend((c, p.data, p.last) for c, p in got)

    run_simulator(dut, bench)
    return out


@pytest.mark.parametrize("stall", [0.0, 0.4])
@pytest.mark.parametrize("density", [0.0, 0.3, 0.9, 1.0])
@pytest.mark.parametrize("name", CONFIGS)
def test_packer_matches_expand(name, density, stall):
    cfg = CONFIGS[name]
    seed = seed_for("packer", name, density, stall)
    rng = np.random.default_rng(seed)
    frame = random_frame(cfg, rng, density=density)
    s = deal(frame.mask, cfg.instances)
    compact = golden_compact(frame, s)
    frames = 2
    beats = simulate(cfg, s, compact, frames, seed=seed, stall=stall)
    per = compact_beats_per_image(cfg, s.stream_length)
    assert len(beats) == per * frames
    for f in range(frames):
        mine = beats[f * per:(f + 1) * per]
        assert [last for _, _, last in mine] == [0] * (per - 1) + [1] * (per > 0), f"seed={seed}"
        got, = decode_compact(cfg, [d for _, d, _ in mine], s.stream_length)
        assert got.tolist() == compact.tolist(), f"seed={seed} frame {f}"
        np.testing.assert_array_equal(s.expand(got, frame.means), golden_ofm(frame),
                                      err_msg=f"seed={seed} frame {f}")
        if per:   # the last beat is zero past the final byte
            assert mine[-1][1] >> (8 * (s.stream_length - (per - 1) * cfg.bus_bytes)) == 0
        # the instances without an entry in a step leave zero bytes in their slots
        pad = np.flatnonzero(s.compact_flat < 0)
        assert not got[pad].any() and len(pad) == s.stream_length - s.total


@pytest.mark.parametrize("name", CONFIGS)
def test_packer_one_step_per_cycle(name):
    """No stalls: one step (P results) per cycle from ``OutputPacker.SETUP`` cycles after steps
    and counts are set; the last beat leaves the cycle after the last step, ``steps`` cycles
    after the first."""
    cfg = CONFIGS[name]
    seed = seed_for("packer-rate", name)
    rng = np.random.default_rng(seed)
    frame = random_frame(cfg, rng, density=0.3)
    s = deal(frame.mask, cfg.instances)
    beats = simulate(cfg, s, golden_compact(frame, s), 1, seed=seed, stall=0.0)
    steps_per_beat = cfg.bus_bytes // cfg.instances
    expect = [OutputPacker.SETUP + min((b + 1) * steps_per_beat, s.steps)
              for b in range(len(beats))]
    assert [c for c, _, _ in beats] == expect


def test_packer_rejects_instances_not_dividing_the_beat():
    cfg = AccelConfig(height=5, width=7, in_channels=1, instances=3, bus_width=64)
    with pytest.raises(ValueError, match="instances must divide bus_width/8 = 8, not 3"):
        OutputPacker(cfg)


def test_decode_compact_rejects_wrong_count():
    cfg = CONFIGS["p2"]
    with pytest.raises(ProtocolError, match="beats must be 2 for 1 images of 9 bytes, not 1"):
        decode_compact(cfg, [0], 9)


def test_packer_one_instance():
    """P = 1: one pair with twin A only, one byte per step."""
    cfg = AccelConfig(height=4, width=5, in_channels=1, instances=1, bus_width=64)
    seed = seed_for("packer-one")
    rng = np.random.default_rng(seed)
    frame = random_frame(cfg, rng, density=0.4)
    s = deal(frame.mask, 1)
    compact = golden_compact(frame, s)
    beats = simulate(cfg, s, compact, 1, seed=seed, stall=0.3)
    got, = decode_compact(cfg, [d for _, d, _ in beats], s.stream_length)
    assert got.tolist() == compact.tolist() and s.stream_length == s.total
