"""The one place torchvision is imported.

torchvision 0.28.0's compiled extension is built for CUDA and does not load on the CPU torch
build, and then ``import torchvision`` fails with ``operator torchvision::nms does not exist``.
Declaring the two op schemas before the import makes models, transforms and datasets work
(``ops.nms`` and JPEG decoding in torchvision.io still do not).  The workaround is applied
only when the normal import fails (see shared/TOOLCHAIN.md).
"""

from __future__ import annotations

import importlib
import sys

_LIB = None  # keep the Library object alive: dropping it would undefine the schemas


def import_torchvision():
    """Return the torchvision module, applying the CPU schema workaround only if needed."""
    global _LIB
    try:
        import torchvision
        return torchvision
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
    import torch
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _LIB = torch.library.Library("torchvision", "DEF")
    _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB.define("qnms(Tensor qdets, Tensor qscores, float dets_scale, int dets_zero_point, "
                "float iou_threshold, float scores_scale, int scores_zero_point) -> Tensor")
    return importlib.import_module("torchvision")
