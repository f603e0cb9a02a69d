"""The engine's contracts with the host, stated once on the hardware side: which configuration
runs a frame, and how many cycles an image's compute may take (py_ref, the golden model and
VELCRO, imports nothing from hdl; these contracts belong to the hardware).
"""

from __future__ import annotations

from .config import PIPELINE_LATENCY
from .config import DEFAULT, AccelConfig, ConfigError
from .protocol import beats_per_segment, compact_beats_per_image, segments_per_beat

__all__ = ["config_for_frame", "compute_cycle_bound", "PIPELINE_LATENCY", "work_cycles",
           "input_cycles", "BUFFER_TURNAROUND", "buffer_cycles", "image_cycle_floors",
           "stream_image_cycles", "stream_floors", "stream_limit"]


def config_for_frame(frame, *, instances: int | None = None, **overrides) -> AccelConfig:
    """The accelerator configuration whose shapes match ``frame`` (ifmap [C_in, H, W] or
    [B, C_in, H, W], weight [N, C_in, 3, 3]): ``instances`` P datapaths (default: the default
    design's), whatever the frame's N."""
    c_in, h, w = frame.ifmap.shape[-3:]
    p_count = DEFAULT.instances if instances is None else instances
    cfg = AccelConfig(height=h, width=w, in_channels=c_in, instances=p_count,
                      out_channels=frame.weight.shape[0], **overrides)
    if cfg.bus_bytes % cfg.instances:
        raise ConfigError(f"instances={cfg.instances} must divide bus_width/8={cfg.bus_bytes}: "
                          f"the output packer joins one byte per instance per step")
    return cfg


def compute_cycle_bound(cfg: AccelConfig, schedule) -> int:
    """Compute cycles of one image: steps * G + PIPELINE_LATENCY, steps being the most entries
    dealt to one instance (exact without output backpressure; the ``image_cycles`` counter
    leaves backpressure cycles out)."""
    return schedule.steps * cfg.groups + PIPELINE_LATENCY


def work_cycles(cfg: AccelConfig, steps: int) -> int:
    """The work of an image whose busiest instance holds ``steps`` entries: steps * G cycles."""
    return int(steps) * cfg.groups


def input_cycles(cfg: AccelConfig) -> int:
    """Cycles the window dealer needs per image without stalls (hdl/dealer.py): it writes one
    segment record per cycle into its ring and deals one strip per cycle, H * G * J of each;
    a record spread over several beats takes one cycle per beat."""
    return cfg.height * cfg.groups * cfg.row_segments * (
        1 if segments_per_beat(cfg) else beats_per_segment(cfg))


#: Cycles from the end of an image's work until its window buffer takes the next image: the
#: datapath's latency, three cycles of hand-over (walker idle, image done, buffer release) and
#: the window store's write delay (hdl.dealer.WRITE_DELAY). Measured: steady streams of 8x8
#: images (2 instances, input 32 cycles) at C = 0.7 .. 0.99 take exactly
#: (input + work + 32) / 2 cycles per image; tests/test_sweep.py asserts it.
BUFFER_TURNAROUND = PIPELINE_LATENCY + 5


def buffer_cycles(cfg: AccelConfig, steps: int) -> float:
    """The double buffer's floor: each of the two window buffers is busy for a load, the work
    and the turnaround per image it holds, so a stream of images whose busiest instance holds
    ``steps`` entries takes at least half of that per image. It limits once the work is
    shorter than the input plus the turnaround: for the default design above C = 0.93, for
    configurations with few channels per pixel (whose input is a large share of the work) much
    earlier."""
    return (input_cycles(cfg) + work_cycles(cfg, steps) + BUFFER_TURNAROUND) / 2


def image_cycle_floors(cfg: AccelConfig, steps: int) -> dict[str, float]:
    """Lower bounds on the steady-state cycles per image of an image whose busiest instance
    holds ``steps`` entries, one per stage that streams: the datapaths' work, the window dealer, the output
    (one compact beat per cycle) and the two window buffers' turnaround. Streaming
    overlaps them, so the slowest one limits."""
    return {"compute": work_cycles(cfg, steps), "input": input_cycles(cfg),
            "output": compact_beats_per_image(cfg, int(steps) * cfg.instances),
            "buffers": buffer_cycles(cfg, steps)}


def stream_image_cycles(cfg: AccelConfig, steps: int) -> int:
    """Cycles per image in a steady stream of images whose busiest instance holds ``steps`` entries: the
    largest floor of :func:`image_cycle_floors`, the compute one plus the walkers' idle cycle
    between images when G = 1 (PIPELINE_LATENCY overlaps the next image). ``make sim`` measures
    exactly this on every point (tests/test_sweep.py)."""
    return max(stream_floors(cfg, steps).values())


def stream_floors(cfg: AccelConfig, steps: int) -> dict[str, float]:
    """:func:`image_cycle_floors` as a stream meets them: the compute one plus the walkers' idle
    cycle between images when G = 1."""
    floors = image_cycle_floors(cfg, steps)
    floors["compute"] += cfg.groups == 1
    return floors


def stream_limit(cfg: AccelConfig, steps: int) -> str:
    """The stage that limits a stream of images whose busiest instance holds ``steps`` entries."""
    floors = stream_floors(cfg, steps)
    return max(floors, key=floors.get)
