"""VELCRO (Algorithm 1 of Gabbay et al., Mathematics 2021): value-locality compression.

Preprocessing: run the unmodified model over calibration images and keep, for every element
of every activation point, the mean B[k] and variance V[k] over images (Equation 1).
Compression: in each point k, the fraction T_k of elements with the lowest variance (the
highest value locality) is replaced by its mean; those elements' convolutions are skipped.

Three layers, one module each: py_ref.activation_points (which calls of a model are activation
points, and how they are intercepted), py_ref.point_stats (the preprocessing statistics and
their error bound) and this module (masks, compression ratios, the compressed model and its
evaluation), which also re-exports the other two layers' public names.

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
from typing import Iterable, Sequence

import torch
import torch.nn as nn

from .activation_points import (ACTIVATION_FUNCTIONS, ACTIVATION_MODULES, REFUSED_FUNCTIONS,
                                VelcroError, capture_points, intercept, trace_points)
from .point_stats import F32_UNIT, PointStats, gamma, merge_profiles, profile, profile_error_bound

__all__ = ["VelcroError", "PointStats", "Compression", "ACTIVATION_FUNCTIONS", "ACTIVATION_MODULES",
           "REFUSED_FUNCTIONS", "trace_points",
           "capture_points", "profile", "merge_profiles", "select_lowest", "make_masks", "compression_ratio", "compressed",
           "evaluate", "check_task_classes", "conv_macs", "zero_share", "zero_mean_share", "check_thresholds", "check_masks",
           "profile_error_bound", "gamma", "F32_UNIT"]


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

    with intercept(model, on_point) as mode:
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
