"""Read a field of handwritten digits (a ZIP code, an account number) from one image crop.

Segmentation, then recognition, as postal-code readers did:
  1. ink and marks maps (drop-out colours vanish from the ink), the scan turned level by its rules;
  2. printed rules found and erased where no stroke crosses them: a comb gives one cell per
     character, a box or underline is just removed (recognizer.ink, recognizer.frames);
  3. connected components, wide ones cut at their thinnest places along the writer's slant; runs
     of neighbouring pieces are the candidate characters, so broken strokes join again
     (recognizer.segment);
  4. every candidate of every field in the batch classified by the existing network in one
     ``Engine.predict`` call;
  5. per field, the split that maximises the product of character confidences (with priors on a
     character's height and width) by dynamic programming over the pieces.

    readings = read_fields([crop_a, crop_b], engine)   # FieldReading, or the ImageError of that crop
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from config.errors import BlankImageError, ImageDecodeError, ImageError, ImageTooLargeError
from recognizer.frames import Frame, find_frame
from recognizer.ink import FAINT, Ink, deskew, find_rules, ink_maps, remove_rules
from recognizer.prediction import Prediction
from recognizer.segment import (
    SegmentParams,
    cell_pieces,
    components,
    free_pieces,
    join,
    render,
    runs,
    slant,
    text_height,
    width,
)

__all__ = [
    "CharReading",
    "FieldReading",
    "Handwriting",
    "Plan",
    "ReaderParams",
    "aligned_cuts",
    "candidates",
    "handwriting",
    "ink_box",
    "plan_field",
    "read_fields",
    "read_plans",
]

Box = tuple[int, int, int, int]
Blob = tuple[np.ndarray, np.ndarray]  # a connected component's rows and columns
# A crop with more separate marks than this is not one field (a page, or noise).
MAX_PIECES = 120


class Predictor(Protocol):
    def predict(self, inputs: Sequence[np.ndarray]) -> list[Prediction]: ...


@dataclass(frozen=True)
class ReaderParams:
    """The search's priors, tuned on validation fields drawn from MNIST training digits."""

    bonus: float = -1.0  # log-score per character read: above 0 favours cutting, below 0 merging
    short: float = 0.6  # a character below this share of the text height ...
    short_cost: float = 24.0  # ... loses this much log-score per unit of shortfall
    wide: float = 1.6  # a character wider than this many heights (along the slant) ...
    wide_cost: float = 4.0  # ... loses this much per unit beyond
    skip_cost: float = 4.0  # leaving a piece unread (dust, a rule's remnant) costs this, plus its size
    max_pixels: int = 4_000_000
    segment: SegmentParams = field(default_factory=SegmentParams)


@dataclass(frozen=True)
class CharReading:
    label: int
    confidence: float
    top3: list[tuple[int, float]]
    box: Box  # x0, y0, x1, y1 (end exclusive) in the crop's pixels


@dataclass(frozen=True)
class FieldReading:
    text: str
    chars: list[CharReading]
    confidence: float  # the product of the characters' confidences
    layout: str  # free, box or comb: what printed rules the reader found
    method: str = "segment"  # segment (cut into characters) or sequence (read as one line)
    # Why the reader itself doubts the reading (two readers that disagree): review reasons.
    doubts: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["chars"] = [
            {"label": c.label, "confidence": round(c.confidence, 6), "top3": [[a, round(b, 6)] for a, b in c.top3]}
            | {"box": list(c.box)}
            for c in self.chars
        ]
        out["confidence"] = round(self.confidence, 6)
        return out


@dataclass
class Plan:
    """A crop's candidate characters, ready for the network (steps 1-3): what a preprocessing
    process hands the model's thread. Only arrays the network and the search need, so it is
    cheap to send between processes."""

    layout: str
    pieces: int  # how many pieces the search parts into characters
    spans: list[tuple[int, int]]
    inputs: list[np.ndarray]
    shape: list[tuple[float, float]]  # per span: its height and width, in text heights
    boxes: list[Box]
    sizes: list[float]  # per piece: its ink, in units of a character's (the cost of leaving it unread)
    fixed: bool  # comb: each piece is one character


def ink_box(to_original: np.ndarray, shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, pad: int) -> Box:
    """The pixels' box in the crop; ``pad`` widens it by the rounding a turned scan costs."""
    x0, x1, y0, y1 = float(xs.min()), float(xs.max()) + 1, float(ys.min()), float(ys.max()) + 1
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]])
    px, py = (corners @ to_original.T).T
    h, w = shape
    return (
        max(0, math.floor(px.min()) - pad),
        max(0, math.floor(py.min()) - pad),
        min(w, math.ceil(px.max()) + pad),
        min(h, math.ceil(py.max()) + pad),
    )


class Handwriting(NamedTuple):
    """A crop after steps 1-2: its ink maps, its frame, the rule-free ink and that ink's blobs."""

    ink: Ink
    frame: Frame
    clean: np.ndarray
    blobs: list[Blob]


def handwriting(image: np.ndarray, max_pixels: int) -> Handwriting:
    """Steps 1-2, shared with the sequence reader: the crop levelled, its printed rules found and
    erased (blobs never none). Half of what reading a field costs: done once per crop."""
    a = np.asarray(image)
    if a.ndim >= 2 and a.shape[0] * a.shape[1] > max_pixels:
        raise ImageTooLargeError(
            f"field crop is {a.shape[1]}x{a.shape[0]} pixels, over the reader's limit of {max_pixels:,}: "
            "crop the image to the field"
        )
    ink = deskew(ink_maps(a))
    ys, _ = np.nonzero(ink.marks > FAINT)
    frame = find_frame(find_rules(ink, float(ys.max() - ys.min() + 1) if len(ys) else 1.0), ink.marks)
    clean = remove_rules(ink.ink, frame.rules)
    blobs = components(clean)
    if not blobs:
        raise BlankImageError("no handwriting found once the printed rules are taken out (an empty field)")
    return Handwriting(ink, frame, clean, blobs)


def plan_field(image: np.ndarray, p: ReaderParams, found: Handwriting | None = None) -> Plan:
    """Steps 1-3 for one crop (``found``: its ``handwriting`` when the caller has it); raises
    ``ImageError`` when the crop holds nothing to read."""
    ink, frame, clean, blobs = found or handwriting(image, p.max_pixels)
    height = text_height(blobs)
    s = p.segment
    if frame.kind == "comb":
        pieces = [c for c in cell_pieces(blobs, frame.bounds, height, s) if c is not None]
        spans, fixed, shear = [(i, i + 1) for i in range(len(pieces))], True, 0.0
    else:
        all_ys, all_xs = np.concatenate([b[0] for b in blobs]), np.concatenate([b[1] for b in blobs])
        shear = slant(all_ys, all_xs)
        pieces = free_pieces(blobs, height, shear, float(all_ys.mean()), s)
        if len(pieces) > MAX_PIECES:
            raise ImageDecodeError(
                f"{len(pieces)} separate marks in one field crop (at most {MAX_PIECES}): "
                "crop the image to one field, or clean the scan"
            )
        spans, fixed = runs(pieces, height, s), False
    if not pieces:
        raise BlankImageError("only specks of ink found: nothing the size of a character")
    plan = Plan(frame.kind, len(pieces), [], [], [], [], [], fixed)
    for q in pieces:
        plan.sizes.append(len(q.ys) / (0.05 * height * height))
    pad = 0 if np.allclose(ink.to_original, [[1, 0, 0], [0, 1, 0]]) else 1  # once per crop, not per span
    for i, j in spans:
        span_ys, span_xs = join(pieces[i:j])
        try:
            x = render(clean, span_ys, span_xs)
        except BlankImageError:
            continue  # too faint to be a character alone: only its neighbours' runs can hold it
        shape = (float(span_ys.max() - span_ys.min() + 1) / height, width(pieces[i:j]) / height)
        plan.spans.append((i, j))
        plan.inputs.append(x)
        plan.shape.append(shape)
        plan.boxes.append(ink_box(ink.to_original, ink.shape, span_ys, span_xs, pad))
    return plan


def _prior(plan: Plan, k: int, p: ReaderParams) -> float:
    """Span k's log-prior from its shape: a comb's cells fix the characters, so none there."""
    if plan.fixed:
        return 0.0
    tall, wide = plan.shape[k]
    return -p.short_cost * max(0.0, p.short - tall) - p.wide_cost * max(0.0, wide - p.wide)


def _best(plan: Plan, preds: list[Prediction], p: ReaderParams) -> list[int]:
    """The spans of the best reading of one field, left to right: dynamic programming over its
    pieces, where each piece is read within one span or skipped as dust."""
    n = plan.pieces
    best = [-math.inf] * (n + 1)
    back: list[tuple[int, int] | None] = [None] * (n + 1)  # (previous end, span index or -1 for a skip)
    best[0] = 0.0
    ending: dict[int, list[int]] = {}
    for k, (_, j) in enumerate(plan.spans):
        ending.setdefault(j, []).append(k)
    for j in range(1, n + 1):
        skip = p.skip_cost + plan.sizes[j - 1]
        if best[j - 1] > -math.inf and best[j - 1] - skip > best[j]:
            best[j], back[j] = best[j - 1] - skip, (j - 1, -1)
        for k in ending.get(j, []):
            i = plan.spans[k][0]
            # The chance this span is one character and that character is its best digit.
            likely = preds[k].confidence * (1.0 - preds[k].reject)
            score = best[i] + math.log(max(likely, 1e-12)) + _prior(plan, k, p) + p.bonus
            if best[i] > -math.inf and score > best[j]:
                best[j], back[j] = score, (i, k)
    chosen: list[int] = []
    j = n
    while j > 0 and back[j] is not None:
        i, k = back[j]  # type: ignore[misc]
        if k >= 0:
            chosen.append(k)
        j = i
    return sorted(chosen, key=lambda k: plan.spans[k][0])


def _decode(plan: Plan, preds: list[Prediction], p: ReaderParams) -> FieldReading:
    chars = [
        CharReading(preds[k].label, preds[k].confidence, preds[k].top3, plan.boxes[k]) for k in _best(plan, preds, p)
    ]
    confidence = math.prod(c.confidence for c in chars) if chars else 0.0
    return FieldReading("".join(str(c.label) for c in chars), chars, confidence, plan.layout)


def aligned_cuts(
    image: np.ndarray, text: str, engine: Predictor, params: ReaderParams | None = None
) -> list[np.ndarray] | None:
    """The network inputs of the characters of a field whose true ``text`` a person gave: the
    best reading's cuts, when it finds as many characters as the text has (then the i-th cut is
    the i-th character, whatever it was read as); None when the cuts cannot be trusted."""
    p = params or ReaderParams()
    plan = plan_field(image, p)
    if not plan.inputs:
        return None
    chosen = _best(plan, engine.predict(plan.inputs), p)
    return [plan.inputs[k] for k in chosen] if len(chosen) == len(text) else None


def candidates(image: np.ndarray, params: ReaderParams | None = None) -> tuple[str, list[np.ndarray], list[Box]]:
    """The layout the reader found and every candidate character it would classify: the network's
    inputs and their boxes in the crop's pixels. For cutting training characters out of fields."""
    plan = plan_field(image, params or ReaderParams())
    return plan.layout, plan.inputs, plan.boxes


def read_fields(
    images: Sequence[np.ndarray],
    engine: Predictor,
    params: ReaderParams | None = None,
    found: Sequence[Handwriting] | None = None,
) -> list[FieldReading | ImageError]:
    """Each crop's reading, or the ``ImageError`` that says why it has none. ``found``: each
    crop's ``handwriting`` when the caller has it already."""
    p = params or ReaderParams()
    plans: list[Plan | ImageError] = []
    for i, image in enumerate(images):
        try:
            plans.append(plan_field(image, p, found[i] if found is not None else None))
        except ImageError as exc:
            plans.append(exc)
        except Exception as exc:  # a crop no one foresaw fails alone, with its cause named
            plans.append(ImageDecodeError(f"field could not be segmented ({type(exc).__name__}: {exc})"[:300]))
    return read_plans(plans, engine, p)


def read_plans(
    plans: Sequence[Plan | ImageError], engine: Predictor, params: ReaderParams | None = None
) -> list[FieldReading | ImageError]:
    """Steps 4-5: every candidate character of every plan to the network in one
    ``engine.predict`` call, then each field's best reading; an error stays that crop's outcome."""
    p = params or ReaderParams()
    inputs = [x for plan in plans if isinstance(plan, Plan) for x in plan.inputs]
    preds = engine.predict(inputs) if inputs else []
    out: list[FieldReading | ImageError] = []
    at = 0
    for plan in plans:
        if isinstance(plan, ImageError):
            out.append(plan)
            continue
        out.append(_decode(plan, preds[at : at + len(plan.inputs)], p))
        at += len(plan.inputs)
    return out
