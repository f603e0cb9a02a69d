"""Export one VELCRO-compressed conv layer of the Fashion-MNIST CNN as a hardware FRAME.

Every conv layer of the CNN is a 3x3, stride-1, pad-1 convolution followed by its ReLU, so each
is one invocation of the accelerator (N output channels on P instances, N independent of P):
``conv1`` (1 -> 16 on the normalised 64x64 image, the default C_in = 1 design that ``make sim``
measures), ``conv2`` and ``conv3`` (16 -> 16 at 64x64), ``conv4`` (16 -> 32 at 32x32, after
a 2x2 max pool) and ``conv5`` (32 -> 32 at 16x16). :func:`check_layer` refuses any other
layer by name with the reason (kernel size, stride, padding, dilation, groups, bias).

Quantisation (all scales from the calibration images, never from the exported images):

- input (the layer's input as the model computes it, e.g. the post-ReLU map of conv1 for
  conv2): int8, symmetric per tensor, s_x = max|x| / 127;
- weights: int8, symmetric per output channel, s_w[n] = max|W[n]| / 127;
- bias: int32 at scale s_x * s_w[n];
- output: the post-ReLU activation maps to uint8 with s_y = max(y) / 255 (per tensor), so
  ofm = round(y / s_y); the real multiplier M[n] = s_x * s_w[n] / s_y becomes
  mult[n] / 2**shift[n] with the largest shift <= 31 that keeps mult[n] < 2**16;
- means: the VELCRO means of the conv2 activation point, quantised with s_y.

The arithmetic contract is py_ref.golden's; :func:`check_export` compares golden_ofm with
the float PyTorch layer in output units (ofm steps).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from .golden import Frame, float_reference, golden_ofm
from .velcro import PointStats, VelcroError, capture_points

__all__ = ["ExportResult", "quantise_layer", "quantise_conv", "check_export", "check_layer", "LAYERS"]

#: Exportable layers of FmnistCNN: conv name -> (index of the activation point whose map feeds
#: the layer, after the model's pooling, or None for the image; index of the layer's output
#: activation point), indices over all points (the first one included).
LAYERS = {"conv1": (None, 0), "conv2": (0, 1), "conv3": (1, 2), "conv4": (2, 3),
          "conv5": (3, 4)}


def check_layer(model, layer: str):
    """The conv module ``layer`` of ``model`` if the accelerator computes it (a 3x3, stride-1,
    pad-1, dilation-1, ungrouped ``nn.Conv2d`` with a bias whose output goes through a ReLU,
    as every entry of :data:`LAYERS`); otherwise VelcroError naming the layer and the reason."""
    import torch.nn as nn
    if layer not in LAYERS:
        conv = getattr(model, layer, None) if layer.isidentifier() else None
        why = "" if conv is None else f": {_refusal(conv, nn)}"
        raise VelcroError(f"unknown layer '{layer}'{why} (exportable: {', '.join(LAYERS)})")
    conv = getattr(model, layer)
    reason = _refusal(conv, nn)
    if reason:
        raise VelcroError(f"layer '{layer}' cannot run on the accelerator: {reason}")
    return conv


def _refusal(conv, nn) -> str:
    """Why ``conv`` is not an accelerator layer ('' if it is one)."""
    if not isinstance(conv, nn.Conv2d):
        return f"it is a {type(conv).__name__}, not a Conv2d"
    checks = [(conv.kernel_size == (3, 3), f"kernel size {conv.kernel_size}, not 3x3"),
              (conv.stride == (1, 1), f"stride {conv.stride}, not 1"),
              (conv.padding == (1, 1), f"padding {conv.padding}, not 1"),
              (conv.dilation == (1, 1), f"dilation {conv.dilation}, not 1"),
              (conv.groups == 1, f"groups={conv.groups}, not 1"),
              (conv.bias is not None, "no bias")]
    return next((why for ok, why in checks if not ok), "")


@dataclasses.dataclass
class ExportResult:
    frame: Frame
    layer: str
    s_x: float
    s_w: np.ndarray
    s_y: float
    x_float: np.ndarray      # float32 [C_in,H,W]: the layer's real input for the exported image
    y_float: np.ndarray      # float64 [N,H,W]: the float layer's output (conv + ReLU), uncompressed
    mean_float: np.ndarray   # float64 [N,H,W]: VELCRO means of the output point
    ifmaps: np.ndarray       # int8 [B,C_in,H,W]: every exported image's quantised input
                             # (frame.ifmap is the first)


def _requant(m: float) -> tuple[int, int]:
    """(mult, shift) with mult / 2**shift ~= m, mult < 2**16, shift <= 31, as precise as possible."""
    if m <= 0:
        return 0, 0
    best = (0, 0)
    for shift in range(31, -1, -1):
        mult = int(round(m * 2 ** shift))
        if mult < 2 ** 16:
            best = (mult, shift)
            break
    if best == (0, 0):
        raise VelcroError(f"requantisation multiplier {m} does not fit mult < 2**16 at shift 0")
    return best


def quantise_conv(conv, s_x: float, s_y: float):
    """The conv's constants for input scale ``s_x`` and output scale ``s_y``: (int8 weights
    [N, C_in, 3, 3] per output channel at s_w = max|W[n]| / 127, int64 bias at s_x * s_w, mult
    and shift tuples of M = s_x * s_w / s_y, s_w)."""
    w = conv.weight.detach().double()
    b = conv.bias.detach().double()
    s_w = w.reshape(w.shape[0], -1).abs().max(dim=1).values / 127.0
    s_w = torch.where(s_w > 0, s_w, torch.ones_like(s_w))
    wq = torch.clamp(torch.round(w / s_w[:, None, None, None]), -127, 127).to(torch.int8)
    bq = torch.round(b / (s_x * s_w)).clamp(-2 ** 31, 2 ** 31 - 1).to(torch.int64)
    mults, shifts = zip(*[_requant(float(s_x * sw / s_y)) for sw in s_w])
    return wq, bq, mults, shifts, s_w


def layer_input(model, conv, x: torch.Tensor) -> torch.Tensor:
    """The input of module ``conv`` when ``model`` runs on ``x`` (a forward pre-hook, so the
    model's own resizing and normalisation are used, never a copy of them)."""
    seen = []
    handle = conv.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    if len(seen) != 1:
        raise VelcroError(f"the layer ran {len(seen)} times in one forward pass, not once")
    return seen[0]


def quantise_layer(model, layer: str, calib: torch.Tensor, image: torch.Tensor,
                   out_stats: PointStats, mask: torch.Tensor) -> ExportResult:
    """Quantise ``layer`` of the FmnistCNN with the VELCRO ``mask`` of its output point.

    ``calib``: calibration images [M,1,28,28] for the scales; ``image``: [B,1,28,28], the images
    whose layer inputs become the frame's ifmap (the first) and ``ifmaps`` (all).
    ``out_stats``/``mask``: the profile and mask of the layer's output activation point; both
    None for a point the algorithm left out (``--skip-first``): the layer then runs dense.
    """
    conv = check_layer(model, layer)
    i_out = LAYERS[layer][1]
    if image.ndim != 4 or len(image) < 1:
        raise VelcroError(f"image must be [B, 1, 28, 28] with B >= 1, not {tuple(image.shape)}")
    with torch.no_grad():
        acts = capture_points(model, calib)
        y_cal = acts[i_out][1].double()
        if (out_stats is None) != (mask is None):
            raise VelcroError("give both the output point's statistics and its mask, or neither")
        if out_stats is None:
            shape = y_cal.shape[1:]
            mask = torch.zeros(shape, dtype=torch.bool)
            out_stats = PointStats(acts[i_out][0], i_out, torch.zeros(shape, dtype=torch.float64),
                                   torch.zeros(shape, dtype=torch.float64), 0)
        if acts[i_out][0] != out_stats.name:
            raise VelcroError(f"profile point '{out_stats.name}' is not the output of {layer} "
                              f"('{acts[i_out][0]}')")
        x_cal = layer_input(model, conv, calib).double()
        x_all = layer_input(model, conv, image).double()
    x_img = x_all[0]
    s_x = float(x_cal.abs().max()) / 127.0
    s_y = float(y_cal.max()) / 255.0
    if not (s_x > 0 and s_y > 0):
        raise VelcroError(f"layer '{layer}' has an all-zero input or output on the calibration set")
    w = conv.weight.detach().double()
    b = conv.bias.detach().double()
    wq, bq, mults, shifts, s_w = quantise_conv(conv, s_x, s_y)
    xq_all = torch.clamp(torch.round(x_all / s_x), -127, 127).to(torch.int8)
    xq = xq_all[0]
    means = torch.clamp(torch.round(out_stats.mean / s_y), 0, 255).to(torch.uint8)
    frame = Frame.from_arrays({
        "ifmap": xq.numpy(), "weight": wq.numpy(), "bias": bq.numpy().astype(np.int32),
        "mask": mask.numpy().astype(bool), "means": means.numpy(),
        "mult": np.array(mults, np.int64), "shift": np.array(shifts, np.int64)})
    y_float = F.relu(F.conv2d(x_img[None], w, b, padding=1))[0].numpy()
    return ExportResult(frame, layer, s_x, s_w.numpy(), s_y, x_img.numpy().astype(np.float32),
                        y_float, out_stats.mean.numpy(), xq_all.numpy())


#: conv2's measured worst case, golden vs float PyTorch layer, in ofm steps (see check_export:
#: reported; the check is the derived per-element bound).
TOLERANCE_STEPS = 2.0


def error_bound(r: ExportResult) -> np.ndarray:
    """Worst-case |golden - float layer| per element, in ofm steps.

    With x_q = x + dx, w_q = w + dw (dequantised): x_q*w_q - x*w = dx*w_q + x*dw, so the
    accumulator error is at most sum|w_q|*s_x/2 + sum|x|*s_w/2 (+ s_x*s_w/2 for the bias);
    ReLU and the clamp do not increase it; the multiplier's rounding and the final rounding
    (0.5) are added.
    """
    f = r.frame
    wq = torch.from_numpy(f.weight.astype(np.float64)) * torch.from_numpy(r.s_w)[:, None, None, None]
    x = torch.from_numpy(r.x_float.astype(np.float64))[None]
    ones_x = torch.ones_like(x)
    ones_w = torch.ones_like(wq)
    s_w = torch.from_numpy(r.s_w)[:, None, None]
    acc = (F.conv2d(ones_x, wq.abs(), padding=1)[0] * (r.s_x / 2)
           + F.conv2d(x.abs(), ones_w, padding=1)[0] * s_w / 2 + r.s_x * s_w / 2)
    m_real = r.s_x * r.s_w / r.s_y
    m_used = f.mult / 2.0 ** f.shift
    rel = np.abs(m_used - m_real) / m_real
    return (acc.numpy() / r.s_y + 255.0 * rel[:, None, None] + 0.5)


def check_export(r: ExportResult) -> dict:
    """Compare golden_ofm with the float layer, in ofm steps (1 step = s_y).

    - golden vs the float model of the *quantised* arrays (py_ref.golden.float_reference): the
      integer pipeline differs only by the final rounding, <= 0.5 step;
    - golden vs the float PyTorch layer on the unquantised input and weights (dequantised with
      s_y), on uncompressed elements: input/weight quantisation adds to the rounding.  The
      check is every element within its worst-case bound (:func:`error_bound`, derived from
      the arithmetic); the figure of 2 steps (TOLERANCE_STEPS) is what conv2 measures (typically
      1.4-1.9 steps max per image, >95% of elements within 1 step; the int8 input of a post-ReLU
      map only uses 0..127) and is reported, not required: layers of more input channels
      accumulate more quantisation error (conv5, C_in = 32, reaches about 2.0);
    - compressed elements: golden outputs the quantised VELCRO mean, within 0.5 step of the
      float mean.
    """
    f = r.frame
    g = golden_ofm(f).astype(np.float64)
    bound = error_bound(r)
    ref_q = float_reference(f)
    keep = ~f.mask
    y = np.minimum(r.y_float / r.s_y, 255.0)
    err_layer = np.abs(g - y)[keep]
    err_mean = np.abs(g - r.mean_float / r.s_y)[f.mask]
    return {
        "max_err_vs_quantised_float": float(np.abs(g - ref_q).max()),
        "max_err_vs_float_layer": float(err_layer.max()) if err_layer.size else 0.0,
        "mean_err_vs_float_layer": float(err_layer.mean()) if err_layer.size else 0.0,
        "share_within_1_step": float((err_layer <= 1.0).mean()) if err_layer.size else 1.0,
        "max_err_means": float(err_mean.max()) if err_mean.size else 0.0,
        "tolerance_layer": TOLERANCE_STEPS,
        "within_bound": bool((np.abs(g - y) <= bound + 1e-9)[keep].all()),
        "max_bound": float(bound[keep].max()) if keep.any() else 0.0,
        "compressed_fraction": float(f.mask.mean()),
        "ok": bool(np.abs(g - ref_q).max() <= 0.5 + 1e-9
                   and bool((np.abs(g - y) <= bound + 1e-9)[keep].all())
                   and (err_mean.max() if err_mean.size else 0) <= 0.5 + 1e-9),
    }
