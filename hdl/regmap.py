"""The kernel's interface as data: its s_axi_control register map (the one place it is
written), its AXI masters and their beats, its name and its compute units' HBM banks.

Everything else is derived from :data:`REGISTERS`: the AXI4-Lite decode of
:class:`hdl.kernel.VelcroKernel`, kernel.xml's arguments and package_kernel.tcl's registers
(``scripts/make_kernel.py``), the host's :data:`Reg` offsets and bit masks
(:mod:`hdl.kernel_host`, host_velcro.py, the cocotb testbench) and the register table of
docs/KERNEL.md (``python -m hdl.regmap --doc docs/KERNEL.md`` rewrites it;
tests/test_regmap.py checks it).

No Amaranth and no numpy here: a host program imports this module as it is.
"""

from __future__ import annotations

import numbers
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Field", "Register", "REGISTERS", "REGISTER", "Reg", "GMEM_IN", "GMEM_OUT",
           "AXI_MASTERS", "ADDR_BITS", "ACCESS", "arguments", "pointers", "field_mask",
           "text_table", "markdown_table", "update_doc", "BEAT_BYTES", "BEAT_BITS", "ALIGN", "ALIGN_BITS",
           "BUFFERS", "INPUT_BUFFERS", "CTRL_START", "CTRL_DONE", "CTRL_IDLE", "CTRL_READY",
           "CTRL_AUTO_RESTART", "FLAG_LOAD_CONFIG", "STATUS_REFUSED", "STATUS_AXI_ERROR",
           "STATUS_UNALIGNED_SHIFT", "KERNEL_NAME", "ENGINE_INSTANCE", "HBM_CHANNELS",
           "MAX_COMPUTE_UNITS", "MAX_IMAGES", "check_compute_units", "cu_names", "hbm_banks"]

ADDR_BITS = 12                       # s_axi_control: 4 KB of registers
#: One beat of the AXI4 masters: 512 bits, 64 bytes, the unit of every buffer.
BEAT_BYTES = 64
BEAT_BITS = 8 * BEAT_BYTES
#: Required alignment of every buffer address (one beat), and the low address bits it clears.
ALIGN = BEAT_BYTES
ALIGN_BITS = ALIGN.bit_length() - 1
#: The kernel's name (kernel.xml, connectivity.cfg, the Verilog top).
KERNEL_NAME = "velcro_kernel"
#: The engine's instance name inside the kernel (hdl/kernel.py): the SAIF files' scope is
#: ``velcro_kernel/engine`` (sim.saif_window.kernel_saif).
ENGINE_INSTANCE = "engine"
#: HBM pseudo-channels of the U280 (HBM[0] .. HBM[31], 256 MB each).
HBM_CHANNELS = 32
#: The AXI4 masters: inputs (ifmap, params, schedule) are read through one, the ofm written
#: through the other, so each can sit on its own HBM pseudo-channel.
GMEM_IN = "m_axi_gmem_in"
GMEM_OUT = "m_axi_gmem_out"
AXI_MASTERS = (GMEM_IN, GMEM_OUT)

#: What a host access does, per access code.
ACCESS = {
    "RW": "read/write",
    "RO": "read only (writes ignored)",
    "RTOW": "read; writing 1 toggles the bit",
}


@dataclass(frozen=True)
class Field:
    """Bits ``bit .. bit+width-1`` of a register."""
    name: str
    bit: int
    doc: str = ""
    width: int = 1

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.bit


@dataclass(frozen=True)
class Register:
    """One register. ``width`` is the bits it holds (64: a pointer, two 32-bit words, low word
    first); ``arg`` names the kernel argument it carries (kernel.xml), ``port`` the AXI master
    a pointer argument addresses; ``array`` marks a run of 32-bit words whose count depends on
    the configuration (the counters)."""
    name: str
    offset: int
    access: str
    width: int
    doc: str
    fields: tuple = ()
    arg: str | None = None
    port: str | None = None
    array: bool = False

    def __post_init__(self):
        if self.access not in ACCESS:
            raise ValueError(f"access must be one of {sorted(ACCESS)}, not {self.access!r}")
        if self.offset % 4 or not 0 < self.width <= 64 or (self.width > 32 and self.width != 64):
            raise ValueError(f"register {self.name}: offset {self.offset:#x} width {self.width}")

    @property
    def words(self) -> int:
        return 2 if self.width == 64 else 1

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")


def _pointer(name, offset, port, doc):
    return Register(name.upper(), offset, "RW", 64, f"64-bit pointer ({port}): {doc}",
                    arg=name, port=port)


REGISTERS = (
    Register("CTRL", 0x00, "RW", 8, "ap_ctrl_hs control", fields=(
        Field("ap_start", 0, "W1 starts; cleared by the kernel at ap_ready"),
        Field("ap_done", 1, "RO, clear on read"),
        Field("ap_idle", 2, "RO"),
        Field("ap_ready", 3, "RO, clear on read"),
        Field("auto_restart", 7, "RW"))),
    Register("GIE", 0x04, "RW", 1, "global interrupt enable", fields=(
        Field("enable", 0),)),
    Register("IER", 0x08, "RW", 2, "IP interrupt enable", fields=(
        Field("ap_done", 0), Field("ap_ready", 1))),
    Register("ISR", 0x0C, "RTOW", 2, "IP interrupt status (a bit is set when its event happens "
             "and its IER bit is set; interrupt = GIE and ISR != 0)", fields=(
        Field("ap_done", 0), Field("ap_ready", 1))),
    _pointer("ifmap", 0x10, GMEM_IN, "B images"),
    _pointer("params", 0x18, GMEM_IN, "the layer: LAYER and WEIGHTS commands (every "
             "channel's filters + bias/mult/shift)"),
    _pointer("schedule", 0x20, GMEM_IN, "the SCHEDULE command (host-dealt work lists)"),
    _pointer("ofm", 0x28, GMEM_OUT, "output, B images of compact output"),
    Register("FLAGS", 0x38, "RW", 32, "run options", arg="flags", fields=(
        Field("load_config", 0, "1: fetch params and schedule before the ifmap; 0: reuse those "
                                "an earlier run loaded, which survive ap_rst_n unless the reset "
                                "hit a run that was loading them"),)),
    Register("STATUS", 0x40, "RO", 32, "of the last start", fields=(
        Field("refused", 0, "an unaligned pointer: nothing was read or written, ap_done raised "
                            "at once"),
        Field("axi_error", 1, "a read or write response was not OKAY"),
        Field("unaligned", 8, "bit 8+i: pointer i was unaligned (i: 0 ifmap, 1 params, "
                              "2 schedule, 3 ofm)", width=4))),
    Register("KERNEL_CYCLES", 0x44, "RO", 32, "ap_clk cycles from ap_start to ap_done of the "
             "last run"),
    Register("IMAGES", 0x48, "RW", 16, "B, images per start (0 counts as 1)", arg="images"),
    Register("SCHEDULE_BEATS", 0x4C, "RW", 32, "beats of the schedule buffer",
             arg="schedule_beats"),
    Register("OUT_BEATS", 0x50, "RO", 32, "ofm beats written by the last run"),
    Register("PARAMS_BEATS", 0x54, "RW", 32, "beats of the params buffer (its LAYER and WEIGHTS "
             "commands, headers included)", arg="params_beats"),
    Register("IFMAP_BEATS", 0x58, "RW", 32, "beats of the ifmap buffer: B times the layer's "
             "image beats", arg="ifmap_beats"),
    Register("COUNTERS", 0x80, "RO", 32, "the engine's counters (hdl.protocol.STREAM_COUNTERS), "
             "one 32-bit word each, arrays element by element (hdl.kernel_host.counter_names)",
             array=True),
)

#: The registers by name.
REGISTER = {r.name: r for r in REGISTERS}


def _check_table():
    words = {}
    for r in REGISTERS:
        for k in range(r.words):
            at = r.offset + 4 * k
            if at in words:
                raise ValueError(f"{r.name} overlaps {words[at]} at {at:#x}")
            words[at] = r.name
        if r.array and r is not REGISTERS[-1]:
            raise ValueError(f"the array {r.name} must be the last register")
        for f in r.fields:
            if f.bit + f.width > r.width:
                raise ValueError(f"{r.name}.{f.name} lies outside its {r.width} bits")


_check_table()


class _Offsets:
    """Byte offsets of the registers, ``Reg.CTRL`` ..., and ``Reg.pointer(buffer name)``."""

    def __init__(self):
        for r in REGISTERS:
            setattr(self, r.name, r.offset)

    @staticmethod
    def pointer(name: str) -> int:
        return pointers()[name].offset


Reg = _Offsets()


def arguments() -> tuple:
    """The kernel's arguments in argument order (their offsets' order): pointers, then scalars."""
    return tuple(r for r in REGISTERS if r.arg)


def pointers() -> dict:
    """{buffer name: register} of the pointer arguments, in argument order."""
    return {r.arg: r for r in REGISTERS if r.arg and r.width == 64}


def field_mask(register: str, field: str) -> int:
    return REGISTER[register].field(field).mask


#: Buffer arguments in register-map order (0x10, 0x18, ... 64-bit pointers).
BUFFERS = tuple(pointers())
#: The order the kernel fetches its inputs in (params and schedule only if FLAGS.load_config).
INPUT_BUFFERS = ("params", "schedule", "ifmap")

CTRL_START, CTRL_DONE, CTRL_IDLE, CTRL_READY, CTRL_AUTO_RESTART = (
    field_mask("CTRL", f) for f in ("ap_start", "ap_done", "ap_idle", "ap_ready", "auto_restart"))
FLAG_LOAD_CONFIG = field_mask("FLAGS", "load_config")
STATUS_REFUSED = field_mask("STATUS", "refused")        # nothing was done
STATUS_AXI_ERROR = field_mask("STATUS", "axi_error")    # a response was not OKAY
STATUS_UNALIGNED_SHIFT = REGISTER["STATUS"].field("unaligned").bit   # + i: BUFFERS[i] unaligned

#: One pseudo-channel per AXI master of every compute unit.
MAX_COMPUTE_UNITS = HBM_CHANNELS // len(AXI_MASTERS)
#: The IMAGES register's largest B (one start of one CU).
MAX_IMAGES = (1 << REGISTER["IMAGES"].width) - 1


def check_compute_units(k) -> int:
    """``k`` if it is a valid compute-unit count, else TypeError / ValueError."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"compute units must be an int, not {k!r}")
    if not 1 <= k <= MAX_COMPUTE_UNITS:
        raise ValueError(
            f"compute units must be 1..{MAX_COMPUTE_UNITS}, not {k}: the U280 has {HBM_CHANNELS} "
            f"HBM pseudo-channels and each compute unit takes {len(AXI_MASTERS)} "
            f"({', '.join(AXI_MASTERS)})")
    return int(k)


def cu_names(k: int) -> list:
    """The compute units' instance names in connectivity.cfg's ``nk=`` line."""
    return [f"{KERNEL_NAME}_{j + 1}" for j in range(check_compute_units(k))]


def hbm_banks(k: int, channels: dict | None = None) -> dict:
    """{CU name: {AXI master: "HBM[i]" or "HBM[i:j]"}}: every master of every CU on its own
    pseudo-channels, ``channels[master]`` of them (default one each; hdl.placement.hbm_channels
    gives what a configuration needs), contiguous, in CU and master order. ValueError if they
    run past the U280's 32."""
    channels = channels or {m: 1 for m in AXI_MASTERS}
    if set(channels) != set(AXI_MASTERS) or not all(
            isinstance(n, int) and n >= 1 for n in channels.values()):
        raise ValueError(f"channels must give every AXI master {AXI_MASTERS} a count >= 1, "
                         f"not {channels!r}")
    per_cu = sum(channels.values())
    if check_compute_units(k) * per_cu > HBM_CHANNELS:
        raise ValueError(f"{k} compute units of {per_cu} HBM pseudo-channels each "
                         f"({', '.join(f'{m} {n}' for m, n in channels.items())}) need "
                         f"{k * per_cu}; the U280 has {HBM_CHANNELS}")
    out, next_bank = {}, 0
    for cu in cu_names(k):
        out[cu] = {}
        for m in AXI_MASTERS:
            n = channels[m]
            out[cu][m] = (f"HBM[{next_bank}]" if n == 1 else
                          f"HBM[{next_bank}:{next_bank + n - 1}]")
            next_bank += n
    return out


# -- documentation ---------------------------------------------------------------------------

def _describe(r: Register) -> str:
    bits = []
    for f in r.fields:
        where = str(f.bit) if f.width == 1 else f"{f.bit}..{f.bit + f.width - 1}"
        bits.append(f"{where} {f.name}" + (f" ({f.doc})" if f.doc else ""))
    text = r.doc + (": " + "; ".join(bits) if bits else "")
    return text + ("" if r.arg is None else f" [argument `{r.arg}`]")


def _offset(r: Register) -> str:
    return f"{r.offset:#04x}.." if r.array else f"{r.offset:#04x}"


def markdown_table() -> str:
    """The register map as a Markdown table (docs/KERNEL.md)."""
    rows = ["| offset | name | access | bits | description |",
            "| --- | --- | --- | --- | --- |"]
    for r in REGISTERS:
        rows.append(f"| {_offset(r)} | {r.name} | {r.access} | {r.width} | "
                    f"{_describe(r).replace('|', '/')} |")
    return "\n".join(rows)


def text_table() -> str:
    """The register map as plain text (the comment of kernel.xml)."""
    lines = ["Register map of s_axi_control (byte offsets, 32-bit words; hdl/regmap.py)"]
    for r in REGISTERS:
        lines.append(f"  {_offset(r):7s} {r.name:15s} {r.access:4s} {r.width:2d}  {_describe(r)}")
    lines.append("  access: " + ", ".join(f"{k} {v}" for k, v in ACCESS.items()))
    return "\n".join(lines)


DOC_BEGIN = "<!-- register map: generated from hdl/regmap.py by `python -m hdl.regmap --doc docs/KERNEL.md` -->"
DOC_END = "<!-- end of register map -->"


def update_doc(text: str) -> str:
    """``text`` with the part between DOC_BEGIN and DOC_END replaced by :func:`markdown_table`."""
    try:
        head, rest = text.split(DOC_BEGIN, 1)
        _, tail = rest.split(DOC_END, 1)
    except ValueError:
        raise ValueError(f"the document has no {DOC_BEGIN!r} ... {DOC_END!r} section") from None
    return f"{head}{DOC_BEGIN}\n{markdown_table()}\n{DOC_END}{tail}"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--doc":
        path = Path(argv[1])
        path.write_text(update_doc(path.read_text()))
        print(f"wrote the register map into {path}")
        return 0
    if not argv:
        print(text_table())
        return 0
    print("usage: python -m hdl.regmap [--doc FILE.md]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
