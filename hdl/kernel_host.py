"""Host runtime of the Vitis kernel (:mod:`hdl.kernel`): its buffers, its arguments, its
counters, a batch split over its compute units, and the folder's config.json.

The kernel's interface (:data:`~hdl.regmap.Reg`, the CTRL/FLAGS/STATUS bits, the beat, the
compute units' names and banks) is the table in :mod:`hdl.regmap`. No Amaranth here: a host
program (``pyxrt``, the cocotb testbench) imports this module with only numpy installed.

Buffer format
=============
Every buffer is a sequence of 64-byte *beats* (one 512-bit AXI data word each), beat ``k`` at
byte offset ``64*k``, each beat little-endian. The beats are what the command-stream helpers of
:mod:`hdl.protocol` produce. The params buffer holds the layer's LAYER and WEIGHTS commands and
the schedule buffer its SCHEDULE command, headers included (PARAMS_BEATS and SCHEDULE_BEATS
registers: their beats); the kernel inserts the FRAME header itself, with the IMAGES register's
B, before the ifmap buffer's IFMAP_BEATS beats. A layer is any shape within the design's
maxima (:meth:`hdl.config.AccelConfig.layer`): its commands set it, so one xclbin runs every
layer of a network, each run loading its layer's buffers (FLAGS.load_config).

=========  ===================================================  =================================
buffer     contents                                             beats
=========  ===================================================  =================================
params     ``layer_beats(cfg) + weight_beats(cfg, weight, ...)`` 2 + 1 + N*G*ceil(9*L*8/512) + N
           (PARAMS_BEATS register = its beat count):
           the LAYER command, then WEIGHTS: every channel's
           filter records, one bias|mult|shift record each
schedule   ``schedule_beats(cfg, deal(mask, N))``                1 + steps *
           (SCHEDULE_BEATS register = its beat count)            ceil(N*entry_bits/512) + S *
                                                                ceil(N*pixel_bits/512)
ifmap      ``batch_frame_beats(cfg, ifmaps)[1:]``: B images      B * image_beats(cfg)
           (IFMAP_BEATS register = its beat count)
ofm        written by the kernel: B images of compact output     B * ceil(steps * N / 64)
           (:func:`unpack_ofm` expands them with the schedule
           and the means, which stay on the host)
=========  ===================================================  =================================

Every buffer address must be a multiple of 64 (XRT's allocations are 4 KB aligned); a start
with any other address is refused (STATUS in :mod:`hdl.regmap`).

Compute units
=============
``make kernel CUS=k`` links k copies of the kernel (compute units ``velcro_kernel_1`` ..
``velcro_kernel_k``, :func:`hdl.regmap.cu_names`). Each CU's AXI masters get their own HBM
pseudo-channels (:func:`hdl.regmap.hbm_banks`: CU j's ``m_axi_gmem_in`` on HBM[2j], ``m_axi_gmem_out`` on
HBM[2j+1]), so k <= 16 on the U280's 32. The count is written once, as ``compute_units`` in the
kernel folder's config.json (:func:`kernel_config_json`, read back by
:func:`read_kernel_config`); connectivity.cfg and the host are generated from / read it. A
batch of B images is split into contiguous, as-even-as-possible shares, one per CU
(:func:`split_batch`); the host runs them concurrently and concatenates the outputs in CU order
(:func:`gather`), which is the batch's order.
"""

from __future__ import annotations

import json

import numpy as np

from .config import AccelConfig, load_json
from .program import LayerProgram
from .protocol import (batch_frame_beats, compact_beats_per_image, counter_words,
                       decode_counter_words, image_beats, params_buffer_beats, schedule_beats)
from .regmap import (BEAT_BITS, BEAT_BYTES, INPUT_BUFFERS, MAX_IMAGES, Reg, arguments,
                     check_compute_units)

__all__ = ["buffer_beats", "buffer_bytes", "pack_beats", "pack_params", "pack_schedule",
           "pack_ifmap", "pack_frame", "unpack_ofm", "kernel_arguments", "counter_names",
           "read_counters", "kernel_config_json", "read_kernel_config", "split_batch", "gather"]


def buffer_beats(cfg: AccelConfig, schedule, images: int = 1) -> dict:
    """Beats of each buffer for ``cfg``'s layer, the dealt ``schedule`` and B = ``images``."""
    return {
        "params": params_buffer_beats(cfg),
        "schedule": len(schedule_beats(cfg, schedule)),
        "ifmap": images * image_beats(cfg),
        "ofm": images * compact_beats_per_image(cfg, schedule.stream_length),
    }


def buffer_bytes(cfg: AccelConfig, schedule, images: int = 1) -> dict:
    return {k: v * BEAT_BYTES for k, v in buffer_beats(cfg, schedule, images).items()}


def _check(cfg: AccelConfig):
    if cfg.bus_width != BEAT_BITS:
        raise ValueError(f"the kernel needs bus_width={BEAT_BITS}, not {cfg.bus_width}")


def pack_beats(beats) -> bytes:
    return b"".join(int(b).to_bytes(BEAT_BYTES, "little") for b in beats)


def pack_params(program: LayerProgram) -> bytes:
    _check(program.cfg)
    return pack_beats(program.params_beats())


def pack_schedule(program: LayerProgram) -> bytes:
    _check(program.cfg)
    return pack_beats(program.schedule_beats())


def pack_ifmap(cfg: AccelConfig, ifmaps) -> bytes:
    """ifmaps int8 [B, C_in, H, W] or [C_in, H, W]."""
    _check(cfg)
    return pack_beats(batch_frame_beats(cfg, ifmaps)[1:])


def pack_frame(program: LayerProgram, ifmaps) -> dict:
    """{buffer name: bytes} of every input buffer: the layer ``program``'s constants and
    schedule, and ``ifmaps`` (int8 [B, C_in, H, W] or [C_in, H, W])."""
    return {"params": pack_params(program), "schedule": pack_schedule(program),
            "ifmap": pack_ifmap(program.cfg, ifmaps)}


def unpack_ofm(program: LayerProgram, raw: bytes, images: int = 1) -> np.ndarray:
    """The ofm buffer's bytes -> uint8 [images, N, H, W] (compact outputs expanded)."""
    size = buffer_bytes(program.cfg, program.schedule, images)["ofm"]
    if len(raw) < size:
        raise ValueError(f"ofm buffer holds {len(raw)} bytes, expected {size}")
    raw = bytes(raw[:size])
    beats = [int.from_bytes(raw[i:i + BEAT_BYTES], "little") for i in range(0, size, BEAT_BYTES)]
    return program.expand(beats, images)


def kernel_arguments(buffers: dict, beats: dict, *, flags: int, images: int) -> list:
    """The kernel's arguments in their order (:func:`hdl.regmap.arguments`): ``buffers[name]``
    for each pointer, then the scalars by name: ``flags``, ``images`` and each input buffer's
    beats (``beats[name]``, as :func:`buffer_beats` gives them)."""
    values = {**buffers, "flags": flags, "images": images,
              **{f"{b}_beats": beats[b] for b in INPUT_BUFFERS}}
    return [values[r.arg] for r in arguments()]


def counter_names(cfg: AccelConfig) -> list:
    """Names of the 32-bit read-only counters from Reg.COUNTERS on, one per word."""
    return counter_words(cfg)


def read_counters(cfg: AccelConfig, read_word) -> dict:
    """The engine's counters read through ``read_word(address)`` (one 32-bit register), named
    as :func:`hdl.protocol.decode_stream_counters` names them."""
    return decode_counter_words(cfg, [read_word(Reg.COUNTERS + 4 * i)
                                      for i in range(len(counter_words(cfg)))])


# -- compute units -------------------------------------------------------------------------------

def kernel_config_json(cfg: AccelConfig, compute_units: int = 1,
                       placement: dict | None = None) -> str:
    """The kernel folder's config.json: the configuration plus ``compute_units`` and, from
    ``make kernel``, the ``placement`` (hdl.placement.plan: each CU's SLR, its HBM
    pseudo-channels, the bandwidth they are sized for, the assumptions)."""
    extra = {"placement": placement} if placement is not None else {}
    return json.dumps({**cfg.to_dict(), "compute_units": check_compute_units(compute_units),
                       **extra}, indent=2) + "\n"


def read_kernel_config(text: str):
    """(AccelConfig, compute units) from config.json's text (no ``compute_units``: 1).  Any
    text that is not such an object is a ValueError (also one nested too deeply to parse)."""
    d = load_json(text)
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object, not {type(d).__name__}")
    k = check_compute_units(d.pop("compute_units", 1))
    d.pop("placement", None)            # make kernel's record for the link, not the design's
    return AccelConfig(**d), k


def split_batch(images: int, compute_units: int) -> list:
    """Split B = ``images`` images into ``compute_units`` contiguous shares as evenly as
    possible: a list of ``range``s, one per CU in CU order, the first ``B % k`` one image
    longer. With B < k the last CUs get empty ranges (nothing to start). B = 0 is refused:
    the kernel's IMAGES register counts 0 as 1, so an empty share must not be started either."""
    k = check_compute_units(compute_units)
    if isinstance(images, bool) or not isinstance(images, (int, np.integer)):
        raise TypeError(f"images must be an int, not {images!r}")
    if images < 1:
        raise ValueError(f"a batch needs at least one image, not {images}")
    base, extra = divmod(int(images), k)
    if base + (extra > 0) > MAX_IMAGES:
        raise ValueError(f"{images} images over {k} compute units is more than {MAX_IMAGES} "
                         f"(the IMAGES register) per compute unit: split the batch")
    shares, start = [], 0
    for j in range(k):
        n = base + (j < extra)
        shares.append(range(start, start + n))
        start += n
    return shares


def gather(outputs, shares) -> np.ndarray:
    """Concatenate the CUs' outputs ([len(share), ...] each, CU order) back into the batch
    ([B, ...]), checking each CU returned as many images as it was given."""
    outputs, shares = list(outputs), list(shares)
    if len(outputs) != len(shares):
        raise ValueError(f"{len(outputs)} outputs for {len(shares)} compute units")
    parts = []
    for j, (out, share) in enumerate(zip(outputs, shares)):
        if len(share) == 0:
            continue
        if out is None or len(out) != len(share):
            got = "nothing" if out is None else f"{len(out)} images"
            raise ValueError(f"compute unit {j + 1} returned {got}, expected {len(share)}")
        parts.append(np.asarray(out))
    return np.concatenate(parts)
