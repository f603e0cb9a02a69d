"""Issue 11, metrics side: task-restricted evaluation (velcro.evaluate), Table 4 both ways,
the paired tests (py_ref.significance) and the threshold search (py_ref.search)."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import seed_for
from py_ref import search, significance, velcro
from py_ref.velcro import PointStats, VelcroError


class Fixed(nn.Module):
    """Returns its input as the logits: tests choose every prediction by hand."""

    def forward(self, x):
        return x


class Net(nn.Module):
    """conv -> relu -> conv -> relu -> linear head over 3 classes (two activation points)."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 3, 3, padding=1)
        self.c2 = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 4 * 4, 3)

    def forward(self, x):
        return self.fc(F.relu(self.c2(F.relu(self.c1(x)))).flatten(1))


# ---------------------------------------------------------------------------- evaluate

def test_task_restricted_metrics_by_hand():
    # task = classes {0, 2} of 3.  Rows: (logits, label) -> all-class right?, task right?, out of task?
    logits = torch.tensor([[0.1, 0.9, 0.5],    # label 2: argmax 1 (wrong, outside), task argmax 2 (right)
                           [0.8, 0.9, 0.1],    # label 0: argmax 1 (wrong, outside), task argmax 0 (right)
                           [0.2, 0.1, 0.7],    # label 2: right, right, inside
                           [0.6, 0.1, 0.7]])   # label 0: argmax 2 (wrong, inside), task argmax 2 (wrong)
    y = torch.tensor([2, 0, 2, 0])
    r = velcro.evaluate(Fixed(), [(logits[:2], y[:2]), (logits[2:], y[2:])], task_classes=[2, 0],
                        per_image=True)
    assert r["images"] == 4
    assert r["top1"] == 1 / 4 and r["top1_task"] == 3 / 4 and r["out_of_task"] == 2 / 4
    assert r["correct"].tolist() == [False, False, True, False]
    assert r["correct_task"].tolist() == [True, True, True, False]
    assert r["predicted_out_of_task"].tolist() == [True, True, False, False]
    # without task_classes only the all-class numbers, as before
    plain = velcro.evaluate(Fixed(), [(logits, y)])
    assert plain == {"images": 4, "top1": 0.25}


@pytest.mark.parametrize("classes, msg", [([], "empty"), ([0, 0], "twice"), ([0, 3], "out of range"),
                                          ([-1], "out of range"), ([0.5], "not an integer")])
def test_bad_task_classes_refused(classes, msg):
    x = torch.zeros(2, 3)
    with pytest.raises(VelcroError, match=msg):
        velcro.evaluate(Fixed(), [(x, torch.tensor([0, 0]))], task_classes=classes)


def test_label_outside_task_and_original_without_masks_refused():
    x = torch.zeros(2, 3)
    with pytest.raises(VelcroError, match="label 1 is not one of the task classes"):
        velcro.evaluate(Fixed(), [(x, torch.tensor([0, 1]))], task_classes=[0, 2])
    with pytest.raises(VelcroError, match="nothing to evaluate"):
        velcro.evaluate(Fixed(), [(x, torch.tensor([0, 0]))], original=False)


def test_compressed_task_metrics_match_a_manual_forward():
    seed = seed_for("compressed_task_metrics")
    torch.manual_seed(seed)
    net = Net().eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 1, 4, 4, generator=g)
    y = torch.randint(0, 2, (40,), generator=g) * 2          # labels in the task {0, 2}
    stats = velcro.profile(net, [x[:20]])
    masks = velcro.make_masks(stats, [0.5, 0.5])
    r = velcro.evaluate(net, [(x, y)], stats, masks, task_classes=[0, 2], per_image=True)
    with torch.no_grad(), velcro.compressed(net, stats, masks):
        logits = net(x)
    task = torch.tensor([0, 2])
    want_task = task[logits[:, task].argmax(1)] == y
    assert torch.equal(r["correct_task_compressed"], want_task)
    assert r["top1_task_compressed"] == int(want_task.sum()) / 40
    assert r["out_of_task_compressed"] == int((logits.argmax(1) == 1).sum()) / 40
    only = velcro.evaluate(net, [(x, y)], stats, masks, task_classes=[0, 2], per_image=True, original=False)
    assert "top1" not in only and torch.equal(only["correct_task_compressed"], want_task)


# ---------------------------------------------------------------------------- Table 4

def _point(mean, zeros, count):
    mean = torch.tensor(mean, dtype=torch.float64)
    return PointStats("p", 0, mean, torch.zeros_like(mean), count, 1, torch.tensor(zeros))


def test_table4_both_readings():
    # 4 elements over 10 images: element 0 always 0 (mean 0), element 1 zero on 5 images, 2 and 3 never
    s = _point([0.0, 0.5, 1.0, 2.0], [10, 5, 0, 0], 10)
    m = torch.tensor([True, True, True, False])
    assert velcro.zero_share([s], [m]) == 15 / 30      # 15 zero values of 3 elements x 10 images
    assert velcro.zero_mean_share([s], [m]) == 1 / 3   # 1 of 3 compressed elements has mean 0
    assert math.isnan(velcro.zero_mean_share([s], [torch.zeros(4, dtype=torch.bool)]))


# ---------------------------------------------------------------------------- significance

def test_exact_mcnemar_by_hand():
    # b = 2 lost, c = 9 gained: 2 * (C(11,0) + C(11,1) + C(11,2)) / 2^11 = 134 / 2048
    assert significance.mcnemar_p(2, 9) == pytest.approx(134 / 2048, rel=1e-12)
    assert significance.mcnemar_p(9, 2) == significance.mcnemar_p(2, 9)
    assert significance.mcnemar_p(5, 5) == 1.0 and significance.mcnemar_p(0, 0) == 1.0
    for n in (1, 7, 40, 301):
        for k in (0, n // 3, n // 2):
            exact = Fraction(2 * sum(math.comb(n, i) for i in range(min(k, n - k) + 1)), 2 ** n)
            assert significance.binom_two_sided(k, n) == pytest.approx(float(min(exact, 1)), rel=1e-9)


def test_chi_square_branch_approximates_the_exact_test():
    # large discordant counts: the continuity-corrected chi-square is within 0.01 of the exact p
    for b, c in ((200, 240), (100, 140), (60, 90)):
        assert not (b + c < significance.EXACT_BELOW)
        assert significance.mcnemar_p(b, c) == pytest.approx(significance.mcnemar_p(b, c, exact=True), abs=0.01)
    # the switch: 24 discordant images use the exact test
    assert significance.mcnemar_p(4, 20) == significance.binom_two_sided(4, 24)


def test_wilson_matches_newcombe_1998_example():
    lo, hi = significance.wilson(81, 263)     # Newcombe (1998), Stat Med 17:857, 0.2553 - 0.3662
    assert lo == pytest.approx(0.2553, abs=5e-5) and hi == pytest.approx(0.3662, abs=5e-5)
    assert significance.wilson(0, 10)[0] == 0.0 and significance.wilson(10, 10)[1] == 1.0


def _wilson_closed_form(k, n, z=significance.Z95):
    """The score interval as Wilson (1927) wrote it: what py_ref.significance computed by hand
    before it used scipy."""
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z / den * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def test_scipy_backed_functions_match_the_closed_forms():
    """binomtest's p and Wilson interval, chi2.sf: the same numbers as the formulas, on tables
    from 1 to 10,000 images (exact test: the binomial tail by exact fractions)."""
    from scipy import stats
    assert significance.Z95 == pytest.approx(float(stats.norm.ppf(0.975)), rel=1e-15)
    for k, n in ((0, 1), (1, 1), (3, 20), (10, 20), (81, 263), (0, 500), (499, 500), (4321, 10000)):
        lo, hi = significance.wilson(k, n)
        want = _wilson_closed_form(k, n)
        assert lo == pytest.approx(want[0], abs=1e-12) and hi == pytest.approx(want[1], abs=1e-12)
        z = 2.5758293035489004                                      # 99 %
        assert significance.wilson(k, n, z) == pytest.approx(_wilson_closed_form(k, n, z), abs=1e-12)
    for b, c in ((2, 9), (0, 24), (12, 12), (3, 1), (17, 6)):
        n = b + c
        tail = Fraction(sum(math.comb(n, i) for i in range(min(b, c) + 1)), 2 ** n)
        assert significance.mcnemar_p(b, c) == pytest.approx(float(min(2 * tail, 1)), rel=1e-12)
    for b, c in ((20, 40), (100, 140), (300, 310), (0, 30)):
        stat = max(abs(b - c) - 1, 0) ** 2 / (b + c)
        assert significance.mcnemar_p(b, c) == pytest.approx(math.erfc(math.sqrt(stat / 2)),
                                                             rel=1e-12)


def test_newcombe_paired_known_table():
    """Newcombe (1998) method 10 on a table worked by hand from the closed-form Wilson bounds."""
    a, b, c, d = 40, 12, 5, 43
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = _wilson_closed_form(a + b, n)
    l2, u2 = _wilson_closed_form(a + c, n)
    phi = (a * d - b * c) / math.sqrt((a + b) * (c + d) * (a + c) * (b + d))
    lo = p2 - p1 - math.sqrt((p2 - l2) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1) + (u1 - p1) ** 2)
    hi = p2 - p1 + math.sqrt((u2 - p2) ** 2 - 2 * phi * (u2 - p2) * (p1 - l1) + (p1 - l1) ** 2)
    assert significance.newcombe_paired(a, b, c, d) == pytest.approx((lo, hi), abs=1e-12)


def test_newcombe_paired_coverage():
    """Method 10's 95 % interval covers the true difference in about 95 % of simulated tables."""
    seed = seed_for("newcombe_coverage")
    rng = np.random.default_rng(seed)
    probs = np.array([0.80, 0.04, 0.08, 0.08])     # a, b, c, d: true difference (c - b) = 0.04
    hits, trials = 0, 1500
    for _ in range(trials):
        a, b, c, d = rng.multinomial(200, probs)
        lo, hi = significance.newcombe_paired(int(a), int(b), int(c), int(d))
        assert lo <= (c - b) / 200 <= hi
        hits += lo <= 0.04 <= hi
    # binomial sd of the coverage at 0.95 over 1500 trials is 0.0056; 4 sd below 0.95 is 0.927
    assert hits / trials >= 0.927


def test_compare_counts_and_lossless():
    base = [True] * 90 + [False] * 10
    worse = [False] * 10 + [True] * 80 + [False] * 10    # 10 lost, 0 gained: p = 2 / 1024
    t = significance.compare(base, worse)
    assert (t.lost, t.gained, t.images) == (10, 0, 100) and t.exact
    assert t.p == pytest.approx(2 / 1024) and t.worse and not t.lossless
    assert t.diff == pytest.approx(-0.10) and t.ci[0] < -0.10 < t.ci[1] < 0
    same = significance.compare(base, base)
    assert same.lossless and same.p == 1.0 and same.ci[0] <= 0 <= same.ci[1]
    with pytest.raises(ValueError, match="100 and 99"):
        significance.compare(base, base[:99])
    with pytest.raises(ValueError, match="no images"):
        significance.compare([], [])


# ---------------------------------------------------------------------------- search

def _sized_stats(sizes):
    return [PointStats(f"p{i}", i, torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64), 1)
            for i, n in enumerate(sizes)]


def test_search_finds_each_points_limit():
    """A score that stays at the baseline while every point's T is within its limit: the
    uniform step stops at the smallest limit, the greedy steps raise each point to its own."""
    limits = [0.30, 0.50, 0.20, 0.40]
    stats = _sized_stats([64, 32, 128, 16])
    calls = []

    def score(t):
        calls.append(tuple(t))
        return 0.9 if all(v <= lim + 1e-9 for v, lim in zip(t, limits)) else 0.8
    r = search.search_thresholds(stats, score, max_evals=100)
    assert r.uniform == 0.20 and r.base == 0.9 and r.score == 0.9
    assert r.thresholds == pytest.approx(tuple(limits))
    assert r.evals == len(calls) == 1 + len(search.DEFAULT_GRID) + len(r.history)
    # the first greedy step tries the largest point (index 2)
    assert r.history[0][0] == pytest.approx((0.20, 0.20, 0.25, 0.20))
    none = search.search_thresholds(stats, score, max_evals=0)
    assert none.thresholds == (0.20,) * 4 and len(none.history) == 0
    strict = search.search_thresholds(stats, lambda t: 0.9 - sum(t), max_evals=5)
    assert strict.thresholds == (0.0,) * 4 and strict.uniform == 0.0


def test_search_refuses_bad_arguments():
    stats = _sized_stats([4])
    with pytest.raises(VelcroError, match="no activation points"):
        search.search_thresholds([], lambda t: 1.0)
    with pytest.raises(VelcroError, match="step"):
        search.search_thresholds(stats, lambda t: 1.0, step=0)
    with pytest.raises(VelcroError, match="grid"):
        search.search_thresholds(stats, lambda t: 1.0, grid=[1.2])


def test_tuning_score_on_a_model():
    seed = seed_for("tuning_score")
    torch.manual_seed(seed)
    net = Net().eval()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(30, 1, 4, 4, generator=g)
    y = torch.randint(0, 3, (30,), generator=g)
    stats = velcro.profile(net, [x])
    score = search.tuning_score(net, [(x, y)], stats)
    assert score([0.0, 0.0]) == velcro.evaluate(net, [(x, y)])["top1"]
    r = velcro.evaluate(net, [(x, y)], stats, velcro.make_masks(stats, [0.5, 0.25]))
    assert score([0.5, 0.25]) == r["top1_compressed"]
    with pytest.raises(VelcroError, match="task classes"):
        search.tuning_score(net, [(x, y)], stats, task_classes=[0])
    with pytest.raises(VelcroError, match="no tuning images"):
        search.tuning_score(net, [], stats)


# ---------------------------------------------------------------------------- MAC-weighted C

def test_network_macs_counts_convolutions_without_a_point():
    torch.manual_seed(seed_for("network_macs"))
    net = Net().eval()
    x = torch.randn(2, 1, 4, 4)
    # c1: 16 positions x 3 channels x 9 MACs = 432; c2: 16 x 3 x 27 = 1296
    assert velcro.conv_macs(net, x) == 432 + 1296
    stats = velcro.profile(net, [x], skip_first=True)          # only c2's point: 48 elements, 27 MACs each
    assert [s.macs for s in stats] == [27]
    c = velcro.compression_ratio(stats, velcro.make_masks(stats, [0.5]), network_macs=1728)
    assert (c.elements, c.macs, c.network_macs) == (0.5, 0.5, 24 * 27 / 1728)
    assert velcro.compression_ratio(stats, velcro.make_masks(stats, [0.5])).network_macs is None
    with pytest.raises(VelcroError, match="below"):
        velcro.compression_ratio(stats, velcro.make_masks(stats, [0.5]), network_macs=1000)
