"""Activity-based energy estimate of one image: SAIF toggle counts + per-event energies + static.

    E_image = E_events + E_toggle + E_static

* ``E_events``: arithmetic and buffer (SRAM) accesses, counted from the hardware counters of
  the image (uncompressed outputs computed, the image dealt into windows, the output beats) and
  priced with the per-event energies of :data:`HOROWITZ_45NM`. The memories are not in the
  SAIF (Verilator traces no large arrays), so their energy comes from this term only.
* ``E_toggle``: every traced net bit's toggle count (SAIF ``TC``) during the frame, times the
  energy of one transition of an average net, ``1/2 * C_net * V_DD**2`` (:class:`EnergyModel`).
  This covers registers, multiplexers and wiring around the operators; it overlaps with the
  arithmetic events where operator outputs are named nets (stated in the report).
* ``E_static``: leakage, a power times the image's steady-state cycles at the target clock.

Every constant carries its source; the ones that are assumptions say so.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
import re
from pathlib import Path

import numpy as np

from hdl.config import AccelConfig
from hdl.config import KERNEL_CLOCK_MHZ
from hdl.protocol import schedule_entry_layout as entry_layout

__all__ = ["parse_saif", "saif_toggle_vector", "EnergyModel", "HOROWITZ_45NM", "image_energy",
           "linear_fit", "TARGET_CLOCK_HZ"]

#: Alveo U280 default kernel clock (Vitis platform ``ap_clk``), see shared/TOOLCHAIN.md; defined
#: once in hdl.config.
TARGET_CLOCK_HZ = KERNEL_CLOCK_MHZ * 1e6

_NET = re.compile(r"^\s*\((\S+) \(T0 \d+\) \(T1 \d+\).*\(TC (\d+)\)")
_INSTANCE = re.compile(r"^\s*\(INSTANCE (\S+)")


def parse_saif(source) -> dict[str, int]:
    """{hierarchical net bit name: TC} of a SAIF 2.0 file (path, .gz path, or the text itself).

    Scopes are joined with '/'. Verilator writes every net bit on one line
    ``(name (T0 ..) (T1 ..) (TZ ..) (TX ..) (TB ..) (TC n))``; INSTANCE blocks nest, and a
    scope closes with a line holding only ')' characters after its NET block.
    """
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source):
        path = Path(source)
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt") as f:
            lines = f.read().splitlines()
    else:
        lines = source.splitlines()
    stack: list[str] = []
    depth_at_scope: list[int] = []
    depth = 0
    nets: dict[str, int] = {}
    for line in lines:
        m = _NET.match(line)
        if m:
            nets["/".join(stack + [m.group(1)])] = int(m.group(2))
            continue
        m = _INSTANCE.match(line)
        if m:
            stack.append(m.group(1))
            depth_at_scope.append(depth)
            depth += 1
            continue
        s = line.strip()
        if s.startswith("(NET"):
            depth += 1
        elif s and set(s) == {")"}:
            for _ in s:
                depth -= 1
                if depth_at_scope and depth == depth_at_scope[-1]:
                    depth_at_scope.pop()
                    stack.pop()
    return nets


_TC = re.compile(rb"\(TC (\d+)\)")


def saif_toggle_vector(path, *, skip_first_scope: str = "$rootio") -> np.ndarray:
    """TC of every net bit in file order (int64), leaving out the top-level scope
    ``skip_first_scope`` when it comes first. Two SAIF files of the same model list the same nets
    in the same order, so their vectors subtract element-wise; ~5x faster than
    :func:`parse_saif` on the 300k nets of the default design."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if skip_first_scope:
        head = data.find(b"(INSTANCE ")
        if data.startswith(b"(INSTANCE " + skip_first_scope.encode(), head):
            nxt = data.find(b"\n (INSTANCE ", head + 1)
            data = data[nxt:] if nxt >= 0 else b""
    return np.array(_TC.findall(data), dtype=np.int64)


# -- per-event energies ------------------------------------------------------------------------

#: M. Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014,
#: Figure 1.1.9, 45 nm, 0.9 V. pJ per operation.
HOROWITZ_45NM = {
    "mult8": 0.2,          # 8-bit integer multiply
    "add8": 0.03,          # 8-bit integer add
    "add32": 0.1,          # 32-bit integer add
    "mult32": 3.1,         # 32-bit integer multiply
    "sram_8kb_read64": 10.0,  # 64-bit read of an 8 KB SRAM
}


def add_pj(bits: int) -> float:
    """Adder energy at ``bits``: linear interpolation/extrapolation between Horowitz's 8-bit
    (0.03 pJ) and 32-bit (0.1 pJ) adds (ripple/prefix adder energy grows ~linearly with width)."""
    h = HOROWITZ_45NM
    return h["add8"] + (bits - 8) * (h["add32"] - h["add8"]) / 24


def mult_pj(a_bits: int, b_bits: int) -> float:
    """Array-multiplier energy ~ partial-product count a*b: Horowitz's 32x32 (3.1 pJ) scaled."""
    return HOROWITZ_45NM["mult32"] * a_bits * b_bits / (32 * 32)


@dataclasses.dataclass(frozen=True)
class EnergyModel:
    """Energy constants. Defaults: 45 nm, 0.9 V (Horowitz ISSCC 2014) plus stated assumptions."""

    #: SRAM energy per accessed bit: Horowitz's 8 KB SRAM, 10 pJ per 64-bit read -> 0.156 pJ/bit.
    #: Assumption: writes cost the same as reads; every buffer here is <= 8 KB per bank.
    sram_pj_per_bit: float = HOROWITZ_45NM["sram_8kb_read64"] / 64
    #: Assumption: average switched capacitance of one traced net bit, 2 fF (45 nm: ~1 fF of
    #: gate load for a fan-out of 2 plus ~5 um of local wire at ~0.2 fF/um).
    net_cap_f: float = 2e-15
    #: Supply of Horowitz's 45 nm figures.
    vdd: float = 0.9
    #: Assumption: leakage power = this fraction of the array's dynamic power at full MAC activity
    #: (C = 0, compute phase); 10% is typical of a 45 nm general-purpose process at 0.9 V.
    static_fraction: float = 0.10
    clock_hz: float = TARGET_CLOCK_HZ

    @property
    def toggle_pj(self) -> float:
        """Energy dissipated per net transition, 1/2 C V^2, in pJ."""
        return 0.5 * self.net_cap_f * self.vdd ** 2 * 1e12

    def output_ops(self, cfg: AccelConfig) -> dict[str, float]:
        """pJ of one uncompressed output of one instance, by component (widths from cfg)."""
        macs = 9 * cfg.in_channels
        # adder tree of 9*L products (16-bit) per group, widths growing one bit per level
        tree = 0.0
        n, w = 9 * cfg.lanes, 16
        while n > 1:
            w += 1
            tree += (n // 2) * add_pj(w)
            n = n - n // 2
        entry_bits = entry_layout(cfg).size
        return {
            "mult": macs * HOROWITZ_45NM["mult8"],
            "adder_tree": cfg.groups * tree,
            "accumulate": cfg.groups * add_pj(cfg.acc_bits),   # acc over groups, + bias
            "requantise": mult_pj(cfg.acc_bits - 1, 16) + add_pj(cfg.scaled_bits),
            "ifmap_read": self.sram_pj_per_bit * 9 * cfg.pixel_bits * cfg.groups,
            "weight_read": self.sram_pj_per_bit * cfg.weight_bits * cfg.groups,
            "schedule_read": self.sram_pj_per_bit * entry_bits,   # one work entry per output
            "ofm_write": self.sram_pj_per_bit * 8,
        }

    def output_pj(self, cfg: AccelConfig) -> float:
        return sum(self.output_ops(cfg).values())

    def load_pj(self, cfg: AccelConfig) -> float:
        """One image through the window dealer: its segment records written into the ring once,
        and every instance's S*G windows written into its window memory."""
        ring = cfg.height * cfg.groups * cfg.row_segments * cfg.segment_bits
        windows = cfg.instances * cfg.segments * cfg.groups * cfg.window_bits
        return self.sram_pj_per_bit * (ring + windows)

    def drain_pj(self, cfg: AccelConfig, beats: float) -> float:
        """``beats`` compact output beats read from the output packer, one bus word each (the
        outputs' writes into it are in :meth:`output_ops`, ``ofm_write``)."""
        return self.sram_pj_per_bit * beats * cfg.bus_width

    def static_pj_per_cycle(self, cfg: AccelConfig) -> float:
        """Leakage per cycle: static_fraction x (P instances x one output's energy per G cycles)."""
        return self.static_fraction * cfg.instances * self.output_pj(cfg) / cfg.groups


def image_energy(cfg: AccelConfig, *, computed: int, out_beats: float, cycles: float,
                 toggles: float | None, model: EnergyModel = EnergyModel()) -> dict[str, float]:
    """pJ of one image in the steady state, by term: ``computed`` uncompressed outputs,
    ``out_beats`` compact output beats and ``cycles`` cycles per image (the measured counters),
    ``toggles`` net transitions per image (SAIF; None leaves the term out)."""
    e = {
        "compute_pj": computed * model.output_pj(cfg),
        "load_pj": model.load_pj(cfg),
        "drain_pj": model.drain_pj(cfg, out_beats),
        "toggle_pj": (toggles or 0) * model.toggle_pj,
        "static_pj": cycles * model.static_pj_per_cycle(cfg),
    }
    e["energy_pj"] = sum(e.values())
    return e


def linear_fit(x, y) -> dict[str, float]:
    """Least-squares y = intercept + slope*x with R^2 (1 - SS_res/SS_tot)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2:
        raise ValueError("a linear fit needs at least two points")
    slope, intercept = np.polyfit(x, y, 1)
    pred = intercept + slope * x
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    scale = max(1.0, float(np.sum(y ** 2)))
    if ss_tot <= 1e-24 * scale:            # constant y: a perfect fit or none
        return {"slope": float(slope), "intercept": float(intercept),
                "r2": 1.0 if ss_res <= 1e-20 * scale else -math.inf}
    r2 = 1.0 - ss_res / ss_tot
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2}
