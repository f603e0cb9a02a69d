"""`velcro profile | compress | evaluate | export`: the algorithm side of the CLI.

velcro_cli.py calls :func:`register` with its subparsers.  Every command returns an exit
status and keeps py_ref/cli.py's contract: bad input prints one line ``velcro: error: ...``
to stderr and returns 2 (never a traceback), output paths are checked before any long work,
and files are written atomically (no partial or overwritten output on failure).  Progress
goes to stderr (a tqdm bar on a terminal, otherwise stage lines with the elapsed time);
stdout carries the result lines only.

    velcro profile  --model fmnist --task footwear --images 256 --out stats.pt
    velcro compress --stats stats.pt --uniform 0.3 [--structured] --out masks.pt
    velcro compress --stats stats.pt --preset cats:27.3%            (paper tuple, ImageNet models)
    velcro compress --stats stats.pt --search --out masks.pt        (tuple searched on tuning images)
    velcro evaluate --masks masks.pt                                (model and task from the masks)
    velcro export   --layer conv2 --task footwear --threshold 0.3 --out FRAME.npz
    velcro export   --layer conv4 --masks masks.pt --out FRAME.npz    (the masks compress chose)
    velcro export   --model resnet18 --weights R18.pth --data VAL --layer layer1.0.conv1 \
                    --masks masks.pt --out FRAME.npz    (BatchNorm folded; --list-layers)

Images: Fashion-MNIST calibration images are a seeded subset of the train images training never
used, validation images the test set; an ImageNet folder is split per class with ``--seed``
(the first ``--images`` of each class's seeded permutation calibrate, ``compress --search``
tunes on the next ``--tune-images``, the rest validate), and the sizes go to stderr.
``evaluate`` prints all-class and task-restricted top-1, the out-of-task rate and McNemar
tests of the compressed model against the uncompressed one (py_ref/significance.py).

``export`` writes one conv + ReLU layer as FRAME.npz: any of the fmnist CNN's five, or a 3x3
stride-1 conv + BatchNorm + ReLU of ResNet-18 / GoogLeNet (py_ref/export.py decides, by tracing
the model, and refuses the rest by name with the reason; ``--list-layers`` shows the verdicts).

A statistics file records the model, the sha256 of its weights and the task; a masks file
records the same plus the sha256 of the statistics' content (not a path), and carries the
means it substitutes, so ``evaluate`` needs no other file and refuses a model, weights, task
or ``--stats`` file that is not the one the masks were made from.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .cli import CliError, atomic_write, check_output, main_guard, one_line, one_line_errors

__all__ = ["register", "network_setup", "STATS_FORMAT", "MASKS_FORMAT"]

#: The record every statistics / masks file carries (files without it are refused).
STATS_FORMAT = "velcro-stats/1"
MASKS_FORMAT = "velcro-masks/1"

DEFAULT_MODEL = "fmnist"
DEFAULT_TASK = "footwear"


def _guarded(func):
    """Run a command under cli.main_guard; the library's VelcroError / FrameError and OS
    errors become one-line CliErrors (the library messages name the file or value)."""
    def body(args) -> int:
        from .golden import FrameError
        from .velcro import VelcroError
        try:
            return func(args)
        except (VelcroError, FrameError) as e:
            raise CliError(one_line(e) or type(e).__name__) from None
        except BrokenPipeError:
            raise                        # stdout went away: main_guard's quiet exit
        except OSError as e:
            what = e.strerror or one_line(e) or type(e).__name__
            raise CliError(f"{e.filename}: {what}" if e.filename else what) from None

    def run(args) -> int:
        args._cmd, args._t0 = func.__name__.removeprefix("cmd_"), time.monotonic()
        return main_guard(body, args)
    run.__name__ = func.__name__
    return run


# ---------------------------------------------------------------------------- progress

def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "es" if noun.endswith("ch") else "s")


def _stage(cmd: str, msg: str, t0: float) -> None:
    print(f"{cmd}: {msg}, {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)


def _note(args, msg: str) -> None:
    """A stage line of the running command (``cmd: msg, t s`` on stderr)."""
    _stage(getattr(args, "_cmd", "velcro"), msg, getattr(args, "_t0", time.monotonic()))


def _progress(items, cmd: str, t0: float):
    """Yield ``items``; report progress on stderr: tqdm on a terminal, otherwise a line
    ``cmd: i/n batches, t s`` about every tenth of the batches (and at least every 30 s)."""
    try:
        total = len(items)
    except TypeError:
        total = None
    if sys.stderr.isatty():
        from tqdm import tqdm
        yield from tqdm(items, desc=cmd, unit="batch", total=total, leave=False)
        return
    every = max(1, -(-total // 10)) if total else 10
    last = time.monotonic()
    for i, item in enumerate(items, 1):
        yield item
        now = time.monotonic()
        if i % every == 0 or i == total or now - last >= 30:
            _stage(cmd, f"{i}/{total if total is not None else '?'} batches done", t0)
            last = now


# ---------------------------------------------------------------------------- options

def _check_counts(args) -> None:
    """Counts must be at least 1: refused, never clamped."""
    for name in ("images", "valid_images", "batch_size", "threads"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise CliError(f"--{name.replace('_', '-')} must be at least 1, not {v}")


def _check_model_name(name: str) -> None:
    from .models import MODELS
    if name not in MODELS:
        raise CliError(f"unknown model '{name}' (known: {', '.join(MODELS)})")


def _check_task(model: str, task: str) -> None:
    if model == "fmnist":
        from .data import FMNIST_TASKS
        if task not in FMNIST_TASKS:
            raise CliError(f"unknown task '{task}' for the fmnist model (known: {', '.join(FMNIST_TASKS)})")
    else:
        from .presets import IMAGENET_TASKS
        if task not in IMAGENET_TASKS and task != "all":
            raise CliError(f"unknown ImageNet task '{task}' (known: {', '.join(IMAGENET_TASKS)}, all)")


def _check_data_options(args, model: str) -> None:
    """--data belongs to the ImageNet models (and is required by them)."""
    data = getattr(args, "data", None)
    if model == "fmnist":
        if data not in (None, "fmnist"):
            raise CliError("the fmnist model takes the built-in Fashion-MNIST data (omit --data)")
        return
    if not data:
        raise CliError(f"model '{model}' needs --data PATH (a local ImageNet ImageFolder); "
                       "no ImageNet images ship with this repo")
    if not Path(data).exists():
        raise CliError(f"data path {data} does not exist")
    if not Path(data).is_dir():
        raise CliError(f"data path {data} is not a folder (expected an ImageNet ImageFolder)")


def _model(args, model: str):
    from .models import load_model
    return load_model(model, args.weights, pretrained=True)


def _weights_file(args, model: str):
    """The weights file the model will be loaded from (an input no output may overwrite)."""
    if args.weights:
        return args.weights
    from .models import FMNIST_WEIGHTS, mobilenet_v2_weights_path
    from .velcro import VelcroError
    if model == "fmnist":
        return FMNIST_WEIGHTS
    try:
        return mobilenet_v2_weights_path() if model == "mobilenet_v2" else None
    except VelcroError:
        return None


def _skip_first(args, model: str) -> bool:
    if args.skip_first is not None:
        return args.skip_first
    return _skip_first_default(model)


def task_class_indices(model: str, task: str) -> list[int] | None:
    """The class indices of a task (for the task-restricted top-1); None for ImageNet 'all'."""
    if model == "fmnist":
        from .data import task_classes
        return task_classes(task)
    if task == "all":
        return None
    from .presets import IMAGENET_TASKS
    return sorted(i for i, _, _ in IMAGENET_TASKS[task])


def _imagenet_split(args, task: str, split: dict, valid_images: int | None = None):
    """The disjoint calibration / tuning / validation split of the task's images under --data
    (data.imagenet_split); its sizes go to stderr."""
    from . import data
    from .presets import IMAGENET_TASKS
    sp = data.imagenet_split(args.data, None if task == "all" else IMAGENET_TASKS[task],
                             calib_per_class=split["images"], tune_per_class=split.get("tune", 0),
                             valid_images=valid_images, seed=split["seed"])
    _note(args, f"split of task {task} under {args.data} (seed {sp.seed}): {_n(len(sp.calib), 'calibration image')}"
                f" ({sp.calib_per_class} per class), {_n(len(sp.tune), 'tuning image')}, "
                f"{_n(len(sp.valid), 'validation image')}" + ("" if valid_images is None else " (a seeded subset)"))
    return sp


def _loader(args, ds):
    return torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=False)


def _fmnist_images(split: str, task: str, count: int | None, seed: int | None, option: str):
    """Fashion-MNIST calibration / validation images; a count the task cannot supply is
    reported against its option."""
    from . import data
    from .velcro import VelcroError
    try:
        return (data.calibration if split == "calib" else data.validation)(
            task, count, 0 if seed is None else seed)
    except VelcroError as e:
        raise CliError(f"{option} {count}: {one_line(e)}" if count is not None else one_line(e)) from None


def _calibration_batches(args, model: str, task: str):
    """(batches, number of images, split record) of the calibration images.

    Fashion-MNIST: a seeded subset of the train images training never used (the validation
    images are the test set, so the two never overlap).  ImageNet folder: the first
    ``--images`` per class of a seeded per-class permutation (data.imagenet_split); the
    record lets ``evaluate`` and ``compress --search`` take the remaining images."""
    from . import data
    seed = 0 if args.seed is None else args.seed
    record = {"seed": seed, "images": args.images, "per_class": model != "fmnist"}
    if model == "fmnist":
        x, y = _fmnist_images("calib", task, args.images, args.seed, "--images")
        _note(args, f"calibration: {_n(len(x), 'image')} of task {task} from the unused train images "
                    f"{data.TRAIN_END}-59999 (seed {seed}); validation: the test set (disjoint)")
        return data.batches(x, y, args.batch_size), len(x), record
    sp = _imagenet_split(args, task, record)
    return _loader(args, sp.calib), len(sp.calib), record


def _validation_batches(args, model: str, task: str, split: dict | None):
    """(batches, number of images) of the labelled validation images (ImageNet: what the
    calibration and tuning images of ``split`` leave)."""
    from . import data
    if model == "fmnist":
        x, y = _fmnist_images("valid", task, args.valid_images, args.seed, "--valid-images")
        return data.batches(x, y, args.batch_size), len(x)
    sp = _imagenet_split(args, task, split, args.valid_images)
    return _loader(args, sp.valid), len(sp.valid)


# ---------------------------------------------------------------------------- files

def _digest_stats(blob: dict) -> str:
    """sha256 of a statistics file's content (its record and every tensor's values)."""
    from .models import tensor_bytes
    h = hashlib.sha256()
    head = {k: blob[k] for k in ("format", "model", "task", "skip_first", "weights_sha256")}
    h.update(json.dumps(head, sort_keys=True).encode())
    for p in blob["points"]:
        h.update(json.dumps({k: p[k] for k in ("name", "index", "count", "macs")}, sort_keys=True).encode())
        for key in ("mean", "m2", "zeros"):
            t = p[key]
            h.update(b"none" if t is None else f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            if t is not None:
                h.update(tensor_bytes(t))
    return h.hexdigest()


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _load_stats(path):
    """(record, [PointStats], content sha256) of a `velcro profile` output."""
    from .models import read_pt
    from .velcro import PointStats
    what = "a `velcro profile` output"
    blob = read_pt(path, what)
    if not isinstance(blob, dict) or blob.get("format") != STATS_FORMAT:
        old = isinstance(blob, dict) and "points" in blob
        raise CliError(f"{path} is not {what} with a '{STATS_FORMAT}' record"
                       + (" (made by an older version: run `velcro profile` again)" if old else ""))
    ok = (isinstance(blob.get("model"), str) and isinstance(blob.get("task"), str)
          and isinstance(blob.get("skip_first"), bool) and isinstance(blob.get("weights_sha256"), str)
          and isinstance(blob.get("points"), list) and blob["points"])
    if not ok:
        raise CliError(f"cannot read {path}: its record is incomplete (truncated or corrupt)")
    stats = []
    for i, p in enumerate(blob["points"]):
        good = (isinstance(p, dict) and isinstance(p.get("name"), str) and _is_int(p.get("index"))
                and _is_int(p.get("count")) and p["count"] >= 1 and _is_int(p.get("macs"))
                and p["macs"] >= 0 and isinstance(p.get("mean"), torch.Tensor)
                and isinstance(p.get("m2"), torch.Tensor) and p["mean"].is_floating_point()
                and p["m2"].is_floating_point() and p["mean"].shape == p["m2"].shape
                and p["mean"].numel() > 0
                and (p.get("zeros") is None or (isinstance(p["zeros"], torch.Tensor)
                                                and p["zeros"].shape == p["mean"].shape)))
        if not good:
            raise CliError(f"cannot read {path}: activation point {i} is incomplete (truncated or corrupt)")
        if not (torch.isfinite(p["mean"]).all() and torch.isfinite(p["m2"]).all() and (p["m2"] >= 0).all()):
            raise CliError(f"{path}: activation point {i} '{p['name']}' holds NaN, inf or negative spread")
        stats.append(PointStats(p["name"], p["index"], p["mean"].double(), p["m2"].double(),
                                p["count"], p["macs"], p.get("zeros")))
    return blob, stats, _digest_stats(blob)


def _load_masks(path):
    """(record, [PointStats] with the embedded means, masks) of a `velcro compress` output."""
    from .models import read_pt
    from .velcro import PointStats
    what = "a `velcro compress` output"
    blob = read_pt(path, what)
    if not isinstance(blob, dict) or blob.get("format") != MASKS_FORMAT:
        old = isinstance(blob, dict) and "masks" in blob
        raise CliError(f"{path} is not {what} with a '{MASKS_FORMAT}' record of the statistics "
                       "it came from" + (" (made by an older version: run `velcro compress` again)"
                                         if old else ""))
    src = blob.get("source")
    ok = (isinstance(src, dict) and all(isinstance(src.get(k), str) for k in
                                        ("model", "task", "weights_sha256", "stats_sha256"))
          and isinstance(blob.get("masks"), list) and isinstance(blob.get("points"), list)
          and len(blob["masks"]) == len(blob["points"]) and blob["points"])
    if not ok:
        raise CliError(f"cannot read {path}: its record is incomplete (truncated or corrupt)")
    stats = []
    for i, (p, m) in enumerate(zip(blob["points"], blob["masks"])):
        good = (isinstance(p, dict) and isinstance(p.get("name"), str) and _is_int(p.get("index"))
                and _is_int(p.get("count")) and _is_int(p.get("macs"))
                and isinstance(p.get("mean"), torch.Tensor) and p["mean"].is_floating_point()
                and isinstance(m, torch.Tensor) and m.dtype == torch.bool and m.shape == p["mean"].shape)
        if not good:
            raise CliError(f"cannot read {path}: mask {i} is incomplete (truncated or corrupt)")
        mean = p["mean"].double()
        stats.append(PointStats(p["name"], p["index"], mean,
                                torch.zeros((), dtype=torch.float64).expand(mean.shape),
                                p["count"], p["macs"]))
    return blob, stats, blob["masks"]


def _write(out: Path, write) -> None:
    """cli.atomic_write, with an unwritable folder or a full disk reported against ``out``."""
    try:
        atomic_write(out, write)
    except OSError as e:
        raise CliError(f"cannot write {out}: {e.strerror or type(e).__name__}") from None


# ---------------------------------------------------------------------------- commands

def cmd_profile(args) -> int:
    from . import velcro
    from .models import state_digest
    t0 = time.monotonic()
    _check_counts(args)
    model_name, task = args.model or DEFAULT_MODEL, args.task or DEFAULT_TASK
    _check_model_name(model_name)
    _check_task(model_name, task)
    _check_data_options(args, model_name)
    out = check_output(args.out, inputs=[_weights_file(args, model_name)])
    torch.set_num_threads(args.threads)
    model = _model(args, model_name)
    batches, n, split = _calibration_batches(args, model_name, task)
    skip = _skip_first(args, model_name)
    _stage("profile", f"{model_name}, task {task}: {_n(n, 'calibration image')} in "
                      f"{_n(len(batches), 'batch')}", t0)
    stats = velcro.profile(model, _progress(batches, "profile", t0), skip_first=skip, count_zeros=True)
    blob = {"format": STATS_FORMAT, "model": model_name, "task": task, "skip_first": skip,
            "weights_sha256": state_digest(model), "calibration": split,
            "points": [{"name": s.name, "index": s.index, "mean": s.mean, "m2": s.m2,
                        "count": s.count, "macs": s.macs, "zeros": s.zeros} for s in stats]}
    _write(out, lambda p: torch.save(blob, p))
    print(f"profiled {stats[0].count} images, {len(stats)} activation points "
          f"({'first skipped' if skip else 'all'}) -> {out}")
    for s in stats:
        print(f"  {s.index:3d} {s.name:32s} {str(list(s.shape)):18s} mean var {float(s.var.mean()):.4g}")
    return 0


def _parse_thresholds(text: str) -> list[float]:
    vals = []
    for tok in text.replace(" ", "").split(","):
        try:
            vals.append(float(tok))
        except ValueError:
            raise CliError(f"--thresholds: '{tok}' is not a number") from None
    if any(math.isnan(v) for v in vals):
        raise CliError("--thresholds must not be NaN")
    return vals


def _search(args, blob, stats) -> tuple[list[float], dict]:
    """``compress --search``: the searched tuple (py_ref.search) on tuning images disjoint from
    the statistics' calibration images (and from the validation images)."""
    from . import data, search
    from .models import state_digest
    model_name, task = blob["model"], blob["task"]
    calib = blob.get("calibration")
    if not (isinstance(calib, dict) and _is_int(calib.get("seed")) and _is_int(calib.get("images"))):
        raise CliError(f"{args.stats} has no calibration record (made by an older version: run "
                       "`velcro profile` again); --search needs it to keep the tuning images apart")
    _check_data_options(args, model_name)
    torch.set_num_threads(args.threads)
    model = _model(args, model_name)
    if state_digest(model) != blob["weights_sha256"]:
        raise CliError(f"the weights ({args.weights or 'the default ones'}) are not those "
                       f"{args.stats} was profiled with")
    if model_name == "fmnist":
        n = args.tune_images or 400
        try:
            x, y = data.tuning(task, n, calib["seed"], after=calib["images"])
        except data.VelcroError as e:
            raise CliError(f"--tune-images {n}: {one_line(e)}") from None
        batches = data.batches(x, y, args.batch_size)
        _note(args, f"tuning: {_n(len(x), 'image')} of task {task} from the unused train images, disjoint "
                    f"from the {calib['images']} calibration images (seed {calib['seed']})")
    else:
        n = args.tune_images or 10
        sp = _imagenet_split(args, task, {"seed": calib["seed"], "images": calib["images"], "tune": n})
        batches = _loader(args, sp.tune)
    classes = task_class_indices(model_name, task)
    score = search.tuning_score(model, batches, stats, task_classes=classes, structured=args.structured)
    r = search.search_thresholds(stats, score, max_evals=args.max_evals)
    metric = "task top-1" if classes is not None else "top-1"
    print(f"search on {_n(n, 'tuning image')}{' per class' if model_name != 'fmnist' else ''} "
          f"({metric}, {r.evals} evaluations): uncompressed {100 * r.base:.2f}%, best uniform "
          f"T = {r.uniform:.2f} {100 * r.uniform_score:.2f}%, searched "
          f"({', '.join(f'{v:.2f}' for v in r.thresholds)}) {100 * r.score:.2f}%")
    rec = r.as_dict()
    del rec["history"]
    rec.update(images=n, per_class=model_name != "fmnist", metric=metric)
    return list(r.thresholds), rec


def cmd_compress(args) -> int:
    from . import presets, svelcro, velcro
    chosen = [a for a in (args.thresholds, args.uniform, args.preset) if a is not None]
    if len(chosen) + bool(args.search) != 1:
        raise CliError("give exactly one of --thresholds, --uniform, --preset, --search")
    if args.percent and args.thresholds is None:
        raise CliError("--percent applies to --thresholds only (--uniform is a fraction, "
                       "--preset is the paper's tuple)")
    if not args.search:
        extra = [o for o, v in (("--tune-images", args.tune_images), ("--data", args.data),
                                ("--weights", args.weights), ("--max-evals", args.max_evals != 30 or None))
                 if v is not None]
        if extra:
            raise CliError(f"{extra[0]} applies to --search only")
    if args.tune_images is not None and args.tune_images < 1:
        raise CliError(f"--tune-images must be at least 1, not {args.tune_images}")
    if args.max_evals < 0:
        raise CliError(f"--max-evals must be at least 0, not {args.max_evals}")
    _check_counts(args)
    out = check_output(args.out, inputs=[args.stats, args.weights])
    blob, stats, digest = _load_stats(args.stats)
    searched = None
    if args.search:
        t, searched = _search(args, blob, stats)
    elif args.thresholds is not None:
        t = _parse_thresholds(args.thresholds)
        if args.percent:
            t = [v / 100 for v in t]
    elif args.uniform is not None:
        t = [args.uniform] * len(stats)
    else:
        task, _, ratio = args.preset.partition(":")
        t = presets.paper_tuple(blob["model"], task, ratio)
    make = svelcro.make_channel_masks if args.structured else velcro.make_masks
    masks = make(stats, t)
    c = velcro.compression_ratio(stats, masks)
    record = {"format": MASKS_FORMAT,
              "source": {"model": blob["model"], "task": blob["task"], "skip_first": blob["skip_first"],
                         "weights_sha256": blob["weights_sha256"], "stats_sha256": digest,
                         "images": stats[0].count, "calibration": blob.get("calibration")},
              "search": searched,
              "thresholds": [float(v) for v in t], "structured": bool(args.structured),
              "masks": masks,
              "points": [{"name": s.name, "index": s.index, "count": s.count, "macs": s.macs,
                          "mean": s.mean.to(torch.float32)} for s in stats]}
    _write(out, lambda p: torch.save(record, p))
    kind = "S-VELCRO (whole channels)" if args.structured else "VELCRO"
    if searched is not None:
        print(f"compare the two on held-out images: velcro compress --stats {args.stats} --uniform "
              f"{searched['uniform']:.2f}{' --structured' if args.structured else ''} --out U.pt, then "
              f"velcro evaluate --masks on each")
    print(f"{kind}: C = {100 * c.elements:.2f}% of activation elements "
          f"({c.compressed}/{c.total}), MAC-weighted C = {100 * c.macs:.2f}% -> {out}")
    if stats[0].zeros is not None:
        print(f"zeros among compressed elements (Table 4): {100 * velcro.zero_share(stats, masks):.2f}% of "
              f"their values on the calibration images; {100 * velcro.zero_mean_share(stats, masks):.2f}% "
              f"of them have mean exactly 0")
    return 0


def cmd_evaluate(args) -> int:
    from . import velcro
    from .models import state_digest
    t0 = time.monotonic()
    _check_counts(args)
    stats = masks = None
    if args.masks is None:
        if args.stats is not None:
            raise CliError("--stats needs --masks (statistics only serve the compressed model)")
        model_name, task = args.model or DEFAULT_MODEL, args.task or DEFAULT_TASK
    else:
        mblob, stats, masks = _load_masks(args.masks)
        src = mblob["source"]
        model_name, task = args.model or src["model"], args.task or src["task"]
        if model_name != src["model"] or task != src["task"]:
            raise CliError(f"{args.masks} was made for model {src['model']}, task {src['task']}; "
                           f"not for --model {model_name} --task {task}")
        if args.stats is not None:
            sblob, sstats, digest = _load_stats(args.stats)
            if (sblob["model"], sblob["task"]) != (src["model"], src["task"]):
                raise CliError(f"{args.stats} holds statistics of model {sblob['model']}, task "
                               f"{sblob['task']}; {args.masks} was made from model {src['model']}, "
                               f"task {src['task']}")
            if digest != src["stats_sha256"]:
                raise CliError(f"{args.stats} is not the statistics file {args.masks} was made from "
                               "(its content differs)")
            stats = sstats
    _check_model_name(model_name)
    _check_task(model_name, task)
    _check_data_options(args, model_name)
    split = None
    if model_name == "fmnist":
        if args.seed is not None and args.valid_images is None:
            raise CliError("--seed only picks the --valid-images subset; without it every validation "
                           "image is used")
        if args.images is not None:
            raise CliError("--images applies to ImageNet folders (Fashion-MNIST validation images are "
                           "the test set, never calibration images)")
    else:
        split = _evaluate_split(args, src if masks is not None else None)
    torch.set_num_threads(args.threads)
    model = _model(args, model_name)
    if masks is not None and state_digest(model) != src["weights_sha256"]:
        raise CliError(f"the weights ({args.weights or 'the default ones'}) are not those "
                       f"{args.masks} was profiled with")
    batches, n = _validation_batches(args, model_name, task, split)
    _stage("evaluate", f"{model_name}, task {task}: {_n(n, 'validation image')} in "
                       f"{_n(len(batches), 'batch')}", t0)
    classes = task_class_indices(model_name, task)
    r = velcro.evaluate(model, _progress(batches, "evaluate", t0), stats, masks,
                        task_classes=classes, per_image=True)
    if masks is not None:
        x0 = next(iter(batches))[0]
        r["compression"] = velcro.compression_ratio(stats, masks, network_macs=velcro.conv_macs(model, x0))
    for line in evaluation_lines(task, r, classes):
        print(line)
    return 0


def _masks_calibration(args, src, why: str, images_option: str = "--images") -> dict:
    """The calibration record ({seed, images}) of the masks file ``args.masks`` whose source
    record is ``src``; a ``--seed`` or calibration count (``images_option``) given otherwise is
    refused, ``why`` saying what a different one would break."""
    calib = src.get("calibration")
    if not (isinstance(calib, dict) and _is_int(calib.get("seed")) and _is_int(calib.get("images"))):
        raise CliError(f"{args.masks} has no calibration record (made by an older version: run "
                       "`velcro profile` and `velcro compress` again)")
    given_images = getattr(args, images_option.lstrip("-").replace("-", "_"))
    for opt, given, rec in (("--seed", args.seed, calib["seed"]),
                            (images_option, given_images, calib["images"])):
        if given is not None and given != rec:
            raise CliError(f"{opt} {given} differs from the {rec} the statistics of {args.masks} "
                           f"were profiled with ({why})")
    return calib


def _evaluate_split(args, src) -> dict:
    """The ImageNet split evaluate must leave out: the masks' record, else --images/--seed."""
    if src is None:
        return {"seed": 0 if args.seed is None else args.seed,
                "images": 256 if args.images is None else args.images, "tune": 0}
    calib = _masks_calibration(args, src, "the validation images would overlap the calibration "
                                          "ones")
    search = src.get("search") if isinstance(src.get("search"), dict) else None
    return {"seed": calib["seed"], "images": calib["images"],
            "tune": search["images"] if search and search.get("per_class") else 0}


def evaluation_lines(task: str, r: dict, classes) -> list[str]:
    """What `velcro evaluate` prints: the all-class line, a table with the task-restricted
    baseline row, and the paired tests of the compressed model against it."""
    from .significance import compare
    line = f"task {task}: {r['images']} validation images, top-1 original {100 * r['top1']:.2f}%"
    comp = "top1_compressed" in r
    if comp:
        c = r["compression"]
        line += (f", compressed {100 * r['top1_compressed']:.2f}% at C = {100 * c.elements:.2f}% "
                 f"(MAC-weighted {100 * c.macs:.2f}%"
                 + (f", {100 * c.network_macs:.2f}% of all convolution MACs" if c.network_macs is not None else "")
                 + ")")
    out = [line]
    if classes is not None:
        shown = ", ".join(map(str, classes)) if len(classes) <= 8 else f"{len(classes)} classes"
        # columns three spaces apart, each number right-aligned under its header
        heads = ("top-1, all classes", "top-1, task classes", "out-of-task predictions")
        out.append(f"  {'':12s}" + "".join(f"   {h}" for h in heads)
                   + f"   (task classes: {shown})")
        rows = [("uncompressed", "")] + ([("compressed", "_compressed")] if comp else [])
        for name, sfx in rows:
            values = (r['top1' + sfx], r['top1_task' + sfx], r['out_of_task' + sfx])
            out.append(f"  {name:12s}" + "".join(f"   {f'{100 * v:.2f}%':>{len(h)}s}"
                                                 for h, v in zip(heads, values)))
    if comp:
        tests = [("top-1, all classes", "correct")]
        if classes is not None:
            tests.insert(0, ("top-1, task classes", "correct_task"))
        for what, key in tests:
            t = compare(r[key], r[key + "_compressed"])
            out.append(f"  paired ({what}): {t.lost} lost, {t.gained} gained, McNemar p = {t.p:.3g} "
                       f"({'exact binomial' if t.exact else 'chi-square, continuity-corrected'}); "
                       f"95% CI of the change [{100 * t.ci[0]:+.2f}, {100 * t.ci[1]:+.2f}] pts: "
                       + ("significantly worse" if t.worse else "significantly better" if t.better
                          else "not significantly worse") + f" at alpha = {t.alpha}")
    return out


def _fmnist_masks(args, command: str):
    """(record, stats, masks, source record, task) of the fmnist masks file ``args.masks``,
    its model and task checked against the options given."""
    mblob, stats, masks = _load_masks(args.masks)
    src = mblob["source"]
    if src["model"] != "fmnist":
        raise CliError(f"{args.masks} holds masks of model {src['model']}; {command} supports "
                       "the fmnist model")
    task = args.task or src["task"]
    if task != src["task"]:
        raise CliError(f"{args.masks} was made for task {src['task']}, not --task {task}")
    return mblob, stats, masks, src, task


def _export_masks(args):
    """``--masks``: (task, calibration images and seed, the output point's stats and mask, or
    None for a point the masks' profile left out, a description, the weights' sha256) from a
    `velcro compress` output, checked against the options given."""
    from . import export
    mblob, stats, masks, src, task = _fmnist_masks(args, "export")
    calib = _masks_calibration(args, src, "the scales come from the same calibration images")
    point = export.LAYERS[args.layer][1]
    found = [i for i, s in enumerate(stats) if s.index == point]
    if not found:
        return (task, calib["images"], calib["seed"], None, None,
                "dense: its point was not profiled", src["weights_sha256"])
    i = found[0]
    t = mblob["thresholds"][i] if i < len(mblob.get("thresholds", [])) else float("nan")
    kind = "S-VELCRO" if mblob.get("structured") else "VELCRO"
    return (task, calib["images"], calib["seed"], stats[i], masks[i], f"{kind} T = {t:g}",
            src["weights_sha256"])


#: The image size ImageNet models are profiled and exported at (py_ref.data's transform).
IMAGENET_SIZE = 224


def cmd_export(args) -> int:
    """One conv layer into FRAME.npz: the fmnist CNN (masks from --masks or profiled anew with
    --threshold), or ResNet-18 / GoogLeNet (any model of py_ref.models) with --masks, --weights
    and --data; ``--list-layers`` prints every conv of the model and its verdict."""
    _check_counts(args)
    model_name = args.model
    if args.masks is not None and not args.list_layers:
        made_for = _load_masks(args.masks)[0]["source"]["model"]
        if model_name is not None and model_name != made_for:
            raise CliError(f"{args.masks} holds masks of model {made_for}, not --model {model_name}")
        model_name = made_for
    model_name = model_name or DEFAULT_MODEL
    _check_model_name(model_name)
    if args.list_layers:
        return _list_layers(args, model_name)
    if model_name != "fmnist":
        return _export_imagenet(args, model_name)
    return _export_fmnist(args)


def _list_layers(args, model_name: str) -> int:
    """``export --list-layers``: every Conv2d of the model, exportable (with its output point)
    or refused (with the reason), at the size the model is exported at."""
    from . import export
    from .models import load_model
    model = load_model(model_name, args.weights, pretrained=args.weights is not None
                       or model_name in ("fmnist", "mobilenet_v2"))
    example = torch.zeros((1, 1, 28, 28) if model_name == "fmnist"
                          else (1, 3, IMAGENET_SIZE, IMAGENET_SIZE))
    layers = export.conv_layers(model, example)
    if model_name == "fmnist":   # the CNN's own check (conv1..conv5)
        for name, layer in layers.items():
            if name not in export.LAYERS and not layer.reason:
                layer.reason = "not one of " + ", ".join(export.LAYERS)
    ok = sum(not l.reason for l in layers.values())
    print(f"{model_name}: {len(layers)} convolutions, {ok} exportable "
          f"(3x3, stride 1, pad 1, into a ReLU, within the accelerator's shape limits)")
    for name, l in layers.items():
        c_in, h, w = (l.in_shape + (0, 0, 0))[:3]
        shape = f"{c_in}->{l.out_channels} at {h}x{w}"
        verdict = (f"exportable, output point {l.point} '{l.point_name}'"
                   + (" (BatchNorm folded)" if l.folded else "")) if not l.reason else f"refused: {l.reason}"
        print(f"  {name:32s} {shape:20s} {verdict}")
    return 0


def _export_imagenet(args, model_name: str) -> int:
    """``export`` of an ImageNet model's conv layer with the mask and means of a `velcro
    compress` output of that model; scales from the masks' calibration images of ``--data``,
    the exported image one of its validation images (the split the masks' record gives)."""
    from . import export
    from .models import state_digest
    t0 = time.monotonic()
    if args.masks is None:
        raise CliError(f"export of {model_name} takes --masks FILE (a `velcro compress` output of "
                       f"`velcro profile --model {model_name} --data PATH`); --threshold profiles "
                       "the fmnist CNN only")
    if args.threshold is not None:
        raise CliError("give --masks or --threshold, not both (the masks carry their thresholds)")
    if not args.layer:
        raise CliError(f"give --layer NAME, a convolution of {model_name} by module path "
                       "(--list-layers lists them)")
    _check_data_options(args, model_name)
    mblob, stats, masks = _load_masks(args.masks)
    src = mblob["source"]
    task = args.task or src["task"]
    if task != src["task"]:
        raise CliError(f"{args.masks} was made for task {src['task']}, not --task {task}")
    _check_task(model_name, task)
    split = _evaluate_split(args, src)
    out = check_output(args.out, inputs=[args.weights, args.masks], suffix=".npz")
    torch.set_num_threads(args.threads)
    model = _model(args, model_name)
    if state_digest(model) != src["weights_sha256"]:
        raise CliError(f"the weights ({args.weights or 'the default ones'}) are not those "
                       f"{args.masks} was profiled with")
    spec = export.model_layer(model, args.layer, torch.zeros(1, 3, IMAGENET_SIZE, IMAGENET_SIZE))
    found = [i for i, s in enumerate(stats) if s.index == spec.point]
    if not found:
        raise CliError(f"{args.masks} covers no activation point {spec.point} '{spec.point_name}' "
                       f"(the output of {args.layer}): its profile left that point out")
    i = found[0]
    if stats[i].name != spec.point_name:
        raise CliError(f"{args.masks}: point {spec.point} is '{stats[i].name}', not "
                       f"'{spec.point_name}' (the output of {args.layer})")
    t = mblob["thresholds"][i] if i < len(mblob.get("thresholds", [])) else float("nan")
    how = f"{'S-VELCRO' if mblob.get('structured') else 'VELCRO'} T = {t:g}"
    sp = _imagenet_split(args, task, split)
    if not 0 <= args.image_index < len(sp.valid):
        raise CliError(f"--image-index {args.image_index} out of range 0..{len(sp.valid) - 1} "
                       f"(the split leaves {_n(len(sp.valid), 'validation image')})")
    image = sp.valid[args.image_index][0][None]
    batches = _loader(args, sp.calib)
    _stage("export", f"quantising {args.layer} of {model_name} (scales from "
                     f"{_n(len(sp.calib), 'calibration image')} in {_n(len(batches), 'batch')})", t0)
    r = export.quantise_layer(model, args.layer, _progress(batches, "export", t0), image,
                              stats[i], masks[i])
    return _write_export(args, out, r, f"{model_name} ({task}, {how}, ", "; BatchNorm folded"
                         if spec.folded else "")


def _write_export(args, out, r, what: str, extra: str = "") -> int:
    """Check the exported layer against the float one, write the frame, print the result."""
    from . import export
    from .golden import FRAME_ARRAYS
    chk = export.check_export(r)
    if not chk["ok"]:
        bad = {k: v for k, v in chk.items() if k != "ok"}
        raise CliError(f"quantised layer outside tolerance: {bad}")
    _write(out, lambda p: np.savez(p, **{k: getattr(r.frame, k) for k in FRAME_ARRAYS}))
    n, c_in, h, w = r.frame.weight.shape[0], *r.frame.ifmap.shape
    print(f"exported {args.layer} of {what}"
          f"{100 * chk['compressed_fraction']:.1f}% compressed; C_in={c_in} N={n} {h}x{w}{extra}) -> {out}")
    print(f"golden vs float layer: max {chk['max_err_vs_float_layer']:.3f} ofm steps "
          f"(every element within its derived bound, at most {chk['max_bound']:.1f}), "
          f"{100 * chk['share_within_1_step']:.2f}% within 1 step; "
          f"vs quantised float {chk['max_err_vs_quantised_float']:.3f}; means {chk['max_err_means']:.3f}")
    return 0


def _export_fmnist(args) -> int:
    from . import data, export, velcro
    from .models import load_fmnist_cnn, state_digest
    t0 = time.monotonic()
    if args.data is not None:
        raise CliError("export takes the built-in Fashion-MNIST images for the fmnist model "
                       "(--data is for the ImageNet models)")
    args.layer = args.layer or "conv2"
    model = load_fmnist_cnn(args.weights)
    try:
        export.check_layer(model, args.layer)
    except velcro.VelcroError as e:
        raise CliError(one_line(e)) from None
    if args.masks is not None and args.threshold is not None:
        raise CliError("give --masks or --threshold, not both (the masks carry their thresholds)")
    threshold = 0.3 if args.threshold is None else args.threshold
    if not 0 <= threshold < 1:
        raise CliError(f"--threshold {threshold} is out of range 0 <= T < 1")
    inputs = [_weights_file(args, "fmnist")] + ([args.masks] if args.masks else [])
    out = check_output(args.out, inputs=inputs, suffix=".npz")
    if args.masks is not None:
        task, n_calib, seed, point_stats, mask, how, digest = _export_masks(args)
    else:
        task, n_calib, seed = args.task or DEFAULT_TASK, args.images or 256, args.seed
        how = f"T = {threshold}"
    _check_task("fmnist", task)
    torch.set_num_threads(args.threads)
    xv, _ = _fmnist_images("valid", task, None, seed, "")
    if not 0 <= args.image_index < len(xv):
        raise CliError(f"--image-index {args.image_index} out of range 0..{len(xv) - 1} "
                       f"(task {task} has {len(xv)} validation images)")
    xc, _ = _fmnist_images("calib", task, n_calib, seed, "--images")
    if args.masks is not None:
        if state_digest(model) != digest:
            raise CliError(f"the weights ({args.weights or 'the default ones'}) are not those "
                           f"{args.masks} was profiled with")
    else:
        batches = data.batches(xc, None, args.batch_size)
        _stage("export", f"profiling {_n(len(xc), 'calibration image')} of task {task} in "
                         f"{_n(len(batches), 'batch')}", t0)
        stats = velcro.profile(model, _progress(batches, "export", t0))
        point_stats = stats[export.LAYERS[args.layer][1]]
        mask = velcro.make_masks([point_stats], [threshold])[0]
    _stage("export", f"quantising {args.layer}", t0)
    r = export.quantise_layer(model, args.layer, xc, xv[args.image_index:args.image_index + 1],
                              point_stats, mask)
    return _write_export(args, out, r, f"the fmnist CNN ({task}, {how}, ")


def network_setup(args) -> dict:
    """The algorithm side of ``velcro network`` (the RTL side is sim/network.py): the int8
    network of the fmnist CNN with the masks of ``--masks`` (any `velcro compress` output) or
    of ``--uniform T`` (profiled here), scales from the calibration images (the masks' own, or
    ``--calib-images``/``--seed``), ``--images`` test images and what the float model and
    PyTorch's int8 version predict for them. Everything is checked before it returns."""
    from . import data, network, velcro
    from .models import load_fmnist_cnn, state_digest
    t0 = time.monotonic()
    for name in ("images", "calib_images", "threads"):
        v = getattr(args, name)
        if v is not None and v < 1:
            raise CliError(f"--{name.replace('_', '-')} must be at least 1, not {v}")
    if (args.masks is None) == (args.uniform is None):
        raise CliError("give --masks FILE or --uniform T (exactly one)")
    if args.uniform is not None and not 0 <= args.uniform < 1:
        raise CliError(f"--uniform {args.uniform} is out of range 0 <= T < 1")
    model = load_fmnist_cnn(args.weights)
    if args.masks is not None:
        mblob, stats, masks, src, task = _fmnist_masks(args, "network")
        if state_digest(model) != src["weights_sha256"]:
            raise CliError(f"the weights ({args.weights or 'the default ones'}) are not those "
                           f"{args.masks} was profiled with")
        calib = _masks_calibration(args, src, "the scales come from the same calibration images",
                                   "--calib-images")
        n_calib, seed = calib["images"], calib["seed"]
        how = ("S-VELCRO" if mblob.get("structured") else "VELCRO") + " masks of " + str(args.masks)
    else:
        task = args.task or DEFAULT_TASK
        n_calib = 256 if args.calib_images is None else args.calib_images
        seed = 0 if args.seed is None else args.seed
        how = f"uniform T = {args.uniform:g}"
    _check_task("fmnist", task)
    torch.set_num_threads(args.threads)
    xc, _ = _fmnist_images("calib", task, n_calib, seed, "--calib-images")
    xv, yv = _fmnist_images("valid", task, args.images, seed, "--images")
    if args.masks is None:
        _stage("network", f"profiling {_n(len(xc), 'calibration image')} of task {task}", t0)
        stats = velcro.profile(model, data.batches(xc, None, 128),
                               skip_first=_skip_first_default("fmnist"))
        masks = velcro.make_masks(stats, [args.uniform] * len(stats))
    _stage("network", f"quantising the network ({how})", t0)
    try:
        qnet = network.quantise_network(model, xc, stats, masks)
    except velcro.VelcroError as e:
        raise CliError(one_line(e)) from None
    with torch.no_grad():
        float_dense = model(xv).argmax(dim=1).numpy()
        with velcro.compressed(model, stats, masks):
            float_velcro = model(xv).argmax(dim=1).numpy()
    _stage("network", "the uncompressed int8 network (py_ref reference, for the paired test)", t0)
    dense = network.quantise_network(model, xc)
    x0 = qnet.quantise_input(model, xv)
    int8_dense = dense.reference(dense.quantise_input(model, xv))["logits"].argmax(axis=1)
    _stage("network", "PyTorch int8 (torch.ao FX, calibrated on the same images)", t0)
    torch_int8 = network.torch_int8_top1(model, xc, xv)
    return {"task": task, "how": how, "qnet": qnet, "labels": yv.numpy().astype(np.int64),
            "ifmaps": x0, "top1_float": float_velcro, "top1_int8_dense": int8_dense,
            "top1_float_dense": float_dense, "top1_torch_int8": torch_int8,
            "calibration": {"images": n_calib, "seed": seed}, "t0": t0}


def _skip_first_default(model: str) -> bool:
    """Whether ``profile`` leaves the model's first activation point out unless told."""
    from .presets import SKIP_FIRST
    return SKIP_FIRST.get(model, True)


# ---------------------------------------------------------------------------- parsers

def _model_options(p, *, data: bool = True, model_help: str | None = None,
                   task_default: str | None = None) -> None:
    p.add_argument("--model", help=model_help or "fmnist (default), resnet18, googlenet or mobilenet_v2")
    p.add_argument("--weights", metavar="FILE",
                   help="state_dict file (default: the committed fmnist weights / the installed "
                        "MobileNetV2 ImageNet weights)")
    if data:
        p.add_argument("--data", metavar="PATH",
                       help="local ImageNet ImageFolder (class folders named by WordNet id); "
                            "ImageNet models only")
    else:
        p.add_argument("--data", help=argparse.SUPPRESS)   # refused with a message
    p.add_argument("--task", help="class group: footwear, tops, shirts, other, all (Fashion-MNIST) "
                                  "or cats-2, cats-3, cats, dogs, cars, all (ImageNet); default "
                                  + (task_default or "footwear"))
    p.add_argument("--batch-size", type=int, default=128, metavar="N", help="images per batch (default 128)")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="PyTorch CPU threads (default 1)")


def register(subparsers) -> None:
    """Add the profile, compress, evaluate and export subcommands."""
    p = one_line_errors(subparsers.add_parser(
        "profile", help="VELCRO preprocessing: per-element mean/variance of every activation point"))
    _model_options(p)
    p.add_argument("--images", type=int, default=256, metavar="N",
                   help="calibration images (default 256; per class for ImageNet); more than the "
                        "task has is an error")
    p.add_argument("--seed", type=int, help="seed of the calibration subset (Fashion-MNIST) or of the "
                                            "per-class calibration/validation split (ImageNet folder); "
                                            "default 0")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--skip-first", dest="skip_first", action="store_true", default=None,
                   help="leave the first activation point out (default: per model, as the paper)")
    g.add_argument("--no-skip-first", dest="skip_first", action="store_false",
                   help="profile the first activation point too")
    p.add_argument("--out", required=True, metavar="FILE", help="output statistics file (.pt)")
    p.set_defaults(func=_guarded(cmd_profile))

    p = one_line_errors(subparsers.add_parser(
        "compress", help="VELCRO / S-VELCRO masks from a threshold tuple"))
    p.add_argument("--stats", required=True, metavar="FILE", help="statistics: output of `velcro profile`")
    p.add_argument("--thresholds", metavar="T,T,...",
                   help="comma-separated fractions 0 <= T < 1, one per activation point")
    p.add_argument("--percent", action="store_true",
                   help="--thresholds are percent (as the paper prints them)")
    p.add_argument("--uniform", type=float, metavar="T", help="the same fraction 0 <= T < 1 for every point")
    p.add_argument("--preset", metavar="TASK:RATIO",
                   help="the paper's tuple, e.g. cats:27.3%% (ImageNet models)")
    p.add_argument("--search", action="store_true",
                   help="search a per-point tuple on tuning images disjoint from the calibration "
                        "images (py_ref/search.py; task-restricted top-1 kept at the uncompressed "
                        "model's); needs the model, like profile")
    p.add_argument("--tune-images", type=int, metavar="N",
                   help="--search: tuning images (default 400 for fmnist; per class, default 10, "
                        "for an ImageNet folder)")
    p.add_argument("--max-evals", type=int, default=30, metavar="N",
                   help="--search: greedy steps after the uniform grid (default 30)")
    p.add_argument("--weights", metavar="FILE", help="--search: the weights the statistics were profiled with")
    p.add_argument("--data", metavar="PATH", help="--search: the ImageNet folder of `velcro profile`")
    p.add_argument("--batch-size", type=int, default=128, metavar="N", help="--search: images per batch")
    p.add_argument("--threads", type=int, default=1, metavar="N", help="--search: PyTorch CPU threads")
    p.add_argument("--structured", action="store_true",
                   help="S-VELCRO: trim whole channels (default: VELCRO, single elements)")
    p.add_argument("--out", required=True, metavar="FILE", help="output masks file (.pt)")
    p.set_defaults(func=_guarded(cmd_compress))

    p = one_line_errors(subparsers.add_parser(
        "evaluate", help="top-1 of the original and compressed model on the validation images"))
    _model_options(p, model_help="fmnist, resnet18, googlenet or mobilenet_v2 (default: the "
                                 "masks' model, else fmnist)",
                   task_default="the masks' task, else footwear")
    p.add_argument("--valid-images", type=int, metavar="N",
                   help="a seeded subset of N validation images (default: all of the task's "
                        "validation images)")
    p.add_argument("--seed", type=int, help="seed of the --valid-images subset and, for an ImageNet "
                                            "folder, of its calibration/validation split (default: "
                                            "the masks' record, else 0)")
    p.add_argument("--images", type=int, metavar="N",
                   help="ImageNet folder: calibration images per class to leave out of validation "
                        "(default: the masks' record, else 256)")
    p.add_argument("--masks", metavar="FILE",
                   help="output of `velcro compress` (omit: the original model only); it sets the "
                        "default --model and --task")
    p.add_argument("--stats", metavar="FILE",
                   help="the statistics file the masks were made from (optional: the masks carry "
                        "their means; checked against the masks' record)")
    p.set_defaults(func=_guarded(cmd_evaluate))

    p = one_line_errors(subparsers.add_parser(
        "export", help="quantise one compressed conv layer into FRAME.npz for `velcro sim`",
        description="Quantise one 3x3, stride-1, pad-1 conv + ReLU layer with its VELCRO mask "
                    "and means into FRAME.npz: any of the fmnist CNN's five, or (with --masks, "
                    "--weights and --data) a 3x3 stride-1 conv of ResNet-18 or GoogLeNet whose "
                    "output goes through its BatchNorm (folded) into a ReLU and whose shape fits "
                    "the accelerator (C_in <= 64). Other layers are refused with the reason; "
                    "--list-layers shows every conv's verdict."))
    _model_options(p, model_help="fmnist, resnet18 or googlenet (default: the --masks model, "
                                 "else fmnist); any 3x3 stride-1 pad-1 conv + ReLU layer is exportable")
    p.add_argument("--images", type=int, default=None, metavar="N",
                   help="calibration images for the profile and the scales (default 256, or the "
                        "masks' record)")
    p.add_argument("--seed", type=int, help="seed of the calibration subset (default 0, or the "
                                            "masks' record)")
    p.add_argument("--layer", default=None,
                   help="fmnist: conv1 (1->16 at 64x64), conv2 (default), conv3 (16->16 at 64x64), "
                        "conv4 (16->32 at 32x32) or conv5 (32->32 at 16x16); ImageNet models: the "
                        "conv's module path, e.g. layer1.0.conv1 (ResNet-18) or conv3.conv, "
                        "inception3a.branch3.1.conv (GoogLeNet)")
    p.add_argument("--list-layers", action="store_true",
                   help="print every conv of --model (exportable, with its output point, or "
                        "refused, with the reason) and exit")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="fmnist: VELCRO threshold 0 <= T < 1 of the layer's output point, "
                        "profiled anew (default 0.3)")
    p.add_argument("--masks", metavar="FILE",
                   help="output of `velcro compress` (uniform, preset or searched): the layer's "
                        "mask and means from it, the scales from its calibration images (for an "
                        "ImageNet model the masks' split of --data); required for ImageNet models")
    p.add_argument("--image-index", type=int, default=0, metavar="I",
                   help="validation image whose layer input becomes the ifmap (default 0; for "
                        "ImageNet the validation images the masks' split leaves)")
    p.add_argument("--out", default="FRAME.npz", metavar="FILE",
                   help="output frame (default FRAME.npz; .npz is appended if missing)")
    p.set_defaults(func=_guarded(cmd_export))
