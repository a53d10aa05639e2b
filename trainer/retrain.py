"""Fine-tuning on labelled samples and its promotion gate (`trainer watch` runs it periodically: trainer/watch.py).

A retrain fine-tunes the current model on the labelled samples not yet in a promoted model,
mixed with a replay sample of MNIST so it does not forget, then scores candidate and current
model on (a) the base validation split (never trained on) and (b) the held-out slice of all
labelled samples. The candidate is promoted only if it is better on (b) by more than
INKQ_PROMOTE_MIN_GAIN and loses at most INKQ_BASE_TOLERANCE on (a); otherwise it is kept in
the registry as rejected, with the reason, and the current model stays.

The whole run holds the registry lock; its publish is fenced by the lock's token and, for a
promotion, also requires that "current" is still the parent the candidate was judged against.
The temperature is fitted last, on the weights that ship (after the pull towards the parent).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from typing import Any

import torch

from config.settings import Settings
from recognizer import artifact, network, quantize, scan
from recognizer.engine import Engine, bf16_capable
from recognizer.sequence import sequence_reader
from storage.labels import Labels, held_out
from storage.lock import Lease
from storage.registry import Registry, VersionInfo, VersionStatus
from trainer.base import bf16_agreement, fp32_digits, int8_agreement
from trainer.data import Split
from trainer.distributed import World, setup, teardown
from trainer.labelled import labelled_split
from trainer.linetune import KEPT_OUT, line_half
from trainer.mixing import interpolate_towards_parent
from trainer.mixing import served_accuracy as accuracy
from trainer.replay import base_sets
from trainer.seqpublish import gate_pool, line_agreement
from trainer.training import TrainConfig, fit, fit_temperature, freeze, predict_logits

log = logging.getLogger(__name__)

LINE_GATE_FIELDS = 100  # fields of each kind the line agreement is measured on, as trainer.sequence --publish does


def retrain(settings: Settings, registry: Registry, labels: Labels, *, progress: bool = False) -> dict[str, Any]:
    """One fine-tuning run under the retrain lock; returns the JSON summary.

    Under torchrun every rank fine-tunes its shard; rank 0 holds the lock and publishes.
    """
    world = setup(settings.device)
    try:
        if not world.main:
            return _retrain(settings, registry, labels, progress=False, world=world, lease=None)
        with registry.lock(settings.lock_ttl_s, "retrain") as lease:
            return _retrain(settings, registry, labels, progress=progress, world=world, lease=lease)
    finally:
        teardown(world)


def line_int8_agreement(
    settings: Settings, state: dict[str, torch.Tensor] | None, calibration: torch.Tensor | None
) -> float | None:
    """The shipped line reader's int8 agreement with fp32 (trainer.seqpublish.line_agreement, on
    the same kept-out digits), measured again: the figure holds for one line reader with one set
    of calibration digits, and a retrain changes one or both. None without a line reader."""
    reader = sequence_reader(state)
    if reader is None:
        return None
    return line_agreement(reader.model, calibration, gate_pool(settings.path("data_root"), KEPT_OUT), LINE_GATE_FIELDS)


def ship(model: torch.nn.Module, parent: torch.nn.Module, selection: Split, val: Split) -> tuple[float, float]:
    """Pull the fine-tuned ``model`` back towards its parent, then fit the temperature on exactly
    those weights (fitting it before the pull calibrates a model that never ships). Returns the
    mixing weight and the temperature."""
    # No worse than the parent on the selection images: the gate's own tolerance is then left
    # for the noise between that set and the held-out one.
    mix = interpolate_towards_parent(model, parent, selection, 0.0)
    return mix, fit_temperature(predict_logits(model, val.images), val.labels)


def _retrain(
    settings: Settings, registry: Registry, labels: Labels, *, progress: bool, world: World, lease: Lease | None
) -> dict[str, Any]:
    start = time.perf_counter()
    phases = Phases()
    parent, parent_weights = registry.weights()
    seen_upto = labels.latest_seq()
    everything = labels.all()
    fresh = [s for s in labels.since(labels.watermark("used")) if s.seq <= seen_upto]
    train_samples = [s for s in fresh if not held_out(s.digest, settings.holdout_fraction)]
    holdout_samples = [s for s in everything if s.seq <= seen_upto and held_out(s.digest, settings.holdout_fraction)]
    summary: dict[str, Any] = {
        "version": None,
        "promoted": False,
        "parent": parent.version,
        "new_labels": len(train_samples),
        "heldout_labels": len(holdout_samples),
    }
    if not train_samples:
        labels.set_watermark(seen_upto, "tried")
        return summary | {"reason": "no new labelled samples to learn from"}
    if not holdout_samples:
        return summary | {"reason": "no held-out labelled samples to judge a candidate by: label more samples"}

    # The parent's engine cuts labelled fields into characters: built only when a field is labelled.
    fields = any(s.text is not None for s in train_samples + holdout_samples)
    reader = (
        Engine.from_weights(parent_weights, parent.arch, temperature=parent.temperature, compile=False)
        if fields
        else None
    )
    new_data = labelled_split(labels, train_samples, settings, reader)
    held_data = labelled_split(labels, holdout_samples, settings, reader)
    new, heldout = new_data.split, held_data.split
    summary |= {
        "field_samples": new_data.fields + held_data.fields,
        "unaligned_fields": new_data.unaligned + held_data.unaligned,
    }
    base = base_sets(settings, seen_upto, len(new))
    base_heldout, replay_n = base.heldout, len(base.replay)
    mixed = Split(torch.cat([new.images, base.replay.images]), torch.cat([new.labels, base.replay.labels]))

    phases.mark("prepare")
    model = artifact.load_into(network.build(parent.arch), parent_weights)
    before = {"base_heldout_accuracy": accuracy(model, base_heldout), "new_heldout_accuracy": accuracy(model, heldout)}
    config = TrainConfig(
        epochs=settings.retrain_epochs,
        batch_size=min(settings.batch_size, 64),
        learning_rate=settings.retrain_learning_rate,
        seed=settings.seed + seen_upto,
        ema_decay=0.9,
        bf16=bf16_capable(world.device),
        progress=progress,
        select=False,
    )
    phases.mark("score_before")
    freeze(model, settings.retrain_frozen)
    result = fit(model, mixed, base_heldout, config, world)
    for p in model.parameters():
        p.requires_grad = True
    phases.mark("train")
    if not world.main:
        return summary | {"rank": world.rank}
    assert lease is not None  # rank 0 holds the lock
    lease.check()  # a lost lock fails here, before scoring; the fenced publish is the guarantee
    parent_model = artifact.load_into(network.build(parent.arch), parent_weights)
    mix, temperature = ship(model, parent_model, base.selection, base_heldout)
    phases.mark("mix_and_calibrate")
    after = {"base_heldout_accuracy": accuracy(model, base_heldout), "new_heldout_accuracy": accuracy(model, heldout)}
    phases.mark("score_after")
    lines = line_half(settings, labels, parent_weights, train_samples, holdout_samples, config.seed)
    phases.mark("line_reader")

    digits_ok, reason = verdict(settings, before, after)
    promoted = digits_ok or lines.adopted
    reason = f"{reason}; {lines.reason}" if lines.reason else reason
    # Only the line reader learned: the parent's digit network ships, with its own figures.
    parent_digits = lines.state is not None and not digits_ok
    shipped = parent_model if parent_digits else model
    calibration = quantize.calibration_sample(mixed.images)  # what the new model was tuned on
    digest = hashlib.sha256("".join(s.digest for s in train_samples).encode()).hexdigest()[:16]
    fp32 = fp32_digits(shipped, base_heldout.images)  # both agreements' reference, made once
    metrics = {
        "mix": mix,
        "val_accuracy": (before if parent_digits else after)["base_heldout_accuracy"],
        "bf16_agreement": bf16_agreement(shipped, base_heldout.images, fp32),
        **{f"{k}_before": v for k, v in before.items()},
        **{f"{k}_after": v for k, v in after.items()},
        "heldout_n": len(heldout),
        "base_heldout_n": len(base_heldout),
        **{f"lines_{k}": v for k, v in lines.figures.items()},
    }
    phases.mark("bf16_agreement")
    # The parent's digits ship unchanged with the parent's calibration images: so does its figure.
    int8 = (
        parent.metrics.get("int8_agreement")
        if parent_digits
        else int8_agreement(model, calibration, base_heldout.images, fp32)  # shipped is model here
    )
    if int8 is not None:
        metrics["int8_agreement"] = int8
    phases.mark("int8_agreement")
    shipped_lines = lines.state or artifact.sequence_state(parent_weights)
    line_calibration = artifact.calibration(parent_weights) if parent_digits else calibration
    if (line_int8 := line_int8_agreement(settings, shipped_lines, line_calibration)) is not None:
        metrics["line_int8_agreement"] = line_int8
    phases.mark("line_int8_agreement")
    if parent_digits and lines.state is not None:
        payload, temperature = artifact.with_sequence(parent_weights, lines.state), parent.temperature
    else:
        payload = artifact.dump(model, calibration, shipped_lines)
    info = registry.publish(
        payload,
        VersionInfo(
            arch=parent.arch,
            preprocess_version=scan.PREPROCESS_VERSION,
            temperature=temperature,
            data_fingerprint=f"labels:{len(new)}:{digest}+replay:{replay_n}:{base.fingerprint}",
            metrics=metrics,
            parent=parent.version,
            weights_source=f"finetune:{parent.version}",
            status=VersionStatus.PROMOTED if promoted else VersionStatus.REJECTED,
            reason=reason,
            training={
                **dataclasses.asdict(config),
                "seconds": result.seconds,
                "new_n": len(new),
                "replay_n": replay_n,
                "labels_upto": seen_upto,
                "temperature_before_mix": result.temperature,
                "frozen_stages": settings.retrain_frozen,
                "digit_network": "parent" if parent_digits else "retrained",
            },
            labels_upto=seen_upto,
        ),
        make_current=promoted,  # a promotion also moves both label watermarks to seen_upto
        token=lease.token,
        expect_current=parent.version,
        check_current=promoted,
    )
    if not promoted:
        labels.set_watermark(seen_upto, "tried")
    pruned = registry.prune(settings.keep_versions, token=lease.token)
    phases.mark("publish")
    log.info("retrain %s: %s (%s)", info.version, "promoted" if promoted else "rejected", reason)
    return summary | {
        "version": info.version,
        "promoted": promoted,
        "reason": reason,
        "mix": mix,
        "before": before,
        "after": after,
        "replay": replay_n,
        "line_reader": {"adopted": lines.adopted, "reason": lines.reason, **lines.figures},
        "temperature": temperature,
        "pruned": pruned,
        "seconds": time.perf_counter() - start,
        "phase_seconds": phases.seconds,
    }


class Phases:
    """Where a retrain's time goes, named step by step: what to cut next is read off a run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 2)
        self._last = now


def verdict(settings: Settings, before: dict[str, float], after: dict[str, float]) -> tuple[bool, str]:
    """The gate: promoted only when better on held-out labels by more than INKQ_PROMOTE_MIN_GAIN
    and at most INKQ_BASE_TOLERANCE worse on the base held-out set; and why."""
    new_before, new_after = before["new_heldout_accuracy"], after["new_heldout_accuracy"]
    base_before, base_after = before["base_heldout_accuracy"], after["base_heldout_accuracy"]
    if new_after - new_before <= settings.promote_min_gain:
        return False, (
            f"not better on held-out labels: {new_before:.4f} -> {new_after:.4f} "
            f"(needs a gain above {settings.promote_min_gain})"
        )
    if base_before - base_after > settings.base_tolerance:
        return False, (
            f"worse on the base held-out set: {base_before:.4f} -> {base_after:.4f} "
            f"(tolerance {settings.base_tolerance})"
        )
    return True, f"held-out labels {new_before:.4f} -> {new_after:.4f}, base {base_before:.4f} -> {base_after:.4f}"
