"""Everything reading a field crop takes except the networks: torch-free, so that on a GPU host a
pool of preprocessing processes does it (recognizer.preprocessing), not the model's thread.

Reading a field costs far more CPU than a single digit: levelling, finding and erasing printed
rules, cutting candidate characters, cutting the line. On an H200 the model's thread doing this
for every field held fields to 13% of single digits' characters/s (BENCHMARKS.md, GPU run).

    prepared = prepare_field(crop, ReaderParams(), with_line=True)   # raises ImageError
    readings = recognizer.layout.read_prepared([prepared], engine, engine.sequence)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from config.errors import ImageDecodeError, ImageError
from recognizer.fields import Handwriting, Plan, ReaderParams, handwriting, plan_field
from recognizer.lines import LineInput, line_from

__all__ = ["FieldInput", "prepare_field"]


@dataclass(frozen=True)
class FieldInput:
    """A crop ready for the networks. ``plan``: segmentation's candidates (for comb and box
    crops, or every crop when no line reader is served), or why it has none; ``line``: the line
    reader's input, or why it has none; None where that reader is not used for this crop."""

    plan: Plan | ImageError | None
    line: LineInput | ImageError | None


def _unforeseen(what: str, exc: Exception) -> ImageError:
    return ImageDecodeError(f"field could not be {what} ({type(exc).__name__}: {exc})"[:300])


def _plan_or_error(image: np.ndarray, params: ReaderParams, found: Handwriting | None = None) -> Plan | ImageError:
    try:
        return plan_field(image, params, found)
    except ImageError as exc:
        return exc
    except Exception as exc:  # a crop no one foresaw fails alone, with its cause named
        return _unforeseen("segmented", exc)


def prepare_field(image: np.ndarray, params: ReaderParams, *, with_line: bool) -> FieldInput:
    """The crop prepared for segmentation, and for the line reader when ``with_line`` (the
    version serves one): free handwriting goes to the line reader alone, printed cells to both.
    Raises ``ImageError`` when the crop holds no handwriting at all."""
    if not with_line:
        alone = _plan_or_error(image, params)
        if isinstance(alone, ImageError):
            raise alone
        return FieldInput(alone, None)
    try:
        found = handwriting(image, params.max_pixels)
    except ImageError:
        raise
    except Exception as exc:
        raise _unforeseen("prepared", exc) from exc
    line: LineInput | ImageError
    try:
        line = line_from(found)
    except Exception as exc:  # ink found but no line cut from it: cells may still read it
        line = _unforeseen("prepared", exc)
    plan = _plan_or_error(image, params, found) if found.frame.kind != "free" else None
    return FieldInput(plan, line)
