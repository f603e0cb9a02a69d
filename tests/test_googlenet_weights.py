"""imagenet_model("googlenet", weights=...): torchvision-format checkpoints, the input
transform those weights expect, strict loading; wrong checkpoints refused naming the keys."""

import argparse

import pytest
import torch

from py_ref import commands
from py_ref.errors import InputError, main_guard
from py_ref.models import GOOGLENET_AUX_PREFIXES, imagenet_model

SEED = 2718


@pytest.fixture(scope="module")
def tv():
    from py_ref.tv import import_torchvision
    return import_torchvision()


@pytest.fixture(scope="module")
def checkpoint(tv, tmp_path_factory):
    """A torchvision-format GoogLeNet checkpoint (what googlenet(weights=...) loads: aux
    classifiers included), with random values, and the reference model torchvision's
    pretrained builder would make from it (transform_input=True, aux_logits=True)."""
    torch.manual_seed(SEED)
    ref = tv.models.googlenet(aux_logits=True, transform_input=True, init_weights=True).eval()
    with torch.no_grad():    # non-trivial batch-norm statistics, so a mix-up would show
        for mod in ref.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    sd = ref.state_dict()
    assert any(k.startswith(GOOGLENET_AUX_PREFIXES) for k in sd)
    path = tmp_path_factory.mktemp("googlenet") / "googlenet-torchvision-format.pth"
    torch.save(sd, path)
    return path, sd, ref


def _x():
    return torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(SEED))


def test_loads_like_torchvisions_pretrained_builder(tv, checkpoint):
    path, sd, ref = checkpoint
    m = imagenet_model("googlenet", weights=path)
    assert m.transform_input is True and m.aux1 is None and m.aux2 is None
    assert not m.training
    with torch.no_grad():
        y, y_ref = m(_x()), ref(_x())
    assert torch.equal(y, y_ref)            # same ops on the same weights: bit-identical
    # the first convolution sees ImageNet-normalised inputs mapped to the [-1, 1] scaling of
    # the ported Inception weights: x * std / 0.5 + (mean - 0.5) / 0.5 per channel
    seen = []
    h = m.conv1.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0]))
    with torch.no_grad():
        m(_x())
    h.remove()
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    want = _x() * (std / 0.5).view(1, 3, 1, 1) + ((mean - 0.5) / 0.5).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[0], want, rtol=1e-6, atol=1e-6)   # two float32 roundings apart


def test_checkpoint_without_aux_keys_loads_too(checkpoint, tmp_path):
    path, sd, ref = checkpoint
    p = tmp_path / "noaux.pth"
    torch.save({k: v for k, v in sd.items() if not k.startswith(GOOGLENET_AUX_PREFIXES)}, p)
    with torch.no_grad():
        assert torch.equal(imagenet_model("googlenet", weights=p)(_x()), ref(_x()))


def _bad(sd, tmp_path, name, change):
    bad = dict(sd)
    change(bad)
    p = tmp_path / name
    torch.save(bad, p)
    return p


@pytest.mark.parametrize("name,change,needles", [
    ("missing.pth", lambda sd: sd.pop("inception5b.branch4.1.bn.running_var"),
     ["missing: inception5b.branch4.1.bn.running_var"]),
    ("unexpected.pth", lambda sd: sd.update({"fc2.weight": torch.zeros(3, 3)}), ["unexpected: fc2.weight"]),
    ("dataparallel.pth", lambda sd: [sd.update({"module." + k: sd.pop(k)}) for k in list(sd)],
     ["missing: conv1.conv.weight", "unexpected: module.conv1.conv.weight", "more)"]),
    ("classes.pth", lambda sd: sd.update({"fc.weight": sd["fc.weight"][:10], "fc.bias": sd["fc.bias"][:10]}),
     ["wrong shape: fc.weight, fc.bias"]),
    ("aux3.pth", lambda sd: sd.update({"aux3.fc.weight": torch.zeros(2)}), ["unexpected: aux3.fc.weight"]),
])
def test_wrong_checkpoint_is_refused_naming_keys(checkpoint, tmp_path, name, change, needles):
    path, sd, _ = checkpoint
    p = _bad(sd, tmp_path, name, change)
    with pytest.raises(InputError) as e:
        imagenet_model("googlenet", weights=p)
    for n in [str(p), "do not fit GoogLeNet", *needles]:
        assert n in str(e.value), str(e.value)


def test_resnet_checkpoint_for_googlenet_is_refused(tv, tmp_path):
    p = tmp_path / "resnet18.pth"
    torch.save(tv.models.resnet18().state_dict(), p)
    with pytest.raises(InputError, match=r"missing: conv1\.conv\.weight, conv1\.bn\.weight, "
                                          r"conv1\.bn\.bias \(\+\d+ more\); unexpected: conv1\.weight"):
        imagenet_model("googlenet", weights=p)


def test_cli_wrong_checkpoint_one_line_exit_2(checkpoint, tmp_path, capsys):
    path, sd, _ = checkpoint
    p = _bad(sd, tmp_path, "missing.pth", lambda sd: sd.pop("conv3.bn.weight"))
    (tmp_path / "val" / "n02123045").mkdir(parents=True)
    out = tmp_path / "stats.pt"
    parser = argparse.ArgumentParser(prog="velcro")
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["profile", "--model", "googlenet", "--data", str(tmp_path / "val"),
                              "--task", "all", "--weights", str(p), "--out", str(out)])
    assert main_guard(args.func, args) == 2
    cap = capsys.readouterr()
    lines = cap.err.splitlines()
    assert lines[-1].startswith("velcro: error: ") and "Traceback" not in cap.err and cap.out == ""
    assert "missing: conv3.bn.weight" in lines[-1] and str(p) in lines[-1]
    assert not out.exists()
