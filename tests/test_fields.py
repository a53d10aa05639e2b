"""The field reader's parts: rule removal, merging broken strokes, cutting touching digits, boxes
in the crop's pixels, a single digit, hostile crops. Fast: the classifier here is a nearest-
neighbour over prepared MNIST training digits (a real classifier with real confidences, not a
network), so no test waits for training."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from bench.synth import DigitPool, FieldStyle, load_mnist, render_field
from config.errors import BlankImageError, ImageDecodeError, ImageError, ImageTooLargeError
from recognizer import ink as ink_module
from recognizer import scan
from recognizer.fields import FieldReading, ReaderParams, read_fields
from recognizer.frames import find_frame
from recognizer.ink import Band, deskew, find_rules, ink_maps, remove_rules
from recognizer.prediction import Prediction
from recognizer.segment import SegmentParams, cell_pieces, components, free_pieces, runs, slant, text_height


class NearestDigits:
    """Softmax over negative distances to the nearest prepared training digit of each class."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.bank = np.stack([scan.normalize(scan.prepare(i.astype(np.float32) / 255)).ravel() for i in images])
        self.labels = labels
        self.calls = 0

    def predict(self, inputs: Sequence[np.ndarray]) -> list[Prediction]:
        self.calls += 1
        x = np.stack([np.asarray(i).ravel() for i in inputs])
        d = (x**2).sum(1)[:, None] - 2 * x @ self.bank.T + (self.bank**2).sum(1)[None]
        near = np.stack([d[:, self.labels == c].min(axis=1) for c in range(10)], axis=1)
        logits = -(near - near.min(axis=1, keepdims=True)) / 40.0
        p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        out = []
        for row in p:
            top = np.argsort(-row)[:3]
            out.append(Prediction(int(top[0]), float(row[top[0]]), [(int(k), float(row[k])) for k in top]))
        return out


@pytest.fixture(scope="module")
def train_pool(mnist_root: Path) -> DigitPool:
    return DigitPool(*load_mnist(mnist_root, train=True))


@pytest.fixture(scope="module")
def knn(train_pool: DigitPool) -> NearestDigits:
    return NearestDigits(train_pool.images[:3000], train_pool.labels[:3000])


def _paper(h: int, w: int) -> np.ndarray:
    return np.full((h, w), 245, np.uint8)


def test_rule_removal_erases_a_grey_rule_but_keeps_a_stroke_crossing_it() -> None:
    img = _paper(60, 200)
    img[40:42, 10:190] = 120  # a grey printed rule
    img[15:55, 100:104] = 20  # a stroke written through it
    img[20:38, 50:54] = 20  # a stroke above it
    ink = deskew(ink_maps(img))
    rules = find_rules(ink, 40.0)
    assert any(b.y0 <= 40 and b.y1 >= 42 and b.x1 - b.x0 > 150 for b in rules.horizontal)
    frame = find_frame(rules, ink.marks)
    assert frame.kind == "free" and frame.rules, "a rule under the writing is an underline"
    clean = remove_rules(ink.ink, frame.rules)
    assert clean[41, 20:90].max() == 0 and clean[41, 110:180].max() == 0, "the rule is gone"
    assert clean[41, 100:104].min() > 0.5, "the crossing stroke is kept"
    assert clean[25, 50:54].min() > 0.5


def test_remove_rules_leaves_a_dropout_rule_the_ink_map_does_not_show() -> None:
    ink = np.zeros((20, 40), np.float32)
    ink[5:15, 10:12] = 1.0
    assert np.array_equal(remove_rules(ink, [Band(0, 9, 40, 11)]), ink)


def test_comb_cells_are_found_through_colour_and_grey_rules(train_pool: DigitPool) -> None:
    for i in range(12):
        field = render_field(train_pool, (5, i), FieldStyle(kind="comb", length=(5, 5)))
        ink = deskew(ink_maps(field.image))
        ys, _ = np.nonzero(ink.marks > 0.2)
        frame = find_frame(find_rules(ink, float(ys.max() - ys.min() + 1)), ink.marks)
        assert frame.kind == "comb" and len(frame.bounds) == 6, (i, field.rule_colour, frame)


def test_the_skew_search_finds_the_same_turn_however_many_angles_go_at_once(
    train_pool: DigitPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Angles are searched in groups bounded by memory: the grouping must not change the answer.
    found = []
    for i in range(6):
        marks = ink_maps(render_field(train_pool, (6, i), FieldStyle(kind="comb", length=(5, 5), rotation=3.0)).image)
        monkeypatch.setattr(ink_module, "_TURNED_PIXELS", 4_000_000)
        together = ink_module._skew(marks.marks)
        monkeypatch.setattr(ink_module, "_TURNED_PIXELS", 1)  # one angle at a time
        assert ink_module._skew(marks.marks) == together
        found.append(together)
    assert any(abs(a) >= ink_module.MIN_SKEW for a in found), found  # rotated scans were turned back


def test_a_stroke_broken_across_is_joined_into_one_piece() -> None:
    img = _paper(60, 60)
    img[10:14, 18:40] = 20  # a 5's bar, come off
    img[17:21, 18:24] = 20  # its stem and belly, below
    img[21:24, 18:38] = 20
    img[24:44, 34:38] = 20
    img[40:44, 18:38] = 20
    ink = ink_maps(img)
    blobs = components(ink.ink)
    assert len(blobs) == 2
    pieces = free_pieces(blobs, text_height(blobs), 0.0, 0.0, SegmentParams())
    assert len(pieces) == 1 and len(pieces[0].ys) == sum(len(ys) for ys, _ in blobs)


def square(x0: int, x1: int, rows: int = 10) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:rows, x0:x1]
    return ys.ravel(), xs.ravel()


def test_a_digit_pushed_into_its_neighbours_comb_cell_is_given_back_to_its_own() -> None:
    bounds = [0.0, 10.0, 20.0, 30.0]
    # Cell 0 holds its own digit and, almost whole, the next one written over the divider; cell 1
    # is empty; cell 2 holds one digit.
    blobs = [square(1, 8), square(3, 13), square(21, 28)]
    pieces = cell_pieces(blobs, bounds, 10.0, SegmentParams())
    assert all(p is not None for p in pieces)
    assert [int(p.xs.max()) for p in pieces if p is not None] == [7, 12, 27]
    # A cell is never refilled by robbing a neighbour of its only character.
    alone = cell_pieces([square(2, 13), square(21, 28)], bounds, 10.0, SegmentParams())
    assert alone[1] is None and alone[0] is not None and alone[2] is not None


def test_broken_generated_digits_mostly_have_a_candidate_holding_all_of_them(train_pool: DigitPool) -> None:
    style = FieldStyle(kind="free", length=(1, 1), broken=1.0, slant=0.0, rotation=0.0, underline=0.0)
    split = whole = 0
    for i in range(30):
        field = render_field(train_pool, (7, i), style, text="5")
        blobs = components(ink_maps(field.image).ink)
        height = text_height(blobs)
        pieces = free_pieces(blobs, height, 0.0, 0.0, SegmentParams())
        if len(pieces) > 1:
            split += 1
            whole += (0, len(pieces)) in runs(pieces, height, SegmentParams())
    # Measured: about two thirds. A 5 cut into many slivers (a wide bar) can exceed max_span.
    assert split >= 5 and whole >= 0.5 * split, (split, whole)


def test_touching_digits_are_cut_between_them(train_pool: DigitPool) -> None:
    style = FieldStyle(kind="free", length=(2, 2), touch=1.0, rotation=0.0, underline=0.0, broken=0.0)
    cut = 0
    for i in range(20):
        field = render_field(train_pool, (11, i), style, text="38")
        ink = ink_maps(field.image)
        blobs = components(ink.ink)
        if len(blobs) != 1:
            continue  # they overlapped on paper but not in solid ink
        ys, xs = blobs[0]
        height = text_height(blobs)
        pieces = free_pieces(blobs, height, slant(ys, xs), float(ys.mean()), SegmentParams())
        owner = field.owner[np.concatenate([p.ys for p in pieces[:1]]), np.concatenate([p.xs for p in pieces[:1]])]
        if len(pieces) >= 2 and np.mean(owner[owner >= 0] == 0) > 0.9:
            cut += 1
    assert cut >= 8, f"only {cut} touching pairs were cut with the left digit's ink on the left"


def test_boxes_are_in_the_crop_pixels_even_for_a_rotated_scan(train_pool: DigitPool, knn: NearestDigits) -> None:
    style = FieldStyle(kind="comb", length=(5, 5), rotation=3.0, cross=0.0)
    for i in range(6):
        field = render_field(train_pool, (13, i), style)
        (reading,) = read_fields([field.image], knn)
        assert isinstance(reading, FieldReading) and reading.layout == "comb"
        assert len(reading.chars) == 5
        for char, truth in zip(reading.chars, field.boxes, strict=True):
            ax0, ay0, ax1, ay1 = char.box
            bx0, by0, bx1, by1 = truth
            inter = max(0, min(ax1, bx1) - max(ax0, bx0)) * max(0, min(ay1, by1) - max(ay0, by0))
            union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter
            assert inter / union > 0.6, (i, char.box, truth)


def test_a_single_mnist_digit_reads_as_the_single_digit_path_does(train_pool: DigitPool, knn: NearestDigits) -> None:
    images, labels = train_pool.images[5000:5300], train_pool.labels[5000:5300]
    readings = read_fields(list(images), knn)
    direct = knn.predict([scan.normalize(scan.prepare(i.astype(np.float32) / 255)) for i in images])
    same = sum(isinstance(r, FieldReading) and r.text == str(d.label) for r, d in zip(readings, direct, strict=True))
    # Measured 90% here (and 91% with a 98.8% ResNet18): the reader sometimes cuts one wide digit
    # in two confident halves. The goal is 99.5%+; this guards against falling further.
    assert same >= 0.87 * len(images), f"field reader agrees with the single-digit path on {same}/{len(images)}"
    assert np.mean([d.label == y for d, y in zip(direct, labels, strict=True)]) > 0.85


def test_hostile_crops_each_get_a_clear_outcome_in_one_model_call(train_pool: DigitPool, knn: NearestDigits) -> None:
    good = render_field(train_pool, (17, 0), FieldStyle(kind="comb", length=(5, 5)))
    rng = np.random.default_rng(0)
    crops = [
        _paper(40, 120),  # blank
        np.zeros((40, 120), np.uint8),  # all ink
        good.image,
        np.zeros((1, 1), np.uint8),  # one pixel
        np.full((2100, 2100), 245, np.uint8),  # over the pixel limit
        np.zeros((10, 10, 5), np.uint8),  # not an image
        np.full((20, 20), np.nan, np.float32),
        (rng.random((80, 300)) * 255).astype(np.uint8),  # noise
    ]
    before = knn.calls
    out = read_fields(crops, knn, ReaderParams())
    assert knn.calls == before + 1, "every candidate of every crop goes in one call"
    assert isinstance(out[0], BlankImageError) and "no ink" in str(out[0])
    assert isinstance(out[1], BlankImageError)
    assert isinstance(out[2], FieldReading) and len(out[2].text) == 5
    assert isinstance(out[3], BlankImageError)
    assert isinstance(out[4], ImageTooLargeError) and "crop" in str(out[4])
    assert isinstance(out[5], ImageDecodeError)
    assert isinstance(out[6], ImageDecodeError)
    assert isinstance(out[7], (FieldReading, ImageError))
    for r in out:
        if isinstance(r, FieldReading):
            assert len(r.chars) == len(r.text) and 0 <= r.confidence <= 1
            assert all(0 <= c.box[0] < c.box[2] and 0 <= c.box[1] < c.box[3] for c in r.chars)
