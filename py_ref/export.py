"""Export one VELCRO-compressed conv layer as a hardware FRAME (the accelerator's one invocation).

The accelerator computes a 3x3, stride-1, pad-1 convolution followed by its ReLU (N output
channels on P instances, N independent of P).  Exportable:

- the Fashion-MNIST CNN: all five conv layers (:data:`LAYERS`), ``conv1`` (1 -> 16 on the
  normalised 64x64 image, the default C_in = 1 design that ``make sim`` measures), ``conv2``
  and ``conv3`` (16 -> 16 at 64x64), ``conv4`` (16 -> 32 at 32x32, after a 2x2 max pool) and
  ``conv5`` (32 -> 32 at 16x16); :func:`check_layer` refuses any other layer by name with the
  reason (kernel size, stride, padding, dilation, groups, bias);
- torchvision's ResNet-18 and GoogLeNet (any model, in fact): every 3x3, stride-1, pad-1,
  ungrouped ``nn.Conv2d`` whose output goes, through its eval-mode BatchNorm (folded into the
  weights and bias: w' = w * gamma / sqrt(var + eps), b' = beta - mean * gamma / sqrt(var + eps)),
  straight into a ReLU, and whose shape fits the accelerator's design limits
  (:data:`ACCEL_LIMITS`: C_in <= 64, N <= 256, 4..256 rows and columns).  Layers are named by
  module path (``layer1.0.conv1``, ``inception3a.branch3.1.conv``).  :func:`conv_layers` traces
  one forward pass and gives every conv's verdict: the exportable ones with their output
  activation point (py_ref.velcro's numbering), the others with the reason (kernel size,
  stride, groups, ``its output is added to the residual before the ReLU`` for ResNet's
  ``layerX.Y.conv2``, no ReLU after it, too many input channels).  At 224x224 that leaves
  ResNet-18's ``layer1.{0,1}.conv1`` (64 -> 64 at 56x56; layer2..4 have 128..512 input
  channels) and GoogLeNet's ``conv3`` (64 -> 192 at 56x56) and the nine
  ``inceptionXY.branch3.1.conv`` (16..48 -> 32..128; the branch2 3x3 convs have 96..192
  input channels).

Quantisation (all scales from the calibration images, never from the exported images):

- input (the layer's input as the model computes it, e.g. the post-ReLU map of conv1 for
  conv2; captured with a forward pre-hook on the conv): int8, symmetric per tensor,
  s_x = max|x| / 127;
- weights (BatchNorm folded where there is one): int8, symmetric per output channel,
  s_w[n] = max|W[n]| / 127;
- bias: int32 at scale s_x * s_w[n];
- output: the post-ReLU activation maps to uint8 with s_y = max(y) / 255 (per tensor), so
  ofm = round(y / s_y); the real multiplier M[n] = s_x * s_w[n] / s_y becomes
  mult[n] / 2**shift[n] with the largest shift <= 31 that keeps mult[n] < 2**16;
- means: the VELCRO means of the layer's output activation point, quantised with s_y.

The arithmetic contract is py_ref.golden's; :func:`check_export` compares golden_ofm with
the float PyTorch layer in output units (ofm steps).
"""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import torch
import torch.nn.functional as F

from .golden import MULT_BITS, SHIFT_BITS, Frame, float_reference, golden_ofm
from .velcro import PointStats, VelcroError

__all__ = ["ExportResult", "quantise_layer", "quantise_conv", "check_export", "check_layer", "LAYERS",
           "ConvLayer", "conv_layers", "model_layer", "exportable_hint", "ACCEL_LIMITS"]

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


def _refusal(conv, nn, need_bias: bool = True) -> str:
    """Why ``conv`` is not an accelerator layer ('' if it is one; its bias is only checked
    with ``need_bias``: a BatchNorm after it supplies one)."""
    if not isinstance(conv, nn.Conv2d):
        return f"it is a {type(conv).__name__}, not a Conv2d"
    checks = [(conv.kernel_size == (3, 3), f"kernel size {conv.kernel_size}, not 3x3"),
              (conv.stride == (1, 1), f"stride {conv.stride}, not 1"),
              (conv.padding == (1, 1), f"padding {conv.padding}, not 1"),
              (conv.dilation == (1, 1), f"dilation {conv.dilation}, not 1"),
              (conv.groups == 1, f"groups={conv.groups}, not 1"),
              (conv.bias is not None or not need_bias, "no bias")]
    return next((why for ok, why in checks if not ok), "")


#: The accelerator's design limits on a layer's shape: hdl/config.py's AccelConfig ranges of
#: in_channels, out_channels, height and width (py_ref imports nothing from hdl/;
#: tests/test_export_imagenet.py checks these against AccelConfig).
ACCEL_LIMITS = {"in_channels": (1, 64), "out_channels": (1, 256), "height": (4, 256),
                "width": (4, 256)}

_ADDS = {"add", "add_", "__add__", "__radd__", "__iadd__", "sub", "sub_", "__sub__", "__isub__"}


@dataclasses.dataclass
class ConvLayer:
    """One ``nn.Conv2d`` of a model as the accelerator sees it (:func:`conv_layers`).

    ``reason`` is '' for an exportable layer, else why not.  For an exportable one: ``point``
    and ``point_name`` are its output activation point (index over all points, the first
    included, as py_ref.velcro numbers them), ``weight``/``bias`` the float64 constants of the
    conv with its BatchNorm folded in (``folded``: the BatchNorm it came through, or '')."""

    name: str
    conv: object
    in_shape: tuple          # (C_in, H, W) of one sample at the traced size
    out_channels: int
    reason: str = ""
    point: int | None = None
    point_name: str | None = None
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    folded: str = ""


def _shape_refusal(c_in: int, n: int, h: int, w: int) -> str:
    for what, label, value in (("in_channels", "input channels", c_in),
                               ("out_channels", "output channels", n), ("height", "rows", h),
                               ("width", "columns", w)):
        lo, hi = ACCEL_LIMITS[what]
        if not lo <= value <= hi:
            return (f"{value} {label}, outside the accelerator's {lo}..{hi} (hdl/config.py; the "
                    f"layer is {c_in} -> {n} at {h}x{w})")
    return ""


def conv_layers(model, example: torch.Tensor) -> dict[str, ConvLayer]:
    """Every ``nn.Conv2d`` module of ``model`` (by module path, in definition order) and
    whether the accelerator computes it, from one forward pass of ``example`` [1, C, H, W].

    A torch function mode follows each conv's output tensor: an eval-mode ``batch_norm`` on it
    is folded, and the next function on the result must be a ReLU (an activation point of
    py_ref.velcro, whose index it records); an add (ResNet's residual), another activation, a
    second use of the pre-activation or nothing at all is a refusal naming it.  Static checks
    (kernel size, stride, padding, dilation, groups) come first, the accelerator's shape limits
    (:data:`ACCEL_LIMITS`) last."""
    import torch.nn as nn
    from torch.overrides import TorchFunctionMode

    from .activation_points import ACTIVATION_FUNCTIONS, intercept

    convs = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    tags: dict[int, tuple] = {}        # id(tensor) -> (conv name, stage: "conv" | "bn")
    keep: list = []                    # tensors kept alive so that ids stay unique
    uses: dict[str, list] = {n: [] for n in convs}   # conv name -> [(stage, func name, info)]
    shapes: dict[str, tuple] = {}
    calls: dict[str, int] = {n: 0 for n in convs}
    bns: dict[str, tuple] = {}
    points: list = []

    def on_point(i, name, out):
        points.append((i, name))
        return out

    class Follow(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            before = len(points)
            out = func(*args, **kwargs)
            if not isinstance(out, torch.Tensor):       # t.dim(), t.size(), ...
                return out
            seen = set()
            flat = [t for a in list(args) + list(kwargs.values())
                    for t in (a if isinstance(a, (list, tuple)) else [a])]
            for t in [a for a in flat if isinstance(a, torch.Tensor)]:
                tag = tags.get(id(t))
                if tag is None or tag in seen:
                    continue
                seen.add(tag)
                conv_name, stage = tag
                fname = getattr(func, "__name__", str(func))
                act = ACTIVATION_FUNCTIONS.get(func)
                info = {"act": act, "inplace": out is t,
                        "point": points[before] if len(points) > before else None}
                if fname == "batch_norm" and stage == "conv" and not uses[conv_name]:
                    a = list(args) + [None] * 8
                    rm, rv, g, b = (kwargs.get(k, a[i]) for i, k in
                                    enumerate(("running_mean", "running_var", "weight", "bias"), 1))
                    training = kwargs.get("training", a[5])
                    eps = kwargs.get("eps", a[7] if a[7] is not None else 1e-5)
                    bns[conv_name] = (rm, rv, g, b, bool(training), float(eps))
                    if out is not t:
                        tags[id(out)] = (conv_name, "bn")
                        keep.append(out)
                uses[conv_name].append((stage, fname, info))
            return out

    hooks = []
    for name, m in convs.items():
        def pre(mod, args, name=name):
            calls[name] += 1
            shapes[name] = tuple(args[0].shape[1:])

        def post(mod, args, out, name=name):
            tags[id(out)] = (name, "conv")
            keep.append(out)
        hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        with torch.no_grad(), intercept(model, on_point), Follow():
            model(example)
    finally:
        for h in hooks:
            h.remove()

    result = {}
    for name, conv in convs.items():
        layer = ConvLayer(name, conv, shapes.get(name, ()), conv.out_channels)
        result[name] = layer
        static = _refusal(conv, nn, need_bias=False)
        if static:
            layer.reason = static
            continue
        if calls[name] != 1:
            layer.reason = f"it runs {calls[name]} times in one forward pass, not once"
            continue
        layer.reason, layer.point, layer.point_name = _follow(uses[name], name in bns)
        if layer.reason:
            continue
        w = conv.weight.detach().double()
        b = (conv.bias.detach().double() if conv.bias is not None
             else torch.zeros(w.shape[0], dtype=torch.float64))
        if name in bns:
            rm, rv, g, beta, training, eps = bns[name]
            if training or rm is None or rv is None:
                layer.reason = "its BatchNorm uses batch statistics (training mode), not running ones"
                continue
            scale = (torch.ones_like(b) if g is None else g.detach().double()) / torch.sqrt(
                rv.detach().double() + eps)
            shift = torch.zeros_like(b) if beta is None else beta.detach().double()
            w = w * scale[:, None, None, None]
            b = (b - rm.detach().double()) * scale + shift
            layer.folded = "BatchNorm"
        elif conv.bias is None:
            layer.reason = "no bias"
            continue
        layer.weight, layer.bias = w, b
        layer.reason = _shape_refusal(*layer.in_shape[:1], layer.out_channels, *layer.in_shape[1:])
        if layer.reason:
            layer.point = layer.point_name = layer.weight = layer.bias = None
    return result


def _is_fmnist(model) -> bool:
    from .models import FmnistCNN
    return isinstance(model, FmnistCNN)


def exportable_hint(layers: dict[str, ConvLayer], shown: int = 4) -> str:
    """'exportable: a, b' or 'N exportable: a, b, c, d, +k more; --list-layers lists every
    conv' (one line, however big the model)."""
    ok = [n for n, l in layers.items() if not l.reason]
    if not ok:
        return "none of its convolutions is exportable"
    if len(ok) <= shown:
        return f"exportable: {', '.join(ok)}"
    return (f"{len(ok)} exportable: {', '.join(ok[:shown])}, +{len(ok) - shown} more; "
            "--list-layers lists every conv")


def model_layer(model, layer: str, example: torch.Tensor) -> ConvLayer:
    """The accelerator layer ``layer`` of ``model`` (the FmnistCNN through :func:`check_layer`;
    any other model through :func:`conv_layers` on ``example`` [1, C, H, W], which sets the
    spatial size); otherwise VelcroError naming the layer and the reason (one line)."""
    if _is_fmnist(model):
        conv = check_layer(model, layer)
        c_in = conv.in_channels
        return ConvLayer(layer, conv, (c_in,), conv.out_channels, point=LAYERS[layer][1],
                         weight=conv.weight.detach().double(), bias=conv.bias.detach().double())
    layers = conv_layers(model, example)
    if layer not in layers:
        mod = dict(model.named_modules()).get(layer) if layer else None
        why = f": it is a {type(mod).__name__}, not a Conv2d" if mod is not None else ""
        raise VelcroError(f"unknown layer '{layer}'{why} ({exportable_hint(layers)})")
    found = layers[layer]
    if found.reason:
        raise VelcroError(f"layer '{layer}' cannot run on the accelerator: {found.reason}")
    return found


def _follow(uses: list, has_bn: bool) -> tuple[str, int | None, str | None]:
    """(refusal or '', point index, point name) from the functions applied to a conv's output
    ('conv' stage) and its batch norm's output ('bn' stage), in call order."""
    stage = "bn" if has_bn else "conv"
    if has_bn and [u[0] for u in uses].count("conv") > 1:
        return "its output is used besides its BatchNorm", None, None
    after = [u for u in uses if u[0] == stage]
    through = " through its BatchNorm" if has_bn else ""
    if not after:
        return f"no ReLU after it (its output{through} is not used by any function)", None, None
    _, fname, info = after[0]
    if info["act"] == "relu" and info["point"] is not None:
        if len(after) > 1 and not info["inplace"]:
            return (f"its output{through} is also used before the ReLU (by {after[1][1]})",
                    None, None)
        return "", info["point"][0], info["point"][1]
    if fname in _ADDS:
        return ("its output is added to the residual before the ReLU (the accelerator applies "
                "ReLU to the conv alone)"), None, None
    if info["act"] is not None:
        return f"its activation is {info['act']}, not ReLU", None, None
    return f"no ReLU after it (its output{through} goes to {fname})", None, None


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
    """(mult, shift) with mult / 2**shift ~= m, mult < 2**MULT_BITS (2**16), shift <
    2**SHIFT_BITS (at most 31), as precise as possible."""
    if m <= 0:
        return 0, 0
    best = (0, 0)
    for shift in range((1 << SHIFT_BITS) - 1, -1, -1):
        mult = int(round(m * 2 ** shift))
        if mult < 1 << MULT_BITS:
            best = (mult, shift)
            break
    if best == (0, 0):
        raise VelcroError(f"requantisation multiplier {m} does not fit mult < 2**{MULT_BITS} "
                          f"at shift 0")
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


def _calibration_maxima(model, conv, point: int, batches) -> tuple[float, float, str, tuple]:
    """(max |layer input|, max of the output point, its name, its shape per sample) over the
    calibration ``batches`` (tensors or (images, labels) pairs), one batch at a time."""
    from .activation_points import intercept
    x_max, y_max, where = 0.0, None, {}

    def on_point(i, name, out):
        nonlocal y_max
        if i == point:
            m = float(out.detach().max())
            y_max = m if y_max is None else max(y_max, m)
            where["name"], where["shape"] = name, tuple(out.shape[1:])
        return out

    for batch in batches:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        seen = []
        handle = conv.register_forward_pre_hook(
            lambda module, args: seen.append(float(args[0].detach().abs().max())))
        try:
            with torch.no_grad(), intercept(model, on_point) as mode:
                mode.new_forward()
                model(x)
        finally:
            handle.remove()
        if len(seen) != 1:
            raise VelcroError(f"the layer ran {len(seen)} times in one forward pass, not once")
        x_max = max(x_max, seen[0])
    if y_max is None:
        raise VelcroError("no calibration images (or the layer's output point never ran)")
    return x_max, y_max, where["name"], where["shape"]


def quantise_layer(model, layer: str, calib, image: torch.Tensor,
                   out_stats: PointStats, mask: torch.Tensor) -> ExportResult:
    """Quantise ``layer`` of ``model`` with the VELCRO ``mask`` of its output point.

    ``model``: the FmnistCNN or an ImageNet model (ResNet-18, GoogLeNet: :func:`model_layer`
    decides what is exportable, BatchNorm folded).  ``calib``: calibration images for the
    scales, one tensor [M, C, H, W] or an iterable of batches (tensors or (images, labels));
    ``image``: [B, C, H, W], the images whose layer inputs become the frame's ifmap (the first)
    and ``ifmaps`` (all); calibration and exported images share one size, which sets the
    layer's.  ``out_stats``/``mask``: the profile and mask of the layer's output activation
    point (a profile at the same image size); both None for a point the algorithm left out
    (``--skip-first``): the layer then runs dense.
    """
    if image.ndim != 4 or len(image) < 1:
        want = "[B, 1, 28, 28]" if _is_fmnist(model) else "[B, 3, H, W]"
        raise VelcroError(f"image must be {want} with B >= 1, not {tuple(image.shape)}")
    spec = model_layer(model, layer, image[:1])
    conv, i_out = spec.conv, spec.point
    if (out_stats is None) != (mask is None):
        raise VelcroError("give both the output point's statistics and its mask, or neither")
    x_max, y_max, point_name, point_shape = _calibration_maxima(
        model, conv, i_out, [calib] if isinstance(calib, torch.Tensor) else calib)
    if out_stats is None:
        mask = torch.zeros(point_shape, dtype=torch.bool)
        out_stats = PointStats(point_name, i_out, torch.zeros(point_shape, dtype=torch.float64),
                               torch.zeros(point_shape, dtype=torch.float64), 0)
    if point_name != out_stats.name:
        raise VelcroError(f"profile point '{out_stats.name}' is not the output of {layer} "
                          f"('{point_name}')")
    if tuple(out_stats.mean.shape) != point_shape or tuple(mask.shape) != point_shape:
        raise VelcroError(f"the profile of point '{point_name}' has shape "
                          f"{list(out_stats.mean.shape)}, the layer's output at this image size "
                          f"{list(point_shape)} (profile and export the same image size)")
    with torch.no_grad():
        x_all = layer_input(model, conv, image).double()
    x_img = x_all[0]
    s_x = x_max / 127.0
    s_y = y_max / 255.0
    if not (s_x > 0 and s_y > 0):
        raise VelcroError(f"layer '{layer}' has an all-zero input or output on the calibration set")
    w, b = spec.weight, spec.bias
    wq, bq, mults, shifts, s_w = quantise_conv(types.SimpleNamespace(weight=w, bias=b), s_x, s_y)
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
