"""Jobs, their images and their results in Redis.

Images are stored once under their content hash. A job is a hash of counters and a state, with
a manifest of its items (storage/manifest.py); its results are a hash from item index to a JSON
result. Results are written by one Lua script per batch, so a redelivered item overwrites its
own result and the counters stay exact: ``done`` counts distinct items with a result,
``failed`` those whose result is an error. Everything expires after the configured TTL.

A job's life: ``submitting`` (manifest written, messages being queued; ``interrupted`` once its
submitter's lease lapsed) -> ``queued`` -> ``running`` -> ``complete``; ``cancelled`` from any
unfinished state. Only ``submitting``, ``queued`` and ``cancelled`` are stored: the others
follow from the counters and the lease.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import redis

from config.errors import JobNotFoundError
from storage.keys import Keys
from storage.manifest import PAGE, Item, Manifest
from storage.outage import GRACE_S as OUTAGE_GRACE_S
from storage.outage import TRANSIENT, Outage
from storage.utils import as_text

__all__ = ["ItemResult", "JobState", "JobStatus", "Jobs", "script"]


def script(client: redis.Redis, name: str) -> Any:
    return client.register_script(Path(__file__).with_name(name).read_text())


class JobState(StrEnum):
    SUBMITTING = "submitting"  # manifest written, messages still being queued
    INTERRUPTED = "interrupted"  # still submitting, but the submitter is gone: resume it
    QUEUED = "queued"  # every message queued, no result yet
    RUNNING = "running"
    COMPLETE = "complete"
    CANCELLED = "cancelled"  # unfinished items got a `cancelled` error; counters are final


def _state(stored: str | None, done: int, total: int, leased: bool) -> JobState:
    if stored == JobState.CANCELLED:
        return JobState.CANCELLED
    if done >= total:
        return JobState.COMPLETE
    if stored == JobState.SUBMITTING:
        return JobState.SUBMITTING if leased else JobState.INTERRUPTED
    return JobState.RUNNING if done else JobState.QUEUED


_STATUS_FIELDS = ("total", "done", "failed", "created", "finished", "state")


def job_fields(total: int, meta: dict[str, Any] | None, state: JobState) -> dict[Any, Any]:
    return {
        "total": total,
        "done": 0,
        "failed": 0,
        "created": time.time(),
        "meta": json.dumps(meta or {}),
        "state": state.value,
    }


@dataclass(frozen=True)
class JobStatus:
    job: str
    total: int
    done: int
    failed: int
    created: float
    finished: float | None
    state: JobState = JobState.QUEUED

    @property
    def complete(self) -> bool:
        return self.done >= self.total

    @property
    def settled(self) -> bool:
        """Nothing more will happen to the job without someone acting: waiting is over."""
        return self.complete or self.state in (JobState.CANCELLED, JobState.INTERRUPTED)

    def as_dict(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "state": self.state,
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "created": self.created,
            "finished": self.finished,
        }


@dataclass(frozen=True)
class ItemResult:
    """One item's outcome, as the worker writes it."""

    job: str
    index: int
    body: dict[str, Any]

    @property
    def failed(self) -> bool:
        return self.body.get("error") is not None

    @property
    def review(self) -> bool:
        return bool(self.body.get("review"))


class Jobs:
    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: int, lease_s: float = 15.0) -> None:
        self.redis = client
        self.keys = keys
        self.ttl_s = ttl_s
        self.lease_s = lease_s
        self.outage_grace_s = OUTAGE_GRACE_S
        self.manifest = Manifest(client, keys, ttl_s)
        self._write = script(client, "write_results.lua")

    # Images
    def store_images(self, images: dict[str, bytes]) -> int:
        """Store images not yet present (by content hash); refresh the TTL of those that are.

        Returns how many were new. Bytes already stored are never sent again.
        """
        digests = list(images)
        pipe = self.redis.pipeline(transaction=False)
        for digest in digests:
            pipe.expire(self.keys.image(digest), self.ttl_s)
        present = pipe.execute()
        missing = [d for d, found in zip(digests, present, strict=True) if not found]
        pipe = self.redis.pipeline(transaction=False)
        for digest in missing:
            pipe.set(self.keys.image(digest), images[digest], ex=self.ttl_s, nx=True)
        return sum(1 for stored in pipe.execute() if stored)

    def known_images(self, digests: Sequence[str]) -> set[str]:
        """Those digests whose bytes are already stored (and refresh their TTL)."""
        pipe = self.redis.pipeline(transaction=False)
        for digest in digests:
            pipe.expire(self.keys.image(digest), self.ttl_s)
        return {d for d, found in zip(digests, pipe.execute(), strict=True) if found}

    def fetch_images(self, digests: Sequence[str]) -> list[bytes | None]:
        if not digests:
            return []
        return [v if isinstance(v, bytes) else None for v in self.redis.mget([self.keys.image(d) for d in digests])]

    # Jobs
    def create(self, total: int, meta: dict[str, Any] | None = None) -> str:
        """A job whose caller queues its own messages: no manifest, ``queued`` at once."""
        job = uuid.uuid4().hex
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.job(job), mapping=job_fields(total, meta, JobState.QUEUED))
        pipe.expire(self.keys.job(job), self.ttl_s)
        pipe.execute()
        return job

    def wants_results(self, job: str) -> bool:
        """False when results for ``job`` would be dropped (cancelled, or expired): a worker
        skips such a message instead of computing what nobody will read."""
        state = self.redis.hget(self.keys.job(job), "state")
        if state is None:
            return bool(self.redis.exists(self.keys.job(job)))
        return as_text(state) != JobState.CANCELLED

    def reading(self, job: str) -> dict[str, Any]:
        """How the job's images are read: ``{}`` for single characters, or ``{"kind": "field",
        "rule": {...}}`` (set at submit, in the job's meta)."""
        raw = self.redis.hget(self.keys.job(job), "meta")
        try:
            meta = json.loads(as_text(raw)) if raw is not None else {}
        except ValueError:
            return {}
        read = meta.get("read") if isinstance(meta, dict) else None
        return read if isinstance(read, dict) else {}

    def status(self, job: str) -> JobStatus:
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(self.keys.job(job), _STATUS_FIELDS)
        pipe.exists(self.keys.job_lease(job))
        raw, leased = pipe.execute()
        if raw[0] is None:
            raise JobNotFoundError(f"no job {job!r} (unknown, or expired after INKQ_RESULT_TTL_S)")
        data = {k: as_text(v) for k, v in zip(_STATUS_FIELDS, raw, strict=True) if v is not None}
        total, done = int(data["total"]), int(data["done"])
        return JobStatus(
            job=job,
            total=total,
            done=done,
            failed=int(data["failed"]),
            created=float(data["created"]),
            finished=float(data["finished"]) if "finished" in data else None,
            state=_state(data.get("state"), done, total, bool(leased)),
        )

    def wait(self, job: str, timeout: float | None) -> JobStatus:
        """Block until the job is settled (complete, cancelled, or its submit interrupted) or
        ``timeout`` seconds pass; returns the last status. Rides out a Redis outage of up to
        ``outage_grace_s`` (a Sentinel failover, a restart) and raises StoreUnavailableError past it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        finished = self.keys.job_finished(job)
        outage = Outage(f"waiting for job {job}", self.outage_grace_s)
        status: JobStatus | None = None
        while True:
            try:
                status = self.status(job)
                if status.settled:
                    return status
                left = 1.0 if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    return status
                # Woken by the completing write. BLMOVE rotates the token within its own list, so every
                # waiter sees it and the key keeps its TTL (a pop and push back would drop it); the
                # one-second cap re-checks the status, which notices an interrupted submit.
                self.redis.execute_command("BLMOVE", finished, finished, "LEFT", "RIGHT", max(0.01, min(left, 1.0)))
                outage.recovered()
            except TRANSIENT as exc:  # a failover or restart: the job goes on without us meanwhile
                if deadline is not None and time.monotonic() >= deadline:
                    if status is None:
                        outage.give_up(exc)
                    return status
                outage.failed(exc)

    def write_results(self, results: Iterable[ItemResult]) -> int:
        """Write a batch of results in one round trip; idempotent per (job, index)."""
        keys: list[str] = []
        args: list[Any] = [time.time(), self.ttl_s, self.keys.review, self.keys.jobs_active]
        for r in results:
            keys += [
                self.keys.job(r.job),
                self.keys.job_results(r.job),
                self.keys.job_failed(r.job),
                self.keys.job_finished(r.job),
            ]
            args += [
                r.index,
                json.dumps(r.body, separators=(",", ":")),
                int(r.failed),
                int(r.review),
                f"{r.job}:{r.index}",
                r.job,
            ]
        if not keys:
            return 0
        return int(self._write(keys=keys, args=args))

    def result(self, job: str, index: int) -> dict[str, Any] | None:
        raw = self.redis.hget(self.keys.job_results(job), str(index))
        return None if raw is None else json.loads(raw)

    def review_entries(self, job: str | None = None, limit: int = 1000) -> list[tuple[str, int]]:
        """(job, index) of results marked for review, oldest first; entries of expired jobs are dropped."""
        members = [as_text(m) for m in self.redis.zrange(self.keys.review, 0, -1)]
        out, gone = [], []
        for member in members:
            owner, _, index = member.rpartition(":")
            if job is not None and owner != job:
                continue
            if not index.isdigit() or not self.redis.exists(self.keys.job(owner)):  # expired, or not ours
                gone.append(member)
                continue
            out.append((owner, int(index)))
            if len(out) >= limit:
                break
        if gone:
            self.redis.zrem(self.keys.review, *gone)
        return out

    def unmark_review(self, job: str, index: int) -> None:
        self.redis.zrem(self.keys.review, f"{job}:{index}")

    def results(self, job: str) -> list[dict[str, Any]]:
        """Every result written so far, in item order."""
        return list(self.iter_results(job))

    def iter_results(self, job: str, page: int = PAGE) -> Iterator[dict[str, Any]]:
        """Every result written so far, in item order, read ``page`` indices per round trip (a
        million-item job is never held in memory at once)."""
        total = self.status(job).total
        key = self.keys.job_results(job)
        for start in range(0, total, page):
            for raw in self.redis.hmget(key, [str(i) for i in range(start, min(total, start + page))]):
                if raw is not None:
                    yield json.loads(raw)

    def item(self, job: str, ref: str) -> tuple[Item, dict[str, Any] | None] | None:
        """The item ``ref`` names, by index or by path as submitted, and its result if written."""
        total = self.status(job).total
        if self.manifest.length(job) == 0:  # a job made by `create`: only its results know its items
            return self._item_from_results(job, ref, total)
        if ref.isdigit() and int(ref) < total:
            found = next(iter(self.manifest.items(job, int(ref), int(ref) + 1)), None)
        else:
            found = self.manifest.find(job, ref)
        return None if found is None else (found, self.result(job, found[0]))

    def _item_from_results(self, job: str, ref: str, total: int) -> tuple[Item, dict[str, Any] | None] | None:
        if ref.isdigit() and int(ref) < total:
            row = self.result(job, int(ref))
            return None if row is None else ((int(ref), row["digest"], row["item"]), row)
        for index, raw in self.redis.hscan_iter(self.keys.job_results(job), count=PAGE):
            row = json.loads(raw)
            if row.get("item") == ref:
                return (int(index), row["digest"], row["item"]), row
        return None
