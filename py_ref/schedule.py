"""The work-list schedule: uncompressed outputs dealt evenly over the accelerator's instances.

The masks are deployment constants, so the host computes the schedule once, when it sends SCHEDULE,
and every frame reuses it. Pure numpy; imports nothing from ``hdl`` (py_ref is the bottom layer).

Work list
    Every uncompressed output ``(channel, y, x)`` (``mask`` False) of every channel, in
    channel-major order (channel, then row, then column): ``sum U`` entries.

Dealing
    The list is cut into P contiguous runs; instance p gets run p. The first ``sum U % P``
    instances get ``ceil(sum U / P)`` entries, the others ``floor(sum U / P)``: exact balance for
    any mask, so the compute phase takes ``ceil(sum U / P) * G + latency`` cycles. A contiguous
    run of a channel-major list keeps consecutive entries in one channel and touches only the
    channels ``first_channel[p] .. first_channel[p] + span[p] - 1``: an instance holds the filters
    and requantisation parameters of those channels only, in *slots* ``channel - first_channel``.
    A run usually spans one or two channels, but a mask whose channels are almost all compressed
    lets one run cross many of them (worst case ``min(N, ceil(sum U / P))``): ``max_span`` is what
    the hardware's slot count must cover for a given mask.

Compact order
    The order in which the hardware emits computed outputs, and the order of the output stream's
    bytes. It is round-robin over instances: step k emits entry k of every instance that has one,
    instances in order 0..P-1. That is what P instances running in lockstep produce (one output
    each per G cycles), so the output packer needs no buffer beyond one step. Because the
    instances holding the extra entry are the first ``sum U % P``, entry k of instance p is
    *always* compact output ``k * P + p``, including in the short last step.

Expansion
    :meth:`Schedule.expand` turns the compact outputs back into the dense ``[N, H, W]`` map:
    the means everywhere, the compact values scattered to their positions (flat indices
    precomputed once per schedule).
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Schedule", "deal"]


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """The dealt work list of one mask. Build it with :func:`deal`.

    Arrays are read-only. ``channel``, ``y``, ``x`` are the whole work list (channel-major);
    instance p owns entries ``starts[p] : starts[p + 1]`` of it.
    """

    shape: tuple[int, int, int]  # (N, H, W) of the mask
    instances: int               # P
    channel: np.ndarray          # int64 [sum U]: work list, channel-major
    y: np.ndarray                # int64 [sum U]
    x: np.ndarray                # int64 [sum U]
    starts: np.ndarray           # int64 [P + 1]: run p = work list[starts[p]:starts[p+1]]
    first_channel: np.ndarray    # int64 [P]: channel of slot 0 (0 for an empty run)
    span: np.ndarray             # int64 [P]: channels the run touches (0 for an empty run)
    compact_flat: np.ndarray     # int64 [sum U]: flat index into [N*H*W] of compact output c
    work_flat: np.ndarray        # int64 [sum U]: flat index of each work-list entry (ascending)
    work_compact: np.ndarray     # int64 [sum U]: compact position of each work-list entry

    # -- sizes ----------------------------------------------------------------------------------

    @property
    def total(self) -> int:
        """sum U: uncompressed outputs of all channels, the length of the compact stream."""
        return int(self.channel.size)

    @property
    def counts(self) -> np.ndarray:
        """Entries per instance: floor or ceil of sum U / P."""
        return np.diff(self.starts)

    @property
    def steps(self) -> int:
        """ceil(sum U / P): entries of the busiest instance, compute steps per frame."""
        return -(-self.total // self.instances)

    @property
    def max_span(self) -> int:
        """Channel slots an instance needs for this mask (max over instances)."""
        return int(self.span.max())

    # -- per instance ---------------------------------------------------------------------------

    def entries(self, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(channel, y, x) of instance p's run, in the order it computes them."""
        s = slice(self.starts[p], self.starts[p + 1])
        return self.channel[s], self.y[s], self.x[s]

    def slots(self, p: int) -> np.ndarray:
        """Instance p's entries as channel slots (channel - first_channel[p])."""
        return self.entries(p)[0] - self.first_channel[p]

    def channels(self, p: int) -> range:
        """The channels whose filters and quant parameters instance p holds, slot order."""
        first = int(self.first_channel[p])
        return range(first, first + int(self.span[p]))

    def compact_index(self, p: int) -> np.ndarray:
        """Compact-stream position of each of instance p's entries: k * P + p."""
        return np.arange(self.counts[p]) * self.instances + p

    # -- output ---------------------------------------------------------------------------------

    def expand(self, compact_values, means) -> np.ndarray:
        """uint8 [N, H, W]: the means, with the compact outputs scattered to their positions."""
        values = np.asarray(compact_values)
        if values.dtype != np.uint8:
            raise TypeError(f"compact_values must be a uint8 array, not {values.dtype!r}")
        if values.shape != (self.total,):
            raise ValueError(f"compact_values must have shape ({self.total},), "
                             f"not {values.shape!r}")
        means = np.asarray(means)
        if means.dtype != np.uint8:
            raise TypeError(f"means must be a uint8 array, not {means.dtype!r}")
        if means.shape != self.shape:
            raise ValueError(f"means must have shape {self.shape!r}, not {means.shape!r}")
        out = means.copy()
        # Gather into work-list order, then scatter to ascending addresses: the direct scatter
        # out[compact_flat] = values strides by ~H*W bytes per write and is 2x slower at C = 0.
        out.reshape(-1)[self.work_flat] = values[self.work_compact]
        return out


def _check_mask(mask) -> np.ndarray:
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"mask must be a numpy bool array, not {type(mask).__name__!r}")
    if mask.dtype != np.bool_:
        raise TypeError(f"mask must be a bool array, not {mask.dtype!r}")
    if mask.ndim != 3:
        raise ValueError(f"mask must be 3-D [N, H, W], not shape {mask.shape!r}")
    if 0 in mask.shape:
        raise ValueError(f"mask must have no empty axis, not shape {mask.shape!r}")
    return mask


def _check_instances(instances) -> int:
    if not isinstance(instances, (int, np.integer)) or isinstance(instances, (bool, np.bool_)):
        raise TypeError(f"instances must be an integer, not {instances!r}")
    if instances < 1:
        raise ValueError(f"instances must be at least 1, not {instances!r}")
    return int(instances)


def deal(mask: np.ndarray, instances: int) -> Schedule:
    """Deal the uncompressed outputs of ``mask`` (bool [N, H, W], True = compressed) over
    ``instances`` instances in exactly balanced contiguous runs (see the module docstring)."""
    mask = _check_mask(mask)
    p_count = _check_instances(instances)
    n, h, w = mask.shape

    flat = np.flatnonzero(~mask.reshape(-1))          # channel-major work list
    channel, rest = np.divmod(flat, h * w)
    y, x = np.divmod(rest, w)
    total = flat.size

    base, extra = divmod(total, p_count)
    counts = np.full(p_count, base, np.int64)
    counts[:extra] += 1
    starts = np.zeros(p_count + 1, np.int64)
    np.cumsum(counts, out=starts[1:])

    nonempty = counts > 0
    first = np.zeros(p_count, np.int64)
    span = np.zeros(p_count, np.int64)
    first[nonempty] = channel[starts[:-1][nonempty]]
    span[nonempty] = channel[starts[1:][nonempty] - 1] - first[nonempty] + 1

    # compact output c = k*P + p is entry k of instance p, i.e. work-list index starts[p] + k
    k, p = np.divmod(np.arange(total), p_count)
    compact_flat = flat[starts[p] + k]
    run = np.repeat(np.arange(p_count), counts)
    work_compact = (np.arange(total) - starts[run]) * p_count + run

    arrays = dict(channel=channel, y=y, x=x, starts=starts, first_channel=first, span=span,
                  compact_flat=compact_flat, work_flat=flat, work_compact=work_compact)
    for a in arrays.values():
        a.setflags(write=False)
    return Schedule(shape=(n, h, w), instances=p_count, **arrays)
