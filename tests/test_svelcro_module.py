"""S-VELCRO as a real smaller nn.Module (py_ref.svelcro.shrink): trimmed filters removed,
mean maps folded into the consuming layer, outputs equal to the masked model within the
derived float bound, fewer MACs and parameters; topologies it cannot shrink are refused."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from py_ref import data, svelcro, velcro
from py_ref.models import load_fmnist_cnn
from py_ref.velcro import VelcroError

SEED = 77


def _params(m):
    return sum(p.numel() for p in m.parameters())


def _check_same_outputs(model, stats, masks, small, x):
    """shrunk(x) within shrink_error_bound of the masked model, element by element."""
    with torch.no_grad():
        with velcro.compressed(model, stats, masks):
            y_masked = model(x)
        y_small = small(x)
    bound = svelcro.shrink_error_bound(model, stats, masks, x)
    diff = (y_small - y_masked).abs()
    worst = int(torch.argmax(diff - bound))
    assert (diff <= bound).all(), (f"diff {diff.flatten()[worst]:.3g} > bound "
                                   f"{bound.flatten()[worst]:.3g} at flat index {worst}")
    return y_masked, y_small, bound


@pytest.fixture(scope="module")
def fmnist():
    (xc, _), (xv, yv) = data.calibration_validation("all", n_calib=256)
    model = load_fmnist_cnn()
    stats = velcro.profile(model, data.batches(xc, None, 128), skip_first=True)
    return model, stats, xc, xv[:64]


@pytest.mark.parametrize("t", [0.25, 0.5, 0.75])
def test_fmnist_cnn_shrinks_to_the_masked_model(fmnist, t):
    model, stats, xc, xv = fmnist
    masks = svelcro.make_channel_masks(stats, [t] * len(stats))
    small = svelcro.shrink(model, stats, masks, xc[:1])
    y_masked, y_small, bound = _check_same_outputs(model, stats, masks, small, xv)
    # the bound is small against the logits' spread: the same decisions where they are clear
    top2 = y_masked.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * bound.max(dim=1).values
    assert clear.float().mean() > 0.9
    assert torch.equal(y_small.argmax(1)[clear], y_masked.argmax(1)[clear])
    # the trimmed filters are gone: conv k keeps C - floor(t C) filters, the next conv
    # C - floor(t C) inputs, the classifier 16 * kept features
    kept = [s.shape[0] - int(t * s.shape[0]) for s in stats]     # points conv2..conv5
    convs = [small.conv2, small.conv3.conv, small.conv4.conv, small.conv5.conv]
    assert small.conv1.out_channels == 16 and small.conv2.in_channels == 16
    assert [c.out_channels for c in convs] == kept
    assert [c.in_channels for c in convs[1:]] == kept[:-1]
    assert small.fc.in_features == 16 * kept[-1]
    # MACs per image, counted from the layers, and parameters: fewer
    macs = svelcro.count_macs(model, xv)
    small_macs = svelcro.count_macs(small, xv)
    hw = [64 * 64, 64 * 64, 64 * 64, 32 * 32, 16 * 16]
    chans = [1, 16] + kept
    want = sum(hw[i] * chans[i + 1] * chans[i] * 9 for i in range(5)) + 10 * 16 * kept[-1]
    assert small_macs == want < macs
    assert _params(small) < _params(model)
    # the original model is untouched
    assert model.conv2.out_channels == 16


def test_zero_thresholds_change_nothing(fmnist):
    model, stats, xc, xv = fmnist
    masks = svelcro.make_channel_masks(stats, [0.0] * len(stats))
    small = svelcro.shrink(model, stats, masks, xc[:1])
    with torch.no_grad():
        assert torch.equal(small(xv), model(xv))
    assert svelcro.count_macs(small, xv) == svelcro.count_macs(model, xv)


class Chain(nn.Module):
    """conv(k5, pad 2, stride 2) -> BN -> relu -> conv(k3, pad 1) -> relu -> maxpool ->
    conv(k3, pad 0) -> relu -> flatten -> linear, as an nn.Sequential inside."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(6, 5, 3), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 2 * 2, 4))

    def forward(self, x):
        return self.body(x)


@pytest.fixture
def chain():
    torch.manual_seed(SEED)
    net = Chain().eval()
    with torch.no_grad():
        bn = net.body[1]
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.1, 0.3)
    x = torch.randn(40, 3, 16, 16, generator=torch.Generator().manual_seed(SEED))
    return net, x, velcro.profile(net, [x[:20], x[20:]])


def test_sequential_chain_with_batch_norm_and_padding(chain):
    net, x, stats = chain
    masks = svelcro.make_channel_masks(stats, [0.5, 0.5, 0.4])
    small = svelcro.shrink(net, stats, masks, x[:1])
    _check_same_outputs(net, stats, masks, small, x)
    b = [small.get_submodule(f"body.{i}") if hasattr(small.body, str(i)) else None for i in range(10)]
    assert (b[0].out_channels, b[1].num_features, b[3].conv.in_channels) == (4, 4, 4)
    assert (b[3].conv.out_channels, b[6].conv.in_channels, b[6].conv.out_channels) == (3, 3, 3)
    assert b[9].in_features == 3 * 4
    # padding: the folded bias map is a full map, not a constant per output channel; at the
    # border the zero padding cuts the kernel (layer 3: 3x3, pad 1, on 8x8 mean maps)
    bm = b[3].bias_map
    assert bm.shape == (3, 8, 8)
    assert (bm.amax((1, 2)) - bm.amin((1, 2)) > 1e-3).all()
    trimmed = svelcro.trimmed_channels(masks)[0]
    w = net.body[3].weight[:, trimmed]
    mu = stats[0].mean.float()[trimmed]
    corner = (w[:, :, 1:, 1:] * mu[None, :, :2, :2]).sum((1, 2, 3))     # top-left: pad cuts
    kept_out = [c for c in range(6) if c not in svelcro.trimmed_channels(masks)[1]]
    torch.testing.assert_close(bm[:, 0, 0], corner[kept_out], rtol=1e-5, atol=1e-6)
    assert svelcro.count_macs(small, x) < svelcro.count_macs(net, x)
    assert _params(small) < _params(net)


def test_shrunk_layer_refuses_another_input_size(chain):
    net, x, stats = chain
    masks = svelcro.make_channel_masks(stats, [0.5, 0.5, 0.4])
    small = svelcro.shrink(net, stats, masks, x[:1])
    with pytest.raises(VelcroError, match="profiled input size"):
        small(torch.randn(1, 3, 32, 32))


def test_element_masks_are_refused(chain):
    net, x, stats = chain
    with pytest.raises(VelcroError, match="not whole channels"):
        svelcro.shrink(net, stats, velcro.make_masks(stats, [0.3, 0.0, 0.0]), x[:1])


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = F.relu(self.a(x))
        y = F.relu(self.b(y) + y)          # residual add: y feeds b and the add
        return self.fc(y.mean((2, 3)))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 3, padding=1)
        self.c = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        y = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], 1)
        return self.c(y).mean((1, 2, 3))


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1, groups=4)

    def forward(self, x):
        return F.relu(self.b(F.relu(self.a(x)))).mean((1, 2, 3))


@pytest.mark.parametrize("cls,needle", [
    (Residual, "feeds 2 operations (b (Conv2d), add)"),
    (Concat, "reaches cat"),
    (Grouped, "grouped convolution"),
])
def test_topologies_it_cannot_shrink_are_refused(cls, needle):
    torch.manual_seed(SEED)
    net = cls().eval()
    x = torch.randn(12, 3, 6, 6, generator=torch.Generator().manual_seed(SEED))
    stats = velcro.profile(net, [x])
    masks = svelcro.make_channel_masks(stats, [0.5] + [0.0] * (len(stats) - 1))
    with pytest.raises(VelcroError, match="cannot shrink point") as e:
        svelcro.shrink(net, stats, masks, x[:1])
    assert needle in str(e.value), str(e.value)


def test_error_bound_refuses_other_activations():
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.SiLU(), nn.Conv2d(4, 2, 1), nn.Flatten()).eval()
    x = torch.randn(6, 2, 5, 5)
    stats = velcro.profile(net, [x])
    masks = svelcro.make_channel_masks(stats, [0.5])
    small = svelcro.shrink(net, stats, masks, x[:1])      # SiLU shrinks fine ...
    assert small.get_submodule("0").out_channels == 2
    with pytest.raises(VelcroError, match=r"slopes in \[0, 1\] only, not 1 \(SiLU\)"):
        svelcro.shrink_error_bound(net, stats, masks, x)  # ... but is not in the bound's proof


def test_untraceable_model_is_refused():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3, padding=1)
            self.b = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            y = F.relu(self.a(x))
            if y.mean() > 0:               # data-dependent control flow
                y = y * 2
            return self.b(y).mean((1, 2, 3))
    torch.manual_seed(SEED)
    net = Branchy().eval()
    x = torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(SEED))
    stats = velcro.profile(net, [x])
    with pytest.raises(VelcroError, match="torch.fx cannot trace it"):
        svelcro.shrink(net, stats, svelcro.make_channel_masks(stats, [0.5]), x[:1])


def test_prelu_and_leaky_relu_chain():
    """A per-channel PReLU is sliced with its trimmed channels; LeakyReLU needs nothing."""
    torch.manual_seed(SEED)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.PReLU(8),
                        nn.Conv2d(8, 6, 3, padding=1), nn.LeakyReLU(0.1),
                        nn.Conv2d(6, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    with torch.no_grad():
        net[2].weight.copy_(torch.linspace(0.05, 0.4, 8))
    x = torch.randn(30, 3, 6, 6, generator=torch.Generator().manual_seed(SEED))
    stats = velcro.profile(net, [x])
    masks = svelcro.make_channel_masks(stats, [0.5, 0.5])
    small = svelcro.shrink(net, stats, masks, x[:1])
    _check_same_outputs(net, stats, masks, small, x)
    kept = [c for c in range(8) if c not in svelcro.trimmed_channels(masks)[0]]
    assert torch.equal(small.get_submodule("2").weight, net[2].weight[kept])
    assert small.get_submodule("5").conv.in_channels == 3
