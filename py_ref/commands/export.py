"""`velcro export`: one compressed conv + ReLU layer, quantised into FRAME.npz for `velcro sim`."""

from __future__ import annotations

import time

import numpy as np
import torch

from ..errors import CliError, one_line, one_line_errors
from ..outputs import check_output
from .common import (DEFAULT_MODEL, DEFAULT_TASK, check_counts, check_data_options, check_model_name,
                     check_task, command, model_options, open_model, weights_file)
from .files import fmnist_masks, load_masks, write_output
from .progress import plural, progress, stage
from .splits import evaluate_split, fmnist_images, imagenet_split, loader, masks_calibration


#: The image size ImageNet models are profiled and exported at (py_ref.data's transform).
IMAGENET_SIZE = 224


def cmd_export(args) -> int:
    """One conv layer into FRAME.npz: the fmnist CNN (masks from --masks or profiled anew with
    --threshold), or ResNet-18 / GoogLeNet (any model of py_ref.models) with --masks, --weights
    and --data; ``--list-layers`` prints every conv of the model and its verdict."""
    check_counts(args)
    model_name = args.model
    if args.masks is not None and not args.list_layers:
        made_for = load_masks(args.masks)[0]["source"]["model"]
        if model_name is not None and model_name != made_for:
            raise CliError(f"{args.masks} holds masks of model {made_for}, not --model {model_name}")
        model_name = made_for
    model_name = model_name or DEFAULT_MODEL
    check_model_name(model_name)
    if args.list_layers:
        return _list_layers(args, model_name)
    if model_name != "fmnist":
        return _export_imagenet(args, model_name)
    return _export_fmnist(args)


def _list_layers(args, model_name: str) -> int:
    """``export --list-layers``: every Conv2d of the model, exportable (with its output point)
    or refused (with the reason), at the size the model is exported at."""
    from .. import export
    from ..models import load_model
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
    from .. import export
    from ..models import state_digest
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
    check_data_options(args, model_name)
    mblob, stats, masks = load_masks(args.masks)
    src = mblob["source"]
    task = args.task or src["task"]
    if task != src["task"]:
        raise CliError(f"{args.masks} was made for task {src['task']}, not --task {task}")
    check_task(model_name, task)
    split = evaluate_split(args, src)
    out = check_output(args.out, inputs=[args.weights, args.masks], suffix=".npz")
    torch.set_num_threads(args.threads)
    model = open_model(args, model_name)
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
    sp = imagenet_split(args, task, split)
    if not 0 <= args.image_index < len(sp.valid):
        raise CliError(f"--image-index {args.image_index} out of range 0..{len(sp.valid) - 1} "
                       f"(the split leaves {plural(len(sp.valid), 'validation image')})")
    image = sp.valid[args.image_index][0][None]
    batches = loader(args, sp.calib)
    stage("export", f"quantising {args.layer} of {model_name} (scales from "
                    f"{plural(len(sp.calib), 'calibration image')} in {plural(len(batches), 'batch')})", t0)
    r = export.quantise_layer(model, args.layer, progress(batches, "export", t0), image,
                              stats[i], masks[i])
    return _write_export(args, out, r, f"{model_name} ({task}, {how}, ", "; BatchNorm folded"
                         if spec.folded else "")


def _write_export(args, out, r, what: str, extra: str = "") -> int:
    """Check the exported layer against the float one, write the frame, print the result."""
    from .. import export
    from ..golden import FRAME_ARRAYS
    chk = export.check_export(r)
    if not chk["ok"]:
        bad = {k: v for k, v in chk.items() if k != "ok"}
        raise CliError(f"quantised layer outside tolerance: {bad}")
    write_output(out, lambda p: np.savez(p, **{k: getattr(r.frame, k) for k in FRAME_ARRAYS}))
    n, c_in, h, w = r.frame.weight.shape[0], *r.frame.ifmap.shape
    print(f"exported {args.layer} of {what}"
          f"{100 * chk['compressed_fraction']:.1f}% compressed; C_in={c_in} N={n} {h}x{w}{extra}) -> {out}")
    print(f"golden vs float layer: max {chk['max_err_vs_float_layer']:.3f} ofm steps "
          f"(every element within its derived bound, at most {chk['max_bound']:.1f}), "
          f"{100 * chk['share_within_1_step']:.2f}% within 1 step; "
          f"vs quantised float {chk['max_err_vs_quantised_float']:.3f}; means {chk['max_err_means']:.3f}")
    return 0


def _export_fmnist(args) -> int:
    from .. import data, export, velcro
    from ..models import load_fmnist_cnn, state_digest
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
    inputs = [weights_file(args, "fmnist")] + ([args.masks] if args.masks else [])
    out = check_output(args.out, inputs=inputs, suffix=".npz")
    if args.masks is not None:
        task, n_calib, seed, point_stats, mask, how, digest = _export_masks(args)
    else:
        task, n_calib, seed = args.task or DEFAULT_TASK, args.images or 256, args.seed
        how = f"T = {threshold}"
    check_task("fmnist", task)
    torch.set_num_threads(args.threads)
    xv, _ = fmnist_images("valid", task, None, seed, "")
    if not 0 <= args.image_index < len(xv):
        raise CliError(f"--image-index {args.image_index} out of range 0..{len(xv) - 1} "
                       f"(task {task} has {len(xv)} validation images)")
    xc, _ = fmnist_images("calib", task, n_calib, seed, "--images")
    if args.masks is not None:
        if state_digest(model) != digest:
            raise CliError(f"the weights ({args.weights or 'the default ones'}) are not those "
                           f"{args.masks} was profiled with")
    else:
        batches = data.batches(xc, None, args.batch_size)
        stage("export", f"profiling {plural(len(xc), 'calibration image')} of task {task} in "
                        f"{plural(len(batches), 'batch')}", t0)
        stats = velcro.profile(model, progress(batches, "export", t0))
        point_stats = stats[export.LAYERS[args.layer][1]]
        mask = velcro.make_masks([point_stats], [threshold])[0]
    stage("export", f"quantising {args.layer}", t0)
    r = export.quantise_layer(model, args.layer, xc, xv[args.image_index:args.image_index + 1],
                              point_stats, mask)
    return _write_export(args, out, r, f"the fmnist CNN ({task}, {how}, ")


def _export_masks(args):
    """``--masks``: (task, calibration images and seed, the output point's stats and mask, or
    None for a point the masks' profile left out, a description, the weights' sha256) from a
    `velcro compress` output, checked against the options given."""
    from .. import export
    mblob, stats, masks, src, task = fmnist_masks(args, "export")
    calib = masks_calibration(args, src, "the scales come from the same calibration images")
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


def add_parser(subparsers) -> None:
    """Add `velcro export` to ``subparsers``."""
    p = one_line_errors(subparsers.add_parser(
        "export", help="quantise one compressed conv layer into FRAME.npz for `velcro sim`",
        description="Quantise one 3x3, stride-1, pad-1 conv + ReLU layer with its VELCRO mask "
                    "and means into FRAME.npz: any of the fmnist CNN's five, or (with --masks, "
                    "--weights and --data) a 3x3 stride-1 conv of ResNet-18 or GoogLeNet whose "
                    "output goes through its BatchNorm (folded) into a ReLU and whose shape fits "
                    "the accelerator (C_in <= 64). Other layers are refused with the reason; "
                    "--list-layers shows every conv's verdict."))
    model_options(p, model_help="fmnist, resnet18 or googlenet (default: the --masks model, "
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
    p.set_defaults(func=command(cmd_export))
