"""Shared fixtures: one compiled simulation model per (configuration, simulator), built once per
process (sim.runner.Build locks its folder, so pytest-xdist workers never build it twice)."""

from __future__ import annotations

import os
import zlib

import pytest


def seed_for(*parts) -> int:
    """The seed of one test case: a stable CRC of its name parts (Python's ``hash()`` is salted
    per process), or ``$VELCRO_SEED`` (else cocotb's ``$COCOTB_RANDOM_SEED``) to replay a logged run.  Printed, so pytest shows it with
    a failure."""
    env = os.environ.get("VELCRO_SEED") or os.environ.get("COCOTB_RANDOM_SEED")
    seed = int(env) if env else zlib.crc32("/".join(map(str, parts)).encode()) & 0x7FFFFFFF
    print(f"seed={seed} ({'/'.join(map(str, parts))})")
    return seed


_builds = {}


def get_build(cfg, sim, **kwargs):
    """``$VELCRO_WAVES=fst`` (or vcd) makes the builds without SAIF waves builds: each run then
    leaves ``dump.fst`` in its test folder (pytest's tmp_path)."""
    from sim.runner import Build, waves_from_env

    if not kwargs.get("saif") and "waves" not in kwargs:
        kwargs["waves"] = waves_from_env()
        if sim == "icarus" and kwargs["waves"] == "vcd":
            kwargs["waves"] = "fst"                  # Icarus writes FST only (sim.runner)
    key = (cfg, sim, tuple(sorted(kwargs.items())))
    if key not in _builds:
        _builds[key] = Build(cfg, sim, **kwargs)
    return _builds[key]


@pytest.fixture
def build_for():
    return get_build
