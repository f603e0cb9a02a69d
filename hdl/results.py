"""One run's result record, named by the engine's counter table.

A FRAME command of B images gives :class:`StreamResult`: the ofm, every counter of
:data:`hdl.protocol.STREAM_COUNTERS` under its own name, and the one figure the host measures
around the engine, ``stream_cycles``. The cocotb testbenches, ``velcro sim`` and its
RESULT.npz, ``velcro network``, the measurement library (``make sim``) and the kernel host all
use this record, so a counter has one name everywhere:

- batch counters (``batches``, ``images``, ``batch_cycles``, ``load_cycles``,
  ``datapath_cycles``, ``overlap_cycles``, ``drain_cycles``, ``mac_active_cycles``): one value,
  read when the batch has ended;
- per-image counters (``image_cycles`` [B], ``image_computed`` [B, N], ``image_instance``
  [B, P]): latched by the engine as each image completes and sampled by the host then (the
  kernel's registers hold the last image's only: there B = 1 in these arrays);
- ``image_skipped`` [B, N] = H*W - ``image_computed``;
- ``stream_cycles``: the host's clock from the first image beat accepted to the last output
  beat, inclusive (not a counter of the engine).

RESULT.npz holds :data:`RESULT_ARRAYS`; a one-image frame (ifmap [C_in, H, W]) drops the B axis of
``ofm`` and the per-image arrays. Plain Python and numpy.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .config import AccelConfig
from .protocol import STREAM_COUNTERS

__all__ = ["StreamResult", "BATCH_COUNTERS", "IMAGE_COUNTERS", "RESULT_ARRAYS"]

#: Counters latched per image (the table's ``image_*`` rows), and the batch's others.
IMAGE_COUNTERS = tuple(name for name, _, _ in STREAM_COUNTERS if name.startswith("image_"))
BATCH_COUNTERS = tuple(name for name, _, _ in STREAM_COUNTERS if name not in IMAGE_COUNTERS)
#: The members of RESULT.npz (``velcro sim``), in this order.
RESULT_ARRAYS = ("ofm", *BATCH_COUNTERS, "stream_cycles", *IMAGE_COUNTERS, "image_skipped")


@dataclasses.dataclass(frozen=True, eq=False)
class StreamResult:
    ofm: np.ndarray          # uint8 [B, N, H, W]
    counters: dict           # name -> int (batch counters) or int64 array [B, ...] (image_*)
    stream_cycles: int

    @classmethod
    def from_samples(cls, cfg: AccelConfig, ofm, images: list, batch: dict,
                     stream_cycles: int) -> "StreamResult":
        """From decoded counters (:func:`hdl.protocol.decode_stream_counters`): ``images`` sampled
        as each image completed, ``batch`` once the batch ended. Per-channel counters are cut to
        the layer's N (the design holds N_max); ValueError if a channel beyond N counted."""
        n = cfg.out_channels
        for k, image in enumerate(images):
            if any(image["image_computed"][n:]):
                raise ValueError(f"image {k}: a channel beyond the layer's N = {n} counted")
        counters = {name: int(batch[name]) for name in BATCH_COUNTERS}
        for name in IMAGE_COUNTERS:
            values = [np.asarray(image[name], np.int64) for image in images]
            if name == "image_computed":
                values = [v[:n] for v in values]
            counters[name] = np.stack(values) if values else np.zeros((0,), np.int64)
        return cls(np.asarray(ofm, np.uint8), counters, int(stream_cycles))

    @property
    def images(self) -> int:
        return len(self.ofm)

    @property
    def image_skipped(self) -> np.ndarray:
        """int64 [B, N]: outputs per channel and image left out (their means stand in)."""
        positions = self.ofm.shape[2] * self.ofm.shape[3]
        return positions - self.counters["image_computed"]

    def image(self, k: int) -> dict:
        """Image ``k``'s counters, the batch's and ``stream_cycles``, as plain ints and lists."""
        out = {name: self.counters[name] for name in BATCH_COUNTERS}
        out.update({name: self.counters[name][k].tolist() for name in IMAGE_COUNTERS})
        out["image_skipped"] = self.image_skipped[k].tolist()
        out["stream_cycles"] = self.stream_cycles
        return out

    def arrays(self, batched: bool = True) -> dict:
        """RESULT.npz's members (:data:`RESULT_ARRAYS`); ``batched`` false drops the B axis of a
        one-image result."""
        if not batched and self.images != 1:
            raise ValueError(f"a result of {self.images} images keeps its batch axis")
        per_image = {"ofm": self.ofm, "image_skipped": self.image_skipped,
                     **{name: self.counters[name] for name in IMAGE_COUNTERS}}
        out = {name: np.asarray(self.counters[name], np.int64) for name in BATCH_COUNTERS}
        out["stream_cycles"] = np.asarray(self.stream_cycles, np.int64)
        out.update({k: v if batched else v[0] for k, v in per_image.items()})
        return {name: out[name] for name in RESULT_ARRAYS}

    @classmethod
    def from_arrays(cls, arrays) -> "StreamResult":
        """Read :meth:`arrays`' output back (a batched or a one-image RESULT.npz)."""
        missing = [name for name in RESULT_ARRAYS if name not in arrays]
        if missing:
            raise ValueError(f"a result needs the arrays {', '.join(missing)}")
        ofm = np.asarray(arrays["ofm"], np.uint8)
        single = ofm.ndim == 3
        counters = {name: int(arrays[name]) for name in BATCH_COUNTERS}
        for name in IMAGE_COUNTERS:
            v = np.asarray(arrays[name], np.int64)
            counters[name] = v[None] if single else v
        return cls(ofm[None] if single else ofm, counters, int(arrays["stream_cycles"]))

    def summary(self) -> str:
        """One line: images, the slowest image's image_cycles, batch_cycles and stream_cycles."""
        return (f"images={self.images} image_cycles={int(self.counters['image_cycles'].max())} "
                f"batch_cycles={self.counters['batch_cycles']} "
                f"stream_cycles={self.stream_cycles}")
