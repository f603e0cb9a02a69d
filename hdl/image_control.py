"""The engine's image control: which image the walkers start next, which images are in flight in
which window buffer, and which buffers the window dealer may refill.

Images of a batch are started in order, image j in window buffer ``j % 2``: ``go`` starts the
next one as soon as it is ``loaded`` (its windows written), no walker is ``running`` and no
batch ``start`` is under way. With a schedule of ``steps`` > 0 it starts the walkers (``walk``)
and opens its buffer until the packer takes its last step (``packed``); with ``steps`` = 0 it has
nothing to compute and ends at once (``image.empty``). Images end in order, so the next one to end
is in buffer ``image.ended`` = ``finished % 2``; ``finished`` counts the ended images of the
batch, which is also how many buffers the dealer has back (its ``released``). ``start`` sets every
count back to zero for a new batch.
"""

from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig
from .datapath import entries_per_instance
from .protocol import MAX_BATCH

__all__ = ["ImageControl", "ImageSignature"]


class ImageSignature(wiring.Signature):
    """The images' progress, seen from the image control: ``go`` when an image starts, in buffer
    ``buf``, ``empty`` when it has nothing to compute (it ends in the same cycle); ``end`` when an
    image ends (its last step packed, or an empty one at ``go``); ``open[b]`` while an image
    computes in buffer b; ``ended``, the buffer of the next image to end."""

    def __init__(self):
        super().__init__({"go": Out(1), "buf": Out(1), "empty": Out(1), "end": Out(1),
                          "open": Out(2), "ended": Out(1)})


class ImageControl(wiring.Component):
    """``start``, ``loaded``, ``running``, ``steps`` and ``packed`` in; ``walk`` (start the
    walkers on ``image.buf``), ``image`` (:class:`ImageSignature`) and ``finished`` out."""

    def __init__(self, cfg: AccelConfig):
        self.cfg = cfg = cfg.design
        super().__init__({
            "start": In(1),                         # a batch begins
            "loaded": In(range(MAX_BATCH + 1)),     # images of the batch whose windows are in
            "running": In(1),                       # a walker still reads its run
            "steps": In(range(entries_per_instance(cfg) + 1)),
            "packed": In(1),                        # the packer takes an image's last step
            "walk": Out(1),
            "image": Out(ImageSignature()),
            "finished": Out(range(MAX_BATCH + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        img = self.image
        started = Signal(range(MAX_BATCH + 1))
        finished = self.finished
        m.d.comb += [img.go.eq(~self.running & (started < self.loaded) & ~self.start),
                     img.buf.eq(started[0]),
                     img.empty.eq(img.go & (self.steps == 0)),
                     img.end.eq(self.packed | img.empty),
                     self.walk.eq(img.go & (self.steps != 0))]
        with m.If(img.go):
            m.d.sync += started.eq(started + 1)
        with m.If(img.end):
            m.d.sync += [finished.eq(finished + 1), img.ended.eq(~img.ended)]
        for b in range(2):
            with m.If(self.walk & (img.buf == b)):
                m.d.sync += img.open[b].eq(1)
            with m.Elif(self.packed & (img.ended == b)):
                m.d.sync += img.open[b].eq(0)
        with m.If(self.start):
            m.d.sync += [started.eq(0), finished.eq(0), img.ended.eq(0), img.open.eq(0)]
        return m
