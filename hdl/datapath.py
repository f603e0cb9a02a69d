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
on ``result`` freezes it and a stall on ``work`` inserts bubbles), laid out for 300 MHz on
UltraScale+ (issue 10: at most 6 logic levels between registers, the products and their sum in
DSP48E2s)::

    accept   work entry -> entry register (y, x split into tile and bank coordinates)
    E        group g of the entry                                                   G cycles
    A, B, C  the nine bank addresses, one adder level per stage
    C        bank reads, filter read of (slot, g)
    D        zero pixels outside the map, pick each bank's filter tap
    MAC      per lane a 9-tap DSP48E2 cascade (hdl.mac.MacCascade), lanes added    MAC_LATENCY
    acc      acc = (g == 0 ? bias : acc) + sum
    q        the slot's mult and shift
    requant  ReLU, * mult + rounding half, >> shift, saturate (hdl.mac.Requantiser)
             whose last register is the result register

With entries offered back to back, entry e's result leaves in cycle ``(e+1)*G + LATENCY - 1``
(entry 0 offered in cycle 0): E entries take exactly ``E*G + LATENCY`` cycles. The arithmetic is
the golden contract of :mod:`py_ref.golden`; widths come from :class:`~hdl.config.AccelConfig`.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig, BIAS_BITS, MULT_BITS, OFM_BITS, PIPELINE_LATENCY, SHIFT_BITS
from .mac import MacCascade, Requantiser, delay

__all__ = ["Datapath", "IfmapBanks", "WriteSignature", "LoadSignature", "BankReadSignature",
           "TilePairSignature", "ifmap_addr_shape", "buffer_tiles", "work_layout", "result_layout", "quant_layout",
           "entries_per_instance", "LATENCY", "LANE_STAGES", "MAC_LATENCY"]

#: Registered levels of the tree that adds the lanes' chains (up to 16 lanes); constant, so the
#: latency does not depend on the configuration.
LANE_STAGES = 4
#: From the multipliers' operands (stage D) to the lanes' sum.
MAC_LATENCY = 9 + 2 + LANE_STAGES
#: Cycles beyond E*G that E back-to-back entries take, first offer to last result inclusive:
#: the entry register, address stages A, B, C, read stage D, the MAC, the accumulator, the
#: quant-read stage and the requantiser (whose last register is the result register).
LATENCY = 1 + 4 + MAC_LATENCY + 2 + Requantiser.LATENCY
# the host side reads the same fact from hdl/config.py without loading Amaranth
assert LATENCY == PIPELINE_LATENCY, f"hdl/config.py: PIPELINE_LATENCY must be {LATENCY}"


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
    (address ``buf*buffer_tiles + g*tiles + tile``, up to two consecutive tiles per cycle), filters (address ``slot*G + g``) and quant records
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


def buffer_tiles(cfg: AccelConfig) -> int:
    """Tile addresses per ifmap buffer: G*tiles, rounded up to a power of two so that the buffer
    is the address's top bit."""
    return 1 << max(cfg.groups * cfg.tiles - 1, 1).bit_length()


def ifmap_addr_shape(cfg: AccelConfig) -> range:
    """Tile address in the double-buffered ifmap: ``buf * buffer_tiles + g*tiles + tile``."""
    return range(2 * buffer_tiles(cfg))


class IfmapBanks(wiring.Component):
    """Two images' ifmaps in nine banks: ``write`` stores up to two consecutive 3x3 tiles of one
    image (tile pixel ``s = r*3 + c`` into bank s) at address
    ``buf * buffer_tiles + g*tiles + tile``; ``read`` reads each bank at its own address.

    Block RAM is the scarce resource (issue 10), so banks go two to a true-dual-port memory,
    one per buffer: a word holds the pixels of banks 2q and 2q+1 of one tile; port 0 reads bank
    2q, port 1 bank 2q+1, and when the loader writes the buffer the two ports write the two
    tiles of a pair instead (consecutive tiles of one image lie in the same buffer). A buffer
    is never read while it is written: image j + 2 loads into j's buffer only once j is
    released (:class:`~hdl.loader.InputLoader`). Each port's address is the write address
    while its buffer is written, else the read address, so Yosys maps a port's write and read
    onto one RAM port: 5 RAMB18 per buffer instead of 18 simple-dual-port halves."""

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        super().__init__({
            "write": In(TilePairSignature(cfg)),
            "read": In(BankReadSignature(cfg)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        px = cfg.pixel_bits
        w, rd = self.write, self.read
        depth = buffer_tiles(cfg)
        k = depth.bit_length() - 1
        w_buf, w_tile = w.addr[k], w.addr[:k]
        last_buf = [Signal(name=f"rbuf{b}") for b in range(9)]   # buffer of the last read
        with m.If(rd.en):
            m.d.sync += [last_buf[b].eq(rd.addr[b][k]) for b in range(9)]
        for q in range(5):
            banks = [b for b in (2 * q, 2 * q + 1) if b < 9]
            got = {b: [] for b in banks}
            for u in range(2):
                mem = memory.Memory(shape=len(banks) * px, depth=depth, init=[])
                m.submodules[f"banks{q}_buf{u}"] = mem
                writing = w.en.any() & (w_buf == u)
                for h in range(2):      # both ports write (two tiles); each reads its bank
                    b = banks[h] if h < len(banks) else None
                    addr = Signal(range(depth), name=f"a{q}_{u}_{h}")
                    wp = mem.write_port()
                    tile = w.data[h]
                    m.d.comb += [
                        addr.eq(Mux(writing, w_tile + h, 0 if b is None else rd.addr[b][:k])),
                        wp.addr.eq(addr), wp.en.eq(writing & w.en[h]),
                        wp.data.eq(Cat(tile.word_select(bb, px) for bb in banks))]
                    if b is not None:
                        rp = mem.read_port()
                        m.d.comb += [rp.addr.eq(addr), rp.en.eq(rd.en & ~writing)]
                        got[b].append(rp.data.word_select(h, px))
            for b in banks:
                m.d.comb += rd.data[b].eq(Mux(last_buf[b], got[b][1], got[b][0]))
        return m


def _divmod3(m: Module, value, limit: int, name: str):
    """(value // 3, value % 3) for 0 <= value < limit as a table (a small LUT function, no
    multiplier: Yosys would put a constant multiply into a DSP48E2)."""
    div = Signal(range(max(2, -(-limit // 3))), name=f"{name}div")
    mod = Signal(2, name=f"{name}mod")
    with m.Switch(value):
        for v in range(limit):
            with m.Case(v):
                m.d.comb += [div.eq(v // 3), mod.eq(v % 3)]
    return div, mod


def _times(value, k: int):
    """``value * k`` for a constant k >= 0 as shifted adds (a constant multiply would be mapped
    to a DSP48E2)."""
    terms = [value << i for i in range(k.bit_length()) if k >> i & 1]
    return sum(terms[1:], terms[0]) if terms else Const(0)


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
        cfg = self.cfg
        m = Module()
        m.submodules.banks = banks = IfmapBanks(cfg)
        wiring.connect(m, wiring.flipped(self.load.ifmap), banks.write)
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
        x, w, side = self._read(m, adv, addr, banks.read, weights)
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
        m.d.comb += [last.eq(g == cfg.groups - 1),
                     wk.ready.eq(~valid | (adv & last))]
        ydiv, ymod = _divmod3(m, wk.payload.y, cfg.height, "y")
        xdiv, xmod = _divmod3(m, wk.payload.x, cfg.width, "x")
        ent = {k: Signal(v.shape(), name=f"e_{k}", reset_less=True)
               for k, v in dict(slot=wk.payload.slot, index=wk.payload.index, ydiv=ydiv,
                                ymod=ymod, xdiv=xdiv, xmod=xmod, buf=wk.payload.buf).items()}
        with m.If(wk.valid & wk.ready):
            m.d.sync += [valid.eq(1), g.eq(0), ent["slot"].eq(wk.payload.slot),
                         ent["buf"].eq(wk.payload.buf),
                         ent["index"].eq(wk.payload.index), ent["ydiv"].eq(ydiv),
                         ent["ymod"].eq(ymod), ent["xdiv"].eq(xdiv), ent["xmod"].eq(xmod)]
        with m.Elif(adv & valid):
            m.d.sync += [valid.eq(~last), g.eq(Mux(last, 0, g + 1))]
        m.d.comb += self.active.eq(adv & valid)
        ent["valid"] = valid
        return ent, g, g == 0, last

    def _bank_axis(self, m, axis, r, mod, div, limit):
        """Bank row (or column) r: the window offset k that lands there, the tile offset (-1, 0
        or +1) of that pixel from the entry's tile, and whether it lies inside the map."""
        k_off = Signal(range(3), name=f"k{axis}{r}")
        carry = Signal(signed(2), name=f"c{axis}{r}")
        tile = Signal(signed(10), name=f"t{axis}{r}")
        with m.Switch(mod):
            for mv in range(3):
                kv = (r - mv + 1) % 3            # window offset whose pixel is in bank r
                with m.Case(mv):
                    m.d.comb += [k_off.eq(kv), carry.eq((mv + kv - 1 - r) // 3)]
        m.d.comb += tile.eq(div + carry)
        return k_off, carry, tile, (tile >= 0) & (tile < (limit - r + 2) // 3)   # 3*tile + r < limit

    def _address(self, m, adv, ent, g, first, last):
        """Stages A, B, C: the nine bank addresses ``buf*G*tiles + g*tiles + ty*tile_cols + tx``
        one adder per stage (A: the products and the tile coordinates, B: the row base and the
        per-bank offsets, C: their sums)."""
        cfg = self.cfg
        rows = [self._bank_axis(m, "y", r, ent["ymod"], ent["ydiv"], cfg.height) for r in range(3)]
        cols = [self._bank_axis(m, "x", c, ent["xmod"], ent["xdiv"], cfg.width) for c in range(3)]
        tap = Signal(data.ArrayLayout(range(9), 9))
        inside = Signal(9)
        for r in range(3):
            for c in range(3):
                (ky, _, _, yin), (kx, _, _, xin) = rows[r], cols[c]
                m.d.comb += [tap[r * 3 + c].eq(_times(ky, 3) + kx), inside[r * 3 + c].eq(yin & xin)]
        span = cfg.groups * cfg.tiles
        a_shape = range(span + cfg.tile_cols + 1)
        side = dict(valid=1, first=1, last=1, slot=ent["slot"].shape(),
                    index=ent["index"].shape(), wsel=range(self.slots * cfg.groups),
                    tap=tap.shape(), inside=9, buf=1)
        a = self._stage(m, adv, "a", dict(
            side, gbase=range(span), yrow=a_shape,
            **{f"roff{r}": signed(len(Const(cfg.tile_cols)) + 2) for r in range(3)},
            **{f"tx{c}": signed(10) for c in range(3)}), dict(
            valid=ent["valid"], first=first, last=last, slot=ent["slot"], index=ent["index"],
            wsel=_times(ent["slot"], cfg.groups) + g, tap=tap, inside=inside,
            gbase=_times(g, cfg.tiles), buf=ent["buf"],
            yrow=_times(ent["ydiv"], cfg.tile_cols),
            **{f"roff{r}": Mux(rows[r][1] < 0, -cfg.tile_cols, Mux(rows[r][1] > 0, cfg.tile_cols, 0))
               for r in range(3)},
            **{f"tx{c}": cols[c][2] for c in range(3)}))
        b = self._stage(m, adv, "b", dict(
            side, ybase=a_shape, **{f"off{i}": signed(12) for i in range(9)}), dict(
            a, ybase=a["gbase"] + a["yrow"],
            **{f"off{r * 3 + c}": a[f"roff{r}"] + a[f"tx{c}"] for r in range(3) for c in range(3)}))
        addr = data.ArrayLayout(ifmap_addr_shape(cfg), 9)
        k = buffer_tiles(cfg).bit_length() - 1
        return self._stage(m, adv, "c", dict(side, addr=addr), dict(
            b, addr=Cat(Cat((b["ybase"] + b[f"off{i}"])[:k], b["buf"]) for i in range(9))))

    def _read(self, m, adv, c, read, weights):
        """Stage C reads the banks and the filter of (slot, g); stage D zeroes
        pixels outside the map and picks each bank's filter tap (the window is rotated by y%3,
        x%3) on their way into the multipliers."""
        cfg = self.cfg
        m.d.comb += [read.en.eq(adv), weights.en.eq(adv), weights.addr.eq(c["wsel"])]
        m.d.comb += [read.addr[i].eq(c["addr"][i]) for i in range(9)]
        d = self._stage(m, adv, "d", self._pass(c, "valid", "first", "last", "index", "slot",
                                                "tap", "inside"), c)
        lanes = cfg.lanes
        x = [[None] * 9 for _ in range(lanes)]
        w = [[None] * 9 for _ in range(lanes)]
        for b in range(9):
            w_tap = weights.data.word_select(d["tap"][b], 8 * lanes)
            for lane in range(lanes):
                x[lane][b] = Mux(d["inside"][b], read.data[b].word_select(lane, 8), 0).as_signed()
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
