"""Plain-Python references of the window dealer and the window store (hdl/dealer.py,
hdl/datapath.py): the strips of an image, in the order the dealer sends them, and the window
an instance keeps of a strip."""

from __future__ import annotations

import numpy as np


def padded_groups(cfg, ifmap) -> np.ndarray:
    """int8 [G, L, H + 2, J*P + 2]: the ifmap's channel groups, zero around the map, past W and
    past C_in."""
    g_count, lanes, p = cfg.groups, cfg.lanes, cfg.instances
    x = np.zeros((g_count * lanes, cfg.height + 2, cfg.row_segments * p + 2), np.int8)
    x[:cfg.in_channels, 1:cfg.height + 1, 1:cfg.width + 1] = ifmap
    return x.reshape(g_count, lanes, cfg.height + 2, -1)


def pixel_word(lanes_values) -> int:
    """L int8 lanes -> the pixel's bits (lane l at bit 8l)."""
    return int.from_bytes(np.asarray(lanes_values, np.int8).tobytes(), "little")


def strips(cfg, ifmap) -> list[tuple[int, int, list[int]]]:
    """(seg, g, pixels) of every strip of ``ifmap`` in the dealer's order (rows, then groups,
    then segments); pixels[r*(P+2) + c] = pixel (y - 1 + r, jP - 1 + c), zero off the map."""
    x = padded_groups(cfg, ifmap)
    p, out = cfg.instances, []
    for y in range(cfg.height):
        for g in range(cfg.groups):
            for j in range(cfg.row_segments):
                block = x[g, :, y:y + 3, j * p:j * p + p + 2]          # [L, 3, P + 2]
                out.append((y * cfg.row_segments + j, g,
                            [pixel_word(block[:, r, c]) for r in range(3) for c in range(p + 2)]))
    return out


def strip_value(cfg, pixels) -> int:
    return sum(v << (i * cfg.pixel_bits) for i, v in enumerate(pixels))


def window(cfg, pixels, offset) -> int:
    """The window word an instance keeps of a strip for its pixel at ``offset``: pixel
    s = r*3 + c at bit s * pixel_bits."""
    width = cfg.instances + 2
    return sum(pixels[r * width + offset + c] << ((r * 3 + c) * cfg.pixel_bits)
               for r in range(3) for c in range(3))
