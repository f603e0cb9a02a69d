"""Export of conv2 of the committed Fashion-MNIST CNN into a FRAME, against golden and float."""

import math

import numpy as np
import pytest
import torch

from py_ref import data, export, velcro
from py_ref.golden import Frame, golden_ofm
from py_ref.models import load_fmnist_cnn

SEED = 0  # calibration subset seed (data.select)
T = 0.3


@pytest.fixture(scope="module")
def exported():
    torch.manual_seed(SEED)
    model = load_fmnist_cnn()
    (xc, _), (xv, _) = data.calibration_validation("footwear", n_calib=64, n_valid=8, seed=SEED)
    stats = velcro.profile(model, [xc])
    mask = velcro.make_masks([stats[1]], [T])[0]
    r = export.quantise_layer(model, "conv2", xc, xv[:1], stats[1], mask)
    return r, stats


def test_frame_shapes_and_ranges(exported):
    r, _ = exported
    f = r.frame
    assert f.ifmap.shape == (16, 64, 64) and f.ifmap.dtype == np.int8
    assert f.weight.shape == (16, 16, 3, 3) and f.weight.dtype == np.int8
    assert f.bias.shape == (16,) and f.bias.dtype == np.int32
    assert f.mask.shape == (16, 64, 64) and f.mask.dtype == np.bool_
    assert f.means.dtype == np.uint8
    assert ((0 <= f.mult) & (f.mult < 2 ** 16)).all() and ((0 <= f.shift) & (f.shift <= 31)).all()
    assert int(f.mask.sum()) == math.floor(T * 16 * 64 * 64)
    assert f.ifmap.min() >= 0          # a post-ReLU map
    assert np.abs(f.weight).max() == 127


def test_golden_matches_float_layer(exported):
    r, _ = exported
    chk = export.check_export(r)
    assert chk["max_err_vs_quantised_float"] <= 0.5 + 1e-9
    assert chk["within_bound"]
    assert chk["max_err_vs_float_layer"] <= export.TOLERANCE_STEPS
    assert chk["share_within_1_step"] > 0.9
    assert chk["max_err_means"] <= 0.5 + 1e-9
    assert chk["ok"]


def test_masked_outputs_are_means(exported):
    r, _ = exported
    g = golden_ofm(r.frame)
    assert np.array_equal(g[r.frame.mask], r.frame.means[r.frame.mask])


def test_roundtrip_npz(exported, tmp_path):
    r, _ = exported
    r.frame.save(tmp_path / "f.npz")
    with np.load(tmp_path / "f.npz") as a:
        f2 = Frame.from_arrays({k: a[k] for k in a.files})
    assert np.array_equal(golden_ofm(f2), golden_ofm(r.frame))


def test_unknown_layer(exported):
    r, stats = exported
    with pytest.raises(velcro.VelcroError, match="unknown layer"):
        export.quantise_layer(load_fmnist_cnn(), "conv9", torch.zeros(1, 1, 28, 28),
                              torch.zeros(1, 1, 28, 28), stats[1], r.frame.mask)


@pytest.mark.slow
def test_exported_frame_through_rtl(exported):
    """The exported layer through the RTL (Verilator) equals the golden model bit-exactly."""
    frame_runner = pytest.importorskip("sim.frame_runner")
    r, _ = exported
    out = frame_runner.run_frame(r.frame, sim="verilator")
    assert np.array_equal(out.ofm[0], golden_ofm(r.frame))


def test_conv1_export_of_several_images():
    """conv1 (the default C_in = 1 design that `make sim` measures): its input is the model's own
    resized, normalised image (a forward pre-hook, no copied constants); several images share
    one set of scales and every image's golden output stays within the worst-case bound."""
    model = load_fmnist_cnn()
    (xc, _), (xv, _) = data.calibration_validation("footwear", n_calib=64, n_valid=3, seed=SEED)
    stats = velcro.profile(model, data.batches(xc, None, 64))
    point = stats[export.LAYERS["conv1"][1]]
    mask = velcro.make_masks([point], [T])[0]
    r = export.quantise_layer(model, "conv1", xc, xv, point, mask)
    assert r.frame.ifmap.shape == (1, 64, 64) and r.ifmaps.shape == (3, 1, 64, 64)
    assert np.array_equal(r.frame.ifmap, r.ifmaps[0])
    assert r.ifmaps.dtype == np.int8 and r.ifmaps.min() < 0      # a normalised, signed input
    x = export.layer_input(model, model.conv1, xv)
    assert tuple(x.shape) == (3, 1, 64, 64)
    assert np.array_equal(r.ifmaps, torch.clamp(torch.round(x.double() / r.s_x), -127, 127)
                          .to(torch.int8).numpy())
    chk = export.check_export(r)
    assert chk["ok"] and chk["within_bound"], chk
    with pytest.raises(velcro.VelcroError, match="image must be"):
        export.quantise_layer(model, "conv1", xc, xv[0], point, mask)


@pytest.mark.parametrize("conv, reason", [
    (torch.nn.Conv2d(4, 4, 5, padding=2), "kernel size (5, 5), not 3x3"),
    (torch.nn.Conv2d(4, 4, 3, stride=2, padding=1), "stride (2, 2), not 1"),
    (torch.nn.Conv2d(4, 4, 3, padding=0), "padding (0, 0), not 1"),
    (torch.nn.Conv2d(4, 4, 3, padding=1, dilation=2), "dilation (2, 2), not 1"),
    (torch.nn.Conv2d(4, 4, 3, padding=1, groups=4), "groups=4, not 1"),
    (torch.nn.Conv2d(4, 4, 3, padding=1, bias=False), "no bias"),
])
def test_layers_the_accelerator_cannot_run_are_refused_with_the_reason(conv, reason):
    model = load_fmnist_cnn()
    model.conv3 = conv
    with pytest.raises(velcro.VelcroError, match="layer 'conv3' cannot run on the accelerator: "
                                                 + reason.replace("(", r"\(").replace(")", r"\)")):
        export.check_layer(model, "conv3")
    assert export.check_layer(model, "conv2") is model.conv2


@pytest.mark.parametrize("layer", ["conv4", "conv5"])
def test_deeper_layers_export_within_the_bound(layer):
    """conv4 (16 -> 32 at 32x32, after a max pool) and conv5 (32 -> 32 at 16x16): N = 32 output
    channels run on the P = 16 instances; every uncompressed element within its derived bound."""
    model = load_fmnist_cnn()
    (xc, _), (xv, _) = data.calibration_validation("footwear", n_calib=64, n_valid=2, seed=SEED)
    stats = velcro.profile(model, [xc])
    point = stats[export.LAYERS[layer][1]]
    mask = velcro.make_masks([point], [T])[0]
    r = export.quantise_layer(model, layer, xc, xv, point, mask)
    n, c_in, hw = (32, 16, 32) if layer == "conv4" else (32, 32, 16)
    assert r.frame.weight.shape == (n, c_in, 3, 3) and r.frame.ifmap.shape == (c_in, hw, hw)
    x = export.layer_input(model, getattr(model, layer), xv)
    assert tuple(x.shape) == (2, c_in, hw, hw)          # the pooled map of the previous point
    chk = export.check_export(r)
    assert chk["ok"] and chk["within_bound"], chk
    assert chk["max_err_vs_quantised_float"] <= 0.5 + 1e-9
