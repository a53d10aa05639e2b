"""Keeping the messages a worker holds invisible to other workers while it lives.

kombu's Redis transport records each delivered, unacknowledged message in a sorted set
(``Keys.broker_unacked_index``: delivery tag -> delivery time) and redelivers any whose time is
older than the visibility timeout. Its clock starts at delivery, so a worker holding many
reserved messages, or one slow batch, could see them delivered again while still waiting. A
keeper thread re-stamps every message this worker holds (running, reserved or waiting for a
retry's countdown) every quarter of the visibility timeout, with ``ZADD XX`` so that a message
already restored or acknowledged is never re-added. When the worker dies the stamps stop, and
its messages are delivered again one visibility timeout later: at-least-once is kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

__all__ = ["VisibilityKeeper", "held_delivery_tags"]

log = logging.getLogger(__name__)


def held_delivery_tags() -> list[str]:
    """Delivery tags of every message this worker process has reserved and not yet acknowledged."""
    from celery.worker import state

    for _ in range(3):  # the consumer thread may change the dict while we copy it
        try:
            requests = list(state.requests.values())
            break
        except RuntimeError:
            continue
    else:
        return []
    tags = []
    for request in requests:
        message = getattr(request, "message", None)
        tag = getattr(message, "delivery_tag", None)
        if tag is not None:
            tags.append(str(tag))
    return tags


class VisibilityKeeper:
    def __init__(
        self, client: redis.Redis, index_key: str, visibility_timeout_s: float, tags: Callable[[], list[str]]
    ) -> None:
        self.redis = client
        self.index_key = index_key
        self.interval_s = max(0.2, visibility_timeout_s / 4)
        self._tags = tags
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def extend(self) -> int:
        """Re-stamp the held messages now; returns how many were still in the index."""
        tags = self._tags()
        if not tags:
            return 0
        changed = self.redis.zadd(self.index_key, dict.fromkeys(tags, time.time()), xx=True, ch=True)
        return int(changed or 0)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="inkq-visibility", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.extend()
            except Exception:  # a missed extension is caught up by the next one
                log.warning("could not extend the visibility of held messages", exc_info=True)
