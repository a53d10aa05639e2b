"""Jobs, their images and their results in Redis.

Images are stored once under their content hash. A job is a hash of counters; its results are
a hash from item index to a JSON result. Results are written by one Lua script per batch, so a
redelivered item overwrites its own result and the counters stay exact: ``done`` counts
distinct items with a result, ``failed`` those whose result is an error. Everything expires
after the configured TTL.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from config.errors import JobNotFoundError
from storage.keys import Keys
from storage.registry import text

_WRITE_RESULTS = """
local now, ttl, review = ARGV[1], tonumber(ARGV[2]), ARGV[3]
for i = 0, #KEYS / 4 - 1 do
  local job, results, failed, finished = KEYS[4*i+1], KEYS[4*i+2], KEYS[4*i+3], KEYS[4*i+4]
  local a = 4 + 5 * i
  local index, body, is_failed, for_review, member = ARGV[a], ARGV[a+1], ARGV[a+2], ARGV[a+3], ARGV[a+4]
  if redis.call('EXISTS', job) == 1 then
    local fresh = redis.call('HSET', results, index, body)
    if fresh == 1 then redis.call('HINCRBY', job, 'done', 1) end
    if is_failed == '1' then
      if redis.call('SADD', failed, index) == 1 then redis.call('HINCRBY', job, 'failed', 1) end
    elseif redis.call('SREM', failed, index) == 1 then
      redis.call('HINCRBY', job, 'failed', -1)
    end
    if for_review == '1' then redis.call('ZADD', review, now, member) end
    redis.call('EXPIRE', results, ttl)
    redis.call('EXPIRE', failed, ttl)
    if fresh == 1 and redis.call('HGET', job, 'done') == redis.call('HGET', job, 'total') then
      redis.call('HSET', job, 'finished', now)
      redis.call('RPUSH', finished, '1')
      redis.call('EXPIRE', finished, ttl)
    end
  end
end
return #KEYS / 4
"""


@dataclass(frozen=True)
class JobStatus:
    job: str
    total: int
    done: int
    failed: int
    created: float
    finished: float | None

    @property
    def complete(self) -> bool:
        return self.done >= self.total

    @property
    def state(self) -> str:
        return "complete" if self.complete else "running" if self.done else "queued"

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
    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: int) -> None:
        self.redis = client
        self.keys = keys
        self.ttl_s = ttl_s
        self._write = client.register_script(_WRITE_RESULTS)

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
        job = uuid.uuid4().hex
        fields: dict[Any, Any] = {
            "total": total,
            "done": 0,
            "failed": 0,
            "created": time.time(),
            "meta": json.dumps(meta or {}),
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.job(job), mapping=fields)
        pipe.expire(self.keys.job(job), self.ttl_s)
        pipe.execute()
        return job

    def status(self, job: str) -> JobStatus:
        raw = self.redis.hgetall(self.keys.job(job))
        if not raw:
            raise JobNotFoundError(f"no job {job!r} (unknown, or expired after INKQ_RESULT_TTL_S)")
        data = {text(k): text(v) for k, v in raw.items()}
        return JobStatus(
            job=job,
            total=int(data["total"]),
            done=int(data["done"]),
            failed=int(data["failed"]),
            created=float(data["created"]),
            finished=float(data["finished"]) if "finished" in data else None,
        )

    def wait(self, job: str, timeout: float | None) -> JobStatus:
        """Block until the job is complete or ``timeout`` seconds pass; returns the last status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.status(job)
            if status.complete:
                return status
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return status
            # Woken by the completing write; the timeout re-checks in case another waiter took the token.
            token = self.redis.blpop([self.keys.job_finished(job)], timeout=max(0.01, min(left, 1.0)))
            if token is not None:
                self.redis.rpush(self.keys.job_finished(job), token[1])

    def write_results(self, results: Iterable[ItemResult]) -> int:
        """Write a batch of results in one round trip; idempotent per (job, index)."""
        keys: list[str] = []
        args: list[Any] = [time.time(), self.ttl_s, self.keys.review]
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
            ]
        if not keys:
            return 0
        return int(self._write(keys=keys, args=args))

    def result(self, job: str, index: int) -> dict[str, Any] | None:
        raw = self.redis.hget(self.keys.job_results(job), str(index))
        return None if raw is None else json.loads(raw)

    def review_entries(self, job: str | None = None, limit: int = 1000) -> list[tuple[str, int]]:
        """(job, index) of results marked for review, oldest first; entries of expired jobs are dropped."""
        members = [text(m) for m in self.redis.zrange(self.keys.review, 0, -1)]
        out, gone = [], []
        for member in members:
            owner, _, index = member.rpartition(":")
            if job is not None and owner != job:
                continue
            if not self.redis.exists(self.keys.job(owner)):
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
        self.status(job)
        raw = self.redis.hgetall(self.keys.job_results(job))
        ordered = sorted(((int(k), v) for k, v in raw.items()), key=lambda kv: kv[0])
        return [json.loads(v) for _, v in ordered]
