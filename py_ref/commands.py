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
    velcro evaluate --masks masks.pt                                (model and task from the masks)
    velcro export   --layer conv2 --task footwear --threshold 0.3 --out FRAME.npz

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

__all__ = ["register", "STATS_FORMAT", "MASKS_FORMAT"]

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
        except OSError as e:
            what = e.strerror or one_line(e) or type(e).__name__
            raise CliError(f"{e.filename}: {what}" if e.filename else what) from None

    def run(args) -> int:
        return main_guard(body, args)
    run.__name__ = func.__name__
    return run


# ---------------------------------------------------------------------------- progress

def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "es" if noun.endswith("ch") else "s")


def _stage(cmd: str, msg: str, t0: float) -> None:
    print(f"{cmd}: {msg}, {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)


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
    """--data belongs to the ImageNet models, --seed to Fashion-MNIST's sampling."""
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
    if args.seed is not None:
        raise CliError("--seed only applies to the fmnist model (ImageNet images are taken in "
                       "folder order)")


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
    from .presets import SKIP_FIRST
    return SKIP_FIRST.get(model, True)


def _imagenet_loader(args, task: str, per_class: int | None):
    from . import data
    from .presets import IMAGENET_TASKS
    ds = data.imagenet_folder(args.data, None if task == "all" else IMAGENET_TASKS[task],
                              limit_per_class=per_class)
    if len(ds) == 0:
        raise CliError(f"no images of task '{task}' under {args.data}")
    return torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=False), len(ds)


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
    """(batches, number of images) of the calibration images."""
    from . import data
    if model == "fmnist":
        x, y = _fmnist_images("calib", task, args.images, args.seed, "--images")
        return data.batches(x, y, args.batch_size), len(x)
    return _imagenet_loader(args, task, args.images)


def _validation_batches(args, model: str, task: str):
    """(batches, number of images) of the labelled validation images."""
    from . import data
    if model == "fmnist":
        x, y = _fmnist_images("valid", task, args.valid_images, args.seed, "--valid-images")
        return data.batches(x, y, args.batch_size), len(x)
    return _imagenet_loader(args, task, None)


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
    batches, n = _calibration_batches(args, model_name, task)
    skip = _skip_first(args, model_name)
    _stage("profile", f"{model_name}, task {task}: {_n(n, 'calibration image')} in "
                      f"{_n(len(batches), 'batch')}", t0)
    stats = velcro.profile(model, _progress(batches, "profile", t0), skip_first=skip, count_zeros=True)
    blob = {"format": STATS_FORMAT, "model": model_name, "task": task, "skip_first": skip,
            "weights_sha256": state_digest(model),
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


def cmd_compress(args) -> int:
    from . import presets, svelcro, velcro
    chosen = [a for a in (args.thresholds, args.uniform, args.preset) if a is not None]
    if len(chosen) != 1:
        raise CliError("give exactly one of --thresholds, --uniform, --preset")
    if args.percent and args.thresholds is None:
        raise CliError("--percent applies to --thresholds only (--uniform is a fraction, "
                       "--preset is the paper's tuple)")
    out = check_output(args.out, inputs=[args.stats])
    blob, stats, digest = _load_stats(args.stats)
    if args.thresholds is not None:
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
                         "images": stats[0].count},
              "thresholds": [float(v) for v in t], "structured": bool(args.structured),
              "masks": masks,
              "points": [{"name": s.name, "index": s.index, "count": s.count, "macs": s.macs,
                          "mean": s.mean.to(torch.float32)} for s in stats]}
    _write(out, lambda p: torch.save(record, p))
    kind = "S-VELCRO (whole channels)" if args.structured else "VELCRO"
    print(f"{kind}: C = {100 * c.elements:.2f}% of activation elements "
          f"({c.compressed}/{c.total}), MAC-weighted C = {100 * c.macs:.2f}% -> {out}")
    if stats[0].zeros is not None:
        print(f"compressed elements that are zero on the calibration images: "
              f"{100 * velcro.zero_share(stats, masks):.2f}%")
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
    if model_name != "fmnist" and args.valid_images is not None:
        raise CliError("--valid-images only applies to the fmnist model (point --data at the "
                       "validation images for ImageNet)")
    if model_name == "fmnist" and args.seed is not None and args.valid_images is None:
        raise CliError("--seed only picks the --valid-images subset; without it every validation "
                       "image is used")
    torch.set_num_threads(args.threads)
    model = _model(args, model_name)
    if masks is not None and state_digest(model) != src["weights_sha256"]:
        raise CliError(f"the weights ({args.weights or 'the default ones'}) are not those "
                       f"{args.masks} was profiled with")
    batches, n = _validation_batches(args, model_name, task)
    _stage("evaluate", f"{model_name}, task {task}: {_n(n, 'validation image')} in "
                       f"{_n(len(batches), 'batch')}", t0)
    r = velcro.evaluate(model, _progress(batches, "evaluate", t0), stats, masks)
    line = f"task {task}: {r['images']} validation images, top-1 original {100 * r['top1']:.2f}%"
    if masks is not None:
        c = r["compression"]
        line += (f", compressed {100 * r['top1_compressed']:.2f}% at C = {100 * c.elements:.2f}% "
                 f"(MAC-weighted {100 * c.macs:.2f}%)")
    print(line)
    return 0


def cmd_export(args) -> int:
    from . import data, export, velcro
    from .models import load_fmnist_cnn
    t0 = time.monotonic()
    _check_counts(args)
    if args.data is not None:
        raise CliError("export takes the built-in Fashion-MNIST images (--data is for the "
                       "ImageNet models of profile and evaluate)")
    if args.model not in (None, "fmnist"):
        raise CliError("export supports the fmnist model (its 16->16 64x64 layers fit the accelerator)")
    task = args.task or DEFAULT_TASK
    _check_task("fmnist", task)
    if args.layer not in export.LAYERS:
        raise CliError(f"unknown layer '{args.layer}' (exportable: {', '.join(export.LAYERS)})")
    if not 0 <= args.threshold < 1:
        raise CliError(f"--threshold {args.threshold} is out of range 0 <= T < 1")
    out = check_output(args.out, inputs=[_weights_file(args, "fmnist")], suffix=".npz")
    torch.set_num_threads(args.threads)
    xv, _ = _fmnist_images("valid", task, None, args.seed, "")
    if not 0 <= args.image_index < len(xv):
        raise CliError(f"--image-index {args.image_index} out of range 0..{len(xv) - 1} "
                       f"(task {task} has {len(xv)} validation images)")
    model = load_fmnist_cnn(args.weights)
    xc, _ = _fmnist_images("calib", task, args.images, args.seed, "--images")
    batches = data.batches(xc, None, args.batch_size)
    _stage("export", f"profiling {_n(len(xc), 'calibration image')} of task {task} in "
                     f"{_n(len(batches), 'batch')}", t0)
    stats = velcro.profile(model, _progress(batches, "export", t0))
    point = export.LAYERS[args.layer][1]
    mask = velcro.make_masks([stats[point]], [args.threshold])[0]
    _stage("export", f"quantising {args.layer}", t0)
    r = export.quantise_layer(model, args.layer, xc, xv[args.image_index:args.image_index + 1],
                              stats[point], mask)
    chk = export.check_export(r)
    if not chk["ok"]:
        bad = {k: v for k, v in chk.items() if k != "ok"}
        raise CliError(f"quantised layer outside tolerance: {bad}")
    from .golden import FRAME_ARRAYS
    _write(out, lambda p: np.savez(p, **{k: getattr(r.frame, k) for k in FRAME_ARRAYS}))
    print(f"exported {args.layer} of the fmnist CNN ({task}, T = {args.threshold}, "
          f"{100 * chk['compressed_fraction']:.1f}% compressed) -> {out}")
    print(f"golden vs float layer: max {chk['max_err_vs_float_layer']:.3f} ofm steps "
          f"(tolerance {chk['tolerance_layer']}), {100 * chk['share_within_1_step']:.2f}% within 1 step; "
          f"vs quantised float {chk['max_err_vs_quantised_float']:.3f}; means {chk['max_err_means']:.3f}")
    return 0


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
    p.add_argument("--seed", type=int, help="seed of the Fashion-MNIST calibration subset (default 0)")
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
                   help="a seeded subset of N validation images (fmnist; default: all of the task)")
    p.add_argument("--seed", type=int, help="seed of the --valid-images subset (default 0)")
    p.add_argument("--masks", metavar="FILE",
                   help="output of `velcro compress` (omit: the original model only); it sets the "
                        "default --model and --task")
    p.add_argument("--stats", metavar="FILE",
                   help="the statistics file the masks were made from (optional: the masks carry "
                        "their means; checked against the masks' record)")
    p.set_defaults(func=_guarded(cmd_evaluate))

    p = one_line_errors(subparsers.add_parser(
        "export", help="quantise one compressed conv layer into FRAME.npz for `velcro sim`"))
    _model_options(p, data=False, model_help="fmnist (the only exportable model)")
    p.add_argument("--images", type=int, default=256, metavar="N",
                   help="calibration images for the profile and the scales (default 256)")
    p.add_argument("--seed", type=int, help="seed of the calibration subset (default 0)")
    p.add_argument("--layer", default="conv2", help="conv2 (default) or conv3: 16->16 3x3 at 64x64")
    p.add_argument("--threshold", type=float, default=0.3, metavar="T",
                   help="VELCRO threshold 0 <= T < 1 of the layer's output point (default 0.3)")
    p.add_argument("--image-index", type=int, default=0, metavar="I",
                   help="validation image whose layer input becomes the ifmap (default 0)")
    p.add_argument("--out", default="FRAME.npz", metavar="FILE",
                   help="output frame (default FRAME.npz; .npz is appended if missing)")
    p.set_defaults(func=_guarded(cmd_export))
