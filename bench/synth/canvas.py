"""Paint a field's layout (paper, printed rules, ink) and rotate it as a slightly skewed scan.

Besides the picture, the canvas keeps which character owns each ink pixel and where the rules
are, rotated the same way, so that the ground truth follows every transform exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from bench.synth.layout import Box, Layout

__all__ = ["OWNED", "Canvas", "compose", "rotate"]

# Ink below this coverage belongs to no character in the owner map.
OWNED = 0.25


@dataclass(frozen=True)
class Canvas:
    image: np.ndarray  # float32 (H, W, 3), 0-255
    owner: np.ndarray  # int16 (H, W): the character whose ink is strongest there, -1 none
    rules: np.ndarray  # bool (H, W): printed rule
    paper: np.ndarray  # float32 (3,): the paper's colour, for what rotation uncovers
    to_canvas: Callable[[float, float], tuple[float, float]]  # layout coordinates -> these pixels

    def box(self, box: Box) -> Box:
        """A layout box's bounds in this canvas's pixels (1 px larger each side where rotated)."""
        x0, y0, x1, y1 = box
        xs, ys = zip(*(self.to_canvas(x, y) for x, y in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))), strict=True)
        h, w = self.owner.shape
        exact = all(float(v).is_integer() for v in xs + ys)
        pad = 0 if exact else 1
        return (
            max(0, math.floor(min(xs)) - pad),
            max(0, math.floor(min(ys)) - pad),
            min(w, math.ceil(max(xs)) + pad),
            min(h, math.ceil(max(ys)) + pad),
        )


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def compose(layout: Layout, rng: np.random.Generator, margin: int, rule_colour: tuple[int, int, int]) -> Canvas:
    """Paper of a random off-white, rules in ``rule_colour``, then dark ink over both."""
    boxes = [p.box for p in layout.placed] + layout.rules + layout.cells
    ox, oy = margin - min(b[0] for b in boxes), margin - min(b[1] for b in boxes)
    w, h = max(b[2] for b in boxes) + ox + margin, max(b[3] for b in boxes) + oy + margin
    paper = np.array([_u(rng, 238, 255), _u(rng, 236, 252), _u(rng, 225, 248)], np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = paper
    rules = np.zeros((h, w), bool)
    for x0, y0, x1, y1 in layout.rules:
        rules[max(0, y0 + oy) : y1 + oy, max(0, x0 + ox) : x1 + ox] = True
    img[rules] = rule_colour
    best = np.zeros((h, w), np.float32)
    owner = np.full((h, w), -1, np.int16)
    for i, p in enumerate(layout.placed):
        sl = np.s_[p.y + oy : p.y + oy + p.ink.shape[0], p.x + ox : p.x + ox + p.ink.shape[1]]
        owner[sl][p.ink > best[sl]] = i
        best[sl] = np.maximum(best[sl], p.ink)
    owner[best < OWNED] = -1
    ink = np.array([_u(rng, 10, 60), _u(rng, 10, 55), _u(rng, 30, 110)], np.float32)
    alpha = (best * _u(rng, 0.85, 1.0))[..., None]  # pen pressure: not every pen inks fully
    img = img * (1 - alpha) + ink * alpha

    def shift(x: float, y: float) -> tuple[float, float]:
        return x + ox, y + oy

    return Canvas(img, owner, rules, paper, shift)


def rotate(canvas: Canvas, angle: float) -> Canvas:
    """The canvas turned by ``angle`` degrees about its centre, enlarged to keep every corner."""
    if angle == 0:
        return canvas
    h, w = canvas.owner.shape
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    size = (math.ceil(w * abs(c) + h * abs(s)), math.ceil(w * abs(s) + h * abs(c)))
    cx, cy, nx, ny = w / 2, h / 2, size[0] / 2, size[1] / 2
    # PIL asks where each output point comes from: input = centre + R^-1 (output - new centre),
    # in continuous pixel coordinates, so the forward map below is its exact inverse.
    inverse = (c, s, cx - c * nx - s * ny, -s, c, cy + s * nx - c * ny)

    def warp(a: np.ndarray, fill: float, resample: Image.Resampling) -> np.ndarray:
        moved = Image.fromarray(a).transform(size, Image.Transform.AFFINE, inverse, resample, fillcolor=fill)
        return np.asarray(moved)

    # One RGB transform rather than three float ones: rounding to 8 bits first changes nothing visible.
    rgb = Image.fromarray(np.clip(canvas.image, 0, 255).astype(np.uint8))
    fill = tuple(int(v) for v in canvas.paper)
    image = np.asarray(rgb.transform(size, Image.Transform.AFFINE, inverse, Image.Resampling.BILINEAR, fillcolor=fill))
    owner = warp(canvas.owner.astype(np.int32), -1, Image.Resampling.NEAREST).astype(np.int16)
    rules = warp(canvas.rules.astype(np.uint8) * 255, 0, Image.Resampling.NEAREST) > 0

    def forward(x: float, y: float) -> tuple[float, float]:
        px, py = canvas.to_canvas(x, y)
        return nx + c * (px - cx) - s * (py - cy), ny + s * (px - cx) + c * (py - cy)

    return Canvas(image.astype(np.float32), owner, rules, canvas.paper, forward)
