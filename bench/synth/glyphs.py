"""Handwritten characters for generated fields: MNIST digits cropped, sized, slanted, broken.

A glyph is an ink coverage map (float32 in [0, 1], 1 = full ink) cropped to its ink, ready to be
laid into a field. All randomness comes from the caller's generator, so fields are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

__all__ = ["DigitPool", "glyph"]

# MNIST's antialiased edges reach far out faintly; below this an edge pixel is not "ink" for cropping.
_CROP_LEVEL = 30
# Coverage below this after transforms is resampling dust, not ink.
_DUST = 0.02


@dataclass(frozen=True)
class DigitPool:
    """MNIST digits (uint8, N x 28 x 28, white ink on black) to draw characters from, by label.

    Give it the training split for training and tuning data, the test split for reported figures.
    """

    images: np.ndarray
    labels: np.ndarray
    _by_label: dict[int, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")
        by_label = {d: np.flatnonzero(self.labels == d) for d in range(10)}
        missing = [d for d, idx in by_label.items() if len(idx) == 0]
        if missing:
            raise ValueError(f"no samples of digit(s) {missing}: a field could not spell them")
        object.__setattr__(self, "_by_label", by_label)

    def pick(self, digit: int, rng: np.random.Generator) -> np.ndarray:
        """A random sample of ``digit``."""
        choices = self._by_label[digit]
        return np.asarray(self.images[choices[rng.integers(len(choices))]])


def _crop(alpha: np.ndarray, level: float) -> np.ndarray:
    rows, cols = np.flatnonzero((alpha > level).any(axis=1)), np.flatnonzero((alpha > level).any(axis=0))
    if len(rows) == 0:
        return alpha[:1, :1] * 0  # a blank sample: one empty pixel rather than a crash
    return alpha[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def glyph(
    digit: np.ndarray, height: int, rng: np.random.Generator, *, slant: float = 0.0, broken: bool = False
) -> np.ndarray:
    """``digit`` (uint8 28x28, MNIST's convention) as an ink map ``height`` pixels tall.

    ``slant`` shears it (x shift per pixel of height; positive leans right); ``broken`` cuts a thin
    horizontal gap through its middle, as a pen that skipped leaves a detached bar.
    """
    crop = _crop(np.asarray(digit), _CROP_LEVEL)
    height = max(4, int(height))
    width = max(1, round(crop.shape[1] * height / crop.shape[0]))
    img = Image.fromarray(crop.astype(np.uint8)).resize((width, height), Image.Resampling.BILINEAR)
    if slant:
        extra = int(np.ceil(abs(slant) * height))
        # Output (x, y) samples input (x + slant*y - c, y): c puts the sheared glyph at x >= 0.
        offset = slant * height if slant > 0 else 0.0
        img = img.transform(
            (width + extra, height), Image.Transform.AFFINE, (1, slant, -offset, 0, 1, 0), Image.Resampling.BILINEAR
        )
    alpha = np.asarray(img, dtype=np.float32) / 255.0
    if broken:
        ink_rows = np.flatnonzero(alpha.max(axis=1) > 0.5)
        if len(ink_rows) > 4:
            # A gap in the middle half of the height, 1-2 pixels per 28 of height: a visible break.
            lo, hi = ink_rows[0] + len(ink_rows) // 4, ink_rows[-1] - len(ink_rows) // 4
            at = int(rng.integers(lo, max(lo + 1, hi)))
            alpha = alpha.copy()
            alpha[at : at + max(1, round(height / 20))] = 0.0
    alpha[alpha < _DUST] = 0.0
    return _crop(alpha, 0.0)
