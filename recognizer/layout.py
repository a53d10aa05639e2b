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

from config.errors import ImageError
from recognizer.fieldprep import FieldInput, prepare_field
from recognizer.fields import CharReading, FieldReading, Predictor, ReaderParams, read_plans
from recognizer.sequence import LineInput, SequenceReader, decode

__all__ = ["FUSE_FLOOR", "fuse", "read_by_layout", "read_prepared"]

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


def read_by_layout(
    images: Sequence[np.ndarray], engine: Predictor, reader: SequenceReader | None, params: ReaderParams | None = None
) -> list[FieldReading | ImageError]:
    """Each crop's reading: free handwriting by the line reader when there is one, fields in comb
    cells or boxes by segmentation weighed with the line reader (``fuse``)."""
    p = params or ReaderParams()
    prepared: list[FieldInput | ImageError] = []
    for image in images:
        try:
            prepared.append(prepare_field(image, p, with_line=reader is not None))
        except ImageError as exc:
            prepared.append(exc)
    return read_prepared(prepared, engine, reader, p)


def read_prepared(
    prepared: Sequence[FieldInput | ImageError],
    engine: Predictor,
    reader: SequenceReader | None,
    params: ReaderParams | None = None,
) -> list[FieldReading | ImageError]:
    """The networks' part of reading crops already prepared (``prepare_field``, in whichever
    process): every candidate character in one digit-network call, every line in the line
    reader's batches, then each crop's reading; an error stays that crop's outcome."""
    p = params or ReaderParams()
    ready = [f for f in prepared if isinstance(f, FieldInput)]
    plans = [f.plan for f in ready if f.plan is not None]
    segmented = iter(read_plans(plans, engine, p))
    lines = [f.line for f in ready if isinstance(f.line, LineInput)]
    if lines and reader is None:
        raise ValueError("fields prepared for a line reader, but none is served")
    scores = iter(reader.log_probs(lines) if reader is not None and lines else [])
    out: list[FieldReading | ImageError] = []
    for f in prepared:
        if isinstance(f, ImageError):
            out.append(f)
            continue
        line = decode(next(scores), f.line) if isinstance(f.line, LineInput) else f.line
        cells = next(segmented) if f.plan is not None else None
        if cells is None:
            assert line is not None, "a prepared field has a plan, a line or both"
            out.append(line)
        elif isinstance(cells, FieldReading) and isinstance(line, FieldReading):
            out.append(fuse(cells, line))
        else:  # segmentation failed (its error stands), or there is no line to weigh it with
            out.append(cells)
    return out
