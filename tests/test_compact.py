"""py_ref.compact: the compact output stream's golden model and the cycle model."""

import numpy as np
import pytest

from conftest import seed_for
from py_ref.compact import golden_compact
from py_ref.golden import golden_ofm
from py_ref.schedule import deal
from test_schedule import frame_for, reference_compact, reference_deal, skewed_mask


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.9, 1.0])
@pytest.mark.parametrize("p_count", [1, 4, 7])
def test_golden_compact_round_trip(ratio, p_count):
    seed = seed_for("compact", ratio, p_count)
    rng = np.random.default_rng(seed)
    mask = rng.random((5, 6, 7)) < ratio
    frame = frame_for(mask, rng)
    s = deal(mask, p_count)
    compact = golden_compact(frame, s)
    golden = golden_ofm(frame)
    order = reference_compact(reference_deal(mask, p_count)[1])
    assert compact.dtype == np.uint8
    assert compact.tolist() == [0 if e is None else int(golden[e]) for e in order]
    np.testing.assert_array_equal(s.expand(compact, frame.means), golden)


def test_golden_compact_skewed():
    rng = np.random.default_rng(seed_for("compact-skewed"))
    mask = skewed_mask(rng, (8, 9, 10), 0.5)
    frame = frame_for(mask, rng)
    s = deal(mask, 5)
    np.testing.assert_array_equal(s.expand(golden_compact(frame, s), frame.means),
                                  golden_ofm(frame))


def test_golden_compact_rejects_other_schedule():
    rng = np.random.default_rng(seed_for("compact-reject"))
    mask = rng.random((3, 4, 5)) < 0.5
    frame = frame_for(mask, rng)
    with pytest.raises(TypeError, match="schedule must be a Schedule"):
        golden_compact(frame, "schedule")
    with pytest.raises(ValueError, match="dealt for a mask of shape"):
        golden_compact(frame, deal(np.zeros((3, 4, 6), bool), 2))
    with pytest.raises(ValueError, match="dealt from the frame's mask"):
        golden_compact(frame, deal(~mask, 2))


def test_compute_cycles_of_the_deal():
    """The cycle law of a dealt schedule, stated once in hdl.contract: steps * G + latency."""
    from hdl.config import AccelConfig
    from hdl.contract import PIPELINE_LATENCY, compute_cycle_bound
    mask = np.zeros((3, 4, 5), bool)          # 20 pixels of 3 outputs
    # 7 instances: six hold 3 pixels, one 2; 6 instances: two hold 4 pixels, four 3
    assert deal(mask, 7).steps == 9 and deal(mask, 6).steps == 12
    cfg = AccelConfig(height=4, width=5, in_channels=5, lanes=2, instances=7, out_channels=3)
    assert compute_cycle_bound(cfg, deal(mask, 7)) == 9 * 3 + PIPELINE_LATENCY
    assert deal(np.ones((2, 4, 4), bool), 4).steps == 0
    # the default image at C = 0: 16 instances, 4096 steps
    assert compute_cycle_bound(AccelConfig(), deal(np.zeros((16, 64, 64), bool), 16)) == \
        4096 + PIPELINE_LATENCY
