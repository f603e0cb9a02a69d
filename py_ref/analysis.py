"""The analyses behind scripts/velcro_analysis.py (results/velcro/REPORT.md), as functions.

A :class:`Task` holds one Fashion-MNIST task's disjoint calibration / tuning / validation
images, its profile and the uncompressed model's per-image outcomes; :func:`point_row`
measures one operating point (masks) on its held-out images with the paired tests;
:func:`sweep`, :func:`operating_points` and :func:`paper_style` read the accuracy against
compression; :func:`calibration_study` and :func:`recommend` the number of calibration images;
:func:`paper_tuples_on_architectures`, :func:`mobilenet_checks` and :func:`export_check` the
ImageNet architectures and the exported layer.  Every function is deterministic for its seed;
``log`` receives one progress line where a step ends (stderr in the script).
"""

from __future__ import annotations

import numpy as np
import torch

from . import data, export, presets, search, svelcro, velcro
from .significance import ALPHA, compare, wilson

__all__ = ["SEED", "Task", "point_row", "strip", "variance_rows", "sweep", "operating_points",
           "paper_style", "calibration_study", "recommend", "paper_tuples_on_architectures",
           "mobilenet_checks", "export_check"]

#: The seed of every image subset (and of the architectures' random images).
SEED = 0


def _quiet(msg) -> None:
    pass


class Task:
    """Calibration / tuning / validation images of one task, its profile, and the uncompressed
    model's per-image outcomes on the tuning and validation images."""

    def __init__(self, name, model, n_calib, n_tune, n_valid):
        self.name, self.model = name, model
        self.classes = data.task_classes(name)
        self.calib, _ = data.calibration(name, n_calib, SEED)
        self.tune = data.tuning(name, n_tune, SEED, after=n_calib)
        self.valid = data.validation(name, n_valid, SEED)
        self.stats = velcro.profile(model, data.batches(self.calib, None, 128), skip_first=True,
                                    count_zeros=True)
        self.network_macs = velcro.conv_macs(model, self.calib[:1])
        self.base = self.evaluate(None)          # uncompressed, validation images

    def evaluate(self, masks):
        """velcro.evaluate on the validation images, per image, with the task's classes (the
        uncompressed model only when ``masks`` is None: it is scored once, in __init__)."""
        return velcro.evaluate(self.model, data.batches(*self.valid, 200), self.stats, masks,
                               task_classes=self.classes, per_image=True, original=masks is None)


def point_row(t: Task, masks, extra=None):
    """One operating point on the held-out images: C both ways, Table 4 both ways, the three
    metrics, and the paired tests of task-restricted and all-class top-1 against uncompressed."""
    c = velcro.compression_ratio(t.stats, masks, network_macs=t.network_macs)
    row = {"C": c.elements, "C_macs": c.macs, "C_network": c.network_macs}
    if c.compressed:
        row["zero_values"] = velcro.zero_share(t.stats, masks)
        row["zero_means"] = velcro.zero_mean_share(t.stats, masks)
    if c.compressed == 0:
        r = dict(t.base, top1_compressed=t.base["top1"], top1_task_compressed=t.base["top1_task"],
                 out_of_task_compressed=t.base["out_of_task"], correct_compressed=t.base["correct"],
                 correct_task_compressed=t.base["correct_task"])
    else:
        r = t.evaluate(masks)
    row.update(top1=r["top1_compressed"], top1_task=r["top1_task_compressed"],
               out_of_task=r["out_of_task_compressed"],
               test_task=compare(t.base["correct_task"], r["correct_task_compressed"]).as_dict(),
               test_all=compare(t.base["correct"], r["correct_compressed"]).as_dict())
    row["_correct_task"] = r["correct_task_compressed"]
    row.update(extra or {})
    return row


def strip(obj):
    """results.json without the per-image vectors."""
    if isinstance(obj, dict):
        return {k: strip(v) for k, v in obj.items() if not k.startswith("_")}
    if isinstance(obj, list):
        return [strip(v) for v in obj]
    return obj


def variance_rows(tasks):
    stats_all = tasks["all"].stats
    rows = []
    for k, s_all in enumerate(stats_all):
        med_all = float(s_all.var.median())
        for name, t in tasks.items():
            v = t.stats[k].var.flatten().numpy()
            rows.append({"point": s_all.name, "task": name, "median_var": float(np.median(v)),
                         "share_below_all_median": float((v < med_all).mean()),
                         "share_var_zero": float((v == 0).mean())})
    return rows


def sweep(t: Task, grid_v, grid_s, log=_quiet):
    v = [point_row(t, velcro.make_masks(t.stats, [T] * len(t.stats)), {"T": T}) for T in grid_v]
    s = [point_row(t, svelcro.make_channel_masks(t.stats, [T] * len(t.stats)), {"T": T}) for T in grid_s]
    log(f"sweep {t.name}: task top-1 base {t.base['top1_task']:.3f}; VELCRO " +
        " ".join(f"{p['T']:.2f}:{p['top1_task']:.3f}" for p in v))
    return {"velcro": v, "svelcro": s}


def operating_points(t: Task, max_evals, log=_quiet):
    """Chosen on the tuning images (py_ref.search, task-restricted top-1 kept at the
    uncompressed model's), reported on the held-out images with paired tests."""
    score = search.tuning_score(t.model, data.batches(*t.tune, 200), t.stats, task_classes=t.classes)
    r = search.search_thresholds(t.stats, score, max_evals=max_evals)
    uni = point_row(t, velcro.make_masks(t.stats, [r.uniform] * len(t.stats)),
                    {"T": r.uniform, "tune": r.uniform_score})
    srch = point_row(t, velcro.make_masks(t.stats, list(r.thresholds)),
                     {"tuple": list(r.thresholds), "tune": r.score})
    vs = compare(uni["_correct_task"], srch["_correct_task"]).as_dict()
    log(f"search {t.name}: uniform {r.uniform:.2f} -> valid {uni['top1_task']:.3f} p={uni['test_task']['p']:.3g}; "
        f"searched {r.thresholds} C={srch['C']:.3f} -> valid {srch['top1_task']:.3f} p={srch['test_task']['p']:.3g}")
    return {"evals": r.evals, "base_tune": r.base, "uniform": uni, "search": srch,
            "search_vs_uniform": vs}


def paper_style(points, base_key="top1"):
    """The paper's reading: largest C whose accuracy on the evaluated images is not below the
    uncompressed model's (selection and measurement on the same images)."""
    return max((p for p in points if p["test_all"]["other"] >= p["test_all"]["base"] - 1e-12),
               key=lambda p: p["C"])


def calibration_study(model, name, sizes, T, n_valid, log=_quiet):
    """Masks and held-out task top-1 against the number of calibration images (nested seeded
    subsets), masks compared with those of the largest size."""
    classes = data.task_classes(name)
    xv, yv = data.validation(name, n_valid, SEED)
    vb = data.batches(xv, yv, 200)
    rows, ref = [], None
    base = None
    for n in sorted(sizes, reverse=True):
        xc, _ = data.calibration(name, n, SEED)
        stats = velcro.profile(model, data.batches(xc, None, 128), skip_first=True)
        masks = velcro.make_masks(stats, [T] * len(stats))
        r = velcro.evaluate(model, vb, stats, masks, task_classes=classes, per_image=True)
        if ref is None:
            ref = masks
            base = r
        inter = sum(int((m & q).sum()) for m, q in zip(masks, ref))
        union = sum(int((m | q).sum()) for m, q in zip(masks, ref))
        same = sum(int((m == q).sum()) for m, q in zip(masks, ref)) / sum(m.numel() for m in masks)
        k = int(r["correct_task_compressed"].sum())
        lo, hi = wilson(k, len(yv))
        rows.append({"images": n, "jaccard": inter / union if union else 1.0, "agreement": same,
                     "top1_task": r["top1_task_compressed"], "ci": [lo, hi],
                     "test_vs_uncompressed": compare(r["correct_task"], r["correct_task_compressed"]).as_dict(),
                     "test_vs_largest": compare(base["correct_task_compressed"],
                                                r["correct_task_compressed"]).as_dict()})
        log(f"calibration {name} n={n}: jaccard {rows[-1]['jaccard']:.3f} top1_task {rows[-1]['top1_task']:.3f}")
    rows.sort(key=lambda r: r["images"])
    return {"task": name, "T": T, "base_top1_task": base["top1_task"], "rows": rows}


def recommend(study, jaccard_min=0.9):
    """Smallest calibration size whose masks overlap the largest size's by >= jaccard_min
    (Jaccard) and whose held-out task top-1 is not significantly different from it."""
    for r in study["rows"]:
        if r["jaccard"] >= jaccard_min and r["test_vs_largest"]["p"] >= ALPHA:
            return r["images"]
    return study["rows"][-1]["images"]


def paper_tuples_on_architectures():
    """Element C and MAC-weighted C of every Appendix-B tuple on torchvision's architectures at
    224x224 (shapes and MACs from one profile of two random images; masks take exactly
    floor(T * n) elements per point, so C does not depend on the images)."""
    from .models import imagenet_model
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(SEED))
    rows = []
    for model in presets.POINTS:
        m = imagenet_model(model, pretrained=(model == "mobilenet_v2"))
        stats = velcro.profile(m, [x], skip_first=presets.SKIP_FIRST[model])
        net = velcro.conv_macs(m, x)
        for task, d in presets.PAPER_TUPLES[model].items():
            for ratio, pct in d.items():
                c = velcro.compression_ratio(stats, velcro.make_masks(stats, [p / 100 for p in pct]),
                                             network_macs=net)
                rows.append({"model": model, "task": task, "paper_ratio": ratio, "C": c.elements,
                             "C_macs": c.macs, "C_network": c.network_macs})
    return rows


def mobilenet_checks():
    from .models import mobilenet_v2_weights_path
    from .tv import import_torchvision
    tv = import_torchvision()
    m = tv.models.mobilenet_v2()
    sd = torch.load(mobilenet_v2_weights_path(), map_location="cpu", weights_only=True)
    res = m.load_state_dict(sd, strict=True)
    m.eval()
    pts = velcro.trace_points(m, torch.zeros(1, 3, 224, 224))
    return {"weights": str(mobilenet_v2_weights_path().name), "missing": len(res.missing_keys),
            "unexpected": len(res.unexpected_keys), "points": len(pts), "first": pts[0][0],
            "last": pts[-1][0]}


def export_check(model, t: Task):
    mask = velcro.make_masks([t.stats[0]], [0.3])[0]
    errs, within, bounds = [], [], []
    for i in range(0, min(len(t.valid[0]), 200), 20):
        r = export.quantise_layer(model, "conv2", t.calib, t.valid[0][i:i + 1], t.stats[0], mask)
        chk = export.check_export(r)
        assert chk["ok"], chk
        errs.append(chk["max_err_vs_float_layer"])
        within.append(chk["share_within_1_step"])
        bounds.append(chk["max_err_vs_quantised_float"])
    return {"images": len(errs), "max_err_steps": max(errs), "mean_of_max": float(np.mean(errs)),
            "min_share_within_1": min(within), "max_err_vs_quantised_float": max(bounds),
            "tolerance": export.TOLERANCE_STEPS}
