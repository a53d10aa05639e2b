"""The base model's field stage: after its MNIST epochs, it learns the characters a field reader
cuts, and an eleventh class, "not one character", for the cuts that are none.

MNIST digits are centred, clean and alone; a field's characters are resampled from the scan, may
carry a neighbour's stroke or a rule's remnant, and half of the candidates the reader weighs are
fragments or pairs. The stage cuts generated fields drawn from the *training* digits outside the
validation split (trainer/fieldcuts.py), widens the output layer to eleven classes, and trains
the upper layers for one epoch on those cuts mixed with MNIST, so single digits stay as they were.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from bench.synth import DigitPool
from recognizer import network
from trainer.data import Split, load_raw, validation_order
from trainer.distributed import World
from trainer.fieldcuts import REJECT, field_cuts
from trainer.training import TrainConfig, TrainResult, fit

__all__ = ["FIELD_ARCH", "field_stage", "widen"]

log = logging.getLogger(__name__)

FIELD_ARCH: dict[str, Any] = dict(network.DEFAULT_ARCH) | {"num_classes": REJECT + 1}
MNIST_SHARE = 10_000  # MNIST training images mixed with the cuts, so single digits are not forgotten
FROZEN = ("conv1", "bn1", "layer1", "layer2")  # low-level strokes: shared with MNIST, left as trained


def widen(model: nn.Module) -> nn.Module:
    """An eleven-class copy of a ten-class model: the same weights, a small new "reject" row."""
    wide = network.build(FIELD_ARCH)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    weight, bias = wide.state_dict()["fc.weight"].clone(), wide.state_dict()["fc.bias"].clone()
    weight[:REJECT], bias[:REJECT] = state["fc.weight"], state["fc.bias"]
    weight[REJECT] *= 0.1
    state["fc.weight"], state["fc.bias"] = weight, bias
    wide.load_state_dict(state)
    return wide


def _pool(root: Any, limit: int | None, val_size: int, seed: int) -> DigitPool:
    """The raw training digits outside the validation split: what fields may be drawn from."""
    images, labels = load_raw(root, train=True)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    keep = validation_order(len(labels), seed)[val_size:].numpy()
    return DigitPool(images[keep], labels[keep])


def field_stage(
    model: nn.Module,
    train: Split,
    val: Split,
    *,
    fields: int,
    source: tuple[Any, int | None, int, int],
    config: TrainConfig,
    world: World,
) -> tuple[nn.Module, TrainResult, dict[str, Any]]:
    """The eleven-class model trained from ``model``; ``source`` is (data root, limit, val size,
    seed) of the base run, so that no validation digit is drawn into a field."""
    pool = _pool(*source)
    seed = source[3]
    cuts, cut_labels = field_cuts(pool, fields, seed=seed + 11)
    val_cuts, val_labels = field_cuts(pool, max(50, fields // 8), seed=seed + 12)
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 13))[:MNIST_SHARE]
    mixed = Split(torch.cat([train.images[pick], cuts]), torch.cat([train.labels[pick], cut_labels]))
    checked = Split(torch.cat([val.images, val_cuts]), torch.cat([val.labels, val_labels]))
    wide = widen(model)
    for name, p in wide.named_parameters():
        p.requires_grad = not name.startswith(FROZEN)
    log.info("field stage: %d cut characters and non-characters from %d fields, %d MNIST", len(cuts), fields, len(pick))
    result = fit(wide, mixed, checked, config, world)
    for p in wide.parameters():
        p.requires_grad = True
    counts: dict[str, Any] = {
        "fields": fields,
        "cuts": len(cuts),
        "rejects": int((cut_labels == REJECT).sum()),
        "mnist": len(pick),
    }
    return wide, result, counts
