"""`make xo`, `make xclbin`, `make deploy` (scripts/vitis_flow.py) with fake Xilinx tools on
PATH: the commands run and the files written; one line naming a missing tool; the deploy folder
runs its host with no checkout on PYTHONPATH."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hdl.config import AccelConfig
from hdl.kernel_host import kernel_config_json

REPO = Path(__file__).resolve().parents[1]
SMALL = AccelConfig(height=9, width=10, in_channels=1, instances=4, bus_width=512)

# a fake tool: records its arguments and working folder, writes the file it would write
FAKE = r"""#!{python}
import json, os, sys
from pathlib import Path
name = Path(sys.argv[0]).name
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps([name, os.getcwd(), args]) + "\n")
if name == "v++" and args == ["--version"]:
    print("v++ v2022.2 (64-bit)")
elif name == "v++":
    Path(args[args.index("-o") + 1]).write_text("xclbin")
elif name == "vivado":
    Path(args[args.index("-tclargs") + 1]).write_text("xo")
elif name == "emconfigutil":
    Path(args[args.index("--od") + 1], "emconfig.json").write_text("{{}}")
sys.exit(int(os.environ.get("FAKE_FAIL_" + name.replace("+", "p"), "0")))
"""


@pytest.fixture(scope="module")
def flow():
    spec = importlib.util.spec_from_file_location("vitis_flow", REPO / "scripts" / "vitis_flow.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _kernel_folder(path: Path, cus: int = 2) -> Path:
    """What make kernel writes, as far as the flow reads it."""
    path.mkdir()
    (path / "config.json").write_text(kernel_config_json(SMALL, cus))
    shutil.copy(REPO / "hdl" / "kernel_files" / "host_velcro.py", path)
    for name in ("velcro_kernel.v", "package_kernel.tcl", "kernel.xml", "connectivity.cfg"):
        (path / name).write_text("")
    return path


def _tools(tmp_path, monkeypatch, names=("vivado", "v++", "emconfigutil")) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in names:
        (bin_dir / name).write_text(FAKE.format(python=sys.executable))
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "log"))
    return tmp_path / "log"


def _log(path):
    return [json.loads(ln) for ln in path.read_text().splitlines()]


def test_commands(flow):
    assert flow.xo_commands() == [["vivado", "-mode", "batch", "-source", "package_kernel.tcl",
                                   "-tclargs", "velcro_kernel.xo"]]
    link = ["v++", "--link", "-t", "hw", "--platform", "P", "--config", "connectivity.cfg",
            "--kernel_frequency", "300", "-o", "velcro_kernel.hw.xclbin", "velcro_kernel.xo"]
    assert flow.xclbin_commands("hw", "P") == [link]
    emu = flow.xclbin_commands("hw_emu", "P")
    assert emu[0] == ["emconfigutil", "--platform", "P", "--od", "."]
    assert emu[1][3] == "hw_emu" and emu[1][-2] == "velcro_kernel.hw_emu.xclbin"
    with pytest.raises(flow.FlowError, match="TARGET must be one of hw_emu, hw, not 'sw_emu'"):
        flow.xclbin_commands("sw_emu", "P")


@pytest.mark.parametrize("argv, tools, message", [
    (["xo"], (), "vivado is not on PATH: it comes with Vivado"),
    (["xclbin", "--target", "hw"], ("vivado",), "v++ is not on PATH: it comes with Vitis"),
    (["xclbin", "--target", "hw_emu"], ("v++",), "emconfigutil is not on PATH"),
    (["xclbin", "--target", "hw"], ("v++",), "velcro_kernel.xo not found: run `make xo` first"),
])
def test_missing_tool_or_input_is_one_line(flow, tmp_path, monkeypatch, capsys, argv, tools,
                                           message):
    kernel = _kernel_folder(tmp_path / "kernel")
    log = _tools(tmp_path, monkeypatch, tools)
    assert flow.main([*argv, "--kernel", str(kernel)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"velcro: error: make {argv[0]}: ")
    assert message in err
    assert not log.exists()                               # nothing ran


def test_xo_then_hw_emu_xclbin_and_deploy(flow, tmp_path, monkeypatch, capsys):
    kernel = _kernel_folder(tmp_path / "kernel")
    log = _tools(tmp_path, monkeypatch)
    assert flow.main(["xo", "--kernel", str(kernel)]) == 0
    assert (kernel / "velcro_kernel.xo").read_text() == "xo"
    assert flow.main(["xclbin", "--target", "hw_emu", "--platform", "PF",
                      "--kernel", str(kernel)]) == 0
    out = capsys.readouterr().out
    assert "vitis_flow: v++ v2022.2 (64-bit)" in out and "XCL_EMULATION_MODE=hw_emu" in out
    calls = _log(log)
    assert [c[0] for c in calls] == ["vivado", "v++", "emconfigutil", "v++"]
    assert all(Path(c[1]) == kernel for c in calls)
    assert calls[3][2] == flow.xclbin_commands("hw_emu", "PF")[1][1:]
    deploy = kernel / "deploy"
    names = {p.name for p in deploy.iterdir()}
    assert {"config.json", "host_velcro.py", "velcro_kernel.hw_emu.xclbin", "emconfig.json",
            "hdl", "py_ref"} == names
    # a failing tool stops the flow with its status
    monkeypatch.setenv("FAKE_FAIL_vpp", "3")
    assert flow.main(["xclbin", "--kernel", str(kernel)]) == 3
    assert "v++ failed (exit status 3)" in capsys.readouterr().err


def test_deploy_folder_runs_without_a_checkout(flow, tmp_path):
    """The host and every module it imports come from the deploy folder, with PYTHONPATH
    empty and Amaranth and torch unimportable; its check path runs up to the device."""
    kernel = _kernel_folder(tmp_path / "kernel")
    (tmp_path / "x.xclbin").write_text("")
    deploy = flow.write_deploy(kernel, tmp_path / "x.xclbin")
    mods = flow.host_modules()
    for rel in ("hdl/kernel_host.py", "hdl/program.py", "hdl/protocol.py", "hdl/config.py",
                "hdl/regmap.py", "py_ref/golden.py", "py_ref/schedule.py",
                "py_ref/frame_file.py", "py_ref/errors.py"):
        assert rel in mods and (deploy / rel).exists(), rel
    assert not any(m.startswith(("sim/", "scripts/")) or m == "hdl/engine.py" for m in mods)
    names = [m[:-3].replace("/", ".").removesuffix(".__init__") for m in mods]
    probe = (f"import sys, runpy\nsys.modules['amaranth'] = sys.modules['torch'] = None\n"
             f"import importlib\n"
             f"for n in {names!r}:\n"
             f"    m = importlib.import_module(n)\n"
             f"    assert m.__file__.startswith({str(deploy)!r}), m.__file__\n"
             f"sys.argv = ['host_velcro.py'] + sys.argv[1:]\n"
             f"runpy.run_path('host_velcro.py', run_name='__main__')\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": ""}

    def host(*args):
        return subprocess.run([sys.executable, "-c", probe, *args], cwd=deploy, env=env,
                              capture_output=True, text=True, timeout=120)

    r = host("--help")
    assert r.returncode == 0 and "xclbin" in r.stdout, r.stderr
    # the check path: config.json read, a random batch prepared for the 2 CUs, then the device
    r = host("x.xclbin", "--images", "2")
    assert r.returncode == 2 and "pyxrt not found" in r.stderr, r.stderr
    r = host("missing.xclbin")
    assert r.returncode == 2 and "missing.xclbin not found" in r.stderr, r.stderr
