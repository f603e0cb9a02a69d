"""Verilog generation: `make verilog`'s CLI, and verilator --lint-only -Wall with the waivers."""

import subprocess
import sys
from pathlib import Path

import pytest

from hdl.config import AccelConfig
import re

from hdl import synthesis as S
from hdl.generate import generated_rtl, write_verilog
from sim.lint import lint


def test_generate_cli_writes_any_configuration(tmp_path):
    out = tmp_path / "x.v"
    r = subprocess.run([sys.executable, "-m", "hdl.generate", "--instances", "4", "--height", "8",
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
    assert r.stderr.strip() == "velcro: error: generate: height=2 is out of range 4..256"
    assert not (tmp_path / "x.v").exists()


SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.mark.parametrize("command", [["-m", "hdl.generate"], [str(SCRIPTS / "make_kernel.py")],
                                     [str(SCRIPTS / "sweep.py")]],
                         ids=["generate", "make_kernel", "sweep"])
def test_unbuildable_configuration_is_one_line_before_any_work(tmp_path, command):
    """A configuration the engine's parts refuse only while elaborating (3 instances do not
    divide the 64-byte beat) is refused up front by config_from_args, one line, exit 2, nothing
    written."""
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, *command, "--instances", "3", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("velcro: error: ") and "instances must divide" in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("cfg", [AccelConfig(), AccelConfig(height=7, width=9, in_channels=5,
                                                            instances=4, lanes=2)],
                         ids=["default", "multichannel"])
def test_lint_clean_with_documented_waivers(cfg):
    result = lint(generated_rtl(cfg), "velcro_accel")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "%Warning" not in result.stderr and "%Error" not in result.stderr


def test_one_datapath_module_plain_names_deterministic(tmp_path):
    """The P/2 identical pair datapaths are one module ``velcro_datapath`` (and the walkers one
    ``velcro_walker``) instantiated as datapath0 .. datapath<P/2-1>: no escaped per-copy modules;
    two generations give the same bytes (hdl.synthesis.merge_identical_modules)."""
    cfg = AccelConfig(height=7, width=9, in_channels=5, instances=4, lanes=2)
    a = write_verilog(cfg, tmp_path / "a.v").read_text()
    b = write_verilog(cfg, tmp_path / "b.v").read_text()
    assert a == b
    mods = S.verilog_modules(a)
    assert "velcro_accel" in mods and "velcro_datapath" in mods and "velcro_walker" in mods
    assert not [n for n in mods if re.search(r"\.(datapath|walker)\d", n)]
    top = mods["velcro_accel"]
    assert re.findall(r"^  velcro_datapath +(\S+) \(", top, re.M) == [
        f"datapath{d}" for d in range(cfg.pairs)] == ["datapath0", "datapath1"]
    assert re.findall(r"^  velcro_walker +(\S+) \(", top, re.M) == [
        f"walker{d}" for d in range(cfg.pairs)]
    # every named port connection of an instance is a port of the one module
    ports = set(S._header_ports(mods["velcro_datapath"]))
    for block in re.findall(r"^  velcro_datapath +datapath\d+ \(\n(.*?)^  \);", top, re.M | re.S):
        conn = {m.strip() for m in re.findall(r"^    \.(\\\S+ |\w+)\(", block, re.M)}
        assert conn == ports
