"""Model-only throughput: eager fp32, compiled fp32, compiled bf16, compiled int8 on a CPU (and
CUDA when present) at every bucket size, the textbook transfer-learning recipe as a baseline, and
each engine's agreement with eager fp32 and accuracy on the MNIST test images.

int8 is calibrated on the images stored with the version, or, for a version trained before
those were stored, on 256 MNIST training images (every tenth of the first 2,560).

The textbook recipe is what people write first: ResNet18 on 224x224 images replicated to three
channels, eager, batch 64 (the resize is part of its cost, as it is in such code).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision

from bench.common import median, throughput
from recognizer import artifact, network, quantize
from recognizer.engine import Engine, bf16_capable
from storage.registry import VersionInfo
from trainer.data import load_split
from trainer.training import normalize

log = logging.getLogger(__name__)

TEXTBOOK_BATCH = 64


def variants(device: torch.device) -> list[tuple[str, str, bool]]:
    """(name, precision, compile) of the engines to compare on this hardware."""
    out = [("eager_fp32", "fp32", False), ("compiled_fp32", "fp32", True)]
    if bf16_capable(device):
        out.append(("compiled_bf16", "bf16", True))
    if device.type == "cpu":  # measured with or without VNNI/AMX: the figures say what it gains
        out.append(("compiled_int8", "int8", True))
    if device.type == "cuda":
        out = [(f"cuda_{name}", precision, compiled) for name, precision, compiled in out]
    return out


def textbook_recipe(min_seconds: float) -> float:
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(TEXTBOOK_BATCH, 1, 28, 28)

    @torch.no_grad()
    def run() -> torch.Tensor:
        big = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
        return model(big)

    run()
    return throughput(run, TEXTBOOK_BATCH, min_seconds=min_seconds, min_iters=1)


def run(
    info: VersionInfo,
    weights: bytes,
    data_root: Path,
    *,
    buckets: tuple[int, ...],
    rounds: int,
    min_seconds: float,
    agreement_n: int | None,
    cache_dir: Path,
) -> dict[str, Any]:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = artifact.load_into(network.build(info.arch), weights)
    calibration = artifact.calibration(weights)
    if calibration is None:
        calibration = quantize.calibration_sample(load_split(data_root, train=True, limit=2560)[0].images)
    engines: dict[str, Engine] = {}
    for name, precision, compiled in variants(device):
        engine = Engine(
            model,
            temperature=info.temperature,
            device=str(device),
            precision=precision,
            buckets=buckets,
            compile=compiled,
            cache_dir=cache_dir,
            version=info.version,
            calibration=calibration,
        )
        log.info("warming %s (%s)", name, engine.describe())
        engine.warm()
        engines[name] = engine

    table: dict[str, dict[int, list[float]]] = {name: {b: [] for b in buckets} for name in engines}
    for size in buckets:
        x = torch.randn(size, 1, 28, 28)
        for _ in range(rounds):  # interleaved, so drifts in machine speed hit every variant alike
            for name, engine in engines.items():
                table[name][size].append(throughput(partial(engine.logits, x), size, min_seconds=min_seconds))
    model_only = {name: {str(b): median(v) for b, v in by_size.items()} for name, by_size in table.items()}

    test, _ = load_split(data_root, train=False, limit=agreement_n)
    inputs = normalize(test.images)
    predicted = {name: engine.logits(inputs).argmax(1) for name, engine in engines.items()}
    reference = predicted[next(iter(engines))]
    return {
        "model_only": model_only,
        "textbook_recipe": median([textbook_recipe(min_seconds) for _ in range(rounds)]),
        "agreement_with_eager_fp32": {name: float((p == reference).float().mean()) for name, p in predicted.items()},
        "test_accuracy": {name: float((p == test.labels).float().mean()) for name, p in predicted.items()},
        "test_n": len(test),
        "engines": {name: e.describe() for name, e in engines.items()},
        "model_version": info.version,
    }


def report(result: dict[str, Any]) -> str:
    names = list(result["model_only"])
    sizes = list(result["model_only"][names[0]])
    base = "eager_fp32" if "eager_fp32" in names else names[0]
    lines = ["model-only throughput, images/s (ratio to eager fp32)", "bucket " + "".join(f"{n:>24}" for n in names)]
    for size in sizes:
        ref = result["model_only"][base][size]
        cells = "".join(
            f"{result['model_only'][n][size]:>15.0f} ({result['model_only'][n][size] / ref:4.2f}x)" for n in names
        )
        lines.append(f"{size:>6} {cells}")
    lines.append(
        f"textbook recipe (224x224, 3 channels, eager fp32, batch {TEXTBOOK_BATCH}): "
        f"{result['textbook_recipe']:.1f} images/s"
    )
    for name in names:
        lines.append(
            f"{name}: agreement with eager fp32 {result['agreement_with_eager_fp32'][name]:.4%}, "
            f"test accuracy {result['test_accuracy'][name]:.4%} (n={result['test_n']})"
        )
    return "\n".join(lines)
