"""S-VELCRO (Gabbay, Salomon, Shomron, Mathematics 2022): structured VELCRO.

Preprocessing is VELCRO's (py_ref.velcro.profile).  Compression trims whole filters: in
each activation point k, the fraction T_k of output channels with the highest value locality
is selected, and each selected channel's output is replaced by its mean map B[k][c] (so the
filter's convolution and activation are skipped entirely).  A channel's value locality is
scored by the mean of its elements' variances over H x W (the paper's abstract does not fix
the score; this is the per-channel analogue of Algorithm 1's per-element variance).

Masks have the same form as VELCRO's (bool [C,H,W], True = replaced by the mean, here whole
channels), so ``velcro.compression_ratio``, ``velcro.compressed`` and ``velcro.evaluate``
apply unchanged.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import velcro
from .errors import one_line
from .velcro import PointStats, VelcroError, check_thresholds, select_lowest

__all__ = ["channel_scores", "make_channel_masks", "trimmed_channels", "shrink", "BiasMapConv",
           "count_macs", "shrink_error_bound"]


def channel_scores(s: PointStats) -> torch.Tensor:
    """float64 [C]: mean element variance of each channel (low = high value locality)."""
    return s.var.reshape(s.var.shape[0], -1).mean(dim=1)


def make_channel_masks(stats: Sequence[PointStats], thresholds: Sequence[float]) -> list[torch.Tensor]:
    """Per point, floor(T_k * C_k) whole channels with the lowest channel score are trimmed."""
    t = check_thresholds(stats, thresholds)
    masks = []
    for s, ti in zip(stats, t):
        ch = select_lowest(channel_scores(s), ti)
        masks.append(ch.reshape(-1, *([1] * (len(s.shape) - 1))).expand(s.shape).clone())
    return masks


def trimmed_channels(masks: Sequence[torch.Tensor]) -> list[list[int]]:
    """Indices of the trimmed filters of each point."""
    return [torch.nonzero(m.reshape(m.shape[0], -1).all(dim=1)).flatten().tolist() for m in masks]


# ---------------------------------------------------------------------------- a smaller module

class BiasMapConv(nn.Module):
    """A convolution whose trimmed input channels were constant maps: ``conv(x) + bias_map``.

    ``bias_map`` [C_out, H_out, W_out] is the convolution of the removed channels' mean maps
    with their weights, computed with the layer's own padding, so it is a full map, not a
    scalar: at the border the zero padding cuts the kernel, and the mean maps vary over
    H x W.  It only fits inputs of the profiled size (refused otherwise)."""

    def __init__(self, conv: nn.Conv2d, bias_map: torch.Tensor):
        super().__init__()
        self.conv = conv
        self.register_buffer("bias_map", bias_map)

    def forward(self, x):
        y = self.conv(x)
        if y.shape[1:] != self.bias_map.shape:
            raise VelcroError(f"this shrunk layer was built for outputs {tuple(self.bias_map.shape)} "
                              f"(the profiled input size), not {tuple(y.shape[1:])}")
        return y + self.bias_map


#: Channel-independent operations a trimmed channel's constant map may pass through on its way
#: to the consuming layer (each output channel depends on that channel alone).
_PASS_FUNCTIONS = {F.max_pool2d: "max_pool2d", F.avg_pool2d: "avg_pool2d",
                   F.adaptive_avg_pool2d: "adaptive_avg_pool2d",
                   F.adaptive_max_pool2d: "adaptive_max_pool2d", F.interpolate: "interpolate",
                   F.dropout: "dropout"}
_PASS_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
                 nn.Dropout, nn.Dropout2d, nn.Identity, nn.Upsample)
def _node_label(gm, node) -> str:
    if node.op == "call_module":
        return f"{node.target} ({type(gm.get_submodule(node.target)).__name__})"
    if node.op in ("call_function", "call_method"):
        return getattr(node.target, "__name__", str(node.target))
    return f"{node.op} {node.target}"


def _is_point_node(gm, node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(node.target), velcro.ACTIVATION_MODULES)
    if node.op == "call_function":
        return node.target in velcro.ACTIVATION_FUNCTIONS
    if node.op == "call_method":
        return getattr(torch.Tensor, node.target, None) in velcro.ACTIVATION_FUNCTIONS
    return False


def _only_user(gm, node, point_name):
    users = list(node.users)
    if len(users) != 1:
        raise VelcroError(
            f"cannot shrink point '{point_name}': {_node_label(gm, node)} feeds {len(users)} "
            f"operations ({', '.join(_node_label(gm, u) for u in users)}): S-VELCRO shrinks "
            f"plain conv -> activation -> conv chains, not branches or residual connections")
    return users[0]


def _replace(gm, target: str, new: nn.Module):
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, new)


def shrink(model: nn.Module, stats: Sequence[PointStats], masks: Sequence[torch.Tensor],
           example: torch.Tensor) -> nn.Module:
    """S-VELCRO as a real smaller module: the trimmed filters are removed.

    For every activation point with trimmed channels (``masks`` from
    :func:`make_channel_masks`, whole channels only): the trimmed output channels are removed
    from the producing ``nn.Conv2d`` (and the ``nn.BatchNorm2d`` between, if any, and a
    per-channel ``nn.PReLU``); their mean maps B[k][c] are passed through the channel-wise
    operations up to the consuming layer (pooling, interpolation, dropout, flatten) and folded
    into it: a consuming ``nn.Conv2d`` loses those input channels and gains a bias map (the
    convolution of the mean maps with the removed weights, see :class:`BiasMapConv`), a
    consuming ``nn.Linear`` loses their columns and gains W_removed @ mean in its bias.
    The result computes the masked model (``velcro.compressed`` with these masks) up to float
    rounding (:func:`shrink_error_bound`), for inputs of ``example``'s size.

    The model is traced with torch.fx (a copy; ``model`` is not modified).  Refused with a
    VelcroError naming the node: models fx cannot trace, element (not channel) masks, and
    topologies it cannot shrink: a trimmed point whose convolution, activation or result
    feeds more than one operation (residual adds, concatenations, branches), grouped
    convolutions, or any other operation between the point and its consumer.
    """
    velcro.check_masks(stats, masks)
    trimmed = trimmed_channels(masks)
    _check_whole_channels(stats, masks, trimmed)
    gm, nodes = _traced_points(model, example)
    plans: dict[str, dict] = {}          # module target -> {"keep_out", "keep_in", "map"/"bias"}
    modules = dict(gm.named_modules())
    for s, ch in zip(stats, trimmed):
        if not ch:
            continue
        node = nodes[s.index]
        keep = [c for c in range(s.shape[0]) if c not in set(ch)]
        _plan_producer(gm, modules, plans, node, s, keep)
        _plan_consumer(gm, modules, plans, node, s, keep)
    for target, plan in plans.items():
        _replace(gm, target, _build(modules[target], plan))
    gm.recompile()
    return gm.eval()


def _check_whole_channels(stats, masks, trimmed) -> None:
    """Refuse a mask that is not whole channels (only S-VELCRO's masks shrink a module)."""
    for s, m, ch in zip(stats, masks, trimmed):
        whole = torch.zeros(s.shape[0], dtype=torch.bool)
        whole[ch] = True
        if not torch.equal(m, whole.view(-1, *([1] * (m.dim() - 1))).expand(m.shape)):
            raise VelcroError(f"mask of point '{s.name}' is not whole channels: only S-VELCRO's "
                              f"channel masks (make_channel_masks) give a smaller module")


def _traced_points(model: nn.Module, example: torch.Tensor):
    """(the torch.fx trace of a copy of ``model``, its activation-point nodes in forward
    order); refused unless the traced graph holds the points the forward produces."""
    import copy

    import torch.fx as fx
    from torch.fx.passes.shape_prop import ShapeProp

    model = copy.deepcopy(model).eval()
    points = velcro.trace_points(model, example[:1])
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:
        raise VelcroError(f"cannot shrink {type(model).__name__}: torch.fx cannot trace it "
                          f"({type(e).__name__}: {one_line(e)})") from None
    nodes = [n for n in gm.graph.nodes if _is_point_node(gm, n)]
    # the traced graph must hold the points in the order the forward produces them
    ShapeProp(gm).propagate(example[:1])
    nodes = [n for n in nodes if len(n.meta["tensor_meta"].shape) == 4]
    if len(nodes) != len(points) or any(tuple(n.meta["tensor_meta"].shape[1:]) != p[1]
                                        for n, p in zip(nodes, points)):
        raise VelcroError(f"cannot shrink {type(model).__name__}: its traced graph has "
                          f"{len(nodes)} activation points, the forward {len(points)} "
                          f"(data-dependent control flow?)")
    return gm, nodes


def _plan_producer(gm, modules, plans, node, s, keep) -> None:
    """The producer of point ``node``: [conv] -> [bn] -> act, each used once, keeps the
    output channels ``keep`` (a per-channel PReLU too)."""
    import torch.fx as fx

    act_mod = modules.get(node.target) if node.op == "call_module" else None
    if isinstance(act_mod, nn.PReLU) and act_mod.num_parameters > 1:
        plans.setdefault(node.target, {})["keep_prelu"] = keep
    src = node.args[0]
    if not isinstance(src, fx.Node):
        raise VelcroError(f"cannot shrink point '{s.name}': its input is not a traced tensor")
    _only_user(gm, src, s.name)
    if src.op == "call_module" and isinstance(modules[src.target], nn.BatchNorm2d):
        plans.setdefault(src.target, {})["keep_out"] = keep
        src = src.args[0]
        _only_user(gm, src, s.name)
    conv = modules.get(src.target) if src.op == "call_module" else None
    if not isinstance(conv, nn.Conv2d) or conv.groups != 1:
        raise VelcroError(f"cannot shrink point '{s.name}': it is produced by "
                          f"{_node_label(gm, src)}, not by an nn.Conv2d with groups=1 "
                          f"(optionally followed by an nn.BatchNorm2d)")
    plans.setdefault(src.target, {})["keep_out"] = keep


def _plan_consumer(gm, modules, plans, node, s, keep) -> None:
    """The consumer of point ``node``: the trimmed channels' mean maps pass the channel-wise
    operations after it and fold into an nn.Conv2d (a bias map) or flatten -> nn.Linear (its
    bias), which loses those input channels."""
    import torch.fx as fx

    mean_map = s.mean.to(torch.float32).unsqueeze(0).clone()
    mean_map[:, keep] = 0.0            # only the trimmed channels' maps are folded
    cur = _only_user(gm, node, s.name)
    while True:
        mod = modules.get(cur.target) if cur.op == "call_module" else None
        if isinstance(mod, _PASS_MODULES) or (cur.op == "call_function" and cur.target in _PASS_FUNCTIONS):
            if any(isinstance(a, fx.Node) for a in list(cur.args[1:]) + list(cur.kwargs.values())):
                raise VelcroError(f"cannot shrink point '{s.name}': {_node_label(gm, cur)} "
                                  f"takes a tensor argument")
            with torch.no_grad():
                mean_map = (mod(mean_map) if mod is not None
                            else cur.target(mean_map, *cur.args[1:], **cur.kwargs))
            cur = _only_user(gm, cur, s.name)
            continue
        break
    if isinstance(mod, nn.Conv2d):
        if mod.groups != 1:
            raise VelcroError(f"cannot shrink point '{s.name}': its consumer {cur.target} is a "
                              f"grouped convolution")
        with torch.no_grad():
            w = mod.weight.detach().clone()
            w[:, keep] = 0.0
            full = mod._conv_forward(mean_map, w, None)[0]
        plan = plans.setdefault(cur.target, {})
        plan["keep_in"], plan["map"] = keep, full
        return
    flat = (cur.op == "call_function" and cur.target is torch.flatten and
            (cur.args[1:] or [cur.kwargs.get("start_dim", 0)])[0] == 1 and
            len(cur.args) <= 2 and "end_dim" not in cur.kwargs) or \
           (cur.op == "call_method" and cur.target == "flatten" and tuple(cur.args[1:]) == (1,)) or \
           (isinstance(mod, nn.Flatten) and mod.start_dim == 1 and mod.end_dim == -1)
    if flat:
        lin_node = _only_user(gm, cur, s.name)
        lin = modules.get(lin_node.target) if lin_node.op == "call_module" else None
        if isinstance(lin, nn.Linear):
            per = mean_map[0, 0].numel()
            cols = [c * per + j for c in keep for j in range(per)]
            with torch.no_grad():
                extra = lin.weight.detach() @ mean_map.reshape(-1)
            plan = plans.setdefault(lin_node.target, {})
            plan["keep_in"], plan["bias"] = cols, extra
            return
        cur = lin_node
    raise VelcroError(f"cannot shrink point '{s.name}': it reaches {_node_label(gm, cur)}; "
                      f"S-VELCRO folds trimmed channels into a consuming nn.Conv2d or "
                      f"flatten -> nn.Linear (through pooling / interpolation only)")


def _build(mod: nn.Module, plan: dict) -> nn.Module:
    """The module ``mod`` with its planned channels removed (and bias map / bias folded in)."""
    with torch.no_grad():
        if isinstance(mod, nn.Conv2d):
            w, b = mod.weight.detach(), None if mod.bias is None else mod.bias.detach()
            out_keep = plan.get("keep_out", list(range(mod.out_channels)))
            in_keep = plan.get("keep_in", list(range(mod.in_channels)))
            new = nn.Conv2d(len(in_keep), len(out_keep), mod.kernel_size, mod.stride, mod.padding,
                            mod.dilation, 1, b is not None, mod.padding_mode)
            new.weight.copy_(w[out_keep][:, in_keep])
            if b is not None:
                new.bias.copy_(b[out_keep])
            if "map" in plan:
                return BiasMapConv(new, plan["map"][out_keep].clone())
            return new
        if isinstance(mod, nn.BatchNorm2d):
            keep = plan["keep_out"]
            new = nn.BatchNorm2d(len(keep), mod.eps, mod.momentum, mod.affine, mod.track_running_stats)
            for name in ("weight", "bias", "running_mean", "running_var"):
                t = getattr(mod, name)
                if t is not None:
                    getattr(new, name).copy_(t[keep])
            if mod.num_batches_tracked is not None:
                new.num_batches_tracked.copy_(mod.num_batches_tracked)
            return new.eval()
        if isinstance(mod, nn.PReLU):
            new = nn.PReLU(len(plan["keep_prelu"]))
            new.weight.copy_(mod.weight[plan["keep_prelu"]])
            return new
        if isinstance(mod, nn.Linear):
            keep = plan["keep_in"]
            new = nn.Linear(len(keep), mod.out_features, True)
            new.weight.copy_(mod.weight[:, keep])
            b = torch.zeros(mod.out_features) if mod.bias is None else mod.bias.detach()
            new.bias.copy_(b + plan["bias"])
            return new
    raise VelcroError(f"cannot shrink {type(mod).__name__}")   # not reached: plans name these only


def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward of one image of ``example``'s size: every
    convolution (C_in / groups x k_h x k_w per output element) and linear layer."""
    total = 0

    def conv(m, inp, out):
        nonlocal total
        total += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def lin(m, inp, out):
        nonlocal total
        total += out[0].numel() * m.in_features
    hs = [m.register_forward_hook(conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hs += [m.register_forward_hook(lin) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            model.eval()(example[:1])
    finally:
        for h in hs:
            h.remove()
    return total


def shrink_error_bound(model: nn.Module, stats: Sequence[PointStats], masks: Sequence[torch.Tensor],
                       x: torch.Tensor) -> torch.Tensor:
    """Elementwise bound on |shrink(model)(x) - masked model(x)| (float32), from the arithmetic.

    A running forward error analysis along the masked model's own values v (computed here)
    with a per-element bound e on how far the shrunk model's values can be from them
    (u = 2**-24, gamma_n = n u / (1 - n u), Higham's bound for an n-term float sum in any
    order):

    * up to the first layer both models run the same operations on the same tensors: e = 0;
    * a convolution or linear layer with fan-in n computes, in either model, a float sum of
      the same n products and the bias (the shrunk one splits it into the kept channels'
      sum, the folded bias map or bias, and one more addition): each is within
      gamma_{n+2} S of the exact sum of its inputs, S = |W| (|v| + e) + |b|, so
      e' = |W| e + 2 gamma_{n+2} S;
    * ReLU is 1-Lipschitz, and exact where both models' inputs are negative (v + e <= 0):
      e' = e where v + e > 0, else 0 (LeakyReLU / PReLU with slopes a in [0, 1]: a e);
      elements the mask substitutes are the mean in both models: e' = 0;
    * max pooling and flatten are exact: the same operation on e; an average pool of K
      elements adds 2 gamma_{K+1} of its mean magnitude; an eval batch norm scales e by
      |gamma| / sqrt(var + eps) and adds 4u of its output magnitude.

    Supported: ReLU, LeakyReLU and PReLU points (others are refused by name), Conv2d, Linear,
    BatchNorm2d, max / average pooling, flatten, dropout and identity after the first layer.
    """
    import copy

    import torch.fx as fx
    from torch.fx.passes.shape_prop import ShapeProp

    velcro.check_masks(stats, masks)
    gm = fx.symbolic_trace(copy.deepcopy(model).eval())
    points = [n for n in gm.graph.nodes if _is_point_node(gm, n)]
    ShapeProp(gm).propagate(x[:1])
    points = [n for n in points if len(n.meta["tensor_meta"].shape) == 4]
    subst = {points[s.index]: (m, s.mean.to(torch.float32)) for s, m in zip(stats, masks)}
    u = velcro.F32_UNIT
    modules = dict(gm.named_modules())
    val: dict = {}
    err: dict = {}              # node -> error bound, for nodes after the first layer
    ev = lambda a: fx.node.map_arg(a, lambda n: val[n])        # noqa: E731
    ee = lambda a: fx.node.map_arg(a, lambda n: err[n])        # noqa: E731
    run = lambda node, args, kwargs: _run_node(modules, node, args, kwargs)   # noqa: E731
    with torch.no_grad():
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                val[node] = x
                continue
            if node.op == "get_attr":
                val[node] = getattr(gm, node.target)
                continue
            if node.op == "output":
                out = node.args[0]
                if out not in err:
                    raise VelcroError("the output does not depend on any layer")
                return err[out]
            args, kwargs = ev(node.args), ev(node.kwargs)
            v = run(node, args, kwargs)
            if node in subst:
                m, mu = subst[node]
                v = torch.where(m, mu, v)
            val[node] = v
            deps = [n for n in node.all_input_nodes if n in err]
            mod = modules.get(node.target) if node.op == "call_module" else None
            label = _node_label(gm, node)
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                e_in = err[node.args[0]] if node.args[0] in err else torch.zeros_like(args[0])
                err[node] = _layer_bound(mod, args[0], e_in)
                continue
            if not deps:            # before the first layer: the same operation in both models
                continue
            e = ee(node.args)[0] if isinstance(node.args[0], fx.Node) else None
            if isinstance(mod, nn.BatchNorm2d):
                sc = (mod.weight / torch.sqrt(mod.running_var + mod.eps)).abs().view(1, -1, 1, 1)
                err[node] = sc * e + 4 * u * (v.abs() + sc * e)
            elif node in points:
                slope = _point_slope(node, mod)
                if slope is None:
                    raise VelcroError(f"shrink_error_bound handles ReLU, LeakyReLU and PReLU points with "
                                      f"slopes in [0, 1] only, not {label}")
                z = args[0]
                e2 = torch.where(z + e > 0, e, slope * e)
                if node in subst:
                    e2 = torch.where(subst[node][0], torch.zeros_like(e2), e2)
                err[node] = e2
            elif isinstance(mod, (nn.MaxPool2d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout2d,
                                  nn.Identity, nn.Flatten)) or \
                    (node.op == "call_function" and node.target in (F.max_pool2d, F.adaptive_max_pool2d,
                                                                    torch.flatten, F.dropout)) or \
                    (node.op == "call_method" and node.target in ("flatten", "view", "reshape")):
                err[node] = run(node, [e, *args[1:]], kwargs)
            elif isinstance(mod, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)) or \
                    (node.op == "call_function" and node.target in (F.avg_pool2d, F.adaptive_avg_pool2d)):
                err[node] = _avg_pool_bound(lambda t: run(node, [t, *args[1:]], kwargs), args[0], v, e)
            else:
                raise VelcroError(f"shrink_error_bound cannot bound {label} after the first layer")
    raise VelcroError("the traced graph has no output")


def _layer_bound(mod, x_in, e_in):
    """The error bound after a convolution or linear layer with fan-in n: its input's bound
    ``e_in`` through |W|, plus 2 gamma_{n+2} of S = |W| (|x| + e) + |b| (see
    :func:`shrink_error_bound`)."""
    a = x_in.abs() + e_in
    wa = mod.weight.abs()
    ba = None if mod.bias is None else mod.bias.abs()
    if isinstance(mod, nn.Conv2d):
        n = (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        S, prop = mod._conv_forward(a, wa, ba), mod._conv_forward(e_in, wa, None)
    else:
        n = mod.in_features
        S, prop = F.linear(a, wa, ba), F.linear(e_in, wa)
    return prop + 2 * velcro.gamma(n + 2) * S


def _point_slope(node, mod):
    """The slope of the activation at point ``node`` where both models' inputs are <= 0: 0 for
    ReLU, a in [0, 1] for LeakyReLU and PReLU (per channel), None for any other."""
    if node.op == "call_module":
        if type(mod) is nn.ReLU:
            return 0.0
        if type(mod) is nn.LeakyReLU and 0 <= mod.negative_slope <= 1:
            return mod.negative_slope
        if type(mod) is nn.PReLU and 0 <= float(mod.weight.min()) and float(mod.weight.max()) <= 1:
            return mod.weight.detach().view(1, -1, 1, 1) if mod.num_parameters > 1 else float(mod.weight)
        return None
    f = node.target if node.op == "call_function" else getattr(torch.Tensor, node.target, None)
    return 0.0 if velcro.ACTIVATION_FUNCTIONS.get(f) == "relu" else None


def _run_node(modules, node, args, kwargs):
    """The operation of fx ``node`` (a module, a function or a method) on ``args``."""
    mod = modules.get(node.target) if node.op == "call_module" else None
    if mod is not None:
        return mod(*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    return getattr(args[0], node.target)(*args[1:], **kwargs)


def _avg_pool_bound(pool, x_in, out, e):
    """The error bound after an average pool of at most K elements (``pool`` of a tensor):
    the pooled bound plus 2 gamma_{K+1} of its mean magnitude."""
    h, w = x_in.shape[-2:]
    oh, ow = out.shape[-2:]
    k = (-(-h // oh) + 1) * (-(-w // ow) + 1)      # the largest window, generously
    pe = pool(e)
    return pe + 2 * velcro.gamma(k + 1) * (pool(x_in.abs()) + pe)
