"""Field jobs in the worker: the images of a batch read as fields, and their result bodies.

A job submitted with ``--field`` (meta ``read.kind == "field"``) has each image read by
``recognizer.fields``: every candidate character of every field in the batch goes to the model
in one call. Where the version carries a sequence network, free handwriting is read by it instead,
as one line (``recognizer.layout``). Preparing a field (decoding, erasing printed rules, cutting
characters and the line) is most of its cost; it runs where digits' preprocessing runs, in the
pool's processes on a GPU host (``prepare_batch``), and only the networks' part in the model's
thread (``read_batch``). Its rule, if any, is applied per item when
the result is written; see ``recognizer.rules`` for what a rule may change and how the change is
reported.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import Any

from config.errors import ImageError
from recognizer.engine import Engine
from recognizer.fieldprep import FieldInput
from recognizer.fields import FieldReading, ReaderParams
from recognizer.layout import read_prepared
from recognizer.preprocessing import FIELD_POOL_MIN_BATCH, Outcome, Preprocessor, failure_reason, field_task
from recognizer.rules import FieldRule, apply
from worker.metrics import WorkerMetrics
from worker.results import Served

__all__ = ["FIELD_KEY", "ReadSpecs", "field_key", "field_result", "prepare_batch", "read_batch"]

log = logging.getLogger(__name__)

FIELD_KEY = "field:"  # the batcher's key for an image read as a field: this prefix, then its digest


def field_key(digest: str) -> str:
    return FIELD_KEY + digest


class ReadSpecs:
    """Each job's reading (digit or field, and its rule), read from the job once and kept for
    the next messages of the same job; bounded, oldest forgotten first."""

    def __init__(self, size: int = 4096) -> None:
        self._specs: OrderedDict[str, tuple[bool, FieldRule | None]] = OrderedDict()
        self._size = size

    def get(self, job: str, load: Any) -> tuple[bool, FieldRule | None]:
        """(is a field job, its rule); ``load(job)`` gives the job's ``read`` meta on a miss.
        A rule that no longer parses (stored by another version) reads the field without it."""
        if job in self._specs:
            self._specs.move_to_end(job)
            return self._specs[job]
        spec = load(job) or {}
        rule: FieldRule | None = None
        try:
            rule = FieldRule.parse(spec.get("rule"))
        except Exception as exc:
            log.warning("job %s: field rule ignored (%s)", job, exc, extra={"job": job})
        value = (spec.get("kind") == "field", rule)
        self._specs[job] = value
        if len(self._specs) > self._size:
            self._specs.popitem(last=False)
        return value


def prepare_batch(engine: Engine, blobs: list[bytes], prep: Preprocessor) -> list[Outcome]:
    """Each field image decoded and cut into what the networks read, in the pool's processes
    when the worker has them (a GPU host), else here; a blob that fails, fails alone."""
    return prep.map(blobs, field_task(with_line=engine.sequence is not None), FIELD_POOL_MIN_BATCH)


def read_batch(
    engine: Engine, outcomes: list[Outcome], *, max_pixels: int, metrics: WorkerMetrics, fetch_ms: float
) -> list[Served]:
    """The networks' part: every prepared field of the batch read at once (``prepare_batch``'s
    failures stay theirs, and are counted there)."""
    start = time.perf_counter()
    prepared = [o.input for o in outcomes if isinstance(o.input, FieldInput)]
    readings = iter(read_prepared(prepared, engine, engine.sequence, ReaderParams(max_pixels=max_pixels)))
    model_ms = (time.perf_counter() - start) * 1000
    out: list[Served] = []
    for outcome in outcomes:
        found = next(readings) if isinstance(outcome.input, FieldInput) else outcome.error
        if isinstance(found, FieldReading):
            out.append(Served(None, engine.version, None, outcome.ms, model_ms, fetch_ms, field=found))
            continue
        if isinstance(found, ImageError):  # prepared, yet neither reader found characters
            metrics.failed(failure_reason(found))
        out.append(Served(None, None, str(found), outcome.ms, 0.0, fetch_ms))
    read = [s.field for s in out if s.field is not None]
    metrics.recognised(len(read), model_ms / 1000)
    metrics.read_fields(len(read), sum(len(r.chars) for r in read))
    return out


def field_result(body: dict[str, Any], served: Served, rule: FieldRule | None, threshold: float) -> dict[str, Any]:
    """The documented field result: the whole reading and its characters, the rule's outcome,
    and whether (and why) a person should look at it."""
    body |= {
        "kind": "field",
        "text": None,
        "chars": None,
        "layout": None,
        "method": None,
        "rule": None,
        "review_reasons": [],
    }
    reading = served.field
    if reading is None:
        return body
    outcome = apply(rule, [c.top3 for c in reading.chars]) if rule is not None else None
    text = outcome.text if outcome is not None else reading.text
    chars = reading.as_dict()["chars"]
    for index, _, chosen, _, prob in outcome.changed if outcome is not None else []:
        chars[index] |= {"label": chosen, "read_as": chars[index]["label"], "confidence": round(prob, 6)}
    confidence = 1.0
    for c in chars:
        confidence *= c["confidence"]
    reasons = [
        f"character {i + 1} uncertain ({c['confidence']:.2f})"
        for i, c in enumerate(chars)
        if c["confidence"] < threshold
    ]
    reasons.extend(reading.doubts)
    if outcome is not None and not outcome.ok:
        reasons.insert(0, f"rule: {outcome.reason}")
    body |= {
        "text": text,
        "label": chars[0]["label"] if len(chars) == 1 else None,
        "confidence": round(confidence if chars else 0.0, 6),
        "top3": chars[0]["top3"] if len(chars) == 1 else None,
        "chars": chars,
        "layout": reading.layout,
        "method": reading.method,
        "rule": outcome.as_dict() if outcome is not None else None,
        "review": bool(reasons),
        "review_reasons": reasons,
    }
    return body
