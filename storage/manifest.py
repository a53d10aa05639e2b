"""A job's manifest, its queued chunks and the lease of the submit that queues it.

The manifest lists every item (index, digest, path) and is written before anything is queued,
so an interrupted submit can be resumed from Redis alone, items can be addressed by index or
path before they have a result, and results can be read page by page. Items travel in chunks of
the job's chunk size; chunk ``c`` holds items ``c * chunk`` to ``(c + 1) * chunk - 1`` and is
recorded as queued once its message is sent. A crash between sending and recording makes a
resume send that one chunk again: harmless, results are written idempotently.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence

import redis

from storage.keys import Keys
from storage.utils import as_text

__all__ = ["PAGE", "Item", "Manifest"]

# Items per round trip when writing or reading a manifest.
PAGE = 1000

Item = tuple[int, str, str]  # index, digest, path as submitted


class Manifest:
    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: int) -> None:
        self.redis = client
        self.keys = keys
        self.ttl_s = ttl_s

    def write(self, job: str, items: Sequence[Item], into: redis.client.Pipeline | None = None) -> None:
        """Record every item, in index order (the job itself is created afterwards).

        ``into``: a transaction to add the commands to, for a manifest of one page (a small job
        is then created in one round trip); a longer one is written a page per round trip."""
        key = self.keys.job_items(job)
        if into is not None and len(items) > PAGE:
            raise ValueError(f"a manifest written into a transaction holds at most {PAGE} items")
        for start in range(0, len(items), PAGE):
            page = items[start : start + PAGE]
            if any(index != start + i for i, (index, _, _) in enumerate(page)):
                raise ValueError("manifest items must be numbered 0, 1, 2, ... in order")
            pipe = into if into is not None else self.redis.pipeline(transaction=False)
            pipe.rpush(key, *(json.dumps([digest, path]) for _, digest, path in page))
            pipe.expire(key, self.ttl_s)
            if into is None:
                pipe.execute()

    def items(self, job: str, start: int, stop: int) -> list[Item]:
        """Items ``start`` to ``stop - 1`` (fewer if the manifest is shorter, none if it is gone)."""
        if stop <= start:
            return []
        raw = self.redis.lrange(self.keys.job_items(job), start, stop - 1)
        return [(start + i, *_entry(entry)) for i, entry in enumerate(raw)]

    def length(self, job: str) -> int:
        return int(self.redis.llen(self.keys.job_items(job)))

    def pages(self, job: str) -> Iterator[list[Item]]:
        start = 0
        while page := self.items(job, start, start + PAGE):
            yield page
            start += len(page)

    def find(self, job: str, path: str) -> Item | None:
        """The first item submitted under ``path``, read a page at a time."""
        key, needle = self.keys.job_items(job), json.dumps(path).encode()
        start = 0
        while raw := self.redis.lrange(key, start, start + PAGE - 1):
            for i, entry in enumerate(raw):
                # Most entries cannot match: a substring test spares decoding them.
                if needle in entry and _entry(entry)[1] == path:
                    return (start + i, *_entry(entry))
            start += len(raw)
        return None

    # Chunks
    def queued(self, job: str) -> set[int]:
        return {int(as_text(c)) for c in self.redis.smembers(self.keys.job_queued(job))}

    def mark_queued(self, job: str, chunk: int) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.sadd(self.keys.job_queued(job), chunk)
        pipe.expire(self.keys.job_queued(job), self.ttl_s)
        pipe.execute()

    # The submitter's lease: one process queues a job at a time
    def take(self, job: str, token: str, lease_s: float) -> bool:
        """Claim the job for this submitter; false if another live submitter holds it."""
        key = self.keys.job_lease(job)
        if self.redis.set(key, token, px=int(lease_s * 1000), nx=True):
            return True
        return self.renew(job, token, lease_s)

    def renew(self, job: str, token: str, lease_s: float) -> bool:
        """Extend this submitter's lease (re-taking it if it lapsed); false if another took it."""
        key = self.keys.job_lease(job)
        holder = self.redis.get(key)
        if holder is None:
            return bool(self.redis.set(key, token, px=int(lease_s * 1000), nx=True))
        # A read then a write: at worst two submitters overlap for a moment, which costs only a
        # duplicate message (results are idempotent), never a lost one.
        return as_text(holder) == token and bool(self.redis.pexpire(key, int(lease_s * 1000)))

    def release(self, job: str, token: str) -> None:
        key = self.keys.job_lease(job)
        holder = self.redis.get(key)
        if holder is not None and as_text(holder) == token:
            self.redis.delete(key)

    def held(self, job: str) -> bool:
        return bool(self.redis.exists(self.keys.job_lease(job)))


def _entry(raw: bytes | str) -> tuple[str, str]:
    digest, path = json.loads(raw)
    return str(digest), str(path)
