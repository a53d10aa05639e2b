"""A recogniser for field measurements: the registry's current model, or one trained here on
MNIST training digits and kept in a cache file so a second run does not train again."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from recognizer import artifact, network
from recognizer.engine import Engine, bf16_capable

__all__ = ["TrainedModel", "engine_from", "from_file", "train_or_load"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainedModel:
    weights: bytes
    temperature: float
    val_accuracy: float
    source: str


def train_or_load(root: Path, cache: Path, *, limit: int | None, epochs: int, val_size: int = 1000) -> TrainedModel:
    """Weights trained on the first ``limit`` MNIST training digits for ``epochs`` epochs, read
    from ``cache`` (safetensors plus a .json beside it) when a run with the same settings wrote it."""
    meta_path = cache.with_suffix(".json")
    wanted = {"limit": limit, "epochs": epochs, "val_size": val_size}
    if cache.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("settings") == wanted:
            return TrainedModel(cache.read_bytes(), meta["temperature"], meta["val_accuracy"], f"cache:{cache}")
    from trainer.data import load_split, split_validation
    from trainer.training import TrainConfig, fit

    data, fingerprint = load_split(root, train=True, limit=limit)
    train, val = split_validation(data, val_size, seed=0)
    torch.manual_seed(0)
    model = network.build()
    config = TrainConfig(epochs=epochs, learning_rate=0.05, bf16=bf16_capable(torch.device("cpu")), progress=True)
    result = fit(model, train, val, config)
    weights = artifact.dump(model)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(weights)
    meta = {"settings": wanted, "temperature": result.temperature, "val_accuracy": result.val_accuracy}
    meta_path.write_text(json.dumps(meta | {"data": fingerprint, "seconds": result.seconds}))
    return TrainedModel(weights, result.temperature, result.val_accuracy, f"trained:{fingerprint}")


def from_file(weights: Path) -> TrainedModel:
    """Weights saved by a trainer (safetensors) with the version metadata beside them, as
    ``info.json`` in the same folder or NAME.json: the temperature comes from there."""
    for meta_path in (weights.with_suffix(".json"), weights.parent / "info.json"):
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            accuracy = float(meta.get("metrics", {}).get("val_accuracy", meta.get("val_accuracy", 0.0)))
            return TrainedModel(weights.read_bytes(), float(meta["temperature"]), accuracy, f"file:{weights}")
    raise FileNotFoundError(
        f"no metadata (info.json or {weights.stem}.json) beside {weights}: its temperature is needed"
    )


def engine_from(model: TrainedModel, *, compile: bool = False, precision: str = "auto") -> Engine:
    """An engine as a worker would build it (eager by default: a short run does not pay for a
    compile). ``auto`` never takes int8 here (no measured agreement is passed); ask for it."""
    classes = artifact.classes(model.weights)
    return Engine.from_weights(
        model.weights,
        dict(network.DEFAULT_ARCH) | {"num_classes": classes},
        temperature=model.temperature,
        compile=compile,
        precision=precision,
        buckets=(1, 8, 32, 128),
    )
