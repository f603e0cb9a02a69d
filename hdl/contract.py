"""The engine's contracts with the host, stated once on the hardware side: which configuration
runs a frame, and how many cycles an image's compute may take (py_ref, the golden model and
VELCRO, imports nothing from hdl; these contracts belong to the hardware).
"""

from __future__ import annotations

from .config import PIPELINE_LATENCY as IMAGE_LATENCY
from .config import AccelConfig, ConfigError
from .protocol import beats_per_tile, compact_beats_per_image, tiles_per_beat

__all__ = ["config_for_frame", "compute_cycle_bound", "IMAGE_LATENCY", "work_cycles",
           "input_cycles", "image_cycle_floors", "stream_image_cycles"]


def config_for_frame(frame, **overrides) -> AccelConfig:
    """The accelerator configuration whose shapes match ``frame`` (ifmap [C_in, H, W] or
    [B, C_in, H, W])."""
    c_in, h, w = frame.ifmap.shape[-3:]
    cfg = AccelConfig(height=h, width=w, in_channels=c_in, instances=frame.weight.shape[0],
                      **overrides)
    if cfg.bus_bytes % cfg.instances:
        raise ConfigError(f"instances={cfg.instances} must divide bus_width/8={cfg.bus_bytes}: "
                          f"the output packer joins one byte per instance per step")
    return cfg


def compute_cycle_bound(cfg: AccelConfig, schedule) -> int:
    """Compute cycles of one image: ceil(sum U / P) * G + IMAGE_LATENCY (exact without output
    backpressure; the ``image_cycles`` counter leaves backpressure cycles out)."""
    return schedule.steps * cfg.groups + IMAGE_LATENCY


def work_cycles(cfg: AccelConfig, total: int) -> int:
    """The balanced work of an image computing ``total`` outputs: ceil(total / P) * G cycles."""
    return -(-int(total) // cfg.instances) * cfg.groups


def input_cycles(cfg: AccelConfig) -> int:
    """Cycles the input loader needs per image without stalls (hdl/loader.py): a beat of
    ``tiles_per_beat`` tiles is written two tiles per cycle and the next beat is taken as the
    last pair is written, so ceil(tiles / 2) cycles per beat; a tile spread over several beats
    takes one cycle per beat."""
    tiles, per = cfg.groups * cfg.tiles, tiles_per_beat(cfg)
    if not per:
        return tiles * beats_per_tile(cfg)
    full, rest = divmod(tiles, per)
    return full * -(-per // 2) + -(-rest // 2)


def image_cycle_floors(cfg: AccelConfig, total: int) -> dict[str, int]:
    """Lower bounds on the steady-state cycles per image of an image computing ``total``
    outputs, one per stage that streams: the datapaths' balanced work, the input loader and the
    output (one compact beat per cycle). Streaming overlaps them, so the slowest one limits."""
    return {"compute": work_cycles(cfg, total), "input": input_cycles(cfg),
            "output": compact_beats_per_image(cfg, total)}


def stream_image_cycles(cfg: AccelConfig, total: int) -> int:
    """Cycles per image in a steady stream of images computing ``total`` outputs each: the
    largest floor of :func:`image_cycle_floors`, the compute one plus the walkers' idle cycle
    between images when G = 1 (IMAGE_LATENCY overlaps the next image). ``make sim`` measures
    exactly this on every point (tests/test_sweep.py)."""
    floors = image_cycle_floors(cfg, total)
    floors["compute"] += cfg.groups == 1
    return max(floors.values())
