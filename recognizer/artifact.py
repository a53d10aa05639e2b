"""Model weights <-> bytes, as safetensors (no pickle anywhere)."""

from __future__ import annotations

import torch
from safetensors.torch import load, save
from torch import nn

from config.errors import ArtifactCorruptError


def dump(model: nn.Module | dict[str, torch.Tensor]) -> bytes:
    state = model.state_dict() if isinstance(model, nn.Module) else model
    return save({k: v.detach().to("cpu").contiguous() for k, v in state.items()})


def load_into(model: nn.Module, data: bytes) -> nn.Module:
    """Load safetensors bytes into ``model`` strictly: every tensor present and the right shape."""
    try:
        model.load_state_dict(load(data), strict=True)
    except Exception as exc:
        raise ArtifactCorruptError(f"model weights do not load: {exc}") from exc
    return model


def classes(data: bytes) -> int:
    """How many classes the network in these weights outputs: ten digits, or eleven with "reject"."""
    try:
        return int(load(data)["fc.weight"].shape[0])
    except Exception as exc:
        raise ArtifactCorruptError(f"model weights have no readable output layer: {exc}") from exc
