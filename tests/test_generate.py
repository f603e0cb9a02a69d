"""Verilog generation: `make verilog`'s CLI, and verilator --lint-only -Wall with the waivers."""

import subprocess
import sys

import pytest

from hdl.config import AccelConfig
from hdl.generate import generated_rtl
from sim.lint import lint


def test_generate_cli_writes_any_configuration(tmp_path):
    out = tmp_path / "x.v"
    r = subprocess.run([sys.executable, "-m", "hdl.generate", "--instances", "2", "--height", "8",
                        "--width", "8", "--in-channels", "3", "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "module velcro_accel(" in text and text.count("datapath1") > 0
    assert '"in_channels": 3' in out.with_suffix(".json").read_text()


def test_generate_cli_rejects_bad_configuration(tmp_path):
    r = subprocess.run([sys.executable, "-m", "hdl.generate", "--height", "2", "--out",
                        str(tmp_path / "x.v")], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == "generate: error: height=2 is out of range 4..256"
    assert not (tmp_path / "x.v").exists()


@pytest.mark.parametrize("cfg", [AccelConfig(), AccelConfig(height=7, width=9, in_channels=5,
                                                            instances=4, lanes=2)],
                         ids=["default", "multichannel"])
def test_lint_clean_with_documented_waivers(cfg):
    result = lint(generated_rtl(cfg), "velcro_accel")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "%Warning" not in result.stderr and "%Error" not in result.stderr
