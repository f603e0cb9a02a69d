"""The Fashion-MNIST CNN as an int8 network of accelerator layers, and its integer reference.

Every conv layer (conv1..conv5: 3x3, stride 1, pad 1, + ReLU) is one FRAME of the golden
contract (:mod:`py_ref.golden`); the host does the rest in integers:

* input: the model's own resized, normalised image (a forward pre-hook on conv1), int8 at
  s_in = max|x| / 127 over the calibration images;
* between layers: a layer's uint8 output q (scale s_y) is expanded with its VELCRO means (the
  hardware's compact output decoded), max-pooled 2x2 where the model pools (before conv4 and
  conv5: pooling commutes with the monotone requantisation), and becomes the next layer's int8
  input ``min(127, (q + 1) >> 1)``, i.e. scale s_x = 2 * s_y (a post-ReLU map uses 0..127 of
  int8 either way, as :mod:`py_ref.export`'s inputs do);
* classifier: the 4x4 average pool as 4x4 block *sums* of conv5's uint8 output (scale s_y / 16),
  the linear layer with int8 weights (per output, s_fc = max|W| / 127) and an int64 bias at
  s_fc * s_y / 16: ``acc = W_q @ sums + b_q`` exactly in int64, logits = acc * scale.

Scales come from the calibration images only: s_y = max(y) / 255 of the float model's
post-ReLU map of each layer, weights per output channel, mult/shift as :mod:`py_ref.export`.

:meth:`QuantNetwork.reference` runs the whole network with :func:`py_ref.golden.golden_ofm`;
``sim/network.py`` runs the same layers on the simulated RTL and must give the same ofm (``==``)
and logits (``==``).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .export import LAYERS, check_layer, layer_input, quantise_conv
from .golden import Frame, golden_ofm
from .velcro import VelcroError, capture_points

__all__ = ["NETWORK", "NetLayer", "QuantNetwork", "quantise_network", "to_next_input",
           "max_pool2", "torch_int8_top1"]

#: The CNN's layers in order, each with the pooling the model applies to its input.
NETWORK = (("conv1", None), ("conv2", None), ("conv3", None), ("conv4", "maxpool2"),
           ("conv5", "maxpool2"))
#: The classifier's average pool: output 4x4 of conv5's 16x16 map.
AVG_POOL = 4


@dataclasses.dataclass
class NetLayer:
    """One accelerator layer: its FRAME constants and scales."""

    name: str
    pool: str | None            # pooling of the input (of the previous layer's output)
    weight: np.ndarray          # int8 [N, C_in, 3, 3]
    bias: np.ndarray            # int32 [N]
    mult: np.ndarray            # int64 [N]
    shift: np.ndarray           # int64 [N]
    mask: np.ndarray            # bool [N, H, W]: VELCRO's compressed elements
    means: np.ndarray           # uint8 [N, H, W]
    s_x: float
    s_w: np.ndarray
    s_y: float

    @property
    def ratio(self) -> float:
        """The layer's compression ratio C (share of its mask's elements)."""
        return float(self.mask.mean())

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(H, W, C_in, N)."""
        n, c_in = self.weight.shape[:2]
        return self.mask.shape[1], self.mask.shape[2], c_in, n

    def frame(self, ifmap: np.ndarray) -> Frame:
        """The FRAME of this layer for one int8 ifmap [C_in, H, W]."""
        return Frame.from_arrays({"ifmap": ifmap, "weight": self.weight, "bias": self.bias,
                                  "mask": self.mask, "means": self.means, "mult": self.mult,
                                  "shift": self.shift})


def max_pool2(q: np.ndarray) -> np.ndarray:
    """2x2 max pool, stride 2, of uint8 maps [..., H, W] (H, W even)."""
    h, w = q.shape[-2:]
    if h % 2 or w % 2:
        raise VelcroError(f"a 2x2 pool needs an even map, not {h}x{w}")
    return q.reshape(*q.shape[:-2], h // 2, 2, w // 2, 2).max(axis=(-3, -1))


def to_next_input(q: np.ndarray, pool: str | None) -> np.ndarray:
    """A layer's uint8 output maps [K, N, H, W] -> the next layer's int8 input (pooled if the
    model pools): ``min(127, (q + 1) >> 1)``, scale 2 * s_y."""
    q = np.asarray(q)
    if q.dtype != np.uint8:
        raise VelcroError(f"layer outputs must be uint8, not {q.dtype}")
    if pool == "maxpool2":
        q = max_pool2(q)
    elif pool is not None:
        raise VelcroError(f"unknown pooling {pool!r}")
    return np.minimum(127, (q.astype(np.int16) + 1) >> 1).astype(np.int8)


@dataclasses.dataclass
class QuantNetwork:
    """The int8 network: layers, input scale and the integer classifier."""

    s_in: float
    layers: list[NetLayer]
    fc_weight: np.ndarray       # int8 [10, F]
    fc_bias: np.ndarray         # int64 [10]
    fc_scale: np.ndarray        # float64 [10]: real logit = acc * fc_scale

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def quantise_input(self, model, images: torch.Tensor) -> np.ndarray:
        """Images [K, 1, 28, 28] -> conv1's int8 input [K, 1, 64, 64]."""
        with torch.no_grad():
            x = layer_input(model, model.conv1, images).double()
        return torch.clamp(torch.round(x / self.s_in), -127, 127).to(torch.int8).numpy()

    def input_of(self, i: int, previous: np.ndarray) -> np.ndarray:
        """Layer i's int8 input from layer i - 1's uint8 output maps [K, N, H, W]."""
        return to_next_input(previous, self.layers[i].pool)

    def classify(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """conv5's uint8 output [K, N, 16, 16] -> (acc int64 [K, 10], logits float64 [K, 10])."""
        k, n, h, w = q.shape
        bh, bw = h // AVG_POOL, w // AVG_POOL
        sums = q.astype(np.int64).reshape(k, n, AVG_POOL, bh, AVG_POOL, bw).sum(axis=(3, 5))
        acc = sums.reshape(k, -1) @ self.fc_weight.astype(np.int64).T + self.fc_bias
        return acc, acc * self.fc_scale

    def reference(self, ifmaps: np.ndarray) -> dict:
        """The whole network on the golden model: {"ofm": [per layer uint8 [K, N, H, W]],
        "acc", "logits"} for conv1 inputs ``ifmaps`` int8 [K, 1, 64, 64]."""
        ofms, x = [], ifmaps
        for i, layer in enumerate(self.layers):
            if i:
                x = self.input_of(i, ofms[-1])
            ofms.append(np.stack([golden_ofm(layer.frame(xx)) for xx in x]))
        acc, logits = self.classify(ofms[-1])
        return {"ofm": ofms, "acc": acc, "logits": logits}


def quantise_network(model, calib: torch.Tensor, stats=(), masks=()) -> QuantNetwork:
    """The int8 network of the FmnistCNN ``model`` with VELCRO masks (``stats``/``masks`` of
    `velcro compress`, matched by activation point; a point without one runs dense), every
    scale from the calibration images ``calib`` [M, 1, 28, 28]."""
    by_point = {s.index: (s, m) for s, m in zip(stats, masks)}
    with torch.no_grad():
        acts = capture_points(model, calib)
        x_cal = layer_input(model, model.conv1, calib).double()
    s_in = float(x_cal.abs().max()) / 127.0
    if not s_in > 0:
        raise VelcroError("the calibration images give conv1 an all-zero input")
    layers, s_x = [], s_in
    for name, pool in NETWORK:
        conv = check_layer(model, name)
        point = LAYERS[name][1]
        y = acts[point][1].double()
        s_y = float(y.max()) / 255.0
        if not s_y > 0:
            raise VelcroError(f"layer '{name}' has an all-zero output on the calibration set")
        wq, bq, mults, shifts, s_w = quantise_conv(conv, s_x, s_y)
        shape = tuple(y.shape[1:])
        if point in by_point:
            st, mask = by_point[point]
            if st.name != acts[point][0] or tuple(mask.shape) != shape:
                raise VelcroError(f"the masks' point {point} ('{st.name}', {list(mask.shape)}) "
                                  f"is not {name}'s output ('{acts[point][0]}', {list(shape)})")
            mask = mask.numpy().astype(bool)
            means = torch.clamp(torch.round(st.mean / s_y), 0, 255).to(torch.uint8).numpy()
        else:
            mask, means = np.zeros(shape, bool), np.zeros(shape, np.uint8)
        layers.append(NetLayer(name, pool, wq.numpy(), bq.numpy().astype(np.int32),
                               np.array(mults, np.int64), np.array(shifts, np.int64), mask,
                               means, s_x, s_w.numpy(), s_y))
        s_x = 2.0 * s_y
    fc_w = model.fc.weight.detach().double()
    fc_b = model.fc.bias.detach().double()
    s_fc = fc_w.abs().max(dim=1).values / 127.0
    s_fc = torch.where(s_fc > 0, s_fc, torch.ones_like(s_fc))
    fc_q = torch.clamp(torch.round(fc_w / s_fc[:, None]), -127, 127).to(torch.int8)
    scale = s_fc * layers[-1].s_y / (AVG_POOL * AVG_POOL)
    fc_bias = torch.round(fc_b / scale).to(torch.int64)
    return QuantNetwork(s_in, layers, fc_q.numpy(), fc_bias.numpy(), scale.numpy())


def torch_int8_top1(model, calib: torch.Tensor, images: torch.Tensor) -> np.ndarray:
    """Top-1 of PyTorch's own int8 version of ``model`` (FX graph-mode post-training static
    quantisation, the CPU backend ``x86`` or ``fbgemm``, calibrated on ``calib``) on
    ``images``: an implementation of int8 nobody here wrote."""
    import copy
    import warnings

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    engines = torch.backends.quantized.supported_engines
    engine = next((e for e in ("x86", "fbgemm", "onednn", "qnnpack") if e in engines), None)
    if engine is None:
        raise VelcroError(f"PyTorch has no int8 CPU engine here ({engines})")
    torch.backends.quantized.engine = engine
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = copy.deepcopy(model).eval()
        prepared = prepare_fx(m, get_default_qconfig_mapping(engine), (calib[:1],))
        with torch.no_grad():
            prepared(calib)
            q = convert_fx(prepared)
            return q(images).argmax(dim=1).numpy()
