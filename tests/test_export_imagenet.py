"""Export of ResNet-18's and GoogLeNet's 3x3 stride-1 conv + BN + ReLU layers into a FRAME
(issue 19, item 4): BatchNorm folding against the float model, golden within the derived
bound of the float layer, refusals by name with the reason, the CLI end to end.

Random-weight torchvision-format checkpoints with non-trivial BatchNorm statistics (no real
ImageNet weights ship here); small inputs (64x64) for the Python API, 224x224 (what the CLI
exports at) on a few random images for the CLI path.
"""

import argparse

import numpy as np
import pytest
import torch

from py_ref import commands, export, velcro
from py_ref.errors import main_guard
from py_ref.golden import golden_ofm
from py_ref.models import imagenet_model

SEED = 1931
SIZE = 64


def _randomise_bn(model):
    with torch.no_grad():   # non-trivial batch-norm statistics and affine terms: a wrong fold shows
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """{name: path} of torchvision-format checkpoints (GoogLeNet's with its aux heads)."""
    from py_ref.tv import import_torchvision
    tv = import_torchvision()
    torch.manual_seed(SEED)
    d = tmp_path_factory.mktemp("ckpt")
    refs = {"resnet18": tv.models.resnet18(),
            "googlenet": tv.models.googlenet(aux_logits=True, transform_input=True, init_weights=True)}
    paths = {}
    for name, ref in refs.items():
        paths[name] = d / f"{name}.pth"
        torch.save(_randomise_bn(ref.eval()).state_dict(), paths[name])
    return paths


@pytest.fixture(scope="module")
def models(checkpoints):
    return {name: imagenet_model(name, weights=p) for name, p in checkpoints.items()}


def _images(n, size=SIZE, seed=SEED):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


FOLDED = [("resnet18", "layer1.0.conv1"), ("resnet18", "layer1.1.conv1"),
          ("googlenet", "conv3.conv"), ("googlenet", "inception3a.branch3.1.conv"),
          ("googlenet", "inception4e.branch3.1.conv")]


@pytest.mark.parametrize("name, layer", FOLDED)
def test_bn_folding_matches_the_float_model(models, name, layer):
    """relu(conv(x, w', b')) with the folded constants equals the model's own conv -> BN -> ReLU
    output (its activation point) on the layer's real input."""
    model = models[name]
    x = _images(2)
    spec = export.model_layer(model, layer, x[:1])
    assert spec.folded == "BatchNorm" and spec.weight.dtype == torch.float64
    x_in = export.layer_input(model, spec.conv, x).double()
    y = torch.relu(torch.nn.functional.conv2d(x_in, spec.weight, spec.bias, padding=1))
    pts = velcro.capture_points(model, x)
    assert pts[spec.point][0] == spec.point_name == layer.rsplit(".", 1)[0] + ".relu"
    want = pts[spec.point][1].double()
    assert y.shape == want.shape
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    # and it is not the unfolded conv: BatchNorm mattered
    raw = torch.relu(torch.nn.functional.conv2d(x_in, spec.conv.weight.double(), padding=1))
    assert (raw - want).abs().max() > 0.05


@pytest.mark.parametrize("name, layer, c_in, n", [("resnet18", "layer1.0.conv1", 64, 64),
                                                 ("googlenet", "conv3.conv", 64, 192),
                                                 ("googlenet", "inception3b.branch3.1.conv", 32, 96)])
def test_exported_layer_golden_within_bound_of_float_layer(models, name, layer, c_in, n, tmp_path):
    """An exportable layer with a VELCRO mask of its point: a valid FRAME (what `velcro sim`
    builds a design for), golden within 0.5 step of the quantised float layer and every
    uncompressed element within its derived bound of the float PyTorch layer."""
    from hdl.contract import config_for_frame
    from py_ref.frame_file import read_frame
    model = models[name]
    xc, xv = _images(8), _images(2, seed=SEED + 1)
    stats = velcro.profile(model, [xc[:4], xc[4:]], skip_first=True)
    spec = export.model_layer(model, layer, xv[:1])
    point = next(s for s in stats if s.index == spec.point)
    mask = velcro.make_masks([point], [0.3])[0]
    r = export.quantise_layer(model, layer, [(xc[:4], None), xc[4:]], xv, point, mask)
    f = r.frame
    assert f.weight.shape == (n, c_in, 3, 3) and f.ifmap.shape[0] == c_in
    assert f.mask.shape == (n, *f.ifmap.shape[1:]) and r.ifmaps.shape == (2, *f.ifmap.shape)
    np.testing.assert_array_equal(f.mask, mask.numpy())
    assert f.ifmap.min() >= 0                  # a post-ReLU map (every such layer follows a ReLU)
    chk = export.check_export(r)
    assert chk["ok"] and chk["within_bound"], chk
    assert chk["max_err_vs_quantised_float"] <= 0.5 + 1e-9 and chk["max_err_means"] <= 0.5 + 1e-9
    assert 0.29 < chk["compressed_fraction"] < 0.31
    g = golden_ofm(f)
    assert np.array_equal(g[f.mask], f.means[f.mask])
    f.save(tmp_path / "F.npz")
    assert np.array_equal(golden_ofm(read_frame(tmp_path / "F.npz")), g)
    cfg = config_for_frame(f)
    assert (cfg.in_channels, cfg.out_channels) == (c_in, n)


def test_scales_do_not_depend_on_batching(models):
    model = models["resnet18"]
    xc, xv = _images(6), _images(1, seed=5)
    stats = velcro.profile(model, [xc], skip_first=True)
    point = next(s for s in stats if s.name == "layer1.0.relu")
    mask = velcro.make_masks([point], [0.2])[0]
    a = export.quantise_layer(model, "layer1.0.conv1", xc, xv, point, mask)
    b = export.quantise_layer(model, "layer1.0.conv1", [xc[:1], xc[1:4], xc[4:]], xv, point, mask)
    assert (a.s_x, a.s_y) == (b.s_x, b.s_y)
    for k in ("ifmap", "weight", "bias", "mult", "shift", "means"):
        assert np.array_equal(getattr(a.frame, k), getattr(b.frame, k))


@pytest.mark.parametrize("name, layer, msg", [
    ("resnet18", "layer2.0.conv1", "layer 'layer2.0.conv1' cannot run on the accelerator: stride (2, 2), not 1"),
    ("resnet18", "conv1", "cannot run on the accelerator: kernel size (7, 7), not 3x3"),
    ("resnet18", "layer2.0.downsample.0", "kernel size (1, 1), not 3x3"),
    ("resnet18", "layer1.0.conv2", "layer 'layer1.0.conv2' cannot run on the accelerator: its output is "
                                   "added to the residual before the ReLU (the accelerator applies ReLU "
                                   "to the conv alone)"),
    ("resnet18", "layer4.1.conv2", "added to the residual before the ReLU"),
    ("resnet18", "layer2.1.conv1", "128 input channels, outside the accelerator's 1..64"),
    ("googlenet", "inception3a.branch1.conv", "kernel size (1, 1), not 3x3"),
    ("googlenet", "inception3a.branch2.1.conv", "96 input channels, outside the accelerator's 1..64"),
    ("googlenet", "inception5b.branch3.1.conv", "2 rows, outside the accelerator's 4..256"),  # at 64x64
    ("resnet18", "layer9.0.conv1", "unknown layer 'layer9.0.conv1' (exportable: layer1.0.conv1, layer1.1.conv1)"),
    ("resnet18", "layer1.0.bn1", "unknown layer 'layer1.0.bn1': it is a BatchNorm2d, not a Conv2d"),
    ("googlenet", "inception3a.branch3.1", "it is a BasicConv2d, not a Conv2d"),
])
def test_refusals_name_the_layer_and_the_reason(models, name, layer, msg):
    with pytest.raises(velcro.VelcroError) as e:
        export.model_layer(models[name], layer, _images(1))
    assert msg in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_unknown_layer_of_a_big_model_lists_a_few_in_one_line(models):
    with pytest.raises(velcro.VelcroError) as e:
        export.model_layer(models["googlenet"], "inception3a.branch9", _images(1, size=224))
    assert str(e.value) == ("unknown layer 'inception3a.branch9' (10 exportable: conv3.conv, "
                            "inception3a.branch3.1.conv, inception3b.branch3.1.conv, "
                            "inception4a.branch3.1.conv, +6 more; --list-layers lists every conv)")


class _Odd(torch.nn.Module):
    """One layer per refusal the ImageNet models do not show."""

    def __init__(self):
        super().__init__()
        c = 4
        self.grouped = torch.nn.Conv2d(c, c, 3, padding=1, groups=2, bias=False)
        self.g_bn = torch.nn.BatchNorm2d(c)
        self.six = torch.nn.Conv2d(c, c, 3, padding=1)
        self.plain = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.p_bn = torch.nn.BatchNorm2d(c)
        self.twice = torch.nn.Conv2d(c, c, 3, padding=1)
        self.nobias = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.ok = torch.nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.g_bn(self.grouped(x)))
        x = torch.nn.functional.relu6(self.six(x))
        y = self.p_bn(self.plain(x))              # no ReLU: into a concatenation
        x = torch.cat([y, x], 1)[:, :4]
        t = self.twice(x)
        x = torch.relu(t) + t                     # the pre-activation used besides the ReLU
        x = torch.relu(self.nobias(x))
        return torch.relu(self.ok(x))


@pytest.mark.parametrize("layer, msg", [
    ("grouped", "groups=2, not 1"),
    ("six", "its activation is relu6, not ReLU"),
    ("plain", "no ReLU after it (its output through its BatchNorm goes to cat)"),
    ("twice", "its output is also used before the ReLU (by add)"),
    ("nobias", "no bias"),
])
def test_other_refusals(layer, msg):
    model = _Odd().eval()
    with pytest.raises(velcro.VelcroError, match=f"layer '{layer}' cannot run on the accelerator: "
                                                 + msg.replace("(", r"\(").replace(")", r"\)")):
        export.model_layer(model, layer, torch.randn(1, 4, 8, 8))
    ok = export.model_layer(model, "ok", torch.randn(1, 4, 8, 8))
    assert ok.folded == "" and ok.point == 4 and torch.equal(ok.bias, model.ok.bias.double())


def test_accel_limits_are_hdl_configs():
    """py_ref imports nothing from hdl/: its copy of the shape limits matches AccelConfig."""
    from hdl.config import AccelConfig, ConfigError
    lo = {k: v[0] for k, v in export.ACCEL_LIMITS.items()}
    hi = {k: v[1] for k, v in export.ACCEL_LIMITS.items()}
    AccelConfig(**lo, instances=1)
    AccelConfig(**hi)
    for k in export.ACCEL_LIMITS:
        for bad in (lo[k] - 1, hi[k] + 1):
            with pytest.raises(ConfigError):
                AccelConfig(**{**hi, k: bad})


# ---------------------------------------------------------------------------- CLI

def run(argv):
    p = argparse.ArgumentParser(prog="velcro")
    commands.register(p.add_subparsers(dest="command", required=True))
    args = p.parse_args(argv)
    return main_guard(args.func, args)


def one_error_line(capsys, *needles):
    cap = capsys.readouterr()
    lines = cap.err.splitlines()
    assert lines and lines[-1].startswith("velcro: error: ") and "Traceback" not in cap.err, cap.err
    assert all(n in lines[-1] for n in needles), lines[-1]
    return lines[-1]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A cats-2 ImageFolder: 3 random photos per class (2 calibrate, 1 validates)."""
    from PIL import Image
    from py_ref.presets import IMAGENET_TASKS
    root = tmp_path_factory.mktemp("imagenet") / "val"
    rng = np.random.default_rng(SEED)
    for _, wnid, _ in IMAGENET_TASKS["cats-2"]:
        (root / wnid).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (240, 260, 3), dtype=np.uint8)).save(root / wnid / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def masks(checkpoints, folder, tmp_path_factory):
    """{model: masks file} of `velcro profile` + `velcro compress --uniform 0.3` on 2 images per class."""
    d = tmp_path_factory.mktemp("masks")
    out = {}
    for name, ckpt in checkpoints.items():
        stats, out[name] = d / f"{name}-stats.pt", d / f"{name}-masks.pt"
        assert run(["profile", "--model", name, "--weights", str(ckpt), "--data", str(folder),
                    "--task", "cats-2", "--images", "2", "--out", str(stats)]) == 0
        assert run(["compress", "--stats", str(stats), "--uniform", "0.3", "--out", str(out[name])]) == 0
    return out


@pytest.mark.parametrize("name, layer, shape", [("resnet18", "layer1.0.conv1", (64, 64, 56)),
                                                ("googlenet", "conv3.conv", (64, 192, 56))])
def test_cli_export_with_masks_file(checkpoints, folder, masks, tmp_path, capsys, name, layer, shape):
    from py_ref.frame_file import read_frame
    capsys.readouterr()
    out = tmp_path / "FRAME.npz"
    assert run(["export", "--model", name, "--weights", str(checkpoints[name]), "--data", str(folder),
                "--layer", layer, "--masks", str(masks[name]), "--out", str(out)]) == 0
    cap = capsys.readouterr()
    lines = cap.out.splitlines()
    c_in, n, hw = shape
    assert lines[0].startswith(f"exported {layer} of {name} (cats-2, VELCRO T = 0.3, 30.0% compressed; "
                               f"C_in={c_in} N={n} {hw}x{hw}; BatchNorm folded) -> {out}"), lines[0]
    assert lines[1].startswith("golden vs float layer: max ") and "within its derived bound" in lines[1]
    assert "calibration image" in cap.err
    f = read_frame(out)
    assert f.weight.shape == (n, c_in, 3, 3) and f.ifmap.shape == (c_in, hw, hw)
    blob = torch.load(masks[name], weights_only=True)
    spec = export.model_layer(imagenet_model(name, weights=checkpoints[name]), layer,
                              torch.zeros(1, 3, 224, 224))
    i = next(i for i, p in enumerate(blob["points"]) if p["index"] == spec.point)
    assert blob["points"][i]["name"] == spec.point_name
    np.testing.assert_array_equal(f.mask, blob["masks"][i].numpy())
    # --model defaults to the masks' model
    out2 = tmp_path / "F2.npz"
    assert run(["export", "--weights", str(checkpoints[name]), "--data", str(folder), "--layer", layer,
                "--masks", str(masks[name]), "--out", str(out2)]) == 0
    assert out2.read_bytes() == out.read_bytes()


@pytest.mark.parametrize("extra, msg", [
    (["--layer", "layer2.0.conv1"], "layer 'layer2.0.conv1' cannot run on the accelerator: stride (2, 2), not 1"),
    (["--layer", "layer1.0.conv2"], "its output is added to the residual before the ReLU"),
    (["--layer", "layer2.0.downsample.0"], "kernel size (1, 1), not 3x3"),
    (["--layer", "layer1.0.conv"], "unknown layer 'layer1.0.conv' (exportable: layer1.0.conv1, layer1.1.conv1)"),
    ([], "give --layer NAME, a convolution of resnet18 by module path (--list-layers lists them)"),
    (["--layer", "layer1.0.conv1", "--threshold", "0.3"], "give --masks or --threshold, not both"),
    (["--layer", "layer1.0.conv1", "--images", "3"], "--images 3 differs from the 2"),
    (["--layer", "layer1.0.conv1", "--task", "cats"], "was made for task cats-2, not --task cats"),
    (["--layer", "layer1.0.conv1", "--image-index", "2"], "--image-index 2 out of range 0..1"),
    (["--layer", "layer1.0.conv1", "--model", "fmnist"], "holds masks of model resnet18, not --model fmnist"),
    (["--layer", "layer1.0.conv1", "--model", "googlenet"], "holds masks of model resnet18, not --model googlenet"),
])
def test_cli_refusals_one_line_exit_2_no_file(checkpoints, folder, masks, tmp_path, capsys, extra, msg):
    out = tmp_path / "FRAME.npz"
    capsys.readouterr()
    assert run(["export", "--weights", str(checkpoints["resnet18"]), "--data", str(folder),
                "--masks", str(masks["resnet18"]), "--out", str(out)] + extra) == 2
    one_error_line(capsys, msg)
    assert not out.exists()


def test_cli_refusals_without_the_inputs(checkpoints, folder, masks, tmp_path, capsys):
    out = tmp_path / "FRAME.npz"
    base = ["export", "--layer", "layer1.0.conv1", "--out", str(out)]
    capsys.readouterr()
    assert run(base + ["--model", "resnet18", "--weights", str(checkpoints["resnet18"]),
                       "--data", str(folder)]) == 2
    one_error_line(capsys, "export of resnet18 takes --masks FILE")
    assert run(base + ["--masks", str(masks["resnet18"]), "--weights", str(checkpoints["resnet18"])]) == 2
    one_error_line(capsys, "model 'resnet18' needs --data PATH")
    assert run(base + ["--masks", str(masks["resnet18"]), "--data", str(folder)]) == 2
    one_error_line(capsys, "no offline ImageNet weights for resnet18; pass --weights FILE")
    other = tmp_path / "other.pth"
    torch.save(_randomise_bn(imagenet_model("resnet18", pretrained=False)).state_dict(), other)
    assert run(base + ["--masks", str(masks["resnet18"]), "--data", str(folder), "--weights", str(other)]) == 2
    one_error_line(capsys, f"the weights ({other}) are not those")
    # a masks file whose profile left the layer's output point out
    blob = torch.load(masks["resnet18"], weights_only=True)
    keep = [i for i, p in enumerate(blob["points"]) if p["name"] != "layer1.0.relu"]
    for key in ("points", "masks", "thresholds"):
        blob[key] = [blob[key][i] for i in keep]
    cut = tmp_path / "cut.pt"
    torch.save(blob, cut)
    assert run(base + ["--masks", str(cut), "--data", str(folder), "--weights", str(checkpoints["resnet18"])]) == 2
    one_error_line(capsys, f"{cut} covers no activation point 1 'layer1.0.relu' (the output of layer1.0.conv1)")
    assert not out.exists()


def test_cli_list_layers(capsys):
    assert run(["export", "--model", "googlenet", "--list-layers"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("googlenet: 57 convolutions, 10 exportable")
    rows = {ln.split()[0]: ln for ln in lines[1:]}
    assert len(rows) == 57
    assert "exportable, output point 2 'conv3.relu' (BatchNorm folded)" in rows["conv3.conv"]
    assert "64->192 at 56x56" in rows["conv3.conv"]
    assert "refused: kernel size (1, 1), not 3x3" in rows["inception3a.branch1.conv"]
    assert "refused: 96 input channels" in rows["inception3a.branch2.1.conv"]
    assert sum("exportable" in r for r in rows.values()) == 10
