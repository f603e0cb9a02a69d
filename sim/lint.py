"""``python -m sim.lint FILE.v``: verilator --lint-only -Wall with the documented waivers.

Exit status 0 when the only findings are the generator-made patterns waived in
hdl/lint_waivers.vlt; anything else is printed and fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from py_ref.errors import error_line

from .runner import LINT_WAIVERS
from .toolchain import setup_verilator


def lint(path: Path, top: str | None = None) -> subprocess.CompletedProcess:
    binary = setup_verilator()
    cmd = [str(binary), "--lint-only", "-Wall", str(LINT_WAIVERS), str(path)]
    if top:
        cmd += ["--top-module", top]
    return subprocess.run(cmd, capture_output=True, text=True)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (1, 2):
        print("usage: python -m sim.lint FILE.v [TOP]", file=sys.stderr)
        return 2
    path = Path(argv[0])
    if not path.exists():
        print(error_line(f"{path} does not exist (run `make verilog`)", "lint"), file=sys.stderr)
        return 2
    result = lint(path, argv[1] if len(argv) > 1 else None)
    sys.stdout.write(result.stdout + result.stderr)
    print(f"lint {'clean' if result.returncode == 0 else 'FAILED'}: {path}")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
