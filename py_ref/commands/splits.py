"""The images each command uses: Fashion-MNIST's seeded calibration / validation subsets and an
ImageNet folder's per-class calibration / tuning / validation split, kept disjoint through the
calibration record a statistics or masks file carries."""

from __future__ import annotations

import torch

from ..errors import CliError, InputError, one_line
from .files import is_int
from .progress import note, plural


def task_class_indices(model: str, task: str) -> list[int] | None:
    """The class indices of a task (for the task-restricted top-1); None for ImageNet 'all'."""
    if model == "fmnist":
        from ..data import task_classes
        return task_classes(task)
    if task == "all":
        return None
    from ..presets import IMAGENET_TASKS
    return sorted(i for i, _, _ in IMAGENET_TASKS[task])


def imagenet_split(args, task: str, split: dict, valid_images: int | None = None):
    """The disjoint calibration / tuning / validation split of the task's images under --data
    (data.imagenet_split); its sizes go to stderr."""
    from .. import data
    from ..presets import IMAGENET_TASKS
    sp = data.imagenet_split(args.data, None if task == "all" else IMAGENET_TASKS[task],
                             calib_per_class=split["images"], tune_per_class=split.get("tune", 0),
                             valid_images=valid_images, seed=split["seed"])
    note(args, f"split of task {task} under {args.data} (seed {sp.seed}): {plural(len(sp.calib), 'calibration image')}"
               f" ({sp.calib_per_class} per class), {plural(len(sp.tune), 'tuning image')}, "
               f"{plural(len(sp.valid), 'validation image')}" + ("" if valid_images is None else " (a seeded subset)"))
    return sp


def loader(args, ds):
    return torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=False)


def fmnist_images(split: str, task: str, count: int | None, seed: int | None, option: str):
    """Fashion-MNIST calibration / validation images; a count the task cannot supply is
    reported against its option."""
    from .. import data
    try:
        return (data.calibration if split == "calib" else data.validation)(
            task, count, 0 if seed is None else seed)
    except InputError as e:
        raise CliError(f"{option} {count}: {one_line(e)}" if count is not None else one_line(e)) from None


def calibration_batches(args, model: str, task: str):
    """(batches, number of images, split record) of the calibration images.

    Fashion-MNIST: a seeded subset of the train images training never used (the validation
    images are the test set, so the two never overlap).  ImageNet folder: the first
    ``--images`` per class of a seeded per-class permutation (data.imagenet_split); the
    record lets ``evaluate`` and ``compress --search`` take the remaining images."""
    from .. import data
    seed = 0 if args.seed is None else args.seed
    record = {"seed": seed, "images": args.images, "per_class": model != "fmnist"}
    if model == "fmnist":
        x, y = fmnist_images("calib", task, args.images, args.seed, "--images")
        note(args, f"calibration: {plural(len(x), 'image')} of task {task} from the unused train images "
                   f"{data.TRAIN_END}-59999 (seed {seed}); validation: the test set (disjoint)")
        return data.batches(x, y, args.batch_size), len(x), record
    sp = imagenet_split(args, task, record)
    return loader(args, sp.calib), len(sp.calib), record


def validation_batches(args, model: str, task: str, split: dict | None):
    """(batches, number of images) of the labelled validation images (ImageNet: what the
    calibration and tuning images of ``split`` leave)."""
    from .. import data
    if model == "fmnist":
        x, y = fmnist_images("valid", task, args.valid_images, args.seed, "--valid-images")
        return data.batches(x, y, args.batch_size), len(x)
    sp = imagenet_split(args, task, split, args.valid_images)
    return loader(args, sp.valid), len(sp.valid)


def masks_calibration(args, src, why: str, images_option: str = "--images") -> dict:
    """The calibration record ({seed, images}) of the masks file ``args.masks`` whose source
    record is ``src``; a ``--seed`` or calibration count (``images_option``) given otherwise is
    refused, ``why`` saying what a different one would break."""
    calib = src.get("calibration")
    if not (isinstance(calib, dict) and is_int(calib.get("seed")) and is_int(calib.get("images"))):
        raise CliError(f"{args.masks} has no calibration record (made by an older version: run "
                       "`velcro profile` and `velcro compress` again)")
    given_images = getattr(args, images_option.lstrip("-").replace("-", "_"))
    for opt, given, rec in (("--seed", args.seed, calib["seed"]),
                            (images_option, given_images, calib["images"])):
        if given is not None and given != rec:
            raise CliError(f"{opt} {given} differs from the {rec} the statistics of {args.masks} "
                           f"were profiled with ({why})")
    return calib


def evaluate_split(args, src) -> dict:
    """The ImageNet split evaluate must leave out: the masks' record, else --images/--seed."""
    if src is None:
        return {"seed": 0 if args.seed is None else args.seed,
                "images": 256 if args.images is None else args.images, "tune": 0}
    calib = masks_calibration(args, src, "the validation images would overlap the calibration "
                                         "ones")
    search = src.get("search") if isinstance(src.get("search"), dict) else None
    return {"seed": calib["seed"], "images": calib["images"],
            "tune": search["images"] if search and search.get("per_class") else 0}
