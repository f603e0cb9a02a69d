"""`velcro compress`: VELCRO or S-VELCRO masks from a threshold tuple (given, uniform, the
paper's, or searched on tuning images)."""

from __future__ import annotations

import math

import torch

from ..errors import CliError, InputError, one_line, one_line_errors
from ..outputs import check_output
from .common import check_counts, check_data_options, command, open_model
from .files import MASKS_FORMAT, is_int, load_stats, write_output
from .progress import note, plural
from .splits import imagenet_split, loader, task_class_indices


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
    from .. import data, search
    from ..models import state_digest
    model_name, task = blob["model"], blob["task"]
    calib = blob.get("calibration")
    if not (isinstance(calib, dict) and is_int(calib.get("seed")) and is_int(calib.get("images"))):
        raise CliError(f"{args.stats} has no calibration record (made by an older version: run "
                       "`velcro profile` again); --search needs it to keep the tuning images apart")
    check_data_options(args, model_name)
    torch.set_num_threads(args.threads)
    model = open_model(args, model_name)
    if state_digest(model) != blob["weights_sha256"]:
        raise CliError(f"the weights ({args.weights or 'the default ones'}) are not those "
                       f"{args.stats} was profiled with")
    if model_name == "fmnist":
        n = args.tune_images or 400
        try:
            x, y = data.tuning(task, n, calib["seed"], after=calib["images"])
        except InputError as e:
            raise CliError(f"--tune-images {n}: {one_line(e)}") from None
        batches = data.batches(x, y, args.batch_size)
        note(args, f"tuning: {plural(len(x), 'image')} of task {task} from the unused train images, disjoint "
                   f"from the {calib['images']} calibration images (seed {calib['seed']})")
    else:
        n = args.tune_images or 10
        sp = imagenet_split(args, task, {"seed": calib["seed"], "images": calib["images"], "tune": n})
        batches = loader(args, sp.tune)
    classes = task_class_indices(model_name, task)
    score = search.tuning_score(model, batches, stats, task_classes=classes, structured=args.structured)
    r = search.search_thresholds(stats, score, max_evals=args.max_evals)
    metric = "task top-1" if classes is not None else "top-1"
    print(f"search on {plural(n, 'tuning image')}{' per class' if model_name != 'fmnist' else ''} "
          f"({metric}, {r.evals} evaluations): uncompressed {100 * r.base:.2f}%, best uniform "
          f"T = {r.uniform:.2f} {100 * r.uniform_score:.2f}%, searched "
          f"({', '.join(f'{v:.2f}' for v in r.thresholds)}) {100 * r.score:.2f}%")
    rec = r.as_dict()
    del rec["history"]
    rec.update(images=n, per_class=model_name != "fmnist", metric=metric)
    return list(r.thresholds), rec


def cmd_compress(args) -> int:
    from .. import presets, svelcro, velcro
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
    check_counts(args)
    out = check_output(args.out, inputs=[args.stats, args.weights])
    blob, stats, digest = load_stats(args.stats)
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
    write_output(out, lambda p: torch.save(record, p))
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


def add_parser(subparsers) -> None:
    """Add `velcro compress` to ``subparsers``."""
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
    p.set_defaults(func=command(cmd_compress))
