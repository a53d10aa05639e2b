"""Training augmentation (trainer/training.py): seeded, and shape- and range-preserving, so a
training run is reproducible from its seed."""

from __future__ import annotations

import torch

from trainer.training import augment


def test_augment_is_seeded_and_keeps_shape_and_range() -> None:
    images = torch.zeros(8, 1, 28, 28)
    images[:, :, 6:22, 12:16] = 1.0  # a "1"
    first = augment(images, torch.Generator().manual_seed(3))
    assert first.shape == images.shape and torch.equal(first, augment(images, torch.Generator().manual_seed(3)))
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    assert not torch.equal(first, images), "every image is warped"
    assert not torch.equal(first, augment(images, torch.Generator().manual_seed(4)))
