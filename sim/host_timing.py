"""Wall-time measurement of host code (not of the RTL, which sim/measure.py measures in cycles):
the best of several runs, and the host's cost of expanding an image's compact output
(scripts/bench_expand.py, and make sim's printed check of the expansion's cost).
"""

from __future__ import annotations

import time

import numpy as np

from py_ref.schedule import deal

__all__ = ["best_of", "expand_seconds"]


def best_of(fn, repeats: int) -> float:
    """Minimum wall time of ``fn()`` in seconds (the least-disturbed run on a shared machine)."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def expand_seconds(mask: np.ndarray, means: np.ndarray, instances: int, *, repeats: int = 50,
                   seed: int = 0) -> float:
    """Host cost of the compact output: seconds per image of ``Schedule.expand`` (rebuilding the
    dense map from the computed bytes and the means), min over ``repeats``."""
    schedule = deal(mask, instances)
    values = np.random.default_rng(seed).integers(0, 256, schedule.stream_length, dtype=np.uint8)
    return best_of(lambda: schedule.expand(values, means), repeats)
