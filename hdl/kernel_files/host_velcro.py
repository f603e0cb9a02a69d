#!/usr/bin/env python3
"""Run one VELCRO frame on an Alveo U280 through XRT's Python bindings (pyxrt) and check it
against the integer golden model.

    source /opt/xilinx/xrt/setup.sh
    PYTHONPATH=<velcro checkout> python3 host_velcro.py velcro.xclbin [--frame FRAME.npz]

The frame is random (seed 1) unless ``--frame`` names a FRAME.npz (``velcro export`` writes
one; its ifmap may be [B, C_in, H, W], a batch of B images). The host deals the work list
(py_ref.schedule.deal) and packs the buffers with hdl/kernel_buffers.py; the kernel returns the
computed outputs only, which unpack_ofm expands with the schedule and the means. The
configuration the kernel was built for is config.json next to this script.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import pyxrt

from hdl.config import AccelConfig
from hdl.kernel_buffers import (BUFFERS, FLAG_LOAD_CONFIG, Reg, buffer_bytes, counter_names,
                                pack_frame, unpack_ofm)
from py_ref.golden import Frame, golden_ofm, random_frame
from py_ref.schedule import deal

HERE = Path(__file__).resolve().parent
KERNEL = "velcro_kernel"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("xclbin", type=Path)
    parser.add_argument("--frame", type=Path, help="FRAME.npz (default: random, seed 1)")
    parser.add_argument("--device", type=int, default=0)
    args = parser.parse_args()

    cfg = AccelConfig.from_json((HERE / "config.json").read_text())
    if args.frame:
        with np.load(args.frame) as arrays:
            arrays = {k: arrays[k] for k in arrays.files}
        ifmaps = arrays["ifmap"] if arrays["ifmap"].ndim == 4 else arrays["ifmap"][None]
        frames = [Frame.from_arrays({**arrays, "ifmap": x}) for x in ifmaps]
    else:
        frames = [random_frame(cfg, np.random.default_rng(1), density=0.5)]
    frame, images = frames[0], len(frames)
    schedule = deal(frame.mask, cfg.instances)

    device = pyxrt.device(args.device)
    uuid = device.load_xclbin(str(args.xclbin))
    # exclusive access: needed to read the performance counters with read_register
    kernel = pyxrt.kernel(device, uuid, KERNEL, pyxrt.kernel.cu_access_mode.exclusive)

    sizes = buffer_bytes(cfg, schedule, images)
    data = pack_frame(cfg, frame, schedule, np.stack([f.ifmap for f in frames]))
    bos = {}
    for i, name in enumerate(BUFFERS):   # argument i = BUFFERS[i], then flags, frames, beats
        bos[name] = pyxrt.bo(device, max(sizes[name], 64), pyxrt.bo.normal, kernel.group_id(i))
        if name in data:
            bos[name].write(np.frombuffer(data[name], np.uint8), 0)
            bos[name].sync(pyxrt.xclBOSyncDirection.XCL_BO_SYNC_BO_TO_DEVICE, sizes[name], 0)

    run = kernel(*(bos[name] for name in BUFFERS), FLAG_LOAD_CONFIG, images,
                 sizes["schedule"] // 64)
    state = run.wait()
    print(f"kernel finished: {state}")

    bos["ofm"].sync(pyxrt.xclBOSyncDirection.XCL_BO_SYNC_BO_FROM_DEVICE, sizes["ofm"], 0)
    ofm = unpack_ofm(cfg, bytes(bos["ofm"].read(sizes["ofm"], 0)), schedule, frame.means, images)
    status = kernel.read_register(Reg.STATUS)
    cycles = kernel.read_register(Reg.KERNEL_CYCLES)
    counters = {n: kernel.read_register(Reg.COUNTERS + 4 * i)
                for i, n in enumerate(counter_names(cfg))}
    print(f"STATUS={status:#x} kernel cycles={cycles} engine: " +
          ", ".join(f"{k}={v}" for k, v in counters.items() if "[" not in k))

    for k, f in enumerate(frames):
        expected = golden_ofm(f)
        bad = np.argwhere(ofm[k] != expected)
        if len(bad):
            print(f"FAIL: image {k}: {len(bad)} of {expected.size} outputs differ from the golden "
                  f"model, first at [n,i,j]={bad[0].tolist()}", file=sys.stderr)
            return 1
    print(f"PASS: {ofm.size} outputs match the golden model bit for bit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
