"""The performance model of `make sim`: from measured counters to speedup, energy and acceptance.

Inputs are :class:`sim.measure.Measurement` values (or anything with the same attributes, so
the model is tested on synthetic counters). For one image of the streaming engine:

* ``frame_cycles``: steady-state cycles per image, measured (difference of two batch sizes);
* the floors it is compared with (:func:`hdl.contract.image_cycle_floors`): the datapaths'
  work steps * G (``steps``: the busiest pair's run), the window dealer's cycles per
  image, the output stream's beats per image and the two window buffers' turnaround; whichever
  is largest limits the point (``limit``);
* ``speedup`` = frame_cycles(C = 0) / frame_cycles(C); ``ideal_speedup`` = 1 / (1 - C) of the
  mask actually used; acceptance: speedup >= :data:`SPEEDUP_TARGET` x ideal at every point;
* energy per image (:func:`sim.energy.image_energy`) from the computed outputs, the output
  beats, the cycles and the SAIF toggles per image; linear fit of E/E0 against C with R^2 >=
  :data:`R2_MIN` and a negative slope.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from hdl.config import AccelConfig
from hdl.contract import PIPELINE_LATENCY, image_cycle_floors, stream_limit

from .energy import EnergyModel, image_energy, linear_fit
from .workloads import KINDS

__all__ = ["PIPELINE_LATENCY", "SPEEDUP_TARGET", "R2_MIN", "ACCEPTED_KINDS", "CSV_COLUMNS", "analyse",
           "check_acceptance", "write_csv", "read_csv"]

#: Issue 20 (issue 12 asked 0.95): speedup >= 0.98 x 1/(1-C) at every C <= 0.9, the ideal
#: against the same packed design at C = 0.
SPEEDUP_TARGET = 0.98
#: Energy per image must fall linearly with C: least-squares fit R^2 at least this.
R2_MIN = 0.98
#: The mask kinds the targets apply to (sim.workloads.KINDS: ``velcro-per-channel`` is a
#: comparison only).
ACCEPTED_KINDS = tuple(k for k, kind in KINDS.items() if kind.accepted)

CSV_COLUMNS = ["mask_kind", "ratio", "actual_ratio", "sum_u", "max_channel_u", "steps",
               "image_cycles", "frame_cycles", "work_cycles", "input_cycles", "output_cycles",
               "buffer_cycles", "limit", "speedup", "ideal_speedup", "speedup_vs_ideal", "out_bytes",
               "images_per_s", "gops", "toggles", "compute_pj", "load_pj", "drain_pj",
               "toggle_pj", "static_pj", "energy_pj", "energy_norm", "golden_ok"]


def analyse(cfg: AccelConfig, points, model: EnergyModel = EnergyModel()) -> list[dict]:
    """Rows of sweep.csv for the measurements of ONE mask kind; the first must be at C = 0
    (the reference of speedup and energy_norm)."""
    points = list(points)
    if not points or points[0].actual_ratio != 0:
        raise ValueError("a kind's points must start at C = 0 (the speedups' reference)")
    kinds = {p.kind for p in points}
    if len(kinds) != 1:
        raise ValueError(f"analyse one mask kind at a time, not {sorted(kinds)}")
    f = model.clock_hz
    dense_ops = 2 * 9 * cfg.in_channels * cfg.out_channels * cfg.positions   # per image, C = 0
    rows = []
    for p in points:
        floors = image_cycle_floors(cfg, p.steps)
        e = image_energy(cfg, computed=p.sum_u, out_beats=p.out_beats_per_image,
                         cycles=p.frame_cycles, toggles=p.toggles_per_image, model=model)
        rows.append({
            "mask_kind": p.kind, "ratio": p.ratio, "actual_ratio": p.actual_ratio,
            "sum_u": p.sum_u, "max_channel_u": p.max_channel_u, "steps": p.steps,
            "image_cycles": p.image_cycles, "frame_cycles": p.frame_cycles,
            "work_cycles": floors["compute"], "input_cycles": floors["input"],
            "output_cycles": floors["output"], "buffer_cycles": floors["buffers"],
            "limit": stream_limit(cfg, p.steps),
            "out_bytes": p.out_beats_per_image * cfg.bus_bytes,
            "images_per_s": f / p.frame_cycles,
            "gops": dense_ops * f / p.frame_cycles / 1e9,
            "toggles": p.toggles_per_image, "golden_ok": True, **e})
    r0 = rows[0]
    for r in rows:
        r["speedup"] = r0["frame_cycles"] / r["frame_cycles"]
        r["ideal_speedup"] = 1 / (1 - r["actual_ratio"])
        r["speedup_vs_ideal"] = r["speedup"] / r["ideal_speedup"]
        r["energy_norm"] = r["energy_pj"] / r0["energy_pj"]
    return rows


def check_acceptance(rows_by_kind: dict[str, list[dict]]) -> dict:
    """The targets on every kind of :data:`ACCEPTED_KINDS` present: per kind the worst
    speedup/ideal and the energy fit; ``ok`` and every failure as a sentence."""
    result = {"kinds": {}, "failures": []}
    for kind in ACCEPTED_KINDS:
        rows = rows_by_kind.get(kind)
        if not rows:
            continue
        worst = min(rows, key=lambda r: r["speedup_vs_ideal"])
        fit = linear_fit([r["actual_ratio"] for r in rows], [r["energy_norm"] for r in rows])
        result["kinds"][kind] = {"worst_speedup_vs_ideal": worst["speedup_vs_ideal"],
                                 "worst_ratio": worst["ratio"], "fit": fit}
        for r in rows:
            if r["speedup_vs_ideal"] < SPEEDUP_TARGET:
                result["failures"].append(
                    f"{kind} C={r['ratio']:.2f}: speedup {r['speedup']:.4f} is "
                    f"{r['speedup_vs_ideal']:.4f} of the ideal {r['ideal_speedup']:.4f} "
                    f"(target {SPEEDUP_TARGET}); limited by {r['limit']}")
        if not fit["r2"] >= R2_MIN:
            result["failures"].append(f"{kind}: energy linear fit R^2 = {fit['r2']:.4f} < {R2_MIN}")
        if not fit["slope"] < 0:
            result["failures"].append(f"{kind}: energy does not fall with C (slope {fit['slope']:.4f})")
    if not result["kinds"]:
        result["failures"].append(f"no kind of {', '.join(ACCEPTED_KINDS)} was measured")
    result["ok"] = not result["failures"]
    return result


def _cell(v):
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    return "" if v is None else v


def write_csv(path: Path, rows) -> None:
    """sweep.csv: :data:`CSV_COLUMNS`, floats to 6 significant digits (deterministic)."""
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(v) for k, v in r.items()})


def read_csv(path: Path) -> list[dict]:
    """sweep.csv back as rows (numbers as float, the rest as text)."""
    def value(v):
        try:
            return float(v)
        except ValueError:
            return v
    with open(path, newline="") as f:
        return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(f)]

