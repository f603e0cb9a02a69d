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
    # the stream: each output at its place, padding bytes 255 (ignored by the expansion)
    compact = [np.where(s.compact_flat >= 0, o.reshape(-1)[np.maximum(s.compact_flat, 0)], 255)
               .astype(np.uint8) for o in ofm]
    per = -(-s.stream_length // 8)
    beats = []
    for values in compact:
        flat = np.zeros(per * 8, np.uint8)
        flat[:s.stream_length] = values
        beats += [int.from_bytes(row.tobytes(), "little") for row in flat.reshape(-1, 8)]
    got = decode_batch(cfg, beats, s, means, 2)
    np.testing.assert_array_equal(got, np.where(mask, means, ofm))


def test_protocol_beat_counts():
    cfg = AccelConfig(height=8, width=7, in_channels=5, instances=4, lanes=2, bus_width=64)
    f = random_frame(cfg, np.random.default_rng(SEED))
    s = deal(f.mask, 4)
    # header + N*G filter records of 9*2 bytes (3 beats of 8 bytes) + N quant records
    assert len(weight_beats(cfg, f.weight, f.bias, f.mult, f.shift)) == 1 + 4 * 3 * 3 + 4
    # header + steps records of 4 entries of 2+4+1 bits + S = 8*2 records of 4 pixel fields of
    # 2+1 bits (one beat each)
    assert len(schedule_beats(cfg, s)) == 1 + s.steps + 16
    # segment records of 4 pixels x 2 lanes = one 64-bit beat: H * G * J = 8 * 3 * 2 per image
    assert image_beats(cfg) == 8 * 3 * 2
    assert len(batch_frame_beats(cfg, np.stack([f.ifmap] * 2))) == 1 + 2 * image_beats(cfg)
    # default: 4 segment records of 16 pixels per 512-bit beat, 64 beats per image
    assert image_beats(AccelConfig()) == 64


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


def _arrays(cfg=AccelConfig(height=4, width=5, in_channels=2, instances=3)):
    f = random_frame(cfg, np.random.default_rng(SEED))
    return {k: getattr(f, k) for k in ("ifmap", "weight", "bias", "mask", "means", "mult", "shift")}


@pytest.mark.parametrize("name,value,msg", [
    ("shift", lambda a: np.full_like(a["shift"], 70), "'shift' has values outside 0..31"),
    ("mult", lambda a: np.full_like(a["mult"], 2**40), "'mult' has values outside 0..65535"),
    ("mult", lambda a: np.full_like(a["mult"], -1), "'mult' has values outside"),
    ("weight", lambda a: np.full(a["weight"].shape, np.nan), "'weight' has dtype float64, expected int8"),
    ("means", lambda a: np.full(a["means"].shape, 999, np.int16), "'means' has dtype int16, expected uint8"),
    ("mask", lambda a: a["mask"][:1], "'mask' has shape [1, 4, 5], expected [3, 4, 5]"),
    ("mask", lambda a: a["mask"].astype(np.uint8), "'mask' has dtype uint8, expected bool"),
    ("ifmap", lambda a: a["ifmap"][None], "'ifmap' has shape"),
    ("ifmap", lambda a: a["ifmap"][:, :0], "'ifmap' has shape"),
    ("weight", lambda a: a["weight"][:, :, :2], "'weight' has shape"),
    ("bias", lambda a: a["bias"].astype(np.int64), "'bias' has dtype int64, expected int32"),
    ("mult", lambda a: a["mult"].astype(np.int32), "'mult' has dtype int32, expected int64"),
])
def test_frame_validates_at_construction(name, value, msg):
    """Frame(...) runs the same checks as from_arrays: no invalid frame can exist."""
    arrays = _arrays()
    bad = {**arrays, name: value(arrays)}
    with pytest.raises(FrameError, match=msg.replace("[", r"\[").replace("]", r"\]")):
        Frame(**bad)
    if name != "mult" or "int32" not in msg:   # from_arrays converts integer mult/shift only
        with pytest.raises(FrameError):
            Frame.from_arrays(bad)


def test_frame_refuses_non_arrays_and_stays_frozen():
    import dataclasses
    arrays = _arrays()
    with pytest.raises(TypeError, match="'bias' must be a numpy array, not list"):
        Frame(**{**arrays, "bias": arrays["bias"].tolist()})
    f = Frame(**arrays)
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.shift = np.zeros(3, np.int64)
    with pytest.raises(FrameError, match="'shift' has values outside"):
        dataclasses.replace(f, shift=np.full(3, 32, np.int64))


def test_from_arrays_converts_byte_order_and_integer_mult_shift():
    arrays = _arrays()
    big = {k: v.astype(v.dtype.newbyteorder(">")) for k, v in arrays.items()}
    big["mult"] = arrays["mult"].astype(">u2")
    big["shift"] = arrays["shift"].astype(np.uint8)
    f = Frame.from_arrays(big)
    for k, v in arrays.items():
        got = getattr(f, k)
        assert got.dtype == v.dtype and got.dtype.isnative
        np.testing.assert_array_equal(got, v)
    np.testing.assert_array_equal(golden_ofm(f), golden_ofm(Frame(**arrays)))
    with pytest.raises(FrameError, match="'bias' has dtype >i4"):     # Frame(...) itself is strict
        Frame(**{**arrays, "bias": big["bias"]})
    with pytest.raises(FrameError, match="'mult' has values outside 0..65535"):   # no wrap-around
        Frame.from_arrays({**arrays, "mult": np.full(3, 2**64 - 1, np.uint64)})
    with pytest.raises(FrameError, match="'shift' has dtype float64, expected an integer dtype"):
        Frame.from_arrays({**arrays, "shift": arrays["shift"].astype(np.float64)})


@pytest.mark.parametrize("density,exc", [(1.5, ValueError), (-0.1, ValueError), (float("nan"), ValueError),
                                         (float("inf"), ValueError), ("0.5", TypeError), (True, TypeError)])
def test_random_frame_refuses_bad_density(density, exc):
    cfg = AccelConfig(height=4, width=4, instances=2)
    with pytest.raises(exc, match="density must be"):
        random_frame(cfg, np.random.default_rng(SEED), density=density)


def test_random_frame_refuses_a_mask_of_the_wrong_shape():
    cfg = AccelConfig(height=4, width=4, instances=2)
    with pytest.raises(FrameError, match=r"mask must be bool \[2, 4, 4\]"):
        random_frame(cfg, np.random.default_rng(SEED), mask=np.zeros((1, 4, 4), bool))
    with pytest.raises(FrameError, match="mask must be bool"):
        random_frame(cfg, np.random.default_rng(SEED), mask=np.zeros((2, 4, 4), np.float64))
    with pytest.raises(ValueError, match="density or mask"):
        random_frame(cfg, np.random.default_rng(SEED), density=0.5, mask=np.zeros((2, 4, 4), bool))
    f = random_frame(cfg, np.random.default_rng(SEED), mask=np.ones((2, 4, 4), bool))
    assert f.mask.all() and (golden_ofm(f) == f.means).all()
    assert random_frame(cfg, np.random.default_rng(SEED), density=1.0).mask.all()
    assert not random_frame(cfg, np.random.default_rng(SEED), density=0.0).mask.any()
