"""The compression-skip conv2d(3x3, pad 1) + ReLU engine.

Architecture (one :class:`ConvInstance` per output channel, N of them behind one
:class:`VelcroAccelerator` command front end):

* **Skip list instead of a mask walk.** While the mask loads, each instance compacts the
  positions of its *uncompressed* outputs into a skip list (``mask_lanes`` mask bits per cycle,
  the list banked ``mask_lanes`` ways so every bit of a chunk can be appended in the same cycle).
  The compute phase then walks only that list: a compressed output costs no cycle at all, and
  the phase takes ``max_n(U_n) * G + latency`` cycles (G = channel groups).
* **Means live in the output buffer.** MEANS writes the stored means into each instance's output
  buffer; compute overwrites only the uncompressed positions, so the mux
  ``means if mask else q`` costs nothing and the means stay valid across frames.
* **Random-access 3x3 windows.** Skipping makes the access pattern irregular, so the ifmap is
  stored in nine banks, bank ``(y%3)*3 + x%3`` at address ``(y//3)*ceil(W/3) + x//3``: any 3x3
  window touches every bank exactly once, and one 3x3 tile of the input loads in one cycle.
  Each instance owns a copy (all written together) so every instance reads its own window.
* **Datapath**, per instance and cycle: 9*L int8 x int8 products, an adder tree, an accumulator
  over the G channel groups, then bias, ReLU, requantisation (multiply, round, shift, saturate).

Widths come from :class:`~hdl.config.AccelConfig` (``sum_bits``, ``acc_bits``, ``scaled_bits``),
which documents why no legal input overflows.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig, BIAS_BITS, MULT_BITS, SHIFT_BITS, OFM_BITS
from .protocol import Opcode

__all__ = ["ConvInstance", "VelcroAccelerator", "entry_layout", "counter_layout",
           "decode_counters", "output_layout"]

COUNTER_BITS = 32


def entry_layout(cfg: AccelConfig) -> data.StructLayout:
    """One skip-list entry: an uncompressed output position, with its tile coordinates."""
    return data.StructLayout({
        "pos": range(cfg.positions),
        "ydiv": range(cfg.tile_rows),
        "ymod": 2,
        "xdiv": range(cfg.tile_cols),
        "xmod": 2,
    })


def counter_layout(cfg: AccelConfig) -> data.StructLayout:
    """Hardware performance counters of the last FRAME (held until the next one starts)."""
    per_instance = data.ArrayLayout(unsigned(COUNTER_BITS), cfg.instances)
    return data.StructLayout({
        "frames": COUNTER_BITS,         # FRAME commands completed since reset
        "total_cycles": COUNTER_BITS,   # FRAME header accepted .. last output beat, inclusive
        "load_cycles": COUNTER_BITS,    # ifmap tiles loading
        "compute_cycles": COUNTER_BITS,  # start pulse .. every instance finished
        "drain_cycles": COUNTER_BITS,   # output beats leaving (incl. stalls)
        "mac_active_cycles": COUNTER_BITS,  # cycles in which at least one instance multiplied
        "computed": per_instance,       # uncompressed outputs computed per instance
        "skipped": per_instance,        # compressed outputs (never computed) per instance
    })


def decode_counters(cfg: AccelConfig, value: int) -> dict:
    """The ``counters`` port's raw bits -> {name: int or list of int per instance}."""
    out = {}
    for name, field in counter_layout(cfg):
        raw = (value >> field.offset) & ((1 << field.width) - 1)
        if isinstance(field.shape, data.ArrayLayout):
            w = field.shape.elem_shape.width
            out[name] = [(raw >> (w * n)) & ((1 << w) - 1) for n in range(field.shape.length)]
        else:
            out[name] = raw
    return out


def output_layout(cfg: AccelConfig) -> data.StructLayout:
    return data.StructLayout({"data": cfg.bus_width, "last": 1})


def _tree_sum(values):
    """Balanced adder tree (shorter logic depth than Python's left fold)."""
    values = list(values)
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


def _log2(n: int) -> int:
    return n.bit_length() - 1


class ConvInstance(wiring.Component):
    """One output channel: skip-list builder, window banks, MAC pipeline, output buffer.

    The load/drain ports are plain strobes driven by :class:`VelcroAccelerator`, which owns the
    streams; ``start`` launches the compute phase, ``busy`` falls when it has finished.
    """

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        entry = entry_layout(cfg)
        super().__init__({
            # ifmap: one 3x3 tile (9 pixels x L lanes) per write, broadcast to every instance
            "tile_we": In(1),
            "tile_addr": In(range(cfg.groups * cfg.tiles)),
            "tile_data": In(cfg.tile_bits),
            # filter for one channel group, and bias/mult/shift
            "weight_we": In(1),
            "weight_addr": In(range(cfg.groups)),
            "weight_data": In(cfg.weight_bits),
            "quant_we": In(1),
            "quant_data": In(cfg.QUANT_BITS),
            # mask chunk: K bits (1 = compressed) with the K positions' list entries
            "mask_valid": In(1),
            "mask_first": In(1),
            "mask_bits": In(cfg.mask_lanes),
            "mask_entries": In(data.ArrayLayout(entry, cfg.mask_lanes)),
            # means into the output buffer, and the drain read port
            "ofm_we": In(1),
            "ofm_addr": In(range(cfg.ofm_words)),
            "ofm_data": In(cfg.bus_width),
            "rd_en": In(1),
            "rd_addr": In(range(cfg.ofm_words)),
            "rd_data": Out(cfg.bus_width),
            # compute control and counters
            "start": In(1),
            "busy": Out(1),
            "mac_active": Out(1),
            "uncompressed": Out(range(cfg.positions + 1)),
            "computed": Out(range(cfg.positions + 1)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        entry = entry_layout(cfg)
        k, lanes, p_bytes = cfg.mask_lanes, cfg.lanes, cfg.bus_bytes
        list_depth = -(-cfg.positions // k)

        # -- storage --------------------------------------------------------------------------
        ifmap_banks = []
        for b in range(9):
            mem = memory.Memory(shape=cfg.pixel_bits, depth=cfg.groups * cfg.tiles, init=[])
            m.submodules[f"ifmap_bank{b}"] = mem
            ifmap_banks.append(mem)
        weights = memory.Memory(shape=cfg.weight_bits, depth=cfg.groups, init=[])
        m.submodules.weights = weights
        list_banks = []
        for b in range(k):
            mem = memory.Memory(shape=entry, depth=list_depth, init=[])
            m.submodules[f"skip_list{b}"] = mem
            list_banks.append(mem)
        ofm = memory.Memory(shape=cfg.bus_width, depth=cfg.ofm_words, init=[])
        m.submodules.ofm = ofm

        # Configuration state survives a reset (reset_less): a reset in the middle of a frame
        # leaves weights, skip list and means usable, so the next FRAME is correct at once.
        bias = Signal(signed(BIAS_BITS), reset_less=True)
        mult = Signal(MULT_BITS, reset_less=True)
        shift = Signal(SHIFT_BITS, reset_less=True)
        count = Signal(range(cfg.positions + 1), reset_less=True)
        m.d.comb += self.uncompressed.eq(count)

        # -- load ports -----------------------------------------------------------------------
        for s, mem in enumerate(ifmap_banks):
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.tile_addr),
                         wp.data.eq(self.tile_data.word_select(s, cfg.pixel_bits)),
                         wp.en.eq(self.tile_we)]
        wp = weights.write_port()
        m.d.comb += [wp.addr.eq(self.weight_addr), wp.data.eq(self.weight_data),
                     wp.en.eq(self.weight_we)]
        with m.If(self.quant_we):
            m.d.sync += [bias.eq(self.quant_data[0:32]), mult.eq(self.quant_data[32:48]),
                         shift.eq(self.quant_data[48:48 + SHIFT_BITS])]

        # Skip-list builder: append the uncompressed positions of a K-bit chunk in one cycle.
        # Entry e lives in bank e % K at address e // K; consecutive entries hit distinct banks.
        keep = [~self.mask_bits[t] for t in range(k)]
        prefix = [Const(0, range(k + 1))]
        for t in range(k):
            prefix.append(prefix[-1] + keep[t])
        base = Mux(self.mask_first, 0, count)
        for b, mem in enumerate(list_banks):
            wp = mem.write_port()
            rel = (b - base)[:_log2(k)] if k > 1 else Const(0)
            hits = [keep[t] & (prefix[t] == rel) for t in range(k)]
            with m.If(self.mask_valid):
                for t in range(k):
                    with m.If(hits[t]):
                        m.d.comb += [wp.en.eq(1), wp.data.eq(self.mask_entries[t]),
                                     wp.addr.eq((base + prefix[t]) >> _log2(k))]
        with m.If(self.mask_valid):
            m.d.sync += count.eq(base + prefix[k])

        # -- compute pipeline -----------------------------------------------------------------
        running = Signal()
        e = Signal(range(cfg.positions + 1))
        g = Signal(range(cfg.groups))
        v0 = Signal()
        m.d.comb += v0.eq(running & (e < count))

        # S0: read skip-list entry e (synchronous read: data in S1)
        list_rps = [mem.read_port() for mem in list_banks]
        for rp in list_rps:
            m.d.comb += rp.addr.eq(e >> _log2(k))
        with m.If(self.start):
            m.d.sync += [running.eq(1), e.eq(0), g.eq(0)]
        with m.Elif(v0):
            with m.If(g == cfg.groups - 1):
                m.d.sync += [g.eq(0), e.eq(e + 1)]
            with m.Else():
                m.d.sync += g.eq(g + 1)

        s1_valid, s1_first, s1_last = Signal(), Signal(), Signal()
        s1_g = Signal.like(g)
        s1_bank = Signal(range(k))
        m.d.sync += [s1_valid.eq(v0), s1_first.eq(g == 0), s1_last.eq(g == cfg.groups - 1),
                     s1_g.eq(g), s1_bank.eq(e[:_log2(k)] if k > 1 else 0)]

        # S1: the entry is here; address the nine banks and the filter of group g.
        ent = Signal(entry)
        m.d.comb += ent.eq(Array(rp.data.as_value() for rp in list_rps)[s1_bank])
        def bank_axis(axis, r, mod, div, limit):
            """For bank row (or column) r: the window offset k landing there, the tile index
            of that pixel, and whether it lies inside the map (else it is zero padding)."""
            k_off = Signal(range(3), name=f"k{axis}{r}")
            tile = Signal(signed(10), name=f"t{axis}{r}")
            with m.Switch(mod):
                for mv in range(3):
                    kv = (r - mv + 1) % 3           # window offset whose pixel is in bank r
                    carry = (mv + kv - 1 - r) // 3   # that pixel is -1, 0 or +1 tile away
                    with m.Case(mv):
                        m.d.comb += [k_off.eq(kv), tile.eq(div + carry)]
            return k_off, tile, (tile >= 0) & (tile * 3 + r < limit)

        row_sel = [bank_axis("y", r, ent.ymod, ent.ydiv, cfg.height) for r in range(3)]
        col_sel = [bank_axis("x", c, ent.xmod, ent.xdiv, cfg.width) for c in range(3)]
        weight_rp = weights.read_port()
        m.d.comb += weight_rp.addr.eq(s1_g)

        s2_valid, s2_first, s2_last = Signal(), Signal(), Signal()
        s2_pos = Signal(range(cfg.positions))
        s2_widx = [Signal(range(9), name=f"s2_widx{b}") for b in range(9)]
        s2_inb = [Signal(name=f"s2_inb{b}") for b in range(9)]
        bank_rps = []
        for r in range(3):
            for c in range(3):
                b = r * 3 + c
                ky, ty, yin = row_sel[r]
                kx, tx, xin = col_sel[c]
                rp = ifmap_banks[b].read_port()
                bank_rps.append(rp)
                addr = s1_g * cfg.tiles + ty * cfg.tile_cols + tx
                m.d.comb += rp.addr.eq(addr[:len(rp.addr)])
                m.d.sync += [s2_widx[b].eq(ky * 3 + kx), s2_inb[b].eq(yin & xin)]
        m.d.sync += [s2_valid.eq(s1_valid), s2_first.eq(s1_first), s2_last.eq(s1_last),
                     s2_pos.eq(ent.pos)]

        # S2: 9*L products; the filter tap is chosen per bank (the window is rotated by y%3, x%3).
        products = []
        for b in range(9):
            tap = weight_rp.data.word_select(s2_widx[b], 8 * lanes)
            for lane in range(lanes):
                x = bank_rps[b].data.word_select(lane, 8).as_signed()
                w = tap.word_select(lane, 8).as_signed()
                p = Signal(signed(16), name=f"prod{b}_{lane}")
                m.d.sync += p.eq(Mux(s2_inb[b], x * w, 0))
                products.append(p)
        s3_valid, s3_first, s3_last = Signal(), Signal(), Signal()
        s3_pos = Signal.like(s2_pos)
        m.d.sync += [s3_valid.eq(s2_valid), s3_first.eq(s2_first), s3_last.eq(s2_last),
                     s3_pos.eq(s2_pos)]
        m.d.comb += self.mac_active.eq(s2_valid)

        # S3: adder tree.
        s4_sum = Signal(signed(cfg.sum_bits))
        s4_valid, s4_first, s4_last = Signal(), Signal(), Signal()
        s4_pos = Signal.like(s2_pos)
        m.d.sync += [s4_sum.eq(_tree_sum(products)), s4_valid.eq(s3_valid),
                     s4_first.eq(s3_first), s4_last.eq(s3_last), s4_pos.eq(s3_pos)]

        # S4: accumulate over channel groups, starting from the bias.
        acc = Signal(signed(cfg.acc_bits))
        acc_next = Signal(signed(cfg.acc_bits))
        m.d.comb += acc_next.eq(Mux(s4_first, bias, acc) + s4_sum)
        s5_acc = Signal(signed(cfg.acc_bits))
        s5_valid = Signal()
        s5_pos = Signal.like(s2_pos)
        with m.If(s4_valid):
            m.d.sync += acc.eq(acc_next)
        m.d.sync += [s5_acc.eq(acc_next), s5_valid.eq(s4_valid & s4_last), s5_pos.eq(s4_pos)]

        # S5: ReLU, multiply, add the rounding half.
        relu = Signal(unsigned(cfg.acc_bits - 1))
        m.d.comb += relu.eq(Mux(s5_acc[-1], 0, s5_acc[:cfg.acc_bits - 1]))
        s6_scaled = Signal(unsigned(cfg.scaled_bits))
        s6_valid = Signal()
        s6_pos = Signal.like(s2_pos)
        m.d.sync += [s6_scaled.eq(relu * mult + ((Const(1, 32) << shift) >> 1)),
                     s6_valid.eq(s5_valid), s6_pos.eq(s5_pos)]

        # S6: shift, saturate, write one byte of the output buffer.
        shifted = Signal(unsigned(cfg.scaled_bits))
        q = Signal(OFM_BITS)
        m.d.comb += [shifted.eq(s6_scaled >> shift),
                     q.eq(Mux(shifted > 255, 255, shifted[:OFM_BITS]))]
        ofm_wp = ofm.write_port(granularity=8)
        with m.If(s6_valid):
            m.d.comb += [ofm_wp.addr.eq(s6_pos >> _log2(p_bytes)),
                         ofm_wp.data.eq(Cat(q for _ in range(p_bytes))),
                         ofm_wp.en.eq((Const(1, p_bytes) << s6_pos[:_log2(p_bytes)])[:p_bytes])]
        with m.Elif(self.ofm_we):
            m.d.comb += [ofm_wp.addr.eq(self.ofm_addr), ofm_wp.data.eq(self.ofm_data),
                         ofm_wp.en.eq(-1)]
        with m.If(self.start):
            m.d.sync += self.computed.eq(0)
        with m.Elif(s6_valid):
            m.d.sync += self.computed.eq(self.computed + 1)

        in_flight = s1_valid | s2_valid | s3_valid | s4_valid | s5_valid | s6_valid
        with m.If(running & ~self.start & ~v0 & ~in_flight):
            m.d.sync += running.eq(0)
        m.d.comb += self.busy.eq(running)

        ofm_rp = ofm.read_port()
        m.d.comb += [ofm_rp.addr.eq(self.rd_addr), ofm_rp.en.eq(self.rd_en),
                     self.rd_data.eq(ofm_rp.data)]
        return m


class VelcroAccelerator(wiring.Component):
    """N compression-skip conv2d(3x3)+ReLU instances behind a command stream.

    ``i`` carries commands (see :mod:`hdl.protocol`), ``o`` the output maps of each FRAME.
    Both are valid/ready streams that tolerate arbitrary stalls on either side. ``counters``
    are the performance counters of the last frame; ``idle`` is high between commands.
    """

    def __init__(self, cfg: AccelConfig = AccelConfig()):
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(cfg.bus_width)),
            "o": Out(stream.Signature(output_layout(cfg))),
            "counters": Out(counter_layout(cfg)),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        n_inst, k = cfg.instances, cfg.mask_lanes
        insts = []
        for n in range(n_inst):
            inst = ConvInstance(cfg)
            m.submodules[f"instance{n}"] = inst
            insts.append(inst)
        cnt = self.counters

        # -- record assembly: a record of R bits arrives over ceil(R/bus) beats ----------------
        max_beats = max(cfg.beats(cfg.tile_bits), cfg.beats(cfg.weight_bits))
        held = Signal(cfg.bus_width * max(max_beats - 1, 1))
        beat = Signal(range(max_beats))
        beat_in = self.i.valid & self.i.ready

        def record(bits):
            """(record value, record-complete strobe) for records of ``bits`` bits."""
            beats = cfg.beats(bits)
            if beats == 1:
                return self.i.payload[:bits], beat_in
            value = Cat(held[:cfg.bus_width * (beats - 1)], self.i.payload)[:bits]
            return value, beat_in & (beat == beats - 1)

        def take_beats(bits):
            beats = cfg.beats(bits)
            if beats > 1:
                with m.If(beat_in):
                    m.d.sync += held.word_select(beat, cfg.bus_width).eq(self.i.payload)
                    m.d.sync += beat.eq(Mux(beat == beats - 1, 0, beat + 1))

        idx = Signal(range(max(cfg.groups * cfg.tiles, n_inst * cfg.ofm_words,
                               n_inst * cfg.groups, cfg.mask_chunks) + 1))
        inst_sel = Signal(range(n_inst))
        sub = Signal(range(max(cfg.groups, cfg.ofm_words)))

        def next_record(limit_sub, total):
            """Advance (instance, sub-index) counters; returns the 'last record' condition."""
            m.d.sync += idx.eq(idx + 1)
            with m.If(sub == limit_sub - 1):
                m.d.sync += [sub.eq(0), inst_sel.eq(inst_sel + 1)]
            with m.Else():
                m.d.sync += sub.eq(sub + 1)
            return idx == total - 1

        def write_selected(data_port, we_port, value, done):
            """Offer ``value`` to every instance; only the selected one writes it."""
            for n, inst in enumerate(insts):
                m.d.comb += [getattr(inst, data_port).eq(value),
                             getattr(inst, we_port).eq(done & (inst_sel == n))]

        def reset_counters():
            m.d.sync += [idx.eq(0), sub.eq(0), inst_sel.eq(0), beat.eq(0)]

        # -- mask chunk positions, shared by all instances --------------------------------------
        entries = Signal(data.ArrayLayout(entry_layout(cfg), k))
        past_end = Signal(k)
        for t in range(k):
            p = idx * k + t
            y, x = p // cfg.width, p % cfg.width
            m.d.comb += [entries[t].pos.eq(p), entries[t].ydiv.eq(y // 3),
                         entries[t].ymod.eq(y % 3), entries[t].xdiv.eq(x // 3),
                         entries[t].xmod.eq(x % 3), past_end[t].eq(p >= cfg.positions)]

        # -- drain ------------------------------------------------------------------------------
        out_valid = Signal()
        out_last = Signal()
        out_sel = Signal(range(n_inst))
        rd_en = Signal()
        m.d.comb += [self.o.valid.eq(out_valid), self.o.payload.last.eq(out_last),
                     self.o.payload.data.eq(Array(inst.rd_data for inst in insts)[out_sel])]

        for inst in insts:
            m.d.comb += [inst.tile_addr.eq(idx), inst.weight_addr.eq(sub),
                         inst.ofm_addr.eq(sub), inst.rd_addr.eq(sub), inst.rd_en.eq(rd_en),
                         inst.mask_entries.eq(entries), inst.mask_first.eq(idx == 0)]

        any_busy = Signal()
        m.d.comb += any_busy.eq(Cat(inst.busy for inst in insts).any())
        for n, inst in enumerate(insts):
            m.d.comb += [cnt.computed[n].eq(inst.computed),
                         cnt.skipped[n].eq(cfg.positions - inst.uncompressed)]

        in_frame = Signal()
        with m.If(in_frame):
            m.d.sync += cnt.total_cycles.eq(cnt.total_cycles + 1)
        with m.If(Cat(inst.mac_active for inst in insts).any()):
            m.d.sync += cnt.mac_active_cycles.eq(cnt.mac_active_cycles + 1)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.i.ready.eq(1), self.idle.eq(1)]
                reset_counters()
                with m.If(self.i.valid):
                    with m.Switch(self.i.payload[:8]):
                        with m.Case(Opcode.WEIGHTS):
                            m.next = "WEIGHTS"
                        with m.Case(Opcode.MASK):
                            m.next = "MASK"
                        with m.Case(Opcode.MEANS):
                            m.next = "MEANS"
                        with m.Case(Opcode.FRAME):
                            m.next = "LOAD"
                            m.d.sync += [in_frame.eq(1), cnt.total_cycles.eq(1),
                                         cnt.load_cycles.eq(0), cnt.compute_cycles.eq(0),
                                         cnt.drain_cycles.eq(0), cnt.mac_active_cycles.eq(0)]
                    # any other opcode is dropped

            with m.State("WEIGHTS"):
                m.d.comb += self.i.ready.eq(1)
                take_beats(cfg.weight_bits)
                value, done = record(cfg.weight_bits)
                write_selected("weight_data", "weight_we", value, done)
                with m.If(done):
                    with m.If(next_record(cfg.groups, n_inst * cfg.groups)):
                        reset_counters()
                        m.next = "QUANT"

            with m.State("QUANT"):
                m.d.comb += self.i.ready.eq(1)
                value, done = record(cfg.QUANT_BITS)
                write_selected("quant_data", "quant_we", value, done)
                with m.If(done):
                    with m.If(next_record(1, n_inst)):
                        m.next = "IDLE"

            with m.State("MASK"):
                m.d.comb += self.i.ready.eq(1)
                value, done = record(n_inst * k)
                for n, inst in enumerate(insts):
                    m.d.comb += [inst.mask_valid.eq(done),
                                 inst.mask_bits.eq(value[n * k:(n + 1) * k] | past_end)]
                with m.If(done):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == cfg.mask_chunks - 1):
                        m.next = "IDLE"

            with m.State("MEANS"):
                m.d.comb += self.i.ready.eq(1)
                value, done = record(cfg.bus_width)
                write_selected("ofm_data", "ofm_we", value, done)
                with m.If(done):
                    with m.If(next_record(cfg.ofm_words, n_inst * cfg.ofm_words)):
                        m.next = "IDLE"

            with m.State("LOAD"):
                m.d.comb += self.i.ready.eq(1)
                m.d.sync += cnt.load_cycles.eq(cnt.load_cycles + 1)
                take_beats(cfg.tile_bits)
                value, done = record(cfg.tile_bits)
                for inst in insts:
                    m.d.comb += [inst.tile_data.eq(value), inst.tile_we.eq(done)]
                with m.If(done):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == cfg.groups * cfg.tiles - 1):
                        m.next = "START"

            with m.State("START"):
                m.d.comb += [inst.start.eq(1) for inst in insts]
                m.d.sync += cnt.compute_cycles.eq(1)
                reset_counters()
                m.next = "COMPUTE"

            with m.State("COMPUTE"):
                with m.If(any_busy):
                    m.d.sync += cnt.compute_cycles.eq(cnt.compute_cycles + 1)
                with m.Else():
                    m.next = "DRAIN"

            with m.State("DRAIN"):
                m.d.sync += cnt.drain_cycles.eq(cnt.drain_cycles + 1)
                total = n_inst * cfg.ofm_words
                # A synchronous read port with enable: data for the word issued now is on
                # rd_data next cycle and is held while the sink stalls.
                with m.If(~out_valid | self.o.ready):
                    m.d.comb += rd_en.eq(1)
                    m.d.sync += [out_valid.eq(idx < total), out_last.eq(idx == total - 1),
                                 out_sel.eq(inst_sel)]
                    with m.If(idx < total):
                        next_record(cfg.ofm_words, total)
                with m.If(out_valid & self.o.ready & out_last):
                    m.d.sync += [in_frame.eq(0), cnt.frames.eq(cnt.frames + 1)]
                    m.next = "IDLE"
        return m
