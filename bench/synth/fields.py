"""Images of handwritten digit fields with their ground truth: text, character boxes, comb cells.

A field is 1 to 12+ MNIST digits, free on paper (gaps from overlapping strokes to wide, size and
baseline jitter, slant, broken strokes, an optional printed underline) or in a printed comb box or
single box (grey or drop-out coloured rules 1-4 px thick, ink touching or crossing them), the whole
scan slightly rotated. The same pool, seed and style always give the same field.

    pool = DigitPool(*load_mnist(root, train=False))   # test digits for reported figures
    f = render_field(pool, seed=7, style=STYLES["comb"])
    f.text, f.boxes, f.cells, f.pil().save("zip.png")
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from bench.synth.canvas import compose, rotate
from bench.synth.glyphs import DigitPool, glyph
from bench.synth.layout import Box, Layout, box_layout, comb_layout, free_layout

__all__ = ["STYLES", "Box", "Field", "FieldStyle", "render_field"]

# Printed drop-out colours (meant to vanish under a colour filter) and the paper they sit on.
_DROPOUT = ((232, 96, 96), (235, 140, 80), (110, 160, 235), (110, 190, 130), (200, 120, 200))


@dataclass(frozen=True)
class FieldStyle:
    """How fields are drawn; each range is sampled per field (or per character)."""

    kind: Literal["free", "comb", "box"] = "free"
    length: tuple[int, int] = (1, 12)  # characters, inclusive
    height: tuple[int, int] = (24, 44)  # character height in pixels, inclusive
    touch: float = 0.3  # free and box: chance a character's ink touches or overlaps its left neighbour's
    wide: float = 0.8  # free and box: the widest gap, as a fraction of the character height
    slant: float = 0.3  # largest shear (x shift per pixel of height), the writer's, shared by the field
    broken: float = 0.08  # chance a character has a broken stroke
    underline: float = 0.3  # free: chance of a printed rule under the characters
    rotation: float = 2.0  # largest rotation of the scan, degrees
    dropout: float = 0.5  # chance the rules are printed in a drop-out colour rather than grey
    cross: float = 0.2  # comb and box: chance a character touches or crosses a rule
    thickness: tuple[int, int] = (1, 4)  # rule thickness in pixels, inclusive
    noise: float = 5.0  # largest standard deviation of the scanner's noise, grey levels


# The kinds of field the acceptance figures name, and the free-length default.
STYLES = {
    "free": FieldStyle(kind="free", length=(3, 8)),
    "comb": FieldStyle(kind="comb", length=(5, 5)),
    "box": FieldStyle(kind="box", length=(1, 1)),
    "long": FieldStyle(kind="free", length=(9, 14)),
}


@dataclass(frozen=True)
class Field:
    """A rendered field. ``image`` is RGB uint8 (H, W, 3); ``boxes[i]`` bounds character i's ink
    (x0, y0, x1, y1, end exclusive) in the image's pixels; ``cells`` are the comb's cells (the
    single box's inside; none for free fields), as axis-aligned bounds after rotation; ``owner``
    gives each pixel the index of the character whose ink covers it most (-1: paper or bare rule);
    ``rules`` marks printed rule pixels, including those the ink covers."""

    image: np.ndarray
    text: str
    boxes: tuple[Box, ...]
    cells: tuple[Box, ...]
    owner: np.ndarray
    rules: np.ndarray
    angle: float
    rule_colour: tuple[int, int, int] | None
    kind: str

    def pil(self) -> Image.Image:
        return Image.fromarray(self.image)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _text(style: FieldStyle, rng: np.random.Generator) -> str:
    n = int(rng.integers(style.length[0], style.length[1] + 1))
    return "".join(str(d) for d in rng.integers(0, 10, size=n))


def _glyphs(
    pool: DigitPool, text: str, heights: list[int], style: FieldStyle, rng: np.random.Generator
) -> list[np.ndarray]:
    slant = _u(rng, -0.4, 1.0) * style.slant  # most writers lean right, a few left
    out = []
    for ch, h in zip(text, heights, strict=True):
        lean = slant + _u(rng, -0.05, 0.05)
        out.append(glyph(pool.pick(int(ch), rng), h, rng, slant=lean, broken=bool(rng.random() < style.broken)))
    return out


def _free(pool: DigitPool, text: str, style: FieldStyle, rng: np.random.Generator, size: int) -> Layout:
    heights = [round(size * _u(rng, 0.88, 1.1)) for _ in text]
    glyphs = _glyphs(pool, text, heights, style, rng)
    gaps = []
    for _ in text[1:]:
        if rng.random() < style.touch:
            gaps.append(-int(rng.integers(0, max(1, round(0.08 * size)) + 1)))  # 0 abuts, below 0 overlaps
        else:
            gaps.append(round(size * (0.06 + (style.wide - 0.06) * rng.random() ** 2)))  # mostly close
    lifts = [round(rng.normal(0, 0.04 * size)) for _ in text]
    return free_layout(glyphs, gaps, lifts)


def _fit(ink: np.ndarray, width: float) -> np.ndarray:
    if ink.shape[1] <= width:
        return ink
    scale = width / ink.shape[1]
    size = (max(1, round(ink.shape[1] * scale)), max(1, round(ink.shape[0] * scale)))
    return np.asarray(Image.fromarray(ink).resize(size, Image.Resampling.BILINEAR))


def _comb(pool: DigitPool, text: str, style: FieldStyle, rng: np.random.Generator, size: int, t: int) -> Layout:
    ch = round(size / _u(rng, 0.62, 0.8))
    cw = round(ch * _u(rng, 0.7, 1.0))
    cross = [bool(rng.random() < style.cross) for _ in text]
    heights = [round(ch * (_u(rng, 0.85, 1.0) if c else _u(rng, 0.55, 0.8))) for c in cross]
    glyphs = _glyphs(pool, text, heights, style, rng)
    # A wide 0 shrinks to fit its cell, as a writer would; a crossing one may overhang a little.
    fitted = [_fit(g, cw * (1.1 if c else 0.85)) for g, c in zip(glyphs, cross, strict=True)]
    return comb_layout(fitted, (cw, ch), t, rng, ticks=bool(rng.random() < 0.4), cross=cross)


def _box(pool: DigitPool, text: str, style: FieldStyle, rng: np.random.Generator, size: int, t: int) -> Layout:
    inner = _free(pool, text, style, rng, size)
    pads = [round(size * _u(rng, 0.12, 0.5)) for _ in range(4)]
    if rng.random() < style.cross:
        pads[int(rng.integers(4))] = -int(rng.integers(1, max(2, round(0.15 * size)) + 1))
    return box_layout(inner, (pads[0], pads[1], pads[2], pads[3]), t)


def _underline(layout: Layout, size: int, t: int, rng: np.random.Generator) -> None:
    x0 = min(p.box[0] for p in layout.placed) - round(size * _u(rng, 0.1, 0.8))
    x1 = max(p.box[2] for p in layout.placed) + round(size * _u(rng, 0.1, 0.8))
    y = max(p.box[3] for p in layout.placed) + int(rng.integers(-1, max(1, round(0.15 * size)) + 1))
    layout.rules.append((x0, y, x1, y + t))


def render_field(
    pool: DigitPool, seed: int | tuple[int, ...], style: FieldStyle | None = None, *, text: str | None = None
) -> Field:
    """One field drawn from ``pool`` (its split is the caller's choice), reproducible from ``seed``.
    ``text`` fixes the digits; otherwise their number comes from ``style.length``."""
    style = style or FieldStyle()
    rng = np.random.default_rng(seed)
    text = _text(style, rng) if text is None else text
    if not text or not text.isdigit() or not text.isascii():
        raise ValueError(f"a field's text is one or more digits 0-9, not {text!r}")
    size = int(rng.integers(style.height[0], style.height[1] + 1))
    t = int(rng.integers(style.thickness[0], style.thickness[1] + 1))
    if rng.random() < style.dropout:
        colour = _DROPOUT[int(rng.integers(len(_DROPOUT)))]
    else:
        grey = int(rng.integers(40, 170))
        colour = (grey, grey, grey)
    if style.kind == "comb":
        layout = _comb(pool, text, style, rng, size, t)
    elif style.kind == "box":
        layout = _box(pool, text, style, rng, size, t)
    else:
        layout = _free(pool, text, style, rng, size)
        if rng.random() < style.underline:
            _underline(layout, size, t, rng)
    margin = round(size * _u(rng, 0.25, 0.6))
    angle = _u(rng, -style.rotation, style.rotation)
    canvas = rotate(compose(layout, rng, margin, colour), angle)
    noise = rng.standard_normal(canvas.image.shape, dtype=np.float32)
    noisy = canvas.image + noise * np.float32(_u(rng, 0.3, 1.0) * style.noise)
    return Field(
        image=np.clip(noisy, 0, 255).astype(np.uint8),
        text=text,
        boxes=tuple(canvas.box(p.box) for p in layout.placed),
        cells=tuple(canvas.box(c) for c in layout.cells),
        owner=canvas.owner,
        rules=canvas.rules,
        angle=angle,
        rule_colour=colour if layout.rules else None,
        kind=style.kind,
    )
