"""Which jobs have a message in the broker: queued in kombu's lists, or delivered and unacknowledged.

Read-only, for the sweeper (storage/sweeper.py). kombu's Redis transport keeps a queue as a list
(plus one list per priority step, ``QUEUE\\x06\\x16N``) of JSON messages whose body is the
base64 of Celery's ``[args, kwargs, embed]``; a delivered message waits in the ``unacked`` hash
as JSON ``[message, exchange, routing key]`` until acknowledged. Both are read a page at a time,
so a long queue is never held in memory at once.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from storage.keys import Keys

__all__ = ["PRIORITY_SEPARATOR", "InFlight", "depth", "in_flight", "message_job"]

# kombu's separator between a queue's name and its priority step (kombu.transport.redis.Channel.sep),
# and its default steps: priority lists exist only for messages sent with a priority.
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
PAGE = 500


@dataclass
class InFlight:
    """Jobs with a message queued or unacknowledged; ``unreadable`` counts messages whose job could
    not be read (the sweeper then assumes any job may have one: it never requeues on a guess)."""

    jobs: set[str] = field(default_factory=set)
    unreadable: int = 0
    messages: int = 0

    def holds(self, job: str) -> bool:
        return self.unreadable > 0 or job in self.jobs


def message_job(raw: bytes | str) -> str | None:
    """The job a kombu message (as stored in a queue list or the unacked hash) is for, or None."""
    try:
        message: Any = json.loads(raw)
        if isinstance(message, list):  # an unacked entry: [message, exchange, routing key]
            message = message[0]
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, *_ = json.loads(body)
        job = args[0] if args else kwargs.get("job")
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return None
    return job if isinstance(job, str) and job else None


def in_flight(client: redis.Redis, keys: Keys, queue: str) -> InFlight:
    """Every job with a message in ``queue`` (any priority) or in kombu's unacked hash."""
    found = InFlight()
    for raw in _messages(client, keys, queue):
        found.messages += 1
        job = message_job(raw)
        if job is None:
            found.unreadable += 1
        else:
            found.jobs.add(job)
    return found


def depth(client: redis.Redis, keys: Keys, queue: str) -> dict[str, int]:
    """Messages waiting in ``queue`` (all priority lists) and delivered but not yet acknowledged
    (by any queue's consumers: kombu keeps one unacked hash), in one round trip."""
    pipe = client.pipeline(transaction=False)
    for key in _lists(keys, queue):
        pipe.llen(key)
    pipe.hlen(keys.broker_unacked)
    *waiting, unacked = pipe.execute()
    return {"queued": int(sum(waiting)), "unacked": int(unacked)}


def _lists(keys: Keys, queue: str) -> list[str]:
    return [keys.queue_list(queue)] + [keys.queue_list(f"{queue}{PRIORITY_SEPARATOR}{p}") for p in PRIORITY_STEPS]


def _messages(client: redis.Redis, keys: Keys, queue: str) -> Iterator[bytes | str]:
    lists = _lists(keys, queue)
    for key in lists:
        start = 0
        while page := client.lrange(key, start, start + PAGE - 1):
            yield from page
            start += len(page)
    for _, raw in client.hscan_iter(keys.broker_unacked, count=PAGE):
        yield raw
