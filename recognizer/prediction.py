"""What the digit network says about one image: shared by the engine, the field readers and results."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Prediction"]


@dataclass(frozen=True)
class Prediction:
    """The best digit, its probability and the top three, as probabilities among digits alone;
    ``reject`` is the model's probability that the input is no single character (a fragment or
    two touching digits), 0.0 for a ten-class model. The field reader weighs candidates with it;
    a single image is read as its best digit either way."""

    label: int
    confidence: float
    top3: list[tuple[int, float]]
    reject: float = 0.0
