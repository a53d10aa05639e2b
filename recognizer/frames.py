"""What the printed rules of a field make: a comb (one cell per character), a single box, an
underline, or nothing. Found from the straight runs `recognizer.ink.find_rules` returns, in the
upright scan.

A frame is two level rules, one above the other, spanning the same columns, closed by a rule at
each end. Its dividers (full height, or ticks up from the bottom rule) sit on a regular grid:
the reader tries each number of cells and keeps the largest whose every divider is there, so a
digit's straight stem is not taken for one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from recognizer.ink import FAINT, SOLID, Band, Rules

__all__ = ["Frame", "find_frame"]

# Dividers are found within this share of the cell pitch of where the grid puts them.
GRID_TOLERANCE = 0.08
# A frame's two level rules share at least this share of the shorter one's columns.
OVERLAP = 0.8
# A divider marks this share of the rows just above the bottom rule (the lowest LOW of the
# cell's height); a side, SIDE of the rows between the level rules.
DIVIDER, LOW, SIDE = 0.9, 0.2, 0.8
# A frame holds at least HELD of the marks that are not its own rules well inside it, and no more
# than BEYOND of them outside it.
HELD, BEYOND = 0.3, 0.25
# An underline runs past the characters on both sides, and this share of the ink is above it.
ABOVE = 0.7


@dataclass(frozen=True)
class Frame:
    kind: Literal["free", "box", "comb"]
    bounds: list[float] = field(default_factory=list)  # comb: cell edges left to right (n + 1)
    rules: list[Band] = field(default_factory=list)  # printed rules to erase
    inside: tuple[int, int] | None = None  # box and comb: the rows between the level rules


def _pair(level: list[Band]) -> tuple[Band, Band] | None:
    best: tuple[Band, Band] | None = None
    for i, top in enumerate(level):
        for bottom in level[i + 1 :]:
            if bottom.y0 - top.y1 < 6:
                continue
            shared = min(top.x1, bottom.x1) - max(top.x0, bottom.x0)
            if shared < OVERLAP * min(top.x1 - top.x0, bottom.x1 - bottom.x0):
                continue
            if best is None or bottom.y0 - top.y1 > best[1].y0 - best[0].y1:
                best = (top, bottom)
    return best


def _coverage(mask: np.ndarray, rows: slice) -> np.ndarray:
    """Per column, the share of ``rows`` that are marked, taking the best of each column and its
    neighbours (a rule a pixel off its column after deskewing still counts)."""
    cov = mask[rows].mean(axis=0) if mask[rows].size else np.zeros(mask.shape[1])
    return np.maximum(cov, np.maximum(np.roll(cov, 1), np.roll(cov, -1)))


def _near(cov: np.ndarray, x: float, tol: float) -> tuple[float, int]:
    """The best coverage within ``tol`` columns of ``x`` and the middle of the columns that have it."""
    lo, hi = max(0, round(x - tol)), min(len(cov), round(x + tol) + 1)
    if hi <= lo:
        return 0.0, round(x)
    at = lo + int(np.argmax(cov[lo:hi]))
    best = float(cov[at])
    end = at
    while end + 1 < len(cov) and cov[end + 1] >= best:
        end += 1
    return best, (at + end) // 2


def _thin(low: np.ndarray, at: int, t: int) -> bool:
    """Whether the marked columns around ``at`` are a rule's width, not a stroke's."""
    lo = hi = at
    while lo > 0 and low[lo - 1] >= DIVIDER:
        lo -= 1
    while hi < len(low) - 1 and low[hi + 1] >= DIVIDER:
        hi += 1
    return hi - lo + 1 <= t + 4


def _grid(low: np.ndarray, left: float, right: float, inner: int, t: int) -> list[int]:
    """The columns of the interior dividers of the finest grid whose every divider shows in the
    rows just above the bottom rule (full dividers and ticks both reach down there); none for a
    single box."""
    best: list[int] = []
    most = int((right - left) / max(4.0, 0.3 * inner))
    for n in range(2, most + 1):
        pitch = (right - left) / n
        found = []
        for i in range(1, n):
            cov, at = _near(low, left + i * pitch, max(2.0, GRID_TOLERANCE * pitch))
            if cov < DIVIDER:
                break  # a divider missing: not this grid
            found.append(at)
        else:
            # Ink beside a divider widens it: half of them a rule's width is enough.
            if 2 * sum(_thin(low, at, t) for at in found) >= len(found):
                best = found
    return best


def _reach(mask: np.ndarray, x: int, bottom: int, inner: int) -> int:
    """How far up from the bottom rule a divider's column stays marked."""
    column: np.ndarray = np.asarray(mask[bottom - inner : bottom, max(0, x - 1) : x + 2].any(axis=1))[::-1]
    return int(np.argmin(column)) if not column.all() else inner


def _holds_writing(mask: np.ndarray, top: Band, bottom: Band, left: int, right: int, t: int) -> bool:
    """Whether the frame holds the writing: most of the ink well inside it and little beyond it.
    A digit's loop (a 0, the head of a 6 or 9) is strokes round an empty hole, with its tail
    outside; a printed box is round the ink."""
    inner = bottom.y0 - top.y1
    m = max(2, round(0.15 * inner))
    inside = int(mask[top.y1 + m : bottom.y0 - m, left + t + m : right - t - m + 1].sum())
    enclosed = int(mask[max(0, top.y0 - 1) : bottom.y1 + 1, max(0, left - t - 1) : right + t + 2].sum())
    outline = 2 * (right - left + 1) * (t + 2) + 2 * (bottom.y1 - top.y0) * (t + 2)
    writing = max(1, int(mask.sum()) - outline)
    return inside >= HELD * writing and int(mask.sum()) - enclosed <= BEYOND * writing


def _frame(top: Band, bottom: Band, mask: np.ndarray) -> Frame | None:
    inner = bottom.y0 - top.y1
    t = max(1, round(((top.y1 - top.y0) + (bottom.y1 - bottom.y0)) / 2) - 2)  # bands are found 2 px thick too
    left = (top.x0 + bottom.x0) / 2 + t / 2
    right = (top.x1 + bottom.x1) / 2 - t / 2
    full = _coverage(mask, slice(top.y1, bottom.y0))
    tol = max(3.0, 0.1 * inner)
    (lcov, lx), (rcov, rx) = _near(full, left, tol), _near(full, right, tol)
    if lcov < SIDE or rcov < SIDE or rx - lx < 4:
        return None
    if not _holds_writing(mask, top, bottom, lx, rx, t):
        return None
    low = _coverage(mask, slice(bottom.y0 - max(2, round(LOW * inner)), bottom.y0))
    dividers = _grid(low, lx, rx, inner, t)
    half = t // 2 + 1

    def upright(x: int, y0: int) -> Band:
        return Band(x - half, y0, x + half + 1, bottom.y1)

    rules = [top, bottom, upright(lx, top.y0), upright(rx, top.y0)]
    if not dividers:
        return Frame("box", [], rules, (top.y1, bottom.y0))
    reach = int(np.median([_reach(mask, x, bottom.y0, inner) for x in dividers]))
    rules += [upright(x, bottom.y0 - reach - 1) for x in dividers]
    return Frame("comb", [float(x) for x in (lx, *dividers, rx)], rules, (top.y1, bottom.y0))


def _underline(level: list[Band], marks: np.ndarray) -> list[Band]:
    out = []
    for b in level:
        mask = marks > SOLID
        above, below = mask[: b.y0].sum(), mask[b.y1 :].sum()
        cols = np.flatnonzero(mask[: max(0, b.y0 - 1)].any(axis=0))
        if len(cols) and above >= ABOVE * (above + below) and b.x0 < cols[0] and b.x1 > cols[-1] + 1:
            out.append(b)
    return out


def find_frame(rules: Rules, marks: np.ndarray) -> Frame:
    """The frame the rules make; a field with none is ``free`` (an underline still to erase)."""
    level = sorted(rules.horizontal, key=lambda b: b.y0)
    pair = _pair(level)
    if pair is not None:
        found = _frame(*pair, marks > FAINT)
        if found is not None:
            return found
    return Frame("free", [], _underline(level, marks))
