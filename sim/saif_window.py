"""SAIF of a chosen window of a Verilator run: the testbench opens and closes the trace.

cocotb's Verilator main (``cocotb/share/lib/verilator/verilator.cpp``) traces a whole run from
time 0 into ``dump.saif``. Energy per image needs only one steady-state image, and SAIF tracing
costs the default design about ten times the untraced simulation, so SAIF builds use a copy of
that main with one addition (:func:`write_main`): a function the testbench calls through
ctypes, ``velcro_saif_window(path)``, which

* with a path, opens a SAIF file just before the current time step is dumped (that dump
  records the initial values; toggles count from the next time step on);
* with an empty path, closes the open file just after the current time step is dumped.

So a window opened in the ReadOnly phase of clock edge ``a`` and closed in the ReadOnly phase of
edge ``b`` counts the toggles of edges ``a + 1 .. b``: ``b - a`` cycles. The main's own
``--trace`` (whole run into dump.saif) is unchanged; a run uses one or the other.

The patch is applied to the pinned cocotb's file at build time (anchors checked, so another
cocotb version fails the build loudly instead of tracing silently wrong); the executable exports
its symbols (``-rdynamic``) so Python finds the function with ``ctypes.CDLL(None)``.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

__all__ = ["main_text", "write_main", "MAIN_NAME", "SaifWindow", "WindowError", "kernel_saif",
           "kernel_period_fs"]

MAIN_NAME = "velcro_saif_main.cpp"

_DECL_ANCHOR = "static verilated_trace_t *tfp;\n"
_DECL = _DECL_ANCHOR + """\
// velcro (sim/saif_window.py): SAIF windows opened and closed by the testbench.
#include <string>
static std::string velcro_open_path;  // open before this time step's dump
static bool velcro_close_req = false;  // close after this time step's dump
extern "C" __attribute__((visibility("default"))) int velcro_saif_window(const char *path) {
    if (path && *path) {
        if (tfp || !velcro_open_path.empty()) return -1;
        velcro_open_path = path;
    } else {
        if ((!tfp && velcro_open_path.empty()) || velcro_close_req) return -1;
        velcro_close_req = true;
    }
    return 0;
}
"""
_DUMP_ANCHOR = """\
        if (tfp) {
            tfp->dump(main_time);
"""
_DUMP = """\
        if (!velcro_open_path.empty()) {
            tfp = new verilated_trace_t;
            top->trace(tfp, 99);
            tfp->open(velcro_open_path.c_str());
            velcro_open_path.clear();
        }
""" + _DUMP_ANCHOR
_CLOSE_ANCHOR = """\
        // cocotb controls the clock inputs using cbAfterDelay so
"""
_CLOSE = """\
        if (velcro_close_req) {
            tfp->close();  // not deleted, as cocotb's wrap_up does not either
            tfp = nullptr;
            velcro_close_req = false;
        }
""" + _CLOSE_ANCHOR


def main_text() -> str:
    """cocotb's Verilator main with the window control added."""
    import cocotb_tools.config

    src = cocotb_tools.config.share_dir / "lib" / "verilator" / "verilator.cpp"
    text = src.read_text()
    for anchor in (_DECL_ANCHOR, _DUMP_ANCHOR, _CLOSE_ANCHOR):
        if text.count(anchor) != 1:
            raise RuntimeError(f"{src} changed: cannot add the SAIF window control "
                               f"(anchor {anchor.strip()!r} not found exactly once)")
    return (text.replace(_DECL_ANCHOR, _DECL).replace(_DUMP_ANCHOR, _DUMP)
            .replace(_CLOSE_ANCHOR, _CLOSE))


def write_main(dest: Path) -> Path:
    """Write :func:`main_text` to ``dest`` (returned; left alone when already current)."""
    text = main_text()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists() or dest.read_text() != text:
        dest.write_text(text)
    return dest


class WindowError(RuntimeError):
    pass


class SaifWindow:
    """The running simulator's window control (call from inside a cocotb test)."""

    def __init__(self):
        try:
            self._fn = ctypes.CDLL(None).velcro_saif_window
        except AttributeError:
            raise WindowError("this simulator has no SAIF window control (a Verilator SAIF "
                              "build of sim.runner.Build is needed)") from None
        self._fn.argtypes = [ctypes.c_char_p]
        self._fn.restype = ctypes.c_int

    def open(self, path) -> None:
        if self._fn(str(path).encode()) != 0:
            raise WindowError(f"cannot open a SAIF window on {path}: one is open")

    def close(self) -> None:
        if self._fn(b"") != 0:
            raise WindowError("no SAIF window is open")


# -- the SAIF files handed to Vivado -----------------------------------------------------------

_NET_LINE = re.compile(r"^(\s*\(\S+ )\(T0 (\d+)\) \(T1 (\d+)\)(.*)$")
_TIMESCALE = re.compile(r"^\(TIMESCALE (\d+)\s*(s|ms|us|ns|ps|fs)\)$")
_FS = {"s": 10 ** 15, "ms": 10 ** 12, "us": 10 ** 9, "ns": 10 ** 6, "ps": 10 ** 3, "fs": 1}


def kernel_period_fs() -> int:
    """The kernel clock's period in fs (3,333,000: the XDC's 3.333 ns, hdl.config)."""
    from hdl.config import KERNEL_CLOCK_PERIOD_NS
    return round(KERNEL_CLOCK_PERIOD_NS * 10 ** 6)


def kernel_saif(text: str, *, cycles: int, sim_period_ns: float, top: str = "velcro_accel",
                period_fs: int | None = None, scope=None) -> str:
    """The SAIF text of a window (:class:`SaifWindow`, Verilator's writer) as Vivado should read it.

    Verilator writes ``DURATION`` and every net's ``T0`` from time 0 of the simulation, while
    ``T1`` and ``TC`` count within the window only: a window of 4097 cycles in a run of 17523
    has DURATION 175,230,000 ps, and ``read_saif`` (toggle rate = TC / DURATION) would read a
    4.3x lower activity. This rewrite gives

    * ``DURATION`` = ``cycles`` x ``period_fs`` (default: the kernel clock,
      :func:`kernel_period_fs`), in ``(TIMESCALE 1fs)`` so a half period of 3.333 ns stays
      whole (1,666,500 fs);
    * every net's ``T1`` rescaled from the simulated clock (``sim_period_ns``) to the kernel's,
      and ``T0`` = DURATION - T1 (Verilator's models are two-state: TZ = TX = 0);
    * ``TC`` unchanged (toggles per cycle do not depend on the clock; the bits that are 1 when
      the window opens still count one toggle each, as in the energy model's files);
    * the scope ``top`` (the engine simulated alone) renamed to its path in the kernel,
      ``velcro_kernel`` / ``engine`` (hdl.regmap), so Vivado's
      ``read_saif -strip_path velcro_kernel <file>`` on the kernel matches the engine's nets by
      name; Verilator's ``$rootio`` scope (the harness' copy of the top's ports) is left out.

    Refuses a file whose T1 exceeds the window (not a window of ``cycles`` cycles)."""
    from hdl.regmap import ENGINE_INSTANCE, KERNEL_NAME

    period_fs = kernel_period_fs() if period_fs is None else period_fs
    scope = (KERNEL_NAME, ENGINE_INSTANCE) if scope is None else tuple(scope)
    lines = text.splitlines()
    unit = None
    duration = cycles * period_fs
    out = []
    i = 0
    # header: up to the first INSTANCE
    while i < len(lines) and not lines[i].lstrip().startswith("(INSTANCE "):
        line = lines[i]
        m = _TIMESCALE.match(line.strip())
        if m:
            unit = int(m.group(1)) * _FS[m.group(2)]
            line = "(TIMESCALE 1fs)"
        elif line.strip().startswith("(DURATION "):
            line = f"(DURATION {duration})"
        out.append(line)
        i += 1
    if unit is None:
        raise ValueError("no TIMESCALE in the SAIF header")
    sim_units = round(sim_period_ns * 10 ** 6) / unit       # simulated period in file units
    window = cycles * sim_units
    depth = 0                                                # open parentheses of scopes/NETs
    skipping = False
    for line in lines[i:]:
        s = line.strip()
        if depth == 0 and s.startswith("(INSTANCE "):
            name = s.split()[1]
            skipping = name == "$rootio"
            if not skipping:
                if name != top:
                    raise ValueError(f"top scope {name!r}, expected {top!r}")
                out.extend(" " * (k + 1) + f"(INSTANCE {n}" for k, n in enumerate(scope))
                depth += 1
                continue
        m = _NET_LINE.match(line)
        if m:
            if not skipping:
                t1 = int(m.group(3))
                if t1 > window:
                    raise ValueError(f"T1 {t1} of {m.group(1).strip()} exceeds the window of "
                                     f"{cycles} cycles ({window:g} units)")
                t1 = round(t1 * period_fs / sim_units)
                out.append(f"{m.group(1)}(T0 {duration - t1}) (T1 {t1}){m.group(4)}")
            continue
        if s.startswith("(INSTANCE ") or s.startswith("(NET"):
            depth += 1
        elif s and set(s) == {")"}:
            if depth == 0:                                   # the SAIFILE's own ')'
                out.append(line)
                continue
            depth -= len(s)
            if depth == 0 and not skipping:
                out.append(line)
                out.extend(" " * k + ")" for k in range(len(scope) - 1, 0, -1))
                continue
        if not skipping:
            out.append(line)
    return "\n".join(out) + "\n"
