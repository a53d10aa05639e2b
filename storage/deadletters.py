"""Delivery counts per message and the dead-letter list.

Every delivery of a message (Celery task id) increments its count in Redis before any work, so
a message that kills its worker is counted too. Once a message has used up INKQ_MAX_DELIVERIES
it is stored here as a dead letter with everything needed to requeue it, and its items get an
error result so that its job completes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import redis

from storage.keys import Keys
from storage.utils import as_text

__all__ = ["DeadLetter", "DeadLetters"]


@dataclass(frozen=True)
class DeadLetter:
    task_id: str
    job: str | None  # None when the message did not even name a job
    items: list[Any]  # the message's items as received: [[index, digest, path], ...] when well formed
    attempts: int
    error: str  # the last delivery's error
    at: float  # when it was dead-lettered

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"item_count": len(self.items)}


class DeadLetters:
    def __init__(self, client: redis.Redis, keys: Keys, ttl_s: int) -> None:
        self.redis = client
        self.keys = keys
        self.ttl_s = ttl_s

    # Delivery accounting
    def delivered(self, task_id: str) -> int:
        """Count one more delivery of ``task_id``; returns the count including this one."""
        key = self.keys.deliveries(task_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(key, "count", 1)
        pipe.expire(key, self.ttl_s)
        count, _ = pipe.execute()
        return int(count)

    def failed(self, task_id: str, error: str) -> None:
        """Remember the error of the current delivery (reported if the message is dead-lettered)."""
        key = self.keys.deliveries(task_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(key, "error", error[:2000])
        pipe.expire(key, self.ttl_s)
        pipe.execute()

    def last_error(self, task_id: str) -> str | None:
        raw = self.redis.hget(self.keys.deliveries(task_id), "error")
        return None if raw is None else as_text(raw)

    def succeeded(self, task_id: str) -> None:
        self.redis.delete(self.keys.deliveries(task_id))

    # The dead-letter list
    def add(self, letter: DeadLetter) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.dead_letters, letter.task_id, json.dumps(asdict(letter), default=str))
        pipe.expire(self.keys.dead_letters, self.ttl_s)
        pipe.delete(self.keys.deliveries(letter.task_id))
        pipe.execute()

    def get(self, task_id: str) -> DeadLetter | None:
        raw = self.redis.hget(self.keys.dead_letters, task_id)
        return None if raw is None else DeadLetter(**json.loads(raw))

    def all(self) -> list[DeadLetter]:
        """Every dead letter, oldest first."""
        letters = [DeadLetter(**json.loads(raw)) for raw in self.redis.hvals(self.keys.dead_letters)]
        return sorted(letters, key=lambda d: (d.at, d.task_id))

    def count(self) -> int:
        return int(self.redis.hlen(self.keys.dead_letters))

    def remove(self, task_id: str) -> bool:
        return bool(self.redis.hdel(self.keys.dead_letters, task_id))
