"""`velcro profile`: the per-element mean and variance of every activation point."""

from __future__ import annotations

import time

import torch

from ..errors import one_line_errors
from ..outputs import check_output
from .common import (DEFAULT_MODEL, DEFAULT_TASK, check_counts, check_data_options, check_model_name,
                     check_task, command, model_options, open_model, skip_first_default,
                     weights_file)
from .files import STATS_FORMAT, write_output
from .progress import plural, progress, stage
from .splits import calibration_batches


def _skip_first(args, model: str) -> bool:
    if args.skip_first is not None:
        return args.skip_first
    return skip_first_default(model)


def cmd_profile(args) -> int:
    from .. import velcro
    from ..models import state_digest
    t0 = time.monotonic()
    check_counts(args)
    model_name, task = args.model or DEFAULT_MODEL, args.task or DEFAULT_TASK
    check_model_name(model_name)
    check_task(model_name, task)
    check_data_options(args, model_name)
    out = check_output(args.out, inputs=[weights_file(args, model_name)])
    torch.set_num_threads(args.threads)
    model = open_model(args, model_name)
    batches, n, split = calibration_batches(args, model_name, task)
    skip = _skip_first(args, model_name)
    stage("profile", f"{model_name}, task {task}: {plural(n, 'calibration image')} in "
                     f"{plural(len(batches), 'batch')}", t0)
    stats = velcro.profile(model, progress(batches, "profile", t0), skip_first=skip, count_zeros=True)
    blob = {"format": STATS_FORMAT, "model": model_name, "task": task, "skip_first": skip,
            "weights_sha256": state_digest(model), "calibration": split,
            "points": [{"name": s.name, "index": s.index, "mean": s.mean, "m2": s.m2,
                        "count": s.count, "macs": s.macs, "zeros": s.zeros} for s in stats]}
    write_output(out, lambda p: torch.save(blob, p))
    print(f"profiled {stats[0].count} images, {len(stats)} activation points "
          f"({'first skipped' if skip else 'all'}) -> {out}")
    for s in stats:
        print(f"  {s.index:3d} {s.name:32s} {str(list(s.shape)):18s} mean var {float(s.var.mean()):.4g}")
    return 0


def add_parser(subparsers) -> None:
    """Add `velcro profile` to ``subparsers``."""
    p = one_line_errors(subparsers.add_parser(
        "profile", help="VELCRO preprocessing: per-element mean/variance of every activation point"))
    model_options(p)
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
    p.set_defaults(func=command(cmd_profile))
