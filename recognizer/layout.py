"""Read field crops by the layout their printed rules show, with both readers where both help.

A version may carry two readers (recognizer.artifact): the digit network behind segmentation
(recognizer.fields) and a CTC line reader (recognizer.sequence). Measured on validation fields
from training digits, each is best at something:

- free handwriting: the line reader. No cut has to part touching or overlapping digits;
- comb cells and single boxes: segmentation, whose printed cells already fix where each character
  is, *and* the line reader over the same cleaned ink. When both find as many characters, each
  position takes the digit the two find most likely together (the product of their
  probabilities); two networks trained on different inputs rarely misread the same stroke the
  same way. When they disagree on the count (a rule's remnant read as a digit, a box taken for
  a comb, a doubled character), the more confident reading stands. Either disagreement is a
  doubt that sends the reading to review.

    readings = read_by_layout(crops, engine, engine.sequence)   # FieldReading or ImageError each
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from config.errors import ImageDecodeError, ImageError
from recognizer.fields import (
    CharReading,
    FieldReading,
    Handwriting,
    Predictor,
    ReaderParams,
    handwriting,
    read_fields,
)
from recognizer.sequence import LineInput, SequenceReader, decode, line_from

__all__ = ["FUSE_FLOOR", "fuse", "read_by_layout"]

# A digit outside a reader's top 3 gets what the top 3 leave over, shared, and at least this:
# "not among its three best" is evidence against a digit, never a veto, since both networks are
# overconfident (a softmax's 1e-6 is not a one-in-a-million event). Tuned on validation fields.
FUSE_FLOOR = 0.01


def _probs(top3: list[tuple[int, float]]) -> np.ndarray:
    """A character's probabilities over the ten digits from its top 3, the rest spread evenly."""
    p = np.zeros(10)
    for label, prob in top3:
        p[label] = prob
    rest = max(0.0, 1.0 - p.sum())
    p[p == 0] = max(rest / max(1, int((p == 0).sum())), FUSE_FLOOR)
    return p / p.sum()


def _fused_char(cell: CharReading, line: CharReading) -> CharReading:
    joint = _probs(cell.top3) * _probs(line.top3)
    joint /= joint.sum()
    order = np.argsort(-joint)[:3]
    top3 = [(int(k), float(joint[k])) for k in order]
    return CharReading(top3[0][0], top3[0][1], top3, cell.box)


def fuse(cells: FieldReading, line: FieldReading) -> FieldReading:
    """The segmentation reading, each character weighed with the line reader's reading of the
    same position when both found as many characters; otherwise the more confident of the two.

    Where the two readers disagree (on the count, or on a character's top digit), the reading
    carries that as a doubt, which sends it to review: on validation comb fields a fused digit
    is confident even where one reader saw another (the product of a sure 7 and an unsure 2),
    and half the wrong readings that passed unreviewed were such disagreements."""
    chosen = line if line.confidence > cells.confidence else cells
    if not cells.chars:
        return chosen
    if len(cells.chars) != len(line.chars):
        found = f"the readers found {len(cells.chars)} (cells) and {len(line.chars)} (line) characters"
        return replace(chosen, doubts=(*chosen.doubts, found))
    chars = [_fused_char(c, s) for c, s in zip(cells.chars, line.chars, strict=True)]
    text = "".join(str(c.label) for c in chars)
    doubts = tuple(
        f"character {i + 1}: the readers disagree ({c.label} in its cell, {s.label} in the line)"
        for i, (c, s) in enumerate(zip(cells.chars, line.chars, strict=True))
        if c.label != s.label
    )
    confidence = math.prod(c.confidence for c in chars)
    return replace(cells, text=text, chars=chars, confidence=confidence, method="both", doubts=doubts)


def _prepare(
    images: Sequence[np.ndarray], max_pixels: int
) -> tuple[list[FieldReading | ImageError | None], dict[int, Handwriting]]:
    """Steps 1-2 of reading, once per crop: its handwriting, or the error it fails with alone."""
    out: list[FieldReading | ImageError | None] = [None] * len(images)
    found: dict[int, Handwriting] = {}
    for i, image in enumerate(images):
        try:
            found[i] = handwriting(image, max_pixels)
        except ImageError as exc:
            out[i] = exc
        except Exception as exc:  # a crop no one foresaw fails alone, with its cause named
            out[i] = ImageDecodeError(f"field could not be prepared ({type(exc).__name__}: {exc})"[:300])
    return out, found


def read_by_layout(
    images: Sequence[np.ndarray], engine: Predictor, reader: SequenceReader | None, params: ReaderParams | None = None
) -> list[FieldReading | ImageError]:
    """Each crop's reading: free handwriting by the line reader when there is one, fields in comb
    cells or boxes by segmentation weighed with the line reader (``fuse``)."""
    if reader is None:
        return read_fields(images, engine, params)
    p = params or ReaderParams()
    out, found = _prepare(images, p.max_pixels)
    lines: dict[int, LineInput] = {}
    for i, hand in found.items():
        try:
            lines[i] = line_from(hand)
        except Exception as exc:  # ink found but no line cut from it: cells may still read it
            out[i] = ImageDecodeError(f"field could not be prepared ({type(exc).__name__}: {exc})"[:300])
    as_line = {i: decode(s, lines[i]) for i, s in zip(lines, reader.log_probs(list(lines.values())), strict=True)}
    cells = [i for i in found if found[i].frame.kind != "free"]
    segmented = read_fields([images[i] for i in cells], engine, p, [found[i] for i in cells])
    for i, reading in zip(cells, segmented, strict=True):
        line = as_line.get(i)
        out[i] = fuse(reading, line) if isinstance(reading, FieldReading) and line is not None else reading
    for i, line in as_line.items():
        if i not in cells:
            out[i] = line
    return [reading for reading in out if reading is not None]
