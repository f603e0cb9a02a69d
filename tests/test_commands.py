"""py_ref.commands: the velcro profile/compress/evaluate/export subcommands and their errors."""

import argparse

import numpy as np
import pytest

from py_ref import commands


def run(argv):
    p = argparse.ArgumentParser(prog="velcro")
    sub = p.add_subparsers(dest="command", required=True)
    commands.register(sub)
    args = p.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def stats_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    path = d / "stats.pt"
    assert run(["profile", "--task", "shirts", "--images", "32", "--out", str(path)]) == 0
    return path


def test_profile_compress_evaluate(stats_file, tmp_path, capsys):
    masks = tmp_path / "m.pt"
    assert run(["compress", "--stats", str(stats_file), "--uniform", "0.25", "--out", str(masks)]) == 0
    assert "C = 25.00%" in capsys.readouterr().out
    assert run(["evaluate", "--task", "shirts", "--masks", str(masks), "--valid-images", "40"]) == 0
    assert "compressed" in capsys.readouterr().out
    s = tmp_path / "s.pt"
    assert run(["compress", "--stats", str(stats_file), "--thresholds", "10,20,30,40", "--percent",
                "--structured", "--out", str(s)]) == 0
    assert "S-VELCRO" in capsys.readouterr().out


def test_export_writes_frame(tmp_path, capsys):
    out = tmp_path / "FRAME.npz"
    assert run(["export", "--task", "footwear", "--images", "32", "--out", str(out)]) == 0
    with np.load(out) as a:
        assert set(a.files) == {"ifmap", "weight", "bias", "mask", "means", "mult", "shift"}
        assert a["ifmap"].shape == (16, 64, 64)


@pytest.mark.parametrize("argv,msg", [
    (["compress", "--uniform", "1.5"], "0 <= T < 1"),
    (["compress", "--thresholds", "0.1,0.2"], "2 entries"),
    (["compress", "--thresholds", "0.1,nan,0.1,0.1"], "NaN"),
    (["compress", "--thresholds", "0.1,x,0.1,0.1"], "not a number"),
    (["compress", "--preset", "cats:30%"], "no paper tuple"),
])
def test_compress_errors(stats_file, tmp_path, capsys, argv, msg):
    out = tmp_path / "m.pt"
    assert run(argv[:1] + ["--stats", str(stats_file)] + argv[1:] + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("velcro: error:") and msg in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.parametrize("argv,msg", [
    (["profile", "--model", "vgg", "--out", "{tmp}/x.pt"], "unknown model"),
    (["profile", "--task", "hats", "--out", "{tmp}/x.pt"], "unknown task"),
    (["profile", "--model", "mobilenet_v2", "--task", "cats", "--out", "{tmp}/x.pt"], "needs --data"),
    (["profile", "--model", "mobilenet_v2", "--task", "cats", "--data", "/nonexistent",
      "--out", "{tmp}/x.pt"], "does not exist"),
    (["compress", "--stats", "{tmp}/missing.pt", "--uniform", "0.1", "--out", "{tmp}/x.pt"], "not found"),
    (["export", "--layer", "conv7", "--out", "{tmp}/x.npz"], "unknown layer"),
    (["export", "--threshold", "1", "--out", "{tmp}/x.npz"], "out of range"),
    (["export", "--out", "/nonexistent/dir/x.npz", "--images", "16"], "does not exist"),
])
def test_bad_input_exit_2_no_output(tmp_path, capsys, argv, msg):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("velcro: error:") and msg in err, err
    assert list(tmp_path.iterdir()) == []


def test_nan_weights_give_one_line_error(tmp_path, capsys):
    import torch
    from py_ref.models import load_fmnist_cnn
    sd = load_fmnist_cnn().state_dict()
    sd["conv2.weight"][0, 0, 0, 0] = float("nan")
    w = tmp_path / "nan.pt"
    torch.save(sd, w)
    out = tmp_path / "s.pt"
    assert run(["profile", "--weights", str(w), "--images", "16", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("velcro: error:") and "non-finite" in err
    assert not out.exists()


def test_imagenet_folder_flow(tmp_path, capsys):
    """A local ImageNet-style folder (class folders named by WordNet id) through profile,
    compress with the paper's preset, and evaluate, on MobileNetV2 with its real weights."""
    from PIL import Image
    from py_ref.presets import IMAGENET_TASKS
    rng = np.random.default_rng(7)
    for _, wnid, _ in IMAGENET_TASKS["cats-2"]:
        d = tmp_path / "val" / wnid
        d.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(d / "a.png")
    (tmp_path / "val" / "n99999999").mkdir()   # an unrelated class folder is ignored
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "val" / "n99999999" / "b.png")
    st, m = tmp_path / "st.pt", tmp_path / "m.pt"
    base = ["--model", "mobilenet_v2", "--data", str(tmp_path / "val"), "--task", "cats-2"]
    assert run(["profile", *base, "--images", "1", "--out", str(st)]) == 0
    assert "35 activation points" in capsys.readouterr().out
    assert run(["compress", "--stats", str(st), "--preset", "cats:13.5%", "--out", str(m)]) == 0
    assert "C = 13.5" in capsys.readouterr().out
    assert run(["evaluate", *base, "--masks", str(m)]) == 0
    assert "2 validation images" in capsys.readouterr().out
