"""VELCRO Algorithm 1 (py_ref/velcro.py): statistics, selection, merging, hooks, substitution."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from py_ref import velcro
from py_ref.velcro import VelcroError

SEED = 1234


class Toy(nn.Module):
    """conv -> module ReLU; conv -> the same ReLU module again; conv -> functional relu;
    conv -> ReLU6 (hardtanh); then a linear head with a 2-D relu that is not a point."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 3, 1)
        self.c4 = nn.Conv2d(3, 3, 3, padding=1, groups=3)
        self.relu = nn.ReLU(inplace=True)
        self.act6 = nn.ReLU6()
        self.fc = nn.Linear(3 * 5 * 5, 4)
        nn.init.constant_(self.c4.bias, 0.3)   # keep the last point alive at this seed

    def forward(self, x):
        x = self.relu(self.c1(x))
        x = self.relu(self.c2(x))
        x = F.relu(self.c3(x))
        x = self.act6(self.c4(x))
        return self.fc(F.relu(x.flatten(1)))   # a relu on a 2-D tensor is not a point


def _manual(model, x):
    """The four activation tensors computed by hand, without the interceptor."""
    a1 = F.relu(model.c1(x))
    a2 = F.relu(model.c2(a1))
    a3 = F.relu(model.c3(a2))
    a4 = F.hardtanh(model.c4(a3), 0, 6)
    return [a1, a2, a3, a4]


@pytest.fixture
def toy():
    torch.manual_seed(SEED)
    return Toy().eval()


def _data(n, seed=SEED):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, 5, 5, generator=g)


def test_points_found_with_names_and_macs(toy):
    stats = velcro.profile(toy, [_data(3)])
    assert [s.name for s in stats] == ["relu", "relu#2", "c3.relu", "act6"]
    assert [s.shape for s in stats] == [(4, 5, 5), (4, 5, 5), (3, 5, 5), (3, 5, 5)]
    assert [s.macs for s in stats] == [2 * 9, 4 * 9, 4, 9]   # depthwise: 1 channel x 3x3


def _direct(model, batches):
    """Float64 statistics of exactly the activations the profile sees (captured per batch, so
    float32 differences between batch sizes in the model itself are not counted as profile
    error): [(mean, var, mean|x|)] per point."""
    caps = [velcro.capture_points(model, b) for b in batches]
    out = []
    for i in range(len(caps[0])):
        a = torch.cat([c[i][1] for c in caps]).double()
        out.append((a.mean(0), a.var(0, unbiased=False), a.abs().mean(0)))
    return out


def _assert_within_bound(s, direct, batch, factor=1.0):
    """|profile - exact| within ``factor`` x velcro.profile_error_bound, element by element."""
    mean, var, mean_abs = direct
    tol_mean, tol_var = velcro.profile_error_bound(var, mean_abs, batch)
    err_mean, err_var = (s.mean - mean).abs(), (s.var - var).abs()
    worst = int(torch.argmax(err_var - factor * tol_var))
    assert (err_var <= factor * tol_var).all(), (
        f"{s.name}: var error {err_var.flatten()[worst]:.3g} > bound "
        f"{factor * tol_var.flatten()[worst]:.3g} at flat index {worst}")
    assert (err_mean <= factor * tol_mean).all(), f"{s.name}: mean error beyond its bound"


def test_profile_matches_direct_statistics(toy):
    x = _data(37)
    batches = [x[:10], x[10:11], x[11:]]   # uneven, one of a single image
    stats = velcro.profile(toy, batches, count_zeros=True)
    with torch.no_grad():
        manual = _manual(toy, x)
    for s, d, a in zip(stats, _direct(toy, batches), manual):
        assert s.count == 37
        assert s.mean.dtype == torch.float64 and s.var.dtype == torch.float64
        _assert_within_bound(s, d, batch=26)
        # the interceptor sees the same activations as the hand-written forward pass
        torch.testing.assert_close(d[0], a.double().mean(0), rtol=1e-5, atol=1e-6)
    caps = [velcro.capture_points(toy, b) for b in batches]
    for i, s in enumerate(stats):
        assert torch.equal(s.zeros, sum((c[i][1] == 0).sum(0) for c in caps))


class Elementwise(nn.Module):
    """relu(scale * x + offset) on a 4-D map: bit-identical whatever the batch split, so shard
    profiles can be compared with the whole one through the error bound alone."""

    def __init__(self, scale=1.0, offset=0.0):
        super().__init__()
        self.scale, self.offset = scale, offset

    def forward(self, x):
        return F.relu(self.scale * x + self.offset)


def test_merge_of_shards_equals_profile_of_union():
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(50, 3, 4, 4, generator=g).abs() * 0.21 + 0.1
    model = Elementwise()
    whole = velcro.profile(model, [x])[0]
    merged = velcro.merge_profiles(velcro.profile(model, [x[:13]]), velcro.profile(model, [x[13:]]))[0]
    assert merged.count == 50
    d = _direct(model, [x])[0]
    _assert_within_bound(whole, d, batch=50)
    _assert_within_bound(merged, d, batch=37)
    tol_mean, tol_var = velcro.profile_error_bound(d[1], d[2], 50)   # both within it: differ by <= 2x
    assert ((merged.var - whole.var).abs() <= 2 * tol_var).all()
    assert ((merged.mean - whole.mean).abs() <= 2 * tol_mean).all()


@pytest.mark.parametrize("first_batch", [1, 8])
def test_adversarial_first_image(first_batch):
    """An outlier first image (far from the mean, relative to the spread) must not cost
    accuracy: the old first-image shift lost ~(shift - mean)^2 / var, here 1e6 x."""
    g = torch.Generator().manual_seed(SEED)
    x = 0.095 + 0.21 * torch.randn(600, 2, 3, 3, generator=g)
    x[0] = 200.0                               # ~1000 standard deviations away
    model = Elementwise(offset=5.0)            # stays positive: the relu is the identity
    batches = [x[:first_batch]] + list(x[first_batch:].split(128))
    s = velcro.profile(model, batches)[0]
    _assert_within_bound(s, _direct(model, batches)[0], batch=128)
    # and for the 599 well-behaved images alone
    s2 = velcro.profile(model, [x[1:2]] + list(x[2:].split(128)))[0]
    d2 = _direct(model, [x[1:]])[0]
    _assert_within_bound(s2, d2, batch=128)
    assert ((s2.var - d2[1]).abs() / d2[1]).max() < 2 * velcro.gamma(130) * (1 + 1e-6)


def test_error_bound_values():
    """The stated bound: 2 gamma_{b+2} relative to the variance when the mean is moderate."""
    var, mean_abs = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0])
    tol_mean, tol_var = velcro.profile_error_bound(var, mean_abs, 128)
    assert tol_var[0] == pytest.approx(2 * velcro.gamma(130) * (1 + velcro.gamma(128) ** 2))
    assert tol_var[1] == 0 and tol_mean[1] == 0      # a dead element is exact
    assert 1.5e-5 < float(tol_var[0]) < 1.6e-5
    with pytest.raises(VelcroError):
        velcro.gamma(2 ** 24)


def test_small_variance_on_large_mean_is_exact():
    """The case VELCRO cares about: a nearly constant element far from zero."""
    class Const(nn.Module):
        def forward(self, x):
            return F.relu(1000.0 + 1e-3 * x)
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(64, 1, 2, 2, generator=g)
    batches = [x[:20], x[20:]]
    s = velcro.profile(Const(), batches)[0]
    # against the float32 activations themselves: within the derived bound
    _assert_within_bound(s, _direct(Const(), batches)[0], batch=44)


def test_skip_first(toy):
    stats = velcro.profile(toy, [_data(4)], skip_first=True)
    assert [s.name for s in stats] == ["relu#2", "c3.relu", "act6"]
    assert stats[0].index == 1


def test_percentile_selection_picks_lowest_variances(toy):
    stats = velcro.profile(toy, [_data(40)])
    t = [0.0, 0.25, 0.5, 0.99]
    masks = velcro.make_masks(stats, t)
    for s, m, ti in zip(stats, masks, t):
        assert m.shape == s.mean.shape and m.dtype == torch.bool
        assert int(m.sum()) == math.floor(ti * s.numel + 1e-9)
        if 0 < m.sum() < m.numel():
            assert s.var[m].max() <= s.var[~m].min()


def test_select_lowest_ties_exact_count():
    scores = torch.zeros(10)
    m = velcro.select_lowest(scores, 0.3)
    assert m.tolist() == [True] * 3 + [False] * 7


def test_compression_ratio_elements_and_macs(toy):
    stats = velcro.profile(toy, [_data(8)])
    masks = velcro.make_masks(stats, [0.5, 0.0, 0.0, 0.0])
    c = velcro.compression_ratio(stats, masks)
    total = 100 + 100 + 75 + 75
    assert c.compressed == 50 and c.total == total
    assert c.elements == pytest.approx(50 / total)
    assert c.macs == pytest.approx(50 * 18 / (100 * 18 + 100 * 36 + 75 * 4 + 75 * 9))


@pytest.mark.parametrize("bad,msg", [([0.1] * 3, "3 entries"), ([0.1, 0.1, 1.0, 0.1], "0 <= T < 1"),
                                     ([0.1, -0.1, 0.1, 0.1], "0 <= T < 1"),
                                     ([0.1, float("nan"), 0.1, 0.1], "0 <= T < 1")])
def test_bad_thresholds(toy, bad, msg):
    stats = velcro.profile(toy, [_data(4)])
    with pytest.raises(VelcroError, match=msg):
        velcro.make_masks(stats, bad)


def test_nan_activations_rejected(toy):
    x = _data(4)
    x[1, 0, 2, 2] = float("nan")
    with pytest.raises(VelcroError, match="non-finite"):
        velcro.profile(toy, [x])


def test_compressed_substitutes_means_and_restores(toy):
    x = _data(30)
    stats = velcro.profile(toy, [x], skip_first=True)
    masks = velcro.make_masks(stats, [0.5, 0.4, 0.3])
    before = [a for _, a in velcro.capture_points(toy, x[:5])]
    with velcro.compressed(toy, stats, masks):
        got = velcro.capture_points(toy, x[:5])
        y_c = toy(x[:5])
    # first point untouched, every masked element equals its mean
    assert torch.equal(got[0][1], before[0])
    for (name, a), s, m in zip(got[1:], stats, masks):
        assert name == s.name
        assert torch.allclose(a[:, m], s.mean.float()[m].expand(5, -1))
    # the second point's unmasked elements are the true activations (later ones see changed inputs)
    assert torch.equal(got[1][1][:, ~masks[0]], before[1][:, ~masks[0]])
    # leaving the block restores the original model
    after = [a for _, a in velcro.capture_points(toy, x[:5])]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert not torch.equal(y_c, toy(x[:5]))


def test_zero_threshold_is_identity(toy):
    x = _data(10)
    stats = velcro.profile(toy, [x])
    masks = velcro.make_masks(stats, [0.0] * 4)
    with velcro.compressed(toy, stats, masks):
        y = toy(x)
    assert torch.equal(y, toy(x))


def test_evaluate_reports_both(toy):
    x = _data(20)
    y = torch.randint(0, 4, (20,), generator=torch.Generator().manual_seed(SEED))
    stats = velcro.profile(toy, [x])
    r = velcro.evaluate(toy, [(x, y)], stats, velcro.make_masks(stats, [0.2] * 4))
    assert r["images"] == 20 and 0 <= r["top1"] <= 1 and 0 <= r["top1_compressed"] <= 1


# --- torchvision architectures: reused module ReLU, functional relu, ReLU6 as hardtanh ---

@pytest.fixture(scope="module")
def tv():
    from py_ref.tv import import_torchvision
    return import_torchvision()


def test_resnet18_reused_relu(tv):
    torch.manual_seed(SEED)
    m = tv.models.resnet18().eval()
    x = torch.randn(2, 3, 64, 64)
    stats = velcro.profile(m, [x])
    names = [s.name for s in stats]
    assert len(names) == 17
    assert names[:3] == ["relu", "layer1.0.relu", "layer1.0.relu#2"]
    assert len(velcro.profile(m, [x], skip_first=True)) == 16
    # substitution through the in-place, twice-called ReLU module changes the output
    masks = velcro.make_masks(stats, [0.5] * 17)
    with torch.no_grad():
        y0 = m(x)
        with velcro.compressed(m, stats, masks):
            got = velcro.capture_points(m, x)
        assert torch.equal(m(x), y0)
    s2, m2 = stats[2], masks[2]
    assert got[2][0] == "layer1.0.relu#2"
    assert torch.allclose(got[2][1][:, m2], s2.mean.float()[m2].expand(2, -1))


def test_googlenet_functional_relu(tv):
    torch.manual_seed(SEED)
    m = tv.models.googlenet(aux_logits=False, init_weights=True).eval()
    x = torch.randn(2, 3, 64, 64)
    stats = velcro.profile(m, [x], skip_first=True)
    assert len(stats) == 56
    assert stats[0].name == "conv2.relu" and stats[2].name == "inception3a.branch1.relu"
    masks = velcro.make_masks(stats, [0.9] * 56)
    with torch.no_grad(), velcro.compressed(m, stats, masks):
        got = velcro.capture_points(m, x)
    for (name, a), s, mk in zip(got[1:], stats, masks):
        assert torch.allclose(a[:, mk], s.mean.float()[mk].expand(2, -1))


def test_mobilenet_v2_relu6_as_hardtanh(tv):
    torch.manual_seed(SEED)
    m = tv.models.mobilenet_v2().eval()
    stats = velcro.profile(m, [torch.randn(2, 3, 64, 64)])
    assert len(stats) == 35
    assert stats[0].name == "features.0.2" and stats[-1].name == "features.18.2"
    assert stats[1].macs == 9   # depthwise 3x3




# ---------------------------------------------------------------------------- refusing bad input

@pytest.mark.parametrize("fraction,exc,msg", [
    (1.0, VelcroError, "0 <= T < 1"), (-0.1, VelcroError, "0 <= T < 1"), (float("nan"), VelcroError, "0 <= T < 1"),
    (float("inf"), VelcroError, "0 <= T < 1"), ("0.3", TypeError, "must be a number"),
    (None, TypeError, "must be a number"), (True, TypeError, "must be a number"),
])
def test_select_lowest_refuses_bad_fractions(fraction, exc, msg):
    with pytest.raises(exc, match=msg):
        velcro.select_lowest(torch.arange(10.0), fraction)


def test_select_lowest_refuses_bad_scores_and_accepts_numbers():
    with pytest.raises(VelcroError, match="NaN"):
        velcro.select_lowest(torch.tensor([0.1, float("nan"), 0.3]), 0.5)
    with pytest.raises(TypeError, match="torch.Tensor"):
        velcro.select_lowest([0.1, 0.2], 0.5)
    import numpy as np
    for f in (0.5, np.float32(0.5), torch.tensor(0.5), 0):
        assert int(velcro.select_lowest(torch.arange(10.0), f).sum()) == int(float(f) * 10)


@pytest.mark.parametrize("bad,msg", [(["abc", 0.1, 0.1, 0.1], "threshold 0 must be a number, not 'abc'"),
                                     ([0.1, None, 0.1, 0.1], "threshold 1 must be a number, not None"),
                                     ([0.1, 0.1, [0.2], 0.1], "threshold 2 must be a number"),
                                     ([0.1, 0.1, 0.1, True], "threshold 3 must be a number")])
def test_check_thresholds_names_a_non_number(toy, bad, msg):
    stats = velcro.profile(toy, [_data(4)])
    with pytest.raises(VelcroError, match=msg.replace("[", r"\[")):
        velcro.make_masks(stats, bad)
    with pytest.raises(TypeError, match="sequence of numbers"):
        velcro.check_thresholds(stats, "0.1,0.1,0.1,0.1")
    with pytest.raises(TypeError, match="sequence of numbers"):
        velcro.check_thresholds(stats, 0.1)


def test_compression_ratio_refuses_masks_that_do_not_fit(toy):
    stats = velcro.profile(toy, [_data(4)], count_zeros=True)
    masks = velcro.make_masks(stats, [0.2] * 4)
    with pytest.raises(VelcroError, match="3 masks for 4 points"):
        velcro.compression_ratio(stats, masks[:3])
    wrong = masks[:1] + [masks[1][:2]] + masks[2:]
    with pytest.raises(VelcroError, match=r"mask 1 \(point 'relu#2'\) has shape \(2, 5, 5\), expected \(4, 5, 5\)"):
        velcro.compression_ratio(stats, wrong)
    for dtype in (torch.float32, torch.uint8):
        as_num = masks[:3] + [masks[3].to(dtype)]
        with pytest.raises(VelcroError, match=f"mask 3 .* must be bool, not {dtype}"):
            velcro.compression_ratio(stats, as_num)
        with pytest.raises(VelcroError, match="must be bool"):
            velcro.zero_share(stats, as_num)
        with pytest.raises(VelcroError, match="must be bool"):
            with velcro.compressed(toy, stats, as_num):
                pass
    with pytest.raises(TypeError, match="mask 0 must be a torch.Tensor"):
        velcro.compression_ratio(stats, [m.numpy() for m in masks])
    with pytest.raises(VelcroError, match="no activation elements"):
        velcro.compression_ratio([], [])
    no_zeros = velcro.profile(toy, [_data(4)])
    with pytest.raises(VelcroError, match="count_zeros=True"):
        velcro.zero_share(no_zeros, masks)
