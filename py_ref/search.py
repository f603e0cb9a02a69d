"""Automatic threshold search: a per-point tuple chosen on tuning images (beyond the paper's
trial and error), and the best uniform tuple found the same way.

The paper picks threshold tuples by hand and reports them on the images it evaluates on.
Here a tuple is chosen on *tuning* images only (disjoint from the calibration images that
made the statistics and from the held-out images it is judged on):

1. uniform: the largest T of ``grid`` (every point the same T) whose tuning accuracy is not
   below the uncompressed model's minus ``tolerance`` (the whole grid is tried: accuracy is
   not monotonic in T);
2. greedy coordinate ascent from there: raise one point's threshold by ``step`` at a time,
   points in order of size (largest first, the most elements per step), keep the move if the
   tuning accuracy stays at or above that bar; stop when a full round keeps nothing or after
   ``max_evals`` greedy evaluations.

Both tuples are then compared with the uncompressed model on held-out images with a paired
test (py_ref.significance); scripts/velcro_analysis.py and ``velcro compress --search`` do so.

    score = tuning_score(model, tune_batches, stats, task_classes=[5, 7, 9])
    r = search_thresholds(stats, score)          # SearchResult
    masks = velcro.make_masks(stats, r.thresholds)
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn

from . import velcro

__all__ = ["DEFAULT_GRID", "SearchResult", "tuning_score", "search_thresholds"]

#: Uniform thresholds tried in step 1.
DEFAULT_GRID = tuple(round(0.05 * i, 2) for i in range(1, 13))    # 0.05 .. 0.60


@dataclasses.dataclass(frozen=True)
class SearchResult:
    thresholds: tuple[float, ...]   # the searched per-point tuple
    uniform: float                  # the best uniform T (0.0 if none of the grid keeps the bar)
    base: float                     # tuning accuracy of the uncompressed model
    uniform_score: float            # tuning accuracy of the uniform tuple
    score: float                    # tuning accuracy of the searched tuple
    evals: int                      # score evaluations, grid included
    history: tuple = ()             # (tuple, score, kept) of every greedy step

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["thresholds"] = list(self.thresholds)
        d["history"] = [{"thresholds": list(t), "score": s, "kept": k} for t, s, k in self.history]
        return d


def tuning_score(model: nn.Module, batches: Iterable, stats: Sequence[velcro.PointStats], *,
                 task_classes: Sequence[int] | None = None, structured: bool = False
                 ) -> Callable[[Sequence[float]], float]:
    """A function thresholds -> top-1 of the compressed model on ``batches`` (labelled).

    With ``task_classes`` the argmax is over the task's classes only (the metric that does
    not reward suppressing out-of-task predictions).  ``structured`` scores S-VELCRO masks.
    Results are cached per tuple; all-zero thresholds give the uncompressed model."""
    from .svelcro import make_channel_masks
    batches = [(x, torch.as_tensor(y)) for x, y in batches]
    if not batches or sum(len(y) for _, y in batches) == 0:
        raise velcro.VelcroError("no tuning images")
    task = None
    if task_classes is not None:
        task = torch.tensor(velcro.check_task_classes(task_classes), dtype=torch.long)
        for _, y in batches:
            if not bool(torch.isin(y, task).all()):
                raise velcro.VelcroError(f"a tuning label is not one of the task classes {task.tolist()}")
    make = make_channel_masks if structured else velcro.make_masks
    n = sum(len(y) for _, y in batches)
    cache: dict[tuple, float] = {}
    model.eval()

    def run(masks) -> float:
        correct = 0
        with torch.no_grad(), velcro.compressed(model, stats, masks):
            for x, y in batches:
                logits = model(x)
                pred = logits.argmax(1) if task is None else task[logits[:, task].argmax(1)]
                correct += int((pred == y).sum())
        return correct / n

    def score(thresholds: Sequence[float]) -> float:
        key = tuple(round(float(t), 6) for t in velcro.check_thresholds(stats, thresholds))
        if key not in cache:
            cache[key] = run(make(stats, list(key)))
        return cache[key]
    return score


def search_thresholds(stats: Sequence[velcro.PointStats], score: Callable[[Sequence[float]], float], *,
                      grid: Sequence[float] = DEFAULT_GRID, step: float = 0.05, max_evals: int = 30,
                      max_threshold: float = 0.95, tolerance: float = 0.0) -> SearchResult:
    """The search of the module doc.  ``score(thresholds)`` returns the tuning accuracy.

    ``max_evals`` bounds the greedy steps (the grid is tried in full on top of it);
    ``tolerance`` is the tuning accuracy the tuple may lose (0: none)."""
    k = len(stats)
    if k == 0:
        raise velcro.VelcroError("no activation points to search over")
    if not 0 < step < 1:
        raise velcro.VelcroError(f"step must be in (0, 1), not {step!r}")
    if not 0 < max_threshold < 1:
        raise velcro.VelcroError(f"max_threshold must be in (0, 1), not {max_threshold!r}")
    if max_evals < 0 or tolerance < 0:
        raise velcro.VelcroError("max_evals and tolerance must be >= 0")
    grid = [float(t) for t in grid]
    if not grid or any(not 0 < t < 1 for t in grid):
        raise velcro.VelcroError(f"grid must hold thresholds 0 < T < 1, not {grid!r}")
    base = score([0.0] * k)
    bar = base - tolerance - 1e-12
    evals = 1
    uni, uni_score = 0.0, base
    for t in sorted(grid):
        evals += 1
        s = score([t] * k)
        if s >= bar:
            uni, uni_score = t, s
    tup, cur = [uni] * k, uni_score
    order = sorted(range(k), key=lambda i: -stats[i].numel)
    history = []
    greedy = 0
    improved = True
    while improved and greedy < max_evals:
        improved = False
        for i in order:
            if greedy >= max_evals or tup[i] + step > max_threshold + 1e-9:
                continue
            cand = list(tup)
            cand[i] = round(cand[i] + step, 6)
            greedy += 1
            s = score(cand)
            kept = s >= bar
            history.append((tuple(cand), s, kept))
            if kept:
                tup, cur, improved = cand, s, True
    return SearchResult(tuple(tup), uni, base, uni_score, cur, evals + greedy, tuple(history))
