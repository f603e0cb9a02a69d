"""hdl.mac in the Amaranth simulator against plain-Python references, under random stalls of the
enable (a frozen pipeline must hold every value), with the arithmetic's edge cases: -128
activations and weights at full fan-in, the widest accumulators, every shift, saturation and
the rounding half; the packed cascade also against py_ref.dsp's bit-level model.
"""

import random

import numpy as np
import pytest

from conftest import seed_for
from stream_sim import simulate
from hdl.config import AccelConfig, MULT_BITS
from hdl.mac import PACKED_MIN_ACC_BITS, MacCascade, PackedMacCascade, Requantiser
from py_ref.dsp import MAX_TAPS, packed_dot


def mac_ref(x, w):
    return sum(a * b for a, b in zip(x, w))


def requant_ref(acc, mult, shift):
    """py_ref.golden.requantise for one value."""
    r = max(acc, 0)
    return min(255, (r * mult + ((1 << shift) >> 1)) >> shift)


def run_pipeline(dut, inputs, outputs, latency, *, stall, seed):
    """Present ``inputs`` (dicts of port -> value) one per enabled cycle, enabling with
    probability 1 - stall; collect ``outputs(ctx)`` ``latency`` enabled cycles after each."""
    rng = random.Random(seed)
    got = []

    async def bench(ctx):
        enabled = 0
        pending = list(inputs) + [None] * latency
        while pending:
            en = not stall or rng.random() >= stall
            ctx.set(dut.en, en)
            if pending[0] is not None:
                for port, value in pending[0].items():
                    ctx.set(getattr(dut, port), value)
            if en:
                if enabled >= latency:
                    got.append(outputs(ctx))
                pending.pop(0)
                enabled += 1
            await ctx.tick()
        # the value of the last input appears after its latency-th enabled cycle
        got.append(outputs(ctx))

    simulate(dut, bench)
    return got[:len(inputs)]


def mac_cases(rng, taps, count):
    extremes = [-128, 127, -128, -1, 0, 1]
    cases = [([-128] * taps, [-128] * taps), ([-128] * taps, [127] * taps),
             ([127] * taps, [127] * taps), ([127] * taps, [-128] * taps)]
    for _ in range(count):
        pick = rng.random() < 0.3
        x = [rng.choice(extremes) if pick else rng.randrange(-128, 128) for _ in range(taps)]
        w = [rng.choice(extremes) if pick else rng.randrange(-128, 128) for _ in range(taps)]
        cases.append((x, w))
    return cases


@pytest.mark.parametrize("stall", [0.0, 0.4])
@pytest.mark.parametrize("taps", [1, 9])
def test_mac_cascade(taps, stall):
    acc_bits = AccelConfig().acc_bits
    seed = seed_for("mac-cascade", taps, stall)
    cases = mac_cases(random.Random(seed), taps, 200)
    dut = MacCascade(taps, acc_bits)
    inputs = [dict(x=x, w=w) for x, w in cases]
    got = run_pipeline(dut, inputs, lambda ctx: ctx.get(dut.sum), dut.LATENCY,
                       stall=stall, seed=seed)
    for k, ((x, w), g) in enumerate(zip(cases, got)):
        assert g == mac_ref(x, w), f"seed={seed}: case {k} x={x} w={w}: got {g}"


def packed_cases(rng, taps, count):
    """(hi, lo, b) triples: every operand -128 and the other full-fan-in extremes, then random
    ones, 30 % of them drawn from the corner values."""
    corners = [-128, -127, -1, 0, 1, 127]
    cases = [tuple([v] * taps for v in vs)
             for vs in ((-128, -128, -128), (-128, -128, 127), (127, 127, -128),
                        (127, -128, -128), (-128, 127, 127), (-127, -127, -128))]
    for _ in range(count):
        pick = rng.random() < 0.3
        cases.append(tuple([rng.choice(corners) if pick else rng.randrange(-128, 128)
                            for _ in range(taps)] for _ in range(3)))
    return cases


@pytest.mark.parametrize("stall", [0.0, 0.4])
@pytest.mark.parametrize("taps", [1, 9, MAX_TAPS])
def test_packed_mac_cascade(taps, stall):
    acc_bits = AccelConfig().acc_bits
    seed = seed_for("packed-mac-cascade", taps, stall)
    cases = packed_cases(random.Random(seed), taps, 150)
    dut = PackedMacCascade(taps, acc_bits)
    assert dut.LATENCY == PackedMacCascade.latency(taps) == taps + 4
    inputs = [dict(hi=hi, lo=lo, b=b) for hi, lo, b in cases]
    got = run_pipeline(dut, inputs, lambda ctx: (ctx.get(dut.sum_hi), ctx.get(dut.sum_lo)),
                       dut.LATENCY, stall=stall, seed=seed)
    model = packed_dot(*(np.array([c[k] for c in cases], dtype=np.int8) for k in range(3)))
    for k, ((hi, lo, b), g) in enumerate(zip(cases, got)):
        want = (mac_ref(hi, b), mac_ref(lo, b))
        assert (int(model[0][k]), int(model[1][k])) == want, f"seed={seed}: model, case {k}"
        assert g == want, f"seed={seed}: case {k} hi={hi} lo={lo} b={b}: got {g}"


def test_packed_mac_cascade_refuses():
    for taps in (0, MAX_TAPS + 1, 9.0, True):
        with pytest.raises(ValueError, match="taps"):
            PackedMacCascade(taps, 32)
    for acc_bits in (PACKED_MIN_ACC_BITS - 1, 8, 32.0):
        with pytest.raises(ValueError, match="acc_bits"):
            PackedMacCascade(9, acc_bits)
    PackedMacCascade(MAX_TAPS, PACKED_MIN_ACC_BITS)._MustUse__silence = True


def requant_cases(rng, acc_bits, count):
    top = (1 << (acc_bits - 1)) - 1
    edges = [0, 1, -1, top, -top - 1, 255, 256, (1 << 17) - 1, 1 << 17, (1 << 31) - 1]
    mults = [0, 1, 2, (1 << MULT_BITS) - 1, 1 << (MULT_BITS - 1)]
    cases = [(a, mu, s) for a in edges for mu in mults for s in (0, 1, 7, 8, 15, 16, 17, 31)]
    # exactly at a rounding half, and just below it
    for s in range(1, 32):
        for mu in (1, 3):
            base = (5 << s) // mu
            cases += [(base, mu, s), (base + 1, mu, s), ((1 << (s - 1)) + (3 << s), 1, s),
                      ((1 << (s - 1)) - 1 + (3 << s), 1, s)]
    for _ in range(count):
        cases.append((rng.randrange(-top - 1, top + 1) >> rng.randrange(0, acc_bits),
                      rng.randrange(1 << MULT_BITS), rng.randrange(32)))
    return [c for c in cases if -top - 1 <= c[0] <= top]


@pytest.mark.parametrize("stall", [0.0, 0.4])
def test_requantiser(stall):
    acc_bits = AccelConfig().acc_bits
    seed = seed_for("requantiser", stall)
    cases = requant_cases(random.Random(seed), acc_bits, 600)
    dut = Requantiser(acc_bits)
    inputs = [dict(acc=a, mult=mu, shift=s) for a, mu, s in cases]
    got = run_pipeline(dut, inputs, lambda ctx: ctx.get(dut.value), Requantiser.LATENCY,
                       stall=stall, seed=seed)
    for k, ((a, mu, s), g) in enumerate(zip(cases, got)):
        assert g == requant_ref(a, mu, s), \
            f"seed={seed}: case {k} acc={a} mult={mu} shift={s}: got {g}"


def test_requantiser_widest_config():
    """C_in 64: the widest accumulator the configuration allows still splits into two DSPs."""
    cfg = AccelConfig(in_channels=64)
    Requantiser(cfg.acc_bits)._MustUse__silence = True
    with pytest.raises(ValueError, match="too wide"):
        Requantiser(80)
