"""The U280 host example (hdl/kernel_files/host_velcro.py) runs any layer within its kernel's
maxima (config.json) and refuses a frame beyond them before it touches the device (no pyxrt
needed to test that); the `make kernel ARGS=...` command it suggests builds a kernel that
holds the frame."""

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hdl.config import AccelConfig
from py_ref.golden import random_frame

REPO = Path(__file__).resolve().parent.parent
HOST = REPO / "hdl" / "kernel_files" / "host_velcro.py"
KERNEL = AccelConfig()                                   # `make kernel`'s default: C_in = 1
EXPORTED = AccelConfig(in_channels=16)                   # `velcro export`'s layer: C_in = 16


@pytest.fixture(scope="module")
def host():
    spec = importlib.util.spec_from_file_location("host_velcro", HOST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)                      # imports no pyxrt
    assert "pyxrt" not in sys.modules
    return module


def _frame(cfg):
    return random_frame(cfg, np.random.default_rng(0), density=0.5)


def test_matching_frame_passes(host):
    assert host.check_frame(KERNEL, _frame(KERNEL)) == KERNEL


def test_smaller_layer_runs_on_the_kernel(host):
    """H, W and N below the maxima: the layer on the same design (its commands set it)."""
    small = AccelConfig(height=9, width=10, in_channels=1, instances=16, out_channels=3)
    layer = host.check_frame(KERNEL, _frame(small))
    assert layer.design == KERNEL and (layer.height, layer.width, layer.out_channels) == (9, 10, 3)


def test_exported_layer_on_default_kernel_is_refused(host):
    with pytest.raises(host.HostError) as info:
        host.check_frame(KERNEL, _frame(EXPORTED))
    msg = str(info.value)
    assert "C_in=16 (kernel maximum: 1)" in msg and "H=" not in msg.split(";")[0]
    assert ('make kernel ARGS="--in-channels 16 --height 64 --width 64 --instances 16 '
            '--out-channels 16"' in msg)


def test_every_shape_is_named(host):
    other = AccelConfig(height=80, width=72, in_channels=3, instances=2, out_channels=20)
    with pytest.raises(host.HostError) as info:
        host.check_frame(KERNEL, _frame(other))
    for part in ("C_in=3 (kernel maximum: 1)", "H=80 (kernel maximum: 64)",
                 "W=72 (kernel maximum: 64)", "N=20 (kernel maximum: 16)"):
        assert part in str(info.value)


def test_suggested_command_builds_the_matching_kernel(host):
    """The ARGS of the message parse with make_kernel.py's options into the frame's shapes."""
    import argparse

    from hdl.generate import add_config_arguments, config_from_args

    with pytest.raises(host.HostError) as info:
        host.check_frame(KERNEL, _frame(EXPORTED))
    args = str(info.value).split('ARGS="')[1].split('"')[0]
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    cfg = config_from_args(parser.parse_args(shlex.split(args)))
    host.check_frame(cfg, _frame(EXPORTED))
    r = subprocess.run(["make", "-n", "kernel", f"ARGS={args}"], capture_output=True, text=True,
                       cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert f"scripts/make_kernel.py {args}" in r.stdout


def test_host_script_refuses_before_the_device(tmp_path):
    """As a program: one line, exit status 2, before pyxrt is imported or the xclbin opened."""
    (tmp_path / "config.json").write_text(json.dumps(KERNEL.to_dict()))
    _frame(EXPORTED).save(tmp_path / "FRAME.npz")
    r = subprocess.run([sys.executable, str(HOST), str(tmp_path / "absent.xclbin"),
                        "--frame", str(tmp_path / "FRAME.npz"),
                        "--config", str(tmp_path / "config.json")],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("velcro: error: host_velcro: the frame does not fit this kernel: "
                               "C_in=16 (kernel maximum: 1)")


@pytest.mark.parametrize("problem, message", [
    ("no-config", "config.json not found"),
    ("bad-frame", "cannot read"),
])
def test_host_script_other_refusals(tmp_path, problem, message):
    args = [str(tmp_path / "x.xclbin"), "--config", str(tmp_path / "config.json"),
            "--frame", str(tmp_path / "FRAME.npz")]
    if problem != "no-config":
        (tmp_path / "config.json").write_text(json.dumps(KERNEL.to_dict()))
    (tmp_path / "FRAME.npz").write_text("not a frame")
    r = subprocess.run([sys.executable, str(HOST), *args], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr
