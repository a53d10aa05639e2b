"""The Python client the `producer` CLI is built on, for users to import too.

from producer import Client
client = Client()                      # settings from INKQ_* variables
report = client.submit(["scans/"])
client.wait(report.job, timeout=60)
for result in client.results(report.job): ...
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.errors import ImageError, InkqError
from config.settings import Settings, load_settings
from producer.files import Found, find_images
from recognizer import scan
from storage import queue
from storage.connection import connect
from storage.jobs import Jobs, JobStatus
from storage.keys import Keys

# Images are read, hashed and stored in groups this size: one Redis round trip per group.
STORE_GROUP = 256


class NoImagesError(InkqError):
    """Nothing submittable was found under the given paths."""


class QueueFullError(InkqError):
    """The queue is deeper than INKQ_QUEUE_MAX_MESSAGES and the caller chose not to wait."""


@dataclass
class SubmitReport:
    job: str
    items: int
    stored: int  # images new to Redis (the rest were already there: deduplicated)
    rejected: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"job": self.job, "items": self.items, "stored": self.stored, "rejected": self.rejected}


class Client:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or load_settings()
        self.keys = Keys(self.settings.key_prefix)
        self.redis = connect(self.settings.redis_url)
        self.jobs = Jobs(self.redis, self.keys, self.settings.result_ttl_s)
        self.app = queue.make_app(self.settings)

    def submit(
        self,
        paths: list[str],
        *,
        wait_for_room: bool = True,
        room_timeout: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> SubmitReport:
        """Validate and store every image under ``paths``, create a job and queue its items."""
        items: list[tuple[int, str, str]] = []
        rejected: list[dict[str, str]] = []
        stored = 0
        group: list[tuple[str, bytes]] = []

        def flush() -> None:
            nonlocal stored
            blobs = {}
            for path, data in group:
                digest = hashlib.sha256(data).hexdigest()
                blobs[digest] = data
                items.append((len(items), digest, path))
            stored += self.jobs.store_images(blobs)
            if progress:
                progress(len(group))
            group.clear()

        for found in find_images(paths):
            checked = self._check(found)
            if isinstance(checked, str):
                rejected.append({"path": found.path, "error": checked})
                if progress:
                    progress(1)
                continue
            group.append((found.path, checked))
            if len(group) >= STORE_GROUP:
                flush()
        flush()
        if not items:
            reasons = "".join(f"\n  {r['path']}: {r['error']}" for r in rejected[:10])
            raise NoImagesError(
                f"no images found under {', '.join(paths)} (supported: "
                f"{', '.join(sorted(scan.SUPPORTED_SUFFIXES))}); {len(rejected)} rejected{reasons}"
            )
        job = self.jobs.create(len(items), {"paths": paths[:20]})
        size = self.settings.chunk_size
        for start in range(0, len(items), size):
            self._wait_for_room(wait_for_room, room_timeout)
            queue.enqueue(self.app, job, items[start : start + size])
        return SubmitReport(job, len(items), stored, rejected)

    def _check(self, found: Found) -> bytes | str:
        """The file's bytes if it is a plausible image, else why not (cheap: header only)."""
        if found.problem:
            return found.problem
        path = Path(found.path)
        try:
            size = path.stat().st_size
            if size > self.settings.max_image_bytes:
                return (
                    f"file is {size:,} bytes, over the limit of {self.settings.max_image_bytes:,} "
                    "(INKQ_MAX_IMAGE_BYTES)"
                )
            data = path.read_bytes()
        except OSError as exc:
            return f"cannot read file: {exc.strerror or exc}"
        try:
            scan.probe(data, max_bytes=self.settings.max_image_bytes, max_pixels=self.settings.max_image_pixels)
        except ImageError as exc:
            return str(exc)
        return data

    def _wait_for_room(self, wait: bool, timeout: float | None) -> None:
        """Backpressure: hold off while the queue is deeper than the configured bound."""
        bound = self.settings.queue_max_messages
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.05
        while (depth := queue.depth(self.redis, self.settings)) >= bound:
            if not wait:
                raise QueueFullError(
                    f"queue holds {depth:,} messages, at the bound of {bound:,} (INKQ_QUEUE_MAX_MESSAGES); "
                    "retry later or submit without --no-wait"
                )
            if deadline is not None and time.monotonic() > deadline:
                raise QueueFullError(f"queue stayed at {depth:,} messages or more for {timeout}s")
            time.sleep(delay)  # the queue drains at the workers' pace; nothing to block on
            delay = min(delay * 2, 1.0)

    def status(self, job: str) -> JobStatus:
        return self.jobs.status(job)

    def wait(self, job: str, timeout: float | None = None) -> JobStatus:
        return self.jobs.wait(job, timeout)

    def results(self, job: str) -> list[dict[str, Any]]:
        return self.jobs.results(job)


def count_candidates(paths: Iterable[str]) -> int:
    """How many files a submission will look at (for a progress bar's total)."""
    return sum(1 for _ in find_images(list(paths)))
