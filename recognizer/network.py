"""The network: torchvision's ResNet18 with a one-channel stem for 28x28 characters.

Stems (measured on the 2-core CPU, see README "Model choice"):
  - ``conv3x3``  3x3 stride-1 conv + the usual max-pool: layer1 runs at 14x14. The default.
  - ``cifar``    3x3 stride-1 conv, no max-pool: layer1 at 28x28, ~3.5x the compute.
  - ``imagenet`` torchvision's 7x7 stride-2 conv + max-pool: layer1 at 7x7, cheapest, least accurate.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file
from torch import nn

from config.errors import WeightsUnavailableError

log = logging.getLogger(__name__)

STEMS = ("conv3x3", "cifar", "imagenet")
DEFAULT_ARCH: dict[str, Any] = {"name": "resnet18", "stem": "conv3x3", "in_channels": 1, "num_classes": 10}


def build(arch: dict[str, Any] | None = None) -> nn.Module:
    """A freshly initialised network for the given architecture arguments."""
    arch = {**DEFAULT_ARCH, **(arch or {})}
    if arch["name"] != "resnet18":
        raise ValueError(f"unsupported architecture {arch['name']!r}; only resnet18 is built here")
    stem = arch["stem"]
    model = torchvision.models.resnet18(num_classes=int(arch["num_classes"]))
    channels = int(arch["in_channels"])
    if stem == "imagenet":
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    elif stem in ("conv3x3", "cifar"):
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        if stem == "cifar":
            model.maxpool = nn.Identity()
    else:
        raise ValueError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
    return model


def initialise(model: nn.Module, weights: str) -> str:
    """Load starting weights into ``model``: ``none``, ``imagenet`` or a file path.

    Returns a short description of where the weights came from, for the version metadata.
    """
    if weights == "none":
        return "none"
    if weights == "imagenet":
        state = _imagenet_state_dict()
        source = "imagenet:" + torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    else:
        state = read_state_dict(Path(weights))
        source = f"file:{Path(weights).name}"
    adapt_and_load(model, state)
    return source


def _imagenet_state_dict() -> dict[str, torch.Tensor]:
    spec = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    try:
        return spec.get_state_dict(progress=False, weights_only=True)
    except Exception as exc:  # URLError, socket errors, HTTP errors: all mean "not available here"
        cache = Path(torch.hub.get_dir()) / "checkpoints" / spec.url.rsplit("/", 1)[-1]
        raise WeightsUnavailableError(
            f"cannot get ImageNet weights for resnet18: {exc}. Offline, put the file from {spec.url} "
            f"at {cache} (or set TORCH_HOME), or pass --weights PATH or --weights none"
        ) from exc


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors file or a torch file loaded with weights_only=True."""
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailableError(f"cannot read weights from {path}: {exc}") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"{path} does not hold a state dict of tensors")
    return state


def adapt_and_load(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a (possibly 3-channel, 1000-class) ResNet18 state dict into our network.

    conv1 is collapsed to one channel by summing over RGB (a gray image is R=G=B), and resized
    to our stem's kernel by area averaging; a classifier of the wrong shape is left initialised.
    """
    own = model.state_dict()
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    conv = state.get("conv1.weight")
    if conv is not None and conv.shape != own["conv1.weight"].shape:
        target = own["conv1.weight"].shape
        if conv.shape[1] != target[1]:
            conv = conv.sum(dim=1, keepdim=True).expand(-1, target[1], -1, -1) / target[1]
        if conv.shape[2:] != target[2:]:
            # Area-average the kernel down to our size, scaled so a flat patch gives the same response.
            area = conv.shape[2] * conv.shape[3] / (target[2] * target[3])
            conv = F.adaptive_avg_pool2d(conv, tuple(target[2:])) * area
        state["conv1.weight"] = conv
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = sorted(set(own) - set(usable))
    unknown = sorted(set(state) - set(own))
    if len(usable) < len(own) // 2:
        raise WeightsUnavailableError(f"weights do not fit resnet18: only {len(usable)} of {len(own)} tensors match")
    model.load_state_dict(usable, strict=False)
    if missing:
        log.info("kept fresh initialisation for %s", ", ".join(missing))
    if unknown:
        log.info("ignored tensors not in the network: %s", ", ".join(unknown[:5]))
