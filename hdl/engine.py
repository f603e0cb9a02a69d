"""The streaming, balanced compression-skip engine (issue 9): the top that joins its pieces.

Pieces, each a component with its own test, joined here:

* :class:`~hdl.frontend.CommandFrontEnd`: the commands (:mod:`hdl.protocol`) in; LAYER sets the
  layer, WEIGHTS writes every instance's filters and quant records (every instance holds every one
  of the N channels, slot = channel; N is independent of the P instances), SCHEDULE the walkers'
  runs and the instances' pixel tables (the host-dealt work lists, :func:`py_ref.schedule.deal`),
  FRAME forwards B images to the dealer;
* :class:`~hdl.dealer.WindowDealer`: segment records in, one strip per cycle broadcast to every
  datapath, which keeps the windows of its own pixels, image j in window buffer j % 2;
* per pair of twin instances a :class:`~hdl.walker.WorkWalker` (the pair's dealt run, walked
  once per image) feeding a :class:`~hdl.datapath.Datapath` (one packed DSP48E2 chain);
* :class:`~hdl.packer.OutputPacker`: the pairs' result streams -> compact-order output beats,
  ``last`` on each image's final beat;
* :class:`~hdl.image_control.ImageControl`: starts the walkers on each loaded image, tracks the
  images in flight per buffer and gives the dealer its buffers back;
* :class:`~hdl.counters.EngineCounters`: the batch and per-image counters, from the events the
  other pieces report.

Images stream back to back: image j + 1 loads while image j computes, and the walkers start image
j + 1 as soon as they have offered image j's last entry (and j + 1 is loaded), so the datapaths
never drain between images. An image's buffer is released when the packer has taken its last
result. Without stalls image j takes exactly ``steps * G + PIPELINE_LATENCY`` cycles
(hdl.config; between images the walkers add one idle cycle when G = 1, none when G > 1) from
its first work entry to its last result (counter ``image_cycles``, which leaves out cycles in
which output backpressure holds pair 0's result).

Formats: :mod:`hdl.protocol`. Counters: :func:`hdl.protocol.stream_counter_layout`; ``image_done``
is high for one cycle whenever the per-image counters hold a newly completed image.
"""

from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .config import AccelConfig, ConfigError
from .counters import EngineCounters
from .datapath import Datapath
from .dealer import WindowDealer
from .frontend import CommandFrontEnd
from .image_control import ImageControl
from .packer import OutputPacker, beat_layout
from .protocol import stream_counter_layout
from .walker import WorkWalker

__all__ = ["VelcroAccelerator", "check_buildable"]


def check_buildable(cfg: AccelConfig) -> None:
    """ConfigError naming what the engine cannot be built for (its parts refuse at
    construction, which the generator only reaches while elaborating): call it before any long
    work (hdl.generate.config_from_args does, for every command that builds a design)."""
    try:
        OutputPacker(cfg)._MustUse__silence = True
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


class VelcroAccelerator(wiring.Component):
    """``i``: commands; ``o``: compact output beats; ``counters``, ``image_done``, ``idle``."""

    def __init__(self, cfg: AccelConfig = AccelConfig()):
        self.cfg = cfg = cfg.design
        super().__init__({
            "i": In(stream.Signature(cfg.bus_width)),
            "o": Out(stream.Signature(beat_layout(cfg))),
            "counters": Out(stream_counter_layout(cfg)),
            "image_done": Out(1),
            "idle": Out(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        m.submodules.front = front = CommandFrontEnd(cfg)
        m.submodules.dealer = dealer = WindowDealer(cfg)
        m.submodules.packer = packer = OutputPacker(cfg)
        m.submodules.control = control = ImageControl(cfg)
        m.submodules.counters = counters = EngineCounters(cfg)
        dps, walkers = [], []
        for d in range(cfg.pairs):
            dp = m.submodules[f"datapath{d}"] = Datapath(cfg, cfg.out_channels)
            wk = m.submodules[f"walker{d}"] = WorkWalker(cfg, d)
            dps.append(dp)
            walkers.append(wk)

        # the data: commands -> front end -> dealer, datapaths' memories and walkers' runs;
        # walkers -> datapaths -> packer -> output
        wiring.connect(m, wiring.flipped(self.i), front.i)
        wiring.connect(m, front.frame, dealer.i)
        wiring.connect(m, front.weights, *[dp.load.weights for dp in dps])
        wiring.connect(m, front.quant, *[dp.load.quant for dp in dps])
        wiring.connect(m, dealer.strip, *[dp.load.strip for dp in dps])
        wiring.connect(m, packer.o, wiring.flipped(self.o))
        for d, (dp, wk) in enumerate(zip(dps, walkers)):
            # instances 2d and 2d + 1 (twins); an odd P's last pair has twin A only
            for t in range(cfg.twins):
                if 2 * d + t < cfg.instances:
                    wiring.connect(m, front.pixels[2 * d + t], dp.pixels[t])
            wiring.connect(m, front.entries[d], wk.write)
            wiring.connect(m, wk.work, dp.work)
            wiring.connect(m, dp.result, packer.results[d])
            m.d.comb += [packer.counts[d].eq(wk.count), dp.groups.eq(front.layer.groups),
                         wk.clear.eq(front.clear), wk.start.eq(control.walk),
                         wk.buf.eq(control.image.buf)]
        m.d.comb += [dealer.layer.eq(front.layer), dealer.images.eq(front.images),
                     dealer.start.eq(front.batch.start), packer.steps.eq(front.steps)]
        # idle once the counters show the last batch too (they count a registered cycle late)
        idle = front.idle
        for k in range(EngineCounters.LATENCY):
            seen = Signal(name=f"idle_seen{k}")
            m.d.sync += seen.eq(idle)
            idle = idle & seen
        m.d.comb += self.idle.eq(idle)

        # the images: loaded by the dealer, started by the control, ended by the packer
        m.d.comb += [control.start.eq(front.batch.start), control.loaded.eq(dealer.loaded),
                     control.running.eq(Cat(wk.running for wk in walkers).any()),
                     control.steps.eq(front.steps), control.packed.eq(packer.image_end),
                     dealer.released.eq(control.finished), front.accepted.eq(dealer.accepted),
                     front.taking.eq(dealer.taking),
                     front.finished.eq(control.finished), front.out_valid.eq(self.o.valid)]

        # the counters
        wiring.connect(m, front.batch, counters.batch)
        wiring.connect(m, control.image, counters.image)
        ev = counters.events
        m.d.comb += [
            ev.loading.eq(dealer.busy | (dealer.i.valid & dealer.i.ready)),
            ev.computing.eq(control.running | Cat(r.valid for r in packer.results).any()
                            | Cat(dp.active for dp in dps).any() | control.image.open.any()),
            ev.mac_active.eq(Cat(dp.active for dp in dps).any()),
            ev.out_valid.eq(self.o.valid),
            ev.stalled.eq(dps[0].result.valid & ~dps[0].result.ready),
        ]
        for w, dp in zip(counters.work, dps):
            m.d.comb += [w.taken.eq(dp.work.valid & dp.work.ready), w.entry.eq(dp.work.payload)]
        m.d.comb += [self.counters.eq(counters.counters), self.image_done.eq(counters.image_done)]
        return m
