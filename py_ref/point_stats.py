"""VELCRO's preprocessing: the per-element mean and variance of every activation point over
the calibration images (Equation 1 of the paper), in float64 with a stated error bound.

    stats = profile(model, batches, skip_first=True)       # list[PointStats], forward order
    stats = merge_profiles(stats_a, stats_b)                # profiles of disjoint shards
    tol_mean, tol_var = profile_error_bound(var, mean_abs, batch)

The points come from py_ref.activation_points; masks, metrics and evaluation are
py_ref.velcro's.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import torch
import torch.nn as nn

from .activation_points import VelcroError, intercept

__all__ = ["PointStats", "F32_UNIT", "gamma", "profile_error_bound", "profile", "merge_profiles"]


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
    with torch.no_grad(), intercept(model, on_point) as mode:
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
