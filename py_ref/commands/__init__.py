"""`velcro profile | compress | evaluate | export`: the algorithm side of the CLI.

velcro_cli.py calls :func:`register` with its subparsers.  One module per command (profile,
compress, evaluate, export, and network for the algorithm side of `velcro network`), beside
what they share: files (the statistics and masks formats), splits (the images each command
uses), common (defaults, option checks, the library errors as CliErrors) and progress.
Every command returns an exit status and keeps py_ref/errors.py's contract: bad input
raises a CliError, which the entry point's main_guard prints as one line
``velcro: error: ...`` with exit status 2 (never a traceback); output paths are checked before
any long work, and files are written atomically (py_ref/outputs.py: no partial or overwritten
output on failure).  Progress
goes to stderr (a tqdm bar on a terminal, otherwise stage lines with the elapsed time);
stdout carries the result lines only.

    velcro profile  --model fmnist --task footwear --images 256 --out stats.pt
    velcro compress --stats stats.pt --uniform 0.3 [--structured] --out masks.pt
    velcro compress --stats stats.pt --preset cats:27.3%            (paper tuple, ImageNet models)
    velcro compress --stats stats.pt --search --out masks.pt        (tuple searched on tuning images)
    velcro evaluate --masks masks.pt                                (model and task from the masks)
    velcro export   --layer conv2 --task footwear --threshold 0.3 --out FRAME.npz
    velcro export   --layer conv4 --masks masks.pt --out FRAME.npz    (the masks compress chose)
    velcro export   --model resnet18 --weights R18.pth --data VAL --layer layer1.0.conv1 \
                    --masks masks.pt --out FRAME.npz    (BatchNorm folded; --list-layers)

Images: Fashion-MNIST calibration images are a seeded subset of the train images training never
used, validation images the test set; an ImageNet folder is split per class with ``--seed``
(the first ``--images`` of each class's seeded permutation calibrate, ``compress --search``
tunes on the next ``--tune-images``, the rest validate), and the sizes go to stderr.
``evaluate`` prints all-class and task-restricted top-1, the out-of-task rate and McNemar
tests of the compressed model against the uncompressed one (py_ref/significance.py).

``export`` writes one conv + ReLU layer as FRAME.npz: any of the fmnist CNN's five, or a 3x3
stride-1 conv + BatchNorm + ReLU of ResNet-18 / GoogLeNet (py_ref/export.py decides, by tracing
the model, and refuses the rest by name with the reason; ``--list-layers`` shows the verdicts).

A statistics file records the model, the sha256 of its weights and the task; a masks file
records the same plus the sha256 of the statistics' content (not a path), and carries the
means it substitutes, so ``evaluate`` needs no other file and refuses a model, weights, task
or ``--stats`` file that is not the one the masks were made from.
"""

from __future__ import annotations

import numpy  # noqa: F401  before torch: a missing numpy is named as such (torch only warns)

from . import compress, evaluate, export, profile
from .files import MASKS_FORMAT, STATS_FORMAT
from .network import network_setup

__all__ = ["register", "network_setup", "STATS_FORMAT", "MASKS_FORMAT"]


def register(subparsers) -> None:
    """Add the profile, compress, evaluate and export subcommands."""
    for command in (profile, compress, evaluate, export):
        command.add_parser(subparsers)
