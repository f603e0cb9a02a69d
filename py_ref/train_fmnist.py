"""Deterministically train the small Fashion-MNIST CNN and save py_ref/weights/fmnist_cnn.pt.

    .venv/bin/python -m py_ref.train_fmnist [--images 20000] [--epochs 3]

Single-threaded, seeded; trains on train images [0, images) (< data.TRAIN_END, so calibration
images stay unseen) and prints test accuracy.  A few minutes on one core.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from .data import TRAIN_END, load_fmnist
from .models import FMNIST_WEIGHTS, FmnistCNN

SEED = 4


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default=str(FMNIST_WEIGHTS))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    x, y = load_fmnist("train")
    n = min(a.images, TRAIN_END)
    x, y = x[:n], y[:n]
    model = FmnistCNN()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps = a.epochs * ((n + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    g = torch.Generator().manual_seed(SEED)
    t0 = time.time()
    print(f"seed {SEED}, {n} images, {a.epochs} epochs", flush=True)
    for ep in range(a.epochs):
        model.train()
        perm = torch.randperm(n, generator=g)
        tot = 0.0
        for i in range(0, n, 64):
            idx = perm[i:i + 64]
            xb = x[idx]
            if ep < a.epochs - 1:  # light augmentation: horizontal flips
                flip = torch.rand(len(idx), generator=g) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
        print(f"epoch {ep}: loss {tot / n:.4f} ({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    xt, yt = load_fmnist("test")
    with torch.no_grad():
        acc = sum(int((model(xt[i:i + 500]).argmax(1) == yt[i:i + 500]).sum())
                  for i in range(0, len(xt), 500)) / len(xt)
    print(f"test top-1 {acc:.4f}", flush=True)
    torch.save(model.state_dict(), a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
