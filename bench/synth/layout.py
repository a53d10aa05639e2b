"""Where a field's characters and printed rules go: free on paper, in a comb box, in a single box.

Coordinates are unrotated canvas pixels; a box (x0, y0, x1, y1) covers columns x0..x1-1 and rows
y0..y1-1. Free layouts place each character by its ink, not its bounding box, so a gap of 0 means
the strokes abut and a negative gap means they overlap: real touching digits, not touching boxes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["INK", "Box", "Layout", "Placed", "box_layout", "comb_layout", "free_layout", "ink_gap_offset"]

Box = tuple[int, int, int, int]
# Coverage from which a pixel counts as ink for spacing (and for the tests' touching check).
INK = 0.35


@dataclass(frozen=True)
class Placed:
    """A glyph (ink map) with its top-left corner on the canvas."""

    ink: np.ndarray
    x: int
    y: int

    right: np.ndarray = field(init=False, repr=False, compare=False)  # last ink column per row, -1: none

    def __post_init__(self) -> None:
        object.__setattr__(self, "right", _edges(self.ink)[1])

    @property
    def box(self) -> Box:
        return (self.x, self.y, self.x + self.ink.shape[1], self.y + self.ink.shape[0])


@dataclass
class Layout:
    placed: list[Placed] = field(default_factory=list)
    rules: list[Box] = field(default_factory=list)  # filled rectangles of printed rule
    cells: list[Box] = field(default_factory=list)  # comb cells, or the single box's inside


def _edges(ink: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the first and last ink column (-1 / -1 where a row has none)."""
    mask = ink > INK
    has = mask.any(axis=1)
    first = np.where(has, mask.argmax(axis=1), -1)
    last = np.where(has, ink.shape[1] - 1 - mask[:, ::-1].argmax(axis=1), -1)
    return first, last


def ink_gap_offset(left: Placed, left_edge: np.ndarray, y: int, gap: int) -> int | None:
    """The x at which a glyph (top at ``y``, first ink column per row ``left_edge``) leaves exactly
    ``gap`` empty columns between its ink and ``left``'s in the closest row (negative: overlap);
    None when no row holds ink of both."""
    right_edge = left.right
    ink_rows = len(left_edge)
    top, bottom = max(left.y, y), min(left.y + left.ink.shape[0], y + ink_rows)
    if bottom <= top:
        return None
    r = right_edge[top - left.y : bottom - left.y]
    lft = left_edge[top - y : bottom - y]
    both = (r >= 0) & (lft >= 0)
    if not both.any():
        return None
    return int(np.max(left.x + r[both] - lft[both])) + 1 + gap


def free_layout(glyphs: list[np.ndarray], gaps: list[int], lifts: list[int]) -> Layout:
    """Characters on a common baseline (row 0), each lifted by ``lifts[i]`` pixels, the i-th
    ``gaps[i - 1]`` ink-to-ink columns after its left neighbour and never into an earlier one."""
    out = Layout()
    for i, ink in enumerate(glyphs):
        y = -ink.shape[0] - lifts[i]
        if not out.placed:
            out.placed.append(Placed(ink, 0, y))
            continue
        prev, left_edge = out.placed[-1], _edges(ink)[0]
        x = ink_gap_offset(prev, left_edge, y, gaps[i - 1])
        if x is None:  # no common ink row (very different sizes): space by boxes instead
            x = prev.box[2] + gaps[i - 1]
        for earlier in out.placed[:-1]:  # a wide or slanted earlier glyph must not be overwritten
            clear = ink_gap_offset(earlier, left_edge, y, 1)
            x = max(x, clear if clear is not None else x)
        out.placed.append(Placed(ink, x, y))
    return out


def _rect(x0: float, y0: float, x1: float, y1: float) -> Box:
    return (round(x0), round(y0), round(x1), round(y1))


def comb_layout(
    glyphs: list[np.ndarray],
    cell: tuple[int, int],
    thickness: int,
    rng: np.random.Generator,
    *,
    ticks: bool,
    cross: list[bool],
) -> Layout:
    """One cell (width, height) per character in a printed comb: an outer frame and dividers
    (full height, or short ticks up from the bottom). Each glyph sits near its cell's centre,
    a little low as people write; a ``cross`` glyph is pushed over one of its cell's rules."""
    cw, ch = cell
    n = len(glyphs)
    out = Layout()
    half = thickness // 2
    out.rules += [_rect(-half, -half, n * cw - half + thickness, thickness - half)]  # top
    out.rules += [_rect(-half, ch - half, n * cw - half + thickness, ch - half + thickness)]  # bottom
    tick = ch if not ticks else round(ch * rng.uniform(0.25, 0.45))
    for i in range(n + 1):
        full = i in (0, n)
        out.rules.append(_rect(i * cw - half, 0 if full else ch - tick, i * cw - half + thickness, ch))
    for i, ink in enumerate(glyphs):
        gh, gw = ink.shape
        room_x, room_y = max(0.0, (cw - thickness - gw) / 2), max(0.0, (ch - thickness - gh) / 2)
        x = i * cw + (cw - gw) / 2 + rng.uniform(-0.7, 0.7) * room_x
        y = (ch - gh) / 2 + rng.uniform(-0.4, 1.0) * room_y
        if cross[i]:
            # Past the rule by 1 px to a fifth of the cell: touching, or crossing into the next cell.
            over = rng.uniform(1, max(2.0, ch / 5))
            side = rng.integers(4)
            if side == 0:  # over the left rule
                x = i * cw - over
            elif side == 1:  # over the right rule
                x = (i + 1) * cw + over - gw
            elif side == 2:  # through the bottom rule
                y = ch + over - gh
            else:  # through the top rule
                y = -over
        out.placed.append(Placed(ink, round(x), round(y)))
        out.cells.append((i * cw, 0, (i + 1) * cw, ch))
    return out


def box_layout(inner: Layout, pads: tuple[int, int, int, int], thickness: int) -> Layout:
    """A single printed box around ``inner``'s characters, ``pads`` (left, top, right, bottom)
    pixels away from their ink: a negative pad puts ink over the rule."""
    x0 = min(p.box[0] for p in inner.placed) - pads[0]
    y0 = min(p.box[1] for p in inner.placed) - pads[1]
    x1 = max(p.box[2] for p in inner.placed) + pads[2]
    y1 = max(p.box[3] for p in inner.placed) + pads[3]
    t = thickness
    rules = [(x0 - t, y0 - t, x1 + t, y0), (x0 - t, y1, x1 + t, y1 + t), (x0 - t, y0, x0, y1), (x1, y0, x1 + t, y1)]
    return Layout(list(inner.placed), inner.rules + rules, [(x0, y0, x1, y1)])
