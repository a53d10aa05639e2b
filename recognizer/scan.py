"""Scan preprocessing: any common image file -> the MNIST convention, for training and serving.

One function, ``prepare``, turns a grayscale page into what MNIST's authors did with their
digits: bright ink on a dark background, the ink's bounding box scaled to fit 20x20 with its
aspect ratio kept, placed in 28x28 so that its centre of mass sits at the centre. Training
runs MNIST's own images through ``prepare`` too, so serving and training see the same thing;
on an MNIST image it is the identity in effect (the box already fits and is centred).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from config.errors import BlankImageError, ImageDecodeError, ImageError
from recognizer.decoding import SUPPORTED_FORMATS, SUPPORTED_SUFFIXES, ImageInfo, decode, describe_exception, probe

__all__ = [
    "MNIST_MEAN",
    "MNIST_STD",
    "PREPROCESS_VERSION",
    "SIZE",
    "SUPPORTED_FORMATS",
    "SUPPORTED_SUFFIXES",
    "ImageInfo",
    "decode",
    "frame",
    "normalize",
    "prepare",
    "preprocess",
    "probe",
]

# Bumped whenever the output of ``prepare`` changes; recorded with every model version.
PREPROCESS_VERSION = "mnist-box20-com28/1"

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
SIZE = 28
BOX = 20
# Pixel index that MNIST's centres of mass average to (measured on its training set).
CENTRE = 14.0
# Below this ink-to-paper contrast (on a 0..1 scale) there is nothing to read.
MIN_CONTRAST = 0.12
# Pages larger than this (shorter side, pixels) are median-filtered: strokes there are several
# pixels wide and survive, while salt-and-pepper noise and scanner dust do not.
DENOISE_MIN_SIDE = 64


def prepare(gray: np.ndarray) -> np.ndarray:
    """A grayscale page in [0, 1] (either polarity) -> a 28x28 float32 MNIST-style image in [0, 1].

    Raises ``BlankImageError`` when there is no ink to read.
    """
    x = np.asarray(gray, dtype=np.float32)
    if x.ndim != 2:
        raise ImageDecodeError(f"expected a 2-D grayscale image, got shape {x.shape}")
    if min(x.shape) >= DENOISE_MIN_SIDE:
        x = np.asarray(Image.fromarray(x).filter(ImageFilter.MedianFilter(3)), dtype=np.float32)

    # Paper is what the border mostly shows; scans have light paper, MNIST a black field.
    border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
    if float(np.median(border)) > 0.5:
        x = 1.0 - x
    paper = float(np.median(x))
    ink = float(x.max())
    if ink - paper < MIN_CONTRAST:
        raise BlankImageError(
            f"no ink found: contrast between ink and paper is {max(ink - paper, 0):.3f}, "
            f"below {MIN_CONTRAST} (blank or nearly blank image)"
        )
    x = (x - paper) / (ink - paper)

    # Paper texture and sensor noise: cut at four standard deviations of the paper. Ink is only
    # ever brighter than paper, so pixels darker than the paper level are pure noise: half of its
    # distribution (those exactly at the level, common in 8-bit images, count as half each).
    # A clean image such as MNIST has none, and keeps every faint edge pixel.
    below = x[x < 0]
    at_level = int(np.count_nonzero(x == 0))
    sigma = float(np.sqrt(2 * np.square(below).sum() / (2 * below.size + at_level))) if below.size else 0.0
    floor = min(0.45, 4.0 * sigma)
    x = np.clip(x, 0.0, 1.0)
    if floor > 0:
        x = np.where(x > floor, x, 0.0).astype(np.float32)

    return frame(x)


def frame(x: np.ndarray) -> np.ndarray:
    """Ink in [0, 1] on a zero background -> MNIST's frame: the ink's box scaled to fit 20x20,
    its centre of mass at the centre of 28x28. Shared by whole-image digits and field characters.

    Raises ``BlankImageError`` when there is no solid ink.
    """
    x = _crop_to_ink(np.asarray(x, dtype=np.float32))

    h, w = x.shape
    scale = BOX / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    if (th, tw) != (h, w):
        x = np.asarray(Image.fromarray(x).resize((tw, th), Image.Resampling.LANCZOS), dtype=np.float32)
        x = np.clip(x, 0.0, 1.0)

    mass = float(x.sum())
    if mass <= 0:
        raise BlankImageError("no ink found after scaling")
    cy = float((x.sum(axis=1) * np.arange(th)).sum()) / mass
    cx = float((x.sum(axis=0) * np.arange(tw)).sum()) / mass
    top = min(max(round(CENTRE - cy), 0), SIZE - th)
    left = min(max(round(CENTRE - cx), 0), SIZE - tw)
    out = np.zeros((SIZE, SIZE), dtype=np.float32)
    out[top : top + th, left : left + tw] = x
    return out


def _crop_to_ink(x: np.ndarray) -> np.ndarray:
    """Crop to the ink's bounding box: found from solid strokes (half contrast and up), then
    grown row by row over the faint anti-aliased edges touching it. Stray specks away from the
    strokes, which survive any noise floor on a large page, do not stretch the box."""
    strong = x > 0.5
    rows, cols = np.flatnonzero(strong.any(axis=1)), np.flatnonzero(strong.any(axis=0))
    if rows.size == 0:
        raise BlankImageError("no ink found after removing background noise")
    top, bottom, left, right = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    height, width = x.shape
    for _ in range(max(2, round(0.1 * max(bottom - top + 1, right - left + 1)))):
        grew = False
        if top > 0 and x[top - 1, left : right + 1].any():
            top, grew = top - 1, True
        if bottom < height - 1 and x[bottom + 1, left : right + 1].any():
            bottom, grew = bottom + 1, True
        if left > 0 and x[top : bottom + 1, left - 1].any():
            left, grew = left - 1, True
        if right < width - 1 and x[top : bottom + 1, right + 1].any():
            right, grew = right + 1, True
        if not grew:
            break
    return x[top : bottom + 1, left : right + 1]


def normalize(image: np.ndarray) -> np.ndarray:
    """MNIST-style [0, 1] image -> the network's input: (1, 28, 28) float32, standardised."""
    return ((image - MNIST_MEAN) / MNIST_STD).astype(np.float32)[None]


def preprocess(data: bytes, *, max_bytes: int, max_pixels: int) -> np.ndarray:
    """Image bytes -> the network's input, (1, 28, 28) float32. The serving entry point.

    Raises ``ImageError`` (and nothing else) for an image that cannot be recognised.
    """
    gray = decode(data, max_bytes=max_bytes, max_pixels=max_pixels)
    try:
        return normalize(prepare(gray))
    except ImageError:
        raise
    except Exception as exc:  # a page no one foresaw must fail alone, with its cause named
        raise ImageDecodeError(f"image could not be preprocessed ({describe_exception(exc)})") from exc
