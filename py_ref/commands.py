"""`velcro profile | compress | evaluate | export`: the algorithm side of the CLI.

velcro_cli.py calls :func:`register` with its subparsers.  Every command returns an exit
status; bad input prints one line ``velcro: error: ...`` to stderr and returns 2, and no
output file is written unless the command succeeds (files are written to a temporary name
and renamed).

    velcro profile  --model fmnist --task footwear --images 256 --out stats.pt
    velcro compress --stats stats.pt --uniform 0.3 [--structured] --out masks.pt
    velcro compress --stats stats.pt --preset cats:27.3%            (paper tuple, ImageNet models)
    velcro evaluate --model fmnist --task footwear --masks masks.pt
    velcro export   --layer conv2 --task footwear --threshold 0.3 --out FRAME.npz
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

__all__ = ["register", "CliError"]


class CliError(Exception):
    """Bad command-line input: reported as one line, exit status 2."""


def _fail(msg: str) -> int:
    print(f"velcro: error: {msg}", file=sys.stderr)
    return 2


def _guarded(func):
    """Turn expected failures into a one-line error and exit status 2 (never a traceback)."""
    def run(args) -> int:
        from .golden import FrameError
        from .velcro import VelcroError
        try:
            return func(args)
        except (CliError, VelcroError, FrameError, FileNotFoundError, IsADirectoryError,
                NotADirectoryError, PermissionError) as e:
            return _fail(str(e) if not isinstance(e, OSError) else f"{e.strerror}: {e.filename}")
        except (RuntimeError, ValueError, KeyError, EOFError) as e:   # e.g. a corrupt .pt file
            return _fail(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    run.__name__ = func.__name__
    return run


def _atomic_write(path: str, write) -> None:
    """Write via a temporary file in the same directory, then rename (no partial outputs)."""
    path = Path(path)
    if not path.parent.is_dir():
        raise CliError(f"output directory {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------------------- data / model

def _model(args):
    from .models import MODELS, load_model
    if args.model not in MODELS:
        raise CliError(f"unknown model '{args.model}' (known: {', '.join(MODELS)})")
    return load_model(args.model, args.weights, pretrained=True)


def _labelled_batches(args, split: str):
    """(x, y) batches of the task: Fashion-MNIST calibration/validation, or a local ImageFolder."""
    from . import data
    if args.model == "fmnist":
        if args.data not in (None, "fmnist"):
            raise CliError("the fmnist model takes the built-in Fashion-MNIST data (omit --data)")
        (xc, yc), (xv, yv) = data.calibration_validation(args.task, n_calib=args.images,
                                                         n_valid=getattr(args, "valid_images", None),
                                                         seed=args.seed)
        x, y = (xc, yc) if split == "calib" else (xv, yv)
        return data.batches(x, y, args.batch_size)
    from .presets import IMAGENET_TASKS
    if not args.data:
        raise CliError(f"model '{args.model}' needs --data PATH (a local ImageNet ImageFolder); "
                       "no ImageNet images ship with this repo")
    if not Path(args.data).is_dir():
        raise CliError(f"data path {args.data} does not exist")
    if args.task not in IMAGENET_TASKS and args.task != "all":
        raise CliError(f"unknown ImageNet task '{args.task}' (known: {', '.join(IMAGENET_TASKS)}, all)")
    ds = data.imagenet_folder(args.data, None if args.task == "all" else IMAGENET_TASKS[args.task],
                              limit_per_class=args.images if split == "calib" else None)
    return torch.utils.data.DataLoader(ds, batch_size=args.batch_size, shuffle=False)


def _skip_first(args) -> bool:
    if args.skip_first is not None:
        return args.skip_first
    from .presets import SKIP_FIRST
    return SKIP_FIRST.get(args.model, True)


def _common(p, images_default=256):
    p.add_argument("--model", default="fmnist", help="fmnist (default), resnet18, googlenet, mobilenet_v2")
    p.add_argument("--weights", help="state_dict file (default: the committed/installed weights)")
    p.add_argument("--data", help="ImageNet ImageFolder path for the ImageNet models")
    p.add_argument("--task", default="footwear",
                   help="class group: footwear, tops, shirts, other, all (Fashion-MNIST) or "
                        "cats-2, cats-3, cats, dogs, cars, all (ImageNet)")
    p.add_argument("--images", type=int, default=images_default,
                   help="calibration images (per class for ImageNet)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)


def _load_stats(path):
    from .velcro import PointStats
    if not Path(path).is_file():
        raise CliError(f"stats file {path} not found")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or "points" not in blob:
        raise CliError(f"{path} is not a `velcro profile` output")
    return blob, [PointStats(**p) for p in blob["points"]]


# ---------------------------------------------------------------------------- commands

def cmd_profile(args) -> int:
    from . import velcro
    if args.images <= 0:
        raise CliError("--images must be positive")
    torch.set_num_threads(args.threads)
    model = _model(args)
    batches = _labelled_batches(args, "calib")
    stats = velcro.profile(model, batches, skip_first=_skip_first(args), progress=True, count_zeros=True)
    blob = {"model": args.model, "task": args.task, "skip_first": _skip_first(args),
            "points": [{"name": s.name, "index": s.index, "mean": s.mean, "m2": s.m2,
                        "count": s.count, "macs": s.macs, "zeros": s.zeros} for s in stats]}
    _atomic_write(args.out, lambda p: torch.save(blob, p))
    print(f"profiled {stats[0].count} images, {len(stats)} activation points "
          f"({'first skipped' if blob['skip_first'] else 'all'}) -> {args.out}")
    for s in stats:
        print(f"  {s.index:3d} {s.name:32s} {str(list(s.shape)):18s} mean var {float(s.var.mean()):.4g}")
    return 0


def _parse_thresholds(text: str) -> list[float]:
    vals = []
    for tok in text.replace(" ", "").split(","):
        try:
            vals.append(float(tok))
        except ValueError:
            raise CliError(f"threshold '{tok}' is not a number") from None
    if any(math.isnan(v) for v in vals):
        raise CliError("thresholds must not be NaN")
    return vals


def cmd_compress(args) -> int:
    from . import presets, svelcro, velcro
    blob, stats = _load_stats(args.stats)
    chosen = [a for a in (args.thresholds, args.uniform, args.preset) if a is not None]
    if len(chosen) != 1:
        raise CliError("give exactly one of --thresholds, --uniform, --preset")
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
    out = {"stats": str(args.stats), "thresholds": t, "structured": args.structured, "masks": masks}
    _atomic_write(args.out, lambda p: torch.save(out, p))
    kind = "S-VELCRO (whole channels)" if args.structured else "VELCRO"
    print(f"{kind}: C = {100 * c.elements:.2f}% of activation elements "
          f"({c.compressed}/{c.total}), MAC-weighted C = {100 * c.macs:.2f}% -> {args.out}")
    if stats[0].zeros is not None:
        print(f"compressed elements that are zero on the calibration images: "
              f"{100 * velcro.zero_share(stats, masks):.2f}%")
    return 0


def cmd_evaluate(args) -> int:
    from . import velcro
    torch.set_num_threads(args.threads)
    stats = masks = None
    if args.masks:
        if not Path(args.masks).is_file():
            raise CliError(f"masks file {args.masks} not found")
        mblob = torch.load(args.masks, map_location="cpu", weights_only=True)
        _, stats = _load_stats(args.stats or mblob["stats"])
        masks = mblob["masks"]
    model = _model(args)
    r = velcro.evaluate(model, _labelled_batches(args, "valid"), stats, masks, progress=True)
    print(f"task {args.task}: {r['images']} validation images, top-1 original {100 * r['top1']:.2f}%",
          end="")
    if masks is not None:
        c = r["compression"]
        print(f", compressed {100 * r['top1_compressed']:.2f}% at C = {100 * c.elements:.2f}% "
              f"(MAC-weighted {100 * c.macs:.2f}%)")
    else:
        print()
    return 0


def cmd_export(args) -> int:
    from . import data, export, velcro
    from .models import load_fmnist_cnn
    torch.set_num_threads(args.threads)
    if args.model != "fmnist":
        raise CliError("export supports the fmnist model (its 16->16 64x64 layers fit the accelerator)")
    if args.layer not in export.LAYERS:
        raise CliError(f"unknown layer '{args.layer}' (exportable: {', '.join(export.LAYERS)})")
    if not 0 <= args.threshold < 1:
        raise CliError(f"--threshold {args.threshold} is out of range 0 <= T < 1")
    model = load_fmnist_cnn(args.weights)
    (xc, _), (xv, yv) = data.calibration_validation(args.task, n_calib=args.images, seed=args.seed)
    if not 0 <= args.image_index < len(xv):
        raise CliError(f"--image-index {args.image_index} out of range 0..{len(xv) - 1}")
    stats = velcro.profile(model, data.batches(xc, None, args.batch_size))
    point = export.LAYERS[args.layer][1]
    mask = velcro.make_masks([stats[point]], [args.threshold])[0]
    r = export.quantise_layer(model, args.layer, xc, xv[args.image_index:args.image_index + 1],
                              stats[point], mask)
    chk = export.check_export(r)
    if not chk["ok"]:
        raise CliError(f"quantised layer outside tolerance: {chk}")
    out = args.out if args.out.endswith(".npz") else args.out + ".npz"
    _atomic_write(out, lambda p: np.savez(p, **{k: getattr(r.frame, k) for k in
                                                ("ifmap", "weight", "bias", "mask", "means", "mult", "shift")}))
    print(f"exported {args.layer} of the fmnist CNN ({args.task}, T = {args.threshold}, "
          f"{100 * chk['compressed_fraction']:.1f}% compressed) -> {out}")
    print(f"golden vs float layer: max {chk['max_err_vs_float_layer']:.3f} ofm steps "
          f"(tolerance {chk['tolerance_layer']}), {100 * chk['share_within_1_step']:.2f}% within 1 step; "
          f"vs quantised float {chk['max_err_vs_quantised_float']:.3f}; means {chk['max_err_means']:.3f}")
    return 0


def register(subparsers) -> None:
    """Add the profile, compress, evaluate and export subcommands."""
    p = subparsers.add_parser("profile", help="VELCRO preprocessing: per-element mean/variance of every activation point")
    _common(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--skip-first", dest="skip_first", action="store_true", default=None,
                   help="leave the first activation point out (default: per model, as the paper)")
    g.add_argument("--no-skip-first", dest="skip_first", action="store_false")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True, help="output statistics file (.pt)")
    p.set_defaults(func=_guarded(cmd_profile))

    p = subparsers.add_parser("compress", help="VELCRO / S-VELCRO masks from a threshold tuple")
    p.add_argument("--stats", required=True, help="output of `velcro profile`")
    p.add_argument("--thresholds", help="comma-separated fractions, one per activation point")
    p.add_argument("--percent", action="store_true", help="--thresholds are percent (as the paper prints them)")
    p.add_argument("--uniform", type=float, help="the same fraction for every point")
    p.add_argument("--preset", help="paper tuple TASK:RATIO, e.g. cats:27.3%% (ImageNet models)")
    p.add_argument("--structured", action="store_true", help="S-VELCRO: trim whole channels")
    p.add_argument("--out", required=True, help="output masks file (.pt)")
    p.set_defaults(func=_guarded(cmd_compress))

    p = subparsers.add_parser("evaluate", help="top-1 of the original and compressed model")
    _common(p)
    p.add_argument("--valid-images", type=int, default=None, help="limit validation images")
    p.add_argument("--masks", help="output of `velcro compress` (omit: original only)")
    p.add_argument("--stats", help="statistics file (default: the one the masks came from)")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=_guarded(cmd_evaluate))

    p = subparsers.add_parser("export", help="quantise one compressed conv layer into FRAME.npz for `velcro sim`")
    _common(p)
    p.add_argument("--layer", default="conv2", help="conv2 (default) or conv3: 16->16 3x3 at 64x64")
    p.add_argument("--threshold", type=float, default=0.3, help="VELCRO threshold of the layer's output point")
    p.add_argument("--image-index", type=int, default=0, help="validation image whose layer input is the ifmap")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="FRAME.npz")
    p.set_defaults(func=_guarded(cmd_export))
