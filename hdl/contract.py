"""The engine's contracts with the host, stated once on the hardware side: which configuration
runs a frame, and how many cycles an image's compute may take (py_ref, the golden model and
VELCRO, imports nothing from hdl; these contracts belong to the hardware).
"""

from __future__ import annotations

from .config import AccelConfig, ConfigError
from .engine import IMAGE_LATENCY

__all__ = ["config_for_frame", "compute_cycle_bound", "stream_image_cycles", "IMAGE_LATENCY"]


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


def stream_image_cycles(cfg: AccelConfig, work: int) -> int:
    """Cycles per image in a steady stream of images with ``work`` uncompressed outputs each
    (sum U): the compute law ceil(sum U / P) * G without IMAGE_LATENCY, which overlaps the next
    image, plus the walkers' idle cycle between images when G = 1, and never less than the
    loader's time for the next image (double buffering hides the load up to that point)."""
    from .loader import image_load_cycles
    steps = -(-work // cfg.instances)
    return max(steps * cfg.groups + (cfg.groups == 1), image_load_cycles(cfg))
