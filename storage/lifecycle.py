"""Moving a job through its life: begin a submit, resume it, finish it, cancel the job.

The Client sends the messages (it owns the queue and its backpressure); this keeps the job's
record of that in Redis so that any step can stop and be taken up again: a submit leases its
job and renews the lease per chunk, so a submitter that died leaves an ``interrupted`` job that
``plan`` hands to the next one with exactly the chunks still to send.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from config.errors import JobNotFoundError, JobStateError
from storage.jobs import Jobs, JobState, job_fields, script
from storage.manifest import PAGE, Item
from storage.utils import as_text

__all__ = ["Lifecycle"]


class Lifecycle:
    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs
        self.redis = jobs.redis
        self.keys = jobs.keys
        self.manifest = jobs.manifest
        self._cancel = script(jobs.redis, "cancel_items.lua")
        self._set_state = script(jobs.redis, "set_state.lua")
        self._submit_done = script(jobs.redis, "submit_done.lua")

    def begin(self, items: Sequence[Item], chunk: int, meta: dict[str, Any] | None, token: str) -> str:
        """A ``submitting`` job with its manifest, leased to the submitter holding ``token``.

        The manifest is written first: a job never exists without its full list of items. A job
        of up to one manifest page is written in the same transaction (one round trip).
        """
        job = uuid.uuid4().hex
        pipe = self.redis.pipeline(transaction=True)
        self.manifest.write(job, items, into=pipe if len(items) <= PAGE else None)
        fields = job_fields(len(items), meta, JobState.SUBMITTING) | {"chunk": chunk}
        pipe.hset(self.keys.job(job), mapping=fields)
        pipe.expire(self.keys.job(job), self.jobs.ttl_s)
        pipe.set(self.keys.job_lease(job), token, px=int(self.jobs.lease_s * 1000))
        # Indexed for the sweeper, which requeues the missing items of a job whose messages were lost.
        pipe.zadd(self.keys.jobs_active, {job: fields["created"]})
        pipe.expire(self.keys.jobs_active, self.jobs.ttl_s)
        pipe.execute()
        return job

    def plan(self, job: str, token: str) -> tuple[int, int, set[int]]:
        """Claim an unfinished submit for resuming: (total, chunk size, chunks already queued)."""
        status = self.jobs.status(job)
        if status.state is JobState.CANCELLED:
            raise JobStateError(f"job {job} was cancelled: nothing to resume")
        if status.state not in (JobState.SUBMITTING, JobState.INTERRUPTED):
            raise JobStateError(f"job {job} is {status.state}: every item was queued, nothing to resume")
        if not self.manifest.take(job, token, self.jobs.lease_s):
            raise JobStateError(
                f"job {job} is being submitted by another process right now; if that process is gone, "
                f"retry in {self.jobs.lease_s:.0f}s (INKQ_SUBMIT_LEASE_S), when its hold lapses"
            )
        chunk = int(self.redis.hget(self.keys.job(job), "chunk") or 0)
        if not chunk or self.manifest.length(job) != status.total:
            self.manifest.release(job, token)
            raise JobStateError(f"job {job} has no complete manifest (expired?): submit its files again")
        return status.total, chunk, self.manifest.queued(job)

    def hold(self, job: str, token: str) -> None:
        """Renew the submitter's lease; raises when the job was cancelled or another took it."""
        state = self.redis.hget(self.keys.job(job), "state")
        if state is not None and as_text(state) == JobState.CANCELLED:
            raise JobStateError(f"job {job} was cancelled while it was being submitted: stopped queueing")
        if not self.manifest.renew(job, token, self.jobs.lease_s):
            raise JobStateError(f"another process took over submitting job {job}: this one stops")

    def queued(self, job: str, chunk: int) -> None:
        """Chunk ``chunk``'s message is sent: record it, so no resume sends it again."""
        self.manifest.mark_queued(job, chunk)

    def queued_last(self, job: str, chunk: int, token: str) -> None:
        """``queued`` for the last chunk, then ``submitted``, in one round trip."""
        self._submit_done(
            keys=[self.keys.job_queued(job), self.keys.job(job), self.keys.job_lease(job)],
            args=[chunk, self.jobs.ttl_s, JobState.SUBMITTING.value, JobState.QUEUED.value, token],
        )

    def submitted(self, job: str, token: str) -> None:
        """Every message is queued: ``submitting`` becomes ``queued`` (unless cancelled meanwhile)."""
        self._set_state(keys=[self.keys.job(job)], args=[JobState.SUBMITTING.value, JobState.QUEUED.value])
        self.manifest.release(job, token)

    def release(self, job: str, token: str) -> None:
        """The submitter stops early: free the job at once for `producer submit --resume`."""
        self.manifest.release(job, token)

    def cancel(self, job: str) -> int | None:
        """Cancel ``job``: each item without a result gets a ``cancelled`` error result, and later
        results are ignored. Returns how many items this call cancelled, or None when the job was
        already complete. Safe to repeat (a canceller that died half-way is finished by the next)."""
        status = self.jobs.status(job)
        if status.complete and status.state is not JobState.CANCELLED:
            return None
        keys = [
            self.keys.job(job),
            self.keys.job_results(job),
            self.keys.job_failed(job),
            self.keys.job_finished(job),
        ]
        error = f"cancelled: job {job} was cancelled (`producer cancel`) before this item had a result"
        cancelled = 0
        # An empty first page marks the job cancelled before any item is read; then bodies only for
        # items still without a result (the script re-checks each one).
        for page in itertools.chain([[]], self.unfinished(job, status.total)):
            args: list[Any] = [time.time(), self.jobs.ttl_s, self.keys.jobs_active, job]
            for index, digest, path in page:
                args += [index, json.dumps(_cancelled(path, digest, error), separators=(",", ":"))]
            added = int(self._cancel(keys=keys, args=args))
            if added == -1:
                return None
            if added == -2:
                raise JobNotFoundError(f"no job {job!r} (it expired while being cancelled)")
            cancelled += added
        return cancelled

    def unfinished(self, job: str, total: int) -> Iterator[list[tuple[int, str | None, str | None]]]:
        """The items of ``job`` without a result, a manifest page at a time: what a cancel gives an
        error and what the sweeper requeues. A job made by `create` has no manifest: its items are
        then known by index only (digest and path None)."""
        if self.manifest.length(job) >= total:
            pages: Iterator[Sequence[tuple[int, str | None, str | None]]] = self.manifest.pages(job)
        else:
            pages = ([(i, None, None) for i in range(s, min(total, s + PAGE))] for s in range(0, total, PAGE))
        results = self.keys.job_results(job)
        for page in pages:
            pipe = self.redis.pipeline(transaction=False)
            for index, _, _ in page:
                pipe.hexists(results, str(index))
            missing = [item for item, written in zip(page, pipe.execute(), strict=True) if not written]
            if missing:
                yield missing


def _cancelled(path: str | None, digest: str | None, error: str) -> dict[str, Any]:
    """A result shaped like a worker's error result."""
    return {
        "item": path,
        "digest": digest,
        "label": None,
        "confidence": None,
        "top3": None,
        "model_version": None,
        "error": error,
        "timings": {},
        "batch": None,
        "worker": None,
        "review": False,
    }
