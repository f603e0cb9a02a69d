"""A whole VELCRO network on the simulated RTL: the Python API behind ``velcro network``.

    design = NETWORK_DESIGN                              # one generated design for every layer
    result = run_network(qnet, ifmaps, sim="verilator")  # qnet: py_ref.network.QuantNetwork

Every layer of ``qnet`` runs on the same build of ``design`` (the layer's shape, weights,
requantisation and schedule set by its commands, hdl.protocol's LAYER first), as one FRAME of
the K images; the host expands each layer's compact output with the layer's means (the
testbench's decode), pools and requantises it into the next layer's input
(:meth:`~py_ref.network.QuantNetwork.input_of`), and runs the classifier on conv5's output.
Every layer's ofm is compared with the golden model (``==``) and so are the logits with the
int8 reference (:meth:`~py_ref.network.QuantNetwork.reference`); a difference raises
:class:`NetworkMismatch`.
"""

from __future__ import annotations

import numpy as np

from hdl.config import AccelConfig, ConfigError
from hdl.contract import compute_cycle_bound, stream_image_cycles
from py_ref.golden import golden_mismatch
from py_ref.schedule import deal

from .frame_runner import run_frame
from .runner import Build

__all__ = ["NETWORK_DESIGN", "NetworkMismatch", "layer_config", "layer_figures", "run_network"]

#: The design that serves every conv layer of the Fashion-MNIST CNN (C_in 1..32, N 16..32,
#: 64x64 down to 16x16): P = 16 instances of L = 16 lanes, so the C_in = 1 and C_in = 16 layers
#: take one cycle per output (G = 1: the 64x64 C_in = 1 layer takes 4096 + 1 cycles per image
#: dense, as the one-layer design) and conv5 (C_in = 32) two.
NETWORK_DESIGN = AccelConfig(height=64, width=64, in_channels=32, out_channels=32, instances=16,
                             lanes=16)


class NetworkMismatch(AssertionError):
    """The RTL's output differs from the golden model's."""


def layer_config(design: AccelConfig, layer) -> AccelConfig:
    """The configuration of ``layer`` (a :class:`py_ref.network.NetLayer`) on ``design``;
    ConfigError naming the maximum it exceeds."""
    h, w, c_in, n = layer.shape
    try:
        return design.layer(h, w, c_in, n)
    except ConfigError as e:
        raise ConfigError(f"layer {layer.name}: {e}") from None


def layer_figures(cfg: AccelConfig, layer) -> dict:
    """Per-image figures of ``layer`` on ``cfg`` from its dealt schedule: steady-state cycles
    in a stream (hdl.contract's law, which ``make sim`` measures exactly), the same layer
    dense, and the MAC utilisation (useful MACs over the P * 9 * L the design offers per
    cycle)."""
    schedule = deal(layer.mask, cfg.instances)
    dense = deal(np.zeros_like(layer.mask), cfg.instances)
    cycles = stream_image_cycles(cfg, schedule.steps)
    useful = schedule.total * cfg.in_channels
    return {"cycles": cycles, "dense_cycles": stream_image_cycles(cfg, dense.steps),
            "compute_bound": compute_cycle_bound(cfg, schedule),
            "mac_utilisation": useful / (cfg.instances * cfg.lanes * cycles),
            "ratio": layer.ratio}


def run_network(qnet, ifmaps: np.ndarray, sim: str = "verilator", *,
                design: AccelConfig = NETWORK_DESIGN, build: Build | None = None,
                progress=None) -> dict:
    """Run ``qnet`` on conv1 inputs ``ifmaps`` int8 [K, 1, 64, 64] layer after layer on the
    RTL. Returns {"ofm": [per layer], "acc", "logits", "layers": [per layer figures with the
    measured "image_cycles" [K] and "stream_cycles"]}; NetworkMismatch if any layer's ofm
    differs from the golden model or the logits from the int8 reference."""
    say = progress or (lambda message: None)
    configs = [layer_config(design, layer) for layer in qnet.layers]
    if build is None:
        build = Build(design, sim, defer=True)
    build.build(progress=say)
    ofms, figures, x = [], [], np.asarray(ifmaps)
    for i, (layer, cfg) in enumerate(zip(qnet.layers, configs)):
        if i:
            x = qnet.input_of(i, ofms[-1])
        say(f"layer {layer.name}: {len(x)} images of {list(x.shape[1:])} on {sim}")
        frame = layer.frame(x[0])
        result = run_frame(frame, sim, build=build, batch=x, cfg=cfg)
        ofm = result.ofm
        for k, xx in enumerate(x):
            differs = golden_mismatch(layer.frame(xx), ofm[k])
            if differs:
                raise NetworkMismatch(f"layer {layer.name}, image {k}: {differs}")
        fig = layer_figures(cfg, layer)
        fig["image_cycles"] = result.counters["image_cycles"]
        fig["stream_cycles"] = result.stream_cycles
        if not (fig["image_cycles"] == fig["compute_bound"]).all():
            raise NetworkMismatch(f"layer {layer.name}: compute took {fig['image_cycles']} "
                                  f"cycles per image, the law says {fig['compute_bound']}")
        figures.append(fig)
        ofms.append(ofm)
    acc, logits = qnet.classify(ofms[-1])
    ref = qnet.reference(np.asarray(ifmaps))
    if not (np.array_equal(acc, ref["acc"]) and np.array_equal(logits, ref["logits"])):
        raise NetworkMismatch("the logits differ from the int8 reference's")
    return {"ofm": ofms, "acc": acc, "logits": logits, "reference_logits": ref["logits"],
            "layers": figures}
