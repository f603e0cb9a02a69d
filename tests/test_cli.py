"""`velcro sim`: a frame through the RTL, and bad input rejected in one line with exit status 2."""

import subprocess
import sys

import numpy as np
import pytest

from hdl.config import AccelConfig
from hdl.contract import compute_cycle_bound
from py_ref.golden import golden_ofm, random_frame
from py_ref.schedule import deal

CFG = AccelConfig(height=6, width=8, in_channels=2, instances=2)
SEED = 7


def velcro(*args):
    return subprocess.run([sys.executable, "-m", "velcro_cli", *map(str, args)],
                          capture_output=True, text=True)


@pytest.fixture
def frame():
    return random_frame(CFG, np.random.default_rng(SEED), density=0.4)


@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_sim_frame(tmp_path, frame, sim):
    frame.save(tmp_path / "frame.npz")
    r = velcro("sim", tmp_path / "frame.npz", "--out", tmp_path / "result.npz", "--sim", sim)
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "result.npz") as res:
        assert res["ofm"].dtype == np.uint8
        np.testing.assert_array_equal(res["ofm"], golden_ofm(frame))
        assert res["computed"].tolist() == frame.uncompressed.tolist()
        assert res["skipped"].tolist() == (CFG.positions - frame.uncompressed).tolist()
        assert int(res["compute_cycles"]) == compute_cycle_bound(CFG, deal(frame.mask, 2))
        assert int(res["total_cycles"]) > int(res["compute_cycles"])


def _arrays(frame):
    return {k: getattr(frame, k) for k in ("ifmap", "weight", "bias", "mask", "means", "mult", "shift")}


BAD = {
    "missing array 'means'": lambda a: a.pop("means"),
    "array 'ifmap' has dtype float32": lambda a: a.update(ifmap=a["ifmap"].astype(np.float32)),
    "array 'weight' has shape": lambda a: a.update(weight=a["weight"][:, :, :2]),
    "array 'mask' has shape": lambda a: a.update(mask=a["mask"][:1]),
    "array 'mult' has values outside 0..65535": lambda a: a.update(mult=a["mult"] + 2**16),
    "array 'shift' has values outside 0..31": lambda a: a.update(shift=a["shift"] + 32),
    "array 'mask' has dtype": lambda a: a.update(mask=a["mask"].astype(np.float64) * np.nan),
    "height=300 is out of range": lambda a: a.update(
        ifmap=np.zeros((2, 300, 8), np.int8), mask=np.zeros((2, 300, 8), bool),
        means=np.zeros((2, 300, 8), np.uint8)),
}


@pytest.mark.parametrize("problem", BAD)
def test_sim_rejects_bad_frame(tmp_path, frame, problem):
    arrays = _arrays(frame)
    BAD[problem](arrays)
    np.savez(tmp_path / "frame.npz", **arrays)
    r = velcro("sim", tmp_path / "frame.npz", "--out", tmp_path / "result.npz")
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("velcro: error:"), r.stderr
    assert problem in r.stderr
    assert not (tmp_path / "result.npz").exists()


def test_sim_rejects_unreadable_and_missing_files(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    for path in (tmp_path / "junk.npz", tmp_path / "absent.npz"):
        r = velcro("sim", path, "--out", tmp_path / "result.npz")
        assert r.returncode == 2 and r.stderr.startswith("velcro: error: cannot read"), r.stderr
        assert r.stderr.count("\n") == 1
    assert not (tmp_path / "result.npz").exists()
