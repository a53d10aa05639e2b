"""The thread that ages the queue's priorities (storage/priority.py): every INKQ_PRIORITY_AGING_S,
one worker at a time moves the oldest message of each lower priority up one level."""

from __future__ import annotations

import logging
import threading

import redis

from storage import priority
from storage.keys import Keys

__all__ = ["AgingThread"]

log = logging.getLogger(__name__)


class AgingThread(threading.Thread):
    def __init__(self, client: redis.Redis, keys: Keys, queue: str, interval_s: float) -> None:
        super().__init__(name="inkq-priority-aging", daemon=True)
        self._client, self._keys, self._queue, self._interval_s = client, keys, queue, interval_s
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self._interval_s):
            try:
                moved = priority.age(self._client, self._keys, self._queue, self._interval_s)
            except redis.RedisError as exc:  # Redis away: the next interval tries again
                log.warning("could not age the queue's priorities: %s", exc)
                continue
            if moved > 0:
                log.debug("priority aging moved %d message(s) up one level", moved)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
