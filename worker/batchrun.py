"""One batch in the model's thread: fetch the images, prepare them, run the model, each image's
outcome or the reason it has none.

The bytes are fetched here, one MGET per batch, so a worker holds at most a batch of images in
memory however many messages it has reserved. Preprocessing here rather than in the message
threads keeps one thread on the GIL at a time: on a small CPU, threads preprocessing beside the
running model slow it several-fold. On a GPU host the batch's images are spread over a pool of
processes instead (INKQ_PREPROCESS_WORKERS), field images' preparation too. Images of field
jobs (their key starts with ``FIELD_KEY``) are read as fields, in the same batch
(worker/fieldwork.py).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from config.settings import Settings
from recognizer.engine import Engine
from recognizer.preprocessing import Preprocessor
from storage.jobs import Jobs
from worker.fieldwork import FIELD_KEY, prepare_batch, read_batch
from worker.metrics import WorkerMetrics
from worker.results import Served

__all__ = ["MISSING_IMAGE", "run_batch"]

MISSING_IMAGE = "image bytes not found in Redis (expired after INKQ_RESULT_TTL_S, or lost)"


def run_batch(
    engine: Engine, keys: list[str], *, jobs: Jobs, prep: Preprocessor, metrics: WorkerMetrics, settings: Settings
) -> list[Served]:
    """Each key's outcome, in order. Raises only when the model itself fails (the batch's
    messages are then retried); an image's own failure is its outcome."""
    out: list[Served | None] = [None] * len(keys)
    start = time.perf_counter()
    blobs = jobs.fetch_images([key.removeprefix(FIELD_KEY) for key in keys])
    fetch_ms = (time.perf_counter() - start) * 1000 / max(1, len(keys))
    for i, blob in enumerate(blobs):
        if blob is None:
            out[i] = Served(None, None, MISSING_IMAGE, fetch_ms=fetch_ms)
    fields = [i for i, key in enumerate(keys) if blobs[i] is not None and key.startswith(FIELD_KEY)]
    as_field = set(fields)
    todo = [(i, blob) for i, blob in enumerate(blobs) if blob is not None and i not in as_field]
    prepared = prepare_batch(engine, [blobs[i] or b"" for i in fields], prep) if fields else []
    outcomes = prep.map([blob for _, blob in todo])
    metrics.prepared(len(keys), blobs.count(None), outcomes + prepared)
    if fields:
        read = read_batch(engine, prepared, max_pixels=settings.max_image_pixels, metrics=metrics, fetch_ms=fetch_ms)
        for i, served in zip(fields, read, strict=True):
            out[i] = served
    inputs: list[np.ndarray] = []
    slots: list[tuple[int, float]] = []
    for (i, _), outcome in zip(todo, outcomes, strict=True):
        if not isinstance(outcome.input, np.ndarray):  # this image fails alone
            out[i] = Served(None, None, outcome.error, outcome.ms, fetch_ms=fetch_ms)
        else:
            inputs.append(outcome.input)
            slots.append((i, outcome.ms))
    if inputs:
        start = time.perf_counter()
        try:
            predictions = engine.predict(torch.from_numpy(np.stack(inputs)))
        except Exception:  # the batch's messages are retried: counted here, raised on
            metrics.failed("model", len(inputs))
            raise
        model_ms = (time.perf_counter() - start) * 1000
        metrics.recognised(len(inputs), model_ms / 1000)
        for (i, pre_ms), p in zip(slots, predictions, strict=True):
            out[i] = Served(p, engine.version, None, pre_ms, model_ms, fetch_ms)
    return [s for s in out if s is not None]
