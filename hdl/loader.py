"""Double-buffered input loader of the streaming engine.

Takes the image beats of a FRAME command (:func:`hdl.protocol.batch_frame_beats`: each image a
whole number of beats, ``tiles_per_beat`` tiles per beat, or one tile over ``beats_per_tile``
beats) and writes the tiles into every datapath's ifmap banks, image j into buffer ``j % 2``.

* **Two tiles per cycle.** A beat's tiles go into a unit register that shifts out two tiles per
  cycle through :class:`~hdl.datapath.TilePairSignature` (the banks take two consecutive tiles
  per cycle); the next beat is accepted in the cycle the unit empties, so 7 tiles per beat load
  in 4 cycles per beat (245 cycles per default 64x64 image, under the ~410 compute cycles of
  C = 0.9).
* **Double buffering.** Image j may be accepted only once image j - 2 no longer needs its buffer:
  ``j < released + 2``, ``released`` being the images of the batch the datapaths are done with.
* ``start`` (a pulse at the FRAME header) begins a batch of ``images`` images; ``loaded`` counts
  the images of the batch completely written (their entries may be walked from the next cycle).
"""

from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig
from .datapath import TilePairSignature, buffer_tiles
from .protocol import MAX_BATCH, beats_per_tile, tiles_per_beat

__all__ = ["InputLoader"]


class InputLoader(wiring.Component):
    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(cfg.bus_width)),
            "start": In(1),
            "images": In(range(MAX_BATCH + 1)),
            "released": In(range(MAX_BATCH + 1)),
            "accepted": Out(range(MAX_BATCH + 1)),   # images whose beats have all arrived
            "loaded": Out(range(MAX_BATCH + 1)),
            "busy": Out(1),                          # tiles waiting to be written
            "write": Out(TilePairSignature(cfg)),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        tb = cfg.tile_bits
        n_tiles = cfg.groups * cfg.tiles
        per_unit = max(tiles_per_beat(cfg), 1)      # tiles per unit
        unit_beats = 1 if tiles_per_beat(cfg) else beats_per_tile(cfg)

        unit = Signal(per_unit * tb)
        left = Signal(range(per_unit + 1))          # tiles of the unit not yet written
        w_tile = Signal(range(n_tiles + 1))         # next tile to write, within the image
        w_buf = Signal()
        m.d.comb += self.busy.eq(left != 0)
        writing = Signal(range(3))
        m.d.comb += writing.eq(Mux(left >= 2, 2, left))
        self._write(m, unit, left, w_tile, w_buf, writing, n_tiles, tb)

        # -- accept: a unit is complete with its last beat, taken as the unit register empties
        in_tile = Signal(range(n_tiles + 1))
        part = Signal(range(unit_beats))
        held = Signal(cfg.bus_width * max(unit_beats - 1, 1))
        gate = (self.accepted < self.images) & (self.accepted < self.released + 2)
        final = part == unit_beats - 1
        m.d.comb += self.i.ready.eq(gate & (~final | (left <= 2)))
        take = self.i.valid & self.i.ready
        count = Signal(range(per_unit + 1))
        m.d.comb += count.eq(Mux(n_tiles - in_tile < per_unit, n_tiles - in_tile, per_unit))
        with m.If(take):
            if unit_beats > 1:
                m.d.sync += part.eq(Mux(final, 0, part + 1))
                with m.If(~final):
                    m.d.sync += held.word_select(part, cfg.bus_width).eq(self.i.payload)
            with m.If(final):
                value = (Cat(held[:cfg.bus_width * (unit_beats - 1)], self.i.payload)
                         if unit_beats > 1 else self.i.payload)
                m.d.sync += [unit.eq(value[:per_unit * tb]), left.eq(count)]
                with m.If(in_tile + count == n_tiles):
                    m.d.sync += [in_tile.eq(0), self.accepted.eq(self.accepted + 1)]
                with m.Else():
                    m.d.sync += in_tile.eq(in_tile + count)
        with m.If(self.start):
            m.d.sync += [self.accepted.eq(0), self.loaded.eq(0), in_tile.eq(0), part.eq(0),
                         w_tile.eq(0), w_buf.eq(0), left.eq(0)]
        return m

    def _write(self, m, unit, left, w_tile, w_buf, writing, n_tiles, tb):
        """Two tiles per cycle from the unit register into the banks of buffer ``w_buf``."""
        w = self.write
        m.d.comb += [w.en.eq(Cat(left >= 1, left >= 2)),
                     w.addr.eq(w_buf * buffer_tiles(self.cfg) + w_tile),
                     w.data[0].eq(unit[:tb]), w.data[1].eq(unit[tb:2 * tb])]
        with m.If(left != 0):
            m.d.sync += [unit.eq(unit >> (2 * tb)), left.eq(left - writing)]
            with m.If(w_tile + writing == n_tiles):
                m.d.sync += [w_tile.eq(0), w_buf.eq(~w_buf), self.loaded.eq(self.loaded + 1)]
            with m.Else():
                m.d.sync += w_tile.eq(w_tile + writing)
