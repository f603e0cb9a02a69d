"""``make kernel``: the U280 Vitis kernel folder (hdl/kernel_folder.py, which says what it holds).

    python scripts/make_kernel.py [--instances N --height H ...] [--cus K] [--out DIR]
"""

import sys

from hdl.kernel_folder import main

if __name__ == "__main__":
    sys.exit(main())
