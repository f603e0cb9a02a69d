"""The datapath's arithmetic as DSP48E2-shaped pipelines (issue 10).

All three components are enable-driven pipelines: every register loads when ``en`` is high and holds
otherwise, so the datapath's global advance signal freezes them under output backpressure.
An input presented in an ``en`` cycle appears at the output ``LATENCY`` ``en`` cycles later.
Data registers are reset-less (a DSP48E2's A/B/M/P registers are filled by the data; a reset
would only cost the RST pins a fan-out).

* :class:`MacCascade`: ``sum = sum_i x[i] * w[i]`` over ``taps`` int8 pairs, written as a
  systolic chain: tap i's operands are delayed i cycles, multiplied with an input register
  (A/B), a multiplier register (M) and an output register (P) that adds the previous tap's P.
  ``P_i = M_i + P_{i-1}`` with P_{i-1} a register feeding only that adder is the
  PCOUT -> PCIN cascade pattern of Yosys' ``xilinx_dsp`` (and of Vivado's inference): the
  nine-product adder tree leaves the fabric. The first tap adds nothing: ``xilinx_dsp`` starts a
  cascade only at a DSP whose post-adder is unused, so a bias on tap 0's C port would break the
  chain (the datapath adds the bias with the accumulation instead).
* :class:`PackedMacCascade`: ``sum_hi = sum_i hi[i] * b[i]`` and ``sum_lo = sum_i lo[i] * b[i]``
  over ``taps`` <= 15 int8 triples, two products per DSP48E2 sharing ``b`` (the packing of
  Xilinx WP486, modelled bit for bit by :mod:`py_ref.dsp`, which proves it exact). A fabric
  register stage prepares the 27-bit operand ``A = hi' * 2^19 + lo`` (``hi' = -127`` where
  ``hi = -128``) and the correction term ``flag * b``; then the MacCascade chain
  ``P_i = A_i * b_i + P_{i-1}`` (A/B, M, P registers, PCOUT -> PCIN), the correction
  ``sum_i flag_i * b_i`` summed in a fabric chain beside it, and a registered unpack:
  ``sum_lo = sign-extend(P[18:0])``, ``sum_hi = (P >> 19) + P[18] - corr``.
* :class:`Requantiser`: ``min(255, (relu(acc) * mult + ((1 << shift) >> 1)) >> shift)``, the
  golden model's requantisation (:func:`py_ref.golden.requantise`). The 32 x 16-bit unsigned
  product is split the way two DSP48E2 compute it: ``lo = r[:17] * mult + half`` (A/B, M, P
  registers, the rounding half on C) and ``hi = r[17:] * mult + (lo >> 17)`` one cycle later
  (the ">> 17" cascade of wide multipliers); ``(hi << 17) | lo[:17]`` is exact. The shift is
  done in two registered steps (by 8 * (shift >> 3), then by shift & 7) and the saturation
  compares in a third.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from py_ref.dsp import A_BITS, LOW_BITS, MAX_TAPS, P_BITS

from .config import MULT_BITS, OFM_BITS, SHIFT_BITS

__all__ = ["MacCascade", "PackedMacCascade", "Requantiser", "delay"]


def delay(m, en, value, cycles: int, name: str):
    """``value`` delayed by ``cycles`` enabled cycles through reset-less registers."""
    for i in range(cycles):
        reg = Signal.like(value, name=f"{name}_d{i}", reset_less=True)
        with m.If(en):
            m.d.sync += reg.eq(value)
        value = reg
    return value


class MacCascade(wiring.Component):
    """``sum = sum_i x[i] * w[i]`` (signed int8 x int8, ``acc_bits``-bit signed result),
    ``LATENCY = taps + 2`` enabled cycles: A/B registers, M register, then one P register per
    tap along the chain."""

    def __init__(self, taps: int, acc_bits: int):
        if not isinstance(taps, int) or isinstance(taps, bool) or taps < 1:
            raise ValueError(f"taps must be a positive integer, not {taps!r}")
        self.taps, self.acc_bits = taps, acc_bits
        self.LATENCY = taps + 2
        super().__init__({
            "en": In(1),
            "x": In(data.ArrayLayout(signed(8), taps)),
            "w": In(data.ArrayLayout(signed(8), taps)),
            "sum": Out(signed(acc_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        en = self.en
        prev = None
        for i in range(self.taps):
            # operands of tap i wait i cycles, the last of them being the DSP's A/B register
            a = delay(m, en, self.x[i], i + 1, f"a{i}")
            b = delay(m, en, self.w[i], i + 1, f"b{i}")
            mreg = Signal(signed(16), name=f"m{i}", reset_less=True)
            preg = Signal(signed(self.acc_bits), name=f"p{i}", reset_less=True)
            with m.If(en):
                m.d.sync += [mreg.eq(a * b), preg.eq(mreg if prev is None else mreg + prev)]
            prev = preg
        m.d.comb += self.sum.eq(prev)
        return m


#: The narrowest accumulator of :class:`PackedMacCascade`: a signed field holding
#: MAX_TAPS * 2^14 (15 products -128 * -128), 19 bits.
PACKED_MIN_ACC_BITS = (MAX_TAPS << 14).bit_length() + 1


class PackedMacCascade(wiring.Component):
    """``sum_hi = sum_i hi[i] * b[i]``, ``sum_lo = sum_i lo[i] * b[i]`` (signed int8 x int8,
    ``acc_bits``-bit signed results, 1 <= ``taps`` <= MAX_TAPS = 15), one DSP48E2 per tap,
    ``LATENCY = taps + 4`` enabled cycles (:meth:`latency`).

    The arithmetic (:mod:`py_ref.dsp` proves it and models it bit for bit):

    * Tap i's raw operands (hi, lo, b: 24 bits) wait i systolic cycles; then, at Q(i+1), the
      operand preparation in fabric (its own register stage, so the multiplier's input
      register takes no logic): ``A_i = hi'_i * 2^19 + lo_i`` with ``hi'_i = -127`` if
      ``hi_i = -128`` else ``hi_i``, inside the 27-bit signed A port (``|A_i| <= 127 * 2^19 +
      128 < 2^26``), written as its bits (lo sign-extended to 19 bits under ``hi' - [lo < 0]``,
      no 27-bit adder); ``t_i = flag_i * b_i`` with ``flag_i = (hi_i = -128)``; ``b_i`` (the
      sign-extended int8 on the B port).
    * The MacCascade chain: A/B registers at Q(i+2), M ``= A_i * b_i`` at Q(i+3), P ``P_i = M_i
      + P_{i-1}`` at Q(i+4) (PCOUT -> PCIN).
      ``|P| <= taps * (127 * 128 * 2^19 + 2^14) < 2^37``: P is ``p_bits`` = the minimal exact
      signed width (38 bits at 15 taps, below the DSP's 48), so it never wraps.
    * Beside it in fabric, the negated correction ``d_i = d_{i-1} - t_i`` at Q(i+4), so
      ``d = -corr = -sum_i flag_i * b_i`` arrives with the last P (``|d| <= 15 * 128``).
    * Q(taps+4), the registered unpack: ``sum_lo = sign-extend(P[18:0])`` (exact, ``|sum_lo|
      <= 15 * 2^14 < 2^18``) and ``sum_hi = (P >> 19) + d + P[18]`` (one adder, P[18] its carry
      in), which is ``sum_i hi'_i * b_i - corr = sum_i hi_i * b_i``.

    ``acc_bits`` must hold 15 * 2^14 (>= :data:`PACKED_MIN_ACC_BITS` = 19)."""

    @staticmethod
    def latency(taps: int) -> int:
        """Enabled cycles from an input to its sums: preparation, A/B, M, ``taps`` P, unpack."""
        return taps + 4

    def __init__(self, taps: int, acc_bits: int):
        self._MustUse__silence = True   # a refused configuration is not an unused design
        if not isinstance(taps, int) or isinstance(taps, bool) or not 1 <= taps <= MAX_TAPS:
            raise ValueError(f"taps must be an integer in 1..{MAX_TAPS} (the low field is "
                             f"exact up to {MAX_TAPS} packed products), not {taps!r}")
        if not isinstance(acc_bits, int) or isinstance(acc_bits, bool) \
                or acc_bits < PACKED_MIN_ACC_BITS:
            raise ValueError(f"acc_bits={acc_bits!r} cannot hold {MAX_TAPS} * 2^14: at least "
                             f"{PACKED_MIN_ACC_BITS} bits")
        self._MustUse__silence = False
        self.taps, self.acc_bits = taps, acc_bits
        self.LATENCY = self.latency(taps)
        p_max = taps * ((127 * 128 << LOW_BITS) + (1 << 14))
        self.p_bits = min(P_BITS, p_max.bit_length() + 1)
        self.d_bits = (taps * 128).bit_length() + 1
        super().__init__({
            "en": In(1),
            "hi": In(data.ArrayLayout(signed(8), taps)),
            "lo": In(data.ArrayLayout(signed(8), taps)),
            "b": In(data.ArrayLayout(signed(8), taps)),
            "sum_hi": Out(signed(acc_bits)),
            "sum_lo": Out(signed(acc_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        en = self.en

        def reg(shape, name, value):
            s = Signal(shape, name=name, reset_less=True)
            with m.If(en):
                m.d.sync += s.eq(value)
            return s

        p = d = None
        for i in range(self.taps):
            # the systolic delay of tap i on its raw int8 operands (24 bits, not the prepared
            # 27 + 8 + 8): the preparation below then runs i cycles late, in step with the chain
            hi, lo, b = (delay(m, en, v, i, f"{n}{i}_raw") for n, v in
                         (("hi", self.hi[i]), ("lo", self.lo[i]), ("b", self.b[i])))
            # Q(i+1): operand preparation in fabric. A = hi' * 2^19 + lo as its bits: lo
            # sign-extended to 19 bits, above it hi' - [lo < 0] (an 8-bit decrement, in
            # -128..126), so no 27-bit adder
            flag = hi == -128
            high = Signal(signed(8), name=f"a{i}_high")
            m.d.comb += high.eq(Mux(flag, -127, hi) - lo[7])
            a_prep = reg(signed(A_BITS), f"a{i}_prep",
                         Cat(lo, lo[7].replicate(LOW_BITS - 8), high).as_signed())
            b_prep = reg(signed(8), f"b{i}_prep", b)
            t_prep = reg(signed(8), f"t{i}_prep", Mux(flag, b, 0))
            # tap i: the DSP's A/B register, M, P
            a = delay(m, en, a_prep, 1, f"a{i}")
            bb = delay(m, en, b_prep, 1, f"b{i}")
            mreg = reg(signed(A_BITS + 8), f"m{i}", a * bb)
            p = reg(signed(self.p_bits), f"p{i}", mreg if p is None else mreg + p)
            # the negated correction, in step with P
            t = delay(m, en, t_prep, 2, f"t{i}")
            d = reg(signed(self.d_bits), f"d{i}", -t if d is None else d - t)
        # Q(taps+4): unpack
        lo_sum = reg(signed(self.acc_bits), "sum_lo_q", p[:LOW_BITS].as_signed())
        hi_sum = reg(signed(self.acc_bits), "sum_hi_q",
                     p[LOW_BITS:].as_signed() + d + p[LOW_BITS - 1])
        m.d.comb += [self.sum_lo.eq(lo_sum), self.sum_hi.eq(hi_sum)]
        return m


#: Bits of relu(acc) on the first multiplier (DSP48E2: 27-bit signed A takes 17 unsigned bits
#: with room; the cascade shift between DSP48E2s is 17).
_LO_BITS = 17


class Requantiser(wiring.Component):
    """``value = min(255, (relu(acc) * mult + ((1 << shift) >> 1)) >> shift)``, or 0 when
    ``valid`` is 0, ``LATENCY`` enabled cycles (relu register, M, P of the low product, P of the
    high product, two shift steps, saturation)."""

    LATENCY = 7

    def __init__(self, acc_bits: int):
        self._MustUse__silence = True   # a refused width is not an unused design
        if acc_bits - 1 > 2 * _LO_BITS - 1 + 24:
            raise ValueError(f"acc_bits={acc_bits} is too wide for two DSP48E2 products")
        self._MustUse__silence = False
        self.acc_bits = acc_bits
        super().__init__({
            "en": In(1),
            "acc": In(signed(acc_bits)),
            "mult": In(unsigned(MULT_BITS)),
            "shift": In(unsigned(SHIFT_BITS)),
            "valid": In(1, init=1),     # 0: the value leaves as 0 (a twin's padding byte)
            "value": Out(unsigned(OFM_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        en = self.en
        r_bits = self.acc_bits - 1
        hi_bits = r_bits - _LO_BITS

        def reg(shape, name, value):
            s = Signal(shape, name=name, reset_less=True)
            with m.If(en):
                m.d.sync += s.eq(value)
            return s

        # Q1: relu and the operands of the low product (A/B registers); the rounding half
        relu = Mux(self.acc[-1], 0, self.acc[:r_bits])
        r = reg(r_bits, "r", relu)
        mult = reg(MULT_BITS, "mult", self.mult)
        shift = reg(SHIFT_BITS, "shift", self.shift)
        half = reg(32, "half", (Const(1, 33) << self.shift)[1:])
        # low product: M at Q2, P = M + half at Q3
        m_lo = reg(_LO_BITS + MULT_BITS, "m_lo", r[:_LO_BITS] * mult)
        half2 = reg(32, "half2", half)
        p_lo = reg(_LO_BITS + MULT_BITS + 1, "p_lo", m_lo + half2)
        # high product one cycle later: A/B at Q2, M at Q3, P = M + (P_lo >> 17) at Q4
        a_hi = reg(hi_bits, "a_hi", r[_LO_BITS:])
        b_hi = reg(MULT_BITS, "b_hi", mult)
        m_hi = reg(hi_bits + MULT_BITS, "m_hi", a_hi * b_hi)
        p_hi = reg(hi_bits + MULT_BITS + 1, "p_hi", m_hi + (p_lo >> _LO_BITS))
        low = reg(_LO_BITS, "low", p_lo[:_LO_BITS])
        shift4 = delay(m, en, shift, 3, "shift")
        full = Signal(r_bits + MULT_BITS + 1)
        m.d.comb += full.eq((p_hi << _LO_BITS) | low)
        # Q5: shift by 8 * (shift >> 3); Q6: by shift & 7; Q7: saturate at 255
        coarse = reg(len(full), "coarse", full >> (shift4[3:] * 8))
        fine_shift = reg(3, "fine_shift", shift4[:3])
        fine = reg(len(full), "fine", coarse >> fine_shift)
        valid = delay(m, en, self.valid, self.LATENCY - 1, "valid")
        out = reg(OFM_BITS, "out", Mux(fine[OFM_BITS:].any(), 255, fine[:OFM_BITS])
                  & valid.replicate(OFM_BITS))
        m.d.comb += self.value.eq(out)
        return m
