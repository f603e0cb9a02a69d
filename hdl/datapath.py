"""The pair datapath of the engine: two outputs of one channel, one at a pixel of each twin
instance, per G cycles, from one packed DSP48E2 chain.

The work is dealt by pixel (:mod:`py_ref.schedule`): every segment of P pixels of a row gives one
pixel to each instance, and an instance computes the uncompressed channels of its pixels.
Instances 2d and 2d + 1 (twins A and B) share a datapath: in every step both compute the same
channel, so each DSP48E2 multiplies the channel's weight by both twins' pixels at once
(:class:`hdl.mac.PackedMacCascade`, the scheme of :mod:`py_ref.dsp`). The datapath holds every
channel's filter and requantisation parameters (slot = channel) and, instead of the image, the
3x3 windows of its twins' own pixels, one window store per twin, which the shared window
dealer (:class:`hdl.dealer.WindowDealer`) writes while the previous image computes.

Pieces, each a :class:`wiring.Component` with grouped ports:

* :class:`WindowStore`: the instance's pixel table and the windows of its pixels for two images,
  one ``window_bits`` word per (segment, group): the strip broadcast by the dealer goes in, one
  window read per cycle comes out.
* :class:`Datapath`: steps ``(slot, seg[t], valid[t], index, buf)`` in, ``(value[t], index)``
  results out (t: the twin; a twin without an entry yields 0), both valid/ready streams;
  ``load`` (:class:`LoadSignature`) takes the strips, the twins' pixel tables, filters and quant
  records.

Pipeline (every stage advances together when the result register can take a value, so a stall
on ``result`` freezes it and a stall on ``work`` inserts bubbles), laid out for 300 MHz on
UltraScale+ (issue 10: at most 6 logic levels between registers, the products and their sum in
DSP48E2s)::

    accept   work entry -> entry register
    E        group g of the entry                                                   G cycles
    C        the twins' window addresses seg[t]*G + g, filter address slot*G + g; reads
    D        each window's nine pixels meet the filter's nine taps
    MAC      per lane a 9-tap packed DSP48E2 cascade (hdl.mac.PackedMacCascade: twin A
             low, twin B high), each twin's lanes added                          MAC_LATENCY
    acc      acc[t] = (g == 0 ? bias : acc[t]) + sum[t] (G > 1: kept carry-save, acc + carry)
    q        the slot's mult and shift (G > 1: acc + carry added into the q register)
    requant  per twin ReLU, * mult + rounding half, >> shift, saturate
             (hdl.mac.Requantiser) whose last register is the result register

With entries offered back to back, entry e's result leaves in cycle ``(e+1)*G +
PIPELINE_LATENCY - 1`` (entry 0 offered in cycle 0): E entries take exactly ``E*G +
PIPELINE_LATENCY`` cycles (:data:`hdl.config.PIPELINE_LATENCY`, the one name of this depth). The arithmetic is
the golden contract of :mod:`py_ref.golden`; widths come from :class:`~hdl.config.AccelConfig`.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import (AccelConfig, BIAS_BITS, MULT_BITS, OFM_BITS, PIPELINE_LATENCY, SHIFT_BITS,
                     SHIFT_SLOT_BITS)
from .dealer import StripSignature
from .mac import PackedMacCascade, Requantiser, delay
from .protocol import pixel_layout

__all__ = ["Datapath", "WindowStore", "WriteSignature", "LoadSignature", "WindowReadSignature",
           "window_addr_shape", "buffer_windows", "work_layout", "result_layout", "quant_layout",
           "entries_per_instance", "pixels_signature", "LANE_STAGES", "MAC_LATENCY"]

#: Registered levels of the tree that adds the lanes' chains (up to 16 lanes); constant, so the
#: latency does not depend on the configuration.
LANE_STAGES = 4
#: From the multipliers' operands (stage D) to the lanes' sums.
MAC_LATENCY = PackedMacCascade.latency(9) + LANE_STAGES
#: Cycles beyond E*G that E back-to-back entries take, first offer to last result inclusive:
#: the entry register, the address and read stages C and D, the MAC, the accumulator, the
#: quant-read stage and the requantiser (whose last register is the result register).
_STAGES = 1 + 2 + MAC_LATENCY + 2 + Requantiser.LATENCY
# the host side reads the same fact from hdl/config.py without loading Amaranth
assert _STAGES == PIPELINE_LATENCY, f"hdl/config.py: PIPELINE_LATENCY must be {_STAGES}"


def entries_per_instance(cfg: AccelConfig) -> int:
    """Most work entries one instance can be dealt, and most steps of a pair's run: every one of
    the N channels at each of its S pixels (of the design's maxima)."""
    cfg = cfg.design
    return cfg.out_channels * cfg.segments


def _index_shape(count: int) -> range:
    """range(count), but at least one bit wide: Verilog has no zero-width ports."""
    return range(max(count, 2))


def work_layout(cfg: AccelConfig, slots: int) -> data.StructLayout:
    """A step: compute the output of the channel in ``slot`` at twin t's pixel of segment
    ``seg[t]`` for every twin with ``valid[t]``. ``index`` is the step's position in the pair's
    run (k), carried through to the result."""
    cfg = cfg.design
    return data.StructLayout({
        "slot": _index_shape(slots),
        "seg": data.ArrayLayout(_index_shape(cfg.segments), cfg.twins),
        "valid": data.ArrayLayout(1, cfg.twins),
        "index": range(entries_per_instance(cfg)),
        "buf": 1,       # which window buffer holds the step's image (double buffering)
    })


def result_layout(cfg: AccelConfig) -> data.StructLayout:
    """A step's outputs, twin A's in ``value[0]`` (0 for a twin without an entry)."""
    return data.StructLayout({"value": data.ArrayLayout(OFM_BITS, cfg.design.twins),
                              "index": range(entries_per_instance(cfg))})


def quant_layout() -> data.StructLayout:
    """One channel's requantisation parameters; the bit positions of the protocol's 64-bit quant
    record (bias | mult << 32 | shift << 48), whose upper bits it ignores."""
    return data.StructLayout({"bias": signed(BIAS_BITS), "mult": unsigned(MULT_BITS),
                              "shift": unsigned(SHIFT_SLOT_BITS)})


class WriteSignature(wiring.Signature):
    """A memory write port seen from the writer: ``en``, ``addr``, ``data``; with ``lanes`` = n,
    ``data`` is an n-element array and ``en`` has a bit per element (lane i written where
    ``en[i]``: :class:`amaranth.lib.memory.Memory`'s granularity)."""

    def __init__(self, addr_shape, data_shape, lanes: int = 1):
        super().__init__({"en": Out(lanes), "addr": Out(addr_shape), "data": Out(data_shape)})


class WindowReadSignature(wiring.Signature):
    """The window memory read, seen from the reader (synchronous, with enable): ``addr`` =
    ``buf * buffer_windows + seg*G + g``."""

    def __init__(self, cfg: AccelConfig):
        cfg = cfg.design
        super().__init__({
            "en": Out(1),
            "addr": Out(window_addr_shape(cfg)),
            "data": In(data.ArrayLayout(cfg.pixel_bits, 9)),
        })


def pixels_signature(cfg: AccelConfig) -> WriteSignature:
    """The write port of an instance's pixel table (address: segment)."""
    return WriteSignature(_index_shape(cfg.design.segments), pixel_layout(cfg.design))


class LoadSignature(wiring.Signature):
    """What a frame and the deployment load into one datapath, seen from the engine: the strips
    of the window dealer (:class:`~hdl.dealer.StripSignature`), filters (address ``slot*G + g``)
    and quant records (``slot``); the twins' pixel tables are the datapath's ``pixels[t]``."""

    def __init__(self, cfg: AccelConfig, slots: int):
        cfg = cfg.design
        super().__init__({
            "strip": Out(StripSignature(cfg)),
            "weights": Out(WriteSignature(_index_shape(slots * cfg.groups), cfg.weight_bits)),
            "quant": Out(WriteSignature(_index_shape(slots), quant_layout())),
        })


#: The first of the window store's two cuts of a strip takes CUT + 2 columns from a multiple of
#: CUT, the second one window among them (:class:`WindowStore`).
CUT = 4


def buffer_windows(cfg: AccelConfig) -> int:
    """Window addresses per buffer: S*G, rounded up to a power of two so that the buffer is the
    address's top bit (the design's maxima: every layer's windows of one image fit)."""
    cfg = cfg.design
    return 1 << max(cfg.segments * cfg.groups - 1, 1).bit_length()


#: Depth of one RAMB36E2 column at its widest aspect (512 x 72) and of one URAM288 (4K x 72).
BRAM36_DEPTH, URAM_DEPTH = 512, 4096


def window_ram_style(cfg: AccelConfig, twin: int) -> str | None:
    """``"ultra"`` when twin ``twin``'s window memory is UltraRAM, else None (block RAM).

    A window memory is ``window_bits`` wide, 2 * buffer_windows deep: in block RAM each 72-bit
    column takes ceil(depth / 512) RAMB36, in UltraRAM one URAM288 up to 4K deep. When the
    memory is deeper than one RAMB36 column (the network design: 1,024), twin 0's goes to
    UltraRAM and twin 1's stays in block RAM, so a pair draws on both pools (the instance
    count a die region holds is bounded by the sum, not by one of them); a shallower memory (the
    default design: 512, one RAMB36 per column) stays in block RAM. UltraRAM has no initial
    contents: every window a step reads was written during its image (WindowStore)."""
    depth = 2 * buffer_windows(cfg)
    return "ultra" if twin == 0 and BRAM36_DEPTH < depth <= URAM_DEPTH else None


def window_addr_shape(cfg: AccelConfig) -> range:
    """Address in the double-buffered window memory: ``buf * buffer_windows + seg*G + g``."""
    return range(2 * buffer_windows(cfg))


class WindowStore(wiring.Component):
    """The instance's windows of two images: ``strip`` (from the dealer) in, ``read`` out.

    ``pixels`` holds the instance's pixel table (:attr:`py_ref.schedule.Schedule.offsets`: for
    segment s, the offset of the instance's pixel in it, if any), read asynchronously at the
    strip's segment. In the strip's cycle the CUT + 2 columns from CUT * (offset // CUT) go into
    the strip register; the next cycle the window of the instance's pixel (columns offset % CUT
    .. + 2 of them, the three rows) is written at ``buf * buffer_windows + seg*G + g``, so a
    strip's window is readable :data:`hdl.dealer.WRITE_DELAY` cycles after the strip. One
    memory of ``window_bits`` x 2*buffer_windows (one 512 x 72 RAMB36 on the default design,
    :func:`window_ram_style`): the dealer writes one buffer while the datapath reads the other
    (:class:`~hdl.dealer.WindowDealer` holds an image back until its buffer is released).

    Every strip writes its window, the instance's pixel in it or not (a segment without one
    writes the window at offset 0, which no valid step reads): a step's invalid twin reads
    segment 0 (the host's zero entry), so every address a step reads holds a window of the
    step's own image, and the memory may be UltraRAM, which has no initial contents
    (:func:`window_ram_style`; twin ``twin``'s store)."""

    def __init__(self, cfg: AccelConfig, twin: int = 0):
        self.cfg = cfg = cfg.design
        self.twin = twin
        super().__init__({
            "strip": In(StripSignature(cfg)),
            "pixels": In(pixels_signature(cfg)),
            "read": In(WindowReadSignature(cfg)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        width = cfg.instances + 2
        # the pixel table is read asynchronously (a LUT RAM), so the strip's own cycle knows
        # the offset and the first cut happens before the strip register
        table = memory.Memory(shape=pixel_layout(cfg), depth=max(cfg.segments, 2), init=[])
        m.submodules.pixels = table
        tw, tr = table.write_port(), table.read_port(domain="comb")
        m.d.comb += [tw.en.eq(self.pixels.en), tw.addr.eq(self.pixels.addr),
                     tw.data.eq(self.pixels.data), tr.addr.eq(self.strip.seg)]
        # the window (strip columns offset .. offset + 2) is cut in two registered steps: the
        # K + 2 columns from K * (offset // K) into the strip register, then offset % K among
        # them (two 4-way selections per bit instead of one P-way one; the register holds
        # K + 2 columns, not P + 2)
        k = CUT
        kb = k.bit_length() - 1
        assert k == 1 << kb, "CUT is a power of two"
        coarse, fine = tr.data.offset >> kb, tr.data.offset[:kb]
        cols = []
        for c in range(k + 2):
            cols.append([Array(self.strip.data[r * width + q * k + c] if q * k + c < width
                               else Const(0, cfg.pixel_bits)
                               for q in range(-(-cfg.instances // k)))[coarse]
                         for r in range(3)])
        held = Signal(data.ArrayLayout(cfg.pixel_bits, 3 * (k + 2)), reset_less=True)
        en, buf = Signal(), Signal(reset_less=True)
        seg = Signal.like(self.strip.seg, reset_less=True)
        g = Signal.like(self.strip.g, reset_less=True)
        at = Signal(range(k), reset_less=True)
        m.d.sync += [held[r * (k + 2) + c].eq(cols[c][r]) for c in range(k + 2) for r in range(3)]
        m.d.sync += [en.eq(self.strip.en), buf.eq(self.strip.buf),
                     seg.eq(self.strip.seg), g.eq(self.strip.g), at.eq(fine)]
        window = []
        for r in range(3):
            for c in range(3):
                window.append(Array(held[r * (k + 2) + o + c] for o in range(k))[at])
        style = window_ram_style(cfg, self.twin)
        mem = memory.Memory(shape=cfg.window_bits, depth=2 * buffer_windows(cfg), init=[],
                            attrs={"ram_style": style} if style else None)
        m.submodules.windows = mem
        wp, rp = mem.write_port(), mem.read_port()
        k = buffer_windows(cfg).bit_length() - 1
        m.d.comb += [wp.en.eq(en),
                     wp.addr.eq(Cat((_times(seg, cfg.groups) + g)[:k], buf)),
                     wp.data.eq(Cat(window)),
                     rp.en.eq(self.read.en), rp.addr.eq(self.read.addr),
                     self.read.data.eq(rp.data)]
        return m


def _times(value, k: int):
    """``value * k`` for a constant k >= 0 as shifted adds (a constant multiply would be mapped
    to a DSP48E2)."""
    terms = [value << i for i in range(k.bit_length()) if k >> i & 1]
    return sum(terms[1:], terms[0]) if terms else Const(0)


class Datapath(wiring.Component):
    """One pair of twin instances: steps ``(slot, seg[t], valid[t], index, buf)`` in,
    ``(value[t], index)`` out.

    ``slots`` is how many channels the datapath holds (the engine: N, slot = channel).
    ``groups`` is the layer's G (1 .. the design's G, set at run time): a step takes G cycles;
    windows and filters are addressed with the design's G, so a layer of fewer groups leaves
    the rest of each address range unused.
    ``load`` groups the write ports (:class:`LoadSignature`): the dealer's strips, the filters
    (the protocol's filter record of one channel group) and the quant records; ``pixels[t]``
    writes twin t's pixel table; write them between frames.
    """

    def __init__(self, cfg: AccelConfig, slots: int):
        self._MustUse__silence = True   # a refused configuration is not an unused design
        if not isinstance(slots, int) or isinstance(slots, bool):
            raise TypeError(f"slots must be an integer, not {slots!r}")
        if slots < 1:
            raise ValueError(f"slots must be at least 1, not {slots!r}")
        self._MustUse__silence = False
        self.cfg = cfg = cfg.design
        self.slots = slots
        super().__init__({
            "work": In(stream.Signature(work_layout(cfg, slots))),
            "result": Out(stream.Signature(result_layout(cfg))),
            "load": In(LoadSignature(cfg, slots)),
            "pixels": In(pixels_signature(cfg)).array(cfg.twins),  # twin t's pixel table
            "groups": In(range(cfg.groups + 1), init=cfg.groups),  # the layer's G (run time)
            "active": Out(1),   # a step's group is being multiplied this cycle
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        stores = []
        for t in range(cfg.twins):
            store = m.submodules[f"store{t}"] = WindowStore(cfg, t)
            wiring.connect(m, wiring.flipped(self.pixels[t]), store.pixels)
            stores.append(store)
        wiring.connect(m, wiring.flipped(self.load.strip), *[st.strip for st in stores])
        weights = self._memory(m, "weights", cfg.weight_bits, self.slots * cfg.groups)
        quant_mem = memory.Memory(shape=quant_layout(), depth=self.slots, init=[])
        m.submodules.quant = quant_mem
        qw = quant_mem.write_port()
        m.d.comb += [qw.en.eq(self.load.quant.en), qw.addr.eq(self.load.quant.addr),
                     qw.data.eq(self.load.quant.data)]

        # The whole pipeline moves when the result register is free or being emptied.
        adv = Signal()
        m.d.comb += adv.eq(~self.result.valid | self.result.ready)
        ent, g, first, last = self._entry(m, adv)
        addr = self._address(m, adv, ent, g, first, last)
        x, w, side = self._read(m, adv, addr, [st.read for st in stores], weights)
        acc = self._mac(m, adv, x, w, side, quant_mem.read_port())
        self._requantise(m, adv, acc, quant_mem.read_port())
        return m

    def _memory(self, m, name, shape, depth):
        """A memory written through the like-named load port; returns its read port."""
        mem = memory.Memory(shape=shape, depth=depth, init=[])
        m.submodules[name] = mem
        wp = mem.write_port()
        port = getattr(self.load, name)
        m.d.comb += [wp.en.eq(port.en), wp.addr.eq(port.addr), wp.data.eq(port.data)]
        return mem.read_port()

    def _stage(self, m, adv, name, fields, values):
        """Registers for ``fields`` (name -> shape), loaded from ``values`` on every advance.
        ``valid`` keeps its reset; the data fields are reset-less."""
        regs = {k: Signal(shape, name=f"{name}_{k}", reset_less=(k != "valid"))
                for k, shape in fields.items()}
        with m.If(adv):
            m.d.sync += [regs[k].eq(values[k]) for k in fields]
        return regs

    def _pass(self, s, *names):
        return {k: s[k].shape() for k in names}

    def _entry(self, m, adv):
        """Entry register: holds one step for its G group cycles; accepts the next step in the
        last one, so steps flow back to back."""
        cfg = self.cfg
        wk = self.work
        valid = Signal()
        g = Signal(range(cfg.groups))
        last = Signal()
        m.d.comb += [last.eq(g == self.groups - 1),
                     wk.ready.eq(~valid | (adv & last))]
        # register -> step field (the twins' valid bits are "twin": "valid" is the register's)
        fields = dict(slot="slot", index="index", seg="seg", twin="valid", buf="buf")
        ent = {k: Signal(wk.payload[f].shape(), name=f"e_{k}", reset_less=True)
               for k, f in fields.items()}
        with m.If(wk.valid & wk.ready):
            m.d.sync += [valid.eq(1), g.eq(0)] + [ent[k].eq(wk.payload[f])
                                                  for k, f in fields.items()]
        with m.Elif(adv & valid):
            m.d.sync += [valid.eq(~last), g.eq(Mux(last, 0, g + 1))]
        m.d.comb += self.active.eq(adv & valid)
        ent["valid"] = valid
        return ent, g, g == 0, last

    def _address(self, m, adv, ent, g, first, last):
        """Stage C: the twins' window addresses ``buf*buffer_windows + seg[t]*G + g`` and the
        filter address ``slot*G + g`` (wiring when G = 1)."""
        cfg = self.cfg
        k = buffer_windows(cfg).bit_length() - 1
        side = dict(valid=1, first=1, last=1, slot=ent["slot"].shape(), twin=ent["twin"].shape(),
                    index=ent["index"].shape(), wsel=range(self.slots * cfg.groups))
        values = dict(valid=ent["valid"], first=first, last=last, slot=ent["slot"],
                      twin=ent["twin"], index=ent["index"],
                      wsel=_times(ent["slot"], cfg.groups) + g)
        for t in range(cfg.twins):
            side[f"addr{t}"] = window_addr_shape(cfg)
            values[f"addr{t}"] = Cat((_times(ent["seg"][t], cfg.groups) + g)[:k], ent["buf"])
        return self._stage(m, adv, "c", side, values)

    def _read(self, m, adv, c, reads, weights):
        """Stage C reads the twins' windows and the filter of (slot, g); stage D holds them as
        the multipliers' operands (window pixel b meets filter tap b)."""
        cfg = self.cfg
        for t, read in enumerate(reads):
            m.d.comb += [read.en.eq(adv), read.addr.eq(c[f"addr{t}"])]
        m.d.comb += [weights.en.eq(adv), weights.addr.eq(c["wsel"])]
        d = self._stage(m, adv, "d", self._pass(c, "valid", "first", "last", "index", "slot",
                                                "twin"), c)
        lanes = cfg.lanes
        x = [[[None] * 9 for _ in range(lanes)] for _ in reads]
        w = [[None] * 9 for _ in range(lanes)]
        for b in range(9):
            w_tap = weights.data.word_select(b, 8 * lanes)
            for lane in range(lanes):
                w[lane][b] = w_tap.word_select(lane, 8).as_signed()
                for t, read in enumerate(reads):
                    x[t][lane][b] = read.data[b].word_select(lane, 8).as_signed()
        return x, w, d

    def _mac(self, m, adv, x, w, d, quant):
        """One :class:`~hdl.mac.PackedMacCascade` per lane (twin A's pixels low, twin B's high;
        a lone twin leaves the high operand 0), each twin's lanes summed by a registered adder
        tree of LANE_STAGES levels, then the accumulation over channel groups starting from the
        slot's bias (read one stage ahead)."""
        cfg = self.cfg
        sums = [[] for _ in range(cfg.twins)]
        for lane in range(cfg.lanes):
            mac = m.submodules[f"mac{lane}"] = PackedMacCascade(9, cfg.acc_bits)
            m.d.comb += mac.en.eq(adv)
            for b in range(9):
                m.d.comb += [mac.lo[b].eq(x[0][lane][b]), mac.b[b].eq(w[lane][b])]
                if cfg.twins > 1:
                    m.d.comb += mac.hi[b].eq(x[1][lane][b])
            sums[0].append(mac.sum_lo)
            if cfg.twins > 1:
                sums[1].append(mac.sum_hi)
        for t in range(cfg.twins):
            for level in range(LANE_STAGES):
                sums[t] = [self._reg(m, adv, f"lanes{t}_{level}_{i // 2}",
                                     sums[t][i] + sums[t][i + 1] if i + 1 < len(sums[t])
                                     else sums[t][i])
                           for i in range(0, len(sums[t]), 2)]
            assert len(sums[t]) == 1, "more lanes than LANE_STAGES levels can add"
        chain = MAC_LATENCY
        s = {k: delay(m, adv, d[k], chain, f"s_{k}")
             for k in ("first", "last", "index", "slot", "twin")}
        s["valid"] = _delay_valid(m, adv, d["valid"], chain)
        m.d.comb += [quant.en.eq(adv),
                     quant.addr.eq(delay(m, adv, d["slot"], chain - 1, "bias_slot"))]
        accs = []
        for t in range(cfg.twins):
            acc = Signal(signed(cfg.acc_bits), name=f"acc{t}", reset_less=True)
            if cfg.groups == 1:     # every group is the first: no mux in front of the adder
                with m.If(adv & s["valid"]):
                    m.d.sync += acc.eq(quant.data.bias + sums[t][0])
                accs.append(acc)
                continue
            # G > 1: the accumulator is kept carry-save, acc + carry (mod 2^acc_bits, where the
            # true sum always fits): each group adds its lane sum with one full adder per bit
            # (one LUT level, no carry chain behind the first-group mux); the q stage adds the
            # two halves with a carry chain from registers, in the cycle it registers them
            carry = Signal(signed(cfg.acc_bits), name=f"acc{t}_carry", reset_less=True)
            a = Signal(signed(cfg.acc_bits), name=f"acc{t}_a")
            b = Signal(signed(cfg.acc_bits), name=f"acc{t}_b")
            c = Signal(signed(cfg.acc_bits), name=f"acc{t}_c")
            m.d.comb += [a.eq(Mux(s["first"], quant.data.bias, acc)),
                         b.eq(Mux(s["first"], 0, carry)), c.eq(sums[t][0])]
            with m.If(adv & s["valid"]):
                m.d.sync += [acc.eq(a ^ b ^ c),
                             carry.eq(Cat(Const(0, 1), ((a & b) | (a & c) | (b & c))[:-1]))]
            accs.append(acc + carry)
        done = self._stage(m, adv, "acc", dict(valid=1, index=s["index"].shape(),
                                               slot=s["slot"].shape(), twin=s["twin"].shape()),
                           dict(valid=s["valid"] & s["last"], index=s["index"], slot=s["slot"],
                                twin=s["twin"]))
        done["acc"] = accs
        return done

    def _reg(self, m, adv, name, value):
        reg = Signal(signed(self.cfg.acc_bits), name=name, reset_less=True)
        with m.If(adv):
            m.d.sync += reg.eq(value)
        return reg

    def _requantise(self, m, adv, s, quant):
        """The slot's mult and shift (a second read port of the quant memory, read one stage
        ahead), then per twin a :class:`~hdl.mac.Requantiser` into the result register."""
        cfg = self.cfg
        m.d.comb += [quant.en.eq(adv), quant.addr.eq(s["slot"])]
        fields = dict(valid=1, index=s["index"].shape(), twin=s["twin"].shape())
        values = dict(valid=s["valid"], index=s["index"], twin=s["twin"])
        for t in range(cfg.twins):
            fields[f"acc{t}"] = signed(cfg.acc_bits)
            values[f"acc{t}"] = s["acc"][t]
        q = self._stage(m, adv, "q", fields, values)
        for t in range(cfg.twins):
            rq = m.submodules[f"requantiser{t}"] = Requantiser(cfg.acc_bits)
            m.d.comb += [rq.en.eq(adv), rq.acc.eq(q[f"acc{t}"]), rq.mult.eq(quant.data.mult),
                         rq.shift.eq(quant.data.shift[:SHIFT_BITS]), rq.valid.eq(q["twin"][t]),
                         self.result.payload.value[t].eq(rq.value)]
        index = delay(m, adv, q["index"], Requantiser.LATENCY, "r_index")
        m.d.comb += self.result.payload.index.eq(index)
        with m.If(adv):
            m.d.sync += self.result.valid.eq(
                _delay_valid(m, adv, q["valid"], Requantiser.LATENCY - 1))


def _delay_valid(m, adv, value, cycles):
    """Like :func:`~hdl.mac.delay`, for the valid bits: registers with a reset, so a reset
    empties the pipeline."""
    for i in range(cycles):
        reg = Signal(name=f"valid_d{i}")
        with m.If(adv):
            m.d.sync += reg.eq(value)
        value = reg
    return value
