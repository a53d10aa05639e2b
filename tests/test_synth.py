"""bench.synth: the MNIST reader and the digit-field renderer behind tests, benchmarks and demos."""

from __future__ import annotations

import csv
import gzip
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bench.synth import (
    STYLES,
    DigitPool,
    Field,
    FieldStyle,
    contact_sheet,
    glyph,
    read_idx,
    render_field,
    write_fields,
)
from config.errors import DatasetUnavailableError
from tests.conftest import MnistArrays

KINDS = ("free", "comb", "box", "long")


@pytest.fixture(scope="module")
def pool(mnist_test: MnistArrays) -> DigitPool:
    return DigitPool(*mnist_test)


def fields(pool: DigitPool, style: FieldStyle, n: int) -> list[Field]:
    return [render_field(pool, seed, style) for seed in range(n)]


def test_idx_reader_plain_gzip_and_damaged(tmp_path: Path) -> None:
    body = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = b"\0\0\x08\x03" + b"".join(n.to_bytes(4, "big") for n in body.shape) + body.tobytes()
    (tmp_path / "a-idx3-ubyte").write_bytes(raw)
    (tmp_path / "b-idx3-ubyte.gz").write_bytes(gzip.compress(raw))
    for name in ("a-idx3-ubyte", "b-idx3-ubyte"):
        got = read_idx(tmp_path / name)
        assert np.array_equal(got, body) and got.flags.writeable
    (tmp_path / "c-idx3-ubyte").write_bytes(raw[:-1])
    with pytest.raises(DatasetUnavailableError, match="truncated"):
        read_idx(tmp_path / "c-idx3-ubyte")
    with pytest.raises(DatasetUnavailableError, match="not found"):
        read_idx(tmp_path / "missing")


def test_same_seed_same_field(pool: DigitPool) -> None:
    for kind in KINDS:
        a, b = render_field(pool, (3, 1), STYLES[kind]), render_field(pool, (3, 1), STYLES[kind])
        assert np.array_equal(a.image, b.image) and (a.text, a.boxes, a.cells) == (b.text, b.boxes, b.cells)
        other = render_field(pool, (3, 2), STYLES[kind])
        assert other.image.shape != a.image.shape or not np.array_equal(other.image, a.image)


def test_text_and_lengths(pool: DigitPool) -> None:
    assert render_field(pool, 0, STYLES["comb"], text="90210").text == "90210"
    lengths = {len(f.text) for f in fields(pool, FieldStyle(length=(1, 14)), 60)}
    assert min(lengths) <= 2 and max(lengths) >= 12
    assert all(len(f.text) == 5 for f in fields(pool, STYLES["comb"], 10))
    for bad in ("", "12a", "١٢"):
        with pytest.raises(ValueError, match="digits"):
            render_field(pool, 0, text=bad)


def test_boxes_hold_their_own_ink(pool: DigitPool) -> None:
    for kind in KINDS:
        for f in fields(pool, STYLES[kind], 25):
            h, w = f.owner.shape
            assert f.image.shape == (h, w, 3) and f.image.dtype == np.uint8
            assert len(f.boxes) == len(f.text)
            for k, (x0, y0, x1, y1) in enumerate(f.boxes):
                ys, xs = np.nonzero(f.owner == k)
                assert len(xs) > 0, f"{kind}: character {k} of {f.text} has no ink"
                assert 0 <= x0 <= xs.min() and xs.max() < x1 <= w, (kind, f.text, k)
                assert 0 <= y0 <= ys.min() and ys.max() < y1 <= h, (kind, f.text, k)
                # The ink is dark where the truth says it is.
                assert f.image[ys, xs].mean() < 170


def test_comb_cells_align_with_characters(pool: DigitPool) -> None:
    style = FieldStyle(kind="comb", length=(1, 12), cross=0.0)
    for f in fields(pool, style, 25):
        assert len(f.cells) == len(f.text)
        for (bx0, by0, bx1, by1), (cx0, cy0, cx1, cy1) in zip(f.boxes, f.cells, strict=True):
            mx, my = (bx0 + bx1) / 2, (by0 + by1) / 2
            assert cx0 < mx < cx1 and cy0 < my < cy1
        lefts = [c[0] for c in f.cells]
        assert lefts == sorted(lefts)
        widths = [c[2] - c[0] for c in f.cells]
        assert max(widths) - min(widths) <= 3  # equal cells, up to rotation's rounding


def test_touching_neighbours_really_touch(pool: DigitPool) -> None:
    style = FieldStyle(kind="free", length=(2, 8), touch=1.0, rotation=0.0, broken=0.0)
    pairs = 0
    for f in fields(pool, style, 20):
        for k in range(len(f.text) - 1):
            a, b = f.owner == k, f.owner == k + 1
            grown = a.copy()  # a's ink grown by one pixel in all 8 directions
            grown[1:] |= a[:-1]
            grown[:-1] |= a[1:]
            grown[:, 1:] |= grown[:, :-1].copy()
            grown[:, :-1] |= grown[:, 1:].copy()
            assert (grown & b).any(), f"characters {k} and {k + 1} of {f.text} do not touch"
            pairs += 1
    assert pairs > 40


def test_wide_gaps_leave_paper_between(pool: DigitPool) -> None:
    style = FieldStyle(kind="free", length=(2, 6), touch=0.0, rotation=0.0, wide=1.5)
    gaps = [b[0] - a[2] for f in fields(pool, style, 20) for a, b in zip(f.boxes, f.boxes[1:], strict=False)]
    assert max(gaps) > 20


def test_broken_stroke_leaves_a_gap(pool: DigitPool, mnist_test: MnistArrays) -> None:
    one = mnist_test[0][int(np.flatnonzero(mnist_test[1] == 1)[0])]
    whole = glyph(one, 40, np.random.default_rng(0))
    broken = glyph(one, 40, np.random.default_rng(0), broken=True)
    assert (whole > 0).any(axis=1).all()
    assert not (broken > 0.02).any(axis=1).all()


def test_rules_are_printed_in_their_colour_and_rotate(pool: DigitPool) -> None:
    style = FieldStyle(kind="comb", length=(6, 10), dropout=1.0, cross=0.0, rotation=3.0, thickness=(2, 2))
    turned = 0
    for f in fields(pool, style, 12):
        assert f.rule_colour is not None and len(set(f.rule_colour)) > 1  # coloured, not grey
        clear = f.rules & (f.owner < 0)
        clear[:3], clear[-3:] = False, False  # rotation's resampling blurs the rules' ends
        assert clear.sum() > 100
        assert np.abs(f.image[clear].mean(axis=0) - np.array(f.rule_colour)).max() < 40
        # The top rule's slope across the comb follows the scan's rotation.
        cols = np.flatnonzero(f.rules.any(axis=0))
        left, right = cols[0] + 6, cols[-1] - 6
        top_left, top_right = np.argmax(f.rules[:, left]), np.argmax(f.rules[:, right])
        expected = (right - left) * math.tan(math.radians(f.angle))
        assert abs((top_right - top_left) - expected) <= 3, (f.angle, top_left, top_right)
        turned += abs(f.angle) > 1
    assert turned >= 3


def test_ink_touches_or_crosses_rules_when_asked(pool: DigitPool) -> None:
    for kind in ("comb", "box"):
        crossing = [render_field(pool, s, FieldStyle(kind=kind, length=(1, 6), cross=1.0)) for s in range(10)]
        assert all((f.rules & (f.owner >= 0)).any() for f in crossing), kind
        clean = [render_field(pool, s, FieldStyle(kind=kind, length=(1, 6), cross=0.0)) for s in range(10)]
        assert not any((f.rules & (f.owner >= 0)).any() for f in clean), kind


def test_free_fields_may_be_underlined(pool: DigitPool) -> None:
    style = FieldStyle(kind="free", length=(3, 6), underline=1.0, rotation=0.0)
    for f in fields(pool, style, 8):
        rows = np.flatnonzero(f.rules.any(axis=1))
        assert len(rows) and rows.max() >= max(b[3] for b in f.boxes) - 2  # under the characters


def test_folder_of_fields_and_contact_sheet(pool: DigitPool, tmp_path: Path) -> None:
    truth = write_fields(tmp_path / "comb", pool, 6, STYLES["comb"], seed=4)
    with (tmp_path / "comb" / "labels.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["path", "text"] and len(rows) == 7
    assert {str(tmp_path / "comb" / p): t for p, t in rows[1:]} == truth
    details = [json.loads(line) for line in (tmp_path / "comb" / "truth.jsonl").read_text().splitlines()]
    assert [d["text"] for d in details] == [t for _, t in rows[1:]] and all(len(d["cells"]) == 5 for d in details)
    # A larger set extends a smaller one: field i depends on the seed and i alone.
    write_fields(tmp_path / "more", pool, 8, STYLES["comb"], seed=4)
    assert (tmp_path / "more" / "field-00005.png").read_bytes() == (tmp_path / "comb" / "field-00005.png").read_bytes()
    examples = [render_field(pool, (0, i), STYLES[k]) for i, k in enumerate(KINDS * 2)]
    sheet = contact_sheet(examples, columns=4, width=200, boxes=True)
    sheet.save(tmp_path / "sheet.png")
    assert sheet.width == 4 * 208 + 8 and sheet.height > 2 * 40


def test_hundreds_of_fields_per_second(pool: DigitPool) -> None:
    render_field(pool, 0, STYLES["comb"])
    start = time.perf_counter()
    for seed in range(100):
        render_field(pool, seed, STYLES["comb"])
    # About 200 per second on one free core; a shared CI core still does 25.
    assert time.perf_counter() - start < 4


def test_generated_data_never_imports_torch() -> None:
    code = "import sys, bench.synth, producer.demo; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
