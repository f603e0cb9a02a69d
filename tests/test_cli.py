"""`velcro sim`: a frame through the RTL, and bad input rejected in one line with exit status 2,
before anything is built, with nothing written; concurrent runs, SIGTERM, build estimates."""

import argparse
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import seed_for

from hdl.config import AccelConfig
from hdl.contract import PIPELINE_LATENCY, compute_cycle_bound
from hdl.program import LayerProgram
from hdl.results import RESULT_ARRAYS
from sim.runner import run_cycles
from py_ref.golden import golden_ofm, random_frame
from py_ref.schedule import deal

REPO = Path(__file__).resolve().parent.parent
# velcro sim's default design: P = 16 instances, here for a layer of N = 2 < P channels
CFG = AccelConfig(height=6, width=8, in_channels=2, instances=16, out_channels=2)
# The smallest build: configurations that must be compiled from scratch by a test use it
# (P = 2 through `velcro sim --instances 2`, TINY_ARGS).
TINY = AccelConfig(height=5, width=6, in_channels=1, instances=2)
TINY_ARGS = ("--instances", str(TINY.instances))
SEED = 7


def velcro(*args, env=None):
    return subprocess.run([sys.executable, "-m", "velcro_cli", *map(str, args)],
                          capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, **(env or {})})


def _default_signals():
    """In the child: SIGINT as a terminal's Ctrl-C finds it. A shell starts background jobs with
    SIGINT ignored, and the test run may be one (then Python never installs its handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def popen_velcro(*args, env):
    return subprocess.Popen([sys.executable, "-m", "velcro_cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, **env}, preexec_fn=_default_signals)


def assert_one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("velcro: error:"), r.stderr
    assert "Traceback" not in r.stderr and "pickle" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr
    assert r.stdout == ""


@pytest.fixture
def frame():
    return random_frame(CFG, np.random.default_rng(SEED), density=0.4)


@pytest.fixture
def no_build(tmp_path):
    """Environment with an empty build root: a refusal must leave it uncreated."""
    root = tmp_path / "build-root"
    yield {"VELCRO_BUILD": str(root)}
    assert not root.exists(), f"refused input still generated or built: {list(root.rglob('*'))}"


@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_sim_frame(tmp_path, frame, sim):
    frame.save(tmp_path / "frame.npz")
    r = velcro("sim", tmp_path / "frame.npz", "--out", tmp_path / "result.npz", "--sim", sim)
    assert r.returncode == 0, r.stderr
    bound = compute_cycle_bound(CFG, deal(frame.mask, CFG.instances))
    assert r.stdout.count("\n") == 1 and r.stdout.startswith(f"images=1 image_cycles={bound} "), \
        r.stdout
    cycles = run_cycles(LayerProgram.for_frame(CFG, frame), 1)     # said before the run starts
    assert f"velcro sim: 1 image, about {cycles:,} cycles to simulate: about " in r.stderr
    computed = int(frame.uncompressed.sum())
    assert f" computed={computed}/{frame.mask.size} " in r.stdout, r.stdout
    assert " golden=bit-exact -> " in r.stdout, r.stdout
    assert "velcro sim: golden check: bit-exact (1 image " in r.stderr, r.stderr
    with np.load(tmp_path / "result.npz") as res:
        assert tuple(res.files) == RESULT_ARRAYS
        assert res["ofm"].dtype == np.uint8
        np.testing.assert_array_equal(res["ofm"], golden_ofm(frame))
        assert res["image_computed"].tolist() == frame.uncompressed.tolist()
        assert res["image_skipped"].tolist() == (CFG.positions - frame.uncompressed).tolist()
        assert int(res["image_cycles"]) == bound
        assert int(res["batches"]) == int(res["images"]) == 1
        assert int(res["batch_cycles"]) > int(res["stream_cycles"]) > int(res["image_cycles"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame.npz", "result.npz"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "result.npz").stat().st_mode & 0o777 == 0o666 & ~umask   # not mkstemp's 0600


@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_sim_batch(tmp_path, frame, sim):
    """ifmap [B, C_in, H, W]: B images through one FRAME command, per-image results."""
    import dataclasses
    rng = np.random.default_rng(seed_for("cli-batch", sim))
    ifmaps = rng.integers(-128, 128, size=(3, *frame.ifmap.shape), dtype=np.int8)
    arrays = {**_arrays(frame), "ifmap": ifmaps}
    np.savez(tmp_path / "frame.npz", **arrays)
    r = velcro("sim", tmp_path / "frame.npz", "--out", tmp_path / "result.npz", "--sim", sim)
    assert r.returncode == 0, r.stderr
    bound = compute_cycle_bound(CFG, deal(frame.mask, CFG.instances))
    assert r.stdout.count("\n") == 1 and r.stdout.startswith(f"images=3 image_cycles={bound} "), \
        r.stdout
    with np.load(tmp_path / "result.npz") as res:
        assert res["ofm"].shape == (3, *frame.mask.shape) and res["ofm"].dtype == np.uint8
        for k in range(3):
            np.testing.assert_array_equal(res["ofm"][k],
                                          golden_ofm(dataclasses.replace(frame, ifmap=ifmaps[k])),
                                          err_msg=f"image {k}")
        assert res["image_cycles"].tolist() == [bound] * 3
        assert res["image_computed"].shape == (3, CFG.out_channels)
        assert res["image_instance"].shape == (3, CFG.instances)
        assert (res["image_computed"] == frame.uncompressed).all()
        assert int(res["stream_cycles"]) >= 3 * (bound - PIPELINE_LATENCY)   # three images of work


def _fake_result(frame, ofm):
    from hdl.results import BATCH_COUNTERS, IMAGE_COUNTERS, StreamResult
    counters = {name: 0 for name in BATCH_COUNTERS}
    counters.update({name: np.zeros((1, CFG.out_channels), np.int64) for name in IMAGE_COUNTERS})
    counters["image_cycles"] = np.zeros(1, np.int64)
    return StreamResult(ofm[None].astype(np.uint8), counters, 0)


def test_golden_mismatch_names_the_first_difference(frame):
    from sim.frame_runner import golden_mismatch
    good = golden_ofm(frame)
    assert golden_mismatch(frame, _fake_result(frame, good)) is None
    bad = good.copy()
    bad[1, 2, 3] ^= 1
    message = golden_mismatch(frame, _fake_result(frame, bad))
    assert message.startswith("image 0: 1 of ") and "[n,i,j]=[1, 2, 3]" in message, message


def test_sim_golden_mismatch_exits_1_in_one_line(tmp_path, frame, monkeypatch, capsys):
    """An RTL result that differs from the golden model: exit status 1, one line, result kept."""
    import sim.frame_runner
    import velcro_cli
    bad = golden_ofm(frame).copy()
    bad[0, 0, 0] ^= 0x80
    monkeypatch.setattr(velcro_cli, "_cached_build", lambda cfg, args, say: None)
    monkeypatch.setattr(sim.frame_runner, "run_frame",
                        lambda frame, **kw: _fake_result(frame, bad))
    frame.save(tmp_path / "frame.npz")
    status = velcro_cli.main(["sim", str(tmp_path / "frame.npz"), "--out",
                              str(tmp_path / "result.npz")])
    out, err = capsys.readouterr()
    assert status == 1 and out == "", (status, out, err)
    lines = err.splitlines()          # progress lines, then the one error line
    assert lines[-1].startswith("velcro: error: golden check failed: image 0:"), err
    assert sum(line.startswith("velcro: error") for line in lines) == 1, err
    assert (tmp_path / "result.npz").exists()


def test_sim_refuses_an_empty_batch(tmp_path, frame, no_build):
    arrays = {**_arrays(frame), "ifmap": np.zeros((0, *frame.ifmap.shape), np.int8)}
    np.savez(tmp_path / "frame.npz", **arrays)
    r = velcro("sim", tmp_path / "frame.npz", "--out", tmp_path / "result.npz", env=no_build)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "batch of no image" in r.stderr
    assert not (tmp_path / "result.npz").exists()


def test_sim_refuses_a_bad_image_in_a_batch(tmp_path, frame, no_build):
    arrays = {**_arrays(frame), "ifmap": np.zeros((2, 1, *frame.ifmap.shape[1:]), np.int8)}
    np.savez(tmp_path / "frame.npz", **arrays)
    r = velcro("sim", tmp_path / "frame.npz", "--out", tmp_path / "result.npz", env=no_build)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "array 'weight' has shape" in r.stderr and "batch" in r.stderr
    assert not (tmp_path / "result.npz").exists()


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
def test_sim_rejects_bad_frame(tmp_path, frame, problem, no_build):
    arrays = _arrays(frame)
    BAD[problem](arrays)
    np.savez(tmp_path / "frame.npz", **arrays)
    r = velcro("sim", tmp_path / "frame.npz", "--out", tmp_path / "result.npz", env=no_build)
    assert_one_line_error(r, problem)
    assert not (tmp_path / "result.npz").exists()


# -- files that are not a readable .npz ----------------------------------------------------------

def _truncated(path, frame):
    frame.save(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _bit_flipped(path, frame):
    """One bit flipped inside the ifmap member's data: only the zip CRC can tell."""
    frame.save(path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("ifmap.npy")
    header = 30 + len(info.filename) + len(info.extra)          # local file header
    data[info.header_offset + header + info.compress_size - 3] ^= 0x10
    path.write_bytes(bytes(data))


def _compressed_flipped(path, frame):
    """savez_compressed, one bit flipped in the deflate stream (zlib or CRC error)."""
    np.savez_compressed(path, **_arrays(frame))
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("means.npy")
    header = 30 + len(info.filename) + len(info.extra)
    data[info.header_offset + header + info.compress_size // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _npy(path, frame):
    with open(path, "wb") as f:
        np.save(f, frame.ifmap)


def _text(path, frame):
    path.write_text("ifmap weight bias\n1 2 3\n")


def _pickled(path, frame):
    np.savez(path, **{**_arrays(frame), "bias": np.array([1, "x"], dtype=object)})


def _junk(path, frame):
    path.write_bytes(b"not a zip file")


def _folder(path, frame):
    path.mkdir()


UNREADABLE = {
    "truncated": (_truncated, "cannot read"),
    "bit-flipped": (_bit_flipped, "checksum error in ifmap.npy"),
    "compressed-bit-flipped": (_compressed_flipped, "damaged"),
    "npy": (_npy, "it is a .npy file"),
    "text": (_text, "not a .npz archive"),
    "junk": (_junk, "not a .npz archive"),
    "object-array": (_pickled, "Python objects"),
    "folder": (_folder, "it is a folder"),
    "missing": (lambda path, frame: None, "no such file"),
}


@pytest.mark.parametrize("kind", UNREADABLE)
def test_sim_rejects_unreadable_files(tmp_path, frame, kind, no_build):
    make, message = UNREADABLE[kind]
    path = tmp_path / "frame.npz"
    make(path, frame)
    r = velcro("sim", path, "--out", tmp_path / "result.npz", env=no_build)
    assert_one_line_error(r, f"velcro: error: cannot read {path}", message)
    assert not (tmp_path / "result.npz").exists()
    assert {p.name for p in tmp_path.iterdir()} <= {"frame.npz"}


def test_every_single_bit_flip_is_read_or_refused(tmp_path, frame):
    """Flip one bit of each byte of a FRAME.npz: the loader returns a valid frame or raises
    CliError, never anything else (BadZipFile, zlib.error, ValueError, MemoryError, ...)."""
    from py_ref.errors import CliError
    from py_ref.frame_file import read_frame

    frame.save(tmp_path / "good.npz")
    good = (tmp_path / "good.npz").read_bytes()
    path = tmp_path / "flipped.npz"
    refused = 0
    for i in range(len(good)):
        data = bytearray(good)
        data[i] ^= 1 << (i % 8)
        path.write_bytes(bytes(data))
        try:
            read_frame(path)
        except CliError as exc:
            refused += 1
            assert "\n" not in str(exc) and "pickle" not in str(exc), str(exc)
    assert refused > len(good) // 2


def test_sim_accepts_big_endian_arrays(tmp_path, frame):
    arrays = _arrays(frame)
    arrays["bias"] = arrays["bias"].astype(">i4")
    arrays["mult"] = arrays["mult"].astype(">i8")
    np.savez(tmp_path / "frame.npz", **arrays)
    r = velcro("sim", tmp_path / "frame.npz", "--out", tmp_path / "result.npz")
    assert r.returncode == 0, r.stderr
    with np.load(tmp_path / "result.npz") as res:
        np.testing.assert_array_equal(res["ofm"], golden_ofm(frame))


# -- output paths ----------------------------------------------------------------------------

def test_sim_refuses_to_overwrite_its_input(tmp_path, frame, no_build):
    path = tmp_path / "frame.npz"
    frame.save(path)
    before = path.read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.npz").symlink_to(path)
    for out in (path, tmp_path / "sub" / ".." / "frame.npz", tmp_path / "link.npz"):
        r = velcro("sim", path, "--out", out, env=no_build)
        assert_one_line_error(r, "is also an input file")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame.npz", "link.npz", "sub"]


@pytest.mark.parametrize("out, message", [("", "output path is empty"),
                                          ("{tmp}", "is a folder"),
                                          ("{tmp}/absent/result.npz", "does not exist")])
def test_sim_refuses_bad_output_paths(tmp_path, frame, out, message, no_build):
    frame.save(tmp_path / "frame.npz")
    r = velcro("sim", tmp_path / "frame.npz", "--out", out.format(tmp=tmp_path), env=no_build)
    assert_one_line_error(r, message)
    assert [p.name for p in tmp_path.iterdir()] == ["frame.npz"]


# -- the command line itself -----------------------------------------------------------------

def test_version():
    r = velcro("--version")
    assert r.returncode == 0 and r.stdout.strip() == "velcro 0.1.0", (r.stdout, r.stderr)


@pytest.mark.parametrize("args, message", [
    ((), "the following arguments are required: command"),
    (("bogus",), "invalid choice: 'bogus'"),
    (("sim",), "sim: the following arguments are required: frame, --out"),
    (("sim", "f.npz", "--out", "r.npz", "--no-such-flag"), "unrecognized arguments: --no-such-flag"),
])
def test_parser_errors_are_one_line(args, message):
    r = velcro(*args)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("velcro: error:") and r.stderr.count("\n") == 1, r.stderr
    assert message in r.stderr


def test_every_option_has_help():
    import velcro_cli

    missing = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, path + [name])
            elif not action.help:
                missing.append(" ".join(path + [action.dest]))

    walk(velcro_cli.build_parser(), ["velcro"])
    assert missing == []


def test_help_is_plain_text_and_describes_every_command():
    """No reStructuredText backticks in any --help; every subcommand has a description."""
    r = velcro("--help")
    assert r.returncode == 0 and "`" not in r.stdout, r.stdout
    for name in ("sim", "network", "profile", "compress", "evaluate", "export"):
        r = velcro(name, "--help")
        assert r.returncode == 0 and "`" not in r.stdout, r.stdout
        # usage, a blank line, then a description paragraph before the options
        text = r.stdout.split("\n\n")
        assert not text[1].startswith(("options:", "positional arguments:")), (name, r.stdout)


def test_all_subcommands_are_registered():
    r = velcro("--help")
    assert r.returncode == 0
    for name in ("sim", "profile", "compress", "evaluate", "export"):
        assert name in r.stdout


@pytest.mark.parametrize("module", ["torch", "numpy"])
def test_broken_install_is_one_line(tmp_path, module):
    """A missing dependency is named; it does not silently drop subcommands."""
    code = (f"import sys; sys.modules[{module!r}] = None; import velcro_cli; "
            f"sys.exit(velcro_cli.main(['export', '--out', {str(tmp_path / 'x.npz')!r}]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2, r.stderr
    assert r.stderr == f"velcro: error: broken install: {module} is missing (run make venv)\n"


# -- builds: estimate, failures, concurrency, SIGTERM ----------------------------------------------

@pytest.fixture(scope="module")
def tiny_rtl():
    """TINY's generated Verilog (folder build/rtl/<tag>), to seed fresh build roots without
    generating again."""
    from hdl.generate import generated_rtl

    return generated_rtl(TINY).parent


def fresh_root(tmp_path, rtl=None) -> Path:
    root = tmp_path / "build-root"
    if rtl is not None:
        shutil.copytree(rtl, root / "rtl" / rtl.name, ignore=shutil.ignore_patterns(".lock"))
    return root


def tiny_frame(path, seed):
    frame = random_frame(TINY, np.random.default_rng(seed), density=0.5)
    frame.save(path)
    return frame


# (instances, lanes, height, width): measured first-build wall seconds, generation + Verilator
# (the rows of sim/runner.py's BUILD_MODEL table)
MEASURED_VERILATOR_BUILDS = {(4, 1, 32, 32): 52.7, (16, 1, 16, 16): 86.1, (16, 1, 64, 64): 121.7,
                             (16, 16, 64, 64): 667.2, (16, 1, 128, 128): 282.5,
                             (64, 1, 64, 64): 466.6}


def test_estimate_model():
    from sim.runner import estimate_build

    for (n, lanes, h, w), seconds in MEASURED_VERILATOR_BUILDS.items():
        cfg = AccelConfig(height=h, width=w, in_channels=lanes, instances=n)
        assert 0.7 < estimate_build(cfg, "verilator").seconds / seconds < 1.3, cfg.tag
    tiny = estimate_build(TINY, "verilator")
    assert 10 < tiny.seconds < 60 and not tiny.too_big
    assert estimate_build(TINY, "verilator", generate=False).seconds < tiny.seconds
    biggest = estimate_build(AccelConfig(height=256, width=256, in_channels=64, instances=64),
                             "verilator")
    assert biggest.seconds > 3600 and biggest.megabytes > 16 * 1024
    assert "min and" in str(biggest) and "GB of memory" in str(biggest)


def test_sim_refuses_a_build_over_the_limit(tmp_path):
    root = fresh_root(tmp_path)
    tiny_frame(tmp_path / "frame.npz", 1)
    r = velcro("sim", tmp_path / "frame.npz", "--out", tmp_path / "result.npz", *TINY_ARGS,
               "--max-build-minutes", "0.01", env={"VELCRO_BUILD": str(root)})
    assert_one_line_error(r, f"building {TINY.tag} for verilator would take about",
                          "--max-build-minutes=0.01")
    assert not root.exists() and not (tmp_path / "result.npz").exists()


def test_sim_build_failure_names_the_log(tmp_path, tiny_rtl):
    root = fresh_root(tmp_path, tiny_rtl)
    tiny_frame(tmp_path / "frame.npz", 1)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "make").write_text("#!/bin/sh\necho 'make: *** the C++ compiler broke' >&2\nexit 2\n")
    (fake / "make").chmod(0o755)
    r = velcro("sim", tmp_path / "frame.npz", "--out", tmp_path / "result.npz", *TINY_ARGS,
               env={"VELCRO_BUILD": str(root), "PATH": f"{fake}:{os.environ['PATH']}"})
    log = root / "sim" / "verilator" / TINY.tag / "build.log"
    assert r.returncode == 2, r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert lines[-1] == f"velcro: error: verilator build failed, see {log}", r.stderr
    assert all(line.startswith("velcro sim: ") for line in lines[:-1]), r.stderr
    assert "the C++ compiler broke" in log.read_text()
    assert not (tmp_path / "result.npz").exists()


def test_sim_simulation_failure_names_the_log(tmp_path, frame):
    frame.save(tmp_path / "frame.npz")
    r = velcro("sim", tmp_path / "frame.npz", "--out", tmp_path / "result.npz",
               env={"VELCRO_SEED": "not-a-number"})           # the testbench cannot start
    assert r.returncode == 2, r.stderr
    assert r.stdout == "" and "Traceback" not in r.stderr
    last = r.stderr.splitlines()[-1]
    assert last.startswith("velcro: error: simulation failed, see "), r.stderr
    assert Path(last.rsplit(" ", 1)[1]).is_file()
    assert not (tmp_path / "result.npz").exists()


def test_two_concurrent_sims_of_a_fresh_configuration(tmp_path, tiny_rtl):
    """Both need the same new build at the same moment (its Verilog is already generated, so
    they reach the compiler together): one compiles, the other waits for it and reuses the
    model; both results are bit-exact.  (Without the build lock, both compilers share the
    folder and one run dies: invalid precompiled headers, or a half-written object file.)"""
    root = fresh_root(tmp_path, tiny_rtl)
    env = {"VELCRO_BUILD": str(root)}
    frames = [tiny_frame(tmp_path / f"frame{i}.npz", 10 + i) for i in range(2)]
    procs = [popen_velcro("sim", tmp_path / f"frame{i}.npz", "--out", tmp_path / f"result{i}.npz",
                          *TINY_ARGS, env=env) for i in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err), f, i in zip(procs, outs, frames, range(2)):
        assert p.returncode == 0, err
        assert out.count("\n") == 1 and out.startswith("images=1 image_cycles="), out
        with np.load(tmp_path / f"result{i}.npz") as res:
            np.testing.assert_array_equal(res["ofm"], golden_ofm(f))
    errs = "".join(err for _, err in outs)
    assert f"building {TINY.tag} for verilator (first time, about" in errs
    assert errs.count("velcro sim: compiling") == 1, errs
    assert errs.count(f"velcro sim: compiled {TINY.tag} in ") == 1, errs    # says it finished
    assert "simulating" in errs


def test_concurrent_generation_of_one_configuration(tmp_path, tiny_rtl):
    """Two processes generate the same new configuration's Verilog at once: both get the whole
    file, and no temporary file is left in the folder."""
    root = fresh_root(tmp_path)
    code = ("from hdl.config import AccelConfig; from hdl.generate import generated_rtl; "
            f"print(generated_rtl(AccelConfig(**{TINY.to_dict()!r})))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO,
                              env={**os.environ, "VELCRO_BUILD": str(root)}) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    folder = root / "rtl" / TINY.tag
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert out.strip() == str(folder / "velcro_accel.v")
    assert (folder / "velcro_accel.v").read_text() == (tiny_rtl / "velcro_accel.v").read_text()
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "config.json", "velcro_accel.sha1",
                                                        "velcro_accel.v"]


def _lines(stream, q):
    for line in stream:
        q.put(line)
    q.put(None)


def _processes_in(folder: Path) -> list[str]:
    """Command lines of the processes working in ``folder`` or naming it."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                cwd = os.readlink(proc / "cwd")
            except OSError:
                continue
            if str(folder) in cmd or cwd.startswith(str(folder)):
                found.append(cmd)
    return found


@pytest.mark.parametrize("sig, status, last", [(signal.SIGTERM, 143, "velcro: terminated"),
                                               (signal.SIGINT, 130, "velcro: interrupted"),
                                               (signal.SIGHUP, 143, "velcro: terminated")],
                         ids=["SIGTERM", "Ctrl-C", "SIGHUP"])
def test_sim_signal_during_build_leaves_nothing(tmp_path, tiny_rtl, sig, status, last):
    """Interrupted while the compiler runs: a clean exit, the run's temporary folder removed,
    no output, no compiler left running in the build folder, no stamp claiming a build."""
    root = fresh_root(tmp_path, tiny_rtl)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    tiny_frame(tmp_path / "frame.npz", 1)
    proc = popen_velcro("sim", tmp_path / "frame.npz", "--out", tmp_path / "result.npz", *TINY_ARGS,
                        env={"VELCRO_BUILD": str(root), "TMPDIR": str(tmp)})
    q = queue.Queue()
    threading.Thread(target=_lines, args=(proc.stderr, q), daemon=True).start()
    seen = []
    while not any("compiling" in line for line in seen):
        line = q.get(timeout=300)
        assert line is not None, "".join(seen)
        seen.append(line)
    assert any(p.name.startswith("velcro-sim-") for p in tmp.iterdir())   # the run's folder exists
    # signal once the compiler is seen working in the build folder (a fixed sleep raced a fast
    # compile on some machines: the run had finished before the signal)
    deadline = time.monotonic() + 120
    while not _processes_in(root):
        assert proc.poll() is None and time.monotonic() < deadline, "".join(seen)
        time.sleep(0.02)
    proc.send_signal(sig)
    assert proc.wait(timeout=60) == status
    while (line := q.get(timeout=10)) is not None:
        seen.append(line)
    err = "".join(seen)
    assert "Traceback" not in err and err.endswith(last + "\n"), err
    assert proc.stdout.read() == ""
    assert not [p for p in tmp.iterdir() if p.name.startswith("velcro-sim-")]
    assert not (tmp_path / "result.npz").exists()
    deadline = time.monotonic() + 10                    # no compiler left writing into the cache
    while _processes_in(root) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_in(root) == []
    assert not (root / "sim" / "verilator" / TINY.tag / "sources.sha1").exists()
    if sig == signal.SIGTERM:                           # the half-built folder builds again
        r = velcro("sim", tmp_path / "frame.npz", "--out", tmp_path / "result.npz", *TINY_ARGS,
                   env={"VELCRO_BUILD": str(root), "TMPDIR": str(tmp)})
        assert r.returncode == 0, r.stderr
        assert not [p for p in tmp.iterdir() if p.name.startswith("velcro-sim-")]


@pytest.mark.parametrize("sim,fmt", [("verilator", "vcd"), ("icarus", "fst")])
def test_sim_waves_beside_the_result(tmp_path, sim, fmt):
    """`velcro sim --waves`: the run's waveform, with the engine's signals, beside --out (a
    waves build of its own, cached as build/sim/<sim>/<tag>-<fmt>/)."""
    frame = tiny_frame(tmp_path / "frame.npz", 3)
    r = velcro("sim", tmp_path / "frame.npz", "--out", tmp_path / "result.npz", *TINY_ARGS,
               "--sim", sim, "--waves", fmt)
    assert r.returncode == 0, r.stderr
    assert " golden=bit-exact -> " in r.stdout, r.stdout
    wave = tmp_path / f"result.{fmt}"
    assert f"velcro sim: waveform: {wave}" in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["frame.npz", "result.npz", wave.name])
    data = wave.read_bytes()
    if fmt == "vcd":
        text = data.decode(errors="replace")
        assert "$enddefinitions" in text
        for signal in ("i__valid", "o__payload", "image_done"):
            assert f" {signal} " in text, signal
        for scope in ("velcro_accel", "control", "datapath0", "store1", "mac0", "requantiser1"):
            assert f"$scope module {scope} $end" in text, scope    # inside the engine too
    else:                                                   # FST: its header block comes first
        assert len(data) > 1000 and data[0] == 0, data[:16]
    with np.load(tmp_path / "result.npz") as res:
        np.testing.assert_array_equal(res["ofm"], golden_ofm(frame))


def test_sim_waves_refuses_vcd_on_icarus(tmp_path, no_build):
    tiny_frame(tmp_path / "frame.npz", 3)
    r = velcro("sim", tmp_path / "frame.npz", "--out", tmp_path / "result.npz", *TINY_ARGS,
               "--sim", "icarus", "--waves", "vcd", env=no_build)
    assert_one_line_error(r, "--sim icarus writes --waves fst only")


def test_make_help_lists_every_target():
    """`make help` names every target of the Makefile and mk/*.mk (but its own helpers) and
    the ARGS= syntax."""
    import re
    text = (REPO / "Makefile").read_text() + "".join(
        p.read_text() for p in sorted((REPO / "mk").glob("*.mk")))
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):(?!=)", text, re.M)) - {"all", "help", "sysdeps"}
    r = subprocess.run(["make", "-s", "--no-print-directory", "help"], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    listed = set(re.findall(r"^make ([a-z][a-z0-9-]*)", r.stdout, re.M))
    assert targets <= listed, targets - listed
    assert 'ARGS="' in r.stdout, r.stdout


def test_verilator_fst_needs_lz4(monkeypatch, tmp_path):
    """Verilator's FST writer compiles against lz4.h: without it a --waves fst build is refused
    before it starts, naming the package (this machine may or may not have it)."""
    from sim import runner, toolchain
    monkeypatch.setattr(toolchain, "LZ4_HEADERS", (tmp_path / "lz4.h",))
    with pytest.raises(toolchain.ToolchainError, match="liblz4-dev`, or use --waves vcd"):
        runner.Build(TINY, "verilator", waves="fst", defer=True)
    (tmp_path / "lz4.h").write_text("")
    build = runner.Build(TINY, "verilator", waves="fst", defer=True)
    assert build.name.endswith("-fst") and "--trace-fst" in build._build_args()
    assert runner.Build(TINY, "verilator", waves="vcd", defer=True).name.endswith("-vcd")
