"""One model replica per worker process: loads the current version once, warms it, serves batches,
and switches to a newly promoted version without dropping a request.

``handle`` is what a message turns into: its items go to the shared batcher, which fetches the
bytes of each batch, preprocesses each image (a bad image fails that item only) and runs the good
ones; then every item's result is written in one round trip. Only then does the task return and
Celery acknowledge. Waiting for the batcher is bounded by INKQ_STALL_TIMEOUT_S.

Hot swap: a watcher thread hears of new current versions (pub/sub, and a periodic check in
case a message was missed), builds and warms a new engine beside the serving one, and swaps
the reference; the batcher reads it once per batch, so the switch lands on a batch boundary
and every result records the version that made it. A version that fails to load or warm is
never switched to: it is retried with backoff when the cause may pass (Redis errors), never when
it lasts (checksum, pruned weights, foreign preprocessing); see worker/versions.py.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import socket
import threading
import time
from typing import Any

from config.settings import Settings
from recognizer.engine import Engine, engine_for, packages_for
from recognizer.preprocessing import Preprocessor, auto_workers
from storage import workers
from storage.connection import connect
from storage.jobs import ItemResult, Jobs
from storage.keys import Keys
from storage.priority import Priority
from storage.registry import Registry
from worker import heap
from worker.batcher import Batcher, split_plan
from worker.batchrun import run_batch
from worker.fieldwork import ReadSpecs, field_key, field_result
from worker.metrics import WorkerMetrics
from worker.packages import PackageBuilds
from worker.results import Served, log_message, result_body, served_body
from worker.upgrade import Upgrade, compiles_beside
from worker.versions import Refusals, check_preprocess, watch_announcements

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
# How often the watcher asks the registry directly, in case a pub/sub message was missed.
VERSION_CHECK_S = 10.0


class Replica:
    def __init__(self, settings: Settings, metrics: WorkerMetrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or WorkerMetrics()
        self.metrics_port: int | None = None  # where worker/metrics_http.py serves them, for the heartbeat
        self.keys = Keys(settings.key_prefix)
        self.redis = connect(settings)
        self.jobs = Jobs(self.redis, self.keys, settings.result_ttl_s)
        self.registry = Registry(self.redis, self.keys)
        self.hostname = socket.gethostname()
        # AOT packages for the next start (worker/packages.py)
        self.package_builds = PackageBuilds(self.settings.aot_keep_days)
        self.upgrade = Upgrade()  # a start from packages compiles beside them (worker/upgrade.py)
        self._swap = threading.Lock()  # one engine change at a time: hot swap or upgrade
        self._initialised = threading.Event()
        self.engine = self._build(None)
        self.warm_s = self.engine.warm_seconds
        max_batch = min(settings.max_batch, self.engine.max_batch)
        self.plan = split_plan(self.engine.bucket_ms, max_batch)  # redone when the engine changes
        flushes = self.metrics.batch_flushes
        self.batcher: Batcher[str, Served] = Batcher(
            self._run,
            max_batch=max_batch,
            max_wait_s=settings.max_wait_ms / 1000,
            name="inkq-model",
            on_flush=lambda reason: flushes.labels(reason=reason).inc(),
            size_for=lambda n: self.plan[n],
        )
        self.prep = self._preprocessor()
        self.last_beat_ok = time.monotonic()
        self.metrics.watch_oldest(self.batcher.oldest_wait_s)
        self.metrics.preprocess_processes.set(self.prep.workers)
        self.metrics.serving(self.engine.version, self.warm_s)
        self.items_served = 0
        self.read_specs = ReadSpecs()  # each job's reading: digits, or fields and their rule
        self.refusals = Refusals()  # versions that failed to load or warm, by (name, sha256)
        self.refused: dict[str, str] = {}  # the same, by name, for the heartbeat
        self.serving: tuple[str, str] = self._built  # (name, sha256) of the engine serving
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._announced = False
        self.sweep_health: dict[str, Any] = {}  # swept_at, sweep_error: written by worker/sweeping.py
        if settings.freeze_heap:
            heap.settle("ready")  # the collector walks the model's objects no more (worker/heap.py)
        self._initialised.set()

    def _build(self, version: str | None) -> Engine:
        info, weights = self.registry.weights(version)
        check_preprocess(info)
        engine = engine_for(info, weights, self.settings)
        engine.warm(time_buckets=True)  # the batcher's split plan weighs them
        log.info("model %s ready: %s (warmed in %.1fs)", info.version, engine.describe(), engine.warm_seconds)
        self._built = (info.version, info.sha256)
        if compiles_beside(engine):
            # The digits compile; an int8 line reader stays as it is, from packages or compiled
            # here (compiled from a thread, its widths ran 3.7x slower: BENCHMARKS.md, "The line
            # reader in int8").
            ready = engine.int8_lines
            compiled = functools.partial(engine_for, info, weights, self.settings, aot_digits=False, int8_lines=ready)
            identity = self._built
            self.upgrade.start(info.version, compiled, lambda e: self._adopt(e, identity))
        packages = packages_for(info, self.settings)
        if packages is not None and engine.compiled_parts():
            lines = engine.int8_lines is not None
            self.package_builds.start(packages, weights, info.version, engine.buckets, engine.precision, lines=lines)
        return engine

    def _preprocessor(self) -> Preprocessor:
        workers = self.settings.preprocess_workers
        workers = auto_workers(self.engine.device.type) if workers < 0 else workers
        prep = Preprocessor(workers, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_image_pixels)
        log.info("preprocessing %s", f"in {workers} processes" if workers else "in the model's thread")
        return prep

    def _run(self, digests: list[str]) -> list[Served]:
        """One batch, in the model's thread (worker/batchrun.py)."""
        engine = self.engine  # read once: a swap takes effect at the next batch
        return run_batch(engine, digests, jobs=self.jobs, prep=self.prep, metrics=self.metrics, settings=self.settings)

    def handle(
        self, job: str, items: list[list[Any]], sent_at: float, worker: str = "", priority: Priority = Priority.NORMAL
    ) -> int:
        received = time.time()
        clock = [time.perf_counter()]
        ready = [(int(index), str(digest), str(path)) for index, digest, path in items]
        if not self.jobs.wants_results(job):  # its results would be dropped: spare the model
            extra = {"job": job, "items": len(ready)}
            log.info("job %s is cancelled or gone: skipping %d items", job, len(ready), extra=extra)
            self._record_skip(len(ready))
            return 0
        queue_ms = round((received - sent_at) * 1000, 3)
        self.metrics.queue_wait.observe(max(0.0, queue_ms / 1000))
        is_field, rule = self.read_specs.get(job, self.jobs.reading)
        futures = self.batcher.submit([field_key(d) if is_field else d for _, d, _ in ready], priority.rank)
        outputs = self.batcher.gather(futures, self.settings.stall_timeout_s)
        results: list[ItemResult] = []
        threshold = self.settings.review_threshold
        for (index, digest, path), (served, batch) in zip(ready, outputs, strict=True):
            body = served_body(path, digest, served, batch, queue_ms=queue_ms, worker=worker, review_below=threshold)
            if is_field:
                body = field_result(body, served, rule, threshold)
            results.append(ItemResult(job, index, body))
        clock.append(time.perf_counter())
        self.jobs.write_results(results)
        clock.append(time.perf_counter())
        self.items_served += len(results)
        if log.isEnabledFor(logging.INFO):
            log_message(job, outputs)
        # Bytes are fetched in the batches: the fetch stage is this message's share of their MGETs.
        self._record(len(results), queue_ms, sum(served.fetch_ms for served, _ in outputs), clock)
        return len(results)

    @property
    def healthy(self) -> bool:
        """False while the model has completed no batch for INKQ_STALL_TIMEOUT_S with images waiting."""
        return self.batcher.stalled_for() <= self.settings.stall_timeout_s

    def dead_letter_results(self, job: str, items: list[tuple[int, str, str]], error: str) -> int:
        """Write ``error`` as the result of each of a dead-lettered message's items."""
        return self.jobs.write_results(
            ItemResult(job, index, result_body(path, digest, error=error, worker=self.hostname))
            for index, digest, path in items
        )

    def _record_skip(self, items: int) -> None:
        workers.add_stats(self.redis, self.keys, self.hostname, {"messages": 1, "skipped": items})

    def _record(self, items: int, queue_ms: float, fetch_ms: float, clock: list[float]) -> None:
        """Add this message's time per stage to the worker's running totals."""
        millis = {"queue_ms": queue_ms, "fetch_ms": fetch_ms}
        for stage, (a, b) in zip(("batch", "write"), itertools.pairwise(clock), strict=True):
            millis[f"{stage}_ms"] = (b - a) * 1000
        workers.add_stats(self.redis, self.keys, self.hostname, {"messages": 1, "items": items}, millis)

    # Hot swap (what to try and when: worker/versions.py)
    def maybe_switch(self, version: str | None) -> bool:
        """Build, warm and switch to ``version`` (default: the registry's current) if it is new:
        another name, or the same name with other weights (a registry rebuilt from scratch)."""
        version = version or self.registry.current()
        if not version:
            return False
        try:
            info = self.registry.info(version)
        except Exception as exc:  # Redis blip or metadata missing: retried with backoff
            return self._refuse(version, "", exc)
        identity = (info.version, info.sha256)
        if identity == self.serving or not self.refusals.may_try(*identity):
            return False
        log.info("new current model %s: building it beside %s", version, self.engine.version)
        try:
            engine = self._build(version)
        except Exception as exc:  # a corrupt or unloadable version must never stop serving
            return self._refuse(version, info.sha256, exc)
        self.refusals.forget(*identity)
        self.refusals.forget(version, "")  # an earlier failure to read its metadata
        self.refused = self.refusals.snapshot()
        if self.registry.current() != version:
            log.info("model %s is no longer current; staying on %s", version, self.engine.version)
            return False
        old = self.engine
        self._serve(engine, self._built)
        self.metrics.swaps.inc()
        self.metrics.serving(engine.version, engine.warm_seconds)
        log.info("switched from model %s to %s", old.version, engine.version)
        self._beat()
        return True

    def _adopt(self, engine: Engine, identity: tuple[str, str]) -> bool:
        """Serve ``engine``, compiled beside the packages of ``identity``, if that still serves."""
        self._initialised.wait()
        return self._serve(engine, identity, upgrade=True)

    def _serve(self, engine: Engine, identity: tuple[str, str], upgrade: bool = False) -> bool:
        """Switch to ``engine`` (of version ``identity``) at the next batch; an ``upgrade`` only
        replaces the AOT packages of that same version, never what a hot swap put there since."""
        with self._swap:
            if upgrade and (self.serving != identity or self.engine.source != "aot"):
                return False
            self.plan = split_plan(engine.bucket_ms, self.batcher.max_batch)
            self.engine, self.serving = engine, identity
        if self.settings.freeze_heap:
            heap.settle(f"serving {engine.version}")  # frees the old engine's cycles, freezes the new one
        return True

    def _refuse(self, version: str, sha256: str, exc: BaseException) -> bool:
        refusal = self.refusals.refuse(version, sha256, exc)
        self.metrics.swap_refusals.inc()
        self.refused = self.refusals.snapshot()
        retry = "never retried" if refusal.permanent else f"retried with backoff (attempt {refusal.attempts})"
        log.error("not switching to model %s, still serving %s (%s): %s", version, self.engine.version, retry, exc)
        self._beat()
        return False

    def _watch_versions(self) -> None:
        watch_announcements(self.redis, self.keys, self._stop, self.maybe_switch, VERSION_CHECK_S)

    # Readiness, for operators and tests: a key per ready worker, kept alive by a heartbeat.
    def announce(self, hostname: str) -> None:
        self.hostname = hostname
        self._announced = True
        self._beat()
        workers.announce_ready(self.redis, self.keys, hostname)
        for target, name in ((self._beat_forever, "inkq-heartbeat"), (self._watch_versions, "inkq-versions")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _beat(self) -> None:
        stalled = self.batcher.stalled_for()
        state = workers.WorkerState(
            hostname=self.hostname,
            pid=os.getpid(),
            version=self.engine.version,
            engine=self.engine.describe(),
            warm_s=round(self.warm_s, 3),
            ready=self._announced,
            healthy=stalled <= self.settings.stall_timeout_s,
            stalled_s=round(stalled, 3),
            last_batch_at=self.batcher.last_batch_at,
            items_served=self.items_served,
            refused=dict(self.refused),
            compile_fallback=self.engine.compile_error,
            engine_source=self.engine.source,
            packages=self.package_builds.status or self.upgrade.status,
            preprocess_workers=self.prep.workers,
            swept_at=self.sweep_health.get("swept_at"),
            sweep_error=self.sweep_health.get("sweep_error"),
            metrics_port=self.metrics_port,
        )
        workers.write(self.redis, self.keys, state, HEARTBEAT_S * 3)
        self.last_beat_ok = time.monotonic()  # /healthz: Redis answered a moment ago

    def _beat_forever(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._beat()
            except Exception:  # a missed heartbeat is not worth dying for
                log.warning("heartbeat failed", exc_info=True)

    def close(self) -> None:
        self._stop.set()
        self.package_builds.stop()
        self.batcher.stop()
        self.prep.close()
        for thread in self._threads:
            thread.join(timeout=5)
        try:
            workers.remove(self.redis, self.keys, self.hostname)
        except Exception:
            log.debug("could not remove worker key", exc_info=True)
