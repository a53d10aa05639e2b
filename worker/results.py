"""What a worker writes for each item: the result body (the documented result schema), the
per-image outcome of a batch it is made from, and the log record of each message."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from recognizer.fields import FieldReading
from recognizer.prediction import Prediction
from worker.batcher import BatchInfo

__all__ = ["Served", "log_message", "result_body", "served_body"]

log = logging.getLogger("worker.replica")


@dataclass(frozen=True)
class Served:
    """One image's outcome from a batch: a prediction, or why there is none."""

    prediction: Prediction | None
    version: str | None
    error: str | None = None
    preprocess_ms: float = 0.0
    model_ms: float = 0.0
    fetch_ms: float = 0.0  # this image's share of its batch's MGET
    field: FieldReading | None = None  # a field job's reading (worker/fieldwork.py)


def log_message(job: str, outputs: list[tuple[Served, BatchInfo]]) -> None:
    """One record per message, with fields for log pipelines (INKQ_LOG_FORMAT=json). A message's
    items may span batches (``batch`` lists their ids) and, across a hot swap, two model versions
    (``model_version`` joins them with a comma; null when no item reached the model)."""
    batches = sorted({batch.id for _, batch in outputs})
    versions = sorted({served.version for served, _ in outputs if served.version})
    log.info(
        "job %s: %d items written (batches %s, model %s)",
        job,
        len(outputs),
        ",".join(map(str, batches)),
        ",".join(versions) or "none",
        extra={"job": job, "items": len(outputs), "batch": batches, "model_version": ",".join(versions) or None},
    )


def result_body(
    path: str,
    digest: str,
    *,
    error: str | None = None,
    served: Served | None = None,
    batch: BatchInfo | None = None,
    worker: str = "",
    timings: dict[str, float] | None = None,
    review_below: float = 0.0,
) -> dict[str, Any]:
    """The documented single-digit result; it asks for review when the reading's confidence is
    below ``review_below`` (worker/fieldwork.py turns it into a field's)."""
    p = served.prediction if served else None
    version = served.version if served else None
    return {
        "item": path,
        "digest": digest,
        "label": p.label if p else None,
        "confidence": round(p.confidence, 6) if p else None,
        "top3": [[label, round(conf, 6)] for label, conf in p.top3] if p else None,
        "model_version": version,
        "error": error,
        "timings": timings or {},
        "batch": {"id": batch.id, "size": batch.size} if batch else None,
        "worker": worker or None,
        "review": p is not None and p.confidence < review_below,
    }


def served_body(
    path: str, digest: str, served: Served, batch: BatchInfo, *, queue_ms: float, worker: str, review_below: float
) -> dict[str, Any]:
    """The result of an item that went through a batch, with the milliseconds of each stage."""
    timings = {
        "queue_ms": queue_ms,
        "preprocess_ms": round(served.preprocess_ms, 3),
        "batch_wait_ms": round(batch.waited_ms, 3),
        "model_ms": round(served.model_ms, 3),
    }
    return result_body(
        path,
        digest,
        error=served.error,
        served=served,
        batch=batch,
        worker=worker,
        timings=timings,
        review_below=review_below,
    )
