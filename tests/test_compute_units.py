"""`make kernel CUS=k`: k compute units in connectivity.cfg, each AXI master of each CU on its own
HBM pseudo-channel; the batch split the host (host_velcro.py) and the two-CU testbench
(sim/tb_kernel_cus.py, run by tests/test_sim_kernel.py::test_two_compute_units) share; the
kernel folder make_kernel.py writes; and the host's multi-CU flow against a fake pyxrt that
computes each CU's outputs from that CU's own buffers."""

import argparse
import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import seed_for

from hdl.config import AccelConfig
from hdl.kernel import kernel_rtl
from hdl.synthesis import uram_memories
from hdl import kernel_folder as make_kernel_module
from hdl.config import KERNEL_CLOCK_PERIOD_NS
from hdl.kernel_host import (buffer_bytes, gather, kernel_config_json, pack_ifmap,
                             read_kernel_config, split_batch)
from hdl.regmap import (BEAT_BYTES, BUFFERS, ENGINE_INSTANCE, HBM_CHANNELS, KERNEL_NAME,
                        MAX_COMPUTE_UNITS, MAX_IMAGES, cu_names, hbm_banks)
from hdl.protocol import compact_beats_per_image, image_beats
from hdl.regmap import AXI_MASTERS, GMEM_IN, GMEM_OUT, REGISTER, arguments
from py_ref.golden import golden_ofm, random_frame
from py_ref.schedule import deal

REPO = Path(__file__).resolve().parent.parent
HOST = REPO / "hdl" / "kernel_files" / "host_velcro.py"
SMALL = AccelConfig(height=9, width=10, in_channels=1, instances=4, bus_width=512)
SMALL_ARGS = ["--instances", "4", "--height", "9", "--width", "10", "--in-channels", "1"]


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def make_kernel():
    return make_kernel_module


@pytest.fixture(scope="module")
def host():
    module = _load("host_velcro", HOST)
    assert "pyxrt" not in sys.modules
    return module


# -- the split -----------------------------------------------------------------------------------

@pytest.mark.parametrize("images, k, sizes", [
    (6, 2, [3, 3]), (5, 2, [3, 2]), (7, 3, [3, 2, 2]), (1, 1, [1]), (1, 3, [1, 0, 0]),
    (2, 16, [1, 1] + [0] * 14), (32, 16, [2] * 16),
])
def test_split_examples(images, k, sizes):
    shares = split_batch(images, k)
    assert [len(s) for s in shares] == sizes
    assert [i for s in shares for i in s] == list(range(images))


def test_split_is_even_contiguous_and_ordered_for_every_small_case():
    for k in range(1, MAX_COMPUTE_UNITS + 1):
        for images in range(1, 3 * k + 2):
            shares = split_batch(images, k)
            sizes = [len(s) for s in shares]
            assert len(shares) == k and sum(sizes) == images
            assert max(sizes) - min(sizes) <= 1, (images, k, sizes)
            assert sizes == sorted(sizes, reverse=True)          # the longer shares first
            assert [i for s in shares for i in s] == list(range(images))


@pytest.mark.parametrize("images, k, error, message", [
    (0, 2, ValueError, "a batch needs at least one image, not 0"),
    (-3, 2, ValueError, "at least one image, not -3"),
    (2.0, 2, TypeError, "images must be an int, not 2.0"),
    (True, 2, TypeError, "images must be an int"),
    (4, 0, ValueError, "compute units must be 1..16, not 0"),
    (4, 17, ValueError, "compute units must be 1..16, not 17"),
    (4, "2", TypeError, "compute units must be an int, not '2'"),
    (2 * MAX_IMAGES + 1, 2, ValueError, "per compute unit"),
])
def test_split_refuses(images, k, error, message):
    with pytest.raises(error, match=re.escape(message)):
        split_batch(images, k)


def test_split_fills_the_images_register_and_no_more():
    assert MAX_IMAGES == (1 << REGISTER["IMAGES"].width) - 1
    assert [len(s) for s in split_batch(2 * MAX_IMAGES, 2)] == [MAX_IMAGES] * 2


def test_gather_restores_the_batch_order():
    rng = np.random.default_rng(seed_for("gather"))
    for images, k in ((7, 3), (2, 4), (8, 2), (1, 1)):
        batch = rng.integers(0, 256, (images, 2, 3, 3), dtype=np.uint8)
        shares = split_batch(images, k)
        outputs = [batch[s.start:s.stop] if len(s) else None for s in shares]
        assert np.array_equal(gather(outputs, shares), batch)


def test_gather_refuses_missing_or_short_outputs():
    shares = split_batch(5, 2)
    with pytest.raises(ValueError, match="compute unit 2 returned nothing, expected 2"):
        gather([np.zeros((3, 1)), None], shares)
    with pytest.raises(ValueError, match="compute unit 1 returned 2 images, expected 3"):
        gather([np.zeros((2, 1)), np.zeros((2, 1))], shares)
    with pytest.raises(ValueError, match="1 outputs for 2 compute units"):
        gather([np.zeros((3, 1))], shares)


# -- CU names, banks, config.json, connectivity.cfg -------------------------------------------

def test_every_master_of_every_cu_has_its_own_pseudo_channel():
    assert MAX_COMPUTE_UNITS * len(AXI_MASTERS) == HBM_CHANNELS == 32
    for k in (1, 2, 5, MAX_COMPUTE_UNITS):
        banks = hbm_banks(k)
        assert list(banks) == cu_names(k) == [f"velcro_kernel_{j}" for j in range(1, k + 1)]
        used = [b for masters in banks.values() for b in masters.values()]
        assert all(set(m) == set(AXI_MASTERS) for m in banks.values())
        assert len(set(used)) == len(used) == 2 * k
        assert all(re.fullmatch(r"HBM\[([0-9]|[12][0-9]|3[01])\]", b) for b in used)
    assert hbm_banks(1) == {"velcro_kernel_1": {GMEM_IN: "HBM[0]", GMEM_OUT: "HBM[1]"}}


def test_config_json_carries_the_cu_count():
    assert read_kernel_config(kernel_config_json(SMALL, 3)) == (SMALL, 3)
    assert read_kernel_config(json.dumps(SMALL.to_dict())) == (SMALL, 1)   # older folders
    with pytest.raises(ValueError, match="compute units must be 1..16, not 20"):
        read_kernel_config(kernel_config_json(SMALL).replace('"compute_units": 1',
                                                             '"compute_units": 20'))
    with pytest.raises(ValueError, match="compute units must be 1..16"):
        kernel_config_json(SMALL, 0)


def _connectivity(text):
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    nk = [ln for ln in lines if ln.startswith("nk=")]
    sp = dict(ln[3:].rsplit(":", 1) for ln in lines if ln.startswith("sp="))
    return lines, nk, sp


def test_connectivity_of_two_cus(make_kernel):
    lines, nk, sp = _connectivity(make_kernel.connectivity_cfg(2))
    assert lines[0] == "[connectivity]"
    # no CU names: v++ numbers them velcro_kernel_1, _2 (UG1393 and UG1702 both), the sp= names
    assert nk == ["nk=velcro_kernel:2"] and cu_names(2) == ["velcro_kernel_1", "velcro_kernel_2"]
    assert sp == {"velcro_kernel_1.m_axi_gmem_in": "HBM[0]",
                  "velcro_kernel_1.m_axi_gmem_out": "HBM[1]",
                  "velcro_kernel_2.m_axi_gmem_in": "HBM[2]",
                  "velcro_kernel_2.m_axi_gmem_out": "HBM[3]"}
    assert len(lines) == 2 + 4                           # nothing else v++ would read


def test_connectivity_of_a_full_card(make_kernel):
    _, nk, sp = _connectivity(make_kernel.connectivity_cfg(MAX_COMPUTE_UNITS))
    names = cu_names(MAX_COMPUTE_UNITS)
    assert nk == [f"nk={KERNEL_NAME}:16"] and names[-1] == f"{KERNEL_NAME}_16"
    assert set(sp) == {f"{cu}.{m}" for cu in names for m in AXI_MASTERS}
    assert sorted(sp.values(), key=lambda b: int(b[4:-1])) == [f"HBM[{i}]" for i in range(32)]
    # the masters are the ports kernel.xml declares, with the pointers that use them
    assert {r.port for r in arguments() if r.port} == set(AXI_MASTERS)


# -- placement: SLRs and HBM pseudo-channels (hdl/placement.py) ------------------------------

def test_connectivity_places_every_cu_in_an_slr_within_its_dsps(make_kernel):
    from hdl.placement import SLRS, plan, slr_budget

    for k in (1, 2, 3, MAX_COMPUTE_UNITS):
        placement = plan(AccelConfig(), k)
        lines, nk, sp = _connectivity(make_kernel.connectivity_cfg(k, placement))
        slr = dict(ln[4:].split(":") for ln in lines if ln.startswith("slr="))
        assert list(slr) == cu_names(k) and set(slr.values()) <= set(SLRS), slr
        used = {s: placement["dsp48e2_per_cu"] * list(slr.values()).count(s) for s in SLRS}
        assert used == placement["slr_dsp48e2_used"]
        assert all(used[s] <= slr_budget()[s] for s in SLRS), used
        assert len(lines) == 2 + 2 * k + k                  # [connectivity], nk=, sp=, slr=
        # the default CU needs one pseudo-channel per master: the banks of before
        assert sp == {f"{cu}.{m}": b for cu, ms in hbm_banks(k).items() for m, b in ms.items()}
    # the SLRs fill evenly, SLR0 (next to the HBM) first
    assert list(plan(AccelConfig(), 3)["slr"].values()) == ["SLR0", "SLR1", "SLR2"]


def test_hbm_channels_follow_the_bytes_per_cycle():
    from hdl.placement import HBM_PC_GBPS, hbm_channels, hbm_need

    wide = dataclasses.replace(AccelConfig(), instances=64, out_channels=64, max_out_channels=64)
    need = hbm_need(wide)
    # 64 channels of 64 x 64 at C = 0: one 64-byte beat of output per cycle, 19.2 GB/s at 300 MHz
    assert need[GMEM_OUT]["bytes_per_cycle"] > 60 and need[GMEM_OUT]["gb_per_s"] > HBM_PC_GBPS
    assert hbm_channels(wide) == {GMEM_IN: 1, GMEM_OUT: 2}
    assert hbm_channels(AccelConfig()) == {GMEM_IN: 1, GMEM_OUT: 1}
    banks = hbm_banks(3, {GMEM_IN: 1, GMEM_OUT: 2})
    assert banks["velcro_kernel_2"] == {GMEM_IN: "HBM[3]", GMEM_OUT: "HBM[4:5]"}
    with pytest.raises(ValueError, match="11 compute units of 3 HBM pseudo-channels each"):
        hbm_banks(11, {GMEM_IN: 1, GMEM_OUT: 2})


def test_slr_assignment_refuses_what_does_not_fit():
    from hdl.placement import assign_slrs, slr_budget

    budget = slr_budget()
    assert assign_slrs(3, budget["SLR0"]) == ["SLR0", "SLR1", "SLR2"]
    # too big for SLR0 (the shell's): SLR1 and SLR2 take one each, the third fits nowhere
    with pytest.raises(ValueError, match="CU 3 has no room"):
        assign_slrs(3, budget["SLR1"])
    with pytest.raises(ValueError, match="CU 1 has no room"):
        assign_slrs(1, max(budget.values()) + 1)


def test_clock_rule():
    from hdl.placement import clock_supported

    assert clock_supported(1) == clock_supported(6) == 300.0
    assert clock_supported(12) == 150.0 and clock_supported(7) == round(300 * 6 / 7, 1)
    with pytest.raises(ValueError, match="levels must be a positive int"):
        clock_supported(0)


# -- make_kernel.py: the folder, the CLI ------------------------------------------------------

def test_make_kernel_cus_2_folder(make_kernel, tmp_path, capsys):
    out = tmp_path / "kernel"
    assert make_kernel.main([*SMALL_ARGS, "--cus", "2", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["velcro_kernel.v", "kernel.xml", "package_kernel.tcl", "velcro_kernel.xdc",
         "connectivity.cfg", "host_velcro.py", "config.json", ".inputs.sha1"])
    assert read_kernel_config((out / "config.json").read_text()) == (SMALL, 2)
    from hdl.placement import plan

    placement = json.loads((out / "config.json").read_text())["placement"]
    assert placement == json.loads(json.dumps(plan(SMALL, 2)))
    assert (out / "connectivity.cfg").read_text() == make_kernel.connectivity_cfg(2, placement)
    assert (out / "host_velcro.py").read_bytes() == HOST.read_bytes()
    verilog = (out / "velcro_kernel.v").read_text()
    assert "module velcro_kernel(" in verilog
    # the SAIF files' scope velcro_kernel/engine (sim.saif_window.kernel_saif) is this instance
    assert re.search(rf"^  \S+ +{ENGINE_INSTANCE} \($", verilog, re.M)
    # the XDC's clock from the one definition (hdl.config)
    assert "create_clock -name ap_clk -period 3.333 [get_ports ap_clk]" in (
        out / "velcro_kernel.xdc").read_text()
    assert KERNEL_CLOCK_PERIOD_NS == 3.333
    # no zero initial block on the UltraRAM memories (Vivado cannot initialise URAM; written
    # before read: hdl.synthesis.strip_uram_init), block RAM and LUTRAM keep theirs
    assert uram_memories(verilog) == {"entries": False}     # one per pair, twins side by side
    assert re.search(r"^    windows\[0\] = ", verilog, re.M)
    # the cocotb kernel tests simulate this very text (hdl.kernel.kernel_rtl)
    assert kernel_rtl(SMALL).read_text() == verilog
    assert "2 compute units" in capsys.readouterr().out
    # again with another count: the folder is replaced whole, no temporary folder left
    (out / "stale.txt").write_text("from an older run")
    assert make_kernel.main([*SMALL_ARGS, "--cus", "3", "--out", str(out)]) == 0
    assert read_kernel_config((out / "config.json").read_text()) == (SMALL, 3)
    assert not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["kernel"]


def test_make_kernel_one_folder_per_build_cached_by_content(make_kernel, tmp_path, capsys,
                                                            monkeypatch):
    """Without --out: build/kernels/<tag>_cu<K>, build/kernel linked to the latest; CUS=2 leaves
    the CUS=1 folder alone; an unchanged folder is not rewritten (its .xo survives)."""
    monkeypatch.setattr(make_kernel, "BUILD", tmp_path)
    one, two = (tmp_path / "kernels" / f"{SMALL.tag}_cu{k}" for k in (1, 2))
    assert make_kernel.main([*SMALL_ARGS, "--cus", "1"]) == 0
    assert (tmp_path / "kernel").resolve() == one.resolve()
    (one / "velcro_kernel.xo").write_text("packaged")              # make xo's output
    mtime = (one / "velcro_kernel.v").stat().st_mtime_ns
    assert make_kernel.main([*SMALL_ARGS, "--cus", "2"]) == 0
    assert (tmp_path / "kernel").resolve() == two.resolve()
    assert read_kernel_config((one / "config.json").read_text()) == (SMALL, 1)
    assert read_kernel_config((two / "config.json").read_text()) == (SMALL, 2)
    capsys.readouterr()
    assert make_kernel.main([*SMALL_ARGS, "--cus", "1"]) == 0
    assert "is up to date" in capsys.readouterr().out
    assert (tmp_path / "kernel").resolve() == one.resolve()
    assert (one / "velcro_kernel.xo").read_text() == "packaged"
    assert (one / "velcro_kernel.v").stat().st_mtime_ns == mtime
    # a changed input (another K's stamp here) rewrites the folder whole
    (one / ".inputs.sha1").write_text("stale")
    assert make_kernel.main([*SMALL_ARGS, "--cus", "1"]) == 0
    assert not (one / "velcro_kernel.xo").exists()
    assert (one / "velcro_kernel.v").read_text() == (two / "velcro_kernel.v").read_text()


@pytest.mark.parametrize("value, message", [
    ("17", "argument --cus: compute units must be 1..16, not 17: the U280 has 32 HBM "
           "pseudo-channels and each compute unit takes 2"),
    ("0", "argument --cus: compute units must be 1..16, not 0"),
    ("-1", "argument --cus: compute units must be 1..16, not -1"),
    ("two", "argument --cus: must be a whole number of compute units, not 'two'"),
])
def test_make_kernel_refuses_bad_cus(make_kernel, tmp_path, capsys, value, message):
    out = tmp_path / "kernel"
    with pytest.raises(SystemExit) as info:
        make_kernel.main([*SMALL_ARGS, "--cus", value, "--out", str(out)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("velcro: error: make_kernel.py: ")
    assert message in err
    assert list(tmp_path.iterdir()) == []                # no folder, not even a temporary one


def test_make_kernel_bad_config_leaves_nothing(make_kernel, tmp_path, capsys):
    out = tmp_path / "kernel"
    assert make_kernel.main(["--height", "2", "--cus", "2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("velcro: error: make_kernel.py: ")
    assert list(tmp_path.iterdir()) == []


def test_make_kernel_program_exit_status(tmp_path):
    """As a program (what make runs): one line on stderr, status 2, no traceback."""
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "make_kernel.py"), "--cus", "20",
                        "--out", str(tmp_path / "k")], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "compute units must be 1..16, not 20" in r.stderr and "Traceback" not in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_make_kernel_target_passes_cus_with_args():
    r = subprocess.run(["make", "-n", "kernel", "CUS=2", 'ARGS=--instances 4 --height 9'],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "scripts/make_kernel.py --instances 4 --height 9 --cus 2" in r.stdout
    r = subprocess.run(["make", "-n", "kernel"], capture_output=True, text=True, cwd=REPO)
    assert "scripts/make_kernel.py  --cus 1" in r.stdout


# -- the host's multi-CU flow against a fake pyxrt ---------------------------------------------

class FakeXrt:
    """Just enough of pyxrt for host_velcro.run: a device whose compute units (the names of
    connectivity.cfg) compute their outputs from their own buffers. A CU identifies each image
    of its ifmap buffer by its packed bytes, answers with the golden model's compact outputs,
    and checks that every buffer is in the bank connectivity.cfg gives that CU's master."""

    def __init__(self, cfg, cus, frames, corrupt=None):
        fake = self
        self.events, self.shares = [], {}
        schedule = deal(frames[0].mask, cfg.instances)
        per = image_beats(cfg) * BEAT_BYTES
        known = {pack_ifmap(cfg, f.ifmap): i for i, f in enumerate(frames)}
        out_bytes = compact_beats_per_image(cfg, schedule.stream_length) * BEAT_BYTES
        banks = hbm_banks(cus)
        master = {r.arg: r.port for r in arguments() if r.port}

        class Bo:
            normal = 0

            def __init__(self, device, size, flags, group):
                self.data, self.group = bytearray(size), group

            def write(self, array, offset):
                raw = bytes(array)
                self.data[offset:offset + len(raw)] = raw

            def sync(self, direction, size, offset):
                assert size <= len(self.data)

            def read(self, size, offset):
                return np.frombuffer(bytes(self.data[offset:offset + size]), np.uint8)

        class Run:
            def __init__(self, cu):
                self.cu = cu

            def wait(self):
                fake.events.append(("wait", self.cu))
                return "completed"

        class Kernel:
            class cu_access_mode:
                exclusive = "exclusive"

            def __init__(self, device, uuid, name, mode):
                m = re.fullmatch(rf"{KERNEL_NAME}:\{{({KERNEL_NAME}_\d+)\}}", name)
                assert m and m.group(1) in banks, name
                self.cu = m.group(1)

            def group_id(self, i):
                return int(banks[self.cu][master[BUFFERS[i]]][4:-1])

            def __call__(self, *args):
                bos = dict(zip(BUFFERS, args))
                scalars = dict(zip((r.arg for r in arguments()[len(BUFFERS):]),
                                   args[len(BUFFERS):]))
                images_reg, ifmap_beats = scalars["images"], scalars["ifmap_beats"]
                assert ifmap_beats * BEAT_BYTES == len(bos["ifmap"].data) == images_reg * per
                for i, name in enumerate(BUFFERS):
                    assert bos[name].group == self.group_id(i), f"{self.cu} {name} in a wrong bank"
                ifmap = bytes(bos["ifmap"].data)
                images = [known[ifmap[i * per:(i + 1) * per]] for i in range(images_reg)]
                fake.shares[self.cu] = images
                fake.events.append(("start", self.cu))
                for n, i in enumerate(images):
                    values = golden_ofm(frames[i]).reshape(-1)[schedule.compact_flat]
                    if corrupt == i:
                        values = values.copy()
                        values[0] ^= 1
                    raw = values.tobytes().ljust(out_bytes, b"\0")
                    bos["ofm"].data[n * out_bytes:(n + 1) * out_bytes] = raw
                return Run(self.cu)

            def read_register(self, offset):
                return 0

        self.device = lambda index: SimpleNamespace(load_xclbin=lambda path: "uuid")
        self.bo, self.kernel = Bo, Kernel
        self.xclBOSyncDirection = SimpleNamespace(XCL_BO_SYNC_BO_TO_DEVICE=0,
                                                  XCL_BO_SYNC_BO_FROM_DEVICE=1)
        self.ert_cmd_state = SimpleNamespace(ERT_CMD_STATE_COMPLETED="completed")


def _host_batch(images):
    rng = np.random.default_rng(seed_for("host_cus", images))
    first = random_frame(SMALL, rng, density=0.5)
    ifmaps = np.stack([first.ifmap] + [random_frame(SMALL, rng).ifmap for _ in range(images - 1)])
    return first, ifmaps, [dataclasses.replace(first, ifmap=x) for x in ifmaps]


@pytest.mark.parametrize("images, cus", [(5, 2), (1, 2), (4, 1), (7, 3)])
def test_host_runs_every_cu_on_its_share(host, capsys, images, cus):
    frame, ifmaps, frames = _host_batch(images)
    xrt = FakeXrt(SMALL, cus, frames)
    assert host.run(xrt, xrt.device(0), "uuid", SMALL, cus, frame, ifmaps) == 0
    shares = split_batch(images, cus)
    assert xrt.shares == {cu: list(s) for cu, s in zip(cu_names(cus), shares) if len(s)}
    starts = [i for i, (what, _) in enumerate(xrt.events) if what == "start"]
    waits = [i for i, (what, _) in enumerate(xrt.events) if what == "wait"]
    assert max(starts) < min(waits), f"a CU was waited for before all were started: {xrt.events}"
    out = capsys.readouterr().out
    busy = sum(1 for s in shares if len(s))
    assert f"PASS: {images} images on {busy} of {cus} compute units" in out


def test_host_names_the_wrong_image_and_its_cu(host, capsys):
    frame, ifmaps, frames = _host_batch(5)
    xrt = FakeXrt(SMALL, 2, frames, corrupt=4)            # image 4: CU 2's second
    assert host.run(xrt, xrt.device(0), "uuid", SMALL, 2, frame, ifmaps) == 1
    err = capsys.readouterr().err
    assert err.startswith("FAIL: image 4 (velcro_kernel_2): 1 of ")


def test_host_prepare_batches_for_the_cus(host, tmp_path):
    (tmp_path / "config.json").write_text(kernel_config_json(SMALL, 3))
    (tmp_path / "velcro.xclbin").write_bytes(b"")
    ns = argparse.Namespace(config=tmp_path / "config.json", xclbin=tmp_path / "velcro.xclbin",
                            frame=None, images=None)
    cfg, cus, [(layer, frame, ifmaps)] = host.prepare(ns)
    assert (cfg, layer, cus, len(ifmaps)) == (SMALL, SMALL, 3, 6)   # two images per CU
    assert np.array_equal(ifmaps[0], frame.ifmap)
    ns.images = 2
    assert len(host.prepare(ns)[2][0][2]) == 2          # fewer images than CUs is fine
    for bad in (0, -1):
        ns.images = bad
        with pytest.raises(host.HostError, match=f"--images must be at least 1, not {bad}"):
            host.prepare(ns)


def test_host_script_refuses_a_bad_cu_count(tmp_path):
    (tmp_path / "config.json").write_text(
        kernel_config_json(SMALL, 2).replace('"compute_units": 2', '"compute_units": 40'))
    r = subprocess.run([sys.executable, str(HOST), str(tmp_path / "x.xclbin"),
                        "--config", str(tmp_path / "config.json")],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "compute units must be 1..16, not 40" in r.stderr


def test_buffers_of_a_share_are_sized_for_it():
    """Each CU's buffers hold its share only: the ifmap and ofm scale with it."""
    f = random_frame(SMALL, np.random.default_rng(0))
    s = deal(f.mask, SMALL.instances)
    one, three = buffer_bytes(SMALL, s, 1), buffer_bytes(SMALL, s, 3)
    assert three["ifmap"] == 3 * one["ifmap"] and three["ofm"] == 3 * one["ofm"]
    assert three["params"] == one["params"] and three["schedule"] == one["schedule"]


def test_host_prepares_one_run_per_layer(host, tmp_path):
    """--frame once per layer: each within the kernel's maxima becomes its own layer on the
    design, run in order; one beyond them is refused before the device."""
    (tmp_path / "config.json").write_text(kernel_config_json(SMALL, 2))
    (tmp_path / "velcro.xclbin").write_bytes(b"")
    shapes = [SMALL, SMALL.layer(5, 7, SMALL.in_channels, 2)]
    paths = []
    for i, cfg in enumerate(shapes):
        paths.append(tmp_path / f"layer{i}.npz")
        random_frame(cfg, np.random.default_rng(i)).save(paths[-1])
    ns = argparse.Namespace(config=tmp_path / "config.json", xclbin=tmp_path / "velcro.xclbin",
                            frame=paths, images=None)
    _, _, layers = host.prepare(ns)
    assert [layer for layer, _, _ in layers] == shapes
    big = AccelConfig(height=SMALL.height + 1, width=SMALL.width,
                      in_channels=SMALL.in_channels, instances=SMALL.instances)
    random_frame(big, np.random.default_rng(0)).save(tmp_path / "big.npz")
    ns.frame = paths + [tmp_path / "big.npz"]
    with pytest.raises(host.HostError, match=f"H={big.height} \\(kernel maximum: {SMALL.height}\\)"):
        host.prepare(ns)
