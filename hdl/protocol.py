"""The accelerator's stream protocol: how a host turns FRAME arrays into input beats and output
beats back into an output map.

The engine has one input stream and one output stream, both ``bus_width`` bits wide. The input
carries *commands*: a header beat whose low 8 bits are an opcode, followed by a fixed number of
records whose size the configuration determines. A record of R bits is sent little-endian over
``ceil(R / bus_width)`` beats.

=========  =====================================================================================
opcode     records after the header
=========  =====================================================================================
WEIGHTS    N*G filter records (instance-major, then channel group g): byte ``(ky*3+kx)*L + l`` =
           weight[n, g*L+l, ky, kx]; then N quant records: bias (32, two's complement) |
           mult << 32 | shift << 48.
MASK       ceil(H*W/K) chunk records, K = mask_lanes: bit ``n*K + t`` = mask[n, chunk*K + t]
           (1 = compressed); positions past H*W are sent as 1. Builds each instance's skip list.
MEANS      N*ceil(H*W/P) records of P = bus_width/8 bytes (instance-major): byte b =
           means[n, word*P + b]. Must follow every MASK: means live in the output buffer and
           compressed positions are simply never overwritten.
FRAME      G*ceil(H/3)*ceil(W/3) tile records (group-major, then tile row, tile column): pixel
           slot ``s = r*3 + c`` holds lanes l = ifmap[g*L+l, 3*ty+r, 3*tx+c] (0 off the map).
           Then the engine computes and sends N*ceil(H*W/P) output beats (instance-major, byte b
           = ofm[n, word*P + b]) with ``last`` on the final one.
=========  =====================================================================================

WEIGHTS, MASK and MEANS are the deployment's constants: they stay loaded across frames, so a
stream of images sends them once and then only FRAME commands. After a reset they must be sent
again.
"""

from __future__ import annotations

import enum

import numpy as np

from .config import AccelConfig

__all__ = ["Opcode", "config_beats", "frame_beats", "decode_ofm", "output_beats"]


class Opcode(enum.IntEnum):
    WEIGHTS = 1
    MASK = 2
    MEANS = 3
    FRAME = 4


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


def weight_beats(cfg: AccelConfig, weight, bias, mult, shift) -> list[int]:
    n, g_count, lanes = cfg.instances, cfg.groups, cfg.lanes
    w = np.zeros((n, g_count * lanes, 3, 3), np.int8)
    w[:, :cfg.in_channels] = weight
    # [n, g, l, ky, kx] -> [n, g, ky, kx, l]
    w = w.reshape(n, g_count, lanes, 3, 3).transpose(0, 1, 3, 4, 2).reshape(n * g_count, 9 * lanes)
    beats = [_header(Opcode.WEIGHTS)] + _records_to_beats(cfg, w.view(np.uint8))
    for b, m, s in zip(bias, mult, shift):
        beats.append((int(b) & 0xFFFF_FFFF) | (int(m) << 32) | (int(s) << 48))
    return beats


def mask_beats(cfg: AccelConfig, mask) -> list[int]:
    k = cfg.mask_lanes
    bits = np.ones((cfg.instances, cfg.mask_chunks * k), np.uint8)
    bits[:, :cfg.positions] = np.asarray(mask, bool).reshape(cfg.instances, -1)
    # chunk-major, then instance, then lane t
    bits = bits.reshape(cfg.instances, cfg.mask_chunks, k).transpose(1, 0, 2)
    beats = [_header(Opcode.MASK)]
    weights = 1 << np.arange(cfg.instances * k, dtype=object)
    for chunk in bits.reshape(cfg.mask_chunks, -1):
        beats.append(int(np.sum(weights[chunk.astype(bool)])))
    return beats


def means_beats(cfg: AccelConfig, means) -> list[int]:
    p = cfg.bus_bytes
    m = np.zeros((cfg.instances, cfg.ofm_words * p), np.uint8)
    m[:, :cfg.positions] = np.asarray(means, np.uint8).reshape(cfg.instances, -1)
    return [_header(Opcode.MEANS)] + _records_to_beats(cfg, m.reshape(-1, p))


def config_beats(cfg: AccelConfig, frame) -> list[int]:
    """WEIGHTS, MASK and MEANS commands for ``frame``'s constants."""
    return (weight_beats(cfg, frame.weight, frame.bias, frame.mult, frame.shift)
            + mask_beats(cfg, frame.mask) + means_beats(cfg, frame.means))


def frame_beats(cfg: AccelConfig, ifmap) -> list[int]:
    """The FRAME command for one int8 [C_in, H, W] input feature map."""
    lanes, g_count = cfg.lanes, cfg.groups
    ty, tx = cfg.tile_rows, cfg.tile_cols
    x = np.zeros((g_count * lanes, ty * 3, tx * 3), np.int8)
    x[:cfg.in_channels, :cfg.height, :cfg.width] = ifmap
    # [g, l, ty, r, tx, c] -> [g, ty, tx, r, c, l]
    x = x.reshape(g_count, lanes, ty, 3, tx, 3).transpose(0, 2, 4, 3, 5, 1)
    records = x.reshape(g_count * ty * tx, 9 * lanes).view(np.uint8)
    return [_header(Opcode.FRAME)] + _records_to_beats(cfg, records)


def output_beats(cfg: AccelConfig) -> int:
    """Output beats per frame."""
    return cfg.instances * cfg.ofm_words


def decode_ofm(cfg: AccelConfig, beats) -> np.ndarray:
    """Output beats -> uint8 [N, H, W]."""
    if len(beats) != output_beats(cfg):
        raise ValueError(f"expected {output_beats(cfg)} output beats, got {len(beats)}")
    raw = b"".join(int(b).to_bytes(cfg.bus_bytes, "little") for b in beats)
    ofm = np.frombuffer(raw, np.uint8).reshape(cfg.instances, cfg.ofm_words * cfg.bus_bytes)
    return ofm[:, :cfg.positions].reshape(cfg.instances, cfg.height, cfg.width).copy()
