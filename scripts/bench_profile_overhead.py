"""Profiling overhead of VELCRO's preprocessing against plain inference on the same batches.

    .venv/bin/python scripts/bench_profile_overhead.py [--repeats 5] [--no-fused]

Single thread.  Runs are interleaved (plain, profile, fused profile, plain, ...) and the
minimum of each is compared, so load from other processes on the machine biases all alike.
Target: profile / plain <= 1.3.  "profile" is velcro.profile's default (eager) update,
"fused" its ``fused=True`` update (one torch.compile'd function per point and batch: two
reads of the batch instead of seven); the one-off compilation is done in the warm-up and
reported on its own line.  Models: the Fashion-MNIST CNN (512 Fashion-MNIST calibration images,
batch 128, first point skipped) and MobileNetV2 with its real ImageNet weights (64 inputs at
224x224, batch 8, all 35 points) and ResNet-18 (random init, same inputs, 16 points: Fashion-MNIST images resized to 3x224x224, since no ImageNet
images are available here; the timing does not depend on the content).
"""

from __future__ import annotations

import argparse
import sys
import time


import torch
import torch.nn.functional as F

from py_ref import data, velcro
from py_ref.models import imagenet_model, load_fmnist_cnn


def bench(model, batches, skip_first, repeats, fused):
    def plain():
        with torch.no_grad():
            for b in batches:
                model(b)

    def prof():
        velcro.profile(model, batches, skip_first=skip_first)

    def prof_fused():
        velcro.profile(model, batches, skip_first=skip_first, fused=True)
    runs = [plain, prof] + ([prof_fused] if fused else [])
    compile_s = 0.0
    for r in runs:                  # warm up (and compile)
        t = time.perf_counter(); r(); dt = time.perf_counter() - t
        if r is prof_fused:
            compile_s = dt
    times = [[] for _ in runs]
    for _ in range(repeats):
        for r, ts in zip(runs, times):
            t = time.perf_counter(); r(); ts.append(time.perf_counter() - t)
    best = [min(ts) for ts in times]
    return best[0], best[1], best[2] if fused else None, compile_s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-fused", dest="fused", action="store_false",
                    help="skip the fused (torch.compile) profile")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    (xc, _), _ = data.calibration_validation("all", n_calib=512)
    rows = []
    fm = load_fmnist_cnn()
    rows.append(("fmnist CNN, 512 imgs, batch 128, skip first", *bench(fm, data.batches(xc, None, 128), True, a.repeats, a.fused)))
    mb = imagenet_model("mobilenet_v2")
    x = F.interpolate(xc[:64], size=(224, 224), mode="bilinear").expand(-1, 3, -1, -1).contiguous()
    rows.append(("mobilenet_v2 (ImageNet weights), 64 imgs 224x224, batch 8", *bench(mb, data.batches(x, None, 8), False, a.repeats, a.fused)))
    rn = imagenet_model("resnet18", pretrained=False)
    rows.append(("resnet18 (random init: timing only), 64 imgs 224x224, batch 8", *bench(rn, data.batches(x, None, 8), True, a.repeats, a.fused)))
    print(f"{'model':64s} {'plain s':>8s} {'profile s':>9s} {'ratio':>6s}"
          + (f" {'fused s':>8s} {'ratio':>6s}" if a.fused else ""))
    for name, tp, tq, tf, _ in rows:
        print(f"{name:64s} {tp:8.3f} {tq:9.3f} {tq / tp:6.2f}x"
              + (f" {tf:8.3f} {tf / tp:6.2f}x" if a.fused else ""))
    if a.fused:
        print(f"fused: first call per model (torch.compile, then one profile): "
              + ", ".join(f"{r[4]:.0f} s" for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
