"""The base model: train on MNIST, score once on its test split, publish as a registry version.

A freshly trained model becomes current only when it passes the promotion gate: no current
model yet, or accuracy on the same MNIST test images no worse than the current model's by more
than INKQ_BASE_TOLERANCE (both models are scored by this run, eagerly, in fp32 and at full
temperature, so the comparison is like for like; the test split is the one MNIST slice neither
model trained or selected epochs on, whatever --limit and INKQ_VAL_SIZE were). Otherwise it is
kept as rejected with the reason, unless ``make_current`` (``trainer train --make-current``)
says the operator wants it regardless. The whole run holds the registry lock.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import time
from typing import Any

import torch

from config.errors import ModelError
from config.settings import Settings
from recognizer import artifact, network, quantize, scan
from recognizer.engine import bf16_capable, engine_for
from storage.lock import Lease
from storage.registry import Registry, VersionInfo, VersionStatus
from trainer.data import Split, load_split, split_validation
from trainer.distributed import World, setup, teardown
from trainer.fieldstage import FIELD_ARCH, field_stage
from trainer.training import TrainConfig, digits_of, fit, normalize, predict_logits

log = logging.getLogger(__name__)


def fp32_digits(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """What ``model`` reads in fp32 on ``images`` (prepared): the reference both agreements
    compare with, computed once for the two."""
    return digits_of(predict_logits(model, images))


def bf16_agreement(model: torch.nn.Module, images: torch.Tensor, fp32: torch.Tensor) -> float:
    """Share of images on which the bf16 copy of ``model`` predicts what fp32 predicts (``fp32``:
    those predictions, ``fp32_digits``)."""
    bf16 = digits_of(predict_logits(copy.deepcopy(model).to(torch.bfloat16), images))
    return float((fp32 == bf16).float().mean())


def int8_agreement(
    model: torch.nn.Module, calibration: torch.Tensor, images: torch.Tensor, fp32: torch.Tensor
) -> float | None:
    """Share of ``images`` (prepared) on which an int8 copy of ``model``, calibrated on
    ``calibration`` as workers calibrate it, predicts the digit fp32 predicts (``fp32``: those
    predictions, ``fp32_digits``): what lets ``auto`` serve the version in int8
    (``quantize.INT8_MIN_AGREEMENT``). None when int8 cannot be built here, which leaves the
    version to bf16 or fp32 and is no reason to lose the training run."""
    try:
        cpu = copy.deepcopy(model).cpu().to(memory_format=torch.contiguous_format)  # as workers quantise it
        return quantize.int8_agreement(cpu, normalize(calibration.cpu()), normalize(images.cpu()), fp32.cpu())
    except Exception as exc:  # torch.export or the quantizer refusing this build: an optional figure
        log.warning("int8 agreement not measured (%s): auto will not serve this version in int8", exc)
        return None


def train_base(
    settings: Settings,
    registry: Registry,
    *,
    limit: int | None = None,
    test_limit: int | None = None,
    progress: bool = False,
    make_current: bool = False,
) -> dict[str, Any]:
    world = setup(settings.device)
    # Rank 0 alone publishes, so it alone holds the lock, from the start: a run that cannot
    # publish learns it before it trains, not after.
    lock = registry.lock(settings.lock_ttl_s, "train") if world.main else contextlib.nullcontext()
    with lock as lease:
        return _train_base(settings, registry, world, lease, limit, test_limit, progress, make_current)


def _train_base(
    settings: Settings,
    registry: Registry,
    world: World,
    lease: Lease | None,
    limit: int | None,
    test_limit: int | None,
    progress: bool,
    make_current: bool,
) -> dict[str, Any]:
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
    arch, temperature, stage = dict(network.DEFAULT_ARCH), result.temperature, None
    if settings.field_stage_fields:
        stage_config = dataclasses.replace(config, epochs=1, learning_rate=0.03, select=False)
        origin = (root, limit, len(val), settings.seed)
        model, staged, stage = field_stage(
            model, train, val, fields=settings.field_stage_fields, source=origin, config=stage_config, world=world
        )
        arch, temperature = dict(FIELD_ARCH), staged.temperature
        stage |= {"seconds": round(staged.seconds, 1), "mnist_val_accuracy": accuracy(model, val)}
    teardown(world)
    if not world.main:
        return {"rank": world.rank, "val_accuracy": result.val_accuracy}

    # The test split is read once, here, after model selection: the reported figure.
    test, test_fingerprint = load_split(root, train=False, limit=test_limit)
    test_accuracy = accuracy(model, test)
    metrics = {
        # After a field stage, the shipped model's: selection scored the ten-class one.
        "val_accuracy": stage["mnist_val_accuracy"] if stage else result.val_accuracy,
        "val_loss": result.val_loss,
        "test_accuracy": test_accuracy,
        "test_n": len(test),
    }
    fp32 = fp32_digits(model, val.images)
    metrics["bf16_agreement"] = bf16_agreement(model, val.images, fp32)
    calibration = quantize.calibration_sample(train.images)
    if (int8 := int8_agreement(model, calibration, val.images, fp32)) is not None:
        metrics["int8_agreement"] = int8
    assert lease is not None  # rank 0 holds the lock
    promoted, reason, current = gate(settings, registry, test, test_accuracy, make_current)
    info = registry.publish(
        artifact.dump(model, calibration),
        VersionInfo(
            arch=arch,
            preprocess_version=scan.PREPROCESS_VERSION,
            temperature=temperature,
            data_fingerprint=fingerprint,
            metrics=metrics,
            parent=None,
            weights_source=source,
            status=VersionStatus.PROMOTED if promoted else VersionStatus.REJECTED,
            reason=reason,
            training={
                **dataclasses.asdict(config),
                "best_epoch": result.best_epoch,
                "seconds": result.seconds,
                "train_n": len(train),
                "world_size": world.size,
                "val_n": len(val),
                "test_fingerprint": test_fingerprint,
                "history": result.history,
                "field_stage": stage,
            },
            labels_upto=0,  # MNIST only: every labelled sample is still to be learned
        ),
        make_current=promoted,
        token=lease.token,
        expect_current=current,
        check_current=promoted,
    )
    pruned = registry.prune(settings.keep_versions, token=lease.token)
    log.info("published %s (%s) with test accuracy %.4f: %s", info.version, info.status, test_accuracy, reason)
    return {
        "version": info.version,
        "promoted": promoted,
        "reason": reason,
        "current": info.version if promoted else current,
        "pruned": pruned,
        "test_accuracy": test_accuracy,
        "val_accuracy": result.val_accuracy,
        "bf16_agreement": metrics["bf16_agreement"],
        "int8_agreement": metrics.get("int8_agreement"),
        "temperature": temperature,
        "train_seconds": result.seconds,
        "field_stage": stage,
        "best_epoch": result.best_epoch,
        "epochs": config.epochs,
    }


def gate(
    settings: Settings, registry: Registry, test: Split, test_accuracy: float, force: bool
) -> tuple[bool, str, str | None]:
    """Whether the new base model may become current, why, and the current version it was judged against."""
    current = registry.current()
    if current is None:
        return True, "base model trained from MNIST (no current model to compare with)", None
    try:
        info, weights = registry.weights(current)
        theirs = accuracy(artifact.load_into(network.build(info.arch), weights), test)
    except (ModelError, ValueError) as exc:  # corrupt, pruned, or an architecture this code cannot build
        if force:
            return True, f"made current by --make-current (current {current} could not be scored: {exc})", current
        return False, f"current {current} could not be scored ({exc}); use --make-current to replace it", current
    verdict = (
        f"MNIST test accuracy {test_accuracy:.4f} vs current {current} {theirs:.4f} on the same "
        f"{len(test)} images (tolerance {settings.base_tolerance})"
    )
    if test_accuracy >= theirs - settings.base_tolerance:
        return True, verdict, current
    if force:
        return True, f"made current by --make-current although worse: {verdict}", current
    return False, f"worse than the current model: {verdict}", current


def accuracy(model: torch.nn.Module, split: Split) -> float:
    return float((digits_of(predict_logits(model, split.images)) == split.labels).float().mean())


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
    predicted = digits_of(engine.logits(normalize(data.images)))
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
