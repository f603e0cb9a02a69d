"""Integer golden model of the accelerator, and the FRAME arrays it consumes.

The arithmetic contract (shared with the RTL, which is compared with ``==``)::

    acc      = bias[n] + sum_{c,ky,kx} weight[n,c,ky,kx] * X[c, i+ky-1, j+kx-1]   (X = 0 outside)
    r        = max(acc, 0)
    q        = min(255, (r*mult[n] + ((1 << shift[n]) >> 1)) >> shift[n])
    ofm[n,i,j] = means[n,i,j] if mask[n,i,j] else q

Everything is computed in int64: |acc| < 2**33 and r*mult < 2**49, so nothing can overflow.
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np


__all__ = ["IFMAP_BITS", "WEIGHT_BITS", "BIAS_BITS", "MULT_BITS", "SHIFT_BITS", "OFM_BITS",
           "OFM_MAX", "FRAME_ARRAYS", "FrameError", "Frame", "golden_ofm", "golden_mismatch",
           "float_reference", "random_frame", "random_batch", "point_wide_mask"]

#: Data widths of the arithmetic contract, the one definition: the generator (hdl/config.py,
#: the requantiser, the protocol's fields) and the exporter's quantisation derive from them.
IFMAP_BITS = 8    # int8 activations
WEIGHT_BITS = 8   # int8 weights
BIAS_BITS = 32    # int32 bias
MULT_BITS = 16    # requantisation multiplier, 0 <= mult < 2**16
SHIFT_BITS = 5    # requantisation shift, 0..31
OFM_BITS = 8      # uint8 output (ReLU output requantised and saturated)
#: The saturation of the requantised output: 255.
OFM_MAX = (1 << OFM_BITS) - 1


def _signed_range(bits: int) -> tuple:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


#: name -> (dtype, low, high) of every array a FRAME.npz holds.
FRAME_ARRAYS = {
    "ifmap": (np.int8, *_signed_range(IFMAP_BITS)),
    "weight": (np.int8, *_signed_range(WEIGHT_BITS)),
    "bias": (np.int32, *_signed_range(BIAS_BITS)),
    "mask": (np.bool_, 0, 1),
    "means": (np.uint8, 0, OFM_MAX),
    "mult": (np.int64, 0, (1 << MULT_BITS) - 1),
    "shift": (np.int64, 0, (1 << SHIFT_BITS) - 1),
}


class FrameError(ValueError):
    """A frame's arrays are missing, of the wrong dtype or shape, or out of range."""


def _check_arrays(arrays: dict) -> None:
    """The one validation of a frame's arrays (dtypes, ranges, shapes); raise FrameError.

    ``arrays`` maps every name of :data:`FRAME_ARRAYS` to a numpy array of exactly that
    dtype in native byte order (:meth:`Frame.from_arrays` converts what it can first).
    """
    for name, (dtype, lo, hi) in FRAME_ARRAYS.items():
        a = arrays[name]
        if not isinstance(a, np.ndarray):
            raise TypeError(f"array '{name}' must be a numpy array, not {type(a).__name__}")
        if a.dtype != np.dtype(dtype) or not a.dtype.isnative:
            raise FrameError(f"array '{name}' has dtype {a.dtype}, expected {np.dtype(dtype)}")
        if a.size and name != "mask" and (a.min() < lo or a.max() > hi):
            raise FrameError(f"array '{name}' has values outside {lo}..{hi} "
                             f"(min {a.min()}, max {a.max()})")
    ifmap = arrays["ifmap"]
    if ifmap.ndim != 3 or 0 in ifmap.shape:
        raise FrameError(f"array 'ifmap' has shape {list(ifmap.shape)}, expected [C_in, H, W] "
                         "with every size at least 1")
    c_in, h, w = ifmap.shape
    weight = arrays["weight"]
    if weight.ndim != 4 or weight.shape[1:] != (c_in, 3, 3) or weight.shape[0] == 0:
        raise FrameError(f"array 'weight' has shape {list(weight.shape)}, expected [N, {c_in}, 3, 3] "
                         "with N at least 1")
    n = weight.shape[0]
    expect = {"bias": (n,), "mult": (n,), "shift": (n,), "mask": (n, h, w), "means": (n, h, w)}
    for name, shape in expect.items():
        if arrays[name].shape != shape:
            raise FrameError(f"array '{name}' has shape {list(arrays[name].shape)}, "
                             f"expected {list(shape)}")


@dataclasses.dataclass(frozen=True)
class Frame:
    """One layer invocation: the arrays of the arithmetic contract, validated at construction
    (``Frame(...)`` raises :class:`FrameError` on a wrong dtype, range or shape).  The frame
    holds read-only copies of the arrays it was given."""

    ifmap: np.ndarray   # int8  [C_in, H, W]
    weight: np.ndarray  # int8  [N, C_in, 3, 3]
    bias: np.ndarray    # int32 [N]
    mask: np.ndarray    # bool  [N, H, W], True = compressed (output the stored mean)
    means: np.ndarray   # uint8 [N, H, W]
    mult: np.ndarray    # int64 [N], 0 <= mult < 2**16
    shift: np.ndarray   # int64 [N], 0..31

    def __post_init__(self):
        # The frame owns read-only copies: a caller changing its arrays after validation (say
        # mult[0] = 2**40) cannot change the validated frame, nor can anything downstream.
        for name in FRAME_ARRAYS:
            a = getattr(self, name)
            if isinstance(a, np.ndarray):
                a = a.copy()
                a.flags.writeable = False
                object.__setattr__(self, name, a)
        _check_arrays({name: getattr(self, name) for name in FRAME_ARRAYS})

    @classmethod
    def from_arrays(cls, arrays) -> "Frame":
        """Validate a mapping of arrays (e.g. an opened .npz); raise FrameError naming the problem.

        More lenient than ``Frame(...)`` in two conversions only: byte-swapped (big-endian)
        arrays are converted to native order, and ``mult``/``shift`` of any integer dtype
        become int64 (after their range is checked, so nothing wraps).
        """
        out = {}
        for name, (dtype, lo, hi) in FRAME_ARRAYS.items():
            if name not in arrays:
                raise FrameError(f"missing array '{name}'")
            a = np.asarray(arrays[name])
            if not a.dtype.isnative:
                a = a.astype(a.dtype.newbyteorder("="))
            if name in ("mult", "shift") and a.dtype != np.dtype(dtype):
                if not np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_:
                    raise FrameError(f"array '{name}' has dtype {a.dtype}, expected an integer dtype")
                if a.size and (a.min() < lo or a.max() > hi):
                    raise FrameError(f"array '{name}' has values outside {lo}..{hi} "
                                     f"(min {a.min()}, max {a.max()})")
                a = a.astype(dtype)
            out[name] = a
        return cls(**out)

    def save(self, path) -> None:
        np.savez(path, **dataclasses.asdict(self))

    def with_ifmap(self, ifmap) -> "Frame":
        """The same constants (weights, requantisation, mask, means) with another ifmap: one
        more image of the same layer."""
        return dataclasses.replace(self, ifmap=ifmap)

    def batch(self, ifmaps) -> list:
        """One frame per image of ``ifmaps`` ([B, C_in, H, W]), all with this frame's
        constants."""
        return [self.with_ifmap(x) for x in ifmaps]

    @property
    def uncompressed(self) -> np.ndarray:
        """U_n: uncompressed outputs per instance."""
        return (~self.mask).reshape(self.mask.shape[0], -1).sum(axis=1)


def conv_acc(frame: Frame) -> np.ndarray:
    """int64 [N,H,W]: bias + 3x3 zero-padded convolution."""
    c_in, h, w = frame.ifmap.shape
    x = np.zeros((c_in, h + 2, w + 2), dtype=np.int64)
    x[:, 1:-1, 1:-1] = frame.ifmap
    windows = np.stack([np.stack([x[:, ky:ky + h, kx:kx + w] for kx in range(3)], axis=1)
                        for ky in range(3)], axis=1)            # [C, 3, 3, H, W]
    acc = np.einsum("nckl,cklhw->nhw", frame.weight.astype(np.int64), windows)
    return acc + frame.bias.astype(np.int64)[:, None, None]


def requantise(acc: np.ndarray, mult: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """ReLU, multiply, round half up, shift, saturate at OFM_MAX (255): uint8 of acc's shape."""
    r = np.maximum(acc, 0)
    mult = mult.astype(np.int64)[:, None, None]
    shift = shift.astype(np.int64)[:, None, None]
    q = (r * mult + ((np.int64(1) << shift) >> 1)) >> shift
    return np.minimum(q, OFM_MAX).astype(np.uint8)


def golden_ofm(frame: Frame) -> np.ndarray:
    """uint8 [N,H,W]: exactly what the hardware outputs."""
    q = requantise(conv_acc(frame), frame.mult, frame.shift)
    return np.where(frame.mask, frame.means, q).astype(np.uint8)


def golden_mismatch(frame: Frame, ofm) -> str | None:
    """None if ``ofm`` (uint8 [N, H, W]) equals :func:`golden_ofm` of ``frame`` bit for bit,
    else what differs: "D of S outputs differ from the golden model, first at [n,i,j]=[...]:
    got X expected Y". The one comparison of an RTL output with the golden model."""
    expected = golden_ofm(frame)
    ofm = np.asarray(ofm)
    bad = np.argwhere(ofm != expected)
    if not len(bad):
        return None
    where = tuple(int(i) for i in bad[0])
    return (f"{len(bad)} of {expected.size} outputs differ from the golden model, first at "
            f"[n,i,j]={list(where)}: got {int(ofm[where])} expected {int(expected[where])}")


def float_reference(frame: Frame) -> np.ndarray:
    """float64 [N,H,W]: the same layer in float PyTorch (conv2d + ReLU, scale, clamp, no rounding).

    The golden model differs from it by rounding only: |golden - float| <= 0.5 where nothing
    saturates, which is the quantisation tolerance the tests state.
    """
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(frame.ifmap.astype(np.float64))[None]
    w = torch.from_numpy(frame.weight.astype(np.float64))
    b = torch.from_numpy(frame.bias.astype(np.float64))
    y = F.relu(F.conv2d(x, w, b, padding=1))[0]
    scale = torch.from_numpy(frame.mult.astype(np.float64) / 2.0 ** frame.shift.astype(np.float64))
    y = torch.clamp(y * scale[:, None, None], max=255.0).numpy()
    return np.where(frame.mask, frame.means.astype(np.float64), y)


def random_frame(cfg, rng: np.random.Generator, *, density: float | None = None,
                 mask: np.ndarray | None = None, extreme: bool = False) -> Frame:
    """A random frame of ``cfg``'s shapes (anything with ``out_channels`` or ``instances`` for N,
    ``in_channels``, ``height`` and ``width``, e.g. hdl.config.AccelConfig). ``density`` is the
    compressed fraction of the mask.

    Biases and requantisation are drawn so outputs spread over 0..255 rather than saturating;
    ``extreme=True`` draws from the corners of every range instead.  ``mask`` (bool [N,H,W])
    fixes the mask instead of drawing one; a ``density`` outside 0..1 (or NaN) raises
    ValueError, a mask of the wrong shape or dtype FrameError.
    """
    if density is not None:
        if isinstance(density, bool) or not isinstance(density, numbers.Real):
            raise TypeError(f"density must be a number, not {density!r}")
        if not 0 <= density <= 1:        # also refuses NaN
            raise ValueError(f"density must be a fraction 0..1, not {density!r}")
        if mask is not None:
            raise ValueError("give density or mask, not both")
    n = getattr(cfg, "out_channels", None) or cfg.instances
    c, h, w = cfg.in_channels, cfg.height, cfg.width
    if extreme:
        ifmap = rng.choice(np.array([-128, 127, -128, 0], np.int8), size=(c, h, w))
        weight = rng.choice(np.array([-128, 127, -128, 1], np.int8), size=(n, c, 3, 3))
        bias = rng.choice(np.array([-2**31, 2**31 - 1, 0, -1], np.int64), size=n).astype(np.int32)
        mult = rng.choice(np.array([0, 1, 2**16 - 1], np.int64), size=n)
        shift = rng.choice(np.array([0, 31, 16], np.int64), size=n)
    else:
        ifmap = rng.integers(-128, 128, size=(c, h, w), dtype=np.int8)
        weight = rng.integers(-128, 128, size=(n, c, 3, 3), dtype=np.int8)
        bias = rng.integers(-2**16, 2**16, size=n, dtype=np.int32)
        # typical |acc| ~ 2**13 * sqrt(9*C_in): scale so that maps to ~0..255
        shift = rng.integers(10, 20, size=n).astype(np.int64)
        mult = rng.integers(1, 2**8, size=n).astype(np.int64)
    if mask is None:
        d = rng.random() if density is None else density
        mask = rng.random((n, h, w)) < d
    else:
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.shape != (n, h, w):
            raise FrameError(f"mask must be bool [{n}, {h}, {w}] for this configuration, "
                             f"not {mask.dtype} {list(mask.shape)}")
    means = rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)
    return Frame(ifmap=ifmap, weight=weight, bias=bias, mask=mask, means=means,
                 mult=mult, shift=shift)


def random_batch(cfg, rng: np.random.Generator, first: Frame, images: int) -> list:
    """``first`` and ``images - 1`` more frames with its constants and the ifmaps of new
    random frames (:func:`random_frame`, so the generator advances as it always did)."""
    return [first] + [first.with_ifmap(random_frame(cfg, rng).ifmap) for _ in range(images - 1)]


def point_wide_mask(rng: np.random.Generator, shape, ratio: float, *, skewed: bool = False) -> np.ndarray:
    """A mask made the way Algorithm 1 makes one: a single percentile threshold over the whole
    activation point [N, H, W], here of random variances whose per-channel scales span three
    decades, so channels keep very different numbers of outputs.  ``skewed`` also forces
    channel 0 fully compressed and channel 1 fully kept (the balance tests' extreme case)."""
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else shape
    if (not isinstance(shape, tuple) or len(shape) != 3
            or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1
                   for d in shape)):
        raise ValueError(f"shape must be (N, H, W) of sizes at least 1, not {shape!r}")
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0 <= ratio <= 1:
        raise ValueError(f"ratio must be a fraction 0..1, not {ratio!r}")
    n = shape[0]
    scale = np.logspace(0, 3, n)[rng.permutation(n)]
    variance = rng.random(shape) * scale[:, None, None]
    mask = variance < np.quantile(variance, ratio)
    if skewed:
        mask[0] = True
        if n > 1:
            mask[1] = False
    return mask
