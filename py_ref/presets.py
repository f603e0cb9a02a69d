"""The paper's threshold tuples (Appendix B, Tables A1-A3) and specialised tasks (Table 1).

Tuples are given in percent, exactly as printed, keyed by model, task and the compression-
saving ratio the paper reports for them.  How a tuple maps onto torchvision 0.28's
architectures (activation points in forward order, counted by py_ref.velcro's interceptor):

- ``resnet18``: 17 points (the stem's ReLU, then each BasicBlock's one ReLU module called twice:
  ``layerL.B.relu`` after conv1+bn1 and ``layerL.B.relu#2`` after the residual add).  The paper
  leaves the first layer alone, so the 16 entries map to points 1..16 (profile with
  ``skip_first=True``).
- ``googlenet`` (aux_logits=False): 57 points (every BasicConv2d's functional F.relu: conv1,
  conv2, conv3, then the six convolutions of each of the nine Inception blocks in the order
  branch1, branch2[0], branch2[1], branch3[0], branch3[1], branch4[1]).  56 entries -> points
  1..56 (``skip_first=True``).
- ``mobilenet_v2``: 35 points (ReLU6, seen as hardtanh: features.0, features.1's depthwise,
  then expand and depthwise of features.2..17, then features.18).  35 entries -> all 35
  points, including the first (``skip_first=False``): the tuple lengths show the paper did
  not skip MobileNetV2's first layer.

Two transcription notes: in the source text the MobileNetV2 "Cars 40%" tuple is identical to
"Dogs 40%" (kept as printed), and the "Cars 27.70%" row has no MobileNetV2 entry.
"""

from __future__ import annotations

from .errors import InputError

__all__ = ["PAPER_TUPLES", "POINTS", "SKIP_FIRST", "IMAGENET_TASKS", "paper_tuple",
           "to_fractions", "check_tuple_length"]

#: Activation points of the torchvision architecture, and whether the tuple skips the first.
POINTS = {"resnet18": 17, "googlenet": 57, "mobilenet_v2": 35}
SKIP_FIRST = {"resnet18": True, "googlenet": True, "mobilenet_v2": False}

PAPER_TUPLES = {'resnet18': {'cats': {'10%': (3, 3, 4, 4, 10, 10, 10, 10, 10, 10, 10, 10, 70, 10, 80, 90),
                       '20%': (17, 16, 17, 10, 10, 20, 20, 20, 20, 20, 30, 27, 70, 10, 80, 90),
                       '27.3%': (34, 36, 30, 15, 10, 25, 20, 20, 20, 20, 30, 27, 70, 10, 80, 90),
                       '30%': (40, 40, 36, 15, 12, 25, 20, 20, 20, 20, 30, 27, 70, 10, 80, 90),
                       '40%': (70, 61, 60, 15, 12, 25, 20, 20, 20, 20, 30, 27, 70, 10, 80, 90)},
              'dogs': {'10%': (8, 8, 8, 3, 8, 9, 9, 9, 9, 9, 9, 17, 17, 6, 60, 80),
                       '20%': (21, 21, 20, 6, 10, 21, 20, 20, 20, 18, 33, 24, 30, 6, 71, 80),
                       '27.7%': (44, 28, 38, 12, 12, 21, 20, 20, 20, 20, 33, 24, 32, 10, 71, 87),
                       '30%': (49, 33, 44, 13, 12, 21, 20, 20, 20, 20, 33, 24, 32, 12, 72, 90),
                       '40%': (50, 50, 50, 50, 40, 21, 20, 20, 20, 20, 33, 24, 32, 10, 70, 90)},
              'cars': {'10%': (3, 5, 5, 10, 10, 10, 10, 10, 10, 10, 10, 12, 30, 13, 50, 80),
                       '20%': (21, 21, 20, 20, 20, 20, 10, 20, 20, 10, 10, 12, 30, 13, 50, 80),
                       '30%': (35, 30, 30, 30, 30, 30, 30, 30, 30, 10, 12, 12, 30, 30, 50, 85),
                       '40%': (50, 40, 40, 40, 40, 40, 40, 40, 40, 10, 20, 20, 35, 35, 80, 90)}},
 'googlenet': {'cats': {'10%': (8, 7, 7, 7, 7, 7, 8, 7, 7, 7, 7, 0, 0, 0, 0, 0, 0, 0, 0, 5, 6, 5, 5,
                                5, 5, 5, 5, 14, 14, 5, 5, 5, 8, 5, 5, 5, 15, 15, 15, 36, 37, 18, 20,
                                34, 34, 34, 25, 40, 34, 34, 90, 90, 96, 90, 92, 92),
                        '20%': (17, 15, 15, 15, 15, 15, 17, 15, 15, 15, 15, 19, 16, 16, 16, 16, 16,
                                16, 16, 16, 16, 16, 22, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
                                16, 17, 37, 37, 37, 36, 37, 37, 40, 34, 34, 34, 34, 40, 34, 34, 90,
                                90, 96, 90, 92, 92),
                        '30%': (34, 24, 24, 24, 24, 24, 27, 24, 24, 24, 24, 29, 25, 24, 25, 24, 24,
                                25, 26, 24, 25, 24, 33, 25, 24, 24, 24, 24, 24, 24, 24, 24, 24, 25,
                                24, 27, 56, 56, 54, 52, 56, 54, 60, 52, 52, 52, 52, 60, 52, 52, 90,
                                90, 96, 90, 92, 92),
                        '40%': (46, 32, 32, 32, 32, 32, 36, 32, 32, 32, 32, 36, 32, 32, 32, 32, 32,
                                32, 32, 32, 32, 32, 44, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32,
                                32, 36, 75, 75, 75, 75, 75, 75, 80, 75, 75, 75, 75, 80, 75, 75, 92,
                                92, 96, 92, 94, 94)},
               'dogs': {'10%': (7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 8, 8, 8, 8, 8, 8, 8, 8, 8,
                                8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 10, 20, 20, 20, 20, 20, 20, 20,
                                20, 20, 20, 20, 20, 27, 16, 72, 72, 90, 92, 90, 91),
                        '20%': (15, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
                                16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16,
                                16, 20, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 40, 55, 32, 72,
                                72, 90, 92, 90, 91),
                        '25.46%': (20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 22, 22, 20, 20,
                                   20, 22, 20, 20, 20, 20, 20, 20, 20, 20, 20, 22, 20, 20, 20, 20,
                                   20, 20, 20, 25, 50, 52, 50, 50, 50, 52, 50, 52, 50, 50, 55, 55,
                                   68, 42, 92, 90, 90, 92, 90, 91),
                        '30%': (25, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 24, 26, 24, 24, 24,
                                26, 24, 24, 24, 24, 24, 24, 24, 24, 24, 26, 24, 24, 24, 24, 24, 24,
                                24, 30, 60, 60, 60, 60, 60, 60, 60, 60, 60, 60, 65, 65, 68, 50, 92,
                                90, 90, 92, 90, 91),
                        '40%': (36, 36, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 32, 38, 36, 36, 36,
                                38, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36, 36,
                                36, 45, 70, 70, 70, 70, 70, 70, 70, 70, 70, 70, 65, 65, 68, 50, 92,
                                90, 90, 92, 90, 91)},
               'cars': {'10%': (6, 9, 9, 9, 9, 9, 15, 7, 7, 7, 7, 7, 10, 7, 8, 7, 10, 7, 7, 7, 8, 8,
                                8, 10, 8, 8, 8, 10, 8, 10, 12, 9, 7, 7, 2, 8, 10, 7, 7, 5, 12, 10,
                                30, 1, 27, 27, 30, 1, 32, 27, 23, 40, 90, 90, 95, 90),
                        '20%': (15, 20, 20, 20, 20, 20, 30, 14, 14, 14, 14, 14, 20, 14, 16, 14, 20,
                                14, 14, 14, 17, 17, 17, 20, 17, 17, 17, 20, 17, 20, 24, 18, 14, 14,
                                4, 17, 20, 14, 14, 10, 24, 20, 60, 3, 55, 55, 60, 2, 65, 55, 50, 90,
                                90, 90, 95, 90),
                        '27.70%': (20, 30, 30, 30, 30, 30, 45, 20, 20, 20, 20, 20, 30, 20, 25, 20,
                                   30, 20, 20, 20, 25, 25, 25, 30, 25, 25, 25, 30, 25, 30, 35, 25,
                                   20, 20, 7, 25, 30, 20, 30, 15, 35, 20, 60, 3, 55, 55, 60, 2, 65,
                                   55, 50, 90, 90, 90, 95, 90),
                        '30%': (24, 32, 32, 32, 32, 32, 49, 22, 22, 22, 22, 22, 32, 22, 27, 22, 33,
                                22, 22, 22, 28, 28, 27, 33, 28, 28, 27, 33, 27, 33, 38, 27, 22, 22,
                                7, 27, 32, 22, 33, 16, 38, 20, 66, 3, 60, 60, 66, 2, 71, 60, 55, 90,
                                90, 90, 94, 89),
                        '40%': (36, 44, 44, 44, 44, 44, 55, 32, 32, 32, 30, 30, 43, 30, 37, 30, 44,
                                30, 30, 30, 40, 40, 38, 44, 36, 36, 36, 44, 30, 44, 52, 37, 30, 30,
                                12, 40, 44, 40, 45, 18, 55, 30, 67, 10, 65, 65, 66, 60, 71, 60, 55,
                                90, 90, 90, 94, 89)}},
 'mobilenet_v2': {'cats': {'10%': (22, 21, 10, 11, 11, 11, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                   0, 0, 0, 0, 0, 0, 0, 0, 40, 40, 40, 40, 40, 40, 90),
                           '13.5%': (40, 40, 7, 2, 5, 2, 1, 11, 2, 10, 10, 15, 10, 15, 20, 10, 10,
                                     15, 2, 5, 5, 10, 10, 10, 10, 15, 7, 5, 40, 42, 40, 40, 40, 40,
                                     90),
                           '20%': (35, 35, 18, 17, 17, 20, 8, 8, 16, 16, 16, 16, 16, 16, 16, 16, 16,
                                   16, 4, 16, 0, 16, 3, 16, 16, 16, 23, 16, 42, 40, 40, 42, 40, 45,
                                   90),
                           '30%': (38, 38, 33, 32, 32, 31, 20, 20, 25, 31, 31, 26, 26, 26, 26, 26,
                                   26, 26, 4, 28, 0, 27, 6, 26, 26, 25, 24, 17, 42, 40, 40, 42, 40,
                                   45, 90),
                           '40%': (66, 66, 35, 17, 32, 20, 17, 38, 13, 52, 52, 64, 44, 58, 58, 42,
                                   42, 54, 13, 33, 33, 36, 36, 36, 36, 54, 26, 21, 80, 80, 80, 80,
                                   80, 80, 90)},
                  'dogs': {'10%': (20, 20, 10, 10, 10, 10, 5, 0, 10, 0, 10, 0, 0, 0, 0, 0, 0, 0, 0,
                                   0, 0, 0, 0, 0, 0, 0, 0, 0, 40, 40, 40, 40, 40, 40, 90),
                           '19.76%': (29, 29, 16, 11, 15, 18, 13, 13, 36, 35, 43, 21, 13, 5, 16, 30,
                                      23, 8, 5, 6, 0, 1, 7, 17, 10, 10, 5, 13, 40, 47, 41, 40, 42,
                                      42, 90),
                           '30%': (45, 45, 25, 27, 23, 28, 19, 19, 54, 53, 64, 31, 19, 7, 24, 45,
                                   34, 12, 7, 9, 0, 1, 10, 25, 15, 15, 7, 20, 60, 70, 61, 60, 62,
                                   62, 90),
                           '40%': (67, 67, 34, 37, 31, 38, 28, 28, 73, 71, 64, 42, 27, 9, 32, 60,
                                   45, 16, 9, 12, 0, 1, 13, 33, 20, 20, 9, 26, 65, 75, 65, 65, 65,
                                   70, 90)},
                  'cars': {'10%': (20, 20, 20, 10, 10, 10, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                   0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 20, 20, 30, 75),
                           '16.8%': (30, 31, 20, 10, 15, 15, 11, 10, 10, 21, 16, 11, 1, 0, 26, 17,
                                     21, 20, 2, 10, 0, 2, 8, 5, 5, 20, 4, 5, 2, 22, 20, 23, 20, 30,
                                     75),
                           '20%': (35, 35, 25, 12, 19, 19, 14, 13, 13, 26, 24, 13, 1, 0, 30, 17, 21,
                                   20, 2, 12, 0, 2, 9, 6, 6, 23, 5, 6, 2, 22, 20, 23, 20, 30, 75),
                           '30%': (52, 52, 42, 20, 29, 29, 21, 19, 19, 39, 36, 19, 1, 0, 45, 25, 31,
                                   30, 3, 18, 0, 2, 13, 9, 9, 34, 7, 8, 3, 22, 20, 23, 20, 30, 75),
                           '40%': (67, 67, 34, 37, 31, 38, 28, 28, 73, 71, 64, 42, 27, 9, 32, 60,
                                   45, 16, 9, 12, 0, 1, 13, 33, 20, 20, 9, 26, 65, 75, 65, 65, 65,
                                   70, 90)}}}

#: Table 1: the specialised tasks as ImageNet-1k classes (index in the standard 1000-class
#: order, WordNet id = the class folder name of an ImageNet ImageFolder, name).
IMAGENET_TASKS = {
    "cats-2": [(285, "n02124075", "Egyptian cat"), (283, "n02123394", "Persian cat")],
    "cats-3": [(285, "n02124075", "Egyptian cat"), (283, "n02123394", "Persian cat"),
               (286, "n02125311", "cougar")],
    "cats": [(285, "n02124075", "Egyptian cat"), (283, "n02123394", "Persian cat"),
             (286, "n02125311", "cougar"), (282, "n02123159", "tiger cat")],
    "dogs": [(212, "n02100735", "English setter"), (250, "n02110185", "Siberian husky"),
             (217, "n02102040", "English springer"), (177, "n02092002", "Scottish deerhound")],
    "cars": [(436, "n02814533", "beach wagon"), (468, "n02930766", "cab"),
             (511, "n03100240", "convertible"), (656, "n03770679", "minivan")],
}
IMAGENET_TASKS["cats-4"] = IMAGENET_TASKS["cats"]


def check_tuple_length(model: str, thresholds) -> None:
    """Raise InputError unless ``thresholds`` has one entry per compressible point of ``model``."""
    if model not in POINTS:
        raise InputError(f"unknown model '{model}' (known: {', '.join(POINTS)})")
    want = POINTS[model] - (1 if SKIP_FIRST[model] else 0)
    if len(thresholds) != want:
        raise InputError(f"a {model} threshold tuple needs {want} entries ({POINTS[model]} "
                          f"activation points{', first skipped' if SKIP_FIRST[model] else ''}), "
                          f"got {len(thresholds)}")


def to_fractions(percent) -> list[float]:
    """Percent (as printed in the paper) -> fractions for velcro.make_masks."""
    return [p / 100.0 for p in percent]


def paper_tuple(model: str, task: str, ratio: str) -> list[float]:
    """The paper's tuple as fractions, e.g. ``paper_tuple("resnet18", "cats", "30%")``."""
    try:
        pct = PAPER_TUPLES[model][task][ratio]
    except KeyError:
        avail = {m: {t: list(r) for t, r in d.items()} for m, d in PAPER_TUPLES.items()}
        raise InputError(f"no paper tuple for model '{model}', task '{task}', ratio '{ratio}'; "
                          f"available: {avail.get(model, list(PAPER_TUPLES))}") from None
    check_tuple_length(model, pct)
    return to_fractions(pct)
