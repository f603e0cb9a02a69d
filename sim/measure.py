"""Measure workloads on the RTL: batches of images streamed back to back, steady state per image.

    build = Build(cfg, "verilator", saif=True)
    m = measure(build, workload, workdir, batches=(1, 6))
    m.frame_cycles, m.toggles_per_image, m.image_cycles

A workload (:mod:`sim.workloads`) is a frame's constants and a batch of ifmaps. For each batch
size ``b`` the library runs one FRAME command of ``b`` images after the constants and reads
``stream_cycles``, from the first image beat to the last output beat. The fill (first load, last
drain, pipeline latency) is the same for every batch size, so the steady-state cycles per image
are the difference of two batch sizes::

    frame_cycles = (stream_cycles(b2) - stream_cycles(b1)) / (b2 - b1)

Switching activity (SAIF builds) is traced only where it is needed (:mod:`sim.saif_window`): in
the larger batch, over one image period of the steady state, from the edge that accepts image
``WINDOW_IMAGE``'s first input beat to the edge that accepts the next image's (its span is
checked to equal ``frame_cycles``; when the two ifmap buffers' turnaround limits, the stream
repeats every two images and the window spans two, :func:`window_images`). Verilator's SAIF
counts a bit that is 1 when a file opens as one toggle, so the state is also recorded alone (a
zero-length window) one period after the window ends, and::

    toggles_per_image = TC(period window) - TC(state record)

The state of a streaming engine repeats from period to period except for its data and its
counters, so the correction is exact up to those bits (on the 8x8 test configuration with
identical images it agrees with the whole-run difference of two batch sizes to 0.02 %).
The configuration and the other images run untraced, about ten times faster.

Every image of every run is compared with the golden model inside the testbench
(:mod:`sim.tb_sweep`); a mismatch raises :class:`~sim.runner.SimulationFailed`. Several
workloads share one simulator process (:func:`measure_all`).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from hdl.contract import stream_limit
from py_ref.schedule import deal

from .energy import saif_toggle_vector
from .runner import Build, SimulationFailed
from .saif_window import kernel_saif
from .workloads import Workload

__all__ = ["BatchRun", "Measurement", "run_steps", "measure", "measure_all", "DEFAULT_BATCHES",
           "WINDOW_IMAGE", "window_images", "check_batches", "BatchesError", "SimulationFailed",
           "batches_for"]

#: Batch sizes whose difference gives the steady state: 1 (no overlap at all) and 6 (room for
#: the traced period and the state record after it).
DEFAULT_BATCHES = (1, 6)
#: The traced period starts at this image's first beat. Images 0 and 1 are dealt into free
#: window buffers at once, and image 2's rows enter the dealer's ring as soon as image 1's have
#: left it, before any buffer is released; image 3's rows are the first that wait for a release,
#: so the first period of the steady state starts at image 3.
WINDOW_IMAGE = 3


@dataclasses.dataclass(frozen=True)
class BatchRun:
    images: int
    stream_cycles: int         # first image beat .. last output beat
    out_beats: int             # compact output beats of the batch
    image_cycles: list         # each image's image_cycles counter
    image_computed: list       # each image's computed outputs per channel
    batch: dict                # the batch counters (hdl.results.BATCH_COUNTERS)
    sim_cycles: int
    wall_s: float


@dataclasses.dataclass(frozen=True)
class Measurement:
    kind: str
    ratio: float
    actual_ratio: float
    sum_u: int                 # uncompressed outputs per image
    max_channel_u: int
    steps: int                 # the busiest pair's run (py_ref.schedule.deal)
    runs: tuple                # BatchRun per batch size, ascending
    window_toggles: int | None = None   # TC of the traced period (SAIF builds)
    state_ones: int | None = None       # TC of the state record after it
    window_cycles: int | None = None    # the traced period's span
    window_images: int = 1              # images in it

    @property
    def _pair(self):
        return self.runs[0], self.runs[-1]

    @property
    def frame_cycles(self) -> float:
        """Steady-state cycles per image: the batch-size difference."""
        a, b = self._pair
        return (b.stream_cycles - a.stream_cycles) / (b.images - a.images)

    @property
    def image_cycles(self) -> int:
        """One image's compute phase (the engine's image_cycles counter, the same for every
        image of a batch without output stalls)."""
        return max(self.runs[-1].image_cycles)

    @property
    def toggles_per_image(self) -> float | None:
        """Net transitions of one steady-state image period (SAIF builds; see the module)."""
        if self.window_toggles is None:
            return None
        return (self.window_toggles - self.state_ones) / self.window_images

    @property
    def out_beats_per_image(self) -> float:
        a, b = self._pair
        return (b.out_beats - a.out_beats) / (b.images - a.images)


def run_steps(build: Build, steps: list[dict], test_dir: Path) -> list[dict]:
    """Run :mod:`sim.tb_sweep` steps in ONE simulator process on ``build``'s model; returns the
    result of every step that has one. Thread-safe (``Build.run`` is). A SAIF build traces
    only the steps' ``saif_windows``."""
    test_dir = Path(test_dir)
    test_dir.mkdir(parents=True, exist_ok=True)
    jobs = test_dir / "steps.json"
    jobs.write_text(json.dumps(steps))
    build.run("sim.tb_sweep", ["sweep_steps"], env={"VELCRO_SWEEP_JOBS": str(jobs)},
              test_dir=test_dir, quiet=True, trace=False)
    return [json.loads(Path(s["result"]).read_text()) for s in steps if s.get("result")]


def _batch_run(raw: dict) -> BatchRun:
    from hdl.results import BATCH_COUNTERS
    first = raw["per_image"][0]
    return BatchRun(images=raw["images"], stream_cycles=raw["stream_cycles"],
                    out_beats=raw["out_beats"],
                    image_cycles=[p["image_cycles"] for p in raw["per_image"]],
                    image_computed=[p["image_computed"] for p in raw["per_image"]],
                    batch={name: first[name] for name in BATCH_COUNTERS},
                    sim_cycles=raw["sim_cycles"], wall_s=raw["wall_s"])


def _keep(saif: Path, keep: Path, *, cycles: int, sim_period_ns: float) -> None:
    """The window ``saif`` (``cycles`` cycles of ``sim_period_ns``) as Vivado should read it
    (:func:`sim.saif_window.kernel_saif`: window-only DURATION and T0, the kernel's clock, the
    engine's scope inside velcro_kernel; TC as in ``saif``), gzipped to ``keep`` with mtime 0
    (the same run gives a byte-identical file)."""
    text = kernel_saif(Path(saif).read_text(), cycles=cycles, sim_period_ns=sim_period_ns)
    keep.parent.mkdir(parents=True, exist_ok=True)
    tmp = keep.with_name(f".{keep.name}.tmp")
    with open(tmp, "wb") as raw, \
            gzip.GzipFile(filename=keep.name[:-3], mode="wb", fileobj=raw, compresslevel=6,
                          mtime=0) as dst:
        dst.write(text.encode())
    tmp.replace(keep)


def window_images(cfg, steps: int) -> int:
    """Images in one period of the stream: 1, or 2 when the two window buffers' turnaround
    limits (hdl.contract.stream_limit), as the buffers then alternate."""
    return 2 if stream_limit(cfg, steps) == "buffers" else 1


class BatchesError(ValueError):
    """Batch sizes that cannot measure a point (:func:`check_batches`)."""


def check_batches(batches, saif: bool, period: int = 1) -> list[int]:
    """The batch sizes, sorted, if they can measure a stream whose period is ``period`` images
    (:func:`window_images`; SAIF builds trace one period and the state record after it), else
    :class:`BatchesError`."""
    batches = sorted(int(b) for b in batches)
    if len(batches) < 2 or batches[0] < 1 or len(set(batches)) != len(batches):
        raise BatchesError(f"batches must be two or more distinct sizes >= 1, not {batches!r}")
    if (batches[-1] - batches[0]) % period:
        raise BatchesError(f"batches {batches!r} must differ by a multiple of the stream's period "
                         f"of {period} images")
    if saif and batches[-1] < WINDOW_IMAGE + period + 2:
        raise BatchesError(f"a SAIF measurement needs a batch of at least "
                         f"{WINDOW_IMAGE + period + 2} images here (the traced period of "
                         f"{period} image(s) and the state record after it), not {batches!r}")
    return batches


def batches_for(period: int, saif: bool) -> list[int]:
    """The batch sizes of a point whose stream repeats every ``period`` images when none are
    given: :data:`DEFAULT_BATCHES` if they can measure it, else the same first batch and the
    smallest larger second one that can (period 2: 1 and 7)."""
    low, high = DEFAULT_BATCHES
    while True:
        try:
            return check_batches([low, high], saif, period)
        except BatchesError:
            high += 1


class _Point:
    """One workload's steps in a shared simulator process, and its measurement afterwards."""

    def __init__(self, build: Build, workload: Workload, workdir: Path, batches, keep_saif):
        self.build, self.workload, self.keep_saif = build, workload, keep_saif
        self.schedule_steps = deal(workload.frame.mask, build.cfg.instances).steps
        self.period = window_images(build.cfg, self.schedule_steps)
        self.batches = (batches_for(self.period, build.saif) if batches is None
                        else check_batches(batches, build.saif, self.period))
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        frame_path = self.dir / "frame.npz"
        workload.frame.save(frame_path)
        k, n = WINDOW_IMAGE, self.period
        self.saifs = [self.dir / f"{name}.saif" for name in ("period", "state")]
        self.steps = []
        for i, b in enumerate(self.batches):
            np.save(self.dir / f"images{b}.npy", workload.batch(b))
            step = {"frame": str(frame_path), "images": str(self.dir / f"images{b}.npy"),
                    "config": i == 0, "run": True, "result": str(self.dir / f"result{b}.json")}
            if build.saif and b == self.batches[-1]:
                step["saif_windows"] = [
                    {"path": str(self.saifs[0]), "from": k, "to": k + n},
                    {"path": str(self.saifs[1]), "from": k + n + 1, "to": k + n + 1}]
            self.steps.append(step)

    def result(self, raws: list[dict]) -> Measurement:
        w = self.workload
        runs = tuple(_batch_run(r) for r in raws)
        u = (~w.frame.mask).reshape(w.frame.mask.shape[0], -1).sum(axis=1)
        for r in runs:
            if any(list(c) != u.tolist() for c in r.image_computed):
                raise SimulationFailed(f"{w.kind} C={w.ratio}: computed counters "
                                       f"{r.image_computed[0]} differ from the mask's {u.tolist()}")
        m = Measurement(w.kind, w.ratio, w.actual_ratio, int(u.sum()), int(u.max()),
                        self.schedule_steps, runs)
        if not self.build.saif:
            return m
        tc = [int(saif_toggle_vector(p).sum()) for p in self.saifs]
        m = dataclasses.replace(m, window_toggles=tc[0], state_ones=tc[1],
                                window_cycles=raws[-1]["window_cycles"][0],
                                window_images=self.period)
        if m.window_cycles != m.frame_cycles * self.period:
            raise SimulationFailed(f"{w.kind} C={w.ratio}: the traced period of {self.period} "
                                   f"image(s) spans {m.window_cycles} cycles, the steady state "
                                   f"{m.frame_cycles} per image: not one period of the stream")
        if self.keep_saif is not None:
            _keep(self.saifs[0], self.keep_saif, cycles=m.window_cycles,
                  sim_period_ns=raws[-1]["clock_ns"])
        for p in self.saifs:
            p.unlink()
        return m


def measure(build: Build, workload: Workload, workdir: Path, *,
            batches=DEFAULT_BATCHES, keep_saif: Path | None = None) -> Measurement:
    """Stream ``workload`` at two (or more) batch sizes in one simulator process; see the module
    docstring. ``keep_saif`` (SAIF builds) keeps the traced period's SAIF there, gzipped."""
    point = _Point(build, workload, workdir, batches, keep_saif)
    return point.result(run_steps(build, point.steps, point.dir / "run"))


def _cost(w: Workload) -> float:
    """Relative simulation time of a workload: its work plus a fixed part (load, start-up)."""
    return 1.0 - w.actual_ratio + 0.15


def measure_all(build: Build, workloads: list[Workload], workdir: Path, *,
                batches=DEFAULT_BATCHES, jobs: int = 2, keep_saif=None, progress=None,
                chunks_per_job: int = 3) -> list[Measurement]:
    """:func:`measure` every workload; results in the order given. The workloads are dealt
    into ``jobs * chunks_per_job`` groups of about equal simulation time (longest first), each
    group one simulator process, ``jobs`` processes at a time. ``keep_saif(workload)`` returns
    a path to keep that point's SAIF, or None; ``progress(n)`` hears of ``n`` more finished
    workloads. Every point's batch sizes are checked (:func:`check_batches`) before anything
    is simulated; stops at the first failure."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    groups = [[] for _ in range(max(1, min(len(workloads), jobs * chunks_per_job)))]
    load = [0.0] * len(groups)
    for i in sorted(range(len(workloads)), key=lambda i: -_cost(workloads[i])):
        g = min(range(len(groups)), key=lambda g: (load[g], g))
        groups[g].append(i)
        load[g] += _cost(workloads[i])

    # every point's and every group's folder is private (mkdtemp): concurrent calls on one
    # ``workdir`` (scripts/sweep.py measures the host-made and the profiled kinds side by side)
    # never share a group's steps.json or results.xml, nor a point's batches
    def private(name):
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))

    def point(w):
        return _Point(build, w, private(f"{w.kind}_c{round(w.ratio * 100):03d}"), batches,
                      keep_saif(w) if keep_saif else None)
    points_all = [point(w) for w in workloads]

    def one(g, members):
        points = [points_all[i] for i in members]
        raws = run_steps(build, [s for p in points for s in p.steps], private(f"group{g}"))
        out, at = {}, 0
        for i, p in zip(members, points):
            out[i] = p.result(raws[at:at + len(p.steps)])
            at += len(p.steps)
        return out

    results = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        # the longest groups first, so the last to finish are short
        order = sorted(range(len(groups)), key=lambda g: -load[g])
        futures = [pool.submit(one, g, groups[g]) for g in order if groups[g]]
        try:
            for fut in as_completed(futures):
                done = fut.result()
                results.update(done)
                if progress:
                    progress(len(done))
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return [results[i] for i in range(len(workloads))]
