"""VELCRO (Algorithm 1 of Gabbay et al., Mathematics 2021): value-locality compression.

Preprocessing: run the unmodified model over calibration images and keep, for every element
of every activation point, the mean B[k] and variance V[k] over images (Equation 1).
Compression: in each point k, the fraction T_k of elements with the lowest variance (the
highest value locality) is replaced by its mean; those elements' convolutions are skipped.

An *activation point* is one call of an elementwise activation function on a 4-D feature
map [N, C, H, W], every time it is called: relu, relu6 / hardtanh, silu, hardswish,
hardsigmoid, gelu, mish, leaky_relu, elu, selu, celu, prelu, rrelu, softplus, sigmoid, tanh,
threshold, clamp / clamp_min / clamp_max / clip and the shrink functions, in every spelling
(``nn`` module, ``F.*``, ``torch.*``, tensor method, in-place variant; see
:data:`ACTIVATION_FUNCTIONS`).  Calls are caught with a
:class:`torch.overrides.TorchFunctionMode`, which sees module calls (``nn.ReLU``), reused
modules (ResNet's BasicBlock calls its one ReLU twice), functional calls (GoogLeNet's
BasicConv2d uses ``F.relu``) and ReLU6 (MobileNetV2; it arrives as ``hardtanh``).  Forward
hooks alone would miss the functional calls.  A nonlinearity that is not one of those,
applied to a convolution's output (a hand-written activation through ``erf``, ``where``,
``maximum`` or ``x * sigmoid(x)``, a channel softmax, ...), makes :func:`profile` refuse
the model with a VelcroError naming it: no activation is skipped silently.

Public API::

    stats = profile(model, batches, skip_first=True)       # list[PointStats], forward order
    stats = merge_profiles(stats_a, stats_b)                # profiles of disjoint shards
    masks = make_masks(stats, thresholds)                   # list[bool tensor], True = compressed
    c = compression_ratio(stats, masks)                     # Compression(elements=..., macs=...)
    with compressed(model, stats, masks): model(x)          # means substituted
    acc = evaluate(model, loader, stats, masks, task_classes=[5, 7, 9])  # all-class and task top-1
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import weakref
from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

__all__ = ["VelcroError", "PointStats", "Compression", "ACTIVATION_FUNCTIONS", "ACTIVATION_MODULES",
           "REFUSED_FUNCTIONS", "trace_points",
           "capture_points", "profile", "merge_profiles", "select_lowest", "make_masks", "compression_ratio", "compressed",
           "evaluate", "check_task_classes", "conv_macs", "zero_share", "zero_mean_share", "check_thresholds", "check_masks", "profile_error_bound"]


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
def _intercept(model: nn.Module, on_point: Callable):
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


@dataclasses.dataclass
class PointStats:
    """Statistics of one activation point over ``count`` images (float64, one sample's shape).

    ``m2`` is the sum of squared deviations from the mean, kept so profiles merge exactly
    (Chan et al.'s parallel update).  ``macs`` is the multiply-accumulates one element of this
    point costs (its producing convolutions, summed), used for the MAC-weighted ratio.
    """

    name: str
    index: int
    mean: torch.Tensor
    m2: torch.Tensor
    count: int
    macs: int = 0
    zeros: torch.Tensor | None = None  # per element: how many images gave exactly 0

    @property
    def var(self) -> torch.Tensor:
        """Population variance (1/N, as Equation 1 of the paper)."""
        return self.m2 / max(self.count, 1)

    @property
    def shape(self):
        return tuple(self.mean.shape)

    @property
    def numel(self) -> int:
        return self.mean.numel()

    def merge(self, other: "PointStats") -> "PointStats":
        if other.name != self.name or other.shape != self.shape:
            raise VelcroError(f"cannot merge point '{self.name}' {self.shape} with "
                              f"'{other.name}' {other.shape}")
        n_a, n_b = self.count, other.count
        n = n_a + n_b
        if n_a == 0:
            return dataclasses.replace(other)
        if n_b == 0:
            return dataclasses.replace(self)
        delta = other.mean - self.mean
        mean = self.mean + delta * (n_b / n)
        m2 = self.m2 + other.m2 + delta * delta * (n_a * n_b / n)
        zeros = None if self.zeros is None or other.zeros is None else self.zeros + other.zeros
        return PointStats(self.name, self.index, mean, m2, n, self.macs or other.macs, zeros)


def trace_points(model: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple, int]]:
    """(name, shape of one sample, MACs per element) of every activation point, in forward order."""
    points = []

    def on_point(i, name, out):
        points.append((name, tuple(out.shape[1:]), 0))
        return out
    model.eval()
    with torch.no_grad(), _intercept(model, on_point):
        model(example)
    return points


def capture_points(model: nn.Module, x: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """(name, output) of every activation point of one forward of ``x`` (all points, unskipped).

    Inside a :func:`compressed` block the captured outputs are the compressed ones."""
    got = []

    def on_point(i, name, out):
        got.append((name, out.detach().clone()))
        return out
    with torch.no_grad(), _intercept(model, on_point):
        model(x)
    return got


def _take_macs(mode, shape) -> int:
    """MACs per element of the convolutions since the previous point whose output has ``shape``."""
    macs = sum(k for s, k in mode.pending_convs if s == shape)
    mode.pending_convs.clear()
    return macs


class _Scratch:
    """One float32 work buffer shared by all points (sized for the largest batch x point)."""

    def __init__(self):
        self.buf = torch.empty(0, dtype=torch.float32)

    def get(self, n: int) -> torch.Tensor:
        if self.buf.numel() < n:
            self.buf = torch.empty(n, dtype=torch.float32)
        return self.buf[:n]


#: float32 unit roundoff (round to nearest): the error unit of the per-batch reductions.
F32_UNIT = 2.0 ** -24


def gamma(n: int, unit: float = F32_UNIT) -> float:
    """Higham's gamma_n = n*u / (1 - n*u): the relative error bound of an n-term float sum."""
    if n * unit >= 1:
        raise VelcroError(f"gamma_{n} is undefined: n*u = {n * unit} >= 1")
    return n * unit / (1 - n * unit)


def profile_error_bound(var: torch.Tensor, mean_abs: torch.Tensor, batch: int):
    """Worst-case absolute error of :func:`profile`'s (mean, var) of one point, per element.

    ``var`` and ``mean_abs`` are the exact variance and mean of |x| of the element over the
    profiled images, ``batch`` the largest batch size.  Derivation (u = 2**-24, b = batch,
    every bound holds for any summation order, so for any BLAS and CPU): a batch's float32
    mean m' = fl(sum x)/b is off by at most gamma_b * mean|x|; the residuals d = x - m' carry
    one rounding each; fl(sum d^2) and fl(sum d) are within gamma_{b+2} of sum d^2 and
    gamma_{b+1} * sum|d|.  The corrected two-pass form M2_b = sum d^2 - (sum d)^2 / b is exact
    for any m', so only those reduction errors remain, relative to
    sum d^2 = M2_b + b (m - m')^2 <= b (var + (gamma_b * mean|x|)^2).  The batches are merged
    in float64 (Chan et al.), whose error (~1e-16 per batch) is covered by a factor 2 margin.
    Hence, elementwise::

        |var' - var|   <= 2 * gamma_{b+2} * (var + (gamma_b * mean|x|)^2)
        |mean' - mean| <= 2 * gamma_{b+1} * sqrt(var + (gamma_b * mean|x|)^2) + 2**-52 * mean|x|

    The error does not depend on where the images lie relative to each other or to zero
    (the shift is each batch's own mean), only on the batch size: 1.55e-5 relative at b = 128 (a worst case; typical errors are
    ~sqrt(b) u).
    """
    b = int(batch)
    spread = var + (gamma(b) * mean_abs) ** 2
    return (2 * gamma(b + 1) * spread.sqrt() + 2.0 ** -52 * mean_abs,
            2 * gamma(b + 2) * spread)


class _Accumulator:
    """Running statistics of one point: per-batch float32 moments, merged in float64.

    Each batch is centred on its own float32 mean m' (so no shift chosen from one image can
    be far from the data: the old first-image shift lost accuracy like (shift - mean)^2 / var),
    reduced in float32 (sum d, sum d^2 over the batch, d = x - m', the corrected two-pass
    form), and the batch's (count, mean, M2) are merged into float64 running moments with
    Chan et al.'s update.  Float32 work per batch is three reductions over [batch, numel]
    (seven passes over the batch in eager mode, two in the compiled ``fused`` update);
    float64 work is eight operations per element (one pass fused), so profiling stays close
    to plain inference (scripts/bench_profile_overhead.py).  The clamp of M2 at 0 is applied
    once, in :meth:`result` (it only moves a value towards the exact one, which is >= 0).
    Error bound: :func:`profile_error_bound`.
    """

    def __init__(self, index, name, macs):
        self.index, self.name, self.macs = index, name, macs
        self.n = 0
        self.ones = self.mean = self.m2 = self.zeros = None
        self.shape = None

    def add(self, out, count_zeros, scratch: "_Scratch", fused: bool = False):
        x = out.detach()
        n_b = x.shape[0]
        flat = x.reshape(n_b, -1).to(torch.float32)
        if self.shape is None:
            self.shape = tuple(x.shape[1:])
        if fused:
            self._add_fused(flat, count_zeros)
            self.n += n_b
            return
        if self.ones is None or self.ones.shape[0] != n_b:
            self.ones = torch.ones(n_b, dtype=torch.float32)
        m32 = (self.ones @ flat).div_(n_b)
        buf = scratch.get(flat.numel()).view(flat.shape)
        torch.sub(flat, m32, out=buf)
        sd = (self.ones @ buf).double()
        buf.mul_(buf)
        sdd = (self.ones @ buf).double()
        mean_b = torch.add(m32, sd, alpha=1.0 / n_b)                 # float64 (promoted)
        m2_b = sdd.addcmul_(sd, sd, value=-1.0 / n_b)
        if self.n == 0:
            self.mean, self.m2 = mean_b, m2_b
        else:
            n = self.n + n_b
            delta = mean_b.sub_(self.mean)
            self.mean.add_(delta, alpha=n_b / n)
            self.m2.add_(m2_b).addcmul_(delta, delta, value=self.n * n_b / n)
        if count_zeros:
            z = (x == 0).sum(dim=0)
            self.zeros = z if self.zeros is None else self.zeros + z
        self.n += n_b

    def _add_fused(self, flat, count_zeros):
        """The same update (the same operations, so the same error bound) as one compiled
        function: the batch is read twice (its mean, then sum d and sum d^2 of the centred
        values in one pass) instead of seven times, and the float64 merge is one pass."""
        n_b = flat.shape[0]
        if self.mean is None:
            self.mean = torch.zeros(flat.shape[1], dtype=torch.float64)
            self.m2 = torch.zeros(flat.shape[1], dtype=torch.float64)
        n = self.n + n_b
        w = torch.tensor([n_b / n, self.n * n_b / n], dtype=torch.float64)
        if count_zeros:
            if self.zeros is None:
                self.zeros = torch.zeros(flat.shape[1], dtype=torch.int64)
            self.mean, self.m2, self.zeros = _compiled("moments_zeros")(flat, self.mean, self.m2, w, self.zeros)
        else:
            self.mean, self.m2 = _compiled("moments")(flat, self.mean, self.m2, w)

    def result(self) -> PointStats:
        if not (torch.isfinite(self.mean).all() and torch.isfinite(self.m2).all()):
            raise VelcroError(f"non-finite (NaN/inf) activations at point {self.index} '{self.name}'")
        zeros = None if self.zeros is None else self.zeros.reshape(self.shape)
        return PointStats(self.name, self.index, self.mean.reshape(self.shape),
                          self.m2.clamp(min=0).reshape(self.shape), self.n, self.macs, zeros)


def _moments(flat, mean, m2, w):
    """One batch into the running float64 (mean, M2): the batch's float32 mean m', then
    sum d and sum d^2 of d = x - m' (float32), the corrected two-pass M2 of the batch and
    Chan et al.'s merge in float64; w = (n_b / n, n_a n_b / n)."""
    b = flat.shape[0]
    m32 = flat.sum(0) / b
    d = flat - m32
    sd = d.sum(0).double()
    sdd = (d * d).sum(0).double()
    delta = m32.double() + sd / b - mean
    return mean + delta * w[0], m2 + (sdd - sd * sd / b) + delta * delta * w[1]


def _moments_zeros(flat, mean, m2, w, zeros):
    mean, m2 = _moments(flat, mean, m2, w)
    return mean, m2, zeros + (flat == 0).sum(0)


_COMPILED: dict = {}


def _compiled(name: str):
    """torch.compile of :func:`_moments` / :func:`_moments_zeros` (dynamic shapes: one
    compilation serves every point and batch size), made on first use."""
    fn = _COMPILED.get(name)
    if fn is None:
        fn = torch.compile({"moments": _moments, "moments_zeros": _moments_zeros}[name],
                           dynamic=True, fullgraph=True)
        _COMPILED[name] = fn
    return fn


def profile(model: nn.Module, batches: Iterable, *, skip_first: bool = False,
            progress: bool = False, count_zeros: bool = False, fused: bool = False) -> list[PointStats]:
    """Preprocessing stage: per-element mean and variance of every activation point.

    ``batches`` yields input tensors [N, ...] or (inputs, labels) pairs.  Statistics are
    float64 (see :class:`_Accumulator`) and do not depend on how the images are split into
    batches beyond rounding, bounded by :func:`profile_error_bound`.  ``skip_first`` leaves the first point out (not profiled).
    ``count_zeros`` also counts, per element, the images where it is exactly 0 (Table 4).
    ``fused`` runs each point's update as one torch.compile'd function (two reads of the
    batch instead of seven; the same arithmetic, so the same error bound): faster on large
    maps once compiled, but the first call compiles (tens of seconds; cached on disk by
    torch for later processes).  Raises :class:`VelcroError` on NaN or infinite activations.
    """
    model.eval()
    accs: list[_Accumulator] = []
    scratch = _Scratch()
    first = 1 if skip_first else 0

    def on_point(i, name, out):
        macs = _take_macs(mode, tuple(out.shape[1:]))
        if len(accs) <= i:
            accs.append(_Accumulator(i, name, macs))
        elif accs[i].name != name:
            raise VelcroError(f"activation point {i} is '{name}' in this batch, '{accs[i].name}' before")
        if i >= first:
            accs[i].add(out, count_zeros, scratch, fused)
        return out

    it = batches
    if progress:
        from tqdm import tqdm
        it = tqdm(batches, desc="profile", unit="batch", leave=False, disable=None)  # off when not a tty
    seen = None
    with torch.no_grad(), _intercept(model, on_point) as mode:
        for batch in it:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            mode.new_forward()
            model(x)
            if seen is not None and mode.index != seen:
                raise VelcroError(f"model produced {mode.index} activation points, expected "
                                  f"{seen} (data-dependent control flow?)")
            seen = mode.index
    if len(accs) <= first or accs[first].n == 0:
        raise VelcroError("no activation points seen (no batches, or no activation function on a 4-D map)")
    return [a.result() for a in accs[first:]]


def merge_profiles(a: Sequence[PointStats], b: Sequence[PointStats]) -> list[PointStats]:
    """Profile of the union of two disjoint shards."""
    if len(a) != len(b):
        raise VelcroError(f"cannot merge profiles with {len(a)} and {len(b)} points")
    return [x.merge(y) for x, y in zip(a, b)]


def _real(value):
    """``value`` as a float if it is a real number (Python, numpy or a 0-d tensor), else None."""
    import numbers
    if isinstance(value, torch.Tensor) and value.ndim == 0 and value.dtype != torch.bool \
            and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def check_thresholds(stats: Sequence[PointStats], thresholds: Sequence[float]) -> list[float]:
    """Validate a threshold tuple (fractions 0 <= T < 1, one per point); return it as floats.

    Raises VelcroError naming the first bad entry (not a number, NaN, out of range) or the
    count mismatch; TypeError if ``thresholds`` is not a sequence.
    """
    if isinstance(thresholds, (str, bytes)) or not hasattr(thresholds, "__len__") \
            or not hasattr(thresholds, "__iter__"):
        raise TypeError(f"thresholds must be a sequence of numbers, not {thresholds!r}")
    t = []
    for i, v in enumerate(thresholds):
        f = _real(v)
        if f is None:
            raise VelcroError(f"threshold {i} must be a number, not {v!r}")
        t.append(f)
    if len(t) != len(stats):
        raise VelcroError(f"threshold tuple has {len(t)} entries, the model has {len(stats)} "
                          f"activation points")
    for i, v in enumerate(t):
        if not (0.0 <= v < 1.0) or math.isnan(v):
            raise VelcroError(f"threshold {i} is {v}; thresholds are fractions with 0 <= T < 1")
    return t


def select_lowest(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Bool mask of the floor(fraction * numel) lowest scores (ties broken by flat index).

    This is Algorithm 1's "variance within the T percentile": exactly floor(T*n) elements, so
    the achieved ratio equals the requested one even when many variances tie (e.g. dead units
    with variance 0).  ``fraction`` must be a number with 0 <= fraction < 1 (VelcroError
    otherwise, TypeError if it is not a number); ``scores`` a real tensor without NaN.
    """
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"scores must be a torch.Tensor, not {type(scores).__name__}")
    if scores.dtype == torch.bool or scores.is_complex():
        raise VelcroError(f"scores must be real numbers, not {scores.dtype}")
    f = _real(fraction)
    if f is None:
        raise TypeError(f"fraction must be a number, not {fraction!r}")
    if not 0.0 <= f < 1.0:            # also refuses NaN
        raise VelcroError(f"fraction must be 0 <= T < 1, not {fraction!r}")
    flat = scores.reshape(-1)
    if flat.is_floating_point() and bool(torch.isnan(flat).any()):
        raise VelcroError("scores contain NaN; the lowest ones are undefined")
    k = int(math.floor(f * flat.numel() + 1e-9))
    mask = torch.zeros(flat.numel(), dtype=torch.bool)
    if k > 0:
        order = torch.argsort(flat, stable=True)
        mask[order[:k]] = True
    return mask.reshape(scores.shape)


def make_masks(stats: Sequence[PointStats], thresholds: Sequence[float]) -> list[torch.Tensor]:
    """Compression stage, step 6: per point, True where the element is replaced by its mean."""
    t = check_thresholds(stats, thresholds)
    return [select_lowest(s.var, ti) for s, ti in zip(stats, t)]


@dataclasses.dataclass(frozen=True)
class Compression:
    """``elements``: the paper's C, compressed elements over all activation-point elements.
    ``macs``: the same weighted by each element's MACs: the share of the MACs of the
    convolutions that produce activation points which is skipped.  ``network_macs`` (given
    the model's total, :func:`conv_macs`): the skipped MACs over *all* convolution MACs of
    one image, which also counts convolutions that produce no point (MobileNetV2's linear
    projections, a skipped first point); None when not asked for."""

    elements: float
    macs: float
    compressed: int
    total: int
    network_macs: float | None = None


def conv_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of all Conv2d layers of ``model`` for one image of ``example``'s
    shape (forward hooks; every call of a reused conv counts)."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        per = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total += out[0].numel() * per
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        model.eval()
        with torch.no_grad():
            model(example[:1])
    finally:
        for h in handles:
            h.remove()
    return total


def check_masks(stats: Sequence[PointStats], masks: Sequence[torch.Tensor]) -> None:
    """Raise unless ``masks`` holds one bool tensor per point of ``stats``, of the point's shape."""
    if isinstance(masks, torch.Tensor) or not hasattr(masks, "__len__"):
        raise TypeError(f"masks must be a sequence of bool tensors, not {type(masks).__name__}")
    if len(masks) != len(stats):
        raise VelcroError(f"{len(masks)} masks for {len(stats)} points")
    for i, (s, m) in enumerate(zip(stats, masks)):
        if not isinstance(m, torch.Tensor):
            raise TypeError(f"mask {i} must be a torch.Tensor, not {type(m).__name__}")
        if m.dtype != torch.bool:
            raise VelcroError(f"mask {i} (point '{s.name}') must be bool, not {m.dtype}")
        if tuple(m.shape) != s.shape:
            raise VelcroError(f"mask {i} (point '{s.name}') has shape {tuple(m.shape)}, "
                              f"expected {s.shape}")


def compression_ratio(stats: Sequence[PointStats], masks: Sequence[torch.Tensor], *,
                      network_macs: int | None = None) -> Compression:
    """The compression of ``masks`` over the points of ``stats`` (see :class:`Compression`);
    ``network_macs`` is the model's :func:`conv_macs` (at least the points' own MACs)."""
    check_masks(stats, masks)
    total = sum(s.numel for s in stats)
    if total == 0:
        raise VelcroError("no activation elements: the profile has no points")
    comp = sum(int(m.sum()) for m in masks)
    mac_comp = sum(int(m.sum()) * s.macs for s, m in zip(stats, masks))
    mac_total = sum(s.numel * s.macs for s in stats)
    net = None
    if network_macs is not None:
        if network_macs < mac_total or network_macs <= 0:
            raise VelcroError(f"network_macs {network_macs} is below the {mac_total} MACs of the "
                              "activation points' own convolutions")
        net = mac_comp / network_macs
    return Compression(comp / total, mac_comp / mac_total if mac_total else float("nan"), comp, total, net)


def zero_share(stats: Sequence[PointStats], masks: Sequence[torch.Tensor]) -> float:
    """Table 4, first reading: element x image values equal to zero among the compressed
    elements' values, counted over the profiled images (needs ``count_zeros=True``)."""
    check_masks(stats, masks)
    if any(s.zeros is None for s in stats):
        raise VelcroError("the profile has no zero counts (profile with count_zeros=True)")
    zeros = sum(int(s.zeros[m].sum()) for s, m in zip(stats, masks))
    comp = sum(int(m.sum()) * s.count for s, m in zip(stats, masks))
    return zeros / comp if comp else float("nan")


def zero_mean_share(stats: Sequence[PointStats], masks: Sequence[torch.Tensor]) -> float:
    """Table 4, second reading: compressed elements whose mean is exactly zero (for a ReLU
    point, elements that were zero on every profiled image), over all compressed elements.
    At most :func:`zero_share`, which also counts the zeros of elements that are sometimes
    non-zero."""
    check_masks(stats, masks)
    zero = sum(int((s.mean[m] == 0).sum()) for s, m in zip(stats, masks))
    comp = sum(int(m.sum()) for m in masks)
    return zero / comp if comp else float("nan")


@contextlib.contextmanager
def compressed(model: nn.Module, stats: Sequence[PointStats], masks: Sequence[torch.Tensor]):
    """Inside the block, forwards of ``model`` produce the compressed model M_C (step 7).

    Points are matched by forward index (and checked by name); the first point is skipped if
    the profile was taken with ``skip_first=True``.
    """
    check_masks(stats, masks)
    offset = stats[0].index if stats else 0
    table = {}
    for s, m in zip(stats, masks):
        table[s.index] = (s.name, m, s.mean.to(torch.float32))

    def on_point(i, name, out):
        entry = table.get(i)
        if entry is None:
            if i >= offset and table:
                raise VelcroError(f"model produced activation point {i} '{name}' not in the profile")
            return out
        pname, m, mean = entry
        if pname != name:
            raise VelcroError(f"activation point {i} is '{name}', the profile has '{pname}'")
        if not m.any():
            return out
        return torch.where(m.to(out.device), mean.to(out.dtype).to(out.device), out)

    with _intercept(model, on_point) as mode:
        orig_call = model.forward

        def forward(*a, **k):
            mode.new_forward()
            return orig_call(*a, **k)
        model.forward = forward
        try:
            yield model
        finally:
            del model.forward


def check_task_classes(task_classes, num_classes: int | None = None) -> list[int]:
    """``task_classes`` as a sorted list of distinct ints; VelcroError if it is empty, holds a
    non-integer, a duplicate, or (given ``num_classes``) a class outside 0..num_classes-1."""
    if isinstance(task_classes, (str, bytes)) or not hasattr(task_classes, "__iter__"):
        raise TypeError(f"task_classes must be a sequence of class indices, not {task_classes!r}")
    out = []
    for v in task_classes:
        if isinstance(v, torch.Tensor) and v.ndim == 0 and not v.is_floating_point():
            v = int(v)
        if isinstance(v, bool) or not hasattr(v, "__index__"):
            raise VelcroError(f"task class {v!r} is not an integer class index")
        out.append(int(v.__index__()))
    if not out:
        raise VelcroError("task_classes is empty: a task needs at least one class")
    if len(set(out)) != len(out):
        raise VelcroError(f"task_classes {out} lists a class twice")
    if min(out) < 0:
        raise VelcroError(f"task class {min(out)} is out of range: class indices are >= 0")
    if num_classes is not None:
        bad = [v for v in out if not 0 <= v < num_classes]
        if bad:
            raise VelcroError(f"task class {bad[0]} is out of range: the model has {num_classes} "
                              f"classes (0..{num_classes - 1})")
    return sorted(out)


class _Tally:
    """Per-image outcomes of one classifier: all-class and task-restricted argmax."""

    def __init__(self):
        self.correct, self.correct_task, self.out_of_task = [], [], []

    def add(self, logits, y, task):
        pred = logits.argmax(1)
        self.correct.append(pred == y)
        if task is not None:
            self.correct_task.append(task[logits[:, task].argmax(1)] == y)
            self.out_of_task.append(~torch.isin(pred, task))

    def result(self, suffix: str, per_image: bool) -> dict:
        out = {}
        cat = {k: torch.cat(v) for k, v in (("correct", self.correct), ("correct_task", self.correct_task),
                                             ("predicted_out_of_task", self.out_of_task)) if v}
        n = len(cat["correct"])
        out["top1" + suffix] = int(cat["correct"].sum()) / n
        if "correct_task" in cat:
            out["top1_task" + suffix] = int(cat["correct_task"].sum()) / n
            out["out_of_task" + suffix] = int(cat["predicted_out_of_task"].sum()) / n
        if per_image:
            for k, v in cat.items():
                out[k + suffix] = v
        return out


def evaluate(model: nn.Module, batches: Iterable, stats=None, masks=None, *,
             task_classes: Sequence[int] | None = None, per_image: bool = False,
             original: bool = True, progress: bool = False) -> dict:
    """Top-1 accuracy of the original and, given stats and masks, the compressed model on
    labelled ``batches`` of (inputs, labels).

    ``top1`` / ``top1_compressed`` take the argmax over all of the model's classes.  With
    ``task_classes`` (the specialised task's class indices) also ``top1_task`` /
    ``top1_task_compressed`` (argmax over the task's classes only: what a deployment that
    knows its task would report) and ``out_of_task`` / ``out_of_task_compressed`` (share of
    images whose all-class prediction lies outside the task).  Compression can raise the
    all-class top-1 merely by suppressing out-of-task predictions; the task-restricted
    top-1 of the *uncompressed* model is the baseline that removes that effect.
    ``per_image`` adds bool tensors ``correct``, ``correct_task``, ``predicted_out_of_task``
    (and the ``_compressed`` ones) in image order, for paired tests (py_ref.significance).
    ``original=False`` skips the uncompressed model (its keys are then absent; for sweeps that
    score it once).  Raises VelcroError on no images, bad ``task_classes`` or a label outside
    them, or ``original=False`` without masks.
    """
    if not original and masks is None:
        raise VelcroError("nothing to evaluate: original=False and no masks")
    task = None
    if task_classes is not None:
        task = torch.tensor(check_task_classes(task_classes), dtype=torch.long)
    model.eval()
    orig, comp = _Tally(), _Tally()
    n = 0
    it = batches
    if progress:
        from tqdm import tqdm
        it = tqdm(batches, desc="evaluate", unit="batch", leave=False, disable=None)
    with torch.no_grad():
        for x, y in it:
            y = torch.as_tensor(y)
            if task is not None and not bool(torch.isin(y, task).all()):
                bad = int(y[~torch.isin(y, task)][0])
                raise VelcroError(f"label {bad} is not one of the task classes {task.tolist()}")
            if original:
                logits = model(x)
                if task is not None and n == 0:
                    check_task_classes(task.tolist(), logits.shape[1])
                orig.add(logits, y, task)
            if masks is not None:
                with compressed(model, stats, masks):
                    logits = model(x)
                if task is not None and n == 0:
                    check_task_classes(task.tolist(), logits.shape[1])
                comp.add(logits, y, task)
            n += len(y)
    if n == 0:
        raise VelcroError("no labelled images to evaluate")
    out = {"images": n}
    if original:
        out.update(orig.result("", per_image))
    if masks is not None:
        out.update(comp.result("_compressed", per_image))
        out["compression"] = compression_ratio(stats, masks)
    return out
