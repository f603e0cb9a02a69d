"""Measure workloads on the RTL: batches of images streamed back to back, steady state per image.

    build = Build(cfg, "verilator", saif=True)
    m = measure(build, workload, workdir, batches=(1, 3))
    m.frame_cycles, m.toggles_per_image, m.compute_cycles

A workload (:mod:`sim.workloads`) is a frame's constants and a batch of ifmaps. For each batch
size ``b`` the library runs one FRAME command of ``b`` images after the constants and reads
``batch_cycles``, from the first image beat to the last output beat. The fill (first load, last
drain, pipeline latency) is the same for every batch size, so the steady-state cycles per image
are the difference of two batch sizes::

    frame_cycles = (batch_cycles(b2) - batch_cycles(b1)) / (b2 - b1)

On a SAIF build each batch size runs in its own simulator process (reset, constants, FRAME of
``b`` images; SAIF accumulates over a process), and the toggles per image are the same
difference of the two processes' total toggle counts. Every image of every run is compared with
the golden model inside the testbench (:mod:`sim.tb_sweep`); a mismatch raises
:class:`~sim.runner.SimulationFailed`.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from .energy import saif_toggle_vector
from .runner import Build, SimulationFailed
from .workloads import Workload

__all__ = ["BatchRun", "Measurement", "run_steps", "measure", "measure_all", "DEFAULT_BATCHES",
           "SimulationFailed", "best_of", "expand_seconds"]

#: Batch sizes whose difference gives the steady state: 1 (no overlap at all) and 3 (two images
#: that each start while the previous one computes).
DEFAULT_BATCHES = (1, 3)


@dataclasses.dataclass(frozen=True)
class BatchRun:
    images: int
    batch_cycles: int          # first image beat .. last output beat
    out_beats: int             # compact output beats of the batch
    compute_cycles: list       # each image's compute cycles (the image_cycles counter)
    computed: list             # each image's computed outputs per channel
    batch: dict                # the batch counters (load, compute, overlap, drain, ...)
    toggles: int | None        # the whole process's toggles (SAIF builds only)
    sim_cycles: int
    wall_s: float


@dataclasses.dataclass(frozen=True)
class Measurement:
    kind: str
    ratio: float
    actual_ratio: float
    sum_u: int                 # uncompressed outputs per image
    max_channel_u: int
    runs: tuple                # BatchRun per batch size, ascending

    @property
    def _pair(self):
        return self.runs[0], self.runs[-1]

    @property
    def frame_cycles(self) -> float:
        """Steady-state cycles per image: the batch-size difference."""
        a, b = self._pair
        return (b.batch_cycles - a.batch_cycles) / (b.images - a.images)

    @property
    def compute_cycles(self) -> int:
        """One image's compute phase (the engine's image_cycles counter, the same for every
        image of a batch without output stalls)."""
        return max(self.runs[-1].compute_cycles)

    @property
    def toggles_per_image(self) -> float | None:
        a, b = self._pair
        if a.toggles is None:
            return None
        return (b.toggles - a.toggles) / (b.images - a.images)

    @property
    def out_beats_per_image(self) -> float:
        a, b = self._pair
        return (b.out_beats - a.out_beats) / (b.images - a.images)


def run_steps(build: Build, steps: list[dict], test_dir: Path) -> list[dict]:
    """Run :mod:`sim.tb_sweep` steps in ONE simulator process on ``build``'s model; returns the
    result of every step that has one. Thread-safe (``Build.run`` is)."""
    test_dir = Path(test_dir)
    test_dir.mkdir(parents=True, exist_ok=True)
    jobs = test_dir / "steps.json"
    jobs.write_text(json.dumps(steps))
    build.run("sim.tb_sweep", ["sweep_steps"], env={"VELCRO_SWEEP_JOBS": str(jobs)},
              test_dir=test_dir, quiet=True)
    return [json.loads(Path(s["result"]).read_text()) for s in steps if s.get("result")]


def _batch_run(raw: dict, toggles: int | None) -> BatchRun:
    return BatchRun(images=raw["images"], batch_cycles=raw["batch_cycles"],
                    out_beats=raw["out_beats"],
                    compute_cycles=[p["image_cycles"] for p in raw["per_image"]],
                    computed=[p["image_computed"] for p in raw["per_image"]],
                    batch=raw["batch"], toggles=toggles, sim_cycles=raw["sim_cycles"],
                    wall_s=raw["wall_s"])


def _keep(saif: Path, keep: Path) -> None:
    """gzip ``saif`` to ``keep`` with mtime 0 (the same run gives a byte-identical file)."""
    keep.parent.mkdir(parents=True, exist_ok=True)
    tmp = keep.with_name(f".{keep.name}.tmp")
    with open(saif, "rb") as src, open(tmp, "wb") as raw, \
            gzip.GzipFile(filename=keep.name[:-3], mode="wb", fileobj=raw, compresslevel=6,
                          mtime=0) as dst:
        shutil.copyfileobj(src, dst)
    tmp.replace(keep)


def measure(build: Build, workload: Workload, workdir: Path, *,
            batches=DEFAULT_BATCHES, keep_saif: Path | None = None) -> Measurement:
    """Stream ``workload`` at two (or more) batch sizes; see the module docstring.
    ``keep_saif`` (SAIF builds) keeps the largest batch's SAIF there, gzipped."""
    batches = sorted(int(b) for b in batches)
    if len(batches) < 2 or batches[0] < 1 or len(set(batches)) != len(batches):
        raise ValueError(f"batches must be two or more distinct sizes >= 1, not {batches!r}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    frame_path = workdir / "frame.npz"
    workload.frame.save(frame_path)

    def step(b, config=True):
        np.save(workdir / f"images{b}.npy", workload.batch(b))
        return {"frame": str(frame_path), "images": str(workdir / f"images{b}.npy"),
                "config": config, "run": True, "result": str(workdir / f"result{b}.json")}

    runs = []
    if build.saif:
        for b in batches:
            (raw,) = run_steps(build, [step(b)], workdir / f"b{b}")
            saif = workdir / f"b{b}" / "dump.saif"
            toggles = int(saif_toggle_vector(saif).sum())
            if keep_saif is not None and b == batches[-1]:
                _keep(saif, keep_saif)
            saif.unlink()
            runs.append(_batch_run(raw, toggles))
    else:
        raws = run_steps(build, [step(b, config=(i == 0)) for i, b in enumerate(batches)],
                         workdir / "run")
        runs = [_batch_run(r, None) for r in raws]
    u = (~workload.frame.mask).reshape(workload.frame.mask.shape[0], -1).sum(axis=1)
    for r in runs:
        if any(list(c) != u.tolist() for c in r.computed):
            raise SimulationFailed(f"{workload.kind} C={workload.ratio}: computed counters "
                                   f"{r.computed[0]} differ from the mask's {u.tolist()}")
    return Measurement(workload.kind, workload.ratio, workload.actual_ratio, int(u.sum()),
                       int(u.max()), tuple(runs))


def measure_all(build: Build, workloads: list[Workload], workdir: Path, *,
                batches=DEFAULT_BATCHES, jobs: int = 2, keep_saif=None,
                progress=None) -> list[Measurement]:
    """:func:`measure` every workload, ``jobs`` simulator processes at a time; results in the
    order given. ``keep_saif(workload)`` returns a path to keep that point's SAIF, or None;
    ``progress()`` is called once per finished workload. Stops at the first failure."""
    workdir = Path(workdir)

    def one(w):
        tag = f"{w.kind}_c{round(w.ratio * 100):03d}"
        return measure(build, w, workdir / tag, batches=batches,
                       keep_saif=keep_saif(w) if keep_saif else None)

    results = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(one, w): i for i, w in enumerate(workloads)}
        try:
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                if progress:
                    progress()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return [results[i] for i in range(len(workloads))]


def best_of(fn, repeats: int) -> float:
    """Minimum wall time of ``fn()`` in seconds (the least-disturbed run on a shared machine)."""
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def expand_seconds(mask: np.ndarray, means: np.ndarray, instances: int, *, repeats: int = 50,
                   seed: int = 0) -> float:
    """Host cost of the compact output: seconds per image of ``Schedule.expand`` (rebuilding the
    dense map from the computed bytes and the means), min over ``repeats``."""
    from py_ref.schedule import deal

    schedule = deal(mask, instances)
    values = np.random.default_rng(seed).integers(0, 256, schedule.total, dtype=np.uint8)
    return best_of(lambda: schedule.expand(values, means), repeats)
