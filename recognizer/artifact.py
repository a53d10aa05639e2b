"""Model weights <-> bytes, as safetensors (no pickle anywhere).

A version's file may also carry its int8 calibration images (``recognizer/quantize.py``) under
``CALIBRATION_KEY``, as uint8 (the prepared [0, 1] images times 255): they are not weights, so
loading the weights skips them. It may also carry a field-reading sequence network
(``recognizer/sequence.py``) under ``SEQUENCE_PREFIX``: one file, one checksum, one version for
both networks, so a worker never pairs a digit model with another version's line reader.
"""

from __future__ import annotations

import torch
from safetensors.torch import load, save
from torch import nn

from config.errors import ArtifactCorruptError

__all__ = [
    "CALIBRATION_KEY",
    "SEQUENCE_PREFIX",
    "calibration",
    "classes",
    "dump",
    "load_into",
    "sequence_state",
    "with_sequence",
]

CALIBRATION_KEY = "inkq.calibration"
SEQUENCE_PREFIX = "inkq.sequence."


def dump(
    model: nn.Module | dict[str, torch.Tensor],
    calibration: torch.Tensor | None = None,
    sequence: nn.Module | dict[str, torch.Tensor] | None = None,
) -> bytes:
    """Weights, plus prepared [0, 1] calibration images (N, 1, 28, 28) and a sequence network's
    weights when given."""
    tensors = _state(model)
    if calibration is not None:
        tensors[CALIBRATION_KEY] = (calibration.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).contiguous()
    if sequence is not None:
        tensors |= {SEQUENCE_PREFIX + k: v for k, v in _state(sequence).items()}
    return save(tensors)


def _state(model: nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = model.state_dict() if isinstance(model, nn.Module) else model
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def load_into(model: nn.Module, data: bytes) -> nn.Module:
    """Load safetensors bytes into ``model`` strictly: every tensor present and the right shape."""
    try:
        state = {k: v for k, v in load(data).items() if k != CALIBRATION_KEY and not k.startswith(SEQUENCE_PREFIX)}
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise ArtifactCorruptError(f"model weights do not load: {exc}") from exc
    return model


def sequence_state(data: bytes) -> dict[str, torch.Tensor] | None:
    """The sequence network's weights stored with these weights; None if there is none."""
    try:
        state = load(data)
    except Exception as exc:
        raise ArtifactCorruptError(f"model file does not load: {exc}") from exc
    found = {k.removeprefix(SEQUENCE_PREFIX): v for k, v in state.items() if k.startswith(SEQUENCE_PREFIX)}
    return found or None


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


def with_sequence(data: bytes, sequence: nn.Module | dict[str, torch.Tensor]) -> bytes:
    """The same file with ``sequence`` as its sequence network (in place of any it had)."""
    try:
        tensors = {k: v for k, v in load(data).items() if not k.startswith(SEQUENCE_PREFIX)}
    except Exception as exc:
        raise ArtifactCorruptError(f"model file does not load: {exc}") from exc
    return save(tensors | {SEQUENCE_PREFIX + k: v for k, v in _state(sequence).items()})
