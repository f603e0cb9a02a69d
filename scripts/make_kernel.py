"""``make kernel``: the U280 Vitis kernel folder (hdl/kernel_folder.py, which says what it holds).

    python scripts/make_kernel.py [--instances N --height H ...] [--cus K] [--out DIR]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hdl.kernel_folder import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
