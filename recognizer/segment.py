"""Characters from a field's ink: connected components, pieces cut from touching ones, and the
candidate characters (runs of neighbouring pieces) among which the reader's search chooses.

Handwriting leans; cuts and widths are taken along the writer's slant (measured from the ink),
so two slanted digits that touch are parted by a slanted cut, not a vertical one through both.
A broken stroke (a 5 whose bar came off) is two pieces that a candidate joins again.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import cv2
import numpy as np

from recognizer import scan
from recognizer.ink import SOLID

__all__ = ["Piece", "SegmentParams", "cell_pieces", "free_pieces", "join", "render", "runs", "text_height", "width"]


@dataclass(frozen=True)
class SegmentParams:
    """Thresholds tuned on validation fields drawn from MNIST training digits (bench.fields)."""

    speck: float = 0.012  # components smaller than this share of height² are dust
    cut_width: float = 1.0  # components wider than this many heights (along the slant) may be cut
    cut_margin: float = 0.2  # no cut nearer a component's edge than this many heights
    max_cuts: int = 5  # cuts tried per component
    max_span: int = 4  # pieces one character may be made of
    max_width: float = 1.8  # a character is at most this many heights wide
    stacked: float = 0.7  # pieces sharing this share of the narrower one's columns are one character
    max_gap: float = 0.6  # pieces of one character are at most this many heights apart


@dataclass(frozen=True)
class Piece:
    """Pixels (rows ``ys``, columns ``xs``) of the upright ink map that belong together; ``u``
    is a pixel's column along the slant."""

    ys: np.ndarray
    xs: np.ndarray
    u: np.ndarray

    @property
    def left(self) -> float:
        return float(self.u.min())

    @property
    def right(self) -> float:
        return float(self.u.max()) + 1

    @property
    def centre(self) -> float:
        return float(self.u.mean())


def components(ink: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each 8-connected blob of solid ink as (rows, columns)."""
    n, labels = cv2.connectedComponents((ink > SOLID).astype(np.uint8), connectivity=8)
    if n <= 1:
        return []
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    order = np.argsort(lab, kind="stable")
    ys, xs, lab = ys[order], xs[order], lab[order]
    starts = np.searchsorted(lab, np.arange(1, n + 1))  # label k spans starts[k-1]:starts[k]
    return [(ys[a:b], xs[a:b]) for a, b in itertools.pairwise(starts)]


def text_height(blobs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """The characters' height: the median of the blobs at least half as tall as the tallest, and
    not far below the tallest (a digit broken into parts has none of its full height)."""
    heights = np.array([int(ys.max() - ys.min() + 1) for ys, _ in blobs]) if blobs else np.array([1])
    return float(max(np.median(heights[heights >= 0.5 * heights.max()]), 0.85 * heights.max()))


def slant(ys: np.ndarray, xs: np.ndarray) -> float:
    """The shear (x shift per row up) that stands the strokes most upright: the one that piles
    the ink into the fewest columns."""
    if len(xs) < 10:
        return 0.0
    yc = float(ys.mean())

    def sharpness(s: float) -> float:
        u = np.round(xs + s * (ys - yc)).astype(np.int64)
        return float(np.square(np.bincount(u - u.min()).astype(np.float64)).sum())

    return float(max(np.arange(-0.3, 0.71, 0.05), key=sharpness))


def _along(ys: np.ndarray, xs: np.ndarray, shear: float, yc: float) -> np.ndarray:
    return xs + shear * (ys - yc)


def width(pieces: list[Piece]) -> float:
    """How wide these pieces are together: upright or along the slant, whichever is narrower
    (a slant measured on one character can be far off)."""
    u = max(q.right for q in pieces) - min(q.left for q in pieces)
    x = max(int(q.xs.max()) for q in pieces) + 1 - min(int(q.xs.min()) for q in pieces)
    return float(min(u, x))


def _cuts(u: np.ndarray, xs: np.ndarray, height: float, p: SegmentParams) -> list[float]:
    """Where to try parting a wide blob: the thinnest places of its ink along the slant."""
    lo, hi = float(u.min()), float(u.max()) + 1
    if min(hi - lo, float(xs.max() - xs.min() + 1)) <= p.cut_width * height:
        return []
    cols = np.bincount(np.floor(u - lo).astype(np.int64))
    smooth = np.convolve(cols, np.ones(3) / 3, mode="same")
    margin = max(2, round(p.cut_margin * height))
    inner = range(margin, len(smooth) - margin)
    minima = [i for i in inner if smooth[i] <= smooth[i - 1] and smooth[i] <= smooth[i + 1]]
    chosen: list[int] = []
    for i in sorted(minima, key=lambda i: smooth[i]):
        if all(abs(i - c) >= 0.25 * height for c in chosen):
            chosen.append(i)
        if len(chosen) == p.max_cuts:
            break
    return sorted(lo + c + 0.5 for c in chosen)


def free_pieces(
    blobs: list[tuple[np.ndarray, np.ndarray]], height: float, shear: float, yc: float, p: SegmentParams
) -> list[Piece]:
    """Pieces in reading order: each blob, cut at its candidate cuts, dust dropped."""
    out = []
    for ys, xs in blobs:
        if len(ys) < p.speck * height * height:
            continue
        u = _along(ys, xs, shear, yc)
        edges = [-np.inf, *_cuts(u, xs, height, p), np.inf]
        for a, b in itertools.pairwise(edges):
            keep = (u >= a) & (u < b)
            if keep.any():
                out.append(Piece(ys[keep], xs[keep], u[keep]))
    return _stack(sorted(out, key=lambda piece: piece.centre), p)


def _stack(pieces: list[Piece], p: SegmentParams) -> list[Piece]:
    """Pieces one above the other along the slant joined: a stroke broken across (the bar of a 5
    come off its body) leaves parts that share their columns, where neighbours hardly do."""
    out: list[Piece] = []
    for q in pieces:
        for k, r in enumerate(out):
            shared = min(q.right, r.right) - max(q.left, r.left)
            if shared >= p.stacked * min(q.right - q.left, r.right - r.left):
                out[k] = Piece(np.concatenate([r.ys, q.ys]), np.concatenate([r.xs, q.xs]), np.concatenate([r.u, q.u]))
                break
        else:
            out.append(q)
    return sorted(out, key=lambda piece: piece.centre)


def cell_pieces(
    blobs: list[tuple[np.ndarray, np.ndarray]], bounds: list[float], height: float, p: SegmentParams
) -> list[Piece | None]:
    """One piece per comb cell (None: the cell is empty). A blob goes whole to the cell holding
    most of it, as a digit pushed over a rule still belongs to its cell; one spread over cells
    (two digits touching across a divider) is parted at the dividers. A cell left empty beside
    one holding two characters' worth of blobs takes back the one reaching furthest into it: a
    digit written over its divider into a neighbour's cell, which would otherwise be read with
    that neighbour as one character and leave its own cell blank."""
    n = len(bounds) - 1
    inner = np.asarray(bounds[1:-1])
    parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]] = [[] for _ in range(n)]
    for ys, xs in blobs:
        if len(ys) < p.speck * height * height:
            continue
        cell = np.searchsorted(inner, xs)
        counts = np.bincount(cell, minlength=n)
        if counts.max() >= 0.75 * len(xs):
            parts[int(counts.argmax())].append((ys, xs, counts))
        else:
            for c in np.flatnonzero(counts):
                parts[c].append((ys[cell == c], xs[cell == c], None))
    floor = 4 * p.speck * height * height
    _refill_empty(parts, floor)
    out: list[Piece | None] = []
    for held in parts:
        if not held or sum(len(ys) for ys, _, _ in held) < floor:
            out.append(None)
            continue
        ys = np.concatenate([a for a, _, _ in held])
        xs = np.concatenate([b for _, b, _ in held])
        out.append(Piece(ys, xs, xs.astype(np.float64)))
    return out


def _refill_empty(parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]], floor: float) -> None:
    """Move a whole blob into each cell too empty to read, from a neighbour that keeps a
    character's worth of ink without it; the blob reaching furthest into the empty cell."""
    for c, held in enumerate(parts):
        if sum(len(ys) for ys, _, _ in held) >= floor:
            continue
        best: tuple[int, int, int] | None = None  # (pixels in cell c, neighbour, blob index)
        for d in (c - 1, c + 1):
            if not 0 <= d < len(parts):
                continue
            total = sum(len(ys) for ys, _, _ in parts[d])
            for k, (ys, _, counts) in enumerate(parts[d]):
                if counts is None or counts[c] == 0 or len(ys) < floor or total - len(ys) < floor:
                    continue
                if best is None or counts[c] > best[0]:
                    best = (int(counts[c]), d, k)
        if best is not None:
            held.append(parts[best[1]].pop(best[2]))


def runs(pieces: list[Piece], height: float, p: SegmentParams) -> list[tuple[int, int]]:
    """The (first, end) piece runs that may be one character: few pieces, close together, not
    too wide along the slant."""
    out = []
    for i in range(len(pieces)):
        right = pieces[i].right
        for j in range(i + 1, min(len(pieces), i + p.max_span) + 1):
            if j > i + 1:
                gap = pieces[j - 1].left - right
                right = max(right, pieces[j - 1].right)
                if gap > p.max_gap * height or width(pieces[i:j]) > p.max_width * height:
                    break
            out.append((i, j))
    return out


def join(pieces: list[Piece]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([q.ys for q in pieces]), np.concatenate([q.xs for q in pieces])


def render(ink: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """The character made of these pixels, with the faint rim around them, in MNIST's frame
    (1, 28, 28), normalised for the network."""
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    pad = 2
    h, w = ink.shape
    top, left = max(0, y0 - pad), max(0, x0 - pad)
    bottom, right = min(h, y1 + pad), min(w, x1 + pad)
    mask = np.zeros((bottom - top, right - left), np.uint8)
    mask[ys - top, xs - left] = 1
    rim = cv2.dilate(mask, np.ones((5, 5), np.uint8)).astype(bool)
    crop = np.where(rim, ink[top:bottom, left:right], 0.0).astype(np.float32)
    return scan.normalize(scan.frame(crop))
