"""py_ref.schedule: the pair-aware deal by pixel, the pairs' runs and their bounds, every
uncompressed output once, the compact order with its padding, expansion.

Checked against a plain-Python dealer written from the module's words (loops over Python ints),
never against the module's own index arithmetic.
"""

import numpy as np
import pytest

from conftest import seed_for
from py_ref.golden import Frame, golden_ofm, point_wide_mask
from py_ref.schedule import Schedule, deal


def reference_deal(mask, p_count):
    """(offsets [P][S], per instance the list of (channel, y, x, step)), as loops: segments of P
    pixels, heaviest pixel to the free instance leaving its pair the fewest steps, then pairs
    renumbered by steps, runs channel by channel."""
    n, h, w = mask.shape
    j_count = -(-w // p_count)
    kept = {(y, x): [c for c in range(n) if not mask[c, y, x]] for y in range(h) for x in range(w)}
    outputs = [[0] * n for _ in range(p_count)]
    load = [0] * p_count
    pairs = (p_count + 1) // 2
    steps = [0] * pairs
    offsets = [[-1] * (h * j_count) for _ in range(p_count)]

    def twin_outputs(p, c):
        return outputs[p ^ 1][c] if (p ^ 1) < p_count else 0

    for s in range(h * j_count):
        y, j = divmod(s, j_count)
        pixels = [o for o in range(p_count) if j * p_count + o < w]
        pixels.sort(key=lambda o: (-len(kept[y, j * p_count + o]), o))
        free = list(range(p_count))
        for o in pixels:
            chans = kept[y, j * p_count + o]
            if not chans:
                continue
            delta = {p: sum(1 for c in chans if outputs[p][c] >= twin_outputs(p, c)) for p in free}
            p = min(free, key=lambda p: (steps[p // 2] + delta[p], delta[p], load[p], p))
            free.remove(p)
            offsets[p][s] = o
            steps[p // 2] += delta[p]
            load[p] += len(chans)
            for c in chans:
                outputs[p][c] += 1
        for o, p in zip([o for o in pixels if not kept[y, j * p_count + o]], free):
            offsets[p][s] = o
    full = p_count // 2                     # an odd P's twin-less pair stays last
    order = sorted(range(full), key=lambda d: (-steps[d], d)) + list(range(full, pairs))
    offsets = [offsets[p] for d in order for p in (2 * d, 2 * d + 1) if p < p_count]
    runs = []
    for p in range(p_count):
        runs.append([])
        for c in range(n):
            for s, o in enumerate(offsets[p]):
                y, j = divmod(s, j_count)
                if o >= 0 and not mask[c, y, j * p_count + o]:
                    runs[p].append((c, y, j * p_count + o))
    # channel c's steps in pair d begin after the earlier channels' max(U_A, U_B)
    for d in range(pairs):
        twins = [p for p in (2 * d, 2 * d + 1) if p < p_count]
        start = 0
        for c in range(n):
            width = max(sum(1 for e in runs[p] if e[0] == c) for p in twins)
            for p in twins:
                mine = [i for i, e in enumerate(runs[p]) if e[0] == c]
                for r, i in enumerate(mine):
                    runs[p][i] = runs[p][i] + (start + r,)
            start += width
    return offsets, runs


def reference_compact(runs):
    """The stream: step k holds every instance's entry of step k, None where it has none."""
    steps = max((e[3] + 1 for r in runs for e in r), default=0)
    at = {(e[3], p): e[:3] for p, r in enumerate(runs) for e in r}
    return [at.get((k, p)) for k in range(steps) for p in range(len(runs))]


def check_schedule(mask, p_count):
    s = deal(mask, p_count)
    offsets, runs = reference_deal(mask, p_count)
    n, h, w = mask.shape
    total = int((~mask).sum())
    assert s.total == total and s.instances == p_count and s.shape == mask.shape
    assert s.offsets.tolist() == offsets
    # each segment's pixels go to distinct instances, all of them dealt
    for seg in range(s.offsets.shape[1]):
        dealt = [o for o in s.offsets[:, seg].tolist() if o >= 0]
        j = seg % s.row_segments
        assert sorted(dealt) == list(range(min(p_count, w - j * p_count)))
    # pairs: busiest first; a pair's run is its channels' max(U_A, U_B), so between half the
    # pair's outputs and all of them; no step computes more than P outputs
    full = list(s.pair_steps[:p_count // 2])
    assert full == sorted(full, reverse=True)
    assert s.steps == max(s.pair_steps)
    counts = list(s.counts) + [0]
    for d, run in enumerate(s.pair_steps.tolist()):
        pair_load = counts[2 * d] + counts[2 * d + 1]
        assert max(counts[2 * d], counts[2 * d + 1]) <= run <= pair_load
    assert s.steps * p_count >= total
    for p in range(p_count):
        ch, y, x = s.entries(p)
        assert [e + (k,) for e, k in zip(zip(ch.tolist(), y.tolist(), x.tolist()),
                                         s.steps_of(p).tolist())] == runs[p], p
        y_seg, j_seg = np.divmod(s.segments(p), s.row_segments)
        assert (y_seg == y).all() and (j_seg == x // p_count).all()
    # the grid: twins' entries of a step share their channel
    channel, seg, valid = s.table()
    for d in range(s.pairs):
        if 2 * d + 1 < p_count:
            both = (valid[:, 2 * d] & valid[:, 2 * d + 1]).astype(bool)
            assert (channel[both, 2 * d] == channel[both, 2 * d + 1]).all()
    assert int(valid.sum()) == total
    # the stream: every uncompressed output exactly once, padding -1, step-major order
    order = reference_compact(runs)
    assert s.stream_length == s.steps * p_count == len(order)
    assert s.compact_flat.tolist() == [-1 if e is None else (e[0] * h + e[1]) * w + e[2]
                                       for e in order]
    for p in range(p_count):
        for k, c in enumerate(s.compact_index(p).tolist()):
            assert order[c] == runs[p][k][:3]
    kept = s.compact_flat[s.compact_flat >= 0]
    assert len(set(kept.tolist())) == total and not mask.reshape(-1)[kept].any()
    return s, order


def frame_for(mask, rng):
    n, h, w = mask.shape
    c_in = int(rng.integers(1, 4))
    return Frame(ifmap=rng.integers(-128, 128, (c_in, h, w), dtype=np.int8),
                 weight=rng.integers(-128, 128, (n, c_in, 3, 3), dtype=np.int8),
                 bias=rng.integers(-2**15, 2**15, n, dtype=np.int32), mask=mask,
                 means=rng.integers(0, 256, (n, h, w), dtype=np.uint8),
                 mult=rng.integers(1, 256, n).astype(np.int64),
                 shift=rng.integers(8, 16, n).astype(np.int64))


def check_expand(mask, rng, p_count):
    s, order = check_schedule(mask, p_count)
    frame = frame_for(mask, rng)
    golden = golden_ofm(frame)
    compact = np.array([7 if e is None else golden[e] for e in order], np.uint8)
    np.testing.assert_array_equal(s.expand(compact, frame.means), golden)


MASKS = {
    "empty": lambda rng, shape: np.zeros(shape, bool),            # nothing compressed
    "full": lambda rng, shape: np.ones(shape, bool),              # everything compressed
    "random": lambda rng, shape: rng.random(shape) < rng.random(),
    "skewed": lambda rng, shape: skewed_mask(rng, shape, 0.6),
}


@pytest.mark.parametrize("p_count", [1, 3, 16, 1000])
@pytest.mark.parametrize("kind", MASKS)
def test_balance_and_coverage(kind, p_count):
    seed = seed_for("schedule", kind, p_count)
    rng = np.random.default_rng(seed)
    mask = MASKS[kind](rng, (8, 9, 11))
    s, _ = check_schedule(mask, p_count)
    if kind == "full":
        assert s.total == 0 and s.steps == 0 and s.stream_length == 0
    if kind == "empty" and p_count == 16:
        # 9 rows of 11 pixels of 8 outputs: 99 pixels dealt round-robin over 16 instances,
        # three get 7 pixels and thirteen 6
        assert list(s.counts) == [56] * 3 + [48] * 13


@pytest.mark.parametrize("kind", MASKS)
def test_expand_equals_golden(kind):
    seed = seed_for("schedule-expand", kind)
    rng = np.random.default_rng(seed)
    check_expand(MASKS[kind](rng, (6, 5, 7)), rng, 4)


def test_skewed_mask_is_skewed():
    """The skewed generator really yields the three channel kinds the tests rely on."""
    rng = np.random.default_rng(seed_for("skewed"))
    mask = skewed_mask(rng, (16, 64, 64), 0.6)
    per_channel = mask.reshape(16, -1).mean(axis=1)
    assert per_channel[0] == 1 and per_channel[1] == 0
    # three decades of scale: some channels nearly all compressed, some nearly all kept
    assert per_channel[2:].max() > 0.9 and per_channel[2:].min() < 0.1
    s = deal(mask, 16)
    assert int((~mask).sum()) / 16 <= s.steps <= int((~mask).sum()) / 16 + 16


@pytest.mark.parametrize("ratio", [0.3, 0.9])
def test_default_image_balance(ratio):
    """16 x 64x64, 16 instances in 8 pairs: every instance one pixel of each of the 256
    segments, and the busiest pair's run at most N = 16 steps above the bound total / P (no
    step computes more than P outputs), on a random and a skewed mask."""
    rng = np.random.default_rng(seed_for("schedule-default", ratio))
    for mask in (rng.random((16, 64, 64)) < ratio, skewed_mask(rng, (16, 64, 64), ratio)):
        s = deal(mask, 16)
        total = int((~mask).sum())
        assert (s.offsets >= 0).all() and s.offsets.shape == (16, 256)
        assert total / 16 <= s.steps <= total / 16 + 16, (s.steps, total / 16)
        assert np.array_equal(np.sort(s.compact_flat[s.compact_flat >= 0]),
                              np.flatnonzero(~mask.reshape(-1)))


def test_many_seeds():
    """Property test: random shapes, instance counts and mask kinds, 300 seeds."""
    base = seed_for("schedule-property")
    for i in range(300):
        seed = base + i
        rng = np.random.default_rng(seed)
        shape = tuple(int(v) for v in rng.integers(1, 9, 3))
        if shape[0] < 2:
            shape = (2,) + shape[1:]
        kind = list(MASKS)[i % len(MASKS)]
        p_count = int(rng.integers(1, 40))
        try:
            check_expand(MASKS[kind](rng, shape), rng, p_count)
        except AssertionError as e:
            raise AssertionError(f"seed={seed} kind={kind} shape={shape} P={p_count}") from e


def test_all_work_in_one_pixel():
    """One pixel holding every output goes to one instance, whose pair then takes N steps with
    its twin idle."""
    mask = np.ones((4, 5, 6), bool)
    mask[:, 2, 3] = False
    s = deal(mask, 4)
    assert list(s.counts) == [4, 0, 0, 0] and s.steps == 4 and s.stream_length == 16
    assert s.entries(0)[1].tolist() == [2] * 4 and s.entries(0)[2].tolist() == [3] * 4


def test_uniform_work_is_dealt_evenly():
    """Every pixel equally heavy and P dividing W: every instance holds the same work."""
    s = deal(np.zeros((4, 5, 8), bool), 4)
    assert list(s.counts) == [40] * 4 and s.stream_length == s.total == 160


@pytest.mark.parametrize("mask, p_count, exc, text", [
    ([[[True]]], 1, TypeError, "mask must be a numpy bool array, not 'list'"),
    (np.zeros((2, 3, 3), np.uint8), 1, TypeError, "mask must be a bool array, not dtype('uint8')"),
    (np.zeros((3, 3), bool), 1, ValueError, "mask must be 3-D [N, H, W], not shape (3, 3)"),
    (np.zeros((0, 3, 3), bool), 1, ValueError, "mask must have no empty axis"),
    (np.zeros((2, 3, 3), bool), 0, ValueError, "instances must be at least 1, not 0"),
    (np.zeros((2, 3, 3), bool), 2.0, TypeError, "instances must be an integer, not 2.0"),
    (np.zeros((2, 3, 3), bool), True, TypeError, "instances must be an integer, not True"),
])
def test_deal_rejects(mask, p_count, exc, text):
    with pytest.raises(exc) as info:
        deal(mask, p_count)
    assert text in str(info.value)


def test_expand_rejects():
    s = deal(np.zeros((2, 3, 4), bool), 2)      # 12 pixels of 2 outputs: 12 steps of 2 bytes
    means = np.zeros((2, 3, 4), np.uint8)
    assert s.stream_length == 24
    with pytest.raises(TypeError, match="compact_values must be a uint8 array"):
        s.expand(np.zeros(24, np.int64), means)
    with pytest.raises(ValueError, match=r"compact_values must have shape \(24,\), not \(23,\)"):
        s.expand(np.zeros(23, np.uint8), means)
    with pytest.raises(ValueError, match="means must have shape"):
        s.expand(np.zeros(24, np.uint8), np.zeros((2, 3, 5), np.uint8))
    with pytest.raises(TypeError, match="means must be a uint8 array"):
        s.expand(np.zeros(24, np.uint8), np.zeros((2, 3, 4), np.int16))


def test_schedule_is_read_only():
    s = deal(np.zeros((2, 3, 3), bool), 2)
    assert isinstance(s, Schedule)
    with pytest.raises(ValueError):
        s.channel[0] = 1


def skewed_mask(rng, shape, ratio):
    return point_wide_mask(rng, shape, ratio, skewed=True)
