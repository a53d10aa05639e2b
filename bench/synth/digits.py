"""Single MNIST digits as image files: plain scans, scan-like pages, and a new handwriting style.

Every test, benchmark and demo that needs digit images makes them here, so that the same seed
gives the same images everywhere and a figure never moves because a copy drifted.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

__all__ = ["as_scan", "encode", "on_paper", "outlined", "page_scans", "write_digits"]


def on_paper(digit: np.ndarray) -> Image.Image:
    """An MNIST digit (white ink on black) as a plain scan: dark ink on white paper, same size."""
    return Image.fromarray(255 - np.asarray(digit, dtype=np.uint8))


def outlined(digit: np.ndarray) -> np.ndarray:
    """A handwriting style MNIST never showed: hollow strokes, drawn as their outline."""
    ring = np.asarray(Image.fromarray(digit).filter(ImageFilter.MaxFilter(5)), np.int16) - digit.astype(np.int16)
    return np.clip(ring * 2, 0, 255).astype(np.uint8)


def write_digits(
    folder: Path,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    style: Callable[[np.ndarray], np.ndarray] | None = None,
    by_label: bool = False,
) -> dict[str, int]:
    """Digits as plain PNG scans named 00000.png, 00001.png, ... (under a folder per label with
    ``by_label``, the layout `producer label` reads), drawn in ``style`` if given; path -> label."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i, (img, label) in enumerate(zip(images, labels, strict=True)):
        path = (folder / str(int(label)) if by_label else folder) / f"{i:05d}.png"
        path.parent.mkdir(exist_ok=True)
        on_paper(style(img) if style else img).save(path)
        truth[str(path)] = int(label)
    return truth


def as_scan(
    digit: np.ndarray,
    *,
    scale: int = 6,
    page: tuple[int, int] = (300, 400),
    at: tuple[int, int] = (60, 150),
    tint: tuple[int, int, int] = (250, 246, 236),
    noise: float = 6.0,
    seed: int = 0,
) -> Image.Image:
    """An RGB 'scan' of an MNIST digit: upscaled, dark ink on tinted noisy paper somewhere on a page."""
    rng = np.random.default_rng(seed)
    ink = Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR)
    alpha = np.asarray(ink, dtype=np.float32) / 255.0
    h, w = page
    paper = np.empty((h, w, 3), dtype=np.float32)
    paper[:] = tint
    y, x = at
    region = paper[y : y + 28 * scale, x : x + 28 * scale]
    ink_colour = np.array([25, 30, 60], dtype=np.float32)
    region[:] = region * (1 - alpha[..., None]) + ink_colour * alpha[..., None]
    paper += rng.normal(0, noise, paper.shape)
    return Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8))


def page_scans(folder: Path, images: np.ndarray, labels: np.ndarray, count: int, seed: int) -> dict[str, int]:
    """``count`` digits drawn at random as grey 'scans': dark ink on off-white noisy paper,
    2-4x enlarged somewhere on a small page (what `producer demo` submits); path -> label."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for n, i in enumerate(rng.choice(len(images), size=min(count, len(images)), replace=False)):
        scale = int(rng.integers(2, 5))
        digit = np.asarray(Image.fromarray(images[i]).resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR))
        page = np.full((28 * scale + 60, 28 * scale + 80), 240.0) + rng.normal(0, 4, (28 * scale + 60, 28 * scale + 80))
        y, x = int(rng.integers(0, 60)), int(rng.integers(0, 80))
        page[y : y + 28 * scale, x : x + 28 * scale] -= digit.astype(np.float64) * 0.8
        path = folder / f"scan-{n:04d}.png"
        Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).save(path)
        truth[str(path)] = int(labels[i])
    return truth


def encode(img: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    """An image's file bytes in ``fmt``, as a scanner would have written them."""
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()
