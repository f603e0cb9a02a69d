#!/usr/bin/env python3
"""`make network`: the whole VELCRO network on the RTL for a task, uniform T and the searched
tuple, through the commands a user runs:

    velcro profile  --task TASK --images 256 --out build/network/stats.pt
    velcro compress --stats ... --uniform T --out build/network/uniform.pt
    velcro compress --stats ... --search    --out build/network/searched.pt
    velcro network  --masks <each> --images K --out build/network/<each>.npz

then writes results/network/REPORT.md and results/network/network.png (sim/network_report.py).
Progress and the commands' stderr go to build/network/log.txt; stdout carries the report path.

    python scripts/network_report.py [--task footwear] [--uniform 0.3] [--images 64]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from sim import network_report
from sim.network import NETWORK_DESIGN

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="footwear")
    ap.add_argument("--uniform", type=float, default=0.3)
    ap.add_argument("--images", type=int, default=64, help="test images of each network run")
    ap.add_argument("--sim", default="verilator", choices=("verilator", "icarus"))
    ap.add_argument("--work", type=Path, default=REPO / "build" / "network")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "network")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    log = open(args.work / "log.txt", "w")
    rel = lambda p: str(Path(p).relative_to(REPO)) if Path(p).is_relative_to(REPO) else str(p)  # noqa: E731
    w = args.work
    steps = [
        ["profile", "--task", args.task, "--images", "256", "--out", w / "stats.pt"],
        ["compress", "--stats", w / "stats.pt", "--uniform", f"{args.uniform:g}",
         "--out", w / "uniform.pt"],
        ["compress", "--stats", w / "stats.pt", "--search", "--out", w / "searched.pt"],
    ]
    runs = {f"uniform T = {args.uniform:g}": "uniform", "searched tuple": "searched"}
    for name in runs.values():
        steps.append(["network", "--masks", w / f"{name}.pt", "--images", str(args.images),
                      "--sim", args.sim, "--out", w / f"{name}.npz"])
    commands = []
    for step in steps:
        shown = "velcro " + " ".join(rel(a) if isinstance(a, Path) else a for a in step)
        commands.append(shown)
        print(f"network_report: {shown}", file=sys.stderr, flush=True)
        print(f"$ {shown}", file=log, flush=True)
        r = subprocess.run([sys.executable, "-m", "velcro_cli", *map(str, step)], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=log, text=True)
        log.write(r.stdout)
        log.flush()
        if r.returncode:
            print(f"network_report: `{shown}` failed (exit {r.returncode}), see "
                  f"{rel(args.work / 'log.txt')}", file=sys.stderr)
            return 1
    nets = {}
    for label, name in runs.items():
        with np.load(w / f"{name}.npz") as f:
            nets[label] = {k: f[k] for k in f.files}
    report = network_report.render(nets, NETWORK_DESIGN, task=args.task, commands=commands)
    (args.out / "REPORT.md").write_text(report)
    network_report.plot(nets, NETWORK_DESIGN, args.out / "network.png")
    print(rel(args.out / "REPORT.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
