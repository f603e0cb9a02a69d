"""Two int8 x int8 products in one DSP48E2 (the packing of Xilinx WP486), bit for bit.

Two products that share one operand ``b`` are computed by one 27 x 18 multiplier: the other
two operands ``hi`` and ``lo`` are packed into the 27-bit A port, ``b`` (sign-extended int8)
goes into the B port, and a cascade of ``taps`` DSPs sums ``P = sum_i A_i * b_i`` in the 48-bit
P register (PCOUT -> PCIN).  Two exact dot products are read back from P:
``sum_hi = sum_i hi_i * b_i`` and ``sum_lo = sum_i lo_i * b_i``.

The scheme, with ``L = LOW_BITS = 19``:

* Operand (:func:`pack_operand`): ``hi' = -127 if hi == -128 else hi``, ``flag = (hi == -128)``
  and ``A = hi' * 2^19 + lo``.  ``|hi'| <= 127`` and ``-128 <= lo <= 127`` give
  ``-127 * 2^19 - 128 <= A <= 127 * 2^19 + 127``, inside the 27-bit signed range
  ``[-2^26, 2^26)`` (``127 * 2^19 + 127 = 2^26 - 2^19 + 127 < 2^26``).  ``hi = -128`` would
  give ``-2^26 + lo``, below the range for every ``lo < 0``: hence ``hi'``, which differs from
  ``hi`` by exactly ``hi - hi' = -flag``.
* Sum: ``P = sum_i A_i * b_i = 2^19 * H' + S`` with ``H' = sum_i hi'_i * b_i`` and
  ``S = sum_i lo_i * b_i``.  For ``taps <= MAX_TAPS = 15``: ``|lo_i * b_i| <= 2^14`` so
  ``|S| <= 15 * 2^14 = 245760 < 2^18``, and ``|H'| <= 15 * 127 * 128 = 243840``, so
  ``|P| < 2^19 * 2^18 + 2^18 < 2^37``: P never wraps in 48 bits (the model wraps it anyway,
  as the register does).
* Low field: ``S`` is a 19-bit signed value (``-2^18 <= S < 2^18``) and ``P = S (mod 2^19)``,
  so ``S = sign-extend(P[18:0])`` exactly.
* High field: ``P - S = 2^19 * H'``; the arithmetic shift floors, ``P >> 19 = H' + floor(S /
  2^19)``, and ``floor(S / 2^19) = -1`` exactly when ``S < 0``, i.e. when ``P[18]`` (the sign
  bit of the 19-bit S) is set.  So ``H' = (P >> 19) + P[18]``, and with the correction
  ``corr = sum_i flag_i * b_i``: ``sum_i hi_i * b_i = H' + sum_i (hi_i - hi'_i) * b_i =
  (P >> 19) + P[18] - corr`` (:func:`unpack`), -128 included.
* 16 taps break it: 16 products ``-128 * -128`` give ``S = 2^18``, which is not a 19-bit
  signed value (its sign-extension reads -2^18 and the high field one too many).

:func:`packed_dot` computes a cascade through this model; :func:`packed_dot_lanes` sums the
fields of several cascades (lanes), exact for any number of lanes since each lane's fields are
exact before the sum.  Pure numpy; the bottom layer (hdl.mac builds the circuit of it).
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_TAPS", "LOW_BITS", "A_BITS", "P_BITS", "pack_operand", "unpack", "packed_dot",
           "packed_dot_lanes"]

#: Taps of one cascade for which the low field stays exact (15 * 2^14 < 2^18 <= 16 * 2^14).
MAX_TAPS = 15
#: Width of the low field, and the shift of ``hi'`` in the A operand.
LOW_BITS = 19
#: DSP48E2 A port (multiplier input) and P register widths.
A_BITS = 27
P_BITS = 48


def _int8(name, value):
    value = np.asarray(value)
    if value.dtype != np.int8:
        raise TypeError(f"{name} must be an int8 array, not {value.dtype}")
    return value


def _wrap(value, bits):
    """``value`` (int64) as a ``bits``-bit two's-complement number."""
    half = np.int64(1) << (bits - 1)
    return ((value + half) & ((np.int64(1) << bits) - 1)) - half


def pack_operand(hi, lo):
    """``(a, flag)``: ``a = hi' * 2^19 + lo`` (int64, inside 27-bit signed) with
    ``hi' = -127 if hi == -128 else hi``, and ``flag = (hi == -128)`` (bool), elementwise over
    int8 arrays of one shape."""
    hi, lo = _int8("hi", hi), _int8("lo", lo)
    if hi.shape != lo.shape:
        raise ValueError(f"hi and lo differ in shape: {hi.shape} != {lo.shape}")
    flag = hi == -128
    hi_c = np.where(flag, np.int64(-127), hi.astype(np.int64))
    a = (hi_c << LOW_BITS) + lo.astype(np.int64)
    return a, flag


def unpack(p, corr):
    """``(high, low)`` of a cascade's P (taken as a 48-bit two's-complement value) and its
    correction ``corr = sum_i flag_i * b_i``: ``low = sign-extend(P[18:0])``,
    ``high = (P >> 19) + P[18] - corr`` (int64 arrays)."""
    p = _wrap(np.asarray(p, dtype=np.int64), P_BITS)
    corr = np.asarray(corr, dtype=np.int64)
    low = _wrap(p & ((np.int64(1) << LOW_BITS) - 1), LOW_BITS)
    high = (p >> LOW_BITS) + ((p >> (LOW_BITS - 1)) & 1) - corr
    return high, low


def _check(hi, lo, b, min_ndim):
    hi, lo, b = _int8("hi", hi), _int8("lo", lo), _int8("b", b)
    if not hi.shape == lo.shape == b.shape:
        raise ValueError(f"hi, lo and b differ in shape: {hi.shape}, {lo.shape}, {b.shape}")
    if hi.ndim < min_ndim:
        raise ValueError(f"expected at least {min_ndim} dimension(s) (..., taps), "
                         f"got shape {hi.shape}")
    taps = hi.shape[-1]
    if not 1 <= taps <= MAX_TAPS:
        raise ValueError(f"taps={taps} outside 1..{MAX_TAPS}: the low field of one cascade "
                         f"is exact up to {MAX_TAPS} taps only")
    return hi, lo, b


def _cascade(hi, lo, b):
    a, flag = pack_operand(hi, lo)
    b64 = b.astype(np.int64)
    p = np.zeros(a.shape[:-1], dtype=np.int64)
    for i in range(a.shape[-1]):                    # P_i = A_i * b_i + P_{i-1}, 48-bit register
        p = _wrap(p + a[..., i] * b64[..., i], P_BITS)
    corr = np.where(flag, b64, 0).sum(axis=-1)
    return unpack(p, corr)


def packed_dot(hi, lo, b):
    """``(sum_hi, sum_lo) = (sum_i hi[..., i] * b[..., i], sum_i lo[..., i] * b[..., i])`` over
    the last axis (1..MAX_TAPS taps) of int8 arrays of one shape, computed through one packed
    DSP cascade per leading index (int64 arrays of shape ``hi.shape[:-1]``)."""
    return _cascade(*_check(hi, lo, b, 1))


def packed_dot_lanes(hi, lo, b):
    """``(sum_hi, sum_lo)`` over the last two axes [..., lanes, taps]: each lane one packed
    cascade (:func:`packed_dot`), its unpacked fields then summed over the lanes (a datapath
    of C_in lanes); exact for any lane count."""
    high, low = _cascade(*_check(hi, lo, b, 2))
    return high.sum(axis=-1), low.sum(axis=-1)
