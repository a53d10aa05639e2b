"""Labelled samples as training data: single characters through the serving preprocessing,
fields cut into their characters by the field reader and aligned with the text a person gave.

A field's cuts come from the reader run with the model being fine-tuned (the parent): when its
best reading has as many characters as the given text, the i-th cut is the i-th character,
whatever it was read as, so a correction teaches exactly the characters that were misread. A
field whose reading has another length is skipped and counted: its cuts cannot be trusted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from config.errors import ImageError
from config.settings import Settings
from recognizer import scan
from recognizer.decoding import decode_colour
from recognizer.fields import Predictor, ReaderParams, aligned_cuts
from storage.labels import Labels, Sample
from trainer.data import Split

__all__ = ["LabelledData", "labelled_split"]

log = logging.getLogger(__name__)


@dataclass
class LabelledData:
    """The split, and what became of the samples: for the retrain's summary."""

    split: Split
    fields: int = 0  # field samples cut into characters
    unaligned: int = 0  # field samples skipped: their reading had another length
    skipped: list[str] = field(default_factory=list)  # digests of unreadable or missing images


def _field_chars(data: bytes, text: str, reader: Predictor, settings: Settings) -> list[np.ndarray] | None:
    crop = decode_colour(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    cuts = aligned_cuts(crop, text, reader, ReaderParams(max_pixels=settings.max_image_pixels))
    # The reader hands the network's standardised inputs; training data is kept in [0, 1].
    return None if cuts is None else [np.clip(c[0] * scan.MNIST_STD + scan.MNIST_MEAN, 0, 1) for c in cuts]


def labelled_split(labels: Labels, samples: list[Sample], settings: Settings, reader: Predictor | None) -> LabelledData:
    """Every readable sample as training images; fields as their aligned characters (``reader``
    is needed only when a sample is a field)."""
    images: list[np.ndarray] = []
    targets: list[int] = []
    out = LabelledData(Split(torch.empty(0, 1, scan.SIZE, scan.SIZE), torch.empty(0, dtype=torch.int64)))
    for sample, data in zip(samples, labels.images([s.digest for s in samples]), strict=True):
        if data is None:
            log.warning("labelled image %s is missing; skipped", sample.digest[:12])
            out.skipped.append(sample.digest)
            continue
        try:
            if sample.text is None:
                gray = scan.decode(data, max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
                images.append(scan.prepare(gray))
                targets.append(sample.label)
                continue
            if reader is None:
                raise ValueError("a labelled field needs a reader to cut it into characters")
            chars = _field_chars(data, sample.text, reader, settings)
        except ImageError as exc:
            log.warning("labelled image %s (%s) skipped: %s", sample.digest[:12], sample.path, exc)
            out.skipped.append(sample.digest)
            continue
        if chars is None:
            out.unaligned += 1
            continue
        out.fields += 1
        images += chars
        targets += [int(ch) for ch in sample.text]
    if images:
        out.split = Split(torch.from_numpy(np.stack(images))[:, None], torch.tensor(targets, dtype=torch.int64))
    return out
