"""S-VELCRO: whole output channels with the lowest mean variance are trimmed to their mean map."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from py_ref import svelcro, velcro
from py_ref.velcro import VelcroError

SEED = 99


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = F.relu(self.a(x))
        x = F.relu(self.b(x))
        return self.fc(x.mean((2, 3)))


@pytest.fixture
def setup():
    torch.manual_seed(SEED)
    net = Net().eval()
    with torch.no_grad():   # make channel 2 of point 0 nearly constant across images
        net.a.weight[2] *= 1e-3
        net.a.bias[2] = 1.0
    x = torch.randn(24, 3, 6, 6, generator=torch.Generator().manual_seed(SEED))
    return net, x, velcro.profile(net, [x])


def test_channel_masks_are_whole_channels_with_lowest_score(setup):
    net, x, stats = setup
    masks = svelcro.make_channel_masks(stats, [0.25, 0.5])
    for s, m, t in zip(stats, masks, [0.25, 0.5]):
        per = m.reshape(m.shape[0], -1)
        assert bool((per.all(1) | ~per.any(1)).all())          # all-or-nothing per channel
        k = math.floor(t * s.shape[0])
        assert int(per.all(1).sum()) == k
        sc = svelcro.channel_scores(s)
        assert sc[per.all(1)].max() <= sc[~per.all(1)].min()
    assert 2 in svelcro.trimmed_channels(masks)[0]              # the near-constant filter
    c = velcro.compression_ratio(stats, masks)
    assert c.elements == pytest.approx((2 * 36 + 3 * 36) / (8 * 36 + 6 * 36))


def test_trimmed_channel_outputs_mean_map(setup):
    net, x, stats = setup
    masks = svelcro.make_channel_masks(stats, [0.25, 0.0])
    with torch.no_grad(), velcro.compressed(net, stats, masks):
        got = velcro.capture_points(net, x[:4])
    for c in svelcro.trimmed_channels(masks)[0]:
        assert torch.allclose(got[0][1][:, c], stats[0].mean[c].float().expand(4, -1, -1))
    r = velcro.evaluate(net, [(x, torch.zeros(24, dtype=torch.long))], stats, masks)
    assert "top1_compressed" in r


def test_bad_thresholds(setup):
    _, _, stats = setup
    with pytest.raises(VelcroError):
        svelcro.make_channel_masks(stats, [0.5])
    with pytest.raises(VelcroError):
        svelcro.make_channel_masks(stats, [0.5, 1.5])
