"""The schedule: uncompressed outputs dealt over the accelerator's instances by pixel, two
instances sharing one packed DSP48E2 chain.

The masks are deployment constants, so the host computes the schedule once, when it sends SCHEDULE,
and every frame reuses it. Pure numpy; imports nothing from ``hdl`` (py_ref is the bottom layer).

Segments
    Each image row is cut into segments of P consecutive pixels (``J = ceil(W / P)`` per row,
    the last one short when P does not divide W); segment ``s = y*J + j`` holds pixels
    ``x = j*P + o``, o = 0..P-1, x < W. ``S = H*J`` segments per image.

Pairs
    Instances 2d and 2d + 1 ("twins" A and B of pair d; the last pair of an odd P has twin A
    only) share one datapath whose DSP48E2s compute two products with one weight
    (:mod:`py_ref.dsp`): in every step both twins compute the *same channel*, each at one of its
    own pixels. Pair d's steps for channel c are therefore ``max(U_A,c, U_B,c)`` (U_t,c: twin
    t's outputs of channel c), and its run ``steps_d = sum_c max(U_A,c, U_B,c)``; a step in
    which only one twin has an output of the channel is half empty.

Dealing
    Every segment gives at most one pixel to each instance, so an instance needs the 3x3 windows
    of S pixels per image, not a copy of the image (the hardware's window dealer writes them).
    The work of a pixel is its set of uncompressed channels. Segment by segment, the present
    pixels, heaviest first (ties: lower o), each go to the free instance (one that has no pixel
    of this segment yet) that leaves its pair the fewest steps; ties: the smaller increase (the
    twin whose channels are behind), then the less loaded instance, then the lower number.
    Pixels with no work go to the remaining instances, lowest numbers first. Finally the pairs
    are renumbered by steps, busiest first (ties: the earlier number), twins kept together, so
    pair 0 is the busiest (``pair_steps`` is non-increasing; an odd P's twin-less last pair stays
    last, whatever its run).

Work list
    Pair d computes channel after channel, in channel order; for channel c, twin A's pixels with
    c uncompressed in segment order beside twin B's, step by step. Entry ``(channel, seg,
    step)``: the instance's output of ``channel`` at its pixel of segment ``seg`` leaves in step
    ``step`` of the pair's run. Every instance holds every channel's filters (slot = channel).
    ``steps`` = the busiest pair's run; the compute phase takes ``steps * G + latency`` cycles.

Compact order (the output stream)
    Step k emits one byte of every instance, instances 0..P-1, so stream byte ``k*P + p`` is
    instance p's output of step k, or a padding byte (zero) when instance p has none in step k:
    ``stream_length = steps * P`` bytes per image, of which ``total = sum U`` are outputs. That is
    what P/2 pairs running in lockstep produce (two outputs each per G cycles), so the output
    packer needs no buffer beyond one step.

Expansion
    :meth:`Schedule.expand` turns the stream back into the dense ``[N, H, W]`` map: the means
    everywhere, the computed values scattered to their positions (indices precomputed once per
    schedule).
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Schedule", "deal", "pair_count"]


def pair_count(instances: int) -> int:
    """Pairs of P instances: ceil(P / 2) (the last of an odd P has one twin)."""
    return -(-instances // 2)


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """The dealt work of one mask. Build it with :func:`deal`. Arrays are read-only."""

    shape: tuple[int, int, int]  # (N, H, W) of the mask
    instances: int               # P
    offsets: np.ndarray          # int64 [P, S]: offset o of instance p's pixel in segment s, -1
    channel: np.ndarray          # int64 [sum U]: every instance's entries, instance after instance
    seg: np.ndarray              # int64 [sum U]: the segment of each entry's pixel
    step: np.ndarray             # int64 [sum U]: the step of its pair's run each entry leaves in
    starts: np.ndarray           # int64 [P + 1]: instance p's entries = [starts[p]:starts[p+1]]
    pair_steps: np.ndarray       # int64 [ceil(P/2)]: each pair's run, busiest first (see deal)
    compact_flat: np.ndarray     # int64 [stream_length]: flat index of stream byte c, -1 = padding
    work_flat: np.ndarray        # int64 [sum U]: flat indices of the outputs, ascending
    work_stream: np.ndarray      # int64 [sum U]: stream position of each of them

    # -- sizes ----------------------------------------------------------------------------------

    @property
    def row_segments(self) -> int:
        """J = ceil(W / P)."""
        return -(-self.shape[2] // self.instances)

    @property
    def pairs(self) -> int:
        """ceil(P / 2): the datapaths, each serving instances 2d and 2d + 1."""
        return pair_count(self.instances)

    @property
    def total(self) -> int:
        """sum U: the uncompressed outputs of all channels."""
        return int(self.channel.size)

    @property
    def counts(self) -> np.ndarray:
        """Outputs per instance (what each instance computes per image)."""
        return np.diff(self.starts)

    @property
    def steps(self) -> int:
        """The busiest pair's run: compute steps per image."""
        return int(self.pair_steps.max()) if self.pair_steps.size else 0

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

    def steps_of(self, p: int) -> np.ndarray:
        """The step of its pair's run in which each of instance p's entries leaves (ascending)."""
        return self.step[self._run(p)]

    def entries(self, p: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(channel, y, x) of instance p's entries, in the order it computes them."""
        s = self._run(p)
        seg = self.seg[s]
        y, j = np.divmod(seg, self.row_segments)
        return self.channel[s], y, j * self.instances + self.offsets[p, seg]

    def compact_index(self, p: int) -> np.ndarray:
        """Stream position of each of instance p's entries: step * P + p."""
        return self.step[self._run(p)] * self.instances + int(p)

    def table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(channel, seg, valid), each int64 [steps, P]: instance p's entry in step k of its
        pair's run (channel and seg 0 where ``valid`` is 0). Twins' valid entries of one step
        hold the same channel."""
        shape = (self.steps, self.instances)
        channel, seg, valid = (np.zeros(shape, np.int64) for _ in range(3))
        p = np.repeat(np.arange(self.instances), self.counts)
        channel[self.step, p] = self.channel
        seg[self.step, p] = self.seg
        valid[self.step, p] = 1
        return channel, seg, valid

    def pair_run(self, d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pair d's run as its datapath takes it: (channel [steps_d], seg and valid
        [steps_d, min(P, 2)]), column t = twin t (instance 2d + t; zeros for the missing twin
        of an odd P); a step's channel is that of its valid entries."""
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"pair must be an integer, not {d!r}")
        if not 0 <= d < self.pairs:
            raise ValueError(f"pair must be in 0..{self.pairs - 1}, not {d!r}")
        channel, seg, valid = self.table()
        k = int(self.pair_steps[d])
        cols = [2 * int(d) + t for t in range(min(self.instances, 2))]
        pick = [c if c < self.instances else None for c in cols]

        def take(a):
            return np.stack([a[:k, c] if c is not None else np.zeros(k, np.int64)
                             for c in pick], axis=1)

        v, ch = take(valid), take(channel)
        return np.where(v[:, 0] == 1, ch[:, 0], ch[:, -1]), take(seg), v

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


def _greedy(keep: np.ndarray, present: np.ndarray) -> np.ndarray:
    """offsets [P, S] of the pair-aware per-segment deal of the pixels' channel sets ``keep``
    (bool [S, P, N]) where ``present`` (bool [S, P]) says which pixels exist."""
    s_count, p_count, n = keep.shape
    offsets = np.full((p_count, s_count), -1, np.int64)
    # outputs per instance and channel; row P is the missing twin of an odd P (never grows)
    outputs = np.zeros((p_count + 1, n), np.int64)
    twin = np.arange(p_count) ^ 1
    twin[twin >= p_count] = p_count
    pair = np.arange(p_count) // 2
    pair_steps = np.zeros(pair_count(p_count), np.int64)
    load = np.zeros(p_count, np.int64)
    number = np.arange(p_count)
    work_all = keep.sum(axis=2)
    for s in range(s_count):
        sets, work = keep[s], work_all[s]
        busy = np.flatnonzero(work > 0)
        free = np.ones(p_count, bool)
        for o in busy[np.argsort(-work[busy], kind="stable")]:
            k = sets[o]
            # a channel adds a step to the pair unless the taker is behind its twin in it
            delta = (outputs[:p_count][:, k] >= outputs[twin][:, k]).sum(axis=1)
            after = pair_steps[pair] + delta
            cand = np.flatnonzero(free)
            q = cand[np.lexsort((number[cand], load[cand], delta[cand], after[cand]))[0]]
            offsets[q, s] = o
            free[q] = False
            outputs[q, k] += 1
            pair_steps[pair[q]] += delta[q]
            load[q] += work[o]
        idle = np.flatnonzero(present[s] & (work == 0))
        offsets[np.flatnonzero(free)[:idle.size], s] = idle
    return offsets


def deal(mask: np.ndarray, instances: int) -> Schedule:
    """Deal the uncompressed outputs of ``mask`` (bool [N, H, W], True = compressed) over
    ``instances`` instances by pixel, in pairs (see the module docstring)."""
    mask = _check_mask(mask)
    p_count = _check_instances(instances)
    n, h, w = mask.shape
    j_count = -(-w // p_count)
    width = j_count * p_count
    s_count = h * j_count

    keep = np.zeros((n, h, width), bool)
    keep[:, :, :w] = ~mask
    sets = keep.reshape(n, s_count, p_count).transpose(1, 2, 0)           # [S, P, N]
    present = np.zeros((h, width), bool)
    present[:, :w] = True
    offsets = _greedy(sets, present.reshape(s_count, p_count))

    # each instance's outputs per channel: [P, N] lists of segments, ascending
    has = offsets >= 0
    chosen = np.zeros((p_count, s_count, n), bool)
    pp, ss = np.nonzero(has)
    chosen[pp, ss] = sets[ss, offsets[pp, ss]]
    per_channel = chosen.sum(axis=1)                                      # [P, N]
    if p_count % 2:
        per_channel = np.concatenate([per_channel, np.zeros((1, n), np.int64)])
    d_count = pair_count(p_count)
    pair_runs = per_channel.reshape(d_count, 2, n).max(axis=1)             # [D, N]
    steps_of = pair_runs.sum(axis=1)
    full = p_count // 2                       # pairs with two twins; an odd P's last stays last
    order = np.concatenate([np.argsort(-steps_of[:full], kind="stable"),
                            np.arange(full, d_count)]).astype(np.int64)
    stores = np.stack([2 * order, 2 * order + 1], axis=1).reshape(-1)
    stores = stores[stores < p_count]
    offsets, chosen = offsets[stores], chosen[stores]
    pair_runs, steps_of = pair_runs[order], steps_of[order]
    # where channel c's steps begin in each pair's run
    base = np.zeros((d_count, n), np.int64)
    np.cumsum(pair_runs[:, :-1], axis=1, out=base[:, 1:])

    ys, js = np.divmod(np.arange(s_count), j_count)
    channels, segs, step_list, flats, counts = [], [], [], [], []
    for p in range(p_count):
        ch, sg = np.nonzero(chosen[p].T)              # channel-major, segments ascending
        first = np.searchsorted(ch, np.arange(n))      # each channel's first entry
        rank = np.arange(ch.size) - first[ch]
        x = js[sg] * p_count + offsets[p, sg]
        channels.append(ch)
        segs.append(sg)
        step_list.append(base[p // 2, ch] + rank)
        flats.append((ch * h + ys[sg]) * w + x)
        counts.append(ch.size)
    counts = np.array(counts, np.int64)
    starts = np.zeros(p_count + 1, np.int64)
    np.cumsum(counts, out=starts[1:])
    channel = np.concatenate(channels).astype(np.int64)
    seg = np.concatenate(segs).astype(np.int64)
    step = np.concatenate(step_list).astype(np.int64)
    flat = np.concatenate(flats).astype(np.int64)

    steps = int(steps_of.max()) if d_count else 0
    run = np.repeat(np.arange(p_count), counts)
    stream = step * p_count + run
    compact_flat = np.full(steps * p_count, -1, np.int64)
    compact_flat[stream] = flat
    ascending = np.argsort(flat, kind="stable")

    arrays = dict(offsets=offsets, channel=channel, seg=seg, step=step, starts=starts,
                  pair_steps=steps_of.astype(np.int64), compact_flat=compact_flat,
                  work_flat=flat[ascending], work_stream=stream[ascending])
    for a in arrays.values():
        a.setflags(write=False)
    return Schedule(shape=(n, h, w), instances=p_count, **arrays)
