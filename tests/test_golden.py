"""The golden model against an independent scalar loop and against float PyTorch."""

import numpy as np
import pytest

from hdl.config import AccelConfig
from hdl.protocol import (batch_frame_beats, decode_batch, image_beats, schedule_beats,
                          weight_beats)
from py_ref.schedule import deal
from py_ref.golden import Frame, FrameError, float_reference, golden_ofm, random_frame

SEED = 11


def scalar_reference(f: Frame) -> np.ndarray:
    """The contract written as plain Python loops over Python ints."""
    c_in, h, w = f.ifmap.shape
    n_out = f.weight.shape[0]
    out = np.zeros((n_out, h, w), np.uint8)
    for n in range(n_out):
        for i in range(h):
            for j in range(w):
                if f.mask[n, i, j]:
                    out[n, i, j] = f.means[n, i, j]
                    continue
                acc = int(f.bias[n])
                for c in range(c_in):
                    for ky in range(3):
                        for kx in range(3):
                            y, x = i + ky - 1, j + kx - 1
                            if 0 <= y < h and 0 <= x < w:
                                acc += int(f.weight[n, c, ky, kx]) * int(f.ifmap[c, y, x])
                r = max(acc, 0)
                s = int(f.shift[n])
                out[n, i, j] = min(255, (r * int(f.mult[n]) + ((1 << s) >> 1)) >> s)
    return out


@pytest.mark.parametrize("extreme", [False, True])
def test_golden_equals_scalar_loops(extreme):
    cfg = AccelConfig(height=5, width=6, in_channels=3, instances=4)
    f = random_frame(cfg, np.random.default_rng(SEED), density=0.3, extreme=extreme)
    np.testing.assert_array_equal(golden_ofm(f), scalar_reference(f))


def test_golden_within_half_a_step_of_float_pytorch():
    """Quantisation tolerance: rounding only, |golden - float| <= 0.5 where nothing saturates."""
    cfg = AccelConfig(height=16, width=16, in_channels=4, instances=8)
    f = random_frame(cfg, np.random.default_rng(SEED), density=0.2)
    g, ref = golden_ofm(f).astype(np.float64), float_reference(f)
    unsat = ref < 255
    assert unsat.mean() > 0.5 and (g[unsat] > 0).mean() > 0.2   # the comparison is not vacuous
    assert np.abs(g - ref)[unsat].max() <= 0.5
    assert np.all(g[~unsat] == 255)


def test_protocol_round_trip_of_output_beats():
    """Compact beats of two images -> decode_batch -> the means with the outputs in place."""
    cfg = AccelConfig(height=7, width=9, instances=4, bus_width=64)
    rng = np.random.default_rng(SEED)
    mask = rng.random((4, 7, 9)) < 0.4
    s = deal(mask, 4)
    means = rng.integers(0, 256, (4, 7, 9), dtype=np.uint8)
    ofm = rng.integers(0, 256, (2, 4, 7, 9), dtype=np.uint8)
    compact = [o.reshape(-1)[s.compact_flat] for o in ofm]
    per = -(-s.total // 8)
    beats = []
    for values in compact:
        flat = np.zeros(per * 8, np.uint8)
        flat[:s.total] = values
        beats += [int.from_bytes(row.tobytes(), "little") for row in flat.reshape(-1, 8)]
    got = decode_batch(cfg, beats, s, means, 2)
    np.testing.assert_array_equal(got, np.where(mask, means, ofm))


def test_protocol_beat_counts():
    cfg = AccelConfig(height=8, width=7, in_channels=5, instances=4, lanes=2, bus_width=64)
    f = random_frame(cfg, np.random.default_rng(SEED))
    s = deal(f.mask, 4)
    # header + N*G filter records of 9*2 bytes (3 beats of 8 bytes) + N quant records
    assert len(weight_beats(cfg, f.weight, f.bias, f.mult, f.shift)) == 1 + 4 * 3 * 3 + 4
    # header + steps records of 4 entries of 2+3+3 bits (one beat each)
    assert len(schedule_beats(cfg, s)) == 1 + s.steps
    # tiles of 18 bytes need 3 beats of 8: header + B * G * tiles * 3
    assert image_beats(cfg) == 3 * 9 * 3
    assert len(batch_frame_beats(cfg, np.stack([f.ifmap] * 2))) == 1 + 2 * image_beats(cfg)
    # default: 7 tiles per 512-bit beat, 70 beats per image (>= 85 % pixels)
    assert image_beats(AccelConfig()) == 70


def test_frame_validation_names_the_problem():
    cfg = AccelConfig(height=4, width=4, instances=2)
    f = random_frame(cfg, np.random.default_rng(SEED))
    arrays = {k: getattr(f, k) for k in ("ifmap", "weight", "bias", "mask", "means", "mult", "shift")}
    with pytest.raises(FrameError, match="array 'bias' has shape"):
        Frame.from_arrays({**arrays, "bias": arrays["bias"][:1]})
    with pytest.raises(FrameError, match="array 'means' has dtype int16"):
        Frame.from_arrays({**arrays, "means": arrays["means"].astype(np.int16)})
    with pytest.raises(FrameError, match="missing array 'shift'"):
        Frame.from_arrays({k: v for k, v in arrays.items() if k != "shift"})
