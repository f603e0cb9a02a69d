#!/usr/bin/env python3
"""`make sim`: throughput and energy of the streaming engine against the compression ratio C.

For every mask kind and ratio C (sim/workloads.py) batches of images are streamed through the
Verilator model built with SAIF tracing, every output is checked against the golden model, and
the steady state per image is measured (sim/measure.py) and modelled (sim/perf_model.py):

    results/sweep.csv                 one row per (mask kind, C)
    results/throughput_energy.png     throughput and energy per image against C
    results/REPORT.md                 tables, acceptance, what limits each point, the energy model
    results/saif/<kind>_cNNN.saif.gz  SAIF of the C = 0 and C = 0.3 points (Vivado read_saif)
    results/timing.log                wall times (untracked; the tracked files hold none)

    python scripts/sweep.py                      # the default sweep (what `make sim` runs)
    python scripts/sweep.py --height 32 --width 32 --instances 8 --kinds random
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from hdl.config import DEFAULT, ConfigError
from hdl.generate import BUILD, add_config_arguments, config_from_args
from py_ref.errors import error_line, one_line_errors
from py_ref.schedule import deal
from sim import host_timing, measure, perf_model, sweep_report, workloads
from sim.energy import EnergyModel

REPO = Path(__file__).resolve().parents[1]

DEFAULT_RATIOS = ",".join(f"{0.05 * i:.2f}" for i in range(19))      # 0, 0.05, ..., 0.90
KEEP_SAIF = (0.0, 0.3)


def parse_args(argv):
    ap = one_line_errors(argparse.ArgumentParser(prog="sweep.py",
                                                 description=__doc__.split("\n\n")[0]))
    ap.add_argument("--ratios", default=DEFAULT_RATIOS, help="comma-separated C, the first 0")
    ap.add_argument("--kinds", default="random,velcro",
                    help=f"mask kinds among {', '.join(workloads.MASK_KINDS)}")
    ap.add_argument("--out", type=Path, default=REPO / "results", help="output folder")
    add_config_arguments(ap)
    ap.add_argument("--batches", default=None, help="the two batch sizes whose difference is "
                    "the steady state (default: 1 and 6, or 1 and 7 for a point whose stream "
                    "repeats every two images: chosen per point from its period)")
    ap.add_argument("--seed", type=int, default=3, help="seed of the random data and image choice")
    ap.add_argument("--task", default="footwear", help="Fashion-MNIST task of the velcro kinds")
    ap.add_argument("--images", type=int, default=256, help="calibration images of the profile")
    ap.add_argument("--jobs", type=int, default=2, help="simulator processes in parallel")
    ap.add_argument("--no-check", action="store_true", help="report failed targets, exit 0")
    args = ap.parse_args(argv)
    try:
        args.ratio_list = [float(c) for c in args.ratios.split(",")]
        args.batch_list = (None if args.batches is None
                           else [int(b) for b in args.batches.split(",")])
    except ValueError:
        ap.error("--ratios and --batches are comma-separated numbers")
    try:    # a point whose stream repeats every two images checks again (sim.measure)
        if args.batch_list is not None:
            measure.check_batches(args.batch_list, saif=True)
    except measure.BatchesError as exc:
        ap.error(f"--batches: {exc}")
    if args.ratio_list[0] != 0 or any(not 0 <= c < 1 for c in args.ratio_list):
        ap.error("--ratios must start at 0 and lie in 0 <= C < 1")
    args.kind_list = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not args.kind_list or any(k not in workloads.MASK_KINDS for k in args.kind_list):
        ap.error(f"--kinds must be among {', '.join(workloads.MASK_KINDS)}")
    try:
        args.cfg = config_from_args(args)
    except ConfigError as exc:
        ap.error(str(exc))
    return args


def _main(argv=None) -> int:
    from sim.runner import Build, SimulationFailed
    args = parse_args(argv)
    cfg = args.cfg
    out, t = args.out, {"start": time.perf_counter()}
    # the random workloads (host-side numpy, seconds) before the build: explicit --batches are
    # checked against each point's stream period now, not after the model is built; the
    # velcro kinds' masks need a profile and are checked as they are made (sim.measure)
    images = max(args.batch_list or measure.batches_for(2, saif=True))
    host = [k for k in args.kind_list if not workloads.KINDS[k].profiled]
    early = (workloads.workloads(cfg, host, args.ratio_list, images, seed=args.seed)
             if host else {})
    if args.batch_list is not None:
        try:
            for w in (w for ws in early.values() for w in ws):
                steps = deal(w.frame.mask, cfg.instances).steps
                measure.check_batches(args.batch_list, saif=True,
                                      period=measure.window_images(cfg, steps))
        except measure.BatchesError as exc:
            print(error_line(f"--batches: {exc} (C = {w.ratio:g}, before building)", "sweep.py"),
                  file=sys.stderr)
            return 2
    build = Build(cfg, "verilator", saif=True, defer=True)
    print(f"sweep: {plan(args, cfg, build)}", file=sys.stderr, flush=True)
    build.build(progress=lambda msg: print(f"sweep: {msg}", file=sys.stderr, flush=True))
    t["build"] = time.perf_counter()
    # A private run folder (two sweeps of one shape never share group or point folders); the
    # kept SAIF files are staged in it and reach ``out`` only with the other results.
    (BUILD / "sweep").mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{cfg.tag}-run-", dir=BUILD / "sweep"))
    staging = run_dir / "keep"
    staging.mkdir()
    keep = {(k, c): f"{k}_c{round(c * 100):03d}.saif.gz"
            for k in args.kind_list for c in args.ratio_list
            if any(abs(c - s) < 1e-9 for s in KEEP_SAIF)}
    try:
        try:
            points, loads = _simulate(args, cfg, build, run_dir, staging, keep, images, early)
        except SimulationFailed as exc:
            print(f"sweep: {exc}\nA golden-model mismatch or counter error fails the sweep.",
                  file=sys.stderr)
            return 1
        except measure.BatchesError as exc:
            print(error_line(f"--batches: {exc}", "sweep.py"), file=sys.stderr)
            return 2
        t["sim"] = time.perf_counter()
        return _write(args, argv, cfg, points, loads, {staging / n: Path("saif") / n
                                                         for n in keep.values()}, t)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _signals(func):
    """Run ``func`` with SIGTERM and SIGHUP raised as py_ref.errors.Terminated; on Ctrl-C or
    those, every simulator and compiler of every thread is killed (sim.runner.kill_running)
    before the folders are removed, and the exit is 130 / 143 without a traceback."""
    def run(argv=None) -> int:
        import signal

        from py_ref.errors import Terminated, _on_sigterm
        from sim.runner import kill_running
        previous = {sig: signal.signal(sig, _on_sigterm) for sig in (signal.SIGTERM,
                                                                      signal.SIGHUP)}
        try:
            return func(argv)
        except KeyboardInterrupt:
            kill_running()
            print("sweep: interrupted", file=sys.stderr)
            return 130
        except Terminated:
            kill_running()
            print("sweep: terminated", file=sys.stderr)
            return 143
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return run


#: Wall seconds per measured point of the default design (16 x 64x64, C_in 1) with the model
#: built, two simulator processes: `make sim` took 109 s for its 38 points on the idle 2-core
#: machine (README), about 10 s of it profiling the velcro kind. A point's simulation grows
#: with the outputs N*H*W*C_in it streams; the estimate scales this figure by that.
SECONDS_PER_POINT = 2.6
PROFILE_SECONDS = 10


def plan(args, cfg, build) -> str:
    """The one-line plan and time estimate printed before anything is built or run."""
    from sim.runner import about, estimate_build

    batches = (",".join(map(str, args.batch_list)) if args.batch_list is not None
               else "chosen per point from its stream period")
    points = len(args.kind_list) * len(args.ratio_list)
    scale = ((cfg.out_channels * cfg.positions * cfg.in_channels)
             / (DEFAULT.out_channels * DEFAULT.positions * DEFAULT.in_channels))
    seconds = points * SECONDS_PER_POINT * scale * 2 / max(1, min(args.jobs, 2))
    seconds += PROFILE_SECONDS * bool(workloads.profiled_kinds(args.kind_list))
    if build.is_current():
        model = f"the cached Verilator SAIF model of {cfg.tag}"
    else:
        est = estimate_build(cfg, "verilator", generate=build.needs_generation())
        model = f"the Verilator SAIF model of {cfg.tag} (first build, {est})"
        seconds += est.seconds
    return (f"plan: {points} points ({', '.join(args.kind_list)} x {len(args.ratio_list)} "
            f"ratios C = {args.ratio_list[0]:g}..{args.ratio_list[-1]:g}), batches "
            f"{batches}, on {model}; estimate {about(seconds)} on an idle 2-core machine "
            f"(longer when loaded)")


def _simulate(args, cfg, build, run_dir, staging, keep, images, early):
    """Profile the workloads and measure them all (``early``: those already made, by kind), the
    kept SAIF files into ``staging``: (points, workloads by kind)."""
    from tqdm import tqdm

    # the host-made workloads start simulating while the profiled ones are made (torch, ~10 s)
    later = workloads.profiled_kinds(args.kind_list)
    # ``images``: enough for every point's batches (chosen per point from its period when not
    # given)
    loads, runs = {}, []
    with tqdm(total=len(args.kind_list) * len(args.ratio_list), desc="sweep", unit="point") as bar, \
            ThreadPoolExecutor(max_workers=2) as pool:
        def start(kinds):
            todo_kinds = [k for k in kinds if k not in early]
            loads.update({k: early[k] for k in kinds if k in early})
            if todo_kinds:
                loads.update(workloads.workloads(cfg, todo_kinds, args.ratio_list, images,
                                                 seed=args.seed, task=args.task,
                                                 calibration=args.images))
            todo = [w for k in kinds for w in loads[k]]
            runs.append(pool.submit(
                measure.measure_all, build, todo, run_dir / "points",
                batches=args.batch_list, jobs=args.jobs, progress=bar.update,
                keep_saif=lambda w: (staging / keep[(w.kind, w.ratio)]
                                     if (w.kind, w.ratio) in keep else None)))
        try:
            for kinds in ([k for k in args.kind_list if k not in later], later):
                if kinds:
                    start(kinds)
            return [p for r in runs for p in r.result()], loads
        except BaseException:           # before the pool waits for its threads' simulators
            from sim.runner import kill_running
            kill_running()
            raise


def _write(args, argv, cfg, points, loads, saif_files, t) -> int:
    """Analyse the measured points and write the CSV, plot, report, timing log and the kept
    SAIF files (``saif_files``: staged path -> name under ``out``): all into a folder beside
    them first, then renamed into place one after the other once every one is complete, so
    an interrupted or failed sweep leaves the previous results whole."""
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=".sweep-new-", dir=out))
    try:
        status, wall, names = _write_into(new, args, argv, cfg, points, loads,
                                          sorted(new / n for n in saif_files.values()), t)
        for staged, name in saif_files.items():
            (new / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(staged, new / name)
            names.append(name)
        for name in names:                       # every file complete: replace them together
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(new / name, out / name)
    finally:
        shutil.rmtree(new, ignore_errors=True)
    print(f"wrote {out / 'sweep.csv'}, {out / 'throughput_energy.png'}, {out / 'REPORT.md'}; {wall}")
    return status


def _write_into(out, args, argv, cfg, points, loads, saif_files, t):
    """(exit status, wall-time line, file names written) of the results written into ``out``."""
    todo = [w for k in args.kind_list for w in loads[k]]
    model = EnergyModel()
    by_kind = {k: perf_model.analyse(cfg, [p for p in points if p.kind == k], model)
               for k in args.kind_list}
    acceptance = perf_model.check_acceptance(by_kind)
    expand = {k: max(host_timing.expand_seconds(w.frame.mask, w.frame.means, cfg.instances)
                     for w in loads[k]) for k in args.kind_list}
    perf_model.write_csv(out / "sweep.csv", [r for k in args.kind_list for r in by_kind[k]])
    sweep_report.plot(out / "throughput_energy.png", by_kind, cfg, model)
    batches = args.batch_list or sorted({r.images for p in points for r in p.runs})
    profiled = workloads.profiled_kinds(args.kind_list)
    info = {"task": args.task, "calibration": args.images, "images": max(batches),
            "point": loads[profiled[0]][0].point} if profiled else None
    command = "python scripts/sweep.py" + "".join(
        f" {shlex.quote(a)}" for a in (sys.argv[1:] if argv is None else argv))
    sweep_report.write_report(out / "REPORT.md", cfg, by_kind, acceptance, model, command=command,
                              batches=batches, info=info, saif_files=sorted(saif_files))
    for kind, a in acceptance["kinds"].items():
        print(f"{kind}: worst speedup / ideal {a['worst_speedup_vs_ideal']:.4f} (C = "
              f"{a['worst_ratio']:.2f}); E/E0 = {a['fit']['intercept']:.4f} "
              f"{a['fit']['slope']:+.4f} C, R^2 = {a['fit']['r2']:.5f}")
    wall = (f"{time.perf_counter() - t['start']:.0f} s for {len(todo)} points "
            f"({t['build'] - t['start']:.0f} s build check, {t['sim'] - t['build']:.0f} s "
            "workloads + simulation); host expansion of the compact output, worst per image: "
            + ", ".join(f"{k} {1e3 * s:.3f} ms" for k, s in expand.items()))
    (out / "timing.log").write_text(wall + "\n")
    for msg in acceptance["failures"]:
        print(f"TARGET MISSED: {msg}", file=sys.stderr)
    status = 0 if acceptance["ok"] or args.no_check else 1
    return status, wall, ["sweep.csv", "throughput_energy.png", "REPORT.md", "timing.log"]


main = _signals(_main)


if __name__ == "__main__":
    sys.exit(main())
