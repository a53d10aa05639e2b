"""Model weights <-> bytes, as safetensors (no pickle anywhere).

A version's file may also carry its int8 calibration images (``recognizer/quantize.py``) under
``CALIBRATION_KEY``, as uint8 (the prepared [0, 1] images times 255): they are not weights, so
loading the weights skips them.
"""

from __future__ import annotations

import torch
from safetensors.torch import load, save
from torch import nn

from config.errors import ArtifactCorruptError

__all__ = ["CALIBRATION_KEY", "calibration", "classes", "dump", "load_into"]

CALIBRATION_KEY = "inkq.calibration"


def dump(model: nn.Module | dict[str, torch.Tensor], calibration: torch.Tensor | None = None) -> bytes:
    """Weights, plus prepared [0, 1] calibration images (N, 1, 28, 28) when given."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    if calibration is not None:
        tensors[CALIBRATION_KEY] = (calibration.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
    return save(tensors)


def load_into(model: nn.Module, data: bytes) -> nn.Module:
    """Load safetensors bytes into ``model`` strictly: every tensor present and the right shape."""
    try:
        state = load(data)
        state.pop(CALIBRATION_KEY, None)
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ArtifactCorruptError(f"model weights do not load: {exc}") from exc
    return model


def calibration(data: bytes) -> torch.Tensor | None:
    """The calibration images stored with these weights, prepared [0, 1] float32; None if there are none."""
    try:
        images = load(data).get(CALIBRATION_KEY)
    except Exception as exc:
        raise ArtifactCorruptError(f"model file does not load: {exc}") from exc
    return None if images is None else images.float() / 255


def classes(data: bytes) -> int:
    """How many classes the network in these weights outputs: ten digits, or eleven with "reject"."""
    try:
        return int(load(data)["fc.weight"].shape[0])
    except Exception as exc:
        raise ArtifactCorruptError(f"model weights have no readable output layer: {exc}") from exc
