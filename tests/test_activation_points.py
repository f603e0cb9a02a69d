"""Every elementwise activation after a convolution is an activation point (profiled and
substituted by its mean), in every spelling; what VELCRO cannot make a point of is refused
by name (py_ref/velcro.py, _ActivationMode)."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from py_ref import velcro
from py_ref.velcro import VelcroError

SEED = 4321


def _inplace(method, *a, **k):
    """A tensor method called for its side effect only (the result is dropped), so the
    substitution must reach the tensor itself."""
    def act(y):
        getattr(y, method)(*a, **k)
        return y
    return act


# (label, activation: a module or a callable, canonical function name)
CASES = [
    ("nn.ReLU", nn.ReLU(), "relu"), ("nn.ReLU(inplace)", nn.ReLU(inplace=True), "relu"),
    ("F.relu", F.relu, "relu"), ("torch.relu", torch.relu, "relu"),
    ("Tensor.relu", torch.Tensor.relu, "relu"), ("relu_ (result dropped)", _inplace("relu_"), "relu"),
    ("nn.ReLU6", nn.ReLU6(), "hardtanh"), ("F.relu6", F.relu6, "relu6"),
    ("nn.Hardtanh", nn.Hardtanh(-0.5, 0.5), "hardtanh"), ("F.hardtanh_", F.hardtanh_, "hardtanh"),
    ("nn.SiLU", nn.SiLU(), "silu"), ("F.silu(inplace)", lambda y: F.silu(y, inplace=True), "silu"),
    ("nn.Hardswish", nn.Hardswish(), "hardswish"), ("F.hardswish", F.hardswish, "hardswish"),
    ("nn.Hardsigmoid", nn.Hardsigmoid(), "hardsigmoid"),
    ("nn.GELU", nn.GELU(), "gelu"), ("F.gelu(tanh)", lambda y: F.gelu(y, approximate="tanh"), "gelu"),
    ("nn.LeakyReLU", nn.LeakyReLU(0.1), "leaky_relu"),
    ("F.leaky_relu_", lambda y: F.leaky_relu_(y, 0.1), "leaky_relu"),
    ("nn.ELU", nn.ELU(), "elu"), ("F.elu(inplace)", lambda y: F.elu(y, inplace=True), "elu"),
    ("nn.SELU", nn.SELU(), "selu"), ("nn.CELU", nn.CELU(0.5), "celu"), ("nn.Mish", nn.Mish(), "mish"),
    ("nn.PReLU", nn.PReLU(3, 0.2), "prelu"), ("nn.Softplus", nn.Softplus(), "softplus"),
    ("nn.Sigmoid", nn.Sigmoid(), "sigmoid"), ("torch.tanh", torch.tanh, "tanh"),
    ("F.threshold", lambda y: F.threshold(y, 0.1, -1.0), "threshold"),
    ("torch.clamp", lambda y: torch.clamp(y, 0, 1), "clamp"),
    ("Tensor.clamp_ (result dropped)", _inplace("clamp_", min=-0.5, max=0.5), "clamp"),
    ("Tensor.clip", lambda y: y.clip(0, 2), "clamp"),
    ("Tensor.clamp_min", lambda y: y.clamp_min(0), "clamp_min"),
    ("torch.clamp_min_", lambda y: torch.clamp_min_(y, 0), "clamp_min"),
    ("Tensor.clamp_max", lambda y: y.clamp_max(0.3), "clamp_max"),
]


class ConvAct(nn.Module):
    """conv -> activation -> 1x1 conv -> spatial mean: one activation point."""

    def __init__(self, act):
        super().__init__()
        torch.manual_seed(SEED)
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.head = nn.Conv2d(3, 2, 1)
        if isinstance(act, nn.Module):
            self.act = act
        else:
            self.fn = act

    def activation(self, y):
        return self.act(y) if hasattr(self, "act") else self.fn(y)

    def forward(self, x):
        return self.head(self.activation(self.conv(x))).mean((2, 3))


def _x(n=24):
    return torch.randn(n, 2, 5, 5, generator=torch.Generator().manual_seed(SEED))


@pytest.mark.parametrize("label,act,fname", CASES, ids=[c[0] for c in CASES])
def test_activation_is_profiled_and_substituted(label, act, fname):
    model = ConvAct(act).eval()
    x = _x()
    with torch.no_grad():
        a = model.activation(model.conv(x).clone()).double()   # the activation by hand
    assert velcro.trace_points(model, x[:1]) == [(("act" if hasattr(model, "act") else f"conv.{fname}"),
                                                  (3, 5, 5), 0)]
    stats = velcro.profile(model, [x[:10], x[10:]])
    assert len(stats) == 1
    s = stats[0]
    assert s.name == ("act" if hasattr(model, "act") else f"conv.{fname}")
    assert s.macs == 2 * 9
    # statistics of exactly this activation, within the profile's derived error bound
    tol_mean, tol_var = velcro.profile_error_bound(a.var(0, unbiased=False), a.abs().mean(0), 14)
    assert ((s.mean - a.mean(0)).abs() <= tol_mean).all(), label
    assert ((s.var - a.var(0, unbiased=False)).abs() <= tol_var).all(), label
    # mean substitution: masked elements are the means, the rest the true activations, and
    # the model output is the head applied to that map (the substitution reaches the output)
    masks = velcro.make_masks(stats, [0.5])
    m = masks[0]
    assert int(m.sum()) == math.floor(0.5 * 75)
    with torch.no_grad(), velcro.compressed(model, stats, masks):
        got = velcro.capture_points(model, x[:4])
        y_c = model(x[:4])
    mean32 = s.mean.float()
    with torch.no_grad():    # the same batch of 4 by hand (vectorised kernels round by size)
        a4 = model.activation(model.conv(x[:4]).clone())
        want = model.head(torch.where(m, mean32, a4)).mean((2, 3))
    assert torch.equal(got[0][1][:, m], mean32[m].expand(4, -1))
    assert torch.equal(got[0][1][:, ~m], a4[:, ~m])
    torch.testing.assert_close(y_c, want, rtol=0, atol=0)
    with torch.no_grad():                            # leaving the block restores the model
        torch.testing.assert_close(model(x[:4]), model.head(a4).mean((2, 3)), rtol=0, atol=0)


SQRT2 = math.sqrt(2.0)
REFUSED = [
    ("hand-written GELU", lambda y: 0.5 * y * (1 + torch.erf(y / SQRT2)), "'erf'"),
    ("hand-written leaky ReLU", lambda y: torch.where(y > 0, y, 0.1 * y), "'where'"),
    ("maximum as ReLU", lambda y: torch.maximum(y, torch.zeros_like(y)), "'maximum'"),
    ("hand-written ELU", lambda y: torch.where(y > 0, y, torch.exp(y) - 1), "'exp'"),
    ("hand-written SiLU", lambda y: y * torch.sigmoid(y), "gated activation"),
    ("hand-written hardswish", lambda y: y * F.relu6(y + 3) / 6, "gated activation"),
    ("channel softmax", lambda y: F.softmax(y, dim=1), "'softmax'"),
    ("GLU", lambda y: F.glu(torch.cat([y, y], 1), dim=1), "'glu'"),
]


@pytest.mark.parametrize("label,act,needle", REFUSED, ids=[c[0] for c in REFUSED])
def test_unhandled_activation_is_refused_by_name(label, act, needle):
    model = ConvAct(act).eval()
    x = _x(4)
    for run in (lambda: velcro.profile(model, [x]), lambda: velcro.trace_points(model, x),
                lambda: velcro.capture_points(model, x)):
        with pytest.raises(VelcroError, match="cannot handle") as e:
            run()
        assert needle in str(e.value), str(e.value)
        assert "(4, 3, 5, 5)" in str(e.value) or "(4, 6, 5, 5)" in str(e.value)


def test_nonlinear_math_outside_pre_activations_is_not_refused():
    """exp on the input or on an activation's output, a gate multiplying an activation (SE):
    not activations of a convolution output, so not refused and not points."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 3, 3, padding=1)
            self.fc = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            y = F.relu(self.conv(torch.exp(x / 4)))                   # exp before any conv
            gate = torch.sigmoid(self.fc(y.mean((2, 3), keepdim=True)))  # squeeze-excitation
            return torch.exp(-(y * gate)).mean((1, 2, 3))             # exp after the activation
    torch.manual_seed(SEED)
    stats = velcro.profile(Net().eval(), [_x(6)])
    assert [(s.name, s.shape, s.macs) for s in stats] == [("conv.relu", (3, 5, 5), 18),
                                                          ("fc.sigmoid", (3, 1, 1), 3)]


@pytest.fixture(scope="module")
def tv():
    from py_ref.tv import import_torchvision
    return import_torchvision()


@pytest.mark.parametrize("arch,points,kinds", [
    ("mobilenet_v3_small", 41, {"hardswish": 18, "relu": 14, "hardsigmoid": 9}),
    ("efficientnet_b0", 65, {"silu": 49, "sigmoid": 16}),
])
def test_torchvision_models_beyond_relu(tv, arch, points, kinds):
    """MobileNetV3 (Hardswish, ReLU, Hardsigmoid gates) and EfficientNet (SiLU, Sigmoid gates)
    are profiled entirely, and the means are substituted at every point."""
    torch.manual_seed(SEED)
    m = getattr(tv.models, arch)().eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(SEED))
    calls = {}

    def count(mod, inp, out):
        if out.dim() == 4:     # the classifier's 2-D activations are not points
            k = type(mod).__name__.lower()
            calls[k] = calls.get(k, 0) + 1
    hs = [mod.register_forward_hook(count) for mod in m.modules()
          if isinstance(mod, (nn.Hardswish, nn.ReLU, nn.Hardsigmoid, nn.SiLU, nn.Sigmoid))]
    stats = velcro.profile(m, [x])
    for h in hs:
        h.remove()
    assert len(stats) == points
    assert calls == kinds          # every activation module call on a 4-D map is a point
    masks = velcro.make_masks(stats, [0.5] * points)
    with torch.no_grad(), velcro.compressed(m, stats, masks):
        got = velcro.capture_points(m, x)
    assert [n for n, _ in got] == [s.name for s in stats]
    for (name, a), s, mk in zip(got, stats, masks):
        assert torch.equal(a[:, mk], s.mean.float()[mk].expand(2, -1)), name
