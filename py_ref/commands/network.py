"""The algorithm side of `velcro network` (the RTL side is sim/network.py, the command
velcro_cli.py's)."""

from __future__ import annotations

import time

import numpy as np
import torch

from ..errors import CliError, one_line
from .common import DEFAULT_TASK, check_task, skip_first_default
from .files import fmnist_masks
from .progress import plural, stage
from .splits import fmnist_images, masks_calibration


def network_setup(args) -> dict:
    """The algorithm side of ``velcro network`` (the RTL side is sim/network.py): the int8
    network of the fmnist CNN with the masks of ``--masks`` (any `velcro compress` output) or
    of ``--uniform T`` (profiled here), scales from the calibration images (the masks' own, or
    ``--calib-images``/``--seed``), ``--images`` test images and what the float model and
    PyTorch's int8 version predict for them. Everything is checked before it returns."""
    from .. import data, network, velcro
    from ..models import load_fmnist_cnn, state_digest
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
        mblob, stats, masks, src, task = fmnist_masks(args, "network")
        if state_digest(model) != src["weights_sha256"]:
            raise CliError(f"the weights ({args.weights or 'the default ones'}) are not those "
                           f"{args.masks} was profiled with")
        calib = masks_calibration(args, src, "the scales come from the same calibration images",
                                  "--calib-images")
        n_calib, seed = calib["images"], calib["seed"]
        how = ("S-VELCRO" if mblob.get("structured") else "VELCRO") + " masks of " + str(args.masks)
    else:
        task = args.task or DEFAULT_TASK
        n_calib = 256 if args.calib_images is None else args.calib_images
        seed = 0 if args.seed is None else args.seed
        how = f"uniform T = {args.uniform:g}"
    check_task("fmnist", task)
    torch.set_num_threads(args.threads)
    xc, _ = fmnist_images("calib", task, n_calib, seed, "--calib-images")
    xv, yv = fmnist_images("valid", task, args.images, seed, "--images")
    if args.masks is None:
        stage("network", f"profiling {plural(len(xc), 'calibration image')} of task {task}", t0)
        stats = velcro.profile(model, data.batches(xc, None, 128),
                               skip_first=skip_first_default("fmnist"))
        masks = velcro.make_masks(stats, [args.uniform] * len(stats))
    stage("network", f"quantising the network ({how})", t0)
    try:
        qnet = network.quantise_network(model, xc, stats, masks)
    except velcro.VelcroError as e:
        raise CliError(one_line(e)) from None
    with torch.no_grad():
        float_dense = model(xv).argmax(dim=1).numpy()
        with velcro.compressed(model, stats, masks):
            float_velcro = model(xv).argmax(dim=1).numpy()
    stage("network", "the uncompressed int8 network (py_ref reference, for the paired test)", t0)
    dense = network.quantise_network(model, xc)
    x0 = qnet.quantise_input(model, xv)
    int8_dense = dense.reference(dense.quantise_input(model, xv))["logits"].argmax(axis=1)
    stage("network", "PyTorch int8 (torch.ao FX, calibrated on the same images)", t0)
    torch_int8 = network.torch_int8_top1(model, xc, xv)
    return {"task": task, "how": how, "qnet": qnet, "labels": yv.numpy().astype(np.int64),
            "ifmaps": x0, "top1_float": float_velcro, "top1_int8_dense": int8_dense,
            "top1_float_dense": float_dense, "top1_torch_int8": torch_int8,
            "calibration": {"images": n_calib, "seed": seed}, "t0": t0}
