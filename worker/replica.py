"""One model replica per worker process: loads the current version once, warms it, serves batches.

``handle`` is what a message turns into: fetch the images of its items, preprocess each (a bad
image fails that item only), run the good ones through the shared batcher, and write every
item's result in one round trip. Only then does the task return and Celery acknowledge.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from config.errors import ImageError
from config.settings import Settings
from recognizer import scan
from recognizer.engine import Prediction, engine_for
from storage.connection import connect
from storage.jobs import ItemResult, Jobs
from storage.keys import Keys
from storage.registry import Registry
from worker.batcher import Batcher, BatchInfo

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0


@dataclass(frozen=True)
class Served:
    prediction: Prediction
    version: str


class Replica:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.redis = connect(settings.redis_url)
        self.jobs = Jobs(self.redis, self.keys, settings.result_ttl_s)
        self.registry = Registry(self.redis, self.keys)
        self.hostname = socket.gethostname()
        info, weights = self.registry.weights()
        self.engine = engine_for(info, weights, settings)
        warm_s = self.engine.warm()
        log.info("model %s ready: %s (warmed in %.1fs)", info.version, self.engine.describe(), warm_s)
        self.warm_s = warm_s
        max_batch = min(settings.max_batch, self.engine.max_batch)
        self.batcher: Batcher[np.ndarray, Served] = Batcher(
            self._run, max_batch=max_batch, max_wait_s=settings.max_wait_ms / 1000, name="inkq-model"
        )
        self.items_served = 0
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def _run(self, inputs: list[np.ndarray]) -> list[Served]:
        engine = self.engine  # one engine per batch: a swap takes effect at the batch boundary
        with torch.inference_mode():
            predictions = engine.predict(torch.from_numpy(np.stack(inputs)))
        return [Served(p, engine.version) for p in predictions]

    def handle(self, job: str, items: list[list[Any]], sent_at: float, worker: str = "") -> int:
        received = time.time()
        blobs = self.jobs.fetch_images([str(digest) for _, digest, _ in items])
        results: list[ItemResult] = []
        ready: list[tuple[int, str, str, float]] = []
        inputs: list[np.ndarray] = []
        limits = {"max_bytes": self.settings.max_image_bytes, "max_pixels": self.settings.max_image_pixels}
        for (index, digest, path), blob in zip(items, blobs, strict=True):
            start = time.perf_counter()
            try:
                if blob is None:
                    raise ImageError("image bytes not found in Redis (expired after INKQ_RESULT_TTL_S, or lost)")
                inputs.append(scan.preprocess(blob, **limits))
            except ImageError as exc:
                results.append(ItemResult(job, int(index), self._body(path, digest, error=str(exc))))
                continue
            ready.append((int(index), str(digest), str(path), (time.perf_counter() - start) * 1000))
        for (index, digest, path, pre_ms), future in zip(ready, self.batcher.submit(inputs), strict=True):
            served, batch = future.result()
            results.append(
                ItemResult(
                    job,
                    index,
                    self._body(
                        path,
                        digest,
                        served=served,
                        batch=batch,
                        worker=worker,
                        timings={
                            "queue_ms": round((received - sent_at) * 1000, 3),
                            "preprocess_ms": round(pre_ms, 3),
                            "batch_wait_ms": round(batch.waited_ms, 3),
                            "model_ms": round(batch.run_ms, 3),
                        },
                    ),
                )
            )
        self.jobs.write_results(results)
        self.items_served += len(results)
        return len(results)

    @staticmethod
    def _body(
        path: str,
        digest: str,
        *,
        error: str | None = None,
        served: Served | None = None,
        batch: BatchInfo | None = None,
        worker: str = "",
        timings: dict[str, float] | None = None,
    ) -> dict[str, Any]:
        p = served.prediction if served else None
        return {
            "item": path,
            "digest": digest,
            "label": p.label if p else None,
            "confidence": round(p.confidence, 6) if p else None,
            "top3": [[label, round(conf, 6)] for label, conf in p.top3] if p else None,
            "model_version": served.version if served else None,
            "error": error,
            "timings": timings or {},
            "batch": {"id": batch.id, "size": batch.size} if batch else None,
            "worker": worker or None,
        }

    # Readiness, for operators and tests: a key per ready worker, kept alive by a heartbeat.
    def announce(self, hostname: str) -> None:
        self.hostname = hostname
        self._beat()
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(self.keys.workers_ready, hostname)
        pipe.ltrim(self.keys.workers_ready, -100, -1)
        pipe.expire(self.keys.workers_ready, 24 * 3600)
        pipe.execute()
        self._heartbeat = threading.Thread(target=self._beat_forever, name="inkq-heartbeat", daemon=True)
        self._heartbeat.start()

    def _beat(self) -> None:
        state = {
            "hostname": self.hostname,
            "pid": os.getpid(),
            "version": self.engine.version,
            "engine": self.engine.describe(),
            "warm_s": round(self.warm_s, 3),
            "items_served": self.items_served,
            "at": time.time(),
        }
        self.redis.set(self.keys.worker(self.hostname), json.dumps(state), ex=int(HEARTBEAT_S * 3))

    def _beat_forever(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._beat()
            except Exception:  # a missed heartbeat is not worth dying for
                log.warning("heartbeat failed", exc_info=True)

    def close(self) -> None:
        self._stop.set()
        self.batcher.stop()
        try:
            self.redis.delete(self.keys.worker(self.hostname))
        except Exception:
            log.debug("could not remove worker key", exc_info=True)
