"""Activation points: where VELCRO looks at a model, and how every call of one is intercepted.

An *activation point* is one call of an elementwise activation function on a 4-D feature
map [N, C, H, W], every time it is called: relu, relu6 / hardtanh, silu, hardswish,
hardsigmoid, gelu, mish, leaky_relu, elu, selu, celu, prelu, rrelu, softplus, sigmoid, tanh,
threshold, clamp / clamp_min / clamp_max / clip and the shrink functions, in every spelling
(``nn`` module, ``F.*``, ``torch.*``, tensor method, in-place variant; see
:data:`ACTIVATION_FUNCTIONS`).  Calls are caught with a
:class:`torch.overrides.TorchFunctionMode` (:func:`intercept`), which sees module calls
(``nn.ReLU``), reused modules (ResNet's BasicBlock calls its one ReLU twice), functional calls
(GoogLeNet's BasicConv2d uses ``F.relu``) and ReLU6 (MobileNetV2; it arrives as
``hardtanh``).  Forward hooks alone would miss the functional calls.  A nonlinearity that is
not one of those, applied to a convolution's output (a hand-written activation through
``erf``, ``where``, ``maximum`` or ``x * sigmoid(x)``, a channel softmax, ...), makes the
model refused with a VelcroError naming it: no activation is skipped silently.

The bottom of the three layers of py_ref.velcro (points, then py_ref.point_stats, then the
masks, metrics and evaluation); :class:`VelcroError`, the algorithm's error, is defined here.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["VelcroError", "ACTIVATION_FUNCTIONS", "ACTIVATION_MODULES", "REFUSED_FUNCTIONS",
           "intercept", "trace_points", "capture_points"]


class VelcroError(ValueError):
    """Bad input to a VELCRO step (wrong threshold count or range, NaN activations, ...)."""


#: Elementwise activations: their output on a 4-D tensor is an activation point.  The
#: canonical name (used in point names) for every spelling: functional, torch.*, Tensor
#: method, in-place variant.
_POINT_NAMES = {
    "relu": ["relu", "relu_"], "relu6": ["relu6", "relu6_"], "hardtanh": ["hardtanh", "hardtanh_"],
    "silu": ["silu", "silu_"], "hardswish": ["hardswish", "hardswish_"],
    "hardsigmoid": ["hardsigmoid", "hardsigmoid_"], "gelu": ["gelu"], "mish": ["mish", "mish_"],
    "leaky_relu": ["leaky_relu", "leaky_relu_"], "elu": ["elu", "elu_"], "selu": ["selu", "selu_"],
    "celu": ["celu", "celu_"], "prelu": ["prelu"], "rrelu": ["rrelu", "rrelu_"],
    "softplus": ["softplus"], "sigmoid": ["sigmoid", "sigmoid_", "expit"], "tanh": ["tanh", "tanh_"],
    "logsigmoid": ["logsigmoid"], "softsign": ["softsign"], "tanhshrink": ["tanhshrink"],
    "hardshrink": ["hardshrink"], "softshrink": ["softshrink"], "threshold": ["threshold", "threshold_"],
    "clamp": ["clamp", "clamp_", "clip", "clip_"], "clamp_min": ["clamp_min", "clamp_min_"],
    "clamp_max": ["clamp_max", "clamp_max_"],
}
#: Nonlinear functions that look like a hand-written or non-elementwise activation when they are
#: applied to a convolution's output (not yet through an activation): profile cannot make a
#: point of them, so it refuses the model naming the function instead of skipping it silently.
_REFUSED_NAMES = {
    "exp": "exp", "exp_": "exp", "expm1": "expm1", "erf": "erf", "erf_": "erf", "erfc": "erfc",
    "maximum": "maximum", "minimum": "minimum", "fmax": "fmax", "fmin": "fmin", "max": "max",
    "min": "min", "where": "where", "sign": "sign", "heaviside": "heaviside",
    "glu": "glu", "softmax": "softmax", "log_softmax": "log_softmax", "softmin": "softmin",
}
_SHAPE_CHANGING = {"glu", "softmax", "log_softmax", "softmin"}   # refused whatever the output shape
_CONVS = {"conv2d", "conv_transpose2d", "linear"}   # linear: ConvNeXt's channels-last 4-D MLP
#: multiplications: x * act(x) is a hand-written gated activation (SiLU, hardswish, ...)
_PRODUCTS = {"mul", "mul_", "__mul__", "__rmul__", "__imul__", "multiply", "div", "div_",
             "__truediv__", "__itruediv__", "true_divide"}


def _functions(names) -> dict:
    """{function object: canonical name} for every spelling that exists in this torch."""
    table = {}
    spaces = (F, torch, torch.Tensor, torch.special, torch._C._nn)
    for canon, spellings in names.items():
        for spelling in spellings:
            for space in spaces:
                f = getattr(space, spelling, None)
                if f is not None and callable(f):
                    table[f] = canon
    return table


#: Functions whose output on a 4-D tensor is an activation point (every spelling -> name).
ACTIVATION_FUNCTIONS = _functions(_POINT_NAMES)
REFUSED_FUNCTIONS = {f: _REFUSED_NAMES[n] for f, n in _functions({s: [s] for s in _REFUSED_NAMES}).items()
                     if f not in ACTIVATION_FUNCTIONS}
_CONV_FUNCTIONS = _functions({n: [n] for n in _CONVS})
_PRODUCT_FUNCTIONS = _functions({"product": sorted(_PRODUCTS)})
#: Activation modules: a point produced inside one is named after the module.
ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.SiLU, nn.Hardswish, nn.Hardsigmoid,
                      nn.GELU, nn.Mish, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.PReLU,
                      nn.RReLU, nn.Softplus, nn.Sigmoid, nn.Tanh, nn.LogSigmoid, nn.Softsign,
                      nn.Tanhshrink, nn.Hardshrink, nn.Softshrink, nn.Threshold)


class _TensorSet:
    """Tensors by identity, without keeping them alive (a WeakSet would compare tensors with
    ``==``, which is elementwise)."""

    def __init__(self):
        self.refs: dict[int, weakref.ref] = {}

    def add(self, t):
        self.refs[id(t)] = weakref.ref(t)

    def discard(self, t):
        self.refs.pop(id(t), None)

    def __contains__(self, t) -> bool:
        r = self.refs.get(id(t))
        return r is not None and r() is t


def _tensors(args, kwargs):
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, torch.Tensor):
            yield a
        elif isinstance(a, (list, tuple)):
            yield from (t for t in a if isinstance(t, torch.Tensor))


class _ActivationMode(TorchFunctionMode):
    """Calls ``on_point(index, name, output) -> output`` for every activation point.

    Every torch function called during the forward passes through here.  Besides the points
    it follows which 4-D tensors are convolution outputs not yet through an activation
    ("pre-activations": a convolution's output and anything computed from one, such as a
    batch norm, a bias add or a residual sum), so that it can refuse what it cannot make a
    point of: a nonlinearity outside :data:`ACTIVATION_FUNCTIONS` applied to a
    pre-activation (e.g. a hand-written GELU through ``erf``, a hand-written leaky ReLU
    through ``where`` / ``maximum``, a channel softmax), or a product of a pre-activation
    with an activation of the same shape (a hand-written SiLU ``x * sigmoid(x)``, whose
    point would be the product, not the sigmoid).  It also records the MACs per output
    element of every convolution since the previous point (``pending_convs``).
    """

    def __init__(self, on_point: Callable, module_stack: list[str]):
        super().__init__()
        self.on_point = on_point
        self.module_stack = module_stack
        self.index = 0
        self.names: dict[str, int] = {}
        self.act_modules: set[str] = set()
        self.pending_convs: list = []
        self.last_conv = ""
        self.pre = _TensorSet()       # pre-activations of the current forward
        self.points = _TensorSet()    # activation-point outputs of the current forward

    def new_forward(self):
        self.index = 0
        self.names.clear()
        self.pending_convs.clear()
        self.pre = _TensorSet()
        self.points = _TensorSet()

    def _where(self) -> str:
        return self.module_stack[-1] if self.module_stack else "the model's forward"

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            return out
        fname = ACTIVATION_FUNCTIONS.get(func)
        if fname is not None:
            return self._point(func, fname, args, out)
        if func in _CONV_FUNCTIONS:
            w = args[1] if len(args) > 1 else kwargs["weight"]
            if _CONV_FUNCTIONS[func] != "conv_transpose2d":   # MACs per output element
                self.pending_convs.append((tuple(out.shape[1:]), int(w[0].numel())))
            self.last_conv = self.module_stack[-1] if self.module_stack else ""
            self.pre.add(out)
            return out
        pre_in = [t for t in _tensors(args, kwargs) if t.dim() == 4 and t in self.pre]
        if not pre_in:
            return out
        refused = REFUSED_FUNCTIONS.get(func)
        if refused is not None and (refused in _SHAPE_CHANGING
                                    or any(t.shape == out.shape for t in pre_in)):
            raise VelcroError(
                f"cannot handle activation '{refused}' on the output of a convolution in "
                f"{self._where()} {tuple(out.shape)}: not one of the elementwise activations "
                f"VELCRO makes points of ({', '.join(sorted(_POINT_NAMES))})")
        if func in _PRODUCT_FUNCTIONS and any(t in self.points and t.shape == out.shape
                                              for t in _tensors(args, kwargs)):
            raise VelcroError(
                f"cannot handle a hand-written gated activation in {self._where()} "
                f"{tuple(out.shape)}: a convolution output multiplied by an activation of "
                f"the same shape (x * sigmoid(x)?); use nn.SiLU / nn.Hardswish / nn.GELU")
        self.pre.add(out)          # still a pre-activation (batch norm, bias, residual add, ...)
        return out

    def _point(self, func, fname, args, out):
        where = self.module_stack[-1] if self.module_stack else ""
        if where in self.act_modules:          # an activation module (nn.ReLU, nn.SiLU, ...)
            base = where
        elif where:                            # functional call inside a submodule
            base = f"{where}.{fname}"
        else:                                  # functional call in the root's forward
            base = f"{self.last_conv}.{fname}" if self.last_conv else fname
        n = self.names.get(base, 0) + 1
        self.names[base] = n
        name = base if n == 1 else f"{base}#{n}"
        new = self.on_point(self.index, name, out)
        self.index += 1
        if new is not out:
            if args and out is args[0]:        # in place: the caller may ignore the result
                out.copy_(new)
            else:
                out = new
        self.pre.discard(out)
        self.points.add(out)
        return out


@contextlib.contextmanager
def intercept(model: nn.Module, on_point: Callable):
    """Run ``on_point`` on every activation point during forwards inside the block.

    Module forward hooks keep a stack of qualified module names so that points get stable
    names; the mode itself sees the convolutions (module or functional) and records the MACs
    per output element of each since the previous point (``mode.pending_convs``), which is
    what compressing an element of the point saves.
    """
    stack: list[str] = []
    mode = _ActivationMode(on_point, stack)
    mode.act_modules = {n for n, m in model.named_modules() if isinstance(m, ACTIVATION_MODULES)}
    handles = []
    for name, mod in model.named_modules():
        if not name:
            continue
        def pre(m, inp, name=name):
            stack.append(name)
        def post(m, inp, out, name=name):
            stack.pop()
        handles.append(mod.register_forward_pre_hook(pre))
        handles.append(mod.register_forward_hook(post))
    try:
        with mode:
            yield mode
    finally:
        for h in handles:
            h.remove()


def trace_points(model: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple, int]]:
    """(name, shape of one sample, MACs per element) of every activation point, in forward order."""
    points = []

    def on_point(i, name, out):
        points.append((name, tuple(out.shape[1:]), 0))
        return out
    model.eval()
    with torch.no_grad(), intercept(model, on_point):
        model(example)
    return points


def capture_points(model: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(name, output) of every activation point of one forward of ``x`` (all points, unskipped).

    Inside a :func:`py_ref.velcro.compressed` block the captured outputs are the compressed ones."""
    got = []

    def on_point(i, name, out):
        got.append((name, out.detach().clone()))
        return out
    with torch.no_grad(), intercept(model, on_point):
        model(x)
    return got
