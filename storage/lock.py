"""A lock in Redis that outlives no crash: it expires unless its holder keeps renewing it."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import redis
from redis.lock import Lock

from config.errors import InkqError

log = logging.getLogger(__name__)


class LockHeldError(InkqError):
    """Another process holds the lock."""


@contextlib.contextmanager
def held(client: redis.Redis, key: str, ttl_s: int, what: str) -> Iterator[None]:
    """Hold ``key`` for the duration of the block, renewing it every ``ttl_s / 3`` seconds.

    Raises ``LockHeldError`` at once if someone else holds it. If this process dies, the lock
    expires after at most ``ttl_s`` seconds and the next run can take it.
    """
    lock = Lock(client, key, timeout=ttl_s, blocking=False, thread_local=False)
    if not lock.acquire():
        raise LockHeldError(
            f"another {what} is running (lock {key} held; it expires within {ttl_s}s if its holder died)"
        )
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(ttl_s / 3):
            try:
                lock.reacquire()
            except Exception:  # lost it (expired or taken over): nothing more to renew
                log.warning("could not renew lock %s", key, exc_info=True)
                return

    renewer = threading.Thread(target=renew, name="inkq-lock", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join(timeout=5)
        with contextlib.suppress(Exception):
            lock.release()
