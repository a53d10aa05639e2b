"""MNIST in torchvision's layout, run through the serving preprocessing once and kept in memory."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision

from bench.synth.mnist import load_mnist, mnist_present
from config.errors import DatasetUnavailableError
from recognizer import scan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    """Prepared images in [0, 1] (N, 1, 28, 28) float32 and their labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor | slice) -> Split:
        return Split(self.images[index], self.labels[index])


def load_raw(root: Path, *, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """The raw uint8 images and labels of one split; downloads into ``root`` when missing and online."""
    name = "train" if train else "test"
    if not mnist_present(root, train=train):
        log.info("MNIST %s split not under %s; trying to download it", name, root)
        try:
            torchvision.datasets.MNIST(str(root), train=train, download=True)
        except Exception as exc:  # network errors of every kind mean the same thing here
            raise DatasetUnavailableError(
                f"MNIST {name} split is not under {root} (expected {root}/MNIST/raw/*-ubyte) and "
                f"downloading it failed: {exc}. Pass --data-root (INKQ_DATA_ROOT) pointing at a copy."
            ) from exc
    # One reader for the trainer, the demos, tests and benchmarks: the same bytes everywhere.
    return load_mnist(root, train=train)


def prepare_all(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, 28, 28) -> prepared float32 (N, 1, 28, 28) in [0, 1], as serving would see them."""
    out = np.empty((len(images), 1, scan.SIZE, scan.SIZE), dtype=np.float32)
    for i, img in enumerate(images):
        out[i, 0] = scan.prepare(img.astype(np.float32) / 255.0)
    return torch.from_numpy(out)


@dataclass(frozen=True)
class RawSplit:
    """One split's raw uint8 images and labels, prepared only where asked: a retrain needs a
    third of the training images, and preparing is most of what loading costs."""

    images: np.ndarray
    labels: np.ndarray
    fingerprint: str

    def __len__(self) -> int:
        return len(self.labels)

    def prepared(self, index: torch.Tensor | None = None) -> Split:
        """The images at ``index`` (all when None), prepared as serving prepares them."""
        if index is None:
            return Split(prepare_all(self.images), torch.from_numpy(self.labels))
        rows = index.numpy()
        return Split(prepare_all(self.images[rows]), torch.from_numpy(self.labels[rows]))


def load_raw_split(root: Path, *, train: bool, limit: int | None = None) -> RawSplit:
    """A split as raw arrays with the fingerprint of exactly those bytes."""
    images, labels = load_raw(root, train=train)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()[:16]
    return RawSplit(images, labels, f"mnist-{'train' if train else 'test'}:{len(labels)}:{digest}")


def load_split(root: Path, *, train: bool, limit: int | None = None) -> tuple[Split, str]:
    """A prepared split and the fingerprint of the raw data it came from."""
    raw = load_raw_split(root, train=train, limit=limit)
    return raw.prepared(), raw.fingerprint


def split_validation(data: Split, val_size: int, seed: int) -> tuple[Split, Split]:
    """A seeded train/validation split carved out of the training data."""
    train, val = validation_indices(len(data), val_size, seed)
    return data.subset(train), data.subset(val)


def validation_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows ``split_validation`` gives to training and to validation, for data not yet prepared."""
    if not 0 < val_size < n:
        raise DatasetUnavailableError(f"validation size {val_size} must be between 1 and {n - 1}")
    order = validation_order(n, seed)
    return order[val_size:], order[:val_size]


def validation_order(n: int, seed: int) -> torch.Tensor:
    """The permutation ``split_validation`` cuts: its first ``val_size`` indices are validation."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))
