"""Fusing the two readers of a field in cells: each position's digit is the one both readers find
most likely together; when they disagree on the count, the more confident reading stands; any
disagreement is a doubt that sends the reading to review."""

from __future__ import annotations

import math

import pytest

from recognizer.fields import CharReading, FieldReading
from recognizer.layout import fuse


def field(*tops: list[tuple[int, float]], method: str = "segment") -> FieldReading:
    chars = [CharReading(t[0][0], t[0][1], t, (i * 10, 0, i * 10 + 8, 12)) for i, t in enumerate(tops)]
    text = "".join(str(c.label) for c in chars)
    return FieldReading(text, chars, math.prod(c.confidence for c in chars), "comb", method)


def test_a_digit_both_readers_rank_high_wins_over_one_that_only_one_is_sure_of() -> None:
    cells = field([(1, 0.99), (7, 0.01)], [(3, 0.55), (8, 0.44), (5, 0.01)])
    line = field([(1, 0.98), (7, 0.02)], [(8, 0.7), (3, 0.2), (9, 0.1)], method="sequence")
    out = fuse(cells, line)
    assert out.text == "18" and out.method == "both" and out.layout == "comb"
    assert out.chars[1].top3[0][0] == 8 and out.chars[1].top3[1][0] == 3
    assert out.chars[1].box == cells.chars[1].box  # boxes stay the cells'
    assert out.confidence == pytest.approx(out.chars[0].confidence * out.chars[1].confidence)
    assert sum(p for _, p in out.chars[1].top3) <= 1.0 + 1e-9


def test_a_digit_outside_one_readers_top_three_is_weighed_not_vetoed() -> None:
    cells = field([(4, 0.99), (9, 0.005), (7, 0.005)])
    line = field([(9, 0.5), (7, 0.3), (1, 0.2)], method="sequence")  # 4 not in its top 3 at all
    assert fuse(cells, line).text == "4"


def test_when_the_readers_disagree_on_the_count_the_more_confident_reading_stands() -> None:
    cells = field([(8, 0.9)], [(1, 0.6)])  # a box's edge read as a 1 after the 8
    line = field([(8, 0.97)], method="sequence")
    assert fuse(cells, line).chars == line.chars and fuse(cells, line).method == "sequence"
    sure = field([(1, 0.99)], [(2, 0.99)], [(3, 0.99)])
    doubled = field([(1, 0.9)], [(2, 0.9)], [(2, 0.6)], [(3, 0.9)], method="sequence")
    assert fuse(sure, doubled).text == "123" and fuse(sure, doubled).method == "segment"
    assert fuse(field(), field(method="sequence")).method in ("segment", "sequence")  # nothing to fuse


def test_where_the_readers_disagree_the_reading_carries_a_doubt() -> None:
    # A sure 7 in its cell and an unsure 2 in the line fuse to a confident 7: a person should look.
    cells = field([(1, 0.99)], [(7, 0.99), (2, 0.01)])
    line = field([(1, 0.98)], [(2, 0.8), (7, 0.15), (3, 0.05)], method="sequence")
    out = fuse(cells, line)
    assert out.text == "17" and out.chars[1].confidence > 0.8
    assert out.doubts == ("character 2: the readers disagree (7 in its cell, 2 in the line)",)
    agreed = fuse(cells, field([(1, 0.98)], [(7, 0.9)], method="sequence"))
    assert agreed.doubts == ()
    counted = fuse(field([(8, 0.9)], [(1, 0.6)]), field([(8, 0.97)], method="sequence"))
    assert counted.doubts == ("the readers found 2 (cells) and 1 (line) characters",)
