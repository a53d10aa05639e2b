"""Real but untrained models for tests that check plumbing, not accuracy: building one takes a
second where training takes minutes on a busy machine."""

from __future__ import annotations

import torch

from recognizer import artifact, network, scan
from storage.registry import VersionInfo

__all__ = ["untrained_weights", "version_meta"]


def untrained_weights(seed: int) -> bytes:
    """The default network with seeded random weights, as safetensors bytes."""
    torch.manual_seed(seed)
    return artifact.dump(network.build())


def version_meta(**fields: object) -> VersionInfo:
    """Metadata a worker accepts (the default architecture, this code's preprocessing) plus ``fields``."""
    base: dict[str, object] = {"arch": dict(network.DEFAULT_ARCH), "preprocess_version": scan.PREPROCESS_VERSION}
    return VersionInfo(**(base | fields))  # type: ignore[arg-type]
