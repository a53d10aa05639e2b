"""Priorities: high before normal before low, on kombu's priority lists, with aging for fairness.

A message's priority travels as kombu's message priority; the Redis transport keeps one list per
priority step (``QUEUE`` for 0, ``QUEUE\\x06\\x163`` for 3, ...) and every BRPOP names them from
step 0 down, so a worker always takes the highest waiting priority first. Messages queued without
a priority (by older producers) land on step 0, with the high ones.

Strict order alone would starve low priorities while higher ones keep the queue busy, so workers
age the queue (``age``): every INKQ_PRIORITY_AGING_S, across all of them, the oldest message of
each lower list moves up one level. A low message then waits at most two intervals per message
ahead of it at its new level, however much high work arrives.
"""

from __future__ import annotations

from enum import StrEnum

import redis

from storage.broker import PRIORITY_SEPARATOR
from storage.jobs import script
from storage.keys import Keys

__all__ = ["STEPS", "Priority", "age", "lists", "of_step"]


class Priority(StrEnum):
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for high, 1 for normal, 2 for low: the order a worker serves them in."""
        return list(Priority).index(self)


# kombu's priority step of each priority (0 is served first).
STEPS = {Priority.HIGH: 0, Priority.NORMAL: 3, Priority.LOW: 6}


def of_step(step: object) -> Priority:
    """The priority of a delivered message's kombu priority (None or unknown: high, as kombu serves it)."""
    if not isinstance(step, int):
        return Priority.HIGH
    return max((p for p, s in STEPS.items() if s <= step), key=lambda p: STEPS[p])


def lists(keys: Keys, queue: str) -> list[str]:
    """The queue's Redis lists from the highest priority to the lowest."""
    return [keys.queue_list(queue if s == 0 else f"{queue}{PRIORITY_SEPARATOR}{s}") for s in STEPS.values()]


def age(client: redis.Redis, keys: Keys, queue: str, interval_s: float) -> int:
    """Move the oldest message of each lower priority up one level, unless a worker did so within
    ``interval_s``; the messages moved (-1: another worker's turn)."""
    keys_ = [keys.priority_aging(queue), *lists(keys, queue)]
    return int(script(client, "priority_age.lua")(keys=keys_, args=[max(1, round(interval_s * 1000))]))
