"""The settings of learning: the base model (`trainer train`) and fine-tuning on labelled samples
(`trainer retrain`, `trainer watch`). Part of ``config.settings.Settings``."""

from __future__ import annotations

import dataclasses

from config.parsing import setting as _field

__all__ = ["LearningSettings"]


@dataclasses.dataclass(frozen=True)
class LearningSettings:
    # Training
    data_root: str = _field(
        "~/.cache/inkq/mnist", "MNIST in torchvision's layout; downloaded there when missing and online."
    )
    weights: str = _field("none", "Initial weights for `trainer train`: none, imagenet or a file path.")
    epochs: int = _field(14, "Training epochs for `trainer train`.", minimum=1)
    batch_size: int = _field(128, "Training batch size.", minimum=1)
    learning_rate: float = _field(0.08, "Peak learning rate of the one-cycle schedule.", minimum=0.0)
    seed: int = _field(0, "Seed for data split, initialisation and augmentation.", minimum=0)
    val_size: int = _field(2000, "Training images held out for validation and model selection.", minimum=1)
    field_stage_fields: int = _field(
        5000,
        "Generated fields (from training digits) whose cut characters, and cuts that are no character, "
        "teach the base model to read fields after its MNIST epochs; 0 skips it (a ten-class model).",
        minimum=0,
    )

    # Fine-tuning on labelled samples (`trainer retrain`, `trainer watch`)
    retrain_epochs: int = _field(8, "Epochs over new labels plus replay in one retrain.", minimum=1)
    retrain_learning_rate: float = _field(0.01, "Peak learning rate of a retrain.", minimum=0.0)
    retrain_line_steps: int = _field(
        120,
        "Steps (16 lines each) a retrain fine-tunes the version's line reader for on labelled fields; "
        "0 leaves the line reader as it is.",
        minimum=0,
    )
    retrain_frozen: int = _field(
        0,
        "ResNet stages a retrain leaves as they are: 0 none, 1 the stem and layer1, 2 up to layer2. Frozen "
        "low layers keep the base strokes and skip their share of the backward pass.",
        minimum=0,
    )
    replay_ratio: float = _field(
        2.0, "Base-data images replayed per new label, so the model does not forget MNIST.", minimum=0.0
    )
    holdout_fraction: float = _field(
        0.2, "Share of labelled samples held out (by content hash) to judge candidates.", minimum=0.0
    )
    promote_min_gain: float = _field(
        0.0, "A candidate must beat the current model on held-out labels by more than this.", minimum=0.0
    )
    base_tolerance: float = _field(
        0.002, "A candidate may lose at most this much accuracy on the held-out base set.", minimum=0.0
    )
    watch_min_labels: int = _field(
        100, "`trainer watch` retrains as soon as this many labels arrived since its last run.", minimum=1
    )
    watch_interval_s: int = _field(
        600, "`trainer watch` also retrains this many seconds after its last run when any label arrived.", minimum=1
    )
    lock_ttl_s: int = _field(
        60,
        "Lifetime of the registry lock (train, retrain, rollback) and of the sweep lock; renewed while its "
        "holder lives, so a crashed holder frees it.",
        minimum=5,
    )
    keep_versions: int = _field(
        5,
        "Registry retention: besides the current version and its ancestors, the newest N versions "
        "not rejected keep their weights; the rest are pruned (metadata kept).",
        minimum=0,
    )
