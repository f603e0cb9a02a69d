"""Host-flow tests of the Vitis RTL kernel on Icarus and Verilator (sim/tb_kernel.py), its lint,
and the host-side buffer sizes.

Seeds are fixed per (simulator, config, case) and printed; VELCRO_SEED=... overrides them.
"""

import numpy as np
import pytest

from conftest import seed_for

from hdl.config import AccelConfig
from hdl.kernel_host import buffer_beats
from hdl.protocol import batch_frame_beats, layer_beats, schedule_beats, weight_beats
from py_ref.golden import random_frame
from py_ref.schedule import deal
from sim.runner import SIMULATORS

CONFIGS = {
    # 4 instances, odd sizes, one beat per record
    "small": AccelConfig(height=9, width=10, in_channels=1, instances=4, bus_width=512),
    # 20 channels over 3 groups of 8 lanes: two-beat tile and filter records
    "multichannel": AccelConfig(height=7, width=8, in_channels=20, instances=4, lanes=8,
                                bus_width=512),
    # N = 7 output channels on P = 4 instances: params buffer and counter registers sized by N
    "channels": AccelConfig(height=6, width=9, in_channels=2, instances=4, out_channels=7,
                            bus_width=512),
}
CASES = ["host_flow", "unaligned_refused", "reset_mid_run", "register_map"]
# One kernel sized by maxima runs five layers of other shapes, one after another (issue 19)
MAXIMA = AccelConfig(height=12, width=11, in_channels=4, lanes=2, instances=4, out_channels=6,
                     bus_width=512)



def kernel_build(get, cfg, sim):
    from hdl.kernel import KERNEL_NAME, kernel_rtl

    return get(cfg, sim, sources=(str(kernel_rtl(cfg)),), toplevel=KERNEL_NAME,
               tag=f"kernel_{cfg.tag}")


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("sim", SIMULATORS)
def test_kernel(build_for, sim, config, tmp_path):
    seed = str(seed_for("kernel", sim, config))
    kernel_build(build_for, CONFIGS[config], sim).run(
        "sim.tb_kernel", CASES, env={"VELCRO_SEED": seed}, test_dir=tmp_path)


@pytest.mark.parametrize("sim", SIMULATORS)
def test_kernel_network_layers(build_for, sim, tmp_path):
    seed = str(seed_for("kernel", sim, "network_layers"))
    kernel_build(build_for, MAXIMA, sim).run(
        "sim.tb_kernel", ["network_layers_flow"], env={"VELCRO_SEED": seed}, test_dir=tmp_path)


def test_two_compute_units(build_for, tmp_path):
    """`make kernel CUS=2` in simulation: two kernels on one clock and reset, each with its own
    host and its masters on its own HBM pseudo-channels, batches split with the host's
    split_batch, run concurrently, gathered and checked image by image (sim/tb_kernel_cus.py).
    One simulator is enough here: the single-kernel cases run on both."""
    from sim.multi_cu import multi_cu_rtl, wrapper_name

    cfg, k = CONFIGS["small"], 2
    seed = str(seed_for("kernel_cus", k, "small"))
    build_for(cfg, "icarus", sources=tuple(map(str, multi_cu_rtl(cfg, k))),
              toplevel=wrapper_name(k), tag=f"kernel_x{k}_{cfg.tag}").run(
        "sim.tb_kernel_cus", ["split_batches"], env={"VELCRO_SEED": seed, "VELCRO_CUS": str(k)},
        test_dir=tmp_path)


@pytest.mark.slow
def test_kernel_default_config(build_for, tmp_path):
    """The paper's 16 x 64x64 design as a kernel, one frame (Verilator only: build ~minutes)."""
    seed = str(seed_for("kernel", "default"))
    kernel_build(build_for, AccelConfig(), "verilator").run(
        "sim.tb_kernel", ["full_frame"], env={"VELCRO_SEED": seed}, test_dir=tmp_path)


@pytest.mark.parametrize("config", CONFIGS)
def test_buffer_beats_match_protocol(config):
    """The kernel's transfer sizes are the protocol helpers' beats (the params buffer: LAYER
    and WEIGHTS whole; the ifmap: FRAME minus its inserted header) for batches of 1 and 3
    images."""
    cfg = CONFIGS[config]
    f = random_frame(cfg, np.random.default_rng(0))
    s = deal(f.mask, cfg.instances)
    for images in (1, 3):
        beats = buffer_beats(cfg, s, images)
        assert beats["params"] == (len(layer_beats(cfg))
                                   + len(weight_beats(cfg, f.weight, f.bias, f.mult, f.shift)))
        assert beats["schedule"] == len(schedule_beats(cfg, s))
        assert beats["ifmap"] == len(batch_frame_beats(cfg, np.stack([f.ifmap] * images))) - 1
        assert beats["ofm"] == images * -(-s.stream_length // 64)


def test_kernel_rejects_other_bus_widths():
    from hdl.kernel import VelcroKernel

    with pytest.raises(ValueError, match="bus_width must be 512, not 128"):
        VelcroKernel(AccelConfig(height=9, width=10, instances=3, bus_width=128))


@pytest.mark.parametrize("config", ["small", "default"])
def test_kernel_lint(config):
    """verilator --lint-only -Wall is clean apart from hdl/lint_waivers.vlt."""
    from hdl.kernel import KERNEL_NAME, kernel_rtl
    from sim.lint import lint

    cfg = CONFIGS.get(config, AccelConfig())
    result = lint(kernel_rtl(cfg), KERNEL_NAME)
    assert result.returncode == 0, result.stdout + result.stderr
