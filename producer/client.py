"""The Python client the `producer` CLI is built on, for users to import too.

from producer import Client
client = Client()                      # settings from INKQ_* variables
report = client.submit(["scans/"])
client.wait(report.job, timeout=60)
for result in client.iter_results(report.job): ...

A submit stopped half-way (Ctrl-C, a crash, a full queue with ``wait_for_room=False``) leaves
its job ``submitting`` (``interrupted`` once its lease lapses): ``client.resume(job)`` queues
exactly the items still missing. ``client.cancel(job)`` ends a job early.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from config.errors import NoImagesError, QueueFullError
from config.settings import Settings, load_settings
from producer.export import export_review
from producer.fieldopts import check_reading
from producer.files import find_images, probe_image, read_found
from producer.labelling import Candidate, LabelError, parse_label, validate
from recognizer import scan
from storage import queue
from storage.connection import connect
from storage.jobs import Jobs, JobStatus
from storage.keys import Keys
from storage.labels import Labels
from storage.lifecycle import Lifecycle
from storage.priority import Priority
from storage.redis_checks import check_store

__all__ = ["Client", "NoImagesError", "QueueFullError", "SubmitReport", "count_candidates", "parse_label_or_raise"]

# What `producer review` shows of each result marked for review.
REVIEW_FIELDS = ("item", "digest", "label", "confidence", "top3", "text", "review_reasons", "chars")
# Images are read, hashed and stored in groups this size: one Redis round trip per group.
STORE_GROUP = 256


@dataclass
class SubmitReport:
    job: str
    items: int
    stored: int  # images new to Redis (the rest were already there: deduplicated)
    rejected: list[dict[str, str]] = field(default_factory=list)
    messages: int = 0  # messages this call queued (a resume sends only the missing ones)

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "items": self.items,
            "stored": self.stored,
            "rejected": self.rejected,
            "messages": self.messages,
        }


class Client:
    def __init__(self, settings: Settings | None = None, priority: Priority | str = Priority.NORMAL) -> None:
        """``priority``: high, normal or low, for every job this client submits (storage/priority.py)."""
        self.priority = Priority(priority)
        self.settings = settings or load_settings()
        self.keys = Keys(self.settings.key_prefix)
        self.redis = connect(self.settings)
        check_store(self.redis, self.settings, "producer")
        self.jobs = Jobs(self.redis, self.keys, self.settings.result_ttl_s, self.settings.submit_lease_s)
        self.lifecycle = Lifecycle(self.jobs)
        self.app = queue.make_app(self.settings)
        self.labels = Labels(self.redis, self.keys)

    def submit(
        self,
        paths: list[str],
        *,
        wait_for_room: bool = True,
        room_timeout: float | None = None,
        progress: Callable[[int], None] | None = None,
        started: Callable[[str, int], None] | None = None,
        resume: str | None = None,
        read: dict[str, Any] | None = None,
    ) -> SubmitReport:
        """Validate and store every image under ``paths``, create a job and queue its items.
        ``read`` (``{"kind": "field", "rule": {...}}``, see producer/fieldopts.py) reads each
        image as a field of digits instead of one character.

        The job and its manifest exist before the first message is queued; ``started(job,
        items)`` is called then, so a caller can tell the user which job to resume should the
        submit stop half-way. With ``resume=JOB`` the paths are ignored: see ``resume``.
        """
        if read:
            check_reading(read)
        if resume is not None:
            return self.resume(resume, wait_for_room=wait_for_room, room_timeout=room_timeout, started=started)
        limit = self.settings.max_image_bytes
        files = ((found.path, read_found(found, limit)) for found in find_images(paths))
        return self.submit_blobs(
            files, {"paths": paths[:20]}, wait_for_room=wait_for_room, room_timeout=room_timeout,
            progress=progress, started=started, what=", ".join(paths), read=read,
        )  # fmt: skip

    def submit_blobs(
        self,
        files: Iterable[tuple[str, bytes | str]],
        meta: dict[str, Any],
        *,
        wait_for_room: bool = True,
        room_timeout: float | None = None,
        progress: Callable[[int], None] | None = None,
        started: Callable[[str, int], None] | None = None,
        what: str = "the upload",
        read: dict[str, Any] | None = None,
    ) -> SubmitReport:
        """``submit`` for images already in hand (the HTTP API's uploads): (name, bytes) pairs,
        or (name, reason) for one refused before it got here. Each is checked as a file is."""
        if read:
            check_reading(read)
            meta = meta | {"read": read}
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

        limits = (self.settings.max_image_bytes, self.settings.max_image_pixels)
        for path, given in files:
            checked = probe_image(given, *limits) if isinstance(given, bytes) else given
            if isinstance(checked, str):
                rejected.append({"path": path, "error": checked})
                if progress:
                    progress(1)
                continue
            group.append((path, checked))
            if len(group) >= STORE_GROUP:
                flush()
        flush()
        if not items:
            reasons = "".join(f"\n  {r['path']}: {r['error']}" for r in rejected[:10])
            raise NoImagesError(
                f"no images found under {what} (supported: "
                f"{', '.join(sorted(scan.SUPPORTED_SUFFIXES))}); {len(rejected)} rejected{reasons}"
            )
        token = uuid.uuid4().hex
        job = self.lifecycle.begin(items, self.settings.chunk_size, meta, token)
        plan = (len(items), self.settings.chunk_size, set[int]())
        sent = self._queue(job, token, plan, wait_for_room, room_timeout, started, fresh=items)
        return SubmitReport(job, len(items), stored, rejected, sent)

    def resume(
        self,
        job: str,
        *,
        wait_for_room: bool = True,
        room_timeout: float | None = None,
        started: Callable[[str, int], None] | None = None,
    ) -> SubmitReport:
        """Finish an interrupted submit: queue exactly the chunks of ``job`` not yet queued, in
        the chunk size the job was begun with."""
        token = uuid.uuid4().hex
        plan = self.lifecycle.plan(job, token)
        sent = self._queue(job, token, plan, wait_for_room, room_timeout, started)
        return SubmitReport(job, plan[0], 0, [], sent)

    def _queue(
        self,
        job: str,
        token: str,
        plan: tuple[int, int, set[int]],
        wait: bool,
        timeout: float | None,
        started: Callable[[str, int], None] | None,
        fresh: list[tuple[int, str, str]] | None = None,
    ) -> int:
        """Send every chunk of ``plan`` (total, chunk size, chunks already queued) not yet queued,
        recording each; the job's lease is renewed as it goes and freed on any exit, so an
        interrupted submit can be resumed at once.

        ``fresh``: the items of a job begun just now. Its chunks are cut from them rather than
        read back, and unless ``started`` told someone the job's id (who could have cancelled it
        since), its first chunk goes without renewing the lease taken a moment ago: a
        single-image job costs four round trips and the message, not a dozen."""
        total, chunk, done = plan
        chunks = -(-total // chunk)
        todo = [c for c in range(chunks) if c not in done]
        sent = 0
        finished = False
        try:
            if started:
                started(job, total)
            for number in todo:
                if fresh is None or sent or started is not None:
                    self.lifecycle.hold(job, token)  # stops here if the job was cancelled meanwhile
                try:
                    queue.wait_for_room(
                        self.redis, self.settings, wait, timeout, keep=lambda: self.lifecycle.hold(job, token)
                    )
                except QueueFullError as exc:
                    left = len(todo) - sent
                    raise QueueFullError(
                        f"{exc}; job {job} is left with {left} of {chunks} messages unsent: "
                        f"run `producer submit --resume {job}` to queue them"
                    ) from exc
                span = (number * chunk, (number + 1) * chunk)
                items = fresh[span[0] : span[1]] if fresh is not None else self.jobs.manifest.items(job, *span)
                queue.enqueue(self.app, job, items, self.priority)
                sent += 1
                if number == todo[-1]:
                    self.lifecycle.queued_last(job, number, token)
                    finished = True
                else:
                    self.lifecycle.queued(job, number)
            if not finished:  # a resume that found every chunk queued already
                self.lifecycle.submitted(job, token)
                finished = True
        finally:
            if not finished:
                self.lifecycle.release(job, token)
        return sent

    # Labels
    def label(self, candidates: list[Candidate], source: str) -> int:
        """Validate every candidate, then store them all in one transaction; returns how many."""
        return self.labels.add(validate(candidates, self.settings), source)

    def correct(self, job: str, item: str, label: str) -> dict[str, Any]:
        """Label one item of a job: ``item`` is its index or its path as submitted, looked up in
        the job's manifest, so it works before the item has a result (``was`` is then None)."""
        # A field job's item is corrected with the field's text; a digit job's with a digit.
        target = parse_label_or_raise(label, fields=self.jobs.reading(job).get("kind") == "field")
        found = self.jobs.item(job, item)
        if found is None:
            raise LabelError(
                f"no result for item {item!r} in job {job}: it is neither a path as submitted "
                "nor an item index of that job"
            )
        (index, digest, path), row = found
        (data,) = self.jobs.fetch_images([digest])
        if data is None:
            raise LabelError(f"the image of {item!r} has expired (INKQ_RESULT_TTL_S); label it from its file")
        self.labels.add([(digest, data, target, path)], source=f"correction:{job}")
        self.jobs.unmark_review(job, index)
        was = (row.get("text") if row.get("kind") == "field" else row.get("label")) if row else None
        return {"job": job, "index": index, "item": path, "label": target, "was": was}

    def review(self, job: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Results marked for review (low confidence) whose image nobody has labelled yet."""
        out = []
        for owner, index in self.jobs.review_entries(job, limit):
            row = self.jobs.result(owner, index)
            # A row without a digest is not one a worker wrote: nothing to label, drop the mark.
            if not isinstance(row, dict) or not isinstance(row.get("digest"), str) or self.labels.has(row["digest"]):
                self.jobs.unmark_review(owner, index)
                continue
            out.append({"job": owner, "index": index} | {k: row.get(k) for k in REVIEW_FIELDS})
        return out

    def export_review(self, rows: list[dict[str, Any]], folder: Path) -> Path:
        """Write each row's image and a ``labels.csv`` prefilled with the predicted labels into
        ``folder``, for a person to correct and feed back with ``producer label --csv``."""
        return export_review(rows, self.jobs.fetch_images([str(r.get("digest", "")) for r in rows]), folder)

    def status(self, job: str) -> JobStatus:
        return self.jobs.status(job)

    def wait(self, job: str, timeout: float | None = None) -> JobStatus:
        return self.jobs.wait(job, timeout)

    def results(self, job: str) -> list[dict[str, Any]]:
        """Every result written so far, in item order (a list: prefer iter_results for large jobs)."""
        return self.jobs.results(job)

    def iter_results(self, job: str) -> Iterator[dict[str, Any]]:
        """Every result written so far, in item order, read from Redis a page at a time."""
        return self.jobs.iter_results(job)

    def cancel(self, job: str) -> dict[str, Any]:
        """Stop ``job``: its items without a result get a ``cancelled`` error result and it
        completes; a worker still busy with its items changes nothing. Safe to repeat."""
        cancelled = self.lifecycle.cancel(job)
        status = self.jobs.status(job)
        return status.as_dict() | {"cancelled_items": cancelled or 0, "was_complete": cancelled is None}


def parse_label_or_raise(raw: str, *, fields: bool) -> int | str:
    try:
        return parse_label(raw, fields=fields)
    except ValueError as exc:
        raise LabelError(str(exc)) from exc


def count_candidates(paths: Iterable[str]) -> int:
    """How many files a submission will look at (for a progress bar's total)."""
    return sum(1 for _ in find_images(list(paths)))
