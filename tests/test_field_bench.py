"""How `python -m bench.fields` scores readings: edit distance per character, and what an
operator meets at the default review threshold (marked for review, right when unmarked, wrong
and unmarked)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from bench.fields import REVIEW_THRESHOLD, _score, char_errors, flagged
from bench.fields import main as fields_cli
from bench.synth import Field
from recognizer.fields import CharReading, FieldReading
from tests.models import untrained_weights


def _field(text: str) -> Field:
    boxes = tuple((10 * i, 0, 10 * i + 8, 10) for i in range(len(text)))
    blank = np.zeros((10, 10 * len(text)), dtype=np.int16)
    return Field(np.zeros((10, 10 * len(text), 3), np.uint8), text, boxes, (), blank, blank > 0, 0.0, None, "free")


def _reading(text: str, confidences: list[float]) -> FieldReading:
    chars = [
        CharReading(int(c), p, [(int(c), p)], (10 * i, 0, 10 * i + 8, 10))
        for i, (c, p) in enumerate(zip(text, confidences, strict=True))
    ]
    return FieldReading(text, chars, float(np.prod(confidences)), "free")


def test_character_errors_count_misreads_drops_and_additions() -> None:
    assert char_errors("90210", "90210") == 0
    assert char_errors("90210", "90710") == 1
    assert char_errors("90210", "9021") == 1
    assert char_errors("90210", "902100") == 1
    assert char_errors("123", "") == 3


def test_a_reading_is_flagged_like_a_worker_flags_it() -> None:
    sure, unsure = 0.99, REVIEW_THRESHOLD - 0.01
    assert not flagged(_reading("12", [sure, sure]), REVIEW_THRESHOLD)
    assert flagged(_reading("12", [sure, unsure]), REVIEW_THRESHOLD)
    assert flagged(None, REVIEW_THRESHOLD)  # the reader failed on the crop
    assert flagged(FieldReading("", [], 0.0, "free"), REVIEW_THRESHOLD)


def test_scores_separate_reviewed_from_silent_errors() -> None:
    fields = [_field(t) for t in ("123", "456", "789", "000")]
    readings = [
        _reading("123", [0.99, 0.99, 0.99]),  # right, unmarked
        _reading("452", [0.99, 0.99, 0.5]),  # wrong, marked: a person will see it
        _reading("780", [0.99, 0.99, 0.95]),  # wrong and unmarked: a silent error
        None,  # an error: marked
    ]
    score = _score("free", fields, readings, seconds=1.0)
    assert score["exact"] == 25.0
    assert score["chars"] == round(100 * 7 / 12, 2)
    assert score["review"] == 50.0
    assert score["unreviewed_exact"] == 50.0
    assert score["silent_errors"] == 25.0
    assert score["segmented"] == 75.0


def test_the_cli_reads_fields_with_the_digit_network_in_the_precision_asked_for(
    tmp_path: Path, mnist_root: Path
) -> None:
    weights = tmp_path / "digits.safetensors"
    weights.write_bytes(untrained_weights(3))
    weights.with_suffix(".json").write_text(json.dumps({"temperature": 1.0}))
    out = tmp_path / "fields.json"
    args = ["--method", "seg", "--model", "file", "--weights", str(weights), "--count", "2", "--digits", "0"]
    args += ["--precision", "fp32", "--data-root", str(mnist_root), "--json", str(out)]
    run = CliRunner().invoke(fields_cli, args)
    assert run.exit_code == 0, run.output
    figures = json.loads(out.read_text())
    assert "eager float32" in figures["engine"] and figures["comb"]["fields"] == 2
