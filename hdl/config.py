"""The one frozen configuration shared by the generator, the golden model and the testbenches.

Everything that sizes the hardware lives here; every other module derives its numbers from an
:class:`AccelConfig` instead of repeating them.  The testbenches receive it as JSON through the
``VELCRO_CONFIG`` environment variable (:meth:`AccelConfig.to_json` / :meth:`from_json`).

This module deliberately imports nothing from Amaranth, so the host side can use it too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

# The data widths of the arithmetic contract are defined with the golden model (py_ref, the
# bottom layer) and re-exported here for the generator.
from py_ref.golden import (BIAS_BITS, IFMAP_BITS, MULT_BITS, OFM_BITS, OFM_MAX,  # noqa: F401
                           SHIFT_BITS, WEIGHT_BITS)

__all__ = ["AccelConfig", "ConfigError", "DEFAULT"]

#: Kernel geometry is fixed by the paper's hardware: 3x3, stride 1, zero padding 1 (output = H x W).
KERNEL = 3
PADDING = 1

#: One channel's quant record of the WEIGHTS command, low bits first: bias (BIAS_BITS) | mult
#: (MULT_BITS) | the shift's slot, the rest of the record (16 bits), of which the requantiser
#: uses SHIFT_BITS (0..31). hdl/protocol.py packs and hdl/datapath.py's quant_layout reads
#: these slots.
QUANT_BITS = 64
SHIFT_SLOT_BITS = QUANT_BITS - BIAS_BITS - MULT_BITS

#: Cycles beyond E*G that E back-to-back work entries take through a datapath, first offer to
#: last result inclusive: the depth of hdl/datapath.py's pipeline, which derives it from its stages
#: and asserts this value (tests/test_datapath.py times it). Here, in plain Python, because the
#: host side (hdl/contract.py, the testbenches) needs it without loading Amaranth.
PIPELINE_LATENCY = 29


#: The clocks, one definition each. The testbenches' simulated clock period in ns (a time base
#: only: every result is counted in cycles).
SIM_CLOCK_NS = 10
#: The target clock: the U280 platform's default kernel clock (v++ --kernel_frequency overrides
#: it at link time). make kernel's XDC, make synth's throughput, the energy model's static term,
#: the reports' images/s and the SAIF files' clock all derive from it.
KERNEL_CLOCK_MHZ = 300
#: Its period as the XDC states it, in ns rounded to 1 ps: 3.333.
KERNEL_CLOCK_PERIOD_NS = round(1e3 / KERNEL_CLOCK_MHZ, 3)


#: Output channels one design can hold (the SCHEDULE entry's channel field and the filter memory
#: are sized by N; 256 covers every 3x3 layer of the supported models).
MAX_OUT_CHANNELS = 256


#: The layer fields set at run time; each has a ``max_`` field that sizes the design.
_SHAPE = ("height", "width", "in_channels", "out_channels")


def load_json(text: str):
    """``json.loads`` of untrusted text: every way it can fail is a ValueError (json's own
    errors are; a document nested too deeply raises RecursionError, here turned into one)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("the JSON document is nested too deeply") from None


class ConfigError(ValueError):
    """A configuration value is outside what the generator supports."""


def _check_range(name, value, lo, hi):
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, not {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} is out of range {lo}..{hi}")


@dataclasses.dataclass(frozen=True)
class AccelConfig:
    """Parameters of the compression-skip conv2d(3x3, pad 1) + ReLU accelerator.

    ``instances`` is P, the datapaths that share the work of a layer; ``out_channels`` is N,
    the layer's output channels (default: P). They are independent: every instance holds every
    channel's filter (slot = channel) and the pixel deal gives each instance one pixel of every
    segment of P pixels, so any N >= 1 runs on P instances (N < P, N = P, N > P, N prime).
    ``lanes`` is L, the number of input channels each instance consumes per cycle (default:
    all of them, up to 16).

    **Design and layer.** ``max_height``, ``max_width``, ``max_in_channels`` and
    ``max_out_channels`` size the generated hardware (default: the layer's own shape); ``height``,
    ``width``, ``in_channels`` and ``out_channels`` are the layer that runs on it, set at run
    time by the LAYER command (:mod:`hdl.protocol`). Every layer within the maxima runs on the
    same Verilog: :attr:`design` is the configuration the generator sees (its layer = the
    maxima, which is also what the engine runs after power-up), :meth:`layer` another layer on
    the same design, and :attr:`tag` names the design only.

    **The default** (:data:`DEFAULT`, 16 instances x 64x64, C_in = 1, N = P = 16) is the one
    default shape of every command, and conv1 of the committed Fashion-MNIST CNN (the shape
    ``make sim``'s velcro mask kinds need, sim.workloads.VELCRO_SHAPE).
    """

    height: int = 64
    width: int = 64
    in_channels: int = 1
    instances: int = 16
    lanes: int | None = None
    bus_width: int = 512
    out_channels: int | None = None
    max_height: int | None = None
    max_width: int | None = None
    max_in_channels: int | None = None
    max_out_channels: int | None = None

    def __post_init__(self):
        _check_range("height", self.height, 4, 256)
        _check_range("width", self.width, 4, 256)
        _check_range("in_channels", self.in_channels, 1, 64)
        _check_range("instances", self.instances, 1, 64)
        if self.out_channels is None:
            object.__setattr__(self, "out_channels", self.instances)
        _check_range("out_channels", self.out_channels, 1, MAX_OUT_CHANNELS)
        for name, hi in zip(_SHAPE, (256, 256, 64, MAX_OUT_CHANNELS)):
            if getattr(self, "max_" + name) is None:
                object.__setattr__(self, "max_" + name, getattr(self, name))
            _check_range("max_" + name, getattr(self, "max_" + name), 1, hi)
            if getattr(self, name) > getattr(self, "max_" + name):
                raise ConfigError(f"{name}={getattr(self, name)} exceeds the design's maximum "
                                  f"max_{name}={getattr(self, 'max_' + name)}")
        _check_range("max_height", self.max_height, 4, 256)
        _check_range("max_width", self.max_width, 4, 256)
        if self.lanes is None:
            object.__setattr__(self, "lanes", min(self.max_in_channels, 16))
        _check_range("lanes", self.lanes, 1, self.max_in_channels)
        _check_range("bus_width", self.bus_width, 64, 1024)
        if self.bus_width & (self.bus_width - 1):
            raise ConfigError(f"bus_width={self.bus_width} is not a power of two")

    # -- design and layer ----------------------------------------------------------------------

    @property
    def design(self) -> "AccelConfig":
        """The generated hardware: this configuration with its layer set to the maxima (what the
        generator, the build folder and the engine's power-up layer see)."""
        return dataclasses.replace(self, **{name: getattr(self, "max_" + name)
                                            for name in _SHAPE})

    def layer(self, height: int, width: int, in_channels: int,
              out_channels: int) -> "AccelConfig":
        """Another layer on the same design; a shape beyond a maximum raises ConfigError naming
        it."""
        return dataclasses.replace(self, height=height, width=width, in_channels=in_channels,
                                   out_channels=out_channels)

    @property
    def is_design(self) -> bool:
        """The layer is the maxima (the shape the engine runs without a LAYER command)."""
        return self == self.design

    # -- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "AccelConfig":
        d = load_json(text)
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object, not {type(d).__name__}")
        return cls(**d)

    @property
    def tag(self) -> str:
        """Short, stable, human-readable name of the design (not of the layer) used for build
        folders: every layer of one design shares its build."""
        d = self.design
        digest = hashlib.sha1(d.to_json().encode()).hexdigest()[:8]
        return (f"p{d.instances}_n{d.out_channels}_c{d.in_channels}"
                f"_{d.height}x{d.width}"
                f"_l{d.lanes}_{digest}")

    # -- derived geometry ----------------------------------------------------------------------

    @property
    def positions(self) -> int:
        """Output positions per output channel (H*W: stride 1, padding 1)."""
        return self.height * self.width

    @property
    def groups(self) -> int:
        """Channel groups G = ceil(C_in / L): cycles spent per uncompressed output."""
        return math.ceil(self.in_channels / self.lanes)

    @property
    def row_segments(self) -> int:
        """J = ceil(W / P): each image row is cut into segments of P consecutive pixels (the last
        one short when P does not divide W); the window dealer deals one pixel of every segment
        to each instance (py_ref.schedule.deal)."""
        return math.ceil(self.width / self.instances)

    @property
    def segments(self) -> int:
        """S = H * J segments per image: the pixels (windows) each instance holds per image."""
        return self.height * self.row_segments

    @property
    def pairs(self) -> int:
        """ceil(P / 2) datapaths: instances 2d and 2d + 1 (twins) share one packed DSP48E2 chain
        and compute one channel per step (:mod:`py_ref.schedule`, :mod:`py_ref.dsp`)."""
        return -(-self.instances // 2)

    @property
    def twins(self) -> int:
        """Instances per datapath: 2 (1 when P = 1)."""
        return min(self.instances, 2)

    @property
    def segment_bits(self) -> int:
        """One FRAME input record: the P pixels of one segment of one channel group, L lanes each."""
        return self.instances * self.pixel_bits

    @property
    def window_bits(self) -> int:
        """One 3x3 window of one channel group: 9 pixels of L lanes (a window-memory word)."""
        return 9 * self.pixel_bits

    @property
    def bus_bytes(self) -> int:
        return self.bus_width // 8

    @property
    def ofm_words(self) -> int:
        """Words of ``bus_width`` bits per instance output map (means load and drain unit)."""
        return math.ceil(self.positions / self.bus_bytes)

    # -- record sizes of the input stream (see hdl/protocol.py) ---------------------------------

    @property
    def pixel_bits(self) -> int:
        """One ifmap pixel of one channel group: L int8 values."""
        return self.lanes * IFMAP_BITS

    @property
    def weight_bits(self) -> int:
        """One output channel's 3x3 filter for one channel group: 9*L int8 values."""
        return 9 * self.lanes * WEIGHT_BITS

    QUANT_BITS = QUANT_BITS   # one channel's quant record (the module's QUANT_BITS)

    def beats(self, record_bits: int) -> int:
        """Bus beats per record: records are split little-endian over ceil(bits/bus) beats."""
        return math.ceil(record_bits / self.bus_width)

    # -- arithmetic widths (why no legal input overflows) ----------------------------------------

    @property
    def sum_bits(self) -> int:
        """Signed width of sum_{c,ky,kx} w*x.

        Each int8*int8 product lies in [-128*127, 128*128] = [-16256, 16384] (16-bit signed
        holds it, since -128*-128 = 16384 < 2**15). At most 9*C_in products are summed, so
        |sum| <= 9*C_in*2**14 and 15 + ceil(log2(9*C_in)) magnitude bits plus sign suffice.
        Sized by the design's maximum C_in (the hardware serves every layer within it).
        """
        return 16 + math.ceil(math.log2(9 * self.max_in_channels))

    @property
    def acc_bits(self) -> int:
        """Signed width of acc = bias + sum: one bit more than the wider of int32 and the sum."""
        return max(BIAS_BITS, self.sum_bits) + 1

    @property
    def scaled_bits(self) -> int:
        """Unsigned width of relu(acc) * mult + round: (acc_bits-1) + 16 bits, plus one carry."""
        return (self.acc_bits - 1) + MULT_BITS + 1


DEFAULT = AccelConfig()
