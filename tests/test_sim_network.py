"""The whole VELCRO network on the RTL (issue 19): every layer of the Fashion-MNIST CNN on one
build of sim.network.NETWORK_DESIGN, layer shapes set at run time.

Verilator runs the network for a few test images through ``velcro network`` (every layer's ofm
== golden, logits == the int8 reference, compute cycles == the law, all checked inside
:func:`sim.network.run_network`); Icarus runs one layer of it (conv5, C_in = 32 over two
channel groups) on the same design.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import get_build

from hdl.config import PIPELINE_LATENCY, ConfigError
from hdl.contract import stream_image_cycles
from py_ref import data, velcro
from py_ref.golden import golden_ofm
from py_ref.models import load_fmnist_cnn
from py_ref.network import NetLayer, quantise_network
from py_ref.schedule import deal
from sim.frame_runner import run_frame
from sim.network import NETWORK_DESIGN, layer_config, layer_figures
from velcro_cli import NET_ARRAYS

REPO = Path(__file__).resolve().parent.parent


def run_velcro(*args):
    return subprocess.run([sys.executable, "-m", "velcro_cli", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO)


@pytest.fixture(scope="module")
def qnet():
    model = load_fmnist_cnn()
    xc, _ = data.calibration("footwear", 64, 0)
    stats = velcro.profile(model, data.batches(xc, None, 64), skip_first=True)
    q = quantise_network(model, xc, stats, velcro.make_masks(stats, [0.3] * len(stats)))
    xv, _ = data.validation("footwear", 2, 0)
    return q, q.quantise_input(model, xv)


def test_network_on_verilator(tmp_path):
    get_build(NETWORK_DESIGN, "verilator").build()
    out = tmp_path / "NET.npz"
    r = run_velcro("network", "--task", "footwear", "--uniform", "0.3", "--images", "3",
               "--calib-images", "64", "--out", out)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "every layer's ofm == golden, logits == int8 reference" in lines[-2]
    with np.load(out) as net:
        assert tuple(net.files) == NET_ARRAYS
        assert np.array_equal(net["logits"], net["reference_logits"])
        assert np.array_equal(net["top1"], net["logits"].argmax(axis=1))
        assert net["labels"].shape == net["top1_float"].shape == net["top1_torch_int8"].shape == (3,)
        assert net["layer_names"].tolist() == ["conv1", "conv2", "conv3", "conv4", "conv5"]
        assert net["layer_ratio"][0] == 0 and np.all(np.abs(net["layer_ratio"][1:] - 0.3) < 1e-3)
        # dense layers on the design: G = 1 but conv5 (C_in = 32 on 16 lanes): one cycle per
        # output of N*H*W/P, plus the walkers' idle cycle between images when G = 1
        assert net["layer_dense_cycles"].tolist() == [4097, 4097, 4097, 2049, 1024]
        assert net["layer_cycles"][0] == 4097
        assert np.all(net["layer_cycles"][1:] < net["layer_dense_cycles"][1:])
        assert net["layer_image_cycles"].shape == (5, 3)
        # each image's compute phase: the stream period less the walkers' idle cycle (G = 1),
        # plus the pipeline's latency (no stalls: the same for every image)
        groups = [-(-c // NETWORK_DESIGN.lanes) for c in (1, 16, 16, 16, 32)]
        expected = [c - (g == 1) + PIPELINE_LATENCY for c, g in zip(net["layer_cycles"], groups)]
        assert net["layer_image_cycles"].tolist() == [[e] * 3 for e in expected]


def test_one_layer_on_icarus(qnet):
    q, x = qnet
    ref = q.reference(x[:1])
    layer = q.layers[4]
    ifmaps = q.input_of(4, ref["ofm"][3])
    cfg = layer_config(NETWORK_DESIGN, layer)
    result = run_frame(layer.frame(ifmaps[0]), "icarus", build=get_build(NETWORK_DESIGN, "icarus"),
                       batch=ifmaps, cfg=cfg)
    assert np.array_equal(result.ofm[0], golden_ofm(layer.frame(ifmaps[0])))
    assert np.array_equal(result.ofm[0], ref["ofm"][4][0])
    fig = layer_figures(cfg, layer)
    assert result.counters["image_cycles"].tolist() == [fig["compute_bound"]]
    assert fig["cycles"] == stream_image_cycles(cfg, deal(layer.mask, 16).steps)


def test_layer_beyond_the_maxima_is_refused(qnet):
    q, _ = qnet
    big = q.layers[4]
    wide = NetLayer(**{**big.__dict__, "mask": np.zeros((32, 16, 80), bool),
                       "means": np.zeros((32, 16, 80), np.uint8)})
    with pytest.raises(ConfigError, match="layer conv5: width=80 exceeds the design's maximum "
                                          "max_width=64"):
        layer_config(NETWORK_DESIGN, wide)


@pytest.mark.parametrize("argv,message", [
    (["--uniform", "0.3", "--masks", "m.pt"], "not allowed with argument"),
    ([], "give --masks FILE or --uniform T"),
    (["--uniform", "1.5"], "--uniform 1.5 is out of range"),
    (["--uniform", "0.3", "--images", "0"], "--images must be at least 1"),
    (["--masks", "missing.pt"], "missing.pt"),
])
def test_network_refusals(tmp_path, argv, message):
    out = tmp_path / "NET.npz"
    r = run_velcro("network", *argv, "--out", out)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("velcro: error: ") and message in err[0]
    assert not out.exists()
