"""Training characters cut out of generated fields by the field reader's own segmentation.

A network trained on MNIST alone meets, in a field, characters it never saw: resampled by the
scan, a rule's remnant beside them, a neighbour's stroke inside their box, and pieces that are
no character at all (half of a 0, two touching digits). Each candidate the reader would classify
is labelled by its overlap with the field's true character boxes: a digit where it matches one,
``REJECT`` ("not one character") where it matches none, left out where it is ambiguous.

    images, labels = field_cuts(pool, count=4000, seed=1)   # (N, 1, 28, 28) in [0, 1], (N,)
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from bench.synth import STYLES, DigitPool, FieldStyle, render_field
from config.errors import ImageError
from recognizer import scan
from recognizer.fields import ReaderParams, candidates

__all__ = ["REJECT", "field_cuts", "label_of", "overlap"]

log = logging.getLogger(__name__)

REJECT = 10  # the class index of "not one character"
MATCH = 0.7  # intersection over union with a true box at least this (and little of another): that digit
CLEAN = 0.25  # ... a digit's candidate covers less than this of any other true box
PART = 0.55  # a candidate covering less of its best true box than this is a fragment: a reject
TWO = 0.5  # one covering this much of a second true box holds two characters: a reject

# Field kinds in turn: every layout the reader meets, single characters included.
_MIX: tuple[FieldStyle, ...] = (
    STYLES["comb"],
    STYLES["free"],
    STYLES["box"],
    STYLES["free"],
    STYLES["long"],
    FieldStyle(kind="comb", length=(1, 10)),
)


def overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    inter = max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _cover(a: tuple[int, int, int, int], true: tuple[int, int, int, int]) -> float:
    inter = max(0, min(a[2], true[2]) - max(a[0], true[0])) * max(0, min(a[3], true[3]) - max(a[1], true[1]))
    area = (true[2] - true[0]) * (true[3] - true[1])
    return inter / area if area else 0.0


def label_of(
    box: tuple[int, int, int, int], field_boxes: tuple[tuple[int, int, int, int], ...], text: str
) -> int | None:
    """A candidate's class: the digit whose box it matches, ``REJECT`` for a fragment or a merge
    of two, None when it is too close to call either way."""
    scores = [overlap(box, true) for true in field_boxes]
    best = int(np.argmax(scores))
    covers = sorted((_cover(box, true) for true in field_boxes), reverse=True)
    second = covers[1] if len(covers) > 1 else 0.0
    if scores[best] >= MATCH and second < CLEAN:
        return int(text[best])
    if covers[0] < PART or second >= TWO:
        return REJECT
    return None


def field_cuts(
    pool: DigitPool, count: int, seed: int, *, reject_share: float = 0.25, params: ReaderParams | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Labelled candidates from ``count`` fields drawn from ``pool``; rejects are subsampled to
    about ``reject_share`` of the result so that digits stay the bulk of what is learnt."""
    rng = np.random.default_rng(seed)
    digits: list[np.ndarray] = []
    digit_labels: list[int] = []
    rejects: list[np.ndarray] = []
    for i in range(count):
        field = render_field(pool, (seed, i), _MIX[i % len(_MIX)])
        try:
            _, inputs, boxes = candidates(field.image, params)
        except ImageError:
            continue
        for x, box in zip(inputs, boxes, strict=True):
            label = label_of(box, field.boxes, field.text)
            image = x[0] * scan.MNIST_STD + scan.MNIST_MEAN  # back to [0, 1], as the trainer keeps data
            if label == REJECT:
                rejects.append(image)
            elif label is not None:
                digits.append(image)
                digit_labels.append(label)
    keep = min(len(rejects), round(len(digits) * reject_share / (1 - reject_share)))
    chosen = rng.permutation(len(rejects))[:keep]
    images = np.stack(digits + [rejects[k] for k in chosen]).astype(np.float32)[:, None]
    labels = np.array(digit_labels + [REJECT] * keep, dtype=np.int64)
    log.info("cut %d characters and %d rejects (of %d) from %d fields", len(digits), keep, len(rejects), count)
    return torch.from_numpy(np.clip(images, 0.0, 1.0)), torch.from_numpy(labels)
