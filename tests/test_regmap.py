"""The register map is one table (hdl/regmap.py): docs/KERNEL.md, kernel.xml, package_kernel.tcl,
connectivity.cfg and the host's offsets all agree with it. The kernel's decode is generated from
the same table and checked in simulation (sim/tb_kernel.py: register_map)."""

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from hdl import kernel_folder, regmap
from hdl.config import AccelConfig
from hdl.regmap import GMEM_IN, GMEM_OUT, REGISTER, REGISTERS

REPO = Path(__file__).resolve().parent.parent
CFG = AccelConfig(height=9, width=10, in_channels=1, instances=4, bus_width=512)


@pytest.fixture(scope="module")
def make_kernel():
    return kernel_folder


def test_doc_table_is_generated_from_the_table():
    doc = (REPO / "docs" / "KERNEL.md").read_text()
    assert regmap.update_doc(doc) == doc, \
        "docs/KERNEL.md's register table is stale: run python -m hdl.regmap --doc docs/KERNEL.md"
    for r in REGISTERS:
        assert f"| {r.name} |" in doc


def test_host_offsets_and_bits_come_from_the_table():
    for r in REGISTERS:
        assert getattr(regmap.Reg, r.name) == r.offset
    assert regmap.BUFFERS == ("ifmap", "params", "schedule", "ofm")
    assert [regmap.Reg.pointer(b) for b in regmap.BUFFERS] == [0x10, 0x18, 0x20, 0x28]
    assert (regmap.CTRL_START, regmap.CTRL_DONE, regmap.CTRL_IDLE,
            regmap.CTRL_READY, regmap.CTRL_AUTO_RESTART) == (1, 2, 4, 8, 0x80)
    assert regmap.FLAG_LOAD_CONFIG == 1
    assert (regmap.STATUS_REFUSED, regmap.STATUS_AXI_ERROR,
            regmap.STATUS_UNALIGNED_SHIFT) == (1, 2, 8)


def test_ap_ctrl_hs_offsets_are_vitis_fixed():
    assert [REGISTER[n].offset for n in ("CTRL", "GIE", "IER", "ISR")] == [0, 4, 8, 0xC]
    assert REGISTERS[4].offset == 0x10 and REGISTERS[4].width == 64


def test_kernel_xml_lists_both_masters_and_every_argument(make_kernel):
    root = ET.fromstring(make_kernel.kernel_xml(CFG))
    ports = {p.get("name"): p.get("mode") for p in root.iter("port")}
    assert ports == {"s_axi_control": "slave", GMEM_IN: "master", GMEM_OUT: "master"}
    args = [(a.get("name"), int(a.get("offset"), 16), a.get("port"), int(a.get("id")))
            for a in root.iter("arg")]
    assert args == [(r.arg, r.offset, r.port or "s_axi_control", i)
                    for i, r in enumerate(regmap.arguments())]
    by_name = {name: port for name, _, port, _ in args}
    assert [by_name[b] for b in ("ifmap", "params", "schedule", "ofm")] == [GMEM_IN] * 3 + [GMEM_OUT]


def test_package_tcl_registers_and_clocks(make_kernel):
    tcl = make_kernel.package_tcl(CFG)
    assert "@" not in tcl
    for master in (GMEM_IN, GMEM_OUT, "s_axi_control"):
        assert f"ipx::associate_bus_interfaces -busif {master} -clock ap_clk $core" in tcl
    for r in REGISTERS:
        if not r.array:
            assert f"{r.offset:#05x} {64 if r.width == 64 else 32}{' ' + r.port if r.port else ''}\n" in tcl
    assert "m_axi_gmem " not in tcl and "m_axi_gmem\n" not in tcl


def test_connectivity_puts_each_master_on_its_own_bank(make_kernel):
    lines = [ln for ln in make_kernel.connectivity_cfg().splitlines() if ln.startswith("sp=")]
    assert lines == [f"sp=velcro_kernel_1.{GMEM_IN}:HBM[0]", f"sp=velcro_kernel_1.{GMEM_OUT}:HBM[1]"]


def test_table_rejects_bad_registers():
    with pytest.raises(ValueError, match="access must be one of"):
        regmap.Register("X", 0x60, "WO", 32, "")
    with pytest.raises(ValueError, match="offset 0x62"):
        regmap.Register("X", 0x62, "RW", 32, "")
