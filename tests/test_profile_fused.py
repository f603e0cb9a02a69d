"""velcro.profile(fused=True): the torch.compile'd per-point update is the same arithmetic as
the eager one, so the same derived error bound (velcro.profile_error_bound) holds, on the
cases test_velcro.py uses to test it (uneven batches, an outlier first image, a tiny
variance on a large mean), and the zero counts are exact."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from py_ref import velcro
from test_velcro import _assert_within_bound, _direct

SEED = 1234


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(SEED)
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        return F.relu6(self.c2(F.relu(self.c1(x)))).mean((1, 2, 3))


class Elementwise(nn.Module):
    def __init__(self, scale=1.0, offset=0.0):
        super().__init__()
        self.scale, self.offset = scale, offset

    def forward(self, x):
        return F.relu(self.scale * x + self.offset)


def test_fused_profile_within_the_bound_with_exact_zero_counts():
    model = Net().eval()
    x = torch.randn(37, 2, 5, 5, generator=torch.Generator().manual_seed(SEED))
    batches = [x[:10], x[10:11], x[11:]]
    stats = velcro.profile(model, batches, count_zeros=True, fused=True)
    eager = velcro.profile(model, batches, count_zeros=True)
    for s, e, d in zip(stats, eager, _direct(model, batches)):
        assert s.count == 37 and s.mean.dtype == torch.float64
        _assert_within_bound(s, d, batch=26)
        assert torch.equal(s.zeros, e.zeros)
    caps = [velcro.capture_points(model, b) for b in batches]
    for i, s in enumerate(stats):
        assert torch.equal(s.zeros, sum((c[i][1] == 0).sum(0) for c in caps))


@pytest.mark.parametrize("first_batch", [1, 8])
def test_fused_adversarial_first_image(first_batch):
    g = torch.Generator().manual_seed(SEED)
    x = 0.095 + 0.21 * torch.randn(600, 2, 3, 3, generator=g)
    x[0] = 200.0
    model = Elementwise(offset=5.0)
    batches = [x[:first_batch]] + list(x[first_batch:].split(128))
    s = velcro.profile(model, batches, fused=True)[0]
    _assert_within_bound(s, _direct(model, batches)[0], batch=128)


def test_fused_small_variance_on_large_mean():
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(64, 1, 2, 2, generator=g)
    model = Elementwise(scale=1e-3, offset=1000.0)
    batches = [x[:20], x[20:]]
    s = velcro.profile(model, batches, fused=True)[0]
    _assert_within_bound(s, _direct(model, batches)[0], batch=44)
