"""cocotb regressions of the generated Verilog on Icarus and Verilator (bit-exact vs golden).

Each (configuration, simulator) is compiled once; each cocotb testcase of sim/tb_accel.py runs
as its own pytest item with a fixed, logged seed (override with VELCRO_SEED=...).
"""

import pytest

from conftest import seed_for

from hdl.config import AccelConfig
from sim.runner import SIMULATORS

CONFIGS = {
    # C_in = 1, odd sizes (tiles cut by the border), 4 instances, one tile per beat
    "small": AccelConfig(height=9, width=10, in_channels=1, instances=4, bus_width=128, mask_lanes=8),
    # C_in > 1 over several channel groups (5 channels, 2 lanes -> G = 3), multi-beat records
    "multichannel": AccelConfig(height=8, width=7, in_channels=5, instances=4, lanes=2,
                                bus_width=64, mask_lanes=4),
}
CASES = ["densities", "structured_masks", "extreme_values", "back_to_back", "reset_mid_frame"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("sim", SIMULATORS)
def test_accel(build_for, sim, config, case, tmp_path):
    seed = str(seed_for(sim, config, case))
    build_for(CONFIGS[config], sim).run("sim.tb_accel", [case], env={"VELCRO_SEED": seed},
                                        test_dir=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("sim", SIMULATORS)
def test_full_default_frame(build_for, sim, tmp_path):
    """The paper's design: 16 instances of 64x64 3x3 conv2d+ReLU, one whole image."""
    seed = str(seed_for(sim, "default"))
    build_for(AccelConfig(), sim).run("sim.tb_accel", ["full_frame"], env={"VELCRO_SEED": seed},
                                      test_dir=tmp_path)
