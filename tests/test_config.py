"""AccelConfig: the ranges the generator supports, errors naming the bad value, derived sizes."""

import pytest

from hdl.config import AccelConfig, ConfigError


@pytest.mark.parametrize("kwargs, message", [
    ({"height": 3}, "height=3 is out of range 4..256"),
    ({"width": 257}, "width=257 is out of range 4..256"),
    ({"in_channels": 0}, "in_channels=0 is out of range 1..64"),
    ({"instances": 65}, "instances=65 is out of range 1..64"),
    ({"in_channels": 4, "lanes": 5}, "lanes=5 is out of range 1..4"),
    ({"bus_width": 384}, "bus_width=384 is not a power of two"),
    ({"out_channels": 0}, "out_channels=0 is out of range 1..256"),
    ({"out_channels": 257}, "out_channels=257 is out of range 1..256"),
    ({"height": 4.5}, "height must be an integer, not 4.5"),
])
def test_invalid_values_are_named(kwargs, message):
    with pytest.raises(ConfigError) as exc:
        AccelConfig(**kwargs)
    assert str(exc.value).startswith(message)


def test_defaults_are_the_papers_design():
    cfg = AccelConfig()
    assert (cfg.instances, cfg.height, cfg.width, cfg.in_channels) == (16, 64, 64, 1)
    assert cfg.bus_width == 512 and cfg.lanes == 1 and cfg.groups == 1
    assert cfg.out_channels == 16 and cfg.ofm_words == 64


def test_widths_cover_the_worst_case():
    cfg = AccelConfig(in_channels=64)
    worst_sum = 9 * 64 * (-128) * (-128)
    assert worst_sum < 2 ** (cfg.sum_bits - 1)
    assert 2**31 - 1 + worst_sum < 2 ** (cfg.acc_bits - 1)
    assert (2**31 - 1 + worst_sum) * (2**16 - 1) + 2**30 < 2 ** cfg.scaled_bits


def test_out_channels_independent_of_instances():
    assert AccelConfig(instances=4).out_channels == 4          # default N = P, as before
    for n in (1, 3, 5, 17, 24, 48, 256):
        cfg = AccelConfig(instances=16, out_channels=n)
        assert (cfg.instances, cfg.out_channels) == (16, n)
        assert cfg.segment_bits == 16 * 8           # input records sized by P, not N
    assert AccelConfig(out_channels=3).tag != AccelConfig(out_channels=5).tag


def test_json_round_trip():
    cfg = AccelConfig(height=10, width=12, in_channels=20, instances=5, lanes=7, out_channels=9)
    assert AccelConfig.from_json(cfg.to_json()) == cfg
    assert cfg.groups == 3


def test_layer_shares_its_design():
    """Every layer within the maxima is the same design: one tag, one build."""
    design = AccelConfig(height=64, width=64, in_channels=32, out_channels=32, instances=16)
    layer = design.layer(16, 16, 1, 16)
    assert layer.design == design and layer.tag == design.tag and not layer.is_design
    assert design.is_design and layer.lanes == design.lanes == 16
    assert (layer.groups, layer.row_segments, layer.segments) == (1, 1, 16)
    assert design.sum_bits == layer.sum_bits     # widths of the design's maximum C_in
    assert AccelConfig.from_json(layer.to_json()) == layer


@pytest.mark.parametrize("field,value", [("height", 65), ("width", 80), ("in_channels", 33),
                                         ("out_channels", 40)])
def test_layer_beyond_the_maxima_is_refused(field, value):
    design = AccelConfig(height=64, width=64, in_channels=32, out_channels=32)
    shape = {**dict(height=16, width=16, in_channels=1, out_channels=16), field: value}
    with pytest.raises(ConfigError, match=f"{field}={value} exceeds the design's maximum "
                                          f"max_{field}="):
        design.layer(**shape)
