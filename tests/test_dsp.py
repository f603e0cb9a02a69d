"""py_ref.dsp (two int8 x int8 products in one DSP48E2) against plain integer sums: every
(hi, lo, b) of one tap, the -128 corner at full fan-in, random dot products of one cascade and
of several lanes, the refusals, and the 16-tap overflow that bounds MAX_TAPS.
"""

import numpy as np
import pytest

from conftest import seed_for
from py_ref.dsp import (A_BITS, LOW_BITS, MAX_TAPS, pack_operand, packed_dot,
                        packed_dot_lanes, unpack)

CORNERS = np.array([-128, -127, -1, 0, 1, 127], dtype=np.int8)


def plain(x, b):
    return (x.astype(np.int64) * b.astype(np.int64)).sum(axis=-1)


def check(hi, lo, b):
    high, low = packed_dot(hi, lo, b)
    np.testing.assert_array_equal(high, plain(hi, b))
    np.testing.assert_array_equal(low, plain(lo, b))


def test_one_tap_exhaustive():
    """All 2^24 (hi, lo, b): both products exact, and A inside the 27-bit signed range."""
    v = np.arange(-128, 128, dtype=np.int8)
    hi, lo = (g.reshape(-1) for g in np.meshgrid(v, v, indexing="ij"))
    a, flag = pack_operand(hi, lo)
    assert a.min() >= -(1 << (A_BITS - 1)) and a.max() < (1 << (A_BITS - 1))
    np.testing.assert_array_equal(flag, hi == -128)
    for chunk in np.split(v, 8):                    # 32 b values x 65536 (hi, lo) per call
        b = np.repeat(chunk, hi.size)
        h, l = np.tile(hi, chunk.size), np.tile(lo, chunk.size)
        check(h[:, None], l[:, None], b[:, None])


@pytest.mark.parametrize("taps", [9, MAX_TAPS])
def test_full_fan_in_minus_128(taps):
    """Every operand -128 at full fan-in: |sum_lo| = taps * 2^14, the largest the low field
    meets, and every hi is the flagged -128."""
    m = np.full((1, taps), -128, dtype=np.int8)
    high, low = packed_dot(m, m, m)
    assert high[0] == low[0] == taps * (1 << 14)
    check(m, m, m)
    check(m, m, -m - 1)                             # b = 127


@pytest.mark.parametrize("taps", [1, 9, MAX_TAPS])
def test_corner_values(taps):
    seed = seed_for("dsp-corners", taps)
    rng = np.random.default_rng(seed)
    hi, lo, b = (rng.choice(CORNERS, size=(20000, taps)) for _ in range(3))
    check(hi, lo, b)


@pytest.mark.parametrize("taps", [9, MAX_TAPS])
def test_random(taps):
    seed = seed_for("dsp-random", taps)
    rng = np.random.default_rng(seed)
    hi, lo, b = (rng.integers(-128, 128, size=(50000, taps), dtype=np.int8) for _ in range(3))
    check(hi, lo, b)


@pytest.mark.parametrize("lanes", [1, 3, 16])
def test_lanes(lanes):
    """C_in lanes of 9 taps each (C_in * 9 products), random and all -128."""
    seed = seed_for("dsp-lanes", lanes)
    rng = np.random.default_rng(seed)
    hi, lo, b = (rng.integers(-128, 128, size=(5000, lanes, 9), dtype=np.int8)
                 for _ in range(3))
    for args in ((hi, lo, b), (np.full_like(hi, -128),) * 3):
        high, low = packed_dot_lanes(*args)
        flat = [x.reshape(x.shape[0], -1) for x in args]
        np.testing.assert_array_equal(high, plain(flat[0], flat[2]))
        np.testing.assert_array_equal(low, plain(flat[1], flat[2]))


def test_refusals():
    ok = np.zeros((2, 9), dtype=np.int8)
    with pytest.raises(TypeError, match="int8"):
        packed_dot(ok.astype(np.int16), ok, ok)
    with pytest.raises(TypeError, match="b must be an int8"):
        packed_dot(ok, ok, [[0] * 9] * 2)
    with pytest.raises(TypeError, match="int8"):
        pack_operand(ok, ok.astype(np.uint8))
    with pytest.raises(ValueError, match="differ in shape"):
        packed_dot(ok, ok, ok[:1])
    with pytest.raises(ValueError, match="differ in shape"):
        pack_operand(ok, ok[:, :3])
    for taps in (0, MAX_TAPS + 1):
        bad = np.zeros((2, taps), dtype=np.int8)
        with pytest.raises(ValueError, match="taps"):
            packed_dot(bad, bad, bad)
        with pytest.raises(ValueError, match="taps"):
            packed_dot_lanes(bad[None], bad[None], bad[None])
    with pytest.raises(ValueError, match="dimension"):
        packed_dot(np.int8(1), np.int8(1), np.int8(1))
    with pytest.raises(ValueError, match="dimension"):
        packed_dot_lanes(ok[0], ok[0], ok[0])


def test_sixteen_taps_overflow_the_low_field():
    """The raw formula at 16 taps of -128 x -128: S = 16 * 2^14 = 2^18 is no 19-bit signed
    value, so the low field reads -2^18 and the high field one too many (hence MAX_TAPS = 15);
    at 15 taps the same formula is exact."""
    for taps, exact in ((MAX_TAPS, True), (MAX_TAPS + 1, False)):
        m = np.full(taps, -128, dtype=np.int8)
        a, flag = pack_operand(m, m)
        p = int((a * m.astype(np.int64)).sum())
        high, low = unpack(p, int(np.where(flag, m.astype(np.int64), 0).sum()))
        want = taps * (1 << 14)
        if exact:
            assert (high, low) == (want, want)
        else:
            assert want == 1 << (LOW_BITS - 1)
            assert (low, high) == (-want, want + 1)
