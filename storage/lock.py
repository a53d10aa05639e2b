"""A lock in Redis with a fencing token, that outlives no crash: it expires unless renewed.

Taking the lock draws a new token from a counter that only grows (INCR). Writes the lock
protects check, atomically in Redis, that the lock still holds their token (see
storage/registry.py): a holder that stalled past the lock's lifetime, or whose lock was taken
over, fails at its write instead of overwriting the newer holder's work.

Renewal runs in a thread every ``ttl_s / 3`` seconds. A renewal that fails for a transient
reason (Redis unreachable, a timeout) is retried about once a second until the lock's lifetime
runs out; a renewal refused because the lock holds another token marks the lease lost.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import redis

from config.errors import InkqError, LockLostError

__all__ = ["Lease", "LockHeldError", "held"]

log = logging.getLogger(__name__)

_LUA = {name: Path(__file__).with_name(f"lock_{name}.lua").read_text() for name in ("acquire", "renew", "release")}
RETRY_S = 1.0
# Who else may hold a lock, by what the caller takes it for (the registry lock by default).
_REGISTRY_HOLDER = "another train, retrain or rollback"
_HOLDERS = {"sweep": "another sweep (a worker's periodic sweep or `producer sweep`)"}


class LockHeldError(InkqError):
    """Another process holds the lock."""


class Lease:
    """One holding of the lock: its fencing token, and whether it is known to be lost."""

    def __init__(self, client: redis.Redis, key: str, token: int, ttl_s: float, what: str) -> None:
        self.client = client
        self.key = key
        self.token = token
        self.ttl_s = ttl_s
        self.what = what
        self.lost = threading.Event()
        self.lost_reason = ""

    def renew(self) -> bool:
        """Extend the lock once; False (and the lease marked lost) when it holds another token."""
        renewed = bool(self.client.eval(_LUA["renew"], 1, self.key, self.token, int(self.ttl_s * 1000)))
        if not renewed:
            self._lose("it expired or was taken over by another holder")
        return renewed

    def check(self) -> None:
        """Raise ``LockLostError`` if the lease is already known to be lost (fail early, not at publish)."""
        if self.lost.is_set():
            raise LockLostError(
                f"the {self.what} lost the lock {self.key} (token {self.token}): {self.lost_reason}; "
                "nothing was changed by this run, run it again"
            )

    def _lose(self, reason: str) -> None:
        if not self.lost.is_set():
            self.lost_reason = reason
            self.lost.set()
            log.error("lock %s lost (token %d): %s", self.key, self.token, reason)

    def _renew_until(self, stop: threading.Event) -> None:
        period = self.ttl_s / 3
        while not stop.wait(period) and not self.lost.is_set():
            # Retry transient failures until one works or the lifetime has surely run out.
            failures = 0
            while not stop.is_set():
                try:
                    self.renew()
                    break
                except Exception as exc:  # Redis down or slow: try again, do not give up silently
                    failures += 1
                    log.warning("could not renew lock %s (attempt %d): %s", self.key, failures, exc)
                    if failures * RETRY_S >= self.ttl_s:
                        self._lose(f"renewal failed for {self.ttl_s:.0f}s ({exc})")
                        return
                    stop.wait(RETRY_S)


def acquire(client: redis.Redis, key: str, fence_key: str, ttl_s: float, what: str, *, force: bool = False) -> Lease:
    """Take the lock now (no waiting); ``force`` takes it over from a live holder."""
    taken, value = client.eval(_LUA["acquire"], 2, key, fence_key, int(ttl_s * 1000), "1" if force else "0")
    if not int(taken):
        raise LockHeldError(
            f"{_HOLDERS.get(what, _REGISTRY_HOLDER)} is running (lock {key} held for {int(value) / 1000:.0f}s more "
            f"unless renewed; it expires within {ttl_s:.0f}s if its holder died). Try again when it finishes"
            + ("; `trainer rollback --force` takes it over, failing the running one" if what == "rollback" else "")
        )
    return Lease(client, key, int(value), ttl_s, what)


@contextlib.contextmanager
def held(
    client: redis.Redis, key: str, fence_key: str, ttl_s: float, what: str, *, force: bool = False
) -> Iterator[Lease]:
    """Hold ``key`` for the block, renewing it; yields the lease whose token fenced writes check.

    Raises ``LockHeldError`` at once if someone else holds it (unless ``force``). If this
    process dies, the lock expires after at most ``ttl_s`` seconds and the next run can take it.
    """
    lease = acquire(client, key, fence_key, ttl_s, what, force=force)
    stop = threading.Event()
    renewer = threading.Thread(target=lease._renew_until, args=(stop,), name="inkq-lock", daemon=True)
    renewer.start()
    try:
        yield lease
    finally:
        stop.set()
        renewer.join(timeout=5)
        with contextlib.suppress(Exception):
            client.eval(_LUA["release"], 1, key, lease.token)
