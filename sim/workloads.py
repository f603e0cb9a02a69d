"""What `make sim` feeds the RTL: one workload per mask kind and compression ratio C.

A :class:`Workload` is a frame's deployment constants (weights, quantisation, mask, means) and a
batch of ifmaps streamed after them. Mask kinds (:data:`KINDS`, the one registry: each entry
carries what the sweep, the acceptance and the report ask of its kind, so adding a kind is one
entry):

* ``random``: per-element masks at density C, drawn from one uniform field u[n, y, x]
  (mask = u < C, so the masks are nested across C); ifmaps, weights and means are seeded random
  data, so only the mask changes along the sweep.
* ``velcro``: Algorithm 1 as written. The default design (C_in = 1, N = 16, 64x64) is exactly
  conv1 of the committed Fashion-MNIST CNN: its output activation point is profiled over the
  calibration images of a task (:func:`py_ref.velcro.profile`) and ONE percentile threshold over
  the whole point [N, H, W] selects the floor(C*N*H*W) lowest-variance elements
  (:func:`py_ref.velcro.make_masks`), so channels keep different numbers of outputs. The layer is
  int8-quantised the way ``velcro export`` quantises (:func:`py_ref.export.quantise_layer`, scales
  from the calibration images) and the ifmaps are real validation images of the task.
* ``velcro-per-channel``: the same statistics, but each channel masked at its own floor(C*H*W)
  lowest variances (equal work per channel; the kind the old engine needed), for comparison.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hdl.config import DEFAULT
from py_ref.golden import Frame, random_frame

__all__ = ["Workload", "MaskKind", "KINDS", "MASK_KINDS", "random_workloads",
           "velcro_workloads", "workloads", "profiled_kinds", "VELCRO_SHAPE"]

#: (C_in, N, H, W) of conv1 of the Fashion-MNIST CNN: the configuration the velcro kinds need,
#: which is the default design's (hdl.config.DEFAULT).
VELCRO_SHAPE = (DEFAULT.in_channels, DEFAULT.out_channels, DEFAULT.height, DEFAULT.width)


@dataclasses.dataclass(frozen=True)
class Workload:
    kind: str
    ratio: float               # the requested C
    frame: Frame               # constants (and the first image as ifmap)
    ifmaps: np.ndarray         # int8 [B, C_in, H, W], streamed after the constants
    point: str | None = None   # the profiled activation point (velcro kinds)

    @property
    def actual_ratio(self) -> float:
        """Compressed elements over all elements of the mask actually used."""
        return float(self.frame.mask.mean())

    def batch(self, images: int) -> np.ndarray:
        if not 1 <= images <= len(self.ifmaps):
            raise ValueError(f"the workload holds {len(self.ifmaps)} images, not {images}")
        return self.ifmaps[:images]


def _check_ratios(ratios) -> list[float]:
    out = [float(c) for c in ratios]
    if not out or any(not 0 <= c < 1 for c in out):
        raise ValueError(f"compression ratios must lie in 0 <= C < 1, not {ratios!r}")
    return out


def random_workloads(cfg, ratios, images: int, seed: int) -> list[Workload]:
    """``random`` masks: nested per-element masks u < C on fixed random data."""
    ratios = _check_ratios(ratios)
    rng = np.random.default_rng(seed)
    base = random_frame(cfg, rng, density=0.0)
    u = rng.random((cfg.out_channels, cfg.height, cfg.width))
    x = rng.integers(-128, 128, (images, cfg.in_channels, cfg.height, cfg.width), dtype=np.int8)
    x[0] = base.ifmap
    return [Workload("random", c, dataclasses.replace(base, mask=u < c), x) for c in ratios]


def velcro_workloads(cfg, ratios, images: int, *, task: str = "footwear",
                     calibration: int = 256, seed: int = 0, kinds=None) -> list[Workload]:
    """The profiled kinds (``kinds``, default every one of :data:`KINDS`) on conv1 of the
    committed Fashion-MNIST CNN; ValueError unless ``cfg`` has conv1's shape."""
    import torch

    from py_ref import data, export, velcro
    from py_ref.models import load_fmnist_cnn

    ratios = _check_ratios(ratios)
    kinds = profiled_kinds(KINDS) if kinds is None else list(kinds)
    shape = (cfg.in_channels, cfg.out_channels, cfg.height, cfg.width)
    if shape != VELCRO_SHAPE:
        raise ValueError(f"the velcro mask kinds run conv1 of the Fashion-MNIST CNN: they need "
                         f"(C_in, N, H, W) = {VELCRO_SHAPE}, not {shape}")
    torch.set_num_threads(1)
    model = load_fmnist_cnn()
    (xc, _), (xv, _) = data.calibration_validation(task, n_calib=calibration, n_valid=images,
                                                   seed=seed)
    stats = velcro.profile(model, data.batches(xc, None, 128))
    point = stats[export.LAYERS["conv1"][1]]
    # the quantisation does not depend on the mask: quantise once (nothing compressed, C = 0,
    # the same mask for every kind), then swap the masks in
    r = export.quantise_layer(model, "conv1", xc, xv, point, _velcro_mask(point, 0.0))
    return [Workload(kind, c, dataclasses.replace(r.frame, mask=KINDS[kind].mask(point, c)
                                                  .numpy()), r.ifmaps, point.name)
            for kind in kinds for c in ratios]


@dataclasses.dataclass(frozen=True)
class MaskKind:
    """One mask kind of ``make sim``. Exactly one of ``make`` and ``mask`` is given:

    * ``make(cfg, ratios, images, seed)``: the kind's workloads made on the host without a
      model (seconds, so the sweep makes them before the build and checks their batches);
    * ``mask(point, C)``: a ``profiled`` kind's mask [N, H, W] (torch bool) of the profiled
      activation point (:class:`py_ref.velcro.PointStats`) at ratio C; every profiled kind
      shares one profile and one quantisation of conv1 (:func:`velcro_workloads`), made while
      the other kinds simulate, and the report names the profiled point.

    ``accepted``: the acceptance targets apply (sim.perf_model); ``style``: the plot's
    (colour, marker, marker size, filled) (sim.sweep_report)."""
    name: str
    accepted: bool
    style: tuple
    make: object = None
    mask: object = None

    @property
    def profiled(self) -> bool:
        return self.mask is not None


def _velcro_mask(point, c):
    from py_ref import velcro
    return velcro.make_masks([point], [c])[0]


def _per_channel_mask(point, c):
    import torch

    from py_ref import velcro
    return torch.stack([velcro.select_lowest(v, c) for v in point.var])


#: The mask kinds by name, in the order the sweep lists them.
KINDS = {k.name: k for k in (
    MaskKind("random", accepted=True, style=("tab:blue", "o", 9, False),
             make=lambda cfg, ratios, images, seed: random_workloads(cfg, ratios, images, seed)),
    MaskKind("velcro", accepted=True, style=("tab:red", "s", 4, True), mask=_velcro_mask),
    MaskKind("velcro-per-channel", accepted=False, style=("tab:green", "^", 6, False),
             mask=_per_channel_mask),
)}
MASK_KINDS = tuple(KINDS)


def profiled_kinds(kinds) -> list:
    """The kinds of ``kinds`` that need a profile of the model (in their order)."""
    return [k for k in kinds if KINDS[k].profiled]


def workloads(cfg, kinds, ratios, images: int, *, seed: int, task: str = "footwear",
              calibration: int = 256) -> dict[str, list[Workload]]:
    """{kind: [Workload per ratio]} for ``kinds`` (a subset of :data:`MASK_KINDS`)."""
    unknown = [k for k in kinds if k not in MASK_KINDS]
    if unknown or not kinds:
        raise ValueError(f"mask kinds must be among {', '.join(MASK_KINDS)}, not {kinds!r}")
    out = {k: KINDS[k].make(cfg, ratios, images, seed) for k in kinds if not KINDS[k].profiled}
    profiled = profiled_kinds(kinds)
    if profiled:
        for w in velcro_workloads(cfg, ratios, images, task=task, calibration=calibration,
                                  seed=seed, kinds=tuple(profiled)):
            out.setdefault(w.kind, []).append(w)
    return {k: out[k] for k in kinds}
