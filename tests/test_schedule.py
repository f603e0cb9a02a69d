"""py_ref.schedule: exact balance, every uncompressed output once, compact order, expansion.

Checked against a plain-Python dealer written from the issue's words (loops over Python ints),
never against the module's own index arithmetic.
"""

import numpy as np
import pytest

from conftest import seed_for
from py_ref.golden import Frame, golden_ofm, point_wide_mask
from py_ref.schedule import Schedule, deal


def reference_deal(mask, p_count):
    """Per instance: list of (channel, y, x); written as loops, independent of deal()."""
    n, h, w = mask.shape
    work = [(c, i, j) for c in range(n) for i in range(h) for j in range(w) if not mask[c, i, j]]
    base, extra = divmod(len(work), p_count)
    runs, pos = [], 0
    for p in range(p_count):
        size = base + (1 if p < extra else 0)
        runs.append(work[pos:pos + size])
        pos += size
    return runs


def reference_compact(runs):
    """The compact order: step k emits entry k of every instance that has one, instance order."""
    out = []
    for k in range(max((len(r) for r in runs), default=0)):
        out.extend(run[k] for run in runs if k < len(run))
    return out


def check_schedule(mask, p_count):
    s = deal(mask, p_count)
    runs = reference_deal(mask, p_count)
    total = int((~mask).sum())
    assert s.total == total and s.instances == p_count and s.shape == mask.shape
    # exact balance: every instance gets floor or ceil of sum U / P, the first sum U % P the ceil
    lo, hi = total // p_count, -(-total // p_count)
    assert all(lo <= c <= hi for c in s.counts), (s.counts, lo, hi)
    assert s.steps == hi
    for p in range(p_count):
        ch, y, x = s.entries(p)
        assert list(zip(ch.tolist(), y.tolist(), x.tolist())) == runs[p], p
        assert len(runs[p]) == (hi if p < total % p_count else lo)
        chans = sorted({c for c, _, _ in runs[p]})
        if chans:
            assert s.channels(p) == range(chans[0], chans[-1] + 1)
            assert list(s.slots(p)) == [c - chans[0] for c, _, _ in runs[p]]
        else:
            assert len(s.channels(p)) == 0
    assert s.max_span == max((len(s.channels(p)) for p in range(p_count)), default=0)
    # every uncompressed output exactly once, no compressed one
    n, h, w = mask.shape
    flat = s.compact_flat
    assert len(set(flat.tolist())) == total
    assert not mask.reshape(-1)[flat].any()
    # compact order, and entry k of instance p is compact output k*P + p
    order = reference_compact(runs)
    assert [(c * h * w + i * w + j) for c, i, j in order] == flat.tolist()
    for p in range(p_count):
        for k, c in enumerate(s.compact_index(p).tolist()):
            assert order[c] == runs[p][k]
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
    compact = np.array([golden[c, i, j] for c, i, j in order], np.uint8)
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
        assert s.total == 0 and s.steps == 0 and s.max_span == 0
    if kind == "empty" and p_count == 16:
        # 8*99 = 792 = 16*49 + 8: the first eight get 50, the rest 49
        assert list(s.counts) == [50] * 8 + [49] * 8


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
    assert s.counts.max() - s.counts.min() <= 1


def test_default_image_balance():
    """16 x 64x64, 16 instances: exact balance at C = 0.3 on a random and a skewed mask."""
    rng = np.random.default_rng(seed_for("schedule-default"))
    for mask in (rng.random((16, 64, 64)) < 0.3, skewed_mask(rng, (16, 64, 64), 0.3)):
        s = deal(mask, 16)
        total = int((~mask).sum())
        assert s.counts.max() == -(-total // 16) and s.counts.min() == total // 16
        assert np.array_equal(np.sort(s.compact_flat), np.flatnonzero(~mask.reshape(-1)))


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


def test_work_one_channel_per_run_when_balanced():
    """A full mask of N channels on N instances: each instance holds exactly one channel."""
    s = deal(np.zeros((4, 5, 6), bool), 4)
    assert list(s.first_channel) == [0, 1, 2, 3] and list(s.span) == [1, 1, 1, 1]


def test_span_worst_case():
    """Nearly empty channels let one run cross many: max_span tells the slot count needed."""
    mask = np.ones((16, 8, 8), bool)
    mask[:15, 0, 0] = False        # one output in each of 15 channels
    mask[15] = False               # one channel fully kept: 64 outputs
    s = deal(mask, 4)              # 79 outputs, runs of 20/20/20/19
    assert list(s.counts) == [20, 20, 20, 19]
    assert s.span[0] == 16 and s.max_span == 16


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
    s = deal(np.zeros((2, 3, 3), bool), 2)
    means = np.zeros((2, 3, 3), np.uint8)
    with pytest.raises(TypeError, match="compact_values must be a uint8 array"):
        s.expand(np.zeros(18, np.int64), means)
    with pytest.raises(ValueError, match=r"compact_values must have shape \(18,\), not \(17,\)"):
        s.expand(np.zeros(17, np.uint8), means)
    with pytest.raises(ValueError, match="means must have shape"):
        s.expand(np.zeros(18, np.uint8), np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(TypeError, match="means must be a uint8 array"):
        s.expand(np.zeros(18, np.uint8), np.zeros((2, 3, 3), np.int16))


def test_schedule_is_read_only():
    s = deal(np.zeros((2, 3, 3), bool), 2)
    assert isinstance(s, Schedule)
    with pytest.raises(ValueError):
        s.channel[0] = 1


def skewed_mask(rng, shape, ratio):
    return point_wide_mask(rng, shape, ratio, skewed=True)
