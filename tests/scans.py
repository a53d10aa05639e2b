"""Scan-like test images made from MNIST digits: dark ink on (tinted, noisy) paper."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


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
    """An RGB 'scan' of an MNIST digit: upscaled, dark ink on paper somewhere on a page."""
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


def encode(img: Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()
