"""One layer as the host programs it: configuration, constants and schedule, with encode/decode.

    program = LayerProgram.for_frame(cfg, frame)   # cfg: the layer (cfg.design: the hardware)
    program.config_beats()                          # LAYER, WEIGHTS, SCHEDULE commands
    program.params_beats(), program.schedule_beats()  # the kernel's params and schedule buffers
    program.frame_beats(ifmaps)                     # FRAME of B images
    program.expand(beats, images)                   # compact output beats -> ofm [B, N, H, W]
    LayerProgram.decode(cfg, program.config_beats(), frame.means) == program

Every host (the cocotb testbenches, the kernel host, ``velcro sim``, ``velcro network``) sends a
layer through this one object, so the command formats of :mod:`hdl.protocol` have one user and
one inverse: :meth:`LayerProgram.decode` reads a command stream back (the LAYER record, the
filters, the requantisation, the dealt work lists and pixel tables) and refuses anything the
encoder could not have written. Plain Python and numpy (the FPGA host needs no Amaranth).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from py_ref.golden import Frame
from py_ref.schedule import Schedule, deal

from .config import AccelConfig
from .protocol import (QUANT_FIELDS, Opcode, batch_frame_beats, compact_beats_per_image, decode_batch,
                       layer_beats, layer_fields, layer_values, pixel_fields, schedule_beats,
                       schedule_entry_fields, weight_beats)

__all__ = ["LayerProgram", "ProgramError"]


class ProgramError(ValueError):
    """A command stream the encoder could not have written (wrong opcode, length or field)."""


@dataclasses.dataclass(frozen=True, eq=False)
class LayerProgram:
    """A layer's deployment constants on ``cfg`` (the layer; ``cfg.design`` is the hardware)."""

    cfg: AccelConfig
    weight: np.ndarray      # int8 [N, C_in, 3, 3]
    bias: np.ndarray        # int32 [N]
    mult: np.ndarray        # int64 [N]
    shift: np.ndarray       # int64 [N]
    means: np.ndarray       # uint8 [N, H, W]: host side only (the compressed outputs' values)
    schedule: Schedule      # the mask dealt over cfg.instances

    @classmethod
    def for_frame(cls, cfg: AccelConfig, frame: Frame) -> "LayerProgram":
        """``frame``'s constants on the layer ``cfg``; ValueError if the frame is another shape."""
        shape = (cfg.in_channels, cfg.height, cfg.width)
        if tuple(frame.ifmap.shape) != shape or frame.weight.shape[0] != cfg.out_channels:
            raise ValueError(f"the frame (ifmap {list(frame.ifmap.shape)}, N = "
                             f"{frame.weight.shape[0]}) is not the layer {list(shape)}, "
                             f"N = {cfg.out_channels}")
        return cls(cfg, frame.weight, frame.bias, frame.mult, frame.shift, frame.means,
                   deal(frame.mask, cfg.instances))

    @property
    def mask(self) -> np.ndarray:
        """bool [N, H, W], True = compressed: what the schedule leaves out."""
        n, h, w = self.schedule.shape
        keep = np.zeros(n * h * w, bool)
        keep[self.schedule.work_flat] = True
        return ~keep.reshape(n, h, w)

    # -- encode ----------------------------------------------------------------------------------

    def layer_beats(self) -> list[int]:
        return layer_beats(self.cfg)

    def weight_beats(self) -> list[int]:
        return weight_beats(self.cfg, self.weight, self.bias, self.mult, self.shift)

    def schedule_beats(self) -> list[int]:
        """The SCHEDULE command (the kernel's schedule buffer)."""
        return schedule_beats(self.cfg, self.schedule)

    def params_beats(self) -> list[int]:
        """LAYER then WEIGHTS (the kernel's params buffer)."""
        return self.layer_beats() + self.weight_beats()

    def config_beats(self, layer: bool = True) -> list[int]:
        """LAYER (unless ``layer`` is false: the engine already holds this shape), WEIGHTS and
        SCHEDULE."""
        return (self.params_beats() if layer else self.weight_beats()) + self.schedule_beats()

    def frame_beats(self, ifmaps) -> list[int]:
        """The FRAME command for int8 ifmaps [B, C_in, H, W] (or one [C_in, H, W])."""
        return batch_frame_beats(self.cfg, ifmaps)

    def output_beats(self, images: int = 1) -> int:
        """Compact output beats of ``images`` images."""
        return images * compact_beats_per_image(self.cfg, self.schedule.stream_length)

    def expand(self, beats, images: int = 1) -> np.ndarray:
        """Compact output beats -> uint8 ofm [images, N, H, W] (the means where compressed)."""
        return decode_batch(self.cfg, beats, self.schedule, self.means, images)

    # -- decode ----------------------------------------------------------------------------------

    @classmethod
    def decode(cls, cfg: AccelConfig, beats, means) -> "LayerProgram":
        """The program whose :meth:`config_beats` (with or without LAYER) are ``beats``, for the
        layer ``cfg`` (W and C_in are not in the commands: the LAYER record holds ceil(W/P) and
        ceil(C_in/L)); ProgramError if the stream is not one the encoder writes."""
        reader = _Reader(cfg, beats)
        if reader.peek() & 0xFF == Opcode.LAYER:
            reader.layer()
        weight, bias, mult, shift = reader.weights()
        schedule = reader.schedule()
        if not reader.done():
            raise ProgramError(f"{reader.left()} beats after the SCHEDULE command")
        return cls(cfg, weight, bias, mult, shift, np.asarray(means), schedule)

    def __eq__(self, other) -> bool:
        if not isinstance(other, LayerProgram):
            return NotImplemented
        arrays = ("weight", "bias", "mult", "shift", "means")
        return (self.cfg == other.cfg
                and all(np.array_equal(getattr(self, a), getattr(other, a)) for a in arrays)
                and _same_schedule(self.schedule, other.schedule))


def _same_schedule(a: Schedule, b: Schedule) -> bool:
    fields = ("offsets", "channel", "seg", "step", "starts")
    return (a.shape == b.shape and a.instances == b.instances
            and all(np.array_equal(getattr(a, f), getattr(b, f)) for f in fields))


def _unpack(value: int, fields: dict) -> dict:
    out, shift = {}, 0
    for name, width in fields.items():
        out[name] = (value >> shift) & ((1 << width) - 1)
        shift += width
    return out


class _Reader:
    """Beats of a config command stream, consumed record by record."""

    def __init__(self, cfg: AccelConfig, beats):
        self.cfg, self.beats, self.pos = cfg, [int(b) for b in beats], 0

    def peek(self) -> int:
        if self.pos >= len(self.beats):
            raise ProgramError(f"the command stream ends after {self.pos} beats")
        return self.beats[self.pos]

    def take(self, count: int) -> list[int]:
        if self.pos + count > len(self.beats):
            raise ProgramError(f"the command stream ends after {len(self.beats)} beats, inside "
                               f"a record that needs {self.pos + count}")
        out = self.beats[self.pos:self.pos + count]
        self.pos += count
        return out

    def done(self) -> bool:
        return self.pos == len(self.beats)

    def left(self) -> int:
        return len(self.beats) - self.pos

    def record(self, bits: int) -> int:
        """One record of ``bits`` over ceil(bits / bus) beats, low beat first."""
        bus = self.cfg.bus_width
        value = sum(b << (bus * i) for i, b in enumerate(self.take(self.cfg.beats(bits))))
        if value >> bits:
            raise ProgramError(f"a {bits}-bit record has bits set above its width")
        return value

    def header(self, op: Opcode) -> int:
        beat = self.take(1)[0]
        if beat & 0xFF != op:
            raise ProgramError(f"expected a {op.name} command, found opcode {beat & 0xFF}")
        return beat >> 8

    def layer(self) -> None:
        cfg = self.cfg
        self.header(Opcode.LAYER)
        fields = layer_fields(cfg)
        got = _unpack(self.record(sum(fields.values())), fields)
        if got != layer_values(cfg):
            raise ProgramError(f"the LAYER record {got} is not the layer {layer_values(cfg)}")

    def weights(self):
        cfg = self.cfg
        n, g_count, lanes, c_in = cfg.out_channels, cfg.groups, cfg.lanes, cfg.in_channels
        self.header(Opcode.WEIGHTS)
        record_bytes = 9 * lanes
        raw = np.array([self.record(cfg.weight_bits).to_bytes(record_bytes, "little")
                        for _ in range(n * g_count)], dtype=object)
        w = np.frombuffer(b"".join(raw), np.int8).reshape(n, g_count, 3, 3, lanes)
        w = w.transpose(0, 1, 4, 2, 3).reshape(n, g_count * lanes, 3, 3)
        if w[:, c_in:].any():
            raise ProgramError(f"filter weights set beyond the layer's C_in = {c_in}")
        slots = {name: width for name, (width, _, _) in QUANT_FIELDS.items()}
        quant = [_unpack(self.record(cfg.QUANT_BITS), slots) for _ in range(n)]
        sign = 1 << (slots["bias"] - 1)
        bias = np.array([(q["bias"] ^ sign) - sign for q in quant], np.int32)
        mult = np.array([q["mult"] for q in quant], np.int64)
        shift = np.array([q["shift"] for q in quant], np.int64)
        if any(s > QUANT_FIELDS["shift"][2] for s in shift):
            raise ProgramError("a requantisation record has bits set above the shift the "
                               "requantiser reads")
        return np.ascontiguousarray(w[:, :c_in]), bias, mult, shift

    def schedule(self) -> Schedule:
        """The work lists and pixel tables -> the mask they serve, re-dealt; ProgramError unless
        the dealing reproduces them entry for entry."""
        cfg = self.cfg
        head = self.header(Opcode.SCHEDULE)
        steps, total = head & 0xFF_FFFF, head >> 24
        p_count, n, h, w = cfg.instances, cfg.out_channels, cfg.height, cfg.width
        j_count = cfg.row_segments
        e_fields, x_fields = schedule_entry_fields(cfg), pixel_fields(cfg)
        e_bits, x_bits = sum(e_fields.values()), sum(x_fields.values())
        entries = [[_unpack(r >> (p * e_bits), e_fields) for p in range(p_count)]
                   for r in (self.record(p_count * e_bits) for _ in range(steps))]
        pixels = [[_unpack(r >> (p * x_bits), x_fields) for p in range(p_count)]
                  for r in (self.record(p_count * x_bits) for _ in range(cfg.segments))]
        keep = np.zeros((n, h, w), bool)
        for p in range(p_count):
            for e in (e[p] for e in entries if e[p]["valid"]):
                s, c = e["seg"], e["channel"]
                px = pixels[s][p] if s < len(pixels) else {"valid": 0}
                if not px["valid"] or c >= n:
                    raise ProgramError(f"instance {p}: entry (channel {c}, segment {s}) has "
                                       "no pixel or no such channel")
                y, j = divmod(s, j_count)
                x = j * p_count + px["offset"]
                if x >= w or keep[c, y, x]:
                    raise ProgramError(f"instance {p}: entry (channel {c}, segment {s}) is "
                                       "outside the layer or repeated")
                keep[c, y, x] = True
        schedule = deal(~keep, p_count)
        if (schedule.steps, schedule.total) != (steps, total):
            raise ProgramError(f"the SCHEDULE header says {steps} steps and {total} outputs, "
                               f"its entries {schedule.steps} and {schedule.total}")
        offsets = np.array([[px[p]["offset"] if px[p]["valid"] else -1 for px in pixels]
                            for p in range(p_count)], np.int64).reshape(schedule.offsets.shape)
        grid = [np.array([[e[p][f] for p in range(p_count)] for e in entries], np.int64)
                .reshape(steps, p_count) for f in ("channel", "seg", "valid")]
        dealt = schedule.table()
        if not np.array_equal(offsets, schedule.offsets) or not all(
                np.array_equal(a, b) for a, b in zip(grid, dealt)):
            raise ProgramError("the work lists and pixel tables are not the dealing of the mask "
                               "they serve")
        return schedule
