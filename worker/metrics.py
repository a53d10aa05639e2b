"""A worker's Prometheus metrics, on a registry of its own (served by worker/metrics_http.py).

A private ``CollectorRegistry`` per ``WorkerMetrics``, not the process-wide default: the worker
exposes exactly these, and tests build as many independent sets as they like. Names follow the
Prometheus conventions: an ``inkq_`` prefix, base units in the name (``_seconds``, ``_images``),
counters end in ``_total`` (prometheus_client appends it), info-style gauges in ``_info``.

Failure reasons are a short class, never an error's text, so the label set stays small:
``decode``, ``too_large``, ``blank`` (recognizer/preprocessing.py names them), ``missing`` (the
image bytes expired or were lost), ``model`` (the batch's model call raised; its messages are
retried, so the same images may later count as processed) and ``dead_letter`` (the item got an
error result because its message was dead-lettered).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from recognizer.preprocessing import Outcome

__all__ = ["FAILURE_REASONS", "FLUSH_REASONS", "WorkerMetrics"]

FAILURE_REASONS = ("decode", "too_large", "blank", "missing", "model", "dead_letter")
# full: the batch reached INKQ_MAX_BATCH; deadline: its oldest image waited INKQ_MAX_WAIT_MS;
# stop: the worker was shutting down.
FLUSH_REASONS = ("full", "deadline", "stop")
# Powers of two up to the largest bucket a GPU worker is built for.
BATCH_SIZE_BUCKETS = tuple(float(2**i) for i in range(13))
# From a few microseconds (one small image's preprocessing) to a minute (a backlog in the queue).
SECONDS_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class WorkerMetrics:
    """Every metric one worker process exports; the worker's parts update them directly."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.images_processed = Counter(
            "inkq_images_processed", "Images recognised (a prediction written).", registry=r
        )
        self.fields_read = Counter(
            "inkq_fields_read", "Images of field jobs read as a field (each also counts as an image).", registry=r
        )
        self.field_characters = Counter(
            "inkq_field_characters", "Characters read in fields (a ZIP code counts five).", registry=r
        )
        self.images_failed = Counter(
            "inkq_images_failed", "Images that got no prediction, by reason class.", ["reason"], registry=r
        )
        self.batch_size = Histogram(
            "inkq_batch_size_images", "Images per model batch.", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.batch_flushes = Counter(
            "inkq_batch_flushes",
            "Batches flushed, by why: full, deadline, stop, or split (a backlog just above a bucket runs "
            "a full smaller one first).",
            ["reason"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "inkq_queue_wait_seconds",
            "Seconds from a message's sending to its start on this worker.",
            buckets=SECONDS_BUCKETS,
            registry=r,
        )
        self.preprocess_seconds = Histogram(
            "inkq_preprocess_seconds", "Seconds to decode and prepare one image.", buckets=SECONDS_BUCKETS, registry=r
        )
        self.model_seconds = Histogram(
            "inkq_model_seconds", "Seconds of one batch's model call.", buckets=SECONDS_BUCKETS, registry=r
        )
        self.oldest_waiting = Gauge(
            "inkq_oldest_waiting_seconds",
            "Age of the oldest image waiting for a batch (0 when none waits), measured at scrape.",
            registry=r,
        )
        self.in_flight = Gauge("inkq_messages_in_flight", "Messages this worker is handling now.", registry=r)
        self.dead_lettered = Counter("inkq_messages_dead_lettered", "Messages this worker dead-lettered.", registry=r)
        self.model_version = Gauge(
            "inkq_model_version_info", "The model version in use: 1, labelled with it.", ["version"], registry=r
        )
        self.warm_seconds = Gauge(
            "inkq_model_warm_seconds", "Seconds the serving model took to compile and warm.", registry=r
        )
        self.swaps = Counter("inkq_model_swaps", "Hot swaps to a newly promoted version.", registry=r)
        self.swap_refusals = Counter(
            "inkq_model_swap_refusals", "Versions not switched to because they failed to load or warm.", registry=r
        )
        self.preprocess_processes = Gauge(
            "inkq_preprocess_processes", "Processes preprocessing batches (0: the model's thread).", registry=r
        )
        self._version: str | None = None

    def failed(self, reason: str, images: int = 1) -> None:
        if images:
            self.images_failed.labels(reason=reason).inc(images)

    def prepared(self, batch: int, missing: int, outcomes: Sequence[Outcome]) -> None:
        """A batch of ``batch`` images was fetched (``missing`` had no bytes) and preprocessed."""
        self.batch_size.observe(batch)
        self.failed("missing", missing)
        for outcome in outcomes:
            self.preprocess_seconds.observe(outcome.ms / 1000)
            if outcome.input is None:
                self.failed(outcome.reason or "decode")

    def recognised(self, images: int, model_s: float) -> None:
        self.images_processed.inc(images)
        self.model_seconds.observe(model_s)

    def read_fields(self, fields: int, characters: int) -> None:
        self.fields_read.inc(fields)
        self.field_characters.inc(characters)

    def watch_oldest(self, age_s: Callable[[], float]) -> None:
        """Compute the oldest waiting image's age at each scrape, from the batcher."""
        self.oldest_waiting.set_function(age_s)

    def serving(self, version: str, warm_s: float) -> None:
        """The worker now serves ``version``: the info gauge keeps one label, the one in use."""
        if self._version is not None and self._version != version:
            self.model_version.remove(self._version)
        self.model_version.labels(version=version).set(1)
        self._version = version
        self.warm_seconds.set(warm_s)
