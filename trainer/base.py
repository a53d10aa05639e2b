"""The base model: train on MNIST, score once on its test split, publish as a registry version."""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from typing import Any

import torch

from config.settings import Settings
from recognizer import artifact, network, scan
from recognizer.engine import bf16_capable, engine_for
from storage.registry import Registry, VersionInfo
from trainer.data import load_split, split_validation
from trainer.distributed import setup, teardown
from trainer.training import TrainConfig, fit, normalize, predict_logits

log = logging.getLogger(__name__)


def bf16_agreement(model: torch.nn.Module, images: torch.Tensor) -> float:
    """Share of images on which the bf16 copy of ``model`` predicts what fp32 predicts."""
    fp32 = predict_logits(model, images).argmax(1)
    bf16 = predict_logits(copy.deepcopy(model).to(torch.bfloat16), images).argmax(1)
    return float((fp32 == bf16).float().mean())


def train_base(
    settings: Settings,
    registry: Registry,
    *,
    limit: int | None = None,
    test_limit: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    world = setup(settings.device)
    root = settings.path("data_root")
    full, fingerprint = load_split(root, train=True, limit=limit)
    # Smoke runs on a few hundred images still get a validation split a fifth of their size.
    train, val = split_validation(full, min(settings.val_size, len(full) // 5), settings.seed)
    torch.manual_seed(settings.seed)
    model = network.build()
    source = network.initialise(model, settings.weights)
    config = TrainConfig(
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        seed=settings.seed,
        bf16=bf16_capable(world.device),
        progress=progress and world.main,
    )
    log.info(
        "training on %d images, validating on %d (%s), %d process(es) on %s",
        len(train),
        len(val),
        fingerprint,
        world.size,
        world.device,
    )
    result = fit(model, train, val, config, world)
    teardown(world)
    if not world.main:
        return {"rank": world.rank, "val_accuracy": result.val_accuracy}

    # The test split is read once, here, after model selection: the reported figure.
    test, test_fingerprint = load_split(root, train=False, limit=test_limit)
    test_accuracy = float((predict_logits(model, test.images).argmax(1) == test.labels).float().mean())
    metrics = {
        "val_accuracy": result.val_accuracy,
        "val_loss": result.val_loss,
        "test_accuracy": test_accuracy,
        "test_n": len(test),
        "bf16_agreement": bf16_agreement(model, val.images),
    }
    info = registry.publish(
        artifact.dump(model),
        VersionInfo(
            arch=dict(network.DEFAULT_ARCH),
            preprocess_version=scan.PREPROCESS_VERSION,
            temperature=result.temperature,
            data_fingerprint=fingerprint,
            metrics=metrics,
            parent=None,
            weights_source=source,
            status="promoted",
            reason="base model trained from MNIST",
            training={
                **dataclasses.asdict(config),
                "best_epoch": result.best_epoch,
                "seconds": result.seconds,
                "train_n": len(train),
                "world_size": world.size,
                "val_n": len(val),
                "test_fingerprint": test_fingerprint,
                "history": result.history,
            },
        ),
    )
    log.info("published %s with test accuracy %.4f", info.version, test_accuracy)
    return {
        "version": info.version,
        "test_accuracy": test_accuracy,
        "val_accuracy": result.val_accuracy,
        "bf16_agreement": metrics["bf16_agreement"],
        "temperature": result.temperature,
        "train_seconds": result.seconds,
        "best_epoch": result.best_epoch,
        "epochs": config.epochs,
    }


def evaluate_version(
    settings: Settings,
    registry: Registry,
    *,
    version: str | None = None,
    split: str = "test",
    limit: int | None = None,
) -> dict[str, Any]:
    """Accuracy of a version on an MNIST split, through the serving engine."""
    info, weights = registry.weights(version)
    engine = engine_for(info, weights, settings)
    engine.warm()
    data, fingerprint = load_split(settings.path("data_root"), train=split == "train", limit=limit)
    start = time.perf_counter()
    predicted = engine.logits(normalize(data.images)).argmax(1)
    seconds = time.perf_counter() - start
    correct = int((predicted == data.labels).sum())
    return {
        "version": info.version,
        "accuracy": correct / len(data),
        "n": len(data),
        "correct": correct,
        "split": split,
        "data_fingerprint": fingerprint,
        "engine": engine.describe(),
        "images_per_second": len(data) / seconds if seconds > 0 else None,
    }
