"""cocotb regressions of the generated Verilog on Icarus and Verilator (bit-exact vs golden).

Each (configuration, simulator) is compiled once; each cocotb testcase of sim/tb_accel.py runs
as its own pytest item with a fixed, logged seed (override with VELCRO_SEED=... or cocotb's
COCOTB_RANDOM_SEED=...). VELCRO_WAVES=fst (or vcd) builds waves models and leaves each run's
waveform, dump.fst, in its test folder (pytest's tmp_path; tests/conftest.py).
"""

import pytest

from conftest import seed_for

from hdl.config import AccelConfig
from sim.runner import SIMULATORS

CONFIGS = {
    # C_in = 1, odd sizes (tiles cut by the border), 4 instances, one tile per beat
    "small": AccelConfig(height=9, width=10, in_channels=1, instances=4, bus_width=128),
    # C_in > 1 over several channel groups (5 channels, 2 lanes -> G = 3), multi-beat records
    "multichannel": AccelConfig(height=8, width=7, in_channels=5, instances=4, lanes=2,
                                bus_width=64),
}
CASES = ["densities", "structured_masks", "extreme_values", "back_to_back", "reset_mid_frame"]

# N output channels independent of the P instances (issue 19): fewer, equal, more, prime, with
# W not a multiple of P; each is one more build per simulator, so they run the cases that
# cover the arithmetic and the deal (densities, skewed masks, extremes at full fan-in).
CHANNEL_COUNTS = {
    "n1p4": AccelConfig(height=6, width=9, in_channels=2, instances=4, out_channels=1),
    "n3p4": AccelConfig(height=5, width=7, in_channels=3, instances=4, lanes=2,
                        out_channels=3),
    "n5p4": AccelConfig(height=6, width=6, in_channels=1, instances=4, out_channels=5),
    "n16p4": AccelConfig(height=4, width=9, in_channels=2, instances=4, out_channels=16),
    "n17p16": AccelConfig(height=4, width=20, in_channels=1, instances=16, out_channels=17),
    "n24p8": AccelConfig(height=5, width=10, in_channels=2, instances=8, out_channels=24),
    "n32p16": AccelConfig(height=4, width=18, in_channels=1, instances=16, out_channels=32),
}

# One design sized by maxima runs layers of other shapes set at run time (issue 19): H, W (one
# not a multiple of P), C_in (G = 1 .. 3), N (1, < P, > P) within them, back to back, with and
# without a reset between layers.
RUNTIME_LAYERS = {
    "maxima_p4": AccelConfig(height=12, width=12, in_channels=5, lanes=2, instances=4,
                             out_channels=6, bus_width=128),
    "maxima_p8": AccelConfig(height=8, width=17, in_channels=3, lanes=1, instances=8,
                             out_channels=9, bus_width=64),
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("sim", SIMULATORS)
def test_accel(build_for, sim, config, case, tmp_path):
    seed = str(seed_for(sim, config, case))
    build_for(CONFIGS[config], sim).run("sim.tb_accel", [case], env={"VELCRO_SEED": seed},
                                        test_dir=tmp_path)


@pytest.mark.parametrize("case", ["densities", "extreme_values"])
@pytest.mark.parametrize("config", CHANNEL_COUNTS)
@pytest.mark.parametrize("sim", SIMULATORS)
def test_channel_counts(build_for, sim, config, case, tmp_path):
    seed = str(seed_for(sim, config, case))
    build_for(CHANNEL_COUNTS[config], sim).run("sim.tb_accel", [case],
                                               env={"VELCRO_SEED": seed}, test_dir=tmp_path)


@pytest.mark.parametrize("config", RUNTIME_LAYERS)
@pytest.mark.parametrize("sim", SIMULATORS)
def test_runtime_layers(build_for, sim, config, tmp_path):
    seed = str(seed_for(sim, config, "runtime_layers"))
    build_for(RUNTIME_LAYERS[config], sim).run("sim.tb_accel", ["runtime_layers"],
                                               env={"VELCRO_SEED": seed}, test_dir=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("sim", SIMULATORS)
def test_full_default_frame(build_for, sim, tmp_path):
    """The paper's design: 16 instances of 64x64 3x3 conv2d+ReLU, one whole image."""
    seed = str(seed_for(sim, "default"))
    build_for(AccelConfig(), sim).run("sim.tb_accel", ["full_frame"], env={"VELCRO_SEED": seed},
                                      test_dir=tmp_path)


def test_seed_sources(monkeypatch):
    """VELCRO_SEED first, then cocotb's COCOTB_RANDOM_SEED, then the testbench's own default."""
    from sim.tb_accel import testbench_seed
    monkeypatch.delenv("VELCRO_SEED", raising=False)
    monkeypatch.delenv("COCOTB_RANDOM_SEED", raising=False)
    assert testbench_seed(5) == 5
    monkeypatch.setenv("COCOTB_RANDOM_SEED", "11")
    assert testbench_seed(5) == 11 and testbench_seed() == 11
    monkeypatch.setenv("VELCRO_SEED", "13")
    assert testbench_seed(5) == 13
