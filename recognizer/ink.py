"""A field crop's ink, its skew, and the printed rules around it (comb cells, a box, an underline).

Two maps come out of a colour scan: ``ink``, the lightest channel's darkness, in which drop-out
coloured rules vanish (they are bright in at least one channel) while handwriting and grey rules
stay; and ``marks``, the darkest channel's, which shows coloured rules too, for finding the form's
geometry. Rules are straight and long; handwriting is neither, so rules are found as long runs in
one row (or column) of the scan turned upright, and only the rule pixels that no stroke crosses
are erased.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from config.errors import BlankImageError, ImageDecodeError

__all__ = ["Band", "Ink", "Rules", "deskew", "find_rules", "ink_maps", "remove_rules"]

# Below this ink-to-paper contrast there is nothing to read (as in recognizer.scan).
MIN_CONTRAST = 0.12
# Darkness below this is paper grain and scanner noise.
NOISE_FLOOR = 0.15
# A pixel is ink (for geometry) from this darkness on.
SOLID = 0.4
# A pixel may be printed rule (for geometry) from this darkness on: light grey rules are faint.
FAINT = 0.2
# Turns searched for the scan's skew, degrees, and the least turn worth undoing.
MAX_SKEW, SKEW_STEP, MIN_SKEW = 4.0, 0.25, 0.2
# The skew search turns this many ink pixels at once at most (memory, not speed: 8 bytes each).
_TURNED_PIXELS = 4_000_000


@dataclass(frozen=True)
class Ink:
    ink: np.ndarray  # float32 (H, W) in [0, 1]: handwriting and grey rules
    marks: np.ndarray  # float32 (H, W) in [0, 1]: everything printed or written, drop-out colours too
    to_original: np.ndarray  # 2x3 affine map from these pixels to the crop's (identity unless deskewed)
    shape: tuple[int, int]  # the crop's (H, W)


@dataclass(frozen=True)
class Band:
    """A straight printed rule: rows y0..y1-1, columns x0..x1-1, in the upright scan."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def centre(self) -> float:
        return (self.x0 + self.x1) / 2 if self.x1 - self.x0 < self.y1 - self.y0 else (self.y0 + self.y1) / 2


@dataclass(frozen=True)
class Rules:
    horizontal: list[Band]
    vertical: list[Band]


def _channels(image: np.ndarray) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4) or min(a.shape[:2]) < 1:
        raise ImageDecodeError(f"a field crop is a 2-D grey or (H, W, 3|4) colour array, not shape {a.shape}")
    if a.dtype == np.uint8:
        x = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        x = a.astype(np.float32) / 65535.0
    else:
        x = np.clip(a.astype(np.float32), 0.0, 1.0)
    if not np.isfinite(x).all():
        raise ImageDecodeError("field crop has pixels that are not a number")
    if x.shape[2] == 4:  # transparency over white paper
        x = x[..., :3] * x[..., 3:] + (1.0 - x[..., 3:])
    return x


def _darkness(channel: np.ndarray, paper: float, contrast: float) -> np.ndarray:
    d = np.clip((paper - channel) / contrast, 0.0, 1.0)
    return np.where(d > NOISE_FLOOR, d, 0.0).astype(np.float32)


def ink_maps(image: np.ndarray) -> Ink:
    """The crop's ink and marks maps. Raises ``BlankImageError`` when it holds no ink."""
    x = _channels(image)
    # Channel by channel: a reduction over a last axis of 3 is several times slower in numpy.
    channels = [x[..., c] for c in range(x.shape[2])]
    light, dark = np.maximum.reduce(channels), np.minimum.reduce(channels)
    border = np.concatenate([light[0], light[-1], light[:, 0], light[:, -1]])
    if float(np.median(border)) < 0.5:  # light ink on a dark field (MNIST's convention)
        light, dark = 1.0 - dark, 1.0 - light
    paper = float(np.median(light))
    darkest = float(light.min())  # as recognizer.scan does: the same scale as training's digits
    contrast = paper - darkest
    if contrast < MIN_CONTRAST:
        raise BlankImageError(
            f"no ink found: contrast between ink and paper is {max(contrast, 0):.3f}, below {MIN_CONTRAST}"
        )
    identity = np.array([[1, 0, 0], [0, 1, 0]], np.float64)
    ink = _darkness(light, paper, contrast)
    marks = _darkness(dark, float(np.median(dark)), contrast)
    return Ink(ink, np.maximum(marks, ink), identity, light.shape)


def _skew(marks: np.ndarray) -> float:
    """The turn (degrees) that makes the longest printed line level: the one that piles the most
    ink pixels into one row. 0 when no row gathers a rule's worth (half the ink's width)."""
    ys, xs = np.nonzero(marks > FAINT)
    if len(xs) < 20:
        return 0.0
    width = int(xs.max() - xs.min() + 1)
    xc, yc = xs.mean(), ys.mean()
    dy, dx = ys - yc, xs - xc

    def rows(angles: np.ndarray) -> np.ndarray:
        """Per angle, the ink pixels in each row of the scan turned by it (several angles at once)."""
        turns = [math.radians(a) for a in angles]
        cos, sin = np.array([math.cos(t) for t in turns]), np.array([math.sin(t) for t in turns])
        at = np.round(dy * cos[:, None] - dx * sin[:, None]).astype(np.int64)
        at -= at.min(axis=1, keepdims=True)
        span = int(at.max()) + 1
        at += np.arange(len(angles))[:, None] * span
        return np.bincount(at.ravel(), minlength=len(angles) * span).reshape(len(angles), span)

    def sharpest(angles: np.ndarray) -> tuple[float, np.ndarray]:
        # Squares reward ink piled into few rows: a thick rule's rows all fill at the same turn.
        # Angles go in groups so that a crop full of ink needs no more than ~_TURNED_PIXELS at once.
        group = max(1, _TURNED_PIXELS // len(dy))
        best: tuple[float, float, np.ndarray] | None = None
        for i in range(0, len(angles), group):
            piles = rows(angles[i : i + group])
            scores = np.square(piles.astype(np.float64)).sum(axis=1)
            k = int(np.argmax(scores))
            if best is None or scores[k] > best[0]:  # strictly: the first of equals wins, as max() did
                best = (float(scores[k]), float(angles[i + k]), piles[k])
        assert best is not None
        return best[1], best[2]

    best_angle, _ = sharpest(np.arange(-MAX_SKEW, MAX_SKEW + 1e-9, SKEW_STEP))
    best_angle, pile = sharpest(best_angle + np.arange(-SKEW_STEP, SKEW_STEP + 1e-9, SKEW_STEP / 5))
    best = int(pile.max())
    return best_angle if best >= 0.5 * width else 0.0


def deskew(ink: Ink) -> Ink:
    """The maps turned so that printed rules are level; ``to_original`` maps back."""
    angle = _skew(ink.marks)
    if abs(angle) < MIN_SKEW:
        return ink
    h, w = ink.ink.shape
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    c, s = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
    size = (math.ceil(w * c + h * s), math.ceil(w * s + h * c))
    turn[:, 2] += (size[0] - w) / 2, (size[1] - h) / 2

    def warp(a: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(a, turn, size, flags=cv2.INTER_LINEAR, borderValue=0.0)

    return Ink(warp(ink.ink), warp(ink.marks), cv2.invertAffineTransform(turn), ink.shape)


def _bands(mask: np.ndarray, length: int, *, horizontal: bool, thick: int) -> list[Band]:
    """Runs of ``length`` pixels along rows (or columns), allowed to step one pixel sideways:
    what is left of a skew below the search's step bends a long thin rule that much."""
    across = np.ones((3, 1) if horizontal else (1, 3), np.uint8)
    kernel = np.ones((1, length) if horizontal else (length, 1), np.uint8)
    runs = cv2.morphologyEx(cv2.dilate(mask, across), cv2.MORPH_OPEN, kernel) & mask
    n, _, stats, _ = cv2.connectedComponentsWithStats(runs, connectivity=8)
    out = []
    for x, y, w, h, _area in stats[1:n]:
        if (h if horizontal else w) <= thick:
            out.append(Band(int(x), int(y), int(x + w), int(y + h)))
    return out


def find_rules(ink: Ink, height: float) -> Rules:
    """Straight runs in the upright marks map: rows at least half the ink's width long (and
    ``height``, the text height, at least), columns at least a fifth of ``height`` (comb ticks),
    at most a sixth of ``height`` (and 3 px) thick."""
    mask = (ink.marks > FAINT).astype(np.uint8)
    _ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return Rules([], [])
    width = int(xs.max() - xs.min() + 1)
    thick = max(3, round(height / 6))
    across = _bands(mask, max(12, round(0.5 * width)), horizontal=True, thick=thick)
    down = _bands(mask, max(5, round(0.2 * height)), horizontal=False, thick=thick)
    return Rules(across, down)


def remove_rules(ink: np.ndarray, bands: list[Band], *, reach: int = 2) -> np.ndarray:
    """``ink`` with each rule band erased except where a stroke crosses it (ink within ``reach``
    pixels on both sides): a digit written through a rule keeps its stroke. A band the ink map
    does not show (a drop-out colour) is left alone."""
    out = ink.copy()
    h, w = ink.shape
    for b in bands:
        level = b.x1 - b.x0 >= b.y1 - b.y0
        if float(np.median(ink[b.y0 : b.y1, b.x0 : b.x1].max(axis=0 if level else 1))) < SOLID:
            continue
        # Grow by a pixel: the antialiased rim of the rule is rule too.
        x0, y0, x1, y1 = max(0, b.x0 - 1), max(0, b.y0 - 1), min(w, b.x1 + 1), min(h, b.y1 + 1)
        if level:
            before = ink[max(0, y0 - reach) : y0, x0:x1].max(axis=0, initial=0.0)
            after = ink[y1 : y1 + reach, x0:x1].max(axis=0, initial=0.0)
            crossed = (before > SOLID) & (after > SOLID)
            out[y0:y1, x0:x1][:, ~crossed] = 0.0
        else:
            before = ink[y0:y1, max(0, x0 - reach) : x0].max(axis=1, initial=0.0)
            after = ink[y0:y1, x1 : x1 + reach].max(axis=1, initial=0.0)
            crossed = (before > SOLID) & (after > SOLID)
            out[y0:y1, x0:x1][~crossed, :] = 0.0
    return out
