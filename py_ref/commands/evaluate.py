"""`velcro evaluate`: top-1 of the original and the compressed model, with the paired tests."""

from __future__ import annotations

import time

import torch

from ..errors import CliError, one_line_errors
from .common import (DEFAULT_MODEL, DEFAULT_TASK, check_counts, check_data_options, check_model_name,
                     check_task, command, model_options, open_model)
from .files import load_masks, load_stats
from .progress import plural, progress, stage
from .splits import evaluate_split, task_class_indices, validation_batches


def cmd_evaluate(args) -> int:
    from .. import velcro
    from ..models import state_digest
    t0 = time.monotonic()
    check_counts(args)
    stats = masks = None
    if args.masks is None:
        if args.stats is not None:
            raise CliError("--stats needs --masks (statistics only serve the compressed model)")
        model_name, task = args.model or DEFAULT_MODEL, args.task or DEFAULT_TASK
    else:
        mblob, stats, masks = load_masks(args.masks)
        src = mblob["source"]
        model_name, task = args.model or src["model"], args.task or src["task"]
        if model_name != src["model"] or task != src["task"]:
            raise CliError(f"{args.masks} was made for model {src['model']}, task {src['task']}; "
                           f"not for --model {model_name} --task {task}")
        if args.stats is not None:
            sblob, sstats, digest = load_stats(args.stats)
            if (sblob["model"], sblob["task"]) != (src["model"], src["task"]):
                raise CliError(f"{args.stats} holds statistics of model {sblob['model']}, task "
                               f"{sblob['task']}; {args.masks} was made from model {src['model']}, "
                               f"task {src['task']}")
            if digest != src["stats_sha256"]:
                raise CliError(f"{args.stats} is not the statistics file {args.masks} was made from "
                               "(its content differs)")
            stats = sstats
    check_model_name(model_name)
    check_task(model_name, task)
    check_data_options(args, model_name)
    split = None
    if model_name == "fmnist":
        if args.seed is not None and args.valid_images is None:
            raise CliError("--seed only picks the --valid-images subset; without it every validation "
                           "image is used")
        if args.images is not None:
            raise CliError("--images applies to ImageNet folders (Fashion-MNIST validation images are "
                           "the test set, never calibration images)")
    else:
        split = evaluate_split(args, src if masks is not None else None)
    torch.set_num_threads(args.threads)
    model = open_model(args, model_name)
    if masks is not None and state_digest(model) != src["weights_sha256"]:
        raise CliError(f"the weights ({args.weights or 'the default ones'}) are not those "
                       f"{args.masks} was profiled with")
    batches, n = validation_batches(args, model_name, task, split)
    stage("evaluate", f"{model_name}, task {task}: {plural(n, 'validation image')} in "
                      f"{plural(len(batches), 'batch')}", t0)
    classes = task_class_indices(model_name, task)
    r = velcro.evaluate(model, progress(batches, "evaluate", t0), stats, masks,
                        task_classes=classes, per_image=True)
    if masks is not None:
        x0 = next(iter(batches))[0]
        r["compression"] = velcro.compression_ratio(stats, masks, network_macs=velcro.conv_macs(model, x0))
    for line in evaluation_lines(task, r, classes):
        print(line)
    return 0


def evaluation_lines(task: str, r: dict, classes) -> list[str]:
    """What `velcro evaluate` prints: the all-class line, a table with the task-restricted
    baseline row, and the paired tests of the compressed model against it."""
    from ..significance import compare
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


def add_parser(subparsers) -> None:
    """Add `velcro evaluate` to ``subparsers``."""
    p = one_line_errors(subparsers.add_parser(
        "evaluate", help="top-1 of the original and compressed model on the validation images"))
    model_options(p, model_help="fmnist, resnet18, googlenet or mobilenet_v2 (default: the "
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
    p.set_defaults(func=command(cmd_evaluate))
