"""The accelerator's stream protocol: how a host turns FRAME arrays into input beats and output
beats back into output maps. The one definition of every format and of the counters.

The engine has one input stream and one output stream, both ``bus_width`` bits wide. The input
carries *commands*: a header beat whose low 8 bits are an opcode, followed by records whose size
the configuration determines. A record of R bits is sent little-endian over
``ceil(R / bus_width)`` beats.

=========  =====================================================================================
opcode     header bits / records after the header
=========  =====================================================================================
LAYER      one *layer record* (``layer_fields``): the shape of the layer that the following
           WEIGHTS, SCHEDULE and FRAME commands describe, within the design's maxima
           (:attr:`hdl.config.AccelConfig.design`): H, J, G, N and the record counts S = H*J,
           N*G and S*G, which the host computes so the engine needs no multiplier. Until the
           first LAYER the engine runs the maxima's shape, so a design-shaped deployment needs
           no LAYER command.
WEIGHTS    N*G filter records (N output channels, however many instances P; channel-major,
           then channel group g): byte ``(ky*3+kx)*L + l`` = weight[n, g*L+l, ky, kx]; then N
           quant records: bias (32, two's complement) | mult << 32 | shift << 48. Every
           instance stores every channel's (slot n = channel n), so WEIGHTS does not depend on
           the mask.
SCHEDULE   header: steps (the busiest pair's run) at bits 8..31, total = sum U at bits
           32..63. Then ``steps`` records of P work entries: entry p (``schedule_entry_fields``,
           at bit p * entry_bits) = instance p's entry of step k of its pair's run
           (:meth:`py_ref.schedule.Schedule.table`), valid = 1, or zero when it has none in
           step k (twins 2d and 2d + 1 compute one channel per step); then S = H*J
           *pixel records* of P pixel fields (``pixel_fields``, field p at bit p * pixel_bits):
           the offset of instance p's pixel in segment s, valid = 1, or zero when it has none
           there. The host deals the work when the mask changes; the means stay on the host.
FRAME      header: B (images, >= 1) at bits 8..23. Then B images, each a whole number of beats:
           H*G*J *segment records* (rows y, then channel groups g, then segments j; byte
           ``o*L + l`` = ifmap[g*L+l, y, j*P+o], 0 past W and past C_in), ``segments_per_beat``
           records per beat (record i at bit i * segment_bits) or, when a record is wider than
           the bus, one record over ``beats_per_segment`` beats. The engine answers with B
           images of output (``compact_beats_per_image(cfg, steps * P)`` beats each: the stream
           of the schedule's compact order, padding bytes zero, byte c of the image = byte
           c % (bus/8) of beat c // (bus/8), zero padded), ``last`` on the final beat of each
           image; an image with nothing computed sends no beat. :func:`decode_batch` expands
           them with the means.
=========  =====================================================================================

WEIGHTS and SCHEDULE are the deployment's constants: they stay loaded across frames and survive
a reset (unless it hit their load), so a stream of images sends them once and then only FRAME
commands.
"""

from __future__ import annotations

import enum

import numpy as np

from .config import (BIAS_BITS, IFMAP_BITS, MULT_BITS, SHIFT_BITS, SHIFT_SLOT_BITS, WEIGHT_BITS,
                     AccelConfig)

__all__ = ["ProtocolError", "check_field", "QUANT_FIELDS", "Opcode", "layer_values", "layer_fields", "layer_layout", "layer_beats", "weight_beats", "param_beats", "params_buffer_beats", "schedule_entry_fields",
           "schedule_entry_layout", "schedule_beats", "pixel_fields", "pixel_layout", "segments_per_beat",
           "beats_per_segment", "image_beats", "segment_records",
           "batch_frame_beats", "compact_beats_per_image", "decode_compact", "decode_batch",
           "STREAM_COUNTERS", "SCALAR_COUNTER_KINDS", "counter_words", "stream_counter_layout",
           "decode_stream_counters", "decode_counter_words", "counter_elements", "MAX_BATCH"]


class Opcode(enum.IntEnum):
    WEIGHTS = 1
    FRAME = 4
    SCHEDULE = 5      # (2 and 3 were MASK and MEANS of the skip-list engine)
    LAYER = 6


class ProtocolError(ValueError):
    """A value the host was asked to encode (or decode) does not fit the protocol's field: the
    encoders refuse it instead of sending something the hardware would read differently."""


def check_field(name: str, values, width: int, *, signed: bool = False,
                maximum: int | None = None) -> np.ndarray:
    """The one check of every encoded (and decoded) field: ``values`` (a number or an array)
    must be integers (not float, not bool) within a ``width``-bit field, two's complement when
    ``signed``, and at most ``maximum`` when given (a field whose hardware uses fewer bits than
    its slot, e.g. shift 0..31 in 16 bits).  Returns the values as an integer array; raises
    :class:`ProtocolError` naming the field, the first offending value and the range.  Python
    ints of any size are compared exactly (object arrays)."""
    # not np.asarray: a list of Python ints beyond int64 would become float64 and round
    a = values if isinstance(values, (np.ndarray, np.generic)) else np.array(values, dtype=object)
    a = np.asarray(a)
    if a.dtype == object:
        bad = [v for v in a.flat if isinstance(v, bool) or not isinstance(v, (int, np.integer))]
        if bad:
            raise ProtocolError(f"{name} must be integers, not {type(bad[0]).__name__} {bad[0]!r}")
    elif a.dtype.kind not in "iu":
        raise ProtocolError(f"{name} must be integers, not {a.dtype}")
    lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if signed else (0, (1 << width) - 1)
    if maximum is not None:
        hi = min(hi, maximum)
    if a.size:
        small, big = int(a.min()), int(a.max())
        if small < lo or big > hi:
            flat = a.reshape(-1)
            at = int(np.argmax([not lo <= int(v) <= hi for v in flat])) if a.size < 1 << 16 \
                else (int(np.argmin(flat)) if small < lo else int(np.argmax(flat)))
            where = f"[{at}]" if a.ndim else ""
            value = int(flat[at])
            shown = value if abs(value) < 1 << 64 else f"a {value.bit_length()}-bit value"
            span = f"{lo}..{hi}" if hi < 1 << 64 else f"0..2**{width}-1"
            bits = "" if maximum is not None and hi < (1 << width) - 1 else \
                f", {width} bits{' signed' if signed else ''}"
            raise ProtocolError(f"{name}{where} = {shown} does not fit its field ({span}{bits})")
    return a


def _check_count(name: str, value, minimum: int = 0) -> int:
    """An integer argument (a length, a count): an int (not bool, not float) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ProtocolError(f"{name} must be an integer, not {value!r}")
    if value < minimum:
        raise ProtocolError(f"{name} must be at least {minimum}, not {value}")
    return int(value)


def _check_shape(name: str, values, shape: tuple) -> np.ndarray:
    a = np.asarray(values)
    if a.shape != tuple(shape):
        raise ProtocolError(f"{name} must have shape {list(shape)}, not {list(a.shape)}")
    return a


#: The WEIGHTS command's quant record, low bits first: field -> (slot bits, signed, maximum).
#: shift has the rest of the record (SHIFT_SLOT_BITS, hdl/config.py), of which the requantiser
#: uses SHIFT_BITS (0..31).
QUANT_FIELDS = {"bias": (BIAS_BITS, True, None), "mult": (MULT_BITS, False, None),
                "shift": (SHIFT_SLOT_BITS, False, (1 << SHIFT_BITS) - 1)}


def _records_to_beats(cfg: AccelConfig, records: np.ndarray) -> list[int]:
    """records: uint8 [count, record_bytes] -> beats (record split over ceil(bits/bus) beats)."""
    count, nbytes = records.shape
    per = cfg.beats(nbytes * 8)
    padded = np.zeros((count, per * cfg.bus_bytes), np.uint8)
    padded[:, :nbytes] = records
    flat = padded.reshape(count * per, cfg.bus_bytes)
    return [int.from_bytes(row.tobytes(), "little") for row in flat]


def _header(op: Opcode) -> int:
    return int(op)


def layer_values(cfg: AccelConfig) -> dict:
    """Field -> value of ``cfg``'s layer record (the engine's power-up values: ``cfg.design``)."""
    return {"height": cfg.height, "row_segments": cfg.row_segments, "groups": cfg.groups,
            "out_channels": cfg.out_channels, "segments": cfg.segments,
            "weight_records": cfg.out_channels * cfg.groups,
            "segment_records": cfg.segments * cfg.groups}


def layer_fields(cfg: AccelConfig) -> dict:
    """Field -> bit width of the LAYER record, low bits first, sized by the design's maxima."""
    return {k: v.bit_length() for k, v in layer_values(cfg.design).items()}


def layer_layout(cfg: AccelConfig):
    """The layer record as an Amaranth layout (the engine's layer register)."""
    from amaranth.lib import data
    return data.StructLayout(layer_fields(cfg))


def layer_beats(cfg: AccelConfig) -> list[int]:
    """The LAYER command that sets ``cfg``'s layer on ``cfg.design``."""
    fields, values = layer_fields(cfg), layer_values(cfg)
    record, shift = 0, 0
    for name, width in fields.items():
        check_field(name, values[name], width)   # AccelConfig already refuses a layer beyond
        record |= values[name] << shift
        shift += width
    per = cfg.beats(shift)
    mask = (1 << cfg.bus_width) - 1
    return [int(Opcode.LAYER)] + [(record >> (cfg.bus_width * i)) & mask for i in range(per)]


def weight_beats(cfg: AccelConfig, weight, bias, mult, shift) -> list[int]:
    """The WEIGHTS command: int8 weight [N, C_in, 3, 3], then one quant record per channel
    (:data:`QUANT_FIELDS`); every value checked against its field first (ProtocolError)."""
    n, g_count, lanes = cfg.out_channels, cfg.groups, cfg.lanes
    weight = check_field("weight", _check_shape("weight", weight, (n, cfg.in_channels, 3, 3)),
                         WEIGHT_BITS, signed=True)
    quant = {}
    for name, values in (("bias", bias), ("mult", mult), ("shift", shift)):
        width, signed, maximum = QUANT_FIELDS[name]
        quant[name] = [int(v) for v in check_field(name, _check_shape(name, values, (n,)), width,
                                                   signed=signed, maximum=maximum)]
    w = np.zeros((n, g_count * lanes, 3, 3), np.int8)
    w[:, :cfg.in_channels] = weight
    # [n, g, l, ky, kx] -> [n, g, ky, kx, l]
    w = w.reshape(n, g_count, lanes, 3, 3).transpose(0, 1, 3, 4, 2).reshape(n * g_count, 9 * lanes)
    beats = [_header(Opcode.WEIGHTS)] + _records_to_beats(cfg, w.view(np.uint8))
    for k in range(n):
        record, offset = 0, 0
        for name, (width, _, _) in QUANT_FIELDS.items():
            record |= (quant[name][k] & ((1 << width) - 1)) << offset
            offset += width
        beats.append(record)
    return beats


def param_beats(cfg: AccelConfig) -> int:
    """Beats of a WEIGHTS command after its header: N*G filter records, then N quant beats."""
    return cfg.out_channels * (cfg.groups * cfg.beats(cfg.weight_bits) + 1)


def params_buffer_beats(cfg: AccelConfig) -> int:
    """Beats of the layer's LAYER and WEIGHTS commands, headers included (the kernel's params
    buffer, :meth:`hdl.program.LayerProgram.params_beats`)."""
    return len(layer_beats(cfg)) + 1 + param_beats(cfg)


MAX_BATCH = (1 << 16) - 1


def _bits(count: int) -> int:
    return max(count - 1, 1).bit_length()


def schedule_entry_fields(cfg: AccelConfig) -> dict:
    """Field -> bit width of one SCHEDULE work entry, low bits first (plain Python, so host code
    needs no Amaranth): compute ``channel`` at the instance's pixel of segment ``seg``. Sized by
    the design, so every layer's entries have the same layout."""
    d = cfg.design
    return {"channel": _bits(d.out_channels), "seg": _bits(d.segments), "valid": 1}


def schedule_entry_layout(cfg: AccelConfig):
    """The work entry as an Amaranth layout (the walkers' memory)."""
    from amaranth.lib import data
    return data.StructLayout(schedule_entry_fields(cfg))


def pixel_fields(cfg: AccelConfig) -> dict:
    """Field -> bit width of one SCHEDULE pixel field: the ``offset`` of an instance's pixel in a
    segment, ``valid`` when it has one."""
    return {"offset": _bits(cfg.instances), "valid": 1}


def pixel_layout(cfg: AccelConfig):
    """The pixel field as an Amaranth layout (the instances' pixel tables)."""
    from amaranth.lib import data
    return data.StructLayout(pixel_fields(cfg))


def _pack(fields: dict, values: dict) -> np.ndarray:
    """Field arrays (same shape) -> packed object ints, low field first."""
    out, shift = 0, 0
    for name, width in fields.items():
        out = out + (check_field(name, values[name], width).astype(object) << shift)
        shift += width
    return out


def _join_records(cfg: AccelConfig, words: np.ndarray, bits: int) -> list[int]:
    """[records, P] packed fields of ``bits`` each -> the records' beats (field p at p * bits,
    a record over ceil(P * bits / bus) beats)."""
    p_count = cfg.instances
    shifts = np.array([p * bits for p in range(p_count)], dtype=object)
    per = cfg.beats(p_count * bits)
    mask = (1 << cfg.bus_width) - 1
    beats = []
    for row in words:
        r = int(np.sum(row << shifts))
        beats += [(r >> (cfg.bus_width * i)) & mask for i in range(per)]
    return beats


def schedule_beats(cfg: AccelConfig, schedule) -> list[int]:
    """The SCHEDULE command for a py_ref.schedule.Schedule dealt over ``cfg.instances``."""
    shape = (cfg.out_channels, cfg.height, cfg.width)
    if schedule.instances != cfg.instances or schedule.shape != shape:
        raise ValueError(f"schedule must be dealt for {cfg.instances} instances of a "
                         f"{list(shape)} mask, not {schedule.instances} of "
                         f"{list(schedule.shape)}")
    channel, seg, valid = schedule.table()                      # [steps, P]
    # table() leaves channel and seg 0 where valid is 0: those entries pack to zero
    entries = _pack(schedule_entry_fields(cfg), {"channel": channel, "seg": seg, "valid": valid})
    steps = schedule.steps
    off = schedule.offsets.T                                     # [S, P]
    pixels = np.where(off >= 0, _pack(pixel_fields(cfg), {"offset": np.maximum(off, 0),
                                                          "valid": np.ones_like(off)}), 0)
    check_field("SCHEDULE steps", steps, 24)
    check_field("SCHEDULE total", schedule.total, 32)
    beats = [int(Opcode.SCHEDULE) | (steps << 8) | (schedule.total << 32)]
    beats += _join_records(cfg, entries, sum(schedule_entry_fields(cfg).values()))
    beats += _join_records(cfg, pixels, sum(pixel_fields(cfg).values()))
    return beats


def segments_per_beat(cfg: AccelConfig) -> int:
    """Segment records packed into one input beat (0 when a record needs several beats)."""
    return cfg.bus_width // cfg.segment_bits


def beats_per_segment(cfg: AccelConfig) -> int:
    return cfg.beats(cfg.segment_bits)


def image_beats(cfg: AccelConfig) -> int:
    """Input beats of one image of a FRAME command."""
    records = cfg.height * cfg.groups * cfg.row_segments
    per = segments_per_beat(cfg)
    return -(-records // per) if per else records * beats_per_segment(cfg)


def _ifmap_batch(cfg: AccelConfig, ifmaps) -> np.ndarray:
    x = np.asarray(ifmaps)
    if x.ndim == 3:
        x = x[None]
    shape = (cfg.in_channels, cfg.height, cfg.width)
    if x.ndim != 4 or x.shape[1:] != shape or x.shape[0] < 1:
        raise ProtocolError(f"ifmaps must have shape [B, {', '.join(map(str, shape))}] or "
                            f"[{', '.join(map(str, shape))}], not {np.shape(ifmaps)!r}")
    if x.shape[0] > MAX_BATCH:
        raise ProtocolError(f"a FRAME command holds at most {MAX_BATCH} images, not {x.shape[0]}")
    return check_field("ifmap", x, IFMAP_BITS, signed=True).astype(np.int8)


def batch_frame_beats(cfg: AccelConfig, ifmaps) -> list[int]:
    """The FRAME command of the engine for int8 ifmaps [B, C_in, H, W] (or one [C_in, H, W]
    image): header with B, then each image's segment records packed into whole beats."""
    x = _ifmap_batch(cfg, ifmaps)
    beats = [int(Opcode.FRAME) | (x.shape[0] << 8)]
    per = segments_per_beat(cfg)
    for image in x:
        records = segment_records(cfg, image)            # [H*G*J, P*L]
        if per:
            bits = cfg.segment_bits
            for first in range(0, len(records), per):
                value = 0
                for i, rec in enumerate(records[first:first + per]):
                    value |= int.from_bytes(rec.tobytes(), "little") << (i * bits)
                beats.append(value)
        else:
            beats += _records_to_beats(cfg, records)
    return beats


def segment_records(cfg: AccelConfig, ifmap) -> np.ndarray:
    """uint8 [H*G*J, P*L]: the ifmap's segment records (rows, then channel groups, then
    segments; byte o*L + l = ifmap[g*L + l, y, j*P + o], zero past W and past C_in)."""
    lanes, g_count, p_count, j_count = cfg.lanes, cfg.groups, cfg.instances, cfg.row_segments
    ifmap = check_field("ifmap", _check_shape("ifmap", ifmap, (cfg.in_channels, cfg.height,
                                                               cfg.width)),
                        IFMAP_BITS, signed=True)
    x = np.zeros((g_count * lanes, cfg.height, j_count * p_count), np.int8)
    x[:cfg.in_channels, :, :cfg.width] = ifmap
    x = x.reshape(g_count, lanes, cfg.height, j_count, p_count).transpose(2, 0, 3, 4, 1)
    return x.reshape(cfg.height * g_count * j_count, p_count * lanes).view(np.uint8)


def compact_beats_per_image(cfg: AccelConfig, length: int) -> int:
    """Output beats of one image whose stream is ``length`` bytes (``Schedule.stream_length``)."""
    return -(-int(length) // cfg.bus_bytes)


def decode_compact(cfg: AccelConfig, beats, length: int, images: int = 1) -> np.ndarray:
    """Output beats of ``images`` images -> uint8 [images, length] (compact order, padding
    included)."""
    length = _check_count("length", length)
    images = _check_count("images", images, 1)
    per = compact_beats_per_image(cfg, length)
    beats = check_field("output beat", beats if isinstance(beats, np.ndarray) else list(beats),
                        cfg.bus_width)
    if beats.ndim != 1:
        raise ProtocolError(f"beats must be a sequence of integers, not shape {list(beats.shape)}")
    if len(beats) != per * images:
        raise ProtocolError(f"beats must be {per * images} for {images} images of {length} bytes, "
                         f"not {len(beats)}")
    raw = b"".join(int(b).to_bytes(cfg.bus_bytes, "little") for b in beats)
    return np.frombuffer(raw, np.uint8).reshape(images, per * cfg.bus_bytes)[:, :length].copy()


def decode_batch(cfg: AccelConfig, beats, schedule, means, images: int = 1) -> np.ndarray:
    """Output beats -> uint8 [images, N, H, W] through ``schedule.expand``."""
    values = decode_compact(cfg, beats, schedule.stream_length, images)
    return np.stack([schedule.expand(v, means) for v in values])


#: The performance counters of the streaming engine, one table: (name, kind, meaning). Kinds
#: "count" (of batches, of images) and "cycles" (of clock cycles) are one 32-bit number each
#: (:data:`SCALAR_COUNTER_KINDS`); "channel" / "instance" are per-output-channel / per-instance
#: counts of one image (N channels of at most H*W, P instances of at most N*S). Batch counters
#: cover a FRAME command (header accepted .. last image completed); image_* describe the last
#: completed image.
STREAM_COUNTERS = (
    ("batches", "count", "FRAME commands completed since reset"),
    ("images", "count", "images completed since reset"),
    ("batch_cycles", "cycles", "FRAME header accepted .. last image completed, inclusive"),
    ("load_cycles", "cycles", "the window dealer accepting, writing or dealing segments"),
    ("datapath_cycles", "cycles", "work entries in flight in any datapath"),
    ("overlap_cycles", "cycles", "loading and computing in the same cycle"),
    ("drain_cycles", "cycles", "output beats waiting or leaving while nothing computes"),
    ("mac_active_cycles", "cycles", "at least one instance multiplied"),
    ("image_cycles", "cycles", "the image's first work entry .. its last result, less cycles "
                               "in which output backpressure held instance 0"),
    ("image_computed", "channel", "outputs computed per output channel"),
    ("image_instance", "instance", "outputs computed per instance"),
)


#: The counter kinds that are one number, not an array.
SCALAR_COUNTER_KINDS = ("count", "cycles")


def counter_elements(cfg: AccelConfig, kind: str) -> int:
    """Elements of a counter of ``kind``: 1 for "count" and "cycles", N per "channel", P per
    "instance" (the design's maximum N: a layer of fewer channels reads zero in the others)."""
    if kind in SCALAR_COUNTER_KINDS:
        return 1
    return {"channel": cfg.design.out_channels, "instance": cfg.instances}[kind]


def counter_words(cfg: AccelConfig) -> list[str]:
    """The counters one 32-bit word each (arrays element by element): the kernel's register
    layout from Reg.COUNTERS on."""
    words = []
    for name, kind, _ in STREAM_COUNTERS:
        words += [name] if kind in SCALAR_COUNTER_KINDS else [f"{name}[{i}]"
                                                  for i in range(counter_elements(cfg, kind))]
    return words


def counter_fields(cfg: AccelConfig) -> list[tuple[str, int, int, int]]:
    """(name, bit offset, element width, elements) of every counter of the ``counters`` port,
    low bits first, from :data:`STREAM_COUNTERS` (plain Python: host code needs no Amaranth)."""
    # a count 0..H*W per channel, 0..N*S per instance, of the design's maxima
    d = cfg.design
    element = max(d.out_channels * d.segments, d.positions).bit_length()
    fields, offset = [], 0
    for name, kind, _ in STREAM_COUNTERS:
        width, count = (32, 1) if kind in SCALAR_COUNTER_KINDS else (element, counter_elements(cfg, kind))
        fields.append((name, offset, width, count))
        offset += width * count
    return fields


def stream_counter_layout(cfg: AccelConfig):
    """The ``counters`` port of the engine, built from :func:`counter_fields`."""
    from amaranth.lib import data
    return data.StructLayout({
        name: data.ArrayLayout(width, count) if kind not in SCALAR_COUNTER_KINDS else width
        for (name, _, width, count), (_, kind, _) in zip(counter_fields(cfg), STREAM_COUNTERS)})


def decode_stream_counters(cfg: AccelConfig, value: int) -> dict:
    """The ``counters`` port's raw bits -> {name: int or list of int}."""
    fields = counter_fields(cfg)
    check_field("counters", value, fields[-1][1] + fields[-1][2] * fields[-1][3])
    value = int(value)
    out = {}
    for (name, offset, width, count), (_, kind, _) in zip(counter_fields(cfg), STREAM_COUNTERS):
        raw = value >> offset
        words = [(raw >> (width * i)) & ((1 << width) - 1) for i in range(count)]
        out[name] = words[0] if kind in SCALAR_COUNTER_KINDS else words
    return out


def decode_counter_words(cfg: AccelConfig, words) -> dict:
    """The kernel's counter registers (one 32-bit word each, in :func:`counter_words` order) ->
    the same {name: int or list of int} as :func:`decode_stream_counters`."""
    words = [int(w) for w in check_field("counter word", list(words), 32)]
    if len(words) != len(counter_words(cfg)):
        raise ProtocolError(f"{len(counter_words(cfg))} counter words expected, not {len(words)}")
    out, pos = {}, 0
    for name, kind, _ in STREAM_COUNTERS:
        count = counter_elements(cfg, kind)
        out[name] = words[pos] if kind in SCALAR_COUNTER_KINDS else words[pos:pos + count]
        pos += count
    return out
