"""Offline data: Fashion-MNIST from Debian's dataset-fashion-mnist, ImageNet from a local folder.

Nothing downloads.  The specialised tasks on Fashion-MNIST are class groups, like the paper's
Cats/Dogs/Cars on ImageNet; ``velcro.evaluate`` reports top-1 over all 10 classes of the general
model and, with ``task_classes``, the argmax over the task's classes only.

Image sets never overlap: Fashion-MNIST calibration and tuning images come from one seeded
permutation of the train images training never used (:func:`calibration`, :func:`tuning`),
validation images from the test set; an ImageNet folder is split per class with a seed
(:func:`imagenet_split`).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
from pathlib import Path

import numpy as np
import torch

from .errors import InputError

__all__ = ["FMNIST_DIR", "FMNIST_CLASSES", "FMNIST_TASKS", "load_fmnist", "task_classes",
           "select", "batches", "calibration", "validation", "calibration_validation",
           "tuning", "imagenet_folder", "imagenet_split", "ImagenetSplit"]

FMNIST_DIR = Path(os.environ.get("VELCRO_FMNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FMNIST_CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                  "sneaker", "bag", "ankle boot"]
#: Specialised tasks: groups of classes of the general 10-class model.
FMNIST_TASKS = {
    "footwear": [5, 7, 9],        # sandal, sneaker, ankle boot
    "tops": [0, 2, 4, 6],         # t-shirt/top, pullover, coat, shirt
    "shirts": [0, 6],             # t-shirt/top, shirt (the two most confused classes)
    "other": [1, 3, 8],           # trouser, dress, bag
    "all": list(range(10)),
}
#: Training uses train images [0, TRAIN_END); calibration draws from [TRAIN_END, 60000);
#: validation is the 10k test set.  The three are disjoint.
TRAIN_END = 50000


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fmnist(split: str = "train", root: Path | str | None = None):
    """(images float32 [N,1,28,28] in 0..1, labels int64 [N]) of 'train' or 'test'."""
    root = Path(root) if root else FMNIST_DIR
    prefix = {"train": "train", "test": "t10k"}[split]
    img, lab = root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"
    for p in (img, lab):
        if not p.exists():
            raise InputError(f"Fashion-MNIST file {p} not found (apt-get install dataset-fashion-mnist)")
    x = torch.from_numpy(_read_idx(img).astype(np.float32) / 255.0)[:, None]
    y = torch.from_numpy(_read_idx(lab).astype(np.int64))
    return x, y


def task_classes(task: str) -> list[int]:
    if task not in FMNIST_TASKS:
        raise InputError(f"unknown task '{task}' (known: {', '.join(FMNIST_TASKS)})")
    return FMNIST_TASKS[task]


def _count(value, what: str) -> int:
    """``value`` as a positive int, or InputError/TypeError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{what} must be an integer, not {value!r}")
    if value <= 0:
        raise InputError(f"{what} must be at least 1, not {value!r}")
    return int(value)


def select(x, y, classes, limit=None, seed=0):
    """Images of ``classes``; if ``limit``, a seeded random subset of exactly that many.

    Raises InputError if ``limit`` is not positive or more than the images there are
    (never a silently smaller set)."""
    idx = torch.nonzero(torch.isin(y, torch.tensor(classes))).flatten()
    if limit is not None:
        limit = _count(limit, "the number of images")
        if limit > len(idx):
            raise InputError(f"only {len(idx)} images of classes {list(classes)} are available, "
                              f"{limit} requested")
        if limit < len(idx):
            g = torch.Generator().manual_seed(seed)
            idx = idx[torch.randperm(len(idx), generator=g)[:limit]].sort().values
    return x[idx], y[idx]


def batches(x, y=None, batch_size=128):
    """List of (x, y) batches (or x batches if y is None)."""
    batch_size = _count(batch_size, "batch_size")
    out = []
    for i in range(0, len(x), batch_size):
        out.append(x[i:i + batch_size] if y is None else (x[i:i + batch_size], y[i:i + batch_size]))
    return out


def calibration(task: str, n: int = 256, seed: int = 0):
    """``n`` calibration images of a task (a seeded subset of the train images >= TRAIN_END,
    never used for training); InputError unless 1 <= n <= the images the task has there."""
    classes = task_classes(task)
    x, y = load_fmnist("train")
    try:
        return select(x[TRAIN_END:], y[TRAIN_END:], classes, _count(n, "the number of images"), seed)
    except InputError as e:
        raise InputError(f"calibration images of task '{task}': {e}") from None


def tuning(task: str, n: int, seed: int = 0, after: int = 256):
    """``n`` tuning images of a task, disjoint from :func:`calibration` ``(task, after, seed)``:
    the same seeded permutation of the unused train images, positions after..after+n-1.
    InputError unless the task has after + n images there."""
    classes = task_classes(task)
    n, after = _count(n, "the number of tuning images"), _count(after, "the number of calibration images")
    x, y = load_fmnist("train")
    x, y = x[TRAIN_END:], y[TRAIN_END:]
    idx = torch.nonzero(torch.isin(y, torch.tensor(classes))).flatten()
    if after + n > len(idx):
        raise InputError(f"tuning images of task '{task}': only {len(idx)} unused train images, "
                          f"{after} calibration + {n} tuning requested")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(idx), generator=g)
    pick = idx[perm[after:after + n]].sort().values
    return x[pick], y[pick]


def validation(task: str, n: int | None = None, seed: int = 0):
    """Validation images of a task (the test set): all of them, or a seeded subset of ``n``;
    InputError unless 1 <= n <= the images the task has."""
    classes = task_classes(task)
    x, y = load_fmnist("test")
    try:
        return select(x, y, classes, None if n is None else _count(n, "the number of images"), seed)
    except InputError as e:
        raise InputError(f"validation images of task '{task}': {e}") from None


def calibration_validation(task: str, n_calib: int = 256, n_valid: int | None = None, seed: int = 0):
    """Disjoint calibration (from unused train images) and validation (test set) images of a
    task: :func:`calibration` and :func:`validation` (nothing is clamped)."""
    return calibration(task, n_calib, seed), validation(task, n_valid, seed)


def _imagenet_base(path, classes, size):
    """(ImageFolder, {ImageFolder class index: 1000-class index}, wnids) of a local folder."""
    from .tv import import_torchvision
    tv = import_torchvision()
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"ImageNet folder {path} not found")
    T = tv.transforms
    tf = T.Compose([T.Resize(256 if size == 224 else size), T.CenterCrop(size), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])

    def load(p):
        try:
            return tv.datasets.folder.default_loader(p)
        except Exception as e:          # PIL's UnidentifiedImageError, truncated files, ...
            raise InputError(f"cannot read image {p}: {type(e).__name__}") from None
    try:
        ds = tv.datasets.ImageFolder(str(path), transform=tf, loader=load)
    except FileNotFoundError as e:      # no class folders, or a class folder without images
        first = str(e).splitlines()[0] if str(e) else "no images"
        raise InputError(f"ImageNet folder {path}: {first}") from None
    wnids = sorted(ds.class_to_idx)
    if classes is not None:
        want = {w: i for i, w, _ in classes}
        missing = [w for w in want if w not in ds.class_to_idx]
        if missing:
            raise InputError(f"class folders {missing} not found under {path}")
        remap = {ds.class_to_idx[w]: i for w, i in want.items()}
    elif len(wnids) == 1000:
        remap = {i: i for i in range(1000)}
    else:
        raise InputError(f"{path} has {len(wnids)} class folders; give a task's classes or all 1000")
    return ds, remap, wnids


def _with_samples(ds, samples):
    import copy
    ds = copy.copy(ds)
    ds.samples = ds.imgs = list(samples)
    ds.targets = [c for _, c in samples]
    return ds


def imagenet_folder(path, classes=None, size=224, limit_per_class=None):
    """A torchvision ImageFolder of a local ImageNet split (class folders named by WordNet id),
    labelled with the standard 1000-class indices; ``classes`` = [(index, wnid, name), ...]
    keeps those classes only (e.g. presets.IMAGENET_TASKS['cats']).  ``limit_per_class`` keeps
    the first files of each class (in name order).  For calibration and validation from one
    folder use :func:`imagenet_split` (disjoint, seeded)."""
    path = Path(path)
    if limit_per_class is not None:
        limit_per_class = _count(limit_per_class, "limit_per_class")
    ds, remap, wnids = _imagenet_base(path, classes, size)
    samples, per = [], {}
    for p, c in ds.samples:
        if c in remap and (limit_per_class is None or per.get(c, 0) < limit_per_class):
            per[c] = per.get(c, 0) + 1
            samples.append((p, remap[c]))
    if limit_per_class is not None:
        short = {wnids[c]: per.get(c, 0) for c in remap if per.get(c, 0) < limit_per_class}
        if short:
            w, k = next(iter(short.items()))
            raise InputError(f"class folder {path / w} has {k} image{'' if k == 1 else 's'}, fewer than the "
                              f"{limit_per_class} per class requested"
                              + (f" ({len(short) - 1} more classes short)" if len(short) > 1 else ""))
    return _with_samples(ds, samples)


@dataclasses.dataclass
class ImagenetSplit:
    """Disjoint parts of one ImageNet folder (datasets labelled with 1000-class indices)."""

    calib: object
    tune: object
    valid: object
    seed: int
    calib_per_class: int
    tune_per_class: int


def imagenet_split(path, classes=None, *, calib_per_class: int, tune_per_class: int = 0,
                   valid_images: int | None = None, seed: int = 0, size: int = 224) -> ImagenetSplit:
    """Split the task's images of a local ImageNet folder disjointly, with a seed.

    Per class (in class-index order, one ``torch.Generator`` seeded with ``seed``), the files
    are permuted; the first ``calib_per_class`` are calibration images, the next
    ``tune_per_class`` tuning images, the rest validation images (all of them, or a seeded
    subset of ``valid_images`` in total).  The same arguments give the same split, so
    ``velcro profile`` and ``velcro evaluate`` agree on it.  InputError if a class has too
    few images, no validation image is left, or ``valid_images`` exceeds what is left.
    """
    path = Path(path)
    calib_per_class = _count(calib_per_class, "calibration images per class")
    if isinstance(tune_per_class, bool) or not isinstance(tune_per_class, (int, np.integer)) or tune_per_class < 0:
        raise InputError(f"tuning images per class must be an integer >= 0, not {tune_per_class!r}")
    ds, remap, wnids = _imagenet_base(path, classes, size)
    by_class: dict[int, list] = {}
    for p, c in ds.samples:
        if c in remap:
            by_class.setdefault(c, []).append(p)
    g = torch.Generator().manual_seed(int(seed))
    calib, tune, valid = [], [], []
    need = calib_per_class + int(tune_per_class)
    for c in sorted(remap):
        files = sorted(by_class.get(c, []))
        if len(files) < need:
            k = len(files)
            raise InputError(f"class folder {path / wnids[c]} has {k} image{'' if k == 1 else 's'}, fewer "
                              f"than the {calib_per_class} calibration"
                              + (f" + {tune_per_class} tuning" if tune_per_class else "")
                              + " per class requested")
        order = torch.randperm(len(files), generator=g).tolist()
        files = [files[i] for i in order]
        label = remap[c]
        calib += [(f, label) for f in files[:calib_per_class]]
        tune += [(f, label) for f in files[calib_per_class:need]]
        valid += [(f, label) for f in files[need:]]
    if not valid:
        raise InputError(f"no validation images left under {path}: every image of the task is used "
                          f"for calibration ({calib_per_class} per class)"
                          + (f" and tuning ({tune_per_class} per class)" if tune_per_class else ""))
    if valid_images is not None:
        valid_images = _count(valid_images, "the number of validation images")
        if valid_images > len(valid):
            raise InputError(f"only {len(valid)} validation images are left under {path} after "
                              f"calibration{' and tuning' if tune_per_class else ''}, {valid_images} requested")
        keep = sorted(torch.randperm(len(valid), generator=g)[:valid_images].tolist())
        valid = [valid[i] for i in keep]
    return ImagenetSplit(_with_samples(ds, calib), _with_samples(ds, tune), _with_samples(ds, valid),
                         int(seed), calib_per_class, int(tune_per_class))
