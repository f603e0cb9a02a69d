"""The instance datapath of the balanced engine: one output of ANY held channel per G cycles.

Issue 9 deals the uncompressed outputs of all channels evenly over the P instances
(:mod:`py_ref.schedule`). An instance therefore no longer owns one output channel: it computes a
stream of *work entries* ``(slot, y, x)``, where ``slot`` selects one of the few channels of its
share (channel = ``first_channel + slot``), whose filters and requantisation parameters it holds.

Pieces, each a :class:`wiring.Component` with grouped ports:

* :class:`IfmapBanks`: the ifmap in nine banks, bank ``(y%3)*3 + x%3`` at address
  ``g*tiles + (y//3)*ceil(W/3) + x//3`` (the engine's layout): any 3x3 window reads each bank
  once, and one 3x3 tile of one channel group is written in one cycle. (Held inside the datapath
  for now; the double-buffered loader replaces it.)
* :class:`Datapath`: work entries in, ``(value, index)`` results out, both valid/ready streams;
  ``load`` (:class:`LoadSignature`) writes ifmap tiles, filters and quant records.

Pipeline (every stage advances together when the result register can take a value, so a stall
on ``result`` freezes it and a stall on ``work`` inserts bubbles)::

    accept   work entry -> entry register (y, x split into tile and bank coordinates)
    E        group g of the entry: nine bank reads and the filter read of (slot, g)   G cycles
    S1       9*L int8 x int8 products (zero where the window leaves the map)
    S2       adder tree;                   quant read of the slot
    S3       acc = (g == 0 ? bias : acc) + sum
    S4       ReLU, * mult, + rounding half
    S5       >> shift, saturate at 255 -> result register

With entries offered back to back, entry e's result leaves in cycle ``(e+1)*G + LATENCY - 1``
(entry 0 offered in cycle 0): E entries take exactly ``E*G + LATENCY`` cycles. The arithmetic is
the golden contract of :mod:`py_ref.golden`; widths come from :class:`~hdl.config.AccelConfig`.
"""

from __future__ import annotations

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig, BIAS_BITS, MULT_BITS, OFM_BITS, PIPELINE_LATENCY, SHIFT_BITS

__all__ = ["Datapath", "IfmapBanks", "WriteSignature", "LoadSignature", "BankReadSignature",
           "TilePairSignature", "ifmap_addr_shape", "work_layout", "result_layout", "quant_layout", "entries_per_instance", "LATENCY"]

#: Cycles beyond E*G that E back-to-back entries take, first offer to last result inclusive.
LATENCY = PIPELINE_LATENCY


def entries_per_instance(cfg: AccelConfig) -> int:
    """Most work entries one instance can be dealt: ceil(N*H*W / P) when nothing is compressed.
    ``cfg.instances`` is both N (output channels) and P (instances), so that is H*W."""
    return cfg.positions


def _index_shape(count: int) -> range:
    """range(count), but at least one bit wide: Verilog has no zero-width ports."""
    return range(max(count, 2))


def work_layout(cfg: AccelConfig, slots: int) -> data.StructLayout:
    """A work entry: compute output (y, x) of the channel in ``slot``. ``index`` is the entry's
    position in the instance's run (k), carried through to the result."""
    return data.StructLayout({
        "slot": _index_shape(slots),
        "y": range(cfg.height),
        "x": range(cfg.width),
        "index": range(entries_per_instance(cfg)),
        "buf": 1,       # which ifmap buffer holds the entry's image (double buffering)
    })


def result_layout(cfg: AccelConfig) -> data.StructLayout:
    return data.StructLayout({"value": OFM_BITS, "index": range(entries_per_instance(cfg))})


def quant_layout() -> data.StructLayout:
    """One channel's requantisation parameters; the bit positions of the protocol's 64-bit quant
    record (bias | mult << 32 | shift << 48), whose upper bits it ignores."""
    return data.StructLayout({"bias": signed(BIAS_BITS), "mult": unsigned(MULT_BITS),
                              "shift": unsigned(16)})


class WriteSignature(wiring.Signature):
    """A memory write port seen from the writer: ``en``, ``addr``, ``data``."""

    def __init__(self, addr_shape, data_shape):
        super().__init__({"en": Out(1), "addr": Out(addr_shape), "data": Out(data_shape)})


class TilePairSignature(wiring.Signature):
    """Two consecutive ifmap tiles written in one cycle, seen from the writer: ``data[0]`` at
    ``addr`` if ``en[0]``, ``data[1]`` at ``addr + 1`` if ``en[1]``."""

    def __init__(self, cfg: AccelConfig):
        super().__init__({"en": Out(2), "addr": Out(ifmap_addr_shape(cfg)),
                          "data": Out(data.ArrayLayout(cfg.tile_bits, 2))})


class LoadSignature(wiring.Signature):
    """What a frame and the deployment load into one datapath, seen from the loader: ifmap tiles
    (address ``buf*G*tiles + g*tiles + tile``, up to two consecutive tiles per cycle), filters (address ``slot*G + g``) and quant records
    (``slot``)."""

    def __init__(self, cfg: AccelConfig, slots: int):
        super().__init__({
            "ifmap": Out(TilePairSignature(cfg)),
            "weights": Out(WriteSignature(_index_shape(slots * cfg.groups), cfg.weight_bits)),
            "quant": Out(WriteSignature(_index_shape(slots), quant_layout())),
        })


class BankReadSignature(wiring.Signature):
    """The nine ifmap banks read together, seen from the reader (synchronous, with enable)."""

    def __init__(self, cfg: AccelConfig):
        super().__init__({
            "en": Out(1),
            "addr": Out(data.ArrayLayout(ifmap_addr_shape(cfg), 9)),
            "data": In(data.ArrayLayout(cfg.pixel_bits, 9)),
        })


def ifmap_addr_shape(cfg: AccelConfig) -> range:
    """Tile address in the double-buffered ifmap: ``buf*G*tiles + g*tiles + tile``."""
    return range(2 * cfg.groups * cfg.tiles)


class IfmapBanks(wiring.Component):
    """Two images' ifmaps in nine banks: ``write`` stores up to two consecutive 3x3 tiles,
    each of one channel group
    (tile pixel ``s = r*3 + c`` into bank s) at address ``buf*G*tiles + g*tiles + tile``.

    Each bank is two memories split by address parity (address a in half ``a % 2`` at ``a // 2``),
    so two *consecutive* tiles can be stored in the same cycle (they always land
    in different halves): the loader writes two tiles per cycle, fast enough to hide the load
    under compute up to C = 0.9. A read reads both halves at ``a // 2`` and keeps the half of
    ``a``'s parity."""

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        super().__init__({
            "write": In(TilePairSignature(cfg)),
            "read": In(BankReadSignature(cfg)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        depth = cfg.groups * cfg.tiles     # per half: ceil(2*G*tiles / 2)
        for b in range(9):
            odd = Signal(name=f"odd{b}")   # parity of the address read last
            with m.If(self.read.en):
                m.d.sync += odd.eq(self.read.addr[b][0])
            halves = []
            for h in range(2):
                mem = memory.Memory(shape=cfg.pixel_bits, depth=depth, init=[])
                m.submodules[f"bank{b}_{h}"] = mem
                wp, rp = mem.write_port(), mem.read_port()
                # tile 0 (at a) lands here if a has parity h, else tile 1 (at a + 1) does
                w = self.write
                first = w.addr[0] == h
                m.d.comb += [
                    wp.en.eq(Mux(first, w.en[0], w.en[1])),
                    wp.addr.eq(Mux(first, w.addr >> 1, (w.addr + 1) >> 1)),
                    wp.data.eq(Mux(first, w.data[0].word_select(b, cfg.pixel_bits),
                                   w.data[1].word_select(b, cfg.pixel_bits))),
                    rp.en.eq(self.read.en), rp.addr.eq(self.read.addr[b] >> 1)]
                halves.append(rp.data)
            m.d.comb += self.read.data[b].eq(Mux(odd, halves[1], halves[0]))
        return m


def _divmod3(m: Module, value, limit: int, name: str):
    """(value // 3, value % 3) for 0 <= value < limit by one constant multiply: no divider."""
    shift = 2 * max(limit.bit_length(), 2)
    magic = -(-(1 << shift) // 3)
    assert all((v * magic) >> shift == v // 3 for v in range(limit)), (limit, shift)
    div = Signal(range(max(2, -(-limit // 3))), name=f"{name}div")
    mod = Signal(2, name=f"{name}mod")
    m.d.comb += [div.eq((value * magic) >> shift), mod.eq(value - div * 3)]
    return div, mod


def _tree_sum(values):
    """Balanced adder tree (shorter logic depth than Python's left fold)."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


class Datapath(wiring.Component):
    """One instance: work entries ``(slot, y, x, index)`` in, ``(value, index)`` out.

    ``slots`` is how many channels the instance can hold (at least the schedule's ``max_span``).
    ``load`` groups the write ports (:class:`LoadSignature`): the ifmap tiles, the filters
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
        self.cfg = cfg
        self.slots = slots
        super().__init__({
            "work": In(stream.Signature(work_layout(cfg, slots))),
            "result": Out(stream.Signature(result_layout(cfg))),
            "load": In(LoadSignature(cfg, slots)),
            "active": Out(1),   # an entry's group is being multiplied this cycle
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.banks = banks = IfmapBanks(self.cfg)
        wiring.connect(m, wiring.flipped(self.load.ifmap), banks.write)
        weights = self._memory(m, "weights", self.cfg.weight_bits, self.slots * self.cfg.groups)
        quant = self._memory(m, "quant", quant_layout(), self.slots)

        # The whole pipeline moves when the result register is free or being emptied.
        adv = Signal()
        m.d.comb += adv.eq(~self.result.valid | self.result.ready)
        ent, g, first, last = self._entry(m, adv)
        s1 = self._issue(m, adv, ent, g, first, last, banks.read, weights)
        s2 = self._products(m, adv, s1, banks.read.data, weights.data)
        s3 = self._sum(m, adv, s2, quant)
        s4 = self._accumulate(m, adv, s3, quant.data)
        self._requantise(m, adv, s4)
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
        """Registers for ``fields`` (name -> shape), loaded from ``values`` on every advance."""
        regs = {k: Signal(shape, name=f"{name}_{k}") for k, shape in fields.items()}
        with m.If(adv):
            m.d.sync += [regs[k].eq(values[k]) for k in fields]
        return regs

    def _entry(self, m, adv):
        """Entry register: holds one work entry for its G group cycles; accepts the next entry in
        the last one, so entries flow back to back."""
        cfg = self.cfg
        wk = self.work
        valid = Signal()
        g = Signal(range(cfg.groups))
        last = Signal()
        m.d.comb += [last.eq(g == cfg.groups - 1),
                     wk.ready.eq(~valid | (adv & last))]
        ydiv, ymod = _divmod3(m, wk.payload.y, cfg.height, "y")
        xdiv, xmod = _divmod3(m, wk.payload.x, cfg.width, "x")
        ent = {k: Signal(v.shape(), name=f"e_{k}")
               for k, v in dict(slot=wk.payload.slot, index=wk.payload.index, ydiv=ydiv,
                                ymod=ymod, xdiv=xdiv, xmod=xmod, buf=wk.payload.buf).items()}
        with m.If(wk.valid & wk.ready):
            m.d.sync += [valid.eq(1), g.eq(0), ent["slot"].eq(wk.payload.slot),
                         ent["buf"].eq(wk.payload.buf),
                         ent["index"].eq(wk.payload.index), ent["ydiv"].eq(ydiv),
                         ent["ymod"].eq(ymod), ent["xdiv"].eq(xdiv), ent["xmod"].eq(xmod)]
        with m.Elif(adv & valid):
            m.d.sync += [valid.eq(~last), g.eq(Mux(last, 0, g + 1))]
        ent["valid"] = valid
        return ent, g, g == 0, last

    def _bank_axis(self, m, axis, r, mod, div, limit):
        """Bank row (or column) r: the window offset k that lands there, the tile index of
        that pixel, and whether it lies inside the map (else it is zero padding)."""
        k_off = Signal(range(3), name=f"k{axis}{r}")
        tile = Signal(signed(10), name=f"t{axis}{r}")
        with m.Switch(mod):
            for mv in range(3):
                kv = (r - mv + 1) % 3            # window offset whose pixel is in bank r
                carry = (mv + kv - 1 - r) // 3   # that pixel is -1, 0 or +1 tile away
                with m.Case(mv):
                    m.d.comb += [k_off.eq(kv), tile.eq(div + carry)]
        return k_off, tile, (tile >= 0) & (tile * 3 + r < limit)

    def _issue(self, m, adv, ent, g, first, last, read, weights):
        """Stage E: address the nine banks and the filter of (slot, g)."""
        cfg = self.cfg
        rows = [self._bank_axis(m, "y", r, ent["ymod"], ent["ydiv"], cfg.height) for r in range(3)]
        cols = [self._bank_axis(m, "x", c, ent["xmod"], ent["xdiv"], cfg.width) for c in range(3)]
        tap = Signal(data.ArrayLayout(range(9), 9))
        inside = Signal(9)
        for r in range(3):
            for c in range(3):
                (ky, ty, yin), (kx, tx, xin) = rows[r], cols[c]
                addr = (ent["buf"] * (cfg.groups * cfg.tiles) + g * cfg.tiles
                        + ty * cfg.tile_cols + tx)
                m.d.comb += [read.addr[r * 3 + c].eq(addr[:len(read.addr[0])]),
                             tap[r * 3 + c].eq(ky * 3 + kx), inside[r * 3 + c].eq(yin & xin)]
        m.d.comb += self.active.eq(adv & ent["valid"])
        m.d.comb += [read.en.eq(adv), weights.en.eq(adv),
                     weights.addr.eq(ent["slot"] * cfg.groups + g)]
        return self._stage(m, adv, "s1",
                           dict(valid=1, first=1, last=1, slot=ent["slot"].shape(),
                                index=ent["index"].shape(), tap=tap.shape(), inside=9),
                           dict(valid=ent["valid"], first=first, last=last, slot=ent["slot"],
                                index=ent["index"], tap=tap, inside=inside))

    def _products(self, m, adv, s1, pixels, filt):
        """Stage S1: 9*L products; the filter tap is chosen per bank (the window is rotated by
        y%3, x%3)."""
        lanes = self.cfg.lanes
        products = []
        for b in range(9):
            w_tap = filt.word_select(s1["tap"][b], 8 * lanes)
            for lane in range(lanes):
                x = pixels[b].word_select(lane, 8).as_signed()
                w = w_tap.word_select(lane, 8).as_signed()
                products.append(Mux(s1["inside"][b], x * w, 0))
        fields = {k: s1[k].shape() for k in ("valid", "first", "last", "slot", "index")}
        s2 = self._stage(m, adv, "s2", fields, s1)
        prods = [Signal(signed(16), name=f"prod{i}") for i in range(len(products))]
        with m.If(adv):
            m.d.sync += [p.eq(v) for p, v in zip(prods, products)]
        s2["products"] = prods
        return s2

    def _sum(self, m, adv, s2, quant):
        """Stage S2: adder tree; read the slot's quant parameters (ready in S3)."""
        m.d.comb += [quant.en.eq(adv), quant.addr.eq(s2["slot"])]
        fields = {k: s2[k].shape() for k in ("valid", "first", "last", "index")}
        fields["sum"] = signed(self.cfg.sum_bits)
        return self._stage(m, adv, "s3", fields, dict(s2, sum=_tree_sum(s2["products"])))

    def _accumulate(self, m, adv, s3, q):
        """Stage S3: accumulate over channel groups, starting from the bias; forward the last."""
        cfg = self.cfg
        acc = Signal(signed(cfg.acc_bits))
        acc_next = Signal(signed(cfg.acc_bits))
        m.d.comb += acc_next.eq(Mux(s3["first"], q.bias, acc) + s3["sum"])
        with m.If(adv & s3["valid"]):
            m.d.sync += acc.eq(acc_next)
        return self._stage(
            m, adv, "s4",
            dict(valid=1, index=s3["index"].shape(), acc=signed(cfg.acc_bits), mult=MULT_BITS,
                 shift=SHIFT_BITS),
            dict(valid=s3["valid"] & s3["last"], index=s3["index"], acc=acc_next, mult=q.mult,
                 shift=q.shift[:SHIFT_BITS]))

    def _requantise(self, m, adv, s4):
        """Stages S4, S5: ReLU, multiply, round half up, shift, saturate -> result register."""
        cfg = self.cfg
        relu = Mux(s4["acc"][-1], 0, s4["acc"][:cfg.acc_bits - 1])
        s5 = self._stage(
            m, adv, "s5",
            dict(valid=1, index=s4["index"].shape(), scaled=cfg.scaled_bits, shift=SHIFT_BITS),
            dict(valid=s4["valid"], index=s4["index"], shift=s4["shift"],
                 scaled=relu * s4["mult"] + ((Const(1, 32) << s4["shift"]) >> 1)))
        shifted = Signal(cfg.scaled_bits)
        m.d.comb += shifted.eq(s5["scaled"] >> s5["shift"])
        with m.If(adv):
            m.d.sync += [self.result.valid.eq(s5["valid"]),
                         self.result.payload.index.eq(s5["index"]),
                         self.result.payload.value.eq(Mux(shifted > 255, 255, shifted[:OFM_BITS]))]
