"""Host side of the Vitis kernel (:mod:`hdl.kernel`): buffer formats and the register map.

No Amaranth here: a host program (``pyxrt``, the cocotb testbench) imports this module with
only numpy installed.

Buffer format
=============
Every buffer is a sequence of 64-byte *beats* (one 512-bit AXI data word each), beat ``k`` at
byte offset ``64*k``, each beat little-endian. The beats are exactly what the command-stream
helpers of :mod:`hdl.protocol` produce **without their header beat**: the kernel inserts the
opcode headers itself.

=========  ===================================================  =================================
buffer     contents                                             beats
=========  ===================================================  =================================
params     ``weight_beats(cfg, weight, bias, mult, shift)[1:]``  N*G*ceil(9*L*8/512) + N
           (filter records, then one bias|mult|shift record
           per instance)
mask       ``mask_beats(cfg, mask)[1:]``                         ceil(H*W/K)
means      ``means_beats(cfg, means)[1:]``                       N*ceil(H*W/64)
ifmap      ``frame_beats(cfg, ifmap)[1:]``                       G*ceil(H/3)*ceil(W/3)*ceil(72L/512)
ofm        written by the kernel: instance-major, byte ``b`` of   N*ceil(H*W/64)
           instance ``n``'s ``word`` = ofm[n, word*64 + b]
           (:func:`unpack_ofm`)
=========  ===================================================  =================================

Every buffer address must be a multiple of 64 (XRT's allocations are 4 KB aligned); a start
with any other address is refused (see the register map in :mod:`hdl.kernel`).
"""

from __future__ import annotations

import numpy as np

from .config import AccelConfig
from .protocol import frame_beats, mask_beats, means_beats, weight_beats

__all__ = ["BEAT_BYTES", "ALIGN", "BUFFERS", "INPUT_BUFFERS", "Reg", "STATUS_REFUSED",
           "STATUS_AXI_ERROR", "STATUS_UNALIGNED_SHIFT", "FLAG_LOAD_CONFIG", "buffer_beats",
           "buffer_bytes", "pack_beats", "pack_params", "pack_mask", "pack_means", "pack_ifmap",
           "pack_frame", "unpack_ofm", "counter_names"]

BEAT_BYTES = 64       # 512-bit AXI data
ALIGN = 64            # required alignment of every buffer address

#: Buffer arguments in register-map order (0x10, 0x18, ... 64-bit pointers).
BUFFERS = ("ifmap", "params", "mask", "means", "ofm")
#: The order the kernel fetches its inputs in (params, mask and means only if FLAGS.load_config).
INPUT_BUFFERS = ("params", "mask", "means", "ifmap")


class Reg:
    """Byte offsets of the s_axi_control registers (see :mod:`hdl.kernel` for the bits)."""
    CTRL = 0x00
    GIE = 0x04
    IER = 0x08
    ISR = 0x0C
    IFMAP = 0x10
    PARAMS = 0x18
    MASK = 0x20
    MEANS = 0x28
    OFM = 0x30
    FLAGS = 0x38
    STATUS = 0x40
    KERNEL_CYCLES = 0x44
    COUNTERS = 0x80

    @staticmethod
    def pointer(name: str) -> int:
        return Reg.IFMAP + 8 * BUFFERS.index(name)


CTRL_START, CTRL_DONE, CTRL_IDLE, CTRL_READY, CTRL_AUTO_RESTART = 0x1, 0x2, 0x4, 0x8, 0x80
FLAG_LOAD_CONFIG = 0x1
STATUS_REFUSED = 0x1          # the last start was refused (an unaligned pointer), nothing done
STATUS_AXI_ERROR = 0x2        # a read or write response of the last run was not OKAY
STATUS_UNALIGNED_SHIFT = 8    # bit 8+i: pointer BUFFERS[i] was unaligned at the refused start


def buffer_beats(cfg: AccelConfig) -> dict:
    """Beats of each buffer for ``cfg`` (the kernel's fixed transfer sizes)."""
    n, g = cfg.instances, cfg.groups
    return {
        "params": n * g * cfg.beats(cfg.weight_bits) + n,
        "mask": cfg.mask_chunks * cfg.beats(n * cfg.mask_lanes),
        "means": n * cfg.ofm_words,
        "ifmap": g * cfg.tiles * cfg.beats(cfg.tile_bits),
        "ofm": n * cfg.ofm_words,
    }


def buffer_bytes(cfg: AccelConfig) -> dict:
    return {k: v * BEAT_BYTES for k, v in buffer_beats(cfg).items()}


def _check(cfg: AccelConfig):
    if cfg.bus_width != 8 * BEAT_BYTES:
        raise ValueError(f"the kernel needs bus_width={8 * BEAT_BYTES}, not {cfg.bus_width}")


def pack_beats(beats) -> bytes:
    return b"".join(int(b).to_bytes(BEAT_BYTES, "little") for b in beats)


def pack_params(cfg: AccelConfig, frame) -> bytes:
    _check(cfg)
    return pack_beats(weight_beats(cfg, frame.weight, frame.bias, frame.mult, frame.shift)[1:])


def pack_mask(cfg: AccelConfig, frame) -> bytes:
    _check(cfg)
    return pack_beats(mask_beats(cfg, frame.mask)[1:])


def pack_means(cfg: AccelConfig, frame) -> bytes:
    _check(cfg)
    return pack_beats(means_beats(cfg, frame.means)[1:])


def pack_ifmap(cfg: AccelConfig, ifmap) -> bytes:
    _check(cfg)
    return pack_beats(frame_beats(cfg, ifmap)[1:])


def pack_frame(cfg: AccelConfig, frame) -> dict:
    """{buffer name: bytes} of every input buffer of ``frame``."""
    return {"params": pack_params(cfg, frame), "mask": pack_mask(cfg, frame),
            "means": pack_means(cfg, frame), "ifmap": pack_ifmap(cfg, frame.ifmap)}


def unpack_ofm(cfg: AccelConfig, raw: bytes) -> np.ndarray:
    """The ofm buffer's bytes -> uint8 [N, H, W]."""
    size = buffer_bytes(cfg)["ofm"]
    if len(raw) < size:
        raise ValueError(f"ofm buffer holds {len(raw)} bytes, expected {size}")
    ofm = np.frombuffer(bytes(raw[:size]), np.uint8).reshape(cfg.instances, -1)
    return ofm[:, :cfg.positions].reshape(cfg.instances, cfg.height, cfg.width).copy()


def counter_names(cfg: AccelConfig) -> list:
    """Names of the 32-bit read-only counters from Reg.COUNTERS on, one per word."""
    names = ["frames", "total_cycles", "load_cycles", "compute_cycles", "drain_cycles",
             "mac_active_cycles"]
    names += [f"computed[{n}]" for n in range(cfg.instances)]
    names += [f"skipped[{n}]" for n in range(cfg.instances)]
    return names
