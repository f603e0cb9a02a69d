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

from .velcro import PointStats, check_thresholds, select_lowest

__all__ = ["channel_scores", "make_channel_masks", "trimmed_channels"]


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
