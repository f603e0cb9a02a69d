"""The instance datapath of the engine: one output of any channel, at one of its pixels, per G
cycles.

The work is dealt by pixel (:mod:`py_ref.schedule`): every segment of P pixels of a row gives one
pixel to each instance, and an instance computes the uncompressed channels of its pixels. It
holds every channel's filter and requantisation parameters (slot = channel) and, instead of the
image, the 3x3 windows of its own pixels, which the shared window dealer
(:class:`hdl.dealer.WindowDealer`) writes while the previous image computes.

Pieces, each a :class:`wiring.Component` with grouped ports:

* :class:`WindowStore`: the instance's pixel table and the windows of its pixels for two images,
  one ``window_bits`` word per (segment, group): the strip broadcast by the dealer goes in, one
  window read per cycle comes out.
* :class:`Datapath`: work entries ``(slot, seg, index, buf)`` in, ``(value, index)`` results
  out, both valid/ready streams; ``load`` (:class:`LoadSignature`) takes the strips, the pixel
  table, filters and quant records.

Pipeline (every stage advances together when the result register can take a value, so a stall
on ``result`` freezes it and a stall on ``work`` inserts bubbles), laid out for 300 MHz on
UltraScale+ (issue 10: at most 6 logic levels between registers, the products and their sum in
DSP48E2s)::

    accept   work entry -> entry register
    E        group g of the entry                                                   G cycles
    C        window address seg*G + g and filter address slot*G + g; the reads
    D        the window's nine pixels meet the filter's nine taps
    MAC      per lane a 9-tap DSP48E2 cascade (hdl.mac.MacCascade), lanes added    MAC_LATENCY
    acc      acc = (g == 0 ? bias : acc) + sum
    q        the slot's mult and shift
    requant  ReLU, * mult + rounding half, >> shift, saturate (hdl.mac.Requantiser)
             whose last register is the result register

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
from .mac import MacCascade, Requantiser, delay
from .protocol import pixel_layout

__all__ = ["Datapath", "WindowStore", "WriteSignature", "LoadSignature", "WindowReadSignature",
           "window_addr_shape", "buffer_windows", "work_layout", "result_layout", "quant_layout",
           "entries_per_instance", "LANE_STAGES", "MAC_LATENCY"]

#: Registered levels of the tree that adds the lanes' chains (up to 16 lanes); constant, so the
#: latency does not depend on the configuration.
LANE_STAGES = 4
#: From the multipliers' operands (stage D) to the lanes' sum.
MAC_LATENCY = 9 + 2 + LANE_STAGES
#: Cycles beyond E*G that E back-to-back entries take, first offer to last result inclusive:
#: the entry register, the address and read stages C and D, the MAC, the accumulator, the
#: quant-read stage and the requantiser (whose last register is the result register).
_STAGES = 1 + 2 + MAC_LATENCY + 2 + Requantiser.LATENCY
# the host side reads the same fact from hdl/config.py without loading Amaranth
assert _STAGES == PIPELINE_LATENCY, f"hdl/config.py: PIPELINE_LATENCY must be {_STAGES}"


def entries_per_instance(cfg: AccelConfig) -> int:
    """Most work entries one instance can be dealt: every one of the N channels at each of its
    S pixels (of the design's maxima)."""
    cfg = cfg.design
    return cfg.out_channels * cfg.segments


def _index_shape(count: int) -> range:
    """range(count), but at least one bit wide: Verilog has no zero-width ports."""
    return range(max(count, 2))


def work_layout(cfg: AccelConfig, slots: int) -> data.StructLayout:
    """A work entry: compute the output of the channel in ``slot`` at the instance's pixel of
    segment ``seg``. ``index`` is the entry's position in the instance's run (k), carried
    through to the result."""
    cfg = cfg.design
    return data.StructLayout({
        "slot": _index_shape(slots),
        "seg": _index_shape(cfg.segments),
        "index": range(entries_per_instance(cfg)),
        "buf": 1,       # which window buffer holds the entry's image (double buffering)
    })


def result_layout(cfg: AccelConfig) -> data.StructLayout:
    return data.StructLayout({"value": OFM_BITS, "index": range(entries_per_instance(cfg))})


def quant_layout() -> data.StructLayout:
    """One channel's requantisation parameters; the bit positions of the protocol's 64-bit quant
    record (bias | mult << 32 | shift << 48), whose upper bits it ignores."""
    return data.StructLayout({"bias": signed(BIAS_BITS), "mult": unsigned(MULT_BITS),
                              "shift": unsigned(SHIFT_SLOT_BITS)})


class WriteSignature(wiring.Signature):
    """A memory write port seen from the writer: ``en``, ``addr``, ``data``."""

    def __init__(self, addr_shape, data_shape):
        super().__init__({"en": Out(1), "addr": Out(addr_shape), "data": Out(data_shape)})


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


class LoadSignature(wiring.Signature):
    """What a frame and the deployment load into one datapath, seen from the engine: the strips
    of the window dealer (:class:`~hdl.dealer.StripSignature`), the instance's pixel table
    (address: segment), filters (address ``slot*G + g``) and quant records (``slot``)."""

    def __init__(self, cfg: AccelConfig, slots: int):
        cfg = cfg.design
        super().__init__({
            "strip": Out(StripSignature(cfg)),
            "pixels": Out(WriteSignature(_index_shape(cfg.segments), pixel_layout(cfg))),
            "weights": Out(WriteSignature(_index_shape(slots * cfg.groups), cfg.weight_bits)),
            "quant": Out(WriteSignature(_index_shape(slots), quant_layout())),
        })


def buffer_windows(cfg: AccelConfig) -> int:
    """Window addresses per buffer: S*G, rounded up to a power of two so that the buffer is the
    address's top bit (the design's maxima: every layer's windows of one image fit)."""
    cfg = cfg.design
    return 1 << max(cfg.segments * cfg.groups - 1, 1).bit_length()


def window_addr_shape(cfg: AccelConfig) -> range:
    """Address in the double-buffered window memory: ``buf * buffer_windows + seg*G + g``."""
    return range(2 * buffer_windows(cfg))


class WindowStore(wiring.Component):
    """The instance's windows of two images: ``strip`` (from the dealer) in, ``read`` out.

    ``pixels`` holds the instance's pixel table (:attr:`py_ref.schedule.Schedule.offsets`: for
    segment s, the offset of the instance's pixel in it, if any). Each strip is registered while
    the table is read at its segment; the next cycle the window of the instance's pixel (strip
    columns offset .. offset + 2 of the three rows) is written at ``buf * buffer_windows +
    seg*G + g``, so a strip's window is readable :data:`hdl.dealer.WRITE_DELAY` cycles after
    the strip. One memory of ``window_bits`` x 2*buffer_windows (one 512 x 72 RAMB36 on the
    default design): the dealer writes one buffer while the datapath reads the other
    (:class:`~hdl.dealer.WindowDealer` holds an image back until its buffer is released)."""

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg = cfg.design
        super().__init__({
            "strip": In(StripSignature(cfg)),
            "pixels": In(WriteSignature(_index_shape(cfg.segments), pixel_layout(cfg))),
            "read": In(WindowReadSignature(cfg)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        width = cfg.instances + 2
        table = memory.Memory(shape=pixel_layout(cfg), depth=max(cfg.segments, 2), init=[])
        m.submodules.pixels = table
        tw, tr = table.write_port(), table.read_port()
        m.d.comb += [tw.en.eq(self.pixels.en), tw.addr.eq(self.pixels.addr),
                     tw.data.eq(self.pixels.data), tr.addr.eq(self.strip.seg), tr.en.eq(1)]
        held = Signal.like(self.strip.data, reset_less=True)
        en, buf = Signal(), Signal(reset_less=True)
        seg = Signal.like(self.strip.seg, reset_less=True)
        g = Signal.like(self.strip.g, reset_less=True)
        m.d.sync += [held.eq(self.strip.data), en.eq(self.strip.en), buf.eq(self.strip.buf),
                     seg.eq(self.strip.seg), g.eq(self.strip.g)]
        offset = tr.data.offset
        window = []
        for r in range(3):
            for c in range(3):
                window.append(Array(held[r * width + o + c] for o in range(cfg.instances))[offset])
        mem = memory.Memory(shape=cfg.window_bits, depth=2 * buffer_windows(cfg), init=[])
        m.submodules.windows = mem
        wp, rp = mem.write_port(), mem.read_port()
        k = buffer_windows(cfg).bit_length() - 1
        m.d.comb += [wp.en.eq(en & tr.data.valid),
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
    """One instance: work entries ``(slot, seg, index, buf)`` in, ``(value, index)`` out.

    ``slots`` is how many channels the instance holds (the engine: N, slot = channel).
    ``groups`` is the layer's G (1 .. the design's G, set at run time): an entry takes G cycles;
    windows and filters are addressed with the design's G, so a layer of fewer groups leaves
    the rest of each address range unused.
    ``load`` groups the write ports (:class:`LoadSignature`): the dealer's strips, the pixel
    table, the filters
    (the protocol's filter record of one channel group) and the quant records; write them
    between frames.
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
            "groups": In(range(cfg.groups + 1), init=cfg.groups),  # the layer's G (run time)
            "active": Out(1),   # an entry's group is being multiplied this cycle
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        m.submodules.store = windows = WindowStore(cfg)
        wiring.connect(m, wiring.flipped(self.load.strip), windows.strip)
        wiring.connect(m, wiring.flipped(self.load.pixels), windows.pixels)
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
        x, w, side = self._read(m, adv, addr, windows.read, weights)
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
        """Entry register: holds one work entry for its G group cycles; accepts the next entry in
        the last one, so entries flow back to back."""
        cfg = self.cfg
        wk = self.work
        valid = Signal()
        g = Signal(range(cfg.groups))
        last = Signal()
        m.d.comb += [last.eq(g == self.groups - 1),
                     wk.ready.eq(~valid | (adv & last))]
        ent = {k: Signal(v.shape(), name=f"e_{k}", reset_less=True)
               for k, v in dict(slot=wk.payload.slot, index=wk.payload.index, seg=wk.payload.seg,
                                buf=wk.payload.buf).items()}
        with m.If(wk.valid & wk.ready):
            m.d.sync += [valid.eq(1), g.eq(0)] + [ent[k].eq(wk.payload[k]) for k in ent]
        with m.Elif(adv & valid):
            m.d.sync += [valid.eq(~last), g.eq(Mux(last, 0, g + 1))]
        m.d.comb += self.active.eq(adv & valid)
        ent["valid"] = valid
        return ent, g, g == 0, last

    def _address(self, m, adv, ent, g, first, last):
        """Stage C: the window address ``buf*buffer_windows + seg*G + g`` and the filter address
        ``slot*G + g`` (wiring when G = 1)."""
        cfg = self.cfg
        k = buffer_windows(cfg).bit_length() - 1
        side = dict(valid=1, first=1, last=1, slot=ent["slot"].shape(),
                    index=ent["index"].shape(), wsel=range(self.slots * cfg.groups),
                    addr=window_addr_shape(cfg))
        return self._stage(m, adv, "c", side, dict(
            valid=ent["valid"], first=first, last=last, slot=ent["slot"], index=ent["index"],
            wsel=_times(ent["slot"], cfg.groups) + g,
            addr=Cat((_times(ent["seg"], cfg.groups) + g)[:k], ent["buf"])))

    def _read(self, m, adv, c, read, weights):
        """Stage C reads the window and the filter of (slot, g); stage D holds them as the
        multipliers' operands (window pixel b meets filter tap b)."""
        cfg = self.cfg
        m.d.comb += [read.en.eq(adv), read.addr.eq(c["addr"]),
                     weights.en.eq(adv), weights.addr.eq(c["wsel"])]
        d = self._stage(m, adv, "d", self._pass(c, "valid", "first", "last", "index", "slot"), c)
        lanes = cfg.lanes
        x = [[None] * 9 for _ in range(lanes)]
        w = [[None] * 9 for _ in range(lanes)]
        for b in range(9):
            w_tap = weights.data.word_select(b, 8 * lanes)
            for lane in range(lanes):
                x[lane][b] = read.data[b].word_select(lane, 8).as_signed()
                w[lane][b] = w_tap.word_select(lane, 8).as_signed()
        return x, w, d

    def _mac(self, m, adv, x, w, d, quant):
        """One :class:`~hdl.mac.MacCascade` per lane, the lanes summed by a registered adder tree
        of LANE_STAGES levels, then the accumulation over channel groups starting from the
        slot's bias (read one stage ahead)."""
        cfg = self.cfg
        sums = []
        for lane in range(cfg.lanes):
            mac = m.submodules[f"mac{lane}"] = MacCascade(9, cfg.acc_bits)
            m.d.comb += mac.en.eq(adv)
            m.d.comb += [mac.x[b].eq(x[lane][b]) for b in range(9)]
            m.d.comb += [mac.w[b].eq(w[lane][b]) for b in range(9)]
            sums.append(mac.sum)
        for level in range(LANE_STAGES):
            sums = [self._reg(m, adv, f"lanes{level}_{i // 2}",
                              sums[i] + sums[i + 1] if i + 1 < len(sums) else sums[i])
                    for i in range(0, len(sums), 2)]
        assert len(sums) == 1, "more lanes than LANE_STAGES levels can add"
        chain = MAC_LATENCY
        s = {k: delay(m, adv, d[k], chain, f"s_{k}") for k in ("first", "last", "index", "slot")}
        s["valid"] = _delay_valid(m, adv, d["valid"], chain)
        m.d.comb += [quant.en.eq(adv),
                     quant.addr.eq(delay(m, adv, d["slot"], chain - 1, "bias_slot"))]
        acc = Signal(signed(cfg.acc_bits), reset_less=True)
        acc_next = Signal(signed(cfg.acc_bits))
        if cfg.groups == 1:     # every group is the first: no mux in front of the adder
            m.d.comb += acc_next.eq(quant.data.bias + sums[0])
        else:
            m.d.comb += acc_next.eq(Mux(s["first"], quant.data.bias, acc) + sums[0])
        with m.If(adv & s["valid"]):
            m.d.sync += acc.eq(acc_next)
        done = self._stage(m, adv, "acc", dict(valid=1, index=s["index"].shape(),
                                               slot=s["slot"].shape()),
                           dict(valid=s["valid"] & s["last"], index=s["index"], slot=s["slot"]))
        done["acc"] = acc
        return done

    def _reg(self, m, adv, name, value):
        reg = Signal(signed(self.cfg.acc_bits), name=name, reset_less=True)
        with m.If(adv):
            m.d.sync += reg.eq(value)
        return reg

    def _requantise(self, m, adv, s, quant):
        """The slot's mult and shift (a second read port of the quant memory, read one stage
        ahead), then the :class:`~hdl.mac.Requantiser` into the result register."""
        m.d.comb += [quant.en.eq(adv), quant.addr.eq(s["slot"])]
        q = self._stage(m, adv, "q", dict(valid=1, index=s["index"].shape(),
                                          acc=signed(self.cfg.acc_bits)), s)
        rq = m.submodules.requantiser = Requantiser(self.cfg.acc_bits)
        m.d.comb += [rq.en.eq(adv), rq.acc.eq(q["acc"]), rq.mult.eq(quant.data.mult),
                     rq.shift.eq(quant.data.shift[:SHIFT_BITS])]
        index = delay(m, adv, q["index"], Requantiser.LATENCY, "r_index")
        m.d.comb += [self.result.payload.value.eq(rq.value),
                     self.result.payload.index.eq(index)]
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
