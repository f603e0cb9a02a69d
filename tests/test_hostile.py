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
from py_ref.cli import CliError, atomic_write, check_output
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
