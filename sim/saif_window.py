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
from pathlib import Path

__all__ = ["main_text", "write_main", "MAIN_NAME", "SaifWindow", "WindowError"]

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
