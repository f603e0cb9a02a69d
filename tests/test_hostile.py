"""Hostile use (issue 21): each class of failure gets one mechanism, tested here through the
command line (subprocesses running this checkout: ``sys.executable -m velcro_cli``) and the
library.  A refusal is one line ``velcro: error: ...``, exit status 2, nothing written,
nothing built (``--max-build-minutes 0``: if a refusal is missing, the run stops at the build
estimate instead of building, and the test fails on the message)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import seed_for

from hdl.config import AccelConfig
from py_ref.errors import CliError
from py_ref.outputs import atomic_write, check_output
from py_ref.golden import random_frame

REPO = Path(__file__).resolve().parent.parent
CFG = AccelConfig(height=6, width=8, in_channels=2, instances=16, out_channels=2)
NO_BUILD = ("--max-build-minutes", "0")


def velcro(*args, env=None, **kwargs):
    kwargs.setdefault("capture_output", True)
    return subprocess.run([sys.executable, "-m", "velcro_cli", *map(str, args)], text=True,
                          cwd=REPO, env={**os.environ, **(env or {})}, **kwargs)


def assert_one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("velcro: error:"), r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    for needle in needles:
        assert needle in r.stderr, r.stderr
    assert r.stdout == ""


@pytest.fixture
def frame_file(tmp_path):
    seed = seed_for("hostile-frame")
    path = tmp_path / "frame.npz"
    random_frame(CFG, np.random.default_rng(seed), density=0.4).save(path)
    return path


@pytest.fixture
def no_build(tmp_path):
    root = tmp_path / "build-root"
    yield {"VELCRO_BUILD": str(root)}
    assert not root.exists(), f"refused input still generated or built: {list(root.rglob('*'))}"


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- 1. output paths: one check (check_output) and one writer (atomic_write) -------------------

def _fifo(tmp_path):
    os.mkfifo(tmp_path / "out.npz")
    return tmp_path / "out.npz", "not a regular file (a FIFO)"


def _device(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    os.mknod(tmp_path / "out.npz", 0o666 | stat.S_IFCHR, os.makedev(1, 3))   # a /dev/null
    return tmp_path / "out.npz", "not a regular file (a character device)"


def _link_to_device(tmp_path):
    (tmp_path / "out.npz").symlink_to("/dev/null")
    return tmp_path / "out.npz", "not a regular file (a character device)"


def _name_too_long(tmp_path):
    return tmp_path / ("a" * 256), "too long"


def _temp_name_too_long(tmp_path):
    return tmp_path / ("b" * 250 + ".npz"), "its temporary file name would be"   # legal: 254


def _proc(tmp_path):
    return "/proc/velcro-x.npz", "cannot create files in output folder /proc"


def _sys(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("as another user os.access already refuses /sys")
    return "/sys/velcro-x.npz", "cannot create files in output folder /sys"


def _trailing_slash(tmp_path):
    return f"{tmp_path}/nodir_x/", "is a folder name"


OUT_PATHS = [_fifo, _device, _link_to_device, _name_too_long, _temp_name_too_long, _proc, _sys,
             _trailing_slash]


@pytest.mark.parametrize("make", OUT_PATHS, ids=lambda f: f.__name__.strip("_"))
def test_sim_refuses_hostile_output_paths(tmp_path, frame_file, no_build, make):
    out, message = make(tmp_path)
    before = _listing(tmp_path)
    kinds = {p.name: p.lstat().st_mode for p in tmp_path.iterdir()}
    r = velcro("sim", frame_file, "--out", out, *NO_BUILD, env=no_build)
    assert_one_line_error(r, message)
    assert _listing(tmp_path) == before                                # nothing written
    assert {p.name: p.lstat().st_mode for p in tmp_path.iterdir()} == kinds   # nor replaced


@pytest.mark.parametrize("make", [_fifo, _device, _name_too_long, _temp_name_too_long, _proc,
                                  _trailing_slash], ids=lambda f: f.__name__.strip("_"))
def test_algorithm_commands_share_the_output_check(tmp_path, make, monkeypatch, capsys):
    """profile (and every command: they all call check_output) refuses before the long work."""
    from tests_helpers_commands import run_command
    out, message = make(tmp_path)
    before = _listing(tmp_path)
    assert run_command(["profile", "--images", "16", "--out", str(out)], monkeypatch) == 2
    err = capsys.readouterr().err
    assert err.startswith("velcro: error:") and message in err and err.count("\n") == 1, err
    assert _listing(tmp_path) == before


def test_atomic_write_never_replaces_a_special_file(tmp_path):
    """Between the check and the rename the target became a FIFO: refused, nothing left."""
    target = tmp_path / "out.npz"
    check_output(target)

    def write(tmp):
        Path(tmp).write_bytes(b"result")
        os.mkfifo(target)

    with pytest.raises(CliError, match="not a regular file"):
        atomic_write(target, write)
    assert _listing(tmp_path) == ["out.npz"] and stat.S_ISFIFO(target.lstat().st_mode)


def test_longest_legal_output_name_is_written(tmp_path):
    """The limit is exact: the longest name whose temporary sibling fits is accepted."""
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    longest = tmp_path / ("c" * (name_max - len("..") - 8 - len(".npz") - len(".npz")) + ".npz")
    check_output(longest)
    atomic_write(longest, lambda tmp: Path(tmp).write_bytes(b"x"))
    assert longest.read_bytes() == b"x" and _listing(tmp_path) == [longest.name]
    with pytest.raises(CliError, match="too long"):
        check_output(longest.with_name("c" + longest.name))


# -- 2. the library refuses what it cannot compute ---------------------------------------------

from hdl import protocol                                           # noqa: E402
from hdl.protocol import ProtocolError                             # noqa: E402
from py_ref.golden import Frame, golden_ofm, point_wide_mask       # noqa: E402
from py_ref.schedule import deal                                   # noqa: E402


@pytest.fixture
def frame():
    return random_frame(CFG, np.random.default_rng(seed_for("hostile-library")), density=0.4)


def _quant(frame, **change):
    q = {"bias": frame.bias.copy(), "mult": frame.mult.copy(), "shift": frame.shift.copy()}
    for name, (k, value) in change.items():
        q[name] = q[name].astype(object)
        q[name][k] = value
    return q


@pytest.mark.parametrize("change, message", [
    ({"mult": (0, 2**16)}, "mult[0] = 65536"),
    ({"mult": (1, -1)}, "mult[1] = -1"),
    ({"shift": (0, 32)}, "shift[0] = 32"),
    ({"shift": (1, -3)}, "shift[1] = -3"),
    ({"bias": (0, 2**31)}, "bias[0] = 2147483648"),
    ({"bias": (1, -2**31 - 1)}, "bias[1] = -2147483649"),
    ({"bias": (0, 0.5)}, "bias must be integers"),
    ({"mult": (0, True)}, "mult must be integers"),
])
def test_weight_beats_refuses_values_beyond_their_fields(frame, change, message):
    q = _quant(frame, **change)
    with pytest.raises(ProtocolError, match=message.replace("[", r"\[").replace("]", r"\]")):
        protocol.weight_beats(CFG, frame.weight, q["bias"], q["mult"], q["shift"])


def test_weight_beats_fields_do_not_spill():
    """Before: mult = 65536, shift = 0 encoded exactly as mult = 0, shift = 1.  Every value that
    is accepted round-trips through the record's fields."""
    w = np.zeros((CFG.out_channels, CFG.in_channels, 3, 3), np.int8)
    with pytest.raises(ProtocolError):
        protocol.weight_beats(CFG, w, [0, 0], [65536, 0], [0, 0])
    beats = protocol.weight_beats(CFG, w, [-2**31, 2**31 - 1], [65535, 0], [31, 0])
    quant = beats[-CFG.out_channels:]
    assert quant[0] == (2**31) | (65535 << 32) | (31 << 48)
    assert quant[1] == 2**31 - 1


@pytest.mark.parametrize("bad, message", [
    (lambda f: f.bias[:1], "bias must have shape"),
    (lambda f: np.concatenate([f.mult, f.mult]), "mult must have shape"),
    (lambda f: f.weight[:, :1], "weight must have shape"),
    (lambda f: f.weight.astype(np.int16) * 300, "weight"),
])
def test_weight_beats_refuses_wrong_shapes(frame, bad, message):
    arrays = {"weight": frame.weight, "bias": frame.bias, "mult": frame.mult, "shift": frame.shift}
    name = message.split()[0]
    arrays[name] = bad(frame)
    with pytest.raises(ProtocolError, match=name):
        protocol.weight_beats(CFG, **arrays)


@pytest.mark.parametrize("ifmap, message", [
    (np.full((2, 6, 8), 200, np.uint8), "ifmap.* = 200"),
    (np.full((2, 6, 8), 1000, np.int16), "ifmap.* = 1000"),
    (np.full((2, 6, 8), -129, np.int64), "ifmap.* = -129"),
    (np.full((2, 6, 8), 0.7), "ifmap must be integers"),
    (np.zeros((2, 6, 8), bool), "ifmap must be integers"),
])
@pytest.mark.parametrize("encoder", ["batch_frame_beats", "segment_records"])
def test_frame_encoders_refuse_what_does_not_fit_int8(ifmap, message, encoder):
    with pytest.raises(ProtocolError, match=message):
        getattr(protocol, encoder)(CFG, ifmap)


def test_frame_encoders_take_any_integer_dtype_in_range():
    rng = np.random.default_rng(seed_for("hostile-int16-ifmap"))
    x = rng.integers(-128, 128, size=(2, 6, 8))
    for dtype in (np.int16, np.int64):
        assert protocol.batch_frame_beats(CFG, x.astype(dtype)) == \
            protocol.batch_frame_beats(CFG, x.astype(np.int8))


@pytest.mark.parametrize("call, error, message", [
    (lambda: protocol.decode_compact(CFG, [0.0], 64), ProtocolError, "must be integers"),
    (lambda: protocol.decode_compact(CFG, [2**512], 64), ProtocolError, "does not fit"),
    (lambda: protocol.decode_compact(CFG, [-1], 64), ProtocolError, "does not fit"),
    (lambda: protocol.decode_compact(CFG, [], -5), ProtocolError, "length must be at least 0"),
    (lambda: protocol.decode_compact(CFG, [0], 64, 0), ProtocolError, "images must be at least 1"),
    (lambda: protocol.decode_compact(CFG, [0], 1.5), ProtocolError, "length must be an integer"),
    (lambda: protocol.decode_stream_counters(CFG, -1), ProtocolError, "counters = -1"),
    (lambda: protocol.decode_stream_counters(CFG, 1 << 4000), ProtocolError, "does not fit"),
    (lambda: protocol.decode_stream_counters(CFG, 3.0), ProtocolError, "must be integers"),
    (lambda: protocol.decode_counter_words(CFG, [-1] * len(protocol.counter_words(CFG))),
     ProtocolError, "counter word"),
])
def test_decoders_refuse(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_decode_batch_refuses(frame):
    schedule = deal(frame.mask, CFG.instances)
    per = protocol.compact_beats_per_image(CFG, schedule.stream_length)
    for beats, images, message in (([0.0] * per, 1, "must be integers"),
                                   ([-1] * per, 1, "does not fit"),
                                   ([1 << CFG.bus_width] * per, 1, "does not fit"),
                                   ([], 0, "images must be at least 1")):
        with pytest.raises(ProtocolError, match=message):
            protocol.decode_batch(CFG, beats, schedule, frame.means, images)


def test_schedule_refuses_bad_instances(frame):
    schedule = deal(frame.mask, CFG.instances)
    for p, error in ((-1, ValueError), (CFG.instances, ValueError), (1.5, TypeError),
                     (True, TypeError), ("0", TypeError)):
        for method in (schedule.compact_index, schedule.entries, schedule.segments):
            with pytest.raises(error):
                method(p)
    assert schedule.compact_index(np.int64(1)).tolist() == schedule.compact_index(1).tolist()


def test_frame_owns_read_only_copies(frame):
    arrays = {name: getattr(frame, name).copy() for name in
              ("ifmap", "weight", "bias", "mask", "means", "mult", "shift")}
    validated = Frame.from_arrays(arrays)
    expected = golden_ofm(validated)
    arrays["mult"][0] = 2**40
    arrays["ifmap"][...] = 0
    np.testing.assert_array_equal(golden_ofm(validated), expected)
    for name in arrays:
        with pytest.raises(ValueError, match="read-only"):
            getattr(validated, name).reshape(-1)[0] = 0
    direct = Frame(**arrays | {"mult": frame.mult.copy()})
    assert not direct.mult.flags.writeable


@pytest.mark.parametrize("shape", [(6, 8), (), (2, 0, 3), (2, 3, 4, 5), (2.0, 3, 4), "abc"])
def test_point_wide_mask_refuses_bad_shapes(shape):
    with pytest.raises(ValueError, match="shape must be"):
        point_wide_mask(np.random.default_rng(0), shape, 0.5)


def test_point_wide_mask_refuses_bad_ratios():
    for ratio in (-0.1, 1.5, float("nan"), None):
        with pytest.raises(ValueError, match="ratio"):
            point_wide_mask(np.random.default_rng(0), (2, 3, 4), ratio)
    assert point_wide_mask(np.random.default_rng(0), (2, 3, 4), 0.5).shape == (2, 3, 4)


def test_host_script_deeply_nested_config_is_one_line(tmp_path):
    host = REPO / "hdl" / "kernel_files" / "host_velcro.py"
    (tmp_path / "config.json").write_text("[" * 200000 + "]" * 200000)
    r = subprocess.run([sys.executable, str(host), str(tmp_path / "x.xclbin"),
                        "--config", str(tmp_path / "config.json")], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "nested too deeply" in r.stderr and "Traceback" not in r.stderr


# -- 3. inputs: the archive reader, option values, stdout --------------------------------------

import zipfile                                                     # noqa: E402

import py_ref.errors                                               # noqa: E402


def _frame_arrays(seed_name):
    f = random_frame(CFG, np.random.default_rng(seed_for(seed_name)), density=0.4)
    return {k: getattr(f, k) for k in ("ifmap", "weight", "bias", "mask", "means", "mult", "shift")}


def test_fifo_as_frame_is_refused_without_blocking(tmp_path, no_build):
    fifo = tmp_path / "frame.npz"
    os.mkfifo(fifo)
    r = velcro("sim", fifo, "--out", tmp_path / "r.npz", *NO_BUILD, env=no_build, timeout=60)
    assert_one_line_error(r, "not a regular file")
    assert _listing(tmp_path) == ["frame.npz"]


def test_host_script_fifo_frame_is_refused_without_blocking(tmp_path):
    from hdl.kernel_host import kernel_config_json
    (tmp_path / "config.json").write_text(kernel_config_json(AccelConfig(), 1))
    os.mkfifo(tmp_path / "frame.npz")
    r = subprocess.run([sys.executable, str(REPO / "hdl" / "kernel_files" / "host_velcro.py"),
                        str(tmp_path / "x.xclbin"), "--config", str(tmp_path / "config.json"),
                        "--frame", str(tmp_path / "frame.npz")], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "not a regular file" in r.stderr


def _npy_bytes(a):
    import io
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _duplicate_member(path, arrays):
    np.savez(path, **arrays)
    with zipfile.ZipFile(path, "a") as z, pytest.warns(UserWarning, match="Duplicate name"):
        z.writestr("ifmap.npy", _npy_bytes(arrays["ifmap"] * 0))


def _member_without_suffix(path, arrays):
    np.savez(path, **arrays)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("ifmap", _npy_bytes(arrays["ifmap"] * 0))


def _inflating_member(path, arrays):
    """A small zip whose means member inflates far beyond any frame (a zip bomb: 1 GB)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, a in arrays.items():
            if name != "means":
                z.writestr(f"{name}.npy", _npy_bytes(a))
        header = _npy_bytes(np.zeros((0, 4096, 4096), np.uint8)).replace(b"(0, 4096",
                                                                          b"(64, 4096")
        with z.open("means.npy", "w", force_zip64=True) as member:
            member.write(header)
            block = bytes(1 << 20)
            for _ in range(64 * 16):
                member.write(block)


def _too_many_images(path, arrays):
    np.savez(path, **{**arrays, "ifmap": np.zeros((65536, *arrays["ifmap"].shape), np.int8)})


def _beyond_memory(path, arrays):
    """Within every maximum, but more than the memory allowed (VELCRO_MAX_FRAME_BYTES)."""
    np.savez(path, **{**arrays, "ifmap": np.zeros((64, *arrays["ifmap"].shape), np.int8)})


def _size_lies(path, arrays):
    """The member holds more bytes than its header's shape: refused as damaged, not loaded."""
    with zipfile.ZipFile(path, "w") as z:
        for name, a in arrays.items():
            z.writestr(f"{name}.npy", _npy_bytes(a) + (bytes(1000) if name == "bias" else b""))


ARCHIVES = {
    "duplicate member": (_duplicate_member, "array 'ifmap' is stored twice"),
    "ifmap next to ifmap.npy": (_member_without_suffix, "array 'ifmap' is stored twice"),
    "zip bomb": (_inflating_member, "height=4096 is out of range"),
    "B > 65535": (_too_many_images, "images=65536 is out of range"),
    "beyond memory": (_beyond_memory, "more than the 0.0 GB"),
    "size lies": (_size_lies, "damaged .npz archive (array 'bias' holds"),
}


@pytest.mark.parametrize("kind", ARCHIVES)
def test_archive_reader_checks_every_header_before_inflating(tmp_path, kind, no_build):
    make, message = ARCHIVES[kind]
    path = tmp_path / "frame.npz"
    make(path, _frame_arrays("hostile-archive"))
    env = {**no_build, "VELCRO_MAX_FRAME_BYTES": "4096"} if kind == "beyond memory" else no_build
    import resource
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    r = velcro("sim", path, "--out", tmp_path / "r.npz", *NO_BUILD, env=env, timeout=300)
    assert_one_line_error(r, f"cannot read {path}", message)
    assert not (tmp_path / "r.npz").exists()
    if kind == "zip bomb":        # the 1 GB member was never inflated into memory (kB)
        assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < max(before, 1) + 600_000


def test_frame_limits_are_the_generators():
    from hdl import config, protocol
    from py_ref import frame_file
    assert frame_file.MAX_BATCH == protocol.MAX_BATCH
    assert frame_file.MAX_OUT_CHANNELS == config.MAX_OUT_CHANNELS
    for name, most in (("height", frame_file.MAX_HEIGHT), ("width", frame_file.MAX_WIDTH),
                       ("in_channels", frame_file.MAX_IN_CHANNELS)):
        AccelConfig(**{"height": 8, "width": 8, name: most})
        with pytest.raises(config.ConfigError, match="out of range"):
            AccelConfig(**{"height": 8, "width": 8, name: most + 1})


@pytest.mark.parametrize("argv, message", [
    (["profile", "--seed", str(2**64), "--out", "{tmp}/s.pt"], "--seed: must be 0..4294967295"),
    (["export", "--seed", "-1", "--out", "{tmp}/f.npz"], "--seed: must be 0..4294967295"),
    (["evaluate", "--seed", str(2**40)], "--seed: must be 0..4294967295"),
    (["network", "--seed", str(2**64), "--out", "{tmp}/n.npz"], "--seed: must be"),
    (["profile", "--threads", "100000", "--out", "{tmp}/s.pt"], "--threads: must be at most"),
    (["network", "--threads", "100000", "--out", "{tmp}/n.npz"], "--threads: must be at most"),
    (["profile", "--task", "", "--out", "{tmp}/s.pt"], "--task: must not be empty"),
    (["network", "--task", " ", "--out", "{tmp}/n.npz"], "--task: must not be empty"),
    (["sim", "{tmp}/f.npz", "--out", "{tmp}/r.npz", "--max-build-minutes", "nan"],
     "--max-build-minutes: must be a finite number"),
    (["sim", "{tmp}/f.npz", "--out", "{tmp}/r.npz", "--max-build-minutes", "-1"],
     "--max-build-minutes: must be at least 0"),
    (["export", "--threshold", "inf", "--out", "{tmp}/f.npz"], "must be a finite number"),
    (["network", "--uniform", "nan", "--out", "{tmp}/n.npz"], "must be a finite number"),
])
def test_option_values_are_checked_by_their_class(tmp_path, argv, message):
    r = velcro(*[a.replace("{tmp}", str(tmp_path)) for a in argv], timeout=120)
    assert_one_line_error(r, message)
    assert _listing(tmp_path) == []


def _closed(args):
    return subprocess.run([sys.executable, "-m", "velcro_cli", *map(str, args)], cwd=REPO,
                          stderr=subprocess.PIPE, text=True, timeout=600,
                          preexec_fn=lambda: os.close(1))


def _broken_pipe(args):
    read, write = os.pipe()
    os.close(read)                   # nobody reads: the first write is EPIPE
    try:
        return subprocess.run([sys.executable, "-m", "velcro_cli", *map(str, args)], cwd=REPO,
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=600)
    finally:
        os.close(write)


@pytest.mark.parametrize("stdout", [_closed, _broken_pipe], ids=["closed", "broken-pipe"])
@pytest.mark.parametrize("command", ["export", "sim"])
def test_gone_stdout_is_a_quiet_exit_with_the_output_kept(tmp_path, frame_file, stdout, command):
    """Like coreutils: no message, no traceback, the output file written, status 141.  ``sim``
    runs CFG's build (cached: tests/test_cli.py builds it)."""
    out = tmp_path / "out.npz"
    args = (["export", "--images", "16", "--out", out] if command == "export" else
            ["sim", frame_file, "--out", out])
    r = stdout(args)
    assert r.returncode == getattr(py_ref.errors, "EXIT_STDOUT_GONE", 141), r.stderr
    assert "Traceback" not in r.stderr and "error" not in r.stderr, r.stderr
    with np.load(out) as result:
        assert "ofm" in result.files or "ifmap" in result.files


# -- 4. the build cache: complete entries only, a folder that is one, SIGHUP -------------------

TINY = AccelConfig(height=5, width=6, in_channels=1, instances=2)


def test_generated_verilog_is_used_only_while_complete(tmp_path, monkeypatch):
    """Truncated, emptied or replaced: the stamp's content digest no longer matches, so the
    Verilog is generated again (before: "verilator build failed" on every run)."""
    from hdl import generate
    monkeypatch.setattr(generate, "BUILD", tmp_path)
    path = generate.generated_rtl(TINY)
    good = path.read_bytes()
    assert generate.rtl_is_current(TINY)
    for damage in (lambda: path.write_bytes(good[:len(good) // 2]), lambda: path.write_bytes(b""),
                   lambda: path.write_bytes(good.replace(b"module", b"mdule", 1))):
        damage()
        assert not generate.rtl_is_current(TINY)
        assert generate.generated_rtl(TINY).read_bytes() == good
        assert generate.rtl_is_current(TINY)


@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_a_cached_model_is_used_only_while_complete(tmp_path, monkeypatch, sim):
    """The simulator model's stamp records the product's content, written after it: an empty
    or half-size binary (or sim.vvp) is not current (before: Exec format error / "simulation
    failed" on every run, never rebuilt)."""
    from hdl import generate
    from sim import runner
    monkeypatch.setattr(generate, "BUILD", tmp_path)
    monkeypatch.setattr(runner, "BUILD", tmp_path)
    source = tmp_path / "top.v"
    source.write_text("module top; endmodule\n")
    build = runner.Build(TINY, sim, sources=[source], defer=True)
    build.build_dir.mkdir(parents=True)
    product = build._product
    product.write_bytes(os.urandom(100_000))
    build._stamp.write_text(generate.content_stamp(build._digest(), [product]))
    assert build.is_current()
    whole = product.read_bytes()
    for damage in (whole[:50_000], b"", whole[:-1] + bytes([whole[-1] ^ 1])):
        product.write_bytes(damage)
        assert not build.is_current()
    product.write_bytes(whole)
    assert build.is_current()
    build._stamp.write_text(build._digest())          # the old stamp (sources only): rebuild
    assert not build.is_current()


def _root_is_a_file(tmp_path):
    (tmp_path / "root").write_text("")
    return tmp_path / "root", "is not a folder"


def _sim_folder_is_a_file(tmp_path):
    (tmp_path / "root" / "sim").mkdir(parents=True)
    (tmp_path / "root" / "sim" / "verilator").write_text("")
    return tmp_path / "root", "is not a folder"


def _proc_root(tmp_path):
    return "/proc/velcro-build", "cannot create files in /proc"


@pytest.mark.parametrize("make", [_root_is_a_file, _sim_folder_is_a_file, _proc_root],
                         ids=lambda f: f.__name__.strip("_"))
def test_a_build_folder_that_cannot_be_one_is_one_line(tmp_path, frame_file, make):
    root, message = make(tmp_path)
    listing = sorted(str(p) for p in tmp_path.rglob("*"))
    r = velcro("sim", frame_file, "--out", tmp_path / "r.npz", env={"VELCRO_BUILD": str(root)},
               timeout=300)
    assert_one_line_error(r, f"build folder {root}", message)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == listing


# -- 5. make sim / scripts/sweep.py: simulators die with the sweep, results replaced together ----

def test_kill_running_ends_the_simulators_of_every_thread(tmp_path, monkeypatch):
    """A signal reaches the main thread only; kill_running ends the process groups the worker
    threads wait on (before: sweep.py exited and its Verilator simulators kept running), and
    no new one starts afterwards.  Checked by PID."""
    import threading
    import time

    from sim import runner
    monkeypatch.setattr(runner, "_STOPPING", threading.Event())
    mixin = runner._RunnerMixin()
    mixin.env = dict(os.environ)
    errors = []

    def work():
        try:
            mixin._execute_cmds([["sh", "-c", "sleep 60 & sleep 60"]], cwd=tmp_path)
        except RuntimeError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(runner._RUNNING) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    groups = [p.pid for p in runner._RUNNING]
    assert sorted(runner.kill_running()) == sorted(groups)
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()
    assert len(errors) == 2
    deadline = time.monotonic() + 10
    while any(_alive_in_group(g) for g in groups) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [_alive_in_group(g) for g in groups] == [[], []]   # sh and both sleeps of each
    with pytest.raises(RuntimeError, match="stopped"):
        mixin._execute_cmds([["true"]], cwd=tmp_path)


def _alive_in_group(pgid: int) -> list[int]:
    """PIDs of process group ``pgid`` that still run (zombies awaiting init do not count)."""
    alive = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                alive.append(int(proc.name))
    return alive


def _sweep_module():
    import importlib.util
    spec = importlib.util.spec_from_file_location("sweep_script", REPO / "scripts" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sweep_results_are_replaced_together_or_not_at_all(tmp_path, monkeypatch):
    """The plot fails after the CSV was written: the previous results stay whole (before:
    sweep.csv was replaced in place, the report kept the old numbers), nothing is left over."""
    import argparse
    import time
    sweep = _sweep_module()
    out = tmp_path / "results"
    out.mkdir()
    old = {name: f"old {name}\n" for name in ("sweep.csv", "REPORT.md", "timing.log")}
    for name, text in old.items():
        (out / name).write_text(text)
    monkeypatch.setattr(sweep.perf_model, "analyse", lambda cfg, points, model: [])
    monkeypatch.setattr(sweep.perf_model, "check_acceptance",
                        lambda by_kind: {"kinds": {}, "failures": [], "ok": True})
    monkeypatch.setattr(sweep.host_timing, "expand_seconds", lambda *a, **k: 0.0)

    def broken_plot(path, *a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(sweep.sweep_report, "plot", broken_plot)
    args = argparse.Namespace(out=out, kind_list=["random"], task="footwear", images=0,
                              batch_list=[1, 6], no_check=True)

    class _W:
        class frame:
            mask = means = None
    now = time.perf_counter()
    with pytest.raises(OSError, match="No space"):
        sweep._write(args, [], CFG, [], {"random": [_W()]}, {}, {"start": now, "build": now,
                                                                  "sim": now})
    assert {p.name: p.read_text() for p in out.iterdir()} == old


def test_batches_are_chosen_from_the_period():
    """Without --batches every point gets sizes its period can measure (before: the default
    1,6 failed on a stream repeating every two images, after the SAIF build)."""
    from sim import measure
    assert measure.batches_for(1, saif=True) == list(measure.DEFAULT_BATCHES)
    for period in (1, 2):
        for saif in (True, False):
            b = measure.batches_for(period, saif)
            assert measure.check_batches(b, saif, period) == b
    assert measure.batches_for(2, saif=True) == [1, 7]
    sweep = _sweep_module()
    assert sweep.parse_args(["--kinds", "random"]).batch_list is None


def _processes_under(folder: Path) -> dict[int, str]:
    """PID -> command line of the running processes whose working folder is under ``folder``."""
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cwd = os.readlink(proc / "cwd")
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if cwd.startswith(str(folder)) and state != "Z":
                found[int(proc.name)] = cmd
    return found


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            return False
        if pid == ancestor:
            return True
    return False


@pytest.mark.parametrize("sig, status", [(__import__("signal").SIGTERM, 143),
                                         (__import__("signal").SIGINT, 130)],
                         ids=["SIGTERM", "Ctrl-C"])
def test_sweep_signal_kills_its_simulators(tmp_path, sig, status):
    """sweep.py stopped while its simulators run: they end with it (checked by PID), its run
    folder is removed, nothing is written, no traceback (before: SIGTERM left both Verilator
    simulators at 100 % CPU, reparented to init; SIGINT waited for them, then a traceback).
    Uses the 16x16 SAIF model tests/test_sweep.py builds (a first run compiles it)."""
    import signal
    import time

    from hdl.generate import BUILD
    out = tmp_path / "results"
    sweep_dir = BUILD / "sweep"
    before = set(sweep_dir.iterdir()) if sweep_dir.exists() else set()
    proc = subprocess.Popen([sys.executable, str(REPO / "scripts" / "sweep.py"), "--height", "16",
                             "--width", "16", "--instances", "4", "--kinds", "random",
                             "--ratios", "0,0.3,0.5,0.8", "--batches", "1,7", "--out", str(out),
                             "--jobs", "2"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 900
    sims = {}
    while not sims:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        sims = {pid: cmd for pid, cmd in _processes_under(sweep_dir.resolve()).items()
                if _descends_from(pid, proc.pid)}
        time.sleep(0.05)
    print(f"signalling sweep.py (pid {proc.pid}) while these run: {sims}")
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == status, stderr
    assert "Traceback" not in stderr, stderr
    time.sleep(0.5)
    alive = {pid for pid in sims if os.path.exists(f"/proc/{pid}")
             and (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z")}
    assert not alive, {pid: sims[pid] for pid in alive}
    left = set(sweep_dir.iterdir()) - before
    assert not [p for p in left if "-run-" in p.name or "-keep-" in p.name], left
    assert not out.exists() or not any(out.iterdir())
