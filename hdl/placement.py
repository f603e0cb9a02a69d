"""Where the compute units go on the U280 and how much HBM each needs: SLR assignment within each
SLR's DSP48E2 count, HBM pseudo-channels per AXI master from the bytes per cycle the cycle law
gives, and the clock the logic depth supports. ``make kernel`` (scripts/make_kernel.py) writes
the result into connectivity.cfg and config.json; ``make synth`` (sim/synth_report.py) counts the
card projection per SLR with the same figures.

Every figure below is either the device's (with its source) or an assumption, named as one; the
assumptions are written out in config.json and summary.json next to the numbers they produce.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from .config import AccelConfig
from .contract import stream_image_cycles
from .config import KERNEL_CLOCK_MHZ
from .protocol import image_beats
from .regmap import BEAT_BYTES, GMEM_IN, GMEM_OUT, HBM_CHANNELS
from .synthesis import HBM_GBPS, U280

__all__ = ["SLRS", "SLR_DEVICE", "SLR_RESERVE", "HBM_PC_GBPS", "HBM_CHANNELS", "LEVELS_AT_300",
           "COMPRESSIONS", "slr_budget", "assign_slrs", "hbm_need", "hbm_channels",
           "cu_dsp", "clock_supported", "assumptions", "plan"]

#: The U280's three SLRs (xcu280: three dies of the same size).
SLRS = ("SLR0", "SLR1", "SLR2")
#: One SLR's resources: the device totals (hdl.synthesis.U280, DS963) over its three equal dies,
#: e.g. 3,008 DSP48E2 per SLR.
SLR_DEVICE = {k: v // len(SLRS) for k, v in U280.items()}
#: Fraction of each SLR kept from the CUs. An assumption (platforminfo reports the platform's
#: real per-SLR figures; it is not available here): every SLR keeps 15 % for routing and the
#: interconnect; SLR0 also holds the static shell region (PCIe, XDMA, card management) and the
#: HBM memory subsystem (UG1120, U280 floorplan), taken as a further 25 % of it.
SLR_RESERVE = {"SLR0": 0.40, "SLR1": 0.15, "SLR2": 0.15}
#: One HBM2 pseudo-channel of the U280, theoretical: 460 GB/s over 32 pseudo-channels (U280 data
#: sheet DS963 / UG1314: 8 GB HBM2, 460 GB/s). An assumption for planning: a real channel
#: delivers less (refresh, page misses, the switch between channels).
HBM_PC_GBPS = HBM_GBPS / HBM_CHANNELS
#: Logic levels a 300 MHz register stage holds on UltraScale+ -2 (TOOLCHAIN.md: plan 5-6 LUT
#: levels per 3.33 ns stage).
LEVELS_AT_300 = 6
#: Compressions over which the bandwidth need is taken (the largest need counts).
COMPRESSIONS = (0.0, 0.5, 0.7, 0.8, 0.9)
#: make synth's summary (measured DSP48E2 per instance).
SUMMARY = Path(__file__).resolve().parent.parent / "results" / "synth" / "summary.json"


def clock_supported(levels: int) -> float:
    """The clock (MHz) a longest path of ``levels`` logic levels supports, by a stated rule: up
    to :data:`LEVELS_AT_300` levels the platform's 300 MHz; beyond, 300 MHz derated in
    proportion (levels x per-level delay fills the period: 300 x 6 / levels). A planning rule
    until a Vivado timing report exists, not a timing figure."""
    if not isinstance(levels, int) or levels < 1:
        raise ValueError(f"levels must be a positive int, not {levels!r}")
    if levels <= LEVELS_AT_300:
        return float(KERNEL_CLOCK_MHZ)
    return round(KERNEL_CLOCK_MHZ * LEVELS_AT_300 / levels, 1)


def slr_budget(resource: str = "DSP48E2") -> dict:
    """{SLR: the ``resource`` the CUs may use in it} after :data:`SLR_RESERVE`."""
    return {s: int(SLR_DEVICE[resource] * (1 - SLR_RESERVE[s])) for s in SLRS}


def assign_slrs(compute_units: int, dsp_per_cu: int) -> list:
    """The SLR of each CU (CU order): each goes to the SLR whose DSP48E2 budget
    (:func:`slr_budget`) is least used so far, as a fraction (SLR0, next to the HBM, first on a
    tie), so the SLRs fill evenly; ValueError if a CU fits none."""
    if not isinstance(dsp_per_cu, int) or dsp_per_cu < 0:
        raise ValueError(f"dsp_per_cu must be a non-negative int, not {dsp_per_cu!r}")
    budget = slr_budget("DSP48E2")
    left = dict(budget)
    out = []
    for j in range(compute_units):
        fits = [s for s in SLRS if left[s] >= dsp_per_cu]
        slr = min(fits, key=lambda s: (1 - left[s] / budget[s], SLRS.index(s))) if fits else None
        if slr is None:
            raise ValueError(
                f"{compute_units} compute units of {dsp_per_cu} DSP48E2 do not fit the U280's "
                f"SLRs ({', '.join(f'{s} {n}' for s, n in slr_budget().items())} DSP48E2 after "
                f"the reserve): CU {j + 1} has no room")
        left[slr] -= dsp_per_cu
        out.append(slr)
    return out


def hbm_need(cfg: AccelConfig, clock_mhz: float = KERNEL_CLOCK_MHZ) -> dict:
    """{AXI master: GB/s} one CU of ``cfg`` moves at ``clock_mhz`` at its busiest over
    :data:`COMPRESSIONS`: the input beats of an image (``m_axi_gmem_in``) and its compact output,
    (1 - C) x N x H x W bytes (``m_axi_gmem_out``), over the image's cycles by the cycle law
    (hdl.contract.stream_image_cycles), plus ``bytes_per_cycle`` of each."""
    cfg = cfg.design if hasattr(cfg, "design") else cfg
    in_bytes = image_beats(cfg) * BEAT_BYTES
    need = {GMEM_IN: 0.0, GMEM_OUT: 0.0}
    for c in COMPRESSIONS:
        kept = math.ceil((1 - c) * cfg.positions)
        cycles = stream_image_cycles(cfg, kept)
        out_bytes = math.ceil((1 - c) * cfg.out_channels * cfg.positions)
        need[GMEM_IN] = max(need[GMEM_IN], in_bytes / cycles)
        need[GMEM_OUT] = max(need[GMEM_OUT], out_bytes / cycles)
    return {m: {"bytes_per_cycle": round(b, 2), "gb_per_s": round(b * clock_mhz / 1e3, 2)}
            for m, b in need.items()}


def hbm_channels(cfg: AccelConfig, clock_mhz: float = KERNEL_CLOCK_MHZ) -> dict:
    """{AXI master: pseudo-channels} for one CU: enough that their :data:`HBM_PC_GBPS` covers
    the master's :func:`hbm_need` (at least one)."""
    return {m: max(1, math.ceil(v["gb_per_s"] / HBM_PC_GBPS))
            for m, v in hbm_need(cfg, clock_mhz).items()}


def cu_dsp(cfg: AccelConfig, summary: Path = SUMMARY) -> int:
    """DSP48E2 of one CU of ``cfg``: its ceil(P/2) pair datapaths x the DSP48E2 per pair ``make
    synth`` measured (results/synth/summary.json: the default datapath and the network
    design's). A pair is 9 x L packed taps plus its requantisers, so for lanes measured neither
    way the count is the line through the two measured points (with one point only: scaled by
    the lanes, an over-estimate); the shared logic has no DSP48E2."""
    s = json.loads(Path(summary).read_text())
    points = {s["configuration"]["lanes"]: s["per_pair"]["DSP48E2"]}
    net = s.get("network_design")
    if net:
        parts = net["per_instance_parts"]
        points[net["configuration"]["lanes"]] = parts["datapath"]["DSP48E2"] + \
            parts["walker"]["DSP48E2"]
    cfg = cfg.design if hasattr(cfg, "design") else cfg
    if cfg.lanes in points:
        per = points[cfg.lanes]
    elif len(points) > 1:
        (l0, d0), (l1, d1) = sorted(points.items())[:2]
        per = d0 + (d1 - d0) * (cfg.lanes - l0) / (l1 - l0)
    else:
        (l0, d0), = points.items()
        per = d0 * cfg.lanes / l0
    return int(math.ceil(per)) * cfg.pairs


def assumptions() -> dict:
    """The assumptions the placement and the card figures rest on, with their sources."""
    return {
        "slr_device": {"per_slr": SLR_DEVICE, "source": "U280 data sheet DS963 totals over "
                       "the xcu280's three equal SLRs (9,024 DSP48E2 = 3 x 3,008)"},
        "slr_reserve": {"fraction": SLR_RESERVE, "source": "assumption: 15 % of every SLR for "
                        "routing and interconnect, a further 25 % of SLR0 for the static shell "
                        "(PCIe, XDMA, card management) and the HBM memory subsystem; "
                        "platforminfo (not available here) gives the platform's figures"},
        "hbm_pseudo_channel_gb_per_s": {"value": round(HBM_PC_GBPS, 3), "source": "theoretical "
                                        "460 GB/s over 32 pseudo-channels (DS963, UG1314); a "
                                        "real channel delivers less"},
        "hbm_one_port_per_master": "assumption: an AXI master enters the HBM through one switch "
                                   "port, so several pseudo-channels give one master address "
                                   "range, not more than one channel's bandwidth; the bandwidth "
                                   "check counts per master",
        "clock_rule": f"<= {LEVELS_AT_300} logic levels on the longest register-to-register path: "
                      f"{KERNEL_CLOCK_MHZ} MHz (TOOLCHAIN.md, UltraScale+ -2); above, "
                      f"{KERNEL_CLOCK_MHZ} x {LEVELS_AT_300} / levels. A planning rule, not a "
                      "Vivado timing result",
    }


def plan(cfg: AccelConfig, compute_units: int, summary: Path = SUMMARY) -> dict:
    """``make kernel``'s placement of ``compute_units`` CUs of ``cfg``: each CU's SLR
    (:func:`assign_slrs` on :func:`cu_dsp`), the HBM pseudo-channels per AXI master
    (:func:`hbm_channels`) and their banks (hdl.regmap.hbm_banks), the need they are
    sized for and :func:`assumptions`. ValueError if the CUs do not fit the SLRs or the HBM."""
    from .regmap import cu_names, hbm_banks

    dsp = cu_dsp(cfg, summary)
    slrs = assign_slrs(compute_units, dsp)
    channels = hbm_channels(cfg)
    banks = hbm_banks(compute_units, channels)
    return {
        "dsp48e2_per_cu": dsp,
        "slr_dsp48e2_budget": slr_budget("DSP48E2"),
        "slr": dict(zip(cu_names(compute_units), slrs)),
        "slr_dsp48e2_used": {s: dsp * slrs.count(s) for s in SLRS},
        "hbm_need_per_cu": {**hbm_need(cfg), "clock_mhz": KERNEL_CLOCK_MHZ},
        "hbm_channels_per_master": channels,
        "hbm_banks": banks,
        "assumptions": assumptions(),
    }
