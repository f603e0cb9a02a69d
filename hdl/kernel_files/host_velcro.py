#!/usr/bin/env python3
"""Run a batch of VELCRO images on the compute units of an Alveo U280 through XRT's Python
bindings (pyxrt) and check every output against the integer golden model.

    source /opt/xilinx/xrt/setup.sh
    PYTHONPATH=<velcro checkout> python3 host_velcro.py velcro.xclbin [--frame FRAME.npz ...]
                                                        [--images B]

The batch is random (seed 1; B images, default two per compute unit) unless ``--frame`` names
a FRAME.npz (``velcro export`` writes one; its ifmap may be [B, C_in, H, W], a batch of B
images). ``--frame`` may be given once per layer: the layers run one after another on the same
xclbin, each run loading its layer's constants (LAYER + WEIGHTS, SCHEDULE) and streaming its
batch. The host turns each layer into one hdl.program.LayerProgram (its shape, constants and
the work list py_ref.schedule.deal gives it) and packs the buffers with hdl/kernel_host.py;
the kernel returns the computed outputs only, which unpack_ofm expands
with the schedule and the means.

The design the kernel was built for, and its number of compute units k (``make kernel
CUS=k``), are in config.json next to this script. Any layer within the design's maxima (H, W,
C_in, N) runs on it; a frame beyond them is refused before the device is touched (see
docs/KERNEL.md for building a larger design). The batch is split into k contiguous shares
(hdl.kernel_host.split_batch); CU j (``velcro_kernel_<j>``) gets its own buffers in its own
HBM pseudo-channels (``kernel.group_id``), all CUs run at once, and the outputs are gathered in
batch order and checked image by image.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from hdl.config import AccelConfig, ConfigError
from hdl.kernel_host import read_kernel_config, split_batch
from hdl.regmap import KERNEL_NAME, cu_names
from py_ref.errors import CliError, error_line

HERE = Path(__file__).resolve().parent


class HostError(CliError):
    """A problem found before the device is used: printed as one line, exit status 2."""


def load_kernel_config(path: Path):
    """(configuration, compute units) that ``make kernel`` wrote next to the kernel
    (config.json)."""
    try:
        return read_kernel_config(Path(path).read_text())
    except FileNotFoundError:
        raise HostError(f"{path} not found: run host_velcro.py from the folder `make kernel` "
                        f"wrote (it holds config.json), or pass --config") from None
    except (OSError, ValueError, TypeError, ConfigError) as exc:
        raise HostError(f"{path} is not a kernel config.json: {exc}") from None


def check_frame(cfg: AccelConfig, frame) -> AccelConfig:
    """The layer of ``frame`` on the kernel's design ``cfg``; HostError if a shape exceeds the
    design's maxima.

    The kernel's maxima of C_in, H, W and N are fixed in its hardware; a larger frame would
    not fit its memories, and the hours-long xclbin link is not where to find out."""
    d = cfg.design
    c_in, h, w = frame.ifmap.shape
    n = frame.weight.shape[0]
    got = {"C_in": c_in, "H": h, "W": w, "N": n}
    most = {"C_in": d.in_channels, "H": d.height, "W": d.width, "N": d.out_channels}
    over = {k: v for k, v in got.items() if v > most[k]}
    if not over:
        return cfg.layer(h, w, c_in, n)
    differ = ", ".join(f"{k}={v} (kernel maximum: {most[k]})" for k, v in over.items())
    size = {k: max(got[k], most[k]) for k in got}
    raise HostError(
        f"the frame does not fit this kernel: {differ}; the kernel runs layers up to "
        f"C_in={d.in_channels} H={d.height} W={d.width} N={d.out_channels} ({cfg.tag}). "
        f"Build one that holds it with: make kernel ARGS=\"--in-channels {size['C_in']} "
        f"--height {size['H']} --width {size['W']} --instances {cfg.instances} "
        f"--out-channels {size['N']}\" (docs/KERNEL.md)")


def prepare(args):
    """Everything that can go wrong before the device: config, frames (or batch), shapes, the
    split, the xclbin. Returns the design, the compute units and the layers to run, each
    (layer configuration, frame of its first image, ifmaps [B, ...])."""
    from py_ref.frame_file import read_batch
    from py_ref.golden import random_frame

    cfg, cus = load_kernel_config(args.config)
    layers = []
    if args.frame:
        if args.images is not None:
            raise HostError("--images is for the random batch; a FRAME.npz brings its own")
        for path in args.frame:
            frame, ifmaps = read_batch(path)          # an unreadable file: its CliError
            layer = check_frame(cfg, frame)
            layers.append((layer, frame, frame.ifmap[None] if ifmaps is None else ifmaps))
    else:
        images = 2 * cus if args.images is None else args.images
        if images < 1:
            raise HostError(f"--images must be at least 1, not {images}")
        rng = np.random.default_rng(1)
        frame = random_frame(cfg, rng, density=0.5)
        ifmaps = np.stack([frame.ifmap] + [random_frame(cfg, rng).ifmap
                                           for _ in range(images - 1)])
        layers.append((cfg, frame, ifmaps))
    for _, _, ifmaps in layers:
        try:
            split_batch(len(ifmaps), cus)
        except ValueError as exc:
            raise HostError(str(exc)) from None
    if not args.xclbin.is_file():
        raise HostError(f"{args.xclbin} not found (the xclbin v++ --link wrote)")
    return cfg, cus, layers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("xclbin", type=Path, help="the linked kernel, e.g. velcro.xclbin")
    parser.add_argument("--frame", type=Path, action="append",
                        help="FRAME.npz of a layer (default: random, seed 1); repeat it to run "
                             "several layers one after another on the xclbin")
    parser.add_argument("--images", type=int, default=None,
                        help="B, images of the random batch (default: two per compute unit)")
    parser.add_argument("--device", type=int, default=0, help="XRT device index (default 0)")
    parser.add_argument("--config", type=Path, default=HERE / "config.json",
                        help="the kernel's configuration (default: config.json next to this script)")
    args = parser.parse_args(argv)
    try:
        cfg, cus, layers = prepare(args)
    except CliError as exc:
        print(error_line(exc, "host_velcro"), file=sys.stderr)
        return 2
    try:
        import pyxrt
    except ImportError:
        print(error_line("pyxrt not found: run `source /opt/xilinx/xrt/setup.sh` first",
                         "host_velcro"), file=sys.stderr)
        return 2
    device = pyxrt.device(args.device)
    uuid = device.load_xclbin(str(args.xclbin))
    for i, (layer, frame, ifmaps) in enumerate(layers):
        if len(layers) > 1:
            print(f"layer {i}: C_in={layer.in_channels} H={layer.height} W={layer.width} "
                  f"N={layer.out_channels}")
        status = run(pyxrt, device, uuid, layer, cus, frame, ifmaps)
        if status:
            return status
    return 0


def run(pyxrt, device, uuid, cfg, cus, frame, ifmaps) -> int:
    """Split ``ifmaps`` of the layer ``cfg`` over the ``cus`` compute units of the loaded
    xclbin, load the layer's constants, run them concurrently, gather and check every image; 0
    if all match the golden model, 1 otherwise."""
    import dataclasses

    from hdl.regmap import BEAT_BYTES, BUFFERS, FLAG_LOAD_CONFIG, Reg
    from hdl.kernel_host import (buffer_beats, buffer_bytes, gather, kernel_arguments,
                                 pack_frame, read_counters, unpack_ofm)
    from hdl.program import LayerProgram
    from py_ref.golden import golden_ofm

    images = len(ifmaps)
    frames = [dataclasses.replace(frame, ifmap=x) for x in ifmaps]
    program = LayerProgram.for_frame(cfg, frame)
    schedule = program.schedule
    shares = split_batch(images, cus)

    sync_to, sync_from = (pyxrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE,
                          pyxrt.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE)
    jobs = []            # (CU name, kernel, share, sizes, buffers, arguments) per busy CU
    for cu, share in zip(cu_names(cus), shares):
        if not len(share):        # B < k: this CU has nothing to do
            continue
        # one CU per kernel object ("velcro_kernel:{velcro_kernel_2}"); exclusive access is
        # needed to read the performance counters with read_register
        kernel = pyxrt.kernel(device, uuid, f"{KERNEL_NAME}:{{{cu}}}",
                              pyxrt.kernel.cu_access_mode.exclusive)
        sizes = buffer_bytes(cfg, schedule, len(share))
        beats = buffer_beats(cfg, schedule, len(share))
        data = pack_frame(program, ifmaps[share.start:share.stop])
        bos = {}
        for i, name in enumerate(BUFFERS):   # argument i = BUFFERS[i], then the scalars
            # group_id(i): the HBM pseudo-channel connectivity.cfg gave this CU's master of i
            bos[name] = pyxrt.bo(device, max(sizes[name], BEAT_BYTES), pyxrt.bo.normal,
                                 kernel.group_id(i))
            if name in data:
                bos[name].write(np.frombuffer(data[name], np.uint8), 0)
                bos[name].sync(sync_to, sizes[name], 0)
        jobs.append((cu, kernel, share, sizes, bos,
                     kernel_arguments(bos, beats, flags=FLAG_LOAD_CONFIG, images=len(share))))
    # start every CU before waiting for any: they run concurrently
    runs = [kernel(*args) for _, kernel, _, _, _, args in jobs]

    outputs, failed = {}, False
    for (cu, kernel, share, sizes, bos, _), run in zip(jobs, runs):
        state = run.wait()
        completed = getattr(getattr(pyxrt, "ert_cmd_state", None), "ERT_CMD_STATE_COMPLETED", state)
        if state != completed:
            print(f"FAIL: {cu} (images {share.start}..{share.stop - 1}) ended in state {state}",
                  file=sys.stderr)
            failed = True
            continue
        bos["ofm"].sync(sync_from, sizes["ofm"], 0)
        outputs[cu] = unpack_ofm(program, bytes(bos["ofm"].read(sizes["ofm"], 0)), len(share))
        status = kernel.read_register(Reg.STATUS)
        cycles = kernel.read_register(Reg.KERNEL_CYCLES)
        counters = read_counters(cfg, kernel.read_register)
        print(f"{cu}: images {share.start}..{share.stop - 1}, STATUS={status:#x} kernel "
              f"cycles={cycles} engine: " +
              ", ".join(f"{k}={v}" for k, v in counters.items() if isinstance(v, int)))
        if status:
            print(f"FAIL: {cu}: STATUS={status:#x} (hdl/regmap.py)", file=sys.stderr)
            failed = True
    if failed:
        return 1

    ofm = gather([outputs.get(cu) for cu in cu_names(cus)], shares)
    for k, f in enumerate(frames):
        expected = golden_ofm(f)
        bad = np.argwhere(ofm[k] != expected)
        if len(bad):
            cu = next(c for c, s in zip(cu_names(cus), shares) if k in s)
            print(f"FAIL: image {k} ({cu}): {len(bad)} of {expected.size} outputs differ from "
                  f"the golden model, first at [n,i,j]={bad[0].tolist()}", file=sys.stderr)
            return 1
    print(f"PASS: {images} images on {len(jobs)} of {cus} compute units, {ofm.size} outputs "
          f"match the golden model bit for bit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
