"""The plot and the report of `make sim`, from the rows of :mod:`sim.perf_model`.

Everything written is computed from the measured rows; nothing is typed by hand, and nothing
depends on the run's wall time, so a rerun writes byte-identical files.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from hdl.config import KERNEL_CLOCK_MHZ, KERNEL_CLOCK_PERIOD_NS, AccelConfig
from hdl.contract import BUFFER_TURNAROUND, input_cycles, stream_floors

from .energy import HOROWITZ_45NM, EnergyModel, linear_fit
from .measure import WINDOW_IMAGE
from .perf_model import ACCEPTED_KINDS, R2_MIN, SPEEDUP_TARGET
from .workloads import KINDS

__all__ = ["plot", "write_report"]

#: kind -> (colour, marker, marker size, filled), from sim.workloads.KINDS: the kinds sit on top
#: of each other when the engine is balanced, so they differ in marker shape, size and fill,
#: not only in colour
STYLE = {k: kind.style for k, kind in KINDS.items()}
FALLBACK = ("gray", "x", 6, True)


def _si(value, _pos=None) -> str:
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= div:
            return f"{value / div:g}{suffix}"
    return f"{value:g}"


def plot(path: Path, rows_by_kind: dict, cfg: AccelConfig, model: EnergyModel) -> None:
    """Throughput (images/s), speedup / ideal and energy per image against C, ideal curves
    and fits drawn. The middle panel shows what the log-scale throughput hides: how far the
    measured speedup falls below 1/(1-C), against the acceptance target."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    mhz = model.clock_hz / 1e6
    from .perf_model import SPEEDUP_TARGET

    fig, (ax1, ax3, ax2) = plt.subplots(1, 3, figsize=(18, 5))
    c_max = max(r["actual_ratio"] for rows in rows_by_kind.values() for r in rows)
    cs = np.linspace(0, c_max, 200)
    ref = next(iter(rows_by_kind.values()))[0]["images_per_s"]
    ax1.plot(cs, ref / (1 - cs), color="0.6", lw=4, alpha=0.6,
             label="ideal: (C = 0 rate) / (1 - C)", zorder=1)
    for kind, rows in rows_by_kind.items():
        col, mk, ms, filled = STYLE.get(kind, FALLBACK)
        ax1.plot([r["actual_ratio"] for r in rows], [r["images_per_s"] for r in rows],
                 marker=mk, color=col, lw=0.8, ms=ms, mfc=col if filled else "none",
                 label=f"{kind} (measured)", zorder=2)
    ax1.set_yscale("log")
    ax1.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax1.yaxis.set_major_formatter(FuncFormatter(_si))
    ax1.yaxis.set_minor_formatter(NullFormatter())
    ax1.set_xlabel("compression ratio C (of the mask used)")
    ax1.set_ylabel(f"throughput (images/s at {mhz:.0f} MHz)")
    ax1.set_title(f"Throughput, images/s at {mhz:.0f} MHz (steady state)")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(loc="upper left", fontsize=8)

    ax3.axhline(1.0, color="0.6", lw=4, alpha=0.6, label="ideal: 1/(1-C) of the mask", zorder=1)
    ax3.axhline(SPEEDUP_TARGET, color="tab:red", lw=1, ls="--",
                label=f"target {SPEEDUP_TARGET:g}", zorder=1)
    worst = 1.0
    for kind, rows in rows_by_kind.items():
        col, mk, ms, filled = STYLE.get(kind, FALLBACK)
        ratio = [r["speedup_vs_ideal"] for r in rows]
        worst = min(worst, *ratio)
        ax3.plot([r["actual_ratio"] for r in rows], ratio, marker=mk, color=col, lw=0.8, ms=ms,
                 mfc=col if filled else "none",
                 label=f"{kind} (worst {min(ratio):.4f})", zorder=2)
    ax3.set_ylim(min(SPEEDUP_TARGET, worst) - 0.01, 1.005)
    ax3.set_xlabel("compression ratio C (of the mask used)")
    ax3.set_ylabel("speedup / ideal 1/(1-C)")
    ax3.set_title("Measured speedup against the ideal")
    ax3.grid(True, alpha=0.3)
    ax3.legend(loc="lower left", fontsize=8)

    ax2.plot(cs, 1 - cs, color="0.6", lw=4, alpha=0.6, label="proportional: 1 - C", zorder=1)
    for kind, rows in rows_by_kind.items():
        col, mk, ms, filled = STYLE.get(kind, FALLBACK)
        c = np.array([r["actual_ratio"] for r in rows])
        e = np.array([r["energy_norm"] for r in rows])
        fit = linear_fit(c, e)
        ax2.plot(c, e, marker=mk, color=col, ls="none", ms=ms, mfc=col if filled else "none",
                 label=f"{kind} (E0 = {rows[0]['energy_pj'] / 1e3:.0f} nJ/image)", zorder=2)
        ax2.plot(c, fit["intercept"] + fit["slope"] * c, color=col, lw=0.8,
                 label=f"fit {fit['intercept']:.3f} {fit['slope']:+.3f} C, R\u00b2 {fit['r2']:.4f}")
    ax2.set_xlabel("compression ratio C (of the mask used)")
    ax2.set_ylabel("energy per image / energy at C = 0")
    ax2.set_title("Energy per image (counters + SAIF toggles + static)")
    ax2.set_ylim(0, 1.1)
    ax2.grid(True, alpha=0.3)
    ax2.legend(loc="lower left", fontsize=8)
    fig.suptitle(f"VELCRO accelerator, {cfg.instances} instances, {cfg.height}x{cfg.width}, "
                 f"C_in = {cfg.in_channels}: streamed batches on Verilator, every output checked")
    fig.tight_layout()
    fig.savefig(path, dpi=120, metadata={"Software": None})
    plt.close(fig)


def _table(rows) -> list[str]:
    head = ("| C | C used | sum U | max channel U | image cyc | frame cyc | work | limit | "
            "speedup | 1/(1-C) | speedup / ideal | out bytes | images/s | GOPS | E (nJ) | E/E0 |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        out.append(
            f"| {r['ratio']:.2f} | {r['actual_ratio']:.4f} | {r['sum_u']} | {r['max_channel_u']} | "
            f"{r['image_cycles']} | {r['frame_cycles']:g} | {r['work_cycles']} | {r['limit']} | "
            f"{r['speedup']:.3f} | {r['ideal_speedup']:.3f} | {r['speedup_vs_ideal']:.4f} | "
            f"{r['out_bytes']:g} | {r['images_per_s']:,.0f} | {r['gops']:.1f} | "
            f"{r['energy_pj'] / 1e3:.1f} | {r['energy_norm']:.4f} |")
    return out


def _overtakes_compute(cfg: AccelConfig, floor: str) -> float:
    """The C beyond which ``floor`` of a stream (:func:`hdl.contract.stream_floors`) exceeds the
    compute floor, for a busiest instance of (1 - C) H W entries (the balanced share, P = N)."""
    steps = max((s for s in range(cfg.positions + 1)
                 if (f := stream_floors(cfg, s))[floor] > f["compute"]), default=0)
    return 1 - steps / cfg.positions


def write_report(path: Path, cfg: AccelConfig, rows_by_kind: dict, acceptance: dict,
                 model: EnergyModel, *, command: str, batches, info: dict | None,
                 saif_files) -> None:
    r = SimpleNamespace(cfg=cfg, rows_by_kind=rows_by_kind, acceptance=acceptance, model=model,
                        command=command, batches=batches, info=info, saif_files=saif_files,
                        path=path)
    sections = (_intro, _acceptance, _limits, _kind_tables, _algorithm_1, _energy, _saif_files,
                _rerun)
    path.write_text("\n".join(line for section in sections for line in section(r)) + "\n")


def _intro(r) -> list:
    """The title, the command, the configuration and how every figure was measured."""
    cfg, model, command, batches = r.cfg, r.model, r.command, r.batches
    L = []
    mhz = model.clock_hz / 1e6
    L.append("# Throughput and energy of the streaming engine against the compression ratio C\n")
    L.append("Generated by `scripts/sweep.py` (`make sim`) from the simulation; every figure is "
             "computed, none typed by hand, and no wall time is in this file.\n")
    L.append(f"- Command: `{command}`")
    L.append(f"- Configuration: `{cfg.to_json()}` (tag `{cfg.tag}`), the paper's array: "
             f"{cfg.instances} instances of a 3x3 conv2d + ReLU at {cfg.height}x{cfg.width}.")
    L.append(f"- Measured on Verilator, streams never stalled: after the constants (WEIGHTS, "
             f"SCHEDULE), one FRAME command of B images for B in {tuple(batches)}, one after "
             "the other (several points share a simulator process). `frame_cycles` is the steady-state cycles per image, the difference "
             "of the batches' cycles (first image beat to last output beat) over the difference of "
             "B, so the fill cancels; `image_cycles` is one image's compute phase (its first "
             "work entry to its last result, the engine's `image_cycles` counter).")
    L.append("- Every image of every batch was expanded from the compact output and compared with "
             "the golden model (`==`), and its computed counters with the mask: all passed "
             "(`golden_ok` in sweep.csv).")
    L.append(f"- Throughput at the U280 kernel clock, {mhz:.0f} MHz: images/s, and dense-equivalent "
             f"GOPS (2 x 9 x C_in operations for each of the N x H x W = "
             f"{cfg.out_channels * cfg.positions} outputs of an image, compressed ones included).\n")
    return L


def _acceptance(r) -> list:
    """The targets and each accepted kind against them."""
    acceptance = r.acceptance
    L = []
    L.append("## Acceptance\n")
    L.append(f"Targets: speedup >= {SPEEDUP_TARGET} x 1/(1 - C) (C of the mask used) at every point, "
             f"and energy per image falling linearly with C (fit R^2 >= {R2_MIN}, slope < 0), for "
             f"the kinds {', '.join(f'`{k}`' for k in ACCEPTED_KINDS)}.\n")
    for kind, a in acceptance["kinds"].items():
        fit = a["fit"]
        L.append(f"- `{kind}`: worst speedup / ideal {a['worst_speedup_vs_ideal']:.4f} at C = "
                 f"{a['worst_ratio']:.2f}; energy E/E0 = {fit['intercept']:.4f} {fit['slope']:+.4f} C, "
                 f"R^2 = {fit['r2']:.5f}.")
    L.append(f"- Result: **{'PASS' if acceptance['ok'] else 'FAIL'}**"
             + ("" if acceptance["ok"] else ": " + "; ".join(acceptance["failures"])) + "\n")
    return L


def _limits(r) -> list:
    """Which stage limits each point, and the output that shrinks with 1 - C."""
    cfg, rows_by_kind = r.cfg, r.rows_by_kind
    L = []
    L.append("## What limits each point\n")
    any_rows = next(iter(rows_by_kind.values()))
    over = sorted({round(r["frame_cycles"] - r["work_cycles"], 3)
                   for rows in rows_by_kind.values() for r in rows})
    limits = sorted({r["limit"] for rows in rows_by_kind.values() for r in rows})
    c_input, c_buffers = _overtakes_compute(cfg, "input"), _overtakes_compute(cfg, "buffers")
    L.append("Three stages stream in parallel and the slowest sets the rate "
             "(`hdl.contract.image_cycle_floors`): the datapaths' work steps x G (`work`; "
             "`steps` the busiest pair's run of the pair-aware pixel deal, at least sum U / P), "
             f"the window dealer ({input_cycles(cfg)} cycles per "
             "image: one segment record per cycle) and the output stream (one "
             f"{cfg.bus_width}-bit beat per cycle, `out bytes` / {cfg.bus_bytes}); a fourth floor, "
             "the two window buffers' turnaround "
             f"(input + work + {BUFFER_TURNAROUND}) / 2, binds images whose work is shorter "
             "than the input plus the turnaround. Measured: every point is limited by "
             f"{' and '.join(limits)}, and frame_cycles - work = {', '.join(f'{o:g}' for o in over)} "
             "cycle(s) per image (the walkers' one-cycle restart between images). "
             f"The buffers would limit only beyond C = {c_buffers:.3f}, the dealer beyond "
             f"C = {c_input:.3f}; the output "
             f"({cfg.bus_bytes} bytes per beat against {cfg.instances} outputs per {cfg.groups} "
             "cycle(s)) " + ("never does." if cfg.bus_bytes * cfg.groups >= cfg.instances
                            else "limits whenever compute does not.") + "\n")
    L.append("The output shrinks with 1 - C: only computed bytes leave, in the schedule's compact "
             "order (steps x P bytes, the few instances short of `steps` entries padding their "
             f"slots; {any_rows[0]['out_bytes']:g} bytes per image at C = 0, "
             f"{any_rows[-1]['out_bytes']:g} at C = {any_rows[-1]['ratio']:.2f}); the host "
             "rebuilds the dense map with the means (`Schedule.expand`; its cost per image is "
             "printed by the sweep and by `scripts/bench_expand.py`, wall times stay out of this "
             "file).\n")
    return L


def _kind_tables(r) -> list:
    """One table per mask kind with its energy fit."""
    rows_by_kind = r.rows_by_kind
    L = []
    for kind, rows in rows_by_kind.items():
        fit_abs = linear_fit([r["actual_ratio"] for r in rows], [r["energy_pj"] / 1e3 for r in rows])
        L.append(f"## Mask kind `{kind}`\n")
        L += _table(rows)
        L.append(f"\nEnergy per image: E = {fit_abs['intercept']:.1f} nJ {fit_abs['slope']:+.1f} nJ x C, "
                 f"R^2 = {fit_abs['r2']:.5f}.\n")
    return L


def _algorithm_1(r) -> list:
    """What the velcro kind is (Algorithm 1's own masks), when it was measured."""
    cfg, rows_by_kind, info = r.cfg, r.rows_by_kind, r.info
    L = []
    if info is not None and "velcro" in rows_by_kind:
        vel = rows_by_kind["velcro"]
        spread = max(r["max_channel_u"] / (r["sum_u"] / cfg.instances) for r in vel if r["sum_u"])
        L.append("## Algorithm 1's own masks\n")
        L.append(f"`velcro` is conv1 of the committed Fashion-MNIST CNN (py_ref/weights/fmnist_cnn.pt), "
                 f"int8-quantised as `velcro export` does, on {info['images']} validation images of "
                 f"the `{info['task']}` task; its activation point `{info['point']}` was profiled on "
                 f"{info['calibration']} calibration images and ONE percentile threshold over the "
                 "whole point [N, H, W] chose the compressed elements, as Algorithm 1 does. Channels "
                 "therefore keep very different numbers of outputs: the busiest channel holds up to "
                 f"{spread:.2f}x the mean. The engine deals the work evenly over the instances "
                 "whatever the channels hold (`py_ref.schedule.deal`), so the speedup follows "
                 "1/(1 - C) all the same" + (
                     "; `velcro-per-channel` (each channel thresholded on its own, equal work per "
                     "channel) is measured beside it for comparison." if "velcro-per-channel" in rows_by_kind
                     else ".") + "\n")
    return L


def _energy(r) -> list:
    """The energy model, its sources and assumptions, and each kind's breakdown."""
    cfg, rows_by_kind, model = r.cfg, r.rows_by_kind, r.model
    L = []
    r0 = rows_by_kind[next(iter(rows_by_kind))][0]
    L.append("## Energy model\n")
    L.append("E_image = E_events + E_toggle + E_static per image in the steady state "
             "(sim/energy.py, `image_energy`):\n")
    L.append(f"- **Events** (from the counters): per computed output {model.output_pj(cfg):.2f} pJ = "
             + ", ".join(f"{k} {v:.3f}" for k, v in model.output_ops(cfg).items())
             + f" pJ; per image, the image dealt {model.load_pj(cfg) / 1e3:.1f} nJ (its records "
             f"written into the dealer's ring once, every instance writing its windows) and the compact output {model.drain_pj(cfg, 1):.1f} pJ per beat.")
    L.append("  Source: M. Horowitz, \"Computing's energy problem (and what we can do about it)\", "
             "ISSCC 2014, 45 nm, 0.9 V: " + ", ".join(f"{k} {v} pJ" for k, v in HOROWITZ_45NM.items())
             + ". Adders of other widths interpolate linearly between 8 and 32 bits; the "
             "requantisation multiplier scales the 32x32 multiply by its partial products; SRAM "
             f"accesses cost {model.sram_pj_per_bit:.4f} pJ/bit (8 KB, 64-bit read; writes assumed "
             "equal to reads, an upper bound for the smaller real banks).")
    L.append(f"- **Toggles** (from SAIF): the toggles of every traced net bit over one image period "
             f"of the steady state (from the first input beat of the batch's image {WINDOW_IMAGE}, "
             f"counted from 0, to image {WINDOW_IMAGE + 1}'s; the bits that are 1 when the file "
             "opens, which SAIF counts as toggles, subtracted as recorded one period after the "
             "window; `sim/measure.py`), times 1/2 C V^2 = "
             f"{model.toggle_pj * 1e3:.3f} fJ (assumption: {model.net_cap_f * 1e15:.1f} fF per net "
             f"bit at 45 nm, V = {model.vdd} V). At C = 0: {r0['toggles']:,.0f} toggles per image. "
             "Memories are not traced (their energy is in the event term).")
    L.append(f"- **Static**: leakage = {model.static_fraction:.0%} of the array's dynamic power at "
             f"full MAC activity (assumption, typical of 45 nm at 0.9 V), "
             f"{model.static_pj_per_cycle(cfg):.2f} pJ per cycle, times the frame cycles.")
    for kind, rows in rows_by_kind.items():
        t_fit = linear_fit([r["actual_ratio"] for r in rows],
                           [r["toggles"] / rows[0]["toggles"] for r in rows])
        rl = rows[-1]
        L.append(f"- `{kind}`, breakdown at C = 0 / C = {rl['ratio']:.2f} (nJ): " + "; ".join(
            f"{k[:-3]} {rows[0][k] / 1e3:.1f} / {rl[k] / 1e3:.1f}"
            for k in ("compute_pj", "load_pj", "drain_pj", "toggle_pj", "static_pj"))
            + f". Switching activity alone (independent of every constant): toggles per image "
            f"{t_fit['intercept']:.3f} {t_fit['slope']:+.3f} C relative to C = 0, "
            f"R^2 = {t_fit['r2']:.4f}.")
    L.append("- The intercept at C = 1 is what every image costs whatever C is: the ifmap load, "
             "clock and control toggles, and the leakage of the cycles that remain.\n")
    return L


def _saif_files(r) -> list:
    """The kept SAIF files and how to read them in Vivado."""
    batches, saif_files, path = r.batches, r.saif_files, r.path
    L = []
    L.append("## SAIF files\n")
    for p in saif_files:
        L.append(f"- `{Path(p).relative_to(path.parent)}`")
    L.append(f"\nEach holds one image period of the steady state (the window the energy uses, "
             f"inside a FRAME of {max(batches)} images) and nothing else: DURATION is the "
             f"window's cycles at the kernel clock ({KERNEL_CLOCK_PERIOD_NS} ns, "
             f"{KERNEL_CLOCK_MHZ} MHz), T0 + T1 = DURATION for every net, times in fs; the "
             "scope is the engine's instance inside the kernel, `velcro_kernel/engine` "
             "(sim/saif_window.py `kernel_saif`). The bits that are 1 at its start count one "
             "toggle each (as in the energy's figures). In Vivado, on the kernel: `gunzip`, then "
             "`read_saif -strip_path velcro_kernel <file>.saif` and `report_power`; the named "
             "nets match, Amaranth's numbered `$N` nets of the engine simulated alone may not.\n")
    return L


def _rerun(r) -> list:
    """How to run it again."""
    L = []
    L.append("## Rerun\n")
    L.append("`make sim`, or e.g. `python scripts/sweep.py --height 32 --width 32 --instances 8 "
             "--kinds random --ratios 0,0.3,0.6,0.9` (the velcro kinds need conv1's shape, the "
             "default). `python scripts/sweep.py --help` lists the options.")
    return L
