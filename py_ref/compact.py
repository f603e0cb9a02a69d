"""Golden model of the compact (VELCRO) output stream (the cycle law is hdl.contract's).

The engine emits the computed outputs, in the schedule's compact order (see
:mod:`py_ref.schedule`); the host expands them with :meth:`Schedule.expand`. These functions are
the golden side of that contract. They live beside :mod:`py_ref.golden` rather than in it only
to keep edits apart; they import nothing from ``hdl``.
"""

from __future__ import annotations

import numpy as np

from .golden import Frame, golden_ofm
from .schedule import Schedule

__all__ = ["golden_compact"]


def golden_compact(frame: Frame, schedule: Schedule) -> np.ndarray:
    """uint8 [stream_length]: the computed outputs of ``frame`` in ``schedule``'s compact order,
    padding bytes zero: exactly the bytes the engine streams out."""
    if not isinstance(schedule, Schedule):
        raise TypeError(f"schedule must be a Schedule, not {schedule!r}")
    if schedule.shape != frame.mask.shape:
        raise ValueError(f"schedule must be dealt for a mask of shape {frame.mask.shape!r}, "
                         f"not {schedule.shape!r}")
    if schedule.total != int((~frame.mask).sum()) or frame.mask.reshape(-1)[
            schedule.work_flat].any():
        raise ValueError("schedule must be dealt from the frame's mask, not another mask")
    out = np.zeros(schedule.stream_length, np.uint8)
    out[schedule.work_stream] = golden_ofm(frame).reshape(-1)[schedule.work_flat]
    return out
