"""The schedule: uncompressed outputs dealt over the accelerator's instances by pixel.

The masks are deployment constants, so the host computes the schedule once, when it sends SCHEDULE,
and every frame reuses it. Pure numpy; imports nothing from ``hdl`` (py_ref is the bottom layer).

Segments
    Each image row is cut into segments of P consecutive pixels (``J = ceil(W / P)`` per row,
    the last one short when P does not divide W); segment ``s = y*J + j`` holds pixels
    ``x = j*P + o``, o = 0..P-1, x < W. ``S = H*J`` segments per image.

Dealing
    Every segment gives at most one pixel to each instance, so an instance needs the 3x3 windows
    of S pixels per image, not a copy of the image (the hardware's window dealer writes them).
    The work of a pixel is its number of uncompressed channels. Segment by segment, the
    present pixels sorted heaviest first (ties: lower o) go to the instances sorted least
    loaded first (ties: lower p). This greedy keeps ``max(load) - min(load) <= N`` after every
    segment (a pixel weighs at most N): the busiest instance holds at most about N entries
    more than ``sum U / P``. Finally the instances are renumbered by load, heaviest first
    (ties: the earlier number), so instance 0 is always the busiest one (``counts`` is
    non-increasing).

Work list
    Instance p computes, for its pixels in segment order, the uncompressed channels in channel
    order: entries ``(channel, seg)``. Every instance holds every channel's filters (slot =
    channel). ``steps`` = the busiest instance's entries; the compute phase takes
    ``steps * G + latency`` cycles.

Compact order (the output stream)
    Step k emits entry k of every instance, instances 0..P-1, so stream byte ``k*P + p`` is entry
    k of instance p, or a padding byte (zero) when instance p holds fewer than k + 1 entries:
    ``stream_length = steps * P`` bytes per image, of which ``total = sum U`` are outputs. That is
    what P instances running in lockstep produce (one output each per G cycles), so the output
    packer needs no buffer beyond one step.

Expansion
    :meth:`Schedule.expand` turns the stream back into the dense ``[N, H, W]`` map: the means
    everywhere, the computed values scattered to their positions (indices precomputed once per
    schedule).
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Schedule", "deal"]


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """The dealt work of one mask. Build it with :func:`deal`. Arrays are read-only."""

    shape: tuple[int, int, int]  # (N, H, W) of the mask
    instances: int               # P
    offsets: np.ndarray          # int64 [P, S]: offset o of instance p's pixel in segment s, -1
    channel: np.ndarray          # int64 [sum U]: every instance's entries, instance after instance
    seg: np.ndarray              # int64 [sum U]: the segment of each entry's pixel
    starts: np.ndarray           # int64 [P + 1]: instance p's entries = [starts[p]:starts[p+1]]
    compact_flat: np.ndarray     # int64 [stream_length]: flat index of stream byte c, -1 = padding
    work_flat: np.ndarray        # int64 [sum U]: flat indices of the outputs, ascending
    work_stream: np.ndarray      # int64 [sum U]: stream position of each of them

    # -- sizes ----------------------------------------------------------------------------------

    @property
    def row_segments(self) -> int:
        """J = ceil(W / P)."""
        return -(-self.shape[2] // self.instances)

    @property
    def total(self) -> int:
        """sum U: the uncompressed outputs of all channels."""
        return int(self.channel.size)

    @property
    def counts(self) -> np.ndarray:
        """Entries per instance (non-increasing)."""
        return np.diff(self.starts)

    @property
    def steps(self) -> int:
        """The busiest instance's entries: compute steps per image."""
        return int(self.counts[0]) if self.instances else 0

    @property
    def stream_length(self) -> int:
        """Bytes of the output stream per image: steps * P (padding included)."""
        return self.steps * self.instances

    # -- per instance ---------------------------------------------------------------------------

    def _run(self, p: int) -> slice:
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)):
            raise TypeError(f"instance must be an integer, not {p!r}")
        if not 0 <= p < self.instances:
            raise ValueError(f"instance must be in 0..{self.instances - 1}, not {p!r}")
        return slice(int(self.starts[p]), int(self.starts[p + 1]))

    def segments(self, p: int) -> np.ndarray:
        """The segment of each of instance p's entries, in the order it computes them."""
        return self.seg[self._run(p)]

    def entries(self, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(channel, y, x) of instance p's entries, in the order it computes them."""
        s = self._run(p)
        seg = self.seg[s]
        y, j = np.divmod(seg, self.row_segments)
        return self.channel[s], y, j * self.instances + self.offsets[p, seg]

    def compact_index(self, p: int) -> np.ndarray:
        """Stream position of each of instance p's entries: k * P + p."""
        s = self._run(p)
        return np.arange(s.stop - s.start) * self.instances + int(p)

    # -- output ---------------------------------------------------------------------------------

    def expand(self, compact_values, means) -> np.ndarray:
        """uint8 [N, H, W]: the means, with the stream's outputs scattered to their positions
        (``compact_values``: uint8 [stream_length], padding ignored)."""
        values = np.asarray(compact_values)
        if values.dtype != np.uint8:
            raise TypeError(f"compact_values must be a uint8 array, not {values.dtype!r}")
        if values.shape != (self.stream_length,):
            raise ValueError(f"compact_values must have shape ({self.stream_length},), "
                             f"not {values.shape!r}")
        means = np.asarray(means)
        if means.dtype != np.uint8:
            raise TypeError(f"means must be a uint8 array, not {means.dtype!r}")
        if means.shape != self.shape:
            raise ValueError(f"means must have shape {self.shape!r}, not {means.shape!r}")
        out = means.copy()
        # gather, then scatter to ascending addresses (a scatter in stream order strides widely)
        out.reshape(-1)[self.work_flat] = values[self.work_stream]
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


def _greedy(work: np.ndarray, p_count: int) -> np.ndarray:
    """offsets [P, S] of the per-segment greedy deal of pixel works [S, P] (-1 = no pixel)."""
    s_count = work.shape[0]
    offsets = np.full((p_count, s_count), -1, np.int64)
    load = np.zeros(p_count, np.int64)
    for s in range(s_count):
        row = work[s]
        present = np.flatnonzero(row >= 0)
        pixels = present[np.argsort(-row[present], kind="stable")]
        takers = np.lexsort((np.arange(p_count), load))[:pixels.size]
        offsets[takers, s] = pixels
        load[takers] += row[pixels]
    return offsets


def deal(mask: np.ndarray, instances: int) -> Schedule:
    """Deal the uncompressed outputs of ``mask`` (bool [N, H, W], True = compressed) over
    ``instances`` instances by pixel (see the module docstring)."""
    mask = _check_mask(mask)
    p_count = _check_instances(instances)
    n, h, w = mask.shape
    j_count = -(-w // p_count)
    width = j_count * p_count

    keep = np.zeros((n, h, width), bool)
    keep[:, :, :w] = ~mask
    work = keep.sum(axis=0, dtype=np.int64)                     # [H, J*P]
    work[:, w:] = -1                                           # no pixel there
    offsets = _greedy(work.reshape(h * j_count, p_count), p_count)
    s_idx = np.arange(h * j_count)
    pix_work = np.where(offsets >= 0, work.reshape(-1, p_count)[s_idx, np.maximum(offsets, 0)], 0)
    order = np.argsort(-pix_work.sum(axis=1), kind="stable")   # heaviest first
    offsets = offsets[order]

    # entries: instance, then segment, then channel
    ys, js = np.divmod(s_idx, j_count)
    channels, segs, flats, counts = [], [], [], []
    for p in range(p_count):
        own = np.flatnonzero(offsets[p] >= 0)
        x = js[own] * p_count + offsets[p, own]
        k = keep[:, ys[own], x]                                # [N, pixels]
        pix, ch = np.nonzero(k.T)                              # pixel-major, channels up
        channels.append(ch)
        segs.append(own[pix])
        flats.append((ch * h + ys[own][pix]) * w + x[pix])
        counts.append(ch.size)
    counts = np.array(counts, np.int64)
    starts = np.zeros(p_count + 1, np.int64)
    np.cumsum(counts, out=starts[1:])
    channel = np.concatenate(channels).astype(np.int64)
    seg = np.concatenate(segs).astype(np.int64)
    flat = np.concatenate(flats).astype(np.int64)

    steps = int(counts[0])
    run = np.repeat(np.arange(p_count), counts)
    stream = (np.arange(channel.size) - starts[run]) * p_count + run
    compact_flat = np.full(steps * p_count, -1, np.int64)
    compact_flat[stream] = flat
    ascending = np.argsort(flat, kind="stable")

    arrays = dict(offsets=offsets, channel=channel, seg=seg, starts=starts,
                  compact_flat=compact_flat, work_flat=flat[ascending],
                  work_stream=stream[ascending])
    for a in arrays.values():
        a.setflags(write=False)
    return Schedule(shape=(n, h, w), instances=p_count, **arrays)
