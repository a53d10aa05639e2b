"""A field crop as one normalised line for the sequence reader (recognizer.sequence): torch-free,
so preprocessing processes (recognizer.preprocessing) prepare lines without importing torch.

  1. the same ink maps, levelling and printed-rule removal as the segmenting reader;
  2. the remaining ink scaled so characters stand ``TEXT`` pixels tall in a ``HEIGHT``-pixel line,
     ``MARGIN`` blank columns either side, the width rounded up to whole ``STRIDE``s (the
     network's output frames).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from recognizer import scan
from recognizer.fields import Handwriting, handwriting
from recognizer.segment import text_height

__all__ = ["HEIGHT", "MAX_PIXELS", "PAPER", "STRIDE", "LineInput", "frames", "line_from", "line_input"]

HEIGHT = 24  # the line's height in pixels: the network's input is (1, HEIGHT, W)
TEXT = 15  # a character's height in the line: as small as reads well, since the cost grows with the square
MARGIN = 4  # blank columns left and right of the ink, so the first and last frames see paper
STRIDE = 4  # columns of the line per output frame
MAX_PIXELS = 4_000_000
PAPER = float((0.0 - scan.MNIST_MEAN) / scan.MNIST_STD)  # a normalised blank pixel: pad with this


def frames(width: int) -> int:
    """Output frames for a line ``width`` columns wide."""
    return math.ceil(width / STRIDE)


@dataclass(frozen=True)
class LineInput:
    """A field crop as the network's input, and what it takes to map frames back to the crop."""

    x: np.ndarray  # float32 (1, HEIGHT, W), normalised like MNIST, W a multiple of STRIDE
    clean: np.ndarray  # the levelled, rule-free ink the line was cut from
    left: int  # the ink's first column in ``clean``
    scale: float  # line pixels per ``clean`` pixel
    to_original: np.ndarray  # 2x3 affine map from ``clean``'s pixels to the crop's
    shape: tuple[int, int]  # the crop's (H, W)
    layout: str

    @property
    def width(self) -> int:
        return int(self.x.shape[2])


def line_input(image: np.ndarray, max_pixels: int = MAX_PIXELS) -> LineInput:
    """The crop's handwriting as one normalised line; raises ``ImageError`` when there is none."""
    return line_from(handwriting(image, max_pixels))


def line_from(found: Handwriting) -> LineInput:
    """A crop's ``handwriting`` as one normalised line."""
    ink, frame, clean, blobs = found
    # Keep the blobs and the faint rim around them; specks of noise below the solid level go.
    mask = np.zeros(clean.shape, np.uint8)
    for by, bx in blobs:
        mask[by, bx] = 1
    rim = cv2.dilate(mask, np.ones((5, 5), np.uint8)).astype(bool)
    ink_only = np.where(rim, clean, 0.0).astype(np.float32)
    all_y = np.concatenate([b[0] for b in blobs])
    all_x = np.concatenate([b[1] for b in blobs])
    y0, y1, x0, x1 = int(all_y.min()), int(all_y.max()) + 1, int(all_x.min()), int(all_x.max()) + 1
    scale = min(TEXT / text_height(blobs), (HEIGHT - 2) / (y1 - y0))
    crop = ink_only[y0:y1, x0:x1]
    w, h = max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale))
    small = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    width = STRIDE * math.ceil((w + 2 * MARGIN) / STRIDE)
    line = np.zeros((HEIGHT, width), np.float32)
    top = (HEIGHT - h) // 2
    line[top : top + h, MARGIN : MARGIN + w] = np.clip(small, 0.0, 1.0)
    return LineInput(
        scan.normalize(line), clean, x0 - round(MARGIN / scale), scale, ink.to_original, ink.shape, frame.kind
    )
