"""A worker's field path without a worker: reading a batch of field images (hostile ones
included), the result body, rules and review reasons, and each job's reading kept per job."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bench.synth import STYLES, DigitPool, load_mnist, render_field
from recognizer.fields import CharReading, FieldReading
from recognizer.preprocessing import Preprocessor
from recognizer.rules import FieldRule
from recognizer.sequence import SequenceReader, build
from tests.test_fields import NearestDigits
from worker.fieldwork import ReadSpecs, field_result, prepare_batch, read_batch
from worker.metrics import WorkerMetrics
from worker.results import Served

MAX_BYTES, MAX_PIXELS = 1 << 20, 1 << 22


class Knn(NearestDigits):
    version = "knn"
    sequence: SequenceReader | None = None  # segmentation only, unless a test gives it a line reader


@pytest.fixture(scope="module")
def pool(mnist_root: Path) -> DigitPool:
    return DigitPool(*load_mnist(mnist_root, train=True))


def png(image: Any) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def served(engine: Knn, blobs: list[bytes], metrics: WorkerMetrics, workers: int = 0) -> list[Served]:
    """A batch of field images as a worker serves it: prepared (in ``workers`` processes), then read."""
    prep = Preprocessor(workers, max_bytes=MAX_BYTES, max_pixels=MAX_PIXELS)
    try:
        outcomes = prepare_batch(engine, blobs, prep)  # type: ignore[arg-type]
    finally:
        prep.close()
    metrics.prepared(len(blobs), 0, outcomes)
    return read_batch(engine, outcomes, max_pixels=MAX_PIXELS, metrics=metrics, fetch_ms=0.5)  # type: ignore[arg-type]


def test_a_batch_of_fields_is_read_and_a_bad_image_fails_alone(pool: DigitPool) -> None:
    engine = Knn(pool.images[:3000], pool.labels[:3000])
    fields = [render_field(pool, (5, i), STYLES["comb"]) for i in range(4)]
    blobs = [png(f.image) for f in fields[:2]] + [b"GIF89a broken", png(fields[2].image), b""]
    metrics = WorkerMetrics()
    out = served(engine, blobs, metrics)
    assert len(out) == 5 and engine.calls == 1  # every candidate of the batch in one model call
    for i in (0, 1, 3):
        assert out[i].field is not None and out[i].error is None and out[i].version == "knn"
        assert len(out[i].field.text) == 5  # type: ignore[union-attr]
    assert out[2].field is None and out[2].error and out[4].error
    assert metrics.images_failed.labels(reason="decode")._value.get() == 2
    characters = sum(len(s.field.chars) for s in out if s.field is not None)
    assert metrics.fields_read._value.get() == 3 and metrics.field_characters._value.get() == characters
    assert {s.field.method for s in out if s.field is not None} == {"segment"}


def test_with_a_line_reader_free_fields_go_to_it_and_comb_fields_are_segmented_too(pool: DigitPool) -> None:
    engine = Knn(pool.images[:3000], pool.labels[:3000])
    engine.sequence = SequenceReader(build())  # untrained: which reader ran is the point, not what it read
    free = [render_field(pool, (6, i), STYLES["free"]) for i in range(3)]
    comb = [render_field(pool, (7, i), STYLES["comb"]) for i in range(2)]
    blobs = [png(free[0].image), png(comb[0].image), b"GIF89a broken", png(free[1].image), png(comb[1].image)]
    blobs.append(png(free[2].image))
    out = served(engine, blobs, WorkerMetrics())
    methods = [(s.field.layout, s.field.method) if s.field is not None else s.error for s in out]
    assert methods[0] == methods[3] == methods[5] == ("free", "sequence")
    # Comb cells are segmented (one model call, for the cells only) and read by the line reader
    # too; which reading decides, an untrained reader decides by chance.
    assert {methods[1], methods[4]} <= {("comb", m) for m in ("segment", "both", "sequence")} and engine.calls == 1
    assert out[2].field is None and out[2].error
    body = field_result({}, out[0], None, threshold=0.5)
    assert body["method"] == "sequence" and body["layout"] == "free"


@pytest.mark.timeout(120)
def test_fields_prepared_in_a_pool_of_processes_read_as_in_the_models_thread(pool: DigitPool) -> None:
    engine = Knn(pool.images[:3000], pool.labels[:3000])
    engine.sequence = SequenceReader(build())
    fields = [render_field(pool, (8, i), STYLES["comb" if i % 2 else "free"]) for i in range(6)]
    blobs = [png(f.image) for f in fields] + [b"GIF89a broken", png(np.full((40, 200), 255, np.uint8))]  # blank paper
    inline, pooled = served(engine, blobs, WorkerMetrics()), served(engine, blobs, WorkerMetrics(), workers=2)
    assert [s.error for s in pooled] == [s.error for s in inline] and pooled[-2].error and pooled[-1].error
    for a, b in zip(inline, pooled, strict=True):
        assert (a.field and a.field.as_dict()) == (b.field and b.field.as_dict())
    assert sum(s.field is not None for s in pooled) == 6


def reading(*chars: tuple[int, float, list[tuple[int, float]]]) -> Served:
    cs = [CharReading(label, conf, top3, (i * 10, 0, i * 10 + 8, 12)) for i, (label, conf, top3) in enumerate(chars)]
    text = "".join(str(c.label) for c in cs)
    return Served(None, "v3", field=FieldReading(text, cs, 0.0, "comb"))


def test_the_result_holds_the_whole_reading_and_reviews_an_uncertain_character() -> None:
    served = reading((4, 0.99, [(4, 0.99), (9, 0.01)]), (2, 0.6, [(2, 0.6), (7, 0.4)]))
    body = field_result({"item": "a.png"}, served, None, threshold=0.9)
    assert body["kind"] == "field" and body["text"] == "42" and body["label"] is None
    assert body["confidence"] == pytest.approx(0.99 * 0.6)
    assert body["chars"][1] == {"label": 2, "confidence": 0.6, "top3": [[2, 0.6], [7, 0.4]], "box": [10, 0, 18, 12]}
    assert body["review"] and body["review_reasons"] == ["character 2 uncertain (0.60)"]
    assert body["rule"] is None and body["layout"] == "comb" and body["method"] == "segment"


def test_a_rule_changes_a_character_and_says_so() -> None:
    served = reading((1, 0.95, [(1, 0.95), (7, 0.05)]), (8, 0.55, [(8, 0.55), (3, 0.45)]))
    body = field_result({}, served, FieldRule(pattern="13"), threshold=0.5)
    assert body["text"] == "13" and body["rule"]["ok"]
    assert body["chars"][1]["label"] == 3 and body["chars"][1]["read_as"] == 8
    assert body["confidence"] == pytest.approx(0.95 * 0.45)
    assert body["review"] and "character 2 uncertain (0.45)" in body["review_reasons"]


def test_a_field_no_reading_fits_goes_to_review_with_the_reason_first() -> None:
    served = reading((1, 0.99, [(1, 0.99)]), (2, 0.99, [(2, 0.99)]))
    body = field_result({}, served, FieldRule(length=(5, 5)), threshold=0.5)
    assert body["text"] == "12" and not body["rule"]["ok"]
    assert body["review_reasons"] == ["rule: 2 characters, the rule wants 5"]


def test_the_readers_doubts_are_review_reasons() -> None:
    served = reading((1, 0.99, [(1, 0.99)]), (7, 0.95, [(7, 0.95)]))
    assert served.field is not None
    doubted = Served(None, "v3", field=replace(served.field, doubts=("character 2: the readers disagree",)))
    body = field_result({}, doubted, None, threshold=0.5)
    assert body["text"] == "17" and body["review"]
    assert body["review_reasons"] == ["character 2: the readers disagree"]


def test_a_single_character_field_keeps_a_label_and_a_failed_read_keeps_its_error() -> None:
    body = field_result({}, reading((7, 0.97, [(7, 0.97), (1, 0.03)])), None, threshold=0.5)
    assert body["label"] == 7 and body["top3"] == [[7, 0.97], [1, 0.03]] and not body["review"]
    failed = field_result({"error": "no ink"}, Served(None, None, "no ink"), None, threshold=0.5)
    assert failed["text"] is None and failed["error"] == "no ink" and failed["kind"] == "field"


def test_read_specs_load_each_job_once_and_survive_a_bad_rule() -> None:
    loads: list[str] = []
    stored = {"f": {"kind": "field", "rule": {"length": [5, 5]}}, "bad": {"kind": "field", "rule": {"length": "x"}}}

    def load(job: str) -> dict[str, Any]:
        loads.append(job)
        return stored.get(job, {})

    specs = ReadSpecs(size=2)
    assert specs.get("f", load) == (True, FieldRule(length=(5, 5)))
    assert specs.get("f", load) == (True, FieldRule(length=(5, 5))) and loads == ["f"]
    assert specs.get("digits", load) == (False, None)
    assert specs.get("bad", load) == (True, None)  # read as a field, without the rule it cannot follow
    specs.get("f", load)
    assert loads == ["f", "digits", "bad", "f"]  # bounded: the oldest was forgotten
